
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The response cache: a canonical key per request, lookup in Redis,
 * single-flight across gateway nodes through a Redis lock, replay of a hit
 * as JSON or as a real SSE stream, and the store of complete answers,
 * streamed ones assembled as they pass.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_scripts.h"

#include <openssl/sha.h>


#define NGX_HTTP_LLM_CACHE_CHOICES   16
#define NGX_HTTP_LLM_CACHE_PIECE     64      /* bytes of a replayed chunk */
#define NGX_HTTP_LLM_CACHE_POLL_MIN  10
#define NGX_HTTP_LLM_CACHE_POLL_MAX  200
#define NGX_HTTP_LLM_CACHE_FAILED    1000    /* the failure marker, ms */
#define NGX_HTTP_LLM_CANON_KEEP      (1024 * 1024)
#define NGX_HTTP_LLM_MEMO_SLOTS      64      /* replays kept per worker */
#define NGX_HTTP_LLM_MEMO_MAX        8192    /* for entries up to this */
#define NGX_HTTP_LLM_MEMO_ID         "chatcmpl-000000000000000000000000"
#define NGX_HTTP_LLM_MEMO_TIME       1000000000

#define NGX_HTTP_LLM_CACHE_MAGIC     "LLMC1 "

#define ngx_http_llm_cache_lit(ctx, s)                                        \
    ngx_http_llm_out(ctx, (u_char *) s, sizeof(s) - 1)


typedef struct {
    u_char                     *content;
    size_t                      len;
    size_t                      size;
    cJSON                      *tool_calls;
    cJSON                      *finish;     /* a string, duplicated */
    unsigned                    seen:1;
} ngx_http_llm_cache_choice_t;


struct ngx_http_llm_cache_asm_s {
    cJSON                      *model;
    cJSON                      *fingerprint;
    cJSON                      *usage;      /* the backend's, as it was */
    size_t                      size;
    ngx_uint_t                  n;
    unsigned                    broken:1;
    ngx_http_llm_cache_choice_t choice[NGX_HTTP_LLM_CACHE_CHOICES];
};


/*
 * A stream replay as written for an entry, with a placeholder id and
 * time, and with its usage event, which a client may not want: a hit
 * on the same entry copies it and patches the id and time in.
 */

typedef struct {
    uint32_t                    hash;
    size_t                      len;        /* of the entry's JSON */
    u_char                     *json;       /* a copy, compared in full */
    u_char                     *sse;
    size_t                      sse_len;
    size_t                      usage_start;
    size_t                      usage_end;  /* == usage_start: none */
} ngx_http_llm_cache_memo_t;


/* the canonical form of a request, in the worker's buffer */

typedef struct {
    u_char                     *start;
    u_char                     *pos;
    u_char                     *end;
} ngx_http_llm_canon_t;


/* a hit, as read from its entry */

typedef struct {
    int64_t                     prompt;
    int64_t                     completion;
    int64_t                     cost;
    u_char                     *json;
    size_t                      len;
} ngx_http_llm_cache_entry_t;


static ngx_uint_t ngx_http_llm_cache_wanted(ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_cache_key(ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_canon_item(ngx_http_llm_canon_t *c,
    cJSON *item, ngx_uint_t depth);
static ngx_int_t ngx_http_llm_canon_object(ngx_http_llm_canon_t *c,
    cJSON *item, ngx_uint_t depth);
static ngx_int_t ngx_http_llm_canon_str(ngx_http_llm_canon_t *c,
    u_char tag, u_char *s, size_t len);
static ngx_int_t ngx_http_llm_canon_reserve(ngx_http_llm_canon_t *c,
    size_t n);
static ngx_int_t ngx_http_llm_cache_cmp(const void *a, const void *b);
static ngx_uint_t ngx_http_llm_cache_control(ngx_http_request_t *r,
    const char *directive);
static ngx_int_t ngx_http_llm_cache_get(ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_cache_get_reply(redisReply *reply, void *data);
static ngx_int_t ngx_http_llm_cache_lock(ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_cache_lock_reply(redisReply *reply, void *data);
static void ngx_http_llm_cache_wait(ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_cache_poll(ngx_event_t *ev);
static void ngx_http_llm_cache_unwait(ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_cache_wake(ngx_http_llm_ctx_t *leader);
static void ngx_http_llm_cache_go(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_status_e status);
static ngx_int_t ngx_http_llm_cache_parse(u_char *p, size_t len,
    ngx_http_llm_cache_entry_t *e);
static void ngx_http_llm_cache_hit(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e);
static ngx_int_t ngx_http_llm_cache_json(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e, u_char *id);
static ngx_int_t ngx_http_llm_cache_replay(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e, u_char *id);
static ngx_int_t ngx_http_llm_cache_memo(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e, ngx_http_llm_cache_memo_t *m,
    uint32_t hash);
static ngx_int_t ngx_http_llm_cache_memo_out(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_memo_t *m, u_char *id, time_t now);
static u_char *ngx_http_llm_cache_event_end(u_char *p, u_char *last);
static ngx_int_t ngx_http_llm_cache_sse(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e, u_char *id, time_t now);
static ngx_int_t ngx_http_llm_cache_chunk(ngx_http_llm_ctx_t *ctx,
    ngx_str_t *head, ngx_int_t index, const char *delta,
    u_char *text, size_t len, const char *tail, const char *finish);
static ngx_int_t ngx_http_llm_cache_out_string(ngx_http_llm_ctx_t *ctx,
    u_char *p, size_t len);
static ngx_int_t ngx_http_llm_cache_out_json(ngx_http_llm_ctx_t *ctx,
    cJSON *item);
static cJSON *ngx_http_llm_cache_assemble(ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_cache_append(ngx_http_llm_cache_asm_t *a,
    ngx_http_llm_cache_choice_t *ch, const char *s);
static void ngx_http_llm_cache_merge_tools(ngx_http_llm_cache_asm_t *a,
    ngx_http_llm_cache_choice_t *ch, cJSON *calls);
static void ngx_http_llm_cache_asm_free(ngx_http_llm_cache_asm_t *a);
static void ngx_http_llm_cache_done(ngx_http_llm_ctx_t *ctx, u_char *entry,
    size_t len);


static ngx_queue_t  ngx_http_llm_cache_waiters;
static ngx_uint_t   ngx_http_llm_cache_seq;
static u_char      *ngx_http_llm_canon_buf;
static size_t       ngx_http_llm_canon_size;

static ngx_http_llm_cache_memo_t  ngx_http_llm_cache_memos[
                                      NGX_HTTP_LLM_MEMO_SLOTS];


void
ngx_http_llm_cache_init(void)
{
    ngx_queue_init(&ngx_http_llm_cache_waiters);
}


void
ngx_http_llm_cache_exit(void)
{
    ngx_uint_t                  i;
    ngx_http_llm_cache_memo_t  *m;

    for (i = 0; i < NGX_HTTP_LLM_MEMO_SLOTS; i++) {
        m = &ngx_http_llm_cache_memos[i];

        if (m->json) {
            ngx_free(m->json);
        }

        if (m->sse) {
            ngx_free(m->sse);
        }

        ngx_memzero(m, sizeof(ngx_http_llm_cache_memo_t));
    }

    if (ngx_http_llm_canon_buf) {
        ngx_free(ngx_http_llm_canon_buf);
        ngx_http_llm_canon_buf = NULL;
        ngx_http_llm_canon_size = 0;
    }
}


/*
 * The cache phase.  NGX_OK: go to the backend (ctx->cache_status says
 * why); NGX_AGAIN: a Redis reply or a leader is awaited, and the request
 * resumes through ngx_http_llm_run(); NGX_DONE: answered from this
 * worker's copy.
 */

ngx_int_t
ngx_http_llm_cache_lookup(ngx_http_llm_ctx_t *ctx)
{
    u_char                      *p;
    size_t                       len;
    ngx_uint_t                   no_cache;
    ngx_http_request_t          *r;
    ngx_http_llm_cache_entry_t   e;

    r = ctx->request;

    if (!ctx->conf->cache) {
        return NGX_OK;
    }

    if (!ngx_http_llm_cache_wanted(ctx) || !ngx_http_llm_redis_ready()) {
        ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_BYPASS);
        return NGX_OK;
    }

    if (ngx_http_llm_cache_key(ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    no_cache = ngx_http_llm_cache_control(r, "no-cache");

    ctx->cache_store = ngx_http_llm_cache_control(r, "no-store") ? 0 : 1;

    if (no_cache) {
        ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_BYPASS);
        return NGX_OK;
    }

    p = ngx_http_llm_cache_local_get(&ctx->cache_key, &len);

    if (p && ngx_http_llm_cache_parse(p, len, &e) == NGX_OK) {
        ngx_http_llm_cache_hit(ctx, &e);
        return NGX_DONE;
    }

    if (ngx_http_llm_cache_get(ctx) != NGX_OK) {
        ctx->cache_store = 0;
        ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_BYPASS);
        return NGX_OK;
    }

    return NGX_AGAIN;
}


/* deterministic answers only, unless the location or tenant wants more */

static ngx_uint_t
ngx_http_llm_cache_wanted(ngx_http_llm_ctx_t *ctx)
{
    cJSON       *item;
    ngx_uint_t   policy;

    policy = ctx->conf->cache_policy;

    if (ctx->tenant && ctx->tenant->cache) {
        policy = ctx->tenant->cache;
    }

    if (policy == NGX_HTTP_LLM_CACHE_OFF) {
        return 0;
    }

    /* a replay could not reproduce log probabilities */

    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ctx->json,
                                                      "logprobs")))
    {
        return 0;
    }

    if (policy == NGX_HTTP_LLM_CACHE_ANY) {
        return 1;
    }

    item = cJSON_GetObjectItemCaseSensitive(ctx->json, "temperature");

    if (cJSON_IsNumber(item) && item->valuedouble == 0) {
        return 1;
    }

    item = cJSON_GetObjectItemCaseSensitive(ctx->json, "seed");

    return cJSON_IsNumber(item);
}


/*
 * SHA-256 over a canonical form of everything that changes the answer:
 * the request with its keys sorted at every level, without the fields
 * that only change its delivery, and with the logical model.
 */

static ngx_int_t
ngx_http_llm_cache_key(ngx_http_llm_ctx_t *ctx)
{
    u_char                *p;
    size_t                 len;
    ngx_str_t              scope;
    ngx_http_request_t    *r;
    ngx_http_llm_canon_t   c;
    u_char                 hex[64];

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

    len = sizeof("llm:cache::{}:lock") - 1 + scope.len + 64;

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->cache_key.data = p;
    p = ngx_sprintf(p, "llm:cache:%V:{%*s}", &scope, (size_t) 64, hex);
    ctx->cache_key.len = p - ctx->cache_key.data;

    ctx->cache_lock.data = ctx->cache_key.data;
    p = ngx_sprintf(p, ":lock");
    ctx->cache_lock.len = p - ctx->cache_lock.data;
    *p = '\0';

    /* one lock holder among all the nodes: the token tells them apart */

    (void) ngx_snprintf(ctx->cache_token, sizeof(ctx->cache_token),
                        "%08xD%08xD%08xD", (uint32_t) ngx_random(),
                        (uint32_t) ngx_pid,
                        (uint32_t) ++ngx_http_llm_cache_seq);

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
        if (ngx_http_llm_canon_reserve(c, 32) != NGX_OK) {
            return NGX_ERROR;
        }

        d = item->valuedouble;

        if (d >= -9007199254740992.0 && d <= 9007199254740992.0
            && d == (double) (int64_t) d)
        {
            c->pos = ngx_sprintf(c->pos, "n%L;", (int64_t) d);
            return NGX_OK;
        }

        n = snprintf((char *) c->pos, 32, "n%.17g;", d);
        if (n <= 0 || n >= 32) {
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
    cJSON      *child, **a, *stack[32];

    n = 0;

    for (child = item->child; child; child = child->next) {
        n++;
    }

    a = (n <= 32) ? stack : ngx_alloc(n * sizeof(cJSON *), ngx_cycle->log);
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
        ngx_sort(a, n, sizeof(cJSON *), ngx_http_llm_cache_cmp);
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


static ngx_int_t
ngx_http_llm_cache_cmp(const void *a, const void *b)
{
    const cJSON  *x = *(const cJSON **) a;
    const cJSON  *y = *(const cJSON **) b;

    return strcmp(x->string, y->string);
}


/* a Cache-Control directive of the client's, as a whole word */

static ngx_uint_t
ngx_http_llm_cache_control(ngx_http_request_t *r, const char *directive)
{
    u_char           *p, *last;
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(directive);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return 0;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != sizeof("Cache-Control") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Cache-Control",
                               h[i].key.len)
               != 0)
        {
            continue;
        }

        p = h[i].value.data;
        last = p + h[i].value.len;

        while (p < last) {
            while (p < last && (*p == ' ' || *p == ',' || *p == '\t')) {
                p++;
            }

            if ((size_t) (last - p) >= len
                && ngx_strncasecmp(p, (u_char *) directive, len) == 0
                && (p + len == last || p[len] == ',' || p[len] == ' '
                    || p[len] == '\t' || p[len] == '='))
            {
                return 1;
            }

            while (p < last && *p != ',') {
                p++;
            }
        }
    }
}


/* a hit is one GET: the cheapest thing Redis does */

static ngx_int_t
ngx_http_llm_cache_get(ngx_http_llm_ctx_t *ctx)
{
    size_t       argvlen[2];
    const char  *argv[2];

    argv[0] = "GET";
    argvlen[0] = 3;
    argv[1] = (char *) ctx->cache_key.data;
    argvlen[1] = ctx->cache_key.len;

    ctx->redis = ngx_http_llm_redis_command(2, argv, argvlen,
                                            ngx_http_llm_cache_get_reply, ctx);

    return ctx->redis ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_llm_cache_get_reply(redisReply *reply, void *data)
{
    ngx_http_llm_ctx_t *ctx = data;

    ngx_http_llm_cache_entry_t  e;

    ctx->redis = NULL;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        /* Redis is down or refuses: serve without the cache */
        ctx->cache_store = 0;
        ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_BYPASS);
        ngx_http_llm_run(ctx);
        return;
    }

    if (reply->type == REDIS_REPLY_STRING
        && ngx_http_llm_cache_parse((u_char *) reply->str, reply->len, &e)
           == NGX_OK)
    {
        ngx_http_llm_cache_local_put(&ctx->cache_key, (u_char *) reply->str,
                                     reply->len, 0);
        ngx_http_llm_cache_hit(ctx, &e);
        return;
    }

    if (ctx->conf->cache_lock_timeout == 0 || !ctx->cache_store) {
        ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_MISS);
        ngx_http_llm_run(ctx);
        return;
    }

    ctx->cache_since = ngx_current_msec;
    ctx->cache_poll = NGX_HTTP_LLM_CACHE_POLL_MIN;

    if (ngx_http_llm_cache_lock(ctx) != NGX_OK) {
        ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_MISS);
        ngx_http_llm_run(ctx);
    }
}


static ngx_int_t
ngx_http_llm_cache_lock(ngx_http_llm_ctx_t *ctx)
{
    u_char       ttl[NGX_INT_T_LEN];
    size_t       argvlen[7];
    const char  *argv[7];

    argv[0] = "EVAL";
    argv[1] = ngx_http_llm_lua_cache_lock;
    argv[2] = "2";
    argv[3] = (char *) ctx->cache_key.data;
    argvlen[3] = ctx->cache_key.len;
    argv[4] = (char *) ctx->cache_lock.data;
    argvlen[4] = ctx->cache_lock.len;
    argv[5] = (char *) ctx->cache_token;
    argvlen[5] = sizeof(ctx->cache_token);
    argv[6] = (char *) ttl;
    argvlen[6] = ngx_sprintf(ttl, "%M", ctx->conf->cache_lock_timeout) - ttl;

    argvlen[0] = 4;
    argvlen[1] = sizeof(ngx_http_llm_lua_cache_lock) - 1;
    argvlen[2] = 1;

    ctx->redis = ngx_http_llm_redis_command(7, argv, argvlen,
                                            ngx_http_llm_cache_lock_reply,
                                            ctx);

    return ctx->redis ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_llm_cache_lock_reply(redisReply *reply, void *data)
{
    ngx_http_llm_ctx_t *ctx = data;

    redisReply                  *e;
    long long                    kind;
    ngx_http_llm_cache_entry_t   entry;

    ctx->redis = NULL;

    if (reply == NULL
        || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_MISS);
        ngx_http_llm_run(ctx);
        return;
    }

    kind = reply->element[0]->integer;

    if (kind == 1 && reply->elements == 2) {
        e = reply->element[1];

        if (e->type == REDIS_REPLY_STRING
            && ngx_http_llm_cache_parse((u_char *) e->str, e->len, &entry)
               == NGX_OK)
        {
            ngx_http_llm_cache_local_put(&ctx->cache_key, (u_char *) e->str,
                                         e->len, 0);
            ngx_http_llm_cache_hit(ctx, &entry);
            return;
        }
    }

    if (kind == 2) {
        ctx->cache_leader = 1;

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ctx->request->connection->log, 0,
                       "llm: cache leader for \"%V\"", &ctx->cache_key);

    } else if (kind == 3
               && ngx_current_msec - ctx->cache_since
                  < ctx->conf->cache_lock_timeout)
    {
        ngx_http_llm_cache_wait(ctx);
        return;
    }

    /* a failed leader, or too long a wait: on our own, still storing */

    ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_MISS);
    ngx_http_llm_run(ctx);
}


/*
 * A follower looks again after a growing pause, or at once when a leader
 * of this worker is done; followers on other nodes only have the pause.
 */

static void
ngx_http_llm_cache_wait(ngx_http_llm_ctx_t *ctx)
{
    ngx_msec_t  left;

    if (!ctx->cache_waiting) {
        ngx_queue_insert_tail(&ngx_http_llm_cache_waiters, &ctx->cache_link);
        ctx->cache_waiting = 1;

        ctx->cache_timer.handler = ngx_http_llm_cache_poll;
        ctx->cache_timer.data = &ngx_http_llm_timer_conn;
        ctx->cache_timer.log = ctx->request->connection->log;
    }

    left = ctx->conf->cache_lock_timeout
           - (ngx_current_msec - ctx->cache_since);

    ngx_add_timer(&ctx->cache_timer, ngx_min(ctx->cache_poll, left));

    ctx->cache_poll = ngx_min(ctx->cache_poll * 2,
                              NGX_HTTP_LLM_CACHE_POLL_MAX);
}


static void
ngx_http_llm_cache_poll(ngx_event_t *ev)
{
    ngx_http_llm_ctx_t  *ctx;

    ctx = (ngx_http_llm_ctx_t *) ((u_char *) ev
                                  - offsetof(ngx_http_llm_ctx_t,
                                             cache_timer));

    if (ngx_http_llm_cache_lock(ctx) != NGX_OK) {
        /* Redis went away: the backend is all there is */
        ngx_http_llm_cache_unwait(ctx);
        ctx->cache_store = 0;
        ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_BYPASS);
        ngx_http_llm_run(ctx);
    }
}


static void
ngx_http_llm_cache_unwait(ngx_http_llm_ctx_t *ctx)
{
    if (ctx->cache_timer.timer_set) {
        ngx_del_timer(&ctx->cache_timer);
    }

    if (ctx->cache_timer.posted) {
        ngx_delete_posted_event(&ctx->cache_timer);
    }

    if (ctx->cache_waiting) {
        ngx_queue_remove(&ctx->cache_link);
        ctx->cache_waiting = 0;
    }
}


/* a leader is done: its followers in this worker look again now */

static void
ngx_http_llm_cache_wake(ngx_http_llm_ctx_t *leader)
{
    ngx_queue_t         *q;
    ngx_http_llm_ctx_t  *ctx;

    for (q = ngx_queue_head(&ngx_http_llm_cache_waiters);
         q != ngx_queue_sentinel(&ngx_http_llm_cache_waiters);
         q = ngx_queue_next(q))
    {
        ctx = ngx_queue_data(q, ngx_http_llm_ctx_t, cache_link);

        if (ctx->cache_key.len != leader->cache_key.len
            || ngx_strncmp(ctx->cache_key.data, leader->cache_key.data,
                           ctx->cache_key.len)
               != 0
            || ctx->redis != NULL)
        {
            continue;
        }

        if (ctx->cache_timer.timer_set) {
            ngx_del_timer(&ctx->cache_timer);
        }

        if (!ctx->cache_timer.posted) {
            ngx_post_event(&ctx->cache_timer, &ngx_posted_events);
        }
    }
}


/* on to the backend */

static void
ngx_http_llm_cache_go(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_status_e status)
{
    ngx_http_llm_cache_unwait(ctx);

    ctx->cache_status = status;
    ctx->phase = NGX_HTTP_LLM_PHASE_PROXY;

    (void) ngx_http_llm_add_header(ctx->request, "x-llm-cache",
                                   status == NGX_HTTP_LLM_CACHE_MISS
                                   ? "MISS" : "BYPASS");
}


/* "LLMC1 <prompt> <completion> <cost>\n{...}" */

static ngx_int_t
ngx_http_llm_cache_parse(u_char *p, size_t len, ngx_http_llm_cache_entry_t *e)
{
    u_char   *last, *f;
    int64_t   v[3];
    ngx_uint_t  i;

    last = p + len;

    if (len < sizeof(NGX_HTTP_LLM_CACHE_MAGIC) - 1
        || ngx_strncmp(p, NGX_HTTP_LLM_CACHE_MAGIC,
                       sizeof(NGX_HTTP_LLM_CACHE_MAGIC) - 1)
           != 0)
    {
        return NGX_ERROR;
    }

    p += sizeof(NGX_HTTP_LLM_CACHE_MAGIC) - 1;

    for (i = 0; i < 3; i++) {
        f = p;

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }

        if (p == f || p == last || *p != (u_char) (i == 2 ? '\n' : ' ')) {
            return NGX_ERROR;
        }

        v[i] = ngx_atoof(f, p - f);
        if (v[i] < 0) {
            return NGX_ERROR;
        }

        p++;
    }

    if (last - p < 2 || *p != '{' || last[-1] != '}') {
        return NGX_ERROR;
    }

    e->prompt = v[0];
    e->completion = v[1];
    e->cost = v[2];
    e->json = p;
    e->len = last - p;

    return NGX_OK;
}


/* a hit: answered here, without a backend, in the Redis reply callback */

static void
ngx_http_llm_cache_hit(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;
    u_char               id[40];

    r = ctx->request;
    c = r->connection;

    ngx_http_llm_cache_unwait(ctx);

    ctx->phase = NGX_HTTP_LLM_PHASE_DONE;
    ctx->cache_status = NGX_HTTP_LLM_CACHE_HIT;
    ctx->cache_store = 0;
    ctx->prompt_tokens = (ngx_int_t) e->prompt;
    ctx->completion_tokens = (ngx_int_t) e->completion;
    ctx->cache_cost = e->cost;

    /* every answer gets its own id, as a backend would give it */

    *ngx_sprintf(id, "chatcmpl-%08xD%08xD%08xD", (uint32_t) ngx_random(),
                 (uint32_t) ngx_random(), (uint32_t) ngx_random()) = '\0';

    r->headers_out.status = NGX_HTTP_OK;

    if (ngx_http_llm_add_header(r, "x-llm-cache", "HIT") != NGX_OK
        || ngx_http_llm_cost_header(ctx, 0) != NGX_OK)
    {
        rc = NGX_ERROR;
        goto done;
    }

    rc = ctx->stream ? ngx_http_llm_cache_replay(ctx, e, id)
                     : ngx_http_llm_cache_json(ctx, e, id);

    if (rc != NGX_OK) {
        rc = NGX_ERROR;
        goto done;
    }

    ctx->headers_sent = 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK) {
        goto done;
    }

    rc = ngx_http_llm_out_flush(ctx, 1);

done:

    ngx_http_llm_finalize(ctx, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_llm_cache_json(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e, u_char *id)
{
    u_char              *p;
    ngx_http_request_t  *r;
    u_char               head[128];

    r = ctx->request;

    p = ngx_sprintf(head, "{\"id\":\"%s\",\"object\":\"chat.completion\","
                    "\"created\":%T,", id, ngx_time());

    /* the stored object, from its first key on */

    r->headers_out.content_length_n = (p - head) + (e->len - 1) + 1;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    if (ngx_http_llm_out(ctx, head, p - head) != NGX_OK
        || ngx_http_llm_out(ctx, e->json + 1, e->len - 1) != NGX_OK
        || ngx_http_llm_out(ctx, (u_char *) "\n", 1) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The replay of a stream: per choice a role chunk, the content in small
 * chunks, the tool calls, the finish; then usage if the client asked for
 * it, then [DONE].
 */

static ngx_int_t
ngx_http_llm_cache_replay(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e, u_char *id)
{
    time_t                      now;
    uint32_t                    hash;
    ngx_http_request_t         *r;
    ngx_http_llm_cache_memo_t  *m;

    r = ctx->request;
    now = ngx_time();

    ngx_str_set(&r->headers_out.content_type, "text/event-stream");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_length_n = -1;

    if (ngx_http_llm_add_header(r, "Cache-Control", "no-cache") != NGX_OK
        || ngx_http_llm_add_header(r, "X-Accel-Buffering", "no") != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the memo patches a time of ten digits: 2001 to 2286 */

    if (e->len > NGX_HTTP_LLM_MEMO_MAX
        || now < 1000000000 || now > 9999999999LL)
    {
        return ngx_http_llm_cache_sse(ctx, e, id, now);
    }

    hash = ngx_murmur_hash2(e->json, e->len);
    m = &ngx_http_llm_cache_memos[hash % NGX_HTTP_LLM_MEMO_SLOTS];

    if (m->sse == NULL
        || m->hash != hash
        || m->len != e->len
        || ngx_memcmp(m->json, e->json, e->len) != 0)
    {
        if (ngx_http_llm_cache_memo(ctx, e, m, hash) != NGX_OK) {
            return ngx_http_llm_cache_sse(ctx, e, id, now);
        }
    }

    /* its length is known: no chunked encoding for a kept replay */

    r->headers_out.content_length_n = m->sse_len;

    if (!ctx->client_usage) {
        r->headers_out.content_length_n -= m->usage_end - m->usage_start;
    }

    return ngx_http_llm_cache_memo_out(ctx, m, id, now);
}


/*
 * The replay is written as for any hit, into a chain of its own, and
 * kept flat; it must consist of events that begin with the expected head
 * and [DONE], or it is not kept.
 */

static ngx_int_t
ngx_http_llm_cache_memo(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e, ngx_http_llm_cache_memo_t *m,
    uint32_t hash)
{
    u_char        *sse, *json, *p, *q, *last, *u, *uend, *end;
    size_t         size;
    ngx_int_t      rc;
    ngx_uint_t     usage;
    ngx_chain_t   *out, **out_last, *chain, *cl;
    static u_char  head[] = "data: {\"id\":\"" NGX_HTTP_LLM_MEMO_ID
                            "\",\"object\":\"chat.completion.chunk\","
                            "\"created\":1000000000";

    out = ctx->out;
    out_last = ctx->out_last;
    usage = ctx->client_usage;

    ctx->out = NULL;
    ctx->out_last = &ctx->out;
    ctx->client_usage = 1;

    rc = ngx_http_llm_cache_sse(ctx, e, (u_char *) NGX_HTTP_LLM_MEMO_ID,
                                NGX_HTTP_LLM_MEMO_TIME);

    chain = ctx->out;
    ctx->out = out;
    ctx->out_last = out_last;
    ctx->client_usage = usage;

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    size = 0;

    for (cl = chain; cl; cl = cl->next) {
        size += cl->buf->last - cl->buf->pos;
    }

    sse = ngx_alloc(size, ngx_cycle->log);
    json = ngx_alloc(e->len, ngx_cycle->log);

    if (sse == NULL || json == NULL) {
        goto failed;
    }

    p = sse;

    for (cl = chain; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);

        if (cl->next == NULL) {
            /* the buffers go back for this request's own output */
            cl->next = ctx->free;
            ctx->free = chain;
            break;
        }
    }

    /* every event must be one this code can patch */

    last = sse + size;
    u = NULL;
    uend = NULL;

    for (p = sse; p < last; p = end) {
        end = ngx_http_llm_cache_event_end(p, last);
        if (end == NULL) {
            goto failed;
        }

        if ((size_t) (end - p) == sizeof("data: [DONE]\n\n") - 1
            && ngx_strncmp(p, "data: [DONE]\n\n", end - p) == 0)
        {
            continue;
        }

        if ((size_t) (end - p) < sizeof(head) - 1
            || ngx_strncmp(p, head, sizeof(head) - 1) != 0)
        {
            goto failed;
        }

        /* quotes in JSON strings are escaped: this can only be the key */

        q = p + sizeof(head) - 1;

        if (memmem(q, end - q, ",\"choices\":[],\"usage\":",
                   sizeof(",\"choices\":[],\"usage\":") - 1)
            != NULL)
        {
            u = p;
            uend = end;
        }
    }

    if (m->json) {
        ngx_free(m->json);
    }

    if (m->sse) {
        ngx_free(m->sse);
    }

    m->hash = hash;
    m->len = e->len;
    m->json = ngx_cpymem(json, e->json, e->len) - e->len;
    m->sse = sse;
    m->sse_len = size;

    if (u) {
        m->usage_start = u - sse;
        m->usage_end = uend - sse;

    } else {
        m->usage_start = 0;
        m->usage_end = 0;
    }

    return NGX_OK;

failed:

    if (sse) {
        ngx_free(sse);
    }

    if (json) {
        ngx_free(json);
    }

    return NGX_ERROR;
}


/* the end of the event at p, past its blank line; NULL: none */

static u_char *
ngx_http_llm_cache_event_end(u_char *p, u_char *last)
{
    for ( ;; ) {
        p = memchr(p, '\n', last - p);

        if (p == NULL || p + 1 == last) {
            return NULL;
        }

        if (p[1] == '\n') {
            return p + 2;
        }

        p++;
    }
}


/* a kept replay, with this answer's id and time */

static ngx_int_t
ngx_http_llm_cache_memo_out(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_memo_t *m, u_char *id, time_t now)
{
    u_char  *p, *last, *end, *q;
    size_t   idpos, tpos;
    u_char   t[NGX_TIME_T_LEN];

    idpos = sizeof("data: {\"id\":\"") - 1;
    tpos = idpos + sizeof(NGX_HTTP_LLM_MEMO_ID) - 1
           + sizeof("\",\"object\":\"chat.completion.chunk\",\"created\":") - 1;

    (void) ngx_sprintf(t, "%T", now);

    p = m->sse;
    last = m->sse + m->sse_len;

    while (p < last) {
        end = ngx_http_llm_cache_event_end(p, last);

        if (m->usage_end > m->usage_start && !ctx->client_usage
            && p == m->sse + m->usage_start)
        {
            p = end;
            continue;
        }

        if (p[6] == '[') {
            /* data: [DONE] */
            if (ngx_http_llm_out(ctx, p, end - p) != NGX_OK) {
                return NGX_ERROR;
            }

            p = end;
            continue;
        }

        q = p + tpos + 10;

        if (ngx_http_llm_out(ctx, p, idpos) != NGX_OK
            || ngx_http_llm_out(ctx, id, sizeof(NGX_HTTP_LLM_MEMO_ID) - 1)
               != NGX_OK
            || ngx_http_llm_out(ctx, p + idpos + sizeof(NGX_HTTP_LLM_MEMO_ID)
                                     - 1,
                                tpos - idpos - (sizeof(NGX_HTTP_LLM_MEMO_ID)
                                                - 1))
               != NGX_OK
            || ngx_http_llm_out(ctx, t, 10) != NGX_OK
            || ngx_http_llm_out(ctx, q, end - q) != NGX_OK)
        {
            return NGX_ERROR;
        }

        p = end;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_cache_sse(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e, u_char *id, time_t now)
{
    char                *fin;
    cJSON               *json, *choices, *ch, *msg, *item, *calls, *call;
    size_t               len, n;
    u_char              *p, *text;
    ngx_int_t            rc, index, k;
    ngx_str_t            head;
    ngx_http_request_t  *r;

    r = ctx->request;

    json = cJSON_ParseWithLength((char *) e->json, e->len);
    if (json == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    head.data = ngx_pnalloc(r->pool, 512);
    if (head.data == NULL) {
        goto failed;
    }

    p = ngx_snprintf(head.data, 256, "data: {\"id\":\"%s\",\"object\":"
                     "\"chat.completion.chunk\",\"created\":%T",
                     id, now);
    head.len = p - head.data;

    /* the head carries model and fingerprint: printed once, reused */

    item = cJSON_GetObjectItemCaseSensitive(json, "model");
    msg = cJSON_GetObjectItemCaseSensitive(json, "system_fingerprint");

    {
        char  *m, *f;

        m = cJSON_IsString(item) ? cJSON_PrintUnformatted(item) : NULL;
        f = cJSON_IsString(msg) ? cJSON_PrintUnformatted(msg) : NULL;

        len = (m ? ngx_strlen(m) + 9 : 0) + (f ? ngx_strlen(f) + 22 : 0);

        if (len + head.len > 512) {
            p = ngx_pnalloc(r->pool, head.len + len);
            if (p == NULL) {
                cJSON_free(m);
                cJSON_free(f);
                goto failed;
            }

            ngx_memcpy(p, head.data, head.len);
            head.data = p;
        }

        p = head.data + head.len;

        if (m) {
            p = ngx_sprintf(p, ",\"model\":%s", m);
            cJSON_free(m);
        }

        if (f) {
            p = ngx_sprintf(p, ",\"system_fingerprint\":%s", f);
            cJSON_free(f);
        }

        head.len = p - head.data;
    }

    choices = cJSON_GetObjectItemCaseSensitive(json, "choices");
    index = 0;

    cJSON_ArrayForEach(ch, choices) {

        item = cJSON_GetObjectItemCaseSensitive(ch, "index");
        if (cJSON_IsNumber(item)) {
            index = (ngx_int_t) item->valuedouble;
        }

        msg = cJSON_GetObjectItemCaseSensitive(ch, "message");

        if (ngx_http_llm_cache_chunk(ctx, &head, index,
                                     "{\"role\":\"assistant\",\"content\":",
                                     (u_char *) "", 0, "}", NULL)
            != NGX_OK)
        {
            goto failed;
        }

        item = cJSON_GetObjectItemCaseSensitive(msg, "content");

        if (cJSON_IsString(item)) {
            text = (u_char *) item->valuestring;
            len = ngx_strlen(item->valuestring);

            while (len) {
                n = ngx_min(len, NGX_HTTP_LLM_CACHE_PIECE);

                /* never split a UTF-8 sequence */
                while (n < len && (text[n] & 0xc0) == 0x80) {
                    n++;
                }

                if (ngx_http_llm_cache_chunk(ctx, &head, index,
                                             "{\"content\":", text, n, "}",
                                             NULL)
                    != NGX_OK)
                {
                    goto failed;
                }

                text += n;
                len -= n;
            }
        }

        calls = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");

        if (cJSON_IsArray(calls) && cJSON_GetArraySize(calls) > 0) {
            k = 0;

            cJSON_ArrayForEach(call, calls) {
                cJSON_DeleteItemFromObjectCaseSensitive(call, "index");
                cJSON_AddNumberToObject(call, "index", (double) k++);
            }

            if (ngx_http_llm_cache_chunk(ctx, &head, index, NULL, NULL, 0,
                                         NULL, NULL)
                != NGX_OK
                || ngx_http_llm_cache_lit(ctx, "{\"tool_calls\":") != NGX_OK
                || ngx_http_llm_cache_out_json(ctx, calls) != NGX_OK
                || ngx_http_llm_cache_lit(ctx, "},\"logprobs\":null,"
                                          "\"finish_reason\":null}]}\n\n")
                   != NGX_OK)
            {
                goto failed;
            }
        }

        item = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
        fin = cJSON_IsString(item) ? item->valuestring : "stop";

        if (ngx_http_llm_cache_chunk(ctx, &head, index, "{}", NULL, 0, NULL,
                                     fin)
            != NGX_OK)
        {
            goto failed;
        }

        index++;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "usage");

    if (ctx->client_usage && cJSON_IsObject(item)) {
        if (ngx_http_llm_out(ctx, head.data, head.len) != NGX_OK
            || ngx_http_llm_cache_lit(ctx, ",\"choices\":[],\"usage\":")
               != NGX_OK
            || ngx_http_llm_cache_out_json(ctx, item) != NGX_OK
            || ngx_http_llm_cache_lit(ctx, "}\n\n") != NGX_OK)
        {
            goto failed;
        }
    }

    rc = ngx_http_llm_cache_lit(ctx, "data: [DONE]\n\n");

failed:

    cJSON_Delete(json);

    return rc;
}


/*
 * One chunk: the head, the choice, the delta as a literal or as a literal
 * around an escaped string, and the finish reason.  Without a delta, only
 * the part up to "delta": is written, for the caller to go on.
 */

static ngx_int_t
ngx_http_llm_cache_chunk(ngx_http_llm_ctx_t *ctx, ngx_str_t *head,
    ngx_int_t index, const char *delta, u_char *text, size_t len,
    const char *tail, const char *finish)
{
    u_char  *p;
    u_char   buf[64];

    p = ngx_sprintf(buf, ",\"choices\":[{\"index\":%i,\"delta\":", index);

    if (ngx_http_llm_out(ctx, head->data, head->len) != NGX_OK
        || ngx_http_llm_out(ctx, buf, p - buf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (delta == NULL) {
        return NGX_OK;
    }

    if (ngx_http_llm_out(ctx, (u_char *) delta, ngx_strlen(delta))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (text
        && (ngx_http_llm_cache_out_string(ctx, text, len) != NGX_OK
            || ngx_http_llm_out(ctx, (u_char *) tail, ngx_strlen(tail))
               != NGX_OK))
    {
        return NGX_ERROR;
    }

    if (ngx_http_llm_cache_lit(ctx, ",\"logprobs\":null,\"finish_reason\":")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (finish == NULL) {
        return ngx_http_llm_cache_lit(ctx, "null}]}\n\n");
    }

    if (ngx_http_llm_cache_out_string(ctx, (u_char *) finish,
                                      ngx_strlen(finish))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_llm_cache_lit(ctx, "}]}\n\n");
}


/* a JSON string: quotes, and escapes for what JSON does not allow raw */

static ngx_int_t
ngx_http_llm_cache_out_string(ngx_http_llm_ctx_t *ctx, u_char *p, size_t len)
{
    u_char   *last, *start;
    u_char    esc[8];

    if (ngx_http_llm_out(ctx, (u_char *) "\"", 1) != NGX_OK) {
        return NGX_ERROR;
    }

    last = p + len;
    start = p;

    for ( /* void */ ; p < last; p++) {

        if (*p >= 0x20 && *p != '"' && *p != '\\') {
            continue;
        }

        if (p > start && ngx_http_llm_out(ctx, start, p - start) != NGX_OK) {
            return NGX_ERROR;
        }

        switch (*p) {
        case '"':
        case '\\':
            esc[0] = '\\';
            esc[1] = *p;
            len = 2;
            break;
        case '\n':
            ngx_memcpy(esc, "\\n", 2);
            len = 2;
            break;
        case '\r':
            ngx_memcpy(esc, "\\r", 2);
            len = 2;
            break;
        case '\t':
            ngx_memcpy(esc, "\\t", 2);
            len = 2;
            break;
        default:
            len = ngx_sprintf(esc, "\\u%04xd", (ngx_uint_t) *p) - esc;
            break;
        }

        if (ngx_http_llm_out(ctx, esc, len) != NGX_OK) {
            return NGX_ERROR;
        }

        start = p + 1;
    }

    if (p > start && ngx_http_llm_out(ctx, start, p - start) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_llm_out(ctx, (u_char *) "\"", 1);
}


static ngx_int_t
ngx_http_llm_cache_out_json(ngx_http_llm_ctx_t *ctx, cJSON *item)
{
    char       *s;
    ngx_int_t   rc;

    s = cJSON_PrintUnformatted(item);
    if (s == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_llm_out(ctx, (u_char *) s, ngx_strlen(s));

    cJSON_free(s);

    return rc;
}


/*
 * The proxy is about to start: a stream to be stored is assembled as it
 * passes, so its events must be read.
 */

ngx_int_t
ngx_http_llm_cache_begin(ngx_http_llm_ctx_t *ctx)
{
    if (!ctx->cache_store || !ctx->stream || ctx->cache_asm) {
        return NGX_OK;
    }

    ctx->cache_asm = ngx_calloc(sizeof(ngx_http_llm_cache_asm_t),
                                ctx->request->connection->log);
    if (ctx->cache_asm == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* one upstream chunk of a stream being assembled */

void
ngx_http_llm_cache_feed(ngx_http_llm_ctx_t *ctx, cJSON *chunk)
{
    cJSON                        *choices, *ch, *item, *delta;
    ngx_int_t                     index;
    ngx_http_llm_cache_asm_t     *a;
    ngx_http_llm_cache_choice_t  *c;

    a = ctx->cache_asm;

    if (a == NULL || a->broken) {
        return;
    }

    if (a->model == NULL) {
        item = cJSON_GetObjectItemCaseSensitive(chunk, "model");
        if (cJSON_IsString(item)) {
            a->model = cJSON_Duplicate(item, 0);
        }

        item = cJSON_GetObjectItemCaseSensitive(chunk, "system_fingerprint");
        if (cJSON_IsString(item)) {
            a->fingerprint = cJSON_Duplicate(item, 0);
        }
    }

    item = cJSON_GetObjectItemCaseSensitive(chunk, "usage");

    if (cJSON_IsObject(item)) {
        if (a->usage) {
            cJSON_Delete(a->usage);
        }

        a->usage = cJSON_Duplicate(item, 1);
    }

    choices = cJSON_GetObjectItemCaseSensitive(chunk, "choices");

    cJSON_ArrayForEach(ch, choices) {

        item = cJSON_GetObjectItemCaseSensitive(ch, "index");
        index = cJSON_IsNumber(item) ? (ngx_int_t) item->valuedouble : 0;

        if (index < 0 || index >= NGX_HTTP_LLM_CACHE_CHOICES) {
            a->broken = 1;
            return;
        }

        c = &a->choice[index];
        c->seen = 1;

        if ((ngx_uint_t) index >= a->n) {
            a->n = index + 1;
        }

        delta = cJSON_GetObjectItemCaseSensitive(ch, "delta");

        item = cJSON_GetObjectItemCaseSensitive(delta, "content");
        if (cJSON_IsString(item)
            && ngx_http_llm_cache_append(a, c, item->valuestring) != NGX_OK)
        {
            a->broken = 1;
            return;
        }

        item = cJSON_GetObjectItemCaseSensitive(delta, "tool_calls");
        if (cJSON_IsArray(item)) {
            ngx_http_llm_cache_merge_tools(a, c, item);
        }

        item = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
        if (cJSON_IsString(item) && c->finish == NULL) {
            c->finish = cJSON_Duplicate(item, 0);
        }
    }

    if (a->size > ctx->conf->cache_max_entry) {
        a->broken = 1;
    }
}


static ngx_int_t
ngx_http_llm_cache_append(ngx_http_llm_cache_asm_t *a,
    ngx_http_llm_cache_choice_t *ch, const char *s)
{
    size_t   len, need;

    len = ngx_strlen(s);

    if (len == 0) {
        return NGX_OK;
    }

    need = ch->len + len + 1;

    if (ngx_http_llm_grow(&ch->content, &ch->size, ch->len, need,
                          (size_t) -1)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(ch->content + ch->len, s, len);
    ch->len += len;
    ch->content[ch->len] = '\0';
    a->size += len;

    return NGX_OK;
}


/* tool calls arrive in pieces by index: the arguments are concatenated */

static void
ngx_http_llm_cache_merge_tools(ngx_http_llm_cache_asm_t *a,
    ngx_http_llm_cache_choice_t *ch, cJSON *calls)
{
    char        *s;
    cJSON       *call, *have, *item, *fn, *hfn, *args, *hargs;
    size_t       len;
    ngx_int_t    index;

    if (ch->tool_calls == NULL) {
        ch->tool_calls = cJSON_CreateArray();
        if (ch->tool_calls == NULL) {
            a->broken = 1;
            return;
        }
    }

    cJSON_ArrayForEach(call, calls) {

        item = cJSON_GetObjectItemCaseSensitive(call, "index");
        index = cJSON_IsNumber(item) ? (ngx_int_t) item->valuedouble : 0;

        if (index < 0 || index > 64) {
            a->broken = 1;
            return;
        }

        have = cJSON_GetArrayItem(ch->tool_calls, (int) index);

        if (have == NULL) {
            if (index != cJSON_GetArraySize(ch->tool_calls)) {
                a->broken = 1;
                return;
            }

            have = cJSON_Duplicate(call, 1);
            if (have == NULL) {
                a->broken = 1;
                return;
            }

            cJSON_DeleteItemFromObjectCaseSensitive(have, "index");
            cJSON_AddItemToArray(ch->tool_calls, have);
            a->size += 64;
            continue;
        }

        fn = cJSON_GetObjectItemCaseSensitive(call, "function");
        args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        hfn = cJSON_GetObjectItemCaseSensitive(have, "function");
        hargs = cJSON_GetObjectItemCaseSensitive(hfn, "arguments");

        if (!cJSON_IsString(args)) {
            continue;
        }

        if (!cJSON_IsString(hargs)) {
            a->broken = 1;
            return;
        }

        len = ngx_strlen(hargs->valuestring) + ngx_strlen(args->valuestring);

        s = ngx_alloc(len + 1, ngx_cycle->log);
        if (s == NULL) {
            a->broken = 1;
            return;
        }

        ngx_sprintf((u_char *) s, "%s%s%Z", hargs->valuestring,
                    args->valuestring);

        cJSON_SetValuestring(hargs, s);
        ngx_free(s);

        a->size += ngx_strlen(args->valuestring);
    }
}


/* the chat.completion of an assembled stream, without id and created */

static cJSON *
ngx_http_llm_cache_assemble(ngx_http_llm_ctx_t *ctx)
{
    cJSON                        *doc, *choices, *ch, *msg, *usage;
    ngx_uint_t                    i;
    ngx_http_llm_cache_asm_t     *a;
    ngx_http_llm_cache_choice_t  *c;

    a = ctx->cache_asm;

    if (a == NULL || a->broken || a->n == 0) {
        return NULL;
    }

    for (i = 0; i < a->n; i++) {
        if (!a->choice[i].seen || a->choice[i].finish == NULL) {
            /* an answer that never finished is no answer to keep */
            return NULL;
        }
    }

    doc = cJSON_CreateObject();
    if (doc == NULL) {
        return NULL;
    }

    if (a->model) {
        cJSON_AddItemToObject(doc, "model", cJSON_Duplicate(a->model, 0));
    }

    choices = cJSON_AddArrayToObject(doc, "choices");

    for (i = 0; choices && i < a->n; i++) {
        c = &a->choice[i];

        ch = cJSON_CreateObject();
        if (ch == NULL) {
            break;
        }

        cJSON_AddItemToArray(choices, ch);
        cJSON_AddNumberToObject(ch, "index", (double) i);

        msg = cJSON_AddObjectToObject(ch, "message");
        if (msg == NULL) {
            break;
        }

        cJSON_AddStringToObject(msg, "role", "assistant");

        if (c->len || c->tool_calls == NULL) {
            cJSON_AddStringToObject(msg, "content",
                                    c->content ? (char *) c->content : "");

        } else {
            cJSON_AddNullToObject(msg, "content");
        }

        if (c->tool_calls) {
            cJSON_AddItemToObject(msg, "tool_calls",
                                  cJSON_Duplicate(c->tool_calls, 1));
        }

        cJSON_AddNullToObject(ch, "logprobs");
        cJSON_AddItemToObject(ch, "finish_reason",
                              cJSON_Duplicate(c->finish, 0));
    }

    if (a->usage) {
        cJSON_AddItemToObject(doc, "usage", cJSON_Duplicate(a->usage, 1));

    } else if (ctx->prompt_tokens >= 0 && ctx->completion_tokens >= 0) {
        usage = cJSON_AddObjectToObject(doc, "usage");

        if (usage) {
            cJSON_AddNumberToObject(usage, "prompt_tokens",
                                    (double) ctx->prompt_tokens);
            cJSON_AddNumberToObject(usage, "completion_tokens",
                                    (double) ctx->completion_tokens);
            cJSON_AddNumberToObject(usage, "total_tokens",
                                    (double) (ctx->prompt_tokens
                                              + ctx->completion_tokens));
        }
    }

    if (a->fingerprint) {
        cJSON_AddItemToObject(doc, "system_fingerprint",
                              cJSON_Duplicate(a->fingerprint, 0));
    }

    return doc;
}


/*
 * The backend's answer is complete: json is a non-streamed body, NULL for
 * a stream.  Whatever happens, a leader releases its followers here.
 */

void
ngx_http_llm_cache_store(ngx_http_llm_ctx_t *ctx, cJSON *json)
{
    char                    *s;
    u_char                  *entry, *p;
    cJSON                   *doc, *choices, *ch;
    size_t                   len;
    int64_t                  prompt, completion, cost;
    ngx_http_llm_backend_t  *b;

    if (!ctx->cache_store || ctx->cache_done) {
        return;
    }

    doc = NULL;
    entry = NULL;
    len = 0;

    if (json) {
        if (ctx->upstream_status != NGX_HTTP_OK) {
            goto done;
        }

        doc = json;

        /* fresh ones come with every hit */
        cJSON_DeleteItemFromObjectCaseSensitive(doc, "id");
        cJSON_DeleteItemFromObjectCaseSensitive(doc, "object");
        cJSON_DeleteItemFromObjectCaseSensitive(doc, "created");

        choices = cJSON_GetObjectItemCaseSensitive(doc, "choices");

        if (!cJSON_IsArray(choices) || cJSON_GetArraySize(choices) == 0) {
            goto done;
        }

        cJSON_ArrayForEach(ch, choices) {
            if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(
                                               ch, "finish_reason")))
            {
                goto done;
            }
        }

    } else {
        doc = ngx_http_llm_cache_assemble(ctx);
        if (doc == NULL) {
            goto done;
        }
    }

    s = cJSON_PrintUnformatted(doc);

    if (json == NULL) {
        cJSON_Delete(doc);
    }

    if (s == NULL) {
        goto done;
    }

    prompt = ngx_max(ctx->prompt_tokens, 0);
    completion = ngx_max(ctx->completion_tokens, 0);
    b = ctx->backend;
    cost = b ? ngx_http_llm_cost(prompt, completion, b->price_in,
                                 b->price_out)
             : 0;

    len = ngx_strlen(s);

    if (len + 3 * NGX_INT64_LEN + 16 > ctx->conf->cache_max_entry) {
        ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                      "llm: answer of %uz bytes not cached: over "
                      "llm_cache_max_entry", len);
        cJSON_free(s);
        len = 0;
        goto done;
    }

    entry = ngx_alloc(len + 3 * NGX_INT64_LEN + 16,
                      ctx->request->connection->log);

    if (entry) {
        p = ngx_sprintf(entry, NGX_HTTP_LLM_CACHE_MAGIC "%L %L %L\n",
                        prompt, completion, cost);
        p = ngx_cpymem(p, s, len);
        len = p - entry;

    } else {
        len = 0;
    }

    cJSON_free(s);

done:

    ngx_http_llm_cache_done(ctx, entry, len);

    if (entry) {
        ngx_free(entry);
    }
}


/* the store, and the lock's release; a NULL entry only releases */

static void
ngx_http_llm_cache_done(ngx_http_llm_ctx_t *ctx, u_char *entry, size_t len)
{
    u_char       ttl[NGX_INT_T_LEN], mark[NGX_INT_T_LEN];
    size_t       argvlen[9];
    const char  *argv[9];

    ctx->cache_done = 1;

    if (entry) {
        ngx_http_llm_cache_local_put(&ctx->cache_key, entry, len,
                                     ctx->conf->cache_ttl);
    }

    if (!ctx->cache_leader) {
        if (entry == NULL) {
            return;
        }

        argv[0] = "SET";
        argvlen[0] = 3;
        argv[1] = (char *) ctx->cache_key.data;
        argvlen[1] = ctx->cache_key.len;
        argv[2] = (char *) entry;
        argvlen[2] = len;
        argv[3] = "PX";
        argvlen[3] = 2;
        argv[4] = (char *) ttl;
        argvlen[4] = ngx_sprintf(ttl, "%M", ctx->conf->cache_ttl) - ttl;

        (void) ngx_http_llm_redis_command(5, argv, argvlen, NULL, NULL);
        return;
    }

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = ngx_http_llm_lua_cache_done;
    argvlen[1] = sizeof(ngx_http_llm_lua_cache_done) - 1;
    argv[2] = "2";
    argvlen[2] = 1;
    argv[3] = (char *) ctx->cache_key.data;
    argvlen[3] = ctx->cache_key.len;
    argv[4] = (char *) ctx->cache_lock.data;
    argvlen[4] = ctx->cache_lock.len;
    argv[5] = (char *) ctx->cache_token;
    argvlen[5] = sizeof(ctx->cache_token);
    argv[6] = entry ? (char *) entry : "";
    argvlen[6] = entry ? len : 0;
    argv[7] = (char *) ttl;
    argvlen[7] = ngx_sprintf(ttl, "%M", ctx->conf->cache_ttl) - ttl;
    argv[8] = (char *) mark;
    argvlen[8] = ngx_sprintf(mark, "%d", NGX_HTTP_LLM_CACHE_FAILED) - mark;

    (void) ngx_http_llm_redis_command(9, argv, argvlen, NULL, NULL);

    ctx->cache_leader = 0;

    /* commands keep their order: followers here will see the entry */
    ngx_http_llm_cache_wake(ctx);
}


/* every ending: a leader that stored nothing releases its followers */

void
ngx_http_llm_cache_cleanup(ngx_http_llm_ctx_t *ctx)
{
    ngx_http_llm_cache_unwait(ctx);

    if (ctx->cache_leader && !ctx->cache_done) {
        ngx_http_llm_cache_done(ctx, NULL, 0);
    }

    if (ctx->cache_asm) {
        ngx_http_llm_cache_asm_free(ctx->cache_asm);
        ctx->cache_asm = NULL;
    }
}


static void
ngx_http_llm_cache_asm_free(ngx_http_llm_cache_asm_t *a)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_LLM_CACHE_CHOICES; i++) {
        if (a->choice[i].content) {
            ngx_free(a->choice[i].content);
        }

        if (a->choice[i].tool_calls) {
            cJSON_Delete(a->choice[i].tool_calls);
        }

        if (a->choice[i].finish) {
            cJSON_Delete(a->choice[i].finish);
        }
    }

    if (a->model) {
        cJSON_Delete(a->model);
    }

    if (a->fingerprint) {
        cJSON_Delete(a->fingerprint);
    }

    if (a->usage) {
        cJSON_Delete(a->usage);
    }

    ngx_free(a);
}
