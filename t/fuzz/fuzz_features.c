
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Target: the learned router's features and score.  The input is a
 * request body; what cJSON accepts is given to ngx_http_llm_features(),
 * then scored by a model whose weights are all 1.  Invariants: no crash
 * and no undefined behaviour (ASan, UBSan); at most
 * NGX_HTTP_LLM_FEAT_MAX features, each index inside the model; the named
 * features in [0, 1]; each kind's scale in (0, 1] when it has features; a
 * probability in [0, 1]; the same input gives the same features.
 */


#include "ngx_http_llm_fuzz.h"
#include "ngx_http_llm_classifier.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static ngx_http_llm_features_t    ngx_http_llm_fuzz_f, ngx_http_llm_fuzz_g;
static float                      ngx_http_llm_fuzz_w[
                                      NGX_HTTP_LLM_CLASSIFIER_DIM];


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                      i;
    double                      p;
    cJSON                      *json;
    ngx_http_llm_features_t    *f = &ngx_http_llm_fuzz_f;
    ngx_http_llm_classifier_t   c;

    json = cJSON_ParseWithLength((const char *) data, size);
    if (json == NULL) {
        return 0;
    }

    ngx_http_llm_features(json, f);

    ngx_http_llm_fuzz_assert(f->n <= NGX_HTTP_LLM_FEAT_MAX, "n %zu", f->n);

    for (i = 0; i < f->n; i++) {
        ngx_http_llm_fuzz_assert((f->idx[i] >> 24) < NGX_HTTP_LLM_KINDS
                                 && (f->idx[i] & 0xffffff)
                                    < NGX_HTTP_LLM_CLASSIFIER_DIM
                                 && (f->idx[i] & 0xffffff)
                                    >= NGX_HTTP_LLM_D_N,
                                 "feature %zu: %08x", i, f->idx[i]);
        ngx_http_llm_fuzz_assert(f->scale[f->idx[i] >> 24] > 0
                                 && f->scale[f->idx[i] >> 24] <= 1,
                                 "scale of feature %zu", i);
    }

    for (i = 0; i < NGX_HTTP_LLM_D_N; i++) {
        ngx_http_llm_fuzz_assert(f->dense[i] >= 0 && f->dense[i] <= 1,
                                 "%s: %f", ngx_http_llm_dense_names[i],
                                 f->dense[i]);
    }

    ngx_memzero(&c, sizeof(ngx_http_llm_classifier_t));

    if (ngx_http_llm_fuzz_w[0] == 0) {
        for (i = 0; i < NGX_HTTP_LLM_CLASSIFIER_DIM; i++) {
            ngx_http_llm_fuzz_w[i] = 1;
        }
    }

    c.weight = ngx_http_llm_fuzz_w;

    p = ngx_http_llm_classifier_score(&c, f);

    ngx_http_llm_fuzz_assert(p >= 0 && p <= 1, "probability %f", p);

    ngx_http_llm_features(json, &ngx_http_llm_fuzz_g);

    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_g.n == f->n
                             && ngx_memcmp(ngx_http_llm_fuzz_g.idx, f->idx,
                                           f->n * sizeof(uint32_t)) == 0,
                             "the same request, other features");

    cJSON_Delete(json);

    return 0;
}
