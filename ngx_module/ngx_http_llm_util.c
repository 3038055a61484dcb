
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Utilities of every layer: a buffer grower, SHA-256 in hex, string and
 * header copies, string-keyed nodes in shared memory, and the nginx
 * connections that wrap a library's sockets.  They call nothing of the
 * module above them.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_util.h"

#include <openssl/evp.h>
#include <openssl/sha.h>


/* an upstream header value kept for the client: at most this long */
#define NGX_HTTP_LLM_HEADER_VALUE_MAX  256

/* a buffer's first size, and the least it grows to */
#define NGX_HTTP_LLM_GROW_MIN          256


/*
 * nginx's debug log reads a timer's ev->data as a connection (its fd):
 * timers whose handler finds its state otherwise point here
 */
ngx_connection_t  ngx_http_llm_timer_conn;

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
static EVP_MD       *ngx_http_llm_md;
#else
static const EVP_MD *ngx_http_llm_md;
#endif
static EVP_MD_CTX   *ngx_http_llm_md_ctx;


/*
 * Makes room for need bytes in a malloc()ed buffer holding len, at least
 * doubling it, never beyond max.
 */

ngx_int_t
ngx_http_llm_grow(u_char **buf, size_t *size, size_t len, size_t need,
    size_t max)
{
    u_char  *nb;

    if (need <= *size) {
        return NGX_OK;
    }

    need = ngx_max(need, ngx_max(*size * 2, NGX_HTTP_LLM_GROW_MIN));
    need = ngx_min(need, max);

    nb = ngx_alloc(need, ngx_cycle->log);
    if (nb == NULL) {
        return NGX_ERROR;
    }

    if (*buf) {
        ngx_memcpy(nb, *buf, len);
        ngx_free(*buf);
    }

    *buf = nb;
    *size = need;

    return NGX_OK;
}


/*
 * OpenSSL 3's one-shot SHA256() looks the algorithm up by name on every
 * call, under a lock; with the algorithm fetched once and a reused
 * context a request's two digests cost a fraction of that.
 */

void
ngx_http_llm_sha256_hex(u_char *p, size_t len, u_char *hex)
{
    u_char  md[SHA256_DIGEST_LENGTH];

    if (ngx_http_llm_md_ctx == NULL) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
        ngx_http_llm_md = EVP_MD_fetch(NULL, "SHA256", NULL);
#else
        ngx_http_llm_md = EVP_sha256();
#endif
        ngx_http_llm_md_ctx = EVP_MD_CTX_new();
    }

    if (ngx_http_llm_md == NULL
        || ngx_http_llm_md_ctx == NULL
        || EVP_DigestInit_ex(ngx_http_llm_md_ctx, ngx_http_llm_md, NULL) != 1
        || EVP_DigestUpdate(ngx_http_llm_md_ctx, p, len) != 1
        || EVP_DigestFinal_ex(ngx_http_llm_md_ctx, md, NULL) != 1)
    {
        SHA256(p, len, md);
    }

    ngx_hex_dump(hex, md, SHA256_DIGEST_LENGTH);
}


/* what ngx_http_llm_sha256_hex() keeps goes; the next call fetches again */

void
ngx_http_llm_sha256_exit(void)
{
    if (ngx_http_llm_md_ctx == NULL) {
        return;
    }

    EVP_MD_CTX_free(ngx_http_llm_md_ctx);
    ngx_http_llm_md_ctx = NULL;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    EVP_MD_free(ngx_http_llm_md);
#endif
    ngx_http_llm_md = NULL;
}


/* copies a string that may be empty (and NULL), NUL-terminated */

u_char *
ngx_http_llm_copy(u_char *p, ngx_str_t *s)
{
    if (s->len) {
        p = ngx_cpymem(p, s->data, s->len);
    }

    *p++ = '\0';

    return p;
}


/*
 * The value of header line buf if it is name's, into dst from the pool,
 * NUL-terminated; dst empty: a value with a control byte, or no memory.
 * NULL: another header.
 */

ngx_str_t *
ngx_http_llm_header_value(ngx_pool_t *pool, char *buf, size_t len,
    const char *name, ngx_str_t *dst)
{
    u_char  *p, *q, *last;
    size_t   nlen;

    nlen = ngx_strlen(name);

    if (len <= nlen || buf[nlen] != ':'
        || ngx_strncasecmp((u_char *) buf, (u_char *) name, nlen) != 0)
    {
        return NULL;
    }

    p = (u_char *) buf + nlen + 1;
    last = (u_char *) buf + len;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (last > p && (last[-1] == '\r' || last[-1] == '\n'
                        || last[-1] == ' '))
    {
        last--;
    }

    /* a control byte inside could split the client's header: none */

    for (q = p; q < last; q++) {
        if ((*q < 0x20 && *q != '\t') || *q == 0x7f) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "llm: upstream \"%s\" header with a control "
                          "byte dropped", name);
            dst->len = 0;
            return dst;
        }
    }

    if (last - p > NGX_HTTP_LLM_HEADER_VALUE_MAX) {
        last = p + NGX_HTTP_LLM_HEADER_VALUE_MAX;
    }

    dst->len = last - p;
    dst->data = ngx_pnalloc(pool, dst->len + 1);

    if (dst->data == NULL) {
        dst->len = 0;
        return dst;
    }

    ngx_cpystrn(dst->data, p, dst->len + 1);

    return dst;
}


/*
 * A node of a string-keyed tree in shared memory (an ngx_str_node_t in
 * front, the key's bytes at key_offset), found or made zeroed; the
 * zone's mutex is held.  Metric series and backend health are such nodes.
 */

void *
ngx_http_llm_shm_node(ngx_slab_pool_t *shpool, ngx_rbtree_t *tree,
    u_char *key, size_t len, size_t key_offset)
{
    u_char          *data;
    uint32_t         hash;
    ngx_str_t        k;
    ngx_str_node_t  *sn;

    k.data = key;
    k.len = len;
    hash = ngx_murmur_hash2(key, len);

    sn = ngx_str_rbtree_lookup(tree, &k, hash);
    if (sn) {
        return sn;
    }

    sn = ngx_slab_alloc_locked(shpool, key_offset + len);
    if (sn == NULL) {
        return NULL;
    }

    ngx_memzero(sn, key_offset);
    data = (u_char *) sn + key_offset;
    ngx_memcpy(data, key, len);

    sn->node.key = hash;
    sn->str.data = data;
    sn->str.len = len;

    ngx_rbtree_insert(tree, &sn->node);

    return sn;
}


/*
 * Frees the nginx connection that wraps a socket owned by a library
 * (curl, hiredis): its events go, the fd stays open for its owner.
 */

void
ngx_http_llm_release_connection(ngx_connection_t *c)
{
    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;
}


/* the wall clock in milliseconds, for times the workers share */

ngx_msec_t
ngx_http_llm_wall_msec(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (ngx_msec_t) tp->sec * 1000 + tp->msec;
}
