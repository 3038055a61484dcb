
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The Redis commands of the module and where they go.  Each role
 * (llm_redis: keys and quotas; llm_cache_redis: the cache) is one node,
 * a primary found through Sentinel, or a Redis Cluster, each node one
 * ngx_http_llm_redis_conn_t.  A command has a timeout of its own, is
 * routed by its key's slot on a cluster, follows MOVED and ASK, and waits
 * out TRYAGAIN and CLUSTERDOWN within that timeout.  The module's Lua
 * scripts are kept here too: loaded on every connection, called by their
 * SHA1, and loaded again when Redis has lost them.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_redis_conn.h"
#include "ngx_http_llm_redis_slots.h"
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

/* seeds or sentinels in one address */
#define NGX_HTTP_LLM_REDIS_ADDRS_MAX    16

/* a cluster of more nodes than this is not one we were written for */
#define NGX_HTTP_LLM_REDIS_NODES_MAX    1000


/*
 * redirections one command follows; past the first two, each waits as
 * TRYAGAIN does: while a slot's move is being finished node by node, its
 * nodes may send a command back and forth for a moment
 */
#define NGX_HTTP_LLM_REDIS_REDIRECTS    16
#define NGX_HTTP_LLM_REDIS_REDIRECTS_NOW  2

/* TRYAGAIN and CLUSTERDOWN: first wait, and the longest */
#define NGX_HTTP_LLM_REDIS_AGAIN_MIN    10
#define NGX_HTTP_LLM_REDIS_AGAIN_MAX    100

/* the slot map is asked for at most this often */
#define NGX_HTTP_LLM_REDIS_REFRESH      100

/* the most callers told of each new connection */
#define NGX_HTTP_LLM_HOOKS              4

/* the length of a SHA1 in hex, as EVALSHA takes it */
#define NGX_HTTP_LLM_SHA1_HEX_LEN       (2 * SHA_DIGEST_LENGTH)

/*
 * Redis errors by their code, the transient ones first; MOVED and ASK
 * reach a caller only when the redirections ran out
 */
#define NGX_HTTP_LLM_REDIS_TRANSIENT    9


typedef struct ngx_http_llm_redis_s       ngx_http_llm_redis_t;
typedef struct ngx_http_llm_redis_node_s  ngx_http_llm_redis_node_t;


/* what a node is to its role */
#define NGX_HTTP_LLM_NODE_DATA          0
#define NGX_HTTP_LLM_NODE_SENTINEL      1   /* asks for the primary */
#define NGX_HTTP_LLM_NODE_WATCH         2   /* hears +switch-master */


struct ngx_http_llm_redis_node_s {
    ngx_http_llm_redis_conn_t   conn;
    ngx_http_llm_redis_t       *redis;
    ngx_uint_t                  kind;
    ngx_uint_t                  index;      /* in redis->nodes */
    ngx_event_t                 retry;
    ngx_event_t                 probe;      /* ROLE, CLUSTER SLOTS, ... */
    ngx_msec_t                  backoff;
    ngx_msec_t                  down_until; /* no reconnect before */
    unsigned                    ready:1;    /* up, and a primary */
    unsigned                    want_slots:1;
    /* the host, NUL, then host:port */
    u_char                      text[2 * NGX_HTTP_LLM_REDIS_HOST_MAX + 8];
};


struct ngx_http_llm_redis_s {
    ngx_http_llm_redis_conf_t  *conf;
    ngx_http_llm_redis_conf_t   sconf;      /* the sentinels': no AUTH */
    ngx_uint_t                  role;
    ngx_http_llm_redis_node_t  *primary;    /* single node, Sentinel */
    ngx_array_t                 nodes;      /* cluster: node pointers */
    uint16_t                   *slots;      /* node index + 1; 0: none */
    ngx_uint_t                 *primaries;  /* node indexes, as mapped */
    ngx_uint_t                  nprimaries;
    ngx_uint_t                  mapped;     /* the slot map is built */
    ngx_uint_t                  next;       /* the next seed, sentinel */
    ngx_http_llm_redis_node_t  *sentinel;
    ngx_http_llm_redis_node_t  *watch;
    ngx_event_t                 refresh;    /* slot map, primary */
    ngx_msec_t                  refresh_backoff;
    ngx_event_t                 reset;
    const char                 *reset_why;
};


struct ngx_http_llm_redis_cmd_s {
    ngx_http_llm_redis_pt       handler;    /* NULL: nobody to tell */
    void                       *data;
    ngx_http_llm_redis_t       *redis;
    ngx_http_llm_redis_node_t  *node;       /* where it was sent */
    ngx_http_llm_redis_node_t  *target;     /* where it goes after a wait */
    ngx_http_llm_redis_wait_t  *wait;       /* NULL: not in flight */
    ngx_event_t                 timer;
    ngx_event_t                 again;      /* TRYAGAIN, CLUSTERDOWN */
    ngx_msec_t                  again_wait;
    char                       *buf;        /* as sent */
    size_t                      len;
    ngx_int_t                   slot;       /* NGX_DECLINED: no key */
    ngx_uint_t                  redirects;
    unsigned                    script:1;   /* sent again on NOSCRIPT */
    unsigned                    asking:1;
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


static char *ngx_http_llm_redis_parse(ngx_conf_t *cf,
    ngx_http_llm_redis_conf_t *rc);
static ngx_int_t ngx_http_llm_redis_url(ngx_conf_t *cf,
    ngx_http_llm_redis_conf_t *rc, ngx_str_t *addr);
static ngx_int_t ngx_http_llm_redis_addr(ngx_conf_t *cf,
    ngx_http_llm_redis_conf_t *rc, ngx_str_t *addr);
static ngx_int_t ngx_http_llm_redis_user_valid(ngx_str_t *user);
static ngx_int_t ngx_http_llm_redis_password_file(ngx_conf_t *cf,
    ngx_http_llm_redis_conf_t *rc, ngx_str_t *name);
static ngx_int_t ngx_http_llm_redis_role_init(ngx_cycle_t *cycle,
    ngx_http_llm_redis_t *redis, ngx_http_llm_redis_conf_t *conf,
    ngx_uint_t role);
static void ngx_http_llm_redis_role_exit(ngx_http_llm_redis_t *redis);
static ngx_http_llm_redis_node_t *ngx_http_llm_redis_node(
    ngx_http_llm_redis_t *redis, ngx_uint_t kind, u_char *host, size_t len,
    in_port_t port);
static void ngx_http_llm_redis_node_at(ngx_http_llm_redis_node_t *node,
    u_char *host, size_t len, in_port_t port);
static void ngx_http_llm_redis_node_free(ngx_http_llm_redis_node_t *node);
static void ngx_http_llm_redis_node_open(ngx_http_llm_redis_node_t *node);
static void ngx_http_llm_redis_node_state(ngx_http_llm_redis_conn_t *rc,
    void *data);
static void ngx_http_llm_redis_node_up(ngx_http_llm_redis_node_t *node);
static void ngx_http_llm_redis_node_down(ngx_http_llm_redis_node_t *node);
static void ngx_http_llm_redis_node_retry(ngx_event_t *ev);
static void ngx_http_llm_redis_probe(ngx_http_llm_redis_node_t *node,
    ngx_uint_t on);
static void ngx_http_llm_redis_probe_timeout(ngx_event_t *ev);
static void ngx_http_llm_redis_node_ready(ngx_http_llm_redis_node_t *node);
static void ngx_http_llm_redis_role_reply(ngx_http_llm_redis_conn_t *rc,
    redisReply *reply, void *data);
static void ngx_http_llm_redis_info(ngx_http_llm_redis_conn_t *rc,
    redisReply *reply, void *data);
static ngx_int_t ngx_http_llm_redis_raw(ngx_http_llm_redis_node_t *node,
    int argc, const char **argv, const size_t *argvlen,
    ngx_http_llm_redis_reply_pt handler, void *data);
static void ngx_http_llm_redis_load(ngx_http_llm_redis_node_t *node);
static ngx_http_llm_redis_cmd_t *ngx_http_llm_redis_send(
    ngx_http_llm_redis_t *redis, int argc, const char **argv,
    const size_t *argvlen, ngx_http_llm_redis_pt handler, void *data,
    ngx_uint_t script, ngx_http_llm_redis_node_t *node);
static ngx_int_t ngx_http_llm_redis_dispatch(ngx_http_llm_redis_cmd_t *cmd,
    ngx_http_llm_redis_node_t *node);
static void ngx_http_llm_redis_reply(ngx_http_llm_redis_conn_t *rc,
    redisReply *reply, void *data);
static ngx_int_t ngx_http_llm_redis_redirected(
    ngx_http_llm_redis_cmd_t *cmd, redisReply *reply);
static void ngx_http_llm_redis_deliver(ngx_http_llm_redis_cmd_t *cmd,
    redisReply *reply);
static void ngx_http_llm_redis_free(ngx_http_llm_redis_cmd_t *cmd);
static void ngx_http_llm_redis_timeout(ngx_event_t *ev);
static void ngx_http_llm_redis_wait(ngx_http_llm_redis_cmd_t *cmd);
static void ngx_http_llm_redis_again(ngx_event_t *ev);
static void ngx_http_llm_redis_reset_handler(ngx_event_t *ev);
static void ngx_http_llm_redis_refresh(ngx_event_t *ev);
static void ngx_http_llm_redis_refresh_later(ngx_http_llm_redis_t *redis,
    ngx_msec_t delay);
static void ngx_http_llm_redis_slots_reply(ngx_http_llm_redis_conn_t *rc,
    redisReply *reply, void *data);
static void ngx_http_llm_redis_sentinel_reply(ngx_http_llm_redis_conn_t *rc,
    redisReply *reply, void *data);
static void ngx_http_llm_redis_watch_reply(ngx_http_llm_redis_conn_t *rc,
    redisReply *reply, void *data);
static void ngx_http_llm_redis_primary_at(ngx_http_llm_redis_t *redis,
    u_char *host, size_t len, in_port_t port);


static ngx_http_llm_redis_t        ngx_http_llm_redis_roles[2];
static ngx_http_llm_redis_t       *ngx_http_llm_redis_role[2];
static ngx_log_t                  *ngx_http_llm_redis_log;
static ngx_uint_t                  ngx_http_llm_redis_exiting;
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
 * llm_redis | llm_cache_redis ADDRESS [user=NAME]
 *     [password_file=F | password_env=V] [db=N] [timeout=T]
 *
 * ADDRESS: 127.0.0.1:6379 | unix:/path | redis://[user@]host[:port][/db]
 *     | rediss://... | redis-sentinel://host:port,.../master
 *     | rediss-sentinel://... | redis-cluster://host:port,...
 *     | rediss-cluster://...
 */

char *
ngx_http_llm_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ngx_http_llm_redis_conf_t  **slot, *rc;

    slot = (cmd->name.len == sizeof("llm_redis") - 1) ? &lmcf->redis
                                                       : &lmcf->cache_redis;

    if (*slot) {
        return "is duplicate";
    }

    rc = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_redis_conf_t));
    if (rc == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&rc->addrs, cf->pool, 1,
                       sizeof(ngx_http_llm_redis_addr_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    rc->timeout = NGX_HTTP_LLM_REDIS_TIMEOUT;
    rc->clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (ngx_http_llm_redis_parse(cf, rc) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    *slot = rc;

    return NGX_CONF_OK;
}


static char *
ngx_http_llm_redis_parse(ngx_conf_t *cf, ngx_http_llm_redis_conf_t *rc)
{
    char       *pw;
    ngx_int_t   n;
    ngx_str_t  *value, s, addr;
    ngx_uint_t  i;

    value = cf->args->elts;
    i = 1;
    addr = value[1];

    if (ngx_http_llm_redis_url(cf, rc, &addr) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "password_env=", 13) == 0) {
            pw = getenv((char *) value[i].data + 13);

            if (pw == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\": environment variable "
                                   "\"%s\" is not set",
                                   &value[0], value[i].data + 13);
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

        if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" takes no password in the "
                               "configuration: use \"password_file=\" or "
                               "\"password_env=\"", &value[0]);
            return NGX_CONF_ERROR;
        }

        if (ngx_strncmp(value[i].data, "user=", 5) == 0) {
            rc->user.data = value[i].data + 5;
            rc->user.len = value[i].len - 5;

            if (ngx_http_llm_redis_user_valid(&rc->user) != NGX_OK) {
                goto invalid;
            }

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
                           "\"%V\" user \"%V\" needs "
                           "\"password_file=\" or \"password_env=\"",
                           &value[0], &rc->user);
        return NGX_CONF_ERROR;
    }

    if (rc->mode == NGX_HTTP_LLM_REDIS_CLUSTER && rc->db) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": a Redis Cluster has database 0 only",
                           &value[0]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid \"%V\" parameter \"%V\"", &value[0],
                       &value[i]);
    return NGX_CONF_ERROR;
}


/*
 * SCHEME://[user@]host:port[,host:port...][/db | /master]: the mode, the
 * addresses, the ACL user and the database or Sentinel's name of the
 * primary; a password never comes from the configuration's text
 */

static ngx_int_t
ngx_http_llm_redis_url(ngx_conf_t *cf, ngx_http_llm_redis_conf_t *rc,
    ngx_str_t *addr)
{
    u_char     *at, *slash, *last, *p, *comma;
    ngx_int_t   n;
    ngx_str_t   scheme, one, *value;

    value = cf->args->elts;
    last = addr->data + addr->len;

    at = ngx_strlcasestrn(addr->data, last, (u_char *) "://", 3 - 1);

    if (at == NULL) {
        return ngx_http_llm_redis_addr(cf, rc, addr);
    }

    scheme.data = addr->data;
    scheme.len = at - addr->data;

    /* rediss, rediss-sentinel, rediss-cluster */
    rc->tls = (scheme.len >= 6 && (scheme.data[5] == 's'
                                   || scheme.data[5] == 'S'));

    if (ngx_http_llm_is_lit(scheme.data, scheme.len, "redis")
        || ngx_http_llm_is_lit(scheme.data, scheme.len, "rediss"))
    {
        rc->mode = NGX_HTTP_LLM_REDIS_SINGLE;

    } else if (ngx_http_llm_is_lit(scheme.data, scheme.len, "redis-sentinel")
               || ngx_http_llm_is_lit(scheme.data, scheme.len,
                                      "rediss-sentinel"))
    {
        rc->mode = NGX_HTTP_LLM_REDIS_SENTINEL;

    } else if (ngx_http_llm_is_lit(scheme.data, scheme.len, "redis-cluster")
               || ngx_http_llm_is_lit(scheme.data, scheme.len,
                                      "rediss-cluster"))
    {
        rc->mode = NGX_HTTP_LLM_REDIS_CLUSTER;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" does not know \"%V://\" addresses",
                           &value[0], &scheme);
        return NGX_ERROR;
    }

    p = at + 3;

    at = ngx_strlchr(p, last, '@');

    if (at) {
        rc->user.data = p;
        rc->user.len = at - p;

        if (ngx_strlchr(rc->user.data, at, ':')) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" takes no password in its "
                               "address: use \"password_file=\" or "
                               "\"password_env=\"", &value[0]);
            return NGX_ERROR;
        }

        if (ngx_http_llm_redis_user_valid(&rc->user) != NGX_OK) {
            goto invalid;
        }

        p = at + 1;
    }

    slash = ngx_strlchr(p, last, '/');

    if (slash) {
        if (rc->mode == NGX_HTTP_LLM_REDIS_SENTINEL) {
            rc->master.data = slash + 1;
            rc->master.len = last - slash - 1;

        } else {
            n = ngx_atoi(slash + 1, last - slash - 1);
            if (n == NGX_ERROR) {
                goto invalid;
            }

            rc->db = n;
        }

        last = slash;
    }

    if (rc->mode == NGX_HTTP_LLM_REDIS_SENTINEL && rc->master.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs the primary's name: "
                           "redis-sentinel://host:port,.../NAME", &value[0]);
        return NGX_ERROR;
    }

    for ( ;; ) {
        comma = ngx_strlchr(p, last, ',');

        one.data = p;
        one.len = (comma ? comma : last) - p;

        if (one.len == 0 || ngx_strlchr(one.data, one.data + one.len, '/')
            || (one.len > 5 && ngx_strncmp(one.data, "unix:", 5) == 0))
        {
            goto invalid;
        }

        if (ngx_http_llm_redis_addr(cf, rc, &one) != NGX_OK) {
            return NGX_ERROR;
        }

        if (comma == NULL) {
            break;
        }

        p = comma + 1;
    }

    if (rc->mode == NGX_HTTP_LLM_REDIS_SINGLE && rc->addrs.nelts > 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": more than one address is for "
                           "redis-sentinel:// or redis-cluster://",
                           &value[0]);
        return NGX_ERROR;
    }

    return NGX_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid \"%V\" address \"%V\"", &value[0],
                       &value[1]);
    return NGX_ERROR;
}


/* host[:port] or unix:/path; a name is resolved later, with "resolver" */

static ngx_int_t
ngx_http_llm_redis_addr(ngx_conf_t *cf, ngx_http_llm_redis_conf_t *rc,
    ngx_str_t *addr)
{
    u_char                     *p;
    ngx_url_t                   u;
    ngx_str_t                  *value;
    ngx_http_llm_redis_addr_t  *a;

    value = cf->args->elts;

    if (rc->addrs.nelts == NGX_HTTP_LLM_REDIS_ADDRS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" takes at most %d addresses", &value[0],
                           NGX_HTTP_LLM_REDIS_ADDRS_MAX);
        return NGX_ERROR;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *addr;
    u.default_port = NGX_HTTP_LLM_REDIS_PORT;
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.host.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"%V\" address \"%V\"%s%s", &value[0],
                           addr, u.err ? ": " : "", u.err ? u.err : "");
        return NGX_ERROR;
    }

    a = ngx_array_push(&rc->addrs);
    if (a == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(a, sizeof(ngx_http_llm_redis_addr_t));

    if (u.family == AF_UNIX) {
        if (rc->tls) {
            goto invalid;
        }

        a->addr = u.addrs[0];
        a->name = u.addrs[0].name;
        a->host = a->name;
        return NGX_OK;
    }

    /* a bracketed IPv6 address is matched and connected to without them */

    if (u.host.len > 2 && u.host.data[0] == '[') {
        u.host.data++;
        u.host.len -= 2;
    }

    if (u.host.len > NGX_HTTP_LLM_REDIS_HOST_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" host \"%V\" is longer than %d bytes",
                           &value[0], &u.host, NGX_HTTP_LLM_REDIS_HOST_MAX);
        return NGX_ERROR;
    }

    p = ngx_pnalloc(cf->pool, u.host.len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_cpystrn(p, u.host.data, u.host.len + 1);

    a->host.data = p;
    a->host.len = u.host.len;
    a->port = u.port;

    a->name.data = ngx_pnalloc(cf->pool, u.host.len + 2 + NGX_INT_T_LEN + 1);
    if (a->name.data == NULL) {
        return NGX_ERROR;
    }

    a->name.len = ngx_sprintf(a->name.data, "%V:%d", &a->host, (int) u.port)
                  - a->name.data;

    return NGX_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\": a unix: socket takes no TLS", &value[0]);
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
    ngx_str_t        *dname;
    ngx_file_info_t   fi;

    dname = cf->args->elts;
    file = *name;

    if (file.len == 0 || ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"%V\" password_file", dname);
        return NGX_ERROR;
    }

    fd = ngx_open_file(file.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%V\" cannot open password_file \"%V\"",
                           dname, &file);
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
                           "\"%V\" cannot read a password from "
                           "password_file \"%V\"", dname, &file);
        return NGX_ERROR;
    }

    last = p + n;

    while (last > p && (last[-1] == '\n' || last[-1] == '\r')) {
        last--;
    }

    if (last == p || ngx_strlchr(p, last, '\n') || ngx_strlchr(p, last, '\r')) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" password_file \"%V\" must hold "
                           "one line", dname, &file);
        return NGX_ERROR;
    }

    *last = '\0';

    rc->password.data = p;
    rc->password.len = last - p;

    return NGX_OK;
}



/*
 * At the end of http{}: the TLS settings given to both roles, their TLS
 * contexts made, and a name in an address needs a resolver
 */

char *
ngx_http_llm_redis_init_conf(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf)
{
    ngx_uint_t                  i, r;
    ngx_http_llm_redis_addr_t  *a;
    ngx_http_llm_redis_conf_t  *rc, *roles[2];
    ngx_http_core_loc_conf_t   *clcf;

    ngx_conf_init_value(lmcf->redis_ssl_verify, 1);

    if (lmcf->redis_ssl_certificate.len
        && lmcf->redis_ssl_certificate_key.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_redis_ssl_certificate\" needs "
                           "\"llm_redis_ssl_certificate_key\"");
        return NGX_CONF_ERROR;
    }

    if (lmcf->cache_redis && lmcf->redis == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_cache_redis\" needs \"llm_redis\"");
        return NGX_CONF_ERROR;
    }

    roles[0] = lmcf->redis;
    roles[1] = lmcf->cache_redis;

    for (r = 0; r < 2; r++) {
        rc = roles[r];

        if (rc == NULL) {
            continue;
        }

        rc->verify = lmcf->redis_ssl_verify;
        rc->ssl_trusted = lmcf->redis_ssl_trusted;
        rc->ssl_certificate = lmcf->redis_ssl_certificate;
        rc->ssl_certificate_key = lmcf->redis_ssl_certificate_key;

        if (ngx_http_llm_redis_conn_ssl(cf, rc) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        a = rc->addrs.elts;

        for (i = 0; i < rc->addrs.nelts; i++) {
            if (a[i].addr.sockaddr
                || ngx_inet_addr(a[i].host.data, a[i].host.len)
                   != INADDR_NONE
#if (NGX_HAVE_INET6)
                || ngx_inet6_addr(a[i].host.data, a[i].host.len, NULL)
                   == NGX_OK
#endif
                )
            {
                continue;
            }

            clcf = rc->clcf;

            /* without "resolver", http{} has one with no servers */

            if (clcf->resolver == NULL
                || clcf->resolver == NGX_CONF_UNSET_PTR
                || clcf->resolver->connections.nelts == 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%s\" host \"%V\" is a name: it "
                                   "needs a \"resolver\" in http{}",
                                   r ? "llm_cache_redis" : "llm_redis",
                                   &a[i].host);
                return NGX_CONF_ERROR;
            }
        }
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_llm_redis_init(ngx_cycle_t *cycle, ngx_http_llm_main_conf_t *lmcf)
{
    u_char                        md[SHA_DIGEST_LENGTH];
    ngx_uint_t                    i;
    ngx_http_conf_ctx_t          *hc;
    ngx_http_core_loc_conf_t     *clcf;
    ngx_http_llm_redis_script_t  *sc;

    for (i = 0; i < NGX_HTTP_LLM_SCRIPT_N; i++) {
        sc = &ngx_http_llm_redis_scripts[i];

        SHA1((u_char *) sc->source, ngx_strlen(sc->source), md);
        ngx_hex_dump(sc->sha, md, SHA_DIGEST_LENGTH);
    }

    ngx_http_llm_redis_log = cycle->log;
    ngx_http_llm_redis_exiting = 0;

    /* the http{} level resolver: a dummy one unless "resolver" is set */

    hc = (ngx_http_conf_ctx_t *) cycle->conf_ctx[ngx_http_module.index];
    clcf = hc->loc_conf[ngx_http_core_module.ctx_index];

    lmcf->redis->resolver = clcf->resolver;
    lmcf->redis->resolver_timeout = clcf->resolver_timeout;

    if (clcf->resolver_timeout == NGX_CONF_UNSET_MSEC) {
        /* not merged at the http{} level: nginx's own default */
        lmcf->redis->resolver_timeout = 30000;
    }

    /* a Redis that is down must not keep the worker from starting */

    if (ngx_http_llm_redis_role_init(cycle, &ngx_http_llm_redis_roles[0],
                                     lmcf->redis, NGX_HTTP_LLM_REDIS_MAIN)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_llm_redis_role[NGX_HTTP_LLM_REDIS_MAIN] =
        &ngx_http_llm_redis_roles[0];
    ngx_http_llm_redis_role[NGX_HTTP_LLM_REDIS_CACHE] =
        &ngx_http_llm_redis_roles[0];

    if (lmcf->cache_redis) {
        lmcf->cache_redis->resolver = clcf->resolver;
        lmcf->cache_redis->resolver_timeout =
            lmcf->redis->resolver_timeout;

        if (ngx_http_llm_redis_role_init(cycle, &ngx_http_llm_redis_roles[1],
                                         lmcf->cache_redis,
                                         NGX_HTTP_LLM_REDIS_CACHE)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_http_llm_redis_role[NGX_HTTP_LLM_REDIS_CACHE] =
            &ngx_http_llm_redis_roles[1];
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_redis_role_init(ngx_cycle_t *cycle, ngx_http_llm_redis_t *redis,
    ngx_http_llm_redis_conf_t *conf, ngx_uint_t role)
{
    ngx_uint_t                  i;
    ngx_http_llm_redis_addr_t  *a;
    ngx_http_llm_redis_node_t  *node;

    ngx_memzero(redis, sizeof(ngx_http_llm_redis_t));

    redis->conf = conf;
    redis->role = role;

    redis->sconf = *conf;
    ngx_str_null(&redis->sconf.user);
    ngx_str_null(&redis->sconf.password);
    redis->sconf.db = 0;

    redis->refresh.handler = ngx_http_llm_redis_refresh;
    redis->refresh.data = redis;
    redis->refresh.log = cycle->log;
    redis->refresh.cancelable = 1;
    redis->refresh_backoff = NGX_HTTP_LLM_REDIS_BACKOFF_MIN;

    redis->reset.handler = ngx_http_llm_redis_reset_handler;
    redis->reset.data = redis;
    redis->reset.log = cycle->log;

    if (ngx_array_init(&redis->nodes, cycle->pool, 8, sizeof(void *))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    a = conf->addrs.elts;

    switch (conf->mode) {

    case NGX_HTTP_LLM_REDIS_SINGLE:
        node = ngx_http_llm_redis_node(redis, NGX_HTTP_LLM_NODE_DATA,
                                       a[0].host.data, a[0].host.len,
                                       a[0].port);
        if (node == NULL) {
            return NGX_ERROR;
        }

        if (a[0].addr.sockaddr) {
            node->conn.addr = a[0].addr;
        }

        node->conn.name = a[0].name;
        redis->primary = node;

        ngx_http_llm_redis_node_open(node);
        break;

    case NGX_HTTP_LLM_REDIS_SENTINEL:
        redis->sentinel = ngx_http_llm_redis_node(redis,
                                                  NGX_HTTP_LLM_NODE_SENTINEL,
                                                  a[0].host.data,
                                                  a[0].host.len, a[0].port);
        redis->watch = ngx_http_llm_redis_node(redis, NGX_HTTP_LLM_NODE_WATCH,
                                               a[0].host.data, a[0].host.len,
                                               a[0].port);
        redis->primary = ngx_http_llm_redis_node(redis,
                                                 NGX_HTTP_LLM_NODE_DATA,
                                                 a[0].host.data,
                                                 a[0].host.len, a[0].port);
        if (redis->sentinel == NULL || redis->watch == NULL
            || redis->primary == NULL)
        {
            return NGX_ERROR;
        }

        redis->watch->conn.subscriber = 1;

        ngx_http_llm_redis_node_open(redis->sentinel);
        ngx_http_llm_redis_node_open(redis->watch);
        break;

    default: /* NGX_HTTP_LLM_REDIS_CLUSTER */
        redis->slots = ngx_calloc(NGX_HTTP_LLM_REDIS_SLOTS * sizeof(uint16_t),
                                  cycle->log);
        if (redis->slots == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < conf->addrs.nelts; i++) {
            if (ngx_http_llm_redis_node(redis, NGX_HTTP_LLM_NODE_DATA,
                                        a[i].host.data, a[i].host.len,
                                        a[i].port)
                == NULL)
            {
                return NGX_ERROR;
            }
        }

        ngx_http_llm_redis_refresh(&redis->refresh);
        break;
    }

    return NGX_OK;
}


void
ngx_http_llm_redis_exit(ngx_cycle_t *cycle)
{
    ngx_uint_t  i;

    /*
     * no reconnect from a state handler on the way out, and no command
     * sent from a handler told of a closed one: its node may be gone
     */
    ngx_http_llm_redis_exiting = 1;
    ngx_http_llm_redis_role[0] = NULL;
    ngx_http_llm_redis_role[1] = NULL;

    for (i = 0; i < 2; i++) {
        if (ngx_http_llm_redis_roles[i].conf) {
            ngx_http_llm_redis_role_exit(&ngx_http_llm_redis_roles[i]);
        }
    }
}


static void
ngx_http_llm_redis_role_exit(ngx_http_llm_redis_t *redis)
{
    ngx_uint_t                   i;
    ngx_http_llm_redis_node_t  **nodes;

    if (redis->refresh.timer_set) {
        ngx_del_timer(&redis->refresh);
    }

    if (redis->reset.posted) {
        ngx_delete_posted_event(&redis->reset);
    }

    nodes = redis->nodes.elts;

    for (i = 0; i < redis->nodes.nelts; i++) {
        ngx_http_llm_redis_node_free(nodes[i]);
    }

    redis->nodes.nelts = 0;

    if (redis->slots) {
        ngx_free(redis->slots);
        redis->slots = NULL;
    }

    if (redis->primaries) {
        ngx_free(redis->primaries);
        redis->primaries = NULL;
    }

    redis->conf = NULL;
}


/*
 * A node of the role, found by its address or made; a cluster learns of
 * its nodes from CLUSTER SLOTS and redirections
 */

static ngx_http_llm_redis_node_t *
ngx_http_llm_redis_node(ngx_http_llm_redis_t *redis, ngx_uint_t kind,
    u_char *host, size_t len, in_port_t port)
{
    ngx_uint_t                   i;
    ngx_http_llm_redis_node_t   *node, **nodes, **slot;

    if (len == 0 || len > NGX_HTTP_LLM_REDIS_HOST_MAX) {
        return NULL;
    }

    nodes = redis->nodes.elts;

    if (kind == NGX_HTTP_LLM_NODE_DATA
        && redis->conf->mode == NGX_HTTP_LLM_REDIS_CLUSTER)
    {
        for (i = 0; i < redis->nodes.nelts; i++) {
            node = nodes[i];

            if (node->conn.port == port && node->conn.host.len == len
                && ngx_strncmp(node->conn.host.data, host, len) == 0)
            {
                return node;
            }
        }

        if (redis->nodes.nelts >= NGX_HTTP_LLM_REDIS_NODES_MAX) {
            return NULL;
        }
    }

    node = ngx_calloc(sizeof(ngx_http_llm_redis_node_t),
                      ngx_http_llm_redis_log);
    if (node == NULL) {
        return NULL;
    }

    slot = ngx_array_push(&redis->nodes);
    if (slot == NULL) {
        ngx_free(node);
        return NULL;
    }

    *slot = node;

    node->redis = redis;
    node->kind = kind;
    node->index = redis->nodes.nelts - 1;
    node->backoff = NGX_HTTP_LLM_REDIS_BACKOFF_MIN;

    node->retry.handler = ngx_http_llm_redis_node_retry;
    node->retry.data = node;
    node->retry.log = ngx_http_llm_redis_log;
    node->retry.cancelable = 1;

    node->probe.handler = ngx_http_llm_redis_probe_timeout;
    node->probe.data = node;
    node->probe.log = ngx_http_llm_redis_log;
    node->probe.cancelable = 1;

    ngx_http_llm_redis_node_at(node, host, len, port);

    node->conn.resolver = redis->conf->resolver;
    node->conn.resolver_timeout = redis->conf->resolver_timeout;
    node->conn.conf = (kind == NGX_HTTP_LLM_NODE_DATA) ? redis->conf
                                                        : &redis->sconf;
    node->conn.log = ngx_http_llm_redis_log;
    node->conn.handler = ngx_http_llm_redis_node_state;
    node->conn.data = node;

    return node;
}


/* where a node is: its host (at most NGX_HTTP_LLM_REDIS_HOST_MAX), name */

static void
ngx_http_llm_redis_node_at(ngx_http_llm_redis_node_t *node, u_char *host,
    size_t len, in_port_t port)
{
    u_char  *p;

    /* host may be the node's own text, as sentinels are taken in turn */
    p = ngx_movemem(node->text, host, len);
    *p++ = '\0';

    node->conn.host.data = node->text;
    node->conn.host.len = len;
    node->conn.name.data = p;
    node->conn.name.len = ngx_sprintf(p, "%*s:%d", len, node->text,
                                      (int) port)
                          - p;

    ngx_http_llm_redis_conn_set_host(&node->conn, node->text, len, port);
}


static void
ngx_http_llm_redis_node_free(ngx_http_llm_redis_node_t *node)
{
    if (node->retry.timer_set) {
        ngx_del_timer(&node->retry);
    }

    ngx_http_llm_redis_probe(node, 0);

    ngx_http_llm_redis_conn_close(&node->conn, NULL);
    ngx_free(node);
}


static void
ngx_http_llm_redis_node_open(ngx_http_llm_redis_node_t *node)
{
    if (node->retry.timer_set) {
        ngx_del_timer(&node->retry);
    }

    node->ready = 0;
    ngx_http_llm_redis_conn_open(&node->conn);
}


static void
ngx_http_llm_redis_node_state(ngx_http_llm_redis_conn_t *rc, void *data)
{
    ngx_http_llm_redis_node_t  *node = data;

    if (rc->state == NGX_HTTP_LLM_REDIS_UP) {
        ngx_http_llm_redis_node_up(node);

    } else {
        ngx_http_llm_redis_node_down(node);
    }
}


static void
ngx_http_llm_redis_node_up(ngx_http_llm_redis_node_t *node)
{
    size_t                 argvlen[3];
    const char            *argv[3];
    ngx_http_llm_redis_t  *redis;

    redis = node->redis;
    node->backoff = NGX_HTTP_LLM_REDIS_BACKOFF_MIN;

    switch (node->kind) {

    case NGX_HTTP_LLM_NODE_SENTINEL:
        ngx_http_llm_redis_refresh(&redis->refresh);
        return;

    case NGX_HTTP_LLM_NODE_WATCH:
        ngx_http_llm_arg_lit(argv, argvlen, 0, "SUBSCRIBE");
        ngx_http_llm_arg_lit(argv, argvlen, 1, "+switch-master");

        if (ngx_http_llm_redis_raw(node, 2, argv, argvlen,
                                   ngx_http_llm_redis_watch_reply, redis)
            != NGX_OK)
        {
            ngx_http_llm_redis_conn_close(&node->conn, NULL);
            ngx_http_llm_redis_node_down(node);
        }

        return;
    }

    ngx_http_llm_redis_load(node);

    switch (redis->conf->mode) {

    case NGX_HTTP_LLM_REDIS_SENTINEL:
        /* what Sentinel named may be demoted since: it must say so */
        ngx_http_llm_arg_lit(argv, argvlen, 0, "ROLE");

        if (ngx_http_llm_redis_raw(node, 1, argv, argvlen,
                                   ngx_http_llm_redis_role_reply, node)
            != NGX_OK)
        {
            ngx_http_llm_redis_conn_close(&node->conn, NULL);
            ngx_http_llm_redis_node_down(node);
            return;
        }

        ngx_http_llm_redis_probe(node, 1);
        return;

    case NGX_HTTP_LLM_REDIS_CLUSTER:
        if (node->want_slots || !redis->mapped) {
            node->want_slots = 0;

            ngx_http_llm_arg_lit(argv, argvlen, 0, "CLUSTER");
            ngx_http_llm_arg_lit(argv, argvlen, 1, "SLOTS");

            if (ngx_http_llm_redis_raw(node, 2, argv, argvlen,
                                       ngx_http_llm_redis_slots_reply, redis)
                == NGX_OK)
            {
                ngx_http_llm_redis_probe(node, 1);
            }
        }

        node->ready = 1;

        if (redis->mapped) {
            ngx_http_llm_redis_node_ready(node);
        }

        return;

    default:
        ngx_http_llm_arg_lit(argv, argvlen, 0, "INFO");
        ngx_http_llm_arg_lit(argv, argvlen, 1, "server");

        (void) ngx_http_llm_redis_raw(node, 2, argv, argvlen,
                                      ngx_http_llm_redis_info, NULL);

        node->ready = 1;
        ngx_http_llm_redis_node_ready(node);
    }
}


/* a data node takes commands: whoever waits for one is told */

static void
ngx_http_llm_redis_node_ready(ngx_http_llm_redis_node_t *node)
{
    ngx_uint_t  i;

    ngx_log_error(NGX_LOG_NOTICE, ngx_http_llm_redis_log, 0,
                  "llm: redis %V connected", &node->conn.name);

    if (node->redis->role != NGX_HTTP_LLM_REDIS_MAIN) {
        return;
    }

    for (i = 0; i < ngx_http_llm_redis_nhooks; i++) {
        ngx_http_llm_redis_hooks[i].handler(ngx_http_llm_redis_hooks[i].data);
    }
}


/*
 * A node went down: a single node is connected to again after a backoff,
 * a primary is asked of the sentinels again, and a cluster's node is
 * opened again when a command needs it, after its map is asked for
 */

static void
ngx_http_llm_redis_node_down(ngx_http_llm_redis_node_t *node)
{
    ngx_http_llm_redis_t  *redis;

    node->ready = 0;

    if (ngx_http_llm_redis_exiting) {
        return;
    }

    redis = node->redis;

    ngx_log_error(NGX_LOG_ERR, ngx_http_llm_redis_log, 0,
                  "llm: redis %V is down, retrying in %Mms",
                  &node->conn.name, node->backoff);

    node->down_until = ngx_current_msec + node->backoff;

    if (node->retry.timer_set) {
        ngx_del_timer(&node->retry);
    }

    if (node->kind != NGX_HTTP_LLM_NODE_DATA
        || redis->conf->mode == NGX_HTTP_LLM_REDIS_SINGLE)
    {
        ngx_add_timer(&node->retry, node->backoff);

    } else if (redis->conf->mode == NGX_HTTP_LLM_REDIS_SENTINEL) {
        ngx_http_llm_redis_refresh_later(redis, node->backoff);

    } else {
        ngx_http_llm_redis_refresh_later(redis, NGX_HTTP_LLM_REDIS_REFRESH);
    }

    node->backoff = ngx_min(node->backoff * 2,
                            NGX_HTTP_LLM_REDIS_BACKOFF_MAX);
}


static void
ngx_http_llm_redis_node_retry(ngx_event_t *ev)
{
    ngx_uint_t                  n;
    ngx_http_llm_redis_t       *redis;
    ngx_http_llm_redis_addr_t  *a;
    ngx_http_llm_redis_node_t  *node = ev->data;

    redis = node->redis;

    if (node->kind != NGX_HTTP_LLM_NODE_DATA) {
        /* the next sentinel: one that is down must not stop discovery */
        a = redis->conf->addrs.elts;
        n = redis->conf->addrs.nelts;
        redis->next = (redis->next + 1) % n;
        a = &a[redis->next];

        ngx_http_llm_redis_node_at(node, a->host.data, a->host.len, a->port);
    }

    ngx_http_llm_redis_node_open(node);
}


/*
 * The module's own questions (ROLE, CLUSTER SLOTS, SENTINEL ...) have the
 * command timeout too: a node that takes them and never answers would
 * otherwise leave the role waiting for good
 */

static void
ngx_http_llm_redis_probe(ngx_http_llm_redis_node_t *node, ngx_uint_t on)
{
    if (node->probe.timer_set) {
        ngx_del_timer(&node->probe);
    }

    if (on) {
        ngx_add_timer(&node->probe, node->redis->conf->timeout);
    }
}


static void
ngx_http_llm_redis_probe_timeout(ngx_event_t *ev)
{
    ngx_http_llm_redis_node_t  *node = ev->data;

    if (node->conn.state == NGX_HTTP_LLM_REDIS_CLOSED) {
        return;
    }

    ngx_http_llm_redis_conn_close(&node->conn, NULL);

    ngx_log_error(NGX_LOG_ERR, ngx_http_llm_redis_log, 0,
                  "llm: redis %V did not answer in time", &node->conn.name);

    ngx_http_llm_redis_node_down(node);
}


static void
ngx_http_llm_redis_role_reply(ngx_http_llm_redis_conn_t *rc,
    redisReply *reply, void *data)
{
    ngx_http_llm_redis_node_t  *node = data;

    ngx_http_llm_redis_probe(node, 0);

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
        && reply->element[0]->type == REDIS_REPLY_STRING
        && ngx_http_llm_is_lit(reply->element[0]->str,
                               reply->element[0]->len, "master"))
    {
        node->ready = 1;
        node->redis->refresh_backoff = NGX_HTTP_LLM_REDIS_BACKOFF_MIN;
        ngx_http_llm_redis_node_ready(node);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_http_llm_redis_log, 0,
                  "llm: redis %V is not a primary (yet), asking the "
                  "sentinels again", &rc->name);

    ngx_http_llm_redis_conn_close(rc, NULL);
    ngx_http_llm_redis_refresh_later(node->redis,
                                     NGX_HTTP_LLM_REDIS_REFRESH);
}


/*
 * What the scripts need: Redis 5.0 (writes after TIME and HSCAN, which
 * older versions refuse in scripts unless told to replicate effects)
 */

static void
ngx_http_llm_redis_info(ngx_http_llm_redis_conn_t *rc, redisReply *reply,
    void *data)
{
    char       *v;
    ngx_int_t   major;

    if (reply == NULL || reply->type != REDIS_REPLY_STRING) {
        return;
    }

    v = ngx_strstr(reply->str, "redis_version:");

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

    if (ngx_strstr(reply->str, "redis_mode:cluster")) {
        ngx_log_error(NGX_LOG_ALERT, ngx_http_llm_redis_log, 0,
                      "llm: redis %V runs as a cluster: its address wants "
                      "redis-cluster://", &rc->name);
    }
}


/* a command of the module's own, on one node, with its own handler */

static ngx_int_t
ngx_http_llm_redis_raw(ngx_http_llm_redis_node_t *node, int argc,
    const char **argv, const size_t *argvlen,
    ngx_http_llm_redis_reply_pt handler, void *data)
{
    char       *buf;
    long long   len;
    ngx_int_t   rc;

    len = redisFormatCommandArgv(&buf, argc, argv, argvlen);
    if (len < 0) {
        return NGX_ERROR;
    }

    rc = ngx_http_llm_redis_conn_send(&node->conn, buf, (size_t) len,
                                      handler, data)
         ? NGX_OK : NGX_ERROR;

    redisFreeCommand(buf);

    return rc;
}


/* on every connect, ahead of any EVALSHA on that connection */

static void
ngx_http_llm_redis_load(ngx_http_llm_redis_node_t *node)
{
    size_t       argvlen[3];
    ngx_uint_t   i;
    const char  *argv[3];

    ngx_http_llm_arg_lit(argv, argvlen, 0, "SCRIPT");
    ngx_http_llm_arg_lit(argv, argvlen, 1, "LOAD");

    for (i = 0; i < NGX_HTTP_LLM_SCRIPT_N; i++) {
        argv[2] = ngx_http_llm_redis_scripts[i].source;
        argvlen[2] = ngx_strlen(argv[2]);
        (void) ngx_http_llm_redis_raw(node, 3, argv, argvlen, NULL, NULL);
    }
}


ngx_uint_t
ngx_http_llm_redis_ready(ngx_uint_t role)
{
    ngx_http_llm_redis_t  *redis;

    redis = ngx_http_llm_redis_role[role];

    if (redis == NULL) {
        return 0;
    }

    if (redis->conf->mode == NGX_HTTP_LLM_REDIS_CLUSTER) {
        return redis->mapped;
    }

    return redis->primary->ready;
}


/*
 * handler(data) is called each time a connection of llm_redis is ready,
 * after the scripts are loaded on it; registered once per process
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
ngx_http_llm_redis_command(ngx_uint_t role, int argc, const char **argv,
    const size_t *argvlen, ngx_http_llm_redis_pt handler, void *data)
{
    return ngx_http_llm_redis_send(ngx_http_llm_redis_role[role], argc, argv,
                                   argvlen, handler, data, 0, NULL);
}


/*
 * The primaries a command without a key must visit one by one, as SCAN:
 * one but on a cluster
 */

ngx_uint_t
ngx_http_llm_redis_primaries(ngx_uint_t role)
{
    ngx_http_llm_redis_t  *redis;

    redis = ngx_http_llm_redis_role[role];

    if (redis == NULL || redis->conf->mode != NGX_HTTP_LLM_REDIS_CLUSTER) {
        return 1;
    }

    return redis->nprimaries;
}


/* as ngx_http_llm_redis_command(), to the n-th of those primaries */

ngx_http_llm_redis_cmd_t *
ngx_http_llm_redis_command_on(ngx_uint_t role, ngx_uint_t n, int argc,
    const char **argv, const size_t *argvlen, ngx_http_llm_redis_pt handler,
    void *data)
{
    ngx_http_llm_redis_t        *redis;
    ngx_http_llm_redis_node_t  **nodes, *node;

    redis = ngx_http_llm_redis_role[role];
    node = NULL;

    if (redis && redis->conf->mode == NGX_HTTP_LLM_REDIS_CLUSTER) {
        if (n >= redis->nprimaries) {
            return NULL;
        }

        nodes = redis->nodes.elts;
        node = nodes[redis->primaries[n]];
    }

    return ngx_http_llm_redis_send(redis, argc, argv, argvlen, handler, data,
                                   0, node);
}


/*
 * Calls one of the module's scripts, as ngx_http_llm_redis_command()
 * sends a command.  argv[0] to argv[NGX_HTTP_LLM_SCRIPT_HEAD - 1] are
 * filled here (EVALSHA, the SHA1, the number of keys); the keys and the
 * arguments follow, and argc counts them all.  A NOSCRIPT loads the
 * scripts and sends the call once more, before the handler hears of it.
 */

ngx_http_llm_redis_cmd_t *
ngx_http_llm_redis_script(ngx_uint_t role, ngx_uint_t script, int argc,
    const char **argv, size_t *argvlen, ngx_http_llm_redis_pt handler,
    void *data)
{
    ngx_http_llm_redis_script_t  *sc;

    sc = &ngx_http_llm_redis_scripts[script];

    ngx_http_llm_arg_lit(argv, argvlen, 0, "EVALSHA");
    argv[1] = (char *) sc->sha;
    argvlen[1] = NGX_HTTP_LLM_SHA1_HEX_LEN;
    argv[2] = sc->nkeys;
    argvlen[2] = ngx_strlen(sc->nkeys);

    return ngx_http_llm_redis_send(ngx_http_llm_redis_role[role], argc, argv,
                                   argvlen, handler, data, 1, NULL);
}


static ngx_http_llm_redis_cmd_t *
ngx_http_llm_redis_send(ngx_http_llm_redis_t *redis, int argc,
    const char **argv, const size_t *argvlen, ngx_http_llm_redis_pt handler,
    void *data, ngx_uint_t script, ngx_http_llm_redis_node_t *node)
{
    long long                  len;
    ngx_http_llm_redis_cmd_t  *cmd;

    if (redis == NULL || !ngx_http_llm_redis_ready(redis->role)) {
        return NULL;
    }

    cmd = ngx_calloc(sizeof(ngx_http_llm_redis_cmd_t),
                     ngx_http_llm_redis_log);
    if (cmd == NULL) {
        return NULL;
    }

    cmd->slot = NGX_DECLINED;

    if (redis->conf->mode == NGX_HTTP_LLM_REDIS_CLUSTER) {
        cmd->slot = ngx_http_llm_redis_command_slot(argc, argv, argvlen);

        if (cmd->slot == NGX_ERROR) {
            ngx_log_error(NGX_LOG_ALERT, ngx_http_llm_redis_log, 0,
                          "llm: a redis command's keys are in more than "
                          "one slot");
            ngx_free(cmd);
            return NULL;
        }
    }

    len = redisFormatCommandArgv(&cmd->buf, argc, argv, argvlen);
    if (len < 0) {
        ngx_free(cmd);
        return NULL;
    }

    cmd->len = (size_t) len;
    cmd->handler = handler;
    cmd->data = data;
    cmd->redis = redis;
    cmd->script = script;

    cmd->timer.handler = ngx_http_llm_redis_timeout;
    cmd->timer.data = cmd;
    cmd->timer.log = ngx_http_llm_redis_log;

    cmd->again.handler = ngx_http_llm_redis_again;
    cmd->again.data = cmd;
    cmd->again.log = ngx_http_llm_redis_log;

    if (ngx_http_llm_redis_dispatch(cmd, node) != NGX_OK) {
        ngx_http_llm_redis_free(cmd);
        return NULL;
    }

    ngx_add_timer(&cmd->timer, redis->conf->timeout);

    return cmd;
}


/*
 * To the node given (a redirection), or to the slot's primary, or to the
 * primary; a cluster's node that is down is opened again here
 */

static ngx_int_t
ngx_http_llm_redis_dispatch(ngx_http_llm_redis_cmd_t *cmd,
    ngx_http_llm_redis_node_t *node)
{
    size_t                       argvlen[1];
    ngx_uint_t                   i, n;
    const char                  *argv[1];
    ngx_http_llm_redis_t        *redis;
    ngx_http_llm_redis_node_t  **nodes;

    redis = cmd->redis;

    if (redis->conf->mode != NGX_HTTP_LLM_REDIS_CLUSTER) {
        node = redis->primary;

        if (!node->ready) {
            return NGX_ERROR;
        }

    } else if (node == NULL) {
        nodes = redis->nodes.elts;

        if (cmd->slot >= 0 && redis->slots[cmd->slot]) {
            node = nodes[redis->slots[cmd->slot] - 1];

        } else {
            /* no key: any node that is up */
            n = redis->nodes.nelts;

            for (i = 0; i < n; i++) {
                node = nodes[(redis->next + i) % n];

                if (node->ready) {
                    break;
                }
            }

            if (i == n) {
                return NGX_ERROR;
            }

            redis->next = (redis->next + 1) % n;
        }
    }

    if (node->conn.state == NGX_HTTP_LLM_REDIS_CLOSED) {
        if ((ngx_msec_int_t) (node->down_until - ngx_current_msec) > 0) {
            return NGX_ERROR;
        }

        ngx_http_llm_redis_node_open(node);

        if (node->conn.state == NGX_HTTP_LLM_REDIS_CLOSED) {
            return NGX_ERROR;
        }
    }

    argv[0] = NULL;

    if (cmd->asking) {
        cmd->asking = 0;

        ngx_http_llm_arg_lit(argv, argvlen, 0, "ASKING");

        if (ngx_http_llm_redis_raw(node, 1, argv, argvlen, NULL, NULL)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    cmd->wait = ngx_http_llm_redis_conn_send(&node->conn, cmd->buf, cmd->len,
                                             ngx_http_llm_redis_reply, cmd);
    if (cmd->wait == NULL) {
        if (argv[0]) {
            /* an ASKING without its command would serve the next one */
            ngx_http_llm_redis_conn_close(&node->conn, NULL);
            ngx_http_llm_redis_node_down(node);
        }

        return NGX_ERROR;
    }

    cmd->node = node;

    return NGX_OK;
}


void
ngx_http_llm_redis_cancel(ngx_http_llm_redis_cmd_t *cmd)
{
    /* a reply, whenever it comes, frees cmd; it is not sent again */

    cmd->handler = NULL;
    cmd->script = 0;

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    if (cmd->wait == NULL) {
        ngx_http_llm_redis_free(cmd);
    }
}


static void
ngx_http_llm_redis_reply(ngx_http_llm_redis_conn_t *rc, redisReply *reply,
    void *data)
{
    ngx_http_llm_redis_cmd_t  *cmd = data;

    cmd->wait = NULL;

    if (cmd->handler == NULL) {
        ngx_http_llm_redis_free(cmd);
        return;
    }

    if (reply && reply->type == REDIS_REPLY_ERROR
        && ngx_http_llm_redis_redirected(cmd, reply) == NGX_OK)
    {
        return;
    }

    ngx_http_llm_redis_deliver(cmd, reply);
}


/*
 * An error the command can get past: a lost script (a restart, SCRIPT
 * FLUSH, a new primary) is loaded and the call sent again; a cluster's
 * MOVED and ASK are followed, TRYAGAIN and CLUSTERDOWN waited out
 */

static ngx_int_t
ngx_http_llm_redis_redirected(ngx_http_llm_redis_cmd_t *cmd,
    redisReply *reply)
{
    ngx_int_t                   rc;
    ngx_str_t                   host;
    in_port_t                   port;
    ngx_uint_t                  ask, slot;
    ngx_http_llm_redis_t       *redis;
    ngx_http_llm_redis_node_t  *node;

    redis = cmd->redis;

    if (cmd->script && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        cmd->script = 0;

        ngx_log_error(NGX_LOG_WARN, ngx_http_llm_redis_log, 0,
                      "llm: redis %V lost the scripts, loading them again",
                      &cmd->node->conn.name);

        ngx_http_llm_redis_load(cmd->node);

        return ngx_http_llm_redis_dispatch(cmd, cmd->node);
    }

    if (redis->conf->mode != NGX_HTTP_LLM_REDIS_CLUSTER) {
        return NGX_DECLINED;
    }

    if (ngx_strncmp(reply->str, "TRYAGAIN", 8) == 0
        || ngx_strncmp(reply->str, "CLUSTERDOWN", 11) == 0)
    {
        /* a slot in migration, or a failover: within the timeout */

        cmd->target = NULL;
        ngx_http_llm_redis_wait(cmd);

        if (reply->str[0] == 'C') {
            ngx_http_llm_redis_refresh_later(redis,
                                             NGX_HTTP_LLM_REDIS_REFRESH);
        }

        return NGX_OK;
    }

    rc = ngx_http_llm_redis_redirect(reply->str, reply->len, &ask, &slot,
                                     &host, &port);

    if (rc != NGX_OK
        || cmd->redirects++ == NGX_HTTP_LLM_REDIS_REDIRECTS)
    {
        return NGX_DECLINED;
    }

    node = ngx_http_llm_redis_node(redis, NGX_HTTP_LLM_NODE_DATA, host.data,
                                   host.len, port);
    if (node == NULL) {
        return NGX_DECLINED;
    }

    if (ask) {
        cmd->asking = 1;

    } else {
        /* the slot moved for good: the rest of the map may have too */
        redis->slots[slot] = (uint16_t) (node->index + 1);
        ngx_http_llm_redis_refresh_later(redis, NGX_HTTP_LLM_REDIS_REFRESH);
    }

    if (cmd->redirects > NGX_HTTP_LLM_REDIS_REDIRECTS_NOW) {
        cmd->target = node;
        ngx_http_llm_redis_wait(cmd);
        return NGX_OK;
    }

    return ngx_http_llm_redis_dispatch(cmd, node);
}


/* sent again later, the wait doubling, its timer still running */

static void
ngx_http_llm_redis_wait(ngx_http_llm_redis_cmd_t *cmd)
{
    cmd->again_wait = cmd->again_wait
                      ? ngx_min(cmd->again_wait * 2,
                                NGX_HTTP_LLM_REDIS_AGAIN_MAX)
                      : NGX_HTTP_LLM_REDIS_AGAIN_MIN;

    ngx_add_timer(&cmd->again, cmd->again_wait);
}


static void
ngx_http_llm_redis_again(ngx_event_t *ev)
{
    ngx_http_llm_redis_cmd_t  *cmd = ev->data;

    if (ngx_http_llm_redis_dispatch(cmd, cmd->target) != NGX_OK) {
        ngx_http_llm_redis_deliver(cmd, NULL);
    }
}


static void
ngx_http_llm_redis_deliver(ngx_http_llm_redis_cmd_t *cmd, redisReply *reply)
{
    void                   *data;
    ngx_http_llm_redis_pt   handler;

    handler = cmd->handler;
    data = cmd->data;

    ngx_http_llm_redis_free(cmd);

    if (handler) {
        handler(reply, data);
    }
}


static void
ngx_http_llm_redis_free(ngx_http_llm_redis_cmd_t *cmd)
{
    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    if (cmd->again.timer_set) {
        ngx_del_timer(&cmd->again);
    }

    if (cmd->buf) {
        redisFreeCommand(cmd->buf);
    }

    ngx_free(cmd);
}


static void
ngx_http_llm_redis_timeout(ngx_event_t *ev)
{
    void                       *data;
    ngx_http_llm_redis_pt       handler;
    ngx_http_llm_redis_cmd_t   *cmd = ev->data;
    ngx_http_llm_redis_node_t  *node;

    ngx_log_error(NGX_LOG_WARN, ev->log, 0, "llm: redis command timed out");

    handler = cmd->handler;
    data = cmd->data;
    cmd->handler = NULL;
    node = cmd->wait ? cmd->node : NULL;

    if (node == NULL) {
        /* waiting out a TRYAGAIN: nothing else holds it */
        ngx_http_llm_redis_free(cmd);
    }

    /* else the connection still holds cmd; its late reply will free it */

    if (handler) {
        handler(NULL, data);
    }

    /*
     * a Redis that does not answer in time is treated as down: requests
     * fail fast under the location's policy until a new connection works
     */

    if (node && node->conn.state != NGX_HTTP_LLM_REDIS_CLOSED) {
        ngx_http_llm_redis_conn_close(&node->conn, "stopped answering");
        ngx_http_llm_redis_node_down(node);
    }
}


/*
 * The connection is dropped and made again at the end of this turn: not
 * from inside the reply callback that found it had to be.  Behind
 * Sentinel, the primary is asked for again.
 */

void
ngx_http_llm_redis_reset(ngx_uint_t role, const char *why)
{
    ngx_http_llm_redis_t  *redis;

    redis = ngx_http_llm_redis_role[role];

    if (redis == NULL || redis->reset.posted) {
        return;
    }

    redis->reset_why = why;
    ngx_post_event(&redis->reset, &ngx_posted_events);
}


static void
ngx_http_llm_redis_reset_handler(ngx_event_t *ev)
{
    ngx_http_llm_redis_t       *redis = ev->data;
    ngx_http_llm_redis_node_t  *node;

    if (redis->conf->mode == NGX_HTTP_LLM_REDIS_CLUSTER) {
        ngx_http_llm_redis_refresh_later(redis, 0);
        return;
    }

    node = redis->primary;

    if (node->conn.state == NGX_HTTP_LLM_REDIS_CLOSED) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_http_llm_redis_log, 0,
                  "llm: redis %V %s", &node->conn.name, redis->reset_why);

    ngx_http_llm_redis_conn_close(&node->conn, NULL);
    ngx_http_llm_redis_node_down(node);
}


static void
ngx_http_llm_redis_refresh_later(ngx_http_llm_redis_t *redis,
    ngx_msec_t delay)
{
    if (ngx_http_llm_redis_exiting || redis->refresh.timer_set) {
        return;
    }

    ngx_add_timer(&redis->refresh, delay);
}


/*
 * Asks where things are: a cluster's slot map from a node that is up (or
 * the next seed), or the primary from a sentinel
 */

static void
ngx_http_llm_redis_refresh(ngx_event_t *ev)
{
    size_t                       argvlen[3];
    ngx_uint_t                   i, n;
    const char                  *argv[3];
    ngx_http_llm_redis_t        *redis = ev->data;
    ngx_http_llm_redis_node_t   *node, **nodes;

    if (ngx_http_llm_redis_exiting) {
        return;
    }

    if (ev->timer_set) {
        ngx_del_timer(ev);
    }

    if (redis->conf->mode == NGX_HTTP_LLM_REDIS_SENTINEL) {
        node = redis->sentinel;

        if (node->conn.state != NGX_HTTP_LLM_REDIS_UP) {
            /* its state handler comes back here once it is up */
            if (node->conn.state == NGX_HTTP_LLM_REDIS_CLOSED
                && !node->retry.timer_set)
            {
                ngx_http_llm_redis_node_open(node);
            }

            return;
        }

        ngx_http_llm_arg_lit(argv, argvlen, 0, "SENTINEL");
        ngx_http_llm_arg_lit(argv, argvlen, 1, "get-master-addr-by-name");
        argv[2] = (const char *) redis->conf->master.data;
        argvlen[2] = redis->conf->master.len;

        if (ngx_http_llm_redis_raw(node, 3, argv, argvlen,
                                   ngx_http_llm_redis_sentinel_reply, redis)
            != NGX_OK)
        {
            ngx_http_llm_redis_conn_close(&node->conn, NULL);
            ngx_http_llm_redis_node_down(node);
            return;
        }

        ngx_http_llm_redis_probe(node, 1);
        return;
    }

    nodes = redis->nodes.elts;
    n = redis->nodes.nelts;

    for (i = 0; i < n; i++) {
        node = nodes[(redis->next + i) % n];

        if (node->conn.state == NGX_HTTP_LLM_REDIS_UP) {
            ngx_http_llm_arg_lit(argv, argvlen, 0, "CLUSTER");
            ngx_http_llm_arg_lit(argv, argvlen, 1, "SLOTS");

            if (ngx_http_llm_redis_raw(node, 2, argv, argvlen,
                                       ngx_http_llm_redis_slots_reply, redis)
                == NGX_OK)
            {
                ngx_http_llm_redis_probe(node, 1);
            }

            return;
        }
    }

    /* none is up: the next one, which asks once it is */

    redis->next = (redis->next + 1) % n;
    node = nodes[redis->next];
    node->want_slots = 1;

    if (node->conn.state == NGX_HTTP_LLM_REDIS_CLOSED) {
        ngx_http_llm_redis_node_open(node);
    }

    /* and again, should that one not come up either */
    ngx_http_llm_redis_refresh_later(redis, redis->refresh_backoff);

    redis->refresh_backoff = ngx_min(redis->refresh_backoff * 2,
                                     NGX_HTTP_LLM_REDIS_BACKOFF_MAX);
}


static void
ngx_http_llm_redis_slots_reply(ngx_http_llm_redis_conn_t *rc,
    redisReply *reply, void *data)
{
    ngx_http_llm_redis_t *redis = data;

    ngx_uint_t                   i, k, s, n, first;
    ngx_http_llm_redis_node_t   *node, **nodes;
    ngx_http_llm_redis_range_t  *ranges;

    ngx_http_llm_redis_probe(rc->data, 0);

    if (reply == NULL || ngx_http_llm_redis_exiting) {
        return;
    }

    ranges = ngx_alloc(NGX_HTTP_LLM_REDIS_SLOTS
                       * sizeof(ngx_http_llm_redis_range_t),
                       ngx_http_llm_redis_log);
    if (ranges == NULL) {
        return;
    }

    if (ngx_http_llm_redis_slots_parse(reply, ranges,
                                       NGX_HTTP_LLM_REDIS_SLOTS, &n)
        != NGX_OK
        || n == 0)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_http_llm_redis_log, 0,
                      "llm: redis %V gave no usable CLUSTER SLOTS",
                      &rc->name);
        ngx_free(ranges);
        ngx_http_llm_redis_refresh_later(redis, redis->refresh_backoff);
        return;
    }

    if (redis->primaries == NULL) {
        redis->primaries = ngx_alloc(NGX_HTTP_LLM_REDIS_NODES_MAX
                                     * sizeof(ngx_uint_t),
                                     ngx_http_llm_redis_log);
        if (redis->primaries == NULL) {
            ngx_free(ranges);
            return;
        }
    }

    redis->nprimaries = 0;

    for (i = 0; i < n; i++) {
        node = ngx_http_llm_redis_node(redis, NGX_HTTP_LLM_NODE_DATA,
                                       ranges[i].host.data,
                                       ranges[i].host.len, ranges[i].port);
        if (node == NULL) {
            continue;
        }

        for (k = 0; k < redis->nprimaries; k++) {
            if (redis->primaries[k] == node->index) {
                break;
            }
        }

        if (k == redis->nprimaries) {
            redis->primaries[redis->nprimaries++] = node->index;
        }

        for (s = ranges[i].start; s <= ranges[i].end; s++) {
            redis->slots[s] = (uint16_t) (node->index + 1);
        }
    }

    ngx_free(ranges);

    first = !redis->mapped;
    redis->mapped = 1;
    redis->refresh_backoff = NGX_HTTP_LLM_REDIS_BACKOFF_MIN;

    if (first) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_http_llm_redis_log, 0,
                      "llm: redis cluster mapped from %V: %ui ranges",
                      &rc->name, n);

        nodes = redis->nodes.elts;

        for (i = 0; i < redis->nodes.nelts; i++) {
            if (nodes[i]->ready) {
                ngx_http_llm_redis_node_ready(nodes[i]);
            }
        }
    }
}


/* SENTINEL get-master-addr-by-name: [host, port], or nil */

static void
ngx_http_llm_redis_sentinel_reply(ngx_http_llm_redis_conn_t *rc,
    redisReply *reply, void *data)
{
    ngx_http_llm_redis_t *redis = data;

    ngx_int_t  port;

    ngx_http_llm_redis_probe(rc->data, 0);

    if (reply == NULL || ngx_http_llm_redis_exiting) {
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_http_llm_redis_log, 0,
                      "llm: redis sentinel %V does not know the primary "
                      "\"%V\"", &rc->name, &redis->conf->master);

        ngx_http_llm_redis_refresh_later(redis, redis->refresh_backoff);
        redis->refresh_backoff = ngx_min(redis->refresh_backoff * 2,
                                         NGX_HTTP_LLM_REDIS_BACKOFF_MAX);
        return;
    }

    port = ngx_atoi((u_char *) reply->element[1]->str,
                    reply->element[1]->len);

    if (port < 1 || port > 65535) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_llm_redis_log, 0,
                      "llm: redis sentinel %V gave a bad port", &rc->name);
        ngx_http_llm_redis_refresh_later(redis, redis->refresh_backoff);
        return;
    }

    ngx_http_llm_redis_primary_at(redis, (u_char *) reply->element[0]->str,
                                  reply->element[0]->len, (in_port_t) port);
}


/* ["message", "+switch-master", "name old-host old-port host port"] */

static void
ngx_http_llm_redis_watch_reply(ngx_http_llm_redis_conn_t *rc,
    redisReply *reply, void *data)
{
    ngx_http_llm_redis_t *redis = data;

    u_char     *p, *last, *f[5];
    ngx_int_t   port;
    ngx_uint_t  i;

    if (reply == NULL || ngx_http_llm_redis_exiting
        || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3
        || reply->element[0]->type != REDIS_REPLY_STRING
        || !ngx_http_llm_is_lit(reply->element[0]->str,
                                reply->element[0]->len, "message")
        || reply->element[2]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    p = (u_char *) reply->element[2]->str;
    last = p + reply->element[2]->len;

    for (i = 0; i < 5; i++) {
        f[i] = p;
        p = ngx_strlchr(p, last, ' ');

        if (p == NULL) {
            if (i != 4) {
                return;
            }

            p = last;
            break;
        }

        p++;
    }

    if ((size_t) (f[1] - f[0] - 1) != redis->conf->master.len
        || ngx_strncmp(f[0], redis->conf->master.data,
                       redis->conf->master.len) != 0)
    {
        return;
    }

    port = ngx_atoi(f[4], last - f[4]);

    if (port < 1 || port > 65535) {
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, ngx_http_llm_redis_log, 0,
                  "llm: redis sentinel %V: +switch-master to %*s:%i",
                  &rc->name, f[4] - f[3] - 1, f[3], port);

    ngx_http_llm_redis_primary_at(redis, f[3], f[4] - f[3] - 1,
                                  (in_port_t) port);
}


/* the primary is there: connected to unless it is already */

static void
ngx_http_llm_redis_primary_at(ngx_http_llm_redis_t *redis, u_char *host,
    size_t len, in_port_t port)
{
    ngx_http_llm_redis_node_t  *node;

    node = redis->primary;

    if (len == 0 || len > NGX_HTTP_LLM_REDIS_HOST_MAX) {
        ngx_http_llm_redis_refresh_later(redis, redis->refresh_backoff);
        return;
    }

    if (node->conn.port == port && node->conn.host.len == len
        && ngx_strncmp(node->conn.host.data, host, len) == 0
        && node->conn.state != NGX_HTTP_LLM_REDIS_CLOSED)
    {
        return;
    }

    if (node->conn.state != NGX_HTTP_LLM_REDIS_CLOSED) {
        ngx_http_llm_redis_conn_close(&node->conn, "is no longer the primary");
    }

    ngx_http_llm_redis_node_at(node, host, len, port);

    node->backoff = NGX_HTTP_LLM_REDIS_BACKOFF_MIN;
    ngx_http_llm_redis_node_open(node);
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
