
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_usage.c: token usage and cost of a request.
 */


#ifndef _NGX_HTTP_LLM_USAGE_H_INCLUDED_
#define _NGX_HTTP_LLM_USAGE_H_INCLUDED_


#include "ngx_http_llm.h"


int64_t ngx_http_llm_cost_exact(int64_t prompt, int64_t completion,
    ngx_uint_t price_in, ngx_uint_t price_out);
int64_t ngx_http_llm_cost(int64_t prompt, int64_t completion,
    ngx_uint_t price_in, ngx_uint_t price_out);
void ngx_http_llm_usage(ngx_http_llm_ctx_t *ctx, int64_t *prompt,
    int64_t *completion, int64_t *cost);
void ngx_http_llm_usage_abandon(ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_cost_header(ngx_http_llm_ctx_t *ctx,
    ngx_uint_t trailer);


#endif /* _NGX_HTTP_LLM_USAGE_H_INCLUDED_ */
