
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_redis.c: the Redis commands of the module and where they
 * go: one node, a primary behind Sentinel, or a Redis Cluster.
 */


#ifndef _NGX_HTTP_LLM_REDIS_H_INCLUDED_
#define _NGX_HTTP_LLM_REDIS_H_INCLUDED_


#include "ngx_http_llm.h"


char *ngx_http_llm_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_llm_redis_init_conf(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf);
ngx_int_t ngx_http_llm_redis_init(ngx_cycle_t *cycle,
    ngx_http_llm_main_conf_t *lmcf);
void ngx_http_llm_redis_exit(ngx_cycle_t *cycle);
ngx_uint_t ngx_http_llm_redis_ready(ngx_uint_t role);
void ngx_http_llm_redis_on_ready(ngx_http_llm_redis_ready_pt handler,
    void *data);
ngx_http_llm_redis_cmd_t *ngx_http_llm_redis_command(ngx_uint_t role,
    int argc, const char **argv, const size_t *argvlen,
    ngx_http_llm_redis_pt handler, void *data);
ngx_uint_t ngx_http_llm_redis_primaries(ngx_uint_t role);
ngx_http_llm_redis_cmd_t *ngx_http_llm_redis_command_on(ngx_uint_t role,
    ngx_uint_t n, int argc, const char **argv, const size_t *argvlen,
    ngx_http_llm_redis_pt handler, void *data);
ngx_http_llm_redis_cmd_t *ngx_http_llm_redis_script(ngx_uint_t role,
    ngx_uint_t script, int argc, const char **argv, size_t *argvlen,
    ngx_http_llm_redis_pt handler, void *data);
void ngx_http_llm_redis_cancel(ngx_http_llm_redis_cmd_t *cmd);
void ngx_http_llm_redis_reset(ngx_uint_t role, const char *why);
const char *ngx_http_llm_redis_error(redisReply *reply,
    ngx_uint_t *transient);


#endif /* _NGX_HTTP_LLM_REDIS_H_INCLUDED_ */
