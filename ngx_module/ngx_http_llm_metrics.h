
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_metrics.c: the metrics zone and its exposition.
 */


#ifndef _NGX_HTTP_LLM_METRICS_H_INCLUDED_
#define _NGX_HTTP_LLM_METRICS_H_INCLUDED_


#include "ngx_http_llm.h"


char *ngx_http_llm_metrics_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_llm_metrics_init_conf(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf);
ngx_int_t ngx_http_llm_metrics_log(ngx_http_request_t *r);
void ngx_http_llm_metrics_request(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_metrics_attempt(ngx_http_llm_ctx_t *ctx,
    const char *outcome);
void ngx_http_llm_metrics_backend(ngx_http_llm_ctx_t *ctx,
    const char *series, const char *arg);
void ngx_http_llm_metrics_count(const char *series, int64_t n);


#endif /* _NGX_HTTP_LLM_METRICS_H_INCLUDED_ */
