
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_sse.c: the server-sent events parser.
 */


#ifndef _NGX_HTTP_LLM_SSE_H_INCLUDED_
#define _NGX_HTTP_LLM_SSE_H_INCLUDED_


#include "ngx_http_llm.h"


ngx_int_t ngx_http_llm_sse_feed(ngx_http_llm_sse_t *sse, u_char *p,
    size_t len, ngx_http_llm_sse_event_pt handler, void *data);
ngx_int_t ngx_http_llm_sse_finish(ngx_http_llm_sse_t *sse,
    ngx_http_llm_sse_event_pt handler, void *data);
void ngx_http_llm_sse_free(ngx_http_llm_sse_t *sse);


#endif /* _NGX_HTTP_LLM_SSE_H_INCLUDED_ */
