
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_handler.c: the content handler and the request body filter.
 */


#ifndef _NGX_HTTP_LLM_HANDLER_H_INCLUDED_
#define _NGX_HTTP_LLM_HANDLER_H_INCLUDED_


#include "ngx_http_llm.h"


ngx_int_t ngx_http_llm_handler(ngx_http_request_t *r);
void ngx_http_llm_body_filter_init(ngx_conf_t *cf);


#endif /* _NGX_HTTP_LLM_HANDLER_H_INCLUDED_ */
