/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The SPM token counter.  A GGUF file's tokenizer metadata is read once
 * (the tensors are never looked at); counting then follows llama.cpp's
 * llm_tokenizer_spm step by step: user-defined tokens split the text
 * first (parse_special off leaves control and unknown tokens as text),
 * each piece gets a space prefix where llama.cpp adds one, spaces become
 * U+2581, the text is cut into UTF-8 characters by their lead byte alone,
 * the adjacent pair that is the best-scored token is merged first (the
 * leftmost of equals), and what is left that is no token goes out as
 * <0xXX> byte tokens.
 */


/* memmem() */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "ngx_http_llm_tokenizer.h"


/* what a vocabulary may hold: beyond that the file is taken as corrupt */
#define NGX_HTTP_LLM_TOK_MAX_VOCAB    (1 << 22)
#define NGX_HTTP_LLM_TOK_MAX_KEY      65536
#define NGX_HTTP_LLM_TOK_MAX_DEPTH    4

/* no way: below any count of tokens */
#define NGX_HTTP_LLM_TOK_NONE         (-(1L << 40))

/* GGUF value types */
#define GGUF_UINT8     0
#define GGUF_INT8      1
#define GGUF_UINT16    2
#define GGUF_INT16     3
#define GGUF_UINT32    4
#define GGUF_INT32     5
#define GGUF_FLOAT32   6
#define GGUF_BOOL      7
#define GGUF_STRING    8
#define GGUF_ARRAY     9
#define GGUF_UINT64    10
#define GGUF_INT64     11
#define GGUF_FLOAT64   12

/* token types of tokenizer.ggml.token_type */
#define NGX_HTTP_LLM_TOK_USER_DEFINED  4


struct ngx_http_llm_tokenizer_s {
    uint32_t         n;
    uint32_t         max_len;
    uint32_t        *off;          /* n + 1 offsets into text */
    unsigned char   *text;
    float           *score;
    uint32_t        *hash;         /* id + 1, 0 is empty */
    uint32_t         mask;
    int32_t          byte[256];    /* <0xXX>, or -1 */
    unsigned char    alone[256];   /* no longer token holds byte b */
    int32_t          space;        /* U+2581 alone, or -1 */
    int              word_start;   /* U+2581 only leads a token */
    unsigned char    pair[129][16];  /* ASCII a then b is a token; a 128:
                                        U+2581 */
    int32_t          bos;
    int              add_bos;
    int              add_space_prefix;
    uint32_t         n_user;
    uint32_t        *user;         /* user-defined ids, longest first */
    uint32_t         max_user;
};


typedef struct {
    const unsigned char  *p;
    const unsigned char  *end;
} ngx_http_llm_tok_reader_t;


typedef struct {
    const unsigned char  *data;
    uint64_t              n;
    uint32_t              type;
    int                   found;
} ngx_http_llm_tok_array_t;


typedef struct {
    int32_t          prev;
    int32_t          next;
    uint32_t         off;
    uint32_t         n;
} ngx_http_llm_tok_sym_t;


typedef struct {
    float            score;
    int32_t          left;
    uint32_t         size;
} ngx_http_llm_tok_bigram_t;


typedef struct {
    uint32_t         off;
    uint32_t         len;
    int32_t          id;           /* a user-defined token, or -1: text */
} ngx_http_llm_tok_seg_t;


typedef struct {
    unsigned char               *esc;
    ngx_http_llm_tok_sym_t      *sym;
    ngx_http_llm_tok_bigram_t   *heap;
    ngx_http_llm_tok_seg_t      *seg[2];
    size_t                       sym_cap;
    size_t                       heap_cap;
    size_t                       seg_cap;
    int32_t                     *ids;
    size_t                       max_ids;
    size_t                       count;
} ngx_http_llm_tok_run_t;


static void ngx_http_llm_tok_err(char *err, size_t errlen, const char *name,
    const char *fmt, ...);
static int ngx_http_llm_tok_u32(ngx_http_llm_tok_reader_t *r, uint32_t *v);
static int ngx_http_llm_tok_u64(ngx_http_llm_tok_reader_t *r, uint64_t *v);
static int ngx_http_llm_tok_str(ngx_http_llm_tok_reader_t *r,
    const unsigned char **s, uint64_t *len);
static int ngx_http_llm_tok_skip(ngx_http_llm_tok_reader_t *r, uint32_t type,
    int depth);
static int ngx_http_llm_tok_int(ngx_http_llm_tok_reader_t *r, uint32_t type,
    int64_t *v);
static size_t ngx_http_llm_tok_type_size(uint32_t type);
static int ngx_http_llm_tok_control_text(const unsigned char *s, size_t len);
static uint32_t ngx_http_llm_tok_hash(const unsigned char *s, size_t len);
static int32_t ngx_http_llm_tok_find(const ngx_http_llm_tokenizer_t *t,
    const unsigned char *s, size_t len);
static int ngx_http_llm_tok_user_cmp(const void *a, const void *b);
static void ngx_http_llm_tok_emit(ngx_http_llm_tok_run_t *run, int32_t id);
static int ngx_http_llm_tok_spm(const ngx_http_llm_tokenizer_t *t,
    ngx_http_llm_tok_run_t *run, const unsigned char *text, size_t len,
    int prefix);
static int ngx_http_llm_tok_cut(const ngx_http_llm_tokenizer_t *t,
    const unsigned char *esc, const ngx_http_llm_tok_sym_t *prev, size_t off,
    size_t clen);
static int ngx_http_llm_tok_part(const ngx_http_llm_tokenizer_t *t,
    ngx_http_llm_tok_run_t *run, size_t start, size_t end);
static void ngx_http_llm_tok_try(const ngx_http_llm_tokenizer_t *t,
    ngx_http_llm_tok_run_t *run, size_t *nheap, int32_t left);
static void ngx_http_llm_tok_push(ngx_http_llm_tok_bigram_t *heap,
    size_t *n, ngx_http_llm_tok_bigram_t *b);
static void ngx_http_llm_tok_pop(ngx_http_llm_tok_bigram_t *heap, size_t *n);


/* llama.cpp's unicode_len_utf8(): by the lead byte, nothing else */
static const unsigned char  ngx_http_llm_tok_utf8_len[16] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4
};


/*
 * The texts llama.cpp makes control tokens (end of generation, fill in
 * the middle) whatever the file says: a user-defined token so named is
 * then not split out with parse_special off.
 */
static const char  *ngx_http_llm_tok_control[] = {
    "</s>", "<EOT>", "<MID>", "<PAD>", "<PRE>", "<REPO>", "<SUF>",
    "<end_of_turn>", "<end_of_utterance>", "<eos>", "<fim-middle>",
    "<fim-pad>", "<fim-prefix>", "<fim-repo>", "<fim-suffix>",
    "<fim_middle>", "<fim_pad>", "<fim_prefix>", "<fim_suffix>",
    "<reponame>", "<turn|>", "<|calls|>", "<|call|>", "<|code_middle|>",
    "<|code_prefix|>", "<|code_suffix|>", "<|end_of_text|>",
    "<|endoftext|>", "<|end|>", "<|eom_id|>", "<|eot_id|>", "<|file_sep|>",
    "<|fim_middle|>", "<|fim_pad|>", "<|fim_prefix|>", "<|fim_repo|>",
    "<|fim_suffix|>", "<|flush|>", "<|im_end|>", "<|middle|>",
    "<|prefix|>", "<|repo_name|>", "<|return|>", "<|suffix|>",
    "<|tool_response>", "<\xef\xbd\x9c" "end\xe2\x96\x81" "of"
    "\xe2\x96\x81" "sentence\xef\xbd\x9c>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81" "hole\xef\xbd\x9c>",
    "[EOS]", "[EOT]", "[PAD]", "[e~[", "_<EOT>",
    "\xe2\x96\x81<MID>", "\xe2\x96\x81<PRE>", "\xe2\x96\x81<SUF>", NULL
};

/* and the texts it makes user-defined whatever the file says (gpt-oss) */
static const char  *ngx_http_llm_tok_user_always[] = {
    "<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL
};


static void
ngx_http_llm_tok_err(char *err, size_t errlen, const char *name,
    const char *fmt, ...)
{
    int      n;
    va_list  args;

    if (errlen == 0) {
        return;
    }

    n = snprintf(err, errlen, "%s: ", name);
    if (n < 0 || (size_t) n >= errlen) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(err + n, errlen - n, fmt, args);
    va_end(args);
}


ngx_http_llm_tokenizer_t *
ngx_http_llm_tokenizer_load(const char *path, char *err, size_t errlen)
{
    int                        fd;
    void                      *p;
    struct stat                st;
    ngx_http_llm_tokenizer_t  *t;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        ngx_http_llm_tok_err(err, errlen, path, "open: %s", strerror(errno));
        return NULL;
    }

    if (fstat(fd, &st) == -1) {
        ngx_http_llm_tok_err(err, errlen, path, "fstat: %s", strerror(errno));
        close(fd);
        return NULL;
    }

    if (!S_ISREG(st.st_mode) || st.st_size < 24) {
        ngx_http_llm_tok_err(err, errlen, path, "not a GGUF file (too short"
                             " or not a regular file)");
        close(fd);
        return NULL;
    }

    /* the tokenizer metadata comes first: the tensors are never paged in */
    p = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);

    if (p == MAP_FAILED) {
        ngx_http_llm_tok_err(err, errlen, path, "mmap: %s", strerror(errno));
        return NULL;
    }

    t = ngx_http_llm_tokenizer_parse(p, st.st_size, path, err, errlen);

    munmap(p, st.st_size);

    return t;
}


static int
ngx_http_llm_tok_u32(ngx_http_llm_tok_reader_t *r, uint32_t *v)
{
    if (r->end - r->p < 4) {
        return -1;
    }

    memcpy(v, r->p, 4);
    r->p += 4;

    return 0;
}


static int
ngx_http_llm_tok_u64(ngx_http_llm_tok_reader_t *r, uint64_t *v)
{
    if (r->end - r->p < 8) {
        return -1;
    }

    memcpy(v, r->p, 8);
    r->p += 8;

    return 0;
}


static int
ngx_http_llm_tok_str(ngx_http_llm_tok_reader_t *r, const unsigned char **s,
    uint64_t *len)
{
    if (ngx_http_llm_tok_u64(r, len) != 0
        || *len > (uint64_t) (r->end - r->p))
    {
        return -1;
    }

    *s = r->p;
    r->p += *len;

    return 0;
}


static size_t
ngx_http_llm_tok_type_size(uint32_t type)
{
    switch (type) {
    case GGUF_UINT8:
    case GGUF_INT8:
    case GGUF_BOOL:
        return 1;
    case GGUF_UINT16:
    case GGUF_INT16:
        return 2;
    case GGUF_UINT32:
    case GGUF_INT32:
    case GGUF_FLOAT32:
        return 4;
    case GGUF_UINT64:
    case GGUF_INT64:
    case GGUF_FLOAT64:
        return 8;
    default:
        return 0;
    }
}


static int
ngx_http_llm_tok_skip(ngx_http_llm_tok_reader_t *r, uint32_t type, int depth)
{
    size_t                size;
    uint32_t              et;
    uint64_t              n, i, len;
    const unsigned char  *s;

    size = ngx_http_llm_tok_type_size(type);

    if (size) {
        if ((size_t) (r->end - r->p) < size) {
            return -1;
        }

        r->p += size;
        return 0;
    }

    if (type == GGUF_STRING) {
        return ngx_http_llm_tok_str(r, &s, &len);
    }

    if (type != GGUF_ARRAY || depth >= NGX_HTTP_LLM_TOK_MAX_DEPTH) {
        return -1;
    }

    if (ngx_http_llm_tok_u32(r, &et) != 0
        || ngx_http_llm_tok_u64(r, &n) != 0)
    {
        return -1;
    }

    size = ngx_http_llm_tok_type_size(et);

    if (size) {
        if (n > (uint64_t) (r->end - r->p) / size) {
            return -1;
        }

        r->p += n * size;
        return 0;
    }

    /* every element takes at least 8 bytes: the loop is bounded by the file */
    for (i = 0; i < n; i++) {
        if (ngx_http_llm_tok_skip(r, et, depth + 1) != 0) {
            return -1;
        }
    }

    return 0;
}


static int
ngx_http_llm_tok_int(ngx_http_llm_tok_reader_t *r, uint32_t type, int64_t *v)
{
    uint8_t   u8;
    uint16_t  u16;
    uint32_t  u32;
    uint64_t  u64;

    if ((size_t) (r->end - r->p) < ngx_http_llm_tok_type_size(type)) {
        return -1;
    }

    switch (type) {
    case GGUF_UINT8:
    case GGUF_BOOL:
        *v = *r->p;
        break;
    case GGUF_INT8:
        memcpy(&u8, r->p, 1);
        *v = (int8_t) u8;
        break;
    case GGUF_UINT16:
        memcpy(&u16, r->p, 2);
        *v = u16;
        break;
    case GGUF_INT16:
        memcpy(&u16, r->p, 2);
        *v = (int16_t) u16;
        break;
    case GGUF_UINT32:
        memcpy(&u32, r->p, 4);
        *v = u32;
        break;
    case GGUF_INT32:
        memcpy(&u32, r->p, 4);
        *v = (int32_t) u32;
        break;
    case GGUF_UINT64:
    case GGUF_INT64:
        memcpy(&u64, r->p, 8);
        *v = (int64_t) u64;
        break;
    default:
        return -1;
    }

    r->p += ngx_http_llm_tok_type_size(type);

    return 0;
}


static int
ngx_http_llm_tok_control_text(const unsigned char *s, size_t len)
{
    const char  **c;

    for (c = ngx_http_llm_tok_control; *c; c++) {
        if (strlen(*c) == len && memcmp(*c, s, len) == 0) {
            return 1;
        }
    }

    return 0;
}


/* FNV-1a: the keys are short, mostly under 16 bytes */

static uint32_t
ngx_http_llm_tok_hash(const unsigned char *s, size_t len)
{
    uint32_t  h;

    h = 2166136261u;

    while (len--) {
        h = (h ^ *s++) * 16777619u;
    }

    return h ^ (h >> 15);
}


static int32_t
ngx_http_llm_tok_find(const ngx_http_llm_tokenizer_t *t,
    const unsigned char *s, size_t len)
{
    uint32_t  i, id;

    if (len > t->max_len || len == 0) {
        return -1;
    }

    for (i = ngx_http_llm_tok_hash(s, len) & t->mask; /* void */;
         i = (i + 1) & t->mask)
    {
        id = t->hash[i];

        if (id == 0) {
            return -1;
        }

        id--;

        if (t->off[id + 1] - t->off[id] == len
            && memcmp(t->text + t->off[id], s, len) == 0)
        {
            return (int32_t) id;
        }
    }
}


/* longest first, as llama.cpp's cache_special_tokens; then by id */

static int
ngx_http_llm_tok_user_cmp(const void *a, const void *b)
{
    const uint32_t  *x, *y;

    x = a;
    y = b;

    if (x[0] != y[0]) {
        return x[0] > y[0] ? -1 : 1;
    }

    return x[1] < y[1] ? -1 : (x[1] > y[1]);
}


ngx_http_llm_tokenizer_t *
ngx_http_llm_tokenizer_parse(const void *data, size_t size, const char *name,
    char *err, size_t errlen)
{
    char                        empty[32], hex[8];
    size_t                      total, elen;
    int64_t                     iv;
    uint32_t                    version, type, i, j, h, n, nt;
    uint64_t                    n_tensors, n_kv, k, klen, slen;
    uint32_t                   *pairs;
    const char                **u;
    const unsigned char        *key, *s, *model;
    ngx_http_llm_tokenizer_t   *t;
    ngx_http_llm_tok_reader_t   r;
    ngx_http_llm_tok_array_t    tokens, scores, types;
    uint64_t                    model_len;

    memset(&tokens, 0, sizeof(tokens));
    memset(&scores, 0, sizeof(scores));
    memset(&types, 0, sizeof(types));

    t = calloc(1, sizeof(ngx_http_llm_tokenizer_t));
    if (t == NULL) {
        ngx_http_llm_tok_err(err, errlen, name, "out of memory");
        return NULL;
    }

    /* llama.cpp's defaults for an SPM vocabulary */
    t->bos = 1;
    t->add_bos = 1;
    t->add_space_prefix = 1;

    model = NULL;
    model_len = 0;

    r.p = data;
    r.end = r.p + size;

    if (size < 24 || memcmp(r.p, "GGUF", 4) != 0) {
        ngx_http_llm_tok_err(err, errlen, name, "not a GGUF file (no magic)");
        goto failed;
    }

    r.p += 4;

    if (ngx_http_llm_tok_u32(&r, &version) != 0
        || ngx_http_llm_tok_u64(&r, &n_tensors) != 0
        || ngx_http_llm_tok_u64(&r, &n_kv) != 0)
    {
        ngx_http_llm_tok_err(err, errlen, name, "truncated GGUF header");
        goto failed;
    }

    if (version != 2 && version != 3) {
        ngx_http_llm_tok_err(err, errlen, name, "GGUF version %u, only 2 and"
                             " 3 are read", version);
        goto failed;
    }

    /* a key and a type take 12 bytes at least */
    if (n_kv > (uint64_t) (r.end - r.p) / 12) {
        ngx_http_llm_tok_err(err, errlen, name, "%llu metadata keys do not"
                             " fit the file", (unsigned long long) n_kv);
        goto failed;
    }

    for (k = 0; k < n_kv; k++) {

        if (ngx_http_llm_tok_str(&r, &key, &klen) != 0
            || klen > NGX_HTTP_LLM_TOK_MAX_KEY
            || ngx_http_llm_tok_u32(&r, &type) != 0)
        {
            ngx_http_llm_tok_err(err, errlen, name, "metadata key %llu is"
                                 " truncated", (unsigned long long) k);
            goto failed;
        }

#define ngx_http_llm_tok_is(lit)                                              \
        (klen == sizeof(lit) - 1 && memcmp(key, lit, klen) == 0)

        if (ngx_http_llm_tok_is("tokenizer.ggml.model")) {
            if (type != GGUF_STRING
                || ngx_http_llm_tok_str(&r, &model, &model_len) != 0)
            {
                goto bad_key;
            }

            continue;
        }

        if (ngx_http_llm_tok_is("tokenizer.ggml.tokens")
            || ngx_http_llm_tok_is("tokenizer.ggml.scores")
            || ngx_http_llm_tok_is("tokenizer.ggml.token_type"))
        {
            ngx_http_llm_tok_array_t  *a;

            a = ngx_http_llm_tok_is("tokenizer.ggml.tokens") ? &tokens
                : ngx_http_llm_tok_is("tokenizer.ggml.scores") ? &scores
                : &types;

            if (type != GGUF_ARRAY
                || ngx_http_llm_tok_u32(&r, &a->type) != 0
                || ngx_http_llm_tok_u64(&r, &a->n) != 0)
            {
                goto bad_key;
            }

            a->data = r.p;
            a->found = 1;
            r.p -= 12;

            if (ngx_http_llm_tok_skip(&r, GGUF_ARRAY, 0) != 0) {
                goto bad_key;
            }

            continue;
        }

        if (ngx_http_llm_tok_is("tokenizer.ggml.add_bos_token")
            || ngx_http_llm_tok_is("tokenizer.ggml.add_space_prefix")
            || ngx_http_llm_tok_is("tokenizer.ggml.bos_token_id"))
        {
            if (ngx_http_llm_tok_int(&r, type, &iv) != 0) {
                goto bad_key;
            }

            if (ngx_http_llm_tok_is("tokenizer.ggml.add_bos_token")) {
                t->add_bos = iv != 0;

            } else if (ngx_http_llm_tok_is("tokenizer.ggml.add_space_prefix")) {
                t->add_space_prefix = iv != 0;

            } else {
                t->bos = (iv >= 0 && iv <= INT32_MAX) ? (int32_t) iv : -1;
            }

            continue;
        }

#undef ngx_http_llm_tok_is

        if (ngx_http_llm_tok_skip(&r, type, 0) != 0) {
            goto bad_key;
        }
    }

    if (model == NULL) {
        ngx_http_llm_tok_err(err, errlen, name, "no tokenizer.ggml.model");
        goto failed;
    }

    if (model_len != 5 || memcmp(model, "llama", 5) != 0) {
        ngx_http_llm_tok_err(err, errlen, name, "tokenizer.ggml.model is"
                             " \"%.*s\", not \"llama\" (SentencePiece)",
                             (int) (model_len > 32 ? 32 : model_len), model);
        goto failed;
    }

    if (!tokens.found || tokens.type != GGUF_STRING) {
        ngx_http_llm_tok_err(err, errlen, name, "no tokenizer.ggml.tokens"
                             " array of strings");
        goto failed;
    }

    if (tokens.n == 0 || tokens.n > NGX_HTTP_LLM_TOK_MAX_VOCAB) {
        ngx_http_llm_tok_err(err, errlen, name, "a vocabulary of %llu tokens",
                             (unsigned long long) tokens.n);
        goto failed;
    }

    n = (uint32_t) tokens.n;

    if (scores.found && ((scores.type != GGUF_FLOAT32
                          && scores.type != GGUF_INT32)
                         || scores.n < n))
    {
        ngx_http_llm_tok_err(err, errlen, name, "tokenizer.ggml.scores: not"
                             " %u float32 or int32 scores", n);
        goto failed;
    }

    if (types.found && (types.type != GGUF_INT32 || types.n < n)) {
        ngx_http_llm_tok_err(err, errlen, name, "tokenizer.ggml.token_type:"
                             " not %u int32 types", n);
        goto failed;
    }

    /* the text: the array was bounded by the file when it was skipped */

    total = 0;
    r.p = tokens.data;

    for (i = 0; i < n; i++) {
        if (ngx_http_llm_tok_str(&r, &s, &slen) != 0) {
            ngx_http_llm_tok_err(err, errlen, name, "token %u truncated", i);
            goto failed;
        }

        total += slen ? slen : 24;
    }

    t->n = n;
    t->off = malloc((n + 1) * sizeof(uint32_t));
    t->text = malloc(total ? total : 1);
    t->score = malloc(n * sizeof(float));

    for (h = 1; h < 2 * n; h <<= 1) { /* void */ }

    t->mask = h - 1;
    t->hash = calloc(h, sizeof(uint32_t));
    t->user = malloc(n * sizeof(uint32_t));

    if (t->off == NULL || t->text == NULL || t->score == NULL
        || t->hash == NULL || t->user == NULL || total >= UINT32_MAX)
    {
        ngx_http_llm_tok_err(err, errlen, name, "out of memory for %u tokens",
                             n);
        goto failed;
    }

    r.p = tokens.data;
    total = 0;

    for (i = 0; i < n; i++) {
        if (ngx_http_llm_tok_str(&r, &s, &slen) != 0) {
            ngx_http_llm_tok_err(err, errlen, name, "token %u truncated", i);
            goto failed;
        }

        if (slen == 0) {
            /* as llama.cpp names an empty token */
            slen = snprintf(empty, sizeof(empty), "[EMPTY_%u]", i);
            s = (const unsigned char *) empty;
        }

        t->off[i] = total;
        memcpy(t->text + total, s, slen);
        total += slen;

        if (slen > t->max_len) {
            t->max_len = slen;
        }

        if (scores.found) {
            if (scores.type == GGUF_FLOAT32) {
                memcpy(&t->score[i], scores.data + 4 * (size_t) i, 4);

            } else {
                int32_t  is;

                memcpy(&is, scores.data + 4 * (size_t) i, 4);
                t->score[i] = (float) is;
            }

            if (isnan(t->score[i])) {
                ngx_http_llm_tok_err(err, errlen, name, "token %u has a NaN"
                                     " score", i);
                goto failed;
            }

        } else {
            t->score[i] = 0.0f;
        }
    }

    t->off[n] = total;

    /* the hash table; llama.cpp asserts that no text is there twice */

    for (i = 0; i < n; i++) {
        elen = t->off[i + 1] - t->off[i];
        s = t->text + t->off[i];

        for (j = ngx_http_llm_tok_hash(s, elen) & t->mask;
             t->hash[j];
             j = (j + 1) & t->mask)
        {
            nt = t->hash[j] - 1;

            if (t->off[nt + 1] - t->off[nt] == elen
                && memcmp(t->text + t->off[nt], s, elen) == 0)
            {
                ngx_http_llm_tok_err(err, errlen, name, "tokens %u and %u are"
                                     " the same text", nt, i);
                goto failed;
            }
        }

        t->hash[j] = i + 1;
    }

    /* user-defined tokens: the text is split on them before anything */

    for (i = 0; i < n; i++) {
        int32_t                type32;
        const unsigned char   *ts;

        ts = t->text + t->off[i];
        elen = t->off[i + 1] - t->off[i];
        type32 = 0;

        if (types.found) {
            memcpy(&type32, types.data + 4 * (size_t) i, 4);
        }

        if (type32 == NGX_HTTP_LLM_TOK_USER_DEFINED
            && ngx_http_llm_tok_control_text(ts, elen))
        {
            type32 = 0;
        }

        for (u = ngx_http_llm_tok_user_always; *u; u++) {
            if (strlen(*u) == elen && memcmp(*u, ts, elen) == 0) {
                type32 = NGX_HTTP_LLM_TOK_USER_DEFINED;
            }
        }

        if (type32 == NGX_HTTP_LLM_TOK_USER_DEFINED) {
            t->user[t->n_user++] = i;

            if (elen > t->max_user) {
                t->max_user = elen;
            }
        }
    }

    if (t->n_user > 1) {
        pairs = malloc(2 * sizeof(uint32_t) * t->n_user);
        if (pairs == NULL) {
            ngx_http_llm_tok_err(err, errlen, name, "out of memory");
            goto failed;
        }

        for (i = 0; i < t->n_user; i++) {
            pairs[2 * i] = t->off[t->user[i] + 1] - t->off[t->user[i]];
            pairs[2 * i + 1] = t->user[i];
        }

        qsort(pairs, t->n_user, 2 * sizeof(uint32_t),
              ngx_http_llm_tok_user_cmp);

        for (i = 0; i < t->n_user; i++) {
            t->user[i] = pairs[2 * i + 1];
        }

        free(pairs);
    }

    /* the byte fallback: <0xXX>, or else the byte as a token of its own */

    for (i = 0; i < 256; i++) {
        snprintf(hex, sizeof(hex), "<0x%02X>", i);
        hex[0] = '<';
        t->byte[i] = ngx_http_llm_tok_find(t, (unsigned char *) hex, 6);

        if (t->byte[i] < 0) {
            empty[0] = (char) i;
            t->byte[i] = ngx_http_llm_tok_find(t, (unsigned char *) empty, 1);
        }

        t->alone[i] = 1;
    }

    t->space = ngx_http_llm_tok_find(t, (unsigned char *) "\xe2\x96\x81", 3);

    /*
     * a byte no longer token holds never merges: a hard boundary; and
     * where U+2581 is in a token only after U+2581 or at its start, no
     * token crosses the start of a word
     */

    t->word_start = 1;

    for (i = 0; i < n; i++) {
        elen = t->off[i + 1] - t->off[i];
        s = t->text + t->off[i];

        if (elen < 2) {
            continue;
        }

        /* the pairs the upper bound asks about most */

        if (elen == 2 && s[0] < 0x80 && s[1] < 0x80) {
            t->pair[s[0]][s[1] >> 3] |= 1 << (s[1] & 7);
        }

        if (elen == 4 && memcmp(s, "\xe2\x96\x81", 3) == 0 && s[3] < 0x80) {
            t->pair[128][s[3] >> 3] |= 1 << (s[3] & 7);
        }

        for (j = 0; j < elen; j++) {
            t->alone[s[j]] = 0;

            if (j > 0 && j + 3 <= elen && memcmp(s + j, "\xe2\x96\x81", 3) == 0
                && (j < 3 || memcmp(s + j - 3, "\xe2\x96\x81", 3) != 0))
            {
                t->word_start = 0;
            }
        }
    }

    return t;

bad_key:

    ngx_http_llm_tok_err(err, errlen, name, "metadata key \"%.*s\": bad or"
                         " truncated value",
                         (int) (klen > 64 ? 64 : klen), key);

failed:

    ngx_http_llm_tokenizer_free(t);

    return NULL;
}


void
ngx_http_llm_tokenizer_free(ngx_http_llm_tokenizer_t *t)
{
    if (t == NULL) {
        return;
    }

    free(t->off);
    free(t->text);
    free(t->score);
    free(t->hash);
    free(t->user);
    free(t);
}


size_t
ngx_http_llm_tokenizer_vocab(const ngx_http_llm_tokenizer_t *t)
{
    return t->n;
}


size_t
ngx_http_llm_tokenizer_max_token(const ngx_http_llm_tokenizer_t *t)
{
    return t->max_len;
}


int32_t
ngx_http_llm_tokenizer_bos(const ngx_http_llm_tokenizer_t *t)
{
    return t->bos;
}


int
ngx_http_llm_tokenizer_add_bos(const ngx_http_llm_tokenizer_t *t)
{
    return t->add_bos;
}


const char *
ngx_http_llm_tokenizer_text(const ngx_http_llm_tokenizer_t *t, int32_t id,
    size_t *len)
{
    if (id < 0 || (uint32_t) id >= t->n) {
        return NULL;
    }

    *len = t->off[id + 1] - t->off[id];

    return (const char *) t->text + t->off[id];
}


/* the token a byte falls back to, or -1 */

int32_t
ngx_http_llm_tokenizer_byte(const ngx_http_llm_tokenizer_t *t,
    unsigned char byte)
{
    return t->byte[byte];
}


/*
 * A piece of len bytes escapes to at most 3 * len + 3 (every byte a space,
 * and the prefix).  It is cut into at most 3 * len / 2 + 2 characters: a
 * byte starts one at most, but a space whose first escaped byte a bad
 * lead byte swallowed starts two (0x96, 0x81), and each such lead byte
 * starts one and swallows one space at most.  The queue holds at most two
 * bigrams per character (one per pair at first, and a merge pops one and
 * pushes two).  The user-defined split takes two lists of pieces.
 */

#define ngx_http_llm_tok_max_sym(len)  (3 * (len) / 2 + 2)

size_t
ngx_http_llm_tokenizer_scratch(const ngx_http_llm_tokenizer_t *t, size_t len)
{
    size_t  size;

    size = ((3 * len + 3 + 15) & ~(size_t) 15)
           + ngx_http_llm_tok_max_sym(len) * sizeof(ngx_http_llm_tok_sym_t)
           + 2 * ngx_http_llm_tok_max_sym(len)
             * sizeof(ngx_http_llm_tok_bigram_t)
           + 16;

    if (t->n_user) {
        size += 2 * (2 * len + 2) * sizeof(ngx_http_llm_tok_seg_t);
    }

    return size;
}


ssize_t
ngx_http_llm_tokenizer_count(const ngx_http_llm_tokenizer_t *t,
    const unsigned char *text, size_t len, void *scratch, size_t scratch_size)
{
    return ngx_http_llm_tokenizer_encode(t, text, len, NULL, 0, scratch,
                                         scratch_size);
}


ssize_t
ngx_http_llm_tokenizer_encode(const ngx_http_llm_tokenizer_t *t,
    const unsigned char *text, size_t len, int32_t *ids, size_t max_ids,
    void *scratch, size_t scratch_size)
{
    int                      prev_special;
    size_t                   nseg, nnew, i, u, ulen, off, end;
    unsigned char           *p;
    const unsigned char     *us, *m;
    ngx_http_llm_tok_seg_t  *seg, *cur, *next;
    ngx_http_llm_tok_run_t   run;

    if (len > NGX_HTTP_LLM_TOKENIZER_MAX_TEXT
        || scratch_size < ngx_http_llm_tokenizer_scratch(t, len))
    {
        return -1;
    }

    /* an empty text is no piece at all: not even the space prefix */
    if (len == 0) {
        return 0;
    }

    p = (unsigned char *) (((uintptr_t) scratch + 15) & ~(uintptr_t) 15);

    run.esc = p;
    p += (3 * len + 3 + 15) & ~(size_t) 15;
    run.sym = (ngx_http_llm_tok_sym_t *) p;
    run.sym_cap = ngx_http_llm_tok_max_sym(len);
    p += run.sym_cap * sizeof(ngx_http_llm_tok_sym_t);
    run.heap = (ngx_http_llm_tok_bigram_t *) p;
    run.heap_cap = 2 * run.sym_cap;
    p += run.heap_cap * sizeof(ngx_http_llm_tok_bigram_t);
    run.seg[0] = (ngx_http_llm_tok_seg_t *) p;
    run.seg_cap = 2 * len + 2;
    run.seg[1] = run.seg[0] + run.seg_cap;
    run.ids = ids;
    run.max_ids = max_ids;
    run.count = 0;

    if (t->n_user == 0) {
        if (ngx_http_llm_tok_spm(t, &run, text, len, t->add_space_prefix)
            != 0)
        {
            return -1;
        }

        return run.count;
    }

    /*
     * llama.cpp's tokenizer_st_partition(): each user-defined token, the
     * longest first, cuts every text piece left at its leftmost
     * occurrences
     */

    cur = run.seg[0];
    next = run.seg[1];
    cur[0].off = 0;
    cur[0].len = len;
    cur[0].id = -1;
    nseg = 1;

    for (u = 0; u < t->n_user; u++) {
        us = t->text + t->off[t->user[u]];
        ulen = t->off[t->user[u] + 1] - t->off[t->user[u]];
        nnew = 0;

        for (i = 0; i < nseg; i++) {
            if (cur[i].id >= 0 || cur[i].len < ulen) {
                next[nnew++] = cur[i];
                continue;
            }

            off = cur[i].off;
            end = cur[i].off + cur[i].len;

            while (end - off >= ulen) {
                m = memmem(text + off, end - off, us, ulen);
                if (m == NULL) {
                    break;
                }

                if ((size_t) (m - text) > off) {
                    next[nnew].off = off;
                    next[nnew].len = (m - text) - off;
                    next[nnew].id = -1;
                    nnew++;
                }

                next[nnew].off = m - text;
                next[nnew].len = ulen;
                next[nnew].id = t->user[u];
                nnew++;

                off = (m - text) + ulen;
            }

            if (off < end) {
                next[nnew].off = off;
                next[nnew].len = end - off;
                next[nnew].id = -1;
                nnew++;
            }
        }

        seg = cur;
        cur = next;
        next = seg;
        nseg = nnew;
    }

    prev_special = 1;

    for (i = 0; i < nseg; i++) {
        if (cur[i].id >= 0) {
            ngx_http_llm_tok_emit(&run, cur[i].id);
            prev_special = 1;
            continue;
        }

        if (ngx_http_llm_tok_spm(t, &run, text + cur[i].off, cur[i].len,
                                 t->add_space_prefix && prev_special)
            != 0)
        {
            return -1;
        }

        prev_special = 0;
    }

    return run.count;
}


static void
ngx_http_llm_tok_emit(ngx_http_llm_tok_run_t *run, int32_t id)
{
    if (run->ids && run->count < run->max_ids) {
        run->ids[run->count] = id;
    }

    run->count++;
}


/*
 * llm_tokenizer_spm_session::tokenize() on one piece of text.  Where no
 * token can cross, the piece is cut in parts, each merged on its own: the
 * same merges in the same order within a part, and a small queue that
 * stays in the cache.  No token crosses a byte that no longer token holds,
 * nor, when the vocabulary has U+2581 only at the start of tokens (as
 * SentencePiece makes them, runs of it aside), the start of a word.
 */

static int
ngx_http_llm_tok_spm(const ngx_http_llm_tokenizer_t *t,
    ngx_http_llm_tok_run_t *run, const unsigned char *text, size_t len,
    int prefix)
{
    size_t                   n, i, nsym, clen, start;
    unsigned char           *esc;
    ngx_http_llm_tok_sym_t  *sym;

    esc = run->esc;
    n = 0;

    if (prefix) {
        esc[n++] = 0xe2;
        esc[n++] = 0x96;
        esc[n++] = 0x81;
    }

    for (i = 0; i < len; i++) {
        if (text[i] == ' ') {
            esc[n++] = 0xe2;
            esc[n++] = 0x96;
            esc[n++] = 0x81;

        } else {
            esc[n++] = text[i];
        }
    }

    /* characters by their lead byte; the last may be cut short */

    sym = run->sym;
    nsym = 0;
    start = 0;

    for (i = 0; i < n; i += clen) {
        clen = ngx_http_llm_tok_utf8_len[esc[i] >> 4];

        if (clen > n - i) {
            clen = n - i;
        }

        /* cannot happen (see ngx_http_llm_tokenizer_scratch()) */
        if (nsym == run->sym_cap) {
            return -1;
        }

        if (nsym > start && ngx_http_llm_tok_cut(t, esc, &sym[nsym - 1], i,
                                                 clen))
        {
            if (ngx_http_llm_tok_part(t, run, start, nsym) != 0) {
                return -1;
            }

            start = nsym;
        }

        sym[nsym].prev = (nsym == start) ? -1 : (int32_t) nsym - 1;
        sym[nsym].next = (int32_t) nsym + 1;
        sym[nsym].off = i;
        sym[nsym].n = clen;
        nsym++;
    }

    if (nsym > start) {
        return ngx_http_llm_tok_part(t, run, start, nsym);
    }

    return 0;
}


/* no token crosses from the character prev to the one at off */

static int
ngx_http_llm_tok_cut(const ngx_http_llm_tokenizer_t *t,
    const unsigned char *esc, const ngx_http_llm_tok_sym_t *prev, size_t off,
    size_t clen)
{
    if ((clen == 1 && t->alone[esc[off]])
        || (prev->n == 1 && t->alone[esc[prev->off]]))
    {
        return 1;
    }

    /* a word starts: U+2581 after what does not end in U+2581 */
    return t->word_start
           && clen == 3 && memcmp(esc + off, "\xe2\x96\x81", 3) == 0
           && (prev->n < 3
               || memcmp(esc + prev->off + prev->n - 3, "\xe2\x96\x81", 3)
                  != 0);
}


/* the merges of symbols start to end - 1, and their tokens */

static int
ngx_http_llm_tok_part(const ngx_http_llm_tokenizer_t *t,
    ngx_http_llm_tok_run_t *run, size_t start, size_t end)
{
    size_t                      i, nheap;
    int32_t                     id, left, right;
    unsigned char              *esc;
    ngx_http_llm_tok_sym_t     *sym, *ls, *rs;
    ngx_http_llm_tok_bigram_t  *b;

    esc = run->esc;
    sym = run->sym;
    sym[end - 1].next = -1;

    nheap = 0;

    for (i = start + 1; i < end; i++) {
        ngx_http_llm_tok_try(t, run, &nheap, (int32_t) i - 1);
    }

    while (nheap) {
        b = &run->heap[0];
        left = b->left;
        ls = &sym[left];
        right = ls->next;

        /*
         * stale when either side has merged since: the right one is always
         * the left one's next until it merges away
         */

        if (ls->n == 0 || right < 0 || sym[right].n == 0
            || ls->n + sym[right].n != b->size)
        {
            ngx_http_llm_tok_pop(run->heap, &nheap);
            continue;
        }

        ngx_http_llm_tok_pop(run->heap, &nheap);

        rs = &sym[right];
        ls->n += rs->n;
        rs->n = 0;
        ls->next = rs->next;

        if (rs->next >= 0) {
            sym[rs->next].prev = left;
        }

        if (ls->prev >= 0) {
            ngx_http_llm_tok_try(t, run, &nheap, ls->prev);
        }

        if (ls->next >= 0) {
            ngx_http_llm_tok_try(t, run, &nheap, left);
        }
    }

    /* resegment: a symbol is a token, or its bytes go out one by one */

    for (left = (int32_t) start; left != -1; left = sym[left].next) {
        ls = &sym[left];
        id = ngx_http_llm_tok_find(t, esc + ls->off, ls->n);

        if (id >= 0) {
            ngx_http_llm_tok_emit(run, id);
            continue;
        }

        for (i = 0; i < ls->n; i++) {
            id = t->byte[esc[ls->off + i]];

            /* llama.cpp throws here: the vocabulary has no such byte */
            if (id < 0) {
                return -1;
            }

            ngx_http_llm_tok_emit(run, id);
        }
    }

    return 0;
}


static void
ngx_http_llm_tok_try(const ngx_http_llm_tokenizer_t *t,
    ngx_http_llm_tok_run_t *run, size_t *nheap, int32_t left)
{
    int32_t                     id, right;
    uint32_t                    size;
    ngx_http_llm_tok_bigram_t   b;
    ngx_http_llm_tok_sym_t     *sym;

    sym = run->sym;
    right = sym[left].next;
    size = sym[left].n + sym[right].n;

    if (size > t->max_len) {
        return;
    }

    id = ngx_http_llm_tok_find(t, run->esc + sym[left].off, size);
    if (id < 0) {
        return;
    }

    /* cannot happen (two per character at most): never past the end */
    if (*nheap == run->heap_cap) {
        return;
    }

    b.score = t->score[id];
    b.left = left;
    b.size = size;

    ngx_http_llm_tok_push(run->heap, nheap, &b);
}


/* the order of llama.cpp's queue: the highest score, then the leftmost */

#define ngx_http_llm_tok_before(a, b)                                         \
    ((a)->score > (b)->score                                                  \
     || ((a)->score == (b)->score && (a)->left < (b)->left))


static void
ngx_http_llm_tok_push(ngx_http_llm_tok_bigram_t *heap, size_t *n,
    ngx_http_llm_tok_bigram_t *b)
{
    size_t  i, parent;

    i = (*n)++;

    while (i > 0) {
        parent = (i - 1) / 2;

        if (!ngx_http_llm_tok_before(b, &heap[parent])) {
            break;
        }

        heap[i] = heap[parent];
        i = parent;
    }

    heap[i] = *b;
}


static void
ngx_http_llm_tok_pop(ngx_http_llm_tok_bigram_t *heap, size_t *n)
{
    size_t                      i, c, last;
    ngx_http_llm_tok_bigram_t   b;

    last = --(*n);

    if (last == 0) {
        return;
    }

    b = heap[last];
    i = 0;

    for ( ;; ) {
        c = 2 * i + 1;

        if (c >= last) {
            break;
        }

        if (c + 1 < last && ngx_http_llm_tok_before(&heap[c + 1], &heap[c])) {
            c++;
        }

        if (!ngx_http_llm_tok_before(&heap[c], &b)) {
            break;
        }

        heap[i] = heap[c];
        i = c;
    }

    heap[i] = b;
}


/*
 * Bounds without the merges.  Merges never add tokens: a character that is
 * a token is one at most, any other is its bytes at most.  And no token is
 * longer than the longest, nor crosses where the tokenizer cuts the text
 * (ngx_http_llm_tok_cut(): a byte that no longer token holds, the start of
 * a word): each part is one token at least, and its bytes over the
 * longest.  Nor are two characters that make a token both left alone, side
 * by side (their pair would have merged): within a part, the most tokens
 * a cut of the characters can be where no such pair is, a merged symbol
 * one token and a character left alone one or its bytes.  The characters
 * are cut from the escaped text, as the
 * tokenizer cuts them: a bad lead byte may swallow part of an escaped
 * space.  With user-defined tokens the split moves the space prefixes and
 * may cut characters: then only what holds whatever the split does.
 */

void
ngx_http_llm_tokenizer_bounds(const ngx_http_llm_tokenizer_t *t,
    const unsigned char *text, size_t len, size_t *lo, size_t *hi)
{
    int             cut, pair;
    long            w, fs, fm, fs1, fm1, b1, b2, b3, free;
    size_t          i, l, h, part, clen, k, pend, pn;
    unsigned char   c[4], pc[4], esc[3], two[8];

    if (len == 0) {
        *lo = 0;
        *hi = 0;
        return;
    }

    if (t->n_user) {
        /* a byte: three byte tokens at most, and a prefix per piece */
        *lo = 1;
        *hi = 6 * len + 3;
        return;
    }

    l = 0;
    h = 0;
    part = 0;
    pn = 0;
    i = 0;
    b1 = 0;
    b2 = 0;
    b3 = 0;
    fs1 = 0;
    fm1 = 0;

    /* the escaped bytes not yet taken, last first */
    pend = 0;

    if (t->add_space_prefix) {
        esc[2] = 0xe2;
        esc[1] = 0x96;
        esc[0] = 0x81;
        pend = 3;
    }

    for ( ;; ) {

        /* a character: its lead byte says how many bytes */

        for (k = 0; k == 0 || k < clen; k++) {
            if (pend) {
                c[k] = esc[--pend];

            } else if (i < len) {
                c[k] = text[i++];

                if (c[k] == ' ') {
                    c[k] = 0xe2;
                    esc[1] = 0x96;
                    esc[0] = 0x81;
                    pend = 2;
                }

            } else {
                break;
            }

            if (k == 0) {
                clen = ngx_http_llm_tok_utf8_len[c[0] >> 4];
            }
        }

        if (k == 0) {
            break;
        }

        clen = k;

        /* a byte alone is one token, as itself or as its byte token */
        w = (clen == 1 || ngx_http_llm_tok_find(t, c, clen) >= 0) ? 1 : clen;

        /* as ngx_http_llm_tok_cut() */

        cut = pn
              && ((clen == 1 && t->alone[c[0]])
                  || (pn == 1 && t->alone[pc[0]])
                  || (t->word_start && clen == 3
                      && memcmp(c, "\xe2\x96\x81", 3) == 0
                      && (pn < 3
                          || memcmp(pc + pn - 3, "\xe2\x96\x81", 3) != 0)));

        if (cut) {
            l += (part + t->max_len - 1) / t->max_len;
            h += b1;
            part = 0;
        }

        /*
         * the most tokens of the part so far: fs if this character is left
         * alone, fm if it ends a merged symbol (of two or three characters:
         * a longer one counts less); b1, b2, b3 the best one, two and three
         * characters back
         */

        if (part == 0) {
            b1 = 0;
            b2 = NGX_HTTP_LLM_TOK_NONE;
            b3 = NGX_HTTP_LLM_TOK_NONE;
            free = 0;

        } else {
            if (clen == 1 && c[0] < 0x80 && pn == 1 && pc[0] < 0x80) {
                pair = t->pair[pc[0]][c[0] >> 3] & (1 << (c[0] & 7));

            } else if (clen == 1 && c[0] < 0x80 && pn == 3
                       && memcmp(pc, "\xe2\x96\x81", 3) == 0)
            {
                pair = t->pair[128][c[0] >> 3] & (1 << (c[0] & 7));

            } else {
                memcpy(two, pc, pn);
                memcpy(two + pn, c, clen);
                pair = ngx_http_llm_tok_find(t, two, pn + clen) >= 0;
            }

            free = (pair || fs1 < fm1) ? fm1 : fs1;
        }

        fs = w + free;
        fm = 1 + (b2 > b3 ? b2 : b3);

        fs1 = fs;
        fm1 = fm;
        b3 = b2;
        b2 = b1;
        b1 = fs > fm ? fs : fm;

        part += clen;
        memcpy(pc, c, clen);
        pn = clen;
    }

    l += (part + t->max_len - 1) / t->max_len;
    h += b1;

    *lo = l;
    *hi = h;
}
