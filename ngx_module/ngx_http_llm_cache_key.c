
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The response cache's key: a canonical form of the request, written in
 * a buffer of the worker's, and its SHA-256.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_cache.h"
#include "ngx_http_llm_keys.h"
#include "ngx_http_llm_util.h"


#define NGX_HTTP_LLM_CANON_KEEP      (1024 * 1024)
#define NGX_HTTP_LLM_CANON_NUMBER    32      /* "n", a double, ";" */
#define NGX_HTTP_LLM_CANON_STACK     32      /* members sorted on the stack */


/* the canonical form of a request, in the worker's buffer */

typedef struct {
    u_char                     *start;
    u_char                     *pos;
    u_char                     *end;
} ngx_http_llm_canon_t;


static ngx_int_t ngx_http_llm_canon_item(ngx_http_llm_canon_t *c,
    cJSON *item, ngx_uint_t depth);
static ngx_int_t ngx_http_llm_canon_object(ngx_http_llm_canon_t *c,
    cJSON *item, ngx_uint_t depth);
static ngx_int_t ngx_http_llm_canon_str(ngx_http_llm_canon_t *c,
    u_char tag, u_char *s, size_t len);
static ngx_int_t ngx_http_llm_canon_reserve(ngx_http_llm_canon_t *c,
    size_t n);
static void ngx_http_llm_cache_sort(cJSON **a, cJSON **tmp, ngx_uint_t n);


static u_char      *ngx_http_llm_canon_buf;
static size_t       ngx_http_llm_canon_size;


/*
 * SHA-256 over a canonical form of everything that changes the answer:
 * the request with its keys sorted at every level, without the fields
 * that only change its delivery, and with the logical model.
 */

ngx_int_t
ngx_http_llm_cache_key(ngx_http_llm_ctx_t *ctx)
{
    u_char                *p;
    size_t                 len;
    ngx_str_t              scope, sha;
    ngx_http_request_t    *r;
    ngx_http_llm_canon_t   c;
    u_char                 hex[NGX_HTTP_LLM_SHA256_HEX_LEN];

    r = ctx->request;

    c.start = ngx_http_llm_canon_buf;
    c.pos = c.start;
    c.end = c.start + ngx_http_llm_canon_size;

    if (ngx_http_llm_canon_str(&c, 'm', ctx->model->name.data,
                               ctx->model->name.len)
        != NGX_OK
        || ngx_http_llm_canon_item(&c, ctx->json, 0) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_llm_sha256_hex(c.start, c.pos - c.start, hex);

    /* one large request should not keep its buffer for the worker's life */

    if (ngx_http_llm_canon_size > NGX_HTTP_LLM_CANON_KEEP) {
        ngx_free(ngx_http_llm_canon_buf);
        ngx_http_llm_canon_buf = NULL;
        ngx_http_llm_canon_size = 0;
    }

    if (ctx->conf->cache_shared) {
        ngx_str_set(&scope, "*");

    } else if (ctx->tenant) {
        scope = ctx->tenant->id;

    } else {
        ngx_str_set(&scope, "-");
    }

    sha.data = hex;
    sha.len = NGX_HTTP_LLM_SHA256_HEX_LEN;

    len = NGX_HTTP_LLM_KEY_CACHE_LEN + NGX_HTTP_LLM_KEY_CACHE_LOCK_LEN
          + 2 * (scope.len + sha.len);

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->cache.key.data = p;
    p = ngx_sprintf(p, NGX_HTTP_LLM_KEY_CACHE, &scope, &sha);
    ctx->cache.key.len = p - ctx->cache.key.data;

    ctx->cache.lock.data = p;
    p = ngx_sprintf(p, NGX_HTTP_LLM_KEY_CACHE_LOCK, &scope, &sha);
    ctx->cache.lock.len = p - ctx->cache.lock.data;
    *p = '\0';

    return NGX_OK;
}


/*
 * The canonical form is written straight from the parsed request, with no
 * copy of it: a tag per value, strings with their length in front (no
 * escaping, and no two requests can write the same bytes), numbers as
 * integers when they are whole (so 1, 1.0 and 1e0 agree) and otherwise
 * with the 17 digits that name a double exactly.
 */

static ngx_int_t
ngx_http_llm_canon_item(ngx_http_llm_canon_t *c, cJSON *item,
    ngx_uint_t depth)
{
    int      n;
    double   d;
    cJSON   *child;

    switch (item->type & 0xff) {

    case cJSON_False:
        return ngx_http_llm_canon_str(c, 'f', NULL, 0);

    case cJSON_True:
        return ngx_http_llm_canon_str(c, 't', NULL, 0);

    case cJSON_NULL:
        return ngx_http_llm_canon_str(c, 'z', NULL, 0);

    case cJSON_Number:
        if (ngx_http_llm_canon_reserve(c, NGX_HTTP_LLM_CANON_NUMBER)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        d = item->valuedouble;

        if (d >= -9007199254740992.0 && d <= 9007199254740992.0
            && d == (double) (int64_t) d)
        {
            c->pos = ngx_sprintf(c->pos, "n%L;", (int64_t) d);
            return NGX_OK;
        }

        n = snprintf((char *) c->pos, NGX_HTTP_LLM_CANON_NUMBER, "n%.17g;",
                     d);
        if (n <= 0 || n >= NGX_HTTP_LLM_CANON_NUMBER) {
            return NGX_ERROR;
        }

        c->pos += n;
        return NGX_OK;

    case cJSON_String:
    case cJSON_Raw:
        if (item->valuestring == NULL) {
            return NGX_ERROR;
        }

        return ngx_http_llm_canon_str(c, 's', (u_char *) item->valuestring,
                                      ngx_strlen(item->valuestring));

    case cJSON_Array:
        if (ngx_http_llm_canon_str(c, '[', NULL, 0) != NGX_OK) {
            return NGX_ERROR;
        }

        for (child = item->child; child; child = child->next) {
            if (ngx_http_llm_canon_item(c, child, depth + 1) != NGX_OK) {
                return NGX_ERROR;
            }
        }

        return ngx_http_llm_canon_str(c, ']', NULL, 0);

    case cJSON_Object:
        return ngx_http_llm_canon_object(c, item, depth);

    default:
        return NGX_ERROR;
    }
}


/* object keys in byte order; at the top, the delivery fields left out */

static ngx_int_t
ngx_http_llm_canon_object(ngx_http_llm_canon_t *c, cJSON *item,
    ngx_uint_t depth)
{
    ngx_int_t   rc;
    ngx_uint_t  n, i;
    cJSON      *child, **a, *stack[2 * NGX_HTTP_LLM_CANON_STACK];

    n = 0;

    for (child = item->child; child; child = child->next) {
        n++;
    }

    /* the members, and as many again for the sort */

    a = (n <= NGX_HTTP_LLM_CANON_STACK)
        ? stack : ngx_alloc(2 * n * sizeof(cJSON *), ngx_cycle->log);
    if (a == NULL) {
        return NGX_ERROR;
    }

    n = 0;

    for (child = item->child; child; child = child->next) {

        if (child->string == NULL) {
            continue;
        }

        if (depth == 0
            && (ngx_strcmp(child->string, "model") == 0
                || ngx_strcmp(child->string, "stream") == 0
                || ngx_strcmp(child->string, "stream_options") == 0
                || ngx_strcmp(child->string, "user") == 0))
        {
            continue;
        }

        a[n++] = child;
    }

    /* a stable sort: duplicate keys keep the order the backend sees */

    if (n > 1) {
        ngx_http_llm_cache_sort(a, a + n, n);
    }

    rc = ngx_http_llm_canon_str(c, '{', NULL, 0);

    for (i = 0; i < n && rc == NGX_OK; i++) {
        rc = ngx_http_llm_canon_str(c, 'k', (u_char *) a[i]->string,
                                    ngx_strlen(a[i]->string));
        if (rc == NGX_OK) {
            rc = ngx_http_llm_canon_item(c, a[i], depth + 1);
        }
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_canon_str(c, '}', NULL, 0);
    }

    if (a != stack) {
        ngx_free(a);
    }

    return rc;
}


/* a tag, and for a string its length and bytes */

static ngx_int_t
ngx_http_llm_canon_str(ngx_http_llm_canon_t *c, u_char tag, u_char *s,
    size_t len)
{
    if (ngx_http_llm_canon_reserve(c, len + NGX_SIZE_T_LEN + 2) != NGX_OK) {
        return NGX_ERROR;
    }

    *c->pos++ = tag;

    if (s) {
        c->pos = ngx_sprintf(c->pos, "%uz:", len);
        c->pos = ngx_cpymem(c->pos, s, len);
    }

    return NGX_OK;
}


/* the worker's buffer, grown to hold n more bytes */

static ngx_int_t
ngx_http_llm_canon_reserve(ngx_http_llm_canon_t *c, size_t n)
{
    u_char  *p;
    size_t   size, used;

    if ((size_t) (c->end - c->pos) >= n) {
        return NGX_OK;
    }

    used = c->pos - c->start;
    size = ngx_max(2 * (size_t) (c->end - c->start), used + n + 4096);

    p = ngx_alloc(size, ngx_cycle->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (used) {
        ngx_memcpy(p, c->start, used);
    }

    if (c->start) {
        ngx_free(c->start);
    }

    c->start = p;
    c->pos = p + used;
    c->end = p + size;

    ngx_http_llm_canon_buf = p;
    ngx_http_llm_canon_size = size;

    return NGX_OK;
}


/*
 * A bottom-up merge sort by key, stable as the insertion sort of
 * ngx_sort() was, so the canonical form stays the same; but O(n log n):
 * a client chooses how many members an object has.  tmp holds n.
 */

static void
ngx_http_llm_cache_sort(cJSON **a, cJSON **tmp, ngx_uint_t n)
{
    cJSON      **src, **dst, **t;
    ngx_uint_t   w, lo, mid, hi, i, j, k;

    src = a;
    dst = tmp;

    for (w = 1; w < n; w *= 2) {

        for (lo = 0; lo < n; lo += 2 * w) {
            mid = ngx_min(lo + w, n);
            hi = ngx_min(lo + 2 * w, n);

            i = lo;
            j = mid;

            for (k = lo; k < hi; k++) {
                /* on equal keys the left run goes first */
                if (i < mid
                    && (j == hi || strcmp(src[i]->string, src[j]->string)
                                   <= 0))
                {
                    dst[k] = src[i++];

                } else {
                    dst[k] = src[j++];
                }
            }
        }

        t = src;
        src = dst;
        dst = t;
    }

    if (src != a) {
        ngx_memcpy(a, src, n * sizeof(cJSON *));
    }
}


void
ngx_http_llm_cache_key_exit(void)
{
    if (ngx_http_llm_canon_buf) {
        ngx_free(ngx_http_llm_canon_buf);
        ngx_http_llm_canon_buf = NULL;
        ngx_http_llm_canon_size = 0;
    }
}
