
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Target: money as text.  The input is given to the tenant budget parser
 * (budget_day_usd, "12.50" dollars) and to the backend price parser
 * (price=IN/OUT, dollars per million tokens).  Invariants: no crash and
 * no overflow (UBSan); an accepted string has exactly the value of its
 * decimal digits, in micro-dollars, and that value fits the int64_t that
 * money is computed in; a plain decimal within the documented range is
 * accepted; the value printed back parses to itself.
 */


#include "ngx_http_llm_fuzz.h"
#include "ngx_http_llm_price.h"


/* ---------------------------------------------------------- adapter */

/* micro-dollars, or -1 */
static int64_t
ngx_http_llm_fuzz_usd(u_char *p, size_t len)
{
    ngx_str_t  s;

    s.data = p;
    s.len = len;

    return ngx_http_llm_parse_usd(&s);
}


/* NGX_OK and two prices in micro-dollars per million tokens */
static ngx_int_t
ngx_http_llm_fuzz_price(u_char *p, size_t len, uint64_t *in, uint64_t *out)
{
    ngx_int_t   rc;
    ngx_str_t   s;
    ngx_uint_t  i, o;

    s.data = p;
    s.len = len;

    rc = ngx_http_llm_parse_price(&s, &i, &o);

    *in = i;
    *out = o;

    return rc;
}

/* ---------------------------------------------------------- target */


/* the most dollars a budget may name (ngx_http_llm_parse_usd) */
#define NGX_HTTP_LLM_FUZZ_USD_MAX    1000000000LL


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


/*
 * The oracle: "DIGITS[.DIGITS]" in micro-dollars, exactly; -1 for
 * anything else or more than 6 decimals; -2 past 10^30.  The other
 * figures say how many digits each side has.
 */

static __int128
ngx_http_llm_fuzz_decimal(u_char *p, u_char *last, ngx_uint_t *whole,
    ngx_uint_t *frac)
{
    __int128    v;
    ngx_uint_t  dot, i;

    v = 0;
    dot = 0;
    *whole = 0;
    *frac = 0;

    for ( /* void */ ; p < last; p++) {
        if (*p == '.' && !dot) {
            dot = 1;
            continue;
        }

        if (*p < '0' || *p > '9') {
            return -1;
        }

        if (dot) {
            if (++*frac > 6) {
                return -1;
            }

        } else {
            ++*whole;
        }

        if (v > (__int128) 1000000000000000000LL * 1000000000000LL) {
            return -2;
        }

        v = v * 10 + (*p - '0');
    }

    for (i = *frac; i < 6; i++) {
        v *= 10;
    }

    return v;
}


/* micro-dollars as the shortest decimal: 1500000 is "1.5" */

static u_char *
ngx_http_llm_fuzz_print(u_char *p, uint64_t v)
{
    u_char  *q;

    p = ngx_sprintf(p, "%uL", v / 1000000);

    if (v % 1000000) {
        q = ngx_sprintf(p, ".%06uL", v % 1000000);

        while (q[-1] == '0') {
            q--;
        }

        p = q;
    }

    return p;
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_http_llm_fuzz_init();
    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char     *p, *slash, buf[128];
    size_t      n;
    int64_t     usd, again;
    __int128    want, want_in, want_out;
    uint64_t    in, out, in2, out2;
    ngx_int_t   rc;
    ngx_uint_t  whole, frac, whole_in, frac_in, whole_out, frac_out;

    p = malloc(size ? size : 1);
    if (p == NULL) {
        abort();
    }

    ngx_memcpy(p, data, size);

    /* a budget */

    usd = ngx_http_llm_fuzz_usd(p, size);
    want = ngx_http_llm_fuzz_decimal(p, p + size, &whole, &frac);

    ngx_http_llm_fuzz_assert(usd >= -1, "a budget of %L", usd);

    if (usd >= 0) {
        ngx_http_llm_fuzz_assert(want == usd,
                                 "\"%*s\" read as %L micro-dollars",
                                 ngx_min(size, 64), p, usd);

        n = ngx_http_llm_fuzz_print(buf, usd) - buf;
        again = ngx_http_llm_fuzz_usd(buf, n);

        ngx_http_llm_fuzz_assert(again == usd, "\"%*s\" read back as %L, "
                                 "not %L", n, buf, again, usd);

    } else if (size && want >= 0
               && want <= NGX_HTTP_LLM_FUZZ_USD_MAX * 1000000
               && whole + frac > 0)
    {
        ngx_http_llm_fuzz_assert(0, "the budget \"%*s\" was refused",
                                 ngx_min(size, 64), p);
    }

    /* a backend price */

    rc = ngx_http_llm_fuzz_price(p, size, &in, &out);
    slash = ngx_strlchr(p, p + size, '/');

    if (rc == NGX_OK) {
        ngx_http_llm_fuzz_assert(slash != NULL, "a price without '/'");

        want_in = ngx_http_llm_fuzz_decimal(p, slash, &whole_in, &frac_in);
        want_out = ngx_http_llm_fuzz_decimal(slash + 1, p + size,
                                             &whole_out, &frac_out);

        ngx_http_llm_fuzz_assert(want_in == (__int128) in
                                 && want_out == (__int128) out,
                                 "\"%*s\" read as %uL/%uL",
                                 ngx_min(size, 64), p, in, out);

        /* the reservation and the cost take prices as int64_t */
        ngx_http_llm_fuzz_expect("price64", in <= (uint64_t) INT64_MAX
                                 && out <= (uint64_t) INT64_MAX,
                                 "\"%*s\" accepted: %uL/%uL micro-dollars "
                                 "overflow an int64_t",
                                 ngx_min(size, 64), p, in, out);

        slash = ngx_http_llm_fuzz_print(buf, in);
        *slash++ = '/';
        n = ngx_http_llm_fuzz_print(slash, out) - buf;

        rc = ngx_http_llm_fuzz_price(buf, n, &in2, &out2);

        ngx_http_llm_fuzz_assert(rc == NGX_OK && in2 == in && out2 == out,
                                 "\"%*s\" read back as %uL/%uL",
                                 n, buf, in2, out2);
    }

    free(p);

    return 0;
}
