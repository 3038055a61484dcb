/*
 * Copyright (C) nginx-llm-gateway authors
 *
 * A SentencePiece (SPM) token counter on a GGUF vocabulary that counts as
 * llama.cpp's llm_tokenizer_spm tokenizes, with parse_special off and no
 * BOS.  Plain C on libc, without nginx, so that offline tools and the
 * tests link it; the caller gives the scratch memory, count allocates
 * nothing.
 */


#ifndef _NGX_HTTP_LLM_TOKENIZER_H_INCLUDED_
#define _NGX_HTTP_LLM_TOKENIZER_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>


/* the longest text counted, so that every index fits 32 bits */
#define NGX_HTTP_LLM_TOKENIZER_MAX_TEXT  (256 * 1024 * 1024)


typedef struct ngx_http_llm_tokenizer_s  ngx_http_llm_tokenizer_t;


/*
 * load reads a GGUF file (v2, v3) whose tokenizer.ggml.model is "llama";
 * parse the same from memory, name for the messages.  NULL and a message
 * that names the file in err on any error.
 */
ngx_http_llm_tokenizer_t *ngx_http_llm_tokenizer_load(const char *path,
    char *err, size_t errlen);
ngx_http_llm_tokenizer_t *ngx_http_llm_tokenizer_parse(const void *data,
    size_t size, const char *name, char *err, size_t errlen);
void ngx_http_llm_tokenizer_free(ngx_http_llm_tokenizer_t *t);

size_t ngx_http_llm_tokenizer_vocab(const ngx_http_llm_tokenizer_t *t);
size_t ngx_http_llm_tokenizer_max_token(const ngx_http_llm_tokenizer_t *t);
int32_t ngx_http_llm_tokenizer_bos(const ngx_http_llm_tokenizer_t *t);
int ngx_http_llm_tokenizer_add_bos(const ngx_http_llm_tokenizer_t *t);
const char *ngx_http_llm_tokenizer_text(const ngx_http_llm_tokenizer_t *t,
    int32_t id, size_t *len);
int32_t ngx_http_llm_tokenizer_byte(const ngx_http_llm_tokenizer_t *t,
    unsigned char byte);

/*
 * count: the tokens of text, or -1: a scratch smaller than scratch() asks
 * for (some 63 bytes a byte of text), a text over the maximum, or a byte
 * that falls back to no token (llama.cpp throws).  encode also writes the
 * first max_ids ids.  bounds: lo <= count <= hi, in one pass, no merges.
 */
size_t ngx_http_llm_tokenizer_scratch(const ngx_http_llm_tokenizer_t *t,
    size_t len);
ssize_t ngx_http_llm_tokenizer_count(const ngx_http_llm_tokenizer_t *t,
    const unsigned char *text, size_t len, void *scratch,
    size_t scratch_size);
ssize_t ngx_http_llm_tokenizer_encode(const ngx_http_llm_tokenizer_t *t,
    const unsigned char *text, size_t len, int32_t *ids, size_t max_ids,
    void *scratch, size_t scratch_size);
void ngx_http_llm_tokenizer_bounds(const ngx_http_llm_tokenizer_t *t,
    const unsigned char *text, size_t len, size_t *lo, size_t *hi);


#endif /* _NGX_HTTP_LLM_TOKENIZER_H_INCLUDED_ */
