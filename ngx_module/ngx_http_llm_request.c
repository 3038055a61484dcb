
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Chat completion requests: parsing, validation, OpenAI-style errors.
 */


#include "ngx_http_llm.h"


#define NGX_HTTP_LLM_MAX_DEPTH  64


static ngx_int_t ngx_http_llm_check_messages(cJSON *messages,
    ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_check_fields(cJSON *json,
    ngx_http_llm_error_t *err);
static ngx_uint_t ngx_http_llm_depth(cJSON *item, ngx_uint_t depth);
static int64_t ngx_http_llm_text_size(cJSON *item);
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


void
ngx_http_llm_set_error(ngx_http_llm_error_t *err, ngx_uint_t status,
    const char *type, const char *code, const char *param,
    const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    err->status = status;
    err->type = type;
    err->code = code;
    err->param = param;

    va_start(args, fmt);
    p = ngx_vslprintf(err->message, err->message + sizeof(err->message) - 1,
                      fmt, args);
    va_end(args);

    *p = '\0';
}


u_char *
ngx_http_llm_error_json(ngx_pool_t *pool, ngx_http_llm_error_t *err,
    size_t *len)
{
    char    *s;
    cJSON   *root, *obj;
    u_char  *p;

    root = cJSON_CreateObject();
    if (root == NULL) {
        return NULL;
    }

    obj = cJSON_AddObjectToObject(root, "error");

    if (obj == NULL
        || cJSON_AddStringToObject(obj, "message", (char *) err->message)
           == NULL
        || cJSON_AddStringToObject(obj, "type", err->type) == NULL
        || (err->param
            ? cJSON_AddStringToObject(obj, "param", err->param)
            : cJSON_AddNullToObject(obj, "param")) == NULL
        || (err->code
            ? cJSON_AddStringToObject(obj, "code", err->code)
            : cJSON_AddNullToObject(obj, "code")) == NULL)
    {
        cJSON_Delete(root);
        return NULL;
    }

    s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);

    if (s == NULL) {
        return NULL;
    }

    *len = ngx_strlen(s);

    p = ngx_pnalloc(pool, *len + 1);
    if (p != NULL) {
        ngx_memcpy(p, s, *len);
        p[(*len)++] = '\n';
    }

    cJSON_free(s);

    return p;
}


ngx_int_t
ngx_http_llm_send_error(ngx_http_request_t *r, ngx_http_llm_error_t *err)
{
    size_t               len;
    u_char              *p;
    ngx_int_t            rc;
    ngx_buf_t           *b;
    ngx_chain_t          out;
    ngx_http_llm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);
    if (ctx) {
        ctx->error_code = err->code;
    }

    p = ngx_http_llm_error_json(r->pool, err, &len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    r->headers_out.status = err->status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = p;
    b->last = p + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


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
 * Parses and checks the client's body; on success ctx->json holds the tree
 * and ctx->model the logical model.  The tree is freed by the request's
 * cleanup whatever happens next.
 */

ngx_int_t
ngx_http_llm_parse_request(ngx_http_llm_ctx_t *ctx, u_char *p, size_t len,
    ngx_http_llm_error_t *err)
{
    cJSON      *json, *item, *opts;

    if (len == 0) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_json", NULL,
                               "We could not parse the JSON body of your "
                               "request: the body is empty.");
        return NGX_ERROR;
    }

    /* cJSON would skip a NUL as white space; JSON has no place for one */

    if (ngx_strlchr(p, p + len, '\0') == NULL) {
        ngx_http_llm_json_pool = ctx->request->pool;
        json = cJSON_ParseWithLength((const char *) p, len);
        ngx_http_llm_json_pool = NULL;

    } else {
        json = NULL;
    }

    if (json == NULL) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_json", NULL,
                               "We could not parse the JSON body of your "
                               "request. (HINT: This likely means you "
                               "aren't using your HTTP library correctly.)");
        return NGX_ERROR;
    }

    ctx->json = json;

    if (!cJSON_IsObject(json)) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_type", NULL,
                               "The request body must be a JSON object.");
        return NGX_ERROR;
    }

    if (ngx_http_llm_depth(json, 0) > NGX_HTTP_LLM_MAX_DEPTH) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_json", NULL,
                               "The request body is nested deeper than %d "
                               "levels.", NGX_HTTP_LLM_MAX_DEPTH);
        return NGX_ERROR;
    }

    if (ngx_http_llm_check_fields(json, err) != NGX_OK) {
        return NGX_ERROR;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "messages");

    if (ngx_http_llm_check_messages(item, err) != NGX_OK) {
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
    const char  *bad;

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

    item = cJSON_GetObjectItemCaseSensitive(json, "max_tokens");
    if (item && !cJSON_IsNull(item)
        && (!ngx_http_llm_is_int(item) || item->valuedouble < 1))
    {
        bad = "max_tokens";
        goto range;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "max_completion_tokens");
    if (item && !cJSON_IsNull(item)
        && (!ngx_http_llm_is_int(item) || item->valuedouble < 1))
    {
        bad = "max_completion_tokens";
        goto range;
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
    if (item && !cJSON_IsNull(item)
        && (!ngx_http_llm_is_int(item)
            || item->valuedouble < 1 || item->valuedouble > 128))
    {
        bad = "n";
        goto range;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "seed");
    if (item && !cJSON_IsNull(item) && !ngx_http_llm_is_int(item)) {
        bad = "seed";
        goto type;
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


static ngx_uint_t
ngx_http_llm_depth(cJSON *item, ngx_uint_t depth)
{
    cJSON       *child;
    ngx_uint_t   d, max;

    max = depth;

    if (depth > NGX_HTTP_LLM_MAX_DEPTH) {
        return depth;
    }

    for (child = item->child; child; child = child->next) {
        d = ngx_http_llm_depth(child, depth + 1);

        if (d > max) {
            max = d;
        }
    }

    return max;
}


static ngx_int_t
ngx_http_llm_is_int(cJSON *item)
{
    double  d;

    if (!cJSON_IsNumber(item)) {
        return 0;
    }

    d = item->valuedouble;

    return d == (double) (int64_t) d && d > -9.0e15 && d < 9.0e15;
}


/*
 * The tenant's say, after parsing: which model, how many tokens at most,
 * and the prompt's worst case for the reservation.
 */

ngx_int_t
ngx_http_llm_apply_policy(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    int64_t                    cap, asked;
    cJSON                     *item, *msgs;
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

    asked = 0;

    item = cJSON_GetObjectItemCaseSensitive(ctx->json,
                                            "max_completion_tokens");
    if (!cJSON_IsNumber(item)) {
        item = cJSON_GetObjectItemCaseSensitive(ctx->json, "max_tokens");
    }

    if (cJSON_IsNumber(item)) {
        asked = (int64_t) item->valuedouble;
    }

    cap = (t && t->max_tokens > 0) ? t->max_tokens : 0;

    if (cap && asked > cap) {
        ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_value",
                               "max_tokens", "max_tokens is too large: "
                               "%L. This key allows at most %L.",
                               asked, cap);
        return NGX_ERROR;
    }

    if (asked == 0 && ctx->conf->quota && t) {
        /*
         * a quota is only exact with a bound on the answer: the backend
         * is told the tenant's cap, or the location's default
         */

        asked = cap ? cap : (int64_t) ctx->conf->default_max_tokens;

        cJSON_DeleteItemFromObjectCaseSensitive(ctx->json, "max_tokens");

        if (cJSON_AddNumberToObject(ctx->json, "max_tokens", (double) asked)
            == NULL)
        {
            return NGX_ERROR;
        }
    }

    ctx->max_tokens = asked;

    /* without a bound on the answer, the prompt alone must fit */

    if (routed && ngx_http_llm_route(ctx, asked, err) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_llm_route_header(ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (!ctx->conf->quota || t == NULL) {
        return NGX_OK;
    }

    /*
     * Every token of llama-style tokenizers covers at least one byte of
     * text, so bytes bound the prompt's tokens; templates add a few per
     * message.
     */

    msgs = cJSON_GetObjectItemCaseSensitive(ctx->json, "messages");

    ctx->prompt_estimate = ngx_http_llm_text_size(msgs)
                           + ngx_http_llm_text_size(
                               cJSON_GetObjectItemCaseSensitive(ctx->json,
                                                                "tools"))
                           + 8 * cJSON_GetArraySize(msgs) + 16;

    return NGX_OK;
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


/* "12.50" dollars to micro-dollars, exactly; -1 if it is not a price */

int64_t
ngx_http_llm_parse_usd(ngx_str_t *s)
{
    u_char      *p, *last;
    int64_t      dollars, micro, scale;
    ngx_uint_t   frac;

    p = s->data;
    last = s->data + s->len;

    dollars = 0;
    micro = 0;
    scale = 1000000;
    frac = 0;

    if (p == last) {
        return -1;
    }

    for ( /* void */ ; p < last; p++) {

        if (*p == '.' && !frac) {
            frac = 1;
            continue;
        }

        if (*p < '0' || *p > '9') {
            return -1;
        }

        if (frac) {
            scale /= 10;

            if (scale == 0) {
                return -1;
            }

            micro += (*p - '0') * scale;
            continue;
        }

        dollars = dollars * 10 + (*p - '0');

        if (dollars > 1000000000LL) {
            return -1;
        }
    }

    return dollars * 1000000 + micro;
}
