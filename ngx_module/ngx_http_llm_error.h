
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_error.c: OpenAI-style errors.
 */


#ifndef _NGX_HTTP_LLM_ERROR_H_INCLUDED_
#define _NGX_HTTP_LLM_ERROR_H_INCLUDED_


#include "ngx_http_llm.h"


void ngx_http_llm_set_error(ngx_http_llm_error_t *err, ngx_uint_t status,
    const char *type, const char *code, const char *param,
    const char *fmt, ...);
u_char *ngx_http_llm_error_json(ngx_pool_t *pool, ngx_http_llm_error_t *err,
    size_t *len);
ngx_int_t ngx_http_llm_send_error(ngx_http_request_t *r,
    ngx_http_llm_error_t *err);
void ngx_http_llm_fail(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err);


#endif /* _NGX_HTTP_LLM_ERROR_H_INCLUDED_ */
