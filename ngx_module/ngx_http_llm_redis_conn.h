
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_redis_conn.c: one connection to one Redis node, on nginx's
 * own connections: resolver, TLS, AUTH and SELECT, pipelined writes and
 * replies in order.
 */


#ifndef _NGX_HTTP_LLM_REDIS_CONN_H_INCLUDED_
#define _NGX_HTTP_LLM_REDIS_CONN_H_INCLUDED_


#include "ngx_http_llm.h"


/* where a connection is */
#define NGX_HTTP_LLM_REDIS_CLOSED      0
#define NGX_HTTP_LLM_REDIS_RESOLVING   1
#define NGX_HTTP_LLM_REDIS_CONNECTING  2
#define NGX_HTTP_LLM_REDIS_SETUP       3
#define NGX_HTTP_LLM_REDIS_UP          4


typedef struct ngx_http_llm_redis_conn_s  ngx_http_llm_redis_conn_t;
typedef struct ngx_http_llm_redis_wait_s  ngx_http_llm_redis_wait_t;

/* the connection came up, or went down (rc->state says which) */
typedef void (*ngx_http_llm_redis_state_pt)(ngx_http_llm_redis_conn_t *rc,
    void *data);

/* a reply, or NULL when the connection went before it came */
typedef void (*ngx_http_llm_redis_reply_pt)(ngx_http_llm_redis_conn_t *rc,
    redisReply *reply, void *data);


struct ngx_http_llm_redis_wait_s {
    ngx_queue_t                    queue;
    ngx_http_llm_redis_reply_pt    handler;    /* NULL: nobody to tell */
    void                          *data;
};


struct ngx_http_llm_redis_conn_s {
    /* set by the owner before ngx_http_llm_redis_conn_open() */
    ngx_str_t                      name;       /* host:port, for logs */
    ngx_str_t                      host;       /* NUL; for the resolver,
                                                  SNI and verification */
    in_port_t                      port;
    ngx_addr_t                     addr;       /* none: resolve host */
    ngx_resolver_t                *resolver;
    ngx_msec_t                     resolver_timeout;
    ngx_http_llm_redis_conf_t     *conf;       /* TLS, user, db, timeout */
    ngx_log_t                     *log;
    ngx_http_llm_redis_state_pt    handler;
    void                          *data;
    unsigned                       subscriber:1;  /* replies never end */

    /* the connection's own */
    ngx_uint_t                     state;
    ngx_peer_connection_t          peer;
    ngx_resolver_ctx_t            *resolving;
    redisReader                   *reader;
    u_char                        *out;
    size_t                         out_len;
    size_t                         out_sent;
    size_t                         out_size;
    ngx_queue_t                    waiting;
    ngx_uint_t                     setup;      /* setup replies due */
    ngx_event_t                    flush;
    ngx_uint_t                     busy;       /* in the read loop */
    unsigned                       close_due:1;
    unsigned                       close_notify:1;
    ngx_sockaddr_t                 sockaddr;
};


ngx_int_t ngx_http_llm_redis_conn_ssl(ngx_conf_t *cf,
    ngx_http_llm_redis_conf_t *conf);
void ngx_http_llm_redis_conn_set_host(ngx_http_llm_redis_conn_t *rc,
    u_char *host, size_t len, in_port_t port);
void ngx_http_llm_redis_conn_open(ngx_http_llm_redis_conn_t *rc);
ngx_http_llm_redis_wait_t *ngx_http_llm_redis_conn_send(
    ngx_http_llm_redis_conn_t *rc, const char *cmd, size_t len,
    ngx_http_llm_redis_reply_pt handler, void *data);
void ngx_http_llm_redis_conn_close(ngx_http_llm_redis_conn_t *rc,
    const char *why);


#endif /* _NGX_HTTP_LLM_REDIS_CONN_H_INCLUDED_ */
