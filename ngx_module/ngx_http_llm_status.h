
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_status.c: the status page, its zone and its history.
 */


#ifndef _NGX_HTTP_LLM_STATUS_H_INCLUDED_
#define _NGX_HTTP_LLM_STATUS_H_INCLUDED_


#include "ngx_http_llm.h"


char *ngx_http_llm_status_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_llm_status_history(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_llm_status_init_conf(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf);
ngx_int_t ngx_http_llm_status_log(ngx_http_request_t *r);
void ngx_http_llm_status_attempt(ngx_http_llm_ctx_t *ctx,
    const char *outcome);


#endif /* _NGX_HTTP_LLM_STATUS_H_INCLUDED_ */
