
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * libcurl's multi-socket interface driven by nginx events: one multi
 * handle per worker, each curl socket wrapped in an nginx connection for
 * its events only (curl owns and closes the fd), one nginx timer.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_curl.h"
#include "ngx_http_llm_util.h"


static int ngx_http_llm_curl_socket(CURL *easy, curl_socket_t s, int what,
    void *userp, void *socketp);
static int ngx_http_llm_curl_timer(CURLM *multi, long timeout_ms,
    void *userp);
static void ngx_http_llm_curl_event_handler(ngx_event_t *ev);
static void ngx_http_llm_curl_timer_handler(ngx_event_t *ev);


#define NGX_HTTP_LLM_EASY_POOL  256


static CURLM        *ngx_http_llm_multi;
static CURL         *ngx_http_llm_easy_pool[NGX_HTTP_LLM_EASY_POOL];
static ngx_uint_t    ngx_http_llm_easy_free;
static ngx_event_t   ngx_http_llm_curl_timer_event;
static ngx_log_t    *ngx_http_llm_curl_log;


ngx_int_t
ngx_http_llm_curl_init(ngx_cycle_t *cycle, ngx_uint_t keepalive)
{
    curl_version_info_data  *info;

    info = curl_version_info(CURLVERSION_NOW);

    if (!(info->features & CURL_VERSION_ASYNCHDNS)) {
        /* a blocking resolver would stall the worker on every lookup */
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "llm: libcurl %s has no asynchronous resolver, "
                      "use IP addresses in backend URLs", info->version);
    }

    ngx_http_llm_multi = curl_multi_init();
    if (ngx_http_llm_multi == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "llm: curl_multi_init() failed");
        return NGX_ERROR;
    }

    ngx_http_llm_curl_log = cycle->log;

    curl_multi_setopt(ngx_http_llm_multi, CURLMOPT_SOCKETFUNCTION,
                      ngx_http_llm_curl_socket);
    curl_multi_setopt(ngx_http_llm_multi, CURLMOPT_TIMERFUNCTION,
                      ngx_http_llm_curl_timer);
    curl_multi_setopt(ngx_http_llm_multi, CURLMOPT_MAXCONNECTS,
                      (long) keepalive);

    ngx_http_llm_curl_timer_event.handler = ngx_http_llm_curl_timer_handler;
    ngx_http_llm_curl_timer_event.log = cycle->log;
    ngx_http_llm_curl_timer_event.data = &ngx_http_llm_timer_conn;

    /* idle keepalive connections must not delay a graceful shutdown */
    ngx_http_llm_curl_timer_event.cancelable = 1;

    return NGX_OK;
}


void
ngx_http_llm_curl_exit(ngx_cycle_t *cycle)
{
    ngx_uint_t         i;
    ngx_connection_t  *c;

    if (ngx_http_llm_multi == NULL) {
        return;
    }

    if (ngx_http_llm_curl_timer_event.timer_set) {
        ngx_del_timer(&ngx_http_llm_curl_timer_event);
    }

    while (ngx_http_llm_easy_free) {
        curl_easy_cleanup(ngx_http_llm_easy_pool[--ngx_http_llm_easy_free]);
    }

    curl_multi_cleanup(ngx_http_llm_multi);
    ngx_http_llm_multi = NULL;

    /*
     * curl may close cached sockets without a CURL_POLL_REMOVE during
     * cleanup; release whatever wrappers are left so that nginx does not
     * report them as leaked
     */

    c = cycle->connections;

    for (i = 0; i < cycle->connection_n; i++) {
        if (c[i].fd != (ngx_socket_t) -1
            && c[i].read
            && c[i].read->handler == ngx_http_llm_curl_event_handler)
        {
            c[i].read->active = 0;
            c[i].write->active = 0;
            ngx_http_llm_release_connection(&c[i]);
        }
    }
}


/* easy handles are reused: creating one costs dozens of allocations */

CURL *
ngx_http_llm_curl_get(void)
{
    if (ngx_http_llm_easy_free) {
        return ngx_http_llm_easy_pool[--ngx_http_llm_easy_free];
    }

    return curl_easy_init();
}


void
ngx_http_llm_curl_put(CURL *easy)
{
    if (ngx_http_llm_multi) {
        curl_multi_remove_handle(ngx_http_llm_multi, easy);
    }

    if (ngx_http_llm_multi == NULL
        || ngx_http_llm_easy_free == NGX_HTTP_LLM_EASY_POOL)
    {
        curl_easy_cleanup(easy);
        return;
    }

    curl_easy_reset(easy);
    ngx_http_llm_easy_pool[ngx_http_llm_easy_free++] = easy;
}


/*
 * done, the caller's, is told of the end of the transfer, once, unless
 * the handle goes back to ngx_http_llm_curl_put() first; it must live
 * until then
 */

ngx_int_t
ngx_http_llm_curl_add(CURL *easy, ngx_http_llm_curl_done_t *done)
{
    CURLMcode  mc;

    curl_easy_setopt(easy, CURLOPT_PRIVATE, done);

    mc = curl_multi_add_handle(ngx_http_llm_multi, easy);

    if (mc != CURLM_OK) {
        ngx_log_error(NGX_LOG_ALERT, ngx_http_llm_curl_log, 0,
                      "llm: curl_multi_add_handle() failed: %s",
                      curl_multi_strerror(mc));
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* hand finished transfers to their owners */

void
ngx_http_llm_curl_process(void)
{
    int                        left;
    CURL                      *easy;
    CURLcode                   rc;
    CURLMsg                   *msg;
    ngx_http_llm_curl_done_t  *done;

    for ( ;; ) {
        msg = curl_multi_info_read(ngx_http_llm_multi, &left);
        if (msg == NULL) {
            return;
        }

        if (msg->msg != CURLMSG_DONE) {
            continue;
        }

        easy = msg->easy_handle;
        rc = msg->data.result;
        done = NULL;

        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &done);

        if (done == NULL) {
            curl_multi_remove_handle(ngx_http_llm_multi, easy);
            curl_easy_cleanup(easy);
            continue;
        }

        done->handler(done->data, rc);
    }
}


static int
ngx_http_llm_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp,
    void *socketp)
{
    ngx_event_t       *rev, *wev;
    ngx_connection_t  *c;

    c = socketp;

    if (what == CURL_POLL_REMOVE) {
        if (c) {
            /*
             * curl 7.88 to 8.1 close a socket that never connected (a
             * connect timeout) before they say so: epoll dropped it
             */
            if (fcntl(s, F_GETFD) == -1 && ngx_errno == NGX_EBADF) {
                c->read->active = 0;
                c->write->active = 0;
            }

            ngx_http_llm_release_connection(c);
            curl_multi_assign(ngx_http_llm_multi, s, NULL);
        }

        return 0;
    }

    if (c == NULL) {
        c = ngx_get_connection(s, ngx_http_llm_curl_log);
        if (c == NULL) {
            return -1;
        }

        rev = c->read;
        wev = c->write;

        rev->handler = ngx_http_llm_curl_event_handler;
        wev->handler = ngx_http_llm_curl_event_handler;
        rev->log = ngx_http_llm_curl_log;
        wev->log = ngx_http_llm_curl_log;
        c->log = ngx_http_llm_curl_log;

        curl_multi_assign(ngx_http_llm_multi, s, c);
    }

    rev = c->read;
    wev = c->write;

    /*
     * level-triggered: curl reads at most one buffer per call and may
     * leave data in the socket, which an edge-triggered event would
     * never report again
     */

    if (what & CURL_POLL_IN) {
        if (!rev->active
            && ngx_add_event(rev, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK)
        {
            return -1;
        }

    } else if (rev->active) {
        if (ngx_del_event(rev, NGX_READ_EVENT, 0) != NGX_OK) {
            return -1;
        }
    }

    if (what & CURL_POLL_OUT) {
        if (!wev->active
            && ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT) != NGX_OK)
        {
            return -1;
        }

    } else if (wev->active) {
        if (ngx_del_event(wev, NGX_WRITE_EVENT, 0) != NGX_OK) {
            return -1;
        }
    }

    return 0;
}


static int
ngx_http_llm_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    ngx_event_t  *ev;

    ev = &ngx_http_llm_curl_timer_event;

    /* ngx_add_timer() keeps a timer that is "close enough"; curl is exact */

    if (ev->timer_set) {
        ngx_del_timer(ev);
    }

    if (timeout_ms >= 0) {
        ngx_add_timer(ev, (ngx_msec_t) timeout_ms);
    }

    return 0;
}


static void
ngx_http_llm_curl_event_handler(ngx_event_t *ev)
{
    int                running;
    ngx_socket_t       fd;
    ngx_connection_t  *c;

    c = ev->data;
    fd = c->fd;

    /* c may be released inside, by CURL_POLL_REMOVE */

    curl_multi_socket_action(ngx_http_llm_multi, fd,
                             ev->write ? CURL_CSELECT_OUT : CURL_CSELECT_IN,
                             &running);

    ngx_http_llm_curl_process();
}


static void
ngx_http_llm_curl_timer_handler(ngx_event_t *ev)
{
    int  running;

    curl_multi_socket_action(ngx_http_llm_multi, CURL_SOCKET_TIMEOUT, 0,
                             &running);

    ngx_http_llm_curl_process();
}

