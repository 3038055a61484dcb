
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * One asynchronous hiredis connection per worker on nginx's event loop:
 * reconnect with backoff, a timeout per command, pipelining, and callers
 * that may vanish before their reply arrives.  The module's Lua scripts
 * are kept here too: loaded on every connect, called by their SHA1, and
 * loaded again when Redis has lost them.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_scripts.h"
#include "ngx_http_llm_util.h"

#include <openssl/sha.h>


#define NGX_HTTP_LLM_REDIS_BACKOFF_MIN  100
#define NGX_HTTP_LLM_REDIS_BACKOFF_MAX  5000

/* llm_redis's defaults */
#define NGX_HTTP_LLM_REDIS_PORT         6379
#define NGX_HTTP_LLM_REDIS_TIMEOUT      500

/* ACL user names and passwords are short; a bigger file is not one */
#define NGX_HTTP_LLM_REDIS_USER_MAX     256
#define NGX_HTTP_LLM_REDIS_PASSWORD_MAX 4096

/* the most callers told of each new connection */
#define NGX_HTTP_LLM_HOOKS              4

/* the length of a SHA1 in hex, as EVALSHA takes it */
#define NGX_HTTP_LLM_SHA1_HEX_LEN       (2 * SHA_DIGEST_LENGTH)

/*
 * Redis errors by their code, the transient ones first: a cluster's
 * redirections are not followed, so they are not
 */
#define NGX_HTTP_LLM_REDIS_TRANSIENT    9


/* owned by hiredis until its reply callback runs, which frees it */

struct ngx_http_llm_redis_cmd_s {
    ngx_http_llm_redis_pt       handler;    /* NULL: nobody to tell */
    void                       *data;
    ngx_event_t                 timer;
    char                       *script;     /* an EVALSHA as sent, or NULL */
    size_t                      script_len;
    unsigned                    retry:1;    /* sent again on NOSCRIPT */
};


typedef struct {
    const char                 *source;
    const char                 *nkeys;      /* its KEYS, in decimal */
    u_char                      sha[NGX_HTTP_LLM_SHA1_HEX_LEN];
} ngx_http_llm_redis_script_t;


typedef struct {
    ngx_http_llm_redis_ready_pt handler;
    void                       *data;
} ngx_http_llm_redis_hook_t;


static ngx_http_llm_redis_cmd_t *ngx_http_llm_redis_send(int argc,
    const char **argv, const size_t *argvlen, ngx_http_llm_redis_pt handler,
    void *data, ngx_uint_t script);
static ngx_int_t ngx_http_llm_redis_again(redisAsyncContext *ac,
    ngx_http_llm_redis_cmd_t *cmd, redisReply *reply);
static void ngx_http_llm_redis_load(void);
static void ngx_http_llm_redis_connect(void);
static void ngx_http_llm_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_llm_redis_on_disconnect(const redisAsyncContext *ac,
    int status);
static void ngx_http_llm_redis_lost(const char *why, const char *err);
static void ngx_http_llm_redis_retry(ngx_event_t *ev);
static void ngx_http_llm_redis_reply(redisAsyncContext *ac, void *reply,
    void *privdata);
static ngx_int_t ngx_http_llm_redis_url(ngx_conf_t *cf,
    ngx_http_llm_redis_conf_t *rc, ngx_str_t *addr);
static ngx_int_t ngx_http_llm_redis_user_valid(ngx_str_t *user);
static ngx_int_t ngx_http_llm_redis_password_file(ngx_conf_t *cf,
    ngx_http_llm_redis_conf_t *rc, ngx_str_t *name);
static void ngx_http_llm_redis_setup_reply(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_llm_redis_timeout(ngx_event_t *ev);
static void ngx_http_llm_redis_drop(const char *why);
static void ngx_http_llm_redis_event(ngx_event_t *ev);
static void ngx_http_llm_redis_add_read(void *data);
static void ngx_http_llm_redis_del_read(void *data);
static void ngx_http_llm_redis_add_write(void *data);
static void ngx_http_llm_redis_del_write(void *data);
static void ngx_http_llm_redis_cleanup(void *data);
static void ngx_http_llm_redis_flush(ngx_event_t *ev);
static void ngx_http_llm_redis_reset_handler(ngx_event_t *ev);
static void ngx_http_llm_redis_info(redisAsyncContext *ac, void *reply,
    void *privdata);


static ngx_http_llm_redis_conf_t  *ngx_http_llm_redis_conf;
static redisAsyncContext          *ngx_http_llm_redis_ac;
static ngx_connection_t           *ngx_http_llm_redis_conn;
static ngx_event_t                 ngx_http_llm_redis_retry_event;
static ngx_msec_t                  ngx_http_llm_redis_backoff;
static ngx_log_t                  *ngx_http_llm_redis_log;
static ngx_uint_t                  ngx_http_llm_redis_up;
static ngx_event_t                 ngx_http_llm_redis_flush_event;
static ngx_uint_t                  ngx_http_llm_redis_flushing;
static ngx_event_t                 ngx_http_llm_redis_reset_event;
static const char                 *ngx_http_llm_redis_reset_why;
static ngx_http_llm_redis_hook_t   ngx_http_llm_redis_hooks[NGX_HTTP_LLM_HOOKS];
static ngx_uint_t                  ngx_http_llm_redis_nhooks;

/* by ngx_http_llm_script_e; the key counts are the scripts' own */

static ngx_http_llm_redis_script_t  ngx_http_llm_redis_scripts[] = {
    { ngx_http_llm_lua_admit, "4", "" },
    { ngx_http_llm_lua_settle, "7", "" },
    { ngx_http_llm_lua_sweep, "1", "" },
    { ngx_http_llm_lua_cache_lock, "2", "" },
    { ngx_http_llm_lua_cache_done, "2", "" }
};

static const char  *ngx_http_llm_redis_errors[] = {
    "LOADING", "BUSY", "READONLY", "OOM", "MASTERDOWN", "TRYAGAIN",
    "CLUSTERDOWN", "NOSCRIPT", "NOREPLICAS",
    "MOVED", "ASK",
    NULL
};


/*
 * llm_redis 127.0.0.1:6379 | unix:/path | redis://[user@]host[:port][/db]
 *     [user=NAME] [password_file=F | password_env=V] [db=N] [timeout=T]
 */

char *
ngx_http_llm_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    char                       *pw;
    u_char                     *colon;
    ngx_int_t                   n;
    ngx_str_t                  *value, s, addr;
    ngx_uint_t                  i;
    ngx_http_llm_redis_conf_t  *rc;

    if (lmcf->redis) {
        return "is duplicate";
    }

    rc = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_redis_conf_t));
    if (rc == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;
    rc->timeout = NGX_HTTP_LLM_REDIS_TIMEOUT;
    i = 1;
    addr = value[1];

    if (ngx_http_llm_redis_url(cf, rc, &addr) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_strncmp(addr.data, "unix:", 5) == 0) {
        rc->unix_path.len = addr.len - 5;
        rc->unix_path.data = addr.data + 5;

        if (rc->unix_path.len == 0) {
            goto invalid;
        }

    } else {
        colon = ngx_strlchr(addr.data, addr.data + addr.len, ':');

        if (colon == NULL) {
            rc->port = NGX_HTTP_LLM_REDIS_PORT;
            rc->host = addr;

        } else {
            n = ngx_atoi(colon + 1, addr.data + addr.len - colon - 1);
            if (n < 1 || n > 65535) {
                goto invalid;
            }

            rc->port = (in_port_t) n;
            rc->host.data = addr.data;
            rc->host.len = colon - addr.data;
        }

        /* hiredis resolves names with a blocking call: addresses only */

        if (ngx_inet_addr(rc->host.data, rc->host.len) == INADDR_NONE) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"llm_redis\" needs an IPv4 address or a "
                               "unix: socket, not \"%V\"", &rc->host);
            return NGX_CONF_ERROR;
        }

        s = rc->host;
        rc->host.data = ngx_pnalloc(cf->pool, s.len + 1);
        if (rc->host.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_cpystrn(rc->host.data, s.data, s.len + 1);
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "password_env=", 13) == 0) {
            pw = getenv((char *) value[i].data + 13);

            if (pw == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"llm_redis\": environment variable "
                                   "\"%s\" is not set",
                                   value[i].data + 13);
                return NGX_CONF_ERROR;
            }

            rc->password.len = ngx_strlen(pw);
            rc->password.data = ngx_pnalloc(cf->pool, rc->password.len + 1);
            if (rc->password.data == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_cpystrn(rc->password.data, (u_char *) pw,
                        rc->password.len + 1);
            continue;
        }

        if (ngx_strncmp(value[i].data, "password_file=", 14) == 0) {
            s.data = value[i].data + 14;
            s.len = value[i].len - 14;

            if (ngx_http_llm_redis_password_file(cf, rc, &s) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "user=", 5) == 0) {
            rc->user.data = value[i].data + 5;
            rc->user.len = value[i].len - 5;

            if (ngx_http_llm_redis_user_valid(&rc->user) != NGX_OK) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            rc->password.data = value[i].data + 9;
            rc->password.len = value[i].len - 9;
            continue;
        }

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            n = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (n == NGX_ERROR) {
                goto invalid;
            }

            rc->db = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            rc->timeout = ngx_parse_time(&s, 0);
            if (rc->timeout == (ngx_msec_t) NGX_ERROR || rc->timeout == 0) {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    if (rc->user.len && rc->password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_redis\" user \"%V\" needs "
                           "\"password_file=\" or \"password_env=\"",
                           &rc->user);
        return NGX_CONF_ERROR;
    }

    lmcf->redis = rc;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid \"llm_redis\" parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


/*
 * redis://[user@]host[:port][/db]: the address, the ACL user and the
 * database; a password never comes from the configuration's text, and
 * the other forms are not served yet
 */

static ngx_int_t
ngx_http_llm_redis_url(ngx_conf_t *cf, ngx_http_llm_redis_conf_t *rc,
    ngx_str_t *addr)
{
    u_char     *at, *slash, *last;
    ngx_int_t   n;
    ngx_str_t   scheme;

    last = addr->data + addr->len;

    at = ngx_strlcasestrn(addr->data, last, (u_char *) "://", 3 - 1);

    if (at == NULL) {
        return NGX_OK;
    }

    scheme.data = addr->data;
    scheme.len = at - addr->data;

    if (!ngx_http_llm_is_lit(scheme.data, scheme.len, "redis")) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_redis\" does not support \"%V://\" "
                           "addresses yet", &scheme);
        return NGX_ERROR;
    }

    addr->data = at + 3;
    addr->len = last - addr->data;

    at = ngx_strlchr(addr->data, last, '@');

    if (at) {
        rc->user.data = addr->data;
        rc->user.len = at - addr->data;

        if (ngx_strlchr(rc->user.data, at, ':')) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"llm_redis\" takes no password in its "
                               "address: use \"password_file=\" or "
                               "\"password_env=\"");
            return NGX_ERROR;
        }

        if (ngx_http_llm_redis_user_valid(&rc->user) != NGX_OK) {
            goto invalid;
        }

        addr->data = at + 1;
        addr->len = last - addr->data;
    }

    slash = ngx_strlchr(addr->data, last, '/');

    if (slash) {
        n = ngx_atoi(slash + 1, last - slash - 1);
        if (n == NGX_ERROR) {
            goto invalid;
        }

        rc->db = n;
        addr->len = slash - addr->data;
    }

    if (addr->len == 0) {
        goto invalid;
    }

    return NGX_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid \"llm_redis\" address \"%V\"",
                       &((ngx_str_t *) cf->args->elts)[1]);
    return NGX_ERROR;
}


/* an ACL user name: printable, no space, as AUTH takes it */

static ngx_int_t
ngx_http_llm_redis_user_valid(ngx_str_t *user)
{
    u_char  *p, *last;

    if (user->len == 0 || user->len > NGX_HTTP_LLM_REDIS_USER_MAX) {
        return NGX_ERROR;
    }

    last = user->data + user->len;

    for (p = user->data; p < last; p++) {
        if (*p <= 0x20 || *p >= 0x7f) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * password_file=F: the whole file but a final line end, read once at
 * start; its text is never logged
 */

static ngx_int_t
ngx_http_llm_redis_password_file(ngx_conf_t *cf,
    ngx_http_llm_redis_conf_t *rc, ngx_str_t *name)
{
    u_char           *p, *last;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_str_t         file;
    ngx_file_t        f;
    ngx_file_info_t   fi;

    file = *name;

    if (file.len == 0 || ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"llm_redis\" password_file");
        return NGX_ERROR;
    }

    fd = ngx_open_file(file.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"llm_redis\" cannot open password_file "
                           "\"%V\"", &file);
        return NGX_ERROR;
    }

    ngx_memzero(&f, sizeof(ngx_file_t));
    f.fd = fd;
    f.name = file;
    f.log = cf->log;

    p = NULL;
    n = NGX_ERROR;

    if (ngx_fd_info(fd, &fi) != NGX_FILE_ERROR
        && ngx_file_size(&fi) > 0
        && ngx_file_size(&fi) <= NGX_HTTP_LLM_REDIS_PASSWORD_MAX)
    {
        p = ngx_pnalloc(cf->pool, (size_t) ngx_file_size(&fi) + 1);

        if (p) {
            n = ngx_read_file(&f, p, (size_t) ngx_file_size(&fi), 0);
        }
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                      ngx_close_file_n " \"%V\" failed", &file);
    }

    if (n <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_redis\" cannot read a password from "
                           "password_file \"%V\"", &file);
        return NGX_ERROR;
    }

    last = p + n;

    while (last > p && (last[-1] == '\n' || last[-1] == '\r')) {
        last--;
    }

    if (last == p || ngx_strlchr(p, last, '\n') || ngx_strlchr(p, last, '\r')) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_redis\" password_file \"%V\" must hold "
                           "one line", &file);
        return NGX_ERROR;
    }

    *last = '\0';

    rc->password.data = p;
    rc->password.len = last - p;

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_redis_init(ngx_cycle_t *cycle, ngx_http_llm_redis_conf_t *conf)
{
    u_char                        md[SHA_DIGEST_LENGTH];
    ngx_uint_t                    i;
    ngx_http_llm_redis_script_t  *sc;

    for (i = 0; i < NGX_HTTP_LLM_SCRIPT_N; i++) {
        sc = &ngx_http_llm_redis_scripts[i];

        SHA1((u_char *) sc->source, ngx_strlen(sc->source), md);
        ngx_hex_dump(sc->sha, md, SHA_DIGEST_LENGTH);
    }

    ngx_http_llm_redis_conf = conf;
    ngx_http_llm_redis_log = cycle->log;

    ngx_http_llm_redis_retry_event.handler = ngx_http_llm_redis_retry;
    ngx_http_llm_redis_retry_event.log = cycle->log;
    ngx_http_llm_redis_retry_event.data = &ngx_http_llm_timer_conn;

    ngx_http_llm_redis_flush_event.handler = ngx_http_llm_redis_flush;
    ngx_http_llm_redis_flush_event.log = cycle->log;
    ngx_http_llm_redis_flush_event.data = &ngx_http_llm_timer_conn;
    ngx_http_llm_redis_retry_event.cancelable = 1;

    ngx_http_llm_redis_reset_event.handler =
        ngx_http_llm_redis_reset_handler;
    ngx_http_llm_redis_reset_event.log = cycle->log;
    ngx_http_llm_redis_reset_event.data = &ngx_http_llm_timer_conn;

    ngx_http_llm_redis_backoff = NGX_HTTP_LLM_REDIS_BACKOFF_MIN;

    /* a Redis that is down must not keep the worker from starting */
    ngx_http_llm_redis_connect();

    return NGX_OK;
}


void
ngx_http_llm_redis_exit(ngx_cycle_t *cycle)
{
    redisAsyncContext  *ac;

    if (ngx_http_llm_redis_retry_event.timer_set) {
        ngx_del_timer(&ngx_http_llm_redis_retry_event);
    }

    if (ngx_http_llm_redis_reset_event.posted) {
        ngx_delete_posted_event(&ngx_http_llm_redis_reset_event);
    }

    /* no reconnect from the disconnect callback on the way out */
    ngx_http_llm_redis_conf = NULL;

    ac = ngx_http_llm_redis_ac;

    if (ac) {
        ngx_http_llm_redis_ac = NULL;
        ngx_http_llm_redis_up = 0;
        redisAsyncFree(ac);
    }
}


ngx_uint_t
ngx_http_llm_redis_ready(void)
{
    return ngx_http_llm_redis_up;
}


/*
 * handler(data) is called each time a connection is ready, after the
 * scripts are loaded on it; registered once per process, before then
 */

void
ngx_http_llm_redis_on_ready(ngx_http_llm_redis_ready_pt handler, void *data)
{
    ngx_uint_t                  i;
    ngx_http_llm_redis_hook_t  *h;

    for (i = 0; i < ngx_http_llm_redis_nhooks; i++) {
        h = &ngx_http_llm_redis_hooks[i];

        if (h->handler == handler && h->data == data) {
            /* init_module runs again in the master on every reload */
            return;
        }
    }

    if (ngx_http_llm_redis_nhooks == NGX_HTTP_LLM_HOOKS) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "llm: too many redis hooks");
        return;
    }

    h = &ngx_http_llm_redis_hooks[ngx_http_llm_redis_nhooks++];
    h->handler = handler;
    h->data = data;
}


/*
 * Sends one command.  The handler is called at most once: with the reply,
 * or with NULL on error, disconnect or timeout, and never after
 * ngx_http_llm_redis_cancel().  Once it has run, the caller must forget
 * the command.  NULL means Redis is not available now.
 */

ngx_http_llm_redis_cmd_t *
ngx_http_llm_redis_command(int argc, const char **argv,
    const size_t *argvlen, ngx_http_llm_redis_pt handler, void *data)
{
    return ngx_http_llm_redis_send(argc, argv, argvlen, handler, data, 0);
}


/*
 * Calls one of the module's scripts, as ngx_http_llm_redis_command()
 * sends a command.  argv[0] to argv[NGX_HTTP_LLM_SCRIPT_HEAD - 1] are
 * filled here (EVALSHA, the SHA1, the number of keys); the keys and the
 * arguments follow, and argc counts them all.  A NOSCRIPT loads the
 * scripts and sends the call once more, before the handler hears of it.
 */

ngx_http_llm_redis_cmd_t *
ngx_http_llm_redis_script(ngx_uint_t script, int argc, const char **argv,
    size_t *argvlen, ngx_http_llm_redis_pt handler, void *data)
{
    ngx_http_llm_redis_script_t  *sc;

    sc = &ngx_http_llm_redis_scripts[script];

    ngx_http_llm_arg_lit(argv, argvlen, 0, "EVALSHA");
    argv[1] = (char *) sc->sha;
    argvlen[1] = NGX_HTTP_LLM_SHA1_HEX_LEN;
    argv[2] = sc->nkeys;
    argvlen[2] = ngx_strlen(sc->nkeys);

    return ngx_http_llm_redis_send(argc, argv, argvlen, handler, data, 1);
}


/* a script call is kept as sent, to be sent again on NOSCRIPT */

static ngx_http_llm_redis_cmd_t *
ngx_http_llm_redis_send(int argc, const char **argv, const size_t *argvlen,
    ngx_http_llm_redis_pt handler, void *data, ngx_uint_t script)
{
    int                        rc;
    long long                  len;
    ngx_http_llm_redis_cmd_t  *cmd;

    if (ngx_http_llm_redis_ac == NULL || !ngx_http_llm_redis_up) {
        return NULL;
    }

    cmd = ngx_alloc(sizeof(ngx_http_llm_redis_cmd_t), ngx_http_llm_redis_log);
    if (cmd == NULL) {
        return NULL;
    }

    ngx_memzero(cmd, sizeof(ngx_http_llm_redis_cmd_t));

    cmd->handler = handler;
    cmd->data = data;
    cmd->timer.handler = ngx_http_llm_redis_timeout;
    cmd->timer.data = &ngx_http_llm_timer_conn;
    cmd->timer.log = ngx_http_llm_redis_log;

    if (script) {
        len = redisFormatCommandArgv(&cmd->script, argc, argv, argvlen);
        if (len < 0) {
            ngx_free(cmd);
            return NULL;
        }

        cmd->script_len = (size_t) len;
        cmd->retry = 1;

        rc = redisAsyncFormattedCommand(ngx_http_llm_redis_ac,
                                        ngx_http_llm_redis_reply, cmd,
                                        cmd->script, cmd->script_len);

    } else {
        rc = redisAsyncCommandArgv(ngx_http_llm_redis_ac,
                                   ngx_http_llm_redis_reply, cmd, argc, argv,
                                   argvlen);
    }

    if (rc != REDIS_OK) {
        if (cmd->script) {
            redisFreeCommand(cmd->script);
        }

        ngx_free(cmd);
        return NULL;
    }

    ngx_add_timer(&cmd->timer, ngx_http_llm_redis_conf->timeout);

    return cmd;
}


void
ngx_http_llm_redis_cancel(ngx_http_llm_redis_cmd_t *cmd)
{
    /* the reply, whenever it comes, frees cmd; it is not sent again */

    cmd->handler = NULL;
    cmd->retry = 0;

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }
}


static void
ngx_http_llm_redis_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    void                      *data;
    ngx_http_llm_redis_pt      handler;
    ngx_http_llm_redis_cmd_t  *cmd = privdata;

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    if (cmd->retry && ngx_http_llm_redis_again(ac, cmd, reply) == NGX_OK) {
        return;
    }

    handler = cmd->handler;
    data = cmd->data;

    if (cmd->script) {
        redisFreeCommand(cmd->script);
    }

    ngx_free(cmd);

    if (handler) {
        handler(reply, data);
    }
}


static void
ngx_http_llm_redis_timeout(ngx_event_t *ev)
{
    ngx_http_llm_redis_pt      handler;
    ngx_http_llm_redis_cmd_t  *cmd;

    cmd = (ngx_http_llm_redis_cmd_t *) ((u_char *) ev
                                        - offsetof(ngx_http_llm_redis_cmd_t,
                                                   timer));

    ngx_log_error(NGX_LOG_WARN, ev->log, 0, "llm: redis command timed out");

    /* hiredis still holds cmd; its late reply will free it */

    handler = cmd->handler;
    cmd->handler = NULL;

    if (handler) {
        handler(NULL, cmd->data);
    }

    /*
     * a Redis that does not answer in time is treated as down: requests
     * fail fast under the location's policy until a new connection works
     */

    ngx_http_llm_redis_drop("stopped answering");
}


/*
 * Redis lost the scripts (a restart, SCRIPT FLUSH, a failover to a node
 * that never loaded them): they are loaded again, ahead of the same call
 * sent once more on the same connection
 */

static ngx_int_t
ngx_http_llm_redis_again(redisAsyncContext *ac, ngx_http_llm_redis_cmd_t *cmd,
    redisReply *reply)
{
    cmd->retry = 0;

    if (reply == NULL
        || reply->type != REDIS_REPLY_ERROR
        || ngx_strncmp(reply->str, "NOSCRIPT", sizeof("NOSCRIPT") - 1) != 0
        || ac != ngx_http_llm_redis_ac
        || !ngx_http_llm_redis_up)
    {
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_http_llm_redis_log, 0,
                  "llm: redis lost the scripts, loading them again");

    ngx_http_llm_redis_load();

    if (redisAsyncFormattedCommand(ac, ngx_http_llm_redis_reply, cmd,
                                   cmd->script, cmd->script_len)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    ngx_add_timer(&cmd->timer, ngx_http_llm_redis_conf->timeout);

    return NGX_OK;
}


/* on every connect, ahead of any EVALSHA on that connection */

static void
ngx_http_llm_redis_load(void)
{
    size_t       argvlen[3];
    ngx_uint_t   i;
    const char  *argv[3];

    ngx_http_llm_arg_lit(argv, argvlen, 0, "SCRIPT");
    ngx_http_llm_arg_lit(argv, argvlen, 1, "LOAD");

    for (i = 0; i < NGX_HTTP_LLM_SCRIPT_N; i++) {
        argv[2] = ngx_http_llm_redis_scripts[i].source;
        argvlen[2] = ngx_strlen(argv[2]);
        (void) ngx_http_llm_redis_command(3, argv, argvlen, NULL, NULL);
    }
}


/*
 * A Redis error reply, or a lost one (NULL), as a metric label; transient
 * ones are worth sending again on this connection or the next one
 */

const char *
ngx_http_llm_redis_error(redisReply *reply, ngx_uint_t *transient)
{
    char        *p;
    size_t       len;
    ngx_uint_t   i;

    *transient = 1;

    if (reply == NULL) {
        return "lost";
    }

    /* "OOM ...", or, from inside a script, "ERR ...: -OOM ..." */

    p = (char *) ngx_strstr(reply->str, ": -");
    p = p ? p + 3 : reply->str;

    for (i = 0; ngx_http_llm_redis_errors[i]; i++) {
        len = ngx_strlen(ngx_http_llm_redis_errors[i]);

        if ((ngx_strncmp(reply->str, ngx_http_llm_redis_errors[i], len) == 0
             && (reply->str[len] == ' ' || reply->str[len] == '\0'))
            || (ngx_strncmp(p, ngx_http_llm_redis_errors[i], len) == 0
                && p[len] == ' '))
        {
            *transient = (i < NGX_HTTP_LLM_REDIS_TRANSIENT);
            return ngx_http_llm_redis_errors[i];
        }
    }

    *transient = 0;

    return "other";
}


/*
 * The connection is dropped and made again at the end of this turn: not
 * from inside the reply callback that found it had to be
 */

void
ngx_http_llm_redis_reset(const char *why)
{
    if (ngx_http_llm_redis_reset_event.posted) {
        return;
    }

    ngx_http_llm_redis_reset_why = why;
    ngx_post_event(&ngx_http_llm_redis_reset_event, &ngx_posted_events);
}


static void
ngx_http_llm_redis_reset_handler(ngx_event_t *ev)
{
    ngx_http_llm_redis_drop(ngx_http_llm_redis_reset_why);
}


static void
ngx_http_llm_redis_drop(const char *why)
{
    redisAsyncContext  *ac;

    ac = ngx_http_llm_redis_ac;

    if (ac == NULL) {
        return;
    }

    ngx_http_llm_redis_ac = NULL;
    ngx_http_llm_redis_up = 0;

    /* pending commands get NULL replies from here */
    redisAsyncFree(ac);

    ngx_http_llm_redis_lost(why, "");
}


static void
ngx_http_llm_redis_connect(void)
{
    int                         n;
    const char                 *argv[3];
    size_t                      argvlen[3];
    redisAsyncContext          *ac;
    ngx_http_llm_redis_conf_t  *conf;

    conf = ngx_http_llm_redis_conf;

    if (conf->unix_path.len) {
        ac = redisAsyncConnectUnix((char *) conf->unix_path.data);

    } else {
        ac = redisAsyncConnect((char *) conf->host.data, (int) conf->port);
    }

    if (ac == NULL || ac->err) {
        ngx_http_llm_redis_lost("connect failed", ac ? ac->errstr : "");

        if (ac) {
            redisAsyncFree(ac);
        }

        return;
    }

    ngx_http_llm_redis_ac = ac;

    ac->ev.data = NULL;
    ac->ev.addRead = ngx_http_llm_redis_add_read;
    ac->ev.delRead = ngx_http_llm_redis_del_read;
    ac->ev.addWrite = ngx_http_llm_redis_add_write;
    ac->ev.delWrite = ngx_http_llm_redis_del_write;
    ac->ev.cleanup = ngx_http_llm_redis_cleanup;

    ngx_http_llm_redis_conn = ngx_get_connection(ac->c.fd,
                                                 ngx_http_llm_redis_log);
    if (ngx_http_llm_redis_conn == NULL) {
        ngx_http_llm_redis_ac = NULL;
        redisAsyncFree(ac);
        ngx_http_llm_redis_lost("no free connection", "");
        return;
    }

    ngx_http_llm_redis_conn->data = ac;
    ngx_http_llm_redis_conn->read->handler = ngx_http_llm_redis_event;
    ngx_http_llm_redis_conn->write->handler = ngx_http_llm_redis_event;
    ngx_http_llm_redis_conn->read->log = ngx_http_llm_redis_log;
    ngx_http_llm_redis_conn->write->log = ngx_http_llm_redis_log;

    redisAsyncSetConnectCallback(ac, ngx_http_llm_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_http_llm_redis_on_disconnect);

    /* queued ahead of everything else, so they run first */

    if (conf->password.len) {
        /* AUTH [user] password: an ACL user, or the default one */

        ngx_http_llm_arg_lit(argv, argvlen, 0, "AUTH");
        n = 1;

        if (conf->user.len) {
            argv[n] = (const char *) conf->user.data;
            argvlen[n++] = conf->user.len;
        }

        argv[n] = (const char *) conf->password.data;
        argvlen[n++] = conf->password.len;

        redisAsyncCommandArgv(ac, ngx_http_llm_redis_setup_reply, "AUTH",
                              (int) n, argv, argvlen);
    }

    if (conf->db) {
        u_char  buf[NGX_INT_T_LEN];

        n = ngx_sprintf(buf, "%ui", conf->db) - buf;

        ngx_http_llm_arg_lit(argv, argvlen, 0, "SELECT");
        argv[1] = (const char *) buf;
        argvlen[1] = n;

        redisAsyncCommandArgv(ac, ngx_http_llm_redis_setup_reply, "SELECT",
                              2, argv, argvlen);
    }

    /* hiredis connects without a timeout: the retry timer bounds it */
    ngx_add_timer(&ngx_http_llm_redis_retry_event, conf->timeout * 4);
}


static void
ngx_http_llm_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_uint_t  i;

    if (status != REDIS_OK) {
        /* hiredis frees the context itself after this callback */
        ngx_http_llm_redis_ac = NULL;
        ngx_http_llm_redis_lost("connect failed", ac->errstr);
        return;
    }

    if (ngx_http_llm_redis_retry_event.timer_set) {
        ngx_del_timer(&ngx_http_llm_redis_retry_event);
    }

    ngx_http_llm_redis_up = 1;
    ngx_http_llm_redis_backoff = NGX_HTTP_LLM_REDIS_BACKOFF_MIN;

    (void) redisAsyncCommand(ngx_http_llm_redis_ac, ngx_http_llm_redis_info,
                             NULL, "INFO server");

    ngx_http_llm_redis_load();

    for (i = 0; i < ngx_http_llm_redis_nhooks; i++) {
        ngx_http_llm_redis_hooks[i].handler(ngx_http_llm_redis_hooks[i].data);
    }

    ngx_log_error(NGX_LOG_NOTICE, ngx_http_llm_redis_log, 0,
                  "llm: redis connected");
}


static void
ngx_http_llm_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    if (ngx_http_llm_redis_ac != ac) {
        /* we dropped it ourselves and said why */
        return;
    }

    ngx_http_llm_redis_ac = NULL;

    if (ngx_http_llm_redis_conf == NULL) {
        return;
    }

    ngx_http_llm_redis_lost("disconnected",
                            status == REDIS_OK ? "" : ac->errstr);
}


static void
ngx_http_llm_redis_setup_reply(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    redisReply  *rr = reply;

    if (rr && rr->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_llm_redis_log, 0,
                      "llm: redis %s failed: %s", (char *) privdata, rr->str);
    }
}


/*
 * What the scripts need: Redis 5.0 (writes after TIME and HSCAN, which
 * older versions refuse in scripts unless told to replicate effects) and
 * no cluster (one connection follows no MOVED or ASK)
 */

static void
ngx_http_llm_redis_info(redisAsyncContext *ac, void *reply, void *privdata)
{
    char        *v, *mode;
    ngx_int_t    major;
    redisReply  *rr = reply;

    if (rr == NULL || rr->type != REDIS_REPLY_STRING) {
        return;
    }

    v = ngx_strstr(rr->str, "redis_version:");

    if (v == NULL) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_llm_redis_log, 0,
                      "llm: redis did not say its version; the quota "
                      "scripts need 5.0 or later");
        return;
    }

    v += sizeof("redis_version:") - 1;
    major = ngx_atoi((u_char *) v, strcspn(v, "."));

    if (major < 5) {
        ngx_log_error(NGX_LOG_ALERT, ngx_http_llm_redis_log, 0,
                      "llm: redis %*s is too old: the quota, settlement "
                      "and sweep scripts need 5.0 or later (writes after "
                      "TIME, HSCAN in scripts)", strcspn(v, "\r\n"), v);
    }

    mode = ngx_strstr(rr->str, "redis_mode:cluster");

    if (mode) {
        ngx_log_error(NGX_LOG_ALERT, ngx_http_llm_redis_log, 0,
                      "llm: redis runs as a cluster, which the gateway "
                      "does not support: tenants whose keys live on "
                      "another node get errors");
    }
}


static void
ngx_http_llm_redis_lost(const char *why, const char *err)
{
    ngx_http_llm_redis_up = 0;

    if (ngx_http_llm_redis_conf == NULL) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_http_llm_redis_log, 0,
                  "llm: redis %s%s%s, retrying in %Mms", why,
                  err[0] ? ": " : "", err, ngx_http_llm_redis_backoff);

    if (ngx_http_llm_redis_retry_event.timer_set) {
        ngx_del_timer(&ngx_http_llm_redis_retry_event);
    }

    ngx_add_timer(&ngx_http_llm_redis_retry_event,
                  ngx_http_llm_redis_backoff);

    ngx_http_llm_redis_backoff = ngx_min(ngx_http_llm_redis_backoff * 2,
                                         NGX_HTTP_LLM_REDIS_BACKOFF_MAX);
}


static void
ngx_http_llm_redis_retry(ngx_event_t *ev)
{
    redisAsyncContext  *ac;

    ac = ngx_http_llm_redis_ac;

    if (ac) {
        if (ngx_http_llm_redis_up) {
            return;
        }

        /* the connect attempt hung: give up on it */
        ngx_http_llm_redis_ac = NULL;
        redisAsyncFree(ac);
        ngx_http_llm_redis_lost("connect timed out", "");
        return;
    }

    ngx_http_llm_redis_connect();
}


static void
ngx_http_llm_redis_event(ngx_event_t *ev)
{
    ngx_connection_t   *c;
    redisAsyncContext  *ac;

    c = ev->data;
    ac = c->data;

    /*
     * level-triggered, so a reply larger than hiredis reads at once
     * (16 KiB) brings us back here until the socket is drained
     */

    if (ev->write) {
        redisAsyncHandleWrite(ac);

    } else {
        redisAsyncHandleRead(ac);
    }
}


static void
ngx_http_llm_redis_add_read(void *data)
{
    ngx_event_t  *rev;

    rev = ngx_http_llm_redis_conn->read;

    if (!rev->active) {
        (void) ngx_add_event(rev, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_llm_redis_del_read(void *data)
{
    ngx_event_t  *rev;

    rev = ngx_http_llm_redis_conn->read;

    if (rev->active) {
        (void) ngx_del_event(rev, NGX_READ_EVENT, 0);
    }
}


/*
 * Commands issued during one turn of the event loop leave in one write(),
 * at the end of the turn, pipelined: no epoll_ctl() per command.  Only a
 * socket that cannot take everything, or one still connecting, waits for
 * a write event.
 */

static void
ngx_http_llm_redis_add_write(void *data)
{
    ngx_event_t  *wev;

    if (ngx_http_llm_redis_up && !ngx_http_llm_redis_flushing) {
        if (!ngx_http_llm_redis_flush_event.posted) {
            ngx_post_event(&ngx_http_llm_redis_flush_event,
                           &ngx_posted_events);
        }

        return;
    }

    wev = ngx_http_llm_redis_conn->write;

    if (!wev->active) {
        (void) ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_llm_redis_del_write(void *data)
{
    ngx_event_t  *wev;

    wev = ngx_http_llm_redis_conn->write;

    if (wev->active) {
        (void) ngx_del_event(wev, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_http_llm_redis_flush(ngx_event_t *ev)
{
    if (ngx_http_llm_redis_ac == NULL || ngx_http_llm_redis_conn == NULL) {
        return;
    }

    ngx_http_llm_redis_flushing = 1;
    redisAsyncHandleWrite(ngx_http_llm_redis_ac);
    ngx_http_llm_redis_flushing = 0;
}


/* hiredis is about to close the fd it owns: drop our wrapper first */

static void
ngx_http_llm_redis_cleanup(void *data)
{
    ngx_connection_t  *c;

    if (ngx_http_llm_redis_flush_event.posted) {
        ngx_delete_posted_event(&ngx_http_llm_redis_flush_event);
    }

    c = ngx_http_llm_redis_conn;

    if (c == NULL) {
        return;
    }

    ngx_http_llm_redis_conn = NULL;

    ngx_http_llm_release_connection(c);
}
