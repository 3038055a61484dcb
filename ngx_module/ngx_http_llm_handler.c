
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The content handler and the request's phases: dispatch, body, then
 * ngx_http_llm_run(), which steps through auth, parse, policy, admission,
 * cache and proxy (or the replay of a hit).  An asynchronous service
 * resumes here, through ngx_http_llm_run(), with the outcome in the ctx;
 * a failed phase is answered here, once.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_auth.h"
#include "ngx_http_llm_cache.h"
#include "ngx_http_llm_error.h"
#include "ngx_http_llm_handler.h"
#include "ngx_http_llm_output.h"
#include "ngx_http_llm_policy.h"
#include "ngx_http_llm_proxy.h"
#include "ngx_http_llm_quota.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_request.h"
#include "ngx_http_llm_router.h"


static ngx_int_t ngx_http_llm_models(ngx_http_request_t *r,
    ngx_http_llm_tenant_t *t);
static ngx_int_t ngx_http_llm_model_listed(ngx_http_llm_tenant_t *t,
    ngx_str_t *name);
static cJSON *ngx_http_llm_model_entry(cJSON *data, ngx_str_t *name,
    ngx_uint_t context_window);
static void ngx_http_llm_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_read_body(ngx_http_request_t *r,
    ngx_str_t *body);
static ngx_int_t ngx_http_llm_check_content_type(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_tail(ngx_http_request_t *r, const char *tail);
static void ngx_http_llm_cleanup(void *data);
static ngx_int_t ngx_http_llm_reject(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *fmt);
static ngx_int_t ngx_http_llm_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);


static ngx_http_request_body_filter_pt  ngx_http_next_request_body_filter;


ngx_int_t
ngx_http_llm_handler(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_uint_t                models;
    ngx_pool_cleanup_t       *cln;
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);

    models = ngx_http_llm_tail(r, "/models");

    if (models) {
        if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
            return ngx_http_llm_reject(r, NGX_HTTP_NOT_ALLOWED,
                                       "method_not_allowed",
                                       "Only GET is allowed on this path.");
        }

        if (!llcf->auth) {
            if (ngx_http_discard_request_body(r) != NGX_OK) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            return ngx_http_llm_models(r, NULL);
        }

        /* the list depends on the key: it goes through auth as a chat */

    } else if (!ngx_http_llm_tail(r, "/chat/completions")) {
        return ngx_http_llm_reject(r, NGX_HTTP_NOT_FOUND, "not_found",
                                   "Unknown request URL. Supported: "
                                   "POST /v1/chat/completions, "
                                   "GET /v1/models.");
    }

    if (!models && r->method != NGX_HTTP_POST) {
        return ngx_http_llm_reject(r, NGX_HTTP_NOT_ALLOWED,
                                   "method_not_allowed",
                                   "Only POST is allowed on this path.");
    }

    if (!models && ngx_http_llm_check_content_type(r) != NGX_OK) {
        return ngx_http_llm_reject(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                   "unsupported_media_type",
                                   "Content-Type must be application/json.");
    }

    if (r->headers_in.content_length_n > (off_t) llcf->max_request_body) {
        return ngx_http_llm_reject(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                   "request_too_large",
                                   "The request body is too large.");
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->conf = llcf;
    ctx->start = ngx_current_msec;
    ctx->prompt_tokens = -1;
    ctx->completion_tokens = -1;
    ctx->list_models = models;

    /* the cleanup frees curl, cJSON and malloc()ed state on every path */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_llm_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_llm_module);

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_http_llm_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * Steps through the phases until one has to wait; an asynchronous step's
 * callback calls here again to go on.
 */

void
ngx_http_llm_run(ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t              rc;
    ngx_connection_t      *c;
    ngx_http_request_t    *r;

    r = ctx->request;
    c = r->connection;

    for ( ;; ) {

        switch (ctx->phase) {

        case NGX_HTTP_LLM_PHASE_AUTH:

            if (ctx->conf->auth && ctx->tenant == NULL) {
                rc = ngx_http_llm_auth(ctx, &ctx->error);

                if (rc == NGX_AGAIN) {
                    return;
                }

                if (rc != NGX_OK) {
                    ctx->phase = NGX_HTTP_LLM_PHASE_FAIL;
                    break;
                }
            }

            if (ctx->list_models) {
                ctx->phase = NGX_HTTP_LLM_PHASE_DONE;
                ngx_http_finalize_request(r,
                                          ngx_http_llm_models(r, ctx->tenant));
                ngx_http_run_posted_requests(c);
                return;
            }

            if (ngx_http_llm_parse_request(ctx, ctx->body_in.data,
                                           ctx->body_in.len, &ctx->error)
                != NGX_OK)
            {
                ctx->phase = NGX_HTTP_LLM_PHASE_FAIL;
                break;
            }

            ctx->phase = NGX_HTTP_LLM_PHASE_POLICY;
            break;

        case NGX_HTTP_LLM_PHASE_POLICY:

            if (ngx_http_llm_apply_policy(ctx, &ctx->error) != NGX_OK) {
                ctx->phase = NGX_HTTP_LLM_PHASE_FAIL;
                break;
            }

            ctx->phase = NGX_HTTP_LLM_PHASE_ADMIT;
            break;

        case NGX_HTTP_LLM_PHASE_ADMIT:

            if (ctx->conf->quota
                && ctx->tenant
                && !ctx->quota.admitted
                && !ctx->quota.unenforced)
            {
                rc = ngx_http_llm_quota_admit(ctx, &ctx->error);

                if (rc == NGX_AGAIN) {
                    return;
                }

                if (rc != NGX_OK) {
                    ctx->phase = NGX_HTTP_LLM_PHASE_FAIL;
                    break;
                }
            }

            ctx->phase = NGX_HTTP_LLM_PHASE_CACHE;
            break;

        case NGX_HTTP_LLM_PHASE_CACHE:

            rc = ngx_http_llm_cache_lookup(ctx);

            if (rc == NGX_AGAIN) {
                return;
            }

            if (rc != NGX_OK) {
                ctx->phase = NGX_HTTP_LLM_PHASE_DONE;
                ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
                ngx_http_run_posted_requests(c);
                return;
            }

            if (ctx->phase == NGX_HTTP_LLM_PHASE_CACHE) {
                ctx->phase = NGX_HTTP_LLM_PHASE_PROXY;
            }

            break;

        case NGX_HTTP_LLM_PHASE_REPLAY:

            /*
             * a hit: its entry is valid while the lookup's caller runs;
             * serving it may finalize the request and free the ctx, so it
             * is the last thing done here
             */

            ctx->phase = NGX_HTTP_LLM_PHASE_DONE;
            ngx_http_llm_cache_serve(ctx, &ctx->cache.hit);
            return;

        case NGX_HTTP_LLM_PHASE_PROXY:

            ctx->phase = NGX_HTTP_LLM_PHASE_DONE;

            rc = ngx_http_llm_proxy_start(ctx);

            if (rc != NGX_OK) {
                ngx_http_finalize_request(r, rc);
            }

            ngx_http_run_posted_requests(c);
            return;

        case NGX_HTTP_LLM_PHASE_FAIL:

            /* a phase or a service's reply failed: ctx->error says how */

            if (ctx->error.type == NULL) {
                /* no memory for an error of ours: nginx's own 500 */
                ctx->phase = NGX_HTTP_LLM_PHASE_DONE;
                ngx_http_llm_finalize(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
                ngx_http_run_posted_requests(c);
                return;
            }

            ngx_http_llm_fail(ctx, &ctx->error);
            return;

        default:
            return;
        }
    }
}


void
ngx_http_llm_body_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_request_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_llm_body_filter;
}


/*
 * Bodies without a Content-Length are counted as they arrive: past
 * llm_max_request_body reading stops, and nginx answers 413 (in JSON,
 * by the error filter) and closes the connection after a lingering
 * close.
 */

static ngx_int_t
ngx_http_llm_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t         *cl;
    ngx_http_llm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    if (ctx == NULL || r != r->main) {
        return ngx_http_next_request_body_filter(r, in);
    }

    for (cl = in; cl; cl = cl->next) {
        ctx->body_received += ngx_buf_size(cl->buf);
    }

    if (ctx->body_received <= (off_t) ctx->conf->max_request_body) {
        return ngx_http_next_request_body_filter(r, in);
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "client intended to send a body larger than "
                  "llm_max_request_body");

    r->lingering_close = 1;

    return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
}


static void
ngx_http_llm_body_handler(ngx_http_request_t *r)
{
    ngx_int_t            rc;
    ngx_http_llm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    /*
     * a body the filter found too large never gets here: nginx finalizes
     * the request with the filter's 413 instead of calling this handler
     */

    rc = ngx_http_llm_read_body(r, &ctx->body_in);

    if (rc == NGX_DECLINED) {
        ngx_http_finalize_request(r,
            ngx_http_llm_reject(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                "request_too_large",
                                "The request body is too large."));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* a client that goes away while we wait must cancel what we wait for */

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_llm_proxy_writer;

    ngx_http_llm_run(ctx);
}


/* the body as one contiguous piece, wherever nginx put it */

static ngx_int_t
ngx_http_llm_read_body(ngx_http_request_t *r, ngx_str_t *body)
{
    off_t                     len;
    u_char                   *p;
    ssize_t                   n;
    ngx_buf_t                *b;
    ngx_chain_t              *cl;
    ngx_http_llm_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);

    body->len = 0;
    body->data = (u_char *) "";

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len > (off_t) llcf->max_request_body) {
        return NGX_DECLINED;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        body->data = cl->buf->pos;
        body->len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, (size_t) len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for ( /* void */ ; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, (size_t) (b->file_last
                                                    - b->file_pos),
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                return NGX_ERROR;
            }

            p += n;
            continue;
        }

        /* the last buffer may be an empty marker without memory */

        if (b->last > b->pos) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    body->len = p - body->data;

    return NGX_OK;
}


/* the models a tenant may ask for; without a tenant, all of them */

static ngx_int_t
ngx_http_llm_models(ngx_http_request_t *r, ngx_http_llm_tenant_t *t)
{
    char                      *s;
    cJSON                     *root, *data;
    size_t                     len;
    ngx_buf_t                 *b;
    ngx_str_t                 *alias;
    ngx_uint_t                 i, j, window;
    ngx_http_llm_model_t      *model;
    ngx_http_llm_router_t     *rt;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_module);

    root = cJSON_CreateObject();
    if (root == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cJSON_AddStringToObject(root, "object", "list");
    data = cJSON_AddArrayToObject(root, "data");

    model = lmcf->models.elts;

    for (i = 0; data && i < lmcf->models.nelts; i++) {

        if (ngx_http_llm_model_listed(t, &model[i].name)) {
            if (ngx_http_llm_model_entry(data, &model[i].name,
                                         model[i].context_window)
                == NULL)
            {
                break;
            }

            continue;
        }

        /* a tenant's list may name an alias: that very name is usable */

        alias = model[i].aliases.elts;

        for (j = 0; j < model[i].aliases.nelts; j++) {
            if (ngx_http_llm_model_allowed(&t->models, &alias[j])) {
                (void) ngx_http_llm_model_entry(data, &alias[j],
                                                model[i].context_window);
            }
        }
    }

    /* the router, when it could serve the tenant (as routing decides) */

    rt = lmcf->router;

    if (data && rt
        && (ngx_http_llm_model_listed(t, &rt->cheap->name)
            || ngx_http_llm_model_listed(t, &rt->strong->name)
            || (t->force_model.len
                && ngx_http_llm_find_model(r, &t->force_model))))
    {
        window = ngx_max(rt->cheap->context_window,
                         rt->strong->context_window);
        (void) ngx_http_llm_model_entry(data, &rt->name, window);
    }

    s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);

    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(s);

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        cJSON_free(s);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, s, len);
    *b->last++ = '\n';

    cJSON_free(s);

    return ngx_http_llm_send_buf(r, b, "application/json");
}


static ngx_int_t
ngx_http_llm_model_listed(ngx_http_llm_tenant_t *t, ngx_str_t *name)
{
    return t == NULL || t->models.len == 0
           || ngx_http_llm_model_allowed(&t->models, name);
}


static cJSON *
ngx_http_llm_model_entry(cJSON *data, ngx_str_t *name,
    ngx_uint_t context_window)
{
    cJSON  *m;

    m = cJSON_CreateObject();
    if (m == NULL) {
        return NULL;
    }

    cJSON_AddItemToArray(data, m);
    cJSON_AddItemToObject(m, "id",
                          cJSON_CreateString((char *) name->data));
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double) ngx_time());
    cJSON_AddStringToObject(m, "owned_by", "nginx-llm-gateway");
    cJSON_AddNumberToObject(m, "context_window", (double) context_window);

    return m;
}


static ngx_int_t
ngx_http_llm_check_content_type(ngx_http_request_t *r)
{
    ngx_str_t  *ct;

    if (r->headers_in.content_type == NULL) {
        /* curl -d and many SDKs set it; a bare body is still JSON to us */
        return (r->headers_in.content_length_n > 0
                || r->headers_in.chunked) ? NGX_ERROR : NGX_OK;
    }

    ct = &r->headers_in.content_type->value;

    if (ct->len >= sizeof("application/json") - 1
        && ngx_strncasecmp(ct->data, (u_char *) "application/json",
                           sizeof("application/json") - 1) == 0
        && (ct->len == sizeof("application/json") - 1
            || ct->data[sizeof("application/json") - 1] == ';'
            || ct->data[sizeof("application/json") - 1] == ' '))
    {
        return NGX_OK;
    }

    return NGX_ERROR;
}


static ngx_int_t
ngx_http_llm_tail(ngx_http_request_t *r, const char *tail)
{
    size_t  len;

    len = ngx_strlen(tail);

    return r->uri.len >= len
           && ngx_strncmp(r->uri.data + r->uri.len - len, tail, len) == 0;
}


static ngx_int_t
ngx_http_llm_reject(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *fmt)
{
    ngx_http_llm_error_t  err;

    ngx_http_llm_set_error(&err, status, "invalid_request_error", code, NULL,
                           "%s", fmt);

    if (status == NGX_HTTP_NOT_ALLOWED) {
        /* RFC 9110 wants the allowed methods named */
        (void) ngx_http_llm_add_header(r, "Allow",
                                       ngx_http_llm_tail(r, "/models")
                                       ? "GET, HEAD" : "POST");
    }

    if (status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        r->keepalive = 0;
    }

    return ngx_http_llm_send_error(r, &err);
}


static void
ngx_http_llm_cleanup(void *data)
{
    ngx_http_llm_ctx_t  *ctx = data;

    if (ctx->redis) {
        ngx_http_llm_redis_cancel(ctx->redis);
        ctx->redis = NULL;
    }

    ngx_http_llm_quota_cancel(ctx);

    ngx_http_llm_cache_replay_end(ctx);
    ngx_http_llm_cache_cleanup(ctx);

    ngx_http_llm_proxy_cleanup(ctx);

    /* every ending passes here exactly once: the one place to settle */
    ngx_http_llm_quota_settle(ctx);

    if (ctx->json) {
        cJSON_Delete(ctx->json);
        ctx->json = NULL;
    }
}
