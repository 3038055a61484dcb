
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The module: its commands (each parsed in the file whose code uses it,
 * or by nginx's own setters), the main and location configurations
 * created, merged and checked at the end of http{}, and per-worker
 * start and exit.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_auth.h"
#include "ngx_http_llm_backend.h"
#include "ngx_http_llm_cache.h"
#include "ngx_http_llm_cache_local.h"
#include "ngx_http_llm_curl.h"
#include "ngx_http_llm_handler.h"
#include "ngx_http_llm_media.h"
#include "ngx_http_llm_metrics.h"
#include "ngx_http_llm_proxy.h"
#include "ngx_http_llm_quota.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_request.h"
#include "ngx_http_llm_router.h"
#include "ngx_http_llm_status.h"
#include "ngx_http_llm_util.h"
#include "ngx_http_llm_variables.h"


static ngx_int_t ngx_http_llm_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_llm_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_llm_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_llm_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_llm_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_llm_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_llm_gateway(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_set_enum(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_llm_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_llm_init_process(ngx_cycle_t *cycle);
static void ngx_http_llm_exit_process(ngx_cycle_t *cycle);


static ngx_conf_enum_t  ngx_http_llm_failure_policies[] = {
    { ngx_string("closed"), 0 },
    { ngx_string("open"), 1 },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_llm_cache_policies[] = {
    { ngx_string("deterministic"), NGX_HTTP_LLM_CACHE_DETERMINISTIC },
    { ngx_string("any"), NGX_HTTP_LLM_CACHE_ANY },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_llm_cache_scopes[] = {
    { ngx_string("tenant"), 0 },
    { ngx_string("shared"), 1 },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_llm_commands[] = {

    { ngx_string("llm_model"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_BLOCK|NGX_CONF_TAKE1,
      ngx_http_llm_model_block,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_llm_router_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_ssl_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_ssl_trusted,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_ssl_verify"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, ssl_verify),
      NULL },

    { ngx_string("llm_app_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_app_url,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_app_title"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_app_title,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_breaker"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_llm_breaker,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_upstream_keepalive"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, keepalive),
      NULL },

    { ngx_string("llm_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_llm_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_cache_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_llm_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_redis_ssl_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, redis_ssl_trusted),
      NULL },

    { ngx_string("llm_redis_ssl_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, redis_ssl_certificate),
      NULL },

    { ngx_string("llm_redis_ssl_certificate_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, redis_ssl_certificate_key),
      NULL },

    { ngx_string("llm_redis_ssl_verify"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, redis_ssl_verify),
      NULL },

    { ngx_string("llm_settle_queue"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, settle_queue),
      NULL },

    { ngx_string("llm_api_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_llm_api_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_auth_cache_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, auth_cache_ttl),
      NULL },

    { ngx_string("llm_cache_local"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, cache_local),
      NULL },

    { ngx_string("llm_cache_local_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, cache_local_ttl),
      NULL },

    { ngx_string("llm_auth"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, auth),
      NULL },

    { ngx_string("llm_quota"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, quota),
      NULL },

    { ngx_string("llm_redis_failure"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_set_enum,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, fail_open),
      &ngx_http_llm_failure_policies },

    { ngx_string("llm_default_max_tokens"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, default_max_tokens),
      NULL },

    { ngx_string("llm_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_llm_metrics_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_llm_status_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_status_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, status_size),
      NULL },

    { ngx_string("llm_status_history"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_llm_status_history,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_metrics_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, metrics_size),
      NULL },

    { ngx_string("llm_gateway"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_llm_gateway,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, connect_timeout),
      NULL },

    { ngx_string("llm_first_byte_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, first_byte_timeout),
      NULL },

    { ngx_string("llm_idle_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, idle_timeout),
      NULL },

    { ngx_string("llm_total_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, total_timeout),
      NULL },

    { ngx_string("llm_generation_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, generation_timeout),
      NULL },

    { ngx_string("llm_max_request_body"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, max_request_body),
      NULL },

    { ngx_string("llm_media_urls"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_llm_media_urls_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, media_urls),
      NULL },

    { ngx_string("llm_max_response_body"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, max_response_body),
      NULL },

    { ngx_string("llm_stream_buffer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, stream_buffer),
      NULL },

    { ngx_string("llm_max_attempts"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, max_attempts),
      NULL },

    { ngx_string("llm_retry_backoff"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, retry_backoff),
      NULL },

    { ngx_string("llm_cost_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, cost_header),
      NULL },

    { ngx_string("llm_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, cache),
      NULL },

    { ngx_string("llm_cache_policy"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_set_enum,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, cache_policy),
      &ngx_http_llm_cache_policies },

    { ngx_string("llm_cache_scope"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_set_enum,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, cache_shared),
      &ngx_http_llm_cache_scopes },

    { ngx_string("llm_cache_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, cache_ttl),
      NULL },

    { ngx_string("llm_cache_max_entry"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, cache_max_entry),
      NULL },

    { ngx_string("llm_cache_charge"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, cache_charge),
      NULL },

    { ngx_string("llm_cache_lock_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, cache_lock_timeout),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_llm_module_ctx = {
    ngx_http_llm_preconfiguration,         /* preconfiguration */
    ngx_http_llm_postconfiguration,        /* postconfiguration */

    ngx_http_llm_create_main_conf,         /* create main configuration */
    ngx_http_llm_init_main_conf,           /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_llm_create_loc_conf,          /* create location configuration */
    ngx_http_llm_merge_loc_conf            /* merge location configuration */
};


ngx_module_t  ngx_http_llm_module = {
    NGX_MODULE_V1,
    &ngx_http_llm_module_ctx,              /* module context */
    ngx_http_llm_commands,                 /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_llm_init_module,              /* init module */
    ngx_http_llm_init_process,             /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_llm_exit_process,             /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_llm_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_llm_variables_add(cf);
}


static ngx_int_t
ngx_http_llm_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;
    ngx_http_llm_main_conf_t   *lmcf;

    ngx_http_llm_body_filter_init(cf);

    /* the log phase only counts into the metrics' and the status' zones */

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_module);
    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    if (lmcf->metrics) {
        h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = ngx_http_llm_metrics_log;
    }

    if (lmcf->status) {
        h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = ngx_http_llm_status_log;
    }

    return NGX_OK;
}


static void *
ngx_http_llm_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_main_conf_t));
    if (lmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&lmcf->models, cf->pool, 4,
                       sizeof(ngx_http_llm_model_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&lmcf->keys, cf->pool, 4, sizeof(ngx_http_llm_key_t))
        != NGX_OK)
    {
        return NULL;
    }

    lmcf->keepalive = NGX_CONF_UNSET_UINT;
    lmcf->auth_cache_ttl = NGX_CONF_UNSET_MSEC;
    lmcf->cache_local = NGX_CONF_UNSET_SIZE;
    lmcf->breaker_failures = NGX_CONF_UNSET_UINT;
    lmcf->ssl_verify = NGX_CONF_UNSET;
    lmcf->breaker_cooldown = NGX_CONF_UNSET_MSEC;
    lmcf->cache_local_ttl = NGX_CONF_UNSET_MSEC;
    lmcf->settle_queue = NGX_CONF_UNSET_UINT;
    lmcf->metrics_size = NGX_CONF_UNSET_SIZE;
    lmcf->status_size = NGX_CONF_UNSET_SIZE;
    lmcf->status_step = NGX_CONF_UNSET_MSEC;
    lmcf->status_slots = NGX_CONF_UNSET_UINT;
    lmcf->redis_ssl_verify = NGX_CONF_UNSET;

    return lmcf;
}


static char *
ngx_http_llm_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ngx_conf_init_uint_value(lmcf->keepalive, 64);
    ngx_conf_init_msec_value(lmcf->auth_cache_ttl, 10000);
    ngx_conf_init_size_value(lmcf->cache_local, 0);
    ngx_conf_init_msec_value(lmcf->cache_local_ttl, 1000);
    ngx_conf_init_uint_value(lmcf->breaker_failures, 5);
    ngx_conf_init_value(lmcf->ssl_verify, 1);
    ngx_conf_init_msec_value(lmcf->breaker_cooldown, 30000);
    ngx_conf_init_uint_value(lmcf->settle_queue, 10000);

    if (lmcf->settle_queue < 128) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_settle_queue\" must be at least 128");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_llm_redis_init_conf(cf, lmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_llm_metrics_init_conf(cf, lmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_llm_status_init_conf(cf, lmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_llm_check_keys(cf, lmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_llm_app_init_conf(cf, lmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_llm_backend_init(cf, lmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_llm_router_init(cf, lmcf);
}


static void *
ngx_http_llm_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_llm_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->enable = NGX_CONF_UNSET;
    conf->connect_timeout = NGX_CONF_UNSET_MSEC;
    conf->first_byte_timeout = NGX_CONF_UNSET_MSEC;
    conf->idle_timeout = NGX_CONF_UNSET_MSEC;
    conf->total_timeout = NGX_CONF_UNSET_MSEC;
    conf->generation_timeout = NGX_CONF_UNSET_MSEC;
    conf->max_request_body = NGX_CONF_UNSET_SIZE;
    conf->max_response_body = NGX_CONF_UNSET_SIZE;
    conf->stream_buffer = NGX_CONF_UNSET_SIZE;
    conf->auth = NGX_CONF_UNSET;
    conf->quota = NGX_CONF_UNSET;
    conf->fail_open = NGX_CONF_UNSET_UINT;
    conf->default_max_tokens = NGX_CONF_UNSET_UINT;
    conf->cache = NGX_CONF_UNSET;
    conf->cost_header = NGX_CONF_UNSET;
    conf->max_attempts = NGX_CONF_UNSET_UINT;
    conf->retry_backoff = NGX_CONF_UNSET_MSEC;
    conf->cache_policy = NGX_CONF_UNSET_UINT;
    conf->cache_shared = NGX_CONF_UNSET_UINT;
    conf->cache_ttl = NGX_CONF_UNSET_MSEC;
    conf->cache_max_entry = NGX_CONF_UNSET_SIZE;
    conf->cache_charge = NGX_CONF_UNSET_UINT;
    conf->cache_lock_timeout = NGX_CONF_UNSET_MSEC;

    return conf;
}


static char *
ngx_http_llm_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_llm_loc_conf_t *prev = parent;
    ngx_http_llm_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;
    ngx_http_llm_main_conf_t  *lmcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_value(conf->auth, prev->auth, 0);
    ngx_conf_merge_value(conf->quota, prev->quota, 0);
    ngx_conf_merge_uint_value(conf->fail_open, prev->fail_open, 0);
    ngx_conf_merge_uint_value(conf->default_max_tokens,
                              prev->default_max_tokens, 4096);
    ngx_conf_merge_msec_value(conf->connect_timeout, prev->connect_timeout,
                              5000);
    ngx_conf_merge_msec_value(conf->first_byte_timeout,
                              prev->first_byte_timeout, 60000);
    ngx_conf_merge_msec_value(conf->idle_timeout, prev->idle_timeout, 30000);
    ngx_conf_merge_msec_value(conf->total_timeout, prev->total_timeout,
                              600000);
    ngx_conf_merge_msec_value(conf->generation_timeout,
                              prev->generation_timeout, 600000);
    ngx_conf_merge_size_value(conf->max_request_body, prev->max_request_body,
                              1024 * 1024);
    ngx_conf_merge_size_value(conf->max_response_body,
                              prev->max_response_body, 16 * 1024 * 1024);
    ngx_conf_merge_size_value(conf->stream_buffer, prev->stream_buffer,
                              64 * 1024);
    ngx_conf_merge_bitmask_value(conf->media_urls, prev->media_urls,
                                 NGX_CONF_BITMASK_SET|NGX_HTTP_LLM_MEDIA_DATA
                                 |NGX_HTTP_LLM_MEDIA_HTTPS);

    ngx_conf_merge_value(conf->cache, prev->cache, 0);
    ngx_conf_merge_value(conf->cost_header, prev->cost_header, 0);
    ngx_conf_merge_uint_value(conf->max_attempts, prev->max_attempts, 4);
    ngx_conf_merge_msec_value(conf->retry_backoff, prev->retry_backoff, 20);

    if (conf->max_attempts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_max_attempts\" must be positive");
        return NGX_CONF_ERROR;
    }
    ngx_conf_merge_uint_value(conf->cache_policy, prev->cache_policy,
                              NGX_HTTP_LLM_CACHE_DETERMINISTIC);
    ngx_conf_merge_uint_value(conf->cache_shared, prev->cache_shared, 0);
    ngx_conf_merge_msec_value(conf->cache_ttl, prev->cache_ttl, 3600000);
    ngx_conf_merge_size_value(conf->cache_max_entry, prev->cache_max_entry,
                              4 * 1024 * 1024);
    ngx_conf_merge_uint_value(conf->cache_charge, prev->cache_charge, 0);
    ngx_conf_merge_msec_value(conf->cache_lock_timeout,
                              prev->cache_lock_timeout, 30000);

    if (conf->cache_ttl == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_cache_ttl\" must be positive");
        return NGX_CONF_ERROR;
    }

    if (conf->cache_charge > 100) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_cache_charge\" is a percentage of the "
                           "answer's first cost: 0 to 100");
        return NGX_CONF_ERROR;
    }

    if (conf->cache_max_entry < 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_cache_max_entry\" must be at least 1k");
        return NGX_CONF_ERROR;
    }

    if (conf->stream_buffer < NGX_HTTP_LLM_OUT_BUF_SIZE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_stream_buffer\" must be at least %d",
                           NGX_HTTP_LLM_OUT_BUF_SIZE);
        return NGX_CONF_ERROR;
    }

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_module);

    if (conf->enable && conf->quota && !conf->auth) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_quota\" needs \"llm_auth on\": quotas "
                           "belong to tenants");
        return NGX_CONF_ERROR;
    }

    if (conf->enable && conf->cache && lmcf->redis == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_cache\" needs \"llm_redis\"");
        return NGX_CONF_ERROR;
    }

    if (conf->enable && conf->quota && lmcf->redis == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_quota\" needs \"llm_redis\"");
        return NGX_CONF_ERROR;
    }

    if (conf->enable && conf->auth && lmcf->redis == NULL
        && lmcf->keys.nelts == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_auth\" needs \"llm_redis\" or "
                           "\"llm_api_key\"");
        return NGX_CONF_ERROR;
    }

    if (conf->default_max_tokens == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_default_max_tokens\" must be positive");
        return NGX_CONF_ERROR;
    }

    if (conf->enable) {
        /*
         * the gateway answers oversized bodies itself, in JSON: the core
         * check would send its HTML page first
         */

        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
        clcf->client_max_body_size = 0;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_llm_gateway(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_loc_conf_t *llcf = conf;

    ngx_http_llm_loc_conf_t   *slcf;
    ngx_http_core_srv_conf_t  *cscf;
    ngx_http_core_loc_conf_t  *clcf;

    if (llcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    llcf->enable = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_llm_handler;

    /* errors found before a location is chosen are this server's */

    cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);
    slcf = cscf->ctx->loc_conf[ngx_http_llm_module.ctx_index];
    slcf->json_errors = 1;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_llm_init_module(ngx_cycle_t *cycle)
{
    ngx_http_llm_quota_init();

    /* before fork: curl_global_init() is not thread-safe everywhere */

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "llm: curl_global_init() failed");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_init_process(ngx_cycle_t *cycle)
{
    ngx_http_llm_main_conf_t  *lmcf;

    ngx_http_llm_timer_conn.fd = (ngx_socket_t) -1;

    ngx_http_llm_cache_init();
    ngx_http_llm_cache_replay_init();

    /* the cache manager and loader serve no requests */

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    lmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_llm_module);

    if (lmcf == NULL || lmcf->models.nelts == 0) {
        return NGX_OK;
    }

    ngx_http_llm_json_init();

    ngx_http_llm_cache_local_init(lmcf->cache_local, lmcf->cache_local_ttl);

    ngx_http_llm_backend_init_process(lmcf);

    if (lmcf->redis
        && ngx_http_llm_redis_init(cycle, lmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_llm_curl_init(cycle, lmcf->keepalive);
}


static void
ngx_http_llm_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_llm_backend_exit_process(
        ngx_http_cycle_get_module_main_conf(cycle, ngx_http_llm_module));
    ngx_http_llm_redis_exit(cycle);
    ngx_http_llm_quota_exit();
    ngx_http_llm_curl_exit(cycle);
    ngx_http_llm_auth_exit();
    ngx_http_llm_cache_local_exit();
    ngx_http_llm_cache_replay_exit();
    ngx_http_llm_cache_exit();
}


/* ngx_conf_set_enum_slot(), with a message that names the directive */

static char *
ngx_http_llm_set_enum(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    u_char           *list, *last, *q;
    ngx_str_t        *value;
    ngx_uint_t       *np, i;
    ngx_conf_enum_t  *e;
    u_char            buf[128];

    np = (ngx_uint_t *) (p + cmd->offset);

    if (*np != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    e = cmd->post;

    for (i = 0; e[i].name.len != 0; i++) {
        if (e[i].name.len == value[1].len
            && ngx_strcasecmp(e[i].name.data, value[1].data) == 0)
        {
            *np = e[i].value;
            return NGX_CONF_OK;
        }
    }

    list = buf;
    last = buf + sizeof(buf);
    q = list;

    for (i = 0; e[i].name.len != 0; i++) {
        q = ngx_slprintf(q, last, "%s\"%V\"", i ? ", " : "", &e[i].name);
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\" in \"%V\", expected %*s",
                       &value[1], &cmd->name, q - list, list);

    return NGX_CONF_ERROR;
}
