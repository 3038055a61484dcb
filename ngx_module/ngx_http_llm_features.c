
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The learned router's features.  The request is read as three fields,
 * each hashed apart so that one cannot stand in for another: the last
 * user turn (words, word pairs and character 4-grams: what is asked), the
 * system prompt (words: a long boilerplate prompt is one field among
 * three, its weight does not grow with its length) and the earlier turns
 * (words).  Named features beside them say what a person can check: the
 * lengths, the turn structure, code and math cues and symbols, the
 * language, the tools and the response schema.
 *
 * Every field is read up to a cap, so that a request costs the same
 * bounded time whatever its size: the last turn's first 6 KB and last
 * 2 KB (its 4-grams in the first 1 KB of each: more of them cost time and
 * add nothing on the corpus's validation split), the system prompt's
 * first 3 KB, the earlier turns' 1 KB each, the four most recent of them.
 */


#include <stdio.h>
#include <string.h>
#include <math.h>

#include "ngx_http_llm_features.h"


#define NGX_HTTP_LLM_LAST_HEAD    6144
#define NGX_HTTP_LLM_LAST_TAIL    2048
#define NGX_HTTP_LLM_SYSTEM_HEAD  3072
#define NGX_HTTP_LLM_TURN_HEAD    1024
#define NGX_HTTP_LLM_TURNS_BACK   4
#define NGX_HTTP_LLM_CHAR_HEAD    1024
#define NGX_HTTP_LLM_ASK          256
#define NGX_HTTP_LLM_SHRINK       512

#define NGX_HTTP_LLM_CUE_SIZE     1024


/* the kinds of hashed features, each with a seed and a scale of its own */

enum {
    NGX_HTTP_LLM_K_LAST_WORD = 0,
    NGX_HTTP_LLM_K_LAST_PAIR,
    NGX_HTTP_LLM_K_LAST_CHAR,
    NGX_HTTP_LLM_K_SYSTEM_WORD,
    NGX_HTTP_LLM_K_CONTEXT_WORD,
    NGX_HTTP_LLM_K_ASK_WORD,
    NGX_HTTP_LLM_K_ASK_PAIR,
    NGX_HTTP_LLM_K_N = NGX_HTTP_LLM_KINDS
};

/* what a cue word is */

enum {
    NGX_HTTP_LLM_CUE_CODE = 1,
    NGX_HTTP_LLM_CUE_MATH,
    NGX_HTTP_LLM_CUE_REASONING,
    NGX_HTTP_LLM_CUE_ANALYSIS,
    NGX_HTTP_LLM_CUE_EN,
    NGX_HTTP_LLM_CUE_FR,
    NGX_HTTP_LLM_CUE_IT,
    NGX_HTTP_LLM_CUE_DE,
    NGX_HTTP_LLM_CUE_ES
};


typedef struct {
    ngx_http_llm_features_t  *f;
    size_t                    count[NGX_HTTP_LLM_K_N];

    /* the field */
    int                       word_kind;
    int                       pairs;
    int                       chars;
    int                       stats;
    int                       ask;
    size_t                    ask_head;       /* words ending up to here */
    size_t                    ask_from;       /* and past here: the ask */
    size_t                    pos;            /* bytes read of the part */

    /* the word being read, the one before it, the last 4 bytes */
    uint32_t                  word;
    size_t                    wlen;
    uint32_t                  prev;
    uint32_t                  win;
    size_t                    nwin;
    unsigned char             last_raw;
    unsigned char             last_norm;

    /* the last turn's counts */
    size_t                    bytes;
    size_t                    symbols;
    size_t                    math_symbols;
    size_t                    digits;
    size_t                    questions;
    size_t                    high;
    size_t                    ticks;
    int                       fence;
    size_t                    cue[NGX_HTTP_LLM_CUE_ES + 1];
} ngx_http_llm_scan_t;


const char  *ngx_http_llm_dense_names[NGX_HTTP_LLM_D_N] = {
    "length", "last_length", "system_length", "turns", "assistant",
    "tool_messages", "code", "code_fence", "symbols", "math",
    "math_symbols", "digits", "reasoning", "analysis", "questions",
    "non_ascii", "lang_en", "lang_fr", "lang_it", "lang_de", "lang_es",
    "lang_other", "tools", "tools_size", "schema", "json_mode"
};

const char  *ngx_http_llm_lang_names[6] = {
    "en", "fr", "it", "de", "es", "other"
};


static const uint32_t  ngx_http_llm_seeds[NGX_HTTP_LLM_K_N] = {
    0x9e3779b1, 0x85ebca6b, 0xc2b2ae35, 0x27d4eb2f, 0x165667b1,
    0xd3a2646c, 0xfd7046c5
};


/* single words, lowercased, their accents as UTF-8 */

static const char  *ngx_http_llm_cue_words[] = {
    "\1", "function", "def", "class", "return", "import", "include",
    "python", "javascript", "typescript", "rust", "golang", "java", "bash",
    "sql", "regex", "algorithm", "implement", "debug", "refactor",
    "compile", "traceback", "segfault", "api", "kubernetes", "dockerfile",
    "bug", "script", "code", "código", "codice", "fonction", "funktion",
    "programm", "snippet", "json", "yaml", "html", "css", "async",
    "\2", "prove", "proof", "theorem", "lemma", "integral", "derivative",
    "equation", "probability", "matrix", "eigenvalue", "eigenvalues",
    "polynomial", "modulo", "prime", "primes", "calculus", "variance",
    "combinatorics", "recurrence", "induction", "logarithm", "vector",
    "démontrer", "prouver", "dimostra", "dimostrare", "beweise",
    "beweisen", "demuestra", "demostrar", "théorème", "teorema", "satz",
    "integrale", "ecuación", "equazione", "gleichung", "probabilité",
    "\3", "why", "explain", "compare", "tradeoff", "plan", "design",
    "strategy", "evaluate", "justify", "implication", "reason", "derive",
    "decide", "constraints", "pourquoi", "perché", "warum", "porque",
    "qué", "expliquer", "spiega", "erkläre", "explica", "step",
    "\4", "analyze", "analyse", "analysis", "review", "critique", "assess",
    "document", "report", "contract", "paper", "detailed",
    "comprehensive", "thorough", "essay", "legal", "audit", "summarize",
    "summarise", "résume", "riassumi", "zusammenfassung", "resume",
    "\5", "the", "and", "is", "of", "to", "what", "how", "you", "this",
    "that", "with", "for", "are", "can", "please", "my", "it",
    "\6", "le", "la", "les", "est", "et", "des", "une", "pour", "que",
    "je", "vous", "pas", "dans", "du", "qui", "sur", "avec", "mon",
    "\7", "il", "che", "è", "per", "una", "della", "non", "sono", "di",
    "gli", "mi", "del", "come", "questo", "ho", "puoi", "nel",
    "\10", "der", "die", "und", "ist", "das", "nicht", "ich", "ein",
    "zu", "sie", "mit", "den", "eine", "für", "auf", "bitte", "wie",
    "\11", "el", "los", "es", "por", "para", "con", "las", "lo", "cómo",
    "puedes", "está", "favor", "pero", "hola", "necesito", "esto",
    NULL
};


/* a byte's class, and its normal form: lowercase, digits read as 0 */

#define NGX_HTTP_LLM_C_SPACE    0x01
#define NGX_HTTP_LLM_C_WORD     0x02
#define NGX_HTTP_LLM_C_DIGIT    0x04
#define NGX_HTTP_LLM_C_HIGH     0x08
#define NGX_HTTP_LLM_C_SYMBOL   0x10
#define NGX_HTTP_LLM_C_MATH     0x20
#define NGX_HTTP_LLM_C_COUNTED  0x40

static unsigned char  ngx_http_llm_class[256];
static unsigned char  ngx_http_llm_lower[256];
static int            ngx_http_llm_class_ready;

static uint32_t   ngx_http_llm_cue_hash[NGX_HTTP_LLM_CUE_SIZE];
static uint8_t    ngx_http_llm_cue_class[NGX_HTTP_LLM_CUE_SIZE];
static int        ngx_http_llm_cues_ready;


static void ngx_http_llm_class_init(void);
static void ngx_http_llm_cues_init(void);
static int ngx_http_llm_cue(uint32_t h);
static void ngx_http_llm_scan(ngx_http_llm_scan_t *s, const char *p,
    size_t len);
static void ngx_http_llm_scan_end(ngx_http_llm_scan_t *s);
static void ngx_http_llm_word_end(ngx_http_llm_scan_t *s, uint32_t h);
static size_t ngx_http_llm_content(ngx_http_llm_scan_t *s, cJSON *content,
    size_t budget, int tail);
static size_t ngx_http_llm_content_len(cJSON *content);
static size_t ngx_http_llm_json_bytes(cJSON *item, int depth);
static void ngx_http_llm_dense(ngx_http_llm_features_t *f, int i,
    double v);


static inline uint32_t
ngx_http_llm_mix(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6b;
    h ^= h >> 13;
    h *= 0xc2b2ae35;
    h ^= h >> 16;

    return h;
}


static inline void
ngx_http_llm_emit(ngx_http_llm_scan_t *s, int kind, uint32_t h)
{
    ngx_http_llm_features_t  *f = s->f;

    if (f->n >= NGX_HTTP_LLM_FEAT_MAX) {
        return;
    }

    /* multiplicative hashing: the top bits of the product */
    h = ((h ^ ngx_http_llm_seeds[kind]) * 0x9e3779b1u)
        >> (32 - NGX_HTTP_LLM_HASH_BITS);

    /* the kind rides in the top byte until the scale is known */
    f->idx[f->n++] = ((uint32_t) kind << 24)
                     | (NGX_HTTP_LLM_D_N + h);
    s->count[kind]++;
}


static inline double
ngx_http_llm_cap(double v)
{
    return v < 0 ? 0 : (v > 1 ? 1 : v);
}


const char *
ngx_http_llm_features_layout(void)
{
    static char  layout[1024];

    int     i;
    size_t  n;

    if (layout[0]) {
        return layout;
    }

    /*
     * everything that changes what an index means: retrain when it
     * changes, and bump "v" when the hashing or the fields change
     */

    n = (size_t) snprintf(layout, sizeof(layout),
                          "v1;hash=%d;last=%d+%d:w,w2,c4@%d;ask=%d:w,w2;"
                          "system=%d:w;turns=%dx%d:w;mean;shrink=%d;dense=",
                          NGX_HTTP_LLM_HASH_BITS, NGX_HTTP_LLM_LAST_HEAD,
                          NGX_HTTP_LLM_LAST_TAIL, NGX_HTTP_LLM_CHAR_HEAD,
                          NGX_HTTP_LLM_ASK, NGX_HTTP_LLM_SYSTEM_HEAD,
                          NGX_HTTP_LLM_TURNS_BACK, NGX_HTTP_LLM_TURN_HEAD,
                          NGX_HTTP_LLM_SHRINK);

    for (i = 0; i < NGX_HTTP_LLM_D_N && n < sizeof(layout) - 32; i++) {
        n += (size_t) snprintf(layout + n, sizeof(layout) - n, "%s%s",
                               i ? "," : "", ngx_http_llm_dense_names[i]);
    }

    return layout;
}


void
ngx_http_llm_features(cJSON *request, ngx_http_llm_features_t *f)
{
    int                   i, last, j, back, lang, best;
    cJSON                *msgs, *m, *role, *content, *item, *type;
    size_t                total, sys, last_len, user, assistant, tool;
    float                 k;
    size_t                budget, n, head, size;
    const char           *r;
    ngx_http_llm_scan_t   s;

    if (!ngx_http_llm_cues_ready) {
        ngx_http_llm_cues_init();
    }

    f->n = 0;
    memset(f->dense, 0, sizeof(f->dense));

    memset(&s, 0, sizeof(ngx_http_llm_scan_t));
    s.f = f;

    msgs = cJSON_GetObjectItemCaseSensitive(request, "messages");

    /* the last user turn, the lengths and the turns */

    last = -1;
    total = 0;
    sys = 0;
    user = 0;
    assistant = 0;
    tool = 0;
    i = 0;

    cJSON_ArrayForEach(m, msgs) {
        role = cJSON_GetObjectItemCaseSensitive(m, "role");
        r = cJSON_IsString(role) ? role->valuestring : "";
        n = ngx_http_llm_content_len(cJSON_GetObjectItemCaseSensitive(m,
                                                                "content"));
        total += n;

        if (strcmp(r, "system") == 0 || strcmp(r, "developer") == 0) {
            sys += n;

        } else if (strcmp(r, "user") == 0) {
            user++;
            last = i;

        } else if (strcmp(r, "assistant") == 0) {
            assistant++;

        } else {
            tool++;
        }

        i++;
    }

    /* the last user turn: words, pairs, 4-grams and the counts */

    last_len = 0;

    if (last >= 0) {
        m = cJSON_GetArrayItem(msgs, last);
        content = cJSON_GetObjectItemCaseSensitive(m, "content");
        last_len = ngx_http_llm_content_len(content);

        s.word_kind = NGX_HTTP_LLM_K_LAST_WORD;
        s.pairs = 1;
        s.chars = 1;
        s.stats = 1;

        /*
         * the ask: the turn's first and last NGX_HTTP_LLM_ASK bytes, where
         * a document's instruction is, are a field of their own too (a
         * short turn is all ask)
         */

        s.ask = 1;
        s.ask_head = NGX_HTTP_LLM_ASK;

        if (last_len <= NGX_HTTP_LLM_LAST_HEAD + NGX_HTTP_LLM_LAST_TAIL) {
            s.ask_from = last_len > NGX_HTTP_LLM_ASK
                         ? last_len - NGX_HTTP_LLM_ASK : 0;
            ngx_http_llm_content(&s, content, last_len, 0);

        } else {
            s.ask_from = (size_t) -1;
            ngx_http_llm_content(&s, content, NGX_HTTP_LLM_LAST_HEAD, 0);
            ngx_http_llm_scan_end(&s);
            s.ask_head = 0;
            s.ask_from = NGX_HTTP_LLM_LAST_TAIL - NGX_HTTP_LLM_ASK;
            ngx_http_llm_content(&s, content, NGX_HTTP_LLM_LAST_TAIL, 1);
        }

        ngx_http_llm_scan_end(&s);
        s.ask = 0;
    }

    /* the system prompt: its words */

    s.word_kind = NGX_HTTP_LLM_K_SYSTEM_WORD;
    s.pairs = 0;
    s.chars = 0;
    s.stats = 0;
    budget = NGX_HTTP_LLM_SYSTEM_HEAD;

    cJSON_ArrayForEach(m, msgs) {
        role = cJSON_GetObjectItemCaseSensitive(m, "role");
        r = cJSON_IsString(role) ? role->valuestring : "";

        if (budget && (strcmp(r, "system") == 0
                       || strcmp(r, "developer") == 0))
        {
            budget -= ngx_http_llm_content(&s,
                         cJSON_GetObjectItemCaseSensitive(m, "content"),
                         budget, 0);
            ngx_http_llm_scan_end(&s);
        }
    }

    /* the turns before the last: the most recent ones' words */

    s.word_kind = NGX_HTTP_LLM_K_CONTEXT_WORD;
    back = 0;

    for (j = last - 1; j >= 0 && back < NGX_HTTP_LLM_TURNS_BACK; j--) {
        m = cJSON_GetArrayItem(msgs, j);
        role = cJSON_GetObjectItemCaseSensitive(m, "role");
        r = cJSON_IsString(role) ? role->valuestring : "";

        if (strcmp(r, "system") == 0 || strcmp(r, "developer") == 0) {
            continue;
        }

        ngx_http_llm_content(&s, cJSON_GetObjectItemCaseSensitive(m,
                                                                "content"),
                             NGX_HTTP_LLM_TURN_HEAD, 0);
        ngx_http_llm_scan_end(&s);
        back++;
    }

    /*
     * each kind is the mean of its features: a field's weight does not
     * grow with its length (on the validation split, the mean ranks
     * better than the sum over the square root)
     */

    for (n = 0; n < NGX_HTTP_LLM_K_N; n++) {
        f->scale[n] = s.count[n] ? (float) (1.0 / (double) s.count[n]) : 0;
    }

    /*
     * a long last turn is mostly a document: its words weigh less, by
     * the square root of its length past NGX_HTTP_LLM_SHRINK, and its ask
     * decides (on the validation split, this keeps more long easy asks
     * cheap and loses no hard ones)
     */

    if (last_len > NGX_HTTP_LLM_SHRINK) {
        k = (float) sqrt((double) NGX_HTTP_LLM_SHRINK / (double) last_len);
        f->scale[NGX_HTTP_LLM_K_LAST_WORD] *= k;
        f->scale[NGX_HTTP_LLM_K_LAST_PAIR] *= k;
        f->scale[NGX_HTTP_LLM_K_LAST_CHAR] *= k;
    }

    /* the named features */

    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_LENGTH,
                       log2(1.0 + (double) total) / 18);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_LAST_LENGTH,
                       log2(1.0 + (double) last_len) / 18);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_SYSTEM_LENGTH,
                       log2(1.0 + (double) sys) / 18);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_TURNS,
                       ((double) (user ? user - 1 : 0)) / 16);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_ASSISTANT, (double) assistant / 16);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_TOOL_MESSAGES, (double) tool / 8);

    head = s.bytes ? s.bytes : 1;

    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_CODE,
                       (double) s.cue[NGX_HTTP_LLM_CUE_CODE] / 4);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_CODE_FENCE, s.fence ? 1 : 0);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_SYMBOLS,
                       (double) s.symbols * 10 / head);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_MATH,
                       (double) s.cue[NGX_HTTP_LLM_CUE_MATH] / 4);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_MATH_SYMBOLS,
                       (double) s.math_symbols * 20 / head);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_DIGITS,
                       (double) s.digits * 5 / head);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_REASONING,
                       (double) s.cue[NGX_HTTP_LLM_CUE_REASONING] / 4);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_ANALYSIS,
                       (double) s.cue[NGX_HTTP_LLM_CUE_ANALYSIS] / 4);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_QUESTIONS,
                       (double) s.questions / 4);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_NON_ASCII,
                       (double) s.high / head);

    /* the language: the most stop words; none, in ASCII: English */

    lang = s.high ? 5 : 0;
    best = 0;

    for (i = 0; i < 5; i++) {
        if ((int) s.cue[NGX_HTTP_LLM_CUE_EN + i] > best) {
            best = (int) s.cue[NGX_HTTP_LLM_CUE_EN + i];
            lang = i;
        }
    }

    f->lang = lang;
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_LANG_EN + lang, 1);

    /* tools and the response's schema */

    item = cJSON_GetObjectItemCaseSensitive(request, "tools");
    n = cJSON_IsArray(item) ? (size_t) cJSON_GetArraySize(item) : 0;
    size = ngx_http_llm_json_bytes(item, 0);

    item = cJSON_GetObjectItemCaseSensitive(request, "functions");
    if (cJSON_IsArray(item)) {
        n += (size_t) cJSON_GetArraySize(item);
        size += ngx_http_llm_json_bytes(item, 0);
    }

    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_TOOLS, log2(1.0 + (double) n) / 5);
    ngx_http_llm_dense(f, NGX_HTTP_LLM_D_TOOLS_SIZE,
                       log2(1.0 + (double) size) / 16);

    item = cJSON_GetObjectItemCaseSensitive(request, "response_format");
    type = cJSON_GetObjectItemCaseSensitive(item, "type");

    if (cJSON_IsString(type)) {
        if (strcmp(type->valuestring, "json_schema") == 0) {
            ngx_http_llm_dense(f, NGX_HTTP_LLM_D_SCHEMA, 1);

        } else if (strcmp(type->valuestring, "json_object") == 0) {
            ngx_http_llm_dense(f, NGX_HTTP_LLM_D_JSON_MODE, 1);
        }
    }
}


static void
ngx_http_llm_dense(ngx_http_llm_features_t *f, int i, double v)
{
    f->dense[i] = ngx_http_llm_cap(v);
}


/* a message's text, string or parts, up to budget bytes: those it read */

static size_t
ngx_http_llm_content(ngx_http_llm_scan_t *s, cJSON *content, size_t budget,
    int tail)
{
    size_t   n, done;
    cJSON   *part, *t;

    if (cJSON_IsString(content)) {
        n = strlen(content->valuestring);
        n = n < budget ? n : budget;

        ngx_http_llm_scan(s, tail ? content->valuestring
                                    + strlen(content->valuestring) - n
                                  : content->valuestring, n);
        return n;
    }

    done = 0;

    if (tail) {
        /* the tail of the last text part */
        t = NULL;

        cJSON_ArrayForEach(part, content) {
            if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(part,
                                                                "text")))
            {
                t = cJSON_GetObjectItemCaseSensitive(part, "text");
            }
        }

        return t ? ngx_http_llm_content(s, t, budget, 1) : 0;
    }

    cJSON_ArrayForEach(part, content) {
        t = cJSON_GetObjectItemCaseSensitive(part, "text");

        if (cJSON_IsString(t) && done < budget) {
            done += ngx_http_llm_content(s, t, budget - done, 0);
            ngx_http_llm_scan(s, " ", 1);
        }
    }

    return done;
}


static size_t
ngx_http_llm_content_len(cJSON *content)
{
    size_t   n;
    cJSON   *part, *t;

    if (cJSON_IsString(content)) {
        return strlen(content->valuestring);
    }

    n = 0;

    cJSON_ArrayForEach(part, content) {
        t = cJSON_GetObjectItemCaseSensitive(part, "text");

        if (cJSON_IsString(t)) {
            n += strlen(t->valuestring);
        }
    }

    return n;
}


/* about the bytes of a JSON value as text, without printing it */

static size_t
ngx_http_llm_json_bytes(cJSON *item, int depth)
{
    size_t   n;
    cJSON   *c;

    if (item == NULL || depth > 64) {
        return 0;
    }

    n = 4 + (item->string ? strlen(item->string) : 0);

    if (cJSON_IsString(item)) {
        n += strlen(item->valuestring);
    }

    for (c = item->child; c; c = c->next) {
        n += ngx_http_llm_json_bytes(c, depth + 1);
    }

    return n;
}


/*
 * The scanner: bytes are lowercased (ASCII and Latin-1 letters in UTF-8),
 * digits read as 0 so that numbers match by their shape, runs of white
 * space as one space.  A word is a run of letters, digits, "_" and
 * non-ASCII bytes; any other printable byte is a word of its own.
 */

static void
ngx_http_llm_scan(ngx_http_llm_scan_t *s, const char *text, size_t len)
{
    size_t          i, bytes, high, digits, symbols, math, questions;
    size_t          ticks, nwin, pos;
    uint32_t        word, win;
    unsigned char   c, raw, cls, last_raw, last_norm;

    if (!ngx_http_llm_class_ready) {
        ngx_http_llm_class_init();
    }

    /*
     * the state is in locals while the loop runs: the features written
     * through a pointer would otherwise make the compiler reload it
     */

    bytes = 0;
    high = 0;
    digits = 0;
    symbols = 0;
    math = 0;
    questions = 0;
    ticks = s->ticks;
    nwin = s->nwin;
    pos = s->pos;
    win = s->win;
    word = s->word;
    last_raw = s->last_raw;
    last_norm = s->last_norm;

    for (i = 0; i < len; i++) {
        raw = (unsigned char) text[i];
        c = ngx_http_llm_lower[raw];
        cls = ngx_http_llm_class[raw];
        pos++;

        if (last_raw == 0xc3 && raw >= 0x80 && raw <= 0x9e && raw != 0x97) {
            c = raw + 0x20;
        }

        last_raw = raw;

        if (s->stats) {
            bytes++;

            if (cls & NGX_HTTP_LLM_C_COUNTED) {
                if (cls & NGX_HTTP_LLM_C_HIGH) {
                    high++;

                    /* U+2200..U+22FF, the mathematical operators */
                    if ((raw == 0x88 || raw == 0x89) && i
                        && (unsigned char) text[i - 1] == 0xe2)
                    {
                        math++;
                    }

                } else if (cls & NGX_HTTP_LLM_C_DIGIT) {
                    digits++;

                } else if (cls & NGX_HTTP_LLM_C_SYMBOL) {
                    symbols++;

                } else if (cls & NGX_HTTP_LLM_C_MATH) {
                    math++;

                } else if (raw == '?') {
                    questions++;
                }
            }

            if (raw == '`') {
                if (++ticks >= 3) {
                    s->fence = 1;
                }

            } else {
                ticks = 0;
            }
        }

        if (cls & NGX_HTTP_LLM_C_SPACE) {
            if (s->wlen) {
                s->pos = pos;
                ngx_http_llm_word_end(s, word);
            }

            if (last_norm == ' ') {
                continue;
            }

        } else if (cls & NGX_HTTP_LLM_C_WORD) {
            word = ((s->wlen ? word : 2166136261u) ^ c) * 16777619u;
            s->wlen++;

        } else {
            s->pos = pos;

            if (s->wlen) {
                ngx_http_llm_word_end(s, word);
            }

            s->wlen = 1;
            ngx_http_llm_word_end(s, (2166136261u ^ c) * 16777619u);
        }

        last_norm = c;

        if (s->chars && nwin < NGX_HTTP_LLM_CHAR_HEAD) {
            win = (win << 8) | c;

            if (++nwin >= 4) {
                ngx_http_llm_emit(s, NGX_HTTP_LLM_K_LAST_CHAR, win);
            }
        }
    }

    s->bytes += bytes;
    s->high += high;
    s->digits += digits;
    s->symbols += symbols;
    s->math_symbols += math;
    s->questions += questions;
    s->ticks = ticks;
    s->nwin = nwin;
    s->pos = pos;
    s->win = win;
    s->word = word;
    s->last_raw = last_raw;
    s->last_norm = last_norm;
}


/* a field's part ends: no word or 4-gram spans the gap */

static void
ngx_http_llm_scan_end(ngx_http_llm_scan_t *s)
{
    if (s->wlen) {
        ngx_http_llm_word_end(s, s->word);
    }

    s->prev = 0;
    s->win = 0;
    s->nwin = 0;
    s->pos = 0;
    s->last_norm = ' ';
    s->last_raw = 0;
}


static void
ngx_http_llm_word_end(ngx_http_llm_scan_t *s, uint32_t h)
{
    int  cue;

    s->wlen = 0;

    ngx_http_llm_emit(s, s->word_kind, h);

    if (s->pairs && s->prev) {
        ngx_http_llm_emit(s, s->word_kind + 1, s->prev * 0x01000193u ^ h);
    }

    if (s->ask && (s->pos <= s->ask_head || s->pos > s->ask_from)) {
        ngx_http_llm_emit(s, NGX_HTTP_LLM_K_ASK_WORD, h);

        if (s->prev) {
            ngx_http_llm_emit(s, NGX_HTTP_LLM_K_ASK_PAIR,
                              s->prev * 0x01000193u ^ h);
        }
    }

    s->prev = h | 1;

    if (s->stats) {
        cue = ngx_http_llm_cue(h);

        if (cue) {
            s->cue[cue]++;
        }
    }
}


static void
ngx_http_llm_class_init(void)
{
    int          c;
    const char  *p;

    for (c = 0; c < 256; c++) {
        ngx_http_llm_lower[c] = (unsigned char) c;

        if (c >= 'A' && c <= 'Z') {
            ngx_http_llm_lower[c] = (unsigned char) (c | 0x20);
        }

        if (c <= ' ') {
            ngx_http_llm_class[c] = NGX_HTTP_LLM_C_SPACE;
            ngx_http_llm_lower[c] = ' ';

        } else if (c >= '0' && c <= '9') {
            ngx_http_llm_class[c] = NGX_HTTP_LLM_C_WORD | NGX_HTTP_LLM_C_DIGIT
                                    | NGX_HTTP_LLM_C_COUNTED;
            ngx_http_llm_lower[c] = '0';

        } else if (c >= 0x80) {
            ngx_http_llm_class[c] = NGX_HTTP_LLM_C_WORD | NGX_HTTP_LLM_C_HIGH
                                    | NGX_HTTP_LLM_C_COUNTED;

        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                   || c == '_')
        {
            ngx_http_llm_class[c] = NGX_HTTP_LLM_C_WORD;
        }
    }

    for (p = "{}();[]_|&\\$"; *p; p++) {
        ngx_http_llm_class[(unsigned char) *p] |= NGX_HTTP_LLM_C_SYMBOL
                                                  | NGX_HTTP_LLM_C_COUNTED;
    }

    for (p = "^=<>+*/"; *p; p++) {
        ngx_http_llm_class[(unsigned char) *p] |= NGX_HTTP_LLM_C_MATH
                                                  | NGX_HTTP_LLM_C_COUNTED;
    }

    ngx_http_llm_class['?'] |= NGX_HTTP_LLM_C_COUNTED;

    ngx_http_llm_class_ready = 1;
}


/* the cue words, by the hash the scanner gives a word */

static void
ngx_http_llm_cues_init(void)
{
    int            cls;
    uint32_t       h, slot;
    const char   **w;
    const unsigned char  *p;

    cls = 0;

    for (w = ngx_http_llm_cue_words; *w; w++) {
        if ((unsigned char) **w < ' ') {
            cls = **w;
            continue;
        }

        h = 2166136261u;

        for (p = (const unsigned char *) *w; *p; p++) {
            h = (h ^ *p) * 16777619u;
        }

        slot = ngx_http_llm_mix(h) & (NGX_HTTP_LLM_CUE_SIZE - 1);

        while (ngx_http_llm_cue_class[slot]
               && ngx_http_llm_cue_hash[slot] != h)
        {
            slot = (slot + 1) & (NGX_HTTP_LLM_CUE_SIZE - 1);
        }

        if (ngx_http_llm_cue_class[slot] == 0) {
            ngx_http_llm_cue_hash[slot] = h;
            ngx_http_llm_cue_class[slot] = (uint8_t) cls;
        }
    }

    ngx_http_llm_cues_ready = 1;
}


static int
ngx_http_llm_cue(uint32_t h)
{
    uint32_t  slot;

    slot = ngx_http_llm_mix(h) & (NGX_HTTP_LLM_CUE_SIZE - 1);

    while (ngx_http_llm_cue_class[slot]) {
        if (ngx_http_llm_cue_hash[slot] == h) {
            return ngx_http_llm_cue_class[slot];
        }

        slot = (slot + 1) & (NGX_HTTP_LLM_CUE_SIZE - 1);
    }

    return 0;
}
