
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Target: what the gateway does with Redis replies, of any shape: the key
 * and tenant lookups of auth, the admission script's per-request results
 * and the settlement script's.  The module runs as in a worker, through
 * its public calls; its Redis commands are caught (ngx_http_llm_fuzz.c)
 * and each is answered with a reply tree read from the input (or NULL,
 * a timeout, when the input runs out).  The first byte picks the flow
 * and the tenant's limits.  Invariants:
 *   - no crash, leak or undefined behaviour, whatever the reply;
 *   - every request ends exactly once: ngx_http_llm_run() (go on) or
 *     ngx_http_llm_fail(), never both, never twice, never neither;
 *   - auth: a request that goes on has a tenant with no negative limit;
 *     an empty tenant hash does not go on (M7: fail closed);
 *   - admission: a request that goes on was admitted, or is served
 *     unmetered by fail-open, or its admission is unknown;
 *   - settlement: every record is answered or kept for a retry, and
 *     nothing is left once the worker exits.
 */


#include "ngx_http_llm_fuzz.h"
#include "ngx_http_llm_auth.h"
#include "ngx_http_llm_quota.h"
#include "ngx_http_llm_util.h"


/* ---------------------------------------------------------- adapter
 * Every call into the module is here.
 */

static ngx_int_t
ngx_http_llm_fuzz_auth(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    return ngx_http_llm_auth(ctx, err);
}


static void
ngx_http_llm_fuzz_auth_reset(void)
{
    /* the worker's key cache, so that each input starts cold */
    ngx_http_llm_auth_exit();
}


static ngx_int_t
ngx_http_llm_fuzz_admit(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    return ngx_http_llm_quota_admit(ctx, err);
}


static void
ngx_http_llm_fuzz_settle(ngx_http_llm_ctx_t *ctx)
{
    /* what the request's cleanup does */
    ngx_http_llm_quota_cancel(ctx);
    ngx_http_llm_quota_settle(ctx);
}


/* Redis is back: what waited is sent again */
static void
ngx_http_llm_fuzz_reconnect(void)
{
    ngx_http_llm_quota_flush();
}


static void
ngx_http_llm_fuzz_exit(void)
{
    ngx_http_llm_quota_exit();
}

/* ---------------------------------------------------------- target */


#define NGX_HTTP_LLM_FUZZ_BATCH   3
#define NGX_HTTP_LLM_FUZZ_ROUNDS  6


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static ngx_http_llm_tenant_t  ngx_http_llm_fuzz_tenant;
static ngx_uint_t             ngx_http_llm_fuzz_no_tenant;


static void
ngx_http_llm_fuzz_later(void)
{
    ngx_current_msec += 3600000;
    ngx_event_expire_timers();
}


/* answers the commands sent, one reply each, until none is waiting */

static void
ngx_http_llm_fuzz_answer(ngx_http_llm_fuzz_in_t *in)
{
    ngx_uint_t                rounds;
    redisReply               *reply;
    ngx_http_llm_redis_pt     handler;
    ngx_http_llm_fuzz_cmd_t  *cmd;

    for (rounds = 0; rounds < 4 * NGX_HTTP_LLM_FUZZ_ROUNDS; rounds++) {

        /* the end of the event-loop turn: batches go out */
        ngx_http_llm_fuzz_run_posted();

        if (ngx_http_llm_fuzz_redis_reset) {
            /* a reset connection fails what waited on it */
            ngx_http_llm_fuzz_redis_reset = 0;

            while ((cmd = ngx_http_llm_fuzz_next_cmd()) != NULL) {
                cmd->pending = 0;
                cmd->handler(NULL, cmd->data);
            }

            continue;
        }

        cmd = ngx_http_llm_fuzz_next_cmd();

        if (cmd == NULL) {
            /* an hour later: what waits on a timer (a retry) runs */
            ngx_http_llm_fuzz_later();
            ngx_http_llm_fuzz_run_posted();

            cmd = ngx_http_llm_fuzz_next_cmd();
            if (cmd == NULL) {
                return;
            }
        }

        cmd->pending = 0;
        handler = cmd->handler;

        reply = ngx_http_llm_fuzz_reply(in, 0);

        if (ngx_strcmp(cmd->name, "HGETALL") == 0
            && reply && reply->type == REDIS_REPLY_ARRAY
            && reply->elements == 0)
        {
            /* what Redis says of a hash that does not exist */
            ngx_http_llm_fuzz_no_tenant = 1;
        }

        handler(reply, cmd->data);

        if (reply) {
            freeReplyObject(reply);
        }
    }

    /* still going: the rest time out */

    while ((cmd = ngx_http_llm_fuzz_next_cmd()) != NULL) {
        cmd->pending = 0;
        cmd->handler(NULL, cmd->data);
        ngx_http_llm_fuzz_run_posted();
    }
}


static void
ngx_http_llm_fuzz_ended_once(ngx_http_llm_fuzz_req_t *fr, const char *what)
{
    ngx_http_llm_fuzz_outcome_t  *o;

    o = &fr->outcome;

    ngx_http_llm_fuzz_assert(o->run + o->fail + o->finalize == 1,
                             "%s: the request went on %ui times, failed %ui "
                             "times, was finalized %ui times", what, o->run,
                             o->fail, o->finalize);
}


static void
ngx_http_llm_fuzz_auth_flow(ngx_pool_t *pool, ngx_http_llm_fuzz_in_t *in,
    ngx_uint_t flags)
{
    u_char                    *key;
    ngx_int_t                  rc;
    ngx_http_llm_ctx_t        *ctx;
    ngx_http_llm_key_t        *k;
    ngx_http_llm_tenant_t     *t;
    ngx_http_llm_fuzz_req_t   *fr;

    fr = ngx_http_llm_fuzz_request(pool);
    ctx = &fr->ctx;
    fr->conf.fail_open = (flags & 1);

    key = (u_char *) "Bearer sk-llm-fuzz-0123456789abcdef";

    fr->authorization.hash = 1;
    ngx_str_set(&fr->authorization.key, "Authorization");
    fr->authorization.value.data = key;
    fr->authorization.value.len = ngx_strlen(key);
    fr->r.headers_in.authorization = &fr->authorization;

    /* a static key of the configuration: only the tenant is looked up */

    ngx_http_llm_fuzz_main_conf.keys.nelts = 0;

    if (flags & 8) {
        k = ngx_array_push(&ngx_http_llm_fuzz_main_conf.keys);
        if (k == NULL) {
            abort();
        }

        ngx_memzero(k, sizeof(ngx_http_llm_key_t));

        ngx_http_llm_sha256_hex(key + sizeof("Bearer ") - 1,
                                ngx_strlen(key) - (sizeof("Bearer ") - 1),
                                k->hash);
        ngx_str_set(&k->tenant, "acme");
    }

    rc = ngx_http_llm_fuzz_auth(ctx, &ctx->error);

    if (rc == NGX_OK) {
        fr->outcome.run++;

    } else if (rc == NGX_ERROR) {
        /* answered as ngx_http_llm_run() answers a failed phase */
        ctx->phase = NGX_HTTP_LLM_PHASE_FAIL;
        __wrap_ngx_http_llm_run(ctx);
    }

    ngx_http_llm_fuzz_answer(in);

    ngx_http_llm_fuzz_ended_once(fr, "auth");

    ngx_http_llm_fuzz_expect("M7", !(fr->outcome.run
                                     && ngx_http_llm_fuzz_no_tenant),
                             "a key whose tenant hash is missing went on");

    if (fr->outcome.run) {
        t = ctx->tenant;

        ngx_http_llm_fuzz_assert(t != NULL, "auth went on without a tenant");

        ngx_http_llm_fuzz_expect("M7", t->rpm >= 0 && t->tpm >= 0
                                 && t->budget_day >= 0
                                 && t->budget_month >= 0
                                 && t->max_tokens >= 0 && t->max_n >= 0,
                                 "a tenant with a negative limit");

        ngx_http_llm_fuzz_expect("M7", !ctx->redis_down || fr->conf.fail_open,
                                 "served without Redis, fail-closed");
    }

    ngx_http_llm_fuzz_main_conf.keys.nelts = 0;
    ngx_http_llm_fuzz_auth_reset();
}


/* a request of the demo's shape, past policy, ready for admission */

static ngx_http_llm_fuzz_req_t *
ngx_http_llm_fuzz_metered(ngx_pool_t *pool, ngx_http_llm_fuzz_in_t *in,
    ngx_uint_t flags)
{
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_fuzz_req_t  *fr;

    fr = ngx_http_llm_fuzz_request(pool);
    ctx = &fr->ctx;

    fr->conf.fail_open = (flags & 1);

    ctx->tenant = &ngx_http_llm_fuzz_tenant;
    ctx->model = &ngx_http_llm_fuzz_models[ngx_http_llm_fuzz_byte(in) & 1];
    ctx->prompt_estimate = 16 + (ngx_http_llm_fuzz_byte(in) << 4);
    ctx->choices = 1 + (ngx_http_llm_fuzz_byte(in) & 3);
    ctx->max_tokens = ctx->choices * (1 + (ngx_http_llm_fuzz_byte(in) << 4));

    return fr;
}


static void
ngx_http_llm_fuzz_quota_flow(ngx_pool_t *pool, ngx_http_llm_fuzz_in_t *in,
    ngx_uint_t flags)
{
    ngx_int_t                 rc;
    ngx_uint_t                i, n, round, b;
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_fuzz_req_t  *fr[NGX_HTTP_LLM_FUZZ_BATCH];

    n = 1 + ngx_http_llm_fuzz_byte(in) % NGX_HTTP_LLM_FUZZ_BATCH;

    for (i = 0; i < n; i++) {
        fr[i] = ngx_http_llm_fuzz_metered(pool, in, flags);

        ctx = &fr[i]->ctx;

        rc = ngx_http_llm_fuzz_admit(ctx, &ctx->error);

        if (rc == NGX_OK) {
            fr[i]->outcome.run++;

        } else if (rc == NGX_ERROR) {
            ctx->phase = NGX_HTTP_LLM_PHASE_FAIL;
            __wrap_ngx_http_llm_run(ctx);
        }
    }

    /* one of them may go away while its admission is in flight */

    if (flags & 2) {
        ngx_http_llm_fuzz_run_posted();
        fr[n - 1]->outcome.finalize++;
        ngx_http_llm_fuzz_settle(&fr[n - 1]->ctx);
        fr[n - 1] = NULL;
    }

    ngx_http_llm_fuzz_answer(in);

    for (i = 0; i < n; i++) {
        if (fr[i] == NULL) {
            continue;
        }

        ctx = &fr[i]->ctx;

        ngx_http_llm_fuzz_ended_once(fr[i], "admission");

        if (fr[i]->outcome.run) {
            ngx_http_llm_fuzz_assert(ctx->quota.admitted
                                     || ctx->quota.unenforced
                                     || ctx->quota.admit_unknown,
                                     "went on neither admitted nor "
                                     "unenforced");
        }

        /* how it ended, from the input: with a backend, usage or not */

        b = ngx_http_llm_fuzz_byte(in);

        if (b & 1) {
            ctx->backend = ctx->model->backends.elts;
            ctx->attempt.first_byte = 1;
            ctx->attempt.reached_backend = 1;
            ctx->attempt.status = (b & 2) ? NGX_HTTP_OK : 503;
            ctx->prompt_tokens = (b & 4) ? ngx_http_llm_fuzz_byte(in) : -1;
            ctx->completion_tokens = (b & 8) ? ngx_http_llm_fuzz_byte(in)
                                             : -1;
            ctx->chunks = ngx_http_llm_fuzz_byte(in);
            ctx->stream_tokens = ngx_http_llm_fuzz_byte(in);
            ctx->usage_lost = (b & 16) ? 1 : 0;
        }

        ngx_http_llm_fuzz_settle(ctx);
    }

    /* settlements go out, and come back while Redis comes and goes */

    for (round = 0; round < NGX_HTTP_LLM_FUZZ_ROUNDS; round++) {
        ngx_http_llm_fuzz_answer(in);

        if (in->pos == in->last) {
            break;
        }

        ngx_http_llm_fuzz_reconnect();
    }

    ngx_http_llm_fuzz_exit();
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_http_llm_fuzz_init();
    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_uint_t               flags;
    ngx_pool_t              *pool;
    ngx_http_llm_tenant_t   *t;
    ngx_http_llm_fuzz_in_t   in;

    in.pos = data;
    in.last = data + size;

    flags = ngx_http_llm_fuzz_byte(&in);

    /* the tenant's limits, as admission and its headers see them */

    t = &ngx_http_llm_fuzz_tenant;
    ngx_memzero(t, sizeof(ngx_http_llm_tenant_t));
    ngx_str_set(&t->id, "acme");
    t->rpm = (flags & 0x10) ? 60 : 0;
    t->tpm = (flags & 0x20) ? 100000 : 0;
    t->budget_day = (flags & 0x40) ? 5000000 : 0;
    t->budget_month = (flags & 0x80) ? 100000000 : 0;

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        abort();
    }

    ngx_http_llm_fuzz_redis_up = 1;
    ngx_http_llm_fuzz_redis_reset = 0;
    ngx_http_llm_fuzz_ncmds = 0;
    ngx_http_llm_fuzz_no_tenant = 0;

    if (flags & 4) {
        ngx_http_llm_fuzz_auth_flow(pool, &in, flags);

    } else {
        ngx_http_llm_fuzz_quota_flow(pool, &in, flags);
    }

    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_next_cmd() == NULL,
                             "a command left without its reply");

    ngx_destroy_pool(pool);

    return 0;
}
