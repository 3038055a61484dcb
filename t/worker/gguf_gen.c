/*
 * gguf_gen: writes a random-weight llama-architecture GGUF model whose
 * tokenizer is copied from a real vocabulary file (llama.cpp's
 * models/ggml-vocab-llama-spm.gguf).  The text it generates is noise;
 * tokenization, sampling, streaming and usage counts are real.
 *
 *   gguf_gen --vocab V.gguf --out M.gguf [--embd 64] [--layers 2]
 *            [--heads 4] [--ff 192] [--ctx 65536] [--seed 1]
 *
 * GGUF v3: header, key/value metadata, tensor infos, aligned tensor data
 * (see ggml/include/gguf.h in llama.cpp).
 */

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 32

enum {
    T_UINT8 = 0, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32,
    T_BOOL, T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64
};

enum { G_F32 = 0, G_F16 = 1 };

typedef struct {
    char      name[64];
    uint32_t  n_dims;
    uint64_t  ne[2];
    uint32_t  type;
    uint64_t  offset;
    int       fill;           /* 0 random, 1 ones */
} tensor_t;

static uint64_t rng_state = 88172645463325252ULL;

static uint64_t
rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void
die(const char *what)
{
    fprintf(stderr, "gguf_gen: %s%s%s\n", what, errno ? ": " : "",
            errno ? strerror(errno) : "");
    exit(1);
}

/* ---- reading the vocabulary file ---- */

typedef struct {
    const uint8_t  *p;
    const uint8_t  *end;
} rd_t;

static uint64_t
rd_n(rd_t *r, size_t n)
{
    uint64_t v = 0;

    if ((size_t) (r->end - r->p) < n) {
        die("truncated vocabulary file");
    }

    for (size_t i = 0; i < n; i++) {
        v |= (uint64_t) r->p[i] << (8 * i);
    }

    r->p += n;
    return v;
}

static size_t
type_size(uint32_t t)
{
    switch (t) {
    case T_UINT8: case T_INT8: case T_BOOL: return 1;
    case T_UINT16: case T_INT16: return 2;
    case T_UINT32: case T_INT32: case T_FLOAT32: return 4;
    case T_UINT64: case T_INT64: case T_FLOAT64: return 8;
    default: return 0;
    }
}

/* skips one value of type t; returns its element count for arrays */
static uint64_t
skip_value(rd_t *r, uint32_t t)
{
    uint64_t n, i, len;
    uint32_t et;

    if (t == T_STRING) {
        len = rd_n(r, 8);
        if ((uint64_t) (r->end - r->p) < len) {
            die("truncated string");
        }
        r->p += len;
        return 1;
    }

    if (t == T_ARRAY) {
        et = (uint32_t) rd_n(r, 4);
        n = rd_n(r, 8);
        for (i = 0; i < n; i++) {
            skip_value(r, et);
        }
        return n;
    }

    if (type_size(t) == 0) {
        die("unknown metadata type");
    }

    rd_n(r, type_size(t));
    return 1;
}

/* ---- writing ---- */

static FILE *out;

static void
w_n(uint64_t v, size_t n)
{
    uint8_t b[8];

    for (size_t i = 0; i < n; i++) {
        b[i] = (uint8_t) (v >> (8 * i));
    }

    if (fwrite(b, 1, n, out) != n) {
        die("write");
    }
}

static void
w_str(const char *s)
{
    w_n(strlen(s), 8);
    if (fwrite(s, 1, strlen(s), out) != strlen(s)) {
        die("write");
    }
}

static void
kv_u32(const char *k, uint32_t v)
{
    w_str(k);
    w_n(T_UINT32, 4);
    w_n(v, 4);
}

static void
kv_f32(const char *k, float f)
{
    uint32_t v;

    memcpy(&v, &f, 4);
    w_str(k);
    w_n(T_FLOAT32, 4);
    w_n(v, 4);
}

static void
kv_str(const char *k, const char *v)
{
    w_str(k);
    w_n(T_STRING, 4);
    w_str(v);
}

static uint16_t
f32_to_f16(float f)
{
    uint32_t x, sign, mant;
    int32_t  exp;

    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000;
    exp = (int32_t) ((x >> 23) & 0xff) - 127 + 15;
    mant = x & 0x7fffff;

    if (exp <= 0) {
        /* tiny: subnormal or zero */
        if (exp < -10) {
            return (uint16_t) sign;
        }
        mant |= 0x800000;
        return (uint16_t) (sign | (mant >> (14 - exp)));
    }

    if (exp >= 31) {
        return (uint16_t) (sign | 0x7bff);  /* clamp, never inf */
    }

    return (uint16_t) (sign | ((uint32_t) exp << 10) | (mant >> 13));
}

static void
usage(void)
{
    fprintf(stderr, "usage: gguf_gen --vocab V.gguf --out M.gguf [--embd N] "
            "[--layers N] [--heads N] [--ff N] [--ctx N] [--seed N]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    const char  *vocab = NULL, *outp = NULL;
    uint32_t     embd = 64, layers = 2, heads = 4, ff = 192, ctx = 65536;
    uint64_t     seed = 1, n_vocab = 0, i, n_kv, n_tensors, copied, pos;
    int          a;

    for (a = 1; a + 1 < argc; a += 2) {
        if (!strcmp(argv[a], "--vocab")) vocab = argv[a + 1];
        else if (!strcmp(argv[a], "--out")) outp = argv[a + 1];
        else if (!strcmp(argv[a], "--embd")) embd = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "--layers")) layers = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "--heads")) heads = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "--ff")) ff = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "--ctx")) ctx = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "--seed")) seed = strtoull(argv[a + 1], 0, 10);
        else usage();
    }

    if (a != argc || !vocab || !outp || !embd || !layers || !heads || !ff
        || embd % heads || (embd / heads) % 2)
    {
        usage();
    }

    rng_state ^= seed * 0x9E3779B97F4A7C15ULL;

    /* read the whole vocabulary file */

    FILE *vf = fopen(vocab, "rb");
    if (!vf) die(vocab);
    fseek(vf, 0, SEEK_END);
    long vsize = ftell(vf);
    fseek(vf, 0, SEEK_SET);
    uint8_t *vb = malloc(vsize);
    if (!vb || fread(vb, 1, vsize, vf) != (size_t) vsize) die("read vocab");
    fclose(vf);

    rd_t r = { vb, vb + vsize };

    if (rd_n(&r, 4) != 0x46554747) die("vocab is not a GGUF file");
    if (rd_n(&r, 4) < 2) die("vocab GGUF version too old");
    rd_n(&r, 8);                        /* its tensors: none we want */
    n_kv = rd_n(&r, 8);

    /* pass 1: find the tokenizer.* pairs and the vocabulary size */

    const uint8_t **kv_start = calloc(n_kv, sizeof(*kv_start));
    size_t *kv_len = calloc(n_kv, sizeof(*kv_len));
    int has_template = 0;
    copied = 0;

    for (i = 0; i < n_kv; i++) {
        const uint8_t *start = r.p;
        uint64_t klen = rd_n(&r, 8);
        const char *key = (const char *) r.p;
        r.p += klen;
        uint32_t t = (uint32_t) rd_n(&r, 4);
        int tok = klen > 10 && !strncmp(key, "tokenizer.", 10);

        if (tok && klen == strlen("tokenizer.chat_template")
            && !strncmp(key, "tokenizer.chat_template", klen))
        {
            has_template = 1;
        }

        int is_tokens = klen == strlen("tokenizer.ggml.tokens")
                        && !strncmp(key, "tokenizer.ggml.tokens", klen);

        uint64_t n = skip_value(&r, t);

        if (is_tokens) {
            n_vocab = n;
        }

        if (tok) {
            kv_start[copied] = start;
            kv_len[copied] = r.p - start;
            copied++;
        }
    }

    if (n_vocab == 0) die("no tokenizer.ggml.tokens in the vocabulary file");

    out = fopen(outp, "wb");
    if (!out) die(outp);

    /* tensors */

    uint32_t n_tensor_max = 3 + 9 * layers;
    tensor_t *ts = calloc(n_tensor_max, sizeof(tensor_t));
    n_tensors = 0;

#define TENSOR(nm, d, a0, a1, ty, fl) do {                                   \
        tensor_t *t_ = &ts[n_tensors++];                                     \
        snprintf(t_->name, sizeof(t_->name), "%s", nm);                      \
        t_->n_dims = d; t_->ne[0] = a0; t_->ne[1] = a1;                      \
        t_->type = ty; t_->fill = fl;                                        \
    } while (0)

    char nm[64];

    TENSOR("token_embd.weight", 2, embd, n_vocab, G_F16, 0);
    TENSOR("output_norm.weight", 1, embd, 1, G_F32, 1);
    TENSOR("output.weight", 2, embd, n_vocab, G_F16, 0);

    for (uint32_t l = 0; l < layers; l++) {
#define LT(suffix, d, a0, a1, ty, fl)                                         \
        snprintf(nm, sizeof(nm), "blk.%u.%s", l, suffix);                    \
        TENSOR(nm, d, a0, a1, ty, fl)
        LT("attn_norm.weight", 1, embd, 1, G_F32, 1);
        LT("attn_q.weight", 2, embd, embd, G_F16, 0);
        LT("attn_k.weight", 2, embd, embd, G_F16, 0);
        LT("attn_v.weight", 2, embd, embd, G_F16, 0);
        LT("attn_output.weight", 2, embd, embd, G_F16, 0);
        LT("ffn_norm.weight", 1, embd, 1, G_F32, 1);
        LT("ffn_gate.weight", 2, embd, ff, G_F16, 0);
        LT("ffn_down.weight", 2, ff, embd, G_F16, 0);
        LT("ffn_up.weight", 2, embd, ff, G_F16, 0);
    }

    pos = 0;
    for (i = 0; i < n_tensors; i++) {
        uint64_t bytes = ts[i].ne[0] * ts[i].ne[1] * (ts[i].type == G_F16 ? 2 : 4);
        ts[i].offset = pos;
        pos += (bytes + ALIGN - 1) / ALIGN * ALIGN;
    }

    /* header and metadata */

    uint64_t own_kv = 12 + (has_template ? 0 : 1);

    w_n(0x46554747, 4);
    w_n(3, 4);
    w_n(n_tensors, 8);
    w_n(own_kv + copied, 8);

    kv_str("general.architecture", "llama");
    kv_str("general.name", "nginx-llm-gateway random test model");
    kv_u32("general.file_type", 1);
    kv_u32("general.alignment", ALIGN);
    kv_u32("llama.context_length", ctx);
    kv_u32("llama.embedding_length", embd);
    kv_u32("llama.block_count", layers);
    kv_u32("llama.feed_forward_length", ff);
    kv_u32("llama.attention.head_count", heads);
    kv_u32("llama.attention.head_count_kv", heads);
    kv_u32("llama.rope.dimension_count", embd / heads);
    kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);

    if (!has_template) {
        /* a plain role-tagged template; the tokenizer file has none */
        kv_str("tokenizer.chat_template",
               "{% for message in messages %}"
               "{{ '<|' + message['role'] + '|>\\n' }}"
               "{% if message['content'] is string %}"
               "{{ message['content'] }}"
               "{% else %}{% for part in message['content'] %}"
               "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
               "{% endfor %}{% endif %}"
               "{{ '\\n' }}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}"
               "{% endif %}");
    }

    for (i = 0; i < copied; i++) {
        if (fwrite(kv_start[i], 1, kv_len[i], out) != kv_len[i]) die("write");
    }

    for (i = 0; i < n_tensors; i++) {
        w_str(ts[i].name);
        w_n(ts[i].n_dims, 4);
        for (uint32_t d = 0; d < ts[i].n_dims; d++) {
            w_n(ts[i].ne[d], 8);
        }
        w_n(ts[i].type, 4);
        w_n(ts[i].offset, 8);
    }

    long here = ftell(out);
    while (here % ALIGN) {
        w_n(0, 1);
        here++;
    }

    /* data: small uniform weights keep every activation finite */

    float scale = 1.0f / sqrtf((float) embd);
    uint8_t *buf = malloc(1 << 20);
    if (!buf) die("malloc");

    for (i = 0; i < n_tensors; i++) {
        uint64_t n = ts[i].ne[0] * ts[i].ne[1], done = 0, written = 0;
        size_t es = ts[i].type == G_F16 ? 2 : 4;

        while (done < n) {
            size_t k = 0;
            while (done < n && k + es <= (1 << 20)) {
                float f = ts[i].fill ? 1.0f
                          : scale * ((float) (rng() >> 40) / (float) (1 << 24)
                                     * 2.0f - 1.0f);
                if (es == 2) {
                    uint16_t h = f32_to_f16(f);
                    memcpy(buf + k, &h, 2);
                } else {
                    memcpy(buf + k, &f, 4);
                }
                k += es;
                done++;
            }
            if (fwrite(buf, 1, k, out) != k) die("write");
            written += k;
        }

        while (written % ALIGN) {
            w_n(0, 1);
            written++;
        }
    }

    if (fclose(out) != 0) die("close");

    fprintf(stderr, "gguf_gen: %s: vocab %llu, embd %u, layers %u, heads %u, "
            "ff %u\n", outp, (unsigned long long) n_vocab, embd, layers,
            heads, ff);

    free(buf);
    free(ts);
    free(kv_start);
    free(kv_len);
    free(vb);
    return 0;
}
