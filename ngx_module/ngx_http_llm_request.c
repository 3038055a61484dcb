
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Chat completion requests: cJSON's memory, the client's body parsed and
 * validated, and the body written for each backend.  The tenant's say on
 * the request is in ngx_http_llm_policy.c, model names in the router.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_error.h"
#include "ngx_http_llm_json.h"
#include "ngx_http_llm_media.h"
#include "ngx_http_llm_provider.h"
#include "ngx_http_llm_request.h"


/* OpenAI's most choices for n; vLLM's best_of has no limit of its own */
#define NGX_HTTP_LLM_MAX_CHOICES     128

/*
 * The largest integer forwarded as such: cJSON prints a number with 15
 * significant digits when that reads back close enough, so from 1e15 on
 * an integer may reach the backend as 9e+15, not the validated value.
 */
#define NGX_HTTP_LLM_MAX_INT         999999999999999.0


/*
 * Members the gateway refuses, since it forwards the rest untouched:
 * - a backend's own name for a bound on generation, which it reads
 *   before (or instead of) max_tokens and n, so that the reservation
 *   would not cover what it generates;
 * - members that change the price of the request: the gateway charges
 *   from its own price table for the model it chose, so a dearer tier,
 *   other output modalities, tools the provider bills apart, or other
 *   models and providers to fall back to would go unbilled.
 * vLLM's min_tokens is not here: vLLM refuses it above max_tokens.
 */

typedef struct {
    const char                *name;
    const char                *hint;
} ngx_http_llm_refused_t;


static ngx_http_llm_refused_t  ngx_http_llm_refused[] = {

    /* llama.cpp's llama-server: read before max_tokens */
    { "n_predict", "Use 'max_tokens' instead." },

    /* llama.cpp's llama-server: read before n */
    { "n_cmpl", "Use 'n' instead." },

    /* TGI and Hugging Face's generate parameters */
    { "max_new_tokens", "Use 'max_tokens' instead." },

    /*
     * Ollama's native API, in "options"; its OpenAI endpoint maps
     * max_tokens to num_predict itself (see ngx_http_llm_check_refused())
     */
    { "num_predict", "Use 'max_tokens' instead." },

    /* OpenAI: audio output is billed apart (modalities: see below) */
    { "audio", "The gateway bills text output only." },

    /* OpenAI: web search is billed per call */
    { "web_search_options", "The gateway does not bill web search." },

    /* OpenRouter: fallback models, possibly dearer than the one chosen */
    { "models", "Name one model in 'model'." },

    /* OpenRouter: web search and other plugins, billed apart */
    { "plugins", "The gateway does not bill plugins." },

    /* OpenRouter: provider routing, which may choose a dearer provider */
    { "provider", "The gateway chooses the provider." },

    { NULL, NULL }
};


static ngx_int_t ngx_http_llm_check_messages(cJSON *messages,
    ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_check_fields(cJSON *json,
    ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_check_refused(cJSON *json,
    ngx_http_llm_error_t *err);
static void ngx_http_llm_unsupported(ngx_http_llm_error_t *err,
    const char *param, const char *hint);
static ngx_int_t ngx_http_llm_body_own(const char *name);
static ngx_int_t ngx_http_llm_is_choices(cJSON *item);
static ngx_int_t ngx_http_llm_is_int(cJSON *item);
static void *ngx_http_llm_json_alloc(size_t size);
static void ngx_http_llm_json_free(void *ptr);


static ngx_pool_t  *ngx_http_llm_json_pool;


/*
 * cJSON's memory.  The request's own tree, parsed once and kept to its
 * end, is taken from the request's pool: a bump of a pointer for each of
 * its many small nodes instead of a malloc() and a free().  Everything
 * else comes from the heap, as cJSON may grow it for long (a stream's
 * events, replays).  A word in front of each block tells free() which.
 */

static void *
ngx_http_llm_json_alloc(size_t size)
{
    uintptr_t  *p;

    if (ngx_http_llm_json_pool) {
        p = ngx_palloc(ngx_http_llm_json_pool, size + sizeof(uintptr_t));
        if (p == NULL) {
            return NULL;
        }

        *p = 1;
        return p + 1;
    }

    p = malloc(size + sizeof(uintptr_t));
    if (p == NULL) {
        return NULL;
    }

    *p = 0;
    return p + 1;
}


static void
ngx_http_llm_json_free(void *ptr)
{
    uintptr_t  *p;

    if (ptr == NULL) {
        return;
    }

    p = (uintptr_t *) ptr - 1;

    if (*p == 0) {
        free(p);
    }
}


void
ngx_http_llm_json_init(void)
{
    cJSON_Hooks  hooks;

    hooks.malloc_fn = ngx_http_llm_json_alloc;
    hooks.free_fn = ngx_http_llm_json_free;

    cJSON_InitHooks(&hooks);
}


/*
 * Parses and checks the client's body; on success ctx->json holds the tree
 * and ctx->model the logical model.  The tree is freed by the request's
 * cleanup whatever happens next.
 */

ngx_int_t
ngx_http_llm_parse_request(ngx_http_llm_ctx_t *ctx, u_char *p, size_t len,
    ngx_http_llm_error_t *err)
{
    cJSON       *json, *item, *opts;
    ngx_uint_t   n;
    ngx_pool_t  *pool;

    pool = ctx->request->pool;

    if (len == 0) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_json", NULL,
                               "We could not parse the JSON body of your "
                               "request: the body is empty.");
        return NGX_ERROR;
    }

    /* grammar and limits first: cJSON then only builds a bounded tree */

    if (ngx_http_llm_json_check(pool, p, len, err) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_llm_json_pool = pool;
    json = cJSON_ParseWithLength((const char *) p, len);
    ngx_http_llm_json_pool = NULL;

    if (json == NULL) {
        /* valid JSON cJSON cannot take: a lone surrogate, a long number */
        ngx_http_llm_json_syntax(err);
        return NGX_ERROR;
    }

    ctx->json = json;

    if (!cJSON_IsObject(json)) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_type", NULL,
                               "The request body must be a JSON object.");
        return NGX_ERROR;
    }

    /* from here on every name is the only one of its object */

    if (ngx_http_llm_json_unique(pool, json, err) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_llm_check_fields(json, err) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_llm_check_refused(json, err) != NGX_OK) {
        return NGX_ERROR;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "messages");

    if (ngx_http_llm_check_messages(item, err) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_llm_media_check(pool, item, ctx->conf->media_urls, err)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "model");

    if (item) {
        ctx->model_name.data = (u_char *) item->valuestring;
        ctx->model_name.len = ngx_strlen(item->valuestring);
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "stream");
    ctx->stream = cJSON_IsTrue(item) ? 1 : 0;

    opts = cJSON_GetObjectItemCaseSensitive(json, "stream_options");
    item = cJSON_GetObjectItemCaseSensitive(opts, "include_usage");
    ctx->client_usage = (ctx->stream && cJSON_IsTrue(item)) ? 1 : 0;

    /* each choice may be as long as max_tokens: n and best_of multiply */

    ctx->choices = 1;

    item = cJSON_GetObjectItemCaseSensitive(json, "n");
    if (cJSON_IsNumber(item)) {
        ctx->choices = (ngx_uint_t) item->valuedouble;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "best_of");
    if (cJSON_IsNumber(item)) {
        n = (ngx_uint_t) item->valuedouble;
        ctx->choices = ngx_max(ctx->choices, n);
    }

    return NGX_OK;
}


/*
 * Type checks for the fields the gateway knows; anything else passes
 * through untouched, as OpenAI-compatible servers add their own.
 */

static ngx_int_t
ngx_http_llm_check_fields(cJSON *json, ngx_http_llm_error_t *err)
{
    cJSON       *item, *el;
    ngx_uint_t   i;
    const char  *bad;

    /* integers and their least values; n and best_of are below */

    static const struct {
        const char  *name;
        double       min;
    } ints[] = {
        { "max_tokens", 1 },
        { "max_completion_tokens", 1 },
        { "seed", -NGX_HTTP_LLM_MAX_INT },
        { "top_logprobs", 0 },
        { NULL, 0 }
    };

    bad = NULL;

    item = cJSON_GetObjectItemCaseSensitive(json, "model");
    if (item && !cJSON_IsString(item)) {
        bad = "model";
        goto type;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "stream");
    if (item && !cJSON_IsBool(item) && !cJSON_IsNull(item)) {
        bad = "stream";
        goto type;
    }

    for (i = 0; ints[i].name; i++) {
        item = cJSON_GetObjectItemCaseSensitive(json, ints[i].name);

        if (item && !cJSON_IsNull(item)
            && (!ngx_http_llm_is_int(item) || item->valuedouble < ints[i].min))
        {
            bad = ints[i].name;
            goto range;
        }
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "temperature");
    if (item && !cJSON_IsNull(item)
        && (!cJSON_IsNumber(item)
            || item->valuedouble < 0 || item->valuedouble > 2))
    {
        bad = "temperature";
        goto range;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "top_p");
    if (item && !cJSON_IsNull(item)
        && (!cJSON_IsNumber(item)
            || item->valuedouble < 0 || item->valuedouble > 1))
    {
        bad = "top_p";
        goto range;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "n");
    if (!ngx_http_llm_is_choices(item)) {
        bad = "n";
        goto range;
    }

    el = cJSON_GetObjectItemCaseSensitive(json, "best_of");
    if (!ngx_http_llm_is_choices(el)) {
        bad = "best_of";
        goto range;
    }

    if (cJSON_IsNumber(item) && cJSON_IsNumber(el)
        && el->valuedouble < item->valuedouble)
    {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_value",
                               "best_of", "best_of must be greater than or "
                               "equal to n.");
        return NGX_ERROR;
    }

    /* two bounds that disagree: which one a backend reads is its own say */

    item = cJSON_GetObjectItemCaseSensitive(json, "max_tokens");
    el = cJSON_GetObjectItemCaseSensitive(json, "max_completion_tokens");

    if (cJSON_IsNumber(item) && cJSON_IsNumber(el)
        && item->valuedouble != el->valuedouble)
    {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_value",
                               "max_completion_tokens",
                               "max_tokens (%L) and max_completion_tokens "
                               "(%L) disagree. Set only one of them.",
                               (int64_t) item->valuedouble,
                               (int64_t) el->valuedouble);
        return NGX_ERROR;
    }


    item = cJSON_GetObjectItemCaseSensitive(json, "stop");
    if (item && !cJSON_IsNull(item) && !cJSON_IsString(item)) {
        if (!cJSON_IsArray(item) || cJSON_GetArraySize(item) > 4) {
            bad = "stop";
            goto type;
        }

        cJSON_ArrayForEach(el, item) {
            if (!cJSON_IsString(el)) {
                bad = "stop";
                goto type;
            }
        }
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "tools");
    if (item && !cJSON_IsNull(item)) {
        if (!cJSON_IsArray(item)) {
            bad = "tools";
            goto type;
        }

        cJSON_ArrayForEach(el, item) {
            if (!cJSON_IsObject(el)
                || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(el,
                                                                    "type")))
            {
                bad = "tools";
                goto type;
            }
        }
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "tool_choice");
    if (item && !cJSON_IsNull(item)
        && !cJSON_IsString(item) && !cJSON_IsObject(item))
    {
        bad = "tool_choice";
        goto type;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "response_format");
    if (item && !cJSON_IsNull(item)
        && (!cJSON_IsObject(item)
            || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(item,
                                                                "type"))))
    {
        bad = "response_format";
        goto type;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "user");
    if (item && !cJSON_IsNull(item) && !cJSON_IsString(item)) {
        bad = "user";
        goto type;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "stream_options");
    if (item && !cJSON_IsNull(item)) {
        if (!cJSON_IsObject(item)) {
            bad = "stream_options";
            goto type;
        }

        el = cJSON_GetObjectItemCaseSensitive(item, "include_usage");
        if (el && !cJSON_IsBool(el)) {
            bad = "stream_options.include_usage";
            goto type;
        }
    }

    return NGX_OK;

type:

    ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST, "invalid_request_error",
                           "invalid_type", bad,
                           "Invalid type for '%s'.", bad);
    return NGX_ERROR;

range:

    ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST, "invalid_request_error",
                           "invalid_value", bad,
                           "Invalid value for '%s': out of range or not "
                           "of the right type.", bad);
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_llm_check_messages(cJSON *messages, ngx_http_llm_error_t *err)
{
    int          i;
    cJSON       *msg, *role, *content, *part;
    const char  *r;

    if (messages == NULL) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error",
                               "missing_required_parameter", "messages",
                               "Missing required parameter: 'messages'.");
        return NGX_ERROR;
    }

    if (!cJSON_IsArray(messages)) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_type",
                               "messages",
                               "Invalid type for 'messages': expected an "
                               "array.");
        return NGX_ERROR;
    }

    if (cJSON_GetArraySize(messages) == 0) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "empty_array",
                               "messages",
                               "Invalid 'messages': empty array. Expected "
                               "an array with minimum length 1.");
        return NGX_ERROR;
    }

    i = 0;

    cJSON_ArrayForEach(msg, messages) {

        if (!cJSON_IsObject(msg)) {
            ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error", "invalid_type",
                                   "messages",
                                   "Invalid type for 'messages[%d]': "
                                   "expected an object.", i);
            return NGX_ERROR;
        }

        role = cJSON_GetObjectItemCaseSensitive(msg, "role");

        if (!cJSON_IsString(role)) {
            ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error",
                                   role ? "invalid_type"
                                        : "missing_required_parameter",
                                   "messages",
                                   "Missing or invalid 'messages[%d].role'.",
                                   i);
            return NGX_ERROR;
        }

        r = role->valuestring;

        if (ngx_strcmp(r, "system") != 0 && ngx_strcmp(r, "user") != 0
            && ngx_strcmp(r, "assistant") != 0 && ngx_strcmp(r, "tool") != 0
            && ngx_strcmp(r, "developer") != 0
            && ngx_strcmp(r, "function") != 0)
        {
            ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error", "invalid_value",
                                   "messages",
                                   "Invalid value for 'messages[%d].role': "
                                   "unsupported role.", i);
            return NGX_ERROR;
        }

        content = cJSON_GetObjectItemCaseSensitive(msg, "content");

        if (cJSON_IsString(content)) {
            i++;
            continue;
        }

        if (content == NULL || cJSON_IsNull(content)) {
            /* only an assistant turn carrying tool calls may omit it */

            if (ngx_strcmp(r, "assistant") == 0) {
                i++;
                continue;
            }

            ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error",
                                   "missing_required_parameter", "messages",
                                   "Missing required parameter: "
                                   "'messages[%d].content'.", i);
            return NGX_ERROR;
        }

        if (!cJSON_IsArray(content)) {
            goto bad_content;
        }

        cJSON_ArrayForEach(part, content) {
            if (!cJSON_IsObject(part)
                || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(part,
                                                                    "type")))
            {
                goto bad_content;
            }
        }

        i++;
    }

    return NGX_OK;

bad_content:

    ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST, "invalid_request_error",
                           "invalid_type", "messages",
                           "Invalid type for 'messages[%d].content': "
                           "expected a string or an array of content parts.",
                           i);
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_llm_check_refused(cJSON *json, ngx_http_llm_error_t *err)
{
    cJSON                   *item, *el;
    ngx_http_llm_refused_t  *f;

    for (f = ngx_http_llm_refused; f->name; f++) {
        item = cJSON_GetObjectItemCaseSensitive(json, f->name);

        if (item && !cJSON_IsNull(item)) {
            ngx_http_llm_unsupported(err, f->name, f->hint);
            return NGX_ERROR;
        }
    }

    /* Ollama's native bound, should a backend read "options" */

    item = cJSON_GetObjectItemCaseSensitive(json, "options");
    el = cJSON_GetObjectItemCaseSensitive(item, "num_predict");

    if (el && !cJSON_IsNull(el)) {
        ngx_http_llm_unsupported(err, "options.num_predict",
                                 "Use 'max_tokens' instead.");
        return NGX_ERROR;
    }

    /* OpenAI: "flex", "priority", "scale" tiers have prices of their own */

    item = cJSON_GetObjectItemCaseSensitive(json, "service_tier");

    if (item && !cJSON_IsNull(item)
        && !(cJSON_IsString(item)
             && (ngx_strcmp(item->valuestring, "auto") == 0
                 || ngx_strcmp(item->valuestring, "default") == 0)))
    {
        ngx_http_llm_unsupported(err, "service_tier",
                                 "Only \"auto\" and \"default\" are "
                                 "supported.");
        return NGX_ERROR;
    }

    /* OpenAI: audio output is billed apart */

    item = cJSON_GetObjectItemCaseSensitive(json, "modalities");

    if (item && !cJSON_IsNull(item)) {
        if (!cJSON_IsArray(item)) {
            goto modalities;
        }

        cJSON_ArrayForEach(el, item) {
            if (!cJSON_IsString(el) || ngx_strcmp(el->valuestring, "text") != 0)
            {
                goto modalities;
            }
        }
    }

    return NGX_OK;

modalities:

    ngx_http_llm_unsupported(err, "modalities",
                             "Only [\"text\"] is supported.");
    return NGX_ERROR;
}


static void
ngx_http_llm_unsupported(ngx_http_llm_error_t *err, const char *param,
    const char *hint)
{
    ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST, "invalid_request_error",
                           "unsupported_parameter", param,
                           "Unsupported parameter: '%s' is not supported "
                           "by this gateway. %s", param, hint);
}


/* n and best_of: absent, null, or 1 to NGX_HTTP_LLM_MAX_CHOICES */

static ngx_int_t
ngx_http_llm_is_choices(cJSON *item)
{
    return item == NULL || cJSON_IsNull(item)
           || (ngx_http_llm_is_int(item) && item->valuedouble >= 1
               && item->valuedouble <= NGX_HTTP_LLM_MAX_CHOICES);
}


static ngx_int_t
ngx_http_llm_is_int(cJSON *item)
{
    double  d;

    if (!cJSON_IsNumber(item)) {
        return 0;
    }

    d = item->valuedouble;

    /* the range first: converting a double out of it is undefined */

    return d >= -NGX_HTTP_LLM_MAX_INT && d <= NGX_HTTP_LLM_MAX_INT
           && d == (double) (int64_t) d;
}


/*
 * The upstream body: see the contract in ngx_http_llm.h.  The client's
 * members go in as references to the validated tree (no copy); those the
 * gateway decides are left out of that loop and written once, after it.
 */

u_char *
ngx_http_llm_upstream_body(ngx_http_llm_ctx_t *ctx, ngx_http_llm_backend_t *b,
    size_t *len)
{
    char                     *body;
    cJSON                    *out, *m, *opts, *o, *mct;
    ngx_http_llm_provider_t  *pv;

    pv = b->provider;

    out = cJSON_CreateObject();
    if (out == NULL) {
        return NULL;
    }

    for (m = ctx->json->child; m; m = m->next) {
        if (ngx_http_llm_body_own(m->string)) {
            continue;
        }

        if (!cJSON_AddItemReferenceToObject(out, m->string, m)) {
            goto failed;
        }
    }

    if (cJSON_AddStringToObject(out, "model", (char *) b->model.data)
        == NULL)
    {
        goto failed;
    }

    /* the bound per choice that the reservation covers, as it was named */

    if (ctx->choice_tokens > 0) {
        mct = cJSON_GetObjectItemCaseSensitive(ctx->json,
                                               "max_completion_tokens");

        if (cJSON_IsNumber(mct)
            && cJSON_AddNumberToObject(out, "max_completion_tokens",
                                       (double) ctx->choice_tokens)
               == NULL)
        {
            goto failed;
        }

        if ((!cJSON_IsNumber(mct)
             || cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(ctx->json,
                                                                "max_tokens")))
            && cJSON_AddNumberToObject(out, "max_tokens",
                                       (double) ctx->choice_tokens)
               == NULL)
        {
            goto failed;
        }
    }

    /*
     * a stream asks for usage, so that every ending can be accounted for,
     * unless the provider refuses stream_options (it then sends usage by
     * itself); the client's other stream options are kept
     */

    if (ctx->stream
        && (pv == NULL || (pv->flags & NGX_HTTP_LLM_PROVIDER_STREAM_OPTIONS)))
    {
        opts = cJSON_AddObjectToObject(out, "stream_options");
        if (opts == NULL) {
            goto failed;
        }

        o = cJSON_GetObjectItemCaseSensitive(ctx->json, "stream_options");

        if (!cJSON_IsObject(o)) {
            o = NULL;
        }

        cJSON_ArrayForEach(m, o) {
            if (ngx_strcmp(m->string, "include_usage") != 0
                && !cJSON_AddItemReferenceToObject(opts, m->string, m))
            {
                goto failed;
            }
        }

        if (cJSON_AddTrueToObject(opts, "include_usage") == NULL) {
            goto failed;
        }
    }

    /* what this provider's API wants instead (none for local backends) */

    if (ngx_http_llm_provider_rewrite(pv, out, ctx->stream) != NGX_OK) {
        goto failed;
    }

    body = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);

    if (body == NULL) {
        return NULL;
    }

    if (ctx->upstream_body) {
        cJSON_free(ctx->upstream_body);
    }

    ctx->upstream_body = body;
    ctx->upstream_body_len = ngx_strlen(body);
    *len = ctx->upstream_body_len;

    return (u_char *) body;

failed:

    cJSON_Delete(out);
    return NULL;
}


/* the members the gateway writes itself */

static ngx_int_t
ngx_http_llm_body_own(const char *name)
{
    return ngx_strcmp(name, "model") == 0
           || ngx_strcmp(name, "max_tokens") == 0
           || ngx_strcmp(name, "max_completion_tokens") == 0
           || ngx_strcmp(name, "stream_options") == 0;
}
