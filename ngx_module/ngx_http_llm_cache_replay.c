
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * A cache hit served: as JSON, or as a real SSE stream of chunks, written
 * a burst at a time as the client reads; small stream replays are kept
 * per worker (the memo) and written again with a new id and time.  It
 * answers the client and ends the request, as the proxy does, and so sits
 * in the request layer, above the cache phase that finds the hit.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_cache.h"
#include "ngx_http_llm_output.h"
#include "ngx_http_llm_usage.h"


#define NGX_HTTP_LLM_CACHE_PIECE     64      /* bytes of a replayed chunk */
#define NGX_HTTP_LLM_MEMO_SLOTS      64      /* replays kept per worker */
#define NGX_HTTP_LLM_MEMO_MAX        8192    /* for entries up to this */

/* the placeholders of a kept replay: an id as long as any, and a time */
#define NGX_HTTP_LLM_MEMO_ID         "chatcmpl-000000000000000000000000"
#define NGX_HTTP_LLM_MEMO_TIME       1000000000
#define NGX_HTTP_LLM_MEMO_CREATED    "1000000000"
#define NGX_HTTP_LLM_MEMO_TIME_LEN   (sizeof(NGX_HTTP_LLM_MEMO_CREATED) - 1)
#define NGX_HTTP_LLM_MEMO_TIME_MAX   9999999999LL

/* what every replayed chunk's head gets after its id, when the answer had it */
#define NGX_HTTP_LLM_PIN_MODEL       ",\"model\":"
#define NGX_HTTP_LLM_PIN_FP          ",\"system_fingerprint\":"

/* a plain answer's head, around its id; then its time */
#define NGX_HTTP_LLM_JSON_ID         "{\"id\":\""
#define NGX_HTTP_LLM_JSON_CREATED    "\",\"object\":\"chat.completion\"," \
                                     "\"created\":"
/* with the comma before the stored members */
#define NGX_HTTP_LLM_JSON_HEAD_LEN                                            \
    (sizeof(NGX_HTTP_LLM_JSON_ID) - 1 + sizeof(NGX_HTTP_LLM_MEMO_ID) - 1      \
     + sizeof(NGX_HTTP_LLM_JSON_CREATED) - 1 + NGX_TIME_T_LEN + sizeof(","))

/* the parts of a chunk that a replay writes */
#define NGX_HTTP_LLM_CHUNK_ID        "data: {\"id\":\""
#define NGX_HTTP_LLM_CHUNK_CREATED                                            \
    "\",\"object\":\"chat.completion.chunk\",\"created\":"
#define NGX_HTTP_LLM_CHUNK_INDEX     ",\"choices\":[{\"index\":"
#define NGX_HTTP_LLM_CHUNK_DELTA     ",\"delta\":"
#define NGX_HTTP_LLM_CHUNK_USAGE     ",\"choices\":[],\"usage\":"
#define NGX_HTTP_LLM_CHUNK_DONE      "data: [DONE]\n\n"

#define NGX_HTTP_LLM_CACHE_BURST     65536   /* replay bytes queued at most */
#define NGX_HTTP_LLM_CACHE_BURSTS    16      /* per write event */
#define NGX_HTTP_LLM_CACHE_SLICE     8192    /* of JSON, copied as it is */

#define NGX_HTTP_LLM_REPLAY_ROLE     0
#define NGX_HTTP_LLM_REPLAY_CONTENT  1
#define NGX_HTTP_LLM_REPLAY_TOOLS    2
#define NGX_HTTP_LLM_REPLAY_FINISH   3
#define NGX_HTTP_LLM_REPLAY_USAGE    4
#define NGX_HTTP_LLM_REPLAY_DONE     5


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


static void ngx_http_llm_cache_writer(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_cache_send(ngx_http_llm_ctx_t *ctx);
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
static u_char *ngx_http_llm_cache_event_end(u_char *p, u_char *last);
static ngx_int_t ngx_http_llm_cache_memo_out(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_memo_t *m, u_char *id, time_t now);
static ngx_int_t ngx_http_llm_cache_sse(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e, u_char *id, time_t now);
static ngx_int_t ngx_http_llm_cache_produce(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_replay_t *rp, size_t limit);
static ngx_int_t ngx_http_llm_cache_chunk(ngx_http_llm_ctx_t *ctx,
    ngx_str_t *head, ngx_int_t index, const char *delta,
    u_char *text, size_t len, const char *tail, const char *finish);
static ngx_int_t ngx_http_llm_cache_out_string(ngx_http_llm_ctx_t *ctx,
    u_char *p, size_t len);


static ngx_queue_t  ngx_http_llm_cache_pins;

static ngx_http_llm_cache_memo_t  ngx_http_llm_cache_memos[
                                      NGX_HTTP_LLM_MEMO_SLOTS];


void
ngx_http_llm_cache_replay_init(void)
{
    ngx_queue_init(&ngx_http_llm_cache_pins);
}


void
ngx_http_llm_cache_replay_exit(void)
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
}


/*
 * A hit is written here, in the Redis reply callback or in the cache
 * phase, and the request is finalized once it is all sent.
 */

void
ngx_http_llm_cache_serve(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;
    u_char               id[sizeof(NGX_HTTP_LLM_MEMO_ID)];

    r = ctx->request;
    c = r->connection;

    /*
     * every answer gets its own id, as a backend would give it; of the
     * placeholder's length, which a kept replay patches
     */

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

    ctx->out.headers_sent = 1;

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

    for (i = 0; ctx->cache.replay; i++) {

        /* what the client could not take before, first */

        if ((ctx->out.busy || c->buffered)
            && ngx_http_llm_out_flush(ctx, 0) == NGX_ERROR)
        {
            return NGX_ERROR;
        }

        if (ctx->out.busy || c->buffered) {
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

        rc = ngx_http_llm_cache_produce(ctx, ctx->cache.replay,
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


void
ngx_http_llm_cache_replay_end(ngx_http_llm_ctx_t *ctx)
{
    if (ctx->cache.replay) {
        ngx_http_llm_cache_unpin(ctx->cache.replay->pin);
        ctx->cache.replay = NULL;
    }
}


/* bytes written for the client and not yet passed to nginx */

static size_t
ngx_http_llm_cache_queued(ngx_http_llm_ctx_t *ctx)
{
    size_t        size;
    ngx_chain_t  *cl;

    size = 0;

    for (cl = ctx->out.chain; cl; cl = cl->next) {
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
            && pin->key.len == ctx->cache.key.len
            && ngx_memcmp(pin->key.data, ctx->cache.key.data, pin->key.len)
               == 0
            && ngx_memcmp(pin->json, e->json, e->len) == 0)
        {
            goto found;
        }
    }

    pin = ngx_alloc(offsetof(ngx_http_llm_cache_pin_t, data)
                    + ctx->cache.key.len + e->len, ngx_cycle->log);
    if (pin == NULL) {
        return NULL;
    }

    ngx_memzero(pin, offsetof(ngx_http_llm_cache_pin_t, data));

    pin->key.data = pin->data;
    pin->key.len = ctx->cache.key.len;
    pin->json = ngx_cpymem(pin->data, ctx->cache.key.data, pin->key.len);
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
    u_char                        head[NGX_HTTP_LLM_JSON_HEAD_LEN];

    r = ctx->request;

    /* room is left for the comma */

    p = ngx_snprintf(head, sizeof(head) - 1,
                     NGX_HTTP_LLM_JSON_ID "%s" NGX_HTTP_LLM_JSON_CREATED "%T",
                     id, ngx_time());

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
    ctx->cache.replay = rp;

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
        || now < NGX_HTTP_LLM_MEMO_TIME || now > NGX_HTTP_LLM_MEMO_TIME_MAX)
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
    ngx_chain_t   *out, *out_tail, *chain, *cl;
    static u_char  head[] = NGX_HTTP_LLM_CHUNK_ID NGX_HTTP_LLM_MEMO_ID
                            NGX_HTTP_LLM_CHUNK_CREATED
                            NGX_HTTP_LLM_MEMO_CREATED;

    out = ctx->out.chain;
    out_tail = ctx->out.tail;
    usage = ctx->client_usage;

    ctx->out.chain = NULL;
    ctx->out.tail = NULL;
    ctx->client_usage = 1;

    /* an entry this small is replayed whole, at once */

    rc = ngx_http_llm_cache_sse(ctx, e, (u_char *) NGX_HTTP_LLM_MEMO_ID,
                                NGX_HTTP_LLM_MEMO_TIME);

    if (rc == NGX_OK) {
        rc = ngx_http_llm_cache_produce(ctx, ctx->cache.replay,
                                        NGX_MAX_SIZE_T_VALUE);
        rc = (rc == NGX_DONE) ? NGX_OK : NGX_ERROR;
    }

    ngx_http_llm_cache_replay_end(ctx);

    chain = ctx->out.chain;
    ctx->out.chain = out;
    ctx->out.tail = out_tail;
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
            cl->next = ctx->out.free;
            ctx->out.free = chain;
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

        if ((size_t) (end - p) == sizeof(NGX_HTTP_LLM_CHUNK_DONE) - 1
            && ngx_strncmp(p, NGX_HTTP_LLM_CHUNK_DONE, end - p) == 0)
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

        if (memmem(q, end - q, NGX_HTTP_LLM_CHUNK_USAGE,
                   sizeof(NGX_HTTP_LLM_CHUNK_USAGE) - 1)
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
    size_t   idpos, idlen, tpos;
    u_char   t[NGX_TIME_T_LEN];

    /* where the placeholder id and time are in every event but [DONE] */

    idpos = sizeof(NGX_HTTP_LLM_CHUNK_ID) - 1;
    idlen = sizeof(NGX_HTTP_LLM_MEMO_ID) - 1;
    tpos = idpos + idlen + sizeof(NGX_HTTP_LLM_CHUNK_CREATED) - 1;

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

        if (p[sizeof("data: ") - 1] == '[') {
            /* data: [DONE] */
            if (ngx_http_llm_out(ctx, p, end - p) != NGX_OK) {
                return NGX_ERROR;
            }

            p = end;
            continue;
        }

        q = p + tpos + NGX_HTTP_LLM_MEMO_TIME_LEN;

        if (ngx_http_llm_out(ctx, p, idpos) != NGX_OK
            || ngx_http_llm_out(ctx, id, idlen) != NGX_OK
            || ngx_http_llm_out(ctx, p + idpos + idlen, tpos - idpos - idlen)
               != NGX_OK
            || ngx_http_llm_out(ctx, t, NGX_HTTP_LLM_MEMO_TIME_LEN) != NGX_OK
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
    size_t                        len;
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
    ctx->cache.replay = rp;

    /* the head carries model and fingerprint: made once, reused */

    len = sizeof(NGX_HTTP_LLM_CHUNK_ID) - 1 + ngx_strlen(id)
          + sizeof(NGX_HTTP_LLM_CHUNK_CREATED) - 1 + NGX_TIME_T_LEN;

    rp->head.data = ngx_pnalloc(r->pool, len + pin->extra_len);
    if (rp->head.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_snprintf(rp->head.data, len,
                     NGX_HTTP_LLM_CHUNK_ID "%s" NGX_HTTP_LLM_CHUNK_CREATED "%T",
                     id, now);
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
                    || ngx_http_llm_out_lit(ctx, NGX_HTTP_LLM_CHUNK_USAGE)
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
            return ngx_http_llm_out_lit(ctx, NGX_HTTP_LLM_CHUNK_DONE)
                   == NGX_OK ? NGX_DONE : NGX_ERROR;
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
    u_char   buf[sizeof(NGX_HTTP_LLM_CHUNK_INDEX) - 1 + NGX_INT_T_LEN
                 + sizeof(NGX_HTTP_LLM_CHUNK_DELTA) - 1];

    p = ngx_sprintf(buf, NGX_HTTP_LLM_CHUNK_INDEX "%i" NGX_HTTP_LLM_CHUNK_DELTA,
                    index);

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
