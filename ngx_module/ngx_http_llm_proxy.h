
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_proxy.c: the upstream attempt loop.
 */


#ifndef _NGX_HTTP_LLM_PROXY_H_INCLUDED_
#define _NGX_HTTP_LLM_PROXY_H_INCLUDED_


#include "ngx_http_llm.h"


char *ngx_http_llm_ssl_trusted(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_llm_app_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_llm_app_title(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_llm_app_init_conf(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf);
ngx_int_t ngx_http_llm_proxy_start(ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_proxy_done(void *data, CURLcode rc);
void ngx_http_llm_proxy_writer(ngx_http_request_t *r);
void ngx_http_llm_proxy_cleanup(ngx_http_llm_ctx_t *ctx);


#endif /* _NGX_HTTP_LLM_PROXY_H_INCLUDED_ */
