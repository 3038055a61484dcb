
/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * A small per-worker copy of hot cache entries in front of Redis
 * (llm_cache_local): a hash table with LRU eviction under a byte budget and
 * a short lifetime.  Entries never change for a key, so the copy can only
 * outlive an entry deleted or expired in Redis, by at most its lifetime.
 */


#include "ngx_http_llm.h"
#include "ngx_http_llm_cache_local.h"


#define NGX_HTTP_LLM_LOCAL_BUCKETS  4096     /* a power of two */


typedef struct ngx_http_llm_local_s  ngx_http_llm_local_t;

struct ngx_http_llm_local_s {
    ngx_http_llm_local_t       *next;       /* in the bucket */
    ngx_queue_t                 lru;
    ngx_msec_t                  expires;
    uint32_t                    hash;
    size_t                      key_len;
    size_t                      len;
    u_char                      data[1];    /* key, then the entry */
};


static void ngx_http_llm_cache_local_remove(ngx_http_llm_local_t *e);
static ngx_http_llm_local_t **ngx_http_llm_cache_local_find(ngx_str_t *key,
    uint32_t hash);


static ngx_http_llm_local_t  **ngx_http_llm_local_buckets;
static ngx_queue_t             ngx_http_llm_local_lru;
static size_t                  ngx_http_llm_local_size;
static size_t                  ngx_http_llm_local_max;
static ngx_msec_t              ngx_http_llm_local_ttl;


void
ngx_http_llm_cache_local_init(size_t max, ngx_msec_t ttl)
{
    if (max == 0 || ttl == 0) {
        return;
    }

    ngx_http_llm_local_buckets = ngx_calloc(NGX_HTTP_LLM_LOCAL_BUCKETS
                                            * sizeof(ngx_http_llm_local_t *),
                                            ngx_cycle->log);
    if (ngx_http_llm_local_buckets == NULL) {
        return;
    }

    ngx_queue_init(&ngx_http_llm_local_lru);
    ngx_http_llm_local_max = max;
    ngx_http_llm_local_ttl = ttl;
    ngx_http_llm_local_size = 0;
}


void
ngx_http_llm_cache_local_exit(void)
{
    ngx_queue_t           *q;
    ngx_http_llm_local_t  *e;

    if (ngx_http_llm_local_buckets == NULL) {
        return;
    }

    while (!ngx_queue_empty(&ngx_http_llm_local_lru)) {
        q = ngx_queue_head(&ngx_http_llm_local_lru);
        e = ngx_queue_data(q, ngx_http_llm_local_t, lru);
        ngx_http_llm_cache_local_remove(e);
    }

    ngx_free(ngx_http_llm_local_buckets);
    ngx_http_llm_local_buckets = NULL;
}


/* the entry, valid until the worker next stores one; NULL: not here */

u_char *
ngx_http_llm_cache_local_get(ngx_str_t *key, size_t *len)
{
    uint32_t                hash;
    ngx_http_llm_local_t   *e, **pe;

    if (ngx_http_llm_local_buckets == NULL) {
        return NULL;
    }

    hash = ngx_murmur_hash2(key->data, key->len);

    pe = ngx_http_llm_cache_local_find(key, hash);
    e = *pe;

    if (e == NULL) {
        return NULL;
    }

    if ((ngx_msec_int_t) (e->expires - ngx_current_msec) <= 0) {
        ngx_http_llm_cache_local_remove(e);
        return NULL;
    }

    ngx_queue_remove(&e->lru);
    ngx_queue_insert_head(&ngx_http_llm_local_lru, &e->lru);

    *len = e->len;

    return e->data + e->key_len;
}


/* ttl: how long the entry has left in Redis, when known; 0: unknown */

void
ngx_http_llm_cache_local_put(ngx_str_t *key, u_char *data, size_t len,
    ngx_msec_t ttl)
{
    size_t                  size;
    uint32_t                hash;
    ngx_queue_t            *q;
    ngx_http_llm_local_t   *e, **pe;

    if (ngx_http_llm_local_buckets == NULL) {
        return;
    }

    size = offsetof(ngx_http_llm_local_t, data) + key->len + len;

    /* one entry may not push out the whole table */

    if (size > ngx_http_llm_local_max / 8) {
        return;
    }

    hash = ngx_murmur_hash2(key->data, key->len);

    pe = ngx_http_llm_cache_local_find(key, hash);

    if (*pe) {
        ngx_http_llm_cache_local_remove(*pe);
    }

    while (ngx_http_llm_local_size + size > ngx_http_llm_local_max
           && !ngx_queue_empty(&ngx_http_llm_local_lru))
    {
        q = ngx_queue_last(&ngx_http_llm_local_lru);
        e = ngx_queue_data(q, ngx_http_llm_local_t, lru);
        ngx_http_llm_cache_local_remove(e);
    }

    e = ngx_alloc(size, ngx_cycle->log);
    if (e == NULL) {
        return;
    }

    if (ttl == 0 || ttl > ngx_http_llm_local_ttl) {
        ttl = ngx_http_llm_local_ttl;
    }

    e->expires = ngx_current_msec + ttl;
    e->hash = hash;
    e->key_len = key->len;
    e->len = len;
    ngx_memcpy(e->data, key->data, key->len);
    ngx_memcpy(e->data + key->len, data, len);

    pe = &ngx_http_llm_local_buckets[hash & (NGX_HTTP_LLM_LOCAL_BUCKETS - 1)];
    e->next = *pe;
    *pe = e;

    ngx_queue_insert_head(&ngx_http_llm_local_lru, &e->lru);
    ngx_http_llm_local_size += size;
}


static ngx_http_llm_local_t **
ngx_http_llm_cache_local_find(ngx_str_t *key, uint32_t hash)
{
    ngx_http_llm_local_t  *e, **pe;

    pe = &ngx_http_llm_local_buckets[hash & (NGX_HTTP_LLM_LOCAL_BUCKETS - 1)];

    for (e = *pe; e; pe = &e->next, e = e->next) {
        if (e->hash == hash
            && e->key_len == key->len
            && ngx_memcmp(e->data, key->data, key->len) == 0)
        {
            break;
        }
    }

    return pe;
}


static void
ngx_http_llm_cache_local_remove(ngx_http_llm_local_t *e)
{
    ngx_http_llm_local_t  **pe;

    pe = &ngx_http_llm_local_buckets[e->hash
                                     & (NGX_HTTP_LLM_LOCAL_BUCKETS - 1)];

    while (*pe != e) {
        pe = &(*pe)->next;
    }

    *pe = e->next;

    ngx_queue_remove(&e->lru);
    ngx_http_llm_local_size -= offsetof(ngx_http_llm_local_t, data)
                               + e->key_len + e->len;

    ngx_free(e);
}
