
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Strict JSON for client bodies.  A first pass over the bytes checks the
 * grammar of RFC 8259 and the limits below before cJSON allocates a node,
 * so that the parse stays linear in time and bounded in memory; a walk of
 * the tree then refuses duplicate member names, which cJSON keeps and
 * backends resolve differently (the last copy wins in Python, the first
 * in cJSON).
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_error.h"
#include "ngx_http_llm_json.h"

#include <math.h>


/*
 * Limits, each far above what clients send: tool schemas nest some ten
 * levels, a request has about twenty members and a schema's "properties"
 * a few hundred, OpenAI caps "tools" at 128 and long conversations have
 * a few thousand messages.  65536 values bound the tree to about 4.5 MB
 * (72 bytes a node) besides the strings, whatever the body's size.
 */

#define NGX_HTTP_LLM_JSON_MAX_DEPTH    64
#define NGX_HTTP_LLM_JSON_MAX_MEMBERS  1024
#define NGX_HTTP_LLM_JSON_MAX_ARRAY    8192
#define NGX_HTTP_LLM_JSON_MAX_NODES    65536

/* a "param" longer than this is cut: it names, it does not quote */
#define NGX_HTTP_LLM_JSON_PARAM_LEN    128


typedef struct {
    u_char                     *key;     /* the current member's name */
    size_t                      key_len;
    ngx_uint_t                  count;   /* members or elements so far */
    ngx_uint_t                  object;
} ngx_http_llm_json_level_t;


typedef struct {
    ngx_pool_t                 *pool;
    ngx_http_llm_error_t       *err;
    cJSON                     **sort;
    ngx_http_llm_json_level_t   stack[NGX_HTTP_LLM_JSON_MAX_DEPTH + 1];
} ngx_http_llm_json_walk_t;


static u_char *ngx_http_llm_json_ws(u_char *p, u_char *last);
static u_char *ngx_http_llm_json_string(u_char *p, u_char *last);
static u_char *ngx_http_llm_json_utf8(u_char *p, u_char *last);
static u_char *ngx_http_llm_json_number(u_char *p, u_char *last);
static u_char *ngx_http_llm_json_literal(u_char *p, u_char *last);
static const char *ngx_http_llm_json_path(ngx_pool_t *pool,
    ngx_http_llm_json_level_t *stack, ngx_uint_t n);
static ngx_int_t ngx_http_llm_json_walk(ngx_http_llm_json_walk_t *w,
    cJSON *item, ngx_uint_t depth);
static int ngx_http_llm_json_cmp(const void *one, const void *two);


/*
 * The first pass: an iterative scan with one level of state per open
 * container.  On an error, err names the path of the value at fault.
 */

ngx_int_t
ngx_http_llm_json_check(ngx_pool_t *pool, u_char *p, size_t len,
    ngx_http_llm_error_t *err)
{
    u_char                     *start, *last;
    ngx_uint_t                  depth, nodes;
    const char                 *param;
    ngx_http_llm_json_level_t  *lv, stack[NGX_HTTP_LLM_JSON_MAX_DEPTH];

    start = p;
    last = p + len;
    depth = 0;
    nodes = 0;
    lv = NULL;

value:

    p = ngx_http_llm_json_ws(p, last);

    if (p == last) {
        goto syntax;
    }

    if (++nodes > NGX_HTTP_LLM_JSON_MAX_NODES) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "too_many_values",
                               NULL, "The request body has more than %d "
                               "JSON values.", NGX_HTTP_LLM_JSON_MAX_NODES);
        return NGX_ERROR;
    }

    switch (*p) {

    case '{':
    case '[':
        if (depth == NGX_HTTP_LLM_JSON_MAX_DEPTH) {
            param = ngx_http_llm_json_path(pool, stack, depth);
            ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error", "invalid_json",
                                   param, "The request body is nested "
                                   "deeper than %d levels.",
                                   NGX_HTTP_LLM_JSON_MAX_DEPTH);
            return NGX_ERROR;
        }

        lv = &stack[depth++];
        lv->object = (*p == '{');
        lv->count = 0;
        lv->key = NULL;
        lv->key_len = 0;

        p = ngx_http_llm_json_ws(p + 1, last);

        if (p < last && *p == (lv->object ? '}' : ']')) {
            p++;
            depth--;
            goto next;
        }

        if (lv->object) {
            goto member;
        }

        lv->count = 1;
        goto value;

    case '"':
        p = ngx_http_llm_json_string(p, last);
        break;

    case 't':
    case 'f':
    case 'n':
        p = ngx_http_llm_json_literal(p, last);
        break;

    default:
        p = ngx_http_llm_json_number(p, last);
        break;
    }

    if (p == NULL) {
        goto syntax;
    }

    goto next;

member:

    if (p == last || *p != '"') {
        goto syntax;
    }

    if (++lv->count > NGX_HTTP_LLM_JSON_MAX_MEMBERS) {
        param = ngx_http_llm_json_path(pool, stack, depth - 1);
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error",
                               "object_above_max_properties", param,
                               "Invalid '%s': too many properties. Expected "
                               "an object with at most %d properties.",
                               param ? param : "body",
                               NGX_HTTP_LLM_JSON_MAX_MEMBERS);
        return NGX_ERROR;
    }

    lv->key = p + 1;

    p = ngx_http_llm_json_string(p, last);
    if (p == NULL) {
        goto syntax;
    }

    lv->key_len = p - 1 - lv->key;

    p = ngx_http_llm_json_ws(p, last);

    if (p == last || *p != ':') {
        goto syntax;
    }

    p++;
    goto value;

next:

    p = ngx_http_llm_json_ws(p, last);

    if (depth == 0) {
        if (p == last) {
            return NGX_OK;
        }

        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_json", NULL,
                               "We could not parse the JSON body of your "
                               "request: there is more after the JSON value "
                               "(at byte %uz).", (size_t) (p - start));
        return NGX_ERROR;
    }

    lv = &stack[depth - 1];

    if (p == last) {
        goto syntax;
    }

    if (*p == ',') {
        p = ngx_http_llm_json_ws(p + 1, last);

        if (lv->object) {
            goto member;
        }

        if (++lv->count > NGX_HTTP_LLM_JSON_MAX_ARRAY) {
            param = ngx_http_llm_json_path(pool, stack, depth - 1);
            ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error",
                                   "array_above_max_length", param,
                                   "Invalid '%s': array too long. Expected "
                                   "an array with maximum length %d.",
                                   param ? param : "body",
                                   NGX_HTTP_LLM_JSON_MAX_ARRAY);
            return NGX_ERROR;
        }

        goto value;
    }

    if (*p == (lv->object ? '}' : ']')) {
        p++;
        depth--;
        goto next;
    }

syntax:

    ngx_http_llm_json_syntax(err);
    return NGX_ERROR;
}


void
ngx_http_llm_json_syntax(ngx_http_llm_error_t *err)
{
    ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                           "invalid_request_error", "invalid_json", NULL,
                           "We could not parse the JSON body of your "
                           "request. (HINT: This likely means you "
                           "aren't using your HTTP library correctly.)");
}


static u_char *
ngx_http_llm_json_ws(u_char *p, u_char *last)
{
    while (p < last
           && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    {
        p++;
    }

    return p;
}


/* past the closing quote, or NULL */

static u_char *
ngx_http_llm_json_string(u_char *p, u_char *last)
{
    u_char      c;
    ngx_uint_t  i, u;

    for (p++; p < last; /* void */) {
        c = *p;

        if (c == '"') {
            return p + 1;
        }

        if (c < 0x20) {
            return NULL;
        }

        if (c >= 0x80) {
            p = ngx_http_llm_json_utf8(p, last);

            if (p == NULL) {
                return NULL;
            }

            continue;
        }

        if (c != '\\') {
            p++;
            continue;
        }

        if (++p == last) {
            return NULL;
        }

        switch (*p) {

        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            p++;
            continue;

        case 'u':
            if (last - p < 5) {
                return NULL;
            }

            u = 0;

            for (i = 1; i < 5; i++) {
                c = p[i] | 0x20;

                if (c >= '0' && c <= '9') {
                    u = u * 16 + c - '0';

                } else if (c >= 'a' && c <= 'f') {
                    u = u * 16 + c - 'a' + 10;

                } else {
                    return NULL;
                }
            }

            /* cJSON ends its strings at a NUL: it would change the text */

            if (u == 0) {
                return NULL;
            }

            p += 5;
            continue;

        default:
            return NULL;
        }
    }

    return NULL;
}


/* one UTF-8 character, as RFC 3629: no overlong forms, no surrogates */

static u_char *
ngx_http_llm_json_utf8(u_char *p, u_char *last)
{
    u_char      c;
    uint32_t    u, min;
    ngx_uint_t  n, i;

    c = *p;

    if (c >= 0xf0 && c <= 0xf4) {
        n = 3;
        u = c & 0x07;
        min = 0x10000;

    } else if (c >= 0xe0 && c <= 0xef) {
        n = 2;
        u = c & 0x0f;
        min = 0x800;

    } else if (c >= 0xc2 && c <= 0xdf) {
        n = 1;
        u = c & 0x1f;
        min = 0x80;

    } else {
        return NULL;
    }

    if ((size_t) (last - p) <= n) {
        return NULL;
    }

    for (i = 1; i <= n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return NULL;
        }

        u = (u << 6) | (p[i] & 0x3f);
    }

    if (u < min || u > 0x10ffff || (u >= 0xd800 && u <= 0xdfff)) {
        return NULL;
    }

    return p + n + 1;
}


static u_char *
ngx_http_llm_json_number(u_char *p, u_char *last)
{
    u_char  *digits;

    if (*p == '-') {
        p++;
    }

    if (p == last) {
        return NULL;
    }

    if (*p == '0') {
        p++;

    } else if (*p >= '1' && *p <= '9') {
        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }

    } else {
        return NULL;
    }

    if (p < last && *p == '.') {
        digits = ++p;

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }

        if (p == digits) {
            return NULL;
        }
    }

    if (p < last && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < last && (*p == '+' || *p == '-')) {
            p++;
        }

        digits = p;

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }

        if (p == digits) {
            return NULL;
        }
    }

    return p;
}


static u_char *
ngx_http_llm_json_literal(u_char *p, u_char *last)
{
    size_t       n;
    const char  *s;

    s = (*p == 't') ? "true" : (*p == 'f') ? "false" : "null";
    n = ngx_strlen(s);

    if ((size_t) (last - p) < n || ngx_strncmp(p, s, n) != 0) {
        return NULL;
    }

    return p + n;
}


/* "messages[0].content[1].image_url.url": the path to stack[n] */

static const char *
ngx_http_llm_json_path(ngx_pool_t *pool, ngx_http_llm_json_level_t *stack,
    ngx_uint_t n)
{
    u_char      *buf, *p, *last;
    ngx_uint_t   i;

    if (n == 0) {
        return NULL;
    }

    buf = ngx_pnalloc(pool, NGX_HTTP_LLM_JSON_PARAM_LEN + 1);
    if (buf == NULL) {
        return NULL;
    }

    p = buf;
    last = buf + NGX_HTTP_LLM_JSON_PARAM_LEN;

    for (i = 0; i < n; i++) {
        if (!stack[i].object) {
            p = ngx_slprintf(p, last, "[%ui]", stack[i].count - 1);
            continue;
        }

        if (i > 0) {
            p = ngx_slprintf(p, last, ".");
        }

        p = ngx_slprintf(p, last, "%*s", stack[i].key_len, stack[i].key);
    }

    /* a cut must not split a UTF-8 character */

    if (p == last) {
        while (p > buf && (p[-1] & 0xc0) == 0x80) {
            p--;
        }

        if (p > buf && p[-1] >= 0xc0) {
            p--;
        }
    }

    *p = '\0';

    return (const char *) buf;
}


/*
 * The second pass, over the tree: one copy of each member name in every
 * object (the names sorted, O(n log n)), and finite numbers only, as
 * cJSON would print an overflowed one as null.
 */

ngx_int_t
ngx_http_llm_json_unique(ngx_pool_t *pool, cJSON *json,
    ngx_http_llm_error_t *err)
{
    ngx_int_t                 rc;
    ngx_http_llm_json_walk_t  w;

    w.pool = pool;
    w.err = err;
    w.sort = ngx_palloc(pool, NGX_HTTP_LLM_JSON_MAX_MEMBERS * sizeof(cJSON *));

    if (w.sort == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_llm_json_walk(&w, json, 0);

    /* 8 KiB a request: a long stream must not hold it to its end */
    ngx_pfree(pool, w.sort);

    return rc;
}


static ngx_int_t
ngx_http_llm_json_walk(ngx_http_llm_json_walk_t *w, cJSON *item,
    ngx_uint_t depth)
{
    cJSON                      *child;
    ngx_uint_t                  n, i;
    const char                 *param;
    ngx_http_llm_json_level_t  *lv;

    if (cJSON_IsNumber(item) && !isfinite(item->valuedouble)) {
        param = ngx_http_llm_json_path(w->pool, w->stack, depth);
        ngx_http_llm_set_error(w->err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_value",
                               param, "Invalid value for '%s': the number "
                               "is out of range.", param ? param : "body");
        return NGX_ERROR;
    }

    if (item->child == NULL || depth > NGX_HTTP_LLM_JSON_MAX_DEPTH) {
        return NGX_OK;
    }

    lv = &w->stack[depth];
    lv->object = cJSON_IsObject(item);

    if (lv->object) {
        n = 0;

        for (child = item->child; child; child = child->next) {
            if (n == NGX_HTTP_LLM_JSON_MAX_MEMBERS) {
                /* the first pass lets no such object through */
                ngx_http_llm_json_syntax(w->err);
                return NGX_ERROR;
            }

            w->sort[n++] = child;
        }

        ngx_qsort(w->sort, n, sizeof(cJSON *), ngx_http_llm_json_cmp);

        for (i = 1; i < n; i++) {
            if (ngx_strcmp(w->sort[i - 1]->string, w->sort[i]->string) != 0) {
                continue;
            }

            lv->key = (u_char *) w->sort[i]->string;
            lv->key_len = ngx_strlen(lv->key);

            param = ngx_http_llm_json_path(w->pool, w->stack, depth + 1);
            ngx_http_llm_set_error(w->err, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error",
                                   "duplicate_parameter", param,
                                   "Duplicate parameter: '%s'. A name may "
                                   "appear only once in an object.",
                                   param ? param : "");
            return NGX_ERROR;
        }
    }

    lv->count = 0;

    for (child = item->child; child; child = child->next) {
        lv->count++;

        if (lv->object) {
            lv->key = (u_char *) child->string;
            lv->key_len = ngx_strlen(child->string);
        }

        if (ngx_http_llm_json_walk(w, child, depth + 1) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static int
ngx_http_llm_json_cmp(const void *one, const void *two)
{
    cJSON * const  *a = one;
    cJSON * const  *b = two;

    return ngx_strcmp((*a)->string, (*b)->string);
}
