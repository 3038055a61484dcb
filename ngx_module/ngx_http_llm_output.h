
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_output.c: the client output chain and response headers.
 */


#ifndef _NGX_HTTP_LLM_OUTPUT_H_INCLUDED_
#define _NGX_HTTP_LLM_OUTPUT_H_INCLUDED_


#include "ngx_http_llm.h"


void ngx_http_llm_finalize(ngx_http_llm_ctx_t *ctx, ngx_int_t rc);
ngx_int_t ngx_http_llm_send_buf(ngx_http_request_t *r, ngx_buf_t *b,
    const char *type);
ngx_int_t ngx_http_llm_add_header(ngx_http_request_t *r, const char *key,
    const char *value);
ngx_int_t ngx_http_llm_push_header(ngx_list_t *list, const char *key,
    const char *value);
ngx_table_elt_t *ngx_http_llm_last_header(ngx_http_request_t *r);
ngx_int_t ngx_http_llm_out(ngx_http_llm_ctx_t *ctx, u_char *p, size_t len);
/* a string literal to the client, without its NUL */
#define ngx_http_llm_out_lit(ctx, s)                                          \
    ngx_http_llm_out(ctx, (u_char *) s, sizeof(s) - 1)
ngx_int_t ngx_http_llm_out_flush(ngx_http_llm_ctx_t *ctx, ngx_uint_t last);
ngx_int_t ngx_http_llm_out_pass(ngx_http_llm_ctx_t *ctx);
size_t ngx_http_llm_out_pending(ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_out_write(ngx_http_request_t *r);


#endif /* _NGX_HTTP_LLM_OUTPUT_H_INCLUDED_ */
