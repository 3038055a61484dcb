
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The $llm_* variables: what a request's context knows, for logs and
 * headers.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_variables.h"


enum {
    NGX_HTTP_LLM_VAR_MODEL = 0,
    NGX_HTTP_LLM_VAR_BACKEND,
    NGX_HTTP_LLM_VAR_UPSTREAM_STATUS,
    NGX_HTTP_LLM_VAR_PROMPT_TOKENS,
    NGX_HTTP_LLM_VAR_COMPLETION_TOKENS,
    NGX_HTTP_LLM_VAR_TTFB,
    NGX_HTTP_LLM_VAR_CACHE,
    NGX_HTTP_LLM_VAR_ROUTE,
    NGX_HTTP_LLM_VAR_ROUTE_SCORE
};


static ngx_int_t ngx_http_llm_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_variable_t  ngx_http_llm_vars[] = {

    { ngx_string("llm_model"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_MODEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_backend"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_BACKEND, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_upstream_status"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_UPSTREAM_STATUS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_prompt_tokens"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_PROMPT_TOKENS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_completion_tokens"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_COMPLETION_TOKENS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_ttfb"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_TTFB, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_cache_status"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_CACHE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_route"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_ROUTE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_route_score"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_ROUTE_SCORE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_llm_variables_add(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_llm_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char              *p;
    ngx_int_t            n;
    ngx_http_llm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    switch (data) {

    case NGX_HTTP_LLM_VAR_MODEL:
        if (ctx->model == NULL) {
            v->not_found = 1;
            return NGX_OK;
        }

        v->data = ctx->model->name.data;
        v->len = ctx->model->name.len;
        return NGX_OK;

    case NGX_HTTP_LLM_VAR_BACKEND:
        if (ctx->backend == NULL) {
            v->not_found = 1;
            return NGX_OK;
        }

        v->data = ctx->backend->name.data;
        v->len = ctx->backend->name.len;
        return NGX_OK;

    case NGX_HTTP_LLM_VAR_TTFB:
        if (!ctx->attempt.first_byte) {
            v->not_found = 1;
            return NGX_OK;
        }

        p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 4);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_sprintf(p, "%T.%03M", (time_t) ctx->ttfb / 1000,
                             ctx->ttfb % 1000) - p;
        return NGX_OK;

    case NGX_HTTP_LLM_VAR_ROUTE:
        if (ctx->route_reason == NULL) {
            v->not_found = 1;
            return NGX_OK;
        }

        v->data = (u_char *) ctx->route_reason;
        v->len = ngx_strlen(v->data);
        return NGX_OK;

    case NGX_HTTP_LLM_VAR_ROUTE_SCORE:
        if (ctx->route_reason == NULL || ctx->route_score < 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        p = ngx_pnalloc(r->pool, 32);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_sprintf(p, "%.2f", ctx->route_score) - p;
        return NGX_OK;

    case NGX_HTTP_LLM_VAR_CACHE:
        if (ctx->cache.status == NGX_HTTP_LLM_CACHE_NONE) {
            v->not_found = 1;
            return NGX_OK;
        }

        v->data = (u_char *) (ctx->cache.status == NGX_HTTP_LLM_CACHE_HIT
                              ? "HIT"
                              : ctx->cache.status == NGX_HTTP_LLM_CACHE_MISS
                              ? "MISS" : "BYPASS");
        v->len = ngx_strlen(v->data);
        return NGX_OK;

    case NGX_HTTP_LLM_VAR_UPSTREAM_STATUS:
        n = ctx->attempt.status ? ctx->attempt.status : -1;
        break;

    case NGX_HTTP_LLM_VAR_PROMPT_TOKENS:
        n = ctx->prompt_tokens;
        break;

    default: /* NGX_HTTP_LLM_VAR_COMPLETION_TOKENS */
        n = ctx->completion_tokens;
        break;
    }

    if (n < 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;
    v->len = ngx_sprintf(p, "%i", n) - p;

    return NGX_OK;
}
