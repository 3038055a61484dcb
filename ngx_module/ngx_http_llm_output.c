
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Output to the client: the chain of the module's own recycled buffers,
 * its flush on write events, whole responses from one buffer, response
 * headers and trailers, and the request's end.  A utility: it calls
 * nothing above it, and what produces the output resumes on its own.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_output.h"


static void ngx_http_llm_out_append(ngx_http_llm_ctx_t *ctx, ngx_chain_t *cl);


/* a request ends here: one symbol for every ending, the fuzz targets wrap it */

void
ngx_http_llm_finalize(ngx_http_llm_ctx_t *ctx, ngx_int_t rc)
{
    ngx_http_finalize_request(ctx->request, rc);
}


/* a whole 200 response from one buffer */

ngx_int_t
ngx_http_llm_send_buf(ngx_http_request_t *r, ngx_buf_t *b, const char *type)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_llm_add_header(ngx_http_request_t *r, const char *key,
    const char *value)
{
    return ngx_http_llm_push_header(&r->headers_out.headers, key, value);
}


/* a response header, or a trailer; key and value outlive the request */

ngx_int_t
ngx_http_llm_push_header(ngx_list_t *list, const char *key,
    const char *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(list);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = (u_char *) value;
    h->value.len = ngx_strlen(value);

    return NGX_OK;
}


/* the header ngx_http_llm_add_header() pushed last */

ngx_table_elt_t *
ngx_http_llm_last_header(ngx_http_request_t *r)
{
    ngx_list_t  *l;

    l = &r->headers_out.headers;

    return l->last->nelts ? (ngx_table_elt_t *) l->last->elts
                            + l->last->nelts - 1
                          : NULL;
}


ngx_int_t
ngx_http_llm_out(ngx_http_llm_ctx_t *ctx, u_char *p, size_t len)
{
    size_t               n, size;
    ngx_buf_t           *b;
    ngx_chain_t         *cl;
    ngx_http_request_t  *r;

    r = ctx->request;

    while (len) {
        b = (ctx->out.chain == NULL) ? NULL : ctx->out.tail->buf;

        if (b == NULL || b->last == b->end) {
            cl = ngx_chain_get_free_buf(r->pool, &ctx->out.free);
            if (cl == NULL) {
                return NGX_ERROR;
            }

            b = cl->buf;

            if (b->start == NULL) {
                size = ctx->stream ? NGX_HTTP_LLM_OUT_SSE_BUF_SIZE
                                   : NGX_HTTP_LLM_OUT_BUF_SIZE;

                b->start = ngx_palloc(r->pool, size);
                if (b->start == NULL) {
                    return NGX_ERROR;
                }

                b->end = b->start + size;
                b->temporary = 1;
                b->tag = (ngx_buf_tag_t) &ngx_http_llm_module;
            }

            b->pos = b->start;
            b->last = b->start;
            b->flush = 0;
            b->last_buf = 0;
            b->last_in_chain = 0;

            ngx_http_llm_out_append(ctx, cl);
        }

        n = ngx_min(len, (size_t) (b->end - b->last));
        b->last = ngx_cpymem(b->last, p, n);
        p += n;
        len -= n;
    }

    return NGX_OK;
}


static void
ngx_http_llm_out_append(ngx_http_llm_ctx_t *ctx, ngx_chain_t *cl)
{
    if (ctx->out.chain == NULL) {
        ctx->out.chain = cl;

    } else {
        ctx->out.tail->next = cl;
    }

    ctx->out.tail = cl;
}


ngx_int_t
ngx_http_llm_out_flush(ngx_http_llm_ctx_t *ctx, ngx_uint_t last)
{
    ngx_int_t            rc;
    ngx_buf_t           *b;
    ngx_chain_t         *cl;
    ngx_http_request_t  *r;

    r = ctx->request;

    if (last
        || (ctx->out.chain == NULL && ctx->out.busy
            && !(r->connection->buffered & NGX_HTTP_WRITE_BUFFERED)))
    {
        cl = ngx_chain_get_free_buf(r->pool, &ctx->out.free);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        b = cl->buf;

        /*
         * an empty special buffer, so no tag: it goes back to the pool;
         * without last, a flush of what ngx_http_llm_out_pass() left to
         * the write filter, which a NULL chain would not move (nor mark
         * it buffered); once, since a flush sends it or marks it so
         */
        ngx_memzero(b, sizeof(ngx_buf_t));

        if (last) {
            b->last_buf = (r == r->main) ? 1 : 0;
            b->last_in_chain = 1;

        } else {
            b->flush = 1;
        }

        ngx_http_llm_out_append(ctx, cl);

    } else if (ctx->out.chain == NULL) {
        /* nothing new: just push what the filters still hold */
        rc = ngx_http_output_filter(r, NULL);
        ngx_chain_update_chains(r->pool, &ctx->out.free, &ctx->out.busy,
                                &ctx->out.chain,
                                (ngx_buf_tag_t) &ngx_http_llm_module);
        return rc;

    } else {
        ctx->out.tail->buf->flush = 1;
    }

    return ngx_http_llm_out_pass(ctx);
}


/*
 * What is written so far, to the filters without a flush: nginx's write
 * filter holds less than postpone_output until more comes or the response
 * ends, so that a small answer leaves in one writev with its headers and
 * its last chunk, not in two.  Streams flush instead.
 */

ngx_int_t
ngx_http_llm_out_pass(ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    if (ctx->out.chain == NULL) {
        return NGX_OK;
    }

    r = ctx->request;

    rc = ngx_http_output_filter(r, ctx->out.chain);

    ngx_chain_update_chains(r->pool, &ctx->out.free, &ctx->out.busy,
                            &ctx->out.chain,
                            (ngx_buf_tag_t) &ngx_http_llm_module);

    ctx->out.chain = NULL;
    ctx->out.tail = NULL;

    return rc;
}


size_t
ngx_http_llm_out_pending(ngx_http_llm_ctx_t *ctx)
{
    size_t        size;
    ngx_chain_t  *cl;

    size = 0;

    for (cl = ctx->out.busy; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);
    }

    return size;
}


/*
 * The client's socket can take more: what is held goes out.  NGX_OK: all
 * of it went, the producer may go on; NGX_AGAIN: nothing may go yet, or
 * the rest waits for the next write event; NGX_DONE: the request is
 * finalized.
 */

ngx_int_t
ngx_http_llm_out_write(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_event_t               *wev;
    ngx_connection_t          *c;
    ngx_http_llm_ctx_t        *ctx;
    ngx_http_core_loc_conf_t  *clcf;

    c = r->connection;
    wev = c->write;
    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client timed out");
        c->timedout = 1;
        ngx_http_llm_finalize(ctx, NGX_HTTP_REQUEST_TIME_OUT);
        return NGX_DONE;
    }

    if (!ctx->out.headers_sent) {
        return NGX_AGAIN;
    }

    rc = ngx_http_llm_out_flush(ctx, 0);

    if (rc == NGX_ERROR) {
        ngx_http_llm_finalize(ctx, NGX_ERROR);
        return NGX_DONE;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (ngx_http_llm_out_pending(ctx)) {
        if (!wev->delayed) {
            ngx_add_timer(wev, clcf->send_timeout);
        }

        if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
            ngx_http_llm_finalize(ctx, NGX_ERROR);
            return NGX_DONE;
        }

        return NGX_AGAIN;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    return NGX_OK;
}
