
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_backend.c: models, backends and their health.
 */


#ifndef _NGX_HTTP_LLM_BACKEND_H_INCLUDED_
#define _NGX_HTTP_LLM_BACKEND_H_INCLUDED_


#include "ngx_http_llm.h"


/* a circuit's states, as llm_backend_state exports them */
#define NGX_HTTP_LLM_CLOSED     0
#define NGX_HTTP_LLM_OPEN       1
#define NGX_HTTP_LLM_HALF_OPEN  2


typedef struct {
    ngx_uint_t                  state;      /* as llm_backend_state */
    ngx_msec_t                  changed;    /* wall clock, ms; 0: never */
    ngx_msec_t                  cool_until; /* wall clock, ms */
    ngx_uint_t                  cooled;     /* 429 cool-downs */
    ngx_uint_t                  in_flight;
} ngx_http_llm_backend_info_t;


char *ngx_http_llm_model_block(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_llm_breaker(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_llm_backend_init(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf);
ngx_http_llm_backend_t *ngx_http_llm_backend_next(ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_backend_init_process(ngx_http_llm_main_conf_t *lmcf);
void ngx_http_llm_backend_exit_process(ngx_http_llm_main_conf_t *lmcf);
void ngx_http_llm_backend_done(ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_backend_ok(ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_backend_failed(ngx_http_llm_ctx_t *ctx);
ngx_uint_t ngx_http_llm_backend_answered(ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_backend_cool(ngx_http_llm_ctx_t *ctx, ngx_msec_t ms);
void ngx_http_llm_backend_retire(ngx_http_llm_ctx_t *ctx, ngx_msec_t ms);
ngx_uint_t ngx_http_llm_backend_state(ngx_http_llm_main_conf_t *lmcf,
    ngx_http_llm_backend_t *b);
void ngx_http_llm_backend_info(ngx_http_llm_main_conf_t *lmcf,
    ngx_http_llm_backend_t *b, ngx_http_llm_backend_info_t *info);


#endif /* _NGX_HTTP_LLM_BACKEND_H_INCLUDED_ */
