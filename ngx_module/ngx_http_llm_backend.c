
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Backend health and choice, shared by all workers: a circuit breaker per
 * backend (closed, open, half-open with one probe), the cool-down a 429's
 * Retry-After asks for, and the outstanding requests that balance equal
 * backends.  Local workers come first, then hosted providers, cheapest
 * first.
 *
 * A backend's health is a node keyed by its model and URL, so that it
 * outlives a reload (a circuit open before stays open) and workers of the
 * old configuration, still finishing their requests, write where the new
 * ones read.  Outstanding requests are counted per worker process, in a
 * slot the worker holds: a worker that crashes leaves no count behind,
 * as its successor clears the slots (and the probes) of dead processes.
 */


#include "ngx_http_llm.h"


#define NGX_HTTP_LLM_CLOSED     0
#define NGX_HTTP_LLM_OPEN       1
#define NGX_HTTP_LLM_HALF_OPEN  2

#define NGX_HTTP_LLM_SLOTS      64      /* worker processes at a time */


typedef struct {
    ngx_str_node_t              sn;             /* "model url" */
    ngx_atomic_t                failures;       /* in a row */
    ngx_atomic_t                state;
    ngx_atomic_t                opened;         /* wall clock, ms */
    ngx_atomic_t                probe;          /* the prober's pid */
    ngx_atomic_t                cool_until;     /* wall clock, ms */
    ngx_atomic_t                answered;       /* wall clock, ms */
    ngx_atomic_int_t            outstanding[NGX_HTTP_LLM_SLOTS];
    u_char                      key[1];
} ngx_http_llm_health_t;


typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_atomic_t                pid[NGX_HTTP_LLM_SLOTS];   /* slot owners */
} ngx_http_llm_health_sh_t;


static ngx_int_t ngx_http_llm_backend_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_llm_health_t *ngx_http_llm_health_node(
    ngx_slab_pool_t *shpool, ngx_http_llm_health_sh_t *sh, ngx_str_t *model,
    ngx_str_t *url);
static ngx_uint_t ngx_http_llm_pid_alive(ngx_pid_t pid);
static ngx_msec_t ngx_http_llm_now(void);
static ngx_uint_t ngx_http_llm_backend_rank(ngx_http_llm_backend_t *b);


/* this worker's slot in the outstanding counts; -1: none, not counted */

static ngx_int_t  ngx_http_llm_slot = -1;


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


/* at the end of http{}: the backends' shared zone */

char *
ngx_http_llm_backend_init(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf)
{
    size_t                   size;
    ngx_str_t                name;
    ngx_uint_t               i, j, n;
    ngx_http_llm_model_t    *m;
    ngx_http_llm_backend_t  *b;

    n = 0;
    size = 0;
    m = lmcf->models.elts;

    for (i = 0; i < lmcf->models.nelts; i++) {
        b = m[i].backends.elts;

        for (j = 0; j < m[i].backends.nelts; j++) {
            n++;
            size += sizeof(ngx_http_llm_health_t) + m[i].name.len
                    + b[j].url.len + 2;
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

    /*
     * One size for most configurations, so that a reload keeps the zone
     * (a zone of another size starts over); room for four times these
     * backends, as nodes of backends a reload removed stay: old workers
     * may still use them.
     */

    lmcf->health = ngx_shared_memory_add(cf, &name,
                                         ngx_max(1024 * 1024,
                                                 8 * ngx_pagesize + 4 * size),
                                         &ngx_http_llm_module);
    if (lmcf->health == NULL) {
        return NGX_CONF_ERROR;
    }

    lmcf->health->init = ngx_http_llm_backend_init_zone;
    lmcf->health->data = lmcf;

    return NGX_CONF_OK;
}


/* in the master, at start and reload: every backend finds its node */

static ngx_int_t
ngx_http_llm_backend_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_uint_t                  i, j;
    ngx_slab_pool_t            *shpool;
    ngx_http_llm_model_t       *m;
    ngx_http_llm_backend_t     *b;
    ngx_http_llm_health_sh_t   *sh;
    ngx_http_llm_main_conf_t   *lmcf;

    lmcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (data) {
        sh = data;

    } else if (shm_zone->shm.exists) {
        sh = shpool->data;

    } else {
        sh = ngx_slab_calloc(shpool, sizeof(ngx_http_llm_health_sh_t));
        if (sh == NULL) {
            return NGX_ERROR;
        }

        ngx_rbtree_init(&sh->rbtree, &sh->sentinel,
                        ngx_str_rbtree_insert_value);

        shpool->data = sh;
    }

    shm_zone->data = sh;

    m = lmcf->models.elts;

    for (i = 0; i < lmcf->models.nelts; i++) {
        b = m[i].backends.elts;

        for (j = 0; j < m[i].backends.nelts; j++) {
            b[j].health = ngx_http_llm_health_node(shpool, sh, &m[i].name,
                                                   &b[j].url);
            if (b[j].health == NULL) {
                ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                              "llm: no room for backend \"%V\" in the "
                              "\"llm_backends\" zone; restart nginx to "
                              "clear backends that reloads removed",
                              &b[j].url);
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


static ngx_http_llm_health_t *
ngx_http_llm_health_node(ngx_slab_pool_t *shpool,
    ngx_http_llm_health_sh_t *sh, ngx_str_t *model, ngx_str_t *url)
{
    u_char                 *p;
    size_t                  len;
    ngx_http_llm_health_t  *h;
    u_char                  buf[2048];

    len = model->len + 1 + url->len;

    if (len > sizeof(buf)) {
        return NULL;
    }

    p = ngx_cpymem(buf, model->data, model->len);
    *p++ = ' ';
    ngx_memcpy(p, url->data, url->len);

    /* starting workers walk this tree under the zone's mutex */

    ngx_shmtx_lock(&shpool->mutex);
    h = ngx_http_llm_shm_node(shpool, &sh->rbtree, buf, len,
                              offsetof(ngx_http_llm_health_t, key));
    ngx_shmtx_unlock(&shpool->mutex);

    return h;
}


/*
 * A worker takes a slot for its outstanding counts.  Slots and probes of
 * processes that are gone (a crash) are cleared first: their requests
 * went with them.
 */

void
ngx_http_llm_backend_init_process(ngx_http_llm_main_conf_t *lmcf)
{
    ngx_uint_t                 s;
    ngx_uint_t                 dead[NGX_HTTP_LLM_SLOTS];
    ngx_pid_t                  pid;
    ngx_slab_pool_t           *shpool;
    ngx_rbtree_node_t         *node;
    ngx_http_llm_health_t     *h;
    ngx_http_llm_health_sh_t  *sh;

    if (lmcf->health == NULL || lmcf->health->data == NULL) {
        return;
    }

    sh = lmcf->health->data;
    shpool = (ngx_slab_pool_t *) lmcf->health->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    for (s = 0; s < NGX_HTTP_LLM_SLOTS; s++) {
        pid = (ngx_pid_t) sh->pid[s];

        /* our own pid here is a dead process's that had it before us */

        dead[s] = pid != 0
                  && (pid == ngx_pid || !ngx_http_llm_pid_alive(pid));

        if (dead[s]) {
            sh->pid[s] = 0;

            ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                          "llm: cleared the backend counts of gone "
                          "process %P", pid);
        }
    }

    if (sh->rbtree.root != sh->rbtree.sentinel) {
        for (node = ngx_rbtree_min(sh->rbtree.root, sh->rbtree.sentinel);
             node;
             node = ngx_rbtree_next(&sh->rbtree, node))
        {
            h = (ngx_http_llm_health_t *) node;

            for (s = 0; s < NGX_HTTP_LLM_SLOTS; s++) {
                if (dead[s]) {
                    h->outstanding[s] = 0;
                }
            }

            if (h->probe
                && ((ngx_pid_t) h->probe == ngx_pid
                    || !ngx_http_llm_pid_alive((ngx_pid_t) h->probe)))
            {
                h->probe = 0;
            }
        }
    }

    for (s = 0; s < NGX_HTTP_LLM_SLOTS; s++) {
        if (sh->pid[s] == 0) {
            sh->pid[s] = (ngx_atomic_uint_t) ngx_pid;
            ngx_http_llm_slot = s;
            break;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (ngx_http_llm_slot == -1) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "llm: more than %d worker processes: this one's "
                      "requests do not count in backend balancing",
                      NGX_HTTP_LLM_SLOTS);
    }
}


/* a worker that exits leaves its slot to the next */

void
ngx_http_llm_backend_exit_process(ngx_http_llm_main_conf_t *lmcf)
{
    ngx_http_llm_health_sh_t  *sh;

    if (ngx_http_llm_slot == -1
        || lmcf == NULL || lmcf->health == NULL
        || lmcf->health->data == NULL)
    {
        return;
    }

    sh = lmcf->health->data;

    (void) ngx_atomic_cmp_set(&sh->pid[ngx_http_llm_slot],
                              (ngx_atomic_uint_t) ngx_pid, 0);

    ngx_http_llm_slot = -1;
}


static ngx_uint_t
ngx_http_llm_pid_alive(ngx_pid_t pid)
{
    return !(kill(pid, 0) == -1 && ngx_errno == NGX_ESRCH);
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
    ngx_uint_t                 i, s, rank, best_rank, open, cooling;
    ngx_atomic_int_t           n;
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

        h = b[i].health;

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
        load = 0;

        if (h) {
            n = 0;

            for (s = 0; s < NGX_HTTP_LLM_SLOTS; s++) {
                n += h->outstanding[s];
            }

            load = (ngx_atomic_uint_t) ngx_max(n, 0) * 1000 / b[i].weight;
        }

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

    h = best->health;

    if (h && h->state != NGX_HTTP_LLM_CLOSED) {
        /* open past its cool-down: this request is the probe */

        if (!ngx_atomic_cmp_set(&h->probe, 0, (ngx_atomic_uint_t) ngx_pid)) {
            return ngx_http_llm_backend_next(ctx);
        }

        ngx_atomic_cmp_set(&h->state, NGX_HTTP_LLM_OPEN,
                           NGX_HTTP_LLM_HALF_OPEN);
        ctx->probing = 1;

        ngx_log_error(NGX_LOG_NOTICE, ctx->request->connection->log, 0,
                      "llm: backend \"%V\" half-open, probing",
                      &best->url);
    }

    if (h && ngx_http_llm_slot != -1) {
        ngx_atomic_fetch_add((ngx_atomic_t *)
                             &h->outstanding[ngx_http_llm_slot], 1);
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

    h = ctx->backend->health;

    if (h && ngx_http_llm_slot != -1) {
        ngx_atomic_fetch_add((ngx_atomic_t *)
                             &h->outstanding[ngx_http_llm_slot], -1);
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

    h = ctx->backend->health;

    if (h == NULL) {
        return;
    }

    h->failures = 0;
    h->answered = ngx_http_llm_now();

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

    h = ctx->backend->health;

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


/*
 * A non-streamed attempt timed out before its answer: a backend that
 * answered another request meanwhile is busy generating, not broken
 */

ngx_uint_t
ngx_http_llm_backend_answered(ngx_http_llm_ctx_t *ctx)
{
    ngx_msec_t              since;
    ngx_http_llm_health_t  *h;

    h = ctx->backend->health;

    if (h == NULL) {
        return 1;
    }

    since = ngx_http_llm_now() - (ngx_current_msec - ctx->attempt_start);

    return (ngx_msec_int_t) ((ngx_msec_t) h->answered - since) >= 0;
}


/* a 429: nobody asks this backend again before its Retry-After */

void
ngx_http_llm_backend_cool(ngx_http_llm_ctx_t *ctx, ngx_msec_t ms)
{
    ngx_http_llm_health_t  *h;

    h = ctx->backend->health;

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

    h = b->health;

    if (h == NULL) {
        return 0;
    }

    if (h->state == NGX_HTTP_LLM_OPEN
        && ngx_http_llm_now() - h->opened >= lmcf->breaker_cooldown)
    {
        return NGX_HTTP_LLM_HALF_OPEN;
    }

    return h->state;
}
