
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Metrics in shared memory, so that every worker adds to the same
 * counters, and their Prometheus text exposition (llm_metrics).  A series
 * is a node keyed by its name and labels, as they are printed; a request
 * updates all of its series under one lock, from the log phase, which
 * every ending passes.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_backend.h"
#include "ngx_http_llm_metrics.h"
#include "ngx_http_llm_output.h"
#include "ngx_http_llm_usage.h"
#include "ngx_http_llm_util.h"


/* llm_metrics_zone's default: room for about ten thousand series */
#define NGX_HTTP_LLM_METRICS_SIZE  (8 * 1024 * 1024)
/* the least a slab pool works in, as limit_req_zone asks */
#define NGX_HTTP_LLM_METRICS_MIN   (8 * ngx_pagesize)
#define NGX_HTTP_LLM_BUCKETS       14
#define NGX_HTTP_LLM_KEY_MAX       512


typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_atomic_t                dropped;
} ngx_http_llm_metrics_sh_t;


typedef struct {
    ngx_str_node_t              sn;
    ngx_uint_t                  histogram;
    int64_t                     v[NGX_HTTP_LLM_BUCKETS + 2];
    u_char                      key[1];
} ngx_http_llm_series_t;


typedef struct {
    const char                 *name;
    const char                 *type;
    const char                 *help;
} ngx_http_llm_metric_t;


static ngx_int_t ngx_http_llm_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_llm_metrics_add(ngx_shm_zone_t *zone, u_char *key,
    size_t len, int64_t n);
static void ngx_http_llm_metrics_observe(ngx_shm_zone_t *zone, u_char *key,
    size_t len, ngx_msec_t ms);
static ngx_http_llm_series_t *ngx_http_llm_metrics_series(
    ngx_shm_zone_t *zone, u_char *key, size_t len, ngx_uint_t histogram);
static ngx_int_t ngx_http_llm_metrics_handler(ngx_http_request_t *r);
static u_char *ngx_http_llm_label(u_char *p, u_char *last, ngx_str_t *v);
static u_char *ngx_http_llm_metrics_states(ngx_http_llm_main_conf_t *lmcf,
    u_char *p, u_char *last);
static size_t ngx_http_llm_metrics_states_size(
    ngx_http_llm_main_conf_t *lmcf);


/* upper bounds, milliseconds; +Inf is the count */
static ngx_msec_t  ngx_http_llm_bounds[NGX_HTTP_LLM_BUCKETS] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000
};


static ngx_http_llm_metric_t  ngx_http_llm_metrics[] = {
    { "llm_requests_total", "counter",
      "Requests to gateway locations, by logical model and HTTP status." },
    { "llm_errors_total", "counter",
      "Requests that ended in an error, by OpenAI error code or status." },
    { "llm_tokens_total", "counter",
      "Tokens, by tenant, model, backend and kind (prompt, completion)." },
    { "llm_cost_micro_usd_total", "counter",
      "Cost in micro-dollars, by tenant, model and backend." },
    { "llm_cache_requests_total", "counter",
      "Response cache lookups, by result (hit, miss, bypass)." },
    { "llm_route_total", "counter",
      "Model choices, by model and reason." },
    { "llm_backend_attempts_total", "counter",
      "Upstream attempts, by backend and outcome." },
    { "llm_backend_retired_total", "counter",
      "Answers saying the backend's model is gone (retired, decommissioned, "
      "not found); each parks the backend for hours." },
    { "llm_backend_model_mismatch_total", "counter",
      "Answers naming another model than the one asked for, by backend." },
    { "llm_upstream_ttfb_seconds", "histogram",
      "Time from the start of an attempt to its first byte, by backend." },
    { "llm_request_duration_seconds", "histogram",
      "Time from the request's body to its end, by logical model." },
    { "llm_backend_state", "gauge",
      "Circuit breaker state per backend: 0 closed, 1 open, 2 half-open." },
    { "llm_metrics_dropped_total", "counter",
      "Updates lost because the metrics zone was full." },
    { "llm_redis_errors_total", "counter",
      "Error replies and lost replies to the gateway's Redis scripts, by "
      "script and error." },
    { "llm_settlements_retried_total", "counter",
      "Settlement commands sent again after a transient Redis error." },
    { "llm_settlements_dropped_total", "counter",
      "Settlements lost, by reason (queue_full, error, exit)." },
    { "llm_inflight_malformed_total", "counter",
      "In-flight reservation records that could not be read, by script." },
    { "llm_reservations_swept_total", "counter",
      "Reservations released by the sweeper after their deadline." },
    { NULL, NULL, NULL }
};


/*
 * llm_metrics: this location shows the metrics; the zone exists from now,
 * sized when the http block ends, as llm_metrics_zone may come later
 */

char *
ngx_http_llm_metrics_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t                  name;
    ngx_http_core_loc_conf_t  *clcf;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_module);

    if (lmcf->metrics == NULL) {
        ngx_str_set(&name, "llm_metrics");

        lmcf->metrics = ngx_shared_memory_add(cf, &name, 0,
                                              &ngx_http_llm_module);
        if (lmcf->metrics == NULL) {
            return NGX_CONF_ERROR;
        }

        lmcf->metrics->init = ngx_http_llm_metrics_init_zone;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_llm_metrics_handler;

    return NGX_CONF_OK;
}


/* llm_metrics_zone, or its default, once the http block is read */

char *
ngx_http_llm_metrics_init_conf(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf)
{
    ngx_str_t  name;

    ngx_conf_init_size_value(lmcf->metrics_size, NGX_HTTP_LLM_METRICS_SIZE);

    if (lmcf->metrics_size < (size_t) NGX_HTTP_LLM_METRICS_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_metrics_zone\" must be at least %uzk",
                           (size_t) NGX_HTTP_LLM_METRICS_MIN / 1024);
        return NGX_CONF_ERROR;
    }

    if (lmcf->metrics == NULL) {
        return NGX_CONF_OK;
    }

    /* the zone was added with no size: this gives it its size */

    ngx_str_set(&name, "llm_metrics");

    if (ngx_shared_memory_add(cf, &name, lmcf->metrics_size,
                              &ngx_http_llm_module)
        == NULL)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the log phase: every gateway request, however it ended */

ngx_int_t
ngx_http_llm_metrics_log(ngx_http_request_t *r)
{
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_loc_conf_t  *llcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    if (ctx) {
        ngx_http_llm_metrics_request(r, ctx);
        return NGX_OK;
    }

    /* refused before it had a state of its own: 404, 405, 413, 415 */

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);

    if (llcf->enable) {
        ngx_http_llm_metrics_request(r, NULL);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t            *shpool;
    ngx_http_llm_metrics_sh_t  *sh;

    /* a reload keeps the counters */

    if (data) {
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_alloc(shpool, sizeof(ngx_http_llm_metrics_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel, ngx_str_rbtree_insert_value);
    sh->dropped = 0;

    shpool->data = sh;
    shm_zone->data = sh;

    return NGX_OK;
}


#define ngx_http_llm_key(...)                                                 \
    (len = ngx_slprintf(key, key + NGX_HTTP_LLM_KEY_MAX, __VA_ARGS__) - key)


/* one request, at its end, whatever the ending */

void
ngx_http_llm_metrics_request(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    u_char                *p, *last;
    size_t                 len;
    int64_t                prompt, completion, cost;
    ngx_str_t              model, backend, tenant, code;
    ngx_uint_t             status;
    ngx_shm_zone_t             *zone;
    ngx_slab_pool_t            *shpool;
    ngx_http_llm_ctx_t          none;
    ngx_http_llm_main_conf_t   *lmcf;
    u_char                      key[NGX_HTTP_LLM_KEY_MAX], lm[256],
                                lb[256], lt[256], lc[128];

    if (ctx == NULL) {
        ngx_memzero(&none, sizeof(ngx_http_llm_ctx_t));
        none.request = r;
        none.start = ngx_current_msec;
        ctx = &none;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_module);
    zone = lmcf->metrics;

    if (zone == NULL || zone->data == NULL) {
        return;
    }

    status = r->err_status ? r->err_status : r->headers_out.status;

    if (ctx->model) {
        model = ctx->model->name;

    } else {
        ngx_str_set(&model, "-");
    }

    if (ctx->cache.status == NGX_HTTP_LLM_CACHE_HIT) {
        ngx_str_set(&backend, "cache");

    } else if (ctx->backend) {
        backend = ctx->backend->name;

    } else {
        ngx_str_set(&backend, "-");
    }

    if (ctx->tenant) {
        tenant = ctx->tenant->id;

    } else {
        ngx_str_set(&tenant, "-");
    }

    /* label values, escaped once */

    last = ngx_http_llm_label(lm, lm + sizeof(lm) - 1, &model);
    *last = '\0';
    last = ngx_http_llm_label(lb, lb + sizeof(lb) - 1, &backend);
    *last = '\0';
    last = ngx_http_llm_label(lt, lt + sizeof(lt) - 1, &tenant);
    *last = '\0';

    if (ctx->error_code) {
        code.data = (u_char *) ctx->error_code;
        code.len = ngx_strlen(ctx->error_code);
        last = ngx_http_llm_label(lc, lc + sizeof(lc) - 1, &code);
        *last = '\0';

    } else {
        p = ngx_sprintf(lc, "http_%ui", status);
        *p = '\0';
    }

    ngx_http_llm_usage(ctx, &prompt, &completion, &cost);

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    ngx_http_llm_key("llm_requests_total{model=\"%s\",status=\"%ui\"}",
                     lm, status);
    ngx_http_llm_metrics_add(zone, key, len, 1);

    if (status >= 400 || ctx->client_error) {
        ngx_http_llm_key("llm_errors_total{type=\"%s\"}",
                         ctx->client_error && status < 400
                         ? (u_char *) "client_closed" : lc);
        ngx_http_llm_metrics_add(zone, key, len, 1);
    }

    if (prompt || completion) {
        ngx_http_llm_key("llm_tokens_total{tenant=\"%s\",model=\"%s\","
                         "backend=\"%s\",kind=\"prompt\"}", lt, lm, lb);
        ngx_http_llm_metrics_add(zone, key, len, prompt);

        ngx_http_llm_key("llm_tokens_total{tenant=\"%s\",model=\"%s\","
                         "backend=\"%s\",kind=\"completion\"}", lt, lm, lb);
        ngx_http_llm_metrics_add(zone, key, len, completion);

        ngx_http_llm_key("llm_cost_micro_usd_total{tenant=\"%s\","
                         "model=\"%s\",backend=\"%s\"}", lt, lm, lb);
        ngx_http_llm_metrics_add(zone, key, len, cost);
    }

    if (ctx->cache.status != NGX_HTTP_LLM_CACHE_NONE) {
        ngx_http_llm_key("llm_cache_requests_total{result=\"%s\"}",
                         ctx->cache.status == NGX_HTTP_LLM_CACHE_HIT ? "hit"
                         : ctx->cache.status == NGX_HTTP_LLM_CACHE_MISS
                         ? "miss" : "bypass");
        ngx_http_llm_metrics_add(zone, key, len, 1);
    }

    if (ctx->model && ctx->route_reason) {
        ngx_http_llm_key("llm_route_total{model=\"%s\",reason=\"%s\"}",
                         lm, ctx->route_reason);
        ngx_http_llm_metrics_add(zone, key, len, 1);
    }

    if (ctx->backend && ctx->attempt.first_byte) {
        ngx_http_llm_key("llm_upstream_ttfb_seconds{backend=\"%s\"}", lb);
        ngx_http_llm_metrics_observe(zone, key, len, ctx->ttfb);
    }

    if (ctx->model) {
        ngx_http_llm_key("llm_request_duration_seconds{model=\"%s\"}", lm);
        ngx_http_llm_metrics_observe(zone, key, len,
                                     ngx_current_msec - ctx->start);
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


/* a counter outside any request: Redis errors, settlements, the sweeper */

void
ngx_http_llm_metrics_count(const char *series, int64_t n)
{
    ngx_shm_zone_t            *zone;
    ngx_slab_pool_t           *shpool;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_llm_module);

    if (lmcf == NULL || n == 0) {
        return;
    }

    zone = lmcf->metrics;

    if (zone == NULL || zone->data == NULL) {
        return;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);
    ngx_http_llm_metrics_add(zone, (u_char *) series, ngx_strlen(series), n);
    ngx_shmtx_unlock(&shpool->mutex);
}


/* an upstream attempt's outcome: ok, connect, timeout, status, transfer */

void
ngx_http_llm_metrics_attempt(ngx_http_llm_ctx_t *ctx, const char *outcome)
{
    ngx_http_llm_metrics_backend(ctx,
        "llm_backend_attempts_total{backend=\"%s\",outcome=\"%s\"}",
        outcome);
}


/*
 * A per-backend counter goes up by one.  series: a literal such as
 * "NAME{backend=\"%s\"}" or "NAME{backend=\"%s\",L=\"%s\"}", the
 * backend's label first, then arg; a literal, so that the labels of every
 * series can be read from the sources (t/406-grafana.t does).
 */

void
ngx_http_llm_metrics_backend(ngx_http_llm_ctx_t *ctx, const char *series,
    const char *arg)
{
    u_char                    *last;
    size_t                     len;
    ngx_shm_zone_t            *zone;
    ngx_slab_pool_t           *shpool;
    ngx_http_llm_backend_t    *b;
    ngx_http_llm_main_conf_t  *lmcf;
    u_char                     key[NGX_HTTP_LLM_KEY_MAX], lb[256];

    lmcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_llm_module);
    zone = lmcf->metrics;
    b = ctx->backend;

    if (zone == NULL || zone->data == NULL || b == NULL) {
        return;
    }

    last = ngx_http_llm_label(lb, lb + sizeof(lb) - 1, &b->name);
    *last = '\0';

    ngx_http_llm_key(series, lb, arg);

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);
    ngx_http_llm_metrics_add(zone, key, len, 1);
    ngx_shmtx_unlock(&shpool->mutex);
}


static void
ngx_http_llm_metrics_add(ngx_shm_zone_t *zone, u_char *key, size_t len,
    int64_t n)
{
    ngx_http_llm_series_t  *s;

    s = ngx_http_llm_metrics_series(zone, key, len, 0);

    if (s) {
        s->v[0] += n;
    }
}


static void
ngx_http_llm_metrics_observe(ngx_shm_zone_t *zone, u_char *key, size_t len,
    ngx_msec_t ms)
{
    ngx_uint_t              i;
    ngx_http_llm_series_t  *s;

    s = ngx_http_llm_metrics_series(zone, key, len, 1);

    if (s == NULL) {
        return;
    }

    /* buckets are stored per bound and made cumulative on output */

    for (i = 0; i < NGX_HTTP_LLM_BUCKETS; i++) {
        if (ms <= ngx_http_llm_bounds[i]) {
            s->v[i]++;
            break;
        }
    }

    s->v[NGX_HTTP_LLM_BUCKETS] += ms;
    s->v[NGX_HTTP_LLM_BUCKETS + 1]++;
}


/* the series of this key, made if new; the zone's mutex is held */

static ngx_http_llm_series_t *
ngx_http_llm_metrics_series(ngx_shm_zone_t *zone, u_char *key, size_t len,
    ngx_uint_t histogram)
{
    ngx_http_llm_series_t      *s;
    ngx_http_llm_metrics_sh_t  *sh;

    sh = zone->data;

    s = ngx_http_llm_shm_node((ngx_slab_pool_t *) zone->shm.addr,
                              &sh->rbtree, key, len,
                              offsetof(ngx_http_llm_series_t, key));
    if (s == NULL) {
        sh->dropped++;
        return NULL;
    }

    /* a name is a counter's or a histogram's for good */
    s->histogram = histogram;

    return s;
}


/* Prometheus text format: escape backslash, quote and newline */

static u_char *
ngx_http_llm_label(u_char *p, u_char *last, ngx_str_t *v)
{
    u_char  *s, *end;

    end = v->data + v->len;

    for (s = v->data; s < end && p + 2 < last; s++) {
        if (*s == '\\' || *s == '"') {
            *p++ = '\\';
            *p++ = *s;

        } else if (*s == '\n') {
            *p++ = '\\';
            *p++ = 'n';

        } else {
            *p++ = *s;
        }
    }

    return p;
}


/* llm_backend_state lines, read from the backends' health zone */

static u_char *
ngx_http_llm_metrics_states(ngx_http_llm_main_conf_t *lmcf, u_char *p,
    u_char *last)
{
    ngx_uint_t               i, j;
    ngx_http_llm_model_t    *m;
    ngx_http_llm_backend_t  *b;
    u_char                   lm[256], lb[256], lu[512], *e;

    m = lmcf->models.elts;

    for (i = 0; i < lmcf->models.nelts; i++) {
        b = m[i].backends.elts;

        for (j = 0; j < m[i].backends.nelts; j++) {
            e = ngx_http_llm_label(lm, lm + sizeof(lm) - 1, &m[i].name);
            *e = '\0';
            e = ngx_http_llm_label(lb, lb + sizeof(lb) - 1, &b[j].name);
            *e = '\0';
            e = ngx_http_llm_label(lu, lu + sizeof(lu) - 1, &b[j].url);
            *e = '\0';

            p = ngx_slprintf(p, last, "llm_backend_state{model=\"%s\","
                             "backend=\"%s\",url=\"%s\"} %ui\n", lm, lb, lu,
                             ngx_http_llm_backend_state(lmcf, &b[j]));
        }
    }

    return p;
}


static size_t
ngx_http_llm_metrics_states_size(ngx_http_llm_main_conf_t *lmcf)
{
    size_t                 size;
    ngx_uint_t             i;
    ngx_http_llm_model_t  *m;

    size = 0;
    m = lmcf->models.elts;

    for (i = 0; i < lmcf->models.nelts; i++) {
        size += m[i].backends.nelts * (256 + 256 + 512 + 64);
    }

    return size;
}


/* the exposition; the output is built under the lock, sent after it */

static ngx_int_t
ngx_http_llm_metrics_handler(ngx_http_request_t *r)
{
    u_char                     *p;
    size_t                      size, n;
    int64_t                     cum;
    ngx_int_t                   rc;
    ngx_buf_t                  *b;
    ngx_uint_t                  i, j;
    ngx_slab_pool_t            *shpool;
    ngx_rbtree_node_t          *node, *root, *sentinel;
    ngx_http_llm_series_t      *s;
    ngx_shm_zone_t             *zone;
    ngx_http_llm_metric_t      *m;
    ngx_http_llm_metrics_sh_t  *sh;
    ngx_http_llm_main_conf_t   *lmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_module);
    zone = lmcf->metrics;

    sh = zone->data;
    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    /* a bound on the size: each series' lines at their longest, the help */

    size = 4096 + ngx_http_llm_metrics_states_size(lmcf);
    root = sh->rbtree.root;
    sentinel = sh->rbtree.sentinel;

    if (root != sentinel) {
        for (node = ngx_rbtree_min(root, sentinel);
             node;
             node = ngx_rbtree_next(&sh->rbtree, node))
        {
            s = (ngx_http_llm_series_t *) node;
            size += (s->sn.str.len + 64)
                    * (s->histogram ? NGX_HTTP_LLM_BUCKETS + 3 : 1);
        }
    }

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;

    for (m = ngx_http_llm_metrics; m->name; m++) {
        n = ngx_strlen(m->name);

        p = ngx_sprintf(p, "# HELP %s %s\n# TYPE %s %s\n",
                        m->name, m->help, m->name, m->type);

        if (ngx_strcmp(m->name, "llm_backend_state") == 0) {
            p = ngx_http_llm_metrics_states(lmcf, p, b->end);
            continue;
        }

        if (ngx_strcmp(m->name, "llm_metrics_dropped_total") == 0) {
            p = ngx_sprintf(p, "%s %uA\n", m->name, sh->dropped);
            continue;
        }

        if (root == sentinel) {
            continue;
        }

        for (node = ngx_rbtree_min(root, sentinel);
             node;
             node = ngx_rbtree_next(&sh->rbtree, node))
        {
            s = (ngx_http_llm_series_t *) node;

            /* a series is the name, with or without labels */

            if (s->sn.str.len < n
                || (s->sn.str.len > n && s->sn.str.data[n] != '{')
                || ngx_strncmp(s->sn.str.data, m->name, n) != 0)
            {
                continue;
            }

            if (!s->histogram) {
                p = ngx_sprintf(p, "%V %L\n", &s->sn.str, s->v[0]);
                continue;
            }

            /* name{labels} -> name_bucket{labels,le="..."} */

            cum = 0;

            for (j = 0; j <= NGX_HTTP_LLM_BUCKETS; j++) {
                p = ngx_sprintf(p, "%s_bucket%*s,le=\"", m->name,
                                s->sn.str.len - n - 1, s->sn.str.data + n);

                if (j < NGX_HTTP_LLM_BUCKETS) {
                    cum += s->v[j];
                    p = ngx_sprintf(p, "%M.%03M\"} %L\n",
                                    ngx_http_llm_bounds[j] / 1000,
                                    ngx_http_llm_bounds[j] % 1000, cum);

                } else {
                    p = ngx_sprintf(p, "+Inf\"} %L\n",
                                    s->v[NGX_HTTP_LLM_BUCKETS + 1]);
                }
            }

            i = (ngx_uint_t) s->v[NGX_HTTP_LLM_BUCKETS];

            p = ngx_sprintf(p, "%s_sum%*s %ui.%03ui\n%s_count%*s %L\n",
                            m->name, s->sn.str.len - n, s->sn.str.data + n,
                            i / 1000, i % 1000,
                            m->name, s->sn.str.len - n, s->sn.str.data + n,
                            s->v[NGX_HTTP_LLM_BUCKETS + 1]);
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    b->last = p;

    return ngx_http_llm_send_buf(r, b,
                                 "text/plain; version=0.0.4; charset=utf-8");
}
