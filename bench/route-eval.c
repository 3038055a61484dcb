/*
 * Offline evaluation of the router's complexity score on a labelled
 * prompt set, with the gateway's own scoring code.
 *
 *   route-eval [-w weights] [-p cheap_in/cheap_out] [-P strong_in/strong_out]
 *              [-c answer_tokens] [-m cheap_share] [-k K/N] [-v] prompts.tsv
 *
 * Prices are dollars per million tokens.  A prompt's tokens are estimated
 * as the router does (bytes / 3 plus an allowance per message); its answer
 * is assumed to be -c tokens long (default 300), whatever its label and
 * whichever model writes it.  -m weights the labels to a traffic mix (the
 * share of cheap-is-fine requests); by default, the set's own.  -k K/N
 * takes every N-th prompt from the K-th only.  Prints the share routed to the cheap
 * model, the accuracy on each label, and the cost saved against always
 * using the strong model.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_llm_score.h"


static double
cost(double prompt, double completion, double in, double out)
{
    return (prompt * in + completion * out) / 1e6;
}


static int
prices(const char *s, double *in, double *out)
{
    return sscanf(s, "%lf/%lf", in, out) == 2 ? 0 : -1;
}


int
main(int argc, char **argv)
{
    int                     i, verbose, n[2], right[2], strong_route, lineno;
    int                     part, parts, item;
    char                    line[16384], err[256], *tab = NULL, *nl;
    FILE                   *f;
    cJSON                  *req, *label, *msgs, *msg;
    size_t                  bytes, messages;
    double                  score, feat[NGX_HTTP_LLM_F_N], ptok, ctok;
    double                  ci, co, si, so, always, routed, cheap_share;
    double                  answer, mix, lc[2], lr[2];
    const char             *weights, *path;
    ngx_http_llm_weights_t  w;

    weights = NULL;
    verbose = 0;
    answer = 300;
    mix = -1;
    part = 0;
    parts = 1;
    item = 0;
    ci = 0.70; co = 0.70; si = 2.00; so = 6.00;
    path = NULL;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-w") == 0 && i + 1 < argc) {
            weights = argv[++i];

        } else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
            if (prices(argv[++i], &ci, &co) != 0) {
                fprintf(stderr, "-p wants IN/OUT\n");
                return 2;
            }

        } else if (strcmp(argv[i], "-P") == 0 && i + 1 < argc) {
            if (prices(argv[++i], &si, &so) != 0) {
                fprintf(stderr, "-P wants IN/OUT\n");
                return 2;
            }

        } else if (strcmp(argv[i], "-v") == 0) {
            verbose = 1;

        } else if (strcmp(argv[i], "-k") == 0 && i + 1 < argc) {
            if (sscanf(argv[++i], "%d/%d", &part, &parts) != 2
                || parts < 1 || part < 0 || part >= parts)
            {
                fprintf(stderr, "-k wants K/N, 0 <= K < N\n");
                return 2;
            }

        } else if (strcmp(argv[i], "-m") == 0 && i + 1 < argc) {
            mix = atof(argv[++i]);

        } else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            answer = atof(argv[++i]);

        } else {
            path = argv[i];
        }
    }

    if (path == NULL) {
        fprintf(stderr, "usage: route-eval [-w weights] [-p in/out] "
                "[-P in/out] [-c answer_tokens] [-m cheap_share] [-k K/N] [-v] "
                "prompts.tsv\n");
        return 2;
    }

    ngx_http_llm_weights_default(&w);

    if (weights && ngx_http_llm_weights_load(&w, weights, err, sizeof(err))
                   != 0)
    {
        fprintf(stderr, "%s\n", err);
        return 2;
    }

    f = fopen(path, "r");
    if (f == NULL) {
        perror(path);
        return 2;
    }

    n[0] = n[1] = right[0] = right[1] = 0;
    lc[0] = lc[1] = lr[0] = lr[1] = 0;
    always = routed = 0;
    cheap_share = 0;
    lineno = 0;

    while (fgets(line, sizeof(line), f)) {
        lineno++;

        nl = strchr(line, '\n');
        if (nl) {
            *nl = '\0';
        }

        if (line[0] == '#' || line[0] == '\0') {
            continue;
        }

        /* -k K/N: every N-th prompt from the K-th, for a held-out part */

        if (item++ % parts != part) {
            continue;
        }

        if (line[0] == '{') {
            req = cJSON_Parse(line);
            label = cJSON_GetObjectItemCaseSensitive(req, "label");

        } else {
            tab = strchr(line, '\t');
            if (tab == NULL) {
                fprintf(stderr, "%s:%d: no TAB\n", path, lineno);
                return 2;
            }

            *tab = '\0';
            req = cJSON_CreateObject();
            msgs = cJSON_AddArrayToObject(req, "messages");
            msg = cJSON_CreateObject();
            cJSON_AddStringToObject(msg, "role", "user");
            cJSON_AddStringToObject(msg, "content", tab + 1);
            cJSON_AddItemToArray(msgs, msg);
            cJSON_AddStringToObject(req, "label", line);
            label = cJSON_GetObjectItemCaseSensitive(req, "label");
        }

        if (req == NULL || !cJSON_IsString(label)
            || (strcmp(label->valuestring, "cheap") != 0
                && strcmp(label->valuestring, "strong") != 0))
        {
            fprintf(stderr, "%s:%d: a label cheap or strong expected\n",
                    path, lineno);
            return 2;
        }

        i = strcmp(label->valuestring, "strong") == 0;

        score = ngx_http_llm_score(&w, req, feat);
        strong_route = score >= w.threshold;

        n[i]++;
        right[i] += (strong_route == i);

        bytes = ngx_http_llm_prompt_bytes(req, &messages);
        ptok = (double) bytes / 3 + 8 * (double) messages + 16;
        ctok = answer;

        lc[i] += cost(ptok, ctok, si, so);
        lr[i] += strong_route ? cost(ptok, ctok, si, so)
                              : cost(ptok, ctok, ci, co);
        cheap_share += !strong_route;

        if (verbose && strong_route != i) {
            int  k;

            printf("MISS %-6s score %.2f ", label->valuestring, score);
            for (k = 0; k < NGX_HTTP_LLM_F_N; k++) {
                if (feat[k] > 0) {
                    printf("%s=%.2f ", ngx_http_llm_feature_names[k],
                           feat[k]);
                }
            }
            printf("| %.80s\n", line[0] == '{' ? line : tab + 1);
        }

        cJSON_Delete(req);
    }

    fclose(f);

    printf("prompts: %d (%d cheap, %d strong)\n", n[0] + n[1], n[0], n[1]);
    printf("routed to the cheap model: %.1f%%\n",
           100.0 * cheap_share / (n[0] + n[1]));
    printf("accuracy, cheap-is-fine prompts: %.1f%% (%d of %d kept cheap)\n",
           100.0 * right[0] / n[0], right[0], n[0]);
    printf("accuracy, needs-strong prompts: %.1f%% (%d of %d sent strong; "
           "%.1f%% sent cheap)\n", 100.0 * right[1] / n[1], right[1], n[1],
           100.0 * (n[1] - right[1]) / n[1]);
    printf("prices: cheap %.2f/%.2f, strong %.2f/%.2f $ per 1M tokens\n",
           ci, co, si, so);
    /* per label, then weighted to the traffic mix asked for, if any */

    if (mix < 0) {
        mix = (double) n[0] / (n[0] + n[1]);
    }

    always = mix * lc[0] / n[0] + (1 - mix) * lc[1] / n[1];
    routed = mix * lr[0] / n[0] + (1 - mix) * lr[1] / n[1];

    printf("traffic mix: %.0f%% cheap-is-fine prompts\n", 100 * mix);
    printf("answers assumed %.0f tokens; cost per request always strong: "
           "$%.6f, routed: $%.6f, saved: %.1f%%\n",
           answer, always, routed, 100.0 * (1 - routed / always));

    return 0;
}
