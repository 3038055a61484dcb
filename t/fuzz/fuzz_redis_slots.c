
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Target: what a Redis Cluster tells a client, and what the client works
 * out of its own commands (ngx_http_llm_redis_slots.c).  The first byte
 * picks what the rest is:
 *   0  a key, for its hash slot;
 *   1  a command, its arguments separated by '\n';
 *   2  a CLUSTER SLOTS reply built from the input, shaped like one;
 *   3  a reply as Redis sends it (RESP), read by hiredis's own reader;
 *   4  an error reply, for a MOVED or ASK redirection.
 * Invariants: no crash or undefined behaviour; a slot is below 16384 and
 * is that of an independent CRC16 (by table) of the key or its tag; a
 * command's slot is NGX_DECLINED, NGX_ERROR or its key's; the ranges of
 * CLUSTER SLOTS are, in order, those of the reply, with start <= end <=
 * 16383, a port in 1..65535 and a known host that is the reply's own
 * string; a redirection's host lies within the error, and the
 * redirection printed again reads back the same.  The answers Redis 7.0
 * itself gave (CLUSTER KEYSLOT, MOVED, CLUSTER SLOTS) are checked once,
 * in LLVMFuzzerInitialize().
 */


#include "ngx_http_llm_fuzz.h"
#include "ngx_http_llm_redis_slots.h"


/* ---------------------------------------------------------- adapter
 * Every call into the module is here.
 */

static ngx_uint_t
ngx_http_llm_fuzz_keyslot(const u_char *key, size_t len)
{
    return ngx_http_llm_redis_keyslot(key, len);
}


static ngx_int_t
ngx_http_llm_fuzz_command_slot(int argc, const char **argv,
    const size_t *argvlen)
{
    return ngx_http_llm_redis_command_slot(argc, argv, argvlen);
}


static ngx_int_t
ngx_http_llm_fuzz_slots(redisReply *reply,
    ngx_http_llm_redis_range_t *ranges, ngx_uint_t max, ngx_uint_t *n)
{
    return ngx_http_llm_redis_slots_parse(reply, ranges, max, n);
}


static ngx_int_t
ngx_http_llm_fuzz_redirect(const char *str, size_t len, ngx_uint_t *ask,
    ngx_uint_t *slot, ngx_str_t *host, in_port_t *port)
{
    return ngx_http_llm_redis_redirect(str, len, ask, slot, host, port);
}

/* ---------------------------------------------------------- target */


#define NGX_HTTP_LLM_FUZZ_ARGS    16
#define NGX_HTTP_LLM_FUZZ_RANGES  8

/* the largest array or string a RESP input may declare */
#define NGX_HTTP_LLM_FUZZ_RESP_MAX  4096


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static uint16_t  ngx_http_llm_fuzz_crc_table[256];


/* the oracle's CRC16 (XMODEM), by a table, as Redis's crc16.c computes it */

static ngx_uint_t
ngx_http_llm_fuzz_crc16(const u_char *p, size_t len)
{
    size_t    i;
    uint16_t  crc;

    crc = 0;

    for (i = 0; i < len; i++) {
        crc = (uint16_t) (crc << 8)
              ^ ngx_http_llm_fuzz_crc_table[((crc >> 8) ^ p[i]) & 0xff];
    }

    return crc;
}


/* the oracle's slot: the tag found with memchr(), not by a loop of bytes */

static ngx_uint_t
ngx_http_llm_fuzz_slot(const u_char *key, size_t len)
{
    const u_char  *open, *close;

    open = memchr(key, '{', len);

    if (open != NULL) {
        close = memchr(open + 1, '}', key + len - (open + 1));

        if (close != NULL && close > open + 1) {
            return ngx_http_llm_fuzz_crc16(open + 1, close - (open + 1))
                   & 0x3fff;
        }
    }

    return ngx_http_llm_fuzz_crc16(key, len) & 0x3fff;
}


static void
ngx_http_llm_fuzz_key(const u_char *key, size_t len)
{
    ngx_uint_t  slot, want;

    slot = ngx_http_llm_fuzz_keyslot(key, len);
    want = ngx_http_llm_fuzz_slot(key, len);

    ngx_http_llm_fuzz_assert(slot < 16384, "slot %ui", slot);
    ngx_http_llm_fuzz_assert(slot == want, "\"%*s\" in slot %ui, not %ui",
                             ngx_min(len, 64), key, slot, want);
}


static void
ngx_http_llm_fuzz_command(const u_char *p, size_t size)
{
    int            argc, i;
    u_char        *a;
    size_t         argvlen[NGX_HTTP_LLM_FUZZ_ARGS];
    ngx_int_t      rc;
    ngx_uint_t     eval;
    const char    *argv[NGX_HTTP_LLM_FUZZ_ARGS];
    const u_char  *last, *nl;

    last = p + size;
    argc = 0;

    /* each argument in a buffer of its own size, for ASan */

    while (argc < NGX_HTTP_LLM_FUZZ_ARGS) {
        nl = memchr(p, '\n', last - p);
        if (nl == NULL) {
            nl = last;
        }

        a = malloc((nl - p) ? (size_t) (nl - p) : 1);
        if (a == NULL) {
            abort();
        }

        ngx_memcpy(a, p, nl - p);
        argv[argc] = (const char *) a;
        argvlen[argc] = nl - p;
        argc++;

        if (nl == last) {
            break;
        }

        p = nl + 1;
    }

    rc = ngx_http_llm_fuzz_command_slot(argc, argv, argvlen);

    ngx_http_llm_fuzz_assert(rc == NGX_DECLINED || rc == NGX_ERROR
                             || (rc >= 0 && rc < 16384), "slot %i", rc);

    if (rc >= 0) {
        eval = (argvlen[0] == 4
                && ngx_strncasecmp((u_char *) argv[0], (u_char *) "EVAL", 4)
                   == 0)
               || (argvlen[0] == 7
                   && ngx_strncasecmp((u_char *) argv[0],
                                      (u_char *) "EVALSHA", 7) == 0);

        i = eval ? 3 : 1;

        ngx_http_llm_fuzz_assert(i < argc, "a slot of no key");
        ngx_http_llm_fuzz_assert((ngx_uint_t) rc
                                 == ngx_http_llm_fuzz_slot(
                                        (u_char *) argv[i], argvlen[i]),
                                 "routed by slot %i, not by argument %d's",
                                 rc, i);
    }

    for (i = 0; i < argc; i++) {
        free((void *) argv[i]);
    }
}


static redisReply *
ngx_http_llm_fuzz_node(int type)
{
    redisReply  *r;

    r = calloc(1, sizeof(redisReply));
    if (r == NULL) {
        abort();
    }

    r->type = type;

    return r;
}


static redisReply *
ngx_http_llm_fuzz_string(const u_char *p, size_t len)
{
    redisReply  *r;

    r = ngx_http_llm_fuzz_node(REDIS_REPLY_STRING);

    r->str = malloc(len + 1);
    if (r->str == NULL) {
        abort();
    }

    ngx_memcpy(r->str, p, len);
    r->str[len] = '\0';
    r->len = len;

    return r;
}


static redisReply *
ngx_http_llm_fuzz_integer(long long v)
{
    redisReply  *r;

    r = ngx_http_llm_fuzz_node(REDIS_REPLY_INTEGER);
    r->integer = v;

    return r;
}


static redisReply *
ngx_http_llm_fuzz_array(size_t n)
{
    redisReply  *r;

    r = ngx_http_llm_fuzz_node(REDIS_REPLY_ARRAY);

    r->element = calloc(n ? n : 1, sizeof(redisReply *));
    if (r->element == NULL) {
        abort();
    }

    r->elements = n;

    return r;
}


static long long
ngx_http_llm_fuzz_int(ngx_http_llm_fuzz_in_t *in, ngx_uint_t bytes)
{
    uint64_t    v;
    ngx_uint_t  i;

    v = 0;

    for (i = 0; i < bytes; i++) {
        v = (v << 8) | ngx_http_llm_fuzz_byte(in);
    }

    /* sign-extended: negative numbers too */
    return (long long) (v << (64 - 8 * bytes)) >> (64 - 8 * bytes);
}


/* a node, [host, port, id], mostly well formed: the input says how not */

static redisReply *
ngx_http_llm_fuzz_slots_node(ngx_http_llm_fuzz_in_t *in)
{
    size_t       len;
    ngx_uint_t   f, h;
    redisReply  *node;

    static const char   id[] = "4e5d34644809f1ac4ef865fa01e90bee320c6a86";
    static const char  *hosts[] = {
        "127.0.0.1", "::1", "?", "", "redis-7.example", "[::1]", "a b"
    };

    f = ngx_http_llm_fuzz_byte(in);

    node = ngx_http_llm_fuzz_array((f & 0x80) ? (f & 1) : 3);

    if (node->elements == 0) {
        return node;
    }

    h = ngx_http_llm_fuzz_byte(in);

    if (h < sizeof(hosts) / sizeof(hosts[0])) {
        node->element[0] = ngx_http_llm_fuzz_string((u_char *) hosts[h],
                                                    ngx_strlen(hosts[h]));

    } else if (h < 16) {
        node->element[0] = ngx_http_llm_fuzz_node(REDIS_REPLY_NIL);

    } else if (h < 24) {
        node->element[0] = ngx_http_llm_fuzz_integer(h);

    } else {
        /* bytes of the input, and sometimes more than a host may be */
        len = (h & 0x40) ? 256 + (h & 3) : h & 0x1f;
        len = ngx_min(len, (size_t) (in->last - in->pos));
        node->element[0] = ngx_http_llm_fuzz_string(in->pos, len);
        in->pos += len;
    }

    if (node->elements == 1) {
        return node;
    }

    node->element[1] = (f & 0x40)
                       ? ngx_http_llm_fuzz_string((u_char *) "6379", 4)
                       : ngx_http_llm_fuzz_integer(
                             ngx_http_llm_fuzz_int(in, (f & 0x20) ? 4 : 2)
                             & ((f & 0x20) ? -1LL : 0xffff));

    node->element[2] = ngx_http_llm_fuzz_string((u_char *) id,
                                                sizeof(id) - 1);

    return node;
}


/* a CLUSTER SLOTS reply, [[start, end, node, replicas...], ...] */

static redisReply *
ngx_http_llm_fuzz_slots_reply(ngx_http_llm_fuzz_in_t *in)
{
    size_t       i, n;
    long long    start, end;
    ngx_uint_t   f;
    redisReply  *reply, *e;

    n = ngx_http_llm_fuzz_byte(in) % (NGX_HTTP_LLM_FUZZ_RANGES + 2);

    reply = ngx_http_llm_fuzz_array(n);

    for (i = 0; i < n; i++) {
        f = ngx_http_llm_fuzz_byte(in);

        if (f == 0xff) {
            /* any shape at all */
            reply->element[i] = ngx_http_llm_fuzz_reply(in, 1);

            if (reply->element[i] == NULL) {
                reply->element[i] = ngx_http_llm_fuzz_node(REDIS_REPLY_NIL);
            }

            continue;
        }

        e = ngx_http_llm_fuzz_array((f & 0x80) ? (f & 3) : 3 + (f & 1));
        reply->element[i] = e;

        start = ngx_http_llm_fuzz_int(in, 2);
        end = start + (ngx_http_llm_fuzz_byte(in) << (f & 0x08 ? 8 : 0));

        if (!(f & 0x10)) {
            /* within the slots, mostly */
            start &= 0x3fff;
            end &= 0x3fff;
        }

        if (e->elements > 0) {
            e->element[0] = (f & 0x20)
                            ? ngx_http_llm_fuzz_string((u_char *) "0", 1)
                            : ngx_http_llm_fuzz_integer(start);
        }

        if (e->elements > 1) {
            e->element[1] = ngx_http_llm_fuzz_integer(end);
        }

        if (e->elements > 2) {
            e->element[2] = (f & 0x40)
                            ? ngx_http_llm_fuzz_node(REDIS_REPLY_NIL)
                            : ngx_http_llm_fuzz_slots_node(in);
        }

        if (e->elements > 3) {
            /* a replica */
            e->element[3] = ngx_http_llm_fuzz_slots_node(in);
        }
    }

    return reply;
}


/*
 * A RESP input, or NULL when it is incomplete, an error to hiredis, or
 * declares an array or a string so large that hiredis's allocation of it
 * (unchecked for overflow before hiredis 1.0.1), not the parser, would be
 * what fails.  Every type byte of RESP starts a line.
 */

static redisReply *
ngx_http_llm_fuzz_resp(const u_char *p, size_t size)
{
    void         *reply;
    size_t        i, v;
    redisReader  *rd;

    for (i = 0; i < size; i++) {
        if ((p[i] != '*' && p[i] != '$') || (i > 0 && p[i - 1] != '\n')) {
            continue;
        }

        for (v = 0, i++; i < size && p[i] >= '0' && p[i] <= '9'; i++) {
            v = v * 10 + (p[i] - '0');

            if (v > NGX_HTTP_LLM_FUZZ_RESP_MAX) {
                return NULL;
            }
        }
    }

    rd = redisReaderCreate();
    if (rd == NULL) {
        abort();
    }

    reply = NULL;

    if (redisReaderFeed(rd, (const char *) p, size) != REDIS_OK
        || redisReaderGetReply(rd, &reply) != REDIS_OK)
    {
        reply = NULL;
    }

    redisReaderFree(rd);

    return reply;
}


/* the ranges are the reply's own, in its order: nothing made up */

static void
ngx_http_llm_fuzz_check_slots(redisReply *reply)
{
    size_t                      j;
    ngx_int_t                   rc;
    ngx_uint_t                  i, n, max;
    redisReply                 *e, *node;
    ngx_http_llm_redis_range_t  *r;
    ngx_http_llm_redis_range_t   ranges[NGX_HTTP_LLM_FUZZ_RANGES];

    for (max = 0; max <= NGX_HTTP_LLM_FUZZ_RANGES; max += 3) {

        n = (ngx_uint_t) -1;
        rc = ngx_http_llm_fuzz_slots(reply, ranges, max, &n);

        ngx_http_llm_fuzz_assert(rc == NGX_OK || rc == NGX_ERROR, "rc %i",
                                 rc);

        if (rc == NGX_ERROR) {
            ngx_http_llm_fuzz_assert(n == 0, "%ui ranges and NGX_ERROR", n);
            continue;
        }

        ngx_http_llm_fuzz_assert(n <= max, "%ui ranges of %ui", n, max);

        j = 0;

        for (i = 0; i < n; i++) {
            r = &ranges[i];

            ngx_http_llm_fuzz_assert(r->start <= r->end && r->end < 16384,
                                     "range %ui-%ui", r->start, r->end);
            ngx_http_llm_fuzz_assert(r->port >= 1, "port %d", r->port);
            ngx_http_llm_fuzz_assert(r->host.len > 0
                                     && !(r->host.len == 1
                                          && r->host.data[0] == '?'),
                                     "host \"%V\"", &r->host);

            for ( /* void */ ; j < reply->elements; j++) {
                e = reply->element[j];
                node = e->element[2];

                if ((ngx_uint_t) e->element[0]->integer == r->start
                    && (ngx_uint_t) e->element[1]->integer == r->end
                    && (u_char *) node->element[0]->str == r->host.data
                    && node->element[0]->len == r->host.len
                    && node->element[1]->integer == r->port)
                {
                    break;
                }
            }

            ngx_http_llm_fuzz_assert(j < reply->elements,
                                     "range %ui-%ui %V:%d is not the "
                                     "reply's", r->start, r->end, &r->host,
                                     r->port);
            j++;
        }
    }
}


static void
ngx_http_llm_fuzz_check_redirect(const u_char *p, size_t size)
{
    u_char      buf[512];
    size_t      len;
    ngx_int_t   rc;
    in_port_t   port, port2;
    ngx_str_t   host, host2;
    ngx_uint_t  ask, slot, ask2, slot2, named;

    rc = ngx_http_llm_fuzz_redirect((const char *) p, size, &ask, &slot,
                                    &host, &port);

    named = (size >= 6 && ngx_strncmp(p, "MOVED ", 6) == 0)
            || (size >= 4 && ngx_strncmp(p, "ASK ", 4) == 0);

    ngx_http_llm_fuzz_assert(rc == NGX_OK || rc == NGX_DECLINED
                             || rc == NGX_ERROR, "rc %i", rc);
    ngx_http_llm_fuzz_assert(!named || rc != NGX_DECLINED,
                             "\"%*s\" is no redirection", ngx_min(size, 64),
                             p);

    if (rc != NGX_OK) {
        return;
    }

    ngx_http_llm_fuzz_assert(named, "\"%*s\" is a redirection",
                             ngx_min(size, 64), p);
    ngx_http_llm_fuzz_assert(ask == (p[0] == 'A'), "ask %ui", ask);
    ngx_http_llm_fuzz_assert(slot < 16384, "slot %ui", slot);
    ngx_http_llm_fuzz_assert(port >= 1, "port %d", port);
    ngx_http_llm_fuzz_assert(host.len > 0 && host.len <= 255
                             && host.data >= p
                             && host.data + host.len <= p + size,
                             "the host is not in the error");

    /* printed again, it reads back the same */

    len = ngx_snprintf(buf, sizeof(buf), "%s %ui %V:%d",
                       ask ? "ASK" : "MOVED", slot, &host, (int) port)
          - buf;

    rc = ngx_http_llm_fuzz_redirect((const char *) buf, len, &ask2, &slot2,
                                    &host2, &port2);

    ngx_http_llm_fuzz_assert(rc == NGX_OK && ask2 == ask && slot2 == slot
                             && port2 == port && host2.len == host.len
                             && ngx_memcmp(host2.data, host.data, host.len)
                                == 0,
                             "\"%*s\" read back from \"%*s\"", len, buf,
                             ngx_min(size, 64), p);
}


/* a command from a list of literals, for the answers below */

static ngx_int_t
ngx_http_llm_fuzz_known_command(int argc, ...)
{
    int          i;
    size_t       argvlen[NGX_HTTP_LLM_FUZZ_ARGS];
    va_list      args;
    const char  *argv[NGX_HTTP_LLM_FUZZ_ARGS];

    va_start(args, argc);

    for (i = 0; i < argc; i++) {
        argv[i] = va_arg(args, const char *);
        argvlen[i] = ngx_strlen(argv[i]);
    }

    va_end(args);

    return ngx_http_llm_fuzz_command_slot(argc, argv, argvlen);
}


static ngx_uint_t
ngx_http_llm_fuzz_known_slot(const char *key)
{
    return ngx_http_llm_fuzz_keyslot((const u_char *) key, ngx_strlen(key));
}


/*
 * What Redis 7.0.15 answered: CLUSTER KEYSLOT for the keys, a two-node
 * cluster for the MOVED, CROSSSLOT and CLUSTER SLOTS, and one node not
 * yet met for the empty host
 */

static void
ngx_http_llm_fuzz_known(void)
{
    ngx_int_t                   rc;
    ngx_str_t                   host;
    in_port_t                   port;
    ngx_uint_t                  i, n, ask, slot;
    redisReply                 *reply;
    ngx_http_llm_redis_range_t  ranges[NGX_HTTP_LLM_FUZZ_RANGES];

    static const struct {
        const char  *key;
        ngx_uint_t   slot;
    } keys[] = {
        { "123456789", 12739 },               /* CRC16 0x31c3 */
        { "{user1000}.following", 3443 },
        { "user1000", 3443 },
        { "foo{}{bar}", 8363 },               /* the whole key */
        { "foo{{bar}}zap", 4015 },
        { "{bar", 4015 },
        { "foo{bar}{zap}", 5061 },
        { "bar", 5061 },
        { "foo", 12182 },
        { "", 0 },
        { "a{", 14311 },
        { "{}", 15257 },
        { "x{y}", 12222 },
        { "y", 12222 },
        { "{a}", 15495 },
    };

    static const u_char  two[] =
        "*2\r\n"
        "*3\r\n:0\r\n:8191\r\n"
        "*4\r\n$9\r\n127.0.0.1\r\n:17391\r\n"
        "$40\r\n4e5d34644809f1ac4ef865fa01e90bee320c6a86\r\n*0\r\n"
        "*3\r\n:8192\r\n:16383\r\n"
        "*4\r\n$9\r\n127.0.0.1\r\n:17392\r\n"
        "$40\r\n9e99ae44db2765324b7cbc2864dd3b6af2a3be96\r\n*0\r\n";

    static const u_char  alone[] =
        "*1\r\n*3\r\n:0\r\n:100\r\n*4\r\n$0\r\n\r\n:17391\r\n"
        "$40\r\n4e5d34644809f1ac4ef865fa01e90bee320c6a86\r\n*0\r\n";

    for (i = 0; i < 256; i++) {
        slot = i << 8;

        for (n = 0; n < 8; n++) {
            slot = (slot & 0x8000) ? (slot << 1) ^ 0x1021 : slot << 1;
        }

        ngx_http_llm_fuzz_crc_table[i] = (uint16_t) slot;
    }

    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_crc16((u_char *) "123456789",
                                                     9) == 0x31c3,
                             "the oracle's CRC16 is not XMODEM's");

    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        slot = ngx_http_llm_fuzz_known_slot(keys[i].key);

        ngx_http_llm_fuzz_assert(slot == keys[i].slot,
                                 "\"%s\" in slot %ui, Redis says %ui",
                                 keys[i].key, slot, keys[i].slot);

        ngx_http_llm_fuzz_key((u_char *) keys[i].key,
                              ngx_strlen(keys[i].key));
    }

    /* commands */

    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_known_command(3, "SET", "foo",
                                                             "1")
                             == 12182, "SET foo");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_known_command(5, "eval",
                                 "return 1", "2", "{a}x", "{a}y")
                             == 15495, "eval with two keys of {a}");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_known_command(5, "EVAL",
                                 "return 1", "2", "foo", "bar")
                             == NGX_ERROR, "CROSSSLOT");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_known_command(4, "EvalSha",
                                 "0123", "1", "bar")
                             == 5061, "EVALSHA, one key");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_known_command(4, "EVALSHA",
                                 "0123", "0", "bar")
                             == NGX_DECLINED, "EVALSHA, no keys");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_known_command(4, "EVAL",
                                 "s", "2", "a")
                             == NGX_ERROR, "numkeys past argc");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_known_command(4, "EVAL",
                                 "s", "-1", "a")
                             == NGX_ERROR, "numkeys -1");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_known_command(2, "EVAL",
                                 "s")
                             == NGX_ERROR, "no numkeys");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_known_command(3, "script",
                                 "load", "return 1")
                             == NGX_DECLINED, "SCRIPT LOAD");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_known_command(2, "AUTH", "pw")
                             == NGX_DECLINED, "AUTH");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_known_command(1, "PING")
                             == NGX_DECLINED, "PING");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_known_command(2, "HGETALL",
                                 "{user1000}.following")
                             == 3443, "HGETALL");

    /* redirections */

    rc = ngx_http_llm_fuzz_redirect("MOVED 12182 127.0.0.1:17392", 27, &ask,
                                    &slot, &host, &port);

    ngx_http_llm_fuzz_assert(rc == NGX_OK && !ask && slot == 12182
                             && port == 17392
                             && host.len == 9
                             && ngx_strncmp(host.data, "127.0.0.1", 9) == 0,
                             "MOVED 12182 127.0.0.1:17392");

    rc = ngx_http_llm_fuzz_redirect("ASK 3999 [::1]:6381", 19, &ask, &slot,
                                    &host, &port);

    ngx_http_llm_fuzz_assert(rc == NGX_OK && ask && slot == 3999
                             && port == 6381 && host.len == 3
                             && ngx_strncmp(host.data, "::1", 3) == 0,
                             "ASK 3999 [::1]:6381");

    rc = ngx_http_llm_fuzz_redirect("ASK 0 ::1:6381", 14, &ask, &slot,
                                    &host, &port);

    ngx_http_llm_fuzz_assert(rc == NGX_OK && ask && slot == 0
                             && port == 6381 && host.len == 3
                             && ngx_strncmp(host.data, "::1", 3) == 0,
                             "ASK 0 ::1:6381");

    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_redirect("MOVED 16384 h:1",
                                 15, &ask, &slot, &host, &port)
                             == NGX_ERROR, "slot 16384");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_redirect("MOVED 1 :6379", 13,
                                 &ask, &slot, &host, &port)
                             == NGX_ERROR, "an empty host");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_redirect("MOVED 1 h:65536",
                                 15, &ask, &slot, &host, &port)
                             == NGX_ERROR, "port 65536");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_redirect("MOVED 1 h:0", 11,
                                 &ask, &slot, &host, &port)
                             == NGX_ERROR, "port 0");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_redirect("CROSSSLOT Keys in "
                                 "request don't hash to the same slot", 53,
                                 &ask, &slot, &host, &port)
                             == NGX_DECLINED, "CROSSSLOT");
    ngx_http_llm_fuzz_assert(ngx_http_llm_fuzz_redirect("ASKING", 6, &ask,
                                 &slot, &host, &port)
                             == NGX_DECLINED, "ASKING");

    /* CLUSTER SLOTS */

    reply = ngx_http_llm_fuzz_resp(two, sizeof(two) - 1);

    ngx_http_llm_fuzz_assert(reply != NULL, "the two-node reply unread");

    rc = ngx_http_llm_fuzz_slots(reply, ranges, NGX_HTTP_LLM_FUZZ_RANGES, &n);

    ngx_http_llm_fuzz_assert(rc == NGX_OK && n == 2
                             && ranges[0].start == 0
                             && ranges[0].end == 8191
                             && ranges[0].port == 17391
                             && ranges[0].host.len == 9
                             && ranges[1].start == 8192
                             && ranges[1].end == 16383
                             && ranges[1].port == 17392
                             && ngx_strncmp(ranges[1].host.data, "127.0.0.1",
                                            9) == 0,
                             "the two-node CLUSTER SLOTS");

    rc = ngx_http_llm_fuzz_slots(reply, ranges, 1, &n);

    ngx_http_llm_fuzz_assert(rc == NGX_OK && n == 1 && ranges[0].end == 8191,
                             "CLUSTER SLOTS, one range kept");

    freeReplyObject(reply);

    reply = ngx_http_llm_fuzz_resp(alone, sizeof(alone) - 1);

    ngx_http_llm_fuzz_assert(reply != NULL, "the one-node reply unread");

    rc = ngx_http_llm_fuzz_slots(reply, ranges, NGX_HTTP_LLM_FUZZ_RANGES, &n);

    ngx_http_llm_fuzz_assert(rc == NGX_OK && n == 0,
                             "a node that does not know its address");

    freeReplyObject(reply);
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_http_llm_fuzz_init();
    ngx_http_llm_fuzz_known();
    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                  *p;
    redisReply              *reply;
    ngx_http_llm_fuzz_in_t   in;

    if (size == 0) {
        return 0;
    }

    /* the rest in a buffer of its own size, for ASan */

    p = malloc(size - 1 ? size - 1 : 1);
    if (p == NULL) {
        abort();
    }

    ngx_memcpy(p, data + 1, size - 1);

    switch (data[0] % 5) {

    case 0:
        ngx_http_llm_fuzz_key(p, size - 1);
        break;

    case 1:
        ngx_http_llm_fuzz_command(p, size - 1);
        break;

    case 2:
        in.pos = p;
        in.last = p + size - 1;

        reply = ngx_http_llm_fuzz_slots_reply(&in);
        ngx_http_llm_fuzz_check_slots(reply);
        freeReplyObject(reply);
        break;

    case 3:
        reply = ngx_http_llm_fuzz_resp(p, size - 1);

        if (reply != NULL) {
            ngx_http_llm_fuzz_check_slots(reply);
            freeReplyObject(reply);
        }

        break;

    default:
        ngx_http_llm_fuzz_check_redirect(p, size - 1);
        break;
    }

    free(p);

    return 0;
}
