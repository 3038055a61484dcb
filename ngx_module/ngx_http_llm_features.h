
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The learned router's features: what a request looks like to the
 * classifier.  Plain C on cJSON, without nginx, so that the trainer
 * (bench/route-train.c) sees every request exactly as the gateway does.
 */


#ifndef _NGX_HTTP_LLM_FEATURES_H_INCLUDED_
#define _NGX_HTTP_LLM_FEATURES_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>


/*
 * A feature is an index into the model's weights and a value.  The named
 * (dense) features come first; the hashed n-grams take the
 * 2^NGX_HTTP_LLM_HASH_BITS slots after them.
 */

#define NGX_HTTP_LLM_HASH_BITS   16
#define NGX_HTTP_LLM_HASH_SIZE   (1u << NGX_HTTP_LLM_HASH_BITS)

/* the most features one request yields: the scan caps bound it */
#define NGX_HTTP_LLM_FEAT_MAX    40960


typedef enum {
    NGX_HTTP_LLM_D_LENGTH = 0,      /* log of all the messages' bytes */
    NGX_HTTP_LLM_D_LAST_LENGTH,     /* log of the last user turn's bytes */
    NGX_HTTP_LLM_D_SYSTEM_LENGTH,   /* log of the system prompt's bytes */
    NGX_HTTP_LLM_D_TURNS,           /* user turns */
    NGX_HTTP_LLM_D_ASSISTANT,       /* assistant turns */
    NGX_HTTP_LLM_D_TOOL_MESSAGES,   /* tool results in the conversation */
    NGX_HTTP_LLM_D_CODE,            /* code cues in the last turn */
    NGX_HTTP_LLM_D_CODE_FENCE,      /* a ``` block in the last turn */
    NGX_HTTP_LLM_D_SYMBOLS,         /* density of code punctuation */
    NGX_HTTP_LLM_D_MATH,            /* math cues */
    NGX_HTTP_LLM_D_MATH_SYMBOLS,    /* density of math symbols */
    NGX_HTTP_LLM_D_DIGITS,          /* density of digits */
    NGX_HTTP_LLM_D_REASONING,       /* reasoning cues */
    NGX_HTTP_LLM_D_ANALYSIS,        /* analysis cues */
    NGX_HTTP_LLM_D_QUESTIONS,       /* question marks */
    NGX_HTTP_LLM_D_NON_ASCII,       /* share of bytes outside ASCII */
    NGX_HTTP_LLM_D_LANG_EN,         /* the last turn's language */
    NGX_HTTP_LLM_D_LANG_FR,
    NGX_HTTP_LLM_D_LANG_IT,
    NGX_HTTP_LLM_D_LANG_DE,
    NGX_HTTP_LLM_D_LANG_ES,
    NGX_HTTP_LLM_D_LANG_OTHER,
    NGX_HTTP_LLM_D_TOOLS,           /* log of the number of tools */
    NGX_HTTP_LLM_D_TOOLS_SIZE,      /* log of their JSON's bytes */
    NGX_HTTP_LLM_D_SCHEMA,          /* a json_schema response format */
    NGX_HTTP_LLM_D_JSON_MODE,       /* a json_object response format */
    NGX_HTTP_LLM_D_N
} ngx_http_llm_dense_e;


/* the kinds of hashed features: each weighs the same, however many it has */
#define NGX_HTTP_LLM_KINDS       7


/*
 * The hashed features are idx[], each its kind in the top byte and its
 * index in the low three, worth scale[kind] each; the named ones are
 * dense[], at indices 0 to NGX_HTTP_LLM_D_N - 1.
 */

typedef struct {
    uint32_t     idx[NGX_HTTP_LLM_FEAT_MAX];
    size_t       n;
    float        scale[NGX_HTTP_LLM_KINDS];
    double       dense[NGX_HTTP_LLM_D_N];
    int          lang;
} ngx_http_llm_features_t;


extern const char  *ngx_http_llm_dense_names[NGX_HTTP_LLM_D_N];
extern const char  *ngx_http_llm_lang_names[6];


/* the feature layout's name: a weights file must have been trained on it */
const char *ngx_http_llm_features_layout(void);

void ngx_http_llm_features(cJSON *request, ngx_http_llm_features_t *f);


#endif /* _NGX_HTTP_LLM_FEATURES_H_INCLUDED_ */
