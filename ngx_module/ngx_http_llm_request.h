
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_request.c: the request body: parse, validate, rewrite.
 */


#ifndef _NGX_HTTP_LLM_REQUEST_H_INCLUDED_
#define _NGX_HTTP_LLM_REQUEST_H_INCLUDED_


#include "ngx_http_llm.h"


void ngx_http_llm_json_init(void);
ngx_int_t ngx_http_llm_parse_request(ngx_http_llm_ctx_t *ctx, u_char *p,
    size_t len, ngx_http_llm_error_t *err);
/*
 * The body sent to backend b, written from the validated tree (ctx->json
 * after ngx_http_llm_parse_request() and ngx_http_llm_apply_policy()),
 * with exactly one copy of each member.  The client's members are kept
 * as they are, but for those the gateway decides: "model" is b's id;
 * "max_tokens" / "max_completion_tokens" carry ctx->choice_tokens (the
 * reserved bound per choice), under the name(s) the client used, or as
 * "max_tokens" if the gateway chose it; "stream_options" goes only with
 * a stream to a provider that takes it, with include_usage true; then
 * the provider's rewrite table (ngx_http_llm_provider_rewrite()) applies.
 * The result, NUL-terminated, is also ctx->upstream_body (the previous
 * one is freed); it is freed with cJSON_free() by the next call or the
 * proxy's cleanup.  Needs neither curl nor an event loop.  NULL: out of
 * memory.
 */
u_char *ngx_http_llm_upstream_body(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_backend_t *b, size_t *len);


#endif /* _NGX_HTTP_LLM_REQUEST_H_INCLUDED_ */
