
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * What a hosted provider's error answer says: whose fault it is (the
 * backend's, its rate limit's, a model retired there, or the request's),
 * how long its rate-limit headers ask to wait, the body in OpenAI's shape,
 * and whether an event of a 200 stream is an error.  The answers come
 * from the network: every length and number here is bounded.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_provider_error.h"


/* of a message passed on, and of what is searched in it */
#define NGX_HTTP_LLM_PERR_MESSAGE_MAX  1024
#define NGX_HTTP_LLM_PERR_FIELD_MAX    128


typedef struct {
    cJSON                      *message;
    cJSON                      *type;
    cJSON                      *code;
    cJSON                      *param;
    cJSON                      *detail;    /* FastAPI's 422 list */
} ngx_http_llm_perr_fields_t;


static void ngx_http_llm_perr_fields(cJSON *json,
    ngx_http_llm_perr_fields_t *f);
static ngx_uint_t ngx_http_llm_perr_is(cJSON *item, const char *s);
static ngx_uint_t ngx_http_llm_perr_has(cJSON *item, const char *s);
static ngx_uint_t ngx_http_llm_perr_stream_request(cJSON *e);
static ngx_uint_t ngx_http_llm_perr_retired(ngx_http_llm_perr_fields_t *f,
    ngx_uint_t text);
static ngx_uint_t ngx_http_llm_perr_auth(ngx_http_llm_perr_fields_t *f);
static cJSON *ngx_http_llm_perr_string(cJSON *item, size_t max);


/* the statuses that are the backend's failure, whatever the body says */

ngx_uint_t
ngx_http_llm_perr_status(ngx_uint_t status)
{
    switch (status) {

    case 401:       /* its key */
    case 402:       /* its credits */
    case 408:       /* it timed out */
    case 412:       /* its account is suspended (Fireworks) */
    case 429:
    case 498:       /* Groq's flex tier is out of capacity */
        return 1;

    default:
        return status >= 500;
    }
}


ngx_http_llm_perr_e
ngx_http_llm_perr_kind(ngx_uint_t status, u_char *body, size_t len,
    ngx_uint_t retry_after)
{
    cJSON                       *json;
    ngx_http_llm_perr_e          kind;
    ngx_http_llm_perr_fields_t   f;

    if (status < 400) {
        return NGX_HTTP_LLM_PERR_NONE;
    }

    if (status == 429 || (status == 503 && retry_after)) {
        return NGX_HTTP_LLM_PERR_LIMIT;
    }

    if (ngx_http_llm_perr_status(status)) {
        return NGX_HTTP_LLM_PERR_BACKEND;
    }

    json = NULL;

    if (body && len && len <= NGX_HTTP_LLM_PERR_BODY_MAX) {
        json = cJSON_ParseWithLength((char *) body, len);
    }

    ngx_http_llm_perr_fields(json, &f);

    kind = NGX_HTTP_LLM_PERR_REQUEST;

    if ((status == 400 || status == 404 || status == 410)
        && ngx_http_llm_perr_retired(&f, status != 400))
    {
        kind = NGX_HTTP_LLM_PERR_RETIRED;

    } else if (status == 403
               && (f.message == NULL || ngx_http_llm_perr_auth(&f)))
    {
        /* no JSON message (a proxy's page, nothing), or about the key */
        kind = NGX_HTTP_LLM_PERR_BACKEND;
    }

    cJSON_Delete(json);

    return kind;
}


/*
 * {"error":{...}} (OpenAI, Groq, Fireworks, Together, OpenRouter),
 * {"error":"..."}, Mistral's top-level {"object":"error","message":...},
 * whose 422 has "message":{"detail":[...]}, and FastAPI's {"detail":...}
 */

static void
ngx_http_llm_perr_fields(cJSON *json, ngx_http_llm_perr_fields_t *f)
{
    cJSON  *e, *m;

    ngx_memzero(f, sizeof(ngx_http_llm_perr_fields_t));

    if (!cJSON_IsObject(json)) {
        return;
    }

    e = cJSON_GetObjectItemCaseSensitive(json, "error");

    if (cJSON_IsString(e)) {
        f->message = e;
        return;
    }

    if (!cJSON_IsObject(e)) {
        e = json;
    }

    m = cJSON_GetObjectItemCaseSensitive(e, "message");

    if (cJSON_IsString(m)) {
        f->message = m;

    } else if (cJSON_IsObject(m)) {
        f->detail = cJSON_GetObjectItemCaseSensitive(m, "detail");
    }

    f->type = cJSON_GetObjectItemCaseSensitive(e, "type");
    f->code = cJSON_GetObjectItemCaseSensitive(e, "code");
    f->param = cJSON_GetObjectItemCaseSensitive(e, "param");

    if (f->detail == NULL) {
        f->detail = cJSON_GetObjectItemCaseSensitive(json, "detail");
    }

    if (f->detail && f->message == NULL && cJSON_IsString(f->detail)) {
        f->message = f->detail;
        f->detail = NULL;
    }
}


/* a string member equal to s, whatever its case */

static ngx_uint_t
ngx_http_llm_perr_is(cJSON *item, const char *s)
{
    size_t  n;

    if (!cJSON_IsString(item) || item->valuestring == NULL) {
        return 0;
    }

    n = ngx_strlen(s);

    return ngx_strnlen((u_char *) item->valuestring, n + 1) == n
           && ngx_strncasecmp((u_char *) item->valuestring, (u_char *) s, n)
              == 0;
}


/* a string member with s in its first bytes, whatever its case */

static ngx_uint_t
ngx_http_llm_perr_has(cJSON *item, const char *s)
{
    u_char  *p, *last;
    size_t   n, len;

    if (!cJSON_IsString(item) || item->valuestring == NULL) {
        return 0;
    }

    p = (u_char *) item->valuestring;
    len = ngx_strnlen(p, NGX_HTTP_LLM_PERR_MESSAGE_MAX);
    n = ngx_strlen(s);

    if (len < n) {
        return 0;
    }

    for (last = p + len - n; p <= last; p++) {
        if (ngx_strncasecmp(p, (u_char *) s, n) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * the model is gone from that backend: Groq's model_decommissioned and
 * model_not_found, Fireworks' NOT_FOUND, Mistral's unknown or invalid
 * model, and, with text (a 404 or 410: the path is fixed, so only the
 * model can be missing), the "model ... not found" texts of the others.
 * A 400's text is never read: a provider quotes what it refuses, and a
 * client's own member named "model does not exist" must not park the
 * backend for every tenant.  Nor is an error about another parameter.
 */

static ngx_uint_t
ngx_http_llm_perr_retired(ngx_http_llm_perr_fields_t *f, ngx_uint_t text)
{
    cJSON       **c, *items[2];
    ngx_uint_t    i;

    if (cJSON_IsString(f->param) && f->param->valuestring
        && ngx_strcmp(f->param->valuestring, "model") != 0)
    {
        return 0;
    }

    static const char  *codes[] = {
        "model_decommissioned", "model_not_found", "not_found",
        "unknown_model", "invalid_model", "model_not_available", NULL
    };

    items[0] = f->code;
    items[1] = f->type;

    for (c = items; c < items + 2; c++) {
        for (i = 0; codes[i]; i++) {
            if (ngx_http_llm_perr_is(*c, codes[i])) {
                return 1;
            }
        }
    }

    if (!text || !ngx_http_llm_perr_has(f->message, "model")) {
        return 0;
    }

    return ngx_http_llm_perr_has(f->message, "not found")
           || ngx_http_llm_perr_has(f->message, "does not exist")
           || ngx_http_llm_perr_has(f->message, "decommissioned")
           || ngx_http_llm_perr_has(f->message, "invalid model")
           || ngx_http_llm_perr_has(f->message, "unknown model");
}


/*
 * A 403 about the gateway's key or account, not about the request.  What
 * the request caused comes first: a moderation flag quotes the prompt in
 * its metadata, never read here, but a message could echo it too.
 */

static ngx_uint_t
ngx_http_llm_perr_auth(ngx_http_llm_perr_fields_t *f)
{
    ngx_uint_t  i;

    static const char  *request[] = {
        "flagged", "moderation", "context", "max_new_tokens",
        "max_tokens", "too long", "exceed", NULL
    };

    static const char  *auth[] = {
        "key", "auth", "credential", "permission", "access", "account",
        "suspended", "billing", "forbidden", NULL
    };

    if (ngx_http_llm_perr_is(f->type, "invalid_request_error")) {
        return 0;
    }

    for (i = 0; request[i]; i++) {
        if (ngx_http_llm_perr_has(f->message, request[i])) {
            return 0;
        }
    }

    for (i = 0; auth[i]; i++) {
        if (ngx_http_llm_perr_has(f->message, auth[i])
            || ngx_http_llm_perr_has(f->code, auth[i])
            || ngx_http_llm_perr_has(f->type, auth[i]))
        {
            return 1;
        }
    }

    return 0;
}


/*
 * Seconds, whole or decimal ("7", "1.5"), as milliseconds, at most
 * NGX_HTTP_LLM_PARK_MAX_MS; NGX_ERROR: not a number
 */

ngx_int_t
ngx_http_llm_perr_seconds(u_char *p, size_t len)
{
    u_char      *last;
    ngx_int_t    n, ms, scale;
    ngx_uint_t   digits;

    last = p + len;
    n = 0;
    digits = 0;

    /* saturated past the cap: "99999999999" cannot overflow */

    for ( /* void */ ; p < last && *p >= '0' && *p <= '9'; p++) {
        digits++;

        if (n <= NGX_HTTP_LLM_PARK_MAX_MS / 1000) {
            n = n * 10 + (*p - '0');
        }
    }

    ms = ngx_min(n, NGX_HTTP_LLM_PARK_MAX_MS / 1000 + 1) * 1000;

    if (p < last && *p == '.') {
        p++;

        for (scale = 100; p < last && *p >= '0' && *p <= '9'; p++) {
            digits++;
            ms += (*p - '0') * scale;
            scale /= 10;
        }
    }

    if (digits == 0 || p != last) {
        return NGX_ERROR;
    }

    return ngx_min(ms, NGX_HTTP_LLM_PARK_MAX_MS);
}


/*
 * A Go duration, as Groq's x-ratelimit-reset-* are: "7.66s", "2m59.56s",
 * "120ms", "1h2m3s"; milliseconds at most NGX_HTTP_LLM_PARK_MAX_MS
 */

#define NGX_HTTP_LLM_PERR_DURATION_MAX  32

ngx_int_t
ngx_http_llm_perr_duration(u_char *p, size_t len)
{
    u_char   *last, *start;
    int64_t   ms, n, unit, frac, scale;

    if (len == 0 || len > NGX_HTTP_LLM_PERR_DURATION_MAX) {
        return NGX_ERROR;
    }

    last = p + len;
    ms = 0;

    while (p < last) {
        start = p;
        n = 0;

        /* saturated: a long run of digits cannot overflow */

        for ( /* void */ ; p < last && *p >= '0' && *p <= '9'; p++) {
            if (n < 1000000000) {
                n = n * 10 + (*p - '0');
            }
        }

        /* the fraction in millionths */

        frac = 0;

        if (p < last && *p == '.') {
            p++;

            for (scale = 100000; p < last && *p >= '0' && *p <= '9'; p++) {
                frac += (*p - '0') * scale;
                scale /= 10;
            }
        }

        if (p == start || p == last) {
            return NGX_ERROR;
        }

        /* the unit, in microseconds */

        if (last - p >= 2 && p[0] == 'm' && p[1] == 's') {
            unit = 1000;
            p += 2;

        } else if (last - p >= 2 && p[0] == 'u' && p[1] == 's') {
            unit = 1;
            p += 2;

        } else if (last - p >= 2 && p[0] == 'n' && p[1] == 's') {
            unit = 0;
            p += 2;

        } else if (*p == 'h') {
            unit = 3600000000LL;
            p++;

        } else if (*p == 'm') {
            unit = 60000000;
            p++;

        } else if (*p == 's') {
            unit = 1000000;
            p++;

        } else {
            return NGX_ERROR;
        }

        /* in ms; past the cap, the rest only has to parse */

        if (ms < NGX_HTTP_LLM_PARK_MAX_MS) {
            n = ngx_min(n, NGX_HTTP_LLM_PARK_MAX_MS / 1000 + 1);
            ms += (n * unit + frac * unit / 1000000) / 1000;
        }
    }

    return (ngx_int_t) ngx_min(ms, NGX_HTTP_LLM_PARK_MAX_MS);
}


/* Retry-After: seconds, whole or decimal, or an HTTP date */

ngx_int_t
ngx_http_llm_perr_retry_after(u_char *p, size_t len, time_t now)
{
    time_t     t;
    ngx_int_t  ms;

    if (len == 0 || len > 64) {
        return NGX_ERROR;
    }

    ms = ngx_http_llm_perr_seconds(p, len);

    if (ms != NGX_ERROR) {
        return ms;
    }

    t = ngx_parse_http_time(p, len);

    if (t == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (t <= now) {
        return 0;
    }

    return (t - now > NGX_HTTP_LLM_PARK_MAX_MS / 1000)
           ? NGX_HTTP_LLM_PARK_MAX_MS : (ngx_int_t) (t - now) * 1000;
}


/* a copy of a string member cut to max bytes, at a character's start */

static cJSON *
ngx_http_llm_perr_string(cJSON *item, size_t max)
{
    u_char  *p;
    size_t   n;
    cJSON   *s;

    if (cJSON_IsNumber(item)) {
        /* a code past int64_t would be undefined to convert */

        if (!(item->valuedouble > -1e18 && item->valuedouble < 1e18)) {
            return NULL;
        }

        p = ngx_alloc(NGX_INT64_LEN + 1, ngx_cycle->log);
        if (p == NULL) {
            return NULL;
        }

        *ngx_sprintf(p, "%L", (int64_t) item->valuedouble) = '\0';
        s = cJSON_CreateString((char *) p);
        ngx_free(p);

        return s;
    }

    if (!cJSON_IsString(item) || item->valuestring == NULL) {
        return NULL;
    }

    p = (u_char *) item->valuestring;
    n = ngx_strnlen(p, max + 1);

    if (n <= max) {
        return cJSON_CreateString((char *) p);
    }

    for (n = max; n && (p[n] & 0xc0) == 0x80; n--) { /* void */ }

    p = ngx_alloc(n + 1, ngx_cycle->log);
    if (p == NULL) {
        return NULL;
    }

    *ngx_cpymem(p, item->valuestring, n) = '\0';
    s = cJSON_CreateString((char *) p);
    ngx_free(p);

    return s;
}


/*
 * A provider's error body in OpenAI's shape, {"error":{"message","type",
 * "param","code"}}, in out (from pool); NGX_DECLINED: it is in it already.
 * The body is masked before: only what it says is copied, bounded.
 */

ngx_int_t
ngx_http_llm_perr_body(ngx_pool_t *pool, ngx_uint_t status, u_char *body,
    size_t len, ngx_str_t *out)
{
    char                        *s, buf[NGX_HTTP_LLM_PERR_MESSAGE_MAX];
    u_char                      *p, *last;
    cJSON                       *json, *root, *e, *d, *a, *loc, *item, *v;
    ngx_int_t                    rc;
    ngx_uint_t                   n;
    ngx_http_llm_perr_fields_t   f;

    json = NULL;

    if (body && len && len <= NGX_HTTP_LLM_PERR_BODY_MAX) {
        json = cJSON_ParseWithLength((char *) body, len);
    }

    e = cJSON_GetObjectItemCaseSensitive(json, "error");

    if (cJSON_IsObject(e)
        && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")))
    {
        cJSON_Delete(json);
        return NGX_DECLINED;
    }

    ngx_http_llm_perr_fields(json, &f);

    rc = NGX_ERROR;

    root = cJSON_CreateObject();
    e = cJSON_AddObjectToObject(root, "error");

    if (e == NULL) {
        goto done;
    }

    v = ngx_http_llm_perr_string(f.message, NGX_HTTP_LLM_PERR_MESSAGE_MAX);
    item = ngx_http_llm_perr_string(f.code, NGX_HTTP_LLM_PERR_FIELD_MAX);
    loc = ngx_http_llm_perr_string(f.param, NGX_HTTP_LLM_PERR_FIELD_MAX);

    /* FastAPI's list: the first entry's text, field and type */

    d = cJSON_IsArray(f.detail) ? cJSON_GetArrayItem(f.detail, 0) : NULL;

    if (cJSON_IsObject(d)) {
        if (v == NULL) {
            v = ngx_http_llm_perr_string(
                    cJSON_GetObjectItemCaseSensitive(d, "msg"),
                    NGX_HTTP_LLM_PERR_MESSAGE_MAX);
        }

        if (item == NULL) {
            item = ngx_http_llm_perr_string(
                       cJSON_GetObjectItemCaseSensitive(d, "type"),
                       NGX_HTTP_LLM_PERR_FIELD_MAX);
        }

        if (loc == NULL) {
            p = (u_char *) buf;
            last = p + NGX_HTTP_LLM_PERR_FIELD_MAX;
            n = 0;

            d = cJSON_GetObjectItemCaseSensitive(d, "loc");

            cJSON_ArrayForEach(a, d) {
                /* "body" says where FastAPI found it, not what */
                if (n++ == 0 && ngx_http_llm_perr_is(a, "body")) {
                    continue;
                }

                if (p != (u_char *) buf && p < last) {
                    *p++ = '.';
                }

                if (cJSON_IsString(a)) {
                    p = ngx_slprintf(p, last, "%s", a->valuestring);

                } else if (cJSON_IsNumber(a) && a->valuedouble > -1e18
                           && a->valuedouble < 1e18)
                {
                    p = ngx_slprintf(p, last, "%L", (int64_t) a->valuedouble);
                }

                if (n > 16) {
                    break;
                }
            }

            if (p != (u_char *) buf) {
                /* a field name: a byte cut from a character goes */

                for (last = (u_char *) buf; last < p; last++) {
                    if (*last < 0x20 || *last >= 0x7f) {
                        *last = '?';
                    }
                }

                *p = '\0';
                loc = cJSON_CreateString(buf);
            }
        }
    }

    if (v == NULL) {
        ngx_snprintf((u_char *) buf, sizeof(buf),
                     "The model backend returned HTTP %ui.%Z", status);
        v = cJSON_CreateString(buf);
    }

    cJSON_AddItemToObject(e, "message", v ? v : cJSON_CreateNull());

    if (cJSON_IsString(f.type) && f.type->valuestring
        && ngx_strnlen((u_char *) f.type->valuestring,
                       NGX_HTTP_LLM_PERR_FIELD_MAX + 1)
           <= NGX_HTTP_LLM_PERR_FIELD_MAX)
    {
        cJSON_AddStringToObject(e, "type", f.type->valuestring);

    } else {
        cJSON_AddStringToObject(e, "type",
                                status == 401 ? "authentication_error"
                                : status == 403 ? "permission_error"
                                : status == 404 ? "not_found_error"
                                : status < 500 ? "invalid_request_error"
                                : "upstream_error");
    }

    cJSON_AddItemToObject(e, "param", loc ? loc : cJSON_CreateNull());
    cJSON_AddItemToObject(e, "code", item ? item : cJSON_CreateNull());

    s = cJSON_PrintUnformatted(root);

    if (s == NULL) {
        goto done;
    }

    out->len = ngx_strlen(s);
    out->data = ngx_pnalloc(pool, out->len);

    if (out->data) {
        ngx_memcpy(out->data, s, out->len);
        rc = NGX_OK;
    }

    cJSON_free(s);

done:

    cJSON_Delete(root);
    cJSON_Delete(json);

    return rc;
}


/*
 * An event of a 200 stream that is an error: a top-level "error"
 * (OpenRouter, after the start), a choice that finished with "error",
 * or Groq's x_groq.error.  NGX_HTTP_LLM_PERR_STREAM_REQUEST: the error
 * object says the request caused it (Groq's tool_use_failed, a 4xx code
 * of OpenRouter's), as the same error before the start would have been
 * a 400; that must not count against the backend either.
 */

ngx_uint_t
ngx_http_llm_perr_stream(cJSON *event)
{
    cJSON  *e, *c;

    if (!cJSON_IsObject(event)) {
        return 0;
    }

    e = cJSON_GetObjectItemCaseSensitive(event, "error");

    if (e == NULL || cJSON_IsNull(e)) {
        e = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(event, "x_groq"), "error");
    }

    if (e && !cJSON_IsNull(e)) {
        return ngx_http_llm_perr_stream_request(e)
               ? NGX_HTTP_LLM_PERR_STREAM_REQUEST
               : NGX_HTTP_LLM_PERR_STREAM_BACKEND;
    }

    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(event, "choices"))
    {
        if (ngx_http_llm_perr_is(
                cJSON_GetObjectItemCaseSensitive(c, "finish_reason"),
                "error"))
        {
            return NGX_HTTP_LLM_PERR_STREAM_BACKEND;
        }
    }

    return 0;
}


/* an error object of a stream that the request caused */

static ngx_uint_t
ngx_http_llm_perr_stream_request(cJSON *e)
{
    cJSON       *code;
    ngx_uint_t   i;

    static const char  *codes[] = {
        "tool_use_failed", "json_validate_failed", "context_length_exceeded",
        "invalid_request_error", "content_filter", NULL
    };

    if (!cJSON_IsObject(e)) {
        return 0;
    }

    if (ngx_http_llm_perr_is(cJSON_GetObjectItemCaseSensitive(e, "type"),
                             "invalid_request_error"))
    {
        return 1;
    }

    code = cJSON_GetObjectItemCaseSensitive(e, "code");

    if (cJSON_IsNumber(code)) {
        /* OpenRouter's: an HTTP status */
        return code->valuedouble >= 400 && code->valuedouble < 500
               && !ngx_http_llm_perr_status((ngx_uint_t) code->valuedouble);
    }

    for (i = 0; codes[i]; i++) {
        if (ngx_http_llm_perr_is(code, codes[i])) {
            return 1;
        }
    }

    return 0;
}
