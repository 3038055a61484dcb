
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * ngx_http_llm_provider.c: the hosted providers, their habits and the
 * rewrite of the request body each one needs.
 */


#ifndef _NGX_HTTP_LLM_PROVIDER_H_INCLUDED_
#define _NGX_HTTP_LLM_PROVIDER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <cjson/cJSON.h>


/* what a hosted provider wants that the OpenAI API does not say */

#define NGX_HTTP_LLM_PROVIDER_STREAM_OPTIONS  0x01  /* takes stream_options */
#define NGX_HTTP_LLM_PROVIDER_ATTRIBUTION     0x02  /* HTTP-Referer, titles */
#define NGX_HTTP_LLM_PROVIDER_X_GROQ          0x04  /* usage in x_groq */


/* the rules of a rewrite table */

typedef enum {
    NGX_HTTP_LLM_RW_END = 0,
    NGX_HTTP_LLM_RW_RENAME,         /* name becomes to */
    NGX_HTTP_LLM_RW_DROP,           /* name is left out */
    NGX_HTTP_LLM_RW_NULLS,          /* members valued null are left out */
    NGX_HTTP_LLM_RW_MESSAGE_NAME,   /* messages[].name, but of roles to */
    NGX_HTTP_LLM_RW_CLAMP,          /* a number name is at most max */
    NGX_HTTP_LLM_RW_ONE,            /* name absent or 1, else refused */
    NGX_HTTP_LLM_RW_ENUM            /* name one of the strings in to */
} ngx_http_llm_rewrite_op_e;


typedef struct {
    ngx_http_llm_rewrite_op_e   op;
    const char                 *name;
    const char                 *to;     /* a name; ENUM: words; roles */
    double                      max;    /* CLAMP */
    unsigned                    unstreamed:1;  /* only when not a stream */
} ngx_http_llm_rewrite_t;


typedef struct {
    ngx_str_t                   name;
    const char                 *base;       /* the default base URL */
    ngx_uint_t                  flags;      /* NGX_HTTP_LLM_PROVIDER_* */
    ngx_http_llm_rewrite_t     *rewrite;    /* NULL: none */
} ngx_http_llm_provider_t;


ngx_http_llm_provider_t *ngx_http_llm_provider_find(ngx_str_t *name);
ngx_http_llm_provider_t *ngx_http_llm_provider_first(void);
/*
 * The rule of pv's table the validated request json breaks and no
 * rewrite can mend (the client is told, naming rule->name), or NULL.
 */
ngx_http_llm_rewrite_t *ngx_http_llm_provider_refuses(
    ngx_http_llm_provider_t *pv, cJSON *json, ngx_uint_t stream);
/*
 * Applies pv's table to out, the body about to be sent (its members
 * references to the validated tree, which stays untouched).  No rule
 * raises a number: the bound the reservation covers still holds.
 * NGX_ERROR: out of memory.
 */
ngx_int_t ngx_http_llm_provider_rewrite(ngx_http_llm_provider_t *pv,
    cJSON *out, ngx_uint_t stream);


#endif /* _NGX_HTTP_LLM_PROVIDER_H_INCLUDED_ */
