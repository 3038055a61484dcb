/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The tokenizer's harness (t/303-tokenizer.t):
 *
 *   tok_count VOCAB.gguf              a text per line of stdin, in hex;
 *                                     prints "count lo hi id..." per line
 *   tok_count -t VOCAB.gguf TEXT...   the ids of each TEXT
 *   tok_count -i VOCAB.gguf PIECE...  the id of each token text, or -1
 *   tok_count -b VOCAB.gguf [FILE]    ns per count of a 2 KB and a 256 KB
 *                                     English prompt (or FILE's text)
 *
 * Every count is checked against its own encode and its bounds: a
 * mismatch exits 3.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ngx_http_llm_tokenizer.h"


static ngx_http_llm_tokenizer_t  *tok;


static double
now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec * 1e9 + ts.tv_nsec;
}


static ssize_t
encode(const unsigned char *text, size_t len, int32_t **ids, size_t *lo,
    size_t *hi)
{
    void     *scratch;
    size_t    size;
    ssize_t   n, c;

    size = ngx_http_llm_tokenizer_scratch(tok, len);
    scratch = malloc(size);
    *ids = malloc((3 * len + 3) * sizeof(int32_t));

    if (scratch == NULL || *ids == NULL) {
        fprintf(stderr, "tok_count: out of memory\n");
        exit(2);
    }

    n = ngx_http_llm_tokenizer_encode(tok, text, len, *ids, 3 * len + 3,
                                      scratch, size);
    c = ngx_http_llm_tokenizer_count(tok, text, len, scratch, size);
    ngx_http_llm_tokenizer_bounds(tok, text, len, lo, hi);

    free(scratch);

    if (n < 0 || c != n || (size_t) n < *lo || (size_t) n > *hi) {
        fprintf(stderr, "tok_count: count %zd, encode %zd, bounds [%zu, %zu]"
                " for a text of %zu bytes\n", c, n, *lo, *hi, len);
        exit(3);
    }

    return n;
}


static int
unhex(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    return -1;
}


static void
lines(void)
{
    char           *line;
    size_t          cap, len, i, lo, hi;
    ssize_t         got, n, k;
    int32_t        *ids;
    unsigned char  *text;

    line = NULL;
    cap = 0;

    while ((got = getline(&line, &cap, stdin)) != -1) {
        while (got && (line[got - 1] == '\n' || line[got - 1] == '\r')) {
            got--;
        }

        text = malloc(got / 2 + 1);
        if (text == NULL) {
            exit(2);
        }

        for (len = 0, i = 0; i + 1 < (size_t) got; i += 2) {
            if (unhex(line[i]) < 0 || unhex(line[i + 1]) < 0) {
                fprintf(stderr, "tok_count: not hex\n");
                exit(2);
            }

            text[len++] = unhex(line[i]) * 16 + unhex(line[i + 1]);
        }

        n = encode(text, len, &ids, &lo, &hi);

        printf("%zd %zu %zu", n, lo, hi);

        for (k = 0; k < n; k++) {
            printf(" %d", ids[k]);
        }

        printf("\n");
        fflush(stdout);

        free(ids);
        free(text);
    }

    free(line);
}


static const char  *prose =
    "The gateway counts the tokens of every prompt before it forwards it, "
    "so that the context guard can refuse a request that would not fit "
    "and the quota can reserve what the request may cost. Counting must "
    "be exact: a prompt that is one token over the limit is refused by "
    "the model server anyway, and a reservation that is too small lets a "
    "tenant spend more than its budget. In 2024, the median prompt was "
    "about 1,800 characters long; the longest ones, pasted logs and "
    "source files, ran to several hundred kilobytes.\n\n";


static void
bench(const char *file)
{
    int             rounds, r;
    char           *buf;
    void           *scratch;
    size_t          sizes[2], plen, len, i, size, lo, hi;
    double          t0, t1, tb;
    ssize_t         n;
    FILE           *f;

    sizes[0] = 2048;
    sizes[1] = 256 * 1024;

    buf = malloc(sizes[1] + 1);
    if (buf == NULL) {
        exit(2);
    }

    plen = 0;

    if (file) {
        f = fopen(file, "rb");
        if (f == NULL) {
            perror(file);
            exit(2);
        }

        plen = fread(buf, 1, sizes[1], f);
        fclose(f);
    }

    if (plen == 0) {
        for (plen = 0; plen < sizes[1]; plen += len) {
            len = strlen(prose);
            if (len > sizes[1] - plen) {
                len = sizes[1] - plen;
            }
            memcpy(buf + plen, prose, len);
        }
    }

    for (i = 0; plen < sizes[1]; i++) {
        buf[plen++] = buf[i];
    }

    for (i = 0; i < 2; i++) {
        len = sizes[i];
        size = ngx_http_llm_tokenizer_scratch(tok, len);
        scratch = malloc(size);
        if (scratch == NULL) {
            exit(2);
        }

        rounds = len < 10000 ? 2000 : 20;

        n = ngx_http_llm_tokenizer_count(tok, (unsigned char *) buf, len,
                                         scratch, size);

        t0 = now_ns();
        for (r = 0; r < rounds; r++) {
            n = ngx_http_llm_tokenizer_count(tok, (unsigned char *) buf, len,
                                             scratch, size);
        }
        t1 = now_ns();

        for (r = 0; r < rounds; r++) {
            ngx_http_llm_tokenizer_bounds(tok, (unsigned char *) buf, len,
                                          &lo, &hi);
        }
        tb = now_ns();

        printf("%7zu bytes: %zd tokens, count %.0f ns (%.1f ns/byte),"
               " bounds [%zu, %zu] %.0f ns, scratch %zu bytes\n",
               len, n, (t1 - t0) / rounds, (t1 - t0) / rounds / len,
               lo, hi, (tb - t1) / rounds, size);

        free(scratch);
    }

    free(buf);
}


int
main(int argc, char **argv)
{
    int         i, mode;
    char        err[512];
    size_t      lo, hi, len;
    double      t0;
    int32_t    *ids, id;
    ssize_t     n, k;
    const char *s;

    mode = 0;

    if (argc > 1 && argv[1][0] == '-' && argv[1][1] && !argv[1][2]) {
        mode = argv[1][1];
        argv++;
        argc--;
    }

    if (argc < 2) {
        fprintf(stderr, "usage: tok_count [-t|-i|-b] VOCAB.gguf [...]\n");
        return 2;
    }

    t0 = now_ns();
    tok = ngx_http_llm_tokenizer_load(argv[1], err, sizeof(err));

    if (tok == NULL) {
        fprintf(stderr, "tok_count: %s\n", err);
        return 1;
    }

    fprintf(stderr, "vocab %zu tokens, longest %zu bytes, loaded in %.2f ms\n",
            ngx_http_llm_tokenizer_vocab(tok),
            ngx_http_llm_tokenizer_max_token(tok), (now_ns() - t0) / 1e6);

    switch (mode) {

    case 0:
        lines();
        break;

    case 't':
        for (i = 2; i < argc; i++) {
            n = encode((unsigned char *) argv[i], strlen(argv[i]), &ids, &lo,
                       &hi);
            printf("%zd [%zu, %zu]:", n, lo, hi);

            for (k = 0; k < n; k++) {
                s = ngx_http_llm_tokenizer_text(tok, ids[k], &len);
                printf(" %d'%.*s'", ids[k], (int) len, s);
            }

            printf("\n");
            free(ids);
        }
        break;

    case 'i':
        for (i = 2; i < argc; i++) {
            id = -1;

            for (k = 0; k < (ssize_t) ngx_http_llm_tokenizer_vocab(tok); k++)
            {
                s = ngx_http_llm_tokenizer_text(tok, k, &len);
                if (len == strlen(argv[i]) && memcmp(s, argv[i], len) == 0) {
                    id = k;
                    break;
                }
            }

            printf("%d\n", id);
        }
        break;

    case 'b':
        bench(argc > 2 ? argv[2] : NULL);
        break;

    default:
        fprintf(stderr, "tok_count: -%c?\n", mode);
        return 2;
    }

    ngx_http_llm_tokenizer_free(tok);

    return 0;
}
