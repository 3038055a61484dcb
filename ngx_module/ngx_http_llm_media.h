
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_media.c: media URLs in content parts.
 */


#ifndef _NGX_HTTP_LLM_MEDIA_H_INCLUDED_
#define _NGX_HTTP_LLM_MEDIA_H_INCLUDED_


#include "ngx_http_llm.h"


char *ngx_http_llm_media_urls_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_llm_media_check(ngx_pool_t *pool, cJSON *messages,
    ngx_uint_t allow, ngx_http_llm_error_t *err);


#endif /* _NGX_HTTP_LLM_MEDIA_H_INCLUDED_ */
