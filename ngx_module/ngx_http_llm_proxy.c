
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * One upstream attempt per backend: the libcurl easy handle, its header and
 * body callbacks, the answer relayed (keys masked, usage read), the
 * upstream paused while the client is slow, timeouts, and failover before
 * the first byte: to the model's next backend, then to the fallback model
 * the router picks (ngx_http_llm_route_fallback()).
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_backend.h"
#include "ngx_http_llm_cache.h"
#include "ngx_http_llm_curl.h"
#include "ngx_http_llm_error.h"
#include "ngx_http_llm_metrics.h"
#include "ngx_http_llm_output.h"
#include "ngx_http_llm_provider.h"
#include "ngx_http_llm_provider_error.h"
#include "ngx_http_llm_proxy.h"
#include "ngx_http_llm_request.h"
#include "ngx_http_llm_router.h"
#include "ngx_http_llm_sse.h"
#include "ngx_http_llm_status.h"
#include "ngx_http_llm_usage.h"
#include "ngx_http_llm_util.h"


/* OpenRouter shows titles of a few words; a header line stays short */
#define NGX_HTTP_LLM_APP_TITLE_MAX  128


static ngx_int_t ngx_http_llm_proxy_body(ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_proxy_request(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_backend_t *b);
static void ngx_http_llm_proxy_next(ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_proxy_fail(ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_proxy_refused(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_backend_t *b);
static void ngx_http_llm_proxy_finish(ngx_http_llm_ctx_t *ctx,
    CURLcode rc);
static void ngx_http_llm_proxy_release(ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_proxy_retry(ngx_event_t *ev);
static ngx_msec_t ngx_http_llm_retry_after(ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_proxy_backoff(ngx_http_llm_ctx_t *ctx);
static ngx_http_llm_perr_e ngx_http_llm_proxy_kind(ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_proxy_retired(ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_proxy_error_body(ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_proxy_rate_header(ngx_http_llm_ctx_t *ctx,
    char *buf, size_t len);
static void ngx_http_llm_proxy_check(ngx_http_llm_ctx_t *ctx, u_char *p,
    size_t len);
static void ngx_http_llm_proxy_model(ngx_http_llm_ctx_t *ctx, cJSON *json);
static void ngx_http_llm_proxy_json_end(ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_proxy_tail_usage(ngx_http_llm_ctx_t *ctx);
static ngx_uint_t ngx_http_llm_proxy_closes(u_char *p, u_char *last);
static void ngx_http_llm_proxy_account(ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_proxy_log_body(ngx_http_llm_ctx_t *ctx,
    ngx_log_t *log, const char *reason, ngx_int_t status);
static u_char *ngx_http_llm_proxy_key(ngx_http_llm_ctx_t *ctx, size_t *n);
static void ngx_http_llm_proxy_mask(ngx_http_llm_ctx_t *ctx, u_char *buf,
    size_t len);
static ngx_int_t ngx_http_llm_proxy_out_masked(ngx_http_llm_ctx_t *ctx,
    u_char *p, size_t len);
static ngx_int_t ngx_http_llm_proxy_out_carry(ngx_http_llm_ctx_t *ctx);
static int ngx_http_llm_proxy_progress_cb(void *data, curl_off_t dltotal,
    curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow);
static size_t ngx_http_llm_proxy_header_cb(char *buf, size_t size,
    size_t n, void *data);
static size_t ngx_http_llm_proxy_write_cb(char *buf, size_t size, size_t n,
    void *data);
static ngx_int_t ngx_http_llm_proxy_send_header(ngx_http_llm_ctx_t *ctx);
static ngx_uint_t ngx_http_llm_proxy_sse_type(ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_proxy_event(void *data, u_char *payload,
    size_t len);
static ngx_int_t ngx_http_llm_proxy_comment(void *data, u_char *p,
    size_t len);
static ngx_int_t ngx_http_llm_proxy_usage_chunk(ngx_http_llm_ctx_t *ctx,
    cJSON *json, cJSON *usage);
static ngx_int_t ngx_http_llm_proxy_data(ngx_http_llm_ctx_t *ctx, u_char *p,
    size_t len);
static ngx_int_t ngx_http_llm_proxy_tee(ngx_http_llm_ctx_t *ctx, u_char *p,
    size_t len);
static ngx_int_t ngx_http_llm_proxy_tail(ngx_http_llm_ctx_t *ctx, u_char *p,
    size_t len);
static void ngx_http_llm_proxy_count(ngx_http_llm_ctx_t *ctx, u_char *p,
    size_t len);
static u_char *ngx_http_llm_json_string_end(u_char *p, u_char *last);
static u_char *ngx_http_llm_json_space(u_char *p, u_char *last);
static ngx_int_t ngx_http_llm_proxy_usage(ngx_http_llm_ctx_t *ctx,
    cJSON *json);
static void ngx_http_llm_proxy_timeout(ngx_event_t *ev);
static ngx_int_t ngx_http_llm_app_printable(ngx_str_t *v);


ngx_int_t
ngx_http_llm_proxy_start(ngx_http_llm_ctx_t *ctx)
{
    ngx_http_request_t  *r;

    r = ctx->request;

    if (ngx_http_llm_proxy_body(ctx) != NGX_OK
        || ngx_http_llm_cache_begin(ctx) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->timer.handler = ngx_http_llm_proxy_timeout;
    ctx->timer.data = &ngx_http_llm_timer_conn;
    ctx->timer.log = r->connection->log;

    ctx->retry.handler = ngx_http_llm_proxy_retry;
    ctx->retry.data = &ngx_http_llm_timer_conn;
    ctx->retry.log = r->connection->log;

    ctx->tried = 0;

    ngx_http_llm_proxy_next(ctx);

    return NGX_OK;
}


/* the backoff is over: the next attempt */

static void
ngx_http_llm_proxy_retry(ngx_event_t *ev)
{
    ngx_connection_t    *c;
    ngx_http_llm_ctx_t  *ctx;

    ctx = (ngx_http_llm_ctx_t *) ((u_char *) ev
                                  - offsetof(ngx_http_llm_ctx_t, retry));
    c = ctx->request->connection;

    ngx_http_llm_proxy_next(ctx);

    ngx_http_run_posted_requests(c);
}


/*
 * Nothing to prepare: each attempt's body is written anew from the
 * validated tree, which stays as the client's request was validated.
 */

static ngx_int_t
ngx_http_llm_proxy_body(ngx_http_llm_ctx_t *ctx)
{
    return NGX_OK;
}


/*
 * One attempt's body and headers.  The body is the validated request for
 * this backend (see ngx_http_llm_upstream_body()); the headers are built
 * anew, so that only this backend sees its key.
 */

static ngx_int_t
ngx_http_llm_proxy_request(ngx_http_llm_ctx_t *ctx, ngx_http_llm_backend_t *b)
{
    size_t                     len;
    struct curl_slist         *h;
    ngx_http_llm_provider_t   *pv;
    ngx_http_llm_main_conf_t  *lmcf;

    pv = b->provider;

    if (ngx_http_llm_provider_refuses(pv, ctx->json, ctx->stream)) {
        return NGX_DECLINED;
    }

    if (ngx_http_llm_upstream_body(ctx, b, &len) == NULL) {
        return NGX_ERROR;
    }

    if (ctx->headers) {
        curl_slist_free_all(ctx->headers);
    }

    /* no "100 Continue" round trip for large bodies */

    h = curl_slist_append(NULL, "Content-Type: application/json");
    ctx->headers = h;

    h = h ? curl_slist_append(h, "Expect:") : NULL;

    if (h && ctx->stream) {
        h = curl_slist_append(h, "Accept: " NGX_HTTP_LLM_SSE_TYPE);
    }

    if (h && b->auth.len) {
        h = curl_slist_append(h, (char *) b->auth.data);
    }

    /* OpenRouter attributes by the referer: a title alone does nothing */

    lmcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_llm_module);

    if (h && pv && (pv->flags & NGX_HTTP_LLM_PROVIDER_ATTRIBUTION)
        && lmcf->app_url.len)
    {
        h = curl_slist_append(h, (char *) lmcf->app_url.data);
        h = h ? curl_slist_append(h, (char *) lmcf->app_title_h.data) : NULL;
        h = h ? curl_slist_append(h, (char *) lmcf->app_title_x.data) : NULL;
    }

    return h ? NGX_OK : NGX_ERROR;
}


/* starts an attempt on the best backend left, or fails the request */

static void
ngx_http_llm_proxy_next(ngx_http_llm_ctx_t *ctx)
{
    CURL                      *easy;
    ngx_int_t                  rc;
    ngx_msec_t                 elapsed, left;
    ngx_http_llm_backend_t    *backend;
    ngx_http_llm_main_conf_t  *lmcf;

    elapsed = ngx_current_msec - ctx->start;

    if (elapsed >= ctx->conf->total_timeout) {
        ctx->fail = NGX_HTTP_LLM_FAIL_TIMEOUT;
        ngx_http_llm_proxy_fail(ctx);
        return;
    }

    if (ctx->attempts >= ctx->conf->max_attempts) {
        ngx_http_llm_proxy_fail(ctx);
        return;
    }

    backend = ngx_http_llm_backend_next(ctx);

    if (backend == NULL && ngx_http_llm_route_fallback(ctx) == NGX_OK) {
        /* the fallback's backends afresh; not cached: not the asked model */

        ctx->tried = 0;
        ctx->cache.store = 0;

        backend = ngx_http_llm_backend_next(ctx);
    }

    if (backend == NULL) {
        ngx_http_llm_proxy_fail(ctx);
        return;
    }

    left = ctx->conf->total_timeout - elapsed;

    ctx->backend = backend;
    ctx->attempts++;

    rc = ngx_http_llm_proxy_request(ctx, backend);

    if (rc == NGX_DECLINED) {
        ngx_http_llm_proxy_refused(ctx, backend);
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_llm_finalize(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    easy = ngx_http_llm_curl_get();
    if (easy == NULL) {
        ngx_http_llm_finalize(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->easy = easy;

    lmcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_llm_module);

    if (lmcf->ssl_trusted.len) {
        curl_easy_setopt(easy, CURLOPT_CAINFO, lmcf->ssl_trusted.data);
    }

    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, lmcf->ssl_verify ? 1L : 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, lmcf->ssl_verify ? 2L : 0L);

    /* HTTP/2 where the provider offers it (ALPN), HTTP/1.1 in the clear */
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION,
                     (long) CURL_HTTP_VERSION_2TLS);

    curl_easy_setopt(easy, CURLOPT_URL, backend->url.data);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, ctx->upstream_body);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE,
                     (long) ctx->upstream_body_len);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, ctx->headers);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION,
                     ngx_http_llm_proxy_header_cb);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, ctx);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION,
                     ngx_http_llm_proxy_write_cb);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, ctx);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, ctx->attempt.curl_error);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     (long) ctx->conf->connect_timeout);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) left);
    curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);

    /*
     * each transfer in flight holds libcurl's receive buffer, 16 KiB by
     * default, the largest part of what a stream costs in memory; SSE
     * events and most answers fit in 4 KiB.  Every transfer sets the same
     * size, so a reused handle never meets a buffer of another.
     */
    curl_easy_setopt(easy, CURLOPT_BUFFERSIZE,
                     (long) NGX_HTTP_LLM_CURL_BUF_SIZE);
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "nginx-llm-gateway");
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION,
                     ngx_http_llm_proxy_progress_cb);
    curl_easy_setopt(easy, CURLOPT_XFERINFODATA, ctx);
    curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);

    /* what an earlier attempt left is in lost_* or freed by now */
    ngx_memzero(&ctx->attempt, sizeof(ngx_http_llm_attempt_t));
    ctx->attempt.start = ngx_current_msec;

    ctx->curl_done.handler = ngx_http_llm_proxy_done;
    ctx->curl_done.data = ctx;

    if (ngx_http_llm_curl_add(easy, &ctx->curl_done) != NGX_OK) {
        ngx_http_llm_finalize(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /*
     * a non-streamed answer's first byte comes after the whole generation:
     * it has a limit of its own
     */

    ngx_add_timer(&ctx->timer, ctx->stream ? ctx->conf->first_byte_timeout
                                           : ctx->conf->generation_timeout);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ctx->request->connection->log, 0,
                   "llm: attempt %ui to \"%V\"", ctx->attempts,
                   &backend->url);
}


/*
 * The request asks what the chosen provider's API cannot do and no
 * rewrite mends (Groq's n > 1, DeepInfra's named tool_choice): the
 * client is told as OpenAI tells of a bad value, naming the member,
 * before anything is sent, rather than in the provider's own shape.
 */

static void
ngx_http_llm_proxy_refused(ngx_http_llm_ctx_t *ctx, ngx_http_llm_backend_t *b)
{
    ngx_http_llm_error_t     err;
    ngx_http_llm_rewrite_t  *rw;

    rw = ngx_http_llm_provider_refuses(b->provider, ctx->json, ctx->stream);

    if (rw->op == NGX_HTTP_LLM_RW_ONE) {
        ngx_http_llm_set_error(&err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_value",
                               rw->name, "Invalid value for '%s': the "
                               "provider %V of model `%V` allows only 1.",
                               rw->name, &b->provider->name,
                               &ctx->model->name);

    } else {
        ngx_http_llm_set_error(&err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_value",
                               rw->name, "Invalid value for '%s': the "
                               "provider %V of model `%V` allows only "
                               "these: %s.", rw->name, &b->provider->name,
                               &ctx->model->name, rw->to);
    }

    ngx_http_llm_finalize(ctx, ngx_http_llm_send_error(ctx->request, &err));
}


/* a transfer ended, or its first byte / idle timer fired */

void
ngx_http_llm_proxy_done(void *data, CURLcode rc)
{
    ngx_http_llm_ctx_t *ctx = data;

    long                  status;
    const char           *outcome;
    ngx_connection_t     *c;
    ngx_http_llm_perr_e   kind;

    /* the request, and ctx with it, may be gone after finalization */
    c = ctx->request->connection;
    kind = NGX_HTTP_LLM_PERR_NONE;

    if (ctx->easy && ctx->attempt.status == 0) {
        status = 0;
        curl_easy_getinfo(ctx->easy, CURLINFO_RESPONSE_CODE, &status);
        ctx->attempt.status = status;
    }

    ngx_http_llm_proxy_release(ctx);

    if (ctx->client_error) {
        ngx_http_llm_finalize(ctx, NGX_HTTP_CLIENT_CLOSED_REQUEST);
        goto done;
    }

    if (!ctx->out.headers_sent) {

        switch (rc) {

        case CURLE_OK:
            if (ctx->attempt.discard) {
                ctx->fail = NGX_HTTP_LLM_FAIL_STATUS;
                break;
            }

            /* a held error: a model gone, or a key refused, fails over */

            kind = ngx_http_llm_proxy_kind(ctx);

            if (kind == NGX_HTTP_LLM_PERR_RETIRED
                || kind == NGX_HTTP_LLM_PERR_BACKEND)
            {
                ctx->attempt.errlen = ngx_min(ctx->attempt.body_len,
                                              NGX_HTTP_LLM_ERRBUF_SIZE);
                ngx_memcpy(ctx->errbuf, ctx->body, ctx->attempt.errlen);
                ctx->attempt.holding = 0;
                ctx->fail = NGX_HTTP_LLM_FAIL_STATUS;
                break;
            }

            /* an empty body: the status alone is the answer */
            ngx_http_llm_proxy_finish(ctx, rc);
            goto done;

        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
            ctx->fail = NGX_HTTP_LLM_FAIL_CONNECT;
            break;

        case CURLE_OPERATION_TIMEDOUT:
            ctx->fail = NGX_HTTP_LLM_FAIL_TIMEOUT;
            break;

        default:
            ctx->fail = ctx->attempt.discard ? NGX_HTTP_LLM_FAIL_STATUS
                                     : NGX_HTTP_LLM_FAIL_TRANSFER;
            break;
        }

        outcome = ctx->fail == NGX_HTTP_LLM_FAIL_CONNECT ? "connect"
                  : ctx->fail == NGX_HTTP_LLM_FAIL_TIMEOUT ? "timeout"
                  : ctx->fail == NGX_HTTP_LLM_FAIL_STATUS ? "status"
                  : "transfer";

        ngx_http_llm_metrics_attempt(ctx, outcome);
        ngx_http_llm_status_attempt(ctx, outcome);

        ngx_http_llm_proxy_log_body(ctx, c->log,
                                    ctx->attempt.curl_error[0]
                                    ? ctx->attempt.curl_error
                                    : curl_easy_strerror(rc),
                                    ctx->attempt.status);

        /*
         * a non-streamed request that timed out after the backend got it,
         * before a byte of the answer, was most likely still being
         * generated: another backend would only generate it again, at the
         * tenant's cost.  It counts against the backend's health only if
         * the backend answered nothing else meanwhile (then it is hung,
         * not busy).
         */

        if (ctx->fail == NGX_HTTP_LLM_FAIL_TIMEOUT
            && !ctx->stream
            && !ctx->attempt.first_byte
            && ctx->attempt.reached_backend)
        {
            if (!ngx_http_llm_backend_answered(ctx)) {
                ngx_http_llm_backend_failed(ctx);
            }

            ngx_http_llm_proxy_fail(ctx);
            goto done;
        }

        ngx_http_llm_usage_abandon(ctx);

        /*
         * a 429, or a 503 with Retry-After, cools the backend down for
         * everyone until then; a model gone parks it for hours; other
         * failures count toward opening its circuit.  A held body was
         * judged already, and is gone from the attempt.
         */

        if (kind == NGX_HTTP_LLM_PERR_NONE) {
            kind = ngx_http_llm_proxy_kind(ctx);
        }

        switch (kind) {

        case NGX_HTTP_LLM_PERR_LIMIT:
            ngx_http_llm_backend_cool(ctx, ngx_http_llm_retry_after(ctx));
            break;

        case NGX_HTTP_LLM_PERR_RETIRED:
            ngx_http_llm_proxy_retired(ctx);
            break;

        default:
            ngx_http_llm_backend_failed(ctx);
            break;
        }

        ngx_http_llm_proxy_backoff(ctx);
        goto done;
    }

    ngx_http_llm_proxy_finish(ctx, rc);

done:

    ngx_http_run_posted_requests(c);
}


/* every backend failed before a byte reached the client */

static void
ngx_http_llm_proxy_fail(ngx_http_llm_ctx_t *ctx)
{
    u_char                *p;
    ngx_http_request_t    *r;
    ngx_http_llm_error_t   err;

    r = ctx->request;

    /* nothing was tried: the backends are cooling down, or open */

    if (ctx->fail == NGX_HTTP_LLM_FAIL_NONE && ctx->cool_wait) {
        ngx_http_llm_set_error(&err, NGX_HTTP_TOO_MANY_REQUESTS,
                               "upstream_error", "rate_limit_exceeded",
                               NULL, "Every backend of model `%V` is "
                               "rate limited, try again later.",
                               &ctx->model->name);

        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN + 1);
        if (p) {
            *ngx_sprintf(p, "%M", (ctx->cool_wait + 999) / 1000) = '\0';
            (void) ngx_http_llm_add_header(r, "Retry-After", (char *) p);
        }

        ngx_http_llm_finalize(ctx, ngx_http_llm_send_error(r, &err));
        return;
    }

    if (ctx->fail == NGX_HTTP_LLM_FAIL_NONE && ctx->all_open) {
        ngx_http_llm_set_error(&err, NGX_HTTP_SERVICE_UNAVAILABLE,
                               "upstream_error", "service_unavailable", NULL,
                               "Every backend of model `%V` is failing; "
                               "try again later.", &ctx->model->name);
        ngx_http_llm_finalize(ctx, ngx_http_llm_send_error(r, &err));
        return;
    }

    switch (ctx->fail) {

    case NGX_HTTP_LLM_FAIL_TIMEOUT:
        ngx_http_llm_set_error(&err, NGX_HTTP_GATEWAY_TIME_OUT,
                               "upstream_error", "gateway_timeout", NULL,
                               "The model backend did not respond in time.");
        break;

    case NGX_HTTP_LLM_FAIL_STATUS:
        if (ctx->attempt.status == NGX_HTTP_TOO_MANY_REQUESTS) {
            ngx_http_llm_set_error(&err, NGX_HTTP_TOO_MANY_REQUESTS,
                                   "upstream_error", "rate_limit_exceeded",
                                   NULL, "Every backend of model `%V` is "
                                   "rate limited, try again later.",
                                   &ctx->model->name);

            if (ctx->attempt.retry_after.len) {
                /* NUL-terminated by ngx_http_llm_header_value() */
                (void) ngx_http_llm_add_header(r, "Retry-After",
                                    (char *) ctx->attempt.retry_after.data);
            }

            break;
        }

        ngx_http_llm_set_error(&err, NGX_HTTP_BAD_GATEWAY, "upstream_error",
                               "bad_gateway", NULL,
                               "The model backend returned HTTP %i.",
                               ctx->attempt.status);
        break;

    default:
        ngx_http_llm_set_error(&err, NGX_HTTP_BAD_GATEWAY, "upstream_error",
                               "bad_gateway", NULL,
                               "No backend of model `%V` could be reached.",
                               &ctx->model->name);
        break;
    }

    ngx_http_llm_finalize(ctx, ngx_http_llm_send_error(r, &err));
}


/* the response began: end it, cleanly or with an error event */

static void
ngx_http_llm_proxy_finish(ngx_http_llm_ctx_t *ctx, CURLcode rc)
{
    u_char               *p;
    size_t                len;
    ngx_int_t             rv;
    const char           *outcome;
    ngx_http_request_t   *r;
    ngx_http_llm_error_t  err;

    r = ctx->request;

    /* a stream that said it failed is as broken as one cut short */

    outcome = (rc == CURLE_OK && !ctx->stream_failed) ? "ok" : "broken";

    ngx_http_llm_metrics_attempt(ctx, outcome);
    ngx_http_llm_status_attempt(ctx, outcome);

    /* the request's fault, not the backend's: it answered well */

    if (ctx->attempt.status >= NGX_HTTP_BAD_REQUEST
        && ctx->attempt.status < NGX_HTTP_INTERNAL_SERVER_ERROR)
    {
        ngx_http_llm_backend_ok(ctx);
    }

    if (ctx->attempt.holding) {
        /* whole, so failures before this point failed over; masked */

        ngx_http_llm_proxy_json_end(ctx);

        if (ngx_http_llm_proxy_error_body(ctx) != NGX_OK) {
            ngx_http_llm_finalize(ctx, NGX_ERROR);
            return;
        }

        if (ngx_http_llm_cost_header(ctx, 0) != NGX_OK
            || ngx_http_llm_proxy_send_header(ctx) != NGX_OK)
        {
            ngx_http_llm_finalize(ctx, NGX_ERROR);
            return;
        }

        ctx->attempt.holding = 0;

        rv = r->header_only ? NGX_OK
             : (ngx_http_llm_out(ctx, ctx->body, ctx->attempt.body_len)
                != NGX_OK)
             ? NGX_ERROR : ngx_http_llm_out_flush(ctx, 1);

        ngx_http_llm_finalize(ctx, rv);
        return;
    }

    if (!ctx->out.headers_sent
        && ngx_http_llm_proxy_send_header(ctx) != NGX_OK)
    {
        ngx_http_llm_finalize(ctx, NGX_ERROR);
        return;
    }

    if (r->header_only) {
        ngx_http_llm_finalize(ctx, NGX_OK);
        return;
    }

    /* a stream cut short may end in half an event: that is not one */

    if (rc == CURLE_OK
        && ctx->sse_mode
        && ngx_http_llm_sse_finish(&ctx->sse, ngx_http_llm_proxy_event, ctx)
           != NGX_OK)
    {
        rc = CURLE_WRITE_ERROR;
    }

    if (rc != CURLE_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "llm: backend \"%V\" failed mid-response: %s",
                      &ctx->backend->url,
                      ctx->attempt.curl_error[0] ? ctx->attempt.curl_error
                                         : curl_easy_strerror(rc));

        if (!ctx->sse_mode) {
            /*
             * a truncated JSON body: only a closed connection says so,
             * after what came, which the write filter may still hold
             */
            (void) ngx_http_llm_out_flush(ctx, 0);
            ngx_http_llm_finalize(ctx, NGX_ERROR);
            return;
        }

        if (rc == CURLE_OPERATION_TIMEDOUT) {
            ngx_http_llm_set_error(&err, NGX_HTTP_GATEWAY_TIME_OUT,
                                   "upstream_error", "gateway_timeout", NULL,
                                   "The model backend stopped sending.");

        } else {
            ngx_http_llm_set_error(&err, NGX_HTTP_BAD_GATEWAY,
                                   "upstream_error", "bad_gateway", NULL,
                                   "The model backend failed mid-stream.");
        }

        p = ngx_http_llm_error_json(r->pool, &err, &len);

        /* the JSON ends in a newline; the event adds its own */

        if (p == NULL
            || ngx_http_llm_out_lit(ctx, "data: ") != NGX_OK
            || ngx_http_llm_out(ctx, p, len - 1) != NGX_OK
            || ngx_http_llm_out_lit(ctx, "\n\n") != NGX_OK)
        {
            ngx_http_llm_finalize(ctx, NGX_ERROR);
            return;
        }

    } else if (!ctx->sse_mode) {
        if (ngx_http_llm_proxy_out_carry(ctx) != NGX_OK) {
            ngx_http_llm_finalize(ctx, NGX_ERROR);
            return;
        }

        ngx_http_llm_proxy_json_end(ctx);

        /* too large to hold for a header: its cost comes as a trailer */

        if (ctx->attempt.body_truncated
            && ngx_http_llm_cost_header(ctx, 1) != NGX_OK)
        {
            ngx_http_llm_finalize(ctx, NGX_ERROR);
            return;
        }

    } else {
        /* a stream whose provider said it failed is not an answer */

        if (ctx->done_seen && !ctx->stream_failed) {
            ngx_http_llm_cache_store(ctx, NULL);
        }

        /* a stream's cost is known at its end: a trailer */

        if (ngx_http_llm_cost_header(ctx, 1) != NGX_OK) {
            ngx_http_llm_finalize(ctx, NGX_ERROR);
            return;
        }
    }

    rv = ngx_http_llm_out_flush(ctx, 1);

    ngx_http_llm_finalize(ctx, rv);
}


/* whose fault this attempt's error answer is */

static ngx_http_llm_perr_e
ngx_http_llm_proxy_kind(ngx_http_llm_ctx_t *ctx)
{
    u_char  *body;
    size_t   len;

    if (ctx->attempt.status < NGX_HTTP_BAD_REQUEST) {
        return ctx->attempt.status ? NGX_HTTP_LLM_PERR_NONE
                                   : NGX_HTTP_LLM_PERR_BACKEND;
    }

    if (ctx->attempt.discard) {
        body = ctx->errbuf;
        len = ctx->attempt.errlen;

    } else if (ctx->attempt.holding && !ctx->attempt.body_truncated) {
        body = ctx->body;
        len = ctx->attempt.body_len;

    } else {
        body = NULL;
        len = 0;
    }

    return ngx_http_llm_perr_kind(ctx->attempt.status, body, len,
                                  ctx->attempt.retry_after.len
                                  || ctx->attempt.retry_ms);
}


/*
 * The backend says its model is gone: parked for hours, not the breaker's
 * seconds, and said loudly, as only its configuration can bring it back
 */

static void
ngx_http_llm_proxy_retired(ngx_http_llm_ctx_t *ctx)
{
    ngx_str_t               *model;
    ngx_http_llm_backend_t  *b;

    b = ctx->backend;
    model = b->model.len ? &b->model : &ctx->model->name;

    ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log, 0,
                  "llm: backend \"%V\" retired model \"%V\" (HTTP %i): "
                  "not used for %M s", &b->url, model, ctx->attempt.status,
                  (ngx_msec_t) NGX_HTTP_LLM_RETIRE_MS / 1000);

    ngx_http_llm_backend_retire(ctx, NGX_HTTP_LLM_RETIRE_MS);
    ngx_http_llm_metrics_backend(ctx,
                                 "llm_backend_retired_total{backend=\"%s\"}",
                                 NULL);
}


/*
 * A held error body the client gets: in OpenAI's shape, which Mistral's
 * top-level and 422 shapes are not; it was masked before
 */

static ngx_int_t
ngx_http_llm_proxy_error_body(ngx_http_llm_ctx_t *ctx)
{
    ngx_str_t  out;
    ngx_int_t  rc;

    if (ctx->attempt.status < NGX_HTTP_BAD_REQUEST
        || ctx->attempt.body_truncated)
    {
        return NGX_OK;
    }

    rc = ngx_http_llm_perr_body(ctx->request->pool, ctx->attempt.status,
                                ctx->body, ctx->attempt.body_len, &out);

    if (rc == NGX_DECLINED) {
        return NGX_OK;
    }

    if (rc != NGX_OK
        || ngx_http_llm_grow(&ctx->body, &ctx->body_size, 0, out.len,
                             out.len)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(ctx->body, out.data, out.len);
    ctx->attempt.body_len = out.len;
    ctx->attempt.content_type.len = 0;      /* application/json */

    return NGX_OK;
}


/*
 * An event of a 200 stream: the model it names, once, and whether the
 * provider says it failed (OpenRouter, Groq), which makes the stream no
 * answer to cache and a failure of the backend's.  Only a hosted
 * backend's first event and those that mention an error are parsed.
 */

static void
ngx_http_llm_proxy_check(ngx_http_llm_ctx_t *ctx, u_char *p, size_t len)
{
    cJSON       *json;
    ngx_uint_t   kind;

    /* a local worker's model is not checked: its events are not parsed */

    if ((ctx->model_checked || !ctx->backend->hosted)
        && memmem(p, len, "error", sizeof("error") - 1) == NULL)
    {
        return;
    }

    json = cJSON_ParseWithLength((char *) p, len);

    if (json == NULL) {
        return;
    }

    ngx_http_llm_proxy_model(ctx, json);

    kind = ctx->stream_failed ? 0 : ngx_http_llm_perr_stream(json);

    if (kind) {
        ctx->stream_failed = 1;

        ngx_log_error(NGX_LOG_WARN, ctx->request->connection->log, 0,
                      "llm: backend \"%V\" sent an error mid-stream%s",
                      &ctx->backend->url,
                      kind == NGX_HTTP_LLM_PERR_STREAM_REQUEST
                      ? ", caused by the request" : "");

        /* the request's own error says nothing of the backend's health */

        if (kind == NGX_HTTP_LLM_PERR_STREAM_BACKEND) {
            ngx_http_llm_backend_failed(ctx);
        }
    }

    cJSON_Delete(json);
}


/*
 * An answer names another model than the one asked for: Together
 * redirects retired ids silently, at other prices.  A dated version of
 * the id ("gpt-4o" answered by "gpt-4o-2024-08-06") is the same model.
 */

static void
ngx_http_llm_proxy_model(ngx_http_llm_ctx_t *ctx, cJSON *json)
{
    u_char                  *m;
    size_t                   len, i;
    cJSON                   *model;
    ngx_http_llm_backend_t  *b;
    u_char                   name[128];

    /* the first event, or the body, says it: once per request */

    if (ctx->model_checked) {
        return;
    }

    ctx->model_checked = 1;

    b = ctx->backend;
    model = cJSON_GetObjectItemCaseSensitive(json, "model");

    if (b == NULL || !b->hosted || b->model.len == 0
        || !cJSON_IsString(model) || model->valuestring == NULL)
    {
        return;
    }

    m = (u_char *) model->valuestring;
    len = ngx_strnlen(m, b->model.len + 2);

    /* the same id, or a dated version of it: "-" and a digit after it */

    if (len >= b->model.len
        && ngx_strncmp(m, b->model.data, b->model.len) == 0
        && (len == b->model.len
            || (m[b->model.len] == '-' && len > b->model.len + 1
                && m[b->model.len + 1] >= '0'
                && m[b->model.len + 1] <= '9')))
    {
        return;
    }

    /* the provider's text, in a log line of ours: no control bytes */

    len = ngx_strnlen(m, sizeof(name));

    for (i = 0; i < len; i++) {
        name[i] = (m[i] < 0x20 || m[i] >= 0x7f) ? '?' : m[i];
    }

    ngx_log_error(NGX_LOG_WARN, ctx->request->connection->log, 0,
                  "llm: backend \"%V\" answered for model \"%*s\", "
                  "asked for \"%V\"", &b->url, len, name, &b->model);

    ngx_http_llm_metrics_backend(ctx, "llm_backend_model_mismatch_total"
                                      "{backend=\"%s\"}", NULL);
}


/*
 * A failed attempt, with what the backend said: the start of its body,
 * with the key masked and control bytes replaced, so that a provider
 * cannot write log lines of its own.
 */

static void
ngx_http_llm_proxy_log_body(ngx_http_llm_ctx_t *ctx, ngx_log_t *log,
    const char *reason, ngx_int_t status)
{
    u_char  *p, *key;
    size_t   n, k, len;

    len = ctx->attempt.errlen;
    p = ctx->errbuf;

    ngx_http_llm_proxy_mask(ctx, p, len);

    /* the end may hold the start of a key cut off by the buffer */

    key = ngx_http_llm_proxy_key(ctx, &n);

    for (k = key ? ngx_min(n - 1, len) : 0; k > 0; k--) {
        if (ngx_memcmp(p + len - k, key, k) == 0) {
            ngx_memset(p + len - k, '*', k);
            break;
        }
    }

    for (k = 0; k < len; k++) {
        if (p[k] < 0x20 || p[k] >= 0x7f) {
            p[k] = '?';
        }
    }

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "llm: backend \"%V\" failed: %s (status %i)%s%*s%s",
                  &ctx->backend->url, reason, status,
                  len ? ", body: \"" : "", len, p, len ? "\"" : "");
}


/* the key this attempt's backend was sent, NULL: none */

static u_char *
ngx_http_llm_proxy_key(ngx_http_llm_ctx_t *ctx, size_t *n)
{
    ngx_http_llm_backend_t  *b;

    b = ctx->backend;

    if (b == NULL || b->auth.len <= sizeof("Authorization: Bearer ") - 1) {
        return NULL;
    }

    *n = b->auth.len - (sizeof("Authorization: Bearer ") - 1);

    return b->auth.data + sizeof("Authorization: Bearer ") - 1;
}


/*
 * What the backend sends the client must not carry the key the gateway
 * sent it, should a provider quote it: masked in place.  A held body is
 * masked whole, an event whole, any other body piece by piece.
 */

static void
ngx_http_llm_proxy_mask(ngx_http_llm_ctx_t *ctx, u_char *buf, size_t len)
{
    u_char  *p, *last, *key;
    size_t   n;

    key = ngx_http_llm_proxy_key(ctx, &n);

    if (key == NULL) {
        return;
    }

    last = buf + len;

    for (p = buf;
         (p = memmem(p, last - p, key, n)) != NULL;
         p += n)
    {
        ngx_memset(p, '*', n);
    }
}


/*
 * A piece of a body passed on as it comes, masked: its last key length - 1
 * bytes wait for the next piece, in which a key begun there may end.
 */

static ngx_int_t
ngx_http_llm_proxy_out_masked(ngx_http_llm_ctx_t *ctx, u_char *p,
    size_t len)
{
    u_char  *c;
    size_t   n, k, w, total;

    if (ngx_http_llm_proxy_key(ctx, &n) == NULL || n < 2) {
        ngx_http_llm_proxy_mask(ctx, p, len);
        return ngx_http_llm_out(ctx, p, len);
    }

    k = n - 1;

    if (ctx->mask_carry_size < 2 * k) {
        /* once per request: only the attempt that answers gets here */

        ctx->mask_carry = ngx_pnalloc(ctx->request->pool, 2 * k);
        if (ctx->mask_carry == NULL) {
            return NGX_ERROR;
        }

        ctx->mask_carry_size = 2 * k;
        ctx->attempt.mask_carry_len = 0;
    }

    c = ctx->mask_carry;

    /* a key across the boundary is in the carry and the next k bytes */

    w = ngx_min(len, k);
    ngx_memcpy(c + ctx->attempt.mask_carry_len, p, w);
    total = ctx->attempt.mask_carry_len + w;

    ngx_http_llm_proxy_mask(ctx, c, total);

    if (len < k) {
        /* all of it is in the window now */

        if (total > k) {
            if (ngx_http_llm_out(ctx, c, total - k) != NGX_OK) {
                return NGX_ERROR;
            }

            ngx_memmove(c, c + total - k, k);
            total = k;
        }

        ctx->attempt.mask_carry_len = total;

        return NGX_OK;
    }

    ngx_memcpy(p, c + ctx->attempt.mask_carry_len, w);
    ngx_http_llm_proxy_mask(ctx, p, len);

    if (ngx_http_llm_out(ctx, c, ctx->attempt.mask_carry_len) != NGX_OK
        || ngx_http_llm_out(ctx, p, len - k) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(c, p + len - k, k);
    ctx->attempt.mask_carry_len = k;

    return NGX_OK;
}


/* the body is over: the bytes held back go too */

static ngx_int_t
ngx_http_llm_proxy_out_carry(ngx_http_llm_ctx_t *ctx)
{
    size_t  len;

    len = ctx->attempt.mask_carry_len;
    ctx->attempt.mask_carry_len = 0;

    return len ? ngx_http_llm_out(ctx, ctx->mask_carry, len) : NGX_OK;
}


/*
 * A whole non-streamed answer: its usage, and the cache.  It is masked
 * first, for the cache and, when held, for the client.
 */

static void
ngx_http_llm_proxy_json_end(ngx_http_llm_ctx_t *ctx)
{
    cJSON  *json;

    if (ctx->attempt.body_truncated) {
        if (ctx->attempt.status == NGX_HTTP_OK) {
            (void) ngx_http_llm_proxy_tail_usage(ctx);
        }

        return;
    }

    if (ctx->attempt.body_len == 0) {
        return;
    }

    ngx_http_llm_proxy_mask(ctx, ctx->body, ctx->attempt.body_len);

    json = cJSON_ParseWithLength((char *) ctx->body, ctx->attempt.body_len);

    if (json) {
        ngx_http_llm_proxy_model(ctx, json);
        (void) ngx_http_llm_proxy_usage(ctx,
                          cJSON_GetObjectItemCaseSensitive(json, "usage"));
        ngx_http_llm_cache_store(ctx, json);
        cJSON_Delete(json);
    }
}


/*
 * The usage of an answer too large to keep, from its kept end.  OpenAI,
 * vLLM and llama.cpp write it after the choices, so the last "usage" key
 * that starts an object which only the top-level object's remaining
 * members follow is it.  Inside a JSON string every quote is escaped, so
 * a text cannot pass for it.  A few candidates at most are parsed.
 */

#define NGX_HTTP_LLM_TAIL_TRIES  8

static ngx_int_t
ngx_http_llm_proxy_tail_usage(ngx_http_llm_ctx_t *ctx)
{
    u_char      *start, *last, *k, *v;
    cJSON       *usage;
    ngx_int_t    rc;
    ngx_uint_t   tries;
    const char  *end;

    if (ctx->tail == NULL || ctx->attempt.tail_len < sizeof("\"usage\"") - 1) {
        return NGX_DECLINED;
    }

    start = ctx->tail;
    last = start + ctx->attempt.tail_len;

    /* one past the last place a key may begin */
    k = last - (sizeof("\"usage\"") - 1) + 1;

    tries = 0;

    while (tries < NGX_HTTP_LLM_TAIL_TRIES) {

        /* the previous "usage" key, searched backwards */

        do {
            if (k == start) {
                return NGX_DECLINED;
            }

            k--;

        } while (*k != '"'
                 || ngx_memcmp(k, "\"usage\"", sizeof("\"usage\"") - 1)
                    != 0
                 || (k > start && k[-1] == '\\'));

        v = ngx_http_llm_json_space(k + sizeof("\"usage\"") - 1, last);

        if (v == last || *v != ':') {
            continue;
        }

        v = ngx_http_llm_json_space(v + 1, last);

        if (v == last || *v != '{') {
            continue;
        }

        tries++;

        usage = cJSON_ParseWithLengthOpts((char *) v, last - v, &end, 0);
        if (usage == NULL) {
            continue;
        }

        rc = ngx_http_llm_proxy_closes((u_char *) end, last)
             ? ngx_http_llm_proxy_usage(ctx, usage) : NGX_DECLINED;

        cJSON_Delete(usage);

        if (rc == NGX_OK) {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/* only members of one object, its end, and the end of the text follow */

static ngx_uint_t
ngx_http_llm_proxy_closes(u_char *p, u_char *last)
{
    cJSON       *rest;
    ngx_uint_t   ok;
    const char  *end;

    p = ngx_http_llm_json_space(p, last);

    if (p == last) {
        return 0;
    }

    if (*p == '}') {
        end = (char *) p + 1;
        ok = 1;

    } else if (*p == ',') {
        /* ',"a":1}' is what is left of '{"a":1}' */

        *p = '{';
        rest = cJSON_ParseWithLengthOpts((char *) p, last - p, &end, 0);
        *p = ',';

        ok = cJSON_IsObject(rest);
        cJSON_Delete(rest);

    } else {
        return 0;
    }

    if (!ok) {
        return 0;
    }

    return ngx_http_llm_json_space((u_char *) end, last) == last;
}


/*
 * The request is over.  A non-streamed answer that began is generated
 * whole; if its usage was never read (cut, left by its client, or too
 * large with no usage in its end), settlement charges the reservation.
 * A stream without usage is charged by the estimate of what it relayed.
 */

static void
ngx_http_llm_proxy_account(ngx_http_llm_ctx_t *ctx)
{
    ngx_log_t  *log;

    if (ctx->backend == NULL
        || !ctx->attempt.first_byte
        || ctx->attempt.status != NGX_HTTP_OK
        || ctx->cache.status == NGX_HTTP_LLM_CACHE_HIT
        || ctx->completion_tokens >= 0)
    {
        return;
    }

    log = ctx->request->connection->log;

    if (ctx->sse_mode) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "llm: stream of backend \"%V\" without usage, "
                      "%L completion tokens estimated", &ctx->backend->url,
                      ctx->stream_tokens);
        return;
    }

    ctx->usage_lost = 1;

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "llm: the usage of backend \"%V\"'s answer could not be "
                  "read", &ctx->backend->url);
}


/*
 * How long a rate-limited backend is parked: retry-after-ms, Retry-After
 * (seconds, decimal too, or an HTTP date), Groq's x-ratelimit-reset-*, in
 * that order; a second when none says, an hour at most, so that a hostile
 * header cannot park a backend for good
 */

static ngx_msec_t
ngx_http_llm_retry_after(ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t  ms;

    ms = ctx->attempt.retry_ms ? (ngx_int_t) ctx->attempt.retry_ms
                               : NGX_ERROR;

    if (ms == NGX_ERROR && ctx->attempt.retry_after.len) {
        ms = ngx_http_llm_perr_retry_after(ctx->attempt.retry_after.data,
                                           ctx->attempt.retry_after.len,
                                           ngx_time());
    }

    if (ms == NGX_ERROR && ctx->attempt.reset_ms) {
        ms = ctx->attempt.reset_ms;
    }

    ms = ngx_max(ms, NGX_HTTP_LLM_PARK_MIN_MS);

    return (ngx_msec_t) ngx_min(ms, NGX_HTTP_LLM_PARK_MAX_MS);
}


/* the rate-limit headers besides Retry-After, as milliseconds */

static void
ngx_http_llm_proxy_rate_header(ngx_http_llm_ctx_t *ctx, char *buf,
    size_t len)
{
    u_char     *p, *last;
    ngx_int_t   ms;
    ngx_str_t   v;

    if (ngx_http_llm_header_value(ctx->request->pool, buf, len,
                                  "retry-after-ms", &v))
    {
        /* milliseconds, a fraction ignored; saturated at the cap */

        last = v.data + v.len;
        ms = 0;

        for (p = v.data; p < last && *p >= '0' && *p <= '9'; p++) {
            if (ms < NGX_HTTP_LLM_PARK_MAX_MS) {
                ms = ms * 10 + (*p - '0');
            }
        }

        if (p != v.data) {
            ms = ngx_min(ms, NGX_HTTP_LLM_PARK_MAX_MS);
            ctx->attempt.retry_ms = ngx_max(ms, 1);
        }

        return;
    }

    if (ngx_http_llm_header_value(ctx->request->pool, buf, len,
                                  "x-ratelimit-reset-requests", &v) == NULL
        && ngx_http_llm_header_value(ctx->request->pool, buf, len,
                                     "x-ratelimit-reset-tokens", &v)
           == NULL)
    {
        return;
    }

    ms = ngx_http_llm_perr_duration(v.data, v.len);

    /* the sooner of the two: a request may go again then */

    if (ms > 0
        && (ctx->attempt.reset_ms == 0
            || (ngx_msec_t) ms < ctx->attempt.reset_ms))
    {
        ctx->attempt.reset_ms = ms;
    }
}


/*
 * The next attempt after a growing, jittered pause: llm_retry_backoff,
 * doubled per attempt, times 0.5 to 1.5, at most a second.
 */

static void
ngx_http_llm_proxy_backoff(ngx_http_llm_ctx_t *ctx)
{
    ngx_msec_t  delay;

    delay = ctx->conf->retry_backoff << ngx_min(ctx->attempts - 1, 10);
    delay = ngx_min(delay, 1000);
    delay = delay / 2 + (delay ? (ngx_msec_t) ngx_random() % delay : 0);

    if (delay == 0) {
        ngx_http_llm_proxy_next(ctx);
        return;
    }

    ngx_add_timer(&ctx->retry, delay);
}


static void
ngx_http_llm_proxy_release(ngx_http_llm_ctx_t *ctx)
{
    if (ctx->timer.timer_set) {
        ngx_del_timer(&ctx->timer);
    }

    ngx_http_llm_backend_done(ctx);

    if (ctx->easy) {
        ngx_http_llm_curl_put(ctx->easy);
        ctx->easy = NULL;
    }

    ctx->paused = 0;
}


void
ngx_http_llm_proxy_cleanup(ngx_http_llm_ctx_t *ctx)
{
    ngx_http_llm_proxy_release(ctx);

    /* before the settlement, which reads what this finds */
    ngx_http_llm_proxy_account(ctx);

    if (ctx->retry.timer_set) {
        ngx_del_timer(&ctx->retry);
    }

    if (ctx->headers) {
        curl_slist_free_all(ctx->headers);
        ctx->headers = NULL;
    }

    if (ctx->upstream_body) {
        cJSON_free(ctx->upstream_body);
        ctx->upstream_body = NULL;
    }

    if (ctx->stream_opts) {
        cJSON_Delete(ctx->stream_opts);
        ctx->stream_opts = NULL;
    }

    if (ctx->usage_chunk) {
        cJSON_free(ctx->usage_chunk);
        ctx->usage_chunk = NULL;
    }

    if (ctx->body) {
        ngx_free(ctx->body);
        ctx->body = NULL;
    }

    if (ctx->tail) {
        ngx_free(ctx->tail);
        ctx->tail = NULL;
    }

    ngx_http_llm_sse_free(&ctx->sse);
}


static size_t
ngx_http_llm_proxy_header_cb(char *buf, size_t size, size_t n, void *data)
{
    ngx_http_llm_ctx_t *ctx = data;

    size_t      len;
    ngx_int_t   status;
    ngx_str_t  *v;

    len = size * n;

    if (len >= 12 && ngx_strncmp(buf, "HTTP/", 5) == 0) {
        /* a new response (after 1xx, too): forget the previous headers */

        u_char  *p, *last;

        p = (u_char *) buf + 5;
        last = (u_char *) buf + len;

        while (p < last && *p != ' ') {
            p++;
        }

        status = (p + 4 <= last) ? ngx_atoi(p + 1, 3) : NGX_ERROR;

        ctx->attempt.status = (status == NGX_ERROR) ? 0 : status;
        ctx->attempt.content_type.len = 0;
        ctx->attempt.retry_after.len = 0;
        ctx->attempt.retry_ms = 0;
        ctx->attempt.reset_ms = 0;

        return len;
    }

    if (len <= 2 && (buf[0] == '\r' || buf[0] == '\n')) {
        if (ctx->attempt.status < 200) {
            return len;
        }

        ctx->attempt.headers_done = 1;

        /*
         * these are the backend's failures, not the client's: another
         * backend may well do better, so the body is only kept for the log.
         * Another 4xx is held and judged by its body when it ends (a model
         * gone, a key refused fail over too); until then the circuit is
         * left as it is.
         */

        if (ngx_http_llm_perr_status(ctx->attempt.status)) {
            ctx->attempt.discard = 1;

        } else if (ctx->attempt.status < NGX_HTTP_BAD_REQUEST) {
            ngx_http_llm_backend_ok(ctx);
        }

        return len;
    }

    v = ngx_http_llm_header_value(ctx->request->pool, buf, len,
                                  "content-type", &ctx->attempt.content_type);
    if (v == NULL) {
        v = ngx_http_llm_header_value(ctx->request->pool, buf, len,
                                      "retry-after",
                                      &ctx->attempt.retry_after);
    }

    if (v == NULL) {
        ngx_http_llm_proxy_rate_header(ctx, buf, len);
    }

    return len;
}


static size_t
ngx_http_llm_proxy_write_cb(char *buf, size_t size, size_t n, void *data)
{
    ngx_http_llm_ctx_t *ctx = data;

    size_t                     len, room;
    ngx_int_t                  rc;
    ngx_http_request_t        *r;
    ngx_http_core_loc_conf_t  *clcf;

    len = size * n;
    r = ctx->request;

    if (!ctx->attempt.first_byte) {
        ctx->attempt.first_byte = 1;
        ctx->ttfb = ngx_current_msec - ctx->attempt.start;
    }

    if (ctx->attempt.discard) {
        room = NGX_HTTP_LLM_ERRBUF_SIZE - ctx->attempt.errlen;
        room = ngx_min(room, len);
        ngx_memcpy(ctx->errbuf + ctx->attempt.errlen, buf, room);
        ctx->attempt.errlen += room;

        return len;
    }

    /*
     * backpressure: the client has enough to chew on, hold the upstream.
     * What the write filter holds without a flush (a postpone_output above
     * llm_stream_buffer) is pushed first: only what the socket refused
     * brings the write event that resumes the transfer.
     */

    if (ngx_http_llm_out_pending(ctx) >= ctx->conf->stream_buffer
        && ngx_http_llm_out_flush(ctx, 0) == NGX_ERROR)
    {
        ctx->client_error = 1;
        return 0;
    }

    if (ngx_http_llm_out_pending(ctx) >= ctx->conf->stream_buffer) {
        ctx->paused = 1;

        /* the client's send_timeout, not the upstream's, runs now */

        if (ctx->timer.timer_set) {
            ngx_del_timer(&ctx->timer);
        }

        if (!r->connection->write->timer_set) {
            clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
            ngx_add_timer(r->connection->write, clcf->send_timeout);
        }

        return CURL_WRITEFUNC_PAUSE;
    }

    ctx->attempt.bytes += len;     /* a paused piece comes again */

    ngx_add_timer(&ctx->timer, ctx->conf->idle_timeout);

    /*
     * a plain answer is held until it is whole when its cost is to go in
     * a header, and an error so that a key it quotes is masked whole; one
     * too large to hold goes on without
     */

    if (!ctx->out.headers_sent && !ctx->attempt.holding
        && (ctx->conf->cost_header || ctx->attempt.status != NGX_HTTP_OK)
        && !ngx_http_llm_proxy_sse_type(ctx))
    {
        ctx->attempt.holding = 1;
    }

    if (ctx->attempt.holding) {
        if (ngx_http_llm_proxy_tee(ctx, (u_char *) buf, len) != NGX_OK) {
            ctx->client_error = 1;
            return 0;
        }

        if (!ctx->attempt.body_truncated) {
            return len;
        }

        ctx->attempt.holding = 0;

        /* held so far, then this: one body to mask, across the two */

        if (ngx_http_llm_proxy_send_header(ctx) != NGX_OK
            || ngx_http_llm_proxy_out_masked(ctx, ctx->body,
                                             ctx->attempt.body_len)
               != NGX_OK
            || ngx_http_llm_proxy_out_masked(ctx, (u_char *) buf, len)
               != NGX_OK
            || ngx_http_llm_out_flush(ctx, 0) == NGX_ERROR)
        {
            ctx->client_error = 1;
            return 0;
        }

        /* the head is of no more use: its usage is read from the tail */

        ngx_free(ctx->body);
        ctx->body = NULL;
        ctx->body_size = 0;
        ctx->attempt.body_len = 0;

        return len;
    }

    if (!ctx->out.headers_sent) {
        if (ngx_http_llm_proxy_send_header(ctx) != NGX_OK) {
            ctx->client_error = 1;
            return 0;
        }
    }

    if (ctx->sse_mode) {
        rc = ngx_http_llm_sse_feed(&ctx->sse, (u_char *) buf, len,
                                   ngx_http_llm_proxy_event, ctx);

        if (rc == NGX_OK) {
            rc = ngx_http_llm_out_flush(ctx, 0);
        }

    } else {
        rc = ngx_http_llm_proxy_tee(ctx, (u_char *) buf, len);

        if (rc == NGX_OK) {
            rc = ngx_http_llm_proxy_out_masked(ctx, (u_char *) buf, len);
        }

        if (rc == NGX_OK) {
            rc = ngx_http_llm_out_pass(ctx);
        }
    }

    if (rc == NGX_ERROR || r->connection->error) {
        ctx->client_error = 1;
        return 0;
    }

    return len;
}


/* the upstream answers with server-sent events; parameters may follow */

static ngx_uint_t
ngx_http_llm_proxy_sse_type(ngx_http_llm_ctx_t *ctx)
{
    return ctx->attempt.content_type.len >= sizeof(NGX_HTTP_LLM_SSE_TYPE) - 1
           && ngx_strncasecmp(ctx->attempt.content_type.data,
                              (u_char *) NGX_HTTP_LLM_SSE_TYPE,
                              sizeof(NGX_HTTP_LLM_SSE_TYPE) - 1)
              == 0;
}


static ngx_int_t
ngx_http_llm_proxy_send_header(ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = ctx->request;

    ctx->out.headers_sent = 1;

    ctx->sse_mode = ctx->attempt.status == NGX_HTTP_OK
                    && ngx_http_llm_proxy_sse_type(ctx);

    ctx->sse.comment = ngx_http_llm_proxy_comment;

    r->headers_out.status = ctx->attempt.status ? ctx->attempt.status
                                                 : NGX_HTTP_BAD_GATEWAY;
    r->headers_out.content_length_n = ctx->attempt.holding
                                      ? (off_t) ctx->attempt.body_len : -1;

    if (ctx->attempt.content_type.len) {
        r->headers_out.content_type = ctx->attempt.content_type;

    } else {
        ngx_str_set(&r->headers_out.content_type, "application/json");
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    /* a proxy in front of us must not buffer the stream either */

    if (ctx->sse_mode
        && (ngx_http_llm_add_header(r, "Cache-Control", "no-cache")
            != NGX_OK
            || ngx_http_llm_add_header(r, "X-Accel-Buffering", "no")
               != NGX_OK))
    {
        return NGX_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * One complete upstream SSE event.  Usage: the gateway always asks for
 * it; a client that did too gets exactly one OpenAI-shaped usage chunk,
 * {"choices":[],"usage":...}, before [DONE], the provider's own or,
 * where it sends none (Mistral's usage on its last content chunk, Groq's
 * x_groq), one written from the usage it sent.  A client that did not
 * gets none: usage is taken out of the events that carry it, and an
 * event left with no choices (metadata only) is not sent at all.
 */

static ngx_int_t
ngx_http_llm_proxy_event(void *data, u_char *payload, size_t len)
{
    ngx_http_llm_ctx_t *ctx = data;

    char       *s;
    cJSON      *json, *usage, *choices, *xgroq;
    ngx_int_t   rc;
    ngx_uint_t  bare;

    if (ngx_http_llm_is_lit(payload, len, "[DONE]")) {
        ctx->done_seen = 1;

        if (ctx->usage_chunk && !ctx->usage_sent) {
            ctx->usage_sent = 1;

            if (ngx_http_llm_proxy_data(ctx, (u_char *) ctx->usage_chunk,
                                        ngx_strlen(ctx->usage_chunk))
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        return ngx_http_llm_out_lit(ctx, "data: [DONE]\n\n");
    }

    ngx_http_llm_proxy_mask(ctx, payload, len);

    /* without usage at the end, a stream is charged by these */
    ngx_http_llm_proxy_count(ctx, payload, len);

    ngx_http_llm_proxy_check(ctx, payload, len);

    /* only usage, or the cache, needs the event parsed */

    if (ctx->cache.assembled == NULL
        && memmem(payload, len, "\"usage\"", sizeof("\"usage\"") - 1)
           == NULL)
    {
        goto forward;
    }

    json = cJSON_ParseWithLength((char *) payload, len);

    if (json == NULL) {
        goto forward;
    }

    ngx_http_llm_cache_feed(ctx, json);

    choices = cJSON_GetObjectItemCaseSensitive(json, "choices");
    usage = cJSON_GetObjectItemCaseSensitive(json, "usage");

    /* no choice in it, and no error either: only usage and metadata */

    bare = (!cJSON_IsArray(choices) || choices->child == NULL)
           && cJSON_GetObjectItemCaseSensitive(json, "error") == NULL;

    if (!cJSON_IsObject(usage)) {
        /* Groq's streams carry it here */
        xgroq = cJSON_GetObjectItemCaseSensitive(json, "x_groq");
        usage = cJSON_GetObjectItemCaseSensitive(xgroq, "usage");

        if (!cJSON_IsObject(usage)) {
            cJSON_Delete(json);
            goto forward;
        }

        rc = ngx_http_llm_proxy_usage(ctx, usage);

        if (ctx->client_usage) {
            if (rc == NGX_OK
                && ngx_http_llm_proxy_usage_chunk(ctx, json, usage)
                   != NGX_OK)
            {
                cJSON_Delete(json);
                return NGX_ERROR;
            }

            cJSON_Delete(json);
            goto forward;
        }

        /* the client did not ask: Groq's copy of the usage goes too */

        if (bare) {
            cJSON_Delete(json);
            return NGX_OK;
        }

        cJSON_DeleteItemFromObjectCaseSensitive(xgroq, "usage");
        goto print;
    }

    (void) ngx_http_llm_proxy_usage(ctx, usage);

    if (ctx->client_usage) {
        if (!bare) {
            /* usage on a choice's chunk: the usage chunk is still owed */

            rc = ngx_http_llm_proxy_usage_chunk(ctx, json, usage);
            cJSON_Delete(json);

            if (rc != NGX_OK) {
                return NGX_ERROR;
            }

            goto forward;
        }

        ctx->usage_sent = 1;

        if (cJSON_IsArray(choices)) {
            cJSON_Delete(json);
            goto forward;
        }

        /* the shape OpenAI's clients expect: "choices" is there, empty */

        if (cJSON_AddArrayToObject(json, "choices") == NULL) {
            cJSON_Delete(json);
            return NGX_ERROR;
        }

        goto print;
    }

    /* the client did not ask for usage: hide what we asked for */

    if (bare) {
        cJSON_Delete(json);
        return NGX_OK;
    }

    cJSON_DeleteItemFromObjectCaseSensitive(json, "usage");

print:

    s = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);

    if (s == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_llm_proxy_data(ctx, (u_char *) s, ngx_strlen(s));

    cJSON_free(s);

    return rc;

forward:

    return ngx_http_llm_proxy_data(ctx, payload, len);
}


/*
 * The usage chunk a provider did not send, written from an event with
 * usage: its id, object, created, model and fingerprint, no choices, and
 * that usage.  The last such event's is kept, one at a time, until
 * [DONE].
 */

static ngx_int_t
ngx_http_llm_proxy_usage_chunk(ngx_http_llm_ctx_t *ctx, cJSON *json,
    cJSON *usage)
{
    char        *s;
    cJSON       *out, *item;
    ngx_uint_t   i;

    static const char  *keep[] = {
        "id", "object", "created", "model", "system_fingerprint", NULL
    };

    if (ctx->usage_sent) {
        return NGX_OK;
    }

    out = cJSON_CreateObject();
    if (out == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; keep[i]; i++) {
        item = cJSON_GetObjectItemCaseSensitive(json, keep[i]);

        if (item && !cJSON_AddItemReferenceToObject(out, keep[i], item)) {
            goto failed;
        }
    }

    if (cJSON_AddArrayToObject(out, "choices") == NULL
        || !cJSON_AddItemReferenceToObject(out, "usage", usage))
    {
        goto failed;
    }

    s = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);

    if (s == NULL) {
        return NGX_ERROR;
    }

    if (ctx->usage_chunk) {
        cJSON_free(ctx->usage_chunk);
    }

    ctx->usage_chunk = s;

    return NGX_OK;

failed:

    cJSON_Delete(out);
    return NGX_ERROR;
}


/*
 * An event's data as the client gets it: each line of a multi-line value
 * keeps its "data: " prefix.
 */

static ngx_int_t
ngx_http_llm_proxy_data(ngx_http_llm_ctx_t *ctx, u_char *p, size_t len)
{
    u_char  *nl, *last;

    last = p + len;

    for ( ;; ) {
        nl = ngx_strlchr(p, last, '\n');

        if (ngx_http_llm_out_lit(ctx, "data: ") != NGX_OK
            || ngx_http_llm_out(ctx, p, (nl ? nl : last) - p) != NGX_OK
            || ngx_http_llm_out_lit(ctx, "\n") != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (nl == NULL) {
            break;
        }

        p = nl + 1;
    }

    return ngx_http_llm_out_lit(ctx, "\n");
}


/*
 * An upstream comment, such as a keep-alive during a long silent
 * reasoning phase: a client behind a proxy with an idle timeout needs it.
 * It goes on at once, as a block of its own: events leave whole, so it
 * never lands inside one.
 */

static ngx_int_t
ngx_http_llm_proxy_comment(void *data, u_char *p, size_t len)
{
    ngx_http_llm_ctx_t *ctx = data;

    ngx_http_llm_proxy_mask(ctx, p, len);

    if (ngx_http_llm_out(ctx, p, len) != NGX_OK
        || ngx_http_llm_out_lit(ctx, "\n\n") != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * What an event carries for the client, read in one lexical pass without
 * parsing it: the string values of "content", "reasoning_content",
 * "reasoning", "refusal" and tool calls' "arguments", in every choice.
 * Each non-empty one counts as its escaped length / 4 tokens, rounded up:
 * about what BPE tokenizers give for text, never less than one, which is
 * what llama.cpp and vLLM send per event.  (Byte-level worst cases, one
 * token per byte, are not assumed: an honest cut stream would then pay
 * four times its tokens.)  ctx->chunks counts the events with content.
 */

static void
ngx_http_llm_proxy_count(ngx_http_llm_ctx_t *ctx, u_char *p, size_t len)
{
    u_char      *last, *key;
    size_t       n, klen;
    ngx_uint_t   content, is_content;

    last = p + len;
    content = 0;

    while (p < last) {
        p = memchr(p, '"', last - p);
        if (p == NULL) {
            break;
        }

        key = ++p;
        p = ngx_http_llm_json_string_end(p, last);

        if (p == last) {
            break;
        }

        klen = p - key;
        p = ngx_http_llm_json_space(p + 1, last);

        if (p == last || *p != ':') {
            /* a value, not a key */
            continue;
        }

        p = ngx_http_llm_json_space(p + 1, last);

        is_content = ngx_http_llm_is_lit(key, klen, "content");

        if (!(is_content
              || ngx_http_llm_is_lit(key, klen, "reasoning_content")
              || ngx_http_llm_is_lit(key, klen, "reasoning")
              || ngx_http_llm_is_lit(key, klen, "arguments")
              || ngx_http_llm_is_lit(key, klen, "refusal")))
        {
            continue;
        }

        if (p == last || *p != '"') {
            continue;
        }

        key = ++p;
        p = ngx_http_llm_json_string_end(p, last);

        if (p == last) {
            break;
        }

        n = p++ - key;

        if (n) {
            ctx->stream_tokens += (n + 3) / 4;
            content |= is_content;
        }
    }

    if (content) {
        ctx->chunks++;
    }
}


/* past JSON whitespace */

static u_char *
ngx_http_llm_json_space(u_char *p, u_char *last)
{
    while (p < last && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
    {
        p++;
    }

    return p;
}


/* the closing quote of a JSON string that starts at p, or last */

static u_char *
ngx_http_llm_json_string_end(u_char *p, u_char *last)
{
    while (p < last) {
        if (*p == '\\') {
            if (last - p < 2) {
                return last;
            }

            p += 2;
            continue;
        }

        if (*p == '"') {
            return p;
        }

        p++;
    }

    return last;
}


/*
 * NGX_OK: the completion tokens were read.  A count no backend could
 * produce (and that would overflow the arithmetic) is no count.
 */

#define NGX_HTTP_LLM_USAGE_MAX  1e12

static ngx_int_t
ngx_http_llm_proxy_usage(ngx_http_llm_ctx_t *ctx, cJSON *usage)
{
    cJSON  *item;

    if (!cJSON_IsObject(usage)) {
        return NGX_DECLINED;
    }

    item = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens");
    if (cJSON_IsNumber(item) && item->valuedouble >= 0
        && item->valuedouble <= NGX_HTTP_LLM_USAGE_MAX)
    {
        ctx->prompt_tokens = (ngx_int_t) item->valuedouble;
    }

    item = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens");
    if (cJSON_IsNumber(item) && item->valuedouble >= 0
        && item->valuedouble <= NGX_HTTP_LLM_USAGE_MAX)
    {
        ctx->completion_tokens = (ngx_int_t) item->valuedouble;
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/*
 * The whole request body is in the kernel's send buffer: the earliest
 * moment the backend may have it, so from here on it may be spending
 * compute on it (a response would come too late for a client that leaves
 * during a non-streamed generation).
 */

static int
ngx_http_llm_proxy_progress_cb(void *data, curl_off_t dltotal,
    curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    ngx_http_llm_ctx_t *ctx = data;

    if (ultotal > 0 && ulnow >= ultotal) {
        ctx->attempt.reached_backend = 1;
    }

    return 0;
}


/*
 * A copy of a non-streamed body, to read its usage at the end: whole up to
 * llm_max_response_body, then only its last NGX_HTTP_LLM_TAIL_SIZE bytes.
 */

static ngx_int_t
ngx_http_llm_proxy_tee(ngx_http_llm_ctx_t *ctx, u_char *p, size_t len)
{
    size_t   need, n;

    if (ctx->attempt.body_truncated) {
        return ngx_http_llm_proxy_tail(ctx, p, len);
    }

    need = ctx->attempt.body_len + len;

    if (need > ctx->conf->max_response_body) {
        ctx->attempt.body_truncated = 1;
        ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                      "llm: response larger than llm_max_response_body, "
                      "its usage is read from its last %uz bytes",
                      (size_t) NGX_HTTP_LLM_TAIL_SIZE);

        n = ngx_min(ctx->attempt.body_len, NGX_HTTP_LLM_TAIL_SIZE);

        if (ngx_http_llm_proxy_tail(ctx,
                                    ctx->body + ctx->attempt.body_len - n, n)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (!ctx->attempt.holding && ctx->body) {
            /* a held head still goes to the client, then it is freed */
            ngx_free(ctx->body);
            ctx->body = NULL;
            ctx->body_size = 0;
            ctx->attempt.body_len = 0;
        }

        return ngx_http_llm_proxy_tail(ctx, p, len);
    }

    if (ngx_http_llm_grow(&ctx->body, &ctx->body_size, ctx->attempt.body_len,
                          need, ctx->conf->max_response_body)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(ctx->body + ctx->attempt.body_len, p, len);
    ctx->attempt.body_len += len;

    return NGX_OK;
}


/*
 * The last bytes of a body, in a buffer of twice their size: when it is
 * full, the last NGX_HTTP_LLM_TAIL_SIZE bytes move to its start, so each
 * byte moves at most once per NGX_HTTP_LLM_TAIL_SIZE bytes appended.
 */

static ngx_int_t
ngx_http_llm_proxy_tail(ngx_http_llm_ctx_t *ctx, u_char *p, size_t len)
{
    size_t  keep;

    if (ctx->tail == NULL) {
        ctx->tail = ngx_alloc(2 * NGX_HTTP_LLM_TAIL_SIZE, ngx_cycle->log);
        if (ctx->tail == NULL) {
            return NGX_ERROR;
        }

        ctx->attempt.tail_len = 0;
    }

    if (len == 0) {
        return NGX_OK;             /* p may be NULL */
    }

    if (len >= NGX_HTTP_LLM_TAIL_SIZE) {
        ngx_memcpy(ctx->tail, p + len - NGX_HTTP_LLM_TAIL_SIZE,
                   NGX_HTTP_LLM_TAIL_SIZE);
        ctx->attempt.tail_len = NGX_HTTP_LLM_TAIL_SIZE;
        return NGX_OK;
    }

    if (ctx->attempt.tail_len + len > 2 * NGX_HTTP_LLM_TAIL_SIZE) {
        keep = NGX_HTTP_LLM_TAIL_SIZE - len;
        ngx_memmove(ctx->tail, ctx->tail + ctx->attempt.tail_len - keep, keep);
        ctx->attempt.tail_len = keep;
    }

    ngx_memcpy(ctx->tail + ctx->attempt.tail_len, p, len);
    ctx->attempt.tail_len += len;

    return NGX_OK;
}


static void
ngx_http_llm_proxy_timeout(ngx_event_t *ev)
{
    ngx_http_llm_ctx_t  *ctx;

    ctx = (ngx_http_llm_ctx_t *) ((u_char *) ev
                                  - offsetof(ngx_http_llm_ctx_t, timer));

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "llm: backend \"%V\" timed out %s",
                  &ctx->backend->url,
                  ctx->attempt.first_byte ? "between chunks"
                  : ctx->stream ? "before first byte" : "generating");

    ngx_cpystrn((u_char *) ctx->attempt.curl_error,
                (u_char *) (ctx->attempt.first_byte ? "idle timeout"
                            : ctx->stream ? "first byte timeout"
                            : "generation timeout"),
                CURL_ERROR_SIZE);

    ngx_http_llm_proxy_done(ctx, CURLE_OPERATION_TIMEDOUT);
}


/* the client's socket can take more: flush, then let the upstream go on */

void
ngx_http_llm_proxy_writer(ngx_http_request_t *r)
{
    ngx_http_llm_ctx_t  *ctx;

    if (ngx_http_llm_out_write(r) != NGX_OK) {
        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    if (ctx->paused && ctx->easy) {
        ctx->paused = 0;
        ngx_add_timer(&ctx->timer, ctx->conf->idle_timeout);

        /* may deliver the held data through the write callback at once */
        curl_easy_pause(ctx->easy, CURLPAUSE_CONT);

        ngx_http_llm_curl_process();
    }
}


/*
 * configuration: llm_ssl_trusted_certificate, llm_app_url and
 * llm_app_title
 */


/* llm_ssl_trusted_certificate FILE: the CAs hosted backends are checked by */

char *
ngx_http_llm_ssl_trusted(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ngx_str_t  *value;

    if (lmcf->ssl_trusted.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    lmcf->ssl_trusted = value[1];

    /* NUL-terminated, for libcurl */
    if (ngx_conf_full_name(cf->cycle, &lmcf->ssl_trusted, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_file_info(lmcf->ssl_trusted.data, &(ngx_file_info_t) { 0 })
        == NGX_FILE_ERROR)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"llm_ssl_trusted_certificate\": cannot read "
                           "\"%V\"", &lmcf->ssl_trusted);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* llm_app_url URL: OpenRouter's attribution, as "HTTP-Referer" */

char *
ngx_http_llm_app_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    u_char     *p;
    ngx_str_t  *value;

    if (lmcf->app_url.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_llm_app_printable(&value[1]) != NGX_OK) {
        return "must be one line of printable characters";
    }

    if (ngx_strncasecmp(value[1].data, (u_char *) "https://", 8) != 0
        && ngx_strncasecmp(value[1].data, (u_char *) "http://", 7) != 0)
    {
        return "must be an http:// or https:// URL";
    }

    p = ngx_pnalloc(cf->pool, sizeof("HTTP-Referer: ") + value[1].len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    lmcf->app_url.data = p;
    p = ngx_cpymem(p, "HTTP-Referer: ", sizeof("HTTP-Referer: ") - 1);
    p = ngx_cpymem(p, value[1].data, value[1].len);
    *p = '\0';
    lmcf->app_url.len = p - lmcf->app_url.data;

    return NGX_CONF_OK;
}


/* llm_app_title TEXT: OpenRouter's name of the application */

char *
ngx_http_llm_app_title(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ngx_str_t  *value;

    if (lmcf->app_title.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > NGX_HTTP_LLM_APP_TITLE_MAX) {
        return "must be 1 to 128 bytes long";
    }

    if (ngx_http_llm_app_printable(&value[1]) != NGX_OK) {
        return "must be one line of printable characters";
    }

    lmcf->app_title = value[1];

    return NGX_CONF_OK;
}


/*
 * At the end of http{}: the title's headers, "nginx-llm-gateway" unless
 * told, and only with a referer to go with them.
 */

char *
ngx_http_llm_app_init_conf(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf)
{
    u_char     *p;
    ngx_str_t  *t;

    if (lmcf->app_url.data == NULL) {
        if (lmcf->app_title.data) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"llm_app_title\" needs \"llm_app_url\": "
                               "OpenRouter attributes nothing to a title "
                               "without a referer");
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (lmcf->app_title.data == NULL) {
        ngx_str_set(&lmcf->app_title, "nginx-llm-gateway");
    }

    t = &lmcf->app_title;

    p = ngx_pnalloc(cf->pool, sizeof("X-OpenRouter-Title: ") + t->len
                              + sizeof("X-Title: ") + t->len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    lmcf->app_title_h.data = p;
    p = ngx_cpymem(p, "X-OpenRouter-Title: ",
                   sizeof("X-OpenRouter-Title: ") - 1);
    p = ngx_cpymem(p, t->data, t->len);
    lmcf->app_title_h.len = p - lmcf->app_title_h.data;
    *p++ = '\0';

    lmcf->app_title_x.data = p;
    p = ngx_cpymem(p, "X-Title: ", sizeof("X-Title: ") - 1);
    p = ngx_cpymem(p, t->data, t->len);
    lmcf->app_title_x.len = p - lmcf->app_title_x.data;
    *p = '\0';

    return NGX_CONF_OK;
}


/* a header's value: no control bytes, which would end or split it */

static ngx_int_t
ngx_http_llm_app_printable(ngx_str_t *v)
{
    u_char  *p, *last;

    for (p = v->data, last = p + v->len; p < last; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}
