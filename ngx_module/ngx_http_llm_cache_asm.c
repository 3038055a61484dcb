
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * A streamed answer to be stored, assembled as its chunks pass into one
 * chat.completion: content, tool calls and finish reason per choice, the
 * model, fingerprint and usage.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_cache.h"
#include "ngx_http_llm_util.h"


#define NGX_HTTP_LLM_CACHE_CHOICES   16
#define NGX_HTTP_LLM_CACHE_TOOLS     65      /* tool calls per choice */
#define NGX_HTTP_LLM_CACHE_CALL_SIZE 64      /* a new call, as counted */


/* a tool call's arguments, grown as their deltas arrive */

typedef struct {
    u_char                     *data;
    size_t                      len;
    size_t                      size;
} ngx_http_llm_cache_args_t;


typedef struct {
    u_char                     *content;
    size_t                      len;
    size_t                      size;
    cJSON                      *tool_calls;
    ngx_http_llm_cache_args_t  *args;       /* per tool call, or NULL */
    cJSON                      *finish;     /* a string, duplicated */
    unsigned                    seen:1;
} ngx_http_llm_cache_choice_t;


struct ngx_http_llm_cache_asm_s {
    cJSON                      *model;
    cJSON                      *fingerprint;
    cJSON                      *usage;      /* the backend's, as it was */
    size_t                      size;
    ngx_uint_t                  n;
    unsigned                    broken:1;
    ngx_http_llm_cache_choice_t choice[NGX_HTTP_LLM_CACHE_CHOICES];
};


static ngx_int_t ngx_http_llm_cache_append(ngx_http_llm_cache_asm_t *a,
    ngx_http_llm_cache_choice_t *ch, const char *s);
static void ngx_http_llm_cache_merge_tools(ngx_http_llm_cache_asm_t *a,
    ngx_http_llm_cache_choice_t *ch, cJSON *calls);
static ngx_int_t ngx_http_llm_cache_set_args(ngx_http_llm_cache_choice_t *ch);


/*
 * The proxy is about to start: a stream to be stored is assembled as it
 * passes, so its events must be read.
 */

ngx_int_t
ngx_http_llm_cache_begin(ngx_http_llm_ctx_t *ctx)
{
    if (!ctx->cache.store || !ctx->stream || ctx->cache.assembled) {
        return NGX_OK;
    }

    ctx->cache.assembled = ngx_calloc(sizeof(ngx_http_llm_cache_asm_t),
                                ctx->request->connection->log);
    if (ctx->cache.assembled == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* one upstream chunk of a stream being assembled */

void
ngx_http_llm_cache_feed(ngx_http_llm_ctx_t *ctx, cJSON *chunk)
{
    cJSON                        *choices, *ch, *item, *delta;
    ngx_int_t                     index;
    ngx_http_llm_cache_asm_t     *a;
    ngx_http_llm_cache_choice_t  *c;

    a = ctx->cache.assembled;

    if (a == NULL || a->broken) {
        return;
    }

    if (a->model == NULL) {
        item = cJSON_GetObjectItemCaseSensitive(chunk, "model");
        if (cJSON_IsString(item)) {
            a->model = cJSON_Duplicate(item, 0);
        }

        item = cJSON_GetObjectItemCaseSensitive(chunk, "system_fingerprint");
        if (cJSON_IsString(item)) {
            a->fingerprint = cJSON_Duplicate(item, 0);
        }
    }

    item = cJSON_GetObjectItemCaseSensitive(chunk, "usage");

    if (cJSON_IsObject(item)) {
        if (a->usage) {
            cJSON_Delete(a->usage);
        }

        a->usage = cJSON_Duplicate(item, 1);
    }

    choices = cJSON_GetObjectItemCaseSensitive(chunk, "choices");

    cJSON_ArrayForEach(ch, choices) {

        item = cJSON_GetObjectItemCaseSensitive(ch, "index");
        index = cJSON_IsNumber(item) ? (ngx_int_t) item->valuedouble : 0;

        if (index < 0 || index >= NGX_HTTP_LLM_CACHE_CHOICES) {
            a->broken = 1;
            return;
        }

        c = &a->choice[index];
        c->seen = 1;

        if ((ngx_uint_t) index >= a->n) {
            a->n = index + 1;
        }

        delta = cJSON_GetObjectItemCaseSensitive(ch, "delta");

        item = cJSON_GetObjectItemCaseSensitive(delta, "content");
        if (cJSON_IsString(item)
            && ngx_http_llm_cache_append(a, c, item->valuestring) != NGX_OK)
        {
            a->broken = 1;
            return;
        }

        item = cJSON_GetObjectItemCaseSensitive(delta, "tool_calls");
        if (cJSON_IsArray(item)) {
            ngx_http_llm_cache_merge_tools(a, c, item);
        }

        item = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
        if (cJSON_IsString(item) && c->finish == NULL) {
            c->finish = cJSON_Duplicate(item, 0);
        }
    }

    if (a->size > ctx->conf->cache_max_entry) {
        a->broken = 1;
    }
}


static ngx_int_t
ngx_http_llm_cache_append(ngx_http_llm_cache_asm_t *a,
    ngx_http_llm_cache_choice_t *ch, const char *s)
{
    size_t   len, need;

    len = ngx_strlen(s);

    if (len == 0) {
        return NGX_OK;
    }

    need = ch->len + len + 1;

    if (ngx_http_llm_grow(&ch->content, &ch->size, ch->len, need,
                          (size_t) -1)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(ch->content + ch->len, s, len);
    ch->len += len;
    ch->content[ch->len] = '\0';
    a->size += len;

    return NGX_OK;
}


/*
 * Tool calls arrive in pieces by index.  The arguments are appended to a
 * buffer of their own, doubled as it fills, and set in the call once the
 * stream is complete: a call of many deltas costs linear time.
 */

static void
ngx_http_llm_cache_merge_tools(ngx_http_llm_cache_asm_t *a,
    ngx_http_llm_cache_choice_t *ch, cJSON *calls)
{
    cJSON                      *call, *have, *item, *fn, *args, *hargs;
    size_t                      len;
    ngx_int_t                   index;
    ngx_http_llm_cache_args_t  *buf;

    if (ch->tool_calls == NULL) {
        ch->tool_calls = cJSON_CreateArray();
        ch->args = ngx_calloc(NGX_HTTP_LLM_CACHE_TOOLS
                              * sizeof(ngx_http_llm_cache_args_t),
                              ngx_cycle->log);

        if (ch->tool_calls == NULL || ch->args == NULL) {
            a->broken = 1;
            return;
        }
    }

    cJSON_ArrayForEach(call, calls) {

        item = cJSON_GetObjectItemCaseSensitive(call, "index");
        index = cJSON_IsNumber(item) ? (ngx_int_t) item->valuedouble : 0;

        if (index < 0 || index >= NGX_HTTP_LLM_CACHE_TOOLS) {
            a->broken = 1;
            return;
        }

        have = cJSON_GetArrayItem(ch->tool_calls, (int) index);

        if (have == NULL) {
            if (index != cJSON_GetArraySize(ch->tool_calls)) {
                a->broken = 1;
                return;
            }

            have = cJSON_Duplicate(call, 1);
            if (have == NULL) {
                a->broken = 1;
                return;
            }

            cJSON_DeleteItemFromObjectCaseSensitive(have, "index");
            cJSON_AddItemToArray(ch->tool_calls, have);
            a->size += NGX_HTTP_LLM_CACHE_CALL_SIZE;

            /* the first piece of the arguments, if any, stays in the call */
            continue;
        }

        fn = cJSON_GetObjectItemCaseSensitive(call, "function");
        args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        hargs = cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(have, "function"),
                    "arguments");

        if (!cJSON_IsString(args)) {
            continue;
        }

        if (!cJSON_IsString(hargs)) {
            a->broken = 1;
            return;
        }

        buf = &ch->args[index];
        len = ngx_strlen(args->valuestring);

        if (buf->data == NULL) {
            /* the first piece, from the call, starts the buffer */
            buf->len = ngx_strlen(hargs->valuestring);

            if (ngx_http_llm_grow(&buf->data, &buf->size, 0,
                                  buf->len + len + 1, (size_t) -1)
                != NGX_OK)
            {
                a->broken = 1;
                return;
            }

            ngx_memcpy(buf->data, hargs->valuestring, buf->len);

        } else if (ngx_http_llm_grow(&buf->data, &buf->size, buf->len,
                                     buf->len + len + 1, (size_t) -1)
                   != NGX_OK)
        {
            a->broken = 1;
            return;
        }

        ngx_memcpy(buf->data + buf->len, args->valuestring, len);
        buf->len += len;
        buf->data[buf->len] = '\0';

        a->size += len;
    }
}


/* the arguments of each call of a choice, put in place once */

static ngx_int_t
ngx_http_llm_cache_set_args(ngx_http_llm_cache_choice_t *ch)
{
    int     i, n;
    cJSON  *call, *args;

    n = cJSON_GetArraySize(ch->tool_calls);

    for (i = 0; i < n && i < NGX_HTTP_LLM_CACHE_TOOLS; i++) {

        if (ch->args[i].data == NULL) {
            continue;
        }

        call = cJSON_GetArrayItem(ch->tool_calls, i);
        args = cJSON_GetObjectItemCaseSensitive(
                   cJSON_GetObjectItemCaseSensitive(call, "function"),
                   "arguments");

        if (!cJSON_IsString(args)
            || cJSON_SetValuestring(args, (char *) ch->args[i].data) == NULL)
        {
            return NGX_ERROR;
        }

        ngx_free(ch->args[i].data);
        ch->args[i].data = NULL;
    }

    return NGX_OK;
}


/* the chat.completion of an assembled stream, without id and created */

cJSON *
ngx_http_llm_cache_assemble(ngx_http_llm_ctx_t *ctx)
{
    cJSON                        *doc, *choices, *ch, *msg, *usage;
    ngx_uint_t                    i;
    ngx_http_llm_cache_asm_t     *a;
    ngx_http_llm_cache_choice_t  *c;

    a = ctx->cache.assembled;

    if (a == NULL || a->broken || a->n == 0) {
        return NULL;
    }

    for (i = 0; i < a->n; i++) {
        if (!a->choice[i].seen || a->choice[i].finish == NULL) {
            /* an answer that never finished is no answer to keep */
            return NULL;
        }
    }

    doc = cJSON_CreateObject();
    if (doc == NULL) {
        return NULL;
    }

    if (a->model) {
        cJSON_AddItemToObject(doc, "model", cJSON_Duplicate(a->model, 0));
    }

    choices = cJSON_AddArrayToObject(doc, "choices");

    for (i = 0; choices && i < a->n; i++) {
        c = &a->choice[i];

        ch = cJSON_CreateObject();
        if (ch == NULL) {
            break;
        }

        cJSON_AddItemToArray(choices, ch);
        cJSON_AddNumberToObject(ch, "index", (double) i);

        msg = cJSON_AddObjectToObject(ch, "message");
        if (msg == NULL) {
            break;
        }

        cJSON_AddStringToObject(msg, "role", "assistant");

        if (c->len || c->tool_calls == NULL) {
            cJSON_AddStringToObject(msg, "content",
                                    c->content ? (char *) c->content : "");

        } else {
            cJSON_AddNullToObject(msg, "content");
        }

        if (c->tool_calls) {
            if (ngx_http_llm_cache_set_args(c) != NGX_OK) {
                cJSON_Delete(doc);
                return NULL;
            }

            cJSON_AddItemToObject(msg, "tool_calls",
                                  cJSON_Duplicate(c->tool_calls, 1));
        }

        cJSON_AddNullToObject(ch, "logprobs");
        cJSON_AddItemToObject(ch, "finish_reason",
                              cJSON_Duplicate(c->finish, 0));
    }

    if (a->usage) {
        cJSON_AddItemToObject(doc, "usage", cJSON_Duplicate(a->usage, 1));

    } else if (ctx->prompt_tokens >= 0 && ctx->completion_tokens >= 0) {
        usage = cJSON_AddObjectToObject(doc, "usage");

        if (usage) {
            cJSON_AddNumberToObject(usage, "prompt_tokens",
                                    (double) ctx->prompt_tokens);
            cJSON_AddNumberToObject(usage, "completion_tokens",
                                    (double) ctx->completion_tokens);
            cJSON_AddNumberToObject(usage, "total_tokens",
                                    (double) (ctx->prompt_tokens
                                              + ctx->completion_tokens));
        }
    }

    if (a->fingerprint) {
        cJSON_AddItemToObject(doc, "system_fingerprint",
                              cJSON_Duplicate(a->fingerprint, 0));
    }

    return doc;
}


void
ngx_http_llm_cache_asm_free(ngx_http_llm_cache_asm_t *a)
{
    ngx_uint_t  i, k;

    for (i = 0; i < NGX_HTTP_LLM_CACHE_CHOICES; i++) {
        if (a->choice[i].content) {
            ngx_free(a->choice[i].content);
        }

        if (a->choice[i].tool_calls) {
            cJSON_Delete(a->choice[i].tool_calls);
        }

        if (a->choice[i].args) {
            for (k = 0; k < NGX_HTTP_LLM_CACHE_TOOLS; k++) {
                if (a->choice[i].args[k].data) {
                    ngx_free(a->choice[i].args[k].data);
                }
            }

            ngx_free(a->choice[i].args);
        }

        if (a->choice[i].finish) {
            cJSON_Delete(a->choice[i].finish);
        }
    }

    if (a->model) {
        cJSON_Delete(a->model);
    }

    if (a->fingerprint) {
        cJSON_Delete(a->fingerprint);
    }

    if (a->usage) {
        cJSON_Delete(a->usage);
    }

    ngx_free(a);
}
