
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Money as text, in micro-dollars and without floats: a tenant's budget
 * ("12.50" dollars) and a backend's price ("0.60/1.80" dollars per
 * million tokens).  They call nothing of the module.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_price.h"


static ngx_int_t ngx_http_llm_parse_micro(u_char *p, u_char *last,
    ngx_uint_t *value);


/* "12.50" dollars to micro-dollars, exactly; -1 if it is not a price */

int64_t
ngx_http_llm_parse_usd(ngx_str_t *s)
{
    u_char      *p, *last;
    int64_t      dollars, micro, scale;
    ngx_uint_t   frac;

    p = s->data;
    last = s->data + s->len;

    dollars = 0;
    micro = 0;
    scale = 1000000;
    frac = 0;

    if (p == last) {
        return -1;
    }

    for ( /* void */ ; p < last; p++) {

        if (*p == '.' && !frac) {
            frac = 1;
            continue;
        }

        if (*p < '0' || *p > '9') {
            return -1;
        }

        if (frac) {
            scale /= 10;

            if (scale == 0) {
                return -1;
            }

            micro += (*p - '0') * scale;
            continue;
        }

        dollars = dollars * 10 + (*p - '0');

        if (dollars > 1000000000LL) {
            return -1;
        }
    }

    return dollars * 1000000 + micro;
}


/* "0.60/1.80" dollars per million tokens → micro-dollars, no floats */

ngx_int_t
ngx_http_llm_parse_price(ngx_str_t *s, ngx_uint_t *in, ngx_uint_t *out)
{
    u_char  *slash;

    slash = ngx_strlchr(s->data, s->data + s->len, '/');
    if (slash == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_llm_parse_micro(s->data, slash, in) != NGX_OK
        || ngx_http_llm_parse_micro(slash + 1, s->data + s->len, out)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* one side of a price: dollars to micro-dollars, six decimals at most */

static ngx_int_t
ngx_http_llm_parse_micro(u_char *p, u_char *last, ngx_uint_t *value)
{
    ngx_uint_t  v, digits, frac;

    if (p == last) {
        return NGX_ERROR;
    }

    v = 0;
    frac = 0;
    digits = 0;

    for ( /* void */ ; p < last; p++) {

        if (*p == '.' && !frac) {
            frac = 1;
            continue;
        }

        /* twelve digits at most: scaled to micro-dollars, below 2^63 */

        if (*p < '0' || *p > '9' || digits > 11) {
            return NGX_ERROR;
        }

        if (frac && frac++ > 6) {
            return NGX_ERROR;
        }

        v = v * 10 + (*p - '0');
        digits++;
    }

    /* scale to six decimals */
    for (frac = frac ? frac : 1; frac <= 6; frac++) {
        v *= 10;
    }

    *value = v;

    return NGX_OK;
}
