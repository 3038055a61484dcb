
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The router's complexity score: transparent prompt features, each in
 * [0, 1], weighted and summed.  Plain C on cJSON, without nginx, so that
 * the offline evaluation (bench/route-eval.c) scores exactly as the
 * gateway does.
 */


#ifndef _NGX_HTTP_LLM_SCORE_H_INCLUDED_
#define _NGX_HTTP_LLM_SCORE_H_INCLUDED_


#include <stddef.h>
#include <cjson/cJSON.h>


typedef enum {
    NGX_HTTP_LLM_F_LENGTH = 0,
    NGX_HTTP_LLM_F_TURNS,
    NGX_HTTP_LLM_F_CODE,
    NGX_HTTP_LLM_F_MATH,
    NGX_HTTP_LLM_F_REASONING,
    NGX_HTTP_LLM_F_ANALYSIS,
    NGX_HTTP_LLM_F_LANGUAGE,
    NGX_HTTP_LLM_F_TOOLS,
    NGX_HTTP_LLM_F_N
} ngx_http_llm_feature_e;


typedef struct {
    double                      weight[NGX_HTTP_LLM_F_N];
    double                      threshold;
} ngx_http_llm_weights_t;


extern const char  *ngx_http_llm_feature_names[NGX_HTTP_LLM_F_N];


void ngx_http_llm_weights_default(ngx_http_llm_weights_t *w);
int ngx_http_llm_weights_load(ngx_http_llm_weights_t *w, const char *path,
    char *err, size_t errlen);
double ngx_http_llm_score(ngx_http_llm_weights_t *w, cJSON *request,
    double *features);
size_t ngx_http_llm_prompt_bytes(cJSON *request, size_t *messages);


#endif /* _NGX_HTTP_LLM_SCORE_H_INCLUDED_ */
