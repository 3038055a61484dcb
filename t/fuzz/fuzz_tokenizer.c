/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Target: the SPM token counter.  The first byte picks what the rest is:
 *
 *   'G'   bytes written over a small GGUF vocabulary made here (the first
 *         four say where), which the loader must refuse or load without a
 *         crash or a huge allocation; a vocabulary it loads must count;
 *   'T'   a GGUF file of its own, the same;
 *   else  a text, counted with the real vocabulary (LLM_FUZZ_VOCAB, or
 *         llama.cpp's ggml-vocab-llama-spm.gguf in the cache) and with the
 *         small one, which has user-defined tokens and ties in scores.
 *
 * Invariants: count equals the number of ids encode writes; the bounds
 * hold; every id is in the vocabulary; the ids are those of one merge over
 * the whole text, without the cuts where no token crosses; and, with the
 * real vocabulary, the ids spell the text back: the token texts (a byte
 * token its byte) joined are the text with the space prefix and its
 * spaces escaped to U+2581.
 */


#include "ngx_http_llm_fuzz.h"

/* the tokenizer itself, for the vocabulary without its cuts */
#include "../../ngx_module/ngx_http_llm_tokenizer.c"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static ngx_http_llm_tokenizer_t  *ngx_http_llm_fuzz_real;
static ngx_http_llm_tokenizer_t  *ngx_http_llm_fuzz_small;
static u_char                    *ngx_http_llm_fuzz_gguf;
static size_t                     ngx_http_llm_fuzz_gguf_len;
static int32_t                    ngx_http_llm_fuzz_byte_of[1 << 16];


/* the small vocabulary: a user-defined token, equal scores, merges */

typedef struct {
    const char   *text;
    float         score;
    int32_t       type;
} ngx_http_llm_fuzz_tok_t;


static ngx_http_llm_fuzz_tok_t  ngx_http_llm_fuzz_toks[] = {
    { "<unk>", 0, 2 }, { "<s>", 0, 3 }, { "</s>", 0, 3 },
    { "\xe2\x96\x81", -1, 1 }, { "a", -2, 1 }, { "b", -2, 1 },
    { "c", -2, 1 }, { "\xc3\xbc", -3, 1 }, { "ab", -1.5, 1 },
    { "bc", -1.5, 1 }, { "abc", -1, 1 }, { "\xe2\x96\x81" "a", -0.5, 1 },
    { "\xe2\x96\x81\xe2\x96\x81", -4, 1 }, { "<|u|>", 0, 4 },
    { "<x>", 0, 4 }, { "<|end|>", 0, 4 }, { "aa", -3, 1 },
    { "aaa", -2.5, 1 }, { "1", -5, 1 }, { "11", -6, 1 },
    { NULL, 0, 0 }
};


static u_char *
ngx_http_llm_fuzz_put(u_char *p, const void *v, size_t n)
{
    return ngx_cpymem(p, v, n);
}


static u_char *
ngx_http_llm_fuzz_str(u_char *p, const char *s, size_t n)
{
    uint64_t  len;

    len = n;
    p = ngx_http_llm_fuzz_put(p, &len, 8);

    return ngx_http_llm_fuzz_put(p, s, n);
}


static void
ngx_http_llm_fuzz_make_gguf(void)
{
    char                      hex[8];
    u_char                   *p;
    uint8_t                   yes;
    uint32_t                  u, type;
    uint64_t                  n, i;
    ngx_http_llm_fuzz_tok_t  *tk;

    n = 256;
    for (tk = ngx_http_llm_fuzz_toks; tk->text; tk++) {
        n++;
    }

    p = malloc(65536);
    if (p == NULL) {
        abort();
    }

    ngx_http_llm_fuzz_gguf = p;

    p = ngx_cpymem(p, "GGUF", 4);
    u = 3;
    p = ngx_http_llm_fuzz_put(p, &u, 4);
    i = 0;
    p = ngx_http_llm_fuzz_put(p, &i, 8);
    i = 6;
    p = ngx_http_llm_fuzz_put(p, &i, 8);

    p = ngx_http_llm_fuzz_str(p, "general.name", 12);
    type = 8;
    p = ngx_http_llm_fuzz_put(p, &type, 4);
    p = ngx_http_llm_fuzz_str(p, "fuzz", 4);

    p = ngx_http_llm_fuzz_str(p, "tokenizer.ggml.model", 20);
    p = ngx_http_llm_fuzz_put(p, &type, 4);
    p = ngx_http_llm_fuzz_str(p, "llama", 5);

    /* the tokens: the named ones, then the 256 bytes */
    p = ngx_http_llm_fuzz_str(p, "tokenizer.ggml.tokens", 21);
    type = 9;
    p = ngx_http_llm_fuzz_put(p, &type, 4);
    type = 8;
    p = ngx_http_llm_fuzz_put(p, &type, 4);
    p = ngx_http_llm_fuzz_put(p, &n, 8);

    for (tk = ngx_http_llm_fuzz_toks; tk->text; tk++) {
        p = ngx_http_llm_fuzz_str(p, tk->text, ngx_strlen(tk->text));
    }

    for (u = 0; u < 256; u++) {
        ngx_sprintf((u_char *) hex, "<0x%02XD>", u);
        p = ngx_http_llm_fuzz_str(p, hex, 6);
    }

    p = ngx_http_llm_fuzz_str(p, "tokenizer.ggml.scores", 21);
    type = 9;
    p = ngx_http_llm_fuzz_put(p, &type, 4);
    type = 6;
    p = ngx_http_llm_fuzz_put(p, &type, 4);
    p = ngx_http_llm_fuzz_put(p, &n, 8);

    for (tk = ngx_http_llm_fuzz_toks; tk->text; tk++) {
        p = ngx_http_llm_fuzz_put(p, &tk->score, 4);
    }

    for (u = 0; u < 256; u++) {
        float  f = 0;

        p = ngx_http_llm_fuzz_put(p, &f, 4);
    }

    p = ngx_http_llm_fuzz_str(p, "tokenizer.ggml.token_type", 25);
    type = 9;
    p = ngx_http_llm_fuzz_put(p, &type, 4);
    type = 5;
    p = ngx_http_llm_fuzz_put(p, &type, 4);
    p = ngx_http_llm_fuzz_put(p, &n, 8);

    for (tk = ngx_http_llm_fuzz_toks; tk->text; tk++) {
        p = ngx_http_llm_fuzz_put(p, &tk->type, 4);
    }

    for (u = 0; u < 256; u++) {
        int32_t  b = 6;

        p = ngx_http_llm_fuzz_put(p, &b, 4);
    }

    p = ngx_http_llm_fuzz_str(p, "tokenizer.ggml.add_space_prefix", 31);
    type = 7;
    p = ngx_http_llm_fuzz_put(p, &type, 4);
    yes = 1;
    p = ngx_http_llm_fuzz_put(p, &yes, 1);

    ngx_http_llm_fuzz_gguf_len = p - ngx_http_llm_fuzz_gguf;
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    int          b;
    char         err[512], path[1024];
    const char  *vocab, *home;

    ngx_http_llm_fuzz_init();

    vocab = getenv("LLM_FUZZ_VOCAB");
    if (vocab == NULL) {
        home = getenv("HOME");
        snprintf(path, sizeof(path), "%s/.cache/nginx-llm-gateway/llama-src/"
                 "models/ggml-vocab-llama-spm.gguf", home ? home : "");
        vocab = path;
    }

    ngx_http_llm_fuzz_real = ngx_http_llm_tokenizer_load(vocab, err,
                                                         sizeof(err));
    if (ngx_http_llm_fuzz_real == NULL) {
        fprintf(stderr, "fuzz_tokenizer: %s (the real vocabulary is not"
                " fuzzed; LLM_FUZZ_VOCAB names another)\n", err);

    } else {
        for (b = 0; b < (1 << 16); b++) {
            ngx_http_llm_fuzz_byte_of[b] = -1;
        }

        for (b = 0; b < 256; b++) {
            int32_t  id = ngx_http_llm_tokenizer_byte(ngx_http_llm_fuzz_real,
                                                      b);
            if (id >= 0 && id < (1 << 16)) {
                ngx_http_llm_fuzz_byte_of[id] = b;
            }
        }
    }

    ngx_http_llm_fuzz_make_gguf();

    ngx_http_llm_fuzz_small = ngx_http_llm_tokenizer_parse(
                                  ngx_http_llm_fuzz_gguf,
                                  ngx_http_llm_fuzz_gguf_len, "small", err,
                                  sizeof(err));
    if (ngx_http_llm_fuzz_small == NULL) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err);
        abort();
    }

    return 0;
}


/* counts text with t; the ids, which the caller frees, or NULL */

static int32_t *
ngx_http_llm_fuzz_count(ngx_http_llm_tokenizer_t *t, const u_char *text,
    size_t len, ssize_t *n, int any)
{
    void     *scratch;
    size_t                    size, lo, hi, max, i;
    ssize_t                   c;
    int32_t                  *ids, *ref;
    ngx_http_llm_tokenizer_t  whole;

    size = ngx_http_llm_tokenizer_scratch(t, len);
    max = 3 * len + 3 + 8;

    scratch = malloc(size);
    ids = malloc(max * sizeof(int32_t));
    if (scratch == NULL || ids == NULL) {
        abort();
    }

    *n = ngx_http_llm_tokenizer_encode(t, text, len, ids, max, scratch, size);
    c = ngx_http_llm_tokenizer_count(t, text, len, scratch, size);
    ngx_http_llm_tokenizer_bounds(t, text, len, &lo, &hi);

    /* one byte short of the scratch it asks for is refused, not overrun */
    ngx_http_llm_fuzz_assert(ngx_http_llm_tokenizer_count(t, text, len,
                                                          scratch, size - 1)
                             == -1, "a short scratch accepted");

    free(scratch);

    /* a vocabulary of the fuzzer's may lack a byte token: llama.cpp throws */
    if (any && *n == -1 && c == -1) {
        return ids;
    }

    ngx_http_llm_fuzz_assert(*n >= 0 && c == *n, "count %z, encode %z", c,
                             *n);
    ngx_http_llm_fuzz_assert((size_t) *n <= max, "%z ids for %uz bytes", *n,
                             len);
    ngx_http_llm_fuzz_assert(lo <= (size_t) *n && (size_t) *n <= hi,
                             "%z tokens outside the bounds [%uz, %uz]", *n,
                             lo, hi);

    for (i = 0; i < (size_t) *n; i++) {
        ngx_http_llm_fuzz_assert(ids[i] >= 0 && (size_t) ids[i]
                                 < ngx_http_llm_tokenizer_vocab(t),
                                 "id %D", ids[i]);
    }

    /* the same ids from one merge over the whole text */

    whole = *t;
    whole.word_start = 0;
    ngx_memzero(whole.alone, sizeof(whole.alone));

    scratch = malloc(size);
    ref = malloc(max * sizeof(int32_t));
    if (scratch == NULL || ref == NULL) {
        abort();
    }

    c = ngx_http_llm_tokenizer_encode(&whole, text, len, ref, max, scratch,
                                      size);

    ngx_http_llm_fuzz_assert(c == *n && ngx_memcmp(ref, ids, c * 4) == 0,
                             "%z ids, %z without the cuts, or not the same",
                             *n, c);

    free(scratch);
    free(ref);

    return ids;
}


static void
ngx_http_llm_fuzz_spell(const u_char *text, size_t len, int32_t *ids,
    ssize_t n)
{
    u_char       *want, *got, *p;
    size_t        i, wlen, glen, tlen;
    const char   *s;

    want = malloc(3 * len + 3);
    got = malloc(48 * (size_t) n + 1);
    if (want == NULL || got == NULL) {
        abort();
    }

    p = ngx_cpymem(want, "\xe2\x96\x81", len ? 3 : 0);

    for (i = 0; i < len; i++) {
        if (text[i] == ' ') {
            p = ngx_cpymem(p, "\xe2\x96\x81", 3);

        } else {
            *p++ = text[i];
        }
    }

    wlen = p - want;
    p = got;

    for (i = 0; i < (size_t) n; i++) {
        if (ids[i] < (1 << 16) && ngx_http_llm_fuzz_byte_of[ids[i]] >= 0) {
            *p++ = (u_char) ngx_http_llm_fuzz_byte_of[ids[i]];
            continue;
        }

        s = ngx_http_llm_tokenizer_text(ngx_http_llm_fuzz_real, ids[i], &tlen);
        ngx_http_llm_fuzz_assert(s != NULL && tlen <= 48, "token %D", ids[i]);
        p = ngx_cpymem(p, s, tlen);
    }

    glen = p - got;

    ngx_http_llm_fuzz_assert(glen == wlen && ngx_memcmp(got, want, wlen) == 0,
                             "the ids spell %uz bytes for the %uz of the"
                             " escaped text", glen, wlen);

    free(want);
    free(got);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                    *p;
    char                       err[256];
    size_t                     at;
    ssize_t                    n;
    int32_t                   *ids;
    ngx_http_llm_tokenizer_t  *t, nouser;

    if (size == 0) {
        return 0;
    }

    if (data[0] == 'G' || data[0] == 'T') {
        if (data[0] == 'G') {
            if (size < 5) {
                return 0;
            }

            p = malloc(ngx_http_llm_fuzz_gguf_len);
            if (p == NULL) {
                abort();
            }

            ngx_memcpy(p, ngx_http_llm_fuzz_gguf, ngx_http_llm_fuzz_gguf_len);

            at = (data[1] | data[2] << 8 | (size_t) data[3] << 16)
                 % ngx_http_llm_fuzz_gguf_len;

            ngx_memcpy(p + at, data + 4,
                       ngx_min(size - 4, ngx_http_llm_fuzz_gguf_len - at));

            /* and a cut: data[4] says how much of the end goes */
            t = ngx_http_llm_tokenizer_parse(p, ngx_http_llm_fuzz_gguf_len
                                             - (data[4] & 0x80 ? data[4] & 0x7f
                                                               : 0),
                                             "gguf", err, sizeof(err));
            free(p);

        } else {
            p = malloc(size - 1);
            if (p == NULL) {
                abort();
            }

            ngx_memcpy(p, data + 1, size - 1);
            t = ngx_http_llm_tokenizer_parse(p, size - 1, "gguf", err,
                                             sizeof(err));
            free(p);
        }

        if (t) {
            ids = ngx_http_llm_fuzz_count(t, (u_char *) "a b  abc <|u|>x\xc3",
                                          17, &n, 1);
            free(ids);
            ngx_http_llm_tokenizer_free(t);

        } else {
            ngx_http_llm_fuzz_assert(ngx_strlen(err) > 6
                                     && ngx_strncmp(err, "gguf: ", 6) == 0,
                                     "error \"%s\"", err);
        }

        return 0;
    }

    ids = ngx_http_llm_fuzz_count(ngx_http_llm_fuzz_small, data, size, &n,
                                  0);
    free(ids);

    /* and without its user-defined tokens, for the bounds' own way */
    nouser = *ngx_http_llm_fuzz_small;
    nouser.n_user = 0;

    ids = ngx_http_llm_fuzz_count(&nouser, data, size, &n, 0);
    free(ids);

    if (ngx_http_llm_fuzz_real) {
        ids = ngx_http_llm_fuzz_count(ngx_http_llm_fuzz_real, data, size,
                                      &n, 0);
        ngx_http_llm_fuzz_spell(data, size, ids, n);
        free(ids);
    }

    return 0;
}
