
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_policy.c: tenant policy on a request.
 */


#ifndef _NGX_HTTP_LLM_POLICY_H_INCLUDED_
#define _NGX_HTTP_LLM_POLICY_H_INCLUDED_


#include "ngx_http_llm.h"


ngx_int_t ngx_http_llm_apply_policy(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_error_t *err);


#endif /* _NGX_HTTP_LLM_POLICY_H_INCLUDED_ */
