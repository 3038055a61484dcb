
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The complexity score.  Each feature is a number in [0, 1] that a person
 * can check against the prompt: how long it is, how many turns, whether it
 * holds code or mathematics, asks for step-by-step reasoning, analysis or
 * proof, is mostly in a non-Latin script, or needs tools or a JSON schema.
 * The score is their weighted sum; at or over the threshold, the strong
 * model.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>

#include "ngx_http_llm_score.h"


#define NGX_HTTP_LLM_SCAN_MAX  (256 * 1024)


const char  *ngx_http_llm_feature_names[NGX_HTTP_LLM_F_N] = {
    "length", "turns", "code", "math", "reasoning", "analysis", "language",
    "tools"
};


static const char  *ngx_http_llm_code_cues[] = {
    "```", "def ", "function", "#include", "class ", "public static",
    "select ", "regex", "algorithm", "implement", "debug", "refactor",
    "compile", "stack trace", "traceback", "segfault", "sql", "python",
    "javascript", "typescript", "rust", "golang", "c++", "java ", "bash",
    " script", "unit test", "bug", "while (", "for (", "api ", "kubernetes",
    "dockerfile", "=>", "();",
    "{\n", "big-o", "complexity", "concurrency", "race condition",
    "data structure", "code", NULL
};

static const char  *ngx_http_llm_math_cues[] = {
    "prove", "theorem", "lemma", "integral", "derivative", "equation",
    "probability", "matrix", "eigen", "\\frac", "solve for", "polynomial",
    "modulo", "prime", "calculus", "optimi", "expected value", "variance",
    "combinator", "recurrence", "induction", "limit of", "sum of the",
    "how many ways", "geometry", "triangle", "logarithm", "vector", NULL
};

static const char  *ngx_http_llm_reasoning_cues[] = {
    "step by step", "step-by-step", "explain why", "why does", "why do",
    "why is", "compare", "trade-off", "tradeoff", "pros and cons", "plan ",
    "design", "strategy", "evaluate", "justify", "implication", "reason",
    "root cause", "what would happen", "derive", "walk me through",
    "architecture", "diagnos", "recommend", "decide", "multi-step",
    "first,", "then ", "considering", "constraints", NULL
};

static const char  *ngx_http_llm_analysis_cues[] = {
    "analy", "proof", "review", "critique", "assess", "the following",
    "document", "report", "contract", "paper", "in depth", "in-depth",
    "detailed", "comprehensive", "thorough", "essay", "literature",
    "legal", "clinical", "diagnosis", "financial", "research", "summarize",
    "summarise", "investigat", "audit", NULL
};


static size_t ngx_http_llm_text(cJSON *content, char *buf, size_t len,
    size_t size);
static double ngx_http_llm_cues(const char *text, const char **cues,
    double per_cue);
static double ngx_http_llm_clamp(double v);


void
ngx_http_llm_weights_default(ngx_http_llm_weights_t *w)
{
    w->weight[NGX_HTTP_LLM_F_LENGTH] = 0.35;
    w->weight[NGX_HTTP_LLM_F_TURNS] = 0.15;
    w->weight[NGX_HTTP_LLM_F_CODE] = 0.40;
    w->weight[NGX_HTTP_LLM_F_MATH] = 0.45;
    w->weight[NGX_HTTP_LLM_F_REASONING] = 0.35;
    w->weight[NGX_HTTP_LLM_F_ANALYSIS] = 0.35;
    w->weight[NGX_HTTP_LLM_F_LANGUAGE] = 0.20;
    w->weight[NGX_HTTP_LLM_F_TOOLS] = 0.50;
    w->threshold = 0.15;
}


/*
 * "name value" lines; "#" starts a comment.  Unnamed features keep their
 * defaults.  Returns 0, or -1 with err set.
 */

int
ngx_http_llm_weights_load(ngx_http_llm_weights_t *w, const char *path,
    char *err, size_t errlen)
{
    int     i, n;
    FILE   *f;
    char    line[256], name[64], *p, *end;
    double  v;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open \"%s\"", path);
        return -1;
    }

    for (n = 1; fgets(line, sizeof(line), f); n++) {

        p = strchr(line, '#');
        if (p) {
            *p = '\0';
        }

        p = line;
        while (isspace((unsigned char) *p)) {
            p++;
        }

        if (*p == '\0') {
            continue;
        }

        if (sscanf(p, "%63s", name) != 1) {
            continue;
        }

        p += strlen(name);
        v = strtod(p, &end);

        if (end == p || v < 0 || v > 100) {
            snprintf(err, errlen, "\"%s\" line %d: a number from 0 to 100 "
                     "expected after \"%s\"", path, n, name);
            fclose(f);
            return -1;
        }

        while (isspace((unsigned char) *end)) {
            end++;
        }

        if (*end != '\0') {
            snprintf(err, errlen, "\"%s\" line %d: unexpected \"%s\"",
                     path, n, end);
            fclose(f);
            return -1;
        }

        if (strcmp(name, "threshold") == 0) {
            w->threshold = v;
            continue;
        }

        for (i = 0; i < NGX_HTTP_LLM_F_N; i++) {
            if (strcmp(name, ngx_http_llm_feature_names[i]) == 0) {
                w->weight[i] = v;
                break;
            }
        }

        if (i == NGX_HTTP_LLM_F_N) {
            snprintf(err, errlen, "\"%s\" line %d: unknown feature \"%s\"",
                     path, n, name);
            fclose(f);
            return -1;
        }
    }

    fclose(f);

    return 0;
}


/* the request's score; features, if given, gets each feature's value */

double
ngx_http_llm_score(ngx_http_llm_weights_t *w, cJSON *request,
    double *features)
{
    int      i;
    char    *text;
    cJSON   *msgs, *m, *role, *item;
    size_t   len, bytes, high, turns;
    double   f[NGX_HTTP_LLM_F_N], score;

    memset(f, 0, sizeof(f));

    msgs = cJSON_GetObjectItemCaseSensitive(request, "messages");

    text = malloc(NGX_HTTP_LLM_SCAN_MAX + 1);
    if (text == NULL) {
        return 0;
    }

    len = 0;
    bytes = 0;
    turns = 0;

    cJSON_ArrayForEach(m, msgs) {
        role = cJSON_GetObjectItemCaseSensitive(m, "role");

        if (cJSON_IsString(role) && strcmp(role->valuestring, "system") != 0)
        {
            turns++;
        }

        len = ngx_http_llm_text(cJSON_GetObjectItemCaseSensitive(m,
                                                                 "content"),
                                text, len, NGX_HTTP_LLM_SCAN_MAX);
    }

    text[len] = '\0';

    /* the share of bytes outside ASCII: other scripts, and all UTF-8 */

    high = 0;

    for (i = 0; (size_t) i < len; i++) {
        if ((unsigned char) text[i] >= 0x80) {
            high++;
        }

        text[i] = (char) tolower((unsigned char) text[i]);
    }

    bytes = ngx_http_llm_prompt_bytes(request, NULL);

    /* 300 bytes and less: nothing; 4 KB and more: all */
    f[NGX_HTTP_LLM_F_LENGTH] = ngx_http_llm_clamp((double) ((long) bytes
                                                            - 300) / 3700);

    f[NGX_HTTP_LLM_F_TURNS] = ngx_http_llm_clamp(((double) turns - 1) / 8);

    f[NGX_HTTP_LLM_F_CODE] = ngx_http_llm_cues(text, ngx_http_llm_code_cues,
                                               0.5);
    f[NGX_HTTP_LLM_F_MATH] = ngx_http_llm_cues(text, ngx_http_llm_math_cues,
                                               0.5);
    f[NGX_HTTP_LLM_F_REASONING] = ngx_http_llm_cues(text,
                                          ngx_http_llm_reasoning_cues, 0.5);
    f[NGX_HTTP_LLM_F_ANALYSIS] = ngx_http_llm_cues(text,
                                           ngx_http_llm_analysis_cues, 0.5);

    f[NGX_HTTP_LLM_F_LANGUAGE] = len ? ngx_http_llm_clamp(
                                           ((double) high / len - 0.1) * 2.5)
                                     : 0;

    item = cJSON_GetObjectItemCaseSensitive(request, "tools");

    if (cJSON_IsArray(item) && cJSON_GetArraySize(item) > 0) {
        f[NGX_HTTP_LLM_F_TOOLS] = 1;

    } else {
        item = cJSON_GetObjectItemCaseSensitive(request, "response_format");
        item = cJSON_GetObjectItemCaseSensitive(item, "type");

        if (cJSON_IsString(item)) {
            if (strcmp(item->valuestring, "json_schema") == 0) {
                f[NGX_HTTP_LLM_F_TOOLS] = 1;

            } else if (strcmp(item->valuestring, "json_object") == 0) {
                f[NGX_HTTP_LLM_F_TOOLS] = 0.5;
            }
        }
    }

    free(text);

    score = 0;

    for (i = 0; i < NGX_HTTP_LLM_F_N; i++) {
        score += w->weight[i] * f[i];

        if (features) {
            features[i] = f[i];
        }
    }

    return score;
}


/* the text of all messages, in bytes; messages, if given, their number */

size_t
ngx_http_llm_prompt_bytes(cJSON *request, size_t *messages)
{
    size_t   n, bytes;
    cJSON   *msgs, *m, *c, *part, *t;

    msgs = cJSON_GetObjectItemCaseSensitive(request, "messages");
    bytes = 0;
    n = 0;

    cJSON_ArrayForEach(m, msgs) {
        n++;
        c = cJSON_GetObjectItemCaseSensitive(m, "content");

        if (cJSON_IsString(c)) {
            bytes += strlen(c->valuestring);
            continue;
        }

        cJSON_ArrayForEach(part, c) {
            t = cJSON_GetObjectItemCaseSensitive(part, "text");
            if (cJSON_IsString(t)) {
                bytes += strlen(t->valuestring);
            }
        }
    }

    if (messages) {
        *messages = n;
    }

    return bytes;
}


/* a message's text, string or parts, appended with a separating space */

static size_t
ngx_http_llm_text(cJSON *content, char *buf, size_t len, size_t size)
{
    size_t   n;
    cJSON   *part, *t;

    if (cJSON_IsString(content)) {
        n = strlen(content->valuestring);
        n = (n > size - len) ? size - len : n;
        memcpy(buf + len, content->valuestring, n);
        len += n;

        if (len < size) {
            buf[len++] = ' ';
        }

        return len;
    }

    cJSON_ArrayForEach(part, content) {
        t = cJSON_GetObjectItemCaseSensitive(part, "text");

        if (cJSON_IsString(t)) {
            len = ngx_http_llm_text(t, buf, len, size);
        }
    }

    return len;
}


/* per_cue for each distinct cue found, at most 1 */

static double
ngx_http_llm_cues(const char *text, const char **cues, double per_cue)
{
    double  v;

    v = 0;

    for ( /* void */ ; *cues; cues++) {
        if (strstr(text, *cues)) {
            v += per_cue;
        }
    }

    return ngx_http_llm_clamp(v);
}


static double
ngx_http_llm_clamp(double v)
{
    return v < 0 ? 0 : (v > 1 ? 1 : v);
}
