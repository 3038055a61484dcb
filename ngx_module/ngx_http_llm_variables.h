
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_variables.c: the $llm_* variables.
 */


#ifndef _NGX_HTTP_LLM_VARIABLES_H_INCLUDED_
#define _NGX_HTTP_LLM_VARIABLES_H_INCLUDED_


#include "ngx_http_llm.h"


ngx_int_t ngx_http_llm_variables_add(ngx_conf_t *cf);


#endif /* _NGX_HTTP_LLM_VARIABLES_H_INCLUDED_ */
