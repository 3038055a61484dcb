
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The status page (llm_status): backends, models, tenants, the cache and
 * the node at a glance, as self-contained HTML or as JSON.  Its numbers
 * live in a zone of their own, shared by the workers and kept over a
 * reload: per backend, counters, latency histograms and a ring of
 * history slots; per model, requests, routes, tokens and cost; a bounded
 * table of tenants as their last admission found them.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_backend.h"
#include "ngx_http_llm_output.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_status.h"
#include "ngx_http_llm_usage.h"
#include "ngx_http_llm_util.h"


#define NGX_HTTP_LLM_STATUS_SIZE      (4 * 1024 * 1024)
#define NGX_HTTP_LLM_STATUS_MIN       (8 * ngx_pagesize)
/* latency buckets: 24 upper bounds, then the rest */
#define NGX_HTTP_LLM_STATUS_BUCKETS   25
#define NGX_HTTP_LLM_STATUS_TENANTS   128
#define NGX_HTTP_LLM_STATUS_ID        128
#define NGX_HTTP_LLM_STATUS_WORKERS   64
#define NGX_HTTP_LLM_STATUS_REASONS   8
#define NGX_HTTP_LLM_STATUS_REASON    24
#define NGX_HTTP_LLM_STATUS_OUTCOMES  6
#define NGX_HTTP_LLM_STATUS_SLOTS_MAX 8640
/* the most one formatted print writes; strings are written apart */
#define NGX_HTTP_LLM_STATUS_LINE      512
#define NGX_HTTP_LLM_STATUS_KEY       512


/* one history slot: step milliseconds of one backend */
typedef struct {
    uint32_t                    epoch;      /* wall clock / step */
    uint32_t                    attempts;
    uint32_t                    errors;
    uint32_t                    ttfb[NGX_HTTP_LLM_STATUS_BUCKETS];
} ngx_http_llm_status_slot_t;


typedef struct {
    ngx_str_node_t              sn;         /* "b:model url" */
    uint64_t                    outcomes[NGX_HTTP_LLM_STATUS_OUTCOMES];
    uint64_t                    ttfb[NGX_HTTP_LLM_STATUS_BUCKETS];
    uint64_t                    latency[NGX_HTTP_LLM_STATUS_BUCKETS];
    ngx_msec_t                  step;
    ngx_uint_t                  nslots;
    ngx_http_llm_status_slot_t *ring;
    u_char                      key[1];
} ngx_http_llm_status_backend_t;


typedef struct {
    u_char                      name[NGX_HTTP_LLM_STATUS_REASON];
    uint64_t                    n;
} ngx_http_llm_status_reason_t;


typedef struct {
    ngx_str_node_t              sn;         /* "m:model" */
    uint64_t                    requests;
    uint64_t                    errors;
    uint64_t                    prompt;
    uint64_t                    completion;
    int64_t                     cost;       /* micro-dollars */
    ngx_http_llm_status_reason_t  routes[NGX_HTTP_LLM_STATUS_REASONS];
    u_char                      key[1];
} ngx_http_llm_status_model_t;


/* a tenant as its last admission found it; -1: no such limit */
typedef struct {
    u_char                      id[NGX_HTTP_LLM_STATUS_ID];
    size_t                      len;
    ngx_msec_t                  seen;       /* wall clock, ms */
    uint64_t                    requests;
    int64_t                     day;
    int64_t                     month;
    int64_t                     budget_day;
    int64_t                     budget_month;
    int64_t                     rpm;
    int64_t                     rpm_limit;
    int64_t                     tpm;
    int64_t                     tpm_limit;
} ngx_http_llm_status_tenant_t;


/* 0 not configured, 1 down, 2 up; per role */
typedef struct {
    ngx_pid_t                   pid;
    ngx_msec_t                  seen;
    u_char                      redis[2];
} ngx_http_llm_status_worker_t;


typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_msec_t                  created;    /* wall clock, ms */
    uint64_t                    requests;
    uint64_t                    cache[4];   /* hit, miss, bypass, waits */
    ngx_uint_t                  dropped;
    ngx_uint_t                  ntenants;
    ngx_http_llm_status_worker_t  workers[NGX_HTTP_LLM_STATUS_WORKERS];
    ngx_http_llm_status_tenant_t  tenants[NGX_HTTP_LLM_STATUS_TENANTS];
} ngx_http_llm_status_sh_t;


/* the response, built in a chain of buffers */
typedef struct {
    ngx_pool_t                 *pool;
    ngx_chain_t                *first;
    ngx_chain_t               **last;
    ngx_buf_t                  *b;
    off_t                       size;
    ngx_uint_t                  failed;
} ngx_http_llm_status_out_t;


/* one backend as the page shows it, copied out of the zone */
typedef struct {
    ngx_http_llm_model_t       *model;
    ngx_http_llm_backend_t     *backend;
    ngx_http_llm_backend_info_t info;
    ngx_http_llm_status_backend_t  data;
    ngx_http_llm_status_slot_t *ring;       /* data.nslots, or NULL */
} ngx_http_llm_status_bview_t;


typedef struct {
    ngx_http_request_t         *request;
    ngx_http_llm_main_conf_t   *lmcf;
    ngx_msec_t                  now;        /* wall clock, ms */
    ngx_uint_t                  workers;
    ngx_http_llm_status_sh_t    sh;
    ngx_uint_t                  nbackends;
    ngx_http_llm_status_bview_t  *backends;
    ngx_http_llm_status_model_t  *models;   /* lmcf->models.nelts */
    ngx_http_llm_status_tenant_t *tenants[NGX_HTTP_LLM_STATUS_TENANTS];
    ngx_uint_t                  refresh;    /* seconds */
    ngx_uint_t                  redis_seen[2];  /* workers, per role */
    ngx_uint_t                  redis_up[2];
} ngx_http_llm_status_view_t;


static ngx_int_t ngx_http_llm_status_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_uint_t ngx_http_llm_status_bucket(ngx_msec_t ms);
static uint64_t ngx_http_llm_status_attempts(
    ngx_http_llm_status_bview_t *bv);
static ngx_http_llm_status_backend_t *ngx_http_llm_status_backend_node(
    ngx_http_llm_main_conf_t *lmcf, ngx_slab_pool_t *shpool,
    ngx_http_llm_status_sh_t *sh, ngx_http_llm_model_t *m,
    ngx_http_llm_backend_t *b, ngx_uint_t create);
static size_t ngx_http_llm_status_key(u_char *key, const char *kind,
    ngx_str_t *a, ngx_str_t *b);
static void ngx_http_llm_status_tenant(ngx_http_llm_status_sh_t *sh,
    ngx_http_llm_ctx_t *ctx, ngx_msec_t now);
static void ngx_http_llm_status_worker(ngx_http_llm_main_conf_t *lmcf,
    ngx_http_llm_status_sh_t *sh, ngx_msec_t now);
static ngx_int_t ngx_http_llm_status_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_status_view(ngx_http_request_t *r,
    ngx_http_llm_status_view_t *v);
static int ngx_libc_cdecl ngx_http_llm_status_cmp_tenant(const void *a,
    const void *b);
static double ngx_http_llm_status_quantile(uint64_t *h, double q);
static double ngx_http_llm_status_avail(ngx_http_llm_status_bview_t *bv,
    ngx_msec_t now, ngx_uint_t slots);
static ngx_uint_t ngx_http_llm_status_window(ngx_http_llm_main_conf_t *lmcf,
    ngx_msec_t span);
static ngx_http_llm_status_slot_t *ngx_http_llm_status_slot(
    ngx_http_llm_status_bview_t *bv, ngx_msec_t now, ngx_uint_t i);
static const char *ngx_http_llm_status_state(ngx_uint_t state);
static const char *ngx_http_llm_status_redis(ngx_http_llm_status_view_t *v,
    ngx_uint_t role);
static void ngx_http_llm_status_json(ngx_http_llm_status_view_t *v,
    ngx_http_llm_status_out_t *o);
static void ngx_http_llm_status_html(ngx_http_llm_status_view_t *v,
    ngx_http_llm_status_out_t *o);
static void ngx_http_llm_status_html_backends(ngx_http_llm_status_view_t *v,
    ngx_http_llm_status_out_t *o);
static void ngx_http_llm_status_html_spark(ngx_http_llm_status_bview_t *bv,
    ngx_http_llm_status_view_t *v, ngx_uint_t i, ngx_uint_t what,
    ngx_http_llm_status_out_t *o);
static void ngx_http_llm_status_html_rest(ngx_http_llm_status_view_t *v,
    ngx_http_llm_status_out_t *o);
static void ngx_http_llm_status_td(ngx_http_llm_status_out_t *o,
    u_char *path, double value, ngx_uint_t decimals, ngx_uint_t scale);
static u_char *ngx_http_llm_status_room(ngx_http_llm_status_out_t *o,
    size_t n);
static void ngx_http_llm_status_printf(ngx_http_llm_status_out_t *o,
    const char *fmt, ...);
static void ngx_http_llm_status_lit(ngx_http_llm_status_out_t *o,
    const char *s);
static void ngx_http_llm_status_str(ngx_http_llm_status_out_t *o,
    u_char *s, size_t len, ngx_uint_t html);
static void ngx_http_llm_status_num(ngx_http_llm_status_out_t *o,
    double v);
static void ngx_http_llm_status_limit(ngx_http_llm_status_out_t *o,
    const char *name, int64_t v, ngx_uint_t usd);
static void ngx_http_llm_status_duration(u_char *buf, ngx_msec_t ms);


/* upper bounds of the latency buckets, milliseconds */
static ngx_msec_t  ngx_http_llm_status_bounds[NGX_HTTP_LLM_STATUS_BUCKETS - 1]
    = { 1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 750, 1000,
        1500, 2000, 3000, 5000, 7500, 10000, 20000, 60000, 300000 };


/* as ngx_http_llm_metrics_attempt() names them */
static const char  *ngx_http_llm_status_outcomes[] = {
    "ok", "broken", "connect", "timeout", "status", "transfer"
};


static const char  ngx_http_llm_status_css[] =
    "body{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#1b1f24;"
    "background:#fafbfc}h1{font-size:18px;margin:0 0 4px}"
    "h2{font-size:15px;margin:20px 0 6px}"
    "table{border-collapse:collapse;background:#fff;margin-bottom:8px}"
    "th,td{border:1px solid #d8dde3;padding:3px 6px;text-align:right;"
    "white-space:nowrap}th{background:#eef1f4;font-weight:600}"
    "td.l,th.l{text-align:left}.closed{color:#1a7f37;font-weight:600}"
    ".open{color:#cf222e;font-weight:600}.half-open{color:#9a6700;"
    "font-weight:600}.up{color:#1a7f37}.down{color:#cf222e}"
    "svg.spark{vertical-align:middle}svg.spark polyline{fill:none;"
    "stroke:#0969da;stroke-width:1.2}svg.spark.err polyline{stroke:#cf222e}"
    "svg.spark.lat polyline{stroke:#8250df}.meta{color:#57606a}"
    "#stale{display:none;color:#cf222e}";


/*
 * The page's own refresh: it fetches the JSON and rewrites every number
 * (data-json), string (data-text) and sparkline (data-series) in place;
 * a new backend, model or tenant row reloads the page
 */

static const char  ngx_http_llm_status_js[] =
    "(function(){'use strict';"
    "var q=new URLSearchParams(location.search),"
    "r=parseInt(q.get('refresh')||document.body.dataset.refresh,10);"
    "if(!(r>0))r=5;"
    "function get(o,p){var k=p.split('.');"
    "for(var i=0;i<k.length;i++){if(o===null||o===undefined)return o;"
    "o=o[k[i]];}return o;}"
    "function fmt(v,d,s){if(v===null||v===undefined)return '\\u2013';"
    "return (v*s).toFixed(d);}"
    "function spark(e,a){if(!Array.isArray(a))return;"
    "var w=120,h=24,m=0,i,p=[];"
    "for(i=0;i<a.length;i++)if(a[i]!==null&&a[i]>m)m=a[i];"
    "for(i=0;i<a.length;i++){if(a[i]===null)continue;"
    "p.push((a.length>1?i*w/(a.length-1):0).toFixed(1)+','"
    "+(h-1-(m>0?a[i]*(h-2)/m:0)).toFixed(1));}"
    "if(p.length===1){var c=p[0].split(',');"
    "p.push((parseFloat(c[0])+2).toFixed(1)+','+c[1]);}"
    "var l=e.querySelector('polyline');if(l)l.setAttribute('points',"
    "p.join(' '));}"
    "function apply(j){var b=document.body.dataset;"
    "if(String(j.backends.length)!==b.backends||String(j.models.length)"
    "!==b.models||String(j.tenants.list.length)!==b.tenants){"
    "location.reload();return;}"
    "document.querySelectorAll('[data-json]').forEach(function(e){"
    "e.textContent=fmt(get(j,e.dataset.json),"
    "parseInt(e.dataset.d||'0',10),parseFloat(e.dataset.scale||'1'));});"
    "document.querySelectorAll('[data-text]').forEach(function(e){"
    "var v=get(j,e.dataset.text);e.textContent=(v===null||v===undefined)"
    "?'\\u2013':String(v);"
    "if(e.dataset.cls!==undefined)e.className=String(v);});"
    "document.querySelectorAll('[data-series]').forEach(function(e){"
    "spark(e,get(j,e.dataset.series));});"
    "document.querySelectorAll('[data-time]').forEach(function(e){"
    "var v=get(j,e.dataset.time);e.textContent=v?new Date(v)"
    ".toISOString().slice(11,19):'\\u2013';});"
    "document.getElementById('stale').style.display='none';}"
    "function tick(){fetch(location.pathname+'?format=json',"
    "{cache:'no-store'}).then(function(x){if(!x.ok)throw new Error("
    "'HTTP '+x.status);return x.json();}).then(apply).catch(function(){"
    "document.getElementById('stale').style.display='inline';})"
    ".then(function(){setTimeout(tick,r*1000);});}"
    "setTimeout(tick,r*1000);})();";


/*
 * llm_status: this location serves the page; the zone exists from now,
 * sized when the http block ends
 */

char *
ngx_http_llm_status_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t                  name;
    ngx_http_core_loc_conf_t  *clcf;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_module);

    if (lmcf->status == NULL) {
        ngx_str_set(&name, "llm_status");

        lmcf->status = ngx_shared_memory_add(cf, &name, 0,
                                             &ngx_http_llm_module);
        if (lmcf->status == NULL) {
            return NGX_CONF_ERROR;
        }

        lmcf->status->init = ngx_http_llm_status_init_zone;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_llm_status_handler;

    return NGX_CONF_OK;
}


/* llm_status_history [step=10s] [length=1h] */

char *
ngx_http_llm_status_history(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ngx_str_t   *value, s;
    ngx_msec_t   step, length;
    ngx_uint_t   i;

    if (lmcf->status_step != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;
    step = 10000;
    length = 3600000;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "step=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;
            step = ngx_parse_time(&s, 0);

            if (step == (ngx_msec_t) NGX_ERROR || step < 1000
                || step % 1000)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"llm_status_history\": invalid "
                                   "\"%V\": a whole number of seconds, "
                                   "at least 1s", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "length=", 7) == 0) {
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;
            length = ngx_parse_time(&s, 0);

            if (length == (ngx_msec_t) NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"llm_status_history\": invalid "
                                   "\"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_status_history\": unknown parameter "
                           "\"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (length % step || length / step < 2
        || length / step > NGX_HTTP_LLM_STATUS_SLOTS_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_status_history\": length must be a "
                           "multiple of step, of 2 to %d steps",
                           NGX_HTTP_LLM_STATUS_SLOTS_MAX);
        return NGX_CONF_ERROR;
    }

    lmcf->status_step = step;
    lmcf->status_slots = length / step;

    return NGX_CONF_OK;
}


/* the defaults, and the zone's size, checked against what it must hold */

char *
ngx_http_llm_status_init_conf(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf)
{
    size_t                 need, ring;
    ngx_str_t              name;
    ngx_uint_t             i, n;
    ngx_http_llm_model_t  *m;

    ngx_conf_init_size_value(lmcf->status_size, NGX_HTTP_LLM_STATUS_SIZE);
    ngx_conf_init_msec_value(lmcf->status_step, 10000);
    ngx_conf_init_uint_value(lmcf->status_slots, 360);

    if (lmcf->status_size < (size_t) NGX_HTTP_LLM_STATUS_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_status_zone\" must be at least %uzk",
                           (size_t) NGX_HTTP_LLM_STATUS_MIN / 1024);
        return NGX_CONF_ERROR;
    }

    if (lmcf->status == NULL) {
        return NGX_CONF_OK;
    }

    /*
     * what the zone holds at most: a ring (in whole pages, as the slab
     * allocator gives them) and a node per backend, a node per model,
     * twice over, so that a reload that adds backends still fits
     */

    n = 0;
    m = lmcf->models.elts;

    for (i = 0; i < lmcf->models.nelts; i++) {
        n += m[i].backends.nelts;
    }

    ring = ngx_align(lmcf->status_slots * sizeof(ngx_http_llm_status_slot_t),
                     ngx_pagesize);

    need = 2 * (n * (ring + sizeof(ngx_http_llm_status_backend_t)
                     + NGX_HTTP_LLM_STATUS_KEY)
                + lmcf->models.nelts * (sizeof(ngx_http_llm_status_model_t)
                                        + NGX_HTTP_LLM_STATUS_KEY))
           + sizeof(ngx_http_llm_status_sh_t) + 16 * ngx_pagesize;

    if (need > lmcf->status_size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_status_zone\" of %uzk is too small for "
                           "%ui backends of %ui history slots: it needs "
                           "%uzk", lmcf->status_size / 1024, n,
                           lmcf->status_slots, need / 1024);
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&name, "llm_status");

    if (ngx_shared_memory_add(cf, &name, lmcf->status_size,
                              &ngx_http_llm_module)
        == NULL)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_llm_status_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t           *shpool;
    ngx_http_llm_status_sh_t  *sh;

    /* a reload keeps the counters and the history */

    if (data) {
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_llm_status_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel, ngx_str_rbtree_insert_value);
    sh->created = ngx_http_llm_wall_msec();

    shpool->data = sh;
    shm_zone->data = sh;

    return NGX_OK;
}


static ngx_uint_t
ngx_http_llm_status_bucket(ngx_msec_t ms)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_LLM_STATUS_BUCKETS - 1; i++) {
        if (ms <= ngx_http_llm_status_bounds[i]) {
            break;
        }
    }

    return i;
}


static uint64_t
ngx_http_llm_status_attempts(ngx_http_llm_status_bview_t *bv)
{
    uint64_t    n;
    ngx_uint_t  i;

    n = 0;

    for (i = 0; i < NGX_HTTP_LLM_STATUS_OUTCOMES; i++) {
        n += bv->data.outcomes[i];
    }

    return n;
}


/* "<kind>:a" or "<kind>:a b" */

static size_t
ngx_http_llm_status_key(u_char *key, const char *kind, ngx_str_t *a,
    ngx_str_t *b)
{
    u_char  *p, *last;

    last = key + NGX_HTTP_LLM_STATUS_KEY;

    p = b ? ngx_slprintf(key, last, "%s:%V %V", kind, a, b)
          : ngx_slprintf(key, last, "%s:%V", kind, a);

    return p - key;
}


/*
 * A backend's node, made if new when create is set, with a ring of the
 * configured shape; the zone's mutex is held
 */

static ngx_http_llm_status_backend_t *
ngx_http_llm_status_backend_node(ngx_http_llm_main_conf_t *lmcf,
    ngx_slab_pool_t *shpool, ngx_http_llm_status_sh_t *sh,
    ngx_http_llm_model_t *m, ngx_http_llm_backend_t *b, ngx_uint_t create)
{
    size_t                          len;
    uint32_t                        hash;
    ngx_str_t                       k;
    ngx_http_llm_status_backend_t  *n;
    u_char                          key[NGX_HTTP_LLM_STATUS_KEY];

    len = ngx_http_llm_status_key(key, "b", &m->name, &b->url);

    if (!create) {
        k.data = key;
        k.len = len;
        hash = ngx_murmur_hash2(key, len);

        return (ngx_http_llm_status_backend_t *)
                   ngx_str_rbtree_lookup(&sh->rbtree, &k, hash);
    }

    n = ngx_http_llm_shm_node(shpool, &sh->rbtree, key, len,
                              offsetof(ngx_http_llm_status_backend_t, key));
    if (n == NULL) {
        sh->dropped++;
        return NULL;
    }

    /*
     * a reload that changed the history's shape starts it anew; a worker
     * of the old configuration, on its way out, leaves the ring alone
     */

    if (n->step == lmcf->status_step && n->nslots == lmcf->status_slots) {
        return n;
    }

    if (ngx_exiting) {
        return n;
    }

    if (n->ring) {
        ngx_slab_free_locked(shpool, n->ring);
    }

    n->ring = ngx_slab_calloc_locked(shpool, lmcf->status_slots
                                     * sizeof(ngx_http_llm_status_slot_t));
    if (n->ring == NULL) {
        n->step = 0;
        n->nslots = 0;
        sh->dropped++;
        return n;
    }

    n->step = lmcf->status_step;
    n->nslots = lmcf->status_slots;

    return n;
}


/* an upstream attempt's end: outcome, latencies and its history slot */

void
ngx_http_llm_status_attempt(ngx_http_llm_ctx_t *ctx, const char *outcome)
{
    uint32_t                        epoch;
    ngx_uint_t                      i, ok, bucket;
    ngx_msec_t                      now;
    ngx_slab_pool_t                *shpool;
    ngx_shm_zone_t                 *zone;
    ngx_http_llm_status_sh_t       *sh;
    ngx_http_llm_status_slot_t     *slot;
    ngx_http_llm_status_backend_t  *n;
    ngx_http_llm_main_conf_t       *lmcf;

    lmcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_llm_module);
    zone = lmcf->status;

    if (zone == NULL || zone->data == NULL || ctx->backend == NULL
        || ctx->model == NULL)
    {
        return;
    }

    for (i = 0; i < NGX_HTTP_LLM_STATUS_OUTCOMES; i++) {
        if (ngx_strcmp(outcome, ngx_http_llm_status_outcomes[i]) == 0) {
            break;
        }
    }

    if (i == NGX_HTTP_LLM_STATUS_OUTCOMES) {
        i = 1;
    }

    ok = (i == 0);
    bucket = ngx_http_llm_status_bucket(ctx->ttfb);
    now = ngx_http_llm_wall_msec();

    sh = zone->data;
    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    n = ngx_http_llm_status_backend_node(lmcf, shpool, sh, ctx->model,
                                         ctx->backend, 1);
    if (n == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        return;
    }

    n->outcomes[i]++;
    n->latency[ngx_http_llm_status_bucket(ngx_current_msec
                                          - ctx->attempt.start)]++;

    if (ctx->attempt.first_byte) {
        n->ttfb[bucket]++;
    }

    if (n->ring) {
        epoch = (uint32_t) (now / n->step);
        slot = &n->ring[epoch % n->nslots];

        if (slot->epoch != epoch) {
            ngx_memzero(slot, sizeof(ngx_http_llm_status_slot_t));
            slot->epoch = epoch;
        }

        slot->attempts++;
        slot->errors += !ok;

        if (ctx->attempt.first_byte) {
            slot->ttfb[bucket]++;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


/* the log phase: a request's model, route, tokens, cache and tenant */

ngx_int_t
ngx_http_llm_status_log(ngx_http_request_t *r)
{
    size_t                          len;
    int64_t                         prompt, completion, cost;
    ngx_str_t                       reason;
    ngx_uint_t                      i, status;
    ngx_msec_t                      now;
    ngx_slab_pool_t                *shpool;
    ngx_shm_zone_t                 *zone;
    ngx_http_llm_ctx_t             *ctx;
    ngx_http_llm_status_sh_t       *sh;
    ngx_http_llm_status_model_t    *m;
    ngx_http_llm_main_conf_t       *lmcf;
    u_char                          key[NGX_HTTP_LLM_STATUS_KEY];

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_module);
    zone = lmcf->status;

    if (ctx == NULL || zone == NULL || zone->data == NULL) {
        return NGX_OK;
    }

    status = r->err_status ? r->err_status : r->headers_out.status;
    ngx_http_llm_usage(ctx, &prompt, &completion, &cost);
    now = ngx_http_llm_wall_msec();

    sh = zone->data;
    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    sh->requests++;

    switch (ctx->cache.status) {
    case NGX_HTTP_LLM_CACHE_HIT:
        sh->cache[0]++;
        break;
    case NGX_HTTP_LLM_CACHE_MISS:
        sh->cache[1]++;
        break;
    case NGX_HTTP_LLM_CACHE_NONE:
        break;
    default:
        sh->cache[2]++;
        break;
    }

    sh->cache[3] += ctx->cache.waited;

    if (ctx->model) {
        len = ngx_http_llm_status_key(key, "m", &ctx->model->name, NULL);

        m = ngx_http_llm_shm_node(shpool, &sh->rbtree, key, len,
                                  offsetof(ngx_http_llm_status_model_t,
                                           key));
        if (m == NULL) {
            sh->dropped++;

        } else {
            m->requests++;
            m->errors += (status >= 400);
            m->prompt += prompt;
            m->completion += completion;
            m->cost += cost;

            if (ctx->route_reason) {
                reason.data = (u_char *) ctx->route_reason;
                reason.len = ngx_min(ngx_strlen(ctx->route_reason),
                                     NGX_HTTP_LLM_STATUS_REASON - 1);

                /* the last slot takes every reason past the others */

                for (i = 0; i < NGX_HTTP_LLM_STATUS_REASONS - 1; i++) {
                    if (m->routes[i].name[0] == '\0') {
                        ngx_memcpy(m->routes[i].name, reason.data,
                                   reason.len);
                        break;
                    }

                    if (ngx_strncmp(m->routes[i].name, reason.data,
                                    reason.len) == 0
                        && m->routes[i].name[reason.len] == '\0')
                    {
                        break;
                    }
                }

                if (i == NGX_HTTP_LLM_STATUS_REASONS - 1
                    && m->routes[i].name[0] == '\0')
                {
                    ngx_memcpy(m->routes[i].name, "other", 5);
                }

                m->routes[i].n++;
            }
        }
    }

    ngx_http_llm_status_tenant(sh, ctx, now);
    ngx_http_llm_status_worker(lmcf, sh, now);

    ngx_shmtx_unlock(&shpool->mutex);

    return NGX_OK;
}


/*
 * The tenant's row: what its admission read in Redis.  When the table
 * is full, the tenant that has spent least today makes room.
 */

static void
ngx_http_llm_status_tenant(ngx_http_llm_status_sh_t *sh,
    ngx_http_llm_ctx_t *ctx, ngx_msec_t now)
{
    size_t                         len;
    ngx_uint_t                     i;
    ngx_http_llm_tenant_t         *t;
    ngx_http_llm_status_tenant_t  *e, *low;

    t = ctx->tenant;

    if (t == NULL || !ctx->quota.admitted || ctx->quota.unenforced) {
        return;
    }

    len = ngx_min(t->id.len, NGX_HTTP_LLM_STATUS_ID);
    low = NULL;
    e = NULL;

    for (i = 0; i < sh->ntenants; i++) {
        if (sh->tenants[i].len == len
            && ngx_memcmp(sh->tenants[i].id, t->id.data, len) == 0)
        {
            e = &sh->tenants[i];
            break;
        }

        if (low == NULL || sh->tenants[i].day < low->day
            || (sh->tenants[i].day == low->day
                && sh->tenants[i].seen < low->seen))
        {
            low = &sh->tenants[i];
        }
    }

    if (e == NULL) {
        if (sh->ntenants < NGX_HTTP_LLM_STATUS_TENANTS) {
            e = &sh->tenants[sh->ntenants++];

        } else if (low->day <= ctx->quota.day_spent) {
            e = low;

        } else {
            return;
        }

        ngx_memzero(e, sizeof(ngx_http_llm_status_tenant_t));
        ngx_memcpy(e->id, t->id.data, len);
        e->len = len;
    }

    e->seen = now;
    e->requests++;
    e->day = ctx->quota.day_spent;
    e->month = ctx->quota.month_spent;
    e->budget_day = t->budget_day > 0 ? t->budget_day : -1;
    e->budget_month = t->budget_month > 0 ? t->budget_month : -1;
    e->rpm_limit = t->rpm > 0 ? t->rpm : -1;
    e->tpm_limit = t->tpm > 0 ? t->tpm : -1;
    e->rpm = (t->rpm > 0 && ctx->quota.rpm_left >= 0)
             ? t->rpm - ctx->quota.rpm_left : -1;
    e->tpm = (t->tpm > 0 && ctx->quota.tpm_left >= 0)
             ? t->tpm - ctx->quota.tpm_left : -1;
}


/* this worker's Redis connections, as it last saw them */

static void
ngx_http_llm_status_worker(ngx_http_llm_main_conf_t *lmcf,
    ngx_http_llm_status_sh_t *sh, ngx_msec_t now)
{
    ngx_http_llm_status_worker_t  *w;

    if (ngx_worker >= NGX_HTTP_LLM_STATUS_WORKERS) {
        return;
    }

    w = &sh->workers[ngx_worker];
    w->pid = ngx_pid;
    w->seen = now;
    w->redis[0] = lmcf->redis == NULL ? 0
                  : ngx_http_llm_redis_ready(NGX_HTTP_LLM_REDIS_MAIN) ? 2 : 1;
    w->redis[1] = lmcf->cache_redis == NULL ? 0
                  : ngx_http_llm_redis_ready(NGX_HTTP_LLM_REDIS_CACHE) ? 2
                  : 1;
}


/* GET or HEAD; JSON with ?format=json or "Accept: application/json" */

static ngx_int_t
ngx_http_llm_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc, n;
    ngx_str_t                    arg;
    ngx_uint_t                   i, json;
    ngx_list_part_t             *part;
    ngx_table_elt_t             *h;
    ngx_http_llm_status_out_t    o;
    ngx_http_llm_status_view_t  *v;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    json = 0;

    if (ngx_http_arg(r, (u_char *) "format", 6, &arg) == NGX_OK) {
        json = (arg.len == 4 && ngx_strncmp(arg.data, "json", 4) == 0);

    } else {
        part = &r->headers_in.headers.part;
        h = part->elts;

        for (i = 0; /* void */ ; i++) {
            if (i >= part->nelts) {
                if (part->next == NULL) {
                    break;
                }

                part = part->next;
                h = part->elts;
                i = 0;
            }

            if (h[i].key.len == 6
                && ngx_strncasecmp(h[i].key.data, (u_char *) "accept", 6)
                   == 0
                && ngx_strlcasestrn(h[i].value.data,
                                    h[i].value.data + h[i].value.len,
                                    (u_char *) "application/json", 16 - 1)
                   != NULL)
            {
                json = 1;
            }
        }
    }

    /* a copy of the zone's fixed part: too large for the stack */

    v = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_status_view_t));
    if (v == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    v->refresh = 5;

    if (ngx_http_arg(r, (u_char *) "refresh", 7, &arg) == NGX_OK) {
        n = ngx_atoi(arg.data, arg.len);

        if (n >= 1 && n <= 3600) {
            v->refresh = n;
        }
    }

    if (ngx_http_llm_status_view(r, v) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&o, sizeof(ngx_http_llm_status_out_t));
    o.pool = r->pool;
    o.last = &o.first;

    if (json) {
        ngx_http_llm_status_json(v, &o);

    } else {
        ngx_http_llm_status_html(v, &o);
    }

    if (o.failed || o.first == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    o.b->last_buf = (r == r->main) ? 1 : 0;
    o.b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = o.size;

    if (json) {
        ngx_str_set(&r->headers_out.content_type, "application/json");

    } else {
        ngx_str_set(&r->headers_out.content_type, "text/html; charset=utf-8");

        /* what the page may load: nothing from anywhere else */

        if (ngx_http_llm_add_header(r, "Content-Security-Policy",
                                    "default-src 'none'; "
                                    "style-src 'unsafe-inline'; "
                                    "script-src 'unsafe-inline'; "
                                    "connect-src 'self'; img-src data:")
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;

    if (ngx_http_llm_add_header(r, "Cache-Control", "no-store") != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, o.first);
}


/* a copy of the zone's numbers for what is configured now */

static ngx_int_t
ngx_http_llm_status_view(ngx_http_request_t *r, ngx_http_llm_status_view_t *v)
{
    size_t                          len;
    uint32_t                        hash;
    ngx_str_t                       k;
    ngx_uint_t                      i, j, n;
    ngx_core_conf_t                *ccf;
    ngx_slab_pool_t                *shpool;
    ngx_shm_zone_t                 *zone;
    ngx_http_llm_model_t           *m;
    ngx_http_llm_backend_t         *b;
    ngx_http_llm_status_sh_t       *sh;
    ngx_http_llm_status_model_t    *mn;
    ngx_http_llm_status_bview_t    *bv;
    ngx_http_llm_status_backend_t  *bn;
    ngx_http_llm_status_worker_t   *w;
    ngx_http_llm_main_conf_t       *lmcf;
    u_char                          key[NGX_HTTP_LLM_STATUS_KEY];

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_module);
    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);

    v->request = r;
    v->lmcf = lmcf;
    v->now = ngx_http_llm_wall_msec();
    v->workers = ccf->worker_processes;

    n = 0;
    m = lmcf->models.elts;

    for (i = 0; i < lmcf->models.nelts; i++) {
        n += m[i].backends.nelts;
    }

    v->nbackends = n;
    v->backends = ngx_pcalloc(r->pool,
                              (n + 1) * sizeof(ngx_http_llm_status_bview_t));
    v->models = ngx_pcalloc(r->pool, (lmcf->models.nelts + 1)
                                     * sizeof(ngx_http_llm_status_model_t));

    if (v->backends == NULL || v->models == NULL) {
        return NGX_ERROR;
    }

    /* the rings are copied out whole, before the lock is taken */

    for (i = 0; i < n; i++) {
        v->backends[i].ring = ngx_palloc(r->pool, lmcf->status_slots
                                         * sizeof(ngx_http_llm_status_slot_t));
        if (v->backends[i].ring == NULL) {
            return NGX_ERROR;
        }
    }

    zone = lmcf->status;
    sh = zone->data;
    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    ngx_http_llm_status_worker(lmcf, sh, v->now);

    v->sh = *sh;
    bv = v->backends;

    for (i = 0; i < lmcf->models.nelts; i++) {
        len = ngx_http_llm_status_key(key, "m", &m[i].name, NULL);
        k.data = key;
        k.len = len;
        hash = ngx_murmur_hash2(key, len);

        mn = (ngx_http_llm_status_model_t *)
                 ngx_str_rbtree_lookup(&sh->rbtree, &k, hash);
        if (mn) {
            v->models[i] = *mn;
        }

        b = m[i].backends.elts;

        for (j = 0; j < m[i].backends.nelts; j++, bv++) {
            bv->model = &m[i];
            bv->backend = &b[j];

            bn = ngx_http_llm_status_backend_node(lmcf, shpool, sh, &m[i],
                                                  &b[j], 0);
            if (bn == NULL) {
                bv->ring = NULL;
                continue;
            }

            bv->data = *bn;

            if (bn->ring && bn->nslots == lmcf->status_slots) {
                ngx_memcpy(bv->ring, bn->ring, bn->nslots
                           * sizeof(ngx_http_llm_status_slot_t));

            } else {
                bv->ring = NULL;
            }
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    /* the health zone has its own lock */

    for (i = 0; i < n; i++) {
        ngx_http_llm_backend_info(lmcf, v->backends[i].backend,
                                  &v->backends[i].info);
    }

    for (i = 0; i < v->sh.ntenants; i++) {
        v->tenants[i] = &v->sh.tenants[i];
    }

    /* workers that are gone, by a crash or a reload, are not counted */

    for (i = 0; i < NGX_HTTP_LLM_STATUS_WORKERS; i++) {
        w = &v->sh.workers[i];

        if (w->pid == 0
            || (kill(w->pid, 0) == -1 && ngx_errno == NGX_ESRCH))
        {
            w->pid = 0;
            continue;
        }

        for (j = 0; j < 2; j++) {
            if (w->redis[j]) {
                v->redis_seen[j]++;
                v->redis_up[j] += (w->redis[j] == 2);
            }
        }
    }

    ngx_qsort(v->tenants, v->sh.ntenants,
              sizeof(ngx_http_llm_status_tenant_t *),
              ngx_http_llm_status_cmp_tenant);

    return NGX_OK;
}


/* most spent today first, then by id */

static int ngx_libc_cdecl
ngx_http_llm_status_cmp_tenant(const void *a, const void *b)
{
    ngx_int_t                      rc;
    ngx_http_llm_status_tenant_t  *x, *y;

    x = *(ngx_http_llm_status_tenant_t **) a;
    y = *(ngx_http_llm_status_tenant_t **) b;

    if (x->day != y->day) {
        return x->day > y->day ? -1 : 1;
    }

    rc = ngx_memn2cmp(x->id, y->id, x->len, y->len);

    return rc < 0 ? -1 : rc > 0;
}


/*
 * The q-quantile of a histogram, in milliseconds, interpolated within
 * its bucket; -1 without samples.  The last bucket has no upper bound:
 * its quantiles read as its lower one.
 */

static double
ngx_http_llm_status_quantile(uint64_t *h, double q)
{
    double      lo, hi, target, cum;
    uint64_t    total;
    ngx_uint_t  i;

    total = 0;

    for (i = 0; i < NGX_HTTP_LLM_STATUS_BUCKETS; i++) {
        total += h[i];
    }

    if (total == 0) {
        return -1;
    }

    target = q * (double) total;
    cum = 0;

    for (i = 0; i < NGX_HTTP_LLM_STATUS_BUCKETS; i++) {
        if (h[i] && cum + (double) h[i] >= target) {
            break;
        }

        cum += (double) h[i];
    }

    lo = i ? (double) ngx_http_llm_status_bounds[i - 1] : 0;

    if (i >= NGX_HTTP_LLM_STATUS_BUCKETS - 1) {
        return lo;
    }

    hi = (double) ngx_http_llm_status_bounds[i];

    return lo + (hi - lo) * (target - cum) / (double) h[i];
}


/* the i-th slot of the ring, oldest first, or NULL if it holds nothing */

static ngx_http_llm_status_slot_t *
ngx_http_llm_status_slot(ngx_http_llm_status_bview_t *bv, ngx_msec_t now,
    ngx_uint_t i)
{
    uint32_t                     epoch;
    ngx_http_llm_status_slot_t  *s;

    if (bv->ring == NULL || bv->data.nslots == 0) {
        return NULL;
    }

    epoch = (uint32_t) (now / bv->data.step) - (bv->data.nslots - 1) + i;
    s = &bv->ring[epoch % bv->data.nslots];

    return s->epoch == epoch ? s : NULL;
}


/* the share of ok attempts in the last slots; -1: no attempts */

static double
ngx_http_llm_status_avail(ngx_http_llm_status_bview_t *bv, ngx_msec_t now,
    ngx_uint_t slots)
{
    uint64_t                     att, err;
    ngx_uint_t                   i;
    ngx_http_llm_status_slot_t  *s;

    att = 0;
    err = 0;

    for (i = bv->data.nslots - ngx_min(slots, bv->data.nslots);
         i < bv->data.nslots;
         i++)
    {
        s = ngx_http_llm_status_slot(bv, now, i);

        if (s) {
            att += s->attempts;
            err += s->errors;
        }
    }

    return att ? 1.0 - (double) err / (double) att : -1;
}


/* how many slots span this long, at most the ring */

static ngx_uint_t
ngx_http_llm_status_window(ngx_http_llm_main_conf_t *lmcf, ngx_msec_t span)
{
    ngx_uint_t  n;

    n = (span + lmcf->status_step - 1) / lmcf->status_step;

    return ngx_min(n, lmcf->status_slots);
}


static const char *
ngx_http_llm_status_state(ngx_uint_t state)
{
    return state == NGX_HTTP_LLM_OPEN ? "open"
           : state == NGX_HTTP_LLM_HALF_OPEN ? "half-open" : "closed";
}


static const char *
ngx_http_llm_status_redis(ngx_http_llm_status_view_t *v, ngx_uint_t role)
{
    if (role == NGX_HTTP_LLM_REDIS_CACHE && v->lmcf->cache_redis == NULL) {
        return v->lmcf->redis ? "shared" : "none";
    }

    if (role == NGX_HTTP_LLM_REDIS_MAIN && v->lmcf->redis == NULL) {
        return "none";
    }

    if (v->redis_seen[role] == 0) {
        return "unknown";
    }

    return v->redis_up[role] == v->redis_seen[role] ? "up"
           : v->redis_up[role] ? "partial" : "down";
}


static void
ngx_http_llm_status_json(ngx_http_llm_status_view_t *v,
    ngx_http_llm_status_out_t *o)
{
    double                          d;
    uint64_t                        hits, looked;
    uint64_t                        h[NGX_HTTP_LLM_STATUS_BUCKETS];
    ngx_uint_t                      i, j, k, role, shortw, longw;
    ngx_http_llm_status_slot_t     *s;
    ngx_http_llm_status_bview_t    *bv;
    ngx_http_llm_status_model_t    *mn;
    ngx_http_llm_status_tenant_t   *t;
    ngx_http_llm_status_worker_t   *w;
    ngx_http_llm_model_t           *m;
    ngx_http_llm_main_conf_t       *lmcf;
    u_char                          buf[64];
    static const char              *roles[] = { "main", "cache" };
    static const char              *rstate[] = { "none", "down", "up" };
    static double                   qs[] = { 0.50, 0.95, 0.99 };

    lmcf = v->lmcf;
    shortw = ngx_http_llm_status_window(lmcf, 300000);
    longw = ngx_http_llm_status_window(lmcf, 3600000);

    ngx_http_llm_status_duration(buf, v->now - v->sh.created);

    ngx_http_llm_status_printf(o, "{\"version\":1,\"time_ms\":%M,"
        "\"node\":{\"workers\":%ui,\"uptime_s\":%M,\"uptime\":\"%s\","
        "\"requests\":%uL,\"zone_dropped\":%ui,\"redis\":[",
        v->now, v->workers, (v->now - v->sh.created) / 1000, buf,
        v->sh.requests, v->sh.dropped);

    for (role = 0; role < 2; role++) {
        ngx_http_llm_status_printf(o, "%s{\"role\":\"%s\","
            "\"configured\":%s,\"workers_seen\":%ui,\"workers_up\":%ui,"
            "\"state\":\"%s\"}", role ? "," : "", roles[role],
            (role ? lmcf->cache_redis : lmcf->redis) ? "true" : "false",
            v->redis_seen[role], v->redis_up[role],
            ngx_http_llm_status_redis(v, role));
    }

    ngx_http_llm_status_printf(o, "],\"workers_list\":[");

    k = 0;

    for (i = 0; i < NGX_HTTP_LLM_STATUS_WORKERS; i++) {
        w = &v->sh.workers[i];

        if (w->pid == 0) {
            continue;
        }

        ngx_http_llm_status_printf(o, "%s{\"worker\":%ui,\"pid\":%P,"
            "\"seen_ms\":%M,\"redis_main\":\"%s\",\"redis_cache\":\"%s\"}",
            k++ ? "," : "", i, w->pid, w->seen, rstate[w->redis[0]],
            rstate[w->redis[1]]);
    }

    ngx_http_llm_status_printf(o, "]},\"history\":{\"step_s\":%M,"
        "\"slots\":%ui,\"short_s\":%M,\"long_s\":%M},\"backends\":[",
        lmcf->status_step / 1000, lmcf->status_slots,
        shortw * lmcf->status_step / 1000,
        longw * lmcf->status_step / 1000);

    for (i = 0; i < v->nbackends; i++) {
        bv = &v->backends[i];

        ngx_http_llm_status_lit(o, i ? ",{\"model\":" : "{\"model\":");
        ngx_http_llm_status_str(o, bv->model->name.data,
                                bv->model->name.len, 0);
        ngx_http_llm_status_lit(o, ",\"name\":");
        ngx_http_llm_status_str(o, bv->backend->name.data,
                                bv->backend->name.len, 0);
        ngx_http_llm_status_lit(o, ",\"url\":");
        ngx_http_llm_status_str(o, bv->backend->url.data,
                                bv->backend->url.len, 0);
        ngx_http_llm_status_lit(o, ",\"upstream_model\":");
        ngx_http_llm_status_str(o, bv->backend->model.data,
                                bv->backend->model.len, 0);

        ngx_http_llm_status_printf(o, ",\"state\":\"%s\","
            "\"state_changed_ms\":%M,\"in_flight\":%ui,\"cooldowns\":%ui,"
            "\"cooling_ms\":%M,\"price_in_usd\":%.6f,"
            "\"price_out_usd\":%.6f,\"attempts\":%uL,\"outcomes\":{",
            ngx_http_llm_status_state(bv->info.state), bv->info.changed,
            bv->info.in_flight, bv->info.cooled,
            bv->info.cool_until > v->now ? bv->info.cool_until - v->now : 0,
            (double) bv->backend->price_in / 1e6,
            (double) bv->backend->price_out / 1e6,
            ngx_http_llm_status_attempts(bv));

        for (j = 0; j < NGX_HTTP_LLM_STATUS_OUTCOMES; j++) {
            ngx_http_llm_status_printf(o, "%s\"%s\":%uL", j ? "," : "",
                                       ngx_http_llm_status_outcomes[j],
                                       bv->data.outcomes[j]);
        }

        ngx_http_llm_status_lit(o, "},\"availability_short\":");
        ngx_http_llm_status_num(o, ngx_http_llm_status_avail(bv, v->now,
                                                             shortw));
        ngx_http_llm_status_lit(o, ",\"availability_long\":");
        ngx_http_llm_status_num(o, ngx_http_llm_status_avail(bv, v->now,
                                                             longw));

        for (k = 0; k < 2; k++) {
            ngx_http_llm_status_lit(o, k ? "},\"latency_ms\":{"
                                         : ",\"ttfb_ms\":{");

            for (j = 0; j < 3; j++) {
                ngx_http_llm_status_printf(o, "%s\"p%ui\":", j ? "," : "",
                                           (ngx_uint_t) (qs[j] * 100));
                ngx_http_llm_status_num(o, ngx_http_llm_status_quantile(
                    k ? bv->data.latency : bv->data.ttfb, qs[j]));
            }
        }

        ngx_http_llm_status_lit(o, "},\"history\":{\"requests\":[");

        for (j = 0; j < lmcf->status_slots; j++) {
            s = ngx_http_llm_status_slot(bv, v->now, j);
            ngx_http_llm_status_printf(o, "%s%uD", j ? "," : "",
                                       s ? s->attempts : 0);
        }

        ngx_http_llm_status_lit(o, "],\"errors\":[");

        for (j = 0; j < lmcf->status_slots; j++) {
            s = ngx_http_llm_status_slot(bv, v->now, j);
            ngx_http_llm_status_printf(o, "%s%uD", j ? "," : "",
                                       s ? s->errors : 0);
        }

        ngx_http_llm_status_lit(o, "],\"ttfb_p95_ms\":[");

        for (j = 0; j < lmcf->status_slots; j++) {
            s = ngx_http_llm_status_slot(bv, v->now, j);
            d = -1;

            if (s) {
                for (k = 0; k < NGX_HTTP_LLM_STATUS_BUCKETS; k++) {
                    h[k] = s->ttfb[k];
                }

                d = ngx_http_llm_status_quantile(h, 0.95);
            }

            ngx_http_llm_status_lit(o, j ? "," : "");
            ngx_http_llm_status_num(o, d);
        }

        ngx_http_llm_status_lit(o, "]}}");
    }

    ngx_http_llm_status_lit(o, "],\"models\":[");

    m = lmcf->models.elts;

    for (i = 0; i < lmcf->models.nelts; i++) {
        mn = &v->models[i];

        ngx_http_llm_status_lit(o, i ? ",{\"name\":" : "{\"name\":");
        ngx_http_llm_status_str(o, m[i].name.data, m[i].name.len, 0);
        ngx_http_llm_status_printf(o, ",\"requests\":%uL,\"errors\":%uL,"
            "\"prompt_tokens\":%uL,\"completion_tokens\":%uL,"
            "\"cost_usd\":%.6f,\"routes\":{", mn->requests, mn->errors,
            mn->prompt, mn->completion, (double) mn->cost / 1e6);

        for (j = 0; j < NGX_HTTP_LLM_STATUS_REASONS; j++) {
            if (mn->routes[j].name[0] == '\0') {
                break;
            }

            ngx_http_llm_status_lit(o, j ? "," : "");
            ngx_http_llm_status_str(o, mn->routes[j].name,
                                    ngx_strlen(mn->routes[j].name), 0);
            ngx_http_llm_status_printf(o, ":%uL", mn->routes[j].n);
        }

        ngx_http_llm_status_lit(o, "}}");
    }

    ngx_http_llm_status_printf(o, "],\"tenants\":{\"limit\":%d,"
                               "\"tracked\":%ui,\"list\":[",
                               NGX_HTTP_LLM_STATUS_TENANTS, v->sh.ntenants);

    for (i = 0; i < v->sh.ntenants; i++) {
        t = v->tenants[i];

        ngx_http_llm_status_lit(o, i ? ",{\"id\":" : "{\"id\":");
        ngx_http_llm_status_str(o, t->id, t->len, 0);
        ngx_http_llm_status_printf(o, ",\"seen_ms\":%M,\"requests\":%uL,"
                                   "\"day_spend_usd\":%.6f,"
                                   "\"month_spend_usd\":%.6f",
                                   t->seen, t->requests,
                                   (double) t->day / 1e6,
                                   (double) t->month / 1e6);
        ngx_http_llm_status_limit(o, "day_budget_usd", t->budget_day, 1);
        ngx_http_llm_status_limit(o, "month_budget_usd", t->budget_month,
                                  1);
        ngx_http_llm_status_limit(o, "rpm", t->rpm, 0);
        ngx_http_llm_status_limit(o, "rpm_limit", t->rpm_limit, 0);
        ngx_http_llm_status_limit(o, "tpm", t->tpm, 0);
        ngx_http_llm_status_limit(o, "tpm_limit", t->tpm_limit, 0);
        ngx_http_llm_status_lit(o, "}");
    }

    hits = v->sh.cache[0];
    looked = v->sh.cache[0] + v->sh.cache[1];

    ngx_http_llm_status_printf(o, "]},\"cache\":{\"hit\":%uL,\"miss\":%uL,"
                               "\"bypass\":%uL,\"single_flight_waits\":%uL,"
                               "\"hit_ratio\":", hits, v->sh.cache[1],
                               v->sh.cache[2], v->sh.cache[3]);
    ngx_http_llm_status_num(o, looked ? (double) hits / (double) looked : -1);
    ngx_http_llm_status_lit(o, "}}\n");
}


/* a limit's "name":value, null when there is none */

static void
ngx_http_llm_status_limit(ngx_http_llm_status_out_t *o, const char *name,
    int64_t v, ngx_uint_t usd)
{
    if (v < 0) {
        ngx_http_llm_status_printf(o, ",\"%s\":null", name);

    } else if (usd) {
        ngx_http_llm_status_printf(o, ",\"%s\":%.6f", name, (double) v / 1e6);

    } else {
        ngx_http_llm_status_printf(o, ",\"%s\":%L", name, v);
    }
}


/* a number, or null when negative (nothing to show) */

static void
ngx_http_llm_status_num(ngx_http_llm_status_out_t *o, double v)
{
    if (v < 0) {
        ngx_http_llm_status_lit(o, "null");

    } else {
        ngx_http_llm_status_printf(o, "%.6f", v);
    }
}


static void
ngx_http_llm_status_duration(u_char *buf, ngx_msec_t ms)
{
    ngx_msec_t  s;

    s = ms / 1000;

    *ngx_sprintf(buf, "%Md %02Mh %02Mm %02Ms", s / 86400, s / 3600 % 24,
                 s / 60 % 60, s % 60) = '\0';
}


#define ngx_http_llm_status_path(...)                                         \
    *ngx_slprintf(path, path + sizeof(path) - 1, __VA_ARGS__) = '\0'


static void
ngx_http_llm_status_html(ngx_http_llm_status_view_t *v,
    ngx_http_llm_status_out_t *o)
{
    ngx_uint_t                     role;
    u_char                         path[128], buf[64];
    static const char             *roles[] = { "main", "cache" };

    ngx_http_llm_status_printf(o, "<!DOCTYPE html>\n<html lang=\"en\">"
        "<head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width\">"
        "<title>nginx-llm-gateway status</title>"
        "<link rel=\"icon\" href=\"data:,\">"
        "<noscript><meta http-equiv=\"refresh\" content=\"%ui\">"
        "</noscript><style>", v->refresh);
    ngx_http_llm_status_lit(o, ngx_http_llm_status_css);

    ngx_http_llm_status_duration(buf, v->now - v->sh.created);

    ngx_http_llm_status_printf(o, "</style></head>\n<body data-refresh=\"%ui\""
        " data-backends=\"%ui\" data-models=\"%ui\" data-tenants=\"%ui\">"
        "<h1>nginx-llm-gateway status</h1><p class=\"meta\">"
        "workers <b data-json=\"node.workers\">%ui</b> &middot; "
        "up <b data-text=\"node.uptime\">%s</b> &middot; "
        "requests <b data-json=\"node.requests\">%uL</b> &middot; "
        "history: %M s a slot, %ui slots &middot; refresh every %ui s "
        "<span id=\"stale\">&middot; the last refresh failed</span></p>",
        v->refresh, v->nbackends, v->lmcf->models.nelts, v->sh.ntenants,
        v->workers, buf, v->sh.requests, v->lmcf->status_step / 1000,
        v->lmcf->status_slots, v->refresh);

    ngx_http_llm_status_html_backends(v, o);
    ngx_http_llm_status_html_rest(v, o);

    /* the node's Redis, as each worker last saw its connections */

    ngx_http_llm_status_lit(o, "<h2>Redis</h2><table><tr><th class=\"l\">"
                            "role</th><th class=\"l\">state</th>"
                            "<th>workers up</th><th>workers seen</th></tr>");

    for (role = 0; role < 2; role++) {
        ngx_http_llm_status_path("node.redis.%ui.state", role);

        ngx_http_llm_status_printf(o, "<tr><td class=\"l\">%s%s</td>"
            "<td class=\"l\"><span data-text=\"%s\">%s</span></td>",
            roles[role],
            role && v->lmcf->cache_redis == NULL ? " (main's)" : "",
            path, ngx_http_llm_status_redis(v, role));

        ngx_http_llm_status_path("node.redis.%ui.workers_up", role);
        ngx_http_llm_status_td(o, path, v->redis_up[role], 0, 1);
        ngx_http_llm_status_path("node.redis.%ui.workers_seen", role);
        ngx_http_llm_status_td(o, path, v->redis_seen[role], 0, 1);
        ngx_http_llm_status_lit(o, "</tr>");
    }

    ngx_http_llm_status_printf(o, "</table><p class=\"meta\">JSON: "
        "<a href=\"?format=json\">?format=json</a></p><script>");
    ngx_http_llm_status_lit(o, ngx_http_llm_status_js);
    ngx_http_llm_status_lit(o, "</script></body></html>\n");
}


static void
ngx_http_llm_status_html_backends(ngx_http_llm_status_view_t *v,
    ngx_http_llm_status_out_t *o)
{
    ngx_uint_t                    i, j, k, shortw, longw;
    ngx_msec_t                    sw, lw;
    ngx_http_llm_status_bview_t  *bv;
    u_char                        path[128];
    static double                 qs[] = { 0.50, 0.95, 0.99 };

    shortw = ngx_http_llm_status_window(v->lmcf, 300000);
    longw = ngx_http_llm_status_window(v->lmcf, 3600000);
    sw = shortw * v->lmcf->status_step / 1000;
    lw = longw * v->lmcf->status_step / 1000;

    ngx_http_llm_status_printf(o, "<h2>Backends</h2><table><tr>"
        "<th class=\"l\" rowspan=\"2\">model</th>"
        "<th class=\"l\" rowspan=\"2\">backend URL</th>"
        "<th class=\"l\" rowspan=\"2\">circuit</th>"
        "<th class=\"l\" rowspan=\"2\">since (UTC)</th>"
        "<th rowspan=\"2\">in flight</th>"
        "<th colspan=\"2\">availability %%</th>"
        "<th colspan=\"7\">attempts</th><th rowspan=\"2\">429 cool-downs"
        "</th><th colspan=\"3\">TTFB ms</th><th colspan=\"3\">total ms</th>"
        "<th colspan=\"2\">$ / 1M tokens</th>"
        "<th colspan=\"3\">last %ui slots</th></tr><tr>"
        "<th>%M%s</th><th>%M%s</th>", v->lmcf->status_slots,
        sw % 60 ? sw : sw / 60, sw % 60 ? "s" : "m",
        lw % 60 ? lw : lw / 60, lw % 60 ? "s" : "m");

    ngx_http_llm_status_lit(o, "<th>all</th><th>ok</th><th>broken</th>"
        "<th>connect</th><th>timeout</th><th>status</th><th>transfer</th>"
        "<th>p50</th><th>p95</th><th>p99</th><th>p50</th><th>p95</th>"
        "<th>p99</th><th>in</th><th>out</th><th>requests</th>"
        "<th>errors</th><th>TTFB p95</th></tr>");

    for (i = 0; i < v->nbackends; i++) {
        bv = &v->backends[i];

        ngx_http_llm_status_lit(o, "<tr><td class=\"l\">");
        ngx_http_llm_status_str(o, bv->model->name.data,
                                bv->model->name.len, 1);
        ngx_http_llm_status_lit(o, "</td><td class=\"l\">");
        ngx_http_llm_status_str(o, bv->backend->url.data,
                                bv->backend->url.len, 1);

        ngx_http_llm_status_printf(o, "</td><td class=\"l\"><span "
            "class=\"%s\" data-text=\"backends.%ui.state\" data-cls>%s"
            "</span></td><td class=\"l\" data-time=\"backends.%ui."
            "state_changed_ms\">", ngx_http_llm_status_state(bv->info.state),
            i, ngx_http_llm_status_state(bv->info.state), i);

        if (bv->info.changed) {
            ngx_http_llm_status_printf(o, "%02d:%02d:%02d",
                (int) (bv->info.changed / 1000 % 86400 / 3600),
                (int) (bv->info.changed / 1000 % 3600 / 60),
                (int) (bv->info.changed / 1000 % 60));

        } else {
            ngx_http_llm_status_lit(o, "&ndash;");
        }

        ngx_http_llm_status_lit(o, "</td>");

        ngx_http_llm_status_path("backends.%ui.in_flight", i);
        ngx_http_llm_status_td(o, path, bv->info.in_flight, 0, 1);
        ngx_http_llm_status_path("backends.%ui.availability_short", i);
        ngx_http_llm_status_td(o, path, ngx_http_llm_status_avail(bv, v->now,
                               shortw), 2, 100);
        ngx_http_llm_status_path("backends.%ui.availability_long", i);
        ngx_http_llm_status_td(o, path, ngx_http_llm_status_avail(bv, v->now,
                               longw), 2, 100);
        ngx_http_llm_status_path("backends.%ui.attempts", i);
        ngx_http_llm_status_td(o, path,
                               (double) ngx_http_llm_status_attempts(bv),
                               0, 1);

        for (j = 0; j < NGX_HTTP_LLM_STATUS_OUTCOMES; j++) {
            ngx_http_llm_status_path("backends.%ui.outcomes.%s", i,
                                     ngx_http_llm_status_outcomes[j]);
            ngx_http_llm_status_td(o, path, (double) bv->data.outcomes[j],
                                   0, 1);
        }

        ngx_http_llm_status_path("backends.%ui.cooldowns", i);
        ngx_http_llm_status_td(o, path, bv->info.cooled, 0, 1);

        for (k = 0; k < 2; k++) {
            for (j = 0; j < 3; j++) {
                ngx_http_llm_status_path("backends.%ui.%s.p%ui", i,
                                         k ? "latency_ms" : "ttfb_ms",
                                         (ngx_uint_t) (qs[j] * 100));
                ngx_http_llm_status_td(o, path, ngx_http_llm_status_quantile(
                    k ? bv->data.latency : bv->data.ttfb, qs[j]), 1, 1);
            }
        }

        ngx_http_llm_status_path("backends.%ui.price_in_usd", i);
        ngx_http_llm_status_td(o, path, (double) bv->backend->price_in / 1e6,
                               bv->backend->price_in % 10000 ? 6 : 2, 1);
        ngx_http_llm_status_path("backends.%ui.price_out_usd", i);
        ngx_http_llm_status_td(o, path, (double) bv->backend->price_out / 1e6,
                               bv->backend->price_out % 10000 ? 6 : 2, 1);

        for (j = 0; j < 3; j++) {
            ngx_http_llm_status_lit(o, "<td>");
            ngx_http_llm_status_html_spark(bv, v, i, j, o);
            ngx_http_llm_status_lit(o, "</td>");
        }

        ngx_http_llm_status_lit(o, "</tr>");
    }

    ngx_http_llm_status_lit(o, "</table>");
}


/* a sparkline of the ring: 0 requests, 1 errors, 2 TTFB p95 */

static void
ngx_http_llm_status_html_spark(ngx_http_llm_status_bview_t *bv,
    ngx_http_llm_status_view_t *v, ngx_uint_t i, ngx_uint_t what,
    ngx_http_llm_status_out_t *o)
{
    double                       max, x, y, *a;
    ngx_uint_t                   j, k, n;
    ngx_http_llm_status_slot_t  *s;
    uint64_t                     h[NGX_HTTP_LLM_STATUS_BUCKETS];
    static const char           *series[] = { "requests", "errors",
                                              "ttfb_p95_ms" };
    static const char           *cls[] = { "", " err", " lat" };

    n = v->lmcf->status_slots;

    ngx_http_llm_status_printf(o, "<svg class=\"spark%s\" width=\"120\" "
        "height=\"24\" viewBox=\"0 0 120 24\" data-series=\"backends.%ui."
        "history.%s\"><polyline points=\"", cls[what], i, series[what]);

    a = ngx_palloc(o->pool, n * sizeof(double));
    if (a == NULL) {
        o->failed = 1;
        return;
    }

    max = 0;
    x = 0;
    y = 0;

    for (j = 0; j < n; j++) {
        s = ngx_http_llm_status_slot(bv, v->now, j);

        if (what == 2) {
            a[j] = -1;

            if (s) {
                for (k = 0; k < NGX_HTTP_LLM_STATUS_BUCKETS; k++) {
                    h[k] = s->ttfb[k];
                }

                a[j] = ngx_http_llm_status_quantile(h, 0.95);
            }

        } else {
            a[j] = s ? (what ? s->errors : s->attempts) : 0;
        }

        if (a[j] > max) {
            max = a[j];
        }
    }

    /* as the page's script draws it; a lone point as a short dash */

    k = 0;

    for (j = 0; j < n; j++) {
        if (a[j] < 0) {
            continue;
        }

        k++;
        x = n > 1 ? (double) j * 120 / (n - 1) : 0;
        y = 23 - (max > 0 ? a[j] * 22 / max : 0);

        ngx_http_llm_status_printf(o, "%.1f,%.1f ", x, y);
    }

    if (k == 1) {
        ngx_http_llm_status_printf(o, "%.1f,%.1f", x + 2, y);
    }

    ngx_http_llm_status_lit(o, "\"/></svg>");
}


static void
ngx_http_llm_status_html_rest(ngx_http_llm_status_view_t *v,
    ngx_http_llm_status_out_t *o)
{
    double                         ratio;
    uint64_t                       looked;
    ngx_uint_t                     i, j;
    ngx_http_llm_model_t          *m;
    ngx_http_llm_status_model_t   *mn;
    ngx_http_llm_status_tenant_t  *t;
    u_char                         path[128];

    ngx_http_llm_status_lit(o, "<h2>Models</h2><table><tr>"
        "<th class=\"l\">model</th><th>requests</th><th>errors</th>"
        "<th>prompt tokens</th><th>completion tokens</th><th>cost $</th>"
        "<th class=\"l\">routes, by reason</th></tr>");

    m = v->lmcf->models.elts;

    for (i = 0; i < v->lmcf->models.nelts; i++) {
        mn = &v->models[i];

        ngx_http_llm_status_lit(o, "<tr><td class=\"l\">");
        ngx_http_llm_status_str(o, m[i].name.data, m[i].name.len, 1);
        ngx_http_llm_status_lit(o, "</td>");

        ngx_http_llm_status_path("models.%ui.requests", i);
        ngx_http_llm_status_td(o, path, (double) mn->requests, 0, 1);
        ngx_http_llm_status_path("models.%ui.errors", i);
        ngx_http_llm_status_td(o, path, (double) mn->errors, 0, 1);
        ngx_http_llm_status_path("models.%ui.prompt_tokens", i);
        ngx_http_llm_status_td(o, path, (double) mn->prompt, 0, 1);
        ngx_http_llm_status_path("models.%ui.completion_tokens", i);
        ngx_http_llm_status_td(o, path, (double) mn->completion, 0, 1);
        ngx_http_llm_status_path("models.%ui.cost_usd", i);
        ngx_http_llm_status_td(o, path, (double) mn->cost / 1e6, 6, 1);

        ngx_http_llm_status_lit(o, "<td class=\"l\">");

        for (j = 0; j < NGX_HTTP_LLM_STATUS_REASONS; j++) {
            if (mn->routes[j].name[0] == '\0') {
                break;
            }

            ngx_http_llm_status_str(o, mn->routes[j].name,
                                    ngx_strlen(mn->routes[j].name), 1);
            ngx_http_llm_status_printf(o, " <b data-json=\"models.%ui."
                                       "routes.", i);
            ngx_http_llm_status_str(o, mn->routes[j].name,
                                    ngx_strlen(mn->routes[j].name), 1);
            ngx_http_llm_status_printf(o, "\">%uL</b> ", mn->routes[j].n);
        }

        ngx_http_llm_status_lit(o, "</td></tr>");
    }

    ngx_http_llm_status_printf(o, "</table><h2>Tenants</h2><p class=\"meta\">"
        "The %ui tenants seen most recently, at most %d, most spent today "
        "first, as their last admission found them in Redis.</p>"
        "<table><tr><th class=\"l\">tenant</th><th>requests here</th>"
        "<th>today $</th><th>daily budget $</th><th>this month $</th>"
        "<th>monthly budget $</th><th>RPM</th><th>RPM limit</th>"
        "<th>TPM</th><th>TPM limit</th><th class=\"l\">last seen (UTC)</th>"
        "</tr>", v->sh.ntenants, NGX_HTTP_LLM_STATUS_TENANTS);

    for (i = 0; i < v->sh.ntenants; i++) {
        t = v->tenants[i];

        ngx_http_llm_status_printf(o, "<tr><td class=\"l\" data-text=\""
                                   "tenants.list.%ui.id\">", i);
        ngx_http_llm_status_str(o, t->id, t->len, 1);
        ngx_http_llm_status_lit(o, "</td>");

        ngx_http_llm_status_path("tenants.list.%ui.requests", i);
        ngx_http_llm_status_td(o, path, (double) t->requests, 0, 1);
        ngx_http_llm_status_path("tenants.list.%ui.day_spend_usd", i);
        ngx_http_llm_status_td(o, path, (double) t->day / 1e6, 4, 1);
        ngx_http_llm_status_path("tenants.list.%ui.day_budget_usd", i);
        ngx_http_llm_status_td(o, path, t->budget_day < 0 ? -1
                               : (double) t->budget_day / 1e6, 2, 1);
        ngx_http_llm_status_path("tenants.list.%ui.month_spend_usd", i);
        ngx_http_llm_status_td(o, path, (double) t->month / 1e6, 4, 1);
        ngx_http_llm_status_path("tenants.list.%ui.month_budget_usd", i);
        ngx_http_llm_status_td(o, path, t->budget_month < 0 ? -1
                               : (double) t->budget_month / 1e6, 2, 1);
        ngx_http_llm_status_path("tenants.list.%ui.rpm", i);
        ngx_http_llm_status_td(o, path, (double) t->rpm, 0, 1);
        ngx_http_llm_status_path("tenants.list.%ui.rpm_limit", i);
        ngx_http_llm_status_td(o, path, (double) t->rpm_limit, 0, 1);
        ngx_http_llm_status_path("tenants.list.%ui.tpm", i);
        ngx_http_llm_status_td(o, path, (double) t->tpm, 0, 1);
        ngx_http_llm_status_path("tenants.list.%ui.tpm_limit", i);
        ngx_http_llm_status_td(o, path, (double) t->tpm_limit, 0, 1);

        ngx_http_llm_status_printf(o, "<td class=\"l\" data-time=\""
            "tenants.list.%ui.seen_ms\">%02d:%02d:%02d</td></tr>", i,
            (int) (t->seen / 1000 % 86400 / 3600),
            (int) (t->seen / 1000 % 3600 / 60), (int) (t->seen / 1000 % 60));
    }

    looked = v->sh.cache[0] + v->sh.cache[1];
    ratio = looked ? (double) v->sh.cache[0] / (double) looked : -1;

    ngx_http_llm_status_lit(o, "</table><h2>Response cache</h2><table><tr>"
        "<th>hits</th><th>misses</th><th>bypassed</th><th>hit ratio %</th>"
        "<th>single-flight waits</th></tr><tr>");

    ngx_http_llm_status_td(o, (u_char *) "cache.hit",
                           (double) v->sh.cache[0], 0, 1);
    ngx_http_llm_status_td(o, (u_char *) "cache.miss",
                           (double) v->sh.cache[1], 0, 1);
    ngx_http_llm_status_td(o, (u_char *) "cache.bypass",
                           (double) v->sh.cache[2], 0, 1);
    ngx_http_llm_status_td(o, (u_char *) "cache.hit_ratio", ratio, 2, 100);
    ngx_http_llm_status_td(o, (u_char *) "cache.single_flight_waits",
                           (double) v->sh.cache[3], 0, 1);

    ngx_http_llm_status_lit(o, "</tr></table>");
}


/* a number's cell: what the page's script writes there too */

static void
ngx_http_llm_status_td(ngx_http_llm_status_out_t *o, u_char *path,
    double value, ngx_uint_t decimals, ngx_uint_t scale)
{
    char  fmt[8];

    ngx_http_llm_status_printf(o, "<td data-json=\"%s\"", path);

    if (decimals) {
        ngx_http_llm_status_printf(o, " data-d=\"%ui\"", decimals);
    }

    if (scale != 1) {
        ngx_http_llm_status_printf(o, " data-scale=\"%ui\"", scale);
    }

    if (value < 0) {
        ngx_http_llm_status_lit(o, ">&ndash;</td>");
        return;
    }

    value *= scale;

    if (decimals == 0) {
        ngx_http_llm_status_printf(o, ">%uL</td>", (uint64_t) (value + 0.5));
        return;
    }

    /* ngx_sprintf() reads the fraction's width from its format */

    *ngx_sprintf((u_char *) fmt, ">%%.%uif", decimals) = '\0';
    ngx_http_llm_status_printf(o, fmt, value);
    ngx_http_llm_status_lit(o, "</td>");
}


/* room for n more bytes at o->b->last, in a new buffer if need be */

static u_char *
ngx_http_llm_status_room(ngx_http_llm_status_out_t *o, size_t n)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (o->failed) {
        return NULL;
    }

    if (o->b && (size_t) (o->b->end - o->b->last) >= n) {
        return o->b->last;
    }

    b = ngx_create_temp_buf(o->pool, ngx_max(n, 16384));
    cl = ngx_alloc_chain_link(o->pool);

    if (b == NULL || cl == NULL) {
        o->failed = 1;
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;
    *o->last = cl;
    o->last = &cl->next;
    o->b = b;

    return b->last;
}


static void
ngx_http_llm_status_printf(ngx_http_llm_status_out_t *o, const char *fmt,
    ...)
{
    u_char   *p, *e;
    va_list   args;

    p = ngx_http_llm_status_room(o, NGX_HTTP_LLM_STATUS_LINE);
    if (p == NULL) {
        return;
    }

    va_start(args, fmt);
    e = ngx_vslprintf(p, p + NGX_HTTP_LLM_STATUS_LINE, fmt, args);
    va_end(args);

    o->size += e - p;
    o->b->last = e;
}


static void
ngx_http_llm_status_lit(ngx_http_llm_status_out_t *o, const char *s)
{
    u_char  *p;
    size_t   len;

    len = ngx_strlen(s);

    p = ngx_http_llm_status_room(o, len);
    if (p == NULL) {
        return;
    }

    o->b->last = ngx_cpymem(p, s, len);
    o->size += len;
}


/*
 * A string from the configuration or from Redis: a JSON string, quotes
 * included, or HTML text, escaped either way
 */

static void
ngx_http_llm_status_str(ngx_http_llm_status_out_t *o, u_char *s, size_t len,
    ngx_uint_t html)
{
    u_char  *p, *start, *end, c;

    end = s + len;

    if (!html) {
        ngx_http_llm_status_lit(o, "\"");
    }

    for ( /* void */ ; s < end; s++) {
        p = ngx_http_llm_status_room(o, 8);
        if (p == NULL) {
            return;
        }

        start = p;
        c = *s;

        if (html) {
            switch (c) {
            case '&':
                p = ngx_cpymem(p, "&amp;", 5);
                break;
            case '<':
                p = ngx_cpymem(p, "&lt;", 4);
                break;
            case '>':
                p = ngx_cpymem(p, "&gt;", 4);
                break;
            case '"':
                p = ngx_cpymem(p, "&quot;", 6);
                break;
            case '\'':
                p = ngx_cpymem(p, "&#39;", 5);
                break;
            default:
                *p++ = c;
            }

        } else if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = c;

        } else if (c < 0x20 || c == 0x7f || c >= 0x80) {
            /* bytes, not text: the JSON stays valid whatever they are */
            p = ngx_sprintf(p, "\\u%04xd", (ngx_uint_t) c);

        } else {
            *p++ = c;
        }

        o->size += p - start;
        o->b->last = p;
    }

    if (!html) {
        ngx_http_llm_status_lit(o, "\"");
    }
}
