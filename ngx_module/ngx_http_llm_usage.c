
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * What a request used and what it costs, by one set of rules for the
 * quota's settlement, the metrics and the x-llm-cost-usd header.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_output.h"
#include "ngx_http_llm_usage.h"


/*
 * The cost of tokens at a price in micro-dollars per million, rounded up;
 * -1 when it is past NGX_HTTP_LLM_AMOUNT_MAX or the tokens are negative
 */

int64_t
ngx_http_llm_cost_exact(int64_t prompt, int64_t completion,
    ngx_uint_t price_in, ngx_uint_t price_out)
{
    uint64_t  a, b, max;

    if (prompt < 0 || completion < 0) {
        return -1;
    }

    /* AMOUNT_MAX micro-dollars in millionths; 1e19 fits in 64 bits */
    max = (uint64_t) NGX_HTTP_LLM_AMOUNT_MAX * 1000000;

    if ((price_in && (uint64_t) prompt > max / price_in)
        || (price_out && (uint64_t) completion > max / price_out))
    {
        return -1;
    }

    a = (uint64_t) prompt * price_in;
    b = (uint64_t) completion * price_out;

    if (a > max - b) {
        return -1;
    }

    return (int64_t) ((a + b + 999999) / 1000000);
}


/* the same, for what was used: an absurd amount is charged the most */

int64_t
ngx_http_llm_cost(int64_t prompt, int64_t completion, ngx_uint_t price_in,
    ngx_uint_t price_out)
{
    int64_t  n;

    n = ngx_http_llm_cost_exact(ngx_max(prompt, 0), ngx_max(completion, 0),
                                price_in, price_out);

    return n < 0 ? NGX_HTTP_LLM_AMOUNT_MAX : n;
}


/*
 * What a request used and costs, by the same rules for quota and metrics.
 * Usage that cannot be read is charged, never forgiven:
 *
 *   ending                                  tokens charged
 *   ------------------------------------    -----------------------------
 *   a cache hit                             the entry's, at
 *                                           llm_cache_charge of its cost
 *   no backend reached                      0
 *   the backend answered an error status    0
 *   reached, but nothing came back (the     the prompt estimate
 *   client left, the attempt timed out)
 *   usage reported                          as reported
 *   a stream without usage                  prompt (reported or estimated)
 *                                           + the streamed tokens
 *   a 200 answer without usage (too large,  the reservation: prompt
 *   cut, unparsable)                        estimate + max_tokens
 *
 * plus, for every attempt that failed over after the backend got the
 * request (see ngx_http_llm_usage_abandon()):
 *
 *   an error status                         0
 *   no answer (cut, timed out)              the prompt estimate
 *   a 200 answer cut before its end         the prompt estimate + a token
 *                                           per 4 bytes received, at most
 *                                           max_tokens
 *
 * Costs are at the price of the backend of each attempt.
 */

void
ngx_http_llm_usage(ngx_http_llm_ctx_t *ctx, int64_t *prompt,
    int64_t *completion, int64_t *cost)
{
    int64_t                  cached;
    ngx_http_llm_backend_t  *b;

    b = ctx->backend;

    *prompt = 0;
    *completion = 0;
    *cost = 0;

    if (ctx->cache.status == NGX_HTTP_LLM_CACHE_HIT) {
        /*
         * a hit costs the location's share of what the answer first
         * cost, and no backend capacity: its tokens are not in the TPM
         */

        *prompt = ngx_max(ctx->prompt_tokens, 0);
        *completion = ngx_max(ctx->completion_tokens, 0);

        cached = ngx_min(ngx_max(ctx->cache.cost, 0),
                         NGX_HTTP_LLM_AMOUNT_MAX);
        *cost = (cached * (int64_t) ctx->conf->cache_charge + 99) / 100;
        return;
    }

    /* a first byte means the body was handed over, whoever says so */

    if (b == NULL || ctx->attempt.billed
        || !(ctx->attempt.reached_backend || ctx->attempt.first_byte)
        || (ctx->attempt.status && ctx->attempt.status != NGX_HTTP_OK))
    {
        goto lost;
    }

    if (!ctx->attempt.first_byte) {
        *prompt = ctx->prompt_estimate;

    } else if (ctx->usage_lost
               || (ctx->completion_tokens < 0 && !ctx->sse_mode))
    {
        /* the answer was generated in full before its first byte */
        *prompt = ctx->prompt_estimate;
        *completion = ctx->max_tokens;

    } else {
        *prompt = ctx->prompt_tokens >= 0 ? ctx->prompt_tokens
                                          : ctx->prompt_estimate;

        /* a stream without usage: at least a token per delta */
        *completion = ctx->completion_tokens >= 0
                      ? ctx->completion_tokens
                      : ngx_max(ctx->stream_tokens, (int64_t) ctx->chunks);
    }

    *prompt = ngx_min(ngx_max(*prompt, 0), NGX_HTTP_LLM_AMOUNT_MAX);
    *completion = ngx_min(ngx_max(*completion, 0), NGX_HTTP_LLM_AMOUNT_MAX);
    *cost = ngx_http_llm_cost(*prompt, *completion, b->price_in,
                              b->price_out);

lost:

    /* each is at most AMOUNT_MAX: the sums cannot overflow */

    *prompt = ngx_min(*prompt + ctx->lost_prompt, NGX_HTTP_LLM_AMOUNT_MAX);
    *completion = ngx_min(*completion + ctx->lost_completion,
                          NGX_HTTP_LLM_AMOUNT_MAX);
    *cost = ngx_min(*cost + ctx->lost_cost, NGX_HTTP_LLM_AMOUNT_MAX);
}


/*
 * An attempt fails over: what it consumed on its backend is added to the
 * request's charge now, at that backend's prices (the next attempt may
 * be on another one)
 */

void
ngx_http_llm_usage_abandon(ngx_http_llm_ctx_t *ctx)
{
    int64_t                  prompt, completion;
    ngx_http_llm_backend_t  *b;

    b = ctx->backend;

    if (b == NULL || ctx->attempt.billed
        || !(ctx->attempt.reached_backend || ctx->attempt.first_byte)
        || ctx->attempt.discard
        || (ctx->attempt.status && ctx->attempt.status != NGX_HTTP_OK))
    {
        return;
    }

    ctx->attempt.billed = 1;

    prompt = ngx_min(ngx_max(ctx->prompt_estimate, 0),
                     NGX_HTTP_LLM_AMOUNT_MAX);
    completion = 0;

    if (ctx->attempt.first_byte && ctx->attempt.status == NGX_HTTP_OK) {
        completion = (int64_t) (ctx->attempt.bytes / 4 + 1);
        completion = ngx_min(completion, ngx_max(ctx->max_tokens, 0));
        completion = ngx_min(completion, NGX_HTTP_LLM_AMOUNT_MAX);
    }

    ctx->lost_prompt = ngx_min(ctx->lost_prompt + prompt,
                               NGX_HTTP_LLM_AMOUNT_MAX);
    ctx->lost_completion = ngx_min(ctx->lost_completion + completion,
                                   NGX_HTTP_LLM_AMOUNT_MAX);
    ctx->lost_cost = ngx_min(ctx->lost_cost
                             + ngx_http_llm_cost(prompt, completion,
                                                 b->price_in, b->price_out),
                             NGX_HTTP_LLM_AMOUNT_MAX);
}


/* "x-llm-cost-usd", as a header or as a trailer of a chunked answer */

ngx_int_t
ngx_http_llm_cost_header(ngx_http_llm_ctx_t *ctx, ngx_uint_t trailer)
{
    u_char               *p;
    int64_t               prompt, completion, cost;
    ngx_http_request_t   *r;

    if (!ctx->conf->cost_header) {
        return NGX_OK;
    }

    r = ctx->request;

    ngx_http_llm_usage(ctx, &prompt, &completion, &cost);

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 8);
    if (p == NULL) {
        return NGX_ERROR;
    }

    *ngx_sprintf(p, "%L.%06L", cost / 1000000, cost % 1000000) = '\0';

    return ngx_http_llm_push_header(trailer ? &r->headers_out.trailers
                                            : &r->headers_out.headers,
                                    "x-llm-cost-usd", (char *) p);
}
