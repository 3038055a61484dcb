
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * API keys to tenants.  A key is known only by its SHA-256; lookups go to
 * static keys from the configuration, then to Redis, and land in a small
 * per-worker cache so that a hot key costs no round trip.  The static
 * keys are parsed here: llm_api_key.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_auth.h"
#include "ngx_http_llm_error.h"
#include "ngx_http_llm_keys.h"
#include "ngx_http_llm_price.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_util.h"


#define NGX_HTTP_LLM_AUTH_SLOTS      4096
#define NGX_HTTP_LLM_AUTH_NEG_SLOTS  1024
#define NGX_HTTP_LLM_AUTH_NEG_TTL    1000
#define NGX_HTTP_LLM_KEY_MAX         512

/* slot states */
#define NGX_HTTP_LLM_AUTH_EMPTY      0
#define NGX_HTTP_LLM_AUTH_TENANT     1
#define NGX_HTTP_LLM_AUTH_DENIED     2      /* unknown or revoked key */
#define NGX_HTTP_LLM_AUTH_NO_TENANT  3      /* its tenant is unusable */


typedef struct {
    u_char                      hash[NGX_HTTP_LLM_SHA256_HEX_LEN];
    ngx_msec_t                  expires;
    ngx_uint_t                  state;
    ngx_http_llm_tenant_t      *tenant;     /* one malloc()ed block */
} ngx_http_llm_auth_slot_t;


static ngx_int_t ngx_http_llm_auth_bearer(ngx_http_request_t *r,
    u_char *hex);
static ngx_http_llm_auth_slot_t *ngx_http_llm_auth_bucket(u_char *hex,
    ngx_uint_t negative);
static ngx_http_llm_auth_slot_t *ngx_http_llm_auth_slot(u_char *hex,
    ngx_uint_t negative);
static ngx_int_t ngx_http_llm_auth_offline(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_auth_fetch_tenant(ngx_http_llm_ctx_t *ctx,
    ngx_str_t *id);
static void ngx_http_llm_auth_key_reply(redisReply *reply, void *data);
static void ngx_http_llm_auth_tenant_reply(redisReply *reply, void *data);
static void ngx_http_llm_auth_resume(ngx_http_llm_ctx_t *ctx, ngx_int_t rc);
static void ngx_http_llm_auth_store(u_char *hex, ngx_uint_t state,
    ngx_http_llm_tenant_t *tenant, ngx_msec_t ttl);
static ngx_int_t ngx_http_llm_auth_cached(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_error_t *err);
static void ngx_http_llm_auth_no_tenant(ngx_http_llm_ctx_t *ctx,
    const char *why, ngx_http_llm_error_t *err);
static const char *ngx_http_llm_tenant_parse(ngx_http_llm_tenant_t *t,
    redisReply *reply);
static void ngx_http_llm_auth_deny(ngx_http_llm_error_t *err);
static char *ngx_http_llm_key_policy(ngx_conf_t *cf,
    ngx_http_llm_key_t *key);


/*
 * Valid keys and failed lookups live in separate tables, so that a
 * stream of unknown keys cannot evict the entries of valid ones.
 */
static ngx_http_llm_auth_slot_t  *ngx_http_llm_auth_cache;
static ngx_http_llm_auth_slot_t  *ngx_http_llm_auth_neg;


void
ngx_http_llm_auth_exit(void)
{
    ngx_uint_t  i;

    ngx_http_llm_sha256_exit();

    if (ngx_http_llm_auth_cache == NULL) {
        return;
    }

    for (i = 0; i < NGX_HTTP_LLM_AUTH_SLOTS + NGX_HTTP_LLM_AUTH_NEG_SLOTS; i++)
    {
        if (ngx_http_llm_auth_cache[i].tenant) {
            ngx_free(ngx_http_llm_auth_cache[i].tenant);
        }
    }

    ngx_free(ngx_http_llm_auth_cache);
    ngx_http_llm_auth_cache = NULL;
    ngx_http_llm_auth_neg = NULL;
}


/*
 * NGX_OK: ctx->tenant is set; NGX_AGAIN: a Redis lookup is under way and
 * will resume the request; NGX_ERROR: err says why.
 */

ngx_int_t
ngx_http_llm_auth(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    u_char                    *p;
    size_t                     argvlen[4];
    ngx_str_t                  hash;
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    const char                *argv[4];
    ngx_http_request_t        *r;
    ngx_http_llm_key_t        *key;
    ngx_http_llm_main_conf_t  *lmcf;

    r = ctx->request;
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_module);

    if (ngx_http_llm_auth_bearer(r, ctx->key_hash) != NGX_OK) {
        ngx_http_llm_auth_deny(err);
        return NGX_ERROR;
    }

    rc = ngx_http_llm_auth_cached(ctx, err);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    key = lmcf->keys.elts;

    for (i = 0; i < lmcf->keys.nelts; i++) {
        if (ngx_memcmp(key[i].hash, ctx->key_hash,
                       NGX_HTTP_LLM_SHA256_HEX_LEN)
            != 0)
        {
            continue;
        }

        /* a policy from the configuration needs no Redis at all */

        if (key[i].policy) {
            ctx->tenant_id = key[i].tenant;
            ctx->tenant = ngx_http_llm_tenant_dup(key[i].policy, r->pool);
            return ctx->tenant ? NGX_OK : NGX_ERROR;
        }

        return ngx_http_llm_auth_fetch_tenant(ctx, &key[i].tenant)
               == NGX_OK ? NGX_AGAIN
                         : ngx_http_llm_auth_offline(ctx, err);
    }

    /* without Redis the static keys are all the keys there are */

    if (lmcf->redis == NULL) {
        ngx_http_llm_auth_deny(err);
        return NGX_ERROR;
    }

    hash.data = ctx->key_hash;
    hash.len = NGX_HTTP_LLM_SHA256_HEX_LEN;

    p = ngx_pnalloc(r->pool, NGX_HTTP_LLM_KEY_API_KEY_LEN + hash.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_arg_lit(argv, argvlen, 0, "HMGET");
    argv[1] = (char *) p;
    argvlen[1] = ngx_sprintf(p, NGX_HTTP_LLM_KEY_API_KEY, &hash) - p;
    ngx_http_llm_arg_lit(argv, argvlen, 2, "tenant");
    ngx_http_llm_arg_lit(argv, argvlen, 3, "revoked");

    ctx->redis = ngx_http_llm_redis_command(NGX_HTTP_LLM_REDIS_MAIN, 4, argv,
                                            argvlen,
                                            ngx_http_llm_auth_key_reply, ctx);
    if (ctx->redis == NULL) {
        return ngx_http_llm_auth_offline(ctx, err);
    }

    return NGX_AGAIN;
}


/* NGX_DECLINED: this worker knows nothing fresh about the key */

static ngx_int_t
ngx_http_llm_auth_cached(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    ngx_http_llm_auth_slot_t  *slot;

    slot = ngx_http_llm_auth_slot(ctx->key_hash, 0);

    if (slot != NULL
        && (ngx_msec_int_t) (slot->expires - ngx_current_msec) > 0)
    {
        ctx->tenant = ngx_http_llm_tenant_dup(slot->tenant,
                                              ctx->request->pool);
        if (ctx->tenant == NULL) {
            return NGX_ERROR;
        }

        ctx->tenant_id = ctx->tenant->id;
        return NGX_OK;
    }

    slot = ngx_http_llm_auth_slot(ctx->key_hash, 1);

    if (slot == NULL
        || (ngx_msec_int_t) (slot->expires - ngx_current_msec) <= 0)
    {
        return NGX_DECLINED;
    }

    if (slot->state == NGX_HTTP_LLM_AUTH_NO_TENANT) {
        ngx_http_llm_auth_no_tenant(ctx, NULL, err);

    } else {
        ngx_http_llm_auth_deny(err);
    }

    return NGX_ERROR;
}


/*
 * Redis cannot be asked: fail-open serves keys this worker has seen, even
 * from a stale entry; fail-closed serves nobody.
 */

static ngx_int_t
ngx_http_llm_auth_offline(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    ngx_http_llm_auth_slot_t  *slot;

    ctx->redis_down = 1;

    slot = ngx_http_llm_auth_slot(ctx->key_hash, 0);

    if (ctx->conf->fail_open && slot != NULL) {
        ctx->tenant = ngx_http_llm_tenant_dup(slot->tenant,
                                              ctx->request->pool);
        return ctx->tenant ? NGX_OK : NGX_ERROR;
    }

    ngx_http_llm_set_error(err, NGX_HTTP_SERVICE_UNAVAILABLE, "server_error",
                           "service_unavailable", NULL,
                           "The gateway cannot check API keys right now, "
                           "try again later.");

    return NGX_ERROR;
}


static void
ngx_http_llm_auth_key_reply(redisReply *reply, void *data)
{
    ngx_http_llm_ctx_t *ctx = data;

    ngx_int_t  rc;
    ngx_str_t  id;

    ctx->redis = NULL;

    if (reply == NULL
        || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2)
    {
        rc = ngx_http_llm_auth_offline(ctx, &ctx->error);
        ngx_http_llm_auth_resume(ctx, rc);
        return;
    }

    if (reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[0]->len == 0
        || (reply->element[1]->type == REDIS_REPLY_STRING
            && reply->element[1]->len
            && !(reply->element[1]->len == 1
                 && reply->element[1]->str[0] == '0')))
    {
        /* unknown or revoked; a short negative entry spares Redis */
        ngx_http_llm_auth_store(ctx->key_hash, NGX_HTTP_LLM_AUTH_DENIED, NULL,
                                NGX_HTTP_LLM_AUTH_NEG_TTL);
        ngx_http_llm_auth_deny(&ctx->error);
        ngx_http_llm_auth_resume(ctx, NGX_ERROR);
        return;
    }

    id.len = reply->element[0]->len;
    id.data = ngx_pnalloc(ctx->request->pool, id.len);
    if (id.data == NULL) {
        ctx->error.type = NULL;
        ngx_http_llm_auth_resume(ctx, NGX_ERROR);
        return;
    }

    ngx_memcpy(id.data, reply->element[0]->str, id.len);

    if (!ngx_http_llm_tenant_id_valid(&id)) {
        ctx->tenant_id = id;
        ngx_http_llm_auth_no_tenant(ctx, "invalid tenant id", &ctx->error);
        ngx_http_llm_auth_resume(ctx, NGX_ERROR);
        return;
    }

    if (ngx_http_llm_auth_fetch_tenant(ctx, &id) != NGX_OK) {
        rc = ngx_http_llm_auth_offline(ctx, &ctx->error);
        ngx_http_llm_auth_resume(ctx, rc);
    }
}


static ngx_int_t
ngx_http_llm_auth_fetch_tenant(ngx_http_llm_ctx_t *ctx, ngx_str_t *id)
{
    u_char       *p;
    size_t        argvlen[2];
    const char   *argv[2];

    p = ngx_pnalloc(ctx->request->pool, NGX_HTTP_LLM_KEY_TENANT_LEN + id->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->tenant_id = *id;

    ngx_http_llm_arg_lit(argv, argvlen, 0, "HGETALL");
    argv[1] = (char *) p;
    argvlen[1] = ngx_sprintf(p, NGX_HTTP_LLM_KEY_TENANT, id) - p;

    ctx->redis = ngx_http_llm_redis_command(NGX_HTTP_LLM_REDIS_MAIN, 2, argv,
                                            argvlen,
                                            ngx_http_llm_auth_tenant_reply,
                                            ctx);

    return ctx->redis ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_llm_auth_tenant_reply(redisReply *reply, void *data)
{
    ngx_http_llm_ctx_t *ctx = data;

    ngx_int_t                  rc;
    const char                *why;
    ngx_http_llm_tenant_t      t;
    ngx_http_llm_main_conf_t  *lmcf;

    ctx->redis = NULL;

    if (reply
        && reply->type == REDIS_REPLY_ERROR
        && ngx_strncmp(reply->str, "WRONGTYPE", sizeof("WRONGTYPE") - 1) == 0)
    {
        ngx_http_llm_auth_no_tenant(ctx, "not a hash", &ctx->error);
        ngx_http_llm_auth_resume(ctx, NGX_ERROR);
        return;
    }

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        rc = ngx_http_llm_auth_offline(ctx, &ctx->error);
        ngx_http_llm_auth_resume(ctx, rc);
        return;
    }

    ngx_memzero(&t, sizeof(ngx_http_llm_tenant_t));
    t.id = ctx->tenant_id;

    why = ngx_http_llm_tenant_parse(&t, reply);

    if (why != NULL) {
        ngx_http_llm_auth_no_tenant(ctx, why, &ctx->error);
        ngx_http_llm_auth_resume(ctx, NGX_ERROR);
        return;
    }

    ctx->tenant = ngx_http_llm_tenant_dup(&t, ctx->request->pool);
    if (ctx->tenant == NULL) {
        ctx->error.type = NULL;
        ngx_http_llm_auth_resume(ctx, NGX_ERROR);
        return;
    }

    lmcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_llm_module);

    ngx_http_llm_auth_store(ctx->key_hash, NGX_HTTP_LLM_AUTH_TENANT,
                            ctx->tenant, lmcf->auth_cache_ttl);

    ngx_http_llm_auth_resume(ctx, NGX_OK);
}


/*
 * A reply's end: the request goes on, or, past NGX_OK, ends with what
 * ctx->error says; ngx_http_llm_run() does either
 */

static void
ngx_http_llm_auth_resume(ngx_http_llm_ctx_t *ctx, ngx_int_t rc)
{
    if (rc != NGX_OK) {
        ctx->phase = NGX_HTTP_LLM_PHASE_FAIL;
    }

    ngx_http_llm_run(ctx);
}


/*
 * A key whose tenant is missing or unreadable fails closed: treating it
 * as a tenant without limits would serve it unmetered.  The entry is
 * short-lived, so that a repaired tenant works again at once.
 */

static void
ngx_http_llm_auth_no_tenant(ngx_http_llm_ctx_t *ctx, const char *why,
    ngx_http_llm_error_t *err)
{
    if (why) {
        ngx_log_error(NGX_LOG_WARN, ctx->request->connection->log, 0,
                      "llm tenant \"%V\" refused: %s", &ctx->tenant_id, why);

        ngx_http_llm_auth_store(ctx->key_hash, NGX_HTTP_LLM_AUTH_NO_TENANT,
                                NULL, NGX_HTTP_LLM_AUTH_NEG_TTL);
    }

    ngx_http_llm_set_error(err, NGX_HTTP_FORBIDDEN, "invalid_request_error",
                           "tenant_not_found", NULL,
                           "The tenant of this API key does not exist or "
                           "its policy cannot be read.");
}


/* "Authorization: Bearer <key>" to the key's SHA-256 in hex */

static ngx_int_t
ngx_http_llm_auth_bearer(ngx_http_request_t *r, u_char *hex)
{
    u_char           *p, *q, *last;
    ngx_table_elt_t  *h;

    h = r->headers_in.authorization;

    if (h == NULL
        || h->value.len <= sizeof("Bearer ") - 1
        || ngx_strncasecmp(h->value.data, (u_char *) "Bearer ",
                           sizeof("Bearer ") - 1) != 0)
    {
        return NGX_DECLINED;
    }

    p = h->value.data + sizeof("Bearer ") - 1;
    last = h->value.data + h->value.len;

    while (p < last && *p == ' ') {
        p++;
    }

    if (p == last || last - p > NGX_HTTP_LLM_KEY_MAX) {
        return NGX_DECLINED;
    }

    /* a key is printable ASCII without blanks: nothing else is hashed */

    for (q = p; q < last; q++) {
        if (*q <= ' ' || *q >= 0x7f) {
            return NGX_DECLINED;
        }
    }

    ngx_http_llm_sha256_hex(p, last - p, hex);

    return NGX_OK;
}


/* the one slot a key may have in a table */

static ngx_http_llm_auth_slot_t *
ngx_http_llm_auth_bucket(u_char *hex, ngx_uint_t negative)
{
    ngx_uint_t  n;

    n = ngx_hextoi(hex, 8);

    return negative ? &ngx_http_llm_auth_neg[n % NGX_HTTP_LLM_AUTH_NEG_SLOTS]
                    : &ngx_http_llm_auth_cache[n % NGX_HTTP_LLM_AUTH_SLOTS];
}


static ngx_http_llm_auth_slot_t *
ngx_http_llm_auth_slot(u_char *hex, ngx_uint_t negative)
{
    ngx_http_llm_auth_slot_t  *slot;

    if (ngx_http_llm_auth_cache == NULL) {
        return NULL;
    }

    slot = ngx_http_llm_auth_bucket(hex, negative);

    if (slot->state == NGX_HTTP_LLM_AUTH_EMPTY
        || ngx_memcmp(slot->hash, hex, NGX_HTTP_LLM_SHA256_HEX_LEN) != 0)
    {
        return NULL;
    }

    return slot;
}


/*
 * One slot per hash prefix in each table: a collision replaces an entry
 * of the same kind only.  A fresh answer about a key drops what the other
 * table says about it, so that a revoked key is not served stale.
 */

static void
ngx_http_llm_auth_store(u_char *hex, ngx_uint_t state,
    ngx_http_llm_tenant_t *tenant, ngx_msec_t ttl)
{
    ngx_http_llm_tenant_t     *copy;
    ngx_http_llm_auth_slot_t  *slot, *other;

    if (ngx_http_llm_auth_cache == NULL) {
        ngx_http_llm_auth_cache = ngx_calloc((NGX_HTTP_LLM_AUTH_SLOTS
                                              + NGX_HTTP_LLM_AUTH_NEG_SLOTS)
                                             * sizeof(ngx_http_llm_auth_slot_t),
                                             ngx_cycle->log);
        if (ngx_http_llm_auth_cache == NULL) {
            return;
        }

        ngx_http_llm_auth_neg = ngx_http_llm_auth_cache
                                + NGX_HTTP_LLM_AUTH_SLOTS;
    }

    copy = NULL;

    if (tenant) {
        copy = ngx_http_llm_tenant_dup(tenant, NULL);
        if (copy == NULL) {
            return;
        }
    }

    other = ngx_http_llm_auth_slot(hex, state == NGX_HTTP_LLM_AUTH_TENANT);

    if (other) {
        if (other->tenant) {
            ngx_free(other->tenant);
            other->tenant = NULL;
        }

        other->state = NGX_HTTP_LLM_AUTH_EMPTY;
    }

    slot = ngx_http_llm_auth_bucket(hex, state != NGX_HTTP_LLM_AUTH_TENANT);

    if (slot->tenant) {
        ngx_free(slot->tenant);
    }

    ngx_memcpy(slot->hash, hex, NGX_HTTP_LLM_SHA256_HEX_LEN);
    slot->state = state;
    slot->tenant = copy;
    slot->expires = ngx_current_msec + ttl;
}


/*
 * HGETALL llm:tenant:<id> → policy; an absent field means "no limit".
 * NULL, or why the hash is no tenant: llm-admin writes "created" into
 * every tenant, so an empty or partial hash (deleted, evicted, a typo)
 * and a value llm-admin would not write are refused, never unlimited.
 */

static const char *
ngx_http_llm_tenant_parse(ngx_http_llm_tenant_t *t, redisReply *reply)
{
    size_t       i;
    ngx_str_t    f, v;
    ngx_int_t   *n;
    ngx_uint_t   created;
    redisReply  *e;

    created = 0;

    for (i = 0; i + 1 < reply->elements; i += 2) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_STRING
            || reply->element[i + 1]->type != REDIS_REPLY_STRING)
        {
            return "not a hash of strings";
        }

        f.data = (u_char *) e->str;
        f.len = e->len;
        v.data = (u_char *) reply->element[i + 1]->str;
        v.len = reply->element[i + 1]->len;

        n = NULL;

#define ngx_http_llm_field(name)  ngx_http_llm_is_lit(f.data, f.len, name)

        if (ngx_http_llm_field("created")) {
            created = 1;

        } else if (ngx_http_llm_field("rpm")) {
            n = &t->rpm;

        } else if (ngx_http_llm_field("tpm")) {
            n = &t->tpm;

        } else if (ngx_http_llm_field("max_tokens")) {
            n = &t->max_tokens;

        } else if (ngx_http_llm_field("max_n")) {
            n = &t->max_n;

        } else if (ngx_http_llm_field("budget_day_usd")) {
            t->budget_day = ngx_http_llm_parse_usd(&v);
            if (t->budget_day < 0) {
                return "budget_day_usd is not an amount in dollars";
            }

        } else if (ngx_http_llm_field("budget_month_usd")) {
            t->budget_month = ngx_http_llm_parse_usd(&v);
            if (t->budget_month < 0) {
                return "budget_month_usd is not an amount in dollars";
            }

        } else if (ngx_http_llm_field("models")) {
            if (v.len == 0) {
                return "models is empty";    /* "all", to the gateway */
            }

            t->models = v;

        } else if (ngx_http_llm_field("default_model")) {
            t->default_model = v;

        } else if (ngx_http_llm_field("force_model")) {
            t->force_model = v;

        } else if (ngx_http_llm_field("cache")) {
            t->cache = ngx_http_llm_is_lit(v.data, v.len, "off")
                       ? NGX_HTTP_LLM_CACHE_OFF
                       : ngx_http_llm_is_lit(v.data, v.len, "any")
                       ? NGX_HTTP_LLM_CACHE_ANY
                       : ngx_http_llm_is_lit(v.data, v.len, "deterministic")
                       ? NGX_HTTP_LLM_CACHE_DETERMINISTIC : 0;

            if (t->cache == 0) {
                return "cache is not off, deterministic or any";
            }
        }

#undef ngx_http_llm_field

        /* ngx_atoi() refuses signs, blanks and overflow */

        if (n && (*n = ngx_atoi(v.data, v.len)) == NGX_ERROR) {
            return "a limit is not a whole number";
        }
    }

    if (!created) {
        return reply->elements ? "no \"created\" field" : "no such tenant";
    }

    return NULL;
}


/* a tenant id as llm-admin allows it; "-" and "*" name cache scopes */

ngx_int_t
ngx_http_llm_tenant_id_valid(ngx_str_t *id)
{
    size_t  i;

    if (id->len == 0 || id->len > 64
        || (id->len == 1 && (id->data[0] == '-' || id->data[0] == '*')))
    {
        return 0;
    }

    for (i = 0; i < id->len; i++) {
        if (!((id->data[i] >= 'a' && id->data[i] <= 'z')
              || (id->data[i] >= 'A' && id->data[i] <= 'Z')
              || (id->data[i] >= '0' && id->data[i] <= '9')
              || id->data[i] == '_' || id->data[i] == '.'
              || id->data[i] == '-'))
        {
            return 0;
        }
    }

    return 1;
}


/* one block, strings after the struct: from the pool, or malloc() */

ngx_http_llm_tenant_t *
ngx_http_llm_tenant_dup(ngx_http_llm_tenant_t *t, ngx_pool_t *pool)
{
    u_char                 *p;
    size_t                  size;
    ngx_http_llm_tenant_t  *n;

    size = sizeof(ngx_http_llm_tenant_t) + t->id.len + t->models.len
           + t->default_model.len + t->force_model.len + 4;

    n = pool ? ngx_palloc(pool, size) : ngx_alloc(size, ngx_cycle->log);
    if (n == NULL) {
        return NULL;
    }

    *n = *t;

    p = (u_char *) (n + 1);

    n->id.data = p;
    p = ngx_http_llm_copy(p, &t->id);

    n->models.data = p;
    p = ngx_http_llm_copy(p, &t->models);

    n->default_model.data = p;
    p = ngx_http_llm_copy(p, &t->default_model);

    n->force_model.data = p;
    (void) ngx_http_llm_copy(p, &t->force_model);

    return n;
}


static void
ngx_http_llm_auth_deny(ngx_http_llm_error_t *err)
{
    ngx_http_llm_set_error(err, NGX_HTTP_UNAUTHORIZED, "invalid_request_error",
                           "invalid_api_key", NULL,
                           "Incorrect API key provided.");
}


/* configuration: llm_api_key, and the keys checked at the end of http{} */


/* llm_api_key <sha256 hex of the key> <tenant> [limits | unlimited] */

char *
ngx_http_llm_api_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ngx_str_t           *value;
    ngx_uint_t           i;
    ngx_http_llm_key_t  *key;

    value = cf->args->elts;

    if (value[1].len != NGX_HTTP_LLM_SHA256_HEX_LEN) {
        goto invalid;
    }

    for (i = 0; i < NGX_HTTP_LLM_SHA256_HEX_LEN; i++) {
        if (!((value[1].data[i] >= '0' && value[1].data[i] <= '9')
              || (value[1].data[i] >= 'a' && value[1].data[i] <= 'f')))
        {
            goto invalid;
        }
    }

    if (!ngx_http_llm_tenant_id_valid(&value[2])) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid tenant \"%V\" in \"llm_api_key\": 1 to "
                           "64 of A-Z a-z 0-9 _ . -, and not \"-\"",
                           &value[2]);
        return NGX_CONF_ERROR;
    }

    key = ngx_array_push(&lmcf->keys);
    if (key == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(key->hash, value[1].data, NGX_HTTP_LLM_SHA256_HEX_LEN);
    key->tenant = value[2];
    key->policy = NULL;

    if (cf->args->nelts == 3) {
        return NGX_CONF_OK;
    }

    return ngx_http_llm_key_policy(cf, key);

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"llm_api_key\" takes the SHA-256 of the key in "
                       "lowercase hex, not \"%V\"", &value[1]);
    return NGX_CONF_ERROR;
}


/*
 * The tenant's policy given with the key, instead of Redis' llm:tenant:
 * the same fields, and zero or absent for "no limit".
 */

static char *
ngx_http_llm_key_policy(ngx_conf_t *cf, ngx_http_llm_key_t *key)
{
    u_char                 *p;
    size_t                  len;
    int64_t                *usd;
    ngx_str_t              *value, v, *list;
    ngx_int_t              *n;
    ngx_uint_t              i, j, unlimited;
    ngx_http_llm_tenant_t   t;

    value = cf->args->elts;

    ngx_memzero(&t, sizeof(ngx_http_llm_tenant_t));
    t.id = key->tenant;

    unlimited = 0;

    for (i = 3; i < cf->args->nelts; i++) {

        n = NULL;
        usd = NULL;
        list = NULL;

        p = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');

        if (p == NULL) {
            if (value[i].len == 9
                && ngx_strncmp(value[i].data, "unlimited", 9) == 0)
            {
                unlimited = 1;
                continue;
            }

            goto invalid;
        }

        len = p - value[i].data;
        v.data = p + 1;
        v.len = value[i].len - len - 1;

        for (j = 3; j < i; j++) {
            if (value[j].len > len && value[j].data[len] == '='
                && ngx_strncmp(value[j].data, value[i].data, len) == 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"llm_api_key\" parameter \"%*s\" is "
                                   "duplicate", len, value[i].data);
                return NGX_CONF_ERROR;
            }
        }

#define ngx_http_llm_param(name)                                              \
        (len == sizeof(name) - 1 && ngx_strncmp(value[i].data, name, len) == 0)

        if (ngx_http_llm_param("rpm")) {
            n = &t.rpm;

        } else if (ngx_http_llm_param("tpm")) {
            n = &t.tpm;

        } else if (ngx_http_llm_param("max_tokens")) {
            n = &t.max_tokens;

        } else if (ngx_http_llm_param("max_n")) {
            n = &t.max_n;

        } else if (ngx_http_llm_param("budget_day")) {
            usd = &t.budget_day;

        } else if (ngx_http_llm_param("budget_month")) {
            usd = &t.budget_month;

        } else if (ngx_http_llm_param("models")) {
            list = &t.models;

        } else if (ngx_http_llm_param("default_model")) {
            list = &t.default_model;

        } else {
            goto invalid;
        }

#undef ngx_http_llm_param

        if (n && (*n = ngx_atoi(v.data, v.len)) == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"llm_api_key\" limit \"%V\": a "
                               "whole number expected", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (usd && (*usd = ngx_http_llm_parse_usd(&v)) < 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"llm_api_key\" budget \"%V\": "
                               "dollars like 12.50 expected", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (list) {
            if (v.len == 0
                || (list == &t.default_model
                    && ngx_strlchr(v.data, v.data + v.len, ',')))
            {
                goto invalid;
            }

            *list = v;
        }
    }

    if (unlimited && cf->args->nelts > 4) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_api_key\" takes limits or \"unlimited\", "
                           "not both");
        return NGX_CONF_ERROR;
    }

    key->policy = ngx_http_llm_tenant_dup(&t, cf->pool);

    return key->policy ? NGX_CONF_OK : NGX_CONF_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid \"llm_api_key\" parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


/*
 * Without Redis a key's tenant must be whole in the configuration, and
 * only the limits that need no counters can hold: otherwise every request
 * of the key would fail, or run unmetered.
 */

char *
ngx_http_llm_check_keys(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf)
{
    ngx_uint_t              i;
    ngx_http_llm_key_t     *key;
    ngx_http_llm_tenant_t  *t;

    if (lmcf->redis) {
        return NGX_CONF_OK;
    }

    key = lmcf->keys.elts;

    for (i = 0; i < lmcf->keys.nelts; i++) {
        t = key[i].policy;

        if (t == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"llm_api_key\" of tenant \"%V\" has no "
                               "limits, and without \"llm_redis\" none can "
                               "be read: give them in the directive, or "
                               "\"unlimited\"", &key[i].tenant);
            return NGX_CONF_ERROR;
        }

        if (t->rpm || t->tpm || t->budget_day || t->budget_month) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"llm_api_key\" of tenant \"%V\": rpm, tpm "
                               "and budgets are counted in Redis and need "
                               "\"llm_redis\"", &key[i].tenant);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}
