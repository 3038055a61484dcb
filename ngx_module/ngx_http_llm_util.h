
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_util.c: small utilities.
 */


#ifndef _NGX_HTTP_LLM_UTIL_H_INCLUDED_
#define _NGX_HTTP_LLM_UTIL_H_INCLUDED_


#include "ngx_http_llm.h"


/*
 * nginx's debug log reads a timer's ev->data as a connection (its fd):
 * timers whose handler finds its state otherwise point here
 */
extern ngx_connection_t  ngx_http_llm_timer_conn;
ngx_int_t ngx_http_llm_grow(u_char **buf, size_t *size, size_t len,
    size_t need, size_t max);
void ngx_http_llm_sha256_hex(u_char *p, size_t len, u_char *hex);
void ngx_http_llm_sha256_exit(void);
u_char *ngx_http_llm_copy(u_char *p, ngx_str_t *s);
ngx_str_t *ngx_http_llm_header_value(ngx_pool_t *pool, char *buf,
    size_t len, const char *name, ngx_str_t *dst);
void *ngx_http_llm_shm_node(ngx_slab_pool_t *shpool, ngx_rbtree_t *tree,
    u_char *key, size_t len, size_t key_offset);
void ngx_http_llm_release_connection(ngx_connection_t *c);
ngx_msec_t ngx_http_llm_wall_msec(void);


#endif /* _NGX_HTTP_LLM_UTIL_H_INCLUDED_ */
