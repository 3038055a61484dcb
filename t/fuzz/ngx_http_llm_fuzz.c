
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The fuzz targets' worker: no nginx is started, nothing listens, nothing
 * is logged.  Calls that would go to Redis or finish a request are caught
 * by link-time wrappers (ld --wrap, t/fuzz/build.sh), so that a target can
 * answer the module's Redis commands itself and see how a request ended.
 */


#include "ngx_http_llm_fuzz.h"
#include "ngx_http_llm_backend.h"
#include "ngx_http_llm_cache.h"
#include "ngx_http_llm_quota.h"
#include "ngx_http_llm_request.h"


/* the configuration every target sees: two models, seven backends */
ngx_http_llm_main_conf_t   ngx_http_llm_fuzz_main_conf;
ngx_http_llm_model_t      *ngx_http_llm_fuzz_models;

ngx_uint_t                 ngx_http_llm_fuzz_redis_up;
ngx_uint_t                 ngx_http_llm_fuzz_redis_reset;
ngx_http_llm_fuzz_cmd_t    ngx_http_llm_fuzz_cmds[NGX_HTTP_LLM_FUZZ_CMDS];
ngx_uint_t                 ngx_http_llm_fuzz_ncmds;

static ngx_cycle_t         ngx_http_llm_fuzz_cycle;
static ngx_log_t           ngx_http_llm_fuzz_log;
static ngx_open_file_t     ngx_http_llm_fuzz_log_file;
static ngx_http_conf_ctx_t  ngx_http_llm_fuzz_http_ctx;
static void                *ngx_http_llm_fuzz_http_main[1];


static void ngx_http_llm_fuzz_backend(ngx_http_llm_model_t *m,
    char *model, char *provider, ngx_uint_t in, ngx_uint_t out);


void
ngx_http_llm_fuzz_init(void)
{
    ngx_str_t             *alias;
    ngx_pool_t            *pool;
    ngx_http_llm_model_t  *m;

    ngx_pagesize = getpagesize();
    for (ngx_pagesize_shift = 0; (1 << ngx_pagesize_shift) < ngx_pagesize;
         ngx_pagesize_shift++)
    {
        /* void */
    }

    ngx_cacheline_size = NGX_CPU_CACHE_LINE;
    ngx_pid = getpid();
    srandom(1);

    ngx_time_init();

    /* level 0: ngx_log_error() writes nothing above NGX_LOG_STDERR */
    ngx_http_llm_fuzz_log_file.fd = ngx_stderr;
    ngx_http_llm_fuzz_log.file = &ngx_http_llm_fuzz_log_file;
    ngx_http_llm_fuzz_log.log_level = 0;

    ngx_http_llm_fuzz_cycle.log = &ngx_http_llm_fuzz_log;
    ngx_cycle = &ngx_http_llm_fuzz_cycle;

    /*
     * ngx_http_cycle_get_module_main_conf() finds the main conf through
     * the http block's context, at ngx_http_module's index
     */

    if (ngx_preinit_modules() != NGX_OK) {
        abort();
    }

    ngx_http_llm_fuzz_cycle.conf_ctx = calloc(ngx_max_module, sizeof(void *));
    if (ngx_http_llm_fuzz_cycle.conf_ctx == NULL) {
        abort();
    }

    ngx_http_llm_fuzz_http_ctx.main_conf = ngx_http_llm_fuzz_http_main;
    ngx_http_llm_fuzz_http_main[0] = &ngx_http_llm_fuzz_main_conf;
    ngx_http_llm_fuzz_cycle.conf_ctx[ngx_http_module.index] =
        (void *) &ngx_http_llm_fuzz_http_ctx;

    ngx_queue_init(&ngx_posted_events);
    ngx_queue_init(&ngx_posted_next_events);
    ngx_event_timer_init(&ngx_http_llm_fuzz_log);

    ngx_http_llm_json_init();
    ngx_http_llm_quota_init();
    ngx_http_llm_cache_init();

    ngx_http_llm_module.ctx_index = 0;

    pool = ngx_create_pool(16384, &ngx_http_llm_fuzz_log);
    if (pool == NULL) {
        abort();
    }

    ngx_http_llm_fuzz_cycle.pool = pool;

    if (ngx_array_init(&ngx_http_llm_fuzz_main_conf.models, pool, 2,
                       sizeof(ngx_http_llm_model_t))
        != NGX_OK
        || ngx_array_init(&ngx_http_llm_fuzz_main_conf.keys, pool, 1,
                          sizeof(ngx_http_llm_key_t))
           != NGX_OK)
    {
        abort();
    }

    ngx_http_llm_fuzz_main_conf.auth_cache_ttl = 10000;
    ngx_http_llm_fuzz_main_conf.breaker_failures = 5;
    ngx_http_llm_fuzz_main_conf.breaker_cooldown = 10000;

    /* as in the demo of ./config.sh run, and one model on providers */

    m = ngx_array_push_n(&ngx_http_llm_fuzz_main_conf.models, 2);
    if (m == NULL) {
        abort();
    }

    ngx_memzero(m, 2 * sizeof(ngx_http_llm_model_t));
    ngx_http_llm_fuzz_models = m;

    ngx_str_set(&m[0].name, "mixtral-8x7b");
    m[0].context_window = 32768;
    ngx_str_set(&m[1].name, "mixtral-8x22b");
    m[1].context_window = 65536;

    if (ngx_array_init(&m[0].backends, pool, 1,
                       sizeof(ngx_http_llm_backend_t)) != NGX_OK
        || ngx_array_init(&m[1].backends, pool, 6,
                          sizeof(ngx_http_llm_backend_t)) != NGX_OK
        || ngx_array_init(&m[0].aliases, pool, 1, sizeof(ngx_str_t))
           != NGX_OK
        || ngx_array_init(&m[1].aliases, pool, 1, sizeof(ngx_str_t))
           != NGX_OK)
    {
        abort();
    }

    ngx_http_llm_fuzz_backend(&m[0], "tiny-8x7b", NULL, 700000, 700000);
    ngx_http_llm_fuzz_backend(&m[1], "mistralai/Mixtral-8x22B", "together",
                              2000000, 6000000);
    ngx_http_llm_fuzz_backend(&m[1], "mistralai/mixtral-8x22b-instruct",
                              "openrouter", 2000000, 6000000);

    /* the providers with rewrite tables: each body is checked against it */

    ngx_http_llm_fuzz_backend(&m[1], "mistral-small-latest", "mistral",
                              2000000, 6000000);
    ngx_http_llm_fuzz_backend(&m[1], "accounts/fireworks/models/x",
                              "fireworks", 2000000, 6000000);
    ngx_http_llm_fuzz_backend(&m[1], "groq-model", "groq",
                              2000000, 6000000);
    ngx_http_llm_fuzz_backend(&m[1], "deepinfra/model", "deepinfra",
                              2000000, 6000000);

    /* ngx_str_set() names its first argument twice */

    alias = ngx_array_push(&m[0].aliases);
    if (alias == NULL) {
        abort();
    }

    ngx_str_set(alias, "open-mixtral-8x7b");

    alias = ngx_array_push(&m[1].aliases);
    if (alias == NULL) {
        abort();
    }

    ngx_str_set(alias, "open-mixtral-8x22b");
}


static void
ngx_http_llm_fuzz_backend(ngx_http_llm_model_t *m, char *model,
    char *provider, ngx_uint_t in, ngx_uint_t out)
{
    ngx_str_t                name;
    ngx_http_llm_backend_t  *b;

    b = ngx_array_push(&m->backends);
    if (b == NULL) {
        abort();
    }

    ngx_memzero(b, sizeof(ngx_http_llm_backend_t));

    ngx_str_set(&b->url, "http://127.0.0.1:1/v1/chat/completions");
    ngx_str_set(&b->name, "127.0.0.1:1");
    b->model.data = (u_char *) model;
    b->model.len = ngx_strlen(model);
    b->price_in = in;
    b->price_out = out;
    b->weight = 1;

    if (provider) {
        name.data = (u_char *) provider;
        name.len = ngx_strlen(provider);
        b->provider = ngx_http_llm_provider_find(&name);
        b->hosted = 1;

        if (b->provider == NULL) {
            abort();
        }
    }
}


/* a request in its own pool, with a location configured as in the demo */

ngx_http_llm_fuzz_req_t *
ngx_http_llm_fuzz_request(ngx_pool_t *pool)
{
    ngx_http_request_t       *r;
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_fuzz_req_t  *fr;
    ngx_http_llm_loc_conf_t  *conf;

    fr = ngx_pcalloc(pool, sizeof(ngx_http_llm_fuzz_req_t));
    if (fr == NULL) {
        abort();
    }

    r = &fr->r;
    r->pool = pool;
    r->main = r;
    r->connection = &fr->c;
    r->main_conf = fr->main_conf;
    r->srv_conf = fr->srv_conf;
    r->loc_conf = fr->loc_conf;
    r->ctx = fr->module_ctx;
    r->method = NGX_HTTP_POST;

    fr->c.log = ngx_cycle->log;
    fr->c.pool = pool;
    fr->c.fd = (ngx_socket_t) -1;

    fr->main_conf[0] = &ngx_http_llm_fuzz_main_conf;
    fr->loc_conf[0] = &fr->conf;

    if (ngx_list_init(&r->headers_out.headers, pool, 4,
                      sizeof(ngx_table_elt_t)) != NGX_OK
        || ngx_list_init(&r->headers_out.trailers, pool, 2,
                         sizeof(ngx_table_elt_t)) != NGX_OK
        || ngx_list_init(&r->headers_in.headers, pool, 2,
                         sizeof(ngx_table_elt_t)) != NGX_OK)
    {
        abort();
    }

    conf = &fr->conf;
    conf->enable = 1;
    conf->auth = 1;
    conf->quota = 1;
    conf->fail_open = 1;
    conf->default_max_tokens = 4096;
    conf->connect_timeout = 5000;
    conf->first_byte_timeout = 60000;
    conf->idle_timeout = 30000;
    conf->total_timeout = 600000;
    conf->max_request_body = 1024 * 1024;
    conf->max_response_body = 16 * 1024 * 1024;
    conf->stream_buffer = 64 * 1024;
    conf->cache = 1;
    conf->cache_policy = NGX_HTTP_LLM_CACHE_DETERMINISTIC;
    conf->cache_ttl = 3600000;
    conf->cache_max_entry = 4 * 1024 * 1024;
    conf->cache_lock_timeout = 30000;
    conf->max_attempts = 4;
    conf->retry_backoff = 20;

    ctx = &fr->ctx;
    ctx->request = r;
    ctx->conf = conf;
    ctx->start = ngx_current_msec;
    ctx->prompt_tokens = -1;
    ctx->completion_tokens = -1;

    fr->module_ctx[0] = ctx;

    return fr;
}


void
ngx_http_llm_fuzz_fail(const char *file, int line, const char *id,
    const char *cond, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;
    u_char    buf[1024];

    /* nginx's formats: %ui, %uz, %V ... */
    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf) - 1, fmt, args);
    va_end(args);

    *p = '\0';

    fprintf(stderr, "\n%s:%d: invariant broken: %s%s%s\n    %s\n",
            file, line, id ? id : "", id ? ": " : "", cond, buf);

    abort();
}


ngx_uint_t
ngx_http_llm_fuzz_skip(const char *id)
{
    char        *skip, *p;
    size_t       len;
    static char *env = (char *) -1;

    if (env == (char *) -1) {
        env = getenv("LLM_FUZZ_SKIP");
    }

    if (env == NULL) {
        return 0;
    }

    len = ngx_strlen(id);

    for (skip = env; (p = strstr(skip, id)) != NULL; skip = p + len) {
        if ((p == env || p[-1] == ' ' || p[-1] == ',')
            && (p[len] == '\0' || p[len] == ' ' || p[len] == ','))
        {
            return 1;
        }
    }

    return 0;
}


/* the oldest command still waiting for its reply */

ngx_http_llm_fuzz_cmd_t *
ngx_http_llm_fuzz_next_cmd(void)
{
    ngx_uint_t  i;

    for (i = 0; i < ngx_http_llm_fuzz_ncmds; i++) {
        if (ngx_http_llm_fuzz_cmds[i].pending) {
            return &ngx_http_llm_fuzz_cmds[i];
        }
    }

    return NULL;
}


/* the end of an event-loop turn: what the module posted for it runs */

void
ngx_http_llm_fuzz_run_posted(void)
{
    ngx_event_process_posted((ngx_cycle_t *) ngx_cycle, &ngx_posted_events);
}


ngx_uint_t
ngx_http_llm_fuzz_byte(ngx_http_llm_fuzz_in_t *in)
{
    return (in->pos < in->last) ? *in->pos++ : 0;
}


/*
 * A reply tree from the input, as hiredis would build it (RESP2): a type
 * byte, then a length byte and bytes for strings, statuses and errors,
 * eight bytes for an integer, a count byte and the elements for an array.
 * An exhausted input gives NULL: the command timed out.
 */

redisReply *
ngx_http_llm_fuzz_reply(ngx_http_llm_fuzz_in_t *in, ngx_uint_t depth)
{
    size_t       i, n;
    uint64_t     v;
    redisReply  *r;

    if (in->pos >= in->last) {
        return NULL;
    }

    r = calloc(1, sizeof(redisReply));
    if (r == NULL) {
        abort();
    }

    switch (ngx_http_llm_fuzz_byte(in) % 6) {

    case 0:
        r->type = REDIS_REPLY_NIL;
        break;

    case 1:
    case 2:
    case 3:
        r->type = (in->pos[-1] % 6 == 1) ? REDIS_REPLY_STRING
                  : (in->pos[-1] % 6 == 2) ? REDIS_REPLY_STATUS
                  : REDIS_REPLY_ERROR;

        /* ngx_min() reads its arguments twice */
        n = ngx_http_llm_fuzz_byte(in);
        n = ngx_min(n, (size_t) (in->last - in->pos));

        r->str = malloc(n + 1);
        if (r->str == NULL) {
            abort();
        }

        ngx_memcpy(r->str, in->pos, n);
        r->str[n] = '\0';
        r->len = n;
        in->pos += n;
        break;

    case 4:
        r->type = REDIS_REPLY_INTEGER;

        v = 0;
        for (i = 0; i < 8; i++) {
            v = (v << 8) | ngx_http_llm_fuzz_byte(in);
        }

        r->integer = (long long) v;
        break;

    default:
        r->type = REDIS_REPLY_ARRAY;

        n = ngx_http_llm_fuzz_byte(in);

        if (depth >= 3) {
            n = 0;
        }

        r->element = calloc(n ? n : 1, sizeof(redisReply *));
        if (r->element == NULL) {
            abort();
        }

        r->elements = n;

        /* hiredis never gives NULL elements: a short input ends in nils */

        for (i = 0; i < n; i++) {
            r->element[i] = ngx_http_llm_fuzz_reply(in, depth + 1);

            if (r->element[i] == NULL) {
                r->element[i] = calloc(1, sizeof(redisReply));
                if (r->element[i] == NULL) {
                    abort();
                }

                r->element[i]->type = REDIS_REPLY_NIL;
            }
        }

        break;
    }

    return r;
}


/*
 * The wrappers.  ld --wrap=SYMBOL sends every call of SYMBOL from another
 * object file here; the module's own files stay untouched.
 */

ngx_http_llm_redis_cmd_t *__wrap_ngx_http_llm_redis_command(ngx_uint_t role,
    int argc, const char **argv, const size_t *argvlen,
    ngx_http_llm_redis_pt handler, void *data);
ngx_http_llm_redis_cmd_t *__wrap_ngx_http_llm_redis_script(ngx_uint_t role,
    ngx_uint_t script, int argc, const char **argv, size_t *argvlen,
    ngx_http_llm_redis_pt handler, void *data);
ngx_http_llm_redis_cmd_t *__wrap_ngx_http_llm_redis_command_on(
    ngx_uint_t role, ngx_uint_t n, int argc, const char **argv,
    const size_t *argvlen, ngx_http_llm_redis_pt handler, void *data);
ngx_uint_t __wrap_ngx_http_llm_redis_ready(ngx_uint_t role);
void __wrap_ngx_http_llm_redis_cancel(ngx_http_llm_redis_cmd_t *cmd);
void __wrap_ngx_http_llm_redis_reset(ngx_uint_t role, const char *why);
void __wrap_ngx_http_llm_fail(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_error_t *err);
void __wrap_ngx_http_llm_finalize(ngx_http_llm_ctx_t *ctx, ngx_int_t rc);
void __wrap_ngx_http_run_posted_requests(ngx_connection_t *c);
void __wrap_ngx_http_finalize_request(ngx_http_request_t *r, ngx_int_t rc);


ngx_http_llm_redis_cmd_t *
__wrap_ngx_http_llm_redis_command(ngx_uint_t role, int argc,
    const char **argv, const size_t *argvlen, ngx_http_llm_redis_pt handler,
    void *data)
{
    ngx_http_llm_fuzz_cmd_t  *cmd;

    if (!ngx_http_llm_fuzz_redis_up
        || ngx_http_llm_fuzz_ncmds == NGX_HTTP_LLM_FUZZ_CMDS)
    {
        return NULL;
    }

    cmd = &ngx_http_llm_fuzz_cmds[ngx_http_llm_fuzz_ncmds++];

    cmd->handler = handler;
    cmd->data = data;
    cmd->pending = (handler != NULL);

    ngx_memzero(cmd->name, sizeof(cmd->name));
    if (argc > 0) {
        ngx_memcpy(cmd->name, argv[0],
                   ngx_min(argvlen[0], sizeof(cmd->name) - 1));
    }

    /* an opaque handle: the module only gives it back to cancel */
    return (ngx_http_llm_redis_cmd_t *) cmd;
}


/* one primary of a cluster: the target has one Redis */

ngx_http_llm_redis_cmd_t *
__wrap_ngx_http_llm_redis_command_on(ngx_uint_t role, ngx_uint_t n, int argc,
    const char **argv, const size_t *argvlen, ngx_http_llm_redis_pt handler,
    void *data)
{
    return __wrap_ngx_http_llm_redis_command(role, argc, argv, argvlen,
                                             handler, data);
}


/* a script call is a command by the name the registry would send */

ngx_http_llm_redis_cmd_t *
__wrap_ngx_http_llm_redis_script(ngx_uint_t role, ngx_uint_t script,
    int argc, const char **argv, size_t *argvlen,
    ngx_http_llm_redis_pt handler, void *data)
{
    ngx_http_llm_arg_lit(argv, argvlen, 0, "EVALSHA");

    return __wrap_ngx_http_llm_redis_command(role, argc, argv, argvlen,
                                             handler, data);
}


ngx_uint_t
__wrap_ngx_http_llm_redis_ready(ngx_uint_t role)
{
    return ngx_http_llm_fuzz_redis_up;
}


void
__wrap_ngx_http_llm_redis_cancel(ngx_http_llm_redis_cmd_t *cmd)
{
    ((ngx_http_llm_fuzz_cmd_t *) cmd)->pending = 0;
}


/* the connection is dropped: the target fails what waits, later */

void
__wrap_ngx_http_llm_redis_reset(ngx_uint_t role, const char *why)
{
    ngx_http_llm_fuzz_redis_reset = 1;
}


/*
 * A service that ended the request resumes it in PHASE_FAIL: that is
 * what ngx_http_llm_run() would send, not a request that goes on
 */

void
__wrap_ngx_http_llm_run(ngx_http_llm_ctx_t *ctx)
{
    if (ctx->phase != NGX_HTTP_LLM_PHASE_FAIL) {
        ((ngx_http_llm_fuzz_req_t *) ctx->request)->outcome.run++;
        return;
    }

    if (ctx->error.type == NULL) {
        ctx->phase = NGX_HTTP_LLM_PHASE_DONE;
        __wrap_ngx_http_llm_finalize(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    __wrap_ngx_http_llm_fail(ctx, &ctx->error);
}


void
__wrap_ngx_http_llm_fail(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    ngx_http_llm_fuzz_req_t  *fr;

    fr = (ngx_http_llm_fuzz_req_t *) ctx->request;

    fr->outcome.fail++;
    fr->outcome.status = err->status;

    ngx_http_llm_fuzz_assert(err->status >= 400 && err->status < 600
                             && err->type != NULL,
                             "an error with status %ui", err->status);

    ctx->phase = NGX_HTTP_LLM_PHASE_DONE;
}


void
__wrap_ngx_http_llm_finalize(ngx_http_llm_ctx_t *ctx, ngx_int_t rc)
{
    ((ngx_http_llm_fuzz_req_t *) ctx->request)->outcome.finalize++;
}


void
__wrap_ngx_http_run_posted_requests(ngx_connection_t *c)
{
}


void
__wrap_ngx_http_finalize_request(ngx_http_request_t *r, ngx_int_t rc)
{
    ((ngx_http_llm_fuzz_req_t *) r)->outcome.finalize++;
}
