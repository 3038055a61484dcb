
/*
 * Copyright (C) nginx-llm-gateway authors
 */


#ifndef _NGX_HTTP_LLM_H_INCLUDED_
#define _NGX_HTTP_LLM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <curl/curl.h>
#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>

#include "ngx_http_llm_score.h"
#include "ngx_http_llm_classifier.h"
#include "ngx_http_llm_tokenizer.h"
#include "ngx_http_llm_provider.h"


#define NGX_HTTP_LLM_OUT_BUF_SIZE      8192
/* a stream's events are a few hundred bytes: its buffers are smaller */
#define NGX_HTTP_LLM_OUT_SSE_BUF_SIZE  2048
/* libcurl's receive buffer per transfer (CURLOPT_BUFFERSIZE) */
#define NGX_HTTP_LLM_CURL_BUF_SIZE     4096
#define NGX_HTTP_LLM_MAX_EVENT         (4 * 1024 * 1024)
#define NGX_HTTP_LLM_ERRBUF_SIZE       512
/* the end of a non-streamed body too large to keep, read for its usage */
#define NGX_HTTP_LLM_TAIL_SIZE         (64 * 1024)

/* a SHA-256 digest in hex: key hashes and cache keys are written so */
#define NGX_HTTP_LLM_SHA256_HEX_LEN    64

/* the media type of a stream of server-sent events */
#define NGX_HTTP_LLM_SSE_TYPE          "text/event-stream"

/* p and len are exactly the string literal s */
#define ngx_http_llm_is_lit(p, len, s)                                        \
    ((len) == sizeof(s) - 1 && ngx_strncmp(p, s, sizeof(s) - 1) == 0)

/* a Redis command argument that is a string literal, without its NUL */
#define ngx_http_llm_arg_lit(argv, argvlen, i, s)                             \
    ((argv)[i] = (s), (argvlen)[i] = sizeof(s) - 1)


typedef struct {
    ngx_str_t                   url;        /* .../chat/completions, NUL */
    ngx_str_t                   name;       /* host[:port] for logs */
    ngx_str_t                   model;      /* model id sent upstream */
    ngx_str_t                   auth;       /* "Authorization: Bearer ..." */
    ngx_uint_t                  price_in;   /* micro-dollars per 1M tokens */
    ngx_uint_t                  price_out;
    ngx_uint_t                  weight;
    void                       *health;     /* its node in llm_backends */
    ngx_http_llm_provider_t    *provider;
    time_t                      sunset;     /* retired from then on; 0 */
    unsigned                    hosted:1;   /* a provider, not local */
} ngx_http_llm_backend_t;


typedef struct ngx_http_llm_model_s  ngx_http_llm_model_t;

struct ngx_http_llm_model_s {
    ngx_str_t                   name;
    ngx_uint_t                  context_window;
    ngx_array_t                 backends;   /* ngx_http_llm_backend_t */
    ngx_array_t                 aliases;    /* ngx_str_t */
    ngx_str_t                   fallback_name;
    ngx_http_llm_model_t       *fallback;
    ngx_http_llm_tokenizer_t   *tokenizer;  /* NULL: bytes / 3 */
};


typedef struct {
    ngx_str_t                   name;       /* "auto" */
    ngx_str_t                   cheap_name;
    ngx_str_t                   strong_name;
    ngx_http_llm_model_t       *cheap;
    ngx_http_llm_model_t       *strong;
    ngx_uint_t                  budget;     /* percent spent: cheap */
    ngx_http_llm_weights_t      weights;    /* the hand-weighted score */
    ngx_http_llm_classifier_t  *classifier; /* or a learned model */
    double                      threshold;  /* the learned model's */
    double                      loss;       /* max_quality_loss, or -1 */
    unsigned                    weights_file:1;
} ngx_http_llm_router_t;


/* how llm_redis and llm_cache_redis reach Redis */
#define NGX_HTTP_LLM_REDIS_SINGLE         0
#define NGX_HTTP_LLM_REDIS_SENTINEL       1
#define NGX_HTTP_LLM_REDIS_CLUSTER        2

/* the two roles: quotas and keys, and the cache */
#define NGX_HTTP_LLM_REDIS_MAIN           0
#define NGX_HTTP_LLM_REDIS_CACHE          1


typedef struct {
    ngx_str_t                   name;       /* host:port, for logs */
    ngx_str_t                   host;       /* NUL-terminated */
    in_port_t                   port;
    ngx_addr_t                  addr;       /* unix: only */
} ngx_http_llm_redis_addr_t;


typedef struct {
    ngx_uint_t                  mode;       /* NGX_HTTP_LLM_REDIS_SINGLE */
    ngx_array_t                 addrs;      /* ngx_http_llm_redis_addr_t */
    ngx_str_t                   master;     /* Sentinel's name of it */
    ngx_str_t                   user;       /* an ACL user, or none */
    ngx_str_t                   password;
    ngx_uint_t                  db;
    ngx_msec_t                  timeout;
    unsigned                    tls:1;
    ngx_flag_t                  verify;
    ngx_str_t                   ssl_trusted;
    ngx_str_t                   ssl_certificate;
    ngx_str_t                   ssl_certificate_key;
    ngx_ssl_t                  *ssl;
    ngx_http_core_loc_conf_t   *clcf;       /* of http{}: its resolver */
    ngx_resolver_t             *resolver;
    ngx_msec_t                  resolver_timeout;
} ngx_http_llm_redis_conf_t;


/* a static key from the configuration, known by its SHA-256 */
typedef struct {
    u_char                      hash[NGX_HTTP_LLM_SHA256_HEX_LEN];
    ngx_str_t                   tenant;
    struct ngx_http_llm_tenant_s *policy;   /* NULL: from Redis */
} ngx_http_llm_key_t;


/* a tenant's policy; zero means "no limit" */
typedef struct ngx_http_llm_tenant_s {
    ngx_str_t                   id;
    ngx_int_t                   rpm;
    ngx_int_t                   tpm;
    int64_t                     budget_day;     /* micro-dollars */
    int64_t                     budget_month;
    ngx_int_t                   max_tokens;     /* cap and default */
    ngx_int_t                   max_n;          /* choices per request */
    ngx_str_t                   models;         /* "a,b", empty: all */
    ngx_str_t                   default_model;
    ngx_uint_t                  cache;          /* 0: the location's */
    ngx_str_t                   force_model;    /* for the router */
} ngx_http_llm_tenant_t;


/*
 * The most tokens or micro-dollars one request may reserve or be charged:
 * 128 of them, summed in one script call, stay exact in a Lua double
 */
#define NGX_HTTP_LLM_AMOUNT_MAX        10000000000000LL


/* what a location or tenant lets the response cache keep */
#define NGX_HTTP_LLM_CACHE_OFF            1
#define NGX_HTTP_LLM_CACHE_DETERMINISTIC  2
#define NGX_HTTP_LLM_CACHE_ANY            3


/* llm_media_urls: what media URLs in content parts may be */
#define NGX_HTTP_LLM_MEDIA_OFF            0x0002
#define NGX_HTTP_LLM_MEDIA_DATA           0x0004
#define NGX_HTTP_LLM_MEDIA_HTTP           0x0008
#define NGX_HTTP_LLM_MEDIA_HTTPS          0x0010
#define NGX_HTTP_LLM_MEDIA_PRIVATE        0x0020


typedef struct {
    ngx_array_t                 models;     /* ngx_http_llm_model_t */
    ngx_uint_t                  keepalive;
    ngx_http_llm_redis_conf_t  *redis;
    ngx_http_llm_redis_conf_t  *cache_redis;     /* NULL: redis */
    ngx_str_t                   redis_ssl_trusted;
    ngx_str_t                   redis_ssl_certificate;
    ngx_str_t                   redis_ssl_certificate_key;
    ngx_flag_t                  redis_ssl_verify;
    ngx_array_t                 keys;       /* ngx_http_llm_key_t */
    ngx_msec_t                  auth_cache_ttl;
    ngx_http_llm_router_t      *router;
    ngx_shm_zone_t             *metrics;
    size_t                      metrics_size;    /* llm_metrics_zone */
    ngx_shm_zone_t             *status;
    size_t                      status_size;     /* llm_status_zone */
    ngx_msec_t                  status_step;     /* llm_status_history */
    ngx_uint_t                  status_slots;
    ngx_shm_zone_t             *health;
    ngx_str_t                   ssl_trusted;     /* CA file, NUL */
    ngx_flag_t                  ssl_verify;
    ngx_str_t                   app_url;         /* "HTTP-Referer: ..." */
    ngx_str_t                   app_title;       /* llm_app_title */
    ngx_str_t                   app_title_h;     /* "X-OpenRouter-Title" */
    ngx_str_t                   app_title_x;     /* "X-Title: ...", NUL */
    ngx_uint_t                  breaker_failures;
    ngx_msec_t                  breaker_cooldown;
    size_t                      cache_local;     /* bytes per worker */
    ngx_msec_t                  cache_local_ttl;
    ngx_uint_t                  settle_queue;    /* records per worker */
} ngx_http_llm_main_conf_t;


typedef struct {
    ngx_flag_t                  enable;
    ngx_msec_t                  connect_timeout;
    ngx_msec_t                  first_byte_timeout;
    ngx_msec_t                  idle_timeout;
    ngx_msec_t                  total_timeout;
    ngx_msec_t                  generation_timeout;  /* non-streamed */
    size_t                      max_request_body;
    size_t                      max_response_body;
    size_t                      stream_buffer;
    ngx_flag_t                  auth;
    ngx_flag_t                  quota;
    ngx_uint_t                  fail_open;
    ngx_uint_t                  default_max_tokens;
    ngx_flag_t                  cache;
    ngx_uint_t                  cache_policy;
    ngx_uint_t                  cache_shared;
    ngx_msec_t                  cache_ttl;
    size_t                      cache_max_entry;
    ngx_uint_t                  cache_charge;    /* percent of the cost */
    ngx_msec_t                  cache_lock_timeout;
    ngx_flag_t                  cost_header;
    ngx_uint_t                  max_attempts;
    ngx_msec_t                  retry_backoff;
    ngx_uint_t                  media_urls;      /* NGX_HTTP_LLM_MEDIA_* */
    ngx_uint_t                  json_errors;     /* a gateway's server */
} ngx_http_llm_loc_conf_t;


/* incremental "text/event-stream" parser state */
typedef struct {
    u_char                     *line;
    size_t                      line_len;
    size_t                      line_size;
    u_char                     *data;
    size_t                      data_len;
    size_t                      data_size;
    unsigned                    has_data:1;
    unsigned                    cr:1;      /* a piece ended in CR */

    /* gets the comment lines (":..."), or NULL */
    ngx_int_t                 (*comment)(void *data, u_char *p, size_t len);
} ngx_http_llm_sse_t;

typedef ngx_int_t (*ngx_http_llm_sse_event_pt)(void *data, u_char *payload,
    size_t len);


/* what ended an upstream attempt that produced nothing for the client */
typedef enum {
    NGX_HTTP_LLM_FAIL_NONE = 0,
    NGX_HTTP_LLM_FAIL_CONNECT,
    NGX_HTTP_LLM_FAIL_TIMEOUT,
    NGX_HTTP_LLM_FAIL_STATUS,
    NGX_HTTP_LLM_FAIL_TRANSFER
} ngx_http_llm_fail_e;


typedef struct ngx_http_llm_redis_cmd_s  ngx_http_llm_redis_cmd_t;
typedef struct ngx_http_llm_admit_batch_s  ngx_http_llm_admit_batch_t;
typedef struct ngx_http_llm_cache_asm_s  ngx_http_llm_cache_asm_t;
typedef struct ngx_http_llm_cache_replay_s  ngx_http_llm_cache_replay_t;

typedef void (*ngx_http_llm_redis_pt)(redisReply *reply, void *data);
typedef void (*ngx_http_llm_redis_ready_pt)(void *data);


/* the module's Redis scripts, redis/<name>.lua */
typedef enum {
    NGX_HTTP_LLM_SCRIPT_ADMIT = 0,
    NGX_HTTP_LLM_SCRIPT_SETTLE,
    NGX_HTTP_LLM_SCRIPT_SWEEP,
    NGX_HTTP_LLM_SCRIPT_CACHE_LOCK,
    NGX_HTTP_LLM_SCRIPT_CACHE_DONE,
    NGX_HTTP_LLM_SCRIPT_N
} ngx_http_llm_script_e;

/* a script call's argv[0..2]: EVALSHA, the SHA1, the number of keys */
#define NGX_HTTP_LLM_SCRIPT_HEAD       3


/* the end of a transfer, told to its owner; CURLOPT_PRIVATE points here */
typedef void (*ngx_http_llm_curl_done_pt)(void *data, CURLcode rc);

typedef struct {
    ngx_http_llm_curl_done_pt   handler;
    void                       *data;
} ngx_http_llm_curl_done_t;


typedef enum {
    NGX_HTTP_LLM_PHASE_AUTH = 0,
    NGX_HTTP_LLM_PHASE_POLICY,
    NGX_HTTP_LLM_PHASE_ADMIT,
    NGX_HTTP_LLM_PHASE_CACHE,
    NGX_HTTP_LLM_PHASE_REPLAY,
    NGX_HTTP_LLM_PHASE_PROXY,
    NGX_HTTP_LLM_PHASE_FAIL,        /* a service's reply: send ctx->error */
    NGX_HTTP_LLM_PHASE_DONE
} ngx_http_llm_phase_e;


typedef struct {
    ngx_uint_t                  status;
    const char                 *type;
    const char                 *code;
    const char                 *param;
    u_char                      message[256];
} ngx_http_llm_error_t;


typedef enum {
    NGX_HTTP_LLM_CACHE_NONE = 0,
    NGX_HTTP_LLM_CACHE_BYPASS,
    NGX_HTTP_LLM_CACHE_MISS,
    NGX_HTTP_LLM_CACHE_HIT
} ngx_http_llm_cache_status_e;


/* a hit, as read from its entry */

typedef struct {
    int64_t                     prompt;
    int64_t                     completion;
    int64_t                     cost;
    u_char                     *json;
    size_t                      len;
} ngx_http_llm_cache_entry_t;


/* one try at a backend: zeroed before each */

typedef struct {
    char                        curl_error[CURL_ERROR_SIZE];
    ngx_msec_t                  start;
    ngx_int_t                   status;
    ngx_str_t                   content_type;
    ngx_str_t                   retry_after;
    ngx_msec_t                  retry_ms;      /* retry-after-ms, or 0 */
    ngx_msec_t                  reset_ms;      /* x-ratelimit-reset-*, 0 */
    size_t                      bytes;         /* of a 200 answer */
    size_t                      body_len;
    size_t                      errlen;
    size_t                      tail_len;
    size_t                      mask_carry_len;
    unsigned                    headers_done:1; /* upstream headers seen */
    unsigned                    discard:1;     /* upstream error body */
    unsigned                    first_byte:1;
    unsigned                    body_truncated:1;
    unsigned                    holding:1;     /* body held for cost */
    unsigned                    reached_backend:1; /* body handed over */
    unsigned                    billed:1;      /* in lost_* */
} ngx_http_llm_attempt_t;


/* the request's admission and settlement */

typedef struct {
    ngx_queue_t                 admit_link;    /* waiting for the turn end */
    ngx_http_llm_admit_batch_t *admit_batch;   /* sent, awaiting reply */
    ngx_uint_t                  admit_slot;
    ngx_str_t                   request_id;
    ngx_str_t                   key_day;       /* yyyymmdd, UTC */
    ngx_str_t                   key_month;     /* yyyymm */
    int64_t                     reserved_tokens;
    int64_t                     reserved_cost;
    /* the tenant's state as its admission found it, for llm_status */
    int64_t                     day_spent;     /* micro-dollars */
    int64_t                     month_spent;
    int64_t                     rpm_left;      /* -1: no limit */
    int64_t                     tpm_left;
    unsigned                    admitted:1;
    unsigned                    unenforced:1;  /* fail-open, unmetered */
    unsigned                    admitting:1;   /* admission in flight */
    unsigned                    settled:1;
    unsigned                    admit_unknown:1; /* reply was lost */
} ngx_http_llm_quota_ctx_t;


/* the response cache */

typedef struct {
    ngx_http_llm_cache_status_e status;
    ngx_str_t                   key;           /* llm:cache:<s>:{<sha>} */
    ngx_str_t                   lock;          /* the lock's key */
    u_char                      token[24];
    ngx_http_llm_cache_asm_t   *assembled;     /* a stream, assembled */
    ngx_event_t                 timer;         /* a follower's next look */
    ngx_queue_t                 link;          /* local followers */
    ngx_msec_t                  since;
    ngx_msec_t                  poll;
    int64_t                     cost;          /* the entry's first cost */
    ngx_http_llm_cache_replay_t *replay;       /* a hit being written */
    ngx_http_llm_cache_entry_t  hit;           /* for the replay phase */
    unsigned                    store:1;       /* may store the answer */
    unsigned                    leader:1;      /* holds the lock */
    unsigned                    waiting:1;     /* in cache.link */
    unsigned                    done:1;        /* stored or released */
    unsigned                    waited:1;      /* followed a leader */
} ngx_http_llm_cache_ctx_t;


/* output to the client: our own buffers, recycled */

typedef struct {
    ngx_chain_t                *chain;
    ngx_chain_t                *tail;          /* chain's last link */
    ngx_chain_t                *free;
    ngx_chain_t                *busy;
    unsigned                    headers_sent:1; /* to the client */
} ngx_http_llm_out_t;


typedef struct {
    ngx_http_request_t         *request;
    ngx_http_llm_loc_conf_t    *conf;
    ngx_http_llm_phase_e        phase;
    ngx_http_llm_error_t        error;         /* PHASE_FAIL; no type: 500 */

    /* tenant and quota */
    u_char                      key_hash[NGX_HTTP_LLM_SHA256_HEX_LEN];
    ngx_str_t                   tenant_id;
    ngx_http_llm_tenant_t      *tenant;
    ngx_http_llm_redis_cmd_t   *redis;         /* command in flight */
    ngx_http_llm_quota_ctx_t    quota;
    int64_t                     prompt_estimate;
    int64_t                     max_tokens;
    int64_t                     cost;
    ngx_uint_t                  chunks;        /* content deltas seen */
    int64_t                     stream_tokens; /* estimated, all deltas */
    ngx_uint_t                  choices;       /* n (or best_of), >= 1 */
    int64_t                     choice_tokens; /* max_tokens per choice */

    ngx_str_t                   body_in;       /* the client's body */
    off_t                       body_received;
    cJSON                      *json;          /* the client's request */
    ngx_str_t                   model_name;    /* as the client asked */
    char                       *upstream_body; /* malloc()ed by cJSON */
    cJSON                      *stream_opts;   /* the client's, aside */
    char                       *usage_chunk;   /* to send before [DONE] */
    size_t                      upstream_body_len;

    ngx_http_llm_model_t       *model;
    const char                 *route_reason;
    double                      route_score;   /* < 0: not scored */
    int64_t                     route_tokens;
    ngx_http_llm_model_t       *counted[2];    /* exact counts, per model */
    int64_t                     count[2];
    const char                 *error_code;    /* of the error sent */
    ngx_http_llm_backend_t     *backend;
    uint64_t                    tried;         /* backends, by index */
    ngx_uint_t                  attempts;
    ngx_msec_t                  cool_wait;     /* all rate limited: wait */
    ngx_event_t                 retry;         /* the backoff's timer */
    ngx_table_elt_t            *route_h;

    CURL                       *easy;
    ngx_http_llm_curl_done_t    curl_done;     /* easy's owner */
    struct curl_slist          *headers;
    ngx_http_llm_attempt_t      attempt;       /* the try in progress */

    ngx_event_t                 timer;         /* first byte / idle */

    ngx_msec_t                  start;
    ngx_msec_t                  ttfb;

    ngx_http_llm_fail_e         fail;

    ngx_int_t                   prompt_tokens;
    ngx_int_t                   completion_tokens;

    /* what the attempts that failed over consumed, charged at the end */
    int64_t                     lost_prompt;
    int64_t                     lost_completion;
    int64_t                     lost_cost;

    ngx_http_llm_sse_t          sse;

    ngx_http_llm_cache_ctx_t    cache;
    ngx_http_llm_out_t          out;

    /*
     * the buffers below outlive an attempt, to be reused; how much of each
     * an attempt has filled is in ctx->attempt
     */

    /* non-streamed upstream body, kept to read usage */
    u_char                     *body;
    size_t                      body_size;

    u_char                      errbuf[NGX_HTTP_LLM_ERRBUF_SIZE];

    /* the last bytes of a body over llm_max_response_body, for usage */
    u_char                     *tail;

    /* a body masked piece by piece: the bytes a key may continue from */
    u_char                     *mask_carry;
    size_t                      mask_carry_size;

    unsigned                    stream:1;        /* client asked stream */
    unsigned                    client_usage:1;  /* and include_usage */
    unsigned                    usage_sent:1;    /* its usage chunk, sent */
    unsigned                    sse_mode:1;      /* upstream sends SSE */
    unsigned                    done_seen:1;
    unsigned                    paused:1;
    unsigned                    client_error:1;
    unsigned                    redis_down:1;
    unsigned                    body_too_large:1;
    unsigned                    outstanding:1;   /* counted in health */
    unsigned                    probing:1;       /* a half-open probe */
    unsigned                    all_open:1;
    unsigned                    fell_back:1;
    unsigned                    usage_lost:1;      /* answer, no usage */
    unsigned                    list_models:1;     /* GET /v1/models */
    unsigned                    stream_failed:1;   /* an error event */
    unsigned                    model_checked:1;   /* answer's "model" */
} ngx_http_llm_ctx_t;


/* admissions of one tenant sent in one script call */
struct ngx_http_llm_admit_batch_s {
    ngx_uint_t                  n;
    ngx_http_llm_ctx_t         *ctx[1];        /* NULL: went away */
};


extern ngx_module_t      ngx_http_llm_module;


/*
 * The one call upward: a service resumes its request through the request's
 * run loop (ngx_http_llm_handler.c).
 */
void ngx_http_llm_run(ngx_http_llm_ctx_t *ctx);


#endif /* _NGX_HTTP_LLM_H_INCLUDED_ */
