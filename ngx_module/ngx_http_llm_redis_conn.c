
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * One connection to one Redis node on nginx's own event loop: the name
 * through nginx's resolver, the socket through ngx_event_connect_peer(),
 * TLS through nginx's OpenSSL layer, then AUTH and SELECT ahead of
 * anything else.  hiredis is only the codec: its commands are formatted
 * by the caller, its replies parsed here by a redisReader.  Commands
 * written during one turn of the event loop leave in one write at its
 * end; their replies come back in order and go to whoever waits.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_redis_conn.h"
#include "ngx_http_llm_util.h"

#include <openssl/x509v3.h>


/* a connection that must buffer more than this is not keeping up */
#define NGX_HTTP_LLM_REDIS_OUT_MAX   (64 * 1024 * 1024)

/* a buffer this large is given back once written */
#define NGX_HTTP_LLM_REDIS_OUT_KEEP  (256 * 1024)

#define NGX_HTTP_LLM_REDIS_READ      16384


static void ngx_http_llm_redis_conn_resolved(ngx_resolver_ctx_t *ctx);
static void ngx_http_llm_redis_conn_connect(ngx_http_llm_redis_conn_t *rc);
static void ngx_http_llm_redis_conn_connected(ngx_event_t *wev);
static void ngx_http_llm_redis_conn_handshake(ngx_connection_t *c);
static ngx_int_t ngx_http_llm_redis_conn_verify(
    ngx_http_llm_redis_conn_t *rc, ngx_connection_t *c);
static void ngx_http_llm_redis_conn_ready(ngx_http_llm_redis_conn_t *rc);
static ngx_int_t ngx_http_llm_redis_conn_append(
    ngx_http_llm_redis_conn_t *rc, const char *buf, size_t len);
static void ngx_http_llm_redis_conn_setup(ngx_http_llm_redis_conn_t *rc);
static void ngx_http_llm_redis_conn_setup_reply(
    ngx_http_llm_redis_conn_t *rc, redisReply *reply, void *data);
static void ngx_http_llm_redis_conn_flush(ngx_event_t *ev);
static void ngx_http_llm_redis_conn_write(ngx_event_t *wev);
static void ngx_http_llm_redis_conn_read(ngx_event_t *rev);
static void ngx_http_llm_redis_conn_lost(ngx_http_llm_redis_conn_t *rc,
    const char *why, ngx_uint_t notify);


static u_char  ngx_http_llm_redis_conn_buf[NGX_HTTP_LLM_REDIS_READ];


/*
 * The TLS context of a rediss:// address, made at nginx -t like
 * proxy_ssl's: the trusted CAs, the client certificate if any
 */

ngx_int_t
ngx_http_llm_redis_conn_ssl(ngx_conf_t *cf, ngx_http_llm_redis_conf_t *conf)
{
    ngx_pool_cleanup_t  *cln;

    if (!conf->tls || conf->ssl) {
        return NGX_OK;
    }

    if (conf->verify && conf->ssl_trusted.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_redis\" with TLS and "
                           "\"llm_redis_ssl_verify on\" needs "
                           "\"llm_redis_ssl_trusted_certificate\"");
        return NGX_ERROR;
    }

    conf->ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (conf->ssl == NULL) {
        return NGX_ERROR;
    }

    conf->ssl->log = cf->log;

    if (ngx_ssl_create(conf->ssl, NGX_SSL_TLSv1_2 | NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(conf->ssl);
        return NGX_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = conf->ssl;

    if (conf->ssl_certificate.len
        && ngx_ssl_certificate(cf, conf->ssl, &conf->ssl_certificate,
                               &conf->ssl_certificate_key, NULL)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (conf->ssl_trusted.len
        && ngx_ssl_trusted_certificate(cf, conf->ssl, &conf->ssl_trusted, 4)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Where the connection goes: an address is used as it is, a name is
 * resolved on each open, so that a moved node is followed
 */

void
ngx_http_llm_redis_conn_set_host(ngx_http_llm_redis_conn_t *rc,
    u_char *host, size_t len, in_port_t port)
{
    in_addr_t             in;
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6  *sin6;
#endif

    ngx_memzero(&rc->addr, sizeof(ngx_addr_t));
    ngx_memzero(&rc->sockaddr, sizeof(ngx_sockaddr_t));

    rc->port = port;

    in = ngx_inet_addr(host, len);

    if (in != INADDR_NONE) {
        sin = &rc->sockaddr.sockaddr_in;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = in;
        rc->addr.socklen = sizeof(struct sockaddr_in);
        rc->addr.sockaddr = &rc->sockaddr.sockaddr;

#if (NGX_HAVE_INET6)
    } else if (len < NGX_INET6_ADDRSTRLEN) {
        sin6 = &rc->sockaddr.sockaddr_in6;

        if (ngx_inet6_addr(host, len, sin6->sin6_addr.s6_addr) == NGX_OK) {
            sin6->sin6_family = AF_INET6;
            rc->addr.socklen = sizeof(struct sockaddr_in6);
            rc->addr.sockaddr = &rc->sockaddr.sockaddr;
        }
#endif
    }

    if (rc->addr.sockaddr) {
        ngx_inet_set_port(rc->addr.sockaddr, port);
    }
}


/*
 * Opens the connection.  The owner's handler hears when it is up, or that
 * it went down, which may be from inside this call.
 */

void
ngx_http_llm_redis_conn_open(ngx_http_llm_redis_conn_t *rc)
{
    ngx_resolver_ctx_t  *ctx;

    if (rc->state != NGX_HTTP_LLM_REDIS_CLOSED) {
        return;
    }

    ngx_queue_init(&rc->waiting);
    rc->out_len = 0;
    rc->out_sent = 0;
    rc->close_due = 0;
    rc->close_notify = 0;

    rc->flush.handler = ngx_http_llm_redis_conn_flush;
    rc->flush.data = rc;
    rc->flush.log = rc->log;

    rc->state = NGX_HTTP_LLM_REDIS_CONNECTING;

    rc->reader = redisReaderCreate();
    if (rc->reader == NULL) {
        ngx_http_llm_redis_conn_lost(rc, "out of memory", 1);
        return;
    }

    /* AUTH and SELECT go first, ahead of what is sent while connecting */

    ngx_http_llm_redis_conn_setup(rc);

    if (rc->state == NGX_HTTP_LLM_REDIS_CLOSED) {
        return;
    }

    if (rc->addr.sockaddr) {
        ngx_http_llm_redis_conn_connect(rc);
        return;
    }

    ctx = ngx_resolve_start(rc->resolver, NULL);

    if (ctx == NULL) {
        ngx_http_llm_redis_conn_lost(rc, "cannot resolve", 1);
        return;
    }

    if (ctx == NGX_NO_RESOLVER) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "llm: redis %V: no \"resolver\" is defined to "
                      "resolve \"%V\"", &rc->name, &rc->host);
        ngx_http_llm_redis_conn_lost(rc, "has no resolver", 1);
        return;
    }

    ctx->name = rc->host;
    ctx->handler = ngx_http_llm_redis_conn_resolved;
    ctx->data = rc;
    ctx->timeout = rc->resolver_timeout;

    rc->state = NGX_HTTP_LLM_REDIS_RESOLVING;
    rc->resolving = ctx;

    if (ngx_resolve_name(ctx) != NGX_OK) {
        rc->resolving = NULL;
        ngx_http_llm_redis_conn_lost(rc, "cannot resolve", 1);
    }
}


static void
ngx_http_llm_redis_conn_resolved(ngx_resolver_ctx_t *ctx)
{
    ngx_http_llm_redis_conn_t  *rc = ctx->data;

    socklen_t   len;
    ngx_uint_t  i;

    rc->resolving = NULL;

    if (ctx->state || ctx->naddrs == 0) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "llm: redis %V: \"%V\" could not be resolved "
                      "(%i: %s)", &rc->name, &ctx->name, ctx->state,
                      ngx_resolver_strerror(ctx->state));
        ngx_resolve_name_done(ctx);
        ngx_http_llm_redis_conn_lost(rc, "was not resolved", 1);
        return;
    }

    /* one of the addresses, a different one on each reconnect */
    i = ngx_random() % ctx->naddrs;

    len = ngx_min(ctx->addrs[i].socklen, (socklen_t) sizeof(ngx_sockaddr_t));
    ngx_memcpy(&rc->sockaddr, ctx->addrs[i].sockaddr, len);

    ngx_resolve_name_done(ctx);

    rc->peer.sockaddr = &rc->sockaddr.sockaddr;
    rc->peer.socklen = len;
    ngx_inet_set_port(rc->peer.sockaddr, rc->port);

    rc->state = NGX_HTTP_LLM_REDIS_CONNECTING;
    ngx_http_llm_redis_conn_connect(rc);
}


static void
ngx_http_llm_redis_conn_connect(ngx_http_llm_redis_conn_t *rc)
{
    ngx_int_t          n;
    ngx_connection_t  *c;

    if (rc->addr.sockaddr) {
        rc->peer.sockaddr = rc->addr.sockaddr;
        rc->peer.socklen = rc->addr.socklen;
    }

    rc->peer.name = &rc->name;
    rc->peer.get = ngx_event_get_peer;
    rc->peer.log = rc->log;
    rc->peer.log_error = NGX_ERROR_ERR;
    rc->peer.connection = NULL;

    n = ngx_event_connect_peer(&rc->peer);

    if (n == NGX_ERROR || n == NGX_BUSY || n == NGX_DECLINED) {
        if (rc->peer.connection) {
            ngx_close_connection(rc->peer.connection);
            rc->peer.connection = NULL;
        }

        ngx_http_llm_redis_conn_lost(rc, "connect failed", 1);
        return;
    }

    c = rc->peer.connection;
    c->data = rc;
    c->read->handler = ngx_http_llm_redis_conn_read;
    c->write->handler = ngx_http_llm_redis_conn_connected;

    c->pool = ngx_create_pool(1024, rc->log);
    if (c->pool == NULL) {
        ngx_http_llm_redis_conn_lost(rc, "out of memory", 1);
        return;
    }

    /* the connect, the TLS handshake and the setup, all in one timeout */
    ngx_add_timer(c->write, rc->conf->timeout * 4);

    if (n == NGX_AGAIN) {
        return;
    }

    ngx_http_llm_redis_conn_connected(c->write);
}


static void
ngx_http_llm_redis_conn_connected(ngx_event_t *wev)
{
    int                         err;
    socklen_t                   len;
    ngx_connection_t           *c;
    ngx_http_llm_redis_conn_t  *rc;

    c = wev->data;
    rc = c->data;

    if (wev->timedout) {
        ngx_http_llm_redis_conn_lost(rc, "connect timed out", 1);
        return;
    }

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        ngx_log_error(NGX_LOG_ERR, rc->log, err,
                      "llm: redis %V: connect() failed", &rc->name);
        ngx_http_llm_redis_conn_lost(rc, "connect failed", 1);
        return;
    }

    if (rc->conf->ssl == NULL) {
        c->write->handler = ngx_http_llm_redis_conn_write;
        ngx_http_llm_redis_conn_ready(rc);
        return;
    }

    if (ngx_ssl_create_connection(rc->conf->ssl, c, NGX_SSL_CLIENT)
        != NGX_OK)
    {
        ngx_http_llm_redis_conn_lost(rc, "TLS failed", 1);
        return;
    }

    /* the buffer of a write OpenSSL must retry may grow, and so move */
    SSL_set_mode(c->ssl->connection, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

    /* SNI for names; RFC 6066 has no place for an address */

    if (ngx_inet_addr(rc->host.data, rc->host.len) == INADDR_NONE
#if (NGX_HAVE_INET6)
        && ngx_inet6_addr(rc->host.data, rc->host.len, NULL) != NGX_OK
#endif
        && SSL_set_tlsext_host_name(c->ssl->connection,
                                    (char *) rc->host.data) == 0)
    {
        ngx_ssl_error(NGX_LOG_ERR, rc->log, 0,
                      "llm: redis %V: SSL_set_tlsext_host_name() failed",
                      &rc->name);
        ngx_http_llm_redis_conn_lost(rc, "TLS failed", 1);
        return;
    }

    if (ngx_ssl_handshake(c) == NGX_AGAIN) {
        c->ssl->handler = ngx_http_llm_redis_conn_handshake;
        return;
    }

    ngx_http_llm_redis_conn_handshake(c);
}


static void
ngx_http_llm_redis_conn_handshake(ngx_connection_t *c)
{
    ngx_http_llm_redis_conn_t  *rc = c->data;

    if (!c->ssl->handshaked) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "llm: redis %V: TLS handshake failed", &rc->name);
        ngx_http_llm_redis_conn_lost(rc, "TLS handshake failed", 1);
        return;
    }

    if (rc->conf->verify && ngx_http_llm_redis_conn_verify(rc, c) != NGX_OK)
    {
        ngx_http_llm_redis_conn_lost(rc, "TLS verification failed", 1);
        return;
    }

    c->read->handler = ngx_http_llm_redis_conn_read;
    c->write->handler = ngx_http_llm_redis_conn_write;

    ngx_http_llm_redis_conn_ready(rc);
}


/* the chain against llm_redis_ssl_trusted_certificate, then the name */

static ngx_int_t
ngx_http_llm_redis_conn_verify(ngx_http_llm_redis_conn_t *rc,
    ngx_connection_t *c)
{
    int    ok;
    long   rv;
    X509  *cert;

    rv = SSL_get_verify_result(c->ssl->connection);

    if (rv != X509_V_OK) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "llm: redis %V: SSL certificate verify failed: "
                      "(%l: %s)", &rc->name, rv,
                      X509_verify_cert_error_string(rv));
        return NGX_ERROR;
    }

    cert = SSL_get_peer_certificate(c->ssl->connection);

    if (cert == NULL) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "llm: redis %V: the server sent no SSL certificate",
                      &rc->name);
        return NGX_ERROR;
    }

    /* an address is matched against the IP names, a name against DNS */

    ok = X509_check_ip_asc(cert, (char *) rc->host.data, 0);

    if (ok == -2) {
        ok = X509_check_host(cert, (char *) rc->host.data, rc->host.len, 0,
                             NULL);
    }

    X509_free(cert);

    if (ok != 1) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "llm: redis %V: SSL certificate does not match "
                      "\"%V\"", &rc->name, &rc->host);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_llm_redis_conn_ready(ngx_http_llm_redis_conn_t *rc)
{
    ngx_connection_t  *c;

    c = rc->peer.connection;

    if (rc->setup) {
        rc->state = NGX_HTTP_LLM_REDIS_SETUP;

    } else {
        if (c->write->timer_set) {
            ngx_del_timer(c->write);
        }

        rc->state = NGX_HTTP_LLM_REDIS_UP;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_llm_redis_conn_lost(rc, "failed", 1);
        return;
    }

    if (rc->out_len) {
        ngx_http_llm_redis_conn_write(c->write);

        if (rc->state == NGX_HTTP_LLM_REDIS_CLOSED) {
            return;
        }
    }

    if (rc->state == NGX_HTTP_LLM_REDIS_UP) {
        rc->handler(rc, rc->data);
    }
}


/* AUTH [user] password, SELECT db: queued first on every connection */

static void
ngx_http_llm_redis_conn_setup(ngx_http_llm_redis_conn_t *rc)
{
    int                         n;
    char                       *cmd;
    u_char                      db[NGX_INT_T_LEN];
    size_t                      argvlen[3];
    long long                   len;
    const char                 *argv[3];
    ngx_http_llm_redis_conf_t  *conf;

    conf = rc->conf;
    rc->setup = 0;

    if (conf->password.len) {
        ngx_http_llm_arg_lit(argv, argvlen, 0, "AUTH");
        n = 1;

        if (conf->user.len) {
            argv[n] = (const char *) conf->user.data;
            argvlen[n] = conf->user.len;
            n++;
        }

        argv[n] = (const char *) conf->password.data;
        argvlen[n] = conf->password.len;
        n++;

        len = redisFormatCommandArgv(&cmd, n, argv, argvlen);

        if (len < 0
            || ngx_http_llm_redis_conn_send(rc, cmd, (size_t) len,
                                            ngx_http_llm_redis_conn_setup_reply,
                                            "AUTH")
               == NULL)
        {
            if (len >= 0) {
                redisFreeCommand(cmd);
            }

            ngx_http_llm_redis_conn_lost(rc, "out of memory", 1);
            return;
        }

        /* the password does not linger in freed memory */
        ngx_explicit_memzero(cmd, (size_t) len);
        redisFreeCommand(cmd);
        rc->setup++;
    }

    if (conf->db) {
        ngx_http_llm_arg_lit(argv, argvlen, 0, "SELECT");
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%ui", conf->db) - db;

        len = redisFormatCommandArgv(&cmd, 2, argv, argvlen);

        if (len < 0
            || ngx_http_llm_redis_conn_send(rc, cmd, (size_t) len,
                                            ngx_http_llm_redis_conn_setup_reply,
                                            "SELECT")
               == NULL)
        {
            if (len >= 0) {
                redisFreeCommand(cmd);
            }

            ngx_http_llm_redis_conn_lost(rc, "out of memory", 1);
            return;
        }

        redisFreeCommand(cmd);
        rc->setup++;
    }
}


static void
ngx_http_llm_redis_conn_setup_reply(ngx_http_llm_redis_conn_t *rc,
    redisReply *reply, void *data)
{
    ngx_connection_t  *c;

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "llm: redis %V: %s failed: %s", &rc->name,
                      (char *) data, reply->str);
        ngx_http_llm_redis_conn_lost(rc, "refused the setup", 1);
        return;
    }

    if (--rc->setup) {
        return;
    }

    c = rc->peer.connection;

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    rc->state = NGX_HTTP_LLM_REDIS_UP;
    rc->handler(rc, rc->data);
}


/*
 * Queues a formatted command, copied; handler(data) gets its reply, or
 * NULL if the connection goes first.  NULL: it was not queued.
 */

ngx_http_llm_redis_wait_t *
ngx_http_llm_redis_conn_send(ngx_http_llm_redis_conn_t *rc, const char *cmd,
    size_t len, ngx_http_llm_redis_reply_pt handler, void *data)
{
    ngx_http_llm_redis_wait_t  *w;

    if (rc->state == NGX_HTTP_LLM_REDIS_CLOSED || rc->close_due) {
        return NULL;
    }

    w = ngx_alloc(sizeof(ngx_http_llm_redis_wait_t), rc->log);
    if (w == NULL) {
        return NULL;
    }

    if (ngx_http_llm_redis_conn_append(rc, cmd, len) != NGX_OK) {
        ngx_free(w);
        return NULL;
    }

    w->handler = handler;
    w->data = data;
    ngx_queue_insert_tail(&rc->waiting, &w->queue);

    if (rc->state >= NGX_HTTP_LLM_REDIS_SETUP && !rc->flush.posted) {
        ngx_post_event(&rc->flush, &ngx_posted_events);
    }

    return w;
}


static ngx_int_t
ngx_http_llm_redis_conn_append(ngx_http_llm_redis_conn_t *rc,
    const char *buf, size_t len)
{
    u_char  *p;
    size_t   size;

    if (rc->out_len + len > rc->out_size && rc->out_sent) {
        /* what the socket took makes room first */
        ngx_memmove(rc->out, rc->out + rc->out_sent,
                    rc->out_len - rc->out_sent);
        rc->out_len -= rc->out_sent;
        rc->out_sent = 0;
    }

    if (rc->out_len + len > rc->out_size) {
        if (rc->out_len + len > NGX_HTTP_LLM_REDIS_OUT_MAX) {
            ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                          "llm: redis %V: more than %uz bytes wait to be "
                          "sent", &rc->name,
                          (size_t) NGX_HTTP_LLM_REDIS_OUT_MAX);
            return NGX_ERROR;
        }

        size = ngx_max(rc->out_size * 2, 4096);

        while (size < rc->out_len + len) {
            size *= 2;
        }

        p = ngx_alloc(size, rc->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (rc->out) {
            ngx_memcpy(p, rc->out, rc->out_len);
            ngx_free(rc->out);
        }

        rc->out = p;
        rc->out_size = size;
    }

    ngx_memcpy(rc->out + rc->out_len, buf, len);
    rc->out_len += len;

    return NGX_OK;
}


static void
ngx_http_llm_redis_conn_flush(ngx_event_t *ev)
{
    ngx_http_llm_redis_conn_t  *rc = ev->data;

    if (rc->state >= NGX_HTTP_LLM_REDIS_SETUP) {
        ngx_http_llm_redis_conn_write(rc->peer.connection->write);
    }
}


static void
ngx_http_llm_redis_conn_write(ngx_event_t *wev)
{
    ssize_t                     n;
    ngx_connection_t           *c;
    ngx_http_llm_redis_conn_t  *rc;

    c = wev->data;
    rc = c->data;

    if (wev->timedout) {
        ngx_http_llm_redis_conn_lost(rc, "setup timed out", 1);
        return;
    }

    while (rc->out_sent < rc->out_len) {
        n = c->send(c, rc->out + rc->out_sent, rc->out_len - rc->out_sent);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_http_llm_redis_conn_lost(rc, "write failed", 1);
            return;
        }

        rc->out_sent += n;
    }

    if (rc->out_sent == rc->out_len) {
        rc->out_sent = 0;
        rc->out_len = 0;

        if (rc->out_size > NGX_HTTP_LLM_REDIS_OUT_KEEP) {
            ngx_free(rc->out);
            rc->out = NULL;
            rc->out_size = 0;
        }
    }

    if (ngx_handle_write_event(wev, 0) != NGX_OK) {
        ngx_http_llm_redis_conn_lost(rc, "failed", 1);
    }
}


static void
ngx_http_llm_redis_conn_read(ngx_event_t *rev)
{
    void                       *reply;
    ssize_t                     n;
    ngx_uint_t                  keep;
    ngx_queue_t                *q;
    ngx_connection_t           *c;
    ngx_http_llm_redis_wait_t  *w;
    ngx_http_llm_redis_conn_t  *rc;

    c = rev->data;
    rc = c->data;

    if (rc->state < NGX_HTTP_LLM_REDIS_SETUP) {
        /* a read event while connecting: the write one will tell */
        return;
    }

    rc->busy++;

    for ( ;; ) {
        n = c->recv(c, ngx_http_llm_redis_conn_buf,
                    NGX_HTTP_LLM_REDIS_READ);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            rc->busy--;
            ngx_http_llm_redis_conn_lost(rc, n ? "read failed" : "closed", 1);
            return;
        }

        if (redisReaderFeed(rc->reader, (char *) ngx_http_llm_redis_conn_buf,
                            n)
            != REDIS_OK)
        {
            rc->busy--;
            ngx_http_llm_redis_conn_lost(rc, "out of memory", 1);
            return;
        }

        for ( ;; ) {
            reply = NULL;

            if (redisReaderGetReply(rc->reader, &reply) != REDIS_OK) {
                ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                              "llm: redis %V: protocol error: %s",
                              &rc->name, rc->reader->errstr);
                rc->busy--;
                ngx_http_llm_redis_conn_lost(rc, "sent garbage", 1);
                return;
            }

            if (reply == NULL) {
                break;
            }

            if (ngx_queue_empty(&rc->waiting)) {
                freeReplyObject(reply);
                rc->busy--;
                ngx_http_llm_redis_conn_lost(rc, "answered nothing asked",
                                             1);
                return;
            }

            q = ngx_queue_head(&rc->waiting);
            w = ngx_queue_data(q, ngx_http_llm_redis_wait_t, queue);

            /* a subscriber's one waiter hears every message */
            keep = rc->subscriber;

            if (!keep) {
                ngx_queue_remove(q);
            }

            if (w->handler) {
                w->handler(rc, reply, w->data);
            }

            freeReplyObject(reply);

            if (!keep) {
                ngx_free(w);
            }

            if (rc->close_due) {
                rc->busy--;
                ngx_http_llm_redis_conn_lost(rc, NULL, rc->close_notify);
                return;
            }
        }

        if (!rev->ready) {
            /* TLS or a short read: what is left comes with an event */
            break;
        }
    }

    rc->busy--;

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_llm_redis_conn_lost(rc, "failed", 1);
    }
}


/* the owner closes it: its handler is not told */

void
ngx_http_llm_redis_conn_close(ngx_http_llm_redis_conn_t *rc, const char *why)
{
    if (rc->state == NGX_HTTP_LLM_REDIS_CLOSED) {
        return;
    }

    if (why) {
        ngx_log_error(NGX_LOG_INFO, rc->log, 0, "llm: redis %V %s",
                      &rc->name, why);
    }

    if (rc->busy) {
        /* a reply handler is still on the stack: at the end of it */
        rc->close_due = 1;
        return;
    }

    ngx_http_llm_redis_conn_lost(rc, NULL, 0);
}


/*
 * Closes the socket; every command still waiting gets a NULL reply, then
 * the owner hears, if notify, that the connection is down
 */

static void
ngx_http_llm_redis_conn_lost(ngx_http_llm_redis_conn_t *rc, const char *why,
    ngx_uint_t notify)
{
    ngx_pool_t                 *pool;
    ngx_queue_t                *q, waiting;
    ngx_connection_t           *c;
    ngx_http_llm_redis_wait_t  *w;

    if (rc->state == NGX_HTTP_LLM_REDIS_CLOSED) {
        return;
    }

    if (why) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0, "llm: redis %V %s",
                      &rc->name, why);
    }

    if (rc->busy) {
        /* a reply handler is still on the stack: at the end of it */
        rc->close_due = 1;
        rc->close_notify |= notify;
        return;
    }

    rc->state = NGX_HTTP_LLM_REDIS_CLOSED;

    if (rc->resolving) {
        ngx_resolve_name_done(rc->resolving);
        rc->resolving = NULL;
    }

    if (rc->flush.posted) {
        ngx_delete_posted_event(&rc->flush);
    }

    c = rc->peer.connection;

    if (c) {
        rc->peer.connection = NULL;
        pool = c->pool;

#if (NGX_SSL)
        if (c->ssl) {
            c->ssl->no_wait_shutdown = 1;
            c->ssl->no_send_shutdown = 1;
            (void) ngx_ssl_shutdown(c);
        }
#endif

        ngx_close_connection(c);

        if (pool) {
            ngx_destroy_pool(pool);
        }
    }

    if (rc->reader) {
        redisReaderFree(rc->reader);
        rc->reader = NULL;
    }

    if (rc->out) {
        ngx_free(rc->out);
        rc->out = NULL;
    }

    rc->out_len = 0;
    rc->out_sent = 0;
    rc->out_size = 0;
    rc->setup = 0;
    rc->close_due = 0;
    rc->close_notify = 0;

    /*
     * the owner hears first, so that a command sent again from a waiter's
     * handler meets a node that is down, not one opened again at once
     */

    ngx_queue_init(&waiting);

    if (!ngx_queue_empty(&rc->waiting)) {
        ngx_queue_add(&waiting, &rc->waiting);
    }

    ngx_queue_init(&rc->waiting);

    if (notify) {
        rc->handler(rc, rc->data);
    }

    while (!ngx_queue_empty(&waiting)) {
        q = ngx_queue_head(&waiting);
        ngx_queue_remove(q);
        w = ngx_queue_data(q, ngx_http_llm_redis_wait_t, queue);

        if (w->handler) {
            w->handler(rc, NULL, w->data);
        }

        ngx_free(w);
    }
}
