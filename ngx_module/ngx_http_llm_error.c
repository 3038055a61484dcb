
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Errors in OpenAI's form ({"error":{"message","type","param","code"}}):
 * filled in where they are found, sent as a whole response, or ending a
 * request that waited.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_error.h"


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


void
ngx_http_llm_fail(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    ngx_connection_t  *c;

    c = ctx->request->connection;

    ctx->phase = NGX_HTTP_LLM_PHASE_DONE;

    ngx_http_finalize_request(ctx->request,
                              ngx_http_llm_send_error(ctx->request, err));

    /* we may be in a Redis callback: nginx will not do this for us */
    ngx_http_run_posted_requests(c);
}
