
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_quota.c: admission and settlement of quotas in Redis.
 */


#ifndef _NGX_HTTP_LLM_QUOTA_H_INCLUDED_
#define _NGX_HTTP_LLM_QUOTA_H_INCLUDED_


#include "ngx_http_llm.h"


void ngx_http_llm_quota_init(void);
void ngx_http_llm_quota_flush(void);
void ngx_http_llm_quota_exit(void);
ngx_int_t ngx_http_llm_quota_admit(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_error_t *err);
void ngx_http_llm_quota_settle(ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_quota_cancel(ngx_http_llm_ctx_t *ctx);


#endif /* _NGX_HTTP_LLM_QUOTA_H_INCLUDED_ */
