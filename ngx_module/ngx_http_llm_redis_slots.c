
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * What a Redis Cluster client has to know of the cluster, as plain
 * parsers: the hash slot of a key (CRC16, as Redis's keyHashSlot()), the
 * slot a command is routed by, the CLUSTER SLOTS reply, and the MOVED and
 * ASK errors.  Replies are hostile input: every count and length is
 * checked before it is used.  They call nothing of the module.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_redis_slots.h"


static ngx_uint_t ngx_http_llm_redis_slots_crc16(const u_char *p,
    size_t len);
static ngx_uint_t ngx_http_llm_redis_slots_named(const char *arg,
    size_t len, ngx_str_t *name);
static ngx_int_t ngx_http_llm_redis_slots_node(redisReply *node,
    ngx_str_t *host, in_port_t *port);
static ngx_int_t ngx_http_llm_redis_slots_host(const u_char *p, size_t len);
static ngx_int_t ngx_http_llm_redis_slots_number(const u_char *p,
    const u_char *last, size_t digits);


static ngx_str_t  ngx_http_llm_redis_slots_eval = ngx_string("EVAL");
static ngx_str_t  ngx_http_llm_redis_slots_evalsha = ngx_string("EVALSHA");


/* commands whose first argument is not a key: any node answers them */

static ngx_str_t  ngx_http_llm_redis_slots_keyless[] = {
    ngx_string("SCRIPT"),
    ngx_string("INFO"),
    ngx_string("PING"),
    ngx_string("AUTH"),
    ngx_string("SELECT"),
    ngx_string("CLUSTER"),
    ngx_string("ASKING"),
    ngx_string("READONLY"),
    ngx_string("SENTINEL"),
    ngx_string("SUBSCRIBE"),
    ngx_null_string
};


/*
 * The slot of a key, 0..16383: the CRC16 of the key, or of its hash tag,
 * the part between the first '{' and the next '}' when that part is not
 * empty, so that keys that share a tag share a slot.
 */

ngx_uint_t
ngx_http_llm_redis_keyslot(const u_char *key, size_t len)
{
    size_t  s, e;

    for (s = 0; s < len; s++) {
        if (key[s] == '{') {
            break;
        }
    }

    if (s < len) {
        for (e = s + 1; e < len; e++) {
            if (key[e] == '}') {
                break;
            }
        }

        /* "{}" and an unclosed '{' are no tag: the whole key is hashed */

        if (e < len && e > s + 1) {
            key += s + 1;
            len = e - s - 1;
        }
    }

    return ngx_http_llm_redis_slots_crc16(key, len)
           & (NGX_HTTP_LLM_REDIS_SLOTS - 1);
}


/*
 * The slot a command is routed by, or NGX_DECLINED when it has no key:
 * EVAL and EVALSHA by their first key, and by none with no keys; the
 * commands of ngx_http_llm_redis_slots_keyless by none; any other by its
 * first argument.  NGX_ERROR when a script's keys are in different slots
 * (Redis would answer CROSSSLOT) or its numkeys is not a count of the
 * arguments that follow it.
 */

ngx_int_t
ngx_http_llm_redis_command_slot(int argc, const char **argv,
    const size_t *argvlen)
{
    int          i;
    ngx_int_t    numkeys;
    ngx_str_t   *name;
    ngx_uint_t   slot;

    if (argc < 1) {
        return NGX_DECLINED;
    }

    if (ngx_http_llm_redis_slots_named(argv[0], argvlen[0],
                                       &ngx_http_llm_redis_slots_eval)
        || ngx_http_llm_redis_slots_named(argv[0], argvlen[0],
                                          &ngx_http_llm_redis_slots_evalsha))
    {
        if (argc < 3) {
            return NGX_ERROR;
        }

        /* ngx_atoi() fails on anything but digits, and on an overflow */

        numkeys = ngx_atoi((u_char *) argv[2], argvlen[2]);

        if (numkeys == NGX_ERROR || numkeys > (ngx_int_t) argc - 3) {
            return NGX_ERROR;
        }

        if (numkeys == 0) {
            return NGX_DECLINED;
        }

        slot = ngx_http_llm_redis_keyslot((const u_char *) argv[3],
                                          argvlen[3]);

        for (i = 4; i < 3 + numkeys; i++) {
            if (ngx_http_llm_redis_keyslot((const u_char *) argv[i],
                                           argvlen[i])
                != slot)
            {
                return NGX_ERROR;
            }
        }

        return (ngx_int_t) slot;
    }

    for (name = ngx_http_llm_redis_slots_keyless; name->len; name++) {
        if (ngx_http_llm_redis_slots_named(argv[0], argvlen[0], name)) {
            return NGX_DECLINED;
        }
    }

    if (argc < 2) {
        return NGX_DECLINED;
    }

    return ngx_http_llm_redis_keyslot((const u_char *) argv[1], argvlen[1]);
}


/*
 * A CLUSTER SLOTS reply: each element [start, end, [host, port, id...],
 * replicas...], of which only the primary, the first node, is kept.  Up
 * to max ranges go into ranges[], their count into *n; the elements past
 * max are still checked.  A range whose primary's address is unknown
 * (a nil, empty or "?" host) is skipped.  NGX_ERROR, and *n 0, on any
 * malformed element.
 */

ngx_int_t
ngx_http_llm_redis_slots_parse(redisReply *reply,
    ngx_http_llm_redis_range_t *ranges, ngx_uint_t max, ngx_uint_t *n)
{
    size_t       i;
    ngx_int_t    rc;
    ngx_str_t    host;
    in_port_t    port;
    long long    start, end;
    ngx_uint_t   count;
    redisReply  *e;

    *n = 0;

    /* a range has one slot at least: more ranges than slots is no cluster */

    if (reply == NULL
        || reply->type != REDIS_REPLY_ARRAY
        || reply->elements > NGX_HTTP_LLM_REDIS_SLOTS
        || (reply->elements && reply->element == NULL))
    {
        return NGX_ERROR;
    }

    count = 0;

    for (i = 0; i < reply->elements; i++) {
        e = reply->element[i];

        if (e == NULL
            || e->type != REDIS_REPLY_ARRAY
            || e->elements < 3
            || e->element == NULL
            || e->element[0] == NULL
            || e->element[0]->type != REDIS_REPLY_INTEGER
            || e->element[1] == NULL
            || e->element[1]->type != REDIS_REPLY_INTEGER)
        {
            return NGX_ERROR;
        }

        start = e->element[0]->integer;
        end = e->element[1]->integer;

        if (start < 0 || start > end || end >= NGX_HTTP_LLM_REDIS_SLOTS) {
            return NGX_ERROR;
        }

        rc = ngx_http_llm_redis_slots_node(e->element[2], &host, &port);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_DECLINED || count == max) {
            continue;
        }

        ranges[count].start = (ngx_uint_t) start;
        ranges[count].end = (ngx_uint_t) end;
        ranges[count].host = host;
        ranges[count].port = port;
        count++;
    }

    *n = count;

    return NGX_OK;
}


/*
 * A MOVED or ASK error, "MOVED 3999 127.0.0.1:6381": *ask is 1 for ASK,
 * the host points into str.  The port is after the last colon, for an
 * IPv6 address ("::1:6381"); brackets around the host ("[::1]:6381") are
 * dropped.  NGX_DECLINED for any other error, NGX_ERROR for a redirection
 * that is malformed: a slot past 16383, a port out of 1..65535, an empty
 * host or one of characters that are no address's.
 */

ngx_int_t
ngx_http_llm_redis_redirect(const char *str, size_t len, ngx_uint_t *ask,
    ngx_uint_t *slot, ngx_str_t *host, in_port_t *port)
{
    u_char        *h, *hlast;
    ngx_int_t      s, pn;
    ngx_uint_t     is_ask;
    const u_char  *p, *q, *last, *colon;

    p = (const u_char *) str;
    last = p + len;

    if (len >= sizeof("MOVED") - 1
        && ngx_strncmp(p, "MOVED", sizeof("MOVED") - 1) == 0)
    {
        is_ask = 0;
        p += sizeof("MOVED") - 1;

    } else if (len >= sizeof("ASK") - 1
               && ngx_strncmp(p, "ASK", sizeof("ASK") - 1) == 0)
    {
        is_ask = 1;
        p += sizeof("ASK") - 1;

    } else {
        return NGX_DECLINED;
    }

    /* "MOVEDX" and "ASKING ..." are other errors */

    if (p < last && *p != ' ') {
        return NGX_DECLINED;
    }

    if (p == last) {
        return NGX_ERROR;
    }

    p++;

    for (q = p; q < last && *q != ' '; q++) {
        /* void */
    }

    if (q == last) {
        return NGX_ERROR;
    }

    s = ngx_http_llm_redis_slots_number(p, q, 5);

    if (s == NGX_ERROR || s >= NGX_HTTP_LLM_REDIS_SLOTS) {
        return NGX_ERROR;
    }

    p = q + 1;

    colon = NULL;

    for (q = last; q > p; q--) {
        if (q[-1] == ':') {
            colon = q - 1;
            break;
        }
    }

    if (colon == NULL) {
        return NGX_ERROR;
    }

    pn = ngx_http_llm_redis_slots_number(colon + 1, last, 5);

    if (pn == NGX_ERROR || pn < 1 || pn > 65535) {
        return NGX_ERROR;
    }

    h = (u_char *) p;
    hlast = (u_char *) colon;

    if (hlast - h >= 2 && h[0] == '[' && hlast[-1] == ']') {
        h++;
        hlast--;
    }

    if (ngx_http_llm_redis_slots_host(h, hlast - h) != NGX_OK) {
        return NGX_ERROR;
    }

    *ask = is_ask;
    *slot = (ngx_uint_t) s;
    host->data = h;
    host->len = hlast - h;
    *port = (in_port_t) pn;

    return NGX_OK;
}


/*
 * CRC16-CCITT as XMODEM computes it, Redis's crc16(): polynomial 0x1021,
 * initial value 0, not reflected.  Bit by bit rather than by a table:
 * keys are short, and this is the definition itself.
 */

static ngx_uint_t
ngx_http_llm_redis_slots_crc16(const u_char *p, size_t len)
{
    size_t      i;
    ngx_uint_t  crc, bit;

    crc = 0;

    for (i = 0; i < len; i++) {
        crc ^= (ngx_uint_t) p[i] << 8;

        for (bit = 0; bit < 8; bit++) {
            crc = (crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1;
        }

        crc &= 0xffff;
    }

    return crc;
}


/* a command's name, as Redis reads it: in any case */

static ngx_uint_t
ngx_http_llm_redis_slots_named(const char *arg, size_t len, ngx_str_t *name)
{
    return len == name->len
           && ngx_strncasecmp((u_char *) arg, name->data, len) == 0;
}


/*
 * A node of CLUSTER SLOTS, [host, port, id...]: NGX_OK with its address,
 * NGX_DECLINED when the node does not know its address (Redis 7 says so
 * with a nil, an empty or a "?" host), NGX_ERROR when it is malformed.
 */

static ngx_int_t
ngx_http_llm_redis_slots_node(redisReply *node, ngx_str_t *host,
    in_port_t *port)
{
    redisReply  *h, *p;

    if (node == NULL
        || node->type != REDIS_REPLY_ARRAY
        || node->elements < 2
        || node->element == NULL)
    {
        return NGX_ERROR;
    }

    h = node->element[0];
    p = node->element[1];

    if (h == NULL || p == NULL
        || p->type != REDIS_REPLY_INTEGER
        || p->integer < 1 || p->integer > 65535)
    {
        return NGX_ERROR;
    }

    if (h->type == REDIS_REPLY_NIL) {
        return NGX_DECLINED;
    }

    if (h->type != REDIS_REPLY_STRING || (h->len && h->str == NULL)) {
        return NGX_ERROR;
    }

    if (h->len == 0 || (h->len == 1 && h->str[0] == '?')) {
        return NGX_DECLINED;
    }

    if (ngx_http_llm_redis_slots_host((u_char *) h->str, h->len) != NGX_OK) {
        return NGX_ERROR;
    }

    host->data = (u_char *) h->str;
    host->len = h->len;
    *port = (in_port_t) p->integer;

    return NGX_OK;
}


/*
 * A host name or an address as a node announces it: printable, without
 * spaces or brackets, and no longer than a DNS name, since it is what a
 * connection will be made to
 */

static ngx_int_t
ngx_http_llm_redis_slots_host(const u_char *p, size_t len)
{
    size_t  i;

    if (len == 0 || len > NGX_HTTP_LLM_REDIS_HOST_MAX) {
        return NGX_ERROR;
    }

    for (i = 0; i < len; i++) {
        if (p[i] <= ' ' || p[i] >= 0x7f || p[i] == '[' || p[i] == ']') {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* a decimal of one to "digits" digits, or NGX_ERROR */

static ngx_int_t
ngx_http_llm_redis_slots_number(const u_char *p, const u_char *last,
    size_t digits)
{
    if (p == last || (size_t) (last - p) > digits) {
        return NGX_ERROR;
    }

    return ngx_atoi((u_char *) p, last - p);
}
