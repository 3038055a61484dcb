
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The response cache's header, one for its four files: the cache phase
 * (ngx_http_llm_cache.c), the key (_cache_key.c), the replay of a hit
 * (_cache_replay.c, which answers the client, as the proxy does) and the
 * assembly of a stream (_cache_asm.c).
 */


#ifndef _NGX_HTTP_LLM_CACHE_H_INCLUDED_
#define _NGX_HTTP_LLM_CACHE_H_INCLUDED_


#include "ngx_http_llm.h"


/* ngx_http_llm_cache_key.c */
ngx_int_t ngx_http_llm_cache_key(ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_cache_key_exit(void);

/* ngx_http_llm_cache_replay.c */
void ngx_http_llm_cache_replay_init(void);
void ngx_http_llm_cache_replay_exit(void);
void ngx_http_llm_cache_serve(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_entry_t *e);
void ngx_http_llm_cache_replay_end(ngx_http_llm_ctx_t *ctx);

/* ngx_http_llm_cache_asm.c */
cJSON *ngx_http_llm_cache_assemble(ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_cache_asm_free(ngx_http_llm_cache_asm_t *a);


/* ngx_http_llm_cache.c */
void ngx_http_llm_cache_init(void);
void ngx_http_llm_cache_exit(void);
ngx_int_t ngx_http_llm_cache_lookup(ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_cache_store(ngx_http_llm_ctx_t *ctx, cJSON *json);
void ngx_http_llm_cache_cleanup(ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_cache_begin(ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_cache_feed(ngx_http_llm_ctx_t *ctx, cJSON *chunk);


#endif /* _NGX_HTTP_LLM_CACHE_H_INCLUDED_ */
