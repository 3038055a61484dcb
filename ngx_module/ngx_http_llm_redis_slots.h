
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_redis_slots.c: Redis Cluster's hash slots, its CLUSTER SLOTS
 * reply and its MOVED and ASK redirections.
 */


#ifndef _NGX_HTTP_LLM_REDIS_SLOTS_H_INCLUDED_
#define _NGX_HTTP_LLM_REDIS_SLOTS_H_INCLUDED_


#include "ngx_http_llm.h"


/* the hash slots of a Redis Cluster, 0..16383 */
#define NGX_HTTP_LLM_REDIS_SLOTS     16384

/* the longest node address kept, as a DNS name may be */
#define NGX_HTTP_LLM_REDIS_HOST_MAX  255


/* the slots one primary serves, from CLUSTER SLOTS */
typedef struct {
    ngx_uint_t                  start;      /* inclusive */
    ngx_uint_t                  end;        /* inclusive */
    ngx_str_t                   host;       /* into the reply: copy it */
    in_port_t                   port;
} ngx_http_llm_redis_range_t;


ngx_uint_t ngx_http_llm_redis_keyslot(const u_char *key, size_t len);
ngx_int_t ngx_http_llm_redis_command_slot(int argc, const char **argv,
    const size_t *argvlen);
ngx_int_t ngx_http_llm_redis_slots_parse(redisReply *reply,
    ngx_http_llm_redis_range_t *ranges, ngx_uint_t max, ngx_uint_t *n);
ngx_int_t ngx_http_llm_redis_redirect(const char *str, size_t len,
    ngx_uint_t *ask, ngx_uint_t *slot, ngx_str_t *host, in_port_t *port);


#endif /* _NGX_HTTP_LLM_REDIS_SLOTS_H_INCLUDED_ */
