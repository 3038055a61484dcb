
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * What the fuzz targets share: a process that looks enough like a worker
 * for the module's functions (a cycle, a log that writes nothing, cached
 * time, posted events, timers), fake requests, and the few calls into
 * the rest of nginx that are caught instead of made (see
 * ngx_http_llm_fuzz.c and the --wrap list in t/fuzz/build.sh).
 */


#ifndef _NGX_HTTP_LLM_FUZZ_H_INCLUDED_
#define _NGX_HTTP_LLM_FUZZ_H_INCLUDED_


#include "ngx_http_llm.h"


/* a broken invariant: a crash with a message, so libFuzzer keeps it */
#define ngx_http_llm_fuzz_assert(cond, ...)                                   \
    if (!(cond)) {                                                            \
        ngx_http_llm_fuzz_fail(__FILE__, __LINE__, NULL, #cond, __VA_ARGS__); \
    }


/*
 * The same for an invariant that a finding of the review breaks (its id,
 * e.g. "H1"): LLM_FUZZ_SKIP="H1 H2" lets a run go on past those, to look
 * for others in code where they are not fixed yet.
 */
#define ngx_http_llm_fuzz_expect(id, cond, ...)                               \
    if (!(cond) && !ngx_http_llm_fuzz_skip(id)) {                             \
        ngx_http_llm_fuzz_fail(__FILE__, __LINE__, id, #cond, __VA_ARGS__);   \
    }


/* what happened to a request since the target reset the counters */
typedef struct {
    ngx_uint_t                  run;        /* ngx_http_llm_run() */
    ngx_uint_t                  fail;       /* ngx_http_llm_fail() */
    ngx_uint_t                  finalize;   /* ngx_http_llm_finalize() */
    ngx_uint_t                  status;     /* of the last fail() */
} ngx_http_llm_fuzz_outcome_t;


/* a Redis command the module sent, waiting for the target's reply */
typedef struct {
    ngx_http_llm_redis_pt       handler;
    void                       *data;
    char                        name[16];   /* argv[0] */
    ngx_uint_t                  pending;
} ngx_http_llm_fuzz_cmd_t;


#define NGX_HTTP_LLM_FUZZ_CMDS  8


/* a request as the module sees it; ctx.request leads back here */
typedef struct {
    ngx_http_request_t          r;          /* first */
    ngx_connection_t            c;
    ngx_http_llm_ctx_t          ctx;
    ngx_http_llm_loc_conf_t     conf;
    ngx_table_elt_t             authorization;
    void                       *main_conf[1];
    void                       *srv_conf[1];
    void                       *loc_conf[1];
    void                       *module_ctx[1];
    ngx_http_llm_fuzz_outcome_t outcome;
} ngx_http_llm_fuzz_req_t;


/* a cursor over the fuzz input, for targets that read choices from it */
typedef struct {
    const uint8_t              *pos;
    const uint8_t              *last;
} ngx_http_llm_fuzz_in_t;


extern ngx_http_llm_main_conf_t  ngx_http_llm_fuzz_main_conf;
extern ngx_http_llm_model_t     *ngx_http_llm_fuzz_models;  /* 2 */
extern ngx_uint_t                ngx_http_llm_fuzz_redis_up;
extern ngx_uint_t                ngx_http_llm_fuzz_redis_reset;
extern ngx_http_llm_fuzz_cmd_t   ngx_http_llm_fuzz_cmds[];
extern ngx_uint_t                ngx_http_llm_fuzz_ncmds;


void ngx_http_llm_fuzz_init(void);
ngx_http_llm_fuzz_req_t *ngx_http_llm_fuzz_request(ngx_pool_t *pool);
void ngx_http_llm_fuzz_fail(const char *file, int line, const char *id,
    const char *cond, const char *fmt, ...);

ngx_uint_t ngx_http_llm_fuzz_skip(const char *id);

ngx_http_llm_fuzz_cmd_t *ngx_http_llm_fuzz_next_cmd(void);

/* the request's run loop as the targets see it: a failed phase answered */
void __wrap_ngx_http_llm_run(ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_fuzz_run_posted(void);

ngx_uint_t ngx_http_llm_fuzz_byte(ngx_http_llm_fuzz_in_t *in);
redisReply *ngx_http_llm_fuzz_reply(ngx_http_llm_fuzz_in_t *in,
    ngx_uint_t depth);


#endif /* _NGX_HTTP_LLM_FUZZ_H_INCLUDED_ */
