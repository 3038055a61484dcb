
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

/* what every replayed chunk's head gets after its id, when the answer had it */
#define NGX_HTTP_LLM_PIN_MODEL       ",\"model\":"
#define NGX_HTTP_LLM_PIN_FP          ",\"system_fingerprint\":"

#define NGX_HTTP_LLM_CACHE_BURST     65536   /* replay bytes queued at most */
#define NGX_HTTP_LLM_CACHE_BURSTS    16      /* per write event */
#define NGX_HTTP_LLM_CACHE_SLICE     8192    /* of JSON, copied as it is */

#define NGX_HTTP_LLM_REPLAY_ROLE     0
#define NGX_HTTP_LLM_REPLAY_CONTENT  1
#define NGX_HTTP_LLM_REPLAY_TOOLS    2
#define NGX_HTTP_LLM_REPLAY_FINISH   3
#define NGX_HTTP_LLM_REPLAY_USAGE    4
#define NGX_HTTP_LLM_REPLAY_DONE     5


#define NGX_HTTP_LLM_CACHE_TOOLS     65      /* tool calls per choice */


/* a tool call's arguments, grown as their deltas arrive */

typedef struct {
    u_char                     *data;
    size_t                      len;
    size_t                      size;
} ngx_http_llm_cache_args_t;


typedef struct {
    u_char                     *content;
    size_t                      len;
    size_t                      size;
    cJSON                      *tool_calls;
    ngx_http_llm_cache_args_t  *args;       /* per tool call, or NULL */
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


/* a choice of an entry, as a stream replay writes it */

typedef struct {
    ngx_int_t                   index;
    u_char                     *content;    /* NULL: none */
    size_t                      content_len;
    u_char                     *tools;      /* printed; NULL: none */
    size_t                      tools_len;
    char                       *finish;
} ngx_http_llm_cache_pchoice_t;


/*
 * An entry being replayed, shared by all its replays in the worker and
 * freed with the last one; parsed for stream replays.
 */

typedef struct {
    ngx_queue_t                    queue;
    ngx_uint_t                     refs;
    ngx_str_t                      key;
    u_char                        *json;
    size_t                         len;
    cJSON                         *doc;        /* NULL: not parsed */
    ngx_http_llm_cache_pchoice_t  *choice;
    ngx_uint_t                     nchoices;
    u_char                        *extra;      /* model and fingerprint */
    size_t                         extra_len;
    u_char                        *usage;      /* printed; NULL: none */
    size_t                         usage_len;
    u_char                         data[1];    /* the key, then the entry */
} ngx_http_llm_cache_pin_t;


/* where a hit's replay stands */

struct ngx_http_llm_cache_replay_s {
    ngx_http_llm_cache_pin_t   *pin;
    ngx_str_t                   head;       /* of each chunk */
    ngx_uint_t                  choice;
    ngx_uint_t                  stage;
    size_t                      pos;        /* in the JSON, content, tools */
    unsigned                    sse:1;
};


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
static void ngx_http_llm_cache_sort(cJSON **a, cJSON **tmp, ngx_uint_t n);
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
static void ngx_http_llm_cache_writer(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_cache_send(ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_cache_replay_end(ngx_http_llm_ctx_t *ctx);
static size_t ngx_http_llm_cache_queued(ngx_http_llm_ctx_t *ctx);
static ngx_http_llm_cache_pin_t *ngx_http_llm_cache_pin(
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_cache_entry_t *e,
    ngx_uint_t parse);
static void ngx_http_llm_cache_unpin(ngx_http_llm_cache_pin_t *pin);
static ngx_int_t ngx_http_llm_cache_pin_parse(ngx_http_llm_cache_pin_t *pin);
static void ngx_http_llm_cache_pin_unparse(ngx_http_llm_cache_pin_t *pin);
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
static ngx_int_t ngx_http_llm_cache_produce(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_replay_t *rp, size_t limit);
static ngx_int_t ngx_http_llm_cache_chunk(ngx_http_llm_ctx_t *ctx,
    ngx_str_t *head, ngx_int_t index, const char *delta,
    u_char *text, size_t len, const char *tail, const char *finish);
static ngx_int_t ngx_http_llm_cache_out_string(ngx_http_llm_ctx_t *ctx,
    u_char *p, size_t len);
static cJSON *ngx_http_llm_cache_assemble(ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_cache_append(ngx_http_llm_cache_asm_t *a,
    ngx_http_llm_cache_choice_t *ch, const char *s);
static void ngx_http_llm_cache_merge_tools(ngx_http_llm_cache_asm_t *a,
    ngx_http_llm_cache_choice_t *ch, cJSON *calls);
static ngx_int_t ngx_http_llm_cache_set_args(ngx_http_llm_cache_choice_t *ch);
static void ngx_http_llm_cache_asm_free(ngx_http_llm_cache_asm_t *a);
static void ngx_http_llm_cache_done(ngx_http_llm_ctx_t *ctx, u_char *entry,
    size_t len);


static ngx_queue_t  ngx_http_llm_cache_waiters;
static ngx_queue_t  ngx_http_llm_cache_pins;
static ngx_uint_t   ngx_http_llm_cache_seq;
static u_char      *ngx_http_llm_canon_buf;
static size_t       ngx_http_llm_canon_size;

static ngx_http_llm_cache_memo_t  ngx_http_llm_cache_memos[
                                      NGX_HTTP_LLM_MEMO_SLOTS];


void
ngx_http_llm_cache_init(void)
{
    ngx_queue_init(&ngx_http_llm_cache_waiters);
    ngx_queue_init(&ngx_http_llm_cache_pins);
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

    len = sizeof("llm:cache::{}:lock") - 1 + scope.len
          + NGX_HTTP_LLM_SHA256_HEX_LEN;

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->cache_key.data = p;
    p = ngx_sprintf(p, "llm:cache:%V:{%*s}", &scope,
                    (size_t) NGX_HTTP_LLM_SHA256_HEX_LEN, hex);
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
    cJSON      *child, **a, *stack[64];

    n = 0;

    for (child = item->child; child; child = child->next) {
        n++;
    }

    /* the members, and as many again for the sort */

    a = (n <= 32) ? stack : ngx_alloc(2 * n * sizeof(cJSON *),
                                      ngx_cycle->log);
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

    ngx_http_llm_arg_lit(argv, argvlen, 0, "GET");
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

    ngx_http_llm_arg_lit(argv, argvlen, 0, "EVAL");
    argv[1] = ngx_http_llm_lua_cache_lock;
    argvlen[1] = sizeof(ngx_http_llm_lua_cache_lock) - 1;
    ngx_http_llm_arg_lit(argv, argvlen, 2, "2");
    argv[3] = (char *) ctx->cache_key.data;
    argvlen[3] = ctx->cache_key.len;
    argv[4] = (char *) ctx->cache_lock.data;
    argvlen[4] = ctx->cache_lock.len;
    argv[5] = (char *) ctx->cache_token;
    argvlen[5] = sizeof(ctx->cache_token);
    argv[6] = (char *) ttl;
    argvlen[6] = ngx_sprintf(ttl, "%M", ctx->conf->cache_lock_timeout) - ttl;

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

    r->write_event_handler = ngx_http_llm_cache_writer;

    rc = ngx_http_llm_cache_send(ctx);

    if (rc == NGX_AGAIN) {
        /* the rest as the client takes it */
        ngx_http_run_posted_requests(c);
        return;
    }

done:

    ngx_http_llm_finalize(ctx, rc);
    ngx_http_run_posted_requests(c);
}


/* the client's socket can take more of a replay */

static void
ngx_http_llm_cache_writer(ngx_http_request_t *r)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_llm_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    if (c->write->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client timed out");
        c->timedout = 1;
        ngx_http_llm_finalize(ctx, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    rc = ngx_http_llm_cache_send(ctx);

    if (rc != NGX_AGAIN) {
        ngx_http_llm_finalize(ctx, rc);
    }
}


/*
 * Writes a replay a burst at a time, the next one only once the client
 * has taken the last: a slow reader holds a burst, never a whole replay.
 * NGX_AGAIN: the rest follows in the write handler; otherwise the code
 * to finalize the request with.
 */

static ngx_int_t
ngx_http_llm_cache_send(ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    ngx_event_t               *wev;
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_core_loc_conf_t  *clcf;

    r = ctx->request;
    c = r->connection;
    wev = c->write;

    for (i = 0; ctx->cache_replay; i++) {

        /* what the client could not take before, first */

        if ((ctx->busy || c->buffered)
            && ngx_http_llm_out_flush(ctx, 0) == NGX_ERROR)
        {
            return NGX_ERROR;
        }

        if (ctx->busy || c->buffered) {
            clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

            if (!wev->delayed) {
                ngx_add_timer(wev, clcf->send_timeout);
            }

            if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
                return NGX_ERROR;
            }

            return NGX_AGAIN;
        }

        if (wev->timer_set) {
            ngx_del_timer(wev);
        }

        if (i == NGX_HTTP_LLM_CACHE_BURSTS) {
            /* a fast client: the worker's other connections go first */
            ngx_post_event(wev, &ngx_posted_events);
            return NGX_AGAIN;
        }

        rc = ngx_http_llm_cache_produce(ctx, ctx->cache_replay,
                                        NGX_HTTP_LLM_CACHE_BURST);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_DONE) {
            ngx_http_llm_cache_replay_end(ctx);
            break;
        }

        if (ngx_http_llm_out_flush(ctx, 0) == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    rc = ngx_http_llm_out_flush(ctx, 1);

    /* what is left of the last burst, nginx's writer sends */

    return (rc == NGX_AGAIN) ? NGX_OK : rc;
}


static void
ngx_http_llm_cache_replay_end(ngx_http_llm_ctx_t *ctx)
{
    if (ctx->cache_replay) {
        ngx_http_llm_cache_unpin(ctx->cache_replay->pin);
        ctx->cache_replay = NULL;
    }
}


/* bytes written for the client and not yet passed to nginx */

static size_t
ngx_http_llm_cache_queued(ngx_http_llm_ctx_t *ctx)
{
    size_t        size;
    ngx_chain_t  *cl;

    size = 0;

    for (cl = ctx->out; cl; cl = cl->next) {
        size += cl->buf->last - cl->buf->pos;
    }

    return size;
}


/*
 * The entry of a replay, shared by every replay of it in the worker, so
 * that many slow readers of one large entry hold one copy of it.  A
 * stream replay needs it parsed: that is done once too.
 */

static ngx_http_llm_cache_pin_t *
ngx_http_llm_cache_pin(ngx_http_llm_ctx_t *ctx, ngx_http_llm_cache_entry_t *e,
    ngx_uint_t parse)
{
    ngx_queue_t               *q;
    ngx_http_llm_cache_pin_t  *pin;

    for (q = ngx_queue_head(&ngx_http_llm_cache_pins);
         q != ngx_queue_sentinel(&ngx_http_llm_cache_pins);
         q = ngx_queue_next(q))
    {
        pin = ngx_queue_data(q, ngx_http_llm_cache_pin_t, queue);

        if (pin->len == e->len
            && pin->key.len == ctx->cache_key.len
            && ngx_memcmp(pin->key.data, ctx->cache_key.data, pin->key.len)
               == 0
            && ngx_memcmp(pin->json, e->json, e->len) == 0)
        {
            goto found;
        }
    }

    pin = ngx_alloc(offsetof(ngx_http_llm_cache_pin_t, data)
                    + ctx->cache_key.len + e->len, ngx_cycle->log);
    if (pin == NULL) {
        return NULL;
    }

    ngx_memzero(pin, offsetof(ngx_http_llm_cache_pin_t, data));

    pin->key.data = pin->data;
    pin->key.len = ctx->cache_key.len;
    pin->json = ngx_cpymem(pin->data, ctx->cache_key.data, pin->key.len);
    pin->len = e->len;
    ngx_memcpy(pin->json, e->json, e->len);

    ngx_queue_insert_head(&ngx_http_llm_cache_pins, &pin->queue);

found:

    if (parse && pin->doc == NULL
        && ngx_http_llm_cache_pin_parse(pin) != NGX_OK)
    {
        if (pin->refs == 0) {
            ngx_queue_remove(&pin->queue);
            ngx_free(pin);
        }

        return NULL;
    }

    pin->refs++;

    return pin;
}


static void
ngx_http_llm_cache_unpin(ngx_http_llm_cache_pin_t *pin)
{
    if (--pin->refs) {
        return;
    }

    ngx_queue_remove(&pin->queue);
    ngx_http_llm_cache_pin_unparse(pin);
    ngx_free(pin);
}


/*
 * What a stream replay needs, per choice: its index, content, tool calls
 * (numbered from 0, and printed) and finish reason; the model and
 * fingerprint for every chunk's head; the usage, printed.
 */

static ngx_int_t
ngx_http_llm_cache_pin_parse(ngx_http_llm_cache_pin_t *pin)
{
    char                          *m, *f;
    cJSON                         *choices, *ch, *msg, *item, *call, *fp;
    u_char                        *p;
    size_t                         len;
    ngx_int_t                      index, k;
    ngx_uint_t                     n;
    ngx_http_llm_cache_pchoice_t  *pc;

    pin->doc = cJSON_ParseWithLength((char *) pin->json, pin->len);
    if (pin->doc == NULL) {
        return NGX_ERROR;
    }

    item = cJSON_GetObjectItemCaseSensitive(pin->doc, "model");
    fp = cJSON_GetObjectItemCaseSensitive(pin->doc, "system_fingerprint");

    m = cJSON_IsString(item) ? cJSON_PrintUnformatted(item) : NULL;
    f = cJSON_IsString(fp) ? cJSON_PrintUnformatted(fp) : NULL;

    len = (m ? sizeof(NGX_HTTP_LLM_PIN_MODEL) - 1 + ngx_strlen(m) : 0)
          + (f ? sizeof(NGX_HTTP_LLM_PIN_FP) - 1 + ngx_strlen(f) : 0);

    pin->extra = ngx_alloc(len + 1, ngx_cycle->log);

    if (pin->extra) {
        p = pin->extra;

        if (m) {
            p = ngx_sprintf(p, NGX_HTTP_LLM_PIN_MODEL "%s", m);
        }

        if (f) {
            p = ngx_sprintf(p, NGX_HTTP_LLM_PIN_FP "%s", f);
        }

        pin->extra_len = p - pin->extra;
    }

    cJSON_free(m);
    cJSON_free(f);

    if (pin->extra == NULL) {
        goto failed;
    }

    choices = cJSON_GetObjectItemCaseSensitive(pin->doc, "choices");
    n = 0;

    cJSON_ArrayForEach(ch, choices) {
        n++;
    }

    if (n) {
        pin->choice = ngx_alloc(n * sizeof(ngx_http_llm_cache_pchoice_t),
                                ngx_cycle->log);
        if (pin->choice == NULL) {
            goto failed;
        }
    }

    index = 0;

    cJSON_ArrayForEach(ch, choices) {

        pc = &pin->choice[pin->nchoices++];
        ngx_memzero(pc, sizeof(ngx_http_llm_cache_pchoice_t));

        item = cJSON_GetObjectItemCaseSensitive(ch, "index");
        if (cJSON_IsNumber(item)) {
            index = (ngx_int_t) item->valuedouble;
        }

        pc->index = index++;

        msg = cJSON_GetObjectItemCaseSensitive(ch, "message");

        item = cJSON_GetObjectItemCaseSensitive(msg, "content");
        if (cJSON_IsString(item)) {
            pc->content = (u_char *) item->valuestring;
            pc->content_len = ngx_strlen(item->valuestring);
        }

        item = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");

        if (cJSON_IsArray(item) && cJSON_GetArraySize(item) > 0) {
            k = 0;

            cJSON_ArrayForEach(call, item) {
                cJSON_DeleteItemFromObjectCaseSensitive(call, "index");
                cJSON_AddNumberToObject(call, "index", (double) k++);
            }

            pc->tools = (u_char *) cJSON_PrintUnformatted(item);
            if (pc->tools == NULL) {
                goto failed;
            }

            pc->tools_len = ngx_strlen(pc->tools);
        }

        item = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
        pc->finish = cJSON_IsString(item) ? item->valuestring : "stop";
    }

    item = cJSON_GetObjectItemCaseSensitive(pin->doc, "usage");

    if (cJSON_IsObject(item)) {
        pin->usage = (u_char *) cJSON_PrintUnformatted(item);
        if (pin->usage == NULL) {
            goto failed;
        }

        pin->usage_len = ngx_strlen(pin->usage);
    }

    return NGX_OK;

failed:

    ngx_http_llm_cache_pin_unparse(pin);

    return NGX_ERROR;
}


static void
ngx_http_llm_cache_pin_unparse(ngx_http_llm_cache_pin_t *pin)
{
    ngx_uint_t  i;

    for (i = 0; i < pin->nchoices; i++) {
        cJSON_free(pin->choice[i].tools);
    }

    if (pin->choice) {
        ngx_free(pin->choice);
    }

    if (pin->extra) {
        ngx_free(pin->extra);
    }

    cJSON_free(pin->usage);
    cJSON_Delete(pin->doc);

    pin->doc = NULL;
    pin->choice = NULL;
    pin->nchoices = 0;
    pin->extra = NULL;
    pin->extra_len = 0;
    pin->usage = NULL;
    pin->usage_len = 0;
}


static ngx_int_t
ngx_http_llm_cache_json(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e, u_char *id)
{
    u_char                       *p, *q;
    ngx_http_request_t           *r;
    ngx_http_llm_cache_replay_t  *rp;
    u_char                        head[128];

    r = ctx->request;

    p = ngx_sprintf(head, "{\"id\":\"%s\",\"object\":\"chat.completion\","
                    "\"created\":%T", id, ngx_time());

    /* the stored object follows from its first key on, if it has one */

    for (q = e->json + 1; *q == ' ' || *q == '\t' || *q == '\r'
                          || *q == '\n'; q++)
    {
        /* void */
    }

    if (*q != '}') {
        *p++ = ',';
    }

    r->headers_out.content_length_n = (p - head) + (e->len - 1) + 1;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rp = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_cache_replay_t));
    if (rp == NULL) {
        return NGX_ERROR;
    }

    rp->pin = ngx_http_llm_cache_pin(ctx, e, 0);
    if (rp->pin == NULL) {
        return NGX_ERROR;
    }

    rp->pos = 1;
    ctx->cache_replay = rp;

    return ngx_http_llm_out(ctx, head, p - head);
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

    ngx_str_set(&r->headers_out.content_type, NGX_HTTP_LLM_SSE_TYPE);
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

    /* a small entry: written at once, with nothing to replay after */

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

    /* an entry this small is replayed whole, at once */

    rc = ngx_http_llm_cache_sse(ctx, e, (u_char *) NGX_HTTP_LLM_MEMO_ID,
                                NGX_HTTP_LLM_MEMO_TIME);

    if (rc == NGX_OK) {
        rc = ngx_http_llm_cache_produce(ctx, ctx->cache_replay,
                                        NGX_MAX_SIZE_T_VALUE);
        rc = (rc == NGX_DONE) ? NGX_OK : NGX_ERROR;
    }

    ngx_http_llm_cache_replay_end(ctx);

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


/* a stream replay of the entry, to be produced burst by burst */

static ngx_int_t
ngx_http_llm_cache_sse(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e, u_char *id, time_t now)
{
    u_char                       *p;
    ngx_http_request_t           *r;
    ngx_http_llm_cache_pin_t     *pin;
    ngx_http_llm_cache_replay_t  *rp;

    r = ctx->request;

    rp = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_cache_replay_t));
    if (rp == NULL) {
        return NGX_ERROR;
    }

    pin = ngx_http_llm_cache_pin(ctx, e, 1);
    if (pin == NULL) {
        return NGX_ERROR;
    }

    rp->pin = pin;
    rp->sse = 1;
    rp->stage = pin->nchoices ? NGX_HTTP_LLM_REPLAY_ROLE
                              : NGX_HTTP_LLM_REPLAY_USAGE;
    ctx->cache_replay = rp;

    /* the head carries model and fingerprint: made once, reused */

    rp->head.data = ngx_pnalloc(r->pool, 160 + pin->extra_len);
    if (rp->head.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_snprintf(rp->head.data, 160, "data: {\"id\":\"%s\",\"object\":"
                     "\"chat.completion.chunk\",\"created\":%T", id, now);
    p = ngx_cpymem(p, pin->extra, pin->extra_len);
    rp->head.len = p - rp->head.data;

    return NGX_OK;
}


/*
 * The next events of a replay, until limit bytes wait to be sent.
 * NGX_DONE: the replay is all written.
 */

static ngx_int_t
ngx_http_llm_cache_produce(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_replay_t *rp, size_t limit)
{
    size_t                         n, len;
    u_char                        *text;
    ngx_int_t                      rc;
    ngx_http_llm_cache_pin_t      *pin;
    ngx_http_llm_cache_pchoice_t  *pc;

    pin = rp->pin;

    if (!rp->sse) {
        /* JSON: the stored object as it is, then a line end */

        while (rp->pos < pin->len) {
            if (ngx_http_llm_cache_queued(ctx) >= limit) {
                return NGX_OK;
            }

            n = ngx_min(pin->len - rp->pos, NGX_HTTP_LLM_CACHE_SLICE);

            if (ngx_http_llm_out(ctx, pin->json + rp->pos, n) != NGX_OK) {
                return NGX_ERROR;
            }

            rp->pos += n;
        }

        return ngx_http_llm_out_lit(ctx, "\n") == NGX_OK ? NGX_DONE
                                                           : NGX_ERROR;
    }

    while (ngx_http_llm_cache_queued(ctx) < limit) {

        pc = (rp->choice < pin->nchoices) ? &pin->choice[rp->choice] : NULL;

        switch (rp->stage) {

        case NGX_HTTP_LLM_REPLAY_ROLE:
            rc = ngx_http_llm_cache_chunk(ctx, &rp->head, pc->index,
                                          "{\"role\":\"assistant\","
                                          "\"content\":",
                                          (u_char *) "", 0, "}", NULL);
            rp->stage = NGX_HTTP_LLM_REPLAY_CONTENT;
            rp->pos = 0;
            break;

        case NGX_HTTP_LLM_REPLAY_CONTENT:
            if (rp->pos == pc->content_len) {
                rc = NGX_OK;
                rp->stage = NGX_HTTP_LLM_REPLAY_TOOLS;
                rp->pos = 0;
                break;
            }

            text = pc->content + rp->pos;
            len = pc->content_len - rp->pos;
            n = ngx_min(len, NGX_HTTP_LLM_CACHE_PIECE);

            /* never split a UTF-8 sequence */
            while (n < len && (text[n] & 0xc0) == 0x80) {
                n++;
            }

            rc = ngx_http_llm_cache_chunk(ctx, &rp->head, pc->index,
                                          "{\"content\":", text, n, "}",
                                          NULL);
            rp->pos += n;
            break;

        case NGX_HTTP_LLM_REPLAY_TOOLS:
            if (pc->tools == NULL) {
                rc = NGX_OK;
                rp->stage = NGX_HTTP_LLM_REPLAY_FINISH;
                break;
            }

            rc = NGX_OK;

            if (rp->pos == 0
                && (ngx_http_llm_cache_chunk(ctx, &rp->head, pc->index,
                                             NULL, NULL, 0, NULL, NULL)
                    != NGX_OK
                    || ngx_http_llm_out_lit(ctx, "{\"tool_calls\":")
                       != NGX_OK))
            {
                rc = NGX_ERROR;
                break;
            }

            /* one event, however long, written a slice at a time */

            n = ngx_min(pc->tools_len - rp->pos, NGX_HTTP_LLM_CACHE_SLICE);

            if (ngx_http_llm_out(ctx, pc->tools + rp->pos, n) != NGX_OK) {
                rc = NGX_ERROR;
                break;
            }

            rp->pos += n;

            if (rp->pos == pc->tools_len) {
                rc = ngx_http_llm_out_lit(ctx, "},\"logprobs\":null,"
                                            "\"finish_reason\":null}]}\n\n");
                rp->stage = NGX_HTTP_LLM_REPLAY_FINISH;
            }

            break;

        case NGX_HTTP_LLM_REPLAY_FINISH:
            rc = ngx_http_llm_cache_chunk(ctx, &rp->head, pc->index, "{}",
                                          NULL, 0, NULL, pc->finish);

            rp->stage = (++rp->choice < pin->nchoices)
                        ? NGX_HTTP_LLM_REPLAY_ROLE
                        : NGX_HTTP_LLM_REPLAY_USAGE;
            break;

        case NGX_HTTP_LLM_REPLAY_USAGE:
            rc = NGX_OK;

            if (ctx->client_usage && pin->usage
                && (ngx_http_llm_out(ctx, rp->head.data, rp->head.len)
                    != NGX_OK
                    || ngx_http_llm_out_lit(ctx, ",\"choices\":[],"
                                              "\"usage\":")
                       != NGX_OK
                    || ngx_http_llm_out(ctx, pin->usage, pin->usage_len)
                       != NGX_OK
                    || ngx_http_llm_out_lit(ctx, "}\n\n") != NGX_OK))
            {
                rc = NGX_ERROR;
            }

            rp->stage = NGX_HTTP_LLM_REPLAY_DONE;
            break;

        default: /* NGX_HTTP_LLM_REPLAY_DONE */
            return ngx_http_llm_out_lit(ctx, "data: [DONE]\n\n") == NGX_OK
                   ? NGX_DONE : NGX_ERROR;
        }

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
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

    if (ngx_http_llm_out_lit(ctx, ",\"logprobs\":null,\"finish_reason\":")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (finish == NULL) {
        return ngx_http_llm_out_lit(ctx, "null}]}\n\n");
    }

    if (ngx_http_llm_cache_out_string(ctx, (u_char *) finish,
                                      ngx_strlen(finish))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_llm_out_lit(ctx, "}]}\n\n");
}


/* a JSON string: quotes, and escapes for what JSON does not allow raw */

static ngx_int_t
ngx_http_llm_cache_out_string(ngx_http_llm_ctx_t *ctx, u_char *p, size_t len)
{
    u_char   *last, *start;
    u_char    esc[8];

    if (ngx_http_llm_out_lit(ctx, "\"") != NGX_OK) {
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

    return ngx_http_llm_out_lit(ctx, "\"");
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


/*
 * Tool calls arrive in pieces by index.  The arguments are appended to a
 * buffer of their own, doubled as it fills, and set in the call once the
 * stream is complete: a call of many deltas costs linear time.
 */

static void
ngx_http_llm_cache_merge_tools(ngx_http_llm_cache_asm_t *a,
    ngx_http_llm_cache_choice_t *ch, cJSON *calls)
{
    cJSON                      *call, *have, *item, *fn, *args, *hargs;
    size_t                      len;
    ngx_int_t                   index;
    ngx_http_llm_cache_args_t  *buf;

    if (ch->tool_calls == NULL) {
        ch->tool_calls = cJSON_CreateArray();
        ch->args = ngx_calloc(NGX_HTTP_LLM_CACHE_TOOLS
                              * sizeof(ngx_http_llm_cache_args_t),
                              ngx_cycle->log);

        if (ch->tool_calls == NULL || ch->args == NULL) {
            a->broken = 1;
            return;
        }
    }

    cJSON_ArrayForEach(call, calls) {

        item = cJSON_GetObjectItemCaseSensitive(call, "index");
        index = cJSON_IsNumber(item) ? (ngx_int_t) item->valuedouble : 0;

        if (index < 0 || index >= NGX_HTTP_LLM_CACHE_TOOLS) {
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

            /* the first piece of the arguments, if any, stays in the call */
            continue;
        }

        fn = cJSON_GetObjectItemCaseSensitive(call, "function");
        args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        hargs = cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(have, "function"),
                    "arguments");

        if (!cJSON_IsString(args)) {
            continue;
        }

        if (!cJSON_IsString(hargs)) {
            a->broken = 1;
            return;
        }

        buf = &ch->args[index];
        len = ngx_strlen(args->valuestring);

        if (buf->data == NULL) {
            /* the first piece, from the call, starts the buffer */
            buf->len = ngx_strlen(hargs->valuestring);

            if (ngx_http_llm_grow(&buf->data, &buf->size, 0,
                                  buf->len + len + 1, (size_t) -1)
                != NGX_OK)
            {
                a->broken = 1;
                return;
            }

            ngx_memcpy(buf->data, hargs->valuestring, buf->len);

        } else if (ngx_http_llm_grow(&buf->data, &buf->size, buf->len,
                                     buf->len + len + 1, (size_t) -1)
                   != NGX_OK)
        {
            a->broken = 1;
            return;
        }

        ngx_memcpy(buf->data + buf->len, args->valuestring, len);
        buf->len += len;
        buf->data[buf->len] = '\0';

        a->size += len;
    }
}


/* the arguments of each call of a choice, put in place once */

static ngx_int_t
ngx_http_llm_cache_set_args(ngx_http_llm_cache_choice_t *ch)
{
    int     i, n;
    cJSON  *call, *args;

    n = cJSON_GetArraySize(ch->tool_calls);

    for (i = 0; i < n && i < NGX_HTTP_LLM_CACHE_TOOLS; i++) {

        if (ch->args[i].data == NULL) {
            continue;
        }

        call = cJSON_GetArrayItem(ch->tool_calls, i);
        args = cJSON_GetObjectItemCaseSensitive(
                   cJSON_GetObjectItemCaseSensitive(call, "function"),
                   "arguments");

        if (!cJSON_IsString(args)
            || cJSON_SetValuestring(args, (char *) ch->args[i].data) == NULL)
        {
            return NGX_ERROR;
        }

        ngx_free(ch->args[i].data);
        ch->args[i].data = NULL;
    }

    return NGX_OK;
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
            if (ngx_http_llm_cache_set_args(c) != NGX_OK) {
                cJSON_Delete(doc);
                return NULL;
            }

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

        ngx_http_llm_arg_lit(argv, argvlen, 0, "SET");
        argv[1] = (char *) ctx->cache_key.data;
        argvlen[1] = ctx->cache_key.len;
        argv[2] = (char *) entry;
        argvlen[2] = len;
        ngx_http_llm_arg_lit(argv, argvlen, 3, "PX");
        argv[4] = (char *) ttl;
        argvlen[4] = ngx_sprintf(ttl, "%M", ctx->conf->cache_ttl) - ttl;

        (void) ngx_http_llm_redis_command(5, argv, argvlen, NULL, NULL);
        return;
    }

    ngx_http_llm_arg_lit(argv, argvlen, 0, "EVAL");
    argv[1] = ngx_http_llm_lua_cache_done;
    argvlen[1] = sizeof(ngx_http_llm_lua_cache_done) - 1;
    ngx_http_llm_arg_lit(argv, argvlen, 2, "2");
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
    ngx_http_llm_cache_replay_end(ctx);

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
    ngx_uint_t  i, k;

    for (i = 0; i < NGX_HTTP_LLM_CACHE_CHOICES; i++) {
        if (a->choice[i].content) {
            ngx_free(a->choice[i].content);
        }

        if (a->choice[i].tool_calls) {
            cJSON_Delete(a->choice[i].tool_calls);
        }

        if (a->choice[i].args) {
            for (k = 0; k < NGX_HTTP_LLM_CACHE_TOOLS; k++) {
                if (a->choice[i].args[k].data) {
                    ngx_free(a->choice[i].args[k].data);
                }
            }

            ngx_free(a->choice[i].args);
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
