
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The response cache phase: whether a request may be answered from the
 * cache, the lookup in this worker's copy and in Redis, single-flight
 * across gateway nodes through a Redis lock (a leader goes to the
 * backend, its followers wait for its entry), and the store of a
 * complete answer.  The key is in ngx_http_llm_cache_key.c, the replay
 * of a hit in ngx_http_llm_cache_replay.c, and the assembly of a stream
 * in ngx_http_llm_cache_asm.c.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_cache.h"
#include "ngx_http_llm_cache_local.h"
#include "ngx_http_llm_output.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_usage.h"
#include "ngx_http_llm_util.h"


#define NGX_HTTP_LLM_CACHE_POLL_MIN  10
#define NGX_HTTP_LLM_CACHE_POLL_MAX  200
#define NGX_HTTP_LLM_CACHE_FAILED    1000    /* the failure marker, ms */

#define NGX_HTTP_LLM_CACHE_MAGIC     "LLMC1 "

/* an entry's head: the magic, three numbers, their separators, and room */
#define NGX_HTTP_LLM_CACHE_HEAD_LEN  (3 * NGX_INT64_LEN + 16)


static ngx_uint_t ngx_http_llm_cache_wanted(ngx_http_llm_ctx_t *ctx);
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
static void ngx_http_llm_cache_lock_argv(ngx_http_llm_ctx_t *ctx,
    const char **argv, size_t *argvlen);
static void ngx_http_llm_cache_hit(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e);
static void ngx_http_llm_cache_done(ngx_http_llm_ctx_t *ctx, u_char *entry,
    size_t len);


static ngx_queue_t  ngx_http_llm_cache_waiters;
static ngx_uint_t   ngx_http_llm_cache_seq;


void
ngx_http_llm_cache_init(void)
{
    ngx_queue_init(&ngx_http_llm_cache_waiters);
}


void
ngx_http_llm_cache_exit(void)
{
    ngx_http_llm_cache_key_exit();
}


/*
 * The cache phase.  NGX_OK: go on, to the backend (ctx->cache.status says
 * why) or, after a hit in this worker's copy, to the replay phase;
 * NGX_AGAIN: a Redis reply or a leader is awaited, and the request resumes
 * through ngx_http_llm_run(); NGX_ERROR: a 500.
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

    if (!ngx_http_llm_cache_wanted(ctx)
        || !ngx_http_llm_redis_ready(NGX_HTTP_LLM_REDIS_CACHE))
    {
        ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_BYPASS);
        return NGX_OK;
    }

    if (ngx_http_llm_cache_key(ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    /* one lock holder among all the nodes: the token tells them apart */

    (void) ngx_snprintf(ctx->cache.token, sizeof(ctx->cache.token),
                        "%08xD%08xD%08xD", (uint32_t) ngx_random(),
                        (uint32_t) ngx_pid,
                        (uint32_t) ++ngx_http_llm_cache_seq);

    no_cache = ngx_http_llm_cache_control(r, "no-cache");

    ctx->cache.store = ngx_http_llm_cache_control(r, "no-store") ? 0 : 1;

    if (no_cache) {
        ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_BYPASS);
        return NGX_OK;
    }

    p = ngx_http_llm_cache_local_get(&ctx->cache.key, &len);

    if (p && ngx_http_llm_cache_parse(p, len, &e) == NGX_OK) {
        ngx_http_llm_cache_hit(ctx, &e);
        return NGX_OK;
    }

    if (ngx_http_llm_cache_get(ctx) != NGX_OK) {
        ctx->cache.store = 0;
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
    argv[1] = (char *) ctx->cache.key.data;
    argvlen[1] = ctx->cache.key.len;

    ctx->redis = ngx_http_llm_redis_command(NGX_HTTP_LLM_REDIS_CACHE, 2, argv,
                                            argvlen,
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
        ctx->cache.store = 0;
        ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_BYPASS);
        ngx_http_llm_run(ctx);
        return;
    }

    if (reply->type == REDIS_REPLY_STRING
        && ngx_http_llm_cache_parse((u_char *) reply->str, reply->len, &e)
           == NGX_OK)
    {
        ngx_http_llm_cache_local_put(&ctx->cache.key, (u_char *) reply->str,
                                     reply->len, 0);
        ngx_http_llm_cache_hit(ctx, &e);
        ngx_http_llm_run(ctx);
        return;
    }

    if (ctx->conf->cache_lock_timeout == 0 || !ctx->cache.store) {
        ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_MISS);
        ngx_http_llm_run(ctx);
        return;
    }

    ctx->cache.since = ngx_current_msec;
    ctx->cache.poll = NGX_HTTP_LLM_CACHE_POLL_MIN;

    if (ngx_http_llm_cache_lock(ctx) != NGX_OK) {
        ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_MISS);
        ngx_http_llm_run(ctx);
    }
}


/* both lock scripts' first three arguments: the entry, the lock, our token */

static void
ngx_http_llm_cache_lock_argv(ngx_http_llm_ctx_t *ctx, const char **argv,
    size_t *argvlen)
{
    argv[3] = (char *) ctx->cache.key.data;
    argvlen[3] = ctx->cache.key.len;
    argv[4] = (char *) ctx->cache.lock.data;
    argvlen[4] = ctx->cache.lock.len;
    argv[5] = (char *) ctx->cache.token;
    argvlen[5] = sizeof(ctx->cache.token);
}


static ngx_int_t
ngx_http_llm_cache_lock(ngx_http_llm_ctx_t *ctx)
{
    u_char       ttl[NGX_INT_T_LEN];
    size_t       argvlen[7];
    const char  *argv[7];

    /* argv[0..2], EVALSHA, the script and its key count: the registry */
    ngx_http_llm_cache_lock_argv(ctx, argv, argvlen);
    argv[6] = (char *) ttl;
    argvlen[6] = ngx_sprintf(ttl, "%M", ctx->conf->cache_lock_timeout) - ttl;

    ctx->redis = ngx_http_llm_redis_script(NGX_HTTP_LLM_REDIS_CACHE,
                                           NGX_HTTP_LLM_SCRIPT_CACHE_LOCK, 7,
                                           argv, argvlen,
                                           ngx_http_llm_cache_lock_reply, ctx);

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
            ngx_http_llm_cache_local_put(&ctx->cache.key, (u_char *) e->str,
                                         e->len, 0);
            ngx_http_llm_cache_hit(ctx, &entry);
            ngx_http_llm_run(ctx);
            return;
        }
    }

    if (kind == 2) {
        ctx->cache.leader = 1;

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ctx->request->connection->log, 0,
                       "llm: cache leader for \"%V\"", &ctx->cache.key);

    } else if (kind == 3
               && ngx_current_msec - ctx->cache.since
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

    if (!ctx->cache.waiting) {
        ngx_queue_insert_tail(&ngx_http_llm_cache_waiters, &ctx->cache.link);
        ctx->cache.waiting = 1;
        ctx->cache.waited = 1;

        ctx->cache.timer.handler = ngx_http_llm_cache_poll;
        ctx->cache.timer.data = &ngx_http_llm_timer_conn;
        ctx->cache.timer.log = ctx->request->connection->log;
    }

    left = ctx->conf->cache_lock_timeout
           - (ngx_current_msec - ctx->cache.since);

    ngx_add_timer(&ctx->cache.timer, ngx_min(ctx->cache.poll, left));

    ctx->cache.poll = ngx_min(ctx->cache.poll * 2,
                              NGX_HTTP_LLM_CACHE_POLL_MAX);
}


static void
ngx_http_llm_cache_poll(ngx_event_t *ev)
{
    ngx_http_llm_ctx_t  *ctx;

    ctx = (ngx_http_llm_ctx_t *) ((u_char *) ev
                                  - offsetof(ngx_http_llm_ctx_t,
                                             cache.timer));

    if (ngx_http_llm_cache_lock(ctx) != NGX_OK) {
        /* Redis went away: the backend is all there is */
        ngx_http_llm_cache_unwait(ctx);
        ctx->cache.store = 0;
        ngx_http_llm_cache_go(ctx, NGX_HTTP_LLM_CACHE_BYPASS);
        ngx_http_llm_run(ctx);
    }
}


static void
ngx_http_llm_cache_unwait(ngx_http_llm_ctx_t *ctx)
{
    if (ctx->cache.timer.timer_set) {
        ngx_del_timer(&ctx->cache.timer);
    }

    if (ctx->cache.timer.posted) {
        ngx_delete_posted_event(&ctx->cache.timer);
    }

    if (ctx->cache.waiting) {
        ngx_queue_remove(&ctx->cache.link);
        ctx->cache.waiting = 0;
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
        ctx = ngx_queue_data(q, ngx_http_llm_ctx_t, cache.link);

        if (ctx->cache.key.len != leader->cache.key.len
            || ngx_strncmp(ctx->cache.key.data, leader->cache.key.data,
                           ctx->cache.key.len)
               != 0
            || ctx->redis != NULL)
        {
            continue;
        }

        if (ctx->cache.timer.timer_set) {
            ngx_del_timer(&ctx->cache.timer);
        }

        if (!ctx->cache.timer.posted) {
            ngx_post_event(&ctx->cache.timer, &ngx_posted_events);
        }
    }
}


/* on to the backend */

static void
ngx_http_llm_cache_go(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_status_e status)
{
    ngx_http_llm_cache_unwait(ctx);

    ctx->cache.status = status;
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


/*
 * a hit: the replay phase answers the request from the entry, without a
 * backend; the entry lives until the caller's run() returns
 */

static void
ngx_http_llm_cache_hit(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e)
{
    ngx_http_llm_cache_unwait(ctx);

    ctx->phase = NGX_HTTP_LLM_PHASE_REPLAY;
    ctx->cache.status = NGX_HTTP_LLM_CACHE_HIT;
    ctx->cache.store = 0;
    ctx->prompt_tokens = (ngx_int_t) e->prompt;
    ctx->completion_tokens = (ngx_int_t) e->completion;
    ctx->cache.cost = e->cost;

    ctx->cache.hit = *e;
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

    if (!ctx->cache.store || ctx->cache.done) {
        return;
    }

    doc = NULL;
    entry = NULL;
    len = 0;

    if (json) {
        if (ctx->attempt.status != NGX_HTTP_OK) {
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

    if (len + NGX_HTTP_LLM_CACHE_HEAD_LEN > ctx->conf->cache_max_entry) {
        ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                      "llm: answer of %uz bytes not cached: over "
                      "llm_cache_max_entry", len);
        cJSON_free(s);
        len = 0;
        goto done;
    }

    entry = ngx_alloc(len + NGX_HTTP_LLM_CACHE_HEAD_LEN,
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

    ctx->cache.done = 1;

    if (entry) {
        ngx_http_llm_cache_local_put(&ctx->cache.key, entry, len,
                                     ctx->conf->cache_ttl);
    }

    if (!ctx->cache.leader) {
        if (entry == NULL) {
            return;
        }

        ngx_http_llm_arg_lit(argv, argvlen, 0, "SET");
        argv[1] = (char *) ctx->cache.key.data;
        argvlen[1] = ctx->cache.key.len;
        argv[2] = (char *) entry;
        argvlen[2] = len;
        ngx_http_llm_arg_lit(argv, argvlen, 3, "PX");
        argv[4] = (char *) ttl;
        argvlen[4] = ngx_sprintf(ttl, "%M", ctx->conf->cache_ttl) - ttl;

        (void) ngx_http_llm_redis_command(NGX_HTTP_LLM_REDIS_CACHE, 5, argv,
                                          argvlen, NULL, NULL);
        return;
    }

    ngx_http_llm_cache_lock_argv(ctx, argv, argvlen);
    argv[6] = entry ? (char *) entry : "";
    argvlen[6] = entry ? len : 0;
    argv[7] = (char *) ttl;
    argvlen[7] = ngx_sprintf(ttl, "%M", ctx->conf->cache_ttl) - ttl;
    argv[8] = (char *) mark;
    argvlen[8] = ngx_sprintf(mark, "%d", NGX_HTTP_LLM_CACHE_FAILED) - mark;

    (void) ngx_http_llm_redis_script(NGX_HTTP_LLM_REDIS_CACHE,
                                     NGX_HTTP_LLM_SCRIPT_CACHE_DONE, 9, argv,
                                     argvlen, NULL, NULL);

    ctx->cache.leader = 0;

    /* commands keep their order: followers here will see the entry */
    ngx_http_llm_cache_wake(ctx);
}


/* every ending: a leader that stored nothing releases its followers */

void
ngx_http_llm_cache_cleanup(ngx_http_llm_ctx_t *ctx)
{
    ngx_http_llm_cache_unwait(ctx);

    if (ctx->cache.leader && !ctx->cache.done) {
        ngx_http_llm_cache_done(ctx, NULL, 0);
    }

    if (ctx->cache.assembled) {
        ngx_http_llm_cache_asm_free(ctx->cache.assembled);
        ctx->cache.assembled = NULL;
    }
}
