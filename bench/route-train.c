/*
 * Trains the learned router on a labelled corpus, with the gateway's own
 * feature code, and reports it on the corpus's test split.
 *
 *   route-train [-s SEED] [-q LOSS%] [-o MODEL] [-c CURVE.tsv] [-e MODEL]
 *               [-v] FILE...
 *
 * FILEs are JSON Lines (bench/routing/corpus/README.md) or the older TSV
 * sets ("label<TAB>message" or a JSON request with a "label"); a TSV file
 * named "heldout" is a test split, any other a train split.
 *
 * The model is a logistic regression trained by AdaGrad with an L2
 * penalty, on the train split only; the penalty is picked on the
 * validation split (the cheap-is-fine share kept cheap at the quality
 * target), and so is the threshold: the one under which at most LOSS% of
 * the needs-strong validation prompts score.  The test split is read
 * only for the report.  Everything that is random is drawn from SEED: the
 * same corpus and seed give the same model, byte for byte.
 *
 * -e MODEL evaluates a model file instead of training one: the gateway's
 * own loading and scoring code, on the same splits.  -b MODEL times the
 * gateway's scoring (features and classifier, the JSON parsed already) on
 * requests of 2 KB, 16 KB and 256 KB (64K tokens), in one message and in
 * 64 turns.
 *
 * Costs: a prompt's tokens are its bytes / 4 plus 8 a message, its
 * answer 300 tokens; $0.60 per million tokens on the cheap model, $1.20 on
 * the strong one (Together's prices for Mixtral-8x7B and 8x22B).  The
 * saving is what routing saves against sending everything to the strong
 * model; the achievable saving, that of sending exactly the cheap-is-fine
 * prompts cheap.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <errno.h>
#include <time.h>

#include "ngx_http_llm_features.h"
#include "ngx_http_llm_classifier.h"


#define TRAIN  0
#define VAL    1
#define TEST   2

#define LINE_MAX_BYTES  (4 * 1024 * 1024)

#define CHEAP_PRICE   0.60
#define STRONG_PRICE  1.20
#define ANSWER_TOKENS 300


typedef struct {
    char      *id;
    char      *category;
    char      *adv;
    char      *lang;
    int        split;
    int        strong;
    double     tokens;
    uint32_t  *idx;
    float     *val;
    size_t     n;
    double     p;
} example_t;


typedef struct {
    double     lost;          /* needs-strong sent cheap, share */
    double     wasted;        /* cheap-is-fine sent strong, share */
    double     captured;      /* of the achievable saving, by cost */
    double     captured_n;    /* by count */
    double     saved;         /* against all strong, by cost */
    double     cheap_share;
    int        n[2];
} measures_t;


static example_t  *ex;
static size_t      nex, aex;
static int         verbose;


static void
die(const char *fmt, const char *a)
{
    fprintf(stderr, "route-train: ");
    fprintf(stderr, fmt, a);
    fprintf(stderr, "\n");
    exit(1);
}


static void *
xalloc(void *data, size_t size)
{
    void  *p;

    (void) data;

    p = calloc(1, size);
    if (p == NULL) {
        die("%s", "out of memory");
    }

    return p;
}


static char *
xstrdup(const char *s)
{
    char  *p;

    p = strdup(s ? s : "");
    if (p == NULL) {
        die("%s", "out of memory");
    }

    return p;
}


/* xorshift64*: the only source of randomness */

static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;

    return *s * 2685821657736338717ULL;
}


static const char *
str(cJSON *o, const char *k)
{
    cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(o, k);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}


static void
add(cJSON *req, const char *id, const char *label, const char *category,
    const char *adv, const char *lang, int split)
{
    size_t                    bytes, msgs, i;
    cJSON                    *m, *c, *part;
    example_t                *e;
    static ngx_http_llm_features_t  f;

    if (label == NULL
        || (strcmp(label, "cheap") != 0 && strcmp(label, "strong") != 0))
    {
        die("%s: no label \"cheap\" or \"strong\"", id);
    }

    if (nex == aex) {
        aex = aex ? aex * 2 : 1024;
        ex = realloc(ex, aex * sizeof(example_t));
        if (ex == NULL) {
            die("%s", "out of memory");
        }
    }

    e = &ex[nex++];
    memset(e, 0, sizeof(example_t));

    e->id = xstrdup(id);
    e->category = xstrdup(category ? category : "other");
    e->adv = xstrdup(adv);
    e->lang = xstrdup(lang);
    e->split = split;
    e->strong = strcmp(label, "strong") == 0;

    bytes = 0;
    msgs = 0;

    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(req, "messages")) {
        msgs++;
        c = cJSON_GetObjectItemCaseSensitive(m, "content");

        if (cJSON_IsString(c)) {
            bytes += strlen(c->valuestring);
        }

        if (!cJSON_IsArray(c)) {
            continue;
        }

        cJSON_ArrayForEach(part, c) {
            if (str(part, "text")) {
                bytes += strlen(str(part, "text"));
            }
        }
    }

    e->tokens = (double) bytes / 4 + 8 * (double) msgs;

    ngx_http_llm_features(req, &f);

    /* as (index, value) pairs: the named features, then the hashed */

    e->idx = xalloc(NULL, (f.n + NGX_HTTP_LLM_D_N) * sizeof(uint32_t));
    e->val = xalloc(NULL, (f.n + NGX_HTTP_LLM_D_N) * sizeof(float));
    e->n = 0;

    for (i = 0; i < NGX_HTTP_LLM_D_N; i++) {
        if (f.dense[i] != 0) {
            e->idx[e->n] = (uint32_t) i;
            e->val[e->n++] = (float) f.dense[i];
        }
    }

    for (i = 0; i < f.n; i++) {
        e->idx[e->n] = f.idx[i] & 0xffffff;
        e->val[e->n++] = f.scale[f.idx[i] >> 24];
    }

    if (e->lang[0] == '\0') {
        free(e->lang);
        e->lang = xstrdup(ngx_http_llm_lang_names[f.lang]);
    }
}


static void
load(const char *path)
{
    int          split, tsv, lineno, held;
    FILE        *f;
    char        *line, *tab, *nl, id[512];
    const char  *base, *s;
    cJSON       *o, *req, *msgs, *msg;

    f = fopen(path, "r");
    if (f == NULL) {
        die("cannot open \"%s\"", path);
    }

    base = strrchr(path, '/');
    base = base ? base + 1 : path;
    tsv = strlen(base) > 4 && strcmp(base + strlen(base) - 4, ".tsv") == 0;
    held = strstr(base, "heldout") != NULL;

    line = xalloc(NULL, LINE_MAX_BYTES);

    for (lineno = 1; fgets(line, LINE_MAX_BYTES, f); lineno++) {
        nl = strchr(line, '\n');
        if (nl) {
            *nl = '\0';
        }

        if (line[0] == '\0' || line[0] == '#') {
            continue;
        }

        snprintf(id, sizeof(id), "%.*s:%d", (int) (strlen(base) - 4 + 4),
                 base, lineno);

        if (!tsv || line[0] == '{') {
            o = cJSON_Parse(line);
            if (o == NULL) {
                fprintf(stderr, "route-train: %s line %d: bad JSON\n", path,
                        lineno);
                exit(1);
            }

            if (tsv) {
                add(o, id, str(o, "label"), str(o, "category"),
                    str(o, "adv"), str(o, "lang"), held ? TEST : TRAIN);
                cJSON_Delete(o);
                continue;
            }

            s = str(o, "split");
            split = s == NULL ? -1
                    : strcmp(s, "train") == 0 ? TRAIN
                    : strcmp(s, "val") == 0 ? VAL
                    : strcmp(s, "test") == 0 ? TEST : -1;

            if (split < 0) {
                fprintf(stderr, "route-train: %s line %d: no split\n", path,
                        lineno);
                exit(1);
            }

            req = cJSON_GetObjectItemCaseSensitive(o, "request");
            if (!cJSON_IsObject(req)) {
                fprintf(stderr, "route-train: %s line %d: no request\n",
                        path, lineno);
                exit(1);
            }

            add(req, str(o, "id") ? str(o, "id") : id, str(o, "label"),
                str(o, "category"), str(o, "adv"), str(o, "lang"), split);
            cJSON_Delete(o);
            continue;
        }

        tab = strchr(line, '\t');
        if (tab == NULL) {
            fprintf(stderr, "route-train: %s line %d: no TAB\n", path,
                    lineno);
            exit(1);
        }

        *tab = '\0';

        req = cJSON_CreateObject();
        msgs = cJSON_AddArrayToObject(req, "messages");
        msg = cJSON_CreateObject();
        cJSON_AddStringToObject(msg, "role", "user");
        cJSON_AddStringToObject(msg, "content", tab + 1);
        cJSON_AddItemToArray(msgs, msg);

        add(req, id, line, held ? "heldout-set" : "seed-set", NULL, NULL,
            held ? TEST : TRAIN);
        cJSON_Delete(req);
    }

    free(line);
    fclose(f);
}


static double
dot(const float *w, double bias, const example_t *e)
{
    size_t  i;
    double  z;

    z = bias;

    for (i = 0; i < e->n; i++) {
        z += (double) w[e->idx[i]] * e->val[i];
    }

    return z;
}


/* AdaGrad on the logistic loss, the classes weighed equally */

static void
train_one(float *w, double *bias, double l2, int epochs, uint64_t seed)
{
    int        ep;
    size_t    *order, n, i, j, k, tmp;
    double     z, p, g, gw, cw[2], lr, gb;
    float     *acc;
    double     accb;
    uint64_t   s;
    example_t *e;
    int        count[2];

    acc = xalloc(NULL, NGX_HTTP_LLM_CLASSIFIER_DIM * sizeof(float));
    order = xalloc(NULL, nex * sizeof(size_t));

    count[0] = 0;
    count[1] = 0;
    n = 0;

    for (i = 0; i < nex; i++) {
        if (ex[i].split == TRAIN) {
            order[n++] = i;
            count[ex[i].strong]++;
        }
    }

    cw[0] = (double) n / (2.0 * (count[0] ? count[0] : 1));
    cw[1] = (double) n / (2.0 * (count[1] ? count[1] : 1));

    memset(w, 0, NGX_HTTP_LLM_CLASSIFIER_DIM * sizeof(float));
    *bias = 0;
    accb = 1e-8;
    lr = 0.5;
    s = seed * 0x9e3779b97f4a7c15ULL + 1;

    for (ep = 0; ep < epochs; ep++) {

        for (i = n - 1; i > 0; i--) {
            j = (size_t) (rnd(&s) % (i + 1));
            tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }

        for (k = 0; k < n; k++) {
            e = &ex[order[k]];
            z = dot(w, *bias, e);
            p = 1.0 / (1.0 + exp(-z));
            g = (p - e->strong) * cw[e->strong];

            for (i = 0; i < e->n; i++) {
                j = e->idx[i];
                gw = g * e->val[i] + l2 * w[j];
                acc[j] += (float) (gw * gw);
                w[j] -= (float) (lr * gw / sqrt((double) acc[j] + 1e-8));
            }

            gb = g;
            accb += gb * gb;
            *bias -= lr * gb / sqrt(accb);
        }
    }

    free(acc);
    free(order);
}


/* the weights as the file keeps them, so that the file scores the same */

static void
quantize(float *w)
{
    size_t  i;
    char    buf[64];

    for (i = 0; i < NGX_HTTP_LLM_CLASSIFIER_DIM; i++) {
        if (fabsf(w[i]) < 1e-5f) {
            w[i] = 0;
            continue;
        }

        snprintf(buf, sizeof(buf), "%.6g", (double) w[i]);
        w[i] = (float) strtod(buf, NULL);
    }
}


/*
 * The average of BAG runs, each in an order of its own: one run's weights
 * depend on the order it met the prompts in, their mean much less so
 */

#define BAG  8

static void
train(float *w, double *bias, double l2, int epochs, uint64_t seed)
{
    int     k;
    size_t  i;
    float  *one;
    double  b;

    one = xalloc(NULL, NGX_HTTP_LLM_CLASSIFIER_DIM * sizeof(float));
    memset(w, 0, NGX_HTTP_LLM_CLASSIFIER_DIM * sizeof(float));
    *bias = 0;

    for (k = 0; k < BAG; k++) {
        train_one(one, &b, l2, epochs, seed * BAG + k);

        for (i = 0; i < NGX_HTTP_LLM_CLASSIFIER_DIM; i++) {
            w[i] += one[i] / BAG;
        }

        *bias += b / BAG;
    }

    free(one);
}


static int
cmp_double(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : (x > y ? 1 : 0);
}


/* the threshold for a loss on a split, as the gateway computes it */

/* the needs-strong prompts' probabilities on a split, ascending */

static double *
strong_scores(int split, size_t *n)
{
    size_t   i;
    double  *p;

    p = xalloc(NULL, (nex + 1) * sizeof(double));
    *n = 0;

    for (i = 0; i < nex; i++) {
        if (ex[i].split == split && ex[i].strong) {
            p[(*n)++] = (double) (float) ex[i].p;
        }
    }

    qsort(p, *n, sizeof(double), cmp_double);

    return p;
}


static double
threshold_for(int split, double loss)
{
    size_t   n, k;
    double  *p, t;

    p = strong_scores(split, &n);

    k = (size_t) floor(loss * (double) n + 1e-9);
    t = n == 0 ? 0.5 : (k >= n ? 2 : p[k]);

    free(p);

    return t;
}


/* the area under the ROC curve on a split, ties counted half */

static double
auc(int split)
{
    size_t  i, j;
    double  win, pairs;

    win = 0;
    pairs = 0;

    for (i = 0; i < nex; i++) {
        if (ex[i].split != split || !ex[i].strong) {
            continue;
        }

        for (j = 0; j < nex; j++) {
            if (ex[j].split != split || ex[j].strong) {
                continue;
            }

            pairs++;
            win += ex[i].p > ex[j].p ? 1 : (ex[i].p == ex[j].p ? 0.5 : 0);
        }
    }

    return pairs ? win / pairs : 0;
}


static double
cost(const example_t *e, int strong)
{
    return (e->tokens + ANSWER_TOKENS) * (strong ? STRONG_PRICE
                                                 : CHEAP_PRICE) / 1e6;
}


static void
measure(int split, double t, measures_t *m)
{
    size_t  i;
    int     lost, wasted, kept, cheap;
    double  all, routed, oracle, kept_c, fine_c;

    memset(m, 0, sizeof(measures_t));

    lost = 0;
    wasted = 0;
    kept = 0;
    cheap = 0;
    all = 0;
    routed = 0;
    oracle = 0;
    kept_c = 0;
    fine_c = 0;

    for (i = 0; i < nex; i++) {
        const example_t  *e = &ex[i];
        int               strong;

        if (e->split != split) {
            continue;
        }

        strong = (double) (float) e->p >= t;
        m->n[e->strong]++;

        all += cost(e, 1);
        routed += cost(e, strong);
        oracle += cost(e, e->strong);
        cheap += !strong;

        if (e->strong && !strong) {
            lost++;
        }

        if (!e->strong) {
            fine_c += cost(e, 1) - cost(e, 0);

            if (strong) {
                wasted++;

            } else {
                kept++;
                kept_c += cost(e, 1) - cost(e, 0);
            }
        }
    }

    m->lost = m->n[1] ? (double) lost / m->n[1] : 0;
    m->wasted = m->n[0] ? (double) wasted / m->n[0] : 0;
    m->captured = fine_c > 0 ? kept_c / fine_c : 0;
    m->captured_n = m->n[0] ? (double) kept / m->n[0] : 0;
    m->saved = all > 0 ? (all - routed) / all : 0;
    m->cheap_share = (m->n[0] + m->n[1])
                     ? (double) cheap / (m->n[0] + m->n[1]) : 0;
    (void) oracle;
}


static void
score_all(const float *w, double bias)
{
    size_t  i;

    for (i = 0; i < nex; i++) {
        ex[i].p = 1.0 / (1.0 + exp(-dot(w, bias, &ex[i])));
    }
}


static void
print_measures(const char *what, const measures_t *m)
{
    printf("%s: %d prompts (%d cheap-is-fine, %d needs-strong)\n", what,
           m->n[0] + m->n[1], m->n[0], m->n[1]);
    printf("  needs-strong sent to the cheap model: %5.1f%%\n",
           m->lost * 100);
    printf("  cheap-is-fine sent to the strong model: %5.1f%%\n",
           m->wasted * 100);
    printf("  achievable saving captured: %5.1f%% by cost, %5.1f%% "
           "by count\n", m->captured * 100, m->captured_n * 100);
    printf("  routed to the cheap model: %5.1f%%; saved against always "
           "strong: %5.1f%%\n", m->cheap_share * 100, m->saved * 100);
}


/* the routed share of each category (or tag, or language) on a split */

static void
shares(int split, double t, int what)
{
    size_t       i, j, nk;
    const char  *keys[256], *k;
    int          n[256][2], cheap[256][2];

    nk = 0;
    memset(n, 0, sizeof(n));
    memset(cheap, 0, sizeof(cheap));

    for (i = 0; i < nex; i++) {
        if (ex[i].split != split) {
            continue;
        }

        k = what == 0 ? ex[i].category : what == 1 ? ex[i].adv : ex[i].lang;

        if (k[0] == '\0') {
            continue;
        }

        for (j = 0; j < nk && strcmp(keys[j], k) != 0; j++) { /* void */ }

        if (j == nk) {
            if (nk == 256) {
                continue;
            }

            keys[nk++] = k;
        }

        n[j][ex[i].strong]++;
        cheap[j][ex[i].strong] += (double) (float) ex[i].p < t;
    }

    printf("%s:\n", split == TEST ? "test" : "validation");
    printf("  %-18s %6s %6s %14s %14s\n",
           what == 0 ? "category" : what == 1 ? "adversarial" : "language",
           "cheap", "strong", "cheap->cheap", "strong->cheap");

    for (j = 0; j < nk; j++) {
        printf("  %-18s %6d %6d %13.0f%% %13.0f%%\n", keys[j], n[j][0],
               n[j][1], n[j][0] ? 100.0 * cheap[j][0] / n[j][0] : 0.0,
               n[j][1] ? 100.0 * cheap[j][1] / n[j][1] : 0.0);
    }
}


/* the quality/cost curve: every loss from 0 to 30% */

static void
curve(int split, const char *path, double pick_loss)
{
    int          q;
    FILE        *f;
    double       t;
    measures_t   m;

    f = NULL;

    if (path) {
        f = fopen(path, "w");
        if (f == NULL) {
            die("cannot write \"%s\"", path);
        }

        fprintf(f, "# loss%%(val target)\tthreshold\tlost%%(test)\t"
                "wasted%%(test)\tcaptured%%(test)\tsaved%%(test)\n");
    }

    printf("quality/cost curve (threshold picked on validation, measured "
           "on %s):\n", split == TEST ? "test" : "validation");
    printf("  %8s %9s %12s %13s %10s %8s\n", "max loss", "threshold",
           "strong->chp", "cheap->strong", "captured", "saved");

    for (q = 0; q <= 30; q++) {
        t = threshold_for(VAL, q / 100.0);
        measure(split, t, &m);

        if (q <= 15 || q % 5 == 0) {
            printf("  %7d%% %9.4f %11.1f%% %12.1f%% %9.1f%% %7.1f%%%s\n",
                   q, t, m.lost * 100, m.wasted * 100, m.captured * 100,
                   m.saved * 100,
                   fabs(q / 100.0 - pick_loss) < 1e-9 ? "  <-" : "");
        }

        if (f) {
            fprintf(f, "%d\t%.6f\t%.2f\t%.2f\t%.2f\t%.2f\n", q, t,
                    m.lost * 100, m.wasted * 100, m.captured * 100,
                    m.saved * 100);
        }
    }

    if (f) {
        fclose(f);
    }
}


/* the figures at a threshold: validation and test, then the curve */

static void
report(double t, const char *curve_path, double loss)
{
    measures_t  m;

    measure(VAL, t, &m);
    print_measures("validation", &m);
    measure(TEST, t, &m);
    print_measures("test", &m);
    shares(TEST, t, 0);
    shares(TEST, t, 1);
    shares(TEST, t, 2);
    curve(TEST, curve_path, loss);
}


static void
write_model(const char *path, const float *w, double bias, double t,
    double loss, double l2, uint64_t seed)
{
    size_t   i, n;
    FILE    *f;
    double  *p;

    f = fopen(path, "w");
    if (f == NULL) {
        die("cannot write \"%s\"", path);
    }

    fprintf(f, "# the learned router, written by ./config.sh route-train "
            "(bench/route-train.c)\n# seed %llu, L2 %g, %zu prompts\n",
            (unsigned long long) seed, l2, nex);
    fprintf(f, "llm-router-model 1\nlayout %s\n",
            ngx_http_llm_features_layout());
    fprintf(f, "bias %.9g\nthreshold %.9g\nloss %.9g\n", bias,
            t > 1 ? 1 : t, loss);

    p = strong_scores(VAL, &n);

    for (i = 0; i < n; i++) {
        fprintf(f, "p %.9g\n", p[i]);
    }

    free(p);

    for (i = 0; i < NGX_HTTP_LLM_CLASSIFIER_DIM; i++) {
        if (fabsf(w[i]) >= 1e-5f) {
            fprintf(f, "w %zu %.6g\n", i, (double) w[i]);
        }
    }

    if (fclose(f) != 0) {
        die("cannot write \"%s\"", path);
    }
}


static double
now_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}


static void
speed(const char *path)
{
    int                        k, turns, iters, i;
    char                       err[1024], *text;
    size_t                     sizes[] = { 2048, 16384, 262144 }, s, j;
    double                     t0, t1, sum;
    cJSON                     *req, *msgs, *m;
    ngx_http_llm_classifier_t  c;

    static ngx_http_llm_features_t  f;
    static const char  *words =
        "Please look at the following paragraph and tell me whether the "
        "argument holds: if every prime larger than 3 is of the form 6k+1 "
        "or 6k-1, then the sum of two such primes is even; explain why, "
        "and give a counterexample to the converse. ";

    if (ngx_http_llm_classifier_load(&c, path, xalloc, NULL, err,
                                     sizeof(err))
        != 0)
    {
        die("%s", err);
    }

    printf("%-10s %6s %12s\n", "prompt", "turns", "us/request");

    for (k = 0; k < 3; k++) {
        for (turns = 1; turns <= 64; turns += 63) {
            s = sizes[k];
            text = xalloc(NULL, s / turns + 1);

            for (j = 0; j < s / turns; j++) {
                text[j] = words[j % strlen(words)];
            }

            req = cJSON_CreateObject();
            msgs = cJSON_AddArrayToObject(req, "messages");

            for (i = 0; i < turns; i++) {
                m = cJSON_CreateObject();
                cJSON_AddStringToObject(m, "role",
                                        i % 2 == turns % 2 ? "assistant"
                                                           : "user");
                cJSON_AddStringToObject(m, "content", text);
                cJSON_AddItemToArray(msgs, m);
            }

            iters = s > 100000 ? 200 : 2000;
            sum = 0;
            t0 = now_us();

            for (i = 0; i < iters; i++) {
                ngx_http_llm_features(req, &f);
                sum += ngx_http_llm_classifier_score(&c, &f);
            }

            t1 = now_us();

            printf("%7zu KB %6d %12.2f\n", s / 1024, turns,
                   (t1 - t0) / iters);

            (void) sum;
            cJSON_Delete(req);
            free(text);
        }
    }
}


int
main(int argc, char **argv)
{
    int                         a, best_i, epochs, i, q;
    char                        err[1024];
    float                      *w, *best;
    double                      bias, best_bias, loss, t, best_l2;
    double                      best_keep;
    uint64_t                    seed;
    measures_t                  m;
    const char                 *out, *curve_path, *eval;
    ngx_http_llm_classifier_t   c;

    static const double         l2s[] = { 1e-5, 3e-5, 1e-4, 3e-4, 1e-3 };

    seed = 1;
    loss = 0.07;
    out = NULL;
    curve_path = NULL;
    eval = NULL;
    epochs = 12;

    for (a = 1; a < argc && argv[a][0] == '-'; a++) {
        if (strcmp(argv[a], "-v") == 0) {
            verbose = 1;
            continue;
        }

        if (a + 1 == argc) {
            die("%s needs a value", argv[a]);
        }

        if (strcmp(argv[a], "-s") == 0) {
            seed = strtoull(argv[++a], NULL, 10);

        } else if (strcmp(argv[a], "-q") == 0) {
            loss = strtod(argv[++a], NULL) / 100;
            if (!(loss >= 0 && loss <= 0.5)) {
                die("%s", "-q: a loss from 0 to 50%");
            }

        } else if (strcmp(argv[a], "-o") == 0) {
            out = argv[++a];

        } else if (strcmp(argv[a], "-c") == 0) {
            curve_path = argv[++a];

        } else if (strcmp(argv[a], "-e") == 0) {
            eval = argv[++a];

        } else if (strcmp(argv[a], "-b") == 0) {
            speed(argv[++a]);
            return 0;

        } else if (strcmp(argv[a], "-n") == 0) {
            epochs = atoi(argv[++a]);

        } else {
            die("unknown option %s", argv[a]);
        }
    }

    if (a == argc) {
        die("%s", "no corpus files");
    }

    for ( /* void */ ; a < argc; a++) {
        load(argv[a]);
    }

    {
        int  n[3][2];

        memset(n, 0, sizeof(n));

        for (i = 0; i < (int) nex; i++) {
            n[ex[i].split][ex[i].strong]++;
        }

        printf("corpus: %zu prompts; train %d (%d cheap, %d strong), "
               "validation %d (%d, %d), test %d (%d, %d)\n", nex,
               n[0][0] + n[0][1], n[0][0], n[0][1], n[1][0] + n[1][1],
               n[1][0], n[1][1], n[2][0] + n[2][1], n[2][0], n[2][1]);
    }

    printf("feature layout: %s\n", ngx_http_llm_features_layout());

    if (eval) {
        if (ngx_http_llm_classifier_load(&c, eval, xalloc, NULL, err,
                                         sizeof(err))
            != 0)
        {
            die("%s", err);
        }

        score_all(c.weight, c.bias);

        t = ngx_http_llm_classifier_threshold(&c, loss);
        printf("model %s, max_quality_loss=%g%%: threshold %.4f\n", eval,
               loss * 100, t);

        if (verbose) {
            for (i = 0; i < (int) nex; i++) {
                printf("p\t%s\t%s\t%.6f\n", ex[i].id,
                       ex[i].split == TRAIN ? "train"
                       : ex[i].split == VAL ? "val" : "test", ex[i].p);
            }
        }

        report(t, curve_path, loss);

        return 0;
    }

    /* the penalty: the one that keeps most cheap-is-fine prompts cheap
     * on validation at the quality target */

    w = xalloc(NULL, NGX_HTTP_LLM_CLASSIFIER_DIM * sizeof(float));
    best = xalloc(NULL, NGX_HTTP_LLM_CLASSIFIER_DIM * sizeof(float));
    best_i = -1;
    best_keep = -1;
    best_bias = 0;
    best_l2 = 0;

    for (i = 0; i < (int) (sizeof(l2s) / sizeof(l2s[0])); i++) {
        double  keep;

        train(w, &bias, l2s[i], epochs, seed);
        score_all(w, bias);

        /* kept cheap around the target, not at one point: the
         * validation split is small */
        keep = 0;

        for (q = -2; q <= 2; q++) {
            t = threshold_for(VAL, loss + q * 0.0125 > 0
                                   ? loss + q * 0.0125 : 0);
            measure(VAL, t, &m);
            keep += m.captured_n + m.captured;
        }

        printf("L2 %g: validation AUC %.3f, kept cheap around %g%% loss: "
               "%.1f%%\n", l2s[i], auc(VAL), loss * 100,
               keep * 10);

        if (keep > best_keep + 1e-12) {
            best_keep = keep;
            best_i = i;
            memcpy(best, w, NGX_HTTP_LLM_CLASSIFIER_DIM * sizeof(float));
            best_bias = bias;
            best_l2 = l2s[i];
        }
    }

    (void) best_i;

    quantize(best);
    best_bias = strtod(({ static char b[64];
                          snprintf(b, sizeof(b), "%.9g", best_bias); b; }),
                       NULL);
    score_all(best, best_bias);
    t = threshold_for(VAL, loss);

    printf("picked L2 %g; max_quality_loss=%g%%: threshold %.4f\n", best_l2,
           loss * 100, t);

    printf("the named features' weights:");

    for (i = 0; i < NGX_HTTP_LLM_D_N; i++) {
        printf("%s %s %+.2f", i % 4 ? "," : "\n ",
               ngx_http_llm_dense_names[i], (double) best[i]);
    }

    printf("\n");

    report(t, curve_path, loss);

    /* the misrouted validation prompts, to tune on: never the test's */

    if (verbose) {
        for (i = 0; i < (int) nex; i++) {
            if (ex[i].split == VAL
                && (ex[i].strong != ((double) (float) ex[i].p >= t)))
            {
                printf("  wrong: %s %s p=%.3f %s\n", ex[i].id,
                       ex[i].strong ? "strong" : "cheap", ex[i].p,
                       ex[i].category);
            }
        }
    }

    if (out) {
        write_model(out, best, best_bias, t, loss, best_l2, seed);
        printf("wrote %s\n", out);
    }

    return 0;
}
