
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Target: the response cache's canonical key.  A request the gateway
 * accepts is written again with its members in another order (members of
 * the same name keep theirs: which copy wins is meaning), other white
 * space, other escapes and other spellings of its numbers (1, 1.0, 1e0);
 * then once more with one value changed.  Invariants: the first rewrite
 * is accepted and has the same key; a changed value, or a member's name
 * changed, gives another key (unless the change makes the request
 * invalid).  The delivery fields the key leaves out (model, stream,
 * stream_options and user at the top) are not changed.
 */


#include "ngx_http_llm_fuzz.h"
#include "ngx_http_llm_cache.h"
#include "ngx_http_llm_request.h"

#include <math.h>

/* the key is computed with static functions of the cache key's file */
#include "../../ngx_module/ngx_http_llm_cache_key.c"


/* ---------------------------------------------------------- adapter */

static ngx_int_t
ngx_http_llm_fuzz_parse(ngx_http_llm_ctx_t *ctx, u_char *p, size_t len)
{
    ngx_http_llm_error_t  err;

    return ngx_http_llm_parse_request(ctx, p, len, &err);
}


/*
 * cache_key.c computes "NULL + 0" for a worker's first key, undefined behaviour
 * that clang's UBSan stops on (harmless in practice, and gcc's does not
 * flag it): the canonical buffer is made once here, before any key.
 */
static void
ngx_http_llm_fuzz_key_init(void)
{
    ngx_http_llm_canon_t  c;

    ngx_memzero(&c, sizeof(ngx_http_llm_canon_t));

    if (ngx_http_llm_canon_reserve(&c, 4096) != NGX_OK) {
        abort();
    }
}


/* NGX_OK and the key in ctx->cache.key */
static ngx_int_t
ngx_http_llm_fuzz_key(ngx_http_llm_ctx_t *ctx)
{
    return ngx_http_llm_cache_key(ctx);
}

/* ---------------------------------------------------------- target */


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


typedef struct {
    u_char                     *buf;
    size_t                      len;
    size_t                      size;
    uint32_t                    seed;
    ngx_uint_t                  respell;    /* order, spaces, numbers */
    ngx_int_t                   change;     /* the leaf to change, or -1 */
    ngx_uint_t                  leaf;       /* leaves seen */
    ngx_uint_t                  changed;
} ngx_http_llm_fuzz_out_t;


static uint32_t
ngx_http_llm_fuzz_rand(ngx_http_llm_fuzz_out_t *o)
{
    o->seed ^= o->seed << 13;
    o->seed ^= o->seed >> 17;
    o->seed ^= o->seed << 5;

    return o->seed;
}


static void
ngx_http_llm_fuzz_put(ngx_http_llm_fuzz_out_t *o, const char *p, size_t len)
{
    u_char  *nb;

    if (len == 0) {
        return;
    }

    if (o->len + len > o->size) {
        o->size = ngx_max(o->len + len, 2 * o->size);

        nb = realloc(o->buf, o->size);
        if (nb == NULL) {
            abort();
        }

        o->buf = nb;
    }

    ngx_memcpy(o->buf + o->len, p, len);
    o->len += len;
}


static void
ngx_http_llm_fuzz_space(ngx_http_llm_fuzz_out_t *o)
{
    static const char  *spaces[] = { "", " ", "\n", "\t", "\r\n  ", "" };

    if (o->respell) {
        const char  *s = spaces[ngx_http_llm_fuzz_rand(o) % 6];

        ngx_http_llm_fuzz_put(o, s, ngx_strlen(s));
    }
}


static void
ngx_http_llm_fuzz_string(ngx_http_llm_fuzz_out_t *o, const char *s,
    ngx_uint_t suffix)
{
    u_char  c, esc[8];

    ngx_http_llm_fuzz_put(o, "\"", 1);

    for ( /* void */ ; *s; s++) {
        c = (u_char) *s;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = c;
            ngx_http_llm_fuzz_put(o, (char *) esc, 2);

        } else if (c < 0x20 || c == 0x7f
                   || (o->respell && c < 0x80
                       && ngx_http_llm_fuzz_rand(o) % 8 == 0))
        {
            /* another spelling of the same character */
            ngx_sprintf(esc, "\\u%04xd", (ngx_uint_t) c);
            ngx_http_llm_fuzz_put(o, (char *) esc, 6);

        } else {
            ngx_http_llm_fuzz_put(o, (char *) &c, 1);
        }
    }

    if (suffix) {
        ngx_http_llm_fuzz_put(o, "x", 1);
    }

    ngx_http_llm_fuzz_put(o, "\"", 1);
}


static void
ngx_http_llm_fuzz_number(ngx_http_llm_fuzz_out_t *o, double d)
{
    int   n;
    char  num[64];

    if (!isfinite(d)) {
        ngx_http_llm_fuzz_put(o, d < 0 ? "-1e999" : "1e999", d < 0 ? 6 : 5);
        return;
    }

    n = 0;

    if (d > -9.0e15 && d < 9.0e15 && d == (double) (int64_t) d) {
        switch (o->respell ? ngx_http_llm_fuzz_rand(o) % 4 : 0) {
        case 0:
            n = snprintf(num, sizeof(num), "%lld", (long long) d);
            break;
        case 1:
            n = snprintf(num, sizeof(num), "%lld.0", (long long) d);
            break;
        case 2:
            n = snprintf(num, sizeof(num), "%llde0", (long long) d);
            break;
        default:
            n = snprintf(num, sizeof(num), "%.16E", d);
            break;
        }

    } else {
        /* 17 digits name a double exactly, in either form */
        n = snprintf(num, sizeof(num),
                     (o->respell && ngx_http_llm_fuzz_rand(o) % 2)
                     ? "%.16e" : "%.17g", d);
    }

    ngx_http_llm_fuzz_put(o, num, n);
}


/* a leaf is changed when its turn comes: returns 1 if it was this one */

static ngx_uint_t
ngx_http_llm_fuzz_turn(ngx_http_llm_fuzz_out_t *o, ngx_uint_t skip)
{
    if (skip) {
        return 0;
    }

    if (o->change == (ngx_int_t) o->leaf++) {
        o->changed = 1;
        return 1;
    }

    return 0;
}


static void
ngx_http_llm_fuzz_print(ngx_http_llm_fuzz_out_t *o, cJSON *item,
    ngx_uint_t depth, ngx_uint_t skip)
{
    cJSON       **a, **b, *child;
    ngx_uint_t    n, i, j, k, mine, *used;

    ngx_http_llm_fuzz_space(o);

    switch (item->type & 0xff) {

    case cJSON_False:
    case cJSON_True:
        mine = ngx_http_llm_fuzz_turn(o, skip);
        ngx_http_llm_fuzz_put(o, ((item->type & 0xff) == cJSON_True) ^ mine
                              ? "true" : "false",
                              ((item->type & 0xff) == cJSON_True) ^ mine
                              ? 4 : 5);
        break;

    case cJSON_NULL:
        if (ngx_http_llm_fuzz_turn(o, skip)) {
            ngx_http_llm_fuzz_put(o, "0", 1);

        } else {
            ngx_http_llm_fuzz_put(o, "null", 4);
        }

        break;

    case cJSON_Number:
        mine = ngx_http_llm_fuzz_turn(o, skip);
        ngx_http_llm_fuzz_number(o, mine ? (item->valuedouble == 0
                                            ? 1 : -item->valuedouble)
                                         : item->valuedouble);
        break;

    case cJSON_String:
        ngx_http_llm_fuzz_string(o, item->valuestring,
                                 ngx_http_llm_fuzz_turn(o, skip));
        break;

    case cJSON_Array:
        ngx_http_llm_fuzz_put(o, "[", 1);

        if (item->child == NULL && ngx_http_llm_fuzz_turn(o, skip)) {
            ngx_http_llm_fuzz_put(o, "null", 4);
        }

        for (child = item->child; child; child = child->next) {
            ngx_http_llm_fuzz_print(o, child, depth + 1, skip);

            if (child->next) {
                ngx_http_llm_fuzz_space(o);
                ngx_http_llm_fuzz_put(o, ",", 1);
            }
        }

        ngx_http_llm_fuzz_space(o);
        ngx_http_llm_fuzz_put(o, "]", 1);
        break;

    case cJSON_Object:
        n = 0;

        for (child = item->child; child; child = child->next) {
            n++;
        }

        a = malloc((2 * n + 1) * sizeof(cJSON *));
        used = calloc(n + 1, sizeof(ngx_uint_t));
        if (a == NULL || used == NULL) {
            abort();
        }

        b = a + n;

        for (i = 0, child = item->child; child; child = child->next) {
            a[i++] = child;
        }

        /* a shuffle; then members of one name take back their order */

        if (o->respell) {
            for (i = n; i > 1; i--) {
                j = ngx_http_llm_fuzz_rand(o) % i;
                child = a[i - 1];
                a[i - 1] = a[j];
                a[j] = child;
            }
        }

        for (i = 0; i < n; i++) {
            for (child = item->child, k = 0; child; child = child->next, k++)
            {
                if (!used[k] && strcmp(child->string, a[i]->string) == 0) {
                    used[k] = 1;
                    b[i] = child;
                    break;
                }
            }
        }

        ngx_http_llm_fuzz_put(o, "{", 1);

        if (n == 0 && ngx_http_llm_fuzz_turn(o, skip)) {
            ngx_http_llm_fuzz_put(o, "\"x\":null", 8);
        }

        for (i = 0; i < n; i++) {
            child = b[i];

            /* what only changes the delivery is not in the key */
            mine = skip
                   || (depth == 0
                       && (ngx_strcmp(child->string, "model") == 0
                           || ngx_strcmp(child->string, "stream") == 0
                           || ngx_strcmp(child->string, "stream_options")
                              == 0
                           || ngx_strcmp(child->string, "user") == 0));

            ngx_http_llm_fuzz_space(o);
            ngx_http_llm_fuzz_string(o, child->string,
                                     ngx_http_llm_fuzz_turn(o, mine));
            ngx_http_llm_fuzz_space(o);
            ngx_http_llm_fuzz_put(o, ":", 1);
            ngx_http_llm_fuzz_print(o, child, depth + 1, mine);

            if (i + 1 < n) {
                ngx_http_llm_fuzz_space(o);
                ngx_http_llm_fuzz_put(o, ",", 1);
            }
        }

        ngx_http_llm_fuzz_space(o);
        ngx_http_llm_fuzz_put(o, "}", 1);

        free(a);
        free(used);
        break;

    default:
        abort();
    }
}


/* the request's key, or NULL if the gateway refuses the request */

static ngx_str_t *
ngx_http_llm_fuzz_key_of(ngx_pool_t *pool, u_char *p, size_t len)
{
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_fuzz_req_t  *fr;

    fr = ngx_http_llm_fuzz_request(pool);
    ctx = &fr->ctx;
    ctx->model = &ngx_http_llm_fuzz_models[0];

    if (ngx_http_llm_fuzz_parse(ctx, p, len) != NGX_OK) {
        if (ctx->json) {
            cJSON_Delete(ctx->json);
        }

        return NULL;
    }

    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_key(ctx) == NGX_OK,
                             "no key for an accepted request");

    cJSON_Delete(ctx->json);
    ctx->json = NULL;

    return &ctx->cache.key;
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_http_llm_fuzz_init();
    ngx_http_llm_fuzz_key_init();
    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                   *p;
    uint32_t                  seed;
    ngx_str_t                *k1, *k2, *k3;
    ngx_pool_t               *pool;
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_fuzz_out_t   o;
    ngx_http_llm_fuzz_req_t  *fr;

    p = malloc(size ? size : 1);
    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (p == NULL || pool == NULL) {
        abort();
    }

    ngx_memcpy(p, data, size);

    k1 = ngx_http_llm_fuzz_key_of(pool, p, size);

    if (k1 == NULL) {
        goto done;
    }

    /* the tree to write again, parsed from the input once more */

    fr = ngx_http_llm_fuzz_request(pool);
    ctx = &fr->ctx;

    if (ngx_http_llm_fuzz_parse(ctx, p, size) != NGX_OK) {
        abort();
    }

    seed = ngx_crc32_short(p, size) | 1;

    ngx_memzero(&o, sizeof(ngx_http_llm_fuzz_out_t));
    o.seed = seed;
    o.respell = 1;
    o.change = -1;

    ngx_http_llm_fuzz_print(&o, ctx->json, 0, 0);

    k2 = ngx_http_llm_fuzz_key_of(pool, o.buf, o.len);

    ngx_http_llm_fuzz_assert(k2 != NULL, "the same request respelled was "
                             "refused: %*s", ngx_min(o.len, 300), o.buf);

    ngx_http_llm_fuzz_assert(k2->len == k1->len
                             && ngx_memcmp(k2->data, k1->data, k1->len) == 0,
                             "the same request respelled has another key: "
                             "%*s", ngx_min(o.len, 300), o.buf);

    /* one value changed, the rest as it was */

    o.len = 0;
    o.respell = 0;
    o.change = (o.leaf > 0) ? (ngx_int_t) (seed % o.leaf) : -1;
    o.leaf = 0;

    ngx_http_llm_fuzz_print(&o, ctx->json, 0, 0);

    if (o.changed) {
        k3 = ngx_http_llm_fuzz_key_of(pool, o.buf, o.len);

        ngx_http_llm_fuzz_assert(k3 == NULL
                                 || k3->len != k1->len
                                 || ngx_memcmp(k3->data, k1->data, k1->len)
                                    != 0,
                                 "a changed request has the same key: %*s",
                                 ngx_min(o.len, 300), o.buf);
    }

    cJSON_Delete(ctx->json);
    free(o.buf);

done:

    ngx_destroy_pool(pool);
    free(p);

    return 0;
}
