
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The filter of nginx's own errors: in a gateway's server, the HTML
 * pages nginx sends by itself go out as OpenAI error objects instead.
 */


#include "ngx_http_llm.h"


/*
 * nginx's own error pages, in OpenAI's format, for the statuses that
 * nginx answers by itself: bad or oversized request lines and headers
 * (494 goes out as 400), oversized bodies.  A 408 has none: nginx closes
 * the connection without an answer.
 */

#define ngx_http_llm_error_page(message, type, code)                          \
    ngx_string("{\"error\":{\"message\":\"" message "\",\"type\":\""          \
               type "\",\"param\":null,\"code\":\"" code "\"}}\n")


/* the filter of nginx's own errors, per request */

typedef struct {
    ngx_str_t                  *json;          /* the page to send */
    unsigned                    sent:1;
} ngx_http_llm_error_ctx_t;


static ngx_int_t ngx_http_llm_error_filter_init(ngx_conf_t *cf);
static ngx_str_t *ngx_http_llm_nginx_error(ngx_http_request_t *r);
static ngx_str_t *ngx_http_llm_status_json(ngx_uint_t status);
static ngx_uint_t ngx_http_llm_has_error_page(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_error_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_error_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);


/*
 * A module of its own, for its request context above all: those errors
 * come before the gateway's context exists (or in requests that never
 * get one), and the gateway's slot must hold nothing else.
 */

static ngx_http_module_t  ngx_http_llm_error_filter_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_llm_error_filter_init,        /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_llm_error_filter_module = {
    NGX_MODULE_V1,
    &ngx_http_llm_error_filter_module_ctx, /* module context */
    NULL,                                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static ngx_str_t  ngx_http_llm_error_400 = ngx_http_llm_error_page(
    "The request could not be read: it is malformed, or its request line "
    "or headers are too large.", "invalid_request_error", "bad_request");
static ngx_str_t  ngx_http_llm_error_413 = ngx_http_llm_error_page(
    "The request body is too large.", "invalid_request_error",
    "request_too_large");
static ngx_str_t  ngx_http_llm_error_414 = ngx_http_llm_error_page(
    "The request URL is too long.", "invalid_request_error",
    "uri_too_long");
static ngx_str_t  ngx_http_llm_error_500 = ngx_http_llm_error_page(
    "The server had an error while processing your request.",
    "server_error", "internal_error");


/*
 * config lists this module right after the gateway's: its filters keep
 * the place in the chains they had when the gateway's module set them
 */

static ngx_int_t
ngx_http_llm_error_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_llm_error_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_llm_error_body_filter;

    return NGX_OK;
}


/* the JSON for an error page nginx is about to send here, or NULL */

static ngx_str_t *
ngx_http_llm_nginx_error(ngx_http_request_t *r)
{
    ngx_http_llm_loc_conf_t  *llcf;

    /*
     * error_page answers are the operator's; so are subrequests.  nginx
     * sets r->error_page whenever error pages are in scope, whether one
     * matches or not: the status itself is looked up.
     */

    if (r->err_status == 0
        || (r->error_page && ngx_http_llm_has_error_page(r))
        || r != r->main
        || r->headers_out.content_type.len != sizeof("text/html") - 1
        || ngx_strncmp(r->headers_out.content_type.data, "text/html",
                       sizeof("text/html") - 1)
           != 0)
    {
        return NULL;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);

    /*
     * a gateway location, or its server before a location is chosen:
     * too large headers are found before the URI is known
     */

    if (llcf == NULL || !(llcf->enable == 1 || llcf->json_errors)) {
        return NULL;
    }

    return ngx_http_llm_status_json(r->headers_out.status);
}


/* an error_page of this location for the status, 494 sent as 400 */

static ngx_uint_t
ngx_http_llm_has_error_page(ngx_http_request_t *r)
{
    ngx_int_t                  status;
    ngx_uint_t                 i;
    ngx_http_err_page_t       *err_page;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->error_pages == NULL) {
        return 0;
    }

    status = (ngx_int_t) r->err_status;
    err_page = clcf->error_pages->elts;

    for (i = 0; i < clcf->error_pages->nelts; i++) {
        if (err_page[i].status == status
            || err_page[i].status == (ngx_int_t) r->headers_out.status
            || (status == NGX_HTTP_BAD_REQUEST
                && err_page[i].status == NGX_HTTP_REQUEST_HEADER_TOO_LARGE))
        {
            return 1;
        }
    }

    return 0;
}


static ngx_str_t *
ngx_http_llm_status_json(ngx_uint_t status)
{
    switch (status) {

    case NGX_HTTP_BAD_REQUEST:
        return &ngx_http_llm_error_400;

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        return &ngx_http_llm_error_413;

    case NGX_HTTP_REQUEST_URI_TOO_LARGE:
        return &ngx_http_llm_error_414;

    case NGX_HTTP_INTERNAL_SERVER_ERROR:
        return &ngx_http_llm_error_500;

    default:
        return NULL;
    }
}


static ngx_int_t
ngx_http_llm_error_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                 *json;
    ngx_http_llm_error_ctx_t  *ctx;

    json = ngx_http_llm_nginx_error(r);

    if (json) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_error_ctx_t));
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        ctx->json = json;
        ngx_http_set_ctx(r, ctx, ngx_http_llm_error_filter_module);

        ngx_str_set(&r->headers_out.content_type, "application/json");
        r->headers_out.content_type_len = r->headers_out.content_type.len;
        r->headers_out.content_type_lowcase = NULL;
        r->headers_out.content_length_n = json->len;

        if (r->headers_out.content_length) {
            r->headers_out.content_length->hash = 0;
            r->headers_out.content_length = NULL;
        }
    }

    return ngx_http_next_header_filter(r);
}


/* the HTML of such a page is dropped, the JSON goes in its place */

static ngx_int_t
ngx_http_llm_error_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t                 *b;
    ngx_uint_t                 last;
    ngx_chain_t               *cl, out;
    ngx_http_llm_error_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_error_filter_module);

    if (ctx == NULL || ctx->sent) {
        return ngx_http_next_body_filter(r, in);
    }

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        if (cl->buf->last_buf || cl->buf->last_in_chain) {
            last = 1;
        }

        cl->buf->pos = cl->buf->last;
    }

    if (!last) {
        return NGX_OK;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->memory = 1;
    b->pos = ctx->json->data;
    b->last = ctx->json->data + ctx->json->len;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    /* once: a later empty last buffer must not bring a second copy */
    ctx->sent = 1;

    return ngx_http_next_body_filter(r, &out);
}
