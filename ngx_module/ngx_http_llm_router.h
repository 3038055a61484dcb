
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_router.c: model names, aliases, routing and fallback.
 */


#ifndef _NGX_HTTP_LLM_ROUTER_H_INCLUDED_
#define _NGX_HTTP_LLM_ROUTER_H_INCLUDED_


#include "ngx_http_llm.h"


char *ngx_http_llm_router_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_llm_router_init(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf);
ngx_int_t ngx_http_llm_route(ngx_http_llm_ctx_t *ctx, int64_t completion,
    ngx_http_llm_error_t *err);
ngx_int_t ngx_http_llm_route_fallback(ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_route_header(ngx_http_llm_ctx_t *ctx);
ngx_http_llm_model_t *ngx_http_llm_find_model(ngx_http_request_t *r,
    ngx_str_t *name);
ngx_int_t ngx_http_llm_model_allowed(ngx_str_t *list, ngx_str_t *name);
int64_t ngx_http_llm_prompt_tokens(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_model_t *m);
void ngx_http_llm_router_spend(ngx_http_llm_tenant_t *t, int64_t day,
    int64_t month);


#endif /* _NGX_HTTP_LLM_ROUTER_H_INCLUDED_ */
