
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Backend health and choice, shared by all workers: a circuit breaker per
 * backend (closed, open, half-open with one probe), the cool-down a 429's
 * Retry-After asks for, and the outstanding requests that balance equal
 * backends.  Local workers come first, then hosted providers, cheapest
 * first.
 *
 * A backend's health is a node keyed by its model, the id it is sent and
 * its URL, so that it outlives a reload (a circuit open before stays
 * open) and workers of the old configuration, still finishing their
 * requests, write where the new ones read; a backend given another id
 * starts afresh, not parked for the id it had.  Outstanding requests are
 * counted per worker process, in a slot the worker holds: a worker that
 * crashes leaves no count behind, as its successor clears the slots (and
 * the probes) of dead processes.
 *
 * The models, their backends and the breaker are configured here too:
 * llm_model blocks and llm_breaker.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_backend.h"
#include "ngx_http_llm_price.h"
#include "ngx_http_llm_provider.h"
#include "ngx_http_llm_util.h"


#define NGX_HTTP_LLM_SLOTS      64      /* worker processes at a time */


typedef struct {
    ngx_str_node_t              sn;             /* "model url" */
    ngx_atomic_t                failures;       /* in a row */
    ngx_atomic_t                state;
    ngx_atomic_t                opened;         /* wall clock, ms */
    ngx_atomic_t                probe;          /* the prober's pid */
    ngx_atomic_t                cool_until;     /* wall clock, ms */
    ngx_atomic_t                answered;       /* wall clock, ms */
    ngx_atomic_t                changed;        /* its state, wall ms */
    ngx_atomic_t                cooled;         /* 429 cool-downs */
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
    ngx_http_llm_backend_t *b);
static ngx_uint_t ngx_http_llm_pid_alive(ngx_pid_t pid);
static ngx_uint_t ngx_http_llm_backend_rank(ngx_http_llm_backend_t *b);
static char *ngx_http_llm_model(ngx_conf_t *cf, ngx_command_t *dummy,
    void *conf);
static char *ngx_http_llm_model_tokenizer(ngx_conf_t *cf,
    ngx_http_llm_model_t *model);
static void ngx_http_llm_model_tokenizer_free(void *data);
static char *ngx_http_llm_alias(ngx_conf_t *cf,
    ngx_http_llm_model_t *model);
static char *ngx_http_llm_read_key(ngx_conf_t *cf, ngx_str_t *name);
static ngx_int_t ngx_http_llm_key_printable(u_char *p, size_t len);
static ngx_int_t ngx_http_llm_backend_key(ngx_conf_t *cf,
    ngx_http_llm_backend_t *b, char *key);
static char *ngx_http_llm_backend(ngx_conf_t *cf,
    ngx_http_llm_model_t *model);
static void ngx_http_llm_provider_unknown(ngx_conf_t *cf, ngx_str_t *name);
static char *ngx_http_llm_backend_sunset(ngx_conf_t *cf,
    ngx_http_llm_backend_t *b, ngx_str_t *value);


/* this worker's slot in the outstanding counts; -1: none, not counted */

static ngx_int_t  ngx_http_llm_slot = -1;


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
                                                   &b[j]);
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
    ngx_http_llm_health_sh_t *sh, ngx_str_t *model, ngx_http_llm_backend_t *b)
{
    u_char                 *p;
    size_t                  len;
    ngx_http_llm_health_t  *h;
    u_char                  buf[2048];

    len = model->len + 1 + b->model.len + 1 + b->url.len;

    if (len > sizeof(buf)) {
        return NULL;
    }

    p = ngx_cpymem(buf, model->data, model->len);
    *p++ = ' ';
    p = ngx_cpymem(p, b->model.data, b->model.len);
    *p++ = ' ';
    ngx_memcpy(p, b->url.data, b->url.len);

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

    now = ngx_http_llm_wall_msec();
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

        if (b[i].sunset && ngx_time() >= b[i].sunset) {
            /* retired by its provider: asking it only costs a round trip */
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

        if (ngx_atomic_cmp_set(&h->state, NGX_HTTP_LLM_OPEN,
                               NGX_HTTP_LLM_HALF_OPEN))
        {
            h->changed = ngx_http_llm_wall_msec();
        }

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
    h->answered = ngx_http_llm_wall_msec();

    if (h->state != NGX_HTTP_LLM_CLOSED) {
        h->state = NGX_HTTP_LLM_CLOSED;
        h->changed = h->answered;
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
        h->opened = ngx_http_llm_wall_msec();

        if (h->state != NGX_HTTP_LLM_OPEN) {
            h->changed = h->opened;
        }

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

    since = ngx_http_llm_wall_msec() - (ngx_current_msec - ctx->attempt.start);

    return (ngx_msec_int_t) ((ngx_msec_t) h->answered - since) >= 0;
}


/* a 429: nobody asks this backend again before its Retry-After */

void
ngx_http_llm_backend_cool(ngx_http_llm_ctx_t *ctx, ngx_msec_t ms)
{
    ngx_http_llm_health_t  *h;

    h = ctx->backend->health;

    if (h && ms) {
        h->cool_until = ngx_http_llm_wall_msec() + ms;
        ngx_atomic_fetch_add(&h->cooled, 1);
    }
}


/*
 * The backend's model is gone (retired, decommissioned): nobody asks it
 * again for ms, hours rather than the breaker's seconds; its circuit is
 * left as it is, the backend itself being well
 */

void
ngx_http_llm_backend_retire(ngx_http_llm_ctx_t *ctx, ngx_msec_t ms)
{
    ngx_http_llm_health_t  *h;

    h = ctx->backend->health;

    if (h && ms) {
        h->cool_until = ngx_http_llm_wall_msec() + ms;
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
        && ngx_http_llm_wall_msec() - h->opened >= lmcf->breaker_cooldown)
    {
        return NGX_HTTP_LLM_HALF_OPEN;
    }

    return h->state;
}


/* what the status page shows of a backend's health, summed over workers */

void
ngx_http_llm_backend_info(ngx_http_llm_main_conf_t *lmcf,
    ngx_http_llm_backend_t *b, ngx_http_llm_backend_info_t *info)
{
    ngx_int_t               n;
    ngx_uint_t              s;
    ngx_http_llm_health_t  *h;

    ngx_memzero(info, sizeof(ngx_http_llm_backend_info_t));

    h = b->health;

    if (h == NULL) {
        return;
    }

    info->state = ngx_http_llm_backend_state(lmcf, b);
    info->changed = h->changed;
    info->cool_until = h->cool_until;
    info->cooled = h->cooled;

    n = 0;

    for (s = 0; s < NGX_HTTP_LLM_SLOTS; s++) {
        n += h->outstanding[s];
    }

    /* a slot's count is decremented by its own worker only: never < 0 */
    info->in_flight = n > 0 ? (ngx_uint_t) n : 0;
}


/*
 * configuration: llm_model NAME { backend ...; alias ...; fallback ...;
 * context_window ...; } and llm_breaker; the directives table itself is
 * the module's
 */


char *
ngx_http_llm_model_block(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    char                  *rv;
    ngx_str_t             *value;
    ngx_uint_t             i;
    ngx_conf_t             save;
    ngx_http_llm_model_t  *model;

    value = cf->args->elts;

    model = lmcf->models.elts;

    for (i = 0; i < lmcf->models.nelts; i++) {
        if (model[i].name.len == value[1].len
            && ngx_strncmp(model[i].name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate \"llm_model\" \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    model = ngx_array_push(&lmcf->models);
    if (model == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(model, sizeof(ngx_http_llm_model_t));

    /* NUL-terminated: cJSON takes C strings */
    model->name.len = value[1].len;
    model->name.data = ngx_pnalloc(cf->pool, value[1].len + 1);
    if (model->name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_cpystrn(model->name.data, value[1].data, value[1].len + 1);

    model->context_window = NGX_CONF_UNSET_UINT;

    if (ngx_array_init(&model->backends, cf->pool, 4,
                       sizeof(ngx_http_llm_backend_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&model->aliases, cf->pool, 2, sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    save = *cf;
    cf->handler = ngx_http_llm_model;
    cf->handler_conf = (char *) model;

    rv = ngx_conf_parse(cf, NULL);

    *cf = save;

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (model->backends.nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_model\" \"%V\" has no \"backend\"",
                           &model->name);
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_uint_value(model->context_window, 32768);

    return NGX_CONF_OK;
}


/* one directive inside an llm_model block */

static char *
ngx_http_llm_model(ngx_conf_t *cf, ngx_command_t *dummy, void *conf)
{
    ngx_http_llm_model_t  *model = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    value = cf->args->elts;

    if (value[0].len == sizeof("backend") - 1
        && ngx_strncmp(value[0].data, "backend", value[0].len) == 0)
    {
        return ngx_http_llm_backend(cf, model);
    }

    if (value[0].len == sizeof("alias") - 1
        && ngx_strncmp(value[0].data, "alias", value[0].len) == 0)
    {
        return ngx_http_llm_alias(cf, model);
    }

    if (value[0].len == sizeof("fallback") - 1
        && ngx_strncmp(value[0].data, "fallback", value[0].len) == 0)
    {
        if (cf->args->nelts != 2) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid number of arguments in "
                               "\"fallback\" of \"llm_model\"");
            return NGX_CONF_ERROR;
        }

        if (model->fallback_name.len) {
            return "\"fallback\" is duplicate";
        }

        model->fallback_name = value[1];

        return NGX_CONF_OK;
    }

    if (value[0].len == sizeof("context_window") - 1
        && ngx_strncmp(value[0].data, "context_window", value[0].len) == 0)
    {
        if (cf->args->nelts != 2) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid number of arguments in "
                               "\"context_window\" of \"llm_model\"");
            return NGX_CONF_ERROR;
        }

        if (model->context_window != NGX_CONF_UNSET_UINT) {
            return "\"context_window\" is duplicate";
        }

        n = ngx_atoi(value[1].data, value[1].len);
        if (n <= 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"context_window\" \"%V\" in "
                               "\"llm_model\"", &value[1]);
            return NGX_CONF_ERROR;
        }

        model->context_window = n;

        return NGX_CONF_OK;
    }

    if (value[0].len == sizeof("tokenizer") - 1
        && ngx_strncmp(value[0].data, "tokenizer", value[0].len) == 0)
    {
        return ngx_http_llm_model_tokenizer(cf, model);
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "unknown directive \"%V\" in \"llm_model\"",
                       &value[0]);

    return NGX_CONF_ERROR;
}


/*
 * "tokenizer file.gguf": the model's own vocabulary, from any GGUF file of
 * it, for the router's context guard and the quota's reservation
 */

static char *
ngx_http_llm_model_tokenizer(ngx_conf_t *cf, ngx_http_llm_model_t *model)
{
    char                 err[512];
    ngx_str_t           *value, file;
    ngx_pool_cleanup_t  *cln;

    value = cf->args->elts;

    if (cf->args->nelts != 2) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number of arguments in "
                           "\"tokenizer\" of \"llm_model\"");
        return NGX_CONF_ERROR;
    }

    if (model->tokenizer) {
        return "\"tokenizer\" is duplicate";
    }

    file = value[1];

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    model->tokenizer = ngx_http_llm_tokenizer_load((char *) file.data, err,
                                                   sizeof(err));
    if (model->tokenizer == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"tokenizer\" of \"llm_model\" "
                           "\"%V\": %s", &model->name, err);
        return NGX_CONF_ERROR;
    }

    /* the vocabulary lives as long as the configuration */
    cln->handler = ngx_http_llm_model_tokenizer_free;
    cln->data = model->tokenizer;

    return NGX_CONF_OK;
}


static void
ngx_http_llm_model_tokenizer_free(void *data)
{
    ngx_http_llm_tokenizer_free(data);
}


/* the backend's own "Authorization" header; the client's never goes on */

static ngx_int_t
ngx_http_llm_backend_key(ngx_conf_t *cf, ngx_http_llm_backend_t *b,
    char *key)
{
    u_char  *p;
    size_t   len;

    len = sizeof("Authorization: Bearer ") - 1 + ngx_strlen(key);

    b->auth.data = ngx_pnalloc(cf->pool, len + 1);
    if (b->auth.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(b->auth.data, "Authorization: Bearer ",
                   sizeof("Authorization: Bearer ") - 1);
    p = ngx_cpymem(p, key, ngx_strlen(key));
    *p = '\0';
    b->auth.len = len;

    return NGX_OK;
}


/* a key is printable ASCII without blanks, as in a bearer token */

static ngx_int_t
ngx_http_llm_key_printable(u_char *p, size_t len)
{
    u_char  *last;

    for (last = p + len; p < last; p++) {
        if (*p <= ' ' || *p >= 0x7f) {
            return 0;
        }
    }

    return 1;
}


/* a provider's key from a file: one line, white space around it dropped */

static char *
ngx_http_llm_read_key(ngx_conf_t *cf, ngx_str_t *name)
{
    u_char     *p, *last, *key;
    ssize_t     n;
    ngx_fd_t    fd;
    ngx_str_t   file;
    u_char      buf[1024];

    file = *name;

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NULL;
    }

    fd = ngx_open_file(file.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"backend\" api_key_file: cannot open \"%V\"",
                           &file);
        return NULL;
    }

    n = ngx_read_fd(fd, buf, sizeof(buf) - 1);
    ngx_close_file(fd);

    if (n <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"backend\" api_key_file: \"%V\" is empty",
                           &file);
        return NULL;
    }

    p = buf;
    last = buf + n;

    while (p < last && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t'
                        || last[-1] == '\r' || last[-1] == '\n'))
    {
        last--;
    }

    if (p == last || !ngx_http_llm_key_printable(p, last - p)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"backend\" api_key_file: \"%V\" must hold "
                           "one key on one line, without control "
                           "characters or blanks", &file);
        return NULL;
    }

    key = ngx_pnalloc(cf->pool, last - p + 1);
    if (key == NULL) {
        return NULL;
    }

    ngx_cpystrn(key, p, last - p + 1);

    return (char *) key;
}


/* alias NAME ...: other names clients may use, such as providers' ids */

static char *
ngx_http_llm_alias(ngx_conf_t *cf, ngx_http_llm_model_t *model)
{
    ngx_str_t                 *value, *a, *name;
    ngx_uint_t                 i, j, k;
    ngx_http_llm_model_t      *m;
    ngx_http_llm_main_conf_t  *lmcf;

    value = cf->args->elts;

    if (cf->args->nelts < 2) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number of arguments in \"alias\" of "
                           "\"llm_model\"");
        return NGX_CONF_ERROR;
    }

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_module);

    for (i = 1; i < cf->args->nelts; i++) {
        name = &value[i];
        m = lmcf->models.elts;

        /* a name may stand for one model only */

        for (j = 0; j < lmcf->models.nelts; j++) {
            a = m[j].aliases.elts;

            if (m[j].name.len == name->len
                && ngx_strncmp(m[j].name.data, name->data, name->len) == 0)
            {
                goto duplicate;
            }

            for (k = 0; k < m[j].aliases.nelts; k++) {
                if (a[k].len == name->len
                    && ngx_strncmp(a[k].data, name->data, name->len) == 0)
                {
                    goto duplicate;
                }
            }
        }

        a = ngx_array_push(&model->aliases);
        if (a == NULL) {
            return NGX_CONF_ERROR;
        }

        *a = *name;
    }

    return NGX_CONF_OK;

duplicate:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"alias\" \"%V\" of \"llm_model\" \"%V\" already "
                       "names a model", name, &model->name);
    return NGX_CONF_ERROR;
}


/* nginx -t warns this long before a backend's sunset= */
#define NGX_HTTP_LLM_SUNSET_WARN  (30 * 86400)


/*
 * backend URL [model=ID] [api_key_env=VAR] [price=IN/OUT] [weight=N]
 *     [sunset=YYYY-MM-DD]
 */

static char *
ngx_http_llm_backend(ngx_conf_t *cf, ngx_http_llm_model_t *model)
{
    u_char                  *p, *host, *last;
    char                    *key;
    size_t                   len;
    ngx_int_t                n;
    ngx_str_t               *value, url, id, env, v;
    ngx_uint_t               i, first;
    time_t                   left;
    ngx_http_llm_backend_t  *b;
    ngx_http_llm_provider_t *pr;

    value = cf->args->elts;

    if (cf->args->nelts < 2) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number of arguments in \"backend\" of "
                           "\"llm_model\"");
        return NGX_CONF_ERROR;
    }

    url = value[1];
    first = 2;

    /* "backend provider=NAME ...": the provider's own base URL */

    if (url.len > 9 && ngx_strncmp(url.data, "provider=", 9) == 0) {
        v.data = url.data + 9;
        v.len = url.len - 9;

        pr = ngx_http_llm_provider_find(&v);
        if (pr == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown \"backend\" provider \"%V\"", &v);
            return NGX_CONF_ERROR;
        }

        url.data = (u_char *) pr->base;
        url.len = ngx_strlen(pr->base);
        first = 1;
    }

    if (!(url.len > 7 && ngx_strncasecmp(url.data, (u_char *) "http://", 7)
                         == 0)
        && !(url.len > 8
             && ngx_strncasecmp(url.data, (u_char *) "https://", 8) == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"backend\" URL \"%V\" in \"llm_model\": "
                           "http:// or https:// expected", &url);
        return NGX_CONF_ERROR;
    }

    b = ngx_array_push(&model->backends);
    if (b == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(b, sizeof(ngx_http_llm_backend_t));

    b->weight = 1;

    while (url.len && url.data[url.len - 1] == '/') {
        url.len--;
    }

    /* the URL is the OpenAI base, e.g. http://127.0.0.1:8080/v1 */

    len = url.len + sizeof("/chat/completions");

    b->url.data = ngx_pnalloc(cf->pool, len);
    if (b->url.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(b->url.data, url.data, url.len);
    p = ngx_cpymem(p, "/chat/completions", sizeof("/chat/completions"));
    b->url.len = p - b->url.data - 1;

    host = (u_char *) ngx_strstr(b->url.data, "://") + 3;

    for (last = host; *last && *last != '/'; last++) { /* void */ }

    /* the name goes to logs and metric labels: no password in it */

    if (ngx_strlchr(host, last, '@')) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"backend\" URL of \"llm_model\" \"%V\" holds "
                           "user:password@: give the key with api_key_env= "
                           "or api_key_file=", &model->name);
        return NGX_CONF_ERROR;
    }

    b->name.data = host;
    b->name.len = last - host;

    id.len = 0;

    for (i = first; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "model=", 6) == 0) {
            id.data = value[i].data + 6;
            id.len = value[i].len - 6;
            continue;
        }

        if (ngx_strncmp(value[i].data, "api_key_env=", 12) == 0) {
            env.data = value[i].data + 12;
            env.len = value[i].len - 12;

            /* read in the master, which still has the full environment */
            key = getenv((char *) env.data);

            if (key == NULL || *key == '\0') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"backend\" api_key_env: environment "
                                   "variable \"%V\" is not set", &env);
                return NGX_CONF_ERROR;
            }

            /* the key goes into a header line: CR or LF would end it */

            if (!ngx_http_llm_key_printable((u_char *) key, ngx_strlen(key)))
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"backend\" api_key_env: environment "
                                   "variable \"%V\" holds a control "
                                   "character or a blank", &env);
                return NGX_CONF_ERROR;
            }

            if (ngx_http_llm_backend_key(cf, b, key) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "api_key_file=", 13) == 0) {
            v.data = value[i].data + 13;
            v.len = value[i].len - 13;

            key = ngx_http_llm_read_key(cf, &v);

            if (key == NULL || ngx_http_llm_backend_key(cf, b, key) != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "price=", 6) == 0) {
            value[i].data += 6;
            value[i].len -= 6;

            if (ngx_http_llm_parse_price(&value[i], &b->price_in,
                                         &b->price_out)
                != NGX_OK)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"backend\" price \"%V\": "
                                   "dollars per million tokens as IN/OUT "
                                   "expected, e.g. price=0.60/1.80",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "provider=", 9) == 0) {
            v = value[i];
            v.data += 9;
            v.len -= 9;

            b->provider = ngx_http_llm_provider_find(&v);

            if (b->provider == NULL) {
                ngx_http_llm_provider_unknown(cf, &v);
                return NGX_CONF_ERROR;
            }

            b->hosted = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "sunset=", 7) == 0) {
            if (ngx_http_llm_backend_sunset(cf, b, &value[i])
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "weight=", 7) == 0) {
            n = ngx_atoi(value[i].data + 7, value[i].len - 7);
            if (n <= 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"backend\" weight \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            b->weight = n;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"backend\" parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (id.len == 0) {
        id = model->name;
    }

    b->model.len = id.len;
    b->model.data = ngx_pnalloc(cf->pool, id.len + 1);
    if (b->model.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_cpystrn(b->model.data, id.data, id.len + 1);

    if (b->sunset) {
        left = b->sunset - ngx_time();

        if (left <= 0) {
            ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                               "\"backend\" model \"%V\" is past its "
                               "sunset: it is skipped", &b->model);

        } else if (left <= NGX_HTTP_LLM_SUNSET_WARN) {
            ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                               "\"backend\" model \"%V\" retires in %T "
                               "days (sunset=)", &b->model,
                               (left + 86399) / 86400);
        }
    }

    return NGX_CONF_OK;
}


/*
 * sunset=YYYY-MM-DD: the day the provider retires the model id, from
 * 00:00 UTC on.  nginx -t warns a month ahead, so that the operator swaps
 * the id before requests start failing over.
 */

static char *
ngx_http_llm_backend_sunset(ngx_conf_t *cf, ngx_http_llm_backend_t *b,
    ngx_str_t *value)
{
    u_char      *p;
    time_t       t;
    ngx_int_t    y, m, d, era, yoe, doy, doe;
    ngx_uint_t   i;

    static ngx_uint_t  mdays[] = { 31, 29, 31, 30, 31, 30,
                                   31, 31, 30, 31, 30, 31 };

    p = value->data + 7;

    if (value->len != 7 + 10 || p[4] != '-' || p[7] != '-') {
        goto invalid;
    }

    for (i = 0; i < 10; i++) {
        if (i != 4 && i != 7 && (p[i] < '0' || p[i] > '9')) {
            goto invalid;
        }
    }

    y = ngx_atoi(p, 4);
    m = ngx_atoi(p + 5, 2);
    d = ngx_atoi(p + 8, 2);

    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > (ngx_int_t) mdays[m - 1]
        || (m == 2 && d == 29 && !(y % 4 == 0 && (y % 100 || y % 400 == 0))))
    {
        goto invalid;
    }

    /* days since the epoch of a proleptic Gregorian date */

    y -= m <= 2;
    era = y / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    t = (time_t) (era * 146097 + doe - 719468) * 86400;

    b->sunset = t;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid \"backend\" parameter \"%V\": "
                       "sunset=YYYY-MM-DD expected", value);

    return NGX_CONF_ERROR;
}


/* llm_breaker failures=N cooldown=TIME */

char *
ngx_http_llm_breaker(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value, v;
    ngx_uint_t   i;
    ngx_msec_t   ms;

    if (lmcf->breaker_failures != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "failures=", 9) == 0) {
            n = ngx_atoi(value[i].data + 9, value[i].len - 9);
            if (n <= 0) {
                goto invalid;
            }

            lmcf->breaker_failures = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "cooldown=", 9) == 0) {
            v.data = value[i].data + 9;
            v.len = value[i].len - 9;

            ms = ngx_parse_time(&v, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
                goto invalid;
            }

            lmcf->breaker_cooldown = ms;
            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid \"llm_breaker\" parameter \"%V\": "
                       "failures=N and cooldown=TIME expected", &value[i]);

    return NGX_CONF_ERROR;
}


/* "provider=NAME" names none: the message lists those of the table */

static void
ngx_http_llm_provider_unknown(ngx_conf_t *cf, ngx_str_t *name)
{
    u_char                   *p, *last;
    ngx_http_llm_provider_t  *pr;
    u_char                    buf[256];

    p = buf;
    last = buf + sizeof(buf);

    for (pr = ngx_http_llm_provider_first(); pr->name.len; pr++) {
        p = ngx_slprintf(p, last, "%s%V", p == buf ? "" : ", ", &pr->name);
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "unknown \"backend\" provider \"%V\"; known: %*s",
                       name, p - buf, buf);
}
