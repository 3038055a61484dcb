
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_price.c: prices and dollar amounts in the configuration.
 */


#ifndef _NGX_HTTP_LLM_PRICE_H_INCLUDED_
#define _NGX_HTTP_LLM_PRICE_H_INCLUDED_


#include "ngx_http_llm.h"


int64_t ngx_http_llm_parse_usd(ngx_str_t *s);
ngx_int_t ngx_http_llm_parse_price(ngx_str_t *s, ngx_uint_t *in,
    ngx_uint_t *out);


#endif /* _NGX_HTTP_LLM_PRICE_H_INCLUDED_ */
