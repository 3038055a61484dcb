
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Target: the SSE parser.  The input is an upstream stream; it is fed
 * whole, byte by byte, and in pieces whose sizes come from a hash of the
 * input.  Invariant: every split gives the same events (and the same
 * error, if any), since TCP may cut a stream anywhere.
 */


#include "ngx_http_llm_fuzz.h"
#include "ngx_http_llm_sse.h"


/* ---------------------------------------------------------- adapter
 * Every call into the module is here.  If the parser's interface
 * changes (an event type, comments handed on), adapt these.
 */

typedef struct {
    u_char                     *buf;
    size_t                      len;
    size_t                      size;
    ngx_uint_t                  events;
} ngx_http_llm_fuzz_events_t;


static ngx_int_t ngx_http_llm_fuzz_event(void *data, u_char *payload,
    size_t len);
static ngx_int_t ngx_http_llm_fuzz_comment(void *data, u_char *p,
    size_t len);


static void
ngx_http_llm_fuzz_sse_init(ngx_http_llm_sse_t *sse)
{
    ngx_memzero(sse, sizeof(ngx_http_llm_sse_t));

    /* comment lines are handed on too: every split must agree on them */

    sse->comment = ngx_http_llm_fuzz_comment;
}


static ngx_int_t
ngx_http_llm_fuzz_sse_feed(ngx_http_llm_sse_t *sse, u_char *p, size_t len,
    ngx_http_llm_fuzz_events_t *ev)
{
    return ngx_http_llm_sse_feed(sse, p, len, ngx_http_llm_fuzz_event, ev);
}


static ngx_int_t
ngx_http_llm_fuzz_sse_finish(ngx_http_llm_sse_t *sse,
    ngx_http_llm_fuzz_events_t *ev)
{
    return ngx_http_llm_sse_finish(sse, ngx_http_llm_fuzz_event, ev);
}


static void
ngx_http_llm_fuzz_sse_free(ngx_http_llm_sse_t *sse)
{
    ngx_http_llm_sse_free(sse);
}

/* ---------------------------------------------------------- target */


#define NGX_HTTP_LLM_FUZZ_SPLITS  4


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


/* what came out as one record: per item its tag, length and bytes */

static ngx_int_t
ngx_http_llm_fuzz_record(ngx_http_llm_fuzz_events_t *ev, u_char tag,
    u_char *payload, size_t len)
{
    u_char  *nb;
    size_t   need;

    need = ev->len + len + NGX_SIZE_T_LEN + 3;

    if (need > ev->size) {
        ev->size = ngx_max(need, 2 * ev->size);

        nb = realloc(ev->buf, ev->size);
        if (nb == NULL) {
            abort();
        }

        ev->buf = nb;
    }

    ev->len = ngx_sprintf(ev->buf + ev->len, "%c%uz:", tag, len) - ev->buf;

    if (len) {
        ngx_memcpy(ev->buf + ev->len, payload, len);
        ev->len += len;
    }

    ev->buf[ev->len++] = '\n';
    ev->events++;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_fuzz_event(void *data, u_char *payload, size_t len)
{
    return ngx_http_llm_fuzz_record(data, 'e', payload, len);
}


static ngx_int_t
ngx_http_llm_fuzz_comment(void *data, u_char *p, size_t len)
{
    return ngx_http_llm_fuzz_record(data, 'c', p, len);
}


/* one pass over the stream: step 0 means pieces from the hash */

static ngx_int_t
ngx_http_llm_fuzz_pass(u_char *p, size_t size, size_t step, uint32_t seed,
    ngx_http_llm_fuzz_events_t *ev)
{
    size_t               n;
    ngx_int_t            rc;
    ngx_http_llm_sse_t   sse;

    ngx_http_llm_fuzz_sse_init(&sse);
    ngx_memzero(ev, sizeof(ngx_http_llm_fuzz_events_t));

    rc = NGX_OK;

    while (size && rc == NGX_OK) {
        if (step) {
            n = ngx_min(step, size);

        } else {
            /* xorshift: pieces of 1 to 64 bytes, now and then a large one */
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;

            n = (seed & 0x700) ? (seed & 63) + 1 : (seed & 4095) + 1;
            n = ngx_min(n, size);
        }

        rc = ngx_http_llm_fuzz_sse_feed(&sse, p, n, ev);

        p += n;
        size -= n;
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_fuzz_sse_finish(&sse, ev);
    }

    ngx_http_llm_fuzz_sse_free(&sse);

    return rc;
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
    u_char                      *p;
    uint32_t                     seed;
    ngx_int_t                    rc[NGX_HTTP_LLM_FUZZ_SPLITS];
    ngx_uint_t                   i;
    ngx_http_llm_fuzz_events_t   ev[NGX_HTTP_LLM_FUZZ_SPLITS];

    /* a copy of its own, so that a read past the end is caught */
    p = malloc(size ? size : 1);
    if (p == NULL) {
        abort();
    }

    ngx_memcpy(p, data, size);

    seed = ngx_crc32_short(p, size) | 1;

    rc[0] = ngx_http_llm_fuzz_pass(p, size, size ? size : 1, 0, &ev[0]);
    rc[1] = ngx_http_llm_fuzz_pass(p, size, 1, 0, &ev[1]);
    rc[2] = ngx_http_llm_fuzz_pass(p, size, 0, seed, &ev[2]);
    rc[3] = ngx_http_llm_fuzz_pass(p, size, 0, seed * 2654435761u, &ev[3]);

    for (i = 1; i < NGX_HTTP_LLM_FUZZ_SPLITS; i++) {
        ngx_http_llm_fuzz_assert(rc[i] == rc[0],
                                 "split %ui returned %i, whole %i",
                                 i, rc[i], rc[0]);

        /* after an error, what came before it depends on the split */
        if (rc[0] != NGX_OK) {
            continue;
        }

        ngx_http_llm_fuzz_assert(ev[i].len == ev[0].len
                                 && (ev[0].len == 0
                                     || ngx_memcmp(ev[i].buf, ev[0].buf,
                                                   ev[0].len) == 0),
                                 "split %ui gave %ui events (%uz bytes), "
                                 "whole %ui (%uz bytes)",
                                 i, ev[i].events, ev[i].len, ev[0].events,
                                 ev[0].len);
    }

    for (i = 0; i < NGX_HTTP_LLM_FUZZ_SPLITS; i++) {
        free(ev[i].buf);
    }

    free(p);

    return 0;
}
