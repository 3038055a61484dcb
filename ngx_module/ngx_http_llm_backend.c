
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Backend health and choice, shared by all workers: a circuit breaker per
 * backend (closed, open, half-open with one probe), the cool-down a 429's
 * Retry-After asks for, and the outstanding requests that balance equal
 * backends.  Local workers come first, then hosted providers, cheapest
 * first.
 */


#include "ngx_http_llm.h"


#define NGX_HTTP_LLM_CLOSED     0
#define NGX_HTTP_LLM_OPEN       1
#define NGX_HTTP_LLM_HALF_OPEN  2


typedef struct {
    ngx_atomic_t                outstanding;
    ngx_atomic_t                failures;       /* in a row */
    ngx_atomic_t                state;
    ngx_atomic_t                opened;         /* wall clock, ms */
    ngx_atomic_t                probe;          /* a half-open probe runs */
    ngx_atomic_t                cool_until;     /* wall clock, ms */
} ngx_http_llm_health_t;


static ngx_int_t ngx_http_llm_backend_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_llm_health_t *ngx_http_llm_health(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_backend_t *b);
static ngx_msec_t ngx_http_llm_now(void);
static ngx_uint_t ngx_http_llm_backend_rank(ngx_http_llm_backend_t *b);


/*
 * The hosted providers.  Mistral's API rejects "stream_options" and sends
 * usage on its last chunk anyway; Groq puts a stream's usage in
 * "x_groq"; OpenRouter counts usage when asked with "usage", and wants
 * to know the calling application.
 */

static ngx_http_llm_provider_t  ngx_http_llm_providers[] = {
    { ngx_string("together"), "https://api.together.xyz/v1", 1, 0, 0, 0 },
    { ngx_string("fireworks"), "https://api.fireworks.ai/inference/v1",
      1, 0, 0, 0 },
    { ngx_string("deepinfra"), "https://api.deepinfra.com/v1/openai",
      1, 0, 0, 0 },
    { ngx_string("openrouter"), "https://openrouter.ai/api/v1", 0, 1, 1, 0 },
    { ngx_string("mistral"), "https://api.mistral.ai/v1", 0, 0, 0, 0 },
    { ngx_string("groq"), "https://api.groq.com/openai/v1", 0, 0, 0, 1 },
    { ngx_null_string, NULL, 0, 0, 0, 0 }
};


ngx_http_llm_provider_t *
ngx_http_llm_provider_find(ngx_str_t *name)
{
    ngx_http_llm_provider_t  *p;

    for (p = ngx_http_llm_providers; p->name.len; p++) {
        if (p->name.len == name->len
            && ngx_strncasecmp(p->name.data, name->data, name->len) == 0)
        {
            return p;
        }
    }

    return NULL;
}


/* at the end of http{}: ids for the backends, and their shared zone */

char *
ngx_http_llm_backend_init(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf)
{
    ngx_str_t                name;
    ngx_uint_t               i, j, n;
    ngx_http_llm_model_t    *m;
    ngx_http_llm_backend_t  *b;

    n = 0;
    m = lmcf->models.elts;

    for (i = 0; i < lmcf->models.nelts; i++) {
        b = m[i].backends.elts;

        for (j = 0; j < m[i].backends.nelts; j++) {
            b[j].id = n++;
        }

        if (m[i].backends.nelts > 64) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"llm_model\" \"%V\" has more than 64 "
                               "backends", &m[i].name);
            return NGX_CONF_ERROR;
        }
    }

    if (n == 0) {
        return NGX_CONF_OK;
    }

    ngx_str_set(&name, "llm_backends");

    lmcf->health = ngx_shared_memory_add(cf, &name,
                                 ngx_max(64 * 1024,
                                         8 * ngx_pagesize
                                         + n * sizeof(ngx_http_llm_health_t)),
                                 &ngx_http_llm_module);
    if (lmcf->health == NULL) {
        return NGX_CONF_ERROR;
    }

    lmcf->health->init = ngx_http_llm_backend_init_zone;
    lmcf->health->data = (void *) n;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_llm_backend_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    size_t                  n;
    ngx_slab_pool_t        *shpool;
    ngx_http_llm_health_t  *h;

    n = (size_t) shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    /*
     * backends get new ids with every configuration: health starts over,
     * a fresh block each time
     */

    h = ngx_slab_calloc(shpool, n * sizeof(ngx_http_llm_health_t));
    if (h == NULL) {
        return NGX_ERROR;
    }

    if (data) {
        ngx_slab_free(shpool, data);
    }

    shm_zone->data = h;

    return NGX_OK;
}


static ngx_http_llm_health_t *
ngx_http_llm_health(ngx_http_llm_ctx_t *ctx, ngx_http_llm_backend_t *b)
{
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_llm_module);

    if (lmcf->health == NULL || lmcf->health->data == NULL) {
        return NULL;
    }

    return (ngx_http_llm_health_t *) lmcf->health->data + b->id;
}


static ngx_msec_t
ngx_http_llm_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (ngx_msec_t) tp->sec * 1000 + tp->msec;
}


/* local workers first, then hosted backends by price */

static ngx_uint_t
ngx_http_llm_backend_rank(ngx_http_llm_backend_t *b)
{
    return b->hosted ? 1 + b->price_in + b->price_out : 0;
}


/*
 * The next backend of ctx->model for this request: not tried yet, circuit
 * not open (or this request is a half-open probe), not cooling down after
 * a 429; the best ranked, then the least loaded for its weight.  NULL:
 * none; ctx->fail_why says whether all were open or cooling.
 */

ngx_http_llm_backend_t *
ngx_http_llm_backend_next(ngx_http_llm_ctx_t *ctx)
{
    ngx_msec_t                 now, cool;
    ngx_uint_t                 i, rank, best_rank, open, cooling;
    ngx_atomic_uint_t          load, best_load;
    ngx_http_llm_health_t     *h;
    ngx_http_llm_backend_t    *b, *best;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_llm_module);

    now = ngx_http_llm_now();
    b = ctx->model->backends.elts;
    best = NULL;
    best_rank = 0;
    best_load = 0;
    open = 0;
    cooling = 0;
    ctx->cool_wait = 0;

    for (i = 0; i < ctx->model->backends.nelts; i++) {

        if (ctx->tried & ((uint64_t) 1 << i)) {
            continue;
        }

        h = ngx_http_llm_health(ctx, &b[i]);

        if (h) {
            if (h->cool_until > now) {
                cool = h->cool_until - now;
                cooling++;

                if (ctx->cool_wait == 0 || cool < ctx->cool_wait) {
                    ctx->cool_wait = cool;
                }

                continue;
            }

            if (h->state == NGX_HTTP_LLM_OPEN
                && now - h->opened < lmcf->breaker_cooldown)
            {
                open++;
                continue;
            }

            if (h->state != NGX_HTTP_LLM_CLOSED && h->probe) {
                /* one probe at a time tells whether it is back */
                open++;
                continue;
            }
        }

        rank = ngx_http_llm_backend_rank(&b[i]);
        load = h ? (h->outstanding * 1000) / b[i].weight : 0;

        if (best == NULL || rank < best_rank
            || (rank == best_rank && load < best_load))
        {
            best = &b[i];
            best_rank = rank;
            best_load = load;
        }
    }

    if (best == NULL) {
        ctx->all_open = (open > 0 && cooling == 0);
        return NULL;
    }

    ctx->tried |= (uint64_t) 1 << (best - b);

    h = ngx_http_llm_health(ctx, best);

    if (h && h->state != NGX_HTTP_LLM_CLOSED) {
        /* open past its cool-down: this request is the probe */

        if (!ngx_atomic_cmp_set(&h->probe, 0, 1)) {
            return ngx_http_llm_backend_next(ctx);
        }

        ngx_atomic_cmp_set(&h->state, NGX_HTTP_LLM_OPEN,
                           NGX_HTTP_LLM_HALF_OPEN);
        ctx->probing = 1;

        ngx_log_error(NGX_LOG_NOTICE, ctx->request->connection->log, 0,
                      "llm: backend \"%V\" half-open, probing",
                      &best->url);
    }

    if (h) {
        ngx_atomic_fetch_add(&h->outstanding, 1);
        ctx->outstanding = 1;
    }

    return best;
}


/* an attempt is over: the backend's load goes down */

void
ngx_http_llm_backend_done(ngx_http_llm_ctx_t *ctx)
{
    ngx_http_llm_health_t  *h;

    if (!ctx->outstanding || ctx->backend == NULL) {
        return;
    }

    ctx->outstanding = 0;

    h = ngx_http_llm_health(ctx, ctx->backend);

    if (h) {
        ngx_atomic_fetch_add(&h->outstanding, -1);
    }

    if (ctx->probing) {
        /* a probe that ended undecided lets the next one go */
        ctx->probing = 0;

        if (h) {
            h->probe = 0;
        }
    }
}


/* the backend answered: its circuit closes */

void
ngx_http_llm_backend_ok(ngx_http_llm_ctx_t *ctx)
{
    ngx_http_llm_health_t  *h;

    h = ngx_http_llm_health(ctx, ctx->backend);

    if (h == NULL) {
        return;
    }

    h->failures = 0;

    if (h->state != NGX_HTTP_LLM_CLOSED) {
        h->state = NGX_HTTP_LLM_CLOSED;
        h->probe = 0;
        ctx->probing = 0;

        ngx_log_error(NGX_LOG_NOTICE, ctx->request->connection->log, 0,
                      "llm: backend \"%V\" circuit closed",
                      &ctx->backend->url);
    }
}


/*
 * The backend failed: connect, timeout, 5xx, a broken transfer.  Enough
 * failures in a row, or a failed probe, open its circuit.
 */

void
ngx_http_llm_backend_failed(ngx_http_llm_ctx_t *ctx)
{
    ngx_atomic_uint_t          n;
    ngx_http_llm_health_t     *h;
    ngx_http_llm_main_conf_t  *lmcf;

    h = ngx_http_llm_health(ctx, ctx->backend);

    if (h == NULL) {
        return;
    }

    lmcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_llm_module);

    n = ngx_atomic_fetch_add(&h->failures, 1) + 1;

    /* a probe's failure (its flag may be gone with the attempt) reopens */

    if (ctx->probing
        || h->state != NGX_HTTP_LLM_CLOSED
        || n >= lmcf->breaker_failures)
    {
        h->opened = ngx_http_llm_now();
        h->state = NGX_HTTP_LLM_OPEN;

        if (ctx->probing) {
            ctx->probing = 0;
            h->probe = 0;
        }

        ngx_log_error(NGX_LOG_WARN, ctx->request->connection->log, 0,
                      "llm: backend \"%V\" circuit open for %M ms after "
                      "%uA failures", &ctx->backend->url,
                      lmcf->breaker_cooldown, n);
    }
}


/* a 429: nobody asks this backend again before its Retry-After */

void
ngx_http_llm_backend_cool(ngx_http_llm_ctx_t *ctx, ngx_msec_t ms)
{
    ngx_http_llm_health_t  *h;

    h = ngx_http_llm_health(ctx, ctx->backend);

    if (h && ms) {
        h->cool_until = ngx_http_llm_now() + ms;
    }
}


/* 0 closed, 1 open, 2 half-open: for the metrics */

ngx_uint_t
ngx_http_llm_backend_state(ngx_http_llm_main_conf_t *lmcf,
    ngx_http_llm_backend_t *b)
{
    ngx_http_llm_health_t  *h;

    if (lmcf->health == NULL || lmcf->health->data == NULL) {
        return 0;
    }

    h = (ngx_http_llm_health_t *) lmcf->health->data + b->id;

    if (h->state == NGX_HTTP_LLM_OPEN
        && ngx_http_llm_now() - h->opened >= lmcf->breaker_cooldown)
    {
        return NGX_HTTP_LLM_HALF_OPEN;
    }

    return h->state;
}
