
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Target: a client's body through parsing, validation, the tenant's
 * policy, the reservation and the upstream body writer, for three
 * tenants: one with caps, one without, and no tenant (no quota).
 * Invariants, on the upstream body as re-parsed:
 *   - the body accepted was one JSON value (section 1 of issue 11:
 *     "strict");
 *   - it is one JSON object, and no object in it has a member twice;
 *   - "model" is the backend's, "stream" is what the gateway relays, a
 *     stream asks for usage where the provider takes stream_options;
 *   - max_tokens and max_completion_tokens, when both are sent, agree;
 *   - a provider's body breaks no rule of its rewrite table (P4): what
 *     is dropped or renamed is absent, no null where nulls go, no name
 *     on a message whose role loses it, clamped numbers within bounds;
 *   - with a quota: a bound is sent, within the model's context window;
 *     ctx->choices is max(n, best_of, 1); ctx->max_tokens is choices
 *     times the bound sent (at least, where a rewrite clamped it),
 *     within the tenant's caps; the reservation
 *     is the prompt estimate plus ctx->max_tokens, and its cost is not
 *     negative.
 */


#include "ngx_http_llm_fuzz.h"
#include "ngx_http_llm_policy.h"
#include "ngx_http_llm_quota.h"
#include "ngx_http_llm_request.h"

/* ---------------------------------------------------------- adapter
 * Every call into the module is here.
 */

static ngx_int_t
ngx_http_llm_fuzz_parse(ngx_http_llm_ctx_t *ctx, u_char *p, size_t len,
    ngx_http_llm_error_t *err)
{
    return ngx_http_llm_parse_request(ctx, p, len, err);
}


static ngx_int_t
ngx_http_llm_fuzz_policy(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    return ngx_http_llm_apply_policy(ctx, err);
}


/* what the proxy does once per request, before the first attempt */
static ngx_int_t
ngx_http_llm_fuzz_prepare(ngx_http_llm_ctx_t *ctx)
{
    return NGX_OK;
}


/* the body for backend b, as the proxy sends it on each attempt */
static u_char *
ngx_http_llm_fuzz_body(ngx_http_llm_ctx_t *ctx, ngx_http_llm_backend_t *b,
    size_t *len)
{
    return ngx_http_llm_upstream_body(ctx, b, len);
}


/* the reservation, with Redis away and fail-open: computed, not sent */
static ngx_int_t
ngx_http_llm_fuzz_reserve(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    return ngx_http_llm_quota_admit(ctx, err);
}


static void
ngx_http_llm_fuzz_free(ngx_http_llm_ctx_t *ctx)
{
    if (ctx->json) {
        cJSON_Delete(ctx->json);
    }

    if (ctx->stream_opts) {
        cJSON_Delete(ctx->stream_opts);
    }

    if (ctx->upstream_body) {
        cJSON_free(ctx->upstream_body);
    }

    if (ctx->headers) {
        curl_slist_free_all(ctx->headers);
    }
}

/* ---------------------------------------------------------- target */


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static ngx_http_llm_tenant_t  ngx_http_llm_fuzz_tenants[2];


static int
ngx_http_llm_fuzz_cmp(const void *a, const void *b)
{
    return strcmp(*(char **) a, *(char **) b);
}


/* the first name that an object anywhere in the tree has twice */

static const char *
ngx_http_llm_fuzz_twice(cJSON *item)
{
    char        **names, *stack[64];
    cJSON        *child;
    ngx_uint_t    n, i;
    const char   *dup;

    dup = NULL;

    if (cJSON_IsObject(item)) {
        n = 0;

        for (child = item->child; child; child = child->next) {
            n++;
        }

        names = (n <= 64) ? stack : malloc(n * sizeof(char *));
        if (names == NULL) {
            abort();
        }

        n = 0;

        for (child = item->child; child; child = child->next) {
            names[n++] = child->string;
        }

        qsort(names, n, sizeof(char *), ngx_http_llm_fuzz_cmp);

        for (i = 1; i < n; i++) {
            if (strcmp(names[i - 1], names[i]) == 0) {
                dup = names[i];
                break;
            }
        }

        if (names != stack) {
            free(names);
        }

        if (dup) {
            return dup;
        }
    }

    for (child = item->child; child && dup == NULL; child = child->next) {
        dup = ngx_http_llm_fuzz_twice(child);
    }

    return dup;
}


/* a whole number, or -1 when absent, null (or bad, its finding skipped) */

static int64_t
ngx_http_llm_fuzz_int(cJSON *json, const char *name, const char *id)
{
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(json, name);

    if (item == NULL || cJSON_IsNull(item)) {
        return -1;
    }

    if (!(cJSON_IsNumber(item)
          && item->valuedouble >= 1
          && item->valuedouble < 9.0e15)
        && ngx_http_llm_fuzz_skip(id))
    {
        return -1;
    }

    ngx_http_llm_fuzz_expect(id, cJSON_IsNumber(item)
                             && item->valuedouble >= 1
                             && item->valuedouble < 9.0e15
                             && item->valuedouble
                                == (double) (int64_t) item->valuedouble,
                             "\"%s\" goes upstream as %.3f", name,
                             cJSON_IsNumber(item) ? item->valuedouble : -1.0);

    return (int64_t) item->valuedouble;
}


/* s is one of the words of list, or list is NULL */

static ngx_uint_t
ngx_http_llm_fuzz_word(const char *list, const char *s)
{
    size_t       len;
    const char  *p;

    if (list == NULL) {
        return 0;
    }

    len = ngx_strlen(s);

    for (p = strstr(list, s); p; p = strstr(p + 1, s)) {
        if ((p == list || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0')) {
            return 1;
        }
    }

    return 0;
}


static void
ngx_http_llm_fuzz_rewritten(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_provider_t *pv, cJSON *up)
{
    cJSON                   *item, *msg, *role;
    ngx_http_llm_rewrite_t  *rw;

    for (rw = pv->rewrite; rw->op != NGX_HTTP_LLM_RW_END; rw++) {

        if (rw->unstreamed && ctx->stream) {
            continue;
        }

        switch (rw->op) {

        case NGX_HTTP_LLM_RW_RENAME:
        case NGX_HTTP_LLM_RW_DROP:
            ngx_http_llm_fuzz_expect("P4",
                cJSON_GetObjectItemCaseSensitive(up, rw->name) == NULL,
                "\"%s\" sent to %V", rw->name, &pv->name);
            break;

        case NGX_HTTP_LLM_RW_NULLS:
            cJSON_ArrayForEach(item, up) {
                ngx_http_llm_fuzz_expect("P4", !cJSON_IsNull(item),
                                         "\"%s\": null sent to %V",
                                         item->string, &pv->name);
            }
            break;

        case NGX_HTTP_LLM_RW_MESSAGE_NAME:
            cJSON_ArrayForEach(msg,
                cJSON_GetObjectItemCaseSensitive(up, "messages"))
            {
                role = cJSON_GetObjectItemCaseSensitive(msg, "role");

                ngx_http_llm_fuzz_expect("P4", !cJSON_IsObject(msg)
                    || cJSON_GetObjectItemCaseSensitive(msg, "name") == NULL
                    || (cJSON_IsString(role)
                        && ngx_http_llm_fuzz_word(rw->to,
                                                  role->valuestring)),
                    "a message's name sent to %V", &pv->name);
            }
            break;

        case NGX_HTTP_LLM_RW_CLAMP:
            item = cJSON_GetObjectItemCaseSensitive(up, rw->name);

            ngx_http_llm_fuzz_expect("P4", !cJSON_IsNumber(item)
                                     || item->valuedouble <= rw->max,
                                     "\"%s\" %.3f sent to %V", rw->name,
                                     cJSON_IsNumber(item)
                                     ? item->valuedouble : 0.0,
                                     &pv->name);
            break;

        default:
            break;
        }
    }
}


static void
ngx_http_llm_fuzz_check(ngx_http_llm_ctx_t *ctx, ngx_http_llm_backend_t *b,
    u_char *body, size_t len)
{
    cJSON                    *up, *item, *opts;
    int64_t                   mt, mct, per, n, best_of, choices;
    const char               *dup;
    ngx_http_llm_tenant_t    *t;
    ngx_http_llm_provider_t  *pv;

    up = cJSON_ParseWithLength((const char *) body, len);

    ngx_http_llm_fuzz_assert(cJSON_IsObject(up),
                             "the upstream body is not a JSON object");

    dup = ngx_http_llm_fuzz_twice(up);

    ngx_http_llm_fuzz_expect("H1", dup == NULL,
                             "the upstream body has \"%s\" twice", dup);

    item = cJSON_GetObjectItemCaseSensitive(up, "model");

    ngx_http_llm_fuzz_expect("H1", cJSON_IsString(item)
                             && ngx_strcmp(item->valuestring, b->model.data)
                                == 0,
                             "the upstream model is not the backend's");

    item = cJSON_GetObjectItemCaseSensitive(up, "stream");

    ngx_http_llm_fuzz_expect("H1",
                             (cJSON_IsTrue(item) ? 1 : 0) == ctx->stream,
                             "upstream \"stream\" is not what is relayed "
                             "(ctx->stream %d)", (int) ctx->stream);

    pv = b->provider;

    if (ctx->stream
        && (pv == NULL || (pv->flags & NGX_HTTP_LLM_PROVIDER_STREAM_OPTIONS)))
    {
        opts = cJSON_GetObjectItemCaseSensitive(up, "stream_options");
        item = cJSON_GetObjectItemCaseSensitive(opts, "include_usage");

        ngx_http_llm_fuzz_assert(cJSON_IsTrue(item),
                                 "a stream without include_usage");
    }

    if (pv && pv->rewrite) {
        ngx_http_llm_fuzz_rewritten(ctx, pv, up);
    }

    mt = ngx_http_llm_fuzz_int(up, "max_tokens", "H1");
    mct = ngx_http_llm_fuzz_int(up, "max_completion_tokens", "H1");

    ngx_http_llm_fuzz_expect("H1", mt == -1 || mct == -1 || mt == mct,
                             "upstream max_tokens %L and "
                             "max_completion_tokens %L", mt, mct);

    per = (mct != -1) ? mct : mt;
    n = ngx_http_llm_fuzz_int(up, "n", "H1");
    best_of = ngx_http_llm_fuzz_int(up, "best_of", "H2");
    choices = ngx_max(ngx_max(n, best_of), 1);

    t = ctx->tenant;

    if (ctx->conf->quota && t) {
        ngx_http_llm_fuzz_expect("H1", per >= 1,
                                 "a metered request sent without a bound");

        ngx_http_llm_fuzz_expect("C1",
                                 per <= (int64_t) ctx->model->context_window,
                                 "a bound of %L past the context window %ui",
                                 per, ctx->model->context_window);

        ngx_http_llm_fuzz_expect("H2", (int64_t) ctx->choices == choices,
                                 "ctx->choices %ui, the body asks for %L",
                                 ctx->choices, choices);

        ngx_http_llm_fuzz_expect("H2", ctx->max_tokens == choices * per
                                 || (pv && pv->rewrite
                                     && ctx->max_tokens > choices * per),
                                 "ctx->max_tokens %L, the body allows "
                                 "%L x %L", ctx->max_tokens, choices, per);

        ngx_http_llm_fuzz_expect("H2", t->max_tokens <= 0
                                 || ctx->max_tokens <= t->max_tokens,
                                 "%L tokens past the tenant's cap %i",
                                 ctx->max_tokens, t->max_tokens);

        ngx_http_llm_fuzz_expect("H2", t->max_n <= 0 || choices <= t->max_n,
                                 "%L choices past the tenant's %i",
                                 choices, t->max_n);

        ngx_http_llm_fuzz_assert(ctx->quota.reserved_tokens
                                 == ctx->prompt_estimate + ctx->max_tokens,
                                 "reserved %L tokens for %L + %L",
                                 ctx->quota.reserved_tokens,
                                 ctx->prompt_estimate, ctx->max_tokens);

        ngx_http_llm_fuzz_expect("C1", ctx->quota.reserved_cost >= 0,
                                 "a reservation of %L micro-dollars",
                                 ctx->quota.reserved_cost);
    }

    cJSON_Delete(up);
}


/* nothing but white space after the first JSON value */

static ngx_uint_t
ngx_http_llm_fuzz_one_value(u_char *p, size_t size)
{
    u_char       *last;
    cJSON        *json;
    const char   *end;

    json = cJSON_ParseWithLengthOpts((const char *) p, size, &end, 0);

    if (json == NULL) {
        return 0;
    }

    cJSON_Delete(json);

    for (last = p + size; (u_char *) end < last; end++) {
        if (*end != ' ' && *end != '\t' && *end != '\r' && *end != '\n') {
            return 0;
        }
    }

    return 1;
}


static void
ngx_http_llm_fuzz_one(u_char *p, size_t size, ngx_uint_t cfg)
{
    u_char                   *body;
    size_t                    len;
    ngx_int_t                 rc;
    ngx_uint_t                i;
    ngx_pool_t               *pool;
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_error_t      err;
    ngx_http_llm_backend_t   *b;
    ngx_http_llm_fuzz_req_t  *fr;

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        abort();
    }

    fr = ngx_http_llm_fuzz_request(pool);
    ctx = &fr->ctx;

    if (cfg < 2) {
        ctx->tenant = &ngx_http_llm_fuzz_tenants[cfg];

    } else {
        fr->conf.quota = 0;
        fr->conf.auth = 0;
    }

    ngx_memzero(&err, sizeof(ngx_http_llm_error_t));

    rc = ngx_http_llm_fuzz_parse(ctx, p, size, &err);

    if (rc == NGX_OK && cfg == 0) {
        ngx_http_llm_fuzz_expect("strict",
                                 ngx_http_llm_fuzz_one_value(p, size),
                                 "accepted with more than one JSON value");
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_fuzz_policy(ctx, &err);
    }

    if (rc != NGX_OK) {
        ngx_http_llm_fuzz_assert(err.status >= 400 && err.status < 500
                                 && err.type != NULL,
                                 "refused with status %ui", err.status);
        goto done;
    }

    ngx_http_llm_fuzz_assert(ctx->model != NULL, "no model after policy");

    if (ctx->conf->quota && ctx->tenant) {
        rc = ngx_http_llm_fuzz_reserve(ctx, &err);

        ngx_http_llm_fuzz_assert(rc == NGX_OK, "fail-open refused: %ui",
                                 err.status);
    }

    /* each backend of the model in turn, as failover would */

    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_prepare(ctx) == NGX_OK,
                             "the upstream body could not be prepared");

    b = ctx->model->backends.elts;

    for (i = 0; i < ctx->model->backends.nelts; i++) {
        body = ngx_http_llm_fuzz_body(ctx, &b[i], &len);

        ngx_http_llm_fuzz_assert(body != NULL, "no upstream body");

        ngx_http_llm_fuzz_check(ctx, &b[i], body, len);
    }

done:

    ngx_http_llm_fuzz_free(ctx);
    ngx_destroy_pool(pool);
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_http_llm_tenant_t  *t;

    ngx_http_llm_fuzz_init();

    /* Redis away, fail-open: the reservation is computed, not sent */
    ngx_http_llm_fuzz_redis_up = 0;

    t = &ngx_http_llm_fuzz_tenants[0];
    ngx_str_set(&t->id, "acme");
    t->rpm = 60;
    t->tpm = 100000;
    t->budget_day = 5000000;
    t->max_tokens = 4096;
    t->max_n = 4;

    t = &ngx_http_llm_fuzz_tenants[1];
    ngx_str_set(&t->id, "beta");

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char      *p;
    ngx_uint_t   cfg;

    p = malloc(size ? size : 1);
    if (p == NULL) {
        abort();
    }

    for (cfg = 0; cfg < 3; cfg++) {
        /* the parser may write into its input: a fresh copy each time */
        ngx_memcpy(p, data, size);
        ngx_http_llm_fuzz_one(p, size, cfg);
    }

    free(p);

    return 0;
}
