
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Media URLs in content parts.  Workers such as vLLM fetch image, audio
 * and video URLs from their own network: a tenant must not make them
 * reach loopback, private, link-local or metadata addresses.  Only what
 * the URL spells is checked, without DNS (a worker never blocks on it):
 * a public name that resolves to a private address is the network's to
 * refuse (egress rules on the workers' hosts).
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_error.h"
#include "ngx_http_llm_media.h"


typedef struct {
    ngx_str_t                   name;
    ngx_uint_t                  mask;
} ngx_http_llm_media_scheme_t;


static ngx_http_llm_media_scheme_t  ngx_http_llm_media_values[] = {
    { ngx_string("off"), NGX_HTTP_LLM_MEDIA_OFF },
    { ngx_string("data"), NGX_HTTP_LLM_MEDIA_DATA },
    { ngx_string("http"), NGX_HTTP_LLM_MEDIA_HTTP },
    { ngx_string("https"), NGX_HTTP_LLM_MEDIA_HTTPS },
    { ngx_string("private"), NGX_HTTP_LLM_MEDIA_PRIVATE },
    { ngx_null_string, 0 }
};


/* the members of a content part that carry media, OpenAI's and vLLM's */
static const char  *ngx_http_llm_media_parts[] = {
    "image_url", "audio_url", "video_url", "input_audio", "file",
    "input_image", "input_file", NULL
};

/* in such a member's object: URLs, and data that may be given as one */
static const char  *ngx_http_llm_media_urls[] = {
    "url", "file_url", "image_url", NULL
};

static const char  *ngx_http_llm_media_data[] = {
    "data", "file_data", NULL
};


static ngx_int_t ngx_http_llm_media_value(ngx_pool_t *pool, cJSON *item,
    ngx_uint_t allow, ngx_uint_t strict, ngx_http_llm_error_t *err,
    const char *fmt, ...);
static const char *ngx_http_llm_media_url(u_char *p, size_t len,
    ngx_uint_t allow, ngx_uint_t strict);
static const char *ngx_http_llm_media_host(u_char *p, size_t len);
static ngx_int_t ngx_http_llm_media_inet(u_char *p, size_t len,
    uint32_t *addr);
static ngx_int_t ngx_http_llm_media_private4(uint32_t a);
static ngx_int_t ngx_http_llm_media_private6(u_char *a);
static ngx_int_t ngx_http_llm_media_suffix(u_char *p, size_t len,
    const char *suffix);
static ngx_int_t ngx_http_llm_media_in(const char *name, const char **list);


/* llm_media_urls data | http | https | private ... | off */

char *
ngx_http_llm_media_urls_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t                    *value;
    ngx_uint_t                   *np, i, m;
    ngx_http_llm_media_scheme_t  *s;

    np = (ngx_uint_t *) (p + cmd->offset);

    if (*np) {
        return "is duplicate";
    }

    value = cf->args->elts;
    s = ngx_http_llm_media_values;

    for (i = 1; i < cf->args->nelts; i++) {

        for (m = 0; s[m].name.len; m++) {
            if (s[m].name.len == value[i].len
                && ngx_strncmp(s[m].name.data, value[i].data, value[i].len)
                   == 0)
            {
                break;
            }
        }

        if (s[m].name.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in \"%V\"",
                               &value[i], &cmd->name);
            return NGX_CONF_ERROR;
        }

        if (*np & s[m].mask) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "value \"%V\" is given twice in \"%V\"",
                               &value[i], &cmd->name);
            return NGX_CONF_ERROR;
        }

        *np |= s[m].mask;
    }

    if ((*np & NGX_HTTP_LLM_MEDIA_OFF) && cf->args->nelts > 2) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"off\" cannot be combined with other values "
                           "in \"%V\"", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (*np == NGX_HTTP_LLM_MEDIA_PRIVATE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"private\" needs \"http\" or \"https\" in "
                           "\"%V\"", &cmd->name);
        return NGX_CONF_ERROR;
    }

    *np |= NGX_CONF_BITMASK_SET;

    return NGX_CONF_OK;
}


/*
 * Every media URL in messages[].content[] against the location's policy;
 * err names the first one refused, e.g. messages[0].content[1].image_url.url.
 */

ngx_int_t
ngx_http_llm_media_check(ngx_pool_t *pool, cJSON *messages, ngx_uint_t allow,
    ngx_http_llm_error_t *err)
{
    int     i, j;
    cJSON  *msg, *content, *part, *m, *v;

    i = 0;

    cJSON_ArrayForEach(msg, messages) {
        content = cJSON_GetObjectItemCaseSensitive(msg, "content");
        j = 0;

        if (!cJSON_IsArray(content)) {
            content = NULL;
        }

        cJSON_ArrayForEach(part, content) {

            cJSON_ArrayForEach(m, part) {
                if (!ngx_http_llm_media_in(m->string,
                                           ngx_http_llm_media_parts))
                {
                    continue;
                }

                if (ngx_http_llm_media_value(pool, m, allow, 1, err,
                                             "messages[%d].content[%d].%s",
                                             i, j, m->string)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                if (!cJSON_IsObject(m)) {
                    continue;
                }

                cJSON_ArrayForEach(v, m) {
                    if (ngx_http_llm_media_in(v->string,
                                              ngx_http_llm_media_urls))
                    {
                        if (ngx_http_llm_media_value(pool, v, allow, 1, err,
                                                     "messages[%d].content"
                                                     "[%d].%s.%s", i, j,
                                                     m->string, v->string)
                            != NGX_OK)
                        {
                            return NGX_ERROR;
                        }

                    } else if (ngx_http_llm_media_in(v->string,
                                                     ngx_http_llm_media_data))
                    {
                        if (ngx_http_llm_media_value(pool, v, allow, 0, err,
                                                     "messages[%d].content"
                                                     "[%d].%s.%s", i, j,
                                                     m->string, v->string)
                            != NGX_OK)
                        {
                            return NGX_ERROR;
                        }
                    }
                }
            }

            j++;
        }

        i++;
    }

    return NGX_OK;
}


/* a string item: a URL always (strict), or data that may be a URL */

static ngx_int_t
ngx_http_llm_media_value(ngx_pool_t *pool, cJSON *item, ngx_uint_t allow,
    ngx_uint_t strict, ngx_http_llm_error_t *err, const char *fmt, ...)
{
    u_char      *param, *p;
    va_list      args;
    const char  *why;

    if (!cJSON_IsString(item)) {
        return NGX_OK;
    }

    why = ngx_http_llm_media_url((u_char *) item->valuestring,
                                 ngx_strlen(item->valuestring), allow,
                                 strict);
    if (why == NULL) {
        return NGX_OK;
    }

    param = ngx_pnalloc(pool, 128);
    if (param == NULL) {
        return NGX_ERROR;
    }

    va_start(args, fmt);
    p = ngx_vslprintf(param, param + 127, fmt, args);
    va_end(args);

    *p = '\0';

    ngx_http_llm_set_error(err, NGX_HTTP_BAD_REQUEST,
                           "invalid_request_error", "invalid_value",
                           (char *) param, "Invalid URL in '%s': %s",
                           param, why);
    return NGX_ERROR;
}


/* NULL if the policy accepts the URL, or why not */

static const char *
ngx_http_llm_media_url(u_char *p, size_t len, ngx_uint_t allow,
    ngx_uint_t strict)
{
    u_char      *last, *s, *host, *hend, *end;
    size_t       n;
    ngx_uint_t   mask;

    last = p + len;

    for (s = p; s < last; s++) {
        if (!((*s | 0x20) >= 'a' && (*s | 0x20) <= 'z')
            && !(s > p && ((*s >= '0' && *s <= '9')
                           || *s == '+' || *s == '-' || *s == '.')))
        {
            break;
        }
    }

    if (s == p || s == last || *s != ':') {
        /* base64 data has no ':', and is not fetched */
        return strict ? "expected a URL." : NULL;
    }

    n = s - p;

    if (allow & NGX_HTTP_LLM_MEDIA_OFF) {
        return "this gateway accepts no media URLs.";
    }

    if (n == 4 && ngx_strncasecmp(p, (u_char *) "data", 4) == 0) {
        mask = NGX_HTTP_LLM_MEDIA_DATA;

    } else if (n == 4 && ngx_strncasecmp(p, (u_char *) "http", 4) == 0) {
        mask = NGX_HTTP_LLM_MEDIA_HTTP;

    } else if (n == 5 && ngx_strncasecmp(p, (u_char *) "https", 5) == 0) {
        mask = NGX_HTTP_LLM_MEDIA_HTTPS;

    } else {
        mask = 0;
    }

    if (!(allow & mask)) {
        return "this URL scheme is not allowed here.";
    }

    if (mask == NGX_HTTP_LLM_MEDIA_DATA) {
        return NULL;
    }

    /*
     * URL parsers differ (WHATWG drops tabs and newlines, reads "\" as
     * "/" and "https:host" as "https://host"): anything they may read in
     * two ways is refused
     */

    for (s = p; s < last; s++) {
        if (*s <= 0x20 || *s == 0x7f || *s == '\\') {
            return "the URL is malformed.";
        }
    }

    host = p + n + 1;

    if (last - host < 2 || host[0] != '/' || host[1] != '/') {
        return "the URL is malformed.";
    }

    host += 2;

    for (end = host; end < last; end++) {
        if (*end == '/' || *end == '?' || *end == '#') {
            break;
        }

        if (*end == '@') {
            return "credentials in URLs are not allowed.";
        }
    }

    if (end == host || *host == ':') {
        return "the URL has no host.";
    }

    /* the host, and the port after it: digits only */

    if (*host == '[') {
        hend = ngx_strlchr(host, end, ']');
        if (hend == NULL) {
            return "the URL is malformed.";
        }

        hend++;

    } else {
        hend = ngx_strlchr(host, end, ':');
        if (hend == NULL) {
            hend = end;
        }
    }

    if (hend < end) {
        if (*hend != ':') {
            return "the URL is malformed.";
        }

        for (s = hend + 1; s < end; s++) {
            if (*s < '0' || *s > '9') {
                return "the URL is malformed.";
            }
        }
    }

    if (allow & NGX_HTTP_LLM_MEDIA_PRIVATE) {
        return NULL;
    }

    return ngx_http_llm_media_host(host, hend - host);
}


static const char *
ngx_http_llm_media_host(u_char *p, size_t len)
{
    u_char     *s, *label;
    uint32_t    a4;
    u_char      a6[16];
    ngx_uint_t  dots;

    static const char  *internal = "this gateway does not fetch media from "
                                   "loopback, private, link-local or "
                                   "internal addresses.";

    if (*p == '[') {
#if (NGX_HAVE_INET6)
        if (len < 3
            || ngx_inet6_addr(p + 1, len - 2, a6) != NGX_OK)
        {
            return "the URL is malformed.";
        }

        return ngx_http_llm_media_private6(a6) ? internal : NULL;
#else
        return "the URL is malformed.";
#endif
    }

    for (s = p; s < p + len; s++) {
        if (*s == '%' || *s >= 0x80 || *s == '[' || *s == ']') {
            return "the host must be written in ASCII (punycode), without "
                   "escapes.";
        }

        /* an empty label: parsers disagree on what it names */

        if (*s == '.' && (s == p || s[-1] == '.')) {
            return "the URL is malformed.";
        }
    }

    /* one trailing dot names the same host */

    if (len > 1 && p[len - 1] == '.') {
        len--;
    }

    /* as WHATWG: a last label of digits, or 0x and hex, makes an IPv4 */

    label = p + len;
    while (label > p && label[-1] != '.') {
        label--;
    }

    if (label < p + len
        && ((label[0] >= '0' && label[0] <= '9')))
    {
        for (s = label; s < p + len; s++) {
            if (!((*s >= '0' && *s <= '9')
                  || (s == label + 1 && (*s | 0x20) == 'x' && *label == '0')
                  || (s > label + 1 && (label[1] | 0x20) == 'x'
                      && ((*s | 0x20) >= 'a' && (*s | 0x20) <= 'f'))))
            {
                break;
            }
        }

        if (s == p + len) {
            if (ngx_http_llm_media_inet(p, len, &a4) != NGX_OK) {
                return "the URL is malformed.";
            }

            return ngx_http_llm_media_private4(a4) ? internal : NULL;
        }
    }

    /* names: localhost, mDNS, cloud metadata, and intranet single labels */

    dots = 0;

    for (s = p; s < p + len; s++) {
        if (*s == '.') {
            dots++;
        }
    }

    if (dots == 0
        || ngx_http_llm_media_suffix(p, len, ".localhost")
        || ngx_http_llm_media_suffix(p, len, ".local")
        || ngx_http_llm_media_suffix(p, len, ".internal"))
    {
        return internal;
    }

    return NULL;
}


/*
 * An IPv4 address as inet_aton() and WHATWG read it: one to four parts,
 * each decimal, octal (0...) or hex (0x...), the last filling the rest.
 */

static ngx_int_t
ngx_http_llm_media_inet(u_char *p, size_t len, uint32_t *addr)
{
    u_char      *last, c;
    uint64_t     part[4], v, base;
    ngx_uint_t   n, i, digits;

    last = p + len;
    n = 0;

    for ( ;; ) {
        if (n == 4) {
            return NGX_ERROR;
        }

        base = 10;

        if (last - p >= 2 && p[0] == '0' && (p[1] | 0x20) == 'x') {
            base = 16;
            p += 2;

        } else if (last - p >= 2 && p[0] == '0' && p[1] != '.') {
            base = 8;
            p++;
        }

        v = 0;
        digits = 0;

        for ( /* void */ ; p < last && *p != '.'; p++) {
            c = *p | 0x20;

            if (c >= '0' && c <= '9' && (uint64_t) (c - '0') < base) {
                v = v * base + (c - '0');

            } else if (base == 16 && c >= 'a' && c <= 'f') {
                v = v * base + (c - 'a' + 10);

            } else {
                return NGX_ERROR;
            }

            if (v > 0xffffffff) {
                return NGX_ERROR;
            }

            digits++;
        }

        if (digits == 0 && base == 10) {
            return NGX_ERROR;
        }

        part[n++] = v;

        if (p == last) {
            break;
        }

        p++;
    }

    v = 0;

    for (i = 0; i < n - 1; i++) {
        if (part[i] > 255) {
            return NGX_ERROR;
        }

        v = (v << 8) | part[i];
    }

    if (part[n - 1] > (0xffffffffULL >> (8 * (n - 1)))) {
        return NGX_ERROR;
    }

    *addr = (uint32_t) ((v << (8 * (5 - n))) | part[n - 1]);

    return NGX_OK;
}


/* "this network", private, shared (CGNAT), loopback, link-local, ... */

static ngx_int_t
ngx_http_llm_media_private4(uint32_t a)
{
    return (a >> 24) == 0                        /* 0.0.0.0/8 */
           || (a >> 24) == 10                    /* 10.0.0.0/8 */
           || (a >> 22) == (100 << 2 | 1)        /* 100.64.0.0/10 */
           || (a >> 24) == 127                   /* 127.0.0.0/8 */
           || (a >> 16) == (169 << 8 | 254)      /* 169.254.0.0/16 */
           || (a >> 20) == (172 << 4 | 1)        /* 172.16.0.0/12 */
           || (a >> 8) == (192U << 16 | 0 << 8 | 0)  /* 192.0.0.0/24 */
           || (a >> 16) == (192U << 8 | 168)     /* 192.168.0.0/16 */
           || (a >> 17) == (198U << 7 | 18 >> 1) /* 198.18.0.0/15 */
           || (a >> 28) >= 14;                   /* multicast, reserved */
}


static ngx_int_t
ngx_http_llm_media_private6(u_char *a)
{
    uint32_t    v4;
    ngx_uint_t  i, zero;

    static const u_char  nat64[12] = { 0x00, 0x64, 0xff, 0x9b };

    for (zero = 0; zero < 10 && a[zero] == 0; zero++) { /* void */ }

    /* ::, ::1, ::a.b.c.d, ::ffff:a.b.c.d, ::ffff:0:a.b.c.d, 64:ff9b:: */

    if (zero == 10) {
        if (a[10] == 0 && a[11] == 0) {
            v4 = (uint32_t) a[12] << 24 | a[13] << 16 | a[14] << 8 | a[15];
            return v4 <= 1 || ngx_http_llm_media_private4(v4);
        }

        if (a[10] == 0xff && a[11] == 0xff) {
            goto embedded;
        }
    }

    if (zero == 8 && a[8] == 0xff && a[9] == 0xff && a[10] == 0
        && a[11] == 0)
    {
        goto embedded;
    }

    if (ngx_memcmp(a, nat64, 12) == 0) {
        goto embedded;
    }

    /* 6to4 2002:a.b.c.d::/48 */

    if (a[0] == 0x20 && a[1] == 0x02) {
        v4 = (uint32_t) a[2] << 24 | a[3] << 16 | a[4] << 8 | a[5];
        return ngx_http_llm_media_private4(v4);
    }

    i = (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)  /* fe80::/10 link-local */
        || (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0)  /* fec0::/10 site */
        || (a[0] & 0xfe) == 0xfc                 /* fc00::/7 unique local */
        || a[0] == 0xff;                         /* multicast */

    return i;

embedded:

    v4 = (uint32_t) a[12] << 24 | a[13] << 16 | a[14] << 8 | a[15];

    return ngx_http_llm_media_private4(v4);
}


static ngx_int_t
ngx_http_llm_media_suffix(u_char *p, size_t len, const char *suffix)
{
    size_t  n;

    n = ngx_strlen(suffix);

    /* "localhost" itself, and any name under it */

    if (len == n - 1 && ngx_strncasecmp(p, (u_char *) suffix + 1, len) == 0)
    {
        return 1;
    }

    return len > n
           && ngx_strncasecmp(p + len - n, (u_char *) suffix, n) == 0;
}


static ngx_int_t
ngx_http_llm_media_in(const char *name, const char **list)
{
    if (name == NULL) {
        return 0;
    }

    for ( /* void */ ; *list; list++) {
        if (ngx_strcmp(name, *list) == 0) {
            return 1;
        }
    }

    return 0;
}
