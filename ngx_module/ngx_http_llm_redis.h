
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_redis.c: the asynchronous Redis connection and script registry.
 */


#ifndef _NGX_HTTP_LLM_REDIS_H_INCLUDED_
#define _NGX_HTTP_LLM_REDIS_H_INCLUDED_


#include "ngx_http_llm.h"


char *ngx_http_llm_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_llm_redis_init(ngx_cycle_t *cycle,
    ngx_http_llm_redis_conf_t *conf);
void ngx_http_llm_redis_exit(ngx_cycle_t *cycle);
ngx_uint_t ngx_http_llm_redis_ready(void);
void ngx_http_llm_redis_on_ready(ngx_http_llm_redis_ready_pt handler,
    void *data);
ngx_http_llm_redis_cmd_t *ngx_http_llm_redis_command(int argc,
    const char **argv, const size_t *argvlen, ngx_http_llm_redis_pt handler,
    void *data);
ngx_http_llm_redis_cmd_t *ngx_http_llm_redis_script(ngx_uint_t script,
    int argc, const char **argv, size_t *argvlen,
    ngx_http_llm_redis_pt handler, void *data);
void ngx_http_llm_redis_cancel(ngx_http_llm_redis_cmd_t *cmd);
void ngx_http_llm_redis_reset(const char *why);
const char *ngx_http_llm_redis_error(redisReply *reply,
    ngx_uint_t *transient);


#endif /* _NGX_HTTP_LLM_REDIS_H_INCLUDED_ */
