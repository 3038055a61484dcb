
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_curl.c: libcurl multi on nginx events.
 */


#ifndef _NGX_HTTP_LLM_CURL_H_INCLUDED_
#define _NGX_HTTP_LLM_CURL_H_INCLUDED_


#include "ngx_http_llm.h"


ngx_int_t ngx_http_llm_curl_init(ngx_cycle_t *cycle, ngx_uint_t keepalive);
void ngx_http_llm_curl_exit(ngx_cycle_t *cycle);
ngx_int_t ngx_http_llm_curl_add(CURL *easy, ngx_http_llm_curl_done_t *done);
CURL *ngx_http_llm_curl_get(void);
void ngx_http_llm_curl_put(CURL *easy);
void ngx_http_llm_curl_process(void);


#endif /* _NGX_HTTP_LLM_CURL_H_INCLUDED_ */
