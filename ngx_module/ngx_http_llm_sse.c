
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * Incremental text/event-stream parser: bytes arrive in arbitrary pieces,
 * complete events leave as the joined value of their "data:" lines, and
 * comment lines as they are, to a handler of their own.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_sse.h"
#include "ngx_http_llm_util.h"


static ngx_int_t ngx_http_llm_sse_line(ngx_http_llm_sse_t *sse, u_char *p,
    size_t len, ngx_http_llm_sse_event_pt handler, void *data);
static ngx_int_t ngx_http_llm_sse_append(u_char **buf, size_t *used,
    size_t *size, u_char *p, size_t len);


ngx_int_t
ngx_http_llm_sse_feed(ngx_http_llm_sse_t *sse, u_char *p, size_t len,
    ngx_http_llm_sse_event_pt handler, void *data)
{
    u_char     *eol, *last;
    ngx_int_t   rc;

    last = p + len;

    /* a CR that ended the last piece and an LF that starts this are one */

    if (sse->cr && p < last) {
        sse->cr = 0;

        if (*p == '\n') {
            p++;
        }
    }

    while (p < last) {

        /* a line ends in CRLF, LF or CR */

        for (eol = p; eol < last && *eol != '\n' && *eol != '\r'; eol++) {
            /* void */
        }

        if (eol == last) {
            return ngx_http_llm_sse_append(&sse->line, &sse->line_len,
                                           &sse->line_size, p, last - p);
        }

        if (sse->line_len) {
            /* the line began in an earlier piece */

            if (ngx_http_llm_sse_append(&sse->line, &sse->line_len,
                                        &sse->line_size, p, eol - p)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            rc = ngx_http_llm_sse_line(sse, sse->line, sse->line_len,
                                       handler, data);
            sse->line_len = 0;

        } else {
            rc = ngx_http_llm_sse_line(sse, p, eol - p, handler, data);
        }

        if (rc != NGX_OK) {
            return rc;
        }

        if (*eol == '\r') {
            if (eol + 1 == last) {
                sse->cr = 1;

            } else if (eol[1] == '\n') {
                eol++;
            }
        }

        p = eol + 1;
    }

    return NGX_OK;
}


/* the stream ended: a last event without its blank line still counts */

ngx_int_t
ngx_http_llm_sse_finish(ngx_http_llm_sse_t *sse,
    ngx_http_llm_sse_event_pt handler, void *data)
{
    ngx_int_t  rc;

    if (sse->line_len) {
        rc = ngx_http_llm_sse_line(sse, sse->line, sse->line_len, handler,
                                   data);
        sse->line_len = 0;

        if (rc != NGX_OK) {
            return rc;
        }
    }

    return ngx_http_llm_sse_line(sse, NULL, 0, handler, data);
}


void
ngx_http_llm_sse_free(ngx_http_llm_sse_t *sse)
{
    if (sse->line) {
        ngx_free(sse->line);
    }

    if (sse->data) {
        ngx_free(sse->data);
    }

    ngx_memzero(sse, sizeof(ngx_http_llm_sse_t));
}


static ngx_int_t
ngx_http_llm_sse_line(ngx_http_llm_sse_t *sse, u_char *p, size_t len,
    ngx_http_llm_sse_event_pt handler, void *data)
{
    ngx_int_t  rc;

    if (len == 0) {
        if (!sse->has_data) {
            return NGX_OK;
        }

        sse->has_data = 0;
        /* an event of empty "data:" lines has no buffer yet */
        rc = handler(data, sse->data_len ? sse->data : (u_char *) "",
                     sse->data_len);
        sse->data_len = 0;

        return rc;
    }

    if (*p == ':') {
        /* a comment: keep-alives, which a client may need, go on */
        return sse->comment ? sse->comment(data, p, len) : NGX_OK;
    }

    if (len < 5 || ngx_strncmp(p, "data:", 5) != 0) {
        /* "event:", "id:" and "retry:" carry nothing we use */
        return NGX_OK;
    }

    p += 5;
    len -= 5;

    if (len && *p == ' ') {
        p++;
        len--;
    }

    if (sse->has_data) {
        if (ngx_http_llm_sse_append(&sse->data, &sse->data_len,
                                    &sse->data_size, (u_char *) "\n", 1)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    sse->has_data = 1;

    return ngx_http_llm_sse_append(&sse->data, &sse->data_len,
                                   &sse->data_size, p, len);
}


static ngx_int_t
ngx_http_llm_sse_append(u_char **buf, size_t *used, size_t *size, u_char *p,
    size_t len)
{
    size_t  need;

    need = *used + len;

    if (need > NGX_HTTP_LLM_MAX_EVENT) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "llm: upstream event larger than %uz bytes",
                      (size_t) NGX_HTTP_LLM_MAX_EVENT);
        return NGX_ERROR;
    }

    if (ngx_http_llm_grow(buf, size, *used, need, NGX_HTTP_LLM_MAX_EVENT)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (len) {
        ngx_memcpy(*buf + *used, p, len);
        *used += len;
    }

    return NGX_OK;
}
