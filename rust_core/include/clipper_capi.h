/* The C interface of rust_core that the Cython protocol (_core/protocol.pxi) calls with no Python
 * object in between: the HTTP/1.1 request parser (rust_core/src/http.rs) and the submission of
 * simple predict bodies (rust_core/src/simple_input.rs). The compiled module clipper.rust_core
 * exports one `clipper_capi` in the capsule `clipper.rust_core.c_api`. rust_core/src/capi.rs must
 * match these layouts (its tests check the offsets); _core checks both sizes at import.
 * Every function takes NULL pointers with the defined, harmless result stated at its field. */
#ifndef CLIPPER_CAPI_H
#define CLIPPER_CAPI_H

#include <Python.h>

#include <stddef.h>
#include <stdint.h>

/* Bytes owned by the parser; `ptr` is NULL for an absent header. */
typedef struct {
    const char *ptr;
    size_t len;
} clipper_span;

typedef struct {
    clipper_span method, target, authorization, accept, request_id, body;
    uint8_t keep_alive, too_large;
} clipper_request;

typedef struct clipper_http_parser clipper_http_parser;

enum {
    CLIPPER_HTTP_NEED_MORE = 0, /* feed more bytes */
    CLIPPER_HTTP_CONTINUE = 1,  /* the client waits for "100 Continue" before its body */
    CLIPPER_HTTP_REQUEST = 2,   /* `out` holds a complete request */
    CLIPPER_HTTP_ERROR = 3      /* answer `*status` with the message in out->body, then close */
};

typedef struct {
    size_t api_size;     /* sizeof(clipper_capi) */
    size_t request_size; /* sizeof(clipper_request) */
    /* A new parser (never NULL); free it with parser_free. */
    clipper_http_parser *(*parser_new)(size_t max_head_bytes, size_t max_body_bytes);
    /* Frees a parser; NULL does nothing. */
    void (*parser_free)(clipper_http_parser *parser);
    /* Gives the parser `len` more bytes; a NULL parser or NULL data does nothing. */
    void (*feed)(clipper_http_parser *parser, const char *data, size_t len);
    /* The next event. The spans in `out` stay valid until the next call on this parser.
     * NULL `out` or `status`: -1, nothing written (and no event consumed). A NULL parser:
     * CLIPPER_HTTP_ERROR with *status 500, a message in out->body and the other spans empty. */
    int (*next)(clipper_http_parser *parser, clipper_request *out, uint16_t *status);
    /* For a body that is exactly {"input": [numbers]} of a numeric input type: 1 and a new reference
     * in *hit for a cache hit, 0 when submitted under `token`; -1, with nothing done, for any other
     * body (the caller validates it in full), an `engine` that is not a clipper.rust_core.Engine, or a
     * NULL `engine`, `body` or `hit`. Called with the GIL held. */
    int (*submit_simple)(PyObject *engine, const char *body, size_t len, uint32_t input_type, uint32_t model,
                         uint64_t slo_micros, uint64_t token, PyObject **hit);
} clipper_capi;

#endif
