
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_json.c: the bounded JSON parser.
 */


#ifndef _NGX_HTTP_LLM_JSON_H_INCLUDED_
#define _NGX_HTTP_LLM_JSON_H_INCLUDED_


#include "ngx_http_llm.h"


ngx_int_t ngx_http_llm_json_check(ngx_pool_t *pool, u_char *p, size_t len,
    ngx_http_llm_error_t *err);
ngx_int_t ngx_http_llm_json_unique(ngx_pool_t *pool, cJSON *json,
    ngx_http_llm_error_t *err);
void ngx_http_llm_json_syntax(ngx_http_llm_error_t *err);


#endif /* _NGX_HTTP_LLM_JSON_H_INCLUDED_ */
