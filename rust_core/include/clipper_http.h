/* The C interface of rust_core's HTTP/1.1 request parser (rust_core/src/http.rs), which the Cython
 * protocol (_core/protocol.pxi) calls with no Python object in between. The compiled module
 * clipper.rust_core exports one `clipper_http_api` in the capsule `clipper.rust_core.http_api`.
 * rust_core/src/http_capi.rs must match these layouts; _core checks `request_size` at import. */
#ifndef CLIPPER_HTTP_H
#define CLIPPER_HTTP_H

#include <stddef.h>
#include <stdint.h>

/* Bytes owned by the parser; `ptr` is NULL for an absent header. */
typedef struct {
    const char *ptr;
    size_t len;
} clipper_span;

typedef struct {
    clipper_span method, target, authorization, accept, request_id, body;
    uint8_t keep_alive, http11, too_large;
} clipper_request;

typedef struct clipper_http_parser clipper_http_parser;

enum {
    CLIPPER_HTTP_NEED_MORE = 0, /* feed more bytes */
    CLIPPER_HTTP_CONTINUE = 1,  /* the client waits for "100 Continue" before its body */
    CLIPPER_HTTP_REQUEST = 2,   /* `out` holds a complete request */
    CLIPPER_HTTP_ERROR = 3      /* answer `*status` with the message in out->body, then close */
};

typedef struct {
    size_t request_size; /* sizeof(clipper_request) */
    clipper_http_parser *(*parser_new)(size_t max_head_bytes, size_t max_body_bytes);
    void (*parser_free)(clipper_http_parser *parser);
    void (*feed)(clipper_http_parser *parser, const char *data, size_t len);
    /* The next event. The spans in `out` stay valid until the next call on this parser. */
    int (*next)(clipper_http_parser *parser, clipper_request *out, uint16_t *status);
} clipper_http_api;

#endif
