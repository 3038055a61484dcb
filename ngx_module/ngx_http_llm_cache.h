
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The response cache's own header: what its files (the cache phase, the
 * key, the replay of a hit, the assembly of a stream) share among
 * themselves.  The rest of the module sees ngx_http_llm.h only.
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


#endif /* _NGX_HTTP_LLM_CACHE_H_INCLUDED_ */
