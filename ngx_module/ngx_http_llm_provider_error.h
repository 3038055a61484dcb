
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_provider_error.c: what a hosted provider's error says.
 */


#ifndef _NGX_HTTP_LLM_PROVIDER_ERROR_H_INCLUDED_
#define _NGX_HTTP_LLM_PROVIDER_ERROR_H_INCLUDED_


#include "ngx_http_llm.h"


/* whose fault an answer is, and so what the gateway does with it */
typedef enum {
    NGX_HTTP_LLM_PERR_NONE = 0,     /* not an error */
    NGX_HTTP_LLM_PERR_BACKEND,      /* fail over, count toward the breaker */
    NGX_HTTP_LLM_PERR_LIMIT,        /* fail over, park for its Retry-After */
    NGX_HTTP_LLM_PERR_RETIRED,      /* the model is gone there: park long */
    NGX_HTTP_LLM_PERR_REQUEST       /* the request's: answer the client */
} ngx_http_llm_perr_e;


/* a backend whose model is gone is parked this long */
#define NGX_HTTP_LLM_RETIRE_MS       (6 * 60 * 60 * 1000)

/* a rate limit parks at least, and at most, this long */
#define NGX_HTTP_LLM_PARK_MIN_MS     1000
#define NGX_HTTP_LLM_PARK_MAX_MS     (60 * 60 * 1000)

/* what ngx_http_llm_perr_stream() finds in an event */
#define NGX_HTTP_LLM_PERR_STREAM_BACKEND  1
#define NGX_HTTP_LLM_PERR_STREAM_REQUEST  2

/* an error body longer than this is judged by its status alone */
#define NGX_HTTP_LLM_PERR_BODY_MAX   (64 * 1024)


ngx_uint_t ngx_http_llm_perr_status(ngx_uint_t status);
ngx_http_llm_perr_e ngx_http_llm_perr_kind(ngx_uint_t status, u_char *body,
    size_t len, ngx_uint_t retry_after);
ngx_int_t ngx_http_llm_perr_seconds(u_char *p, size_t len);
ngx_int_t ngx_http_llm_perr_duration(u_char *p, size_t len);
ngx_int_t ngx_http_llm_perr_retry_after(u_char *p, size_t len, time_t now);
ngx_int_t ngx_http_llm_perr_body(ngx_pool_t *pool, ngx_uint_t status,
    u_char *body, size_t len, ngx_str_t *out);
ngx_uint_t ngx_http_llm_perr_stream(cJSON *event);


#endif /* _NGX_HTTP_LLM_PROVIDER_ERROR_H_INCLUDED_ */
