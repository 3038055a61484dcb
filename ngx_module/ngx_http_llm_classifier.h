
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The learned router's classifier: a logistic regression over the
 * features of ngx_http_llm_features.c, read from the file that
 * bench/route-train.c writes.  Plain C, without nginx.
 */


#ifndef _NGX_HTTP_LLM_CLASSIFIER_H_INCLUDED_
#define _NGX_HTTP_LLM_CLASSIFIER_H_INCLUDED_


#include "ngx_http_llm_features.h"


#define NGX_HTTP_LLM_CLASSIFIER_DIM  (NGX_HTTP_LLM_D_N + NGX_HTTP_LLM_HASH_SIZE)


typedef void *(*ngx_http_llm_alloc_pt)(void *data, size_t size);


typedef struct {
    float       *weight;            /* NGX_HTTP_LLM_CLASSIFIER_DIM */
    double       bias;
    double       threshold;         /* the file's own, for its loss */
    double       loss;

    /* the needs-strong validation prompts' probabilities, ascending */
    float       *calibration;
    size_t       ncalibration;
} ngx_http_llm_classifier_t;


/* 1: the file is a learned model, 0: not (the hand weights' form) */
int ngx_http_llm_classifier_file(const char *path);

int ngx_http_llm_classifier_load(ngx_http_llm_classifier_t *c,
    const char *path, ngx_http_llm_alloc_pt alloc, void *data, char *err,
    size_t errlen);
double ngx_http_llm_classifier_score(const ngx_http_llm_classifier_t *c,
    const ngx_http_llm_features_t *f);
double ngx_http_llm_classifier_threshold(const ngx_http_llm_classifier_t *c,
    double loss);


#endif /* _NGX_HTTP_LLM_CLASSIFIER_H_INCLUDED_ */
