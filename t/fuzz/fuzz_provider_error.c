
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Target: what a hosted provider sends back on an error, which the
 * gateway reads as hostile.  The input is given as a header value to the
 * Retry-After, decimal seconds and Go duration parsers, and as a body to
 * the classifier (under a status from its first byte), the body
 * normalizer and the stream-event check.  Invariants: no crash and no
 * overflow (UBSan); a wait is NGX_ERROR or within 0 .. an hour; a whole
 * number of seconds up to an hour is read exactly; a normalized body is
 * JSON with a string error.message, and bounded whatever the input.
 */


#include "ngx_http_llm_fuzz.h"
#include "ngx_http_llm_provider_error.h"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


/* what a normalized body may take at most: every field escaped \uXXXX */
#define NGX_HTTP_LLM_FUZZ_PERR_OUT  (6 * (1024 + 3 * 128) + 256)


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_http_llm_fuzz_init();
    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char               *p, *body;
    cJSON                *json, *e;
    size_t                i, len;
    ngx_int_t             ms, rc, want;
    ngx_str_t             out;
    ngx_uint_t            status, digits;
    ngx_pool_t           *pool;
    ngx_http_llm_perr_e   kind;

    p = malloc(size ? size : 1);
    if (p == NULL) {
        abort();
    }

    ngx_memcpy(p, data, size);

    /* headers */

    ms = ngx_http_llm_perr_seconds(p, size);
    ngx_http_llm_fuzz_assert(ms == NGX_ERROR
                             || (ms >= 0 && ms <= NGX_HTTP_LLM_PARK_MAX_MS),
                             "seconds read as %i", ms);

    for (i = 0, want = 0, digits = 0; i < size && i < 5; i++) {
        if (p[i] < '0' || p[i] > '9') {
            break;
        }

        want = want * 10 + (p[i] - '0');
        digits++;
    }

    if (digits && digits == size && want <= 3600) {
        ngx_http_llm_fuzz_assert(ms == want * 1000, "\"%*s\" read as %i ms",
                                 size, p, ms);
    }

    ms = ngx_http_llm_perr_duration(p, size);
    ngx_http_llm_fuzz_assert(ms == NGX_ERROR
                             || (ms >= 0 && ms <= NGX_HTTP_LLM_PARK_MAX_MS),
                             "a duration read as %i", ms);

    ms = ngx_http_llm_perr_retry_after(p, size, ngx_time());
    ngx_http_llm_fuzz_assert(ms == NGX_ERROR
                             || (ms >= 0 && ms <= NGX_HTTP_LLM_PARK_MAX_MS),
                             "Retry-After read as %i", ms);

    /* a body after a byte for its status, from 400 to 655 */

    status = 400 + (size ? p[0] : 0);
    body = size ? p + 1 : p;
    len = size ? size - 1 : 0;

    kind = ngx_http_llm_perr_kind(status, body, len, size & 1);
    ngx_http_llm_fuzz_assert(kind >= NGX_HTTP_LLM_PERR_BACKEND
                             && kind <= NGX_HTTP_LLM_PERR_REQUEST,
                             "status %ui judged %d", status, (int) kind);

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        abort();
    }

    rc = ngx_http_llm_perr_body(pool, status, body, len, &out);

    ngx_http_llm_fuzz_assert(rc == NGX_OK || rc == NGX_DECLINED,
                             "normalizing failed: %i", rc);

    if (rc == NGX_OK) {
        ngx_http_llm_fuzz_assert(out.len <= NGX_HTTP_LLM_FUZZ_PERR_OUT,
                                 "a normalized body of %uz bytes", out.len);

        json = cJSON_ParseWithLength((char *) out.data, out.len);
        e = cJSON_GetObjectItemCaseSensitive(json, "error");

        ngx_http_llm_fuzz_assert(cJSON_IsString(
                                     cJSON_GetObjectItemCaseSensitive(
                                         e, "message")),
                                 "no error.message in \"%V\"", &out);
        cJSON_Delete(json);
    }

    ngx_destroy_pool(pool);

    /* a stream event */

    json = cJSON_ParseWithLength((char *) p, size);
    (void) ngx_http_llm_perr_stream(json);
    cJSON_Delete(json);

    free(p);

    return 0;
}
