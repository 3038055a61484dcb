
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Model choice.  A client names a logical model or one of its aliases
 * (resolved here, as are tenants' lists of models), or the router model
 * ("auto"), which picks the cheap or the strong model by, in order: the
 * tenant's policy, the context windows, the tenant's budget, and the
 * prompt's complexity: a learned classifier's probability that the prompt
 * needs the strong model (ngx_http_llm_classifier.c), or the older
 * hand-weighted score (ngx_http_llm_score.c).  When every backend of the
 * model is spent, its fallback model may take over.  Every answer says how
 * its model was chosen in "x-llm-route".
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_error.h"
#include "ngx_http_llm_output.h"
#include "ngx_http_llm_router.h"


#define NGX_HTTP_LLM_SPEND_SLOTS  1024

/* the token counter's scratch a worker keeps: the texts of 64 KB or so */
#define NGX_HTTP_LLM_SCRATCH_KEEP  (4 * 1024 * 1024)


/* what this worker last heard of a tenant's spend, from its admissions */

typedef struct {
    u_char                      id[64];
    size_t                      len;
    int64_t                     day;
    int64_t                     month;
} ngx_http_llm_spend_t;


static ngx_int_t ngx_http_llm_route_allowed(ngx_http_llm_tenant_t *t,
    ngx_http_llm_model_t *m);
static ngx_uint_t ngx_http_llm_route_budget(ngx_http_llm_router_t *rt,
    ngx_http_llm_tenant_t *t);
static ngx_int_t ngx_http_llm_route_fits(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_model_t *m, int64_t completion, int64_t *need);
static const char *ngx_http_llm_route_about(ngx_http_llm_model_t *m);
static void ngx_http_llm_route_bounds(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_model_t *m, size_t *lo, size_t *hi);
static void *ngx_http_llm_route_scratch(ngx_http_llm_ctx_t *ctx,
    size_t size);
static ngx_int_t ngx_http_llm_route_texts(ngx_http_llm_ctx_t *ctx,
    ngx_int_t (*handler)(void *data, u_char *text, size_t len), void *data);
static ngx_int_t ngx_http_llm_route_bound(void *data, u_char *text,
    size_t len);
static ngx_int_t ngx_http_llm_route_longest(void *data, u_char *text,
    size_t len);
static ngx_int_t ngx_http_llm_route_count(void *data, u_char *text,
    size_t len);
static u_char *ngx_http_llm_route_value(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_model_t *from, size_t *len);
static ngx_int_t ngx_http_llm_route_set(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_model_t *m, const char *reason, double score);


static ngx_http_llm_spend_t  ngx_http_llm_spend[NGX_HTTP_LLM_SPEND_SLOTS];

/* one request at a time is scored in a worker */
static ngx_http_llm_features_t  ngx_http_llm_route_features;


static void *
ngx_http_llm_router_alloc(void *pool, size_t size)
{
    return ngx_palloc(pool, size);
}


/*
 * llm_router NAME cheap=MODEL strong=MODEL [weights=FILE]
 *            [max_quality_loss=N%] [budget=N%]
 */

char *
ngx_http_llm_router_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    char                    err[1024], *end;
    double                  loss;
    ngx_int_t               n;
    ngx_str_t              *value, file;
    ngx_uint_t              i;
    ngx_http_llm_router_t  *rt;

    if (lmcf->router) {
        return "is duplicate";
    }

    rt = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_router_t));
    if (rt == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    rt->name = value[1];
    rt->budget = 80;
    rt->loss = -1;
    ngx_http_llm_weights_default(&rt->weights);

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "cheap=", 6) == 0) {
            rt->cheap_name.data = value[i].data + 6;
            rt->cheap_name.len = value[i].len - 6;
            continue;
        }

        if (ngx_strncmp(value[i].data, "strong=", 7) == 0) {
            rt->strong_name.data = value[i].data + 7;
            rt->strong_name.len = value[i].len - 7;
            continue;
        }

        if (ngx_strncmp(value[i].data, "budget=", 7) == 0) {
            n = ngx_atoi(value[i].data + 7,
                         value[i].len - 7
                         - (value[i].data[value[i].len - 1] == '%'));
            if (n < 0 || n > 100) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"llm_router\" budget \"%V\": "
                                   "a percentage from 0 to 100 expected",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            rt->budget = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "weights=", 8) == 0) {
            file.data = value[i].data + 8;
            file.len = value[i].len - 8;

            if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            if (rt->classifier || rt->weights_file) {
                return "has duplicate \"weights\"";
            }

            if (!ngx_http_llm_classifier_file((char *) file.data)) {
                if (ngx_http_llm_weights_load(&rt->weights,
                                              (char *) file.data, err,
                                              sizeof(err))
                    != 0)
                {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "\"llm_router\" weights: %s", err);
                    return NGX_CONF_ERROR;
                }

                rt->weights_file = 1;
                continue;
            }

            rt->classifier = ngx_palloc(cf->pool,
                                        sizeof(ngx_http_llm_classifier_t));
            if (rt->classifier == NULL) {
                return NGX_CONF_ERROR;
            }

            if (ngx_http_llm_classifier_load(rt->classifier,
                                             (char *) file.data,
                                             ngx_http_llm_router_alloc,
                                             cf->pool, err, sizeof(err))
                != 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"llm_router\" weights: %s", err);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_quality_loss=", 17) == 0) {
            /* NUL-terminated: an argument of the configuration is */
            loss = strtod((char *) value[i].data + 17, &end);

            if (end == (char *) value[i].data + 17 || *end != '%'
                || end[1] != '\0' || !(loss >= 0 && loss <= 50))
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"llm_router\" "
                                   "max_quality_loss \"%V\": a percentage "
                                   "from 0%% to 50%% expected", &value[i]);
                return NGX_CONF_ERROR;
            }

            rt->loss = loss / 100;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"llm_router\" parameter \"%V\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    if (rt->cheap_name.len == 0 || rt->strong_name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_router\" needs cheap=MODEL and "
                           "strong=MODEL");
        return NGX_CONF_ERROR;
    }

    if (rt->loss >= 0) {
        if (rt->classifier == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"llm_router\" max_quality_loss needs the "
                               "weights= of a learned model "
                               "(./config.sh route-train writes one)");
            return NGX_CONF_ERROR;
        }

        if (rt->classifier->ncalibration == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"llm_router\" max_quality_loss: the "
                               "model has no calibration (\"p\" lines)");
            return NGX_CONF_ERROR;
        }

        rt->threshold = ngx_http_llm_classifier_threshold(rt->classifier,
                                                          rt->loss);

    } else if (rt->classifier) {
        rt->threshold = rt->classifier->threshold;
    }

    lmcf->router = rt;

    return NGX_CONF_OK;
}


/* at the end of http{}: the models that fallbacks and the router name exist */

char *
ngx_http_llm_router_init(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf)
{
    ngx_uint_t              i, j;
    ngx_http_llm_model_t   *m;
    ngx_http_llm_router_t  *rt;

    /* each model's fallback, by name */

    m = lmcf->models.elts;

    for (i = 0; i < lmcf->models.nelts; i++) {
        if (m[i].fallback_name.len == 0) {
            continue;
        }

        for (j = 0; j < lmcf->models.nelts; j++) {
            if (j != i && m[j].name.len == m[i].fallback_name.len
                && ngx_strncmp(m[j].name.data, m[i].fallback_name.data,
                               m[j].name.len) == 0)
            {
                m[i].fallback = &m[j];
            }
        }

        if (m[i].fallback == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"fallback\" of \"llm_model\" \"%V\" names "
                               "no other model: \"%V\"", &m[i].name,
                               &m[i].fallback_name);
            return NGX_CONF_ERROR;
        }
    }

    rt = lmcf->router;

    if (rt == NULL) {
        return NGX_CONF_OK;
    }

    m = lmcf->models.elts;

    for (i = 0; i < lmcf->models.nelts; i++) {
        if (m[i].name.len == rt->cheap_name.len
            && ngx_strncmp(m[i].name.data, rt->cheap_name.data,
                           rt->cheap_name.len) == 0)
        {
            rt->cheap = &m[i];
        }

        if (m[i].name.len == rt->strong_name.len
            && ngx_strncmp(m[i].name.data, rt->strong_name.data,
                           rt->strong_name.len) == 0)
        {
            rt->strong = &m[i];
        }

        if (m[i].name.len == rt->name.len
            && ngx_strncmp(m[i].name.data, rt->name.data, rt->name.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"llm_router\" \"%V\" is also an "
                               "\"llm_model\"", &rt->name);
            return NGX_CONF_ERROR;
        }
    }

    if (rt->cheap == NULL || rt->strong == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_router\" names an unknown model: "
                           "cheap=%V strong=%V", &rt->cheap_name,
                           &rt->strong_name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* a logical model by its name or one of its aliases */

ngx_http_llm_model_t *
ngx_http_llm_find_model(ngx_http_request_t *r, ngx_str_t *name)
{
    ngx_str_t                 *alias;
    ngx_uint_t                 i, j;
    ngx_http_llm_model_t      *model;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_module);

    model = lmcf->models.elts;

    for (i = 0; i < lmcf->models.nelts; i++) {
        if (model[i].name.len == name->len
            && ngx_strncmp(model[i].name.data, name->data, name->len) == 0)
        {
            return &model[i];
        }
    }

    /* providers' model ids, and other names operators give */

    for (i = 0; i < lmcf->models.nelts; i++) {
        alias = model[i].aliases.elts;

        for (j = 0; j < model[i].aliases.nelts; j++) {
            if (alias[j].len == name->len
                && ngx_strncmp(alias[j].data, name->data, name->len) == 0)
            {
                return &model[i];
            }
        }
    }

    return NULL;
}


/*
 * The router model was asked for: ctx->model is chosen, or err says why
 * the request cannot be served.  completion: the answer's bound.
 */

ngx_int_t
ngx_http_llm_route(ngx_http_llm_ctx_t *ctx, int64_t completion,
    ngx_http_llm_error_t *err)
{
    double                     score;
    int64_t                    need, cheap_need;
    ngx_int_t                  cheap_ok, strong_ok, cheap_fits, strong_fits;
    ngx_http_llm_model_t      *m;
    ngx_http_llm_tenant_t     *t;
    ngx_http_llm_router_t     *rt;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_llm_module);
    rt = lmcf->router;
    t = ctx->tenant;

    /* 1: the tenant's policy */

    if (t && t->force_model.len) {
        m = ngx_http_llm_find_model(ctx->request, &t->force_model);

        if (m) {
            return ngx_http_llm_route_set(ctx, m, "tenant_forced", -1);
        }
    }

    cheap_ok = ngx_http_llm_route_allowed(t, rt->cheap);
    strong_ok = ngx_http_llm_route_allowed(t, rt->strong);

    if (!cheap_ok && !strong_ok) {
        ngx_http_llm_set_error(err, NGX_HTTP_NOT_FOUND,
                               "invalid_request_error", "model_not_found",
                               "model", "The model `%V` does not exist or "
                               "you do not have access to it.", &rt->name);
        return NGX_ERROR;
    }

    /* 2: the context windows */

    strong_fits = ngx_http_llm_route_fits(ctx, rt->strong, completion,
                                          &need);
    if (strong_fits == NGX_ERROR) {
        goto nomem;
    }

    cheap_fits = ngx_http_llm_route_fits(ctx, rt->cheap, completion,
                                         &cheap_need);
    if (cheap_fits == NGX_ERROR) {
        goto nomem;
    }

    ctx->route_tokens = need;

    if (!strong_fits && !cheap_fits) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error",
                               "context_length_exceeded", "messages",
                               "This model's maximum context length is %ui "
                               "tokens. However, you requested %s%L "
                               "tokens (%s%L in the messages, %L in "
                               "the completion). Please reduce the length "
                               "of the messages or completion.",
                               ngx_max(rt->strong->context_window,
                                       rt->cheap->context_window),
                               ngx_http_llm_route_about(rt->strong), need,
                               ngx_http_llm_route_about(rt->strong),
                               need - completion, completion);
        return NGX_ERROR;
    }

    if (!cheap_fits) {
        if (!strong_ok) {
            ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error",
                                   "context_length_exceeded", "messages",
                                   "The request needs %s%L tokens, "
                                   "more than the %ui of the only model "
                                   "this key may use.",
                                   ngx_http_llm_route_about(rt->cheap),
                                   cheap_need, rt->cheap->context_window);
            return NGX_ERROR;
        }

        return ngx_http_llm_route_set(ctx, rt->strong, "context", -1);
    }

    if (!strong_fits && !cheap_ok) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error",
                               "context_length_exceeded", "messages",
                               "The request needs %s%L tokens, more than "
                               "the %ui of the only model this key may "
                               "use.", ngx_http_llm_route_about(rt->strong),
                               need, rt->strong->context_window);
        return NGX_ERROR;
    }

    if (!strong_fits) {
        ctx->route_tokens = cheap_need;
        return ngx_http_llm_route_set(ctx, rt->cheap, "context", -1);
    }

    if (!strong_ok) {
        return ngx_http_llm_route_set(ctx, rt->cheap, "tenant_policy", -1);
    }

    if (!cheap_ok) {
        return ngx_http_llm_route_set(ctx, rt->strong, "tenant_policy", -1);
    }

    /* 3: a tenant near its budget gets the cheap model */

    if (ngx_http_llm_route_budget(rt, t)) {
        return ngx_http_llm_route_set(ctx, rt->cheap, "budget", -1);
    }

    /* 4: the complexity: learned, or the hand weights */

    if (rt->classifier) {
        ngx_http_llm_features(ctx->json, &ngx_http_llm_route_features);
        score = ngx_http_llm_classifier_score(rt->classifier,
                                              &ngx_http_llm_route_features);

        return ngx_http_llm_route_set(ctx,
                                      score >= rt->threshold
                                      ? rt->strong : rt->cheap,
                                      "complexity", score);
    }

    score = ngx_http_llm_score(&rt->weights, ctx->json, NULL);

    return ngx_http_llm_route_set(ctx,
                                  score >= rt->weights.threshold
                                  ? rt->strong : rt->cheap,
                                  "complexity", score);

nomem:

    ngx_http_llm_set_error(err, NGX_HTTP_INTERNAL_SERVER_ERROR,
                           "server_error", NULL, NULL,
                           "The server is out of memory.");
    return NGX_ERROR;
}


/*
 * Every backend of the model is spent: its fallback model takes over, if
 * it has one, the tenant may use it and the request fits its context.
 * NGX_OK: ctx->model is the fallback, and "x-llm-route" says so;
 * NGX_DECLINED: no fallback may take over.
 */

ngx_int_t
ngx_http_llm_route_fallback(ngx_http_llm_ctx_t *ctx)
{
    u_char                *p;
    size_t                 len;
    int64_t                need;
    ngx_http_llm_model_t  *from, *to;

    from = ctx->model;
    to = from->fallback;

    if (to == NULL || ctx->fell_back) {
        return NGX_DECLINED;
    }

    if (!ngx_http_llm_route_allowed(ctx->tenant, to)) {
        return NGX_DECLINED;
    }

    if (ngx_http_llm_route_fits(ctx, to, ctx->choice_tokens, &need) != 1) {
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_WARN, ctx->request->connection->log, 0,
                  "llm: model \"%V\" unavailable, falling back to \"%V\"",
                  &from->name, &to->name);

    ctx->fell_back = 1;

    ngx_http_llm_route_set(ctx, to, "fallback", -1);

    /* the header is out already: its value is rewritten in place */

    if (ctx->route_h) {
        p = ngx_http_llm_route_value(ctx, from, &len);

        if (p) {
            ctx->route_h->value.data = p;
            ctx->route_h->value.len = len;
        }
    }

    return NGX_OK;
}


/*
 * Whether a request fits a model's context: its prompt and the answer's
 * bound.  The prompt is the messages' text in the model's tokens, plus 8
 * a message and 16 for the template.  With the model's tokenizer, its
 * bounds decide when they can (ngx_http_llm_tokenizer_bounds(), linear
 * and cheap), the exact count when they straddle the window.  Without
 * one, bytes / 3: a token of llama-style tokenizers averages three bytes
 * or more of English, code or UTF-8 text in most scripts, an estimate,
 * not a bound.  1 or 0, *need the tokens (at least that many when it
 * does not fit by the bounds alone); NGX_ERROR: out of memory.
 */

static ngx_int_t
ngx_http_llm_route_fits(ngx_http_llm_ctx_t *ctx, ngx_http_llm_model_t *m,
    int64_t completion, int64_t *need)
{
    size_t   bytes, msgs, lo, hi;
    int64_t  rest, window, n;

    bytes = ngx_http_llm_prompt_bytes(ctx->json, &msgs);
    rest = (int64_t) (8 * msgs + 16) + completion;
    window = (int64_t) m->context_window;

    if (m->tokenizer == NULL) {
        *need = (int64_t) (bytes / 3) + rest;
        return *need <= window;
    }

    ngx_http_llm_route_bounds(ctx, m, &lo, &hi);

    if ((int64_t) hi + rest <= window) {
        *need = (int64_t) hi + rest;
        return 1;
    }

    if ((int64_t) lo + rest > window) {
        *need = (int64_t) lo + rest;
        return 0;
    }

    n = ngx_http_llm_prompt_tokens(ctx, m);
    if (n < 0) {
        return NGX_ERROR;
    }

    *need = n + rest;

    return *need <= window;
}


/* "at least " when the count of a model with a tokenizer was a bound */

static const char *
ngx_http_llm_route_about(ngx_http_llm_model_t *m)
{
    return m->tokenizer ? "at least " : "about ";
}


/* each text of the messages, a string or a part's "text", to a handler */

static ngx_int_t
ngx_http_llm_route_texts(ngx_http_llm_ctx_t *ctx,
    ngx_int_t (*handler)(void *data, u_char *text, size_t len), void *data)
{
    cJSON  *msg, *c, *part, *text;

    cJSON_ArrayForEach(msg, cJSON_GetObjectItemCaseSensitive(ctx->json,
                                                             "messages"))
    {
        c = cJSON_GetObjectItemCaseSensitive(msg, "content");
        part = cJSON_IsArray(c) ? c->child : NULL;
        text = cJSON_IsString(c) ? c : NULL;

        do {
            if (part) {
                text = cJSON_GetObjectItemCaseSensitive(part, "text");
                part = part->next;
            }

            if (cJSON_IsString(text)
                && handler(data, (u_char *) text->valuestring,
                           ngx_strlen(text->valuestring))
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            text = NULL;

        } while (part);
    }

    return NGX_OK;
}


typedef struct {
    ngx_http_llm_tokenizer_t  *tokenizer;
    size_t                     lo;
    size_t                     hi;
    size_t                     max;       /* the longest text */
    int64_t                    n;         /* the exact count */
    void                      *scratch;
    size_t                     size;
} ngx_http_llm_route_count_t;


static ngx_int_t
ngx_http_llm_route_bound(void *data, u_char *text, size_t len)
{
    ngx_http_llm_route_count_t  *rc = data;

    size_t  lo, hi;

    ngx_http_llm_tokenizer_bounds(rc->tokenizer, text, len, &lo, &hi);
    rc->lo += lo;
    rc->hi += hi;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_route_longest(void *data, u_char *text, size_t len)
{
    ngx_http_llm_route_count_t  *rc = data;

    rc->max = ngx_max(rc->max, len);

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_route_count(void *data, u_char *text, size_t len)
{
    ngx_http_llm_route_count_t  *rc = data;

    ssize_t  k;

    if (len == 0) {
        return NGX_OK;
    }

    k = ngx_http_llm_tokenizer_count(rc->tokenizer, text, len, rc->scratch,
                                     rc->size);
    if (k < 0) {
        return NGX_ERROR;
    }

    rc->n += k;

    return NGX_OK;
}


/* the bounds of the messages' text in the model's tokens */

static void
ngx_http_llm_route_bounds(ngx_http_llm_ctx_t *ctx, ngx_http_llm_model_t *m,
    size_t *lo, size_t *hi)
{
    ngx_http_llm_route_count_t  rc;

    ngx_memzero(&rc, sizeof(ngx_http_llm_route_count_t));
    rc.tokenizer = m->tokenizer;

    (void) ngx_http_llm_route_texts(ctx, ngx_http_llm_route_bound, &rc);

    *lo = rc.lo;
    *hi = rc.hi;
}


/*
 * The counter's scratch memory, some 63 bytes a byte of text: a worker
 * counts one text at a time, so up to NGX_HTTP_LLM_SCRATCH_KEEP of it is
 * kept and reused, not allocated per request; a larger one comes from
 * the request's pool and goes back as soon as the count is done.
 */

static void *
ngx_http_llm_route_scratch(ngx_http_llm_ctx_t *ctx, size_t size)
{
    static void    *kept;
    static size_t   kept_size;

    if (size > NGX_HTTP_LLM_SCRATCH_KEEP) {
        return ngx_palloc(ctx->request->pool, size);
    }

    if (size > kept_size) {
        ngx_free(kept);
        kept_size = 0;

        kept = ngx_alloc(size, ctx->request->connection->log);
        if (kept == NULL) {
            return NULL;
        }

        kept_size = size;
    }

    return kept;
}


/*
 * The messages' text in the model's tokens, exactly, counted once per
 * request and model; the quota's reservation takes it too.  -1: the
 * model has no tokenizer, or out of memory.
 */

int64_t
ngx_http_llm_prompt_tokens(ngx_http_llm_ctx_t *ctx, ngx_http_llm_model_t *m)
{
    ngx_uint_t                  i;
    ngx_http_llm_route_count_t  rc;

    if (m->tokenizer == NULL) {
        return -1;
    }

    for (i = 0; i < 2; i++) {
        if (ctx->counted[i] == m) {
            return ctx->count[i];
        }
    }

    /* the longest text sizes the scratch memory, then the count */

    ngx_memzero(&rc, sizeof(ngx_http_llm_route_count_t));
    rc.tokenizer = m->tokenizer;

    (void) ngx_http_llm_route_texts(ctx, ngx_http_llm_route_longest, &rc);

    if (rc.max) {
        rc.size = ngx_http_llm_tokenizer_scratch(m->tokenizer, rc.max);
        rc.scratch = ngx_http_llm_route_scratch(ctx, rc.size);
        if (rc.scratch == NULL) {
            return -1;
        }

        if (ngx_http_llm_route_texts(ctx, ngx_http_llm_route_count, &rc)
            != NGX_OK)
        {
            return -1;
        }

        if (rc.size > NGX_HTTP_LLM_SCRATCH_KEEP) {
            ngx_pfree(ctx->request->pool, rc.scratch);
        }
    }

    i = ctx->counted[0] ? 1 : 0;
    ctx->counted[i] = m;
    ctx->count[i] = rc.n;

    return rc.n;
}


/* the route header, also for a model the client named */

ngx_int_t
ngx_http_llm_route_header(ngx_http_llm_ctx_t *ctx)
{
    u_char  *p;
    size_t   len;

    p = ngx_http_llm_route_value(ctx, NULL, &len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_llm_add_header(ctx->request, "x-llm-route", (char *) p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the last one pushed: a fallback rewrites it */
    ctx->route_h = ngx_http_llm_last_header(ctx->request);

    return NGX_OK;
}


/*
 * The header's value, NUL-terminated: the model, how it was chosen and,
 * after a fallback, the model it stands in for.
 */

static u_char *
ngx_http_llm_route_value(ngx_http_llm_ctx_t *ctx, ngx_http_llm_model_t *from,
    size_t *len)
{
    u_char  *p, *last;
    size_t   n;

    n = ctx->model->name.len + sizeof("; reason=; score=") + 32
        + ngx_strlen(ctx->route_reason);

    if (from) {
        n += sizeof("; from=") - 1 + from->name.len;
    }

    p = ngx_pnalloc(ctx->request->pool, n);
    if (p == NULL) {
        return NULL;
    }

    last = ngx_snprintf(p, n - 1, "%V; reason=%s", &ctx->model->name,
                        ctx->route_reason);

    if (ctx->route_score >= 0) {
        last = ngx_snprintf(last, p + n - 1 - last, "; score=%.2f",
                            ctx->route_score);
    }

    if (from) {
        last = ngx_snprintf(last, p + n - 1 - last, "; from=%V",
                            &from->name);
    }

    *last = '\0';
    *len = last - p;

    return p;
}


static ngx_int_t
ngx_http_llm_route_set(ngx_http_llm_ctx_t *ctx, ngx_http_llm_model_t *m,
    const char *reason, double score)
{
    ctx->model = m;
    ctx->route_reason = reason;
    ctx->route_score = score;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_route_allowed(ngx_http_llm_tenant_t *t, ngx_http_llm_model_t *m)
{
    if (t == NULL || t->models.len == 0) {
        return 1;
    }

    return ngx_http_llm_model_allowed(&t->models, &m->name);
}


/* a name in a tenant's list of models: "a, b,c" */

ngx_int_t
ngx_http_llm_model_allowed(ngx_str_t *list, ngx_str_t *name)
{
    u_char  *p, *last, *comma;

    p = list->data;
    last = list->data + list->len;

    while (p < last) {
        comma = ngx_strlchr(p, last, ',');
        if (comma == NULL) {
            comma = last;
        }

        while (p < comma && *p == ' ') {
            p++;
        }

        if ((size_t) (comma - p) == name->len
            && ngx_strncmp(p, name->data, name->len) == 0)
        {
            return 1;
        }

        p = comma + 1;
    }

    return 0;
}


static ngx_uint_t
ngx_http_llm_route_budget(ngx_http_llm_router_t *rt, ngx_http_llm_tenant_t *t)
{
    uint32_t               h;
    ngx_http_llm_spend_t  *s;

    if (t == NULL || rt->budget == 0
        || (t->budget_day <= 0 && t->budget_month <= 0))
    {
        return 0;
    }

    h = ngx_crc32_short(t->id.data, t->id.len);
    s = &ngx_http_llm_spend[h % NGX_HTTP_LLM_SPEND_SLOTS];

    if (s->len != t->id.len || ngx_strncmp(s->id, t->id.data, s->len) != 0) {
        return 0;
    }

    return (t->budget_day > 0
            && s->day * 100 >= t->budget_day * (int64_t) rt->budget)
           || (t->budget_month > 0
               && s->month * 100 >= t->budget_month * (int64_t) rt->budget);
}


/* an admission's view of the tenant's spend, for the budget rule */

void
ngx_http_llm_router_spend(ngx_http_llm_tenant_t *t, int64_t day,
    int64_t month)
{
    uint32_t               h;
    ngx_http_llm_spend_t  *s;

    if (t->id.len > sizeof(s->id)) {
        return;
    }

    h = ngx_crc32_short(t->id.data, t->id.len);
    s = &ngx_http_llm_spend[h % NGX_HTTP_LLM_SPEND_SLOTS];

    ngx_memcpy(s->id, t->id.data, t->id.len);
    s->len = t->id.len;
    s->day = day;
    s->month = month;
}
