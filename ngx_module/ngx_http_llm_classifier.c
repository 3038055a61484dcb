
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The learned router's classifier.  Its file is text, a key and its values
 * a line, "#" a comment:
 *
 *   llm-router-model 1
 *   layout v1;hash=16;...       the feature layout it was trained on
 *   bias -0.42
 *   threshold 0.31              the threshold route-train picked ...
 *   loss 0.05                   ... for this share of needs-strong sent cheap
 *   p 0.0123                    a needs-strong validation prompt's
 *                               probability, ascending: the calibration
 *   w 17 0.731                  a weight: index and value
 *
 * The layout must be this build's, exactly: a model trained on other
 * features would score every request wrong and still look fine.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <ctype.h>

#include "ngx_http_llm_classifier.h"


#define NGX_HTTP_LLM_MODEL_MAGIC  "llm-router-model"
#define NGX_HTTP_LLM_MODEL_LINE   4096
#define NGX_HTTP_LLM_CALIB_MAX    100000


static int ngx_http_llm_number(char **p, double *v, double min, double max);
static int ngx_http_llm_line_end(char *p);


int
ngx_http_llm_classifier_file(const char *path)
{
    FILE  *f;
    char   line[256], *p;
    int    yes;

    f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }

    yes = 0;

    while (fgets(line, sizeof(line), f)) {
        p = line;

        while (isspace((unsigned char) *p)) {
            p++;
        }

        if (*p == '#' || *p == '\0') {
            continue;
        }

        yes = strncmp(p, NGX_HTTP_LLM_MODEL_MAGIC,
                      sizeof(NGX_HTTP_LLM_MODEL_MAGIC) - 1) == 0;
        break;
    }

    fclose(f);

    return yes;
}


int
ngx_http_llm_classifier_load(ngx_http_llm_classifier_t *c, const char *path,
    ngx_http_llm_alloc_pt alloc, void *data, char *err, size_t errlen)
{
    int      n, version, have_layout, have_bias;
    FILE    *f;
    char    *line, *p, *key, *end;
    size_t   size, i;
    double   v, idx;

    memset(c, 0, sizeof(ngx_http_llm_classifier_t));

    c->weight = alloc(data, NGX_HTTP_LLM_CLASSIFIER_DIM * sizeof(float));
    line = alloc(data, NGX_HTTP_LLM_MODEL_LINE);

    if (c->weight == NULL || line == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    for (i = 0; i < NGX_HTTP_LLM_CLASSIFIER_DIM; i++) {
        c->weight[i] = 0;
    }

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open \"%s\"", path);
        return -1;
    }

    /* the calibration is counted first: it is allocated once */

    size = 0;

    while (fgets(line, NGX_HTTP_LLM_MODEL_LINE, f)) {
        if (line[0] == 'p' && line[1] == ' ') {
            size++;
        }
    }

    if (size > NGX_HTTP_LLM_CALIB_MAX) {
        snprintf(err, errlen, "\"%s\": more than %d calibration points",
                 path, NGX_HTTP_LLM_CALIB_MAX);
        goto failed;
    }

    if (size) {
        c->calibration = alloc(data, size * sizeof(float));
        if (c->calibration == NULL) {
            snprintf(err, errlen, "out of memory");
            goto failed;
        }
    }

    rewind(f);

    version = 0;
    have_layout = 0;
    have_bias = 0;
    c->threshold = -1;
    c->loss = -1;

    for (n = 1; fgets(line, NGX_HTTP_LLM_MODEL_LINE, f); n++) {

        p = line;
        end = strchr(p, '\n');

        if (end == NULL && !feof(f)) {
            snprintf(err, errlen, "\"%s\" line %d is too long", path, n);
            goto failed;
        }

        if (end) {
            *end = '\0';
        }

        while (isspace((unsigned char) *p)) {
            p++;
        }

        if (*p == '#' || *p == '\0') {
            continue;
        }

        key = p;

        while (*p && !isspace((unsigned char) *p)) {
            p++;
        }

        if (*p) {
            *p++ = '\0';
        }

        while (isspace((unsigned char) *p)) {
            p++;
        }

        if (version == 0) {
            if (strcmp(key, NGX_HTTP_LLM_MODEL_MAGIC) != 0
                || ngx_http_llm_number(&p, &v, 1, 1) != 0
                || ngx_http_llm_line_end(p) != 0)
            {
                snprintf(err, errlen, "\"%s\" line %d: \"%s 1\" expected",
                         path, n, NGX_HTTP_LLM_MODEL_MAGIC);
                goto failed;
            }

            version = 1;
            continue;
        }

        if (strcmp(key, "layout") == 0) {
            end = p + strlen(p);

            while (end > p && isspace((unsigned char) end[-1])) {
                *--end = '\0';
            }

            if (strcmp(p, ngx_http_llm_features_layout()) != 0) {
                snprintf(err, errlen, "\"%s\" was trained on the feature "
                         "layout \"%.200s\", this gateway computes \"%.200s\":"
                         " train it again (./config.sh route-train)",
                         path, p, ngx_http_llm_features_layout());
                goto failed;
            }

            have_layout = 1;
            continue;
        }

        if (strcmp(key, "w") == 0) {
            if (ngx_http_llm_number(&p, &idx, 0,
                                    NGX_HTTP_LLM_CLASSIFIER_DIM - 1) != 0
                || idx != floor(idx)
                || ngx_http_llm_number(&p, &v, -1e4, 1e4) != 0
                || ngx_http_llm_line_end(p) != 0)
            {
                snprintf(err, errlen, "\"%s\" line %d: \"w INDEX WEIGHT\" "
                         "expected, an index below %u and a weight of at "
                         "most 10000", path, n,
                         (unsigned) NGX_HTTP_LLM_CLASSIFIER_DIM);
                goto failed;
            }

            c->weight[(size_t) idx] = (float) v;
            continue;
        }

        if (strcmp(key, "p") == 0) {
            if (ngx_http_llm_number(&p, &v, 0, 1) != 0
                || ngx_http_llm_line_end(p) != 0
                || c->ncalibration >= size
                || (c->ncalibration
                    && v < c->calibration[c->ncalibration - 1]))
            {
                snprintf(err, errlen, "\"%s\" line %d: \"p PROBABILITY\" "
                         "expected, from 0 to 1, ascending", path, n);
                goto failed;
            }

            c->calibration[c->ncalibration++] = (float) v;
            continue;
        }

        if (strcmp(key, "bias") == 0 || strcmp(key, "threshold") == 0
            || strcmp(key, "loss") == 0)
        {
            if (ngx_http_llm_number(&p, &v, key[0] == 'b' ? -1e4 : 0,
                                    key[0] == 'b' ? 1e4 : 1) != 0
                || ngx_http_llm_line_end(p) != 0)
            {
                snprintf(err, errlen, "\"%s\" line %d: a number expected "
                         "after \"%s\"%s", path, n, key,
                         key[0] == 'b' ? "" : ", from 0 to 1");
                goto failed;
            }

            if (key[0] == 'b') {
                c->bias = v;
                have_bias = 1;

            } else if (key[0] == 't') {
                c->threshold = v;

            } else {
                c->loss = v;
            }

            continue;
        }

        snprintf(err, errlen, "\"%s\" line %d: unknown \"%s\"", path, n,
                 key);
        goto failed;
    }

    fclose(f);

    if (version == 0 || !have_layout || !have_bias || c->threshold < 0) {
        snprintf(err, errlen, "\"%s\" is not a whole router model: it needs "
                 "\"%s 1\", \"layout\", \"bias\" and \"threshold\"", path,
                 NGX_HTTP_LLM_MODEL_MAGIC);
        return -1;
    }

    return 0;

failed:

    fclose(f);
    return -1;
}


/* the probability that the request needs the strong model */

double
ngx_http_llm_classifier_score(const ngx_http_llm_classifier_t *c,
    const ngx_http_llm_features_t *f)
{
    size_t        i;
    double        z;
    float         sum[NGX_HTTP_LLM_KINDS];
    uint32_t      x;
    const float  *w;

    w = c->weight;
    z = c->bias;

    for (i = 0; i < NGX_HTTP_LLM_D_N; i++) {
        z += (double) w[i] * f->dense[i];
    }

    for (i = 0; i < NGX_HTTP_LLM_KINDS; i++) {
        sum[i] = 0;
    }

    for (i = 0; i < f->n; i++) {
        x = f->idx[i];
        sum[x >> 24] += w[x & 0xffffff];
    }

    for (i = 0; i < NGX_HTTP_LLM_KINDS; i++) {
        z += (double) sum[i] * f->scale[i];
    }

    return 1.0 / (1.0 + exp(-z));
}


/*
 * The threshold under which at most the share "loss" of the needs-strong
 * validation prompts score: they would go cheap.  Over 1: all cheap.
 */

double
ngx_http_llm_classifier_threshold(const ngx_http_llm_classifier_t *c,
    double loss)
{
    size_t  k;

    if (c->ncalibration == 0) {
        return -1;
    }

    k = (size_t) floor(loss * (double) c->ncalibration + 1e-9);

    if (k >= c->ncalibration) {
        return 2;
    }

    return c->calibration[k];
}


static int
ngx_http_llm_number(char **p, double *v, double min, double max)
{
    char  *end;

    *v = strtod(*p, &end);

    if (end == *p || !isfinite(*v) || *v < min || *v > max) {
        return -1;
    }

    *p = end;

    return 0;
}


static int
ngx_http_llm_line_end(char *p)
{
    while (isspace((unsigned char) *p)) {
        p++;
    }

    return *p == '\0' ? 0 : -1;
}
