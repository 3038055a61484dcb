
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Tenant policy on a parsed request: the model (the client's, or the
 * tenant's default, among the models the tenant may use), the bound on
 * the answer (n, max_tokens, the tenant's caps, the model's context) and
 * the prompt's worst case for the reservation.  The router chooses for
 * the router model.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_error.h"
#include "ngx_http_llm_policy.h"
#include "ngx_http_llm_router.h"


/*
 * The prompt's bound (see ngx_http_llm_prompt_bound()).  A media part is
 * charged as the most a provider bills for one image: GPT-4o's high
 * detail is 85 + 170 a tile, 1445 tokens for 8 tiles; Claude's about
 * 1600 (1.15 megapixels / 750).  A number in a tool schema is spelled in
 * 24 bytes at most ("-2.2250738585072014e-308").  A template lays out a
 * JSON value in 2 tokens at most besides its text (a newline, an indent).
 */

#define NGX_HTTP_LLM_MEDIA_TOKENS    2048
#define NGX_HTTP_LLM_NUMBER_BYTES    24
#define NGX_HTTP_LLM_LAYOUT_TOKENS   2


static ngx_int_t ngx_http_llm_choice_tokens(ngx_http_llm_ctx_t *ctx,
    ngx_uint_t routed, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_too_large(ngx_http_llm_ctx_t *ctx,
    int64_t asked, ngx_uint_t window, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_set_tokens(ngx_http_llm_ctx_t *ctx,
    int64_t per_choice);
static int64_t ngx_http_llm_prompt_bound(ngx_http_llm_ctx_t *ctx);
static int64_t ngx_http_llm_text_size(cJSON *item);
static int64_t ngx_http_llm_json_size(cJSON *item);


/*
 * The tenant's say, after parsing: which model, how many tokens at most,
 * and the prompt's worst case for the reservation.
 */

ngx_int_t
ngx_http_llm_apply_policy(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    ngx_str_t                  name;
    ngx_uint_t                 routed;
    ngx_http_llm_tenant_t     *t;
    ngx_http_llm_main_conf_t  *lmcf;

    t = ctx->tenant;
    name = ctx->model_name;

    if (name.len == 0 && t && t->default_model.len) {
        name = t->default_model;
    }

    if (name.len == 0) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error",
                               "missing_required_parameter", "model",
                               "You must provide a model parameter.");
        return NGX_ERROR;
    }

    lmcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_llm_module);

    routed = lmcf->router && lmcf->router->name.len == name.len
             && ngx_strncmp(lmcf->router->name.data, name.data, name.len)
                == 0;

    ctx->model = routed ? NULL
                        : ngx_http_llm_find_model(ctx->request, &name);
    ctx->route_reason = "explicit";
    ctx->route_score = -1;

    /* a tenant's list names logical models, or the very alias asked for */

    if (!routed
        && (ctx->model == NULL
            || (t && t->models.len
                && !ngx_http_llm_model_allowed(&t->models, &name)
                && !ngx_http_llm_model_allowed(&t->models,
                                               &ctx->model->name))))
    {
        ctx->model = NULL;
        ngx_http_llm_set_error(err, NGX_HTTP_NOT_FOUND,
                               "invalid_request_error", "model_not_found",
                               "model", "The model `%*s` does not exist or "
                               "you do not have access to it.",
                               ngx_min(name.len, 100), name.data);
        return NGX_ERROR;
    }

    if (ngx_http_llm_choice_tokens(ctx, routed, err) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_llm_route_header(ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->conf->quota && t) {
        ctx->prompt_estimate = ngx_http_llm_prompt_bound(ctx);

        if (ctx->prompt_estimate < 0) {
            ngx_http_llm_set_error(err, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "server_error", NULL, NULL,
                                   "The server is out of memory.");
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * The bound on the answer: the client's max_tokens (or
 * max_completion_tokens) per choice, or the gateway's default when a
 * quota needs one; ctx->max_tokens is the bound over all choices, which
 * the tenant's cap and the reservation cover.  A bound the model's
 * context cannot hold is refused as OpenAI does; for the router, with
 * the model it chose.
 */

static ngx_int_t
ngx_http_llm_choice_tokens(ngx_http_llm_ctx_t *ctx, ngx_uint_t routed,
    ngx_http_llm_error_t *err)
{
    cJSON                     *item;
    int64_t                    asked, cap, choices;
    ngx_uint_t                 window, defaulted;
    const char                *param;
    ngx_http_llm_tenant_t     *t;
    ngx_http_llm_router_t     *rt;
    ngx_http_llm_main_conf_t  *lmcf;

    t = ctx->tenant;
    choices = ctx->choices ? (int64_t) ctx->choices : 1;

    if (t && t->max_n > 0 && choices > t->max_n) {
        item = cJSON_GetObjectItemCaseSensitive(ctx->json, "n");
        param = (cJSON_IsNumber(item) && item->valuedouble > t->max_n)
                ? "n" : "best_of";

        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_value",
                               param, "Invalid value for '%s': %L choices, "
                               "and this key allows at most %i per "
                               "request.", param, choices, t->max_n);
        return NGX_ERROR;
    }

    param = "max_completion_tokens";
    item = cJSON_GetObjectItemCaseSensitive(ctx->json, param);

    if (!cJSON_IsNumber(item)) {
        param = "max_tokens";
        item = cJSON_GetObjectItemCaseSensitive(ctx->json, param);
    }

    asked = cJSON_IsNumber(item) ? (int64_t) item->valuedouble : 0;
    cap = (t && t->max_tokens > 0) ? t->max_tokens : 0;
    defaulted = 0;

    if (asked == 0 && t && (ctx->conf->quota || cap)) {
        /*
         * a quota is only exact with a bound on the answer, and a cap
         * only holds with one: the backend is told the tenant's cap,
         * shared by the choices, or the location's default
         */

        asked = cap ? cap / choices : (int64_t) ctx->conf->default_max_tokens;
        defaulted = 1;

        if (asked == 0) {
            ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error", "invalid_value",
                                   "n", "Invalid value for 'n': %L choices "
                                   "cannot share the %L completion tokens "
                                   "this key allows per request.",
                                   choices, cap);
            return NGX_ERROR;
        }
    }

    /* asked < 1e15 and choices <= 128: the product fits, checked anyway */

    if (asked > INT64_MAX / choices) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_value",
                               param, "%s is too large: %L.", param, asked);
        return NGX_ERROR;
    }

    if (cap && asked * choices > cap) {
        if (choices == 1) {
            ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error", "invalid_value",
                                   param, "%s is too large: %L. This key "
                                   "allows at most %L.", param, asked, cap);

        } else {
            ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error", "invalid_value",
                                   param, "%s is too large: %L choices of "
                                   "%L tokens make %L. This key allows at "
                                   "most %L completion tokens per request, "
                                   "over all choices.", param, choices,
                                   asked, asked * choices, cap);
        }

        return NGX_ERROR;
    }

    if (routed && !defaulted && asked) {
        lmcf = ngx_http_get_module_main_conf(ctx->request,
                                             ngx_http_llm_module);
        rt = lmcf->router;
        window = ngx_max(rt->cheap->context_window,
                         rt->strong->context_window);

        if (rt->cheap->context_window && rt->strong->context_window
            && asked > (int64_t) window)
        {
            return ngx_http_llm_too_large(ctx, asked, window, err);
        }
    }

    ctx->choice_tokens = asked;
    ctx->max_tokens = asked * choices;

    /* the router weighs the context one choice needs */

    if (routed && ngx_http_llm_route(ctx, asked, err) != NGX_OK) {
        return NGX_ERROR;
    }

    window = ctx->model ? ctx->model->context_window : 0;

    if (window && asked > (int64_t) window) {
        if (!defaulted) {
            return ngx_http_llm_too_large(ctx, asked, window, err);
        }

        /* a default the model cannot hold is cut to its context */

        asked = window;
    }

    ctx->choice_tokens = asked;
    ctx->max_tokens = asked * choices;

    if (defaulted && ngx_http_llm_set_tokens(ctx, asked) != NGX_OK) {
        ngx_http_llm_set_error(err, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               "server_error", NULL, NULL,
                               "The server is out of memory.");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_too_large(ngx_http_llm_ctx_t *ctx, int64_t asked,
    ngx_uint_t window, ngx_http_llm_error_t *err)
{
    const char  *param;

    param = cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(ctx->json,
                                                    "max_completion_tokens"))
            ? "max_completion_tokens" : "max_tokens";

    ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                           "invalid_request_error", "invalid_value", param,
                           "%s is too large: %L. This model supports at "
                           "most %ui completion tokens, whereas you "
                           "provided %L.", param, asked, window, asked);
    return NGX_ERROR;
}


/* the gateway's default goes into the tree: the cache key sees it too */

static ngx_int_t
ngx_http_llm_set_tokens(ngx_http_llm_ctx_t *ctx, int64_t per_choice)
{
    cJSON_DeleteItemFromObjectCaseSensitive(ctx->json, "max_tokens");
    cJSON_DeleteItemFromObjectCaseSensitive(ctx->json,
                                            "max_completion_tokens");

    if (cJSON_AddNumberToObject(ctx->json, "max_tokens",
                                (double) per_choice)
        == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The prompt's tokens at most, for the reservation:
 * - a token of llama-style (BPE) tokenizers covers at least one byte, so
 *   the bytes of the messages' strings and names bound their text, and
 *   a template adds a few tokens per message; when the model names its
 *   tokenizer, the messages' text is counted in its tokens instead,
 *   exactly;
 * - a media part (image, audio, video, file) costs up to
 *   NGX_HTTP_LLM_MEDIA_TOKENS besides its bytes: the most one image is
 *   billed; audio sent as base64 is bounded by its bytes already (some
 *   40 KB of base64 per second for 10 to 25 tokens);
 * - tools, tool_choice, response_format (its json_schema) and the legacy
 *   functions and function_call are written into the prompt as JSON text
 *   by templates: their JSON size bounds them.
 * Not bounded: a video or a many-page document given by URL, which
 * providers bill per frame or page.
 */

static int64_t
ngx_http_llm_prompt_bound(ngx_http_llm_ctx_t *ctx)
{
    cJSON       *json, *msgs, *m, *content, *part, *type;
    int64_t      n, tokens;
    ngx_uint_t   i;

    static const char  *fields[] = {
        "tools", "tool_choice", "response_format", "functions",
        "function_call", NULL
    };

    json = ctx->json;
    msgs = cJSON_GetObjectItemCaseSensitive(json, "messages");
    n = 16;

    cJSON_ArrayForEach(m, msgs) {
        n += 8 + ngx_http_llm_text_size(m);

        content = cJSON_GetObjectItemCaseSensitive(m, "content");

        if (!cJSON_IsArray(content)) {
            continue;
        }

        cJSON_ArrayForEach(part, content) {
            type = cJSON_GetObjectItemCaseSensitive(part, "type");

            if (cJSON_IsString(type)
                && ngx_strcmp(type->valuestring, "text") != 0
                && ngx_strcmp(type->valuestring, "refusal") != 0)
            {
                n += NGX_HTTP_LLM_MEDIA_TOKENS;
            }
        }
    }

    for (i = 0; fields[i]; i++) {
        n += ngx_http_llm_json_size(cJSON_GetObjectItemCaseSensitive(json,
                                                                 fields[i]));
    }

    /* the model's tokenizer counts the messages' text, exactly */

    if (ctx->model && ctx->model->tokenizer) {
        tokens = ngx_http_llm_prompt_tokens(ctx, ctx->model);
        if (tokens < 0) {
            return -1;
        }

        n += tokens - (int64_t) ngx_http_llm_prompt_bytes(json, NULL);
    }

    return n;
}


static int64_t
ngx_http_llm_text_size(cJSON *item)
{
    cJSON    *child;
    int64_t   n;

    if (item == NULL) {
        return 0;
    }

    n = 0;

    if (cJSON_IsString(item)) {
        n += ngx_strlen(item->valuestring);
    }

    if (item->string) {
        n += ngx_strlen(item->string);
    }

    for (child = item->child; child; child = child->next) {
        n += ngx_http_llm_text_size(child);
    }

    return n;
}


/* the JSON text of a value at its longest, and its layout */

static int64_t
ngx_http_llm_json_size(cJSON *item)
{
    cJSON    *child;
    int64_t   n;

    if (item == NULL) {
        return 0;
    }

    n = NGX_HTTP_LLM_LAYOUT_TOKENS;

    if (item->string) {
        n += ngx_strlen(item->string) + sizeof("\"\":") - 1;
    }

    if (cJSON_IsString(item)) {
        n += ngx_strlen(item->valuestring) + 2;

    } else if (cJSON_IsNumber(item)) {
        n += NGX_HTTP_LLM_NUMBER_BYTES;

    } else {
        n += sizeof("false") - 1;
    }

    for (child = item->child; child; child = child->next) {
        n += ngx_http_llm_json_size(child) + 1;
    }

    return n;
}
