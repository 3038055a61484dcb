
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_cache_local.c: the per-worker cache of small lookups.
 */


#ifndef _NGX_HTTP_LLM_CACHE_LOCAL_H_INCLUDED_
#define _NGX_HTTP_LLM_CACHE_LOCAL_H_INCLUDED_


#include "ngx_http_llm.h"


void ngx_http_llm_cache_local_init(size_t max, ngx_msec_t ttl);
void ngx_http_llm_cache_local_exit(void);
u_char *ngx_http_llm_cache_local_get(ngx_str_t *key, size_t *len);
void ngx_http_llm_cache_local_put(ngx_str_t *key, u_char *data, size_t len,
    ngx_msec_t ttl);


#endif /* _NGX_HTTP_LLM_CACHE_LOCAL_H_INCLUDED_ */
