
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * The hosted providers: their base URLs, their habits (flags), and the
 * rewrite each one's API needs of an OpenAI request.  A rewrite table is
 * declarative, applied to the body just before it is sent to that
 * provider; local backends and providers without a table pay nothing.
 * No rule raises a number, so that what is sent stays within what the
 * quota reserved.  docs/directives.md lists every rule.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_provider.h"


static ngx_int_t ngx_http_llm_rewrite_rename(cJSON *out,
    ngx_http_llm_rewrite_t *rw);
static void ngx_http_llm_rewrite_nulls(cJSON *out);
static ngx_int_t ngx_http_llm_rewrite_message_name(cJSON *out,
    ngx_http_llm_rewrite_t *rw);
static ngx_uint_t ngx_http_llm_rewrite_named(cJSON *msg,
    ngx_http_llm_rewrite_t *rw);
static ngx_int_t ngx_http_llm_rewrite_clamp(cJSON *out,
    ngx_http_llm_rewrite_t *rw);
static ngx_uint_t ngx_http_llm_rewrite_in(const char *list, const char *s);


#define ngx_http_llm_rw_drop(name)                                            \
    { NGX_HTTP_LLM_RW_DROP, name, NULL, 0, 0 }


/*
 * Mistral: the schema forbids any member it does not know (422
 * "extra_forbidden"), null values included, and has its own names for
 * two; a name only on a tool's message; temperature up to 1.5 only.
 * n is supported.
 */

static ngx_http_llm_rewrite_t  ngx_http_llm_rewrite_mistral[] = {
    { NGX_HTTP_LLM_RW_NULLS, NULL, NULL, 0, 0 },
    { NGX_HTTP_LLM_RW_RENAME, "seed", "random_seed", 0, 0 },
    { NGX_HTTP_LLM_RW_RENAME, "max_completion_tokens", "max_tokens", 0, 0 },
    ngx_http_llm_rw_drop("user"),
    ngx_http_llm_rw_drop("logprobs"),
    ngx_http_llm_rw_drop("top_logprobs"),
    ngx_http_llm_rw_drop("logit_bias"),
    ngx_http_llm_rw_drop("stream_options"),
    { NGX_HTTP_LLM_RW_MESSAGE_NAME, NULL, "tool", 0, 0 },
    { NGX_HTTP_LLM_RW_CLAMP, "temperature", NULL, 1.5, 0 },
    { NGX_HTTP_LLM_RW_END, NULL, NULL, 0, 0 }
};


/*
 * Groq: one choice only (a request for more is refused, naming n, as
 * Groq would refuse it), no log probabilities, no names of participants
 */

static ngx_http_llm_rewrite_t  ngx_http_llm_rewrite_groq[] = {
    { NGX_HTTP_LLM_RW_ONE, "n", NULL, 0, 0 },
    ngx_http_llm_rw_drop("logprobs"),
    ngx_http_llm_rw_drop("top_logprobs"),
    ngx_http_llm_rw_drop("logit_bias"),
    { NGX_HTTP_LLM_RW_MESSAGE_NAME, NULL, NULL, 0, 0 },
    { NGX_HTTP_LLM_RW_END, NULL, NULL, 0, 0 }
};


/* Fireworks: a non-streamed answer of more than 4096 tokens is refused */

static ngx_http_llm_rewrite_t  ngx_http_llm_rewrite_fireworks[] = {
    { NGX_HTTP_LLM_RW_CLAMP, "max_tokens", NULL, 4096, 1 },
    { NGX_HTTP_LLM_RW_CLAMP, "max_completion_tokens", NULL, 4096, 1 },
    { NGX_HTTP_LLM_RW_END, NULL, NULL, 0, 0 }
};


/* DeepInfra: tool_choice "auto" or "none" only; the older bound's name */

static ngx_http_llm_rewrite_t  ngx_http_llm_rewrite_deepinfra[] = {
    { NGX_HTTP_LLM_RW_ENUM, "tool_choice", "auto none", 0, 0 },
    { NGX_HTTP_LLM_RW_RENAME, "max_completion_tokens", "max_tokens", 0, 0 },
    { NGX_HTTP_LLM_RW_END, NULL, NULL, 0, 0 }
};


/*
 * The providers.  Mistral rejects "stream_options" and sends usage on its
 * last chunk anyway; Groq puts a stream's usage in "x_groq" too;
 * OpenRouter always sends usage in its last event (stream_options is a
 * no-op there) and wants to know the calling application.
 */

static ngx_http_llm_provider_t  ngx_http_llm_providers[] = {
    { ngx_string("together"), "https://api.together.xyz/v1",
      NGX_HTTP_LLM_PROVIDER_STREAM_OPTIONS, NULL },
    { ngx_string("fireworks"), "https://api.fireworks.ai/inference/v1",
      NGX_HTTP_LLM_PROVIDER_STREAM_OPTIONS, ngx_http_llm_rewrite_fireworks },
    { ngx_string("deepinfra"), "https://api.deepinfra.com/v1/openai",
      NGX_HTTP_LLM_PROVIDER_STREAM_OPTIONS, ngx_http_llm_rewrite_deepinfra },
    { ngx_string("openrouter"), "https://openrouter.ai/api/v1",
      NGX_HTTP_LLM_PROVIDER_STREAM_OPTIONS|NGX_HTTP_LLM_PROVIDER_ATTRIBUTION,
      NULL },
    { ngx_string("mistral"), "https://api.mistral.ai/v1", 0,
      ngx_http_llm_rewrite_mistral },
    { ngx_string("groq"), "https://api.groq.com/openai/v1",
      NGX_HTTP_LLM_PROVIDER_STREAM_OPTIONS|NGX_HTTP_LLM_PROVIDER_X_GROQ,
      ngx_http_llm_rewrite_groq },
    { ngx_null_string, NULL, 0, NULL }
};


ngx_http_llm_provider_t *
ngx_http_llm_provider_find(ngx_str_t *name)
{
    ngx_http_llm_provider_t  *p;

    for (p = ngx_http_llm_providers; p->name.len; p++) {
        if (p->name.len == name->len
            && ngx_strncasecmp(p->name.data, name->data, name->len) == 0)
        {
            return p;
        }
    }

    return NULL;
}


/* the table, ended by an empty name */

ngx_http_llm_provider_t *
ngx_http_llm_provider_first(void)
{
    return ngx_http_llm_providers;
}


ngx_http_llm_rewrite_t *
ngx_http_llm_provider_refuses(ngx_http_llm_provider_t *pv, cJSON *json,
    ngx_uint_t stream)
{
    cJSON                   *item;
    ngx_http_llm_rewrite_t  *rw;

    if (pv == NULL || pv->rewrite == NULL) {
        return NULL;
    }

    for (rw = pv->rewrite; rw->op != NGX_HTTP_LLM_RW_END; rw++) {

        if (rw->op != NGX_HTTP_LLM_RW_ONE && rw->op != NGX_HTTP_LLM_RW_ENUM) {
            continue;
        }

        if (rw->unstreamed && stream) {
            continue;
        }

        item = cJSON_GetObjectItemCaseSensitive(json, rw->name);

        if (item == NULL || cJSON_IsNull(item)) {
            continue;
        }

        if (rw->op == NGX_HTTP_LLM_RW_ONE) {
            if (cJSON_IsNumber(item) && item->valuedouble == 1) {
                continue;
            }

            return rw;
        }

        /* a named function, or a string not in the list */

        if (cJSON_IsString(item)
            && ngx_http_llm_rewrite_in(rw->to, item->valuestring))
        {
            continue;
        }

        return rw;
    }

    return NULL;
}


ngx_int_t
ngx_http_llm_provider_rewrite(ngx_http_llm_provider_t *pv, cJSON *out,
    ngx_uint_t stream)
{
    cJSON                   *item;
    ngx_http_llm_rewrite_t  *rw;

    if (pv == NULL || pv->rewrite == NULL) {
        return NGX_OK;
    }

    for (rw = pv->rewrite; rw->op != NGX_HTTP_LLM_RW_END; rw++) {

        if (rw->unstreamed && stream) {
            continue;
        }

        switch (rw->op) {

        case NGX_HTTP_LLM_RW_RENAME:
            if (ngx_http_llm_rewrite_rename(out, rw) != NGX_OK) {
                return NGX_ERROR;
            }
            break;

        case NGX_HTTP_LLM_RW_DROP:
            /* a member of out is a reference: the validated tree stays */
            item = cJSON_DetachItemFromObjectCaseSensitive(out, rw->name);
            if (item) {
                cJSON_Delete(item);
            }
            break;

        case NGX_HTTP_LLM_RW_NULLS:
            ngx_http_llm_rewrite_nulls(out);
            break;

        case NGX_HTTP_LLM_RW_MESSAGE_NAME:
            if (ngx_http_llm_rewrite_message_name(out, rw) != NGX_OK) {
                return NGX_ERROR;
            }
            break;

        case NGX_HTTP_LLM_RW_CLAMP:
            if (ngx_http_llm_rewrite_clamp(out, rw) != NGX_OK) {
                return NGX_ERROR;
            }
            break;

        default: /* ONE, ENUM: ngx_http_llm_provider_refuses() */
            break;
        }
    }

    return NGX_OK;
}


/* the new name wins when both are there: the gateway wrote them equal */

static ngx_int_t
ngx_http_llm_rewrite_rename(cJSON *out, ngx_http_llm_rewrite_t *rw)
{
    cJSON  *item;

    item = cJSON_DetachItemFromObjectCaseSensitive(out, rw->name);

    if (item == NULL) {
        return NGX_OK;
    }

    if (cJSON_GetObjectItemCaseSensitive(out, rw->to)) {
        cJSON_Delete(item);
        return NGX_OK;
    }

    if (!cJSON_AddItemToObject(out, rw->to, item)) {
        cJSON_Delete(item);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_llm_rewrite_nulls(cJSON *out)
{
    cJSON  *m, *next;

    for (m = out->child; m; m = next) {
        next = m->next;

        if (cJSON_IsNull(m)) {
            cJSON_Delete(cJSON_DetachItemViaPointer(out, m));
        }
    }
}


/*
 * messages[].name, but for the roles in rw->to: the messages that have
 * one are copied without it (as references to their other members), the
 * others referred to as they are; one pass to look, one to copy
 */

static ngx_int_t
ngx_http_llm_rewrite_message_name(cJSON *out, ngx_http_llm_rewrite_t *rw)
{
    cJSON       *messages, *msg, *arr, *o, *m;
    ngx_uint_t   named;

    messages = cJSON_GetObjectItemCaseSensitive(out, "messages");

    if (!cJSON_IsArray(messages)) {
        return NGX_OK;
    }

    named = 0;

    cJSON_ArrayForEach(msg, messages) {
        if (ngx_http_llm_rewrite_named(msg, rw)) {
            named = 1;
            break;
        }
    }

    if (!named) {
        return NGX_OK;
    }

    arr = cJSON_CreateArray();
    if (arr == NULL) {
        return NGX_ERROR;
    }

    cJSON_ArrayForEach(msg, messages) {

        if (!ngx_http_llm_rewrite_named(msg, rw)) {
            if (!cJSON_AddItemReferenceToArray(arr, msg)) {
                goto failed;
            }

            continue;
        }

        o = cJSON_CreateObject();
        if (o == NULL) {
            goto failed;
        }

        if (!cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            goto failed;
        }

        cJSON_ArrayForEach(m, msg) {
            if (ngx_strcmp(m->string, "name") != 0
                && !cJSON_AddItemReferenceToObject(o, m->string, m))
            {
                goto failed;
            }
        }
    }

    if (!cJSON_ReplaceItemInObjectCaseSensitive(out, "messages", arr)) {
        goto failed;
    }

    return NGX_OK;

failed:

    cJSON_Delete(arr);
    return NGX_ERROR;
}


/* a message whose name is to go */

static ngx_uint_t
ngx_http_llm_rewrite_named(cJSON *msg, ngx_http_llm_rewrite_t *rw)
{
    cJSON  *role;

    if (!cJSON_IsObject(msg)
        || cJSON_GetObjectItemCaseSensitive(msg, "name") == NULL)
    {
        return 0;
    }

    role = cJSON_GetObjectItemCaseSensitive(msg, "role");

    return rw->to == NULL || !cJSON_IsString(role)
           || !ngx_http_llm_rewrite_in(rw->to, role->valuestring);
}


/* only ever down: the reservation covers what was validated */

static ngx_int_t
ngx_http_llm_rewrite_clamp(cJSON *out, ngx_http_llm_rewrite_t *rw)
{
    cJSON  *item, *n;

    item = cJSON_GetObjectItemCaseSensitive(out, rw->name);

    if (!cJSON_IsNumber(item) || !(item->valuedouble > rw->max)) {
        return NGX_OK;
    }

    n = cJSON_CreateNumber(rw->max);
    if (n == NULL) {
        return NGX_ERROR;
    }

    if (!cJSON_ReplaceItemInObjectCaseSensitive(out, rw->name, n)) {
        cJSON_Delete(n);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* s is one of the words of list, separated by spaces */

static ngx_uint_t
ngx_http_llm_rewrite_in(const char *list, const char *s)
{
    size_t       len;
    const char  *p, *sp;

    len = ngx_strlen(s);

    for (p = list; *p; p = sp + (*sp == ' ')) {
        sp = strchr(p, ' ');

        if (sp == NULL) {
            sp = p + ngx_strlen(p);
        }

        if ((size_t) (sp - p) == len && ngx_strncmp(p, s, len) == 0) {
            return 1;
        }
    }

    return 0;
}
