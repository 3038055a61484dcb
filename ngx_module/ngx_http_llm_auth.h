
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_auth.c: API keys and tenants.
 */


#ifndef _NGX_HTTP_LLM_AUTH_H_INCLUDED_
#define _NGX_HTTP_LLM_AUTH_H_INCLUDED_


#include "ngx_http_llm.h"


char *ngx_http_llm_api_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_llm_check_keys(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf);
ngx_int_t ngx_http_llm_auth(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_error_t *err);
void ngx_http_llm_auth_exit(void);
ngx_int_t ngx_http_llm_tenant_id_valid(ngx_str_t *id);
ngx_http_llm_tenant_t *ngx_http_llm_tenant_dup(ngx_http_llm_tenant_t *t,
    ngx_pool_t *pool);


#endif /* _NGX_HTTP_LLM_AUTH_H_INCLUDED_ */
