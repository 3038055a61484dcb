
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Per-tenant quotas: one atomic script admits a request and reserves its
 * worst case; another replaces the reservation with real usage when the
 * request ends, however it ends.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_error.h"
#include "ngx_http_llm_keys.h"
#include "ngx_http_llm_metrics.h"
#include "ngx_http_llm_output.h"
#include "ngx_http_llm_quota.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_router.h"
#include "ngx_http_llm_usage.h"
#include "ngx_http_llm_util.h"


/*
 * The most requests one admission or settlement script call carries: it
 * bounds the argv built on the stack and the time Redis spends in one call
 */
#define NGX_HTTP_LLM_BATCH_MAX     128

/* admit.lua's keys, its ARGV before the requests, and ARGV per request */
#define NGX_HTTP_LLM_ADMIT_KEYS    4
#define NGX_HTTP_LLM_ADMIT_ARGS                                               \
    (NGX_HTTP_LLM_SCRIPT_HEAD + NGX_HTTP_LLM_ADMIT_KEYS + 7)
#define NGX_HTTP_LLM_ADMIT_FIELDS  4

/* settle.lua's keys; its records start after them, the TTL and n */
#define NGX_HTTP_LLM_SETTLE_KEYS   7
#define NGX_HTTP_LLM_SETTLE_ARGS                                              \
    (NGX_HTTP_LLM_SCRIPT_HEAD + NGX_HTTP_LLM_SETTLE_KEYS + 2)

/* settle.lua's ARGV per request */
#define NGX_HTTP_LLM_SETTLE_FIELDS  7

/* the spend keys' periods, UTC: yyyymmdd, and its head yyyymm */
#define NGX_HTTP_LLM_DAY_LEN        (sizeof("yyyymmdd") - 1)
#define NGX_HTTP_LLM_MONTH_LEN      (sizeof("yyyymm") - 1)

/*
 * An x-ratelimit-* header: room for the longest name with its NUL, and for
 * a value, a count or a reset such as "12345m59s", with its NUL
 */
#define NGX_HTTP_LLM_LIMIT_NAME     48
#define NGX_HTTP_LLM_LIMIT_VALUE    (NGX_INT64_LEN + 8)

/* settlements waiting for the end of the turn, at most */
#define NGX_HTTP_LLM_PENDING_MAX   100000

/* "%08xD-%P-%ui-%M" and the day, yyyymmdd */
#define NGX_HTTP_LLM_REQUEST_ID_LEN                                           \
    (sizeof("ffffffff---") - 1 + NGX_INT64_LEN + 2 * NGX_INT_T_LEN          \
     + NGX_HTTP_LLM_DAY_LEN)

/* transient settlement errors are retried after 250 ms, up to 10 s */
#define NGX_HTTP_LLM_RETRY_MIN     250
#define NGX_HTTP_LLM_RETRY_MAX     10000

/*
 * A worker that exits (reload, graceful stop) with settlements still for
 * Redis stays up to 10 s more to send them, looking every 250 ms
 */
#define NGX_HTTP_LLM_EXIT_GRACE    10000
#define NGX_HTTP_LLM_GRACE_TICK    250

/*
 * The sweeper: every minute, one worker of all gateways (the holder of a
 * Redis lock) releases the reservations whose request can no longer be
 * running.  A request's deadline is written at admission: its location's
 * llm_total_timeout, plus llm_cache_lock_timeout (a cache follower waits
 * that long first), plus a margin for the client's own pace.  Records of
 * older gateways carry no deadline and are given a day.
 */
#define NGX_HTTP_LLM_SWEEP_FIRST     1000
#define NGX_HTTP_LLM_SWEEP_INTERVAL  60000
#define NGX_HTTP_LLM_SWEEP_MARGIN    60000
#define NGX_HTTP_LLM_SWEEP_LEGACY    86400000
#define NGX_HTTP_LLM_SWEEP_COUNT     "100"

/* a script argument printed at p into argv[argc], argvlen[argc] */
#define ngx_http_llm_argv(...)                                                \
    argv[argc] = (char *) p;                                                  \
    p = ngx_sprintf(p, __VA_ARGS__);                                          \
    argvlen[argc] = p - (u_char *) argv[argc];                                \
    argc++


/* settlement commands Redis could not take yet, retried on reconnect */

typedef struct ngx_http_llm_pending_s  ngx_http_llm_pending_t;

struct ngx_http_llm_pending_s {
    ngx_http_llm_pending_t     *next;
    ngx_uint_t                  n;          /* settlements in it */
    int                         argc;
    const char                **argv;
    size_t                     *argvlen;
};


/* one request's settlement until the end of the event-loop turn */

typedef struct ngx_http_llm_record_s  ngx_http_llm_record_t;

struct ngx_http_llm_record_s {
    ngx_http_llm_record_t      *next;
    ngx_str_t                   tenant;
    ngx_str_t                   day;
    ngx_str_t                   month;
    ngx_str_t                   f[NGX_HTTP_LLM_SETTLE_FIELDS];
};


/* the sweeper's walk: a SCAN over tenants, an HSCAN step per call */

typedef struct {
    ngx_event_t                 event;
    u_char                      lock[32];
    size_t                      lock_len;
    u_char                      scan[NGX_INT64_LEN + 1];
    ngx_uint_t                  primary;    /* the one SCAN walks */
    u_char                      hscan[NGX_INT64_LEN + 1];
    ngx_str_t                  *keys;       /* this SCAN page, malloc()ed */
    ngx_uint_t                  nkeys;
    ngx_uint_t                  key;
    unsigned                    running:1;
} ngx_http_llm_sweep_t;


static void ngx_http_llm_quota_ready(void *data);
static ngx_uint_t ngx_http_llm_same_batch(ngx_http_llm_ctx_t *a,
    ngx_http_llm_ctx_t *b);
static void ngx_http_llm_admit_flush(ngx_event_t *ev);
static void ngx_http_llm_admit_reply(redisReply *reply, void *data);
static void ngx_http_llm_admit_result(ngx_http_llm_ctx_t *ctx,
    redisReply *reply);
static void ngx_http_llm_admit_headers(ngx_http_llm_ctx_t *ctx,
    redisReply *reply);
static void ngx_http_llm_admit_deny(ngx_http_llm_ctx_t *ctx,
    redisReply *reply);
static void ngx_http_llm_admit_resume(ngx_http_llm_ctx_t *ctx,
    ngx_int_t rc);
static ngx_int_t ngx_http_llm_quota_offline(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_error_t *err);
static void ngx_http_llm_too_large(ngx_http_llm_error_t *err);
static void ngx_http_llm_count_error(const char *script, const char *error);
static void ngx_http_llm_admit_done(ngx_http_llm_admit_batch_t *batch,
    redisReply *reply, ngx_uint_t lost);
static void ngx_http_llm_settle_reply(redisReply *reply, void *data);
static void ngx_http_llm_settle_flush(ngx_event_t *ev);
static void ngx_http_llm_settle_retry(ngx_event_t *ev);
static ngx_int_t ngx_http_llm_settle_try(ngx_http_llm_pending_t *pd);
static void ngx_http_llm_settle_send(ngx_http_llm_pending_t *pd);
static void ngx_http_llm_settle_queue(ngx_http_llm_pending_t *pd);
static void ngx_http_llm_settle_lost(ngx_http_llm_pending_t *pd,
    const char *why);
static void ngx_http_llm_settle_grace(ngx_event_t *ev);
static void ngx_http_llm_sweep_start(ngx_event_t *ev);
static void ngx_http_llm_sweep_locked(redisReply *reply, void *data);
static void ngx_http_llm_sweep_scan(void);
static void ngx_http_llm_sweep_scanned(redisReply *reply, void *data);
static void ngx_http_llm_sweep_next(void);
static void ngx_http_llm_sweep_swept(redisReply *reply, void *data);
static void ngx_http_llm_sweep_end(const char *why);
static ngx_uint_t ngx_http_llm_reply_int(redisReply *r, size_t i,
    long long *v);
static void ngx_http_llm_reset_value(u_char *buf, long long ms);
static void ngx_http_llm_limit_headers(ngx_http_request_t *r,
    const char *what, ngx_int_t limit, long long left, long long reset);


static ngx_uint_t               ngx_http_llm_request_seq;
static uint32_t                 ngx_http_llm_node_rand;
static ngx_queue_t              ngx_http_llm_admit_queue;
static ngx_event_t              ngx_http_llm_admit_event;
static ngx_http_llm_record_t   *ngx_http_llm_records;
static ngx_uint_t               ngx_http_llm_records_n;
static ngx_event_t              ngx_http_llm_settle_event;
static ngx_http_llm_pending_t  *ngx_http_llm_pending;
static ngx_http_llm_pending_t **ngx_http_llm_pending_last =
    &ngx_http_llm_pending;
static ngx_uint_t               ngx_http_llm_pending_n;
static ngx_event_t              ngx_http_llm_retry_event;
static ngx_msec_t               ngx_http_llm_retry_backoff;
static ngx_uint_t               ngx_http_llm_sent_n;   /* awaiting reply */
static ngx_event_t              ngx_http_llm_grace_event;
static ngx_msec_t               ngx_http_llm_grace_end;
static ngx_http_llm_sweep_t     ngx_http_llm_sweep;


void
ngx_http_llm_quota_init(void)
{
    /* request ids must not collide across gateway nodes sharing Redis */
    ngx_http_llm_node_rand = (uint32_t) ngx_random() ^ (uint32_t) ngx_time();

    ngx_queue_init(&ngx_http_llm_admit_queue);

    /* what waited for Redis goes to each new connection */
    ngx_http_llm_redis_on_ready(ngx_http_llm_quota_ready, NULL);

    ngx_http_llm_retry_event.handler = ngx_http_llm_settle_retry;
    ngx_http_llm_retry_event.data = &ngx_http_llm_timer_conn;
    ngx_http_llm_retry_event.cancelable = 1;
    ngx_http_llm_retry_backoff = NGX_HTTP_LLM_RETRY_MIN;

    ngx_http_llm_sweep.event.handler = ngx_http_llm_sweep_start;
    ngx_http_llm_sweep.event.data = &ngx_http_llm_timer_conn;
    ngx_http_llm_sweep.event.cancelable = 1;

    /* not cancelable: it is what keeps an exiting worker up */
    ngx_http_llm_grace_event.handler = ngx_http_llm_settle_grace;
    ngx_http_llm_grace_event.data = &ngx_http_llm_timer_conn;
}


static void
ngx_http_llm_quota_ready(void *data)
{
    ngx_http_llm_quota_flush();
}


static void
ngx_http_llm_too_large(ngx_http_llm_error_t *err)
{
    ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                           "invalid_request_error", "invalid_value",
                           "max_tokens", "The request could use more tokens "
                           "than the gateway can reserve; lower max_tokens.");
}


static void
ngx_http_llm_count_error(const char *script, const char *error)
{
    u_char  buf[128];

    *ngx_snprintf(buf, sizeof(buf) - 1,
                  "llm_redis_errors_total{script=\"%s\",error=\"%s\"}",
                  script, error) = '\0';

    ngx_http_llm_metrics_count((char *) buf, 1);
}


/*
 * NGX_OK: admitted (or nothing to enforce); NGX_AGAIN: the request waits
 * for the end of this event-loop turn, when the admissions of each tenant
 * go to Redis in one script call, and is resumed by the reply; NGX_ERROR:
 * err says why not.
 */

ngx_int_t
ngx_http_llm_quota_admit(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    u_char                  *p;
    time_t                   now;
    ngx_tm_t                 tm;
    ngx_uint_t               i, price_in, price_out;
    ngx_http_llm_model_t    *m;
    ngx_http_llm_backend_t  *b;

    /*
     * the worst case is priced at the dearest backend we may fail over
     * to, the fallback model's included
     */

    price_in = 0;
    price_out = 0;

    for (m = ctx->model; m; m = (m == ctx->model) ? m->fallback : NULL) {
        b = m->backends.elts;

        for (i = 0; i < m->backends.nelts; i++) {
            price_in = ngx_max(price_in, b[i].price_in);
            price_out = ngx_max(price_out, b[i].price_out);
        }
    }

    /* a reservation that cannot be represented is refused, not wrapped */

    if (ctx->prompt_estimate < 0 || ctx->max_tokens < 0
        || ctx->prompt_estimate > NGX_HTTP_LLM_AMOUNT_MAX
        || ctx->max_tokens > NGX_HTTP_LLM_AMOUNT_MAX - ctx->prompt_estimate)
    {
        ctx->quota.reserved_cost = -1;

    } else {
        ctx->quota.reserved_tokens = ctx->prompt_estimate + ctx->max_tokens;
        ctx->quota.reserved_cost = ngx_http_llm_cost_exact(ctx->prompt_estimate,
                                                     ctx->max_tokens,
                                                     price_in, price_out);
    }

    if (ctx->quota.reserved_cost < 0) {
        ctx->quota.reserved_tokens = 0;
        ctx->quota.reserved_cost = 0;

        ngx_http_llm_too_large(err);
        return NGX_ERROR;
    }

    if (ctx->quota.request_id.len == 0) {
        now = ngx_time();
        ngx_gmtime(now, &tm);

        p = ngx_pnalloc(ctx->request->pool, NGX_HTTP_LLM_REQUEST_ID_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ctx->quota.request_id.data = p;
        p = ngx_sprintf(p, "%08xD-%P-%ui-%M", ngx_http_llm_node_rand,
                        ngx_pid, ++ngx_http_llm_request_seq,
                        ngx_current_msec);
        ctx->quota.request_id.len = p - ctx->quota.request_id.data;

        ctx->quota.key_day.data = p;
        p = ngx_sprintf(p, "%4d%02d%02d", tm.ngx_tm_year, tm.ngx_tm_mon,
                        tm.ngx_tm_mday);
        ctx->quota.key_day.len = p - ctx->quota.key_day.data;

        ctx->quota.key_month.data = ctx->quota.key_day.data;
        ctx->quota.key_month.len = NGX_HTTP_LLM_MONTH_LEN;
    }

    /* the id and day also serve an unmetered request's usage record */

    if (ctx->redis_down || !ngx_http_llm_redis_ready(NGX_HTTP_LLM_REDIS_MAIN))
    {
        /* one Redis timeout per request at most */
        return ngx_http_llm_quota_offline(ctx, err);
    }

    ngx_queue_insert_tail(&ngx_http_llm_admit_queue, &ctx->quota.admit_link);
    ctx->quota.admitting = 1;

    /* a worker that admits also sweeps, from a second after its first */

    if (!ngx_http_llm_sweep.event.timer_set) {
        ngx_http_llm_sweep.event.log = ngx_cycle->log;
        ngx_add_timer(&ngx_http_llm_sweep.event, NGX_HTTP_LLM_SWEEP_FIRST);
    }

    if (!ngx_http_llm_admit_event.posted) {
        ngx_http_llm_admit_event.handler = ngx_http_llm_admit_flush;
        ngx_http_llm_admit_event.log = ngx_cycle->log;
        ngx_http_llm_admit_event.data = &ngx_http_llm_timer_conn;
        ngx_post_event(&ngx_http_llm_admit_event, &ngx_posted_events);
    }

    return NGX_AGAIN;
}


/* the request goes away: it must not hear of its admission any more */

void
ngx_http_llm_quota_cancel(ngx_http_llm_ctx_t *ctx)
{
    if (!ctx->quota.admitting) {
        return;
    }

    ctx->quota.admitting = 0;

    if (ctx->quota.admit_batch == NULL) {
        /* not sent yet: nothing was reserved */
        ngx_queue_remove(&ctx->quota.admit_link);
        return;
    }

    ctx->quota.admit_batch->ctx[ctx->quota.admit_slot] = NULL;
    ctx->quota.admit_batch = NULL;

    /*
     * the script may have reserved by now: settle anyway, it releases only
     * what an admission recorded
     */
    ctx->quota.admitted = 1;
}


static ngx_uint_t
ngx_http_llm_same_batch(ngx_http_llm_ctx_t *a, ngx_http_llm_ctx_t *b)
{
    ngx_http_llm_tenant_t  *x, *y;

    x = a->tenant;
    y = b->tenant;

    return x->id.len == y->id.len
           && ngx_strncmp(x->id.data, y->id.data, x->id.len) == 0
           && ngx_strncmp(a->quota.key_day.data, b->quota.key_day.data,
                          NGX_HTTP_LLM_DAY_LEN) == 0
           && x->rpm == y->rpm && x->tpm == y->tpm
           && x->budget_day == y->budget_day
           && x->budget_month == y->budget_month;
}


/* end of the event-loop turn: one script call per tenant and day */

static void
ngx_http_llm_admit_flush(ngx_event_t *ev)
{
    u_char                      *p;
    size_t                       size, argvlen[NGX_HTTP_LLM_ADMIT_ARGS
                                              + NGX_HTTP_LLM_ADMIT_FIELDS
                                                * NGX_HTTP_LLM_BATCH_MAX];
    ngx_uint_t                   n, i, argc;
    ngx_msec_t                   life;
    ngx_queue_t                 *q, *next;
    const char                  *argv[NGX_HTTP_LLM_ADMIT_ARGS
                                      + NGX_HTTP_LLM_ADMIT_FIELDS
                                        * NGX_HTTP_LLM_BATCH_MAX];
    ngx_http_llm_ctx_t          *first, *ctx;
    ngx_http_llm_tenant_t       *t;
    ngx_http_llm_admit_batch_t  *batch;

    while (!ngx_queue_empty(&ngx_http_llm_admit_queue)) {

        q = ngx_queue_head(&ngx_http_llm_admit_queue);
        first = ngx_queue_data(q, ngx_http_llm_ctx_t, quota.admit_link);
        t = first->tenant;

        size = sizeof(ngx_http_llm_admit_batch_t)
               + NGX_HTTP_LLM_BATCH_MAX * (sizeof(ngx_http_llm_ctx_t *)
                                           + NGX_HTTP_LLM_REQUEST_ID_LEN
                                           + 3 * NGX_INT64_LEN)
               + 6 * (t->id.len + 32) + 7 * NGX_INT64_LEN;

        batch = ngx_alloc(size, ngx_cycle->log);

        n = 0;

        for (q = ngx_queue_head(&ngx_http_llm_admit_queue);
             q != ngx_queue_sentinel(&ngx_http_llm_admit_queue)
             && n < NGX_HTTP_LLM_BATCH_MAX;
             q = next)
        {
            next = ngx_queue_next(q);
            ctx = ngx_queue_data(q, ngx_http_llm_ctx_t, quota.admit_link);

            if (ctx != first && !ngx_http_llm_same_batch(first, ctx)) {
                continue;
            }

            ngx_queue_remove(q);

            if (batch == NULL) {
                ngx_http_llm_admit_result(ctx, NULL);
                continue;
            }

            batch->ctx[n] = ctx;
            ctx->quota.admit_batch = batch;
            ctx->quota.admit_slot = n;
            n++;
        }

        if (batch == NULL) {
            continue;
        }

        batch->n = n;
        p = (u_char *) &batch->ctx[NGX_HTTP_LLM_BATCH_MAX];

        argc = NGX_HTTP_LLM_SCRIPT_HEAD;

        ngx_http_llm_argv(NGX_HTTP_LLM_KEY_WIN, &t->id);
        ngx_http_llm_argv(NGX_HTTP_LLM_KEY_SPEND_DAY, &t->id,
                          &first->quota.key_day);
        ngx_http_llm_argv(NGX_HTTP_LLM_KEY_SPEND_MONTH, &t->id,
                          &first->quota.key_month);
        ngx_http_llm_argv(NGX_HTTP_LLM_KEY_INFLIGHT, &t->id);

        ngx_http_llm_argv("%i", t->rpm);
        ngx_http_llm_argv("%i", t->tpm);
        ngx_http_llm_argv("%L", t->budget_day);
        ngx_http_llm_argv("%L", t->budget_month);
        ngx_http_llm_argv("172800");      /* a day's spend, kept 2 days */
        ngx_http_llm_argv("5356800");     /* a month's, 62 days */
        ngx_http_llm_argv("%ui", n);

        for (i = 0; i < n; i++) {
            ctx = batch->ctx[i];
            life = ctx->conf->total_timeout + ctx->conf->cache_lock_timeout
                   + NGX_HTTP_LLM_SWEEP_MARGIN;

            ngx_http_llm_argv("%V", &ctx->quota.request_id);
            ngx_http_llm_argv("%L", ctx->quota.reserved_tokens);
            ngx_http_llm_argv("%L", ctx->quota.reserved_cost);
            ngx_http_llm_argv("%M", life);
        }

        if (ngx_http_llm_redis_script(NGX_HTTP_LLM_REDIS_MAIN,
                                      NGX_HTTP_LLM_SCRIPT_ADMIT, (int) argc,
                                      argv, argvlen, ngx_http_llm_admit_reply,
                                      batch)
            == NULL)
        {
            /* never sent: nothing can have been recorded */
            ngx_http_llm_admit_done(batch, NULL, 0);
        }
    }
}


static void
ngx_http_llm_admit_reply(redisReply *reply, void *data)
{
    ngx_uint_t   transient;
    const char  *error;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        error = ngx_http_llm_redis_error(reply, &transient);
        ngx_http_llm_count_error("admit", error);

        if (reply && ngx_strcmp(error, "READONLY") == 0) {
            /* a failed-over master: the address may lead to the new one */
            ngx_http_llm_redis_reset(NGX_HTTP_LLM_REDIS_MAIN,
                                     "answers READONLY");
        }
    }

    /* a lost reply: the script may have run and reserved */
    ngx_http_llm_admit_done(data, reply, reply == NULL);
}


static void
ngx_http_llm_admit_done(ngx_http_llm_admit_batch_t *batch, redisReply *reply,
    ngx_uint_t lost)
{
    ngx_uint_t           i;
    redisReply          *one;
    ngx_http_llm_ctx_t  *ctx;

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "llm: admission script failed: %s", reply->str);
    }

    /* each request may finalize; cancelled ones left NULL slots */

    for (i = 0; i < batch->n; i++) {
        ctx = batch->ctx[i];

        if (ctx == NULL) {
            continue;
        }

        ctx->quota.admit_batch = NULL;
        ctx->quota.admitting = 0;

        one = (reply && reply->type == REDIS_REPLY_ARRAY
               && i < reply->elements)
              ? reply->element[i] : NULL;

        if (lost) {
            ctx->quota.admit_unknown = 1;
        }

        ngx_http_llm_admit_result(ctx, one);
    }

    ngx_free(batch);
}


/* one request's answer from the script, or NULL when Redis failed */

static void
ngx_http_llm_admit_result(ngx_http_llm_ctx_t *ctx, redisReply *reply)
{
    long long  code, day, month, left;
    ngx_int_t  rc;

    ctx->quota.admitting = 0;

    if (reply == NULL
        || reply->type != REDIS_REPLY_ARRAY
        || !ngx_http_llm_reply_int(reply, 0, &code))
    {
        rc = ngx_http_llm_quota_offline(ctx, &ctx->error);
        ngx_http_llm_admit_resume(ctx, rc);
        return;
    }

    if (code == 3) {
        /* the script's own check of what admit_flush() sent */
        ngx_http_llm_too_large(&ctx->error);
        ngx_http_llm_admit_resume(ctx, NGX_ERROR);
        return;
    }

    if (code != 0) {
        ngx_http_llm_admit_deny(ctx, reply);
        ngx_http_llm_admit_resume(ctx, NGX_ERROR);
        return;
    }

    ctx->quota.admitted = 1;

    ngx_http_llm_admit_headers(ctx, reply);

    if (ngx_http_llm_reply_int(reply, 6, &day)
        && ngx_http_llm_reply_int(reply, 7, &month))
    {
        ngx_http_llm_router_spend(ctx->tenant, day, month);
        ctx->quota.day_spent = day;
        ctx->quota.month_spent = month;
    }

    if (!ngx_http_llm_reply_int(reply, 2, &left)) {
        left = -1;
    }

    ctx->quota.rpm_left = left;

    if (!ngx_http_llm_reply_int(reply, 4, &left)) {
        left = -1;
    }

    ctx->quota.tpm_left = left;

    ngx_http_llm_admit_resume(ctx, NGX_OK);
}


/*
 * The admission's end: the request goes on, or, past NGX_OK, ends with
 * what ctx->error says; ngx_http_llm_run() does either
 */

static void
ngx_http_llm_admit_resume(ngx_http_llm_ctx_t *ctx, ngx_int_t rc)
{
    ngx_connection_t  *c;

    if (rc != NGX_OK) {
        ctx->phase = NGX_HTTP_LLM_PHASE_FAIL;
        ngx_http_llm_run(ctx);
        return;
    }

    c = ctx->request->connection;

    ngx_http_llm_run(ctx);

    /* we are in a Redis callback: nginx will not do this for us */
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_llm_quota_offline(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    ctx->redis_down = 1;

    if (ctx->conf->fail_open) {
        ngx_log_error(NGX_LOG_WARN, ctx->request->connection->log, 0,
                      "llm: redis unavailable, tenant \"%V\" served "
                      "without quota enforcement", &ctx->tenant->id);
        ctx->quota.unenforced = 1;
        return NGX_OK;
    }

    ngx_http_llm_set_error(err, NGX_HTTP_SERVICE_UNAVAILABLE, "server_error",
                           "service_unavailable", NULL,
                           "The gateway cannot check quotas right now, "
                           "try again later.");
    return NGX_ERROR;
}


/* OpenAI's x-ratelimit-* headers, for the limits the tenant has */

static void
ngx_http_llm_admit_headers(ngx_http_llm_ctx_t *ctx, redisReply *reply)
{
    long long  left, reset;

    if (ctx->tenant->rpm > 0
        && ngx_http_llm_reply_int(reply, 2, &left)
        && ngx_http_llm_reply_int(reply, 3, &reset))
    {
        ngx_http_llm_limit_headers(ctx->request, "requests",
                                   ctx->tenant->rpm, left, reset);
    }

    if (ctx->tenant->tpm > 0
        && ngx_http_llm_reply_int(reply, 4, &left)
        && ngx_http_llm_reply_int(reply, 5, &reset))
    {
        ngx_http_llm_limit_headers(ctx->request, "tokens",
                                   ctx->tenant->tpm, left, reset);
    }
}


static void
ngx_http_llm_limit_headers(ngx_http_request_t *r, const char *what,
    ngx_int_t limit, long long left, long long reset)
{
    u_char  *n, *v;

    /* three header names, then three values, all NUL-terminated */

    n = ngx_pnalloc(r->pool, 3 * NGX_HTTP_LLM_LIMIT_NAME
                             + 3 * NGX_HTTP_LLM_LIMIT_VALUE);
    if (n == NULL) {
        return;
    }

    v = n + 3 * NGX_HTTP_LLM_LIMIT_NAME;

    *ngx_sprintf(n, "x-ratelimit-limit-%s", what) = '\0';
    *ngx_sprintf(n + NGX_HTTP_LLM_LIMIT_NAME, "x-ratelimit-remaining-%s",
                 what) = '\0';
    *ngx_sprintf(n + 2 * NGX_HTTP_LLM_LIMIT_NAME, "x-ratelimit-reset-%s",
                 what) = '\0';

    *ngx_sprintf(v, "%i", limit) = '\0';
    *ngx_sprintf(v + NGX_HTTP_LLM_LIMIT_VALUE, "%L", left) = '\0';
    ngx_http_llm_reset_value(v + 2 * NGX_HTTP_LLM_LIMIT_VALUE, reset);

    (void) ngx_http_llm_add_header(r, (char *) n, (char *) v);
    (void) ngx_http_llm_add_header(r, (char *) n + NGX_HTTP_LLM_LIMIT_NAME,
                                   (char *) v + NGX_HTTP_LLM_LIMIT_VALUE);
    (void) ngx_http_llm_add_header(r,
                                   (char *) n + 2 * NGX_HTTP_LLM_LIMIT_NAME,
                                   (char *) v + 2 * NGX_HTTP_LLM_LIMIT_VALUE);
}


/* a refusal: why in ctx->error, and when to try again in Retry-After */

static void
ngx_http_llm_admit_deny(ngx_http_llm_ctx_t *ctx, redisReply *reply)
{
    u_char                *p;
    long long              code, retry;
    ngx_str_t              what;
    ngx_http_request_t    *r;
    ngx_http_llm_error_t  *err;

    r = ctx->request;
    err = &ctx->error;

    (void) ngx_http_llm_reply_int(reply, 0, &code);

    what.len = 0;
    what.data = NULL;

    if (reply->elements > 1 && reply->element[1]->type == REDIS_REPLY_STRING)
    {
        what.data = (u_char *) reply->element[1]->str;
        what.len = reply->element[1]->len;
    }

    if (!ngx_http_llm_reply_int(reply, 2, &retry) || retry < 0) {
        retry = 0;
    }

    if (code == 2) {
        /* a budget refills at midnight or on the 1st, UTC */
        time_t    now, next;
        ngx_tm_t  tm;

        now = ngx_time();
        ngx_gmtime(now, &tm);

        next = now - (now % 86400) + 86400;

        if (what.len == 5) {
            /* the month: walk days forward to the 1st */
            while (tm.ngx_tm_mday != 1 || next <= now) {
                ngx_gmtime(next, &tm);

                if (tm.ngx_tm_mday == 1) {
                    break;
                }

                next += 86400;
            }
        }

        retry = (long long) (next - now) * 1000;

        ngx_http_llm_set_error(err, NGX_HTTP_TOO_MANY_REQUESTS,
                               "insufficient_quota", "insufficient_quota",
                               NULL, "You exceeded your %s budget; it is "
                               "renewed in %L seconds.",
                               what.len == 5 ? "monthly" : "daily",
                               retry / 1000);

    } else if (what.len == sizeof("tpm_request") - 1) {
        ngx_http_llm_set_error(err, NGX_HTTP_TOO_MANY_REQUESTS,
                               "tokens", "rate_limit_exceeded", NULL,
                               "Request too large: it may need %L tokens, "
                               "the limit is %i tokens per minute.",
                               ctx->quota.reserved_tokens, ctx->tenant->tpm);
        retry = 60000;

    } else {
        ngx_http_llm_set_error(err, NGX_HTTP_TOO_MANY_REQUESTS,
                               what.len == 3 && what.data[0] == 't'
                               ? "tokens" : "requests",
                               "rate_limit_exceeded", NULL,
                               "Rate limit reached: %s per minute. Please "
                               "try again in %L.%03Ls.",
                               what.len == 3 && what.data[0] == 't'
                               ? "tokens" : "requests",
                               retry / 1000, retry % 1000);
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 1);
    if (p != NULL) {
        *ngx_sprintf(p, "%L", (retry + 999) / 1000) = '\0';
        (void) ngx_http_llm_add_header(r, "Retry-After", (char *) p);
    }
}


/*
 * Called from the request's cleanup, whatever the ending: the request is
 * going away, so the settlement is copied out now.  Settlements of one
 * event-loop turn go to Redis together, one script call per tenant.
 */

void
ngx_http_llm_quota_settle(ngx_http_llm_ctx_t *ctx)
{
    u_char                  *p, *last;
    size_t                   size;
    int64_t                  prompt, completion, cost;
    ngx_str_t                f[NGX_HTTP_LLM_SETTLE_FIELDS], *t, empty;
    ngx_uint_t               i, hit;
    ngx_http_llm_record_t   *rec;
    ngx_http_llm_backend_t  *b;
    u_char                   buf[1024];

    /*
     * a lost admission reply is settled even when the client got a 503:
     * the script may have reserved
     */

    if (!ctx->quota.admitted
        && !ctx->quota.unenforced
        && !ctx->quota.admit_unknown)
    {
        return;
    }

    hit = (ctx->cache.status == NGX_HTTP_LLM_CACHE_HIT);
    ngx_str_null(&empty);

    b = hit ? NULL : ctx->backend;

    ngx_http_llm_usage(ctx, &prompt, &completion, &cost);

    if (ctx->quota.admitted && cost > ctx->quota.reserved_cost) {
        ngx_log_error(NGX_LOG_WARN, ctx->request->connection->log, 0,
                      "llm: request cost %L micro-dollars over its "
                      "reservation of %L", cost, ctx->quota.reserved_cost);
    }

    ctx->cost = cost;

    p = buf;
    last = buf + sizeof(buf);

#define ngx_http_llm_field(i, ...)                                            \
    f[i].data = p;                                                            \
    p = ngx_slprintf(p, last, __VA_ARGS__);                                   \
    f[i].len = p - f[i].data

    ngx_http_llm_field(0, "%V", &ctx->quota.request_id);
    ngx_http_llm_field(1, "%L", hit ? 0 : prompt + completion);
    ngx_http_llm_field(2, "%L", cost);
    ngx_http_llm_field(3, "%V|%s%V", &ctx->model->name,
                       hit ? "cache" : "",
                       b ? &b->name : hit ? &empty : &ctx->model->name);
    ngx_http_llm_field(4, "%L", prompt);
    ngx_http_llm_field(5, "%L", completion);
    ngx_http_llm_field(6, "%s%s", ctx->quota.admitted ? "m"
                                  : ctx->quota.admit_unknown ? "k" : "u",
                       hit ? "c" : "");

#undef ngx_http_llm_field

    t = &ctx->tenant->id;

    size = sizeof(ngx_http_llm_record_t) + t->len + ctx->quota.key_day.len
           + ctx->quota.key_month.len + (p - buf);

    if (p == last || ngx_http_llm_records_n >= NGX_HTTP_LLM_PENDING_MAX) {
        ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log, 0,
                      "llm: settlement of \"%V\" dropped: %L tokens, "
                      "%L micro-dollars", &ctx->quota.request_id,
                      prompt + completion, cost);
        ngx_http_llm_metrics_count(
            "llm_settlements_dropped_total{reason=\"queue_full\"}", 1);
        return;
    }

    rec = ngx_alloc(size, ngx_cycle->log);
    if (rec == NULL) {
        return;
    }

    p = (u_char *) (rec + 1);

    rec->tenant.data = p;
    rec->tenant.len = t->len;
    p = ngx_cpymem(p, t->data, t->len);

    rec->day.data = p;
    rec->day.len = ctx->quota.key_day.len;
    p = ngx_cpymem(p, ctx->quota.key_day.data, ctx->quota.key_day.len);

    rec->month.data = p;
    rec->month.len = ctx->quota.key_month.len;
    p = ngx_cpymem(p, ctx->quota.key_month.data, ctx->quota.key_month.len);

    for (i = 0; i < NGX_HTTP_LLM_SETTLE_FIELDS; i++) {
        rec->f[i].data = p;
        rec->f[i].len = f[i].len;
        p = ngx_cpymem(p, f[i].data, f[i].len);
    }

    rec->next = ngx_http_llm_records;
    ngx_http_llm_records = rec;
    ngx_http_llm_records_n++;

    if (!ngx_http_llm_settle_event.posted) {
        ngx_http_llm_settle_event.handler = ngx_http_llm_settle_flush;
        ngx_http_llm_settle_event.log = ngx_cycle->log;
        ngx_http_llm_settle_event.data = &ngx_http_llm_timer_conn;
        ngx_post_event(&ngx_http_llm_settle_event, &ngx_posted_events);
    }
}


/*
 * End of the event-loop turn: one command per tenant and day, built into
 * one block that lives until Redis confirms it.  The script counts each
 * request once, so sending a command again after a lost reply is safe.
 */

static void
ngx_http_llm_settle_flush(ngx_event_t *ev)
{
    u_char                  *p;
    size_t                   size, *argvlen;
    ngx_uint_t               i, n, argc;
    const char             **argv;
    ngx_http_llm_record_t   *rec, *first, **rp, *group;
    ngx_http_llm_pending_t  *pd;

    while (ngx_http_llm_records) {

        /* take the first record and more with the same keys, to a batch */

        first = ngx_http_llm_records;
        ngx_http_llm_records = first->next;
        first->next = NULL;
        group = first;
        n = 1;

        for (rp = &ngx_http_llm_records;
             *rp && n < NGX_HTTP_LLM_BATCH_MAX;
             /* void */)
        {
            rec = *rp;

            if (rec->tenant.len == first->tenant.len
                && ngx_strncmp(rec->tenant.data, first->tenant.data,
                               rec->tenant.len) == 0
                && ngx_strncmp(rec->day.data, first->day.data,
                               NGX_HTTP_LLM_DAY_LEN) == 0)
            {
                *rp = rec->next;
                rec->next = group;
                group = rec;
                n++;
                continue;
            }

            rp = &rec->next;
        }

        ngx_http_llm_records_n -= n;

        argc = NGX_HTTP_LLM_SETTLE_ARGS + NGX_HTTP_LLM_SETTLE_FIELDS * n;
        size = sizeof(ngx_http_llm_pending_t)
               + argc * (sizeof(char *) + sizeof(size_t))
               + NGX_HTTP_LLM_KEY_WIN_LEN + NGX_HTTP_LLM_KEY_SPEND_DAY_LEN
               + NGX_HTTP_LLM_KEY_SPEND_MONTH_LEN + NGX_HTTP_LLM_KEY_USAGE_LEN
               + NGX_HTTP_LLM_KEY_SETTLED_LEN + NGX_HTTP_LLM_KEY_INFLIGHT_LEN
               + NGX_HTTP_LLM_KEY_SWEPT_LEN
               + NGX_HTTP_LLM_SETTLE_KEYS
                 * (first->tenant.len + NGX_HTTP_LLM_DAY_LEN)
               + 2 * NGX_INT_T_LEN;

        for (rec = group; rec; rec = rec->next) {
            for (i = 0; i < NGX_HTTP_LLM_SETTLE_FIELDS; i++) {
                size += rec->f[i].len;
            }
        }

        pd = ngx_alloc(size, ngx_cycle->log);

        if (pd != NULL) {
            pd->next = NULL;
            pd->n = n;
            pd->argc = (int) argc;
            pd->argv = (const char **) (pd + 1);
            pd->argvlen = (size_t *) (pd->argv + argc);
            p = (u_char *) (pd->argvlen + argc);

            argv = pd->argv;
            argvlen = pd->argvlen;
            argc = NGX_HTTP_LLM_SCRIPT_HEAD;

            ngx_http_llm_argv(NGX_HTTP_LLM_KEY_WIN, &first->tenant);
            ngx_http_llm_argv(NGX_HTTP_LLM_KEY_SPEND_DAY, &first->tenant,
                              &first->day);
            ngx_http_llm_argv(NGX_HTTP_LLM_KEY_SPEND_MONTH, &first->tenant,
                              &first->month);
            ngx_http_llm_argv(NGX_HTTP_LLM_KEY_USAGE, &first->tenant,
                              &first->day);
            ngx_http_llm_argv(NGX_HTTP_LLM_KEY_SETTLED, &first->tenant,
                              &first->day);
            ngx_http_llm_argv(NGX_HTTP_LLM_KEY_INFLIGHT, &first->tenant);
            ngx_http_llm_argv(NGX_HTTP_LLM_KEY_SWEPT, &first->tenant,
                              &first->day);
            ngx_http_llm_argv("7776000");    /* usage records: 90 days */
            ngx_http_llm_argv("%ui", n);

            for (rec = group; rec; rec = rec->next) {
                for (i = 0; i < NGX_HTTP_LLM_SETTLE_FIELDS; i++) {
                    ngx_http_llm_argv("%V", &rec->f[i]);
                }
            }

            ngx_http_llm_settle_send(pd);

        } else {
            for (rec = group; rec; rec = rec->next) {
                ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                              "llm: settlement lost (no memory): tenant "
                              "%V, %V, %V tokens, %V micro-dollars",
                              &rec->tenant, &rec->f[0], &rec->f[1],
                              &rec->f[2]);
            }

            ngx_http_llm_metrics_count(
                "llm_settlements_dropped_total{reason=\"no_memory\"}",
                (int64_t) n);
        }

        while (group) {
            rec = group->next;
            ngx_free(group);
            group = rec;
        }
    }
}


/*
 * Settlements wait for Redis in one queue per worker, oldest first, of at
 * most llm_settle_queue settlements: past that, the oldest are dropped
 */

static void
ngx_http_llm_settle_queue(ngx_http_llm_pending_t *pd)
{
    ngx_http_llm_pending_t    *old;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_llm_module);

    pd->next = NULL;
    *ngx_http_llm_pending_last = pd;
    ngx_http_llm_pending_last = &pd->next;
    ngx_http_llm_pending_n += pd->n;

    if (!ngx_http_llm_grace_event.timer_set) {
        ngx_http_llm_grace_event.log = ngx_cycle->log;
        ngx_add_timer(&ngx_http_llm_grace_event, NGX_HTTP_LLM_GRACE_TICK);
    }

    while (ngx_http_llm_pending_n > lmcf->settle_queue
           && ngx_http_llm_pending != pd)
    {
        old = ngx_http_llm_pending;
        ngx_http_llm_pending = old->next;
        ngx_http_llm_pending_n -= old->n;

        ngx_http_llm_settle_lost(old, "the queue for Redis is full");
        ngx_http_llm_metrics_count(
            "llm_settlements_dropped_total{reason=\"queue_full\"}",
            (int64_t) old->n);
        ngx_free(old);
    }
}


/* says what a dropped command carried, one line per settlement */

static void
ngx_http_llm_settle_lost(ngx_http_llm_pending_t *pd, const char *why)
{
    ngx_uint_t  i;

    for (i = NGX_HTTP_LLM_SETTLE_ARGS; i + 2 < (ngx_uint_t) pd->argc;
         i += NGX_HTTP_LLM_SETTLE_FIELDS)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "llm: settlement lost (%s): %*s, %*s, %*s tokens, "
                      "%*s micro-dollars", why,
                      pd->argvlen[3], pd->argv[3],
                      pd->argvlen[i], pd->argv[i],
                      pd->argvlen[i + 1], pd->argv[i + 1],
                      pd->argvlen[i + 2], pd->argv[i + 2]);
    }
}


/*
 * Commands sent and awaiting their reply are bounded too, by
 * llm_settle_queue settlements: past that, the next wait in the queue
 */

static ngx_int_t
ngx_http_llm_settle_try(ngx_http_llm_pending_t *pd)
{
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_llm_module);

    if (ngx_http_llm_sent_n
        && ngx_http_llm_sent_n + pd->n > lmcf->settle_queue)
    {
        return NGX_DECLINED;
    }

    if (ngx_http_llm_redis_script(NGX_HTTP_LLM_REDIS_MAIN,
                                  NGX_HTTP_LLM_SCRIPT_SETTLE, pd->argc,
                                  pd->argv, pd->argvlen,
                                  ngx_http_llm_settle_reply, pd)
        == NULL)
    {
        return NGX_DECLINED;
    }

    ngx_http_llm_sent_n += pd->n;

    return NGX_OK;
}


static void
ngx_http_llm_settle_send(ngx_http_llm_pending_t *pd)
{
    if (ngx_http_llm_settle_try(pd) != NGX_OK) {
        ngx_http_llm_settle_queue(pd);
    }
}


static void
ngx_http_llm_settle_reply(redisReply *reply, void *data)
{
    ngx_http_llm_pending_t *pd = data;

    size_t        i;
    ngx_uint_t    transient;
    const char   *error;
    redisReply   *r;

    ngx_http_llm_sent_n -= pd->n;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        error = ngx_http_llm_redis_error(reply, &transient);
        ngx_http_llm_count_error("settle", error);

        if (transient) {
            if (reply) {
                ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                              "llm: settlement of %ui requests of %*s "
                              "deferred: %s", pd->n, pd->argvlen[3],
                              pd->argv[3], reply->str);
            }

            if (ngx_strcmp(error, "READONLY") == 0) {
                ngx_http_llm_redis_reset(NGX_HTTP_LLM_REDIS_MAIN,
                                         "answers READONLY");
            }

            /* again on this connection after a pause, or on the next */

            ngx_http_llm_metrics_count("llm_settlements_retried_total", 1);
            ngx_http_llm_settle_queue(pd);

            if (ngx_http_llm_redis_ready(NGX_HTTP_LLM_REDIS_MAIN)
                && !ngx_http_llm_retry_event.timer_set)
            {
                ngx_http_llm_retry_event.log = ngx_cycle->log;
                ngx_add_timer(&ngx_http_llm_retry_event,
                              ngx_http_llm_retry_backoff);
                ngx_http_llm_retry_backoff =
                    ngx_min(ngx_http_llm_retry_backoff * 2,
                            NGX_HTTP_LLM_RETRY_MAX);
            }

            return;
        }

        /* sending it again would fail again: said once, with the count */

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "llm: settlement of %ui requests of %*s lost: %s",
                      pd->n, pd->argvlen[3], pd->argv[3], reply->str);
        ngx_http_llm_settle_lost(pd, "redis refused the script");
        ngx_http_llm_metrics_count(
            "llm_settlements_dropped_total{reason=\"error\"}",
            (int64_t) pd->n);
        ngx_free(pd);
        return;
    }

    ngx_http_llm_retry_backoff = NGX_HTTP_LLM_RETRY_MIN;

    /* {settled, malformed, ids...}: records the script could not read */

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2
        && reply->element[1]->type == REDIS_REPLY_INTEGER)
    {
        ngx_http_llm_metrics_count(
            "llm_inflight_malformed_total{script=\"settle\"}",
            reply->element[1]->integer);

        for (i = 2; i < reply->elements; i++) {
            r = reply->element[i];

            if (r->type == REDIS_REPLY_STRING) {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "llm: in-flight record \"%*s\" of %*s could "
                              "not be read; its reservation stays in "
                              "\"reserved\"", r->len, r->str,
                              pd->argvlen[3], pd->argv[3]);
            }
        }
    }

    ngx_free(pd);

    /* what waited for room among the commands in flight */

    if (ngx_http_llm_pending
        && ngx_http_llm_redis_ready(NGX_HTTP_LLM_REDIS_MAIN)
        && !ngx_http_llm_retry_event.timer_set)
    {
        ngx_http_llm_quota_flush();
    }
}


/*
 * Runs while settlements wait for Redis; in an exiting worker, for at
 * most NGX_HTTP_LLM_EXIT_GRACE, sending them as soon as Redis is back.
 * Past that, ngx_http_llm_quota_exit() says what is lost.
 */

static void
ngx_http_llm_settle_grace(ngx_event_t *ev)
{
    if (ngx_http_llm_pending == NULL && ngx_http_llm_sent_n == 0
        && ngx_http_llm_records == NULL)
    {
        return;
    }

    if (ngx_exiting) {
        if (ngx_http_llm_grace_end == 0) {
            ngx_http_llm_grace_end = ngx_current_msec
                                     + NGX_HTTP_LLM_EXIT_GRACE;

            ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                          "llm: exiting with %ui settlements for redis, "
                          "waiting up to %Mms",
                          ngx_http_llm_pending_n + ngx_http_llm_sent_n,
                          (ngx_msec_t) NGX_HTTP_LLM_EXIT_GRACE);
        }

        if ((ngx_msec_int_t) (ngx_current_msec - ngx_http_llm_grace_end)
            >= 0)
        {
            return;
        }

        if (ngx_http_llm_pending
            && ngx_http_llm_redis_ready(NGX_HTTP_LLM_REDIS_MAIN)
            && ngx_http_llm_sent_n == 0)
        {
            ngx_http_llm_quota_flush();
        }
    }

    ngx_add_timer(ev, NGX_HTTP_LLM_GRACE_TICK);
}


static void
ngx_http_llm_settle_retry(ngx_event_t *ev)
{
    if (ngx_http_llm_redis_ready(NGX_HTTP_LLM_REDIS_MAIN)) {
        ngx_http_llm_quota_flush();
    }
}


/*
 * Redis is back, took a pause, or answered: send what waited, oldest
 * first, while there is room among the commands in flight
 */

void
ngx_http_llm_quota_flush(void)
{
    ngx_http_llm_pending_t  *pd;

    while (ngx_http_llm_pending) {
        pd = ngx_http_llm_pending;

        if (ngx_http_llm_settle_try(pd) != NGX_OK) {
            return;
        }

        ngx_http_llm_pending = pd->next;
        ngx_http_llm_pending_n -= pd->n;

        if (ngx_http_llm_pending == NULL) {
            ngx_http_llm_pending_last = &ngx_http_llm_pending;
        }
    }
}


/* the worker is going: say what could not be recorded */

void
ngx_http_llm_quota_exit(void)
{
    ngx_uint_t               n;
    ngx_http_llm_record_t   *rec, *rnext;
    ngx_http_llm_pending_t  *pd, *next;

    if (ngx_http_llm_settle_event.posted) {
        ngx_delete_posted_event(&ngx_http_llm_settle_event);
    }

    if (ngx_http_llm_admit_event.posted) {
        ngx_delete_posted_event(&ngx_http_llm_admit_event);
    }

    if (ngx_http_llm_retry_event.timer_set) {
        ngx_del_timer(&ngx_http_llm_retry_event);
    }

    if (ngx_http_llm_sweep.event.timer_set) {
        ngx_del_timer(&ngx_http_llm_sweep.event);
    }

    if (ngx_http_llm_grace_event.timer_set) {
        ngx_del_timer(&ngx_http_llm_grace_event);
    }

    ngx_http_llm_sweep_end(NULL);

    n = 0;

    for (rec = ngx_http_llm_records; rec; rec = rnext) {
        rnext = rec->next;

        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "llm: exiting with an unrecorded settlement: "
                      "tenant %V, %V, %V tokens, %V micro-dollars",
                      &rec->tenant, &rec->f[0], &rec->f[1], &rec->f[2]);
        ngx_free(rec);
        n++;
    }

    ngx_http_llm_records = NULL;
    ngx_http_llm_records_n = 0;

    for (pd = ngx_http_llm_pending; pd; pd = next) {
        next = pd->next;

        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "llm: exiting with %ui unrecorded settlements",
                      pd->n);
        ngx_http_llm_settle_lost(pd, "exiting");
        n += pd->n;
        ngx_free(pd);
    }

    ngx_http_llm_metrics_count(
        "llm_settlements_dropped_total{reason=\"exit\"}", (int64_t) n);

    ngx_http_llm_pending = NULL;
    ngx_http_llm_pending_last = &ngx_http_llm_pending;
    ngx_http_llm_pending_n = 0;
}


/*
 * The sweeper, a chain of small commands, each sent from the reply of the
 * one before: the lock, a SCAN page of tenants' in-flight hashes, then
 * sweep.lua over each of them, one HSCAN step per call
 */

static void
ngx_http_llm_sweep_start(ngx_event_t *ev)
{
    size_t       argvlen[7];
    const char  *argv[7];

    /* a worker on its way out leaves the sweeping to the others */

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_add_timer(&ngx_http_llm_sweep.event, NGX_HTTP_LLM_SWEEP_INTERVAL);

    if (ngx_http_llm_sweep.running
        || !ngx_http_llm_redis_ready(NGX_HTTP_LLM_REDIS_MAIN))
    {
        return;
    }

    ngx_http_llm_sweep.lock_len =
        ngx_sprintf(ngx_http_llm_sweep.lock, "%08xD-%P",
                    ngx_http_llm_node_rand, ngx_pid)
        - ngx_http_llm_sweep.lock;

    ngx_http_llm_arg_lit(argv, argvlen, 0, "SET");
    ngx_http_llm_arg_lit(argv, argvlen, 1, NGX_HTTP_LLM_KEY_SWEEP_LOCK);
    argv[2] = (char *) ngx_http_llm_sweep.lock;
    argvlen[2] = ngx_http_llm_sweep.lock_len;
    ngx_http_llm_arg_lit(argv, argvlen, 3, "NX");
    ngx_http_llm_arg_lit(argv, argvlen, 4, "PX");
    /* a little under the interval */
    ngx_http_llm_arg_lit(argv, argvlen, 5, "55000");

    if (ngx_http_llm_redis_command(NGX_HTTP_LLM_REDIS_MAIN, 6, argv, argvlen,
                                   ngx_http_llm_sweep_locked, NULL)
        != NULL)
    {
        ngx_http_llm_sweep.running = 1;
    }
}


static void
ngx_http_llm_sweep_locked(redisReply *reply, void *data)
{
    if (reply == NULL || reply->type != REDIS_REPLY_STATUS) {
        /* another worker sweeps this minute, or Redis failed */
        ngx_http_llm_sweep_end(NULL);
        return;
    }

    ngx_memcpy(ngx_http_llm_sweep.scan, "0", 2);
    ngx_http_llm_sweep.primary = 0;
    ngx_http_llm_sweep_scan();
}


static void
ngx_http_llm_sweep_scan(void)
{
    size_t       argvlen[6];
    const char  *argv[6];

    ngx_http_llm_arg_lit(argv, argvlen, 0, "SCAN");
    argv[1] = (char *) ngx_http_llm_sweep.scan;
    argvlen[1] = ngx_strlen(ngx_http_llm_sweep.scan);
    ngx_http_llm_arg_lit(argv, argvlen, 2, "MATCH");
    ngx_http_llm_arg_lit(argv, argvlen, 3, NGX_HTTP_LLM_KEY_INFLIGHT_MATCH);
    ngx_http_llm_arg_lit(argv, argvlen, 4, "COUNT");
    ngx_http_llm_arg_lit(argv, argvlen, 5, NGX_HTTP_LLM_SWEEP_COUNT);

    /* a cluster's keys are scanned primary by primary */

    if (ngx_http_llm_redis_command_on(NGX_HTTP_LLM_REDIS_MAIN,
                                      ngx_http_llm_sweep.primary, 6, argv,
                                      argvlen, ngx_http_llm_sweep_scanned,
                                      NULL)
        == NULL)
    {
        ngx_http_llm_sweep_end("redis is not available");
    }
}


static void
ngx_http_llm_sweep_scanned(redisReply *reply, void *data)
{
    u_char      *p;
    size_t       size;
    ngx_uint_t   i;
    redisReply  *keys, *k;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[0]->len > NGX_INT64_LEN
        || reply->element[1]->type != REDIS_REPLY_ARRAY)
    {
        ngx_http_llm_sweep_end("SCAN failed");
        return;
    }

    ngx_memcpy(ngx_http_llm_sweep.scan, reply->element[0]->str,
               reply->element[0]->len);
    ngx_http_llm_sweep.scan[reply->element[0]->len] = '\0';

    keys = reply->element[1];
    size = keys->elements * sizeof(ngx_str_t);

    for (i = 0; i < keys->elements; i++) {
        size += keys->element[i]->len;
    }

    ngx_free(ngx_http_llm_sweep.keys);

    ngx_http_llm_sweep.keys = ngx_alloc(size ? size : 1, ngx_cycle->log);
    if (ngx_http_llm_sweep.keys == NULL) {
        ngx_http_llm_sweep_end("no memory");
        return;
    }

    p = (u_char *) (ngx_http_llm_sweep.keys + keys->elements);
    ngx_http_llm_sweep.nkeys = 0;

    for (i = 0; i < keys->elements; i++) {
        k = keys->element[i];

        if (k->type != REDIS_REPLY_STRING) {
            continue;
        }

        ngx_http_llm_sweep.keys[ngx_http_llm_sweep.nkeys].data = p;
        ngx_http_llm_sweep.keys[ngx_http_llm_sweep.nkeys].len = k->len;
        p = ngx_cpymem(p, k->str, k->len);
        ngx_http_llm_sweep.nkeys++;
    }

    ngx_http_llm_sweep.key = 0;
    ngx_memcpy(ngx_http_llm_sweep.hscan, "0", 2);

    ngx_http_llm_sweep_next();
}


/* one HSCAN step of the current key, or the next key, or the next page */

static void
ngx_http_llm_sweep_next(void)
{
    size_t       argvlen[7];
    ngx_str_t   *key;
    const char  *argv[7];
    u_char       life[NGX_INT_T_LEN];

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        ngx_http_llm_sweep_end("the worker is exiting");
        return;
    }

    if (ngx_http_llm_sweep.key == ngx_http_llm_sweep.nkeys) {
        if (ngx_strcmp(ngx_http_llm_sweep.scan, "0") == 0
            && ++ngx_http_llm_sweep.primary
               >= ngx_http_llm_redis_primaries(NGX_HTTP_LLM_REDIS_MAIN))
        {
            ngx_http_llm_sweep_end(NULL);
            return;
        }

        ngx_http_llm_sweep_scan();
        return;
    }

    key = &ngx_http_llm_sweep.keys[ngx_http_llm_sweep.key];

    argv[3] = (char *) key->data;
    argvlen[3] = key->len;
    argv[4] = (char *) ngx_http_llm_sweep.hscan;
    argvlen[4] = ngx_strlen(ngx_http_llm_sweep.hscan);
    argv[5] = NGX_HTTP_LLM_SWEEP_COUNT;
    argvlen[5] = sizeof(NGX_HTTP_LLM_SWEEP_COUNT) - 1;
    argv[6] = (char *) life;
    argvlen[6] = ngx_sprintf(life, "%ui",
                             (ngx_uint_t) NGX_HTTP_LLM_SWEEP_LEGACY) - life;

    if (ngx_http_llm_redis_script(NGX_HTTP_LLM_REDIS_MAIN,
                                  NGX_HTTP_LLM_SCRIPT_SWEEP, 7, argv, argvlen,
                                  ngx_http_llm_sweep_swept, NULL)
        == NULL)
    {
        ngx_http_llm_sweep_end("redis is not available");
    }
}


static void
ngx_http_llm_sweep_swept(redisReply *reply, void *data)
{
    ngx_uint_t   transient;
    redisReply  *c;

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_http_llm_count_error("sweep",
                                 ngx_http_llm_redis_error(reply, &transient));
    }

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 3
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[0]->len > NGX_INT64_LEN
        || reply->element[1]->type != REDIS_REPLY_INTEGER
        || reply->element[2]->type != REDIS_REPLY_INTEGER)
    {
        ngx_http_llm_sweep_end(reply && reply->type == REDIS_REPLY_ERROR
                               ? reply->str : "sweep.lua failed");
        return;
    }

    if (reply->element[1]->integer > 0) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "llm: sweeper released %L reservations past their "
                      "deadline in \"%V\"", reply->element[1]->integer,
                      &ngx_http_llm_sweep.keys[ngx_http_llm_sweep.key]);
        ngx_http_llm_metrics_count("llm_reservations_swept_total",
                                   reply->element[1]->integer);
    }

    if (reply->element[2]->integer > 0) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "llm: sweeper deleted %L in-flight records of \"%V\" "
                      "that could not be read", reply->element[2]->integer,
                      &ngx_http_llm_sweep.keys[ngx_http_llm_sweep.key]);
        ngx_http_llm_metrics_count(
            "llm_inflight_malformed_total{script=\"sweep\"}",
            reply->element[2]->integer);
    }

    c = reply->element[0];

    if (c->len == 1 && c->str[0] == '0') {
        ngx_http_llm_sweep.key++;
        ngx_memcpy(ngx_http_llm_sweep.hscan, "0", 2);

    } else {
        ngx_memcpy(ngx_http_llm_sweep.hscan, c->str, c->len);
        ngx_http_llm_sweep.hscan[c->len] = '\0';
    }

    ngx_http_llm_sweep_next();
}


static void
ngx_http_llm_sweep_end(const char *why)
{
    if (why && ngx_http_llm_sweep.running) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "llm: sweep stopped: %s", why);
    }

    ngx_http_llm_sweep.running = 0;

    if (ngx_http_llm_sweep.keys) {
        ngx_free(ngx_http_llm_sweep.keys);
        ngx_http_llm_sweep.keys = NULL;
    }

    ngx_http_llm_sweep.nkeys = 0;
}


static ngx_uint_t
ngx_http_llm_reply_int(redisReply *r, size_t i, long long *v)
{
    if (r->type != REDIS_REPLY_ARRAY || i >= r->elements
        || r->element[i]->type != REDIS_REPLY_INTEGER)
    {
        return 0;
    }

    *v = r->element[i]->integer;

    return 1;
}


/* OpenAI writes resets as "1s", "6m0s" or "20ms" */

static void
ngx_http_llm_reset_value(u_char *buf, long long ms)
{
    u_char  *p;

    if (ms < 0) {
        ms = 0;
    }

    if (ms < 1000) {
        p = ngx_sprintf(buf, "%Lms", ms);

    } else if (ms < 60000) {
        p = ngx_sprintf(buf, "%L.%03Ls", ms / 1000, ms % 1000);

    } else {
        p = ngx_sprintf(buf, "%Lm%Ls", ms / 60000, (ms % 60000) / 1000);
    }

    *p = '\0';
}
