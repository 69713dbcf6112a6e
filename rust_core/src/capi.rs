//! The C interface the Cython protocol calls with no Python object in between: the HTTP parser
//! ([`crate::http`]) and the submission of simple predict bodies ([`crate::simple_input`]).
//! `rust_core/include/clipper_capi.h` declares these layouts; the Python module builds its
//! [`CApi`] with [`CApi::new`] and exports it in a capsule.
//!
//! This module knows nothing of Python: the engine object of `submit_simple` is an opaque
//! [`PyObject`] here, and the function that turns it into the engine (`crate::python`) is passed in.
//! Every entry point accepts NULL pointers with a defined, harmless result (see the header).

use crate::http::{Event, RequestParser};
use crate::rpc::InputType;
use crate::simple_input::encode_simple_input;

/// The values `next` returns (`CLIPPER_HTTP_*` in the header).
pub const HTTP_NEED_MORE: i32 = 0;
pub const HTTP_CONTINUE: i32 = 1;
pub const HTTP_REQUEST: i32 = 2;
pub const HTTP_ERROR: i32 = 3;
/// What `next` returns when `out` or `status` is NULL: nothing read, nothing written.
pub const HTTP_NULL_ARGUMENT: i32 = -1;
/// The status `next` reports for a NULL parser.
pub const NO_PARSER_STATUS: u16 = 500;
const NO_PARSER_MESSAGE: &str = "no HTTP parser (NULL)";

/// `PyObject` of the C API, opaque here: only `crate::python` looks inside.
#[repr(C)]
pub struct PyObject {
    _opaque: [u8; 0],
}

/// `submit_simple` of the header. The Python layer implements it (it needs the engine object).
pub type SubmitSimple =
    unsafe extern "C" fn(*mut PyObject, *const u8, usize, u32, u32, u64, u64, *mut *mut PyObject) -> i32;

#[repr(C)]
pub struct Span {
    ptr: *const u8,
    len: usize,
}

impl Span {
    const EMPTY: Span = Span { ptr: std::ptr::null(), len: 0 };

    fn of(bytes: &[u8]) -> Span {
        Span { ptr: bytes.as_ptr(), len: bytes.len() }
    }

    fn of_option(bytes: &Option<Vec<u8>>) -> Span {
        bytes.as_deref().map_or(Span::EMPTY, Span::of)
    }
}

#[repr(C)]
pub struct CRequest {
    method: Span,
    target: Span,
    authorization: Span,
    accept: Span,
    request_id: Span,
    body: Span,
    keep_alive: u8,
    too_large: u8,
}

/// A parser and the message of its error, which must outlive the call that reported it.
pub struct CParser {
    parser: RequestParser,
    error: String,
}

#[repr(C)]
pub struct CApi {
    api_size: usize,
    request_size: usize,
    parser_new: extern "C" fn(usize, usize) -> *mut CParser,
    parser_free: unsafe extern "C" fn(*mut CParser),
    feed: unsafe extern "C" fn(*mut CParser, *const u8, usize),
    next: unsafe extern "C" fn(*mut CParser, *mut CRequest, *mut u16) -> i32,
    submit_simple: SubmitSimple,
}

impl CApi {
    /// The table of the header, with the HTTP parser of this module and the given `submit_simple`.
    pub const fn new(submit_simple: SubmitSimple) -> CApi {
        CApi {
            api_size: std::mem::size_of::<CApi>(),
            request_size: std::mem::size_of::<CRequest>(),
            parser_new,
            parser_free,
            feed,
            next,
            submit_simple,
        }
    }
}

extern "C" fn parser_new(max_head: usize, max_body: usize) -> *mut CParser {
    Box::into_raw(Box::new(CParser { parser: RequestParser::new(max_head, max_body), error: String::new() }))
}

/// Frees a parser; NULL is ignored.
///
/// # Safety
/// `parser` is NULL, or comes from `parser_new`, was not freed and is not used afterwards.
unsafe extern "C" fn parser_free(parser: *mut CParser) {
    if !parser.is_null() {
        // SAFETY: a non-NULL `parser` is the Box that `parser_new` leaked, freed once (the caller's
        // contract).
        drop(unsafe { Box::from_raw(parser) });
    }
}

/// Gives the parser `len` more bytes; a NULL parser, or NULL data, does nothing.
///
/// # Safety
/// `parser` is NULL or live (from `parser_new`, not freed, not used by another thread meanwhile);
/// `data` is NULL or points to `len` readable bytes.
unsafe extern "C" fn feed(parser: *mut CParser, data: *const u8, len: usize) {
    if parser.is_null() || data.is_null() || len == 0 {
        return;
    }
    // SAFETY: `parser` is live and not aliased during the call, `data` points to `len` readable
    // bytes (the caller's contract; both checked non-NULL above).
    let (parser, data) = unsafe { (&mut *parser, std::slice::from_raw_parts(data, len)) };
    parser.parser.feed(data);
}

/// The next event. NULL `out` or `status`: [`HTTP_NULL_ARGUMENT`], nothing read or written. A NULL
/// parser: [`HTTP_ERROR`] with [`NO_PARSER_STATUS`] and a message in `out.body` (the other spans
/// empty), so that a caller answers and closes as for any error.
///
/// # Safety
/// `parser` is NULL or live (as for `feed`); `out` and `status` are NULL or writable.
unsafe extern "C" fn next(parser: *mut CParser, out: *mut CRequest, status: *mut u16) -> i32 {
    if out.is_null() || status.is_null() {
        return HTTP_NULL_ARGUMENT;
    }
    // SAFETY: `out` and `status` are writable (the caller's contract, non-NULL checked above).
    let (out, status) = unsafe { (&mut *out, &mut *status) };
    if parser.is_null() {
        *status = NO_PARSER_STATUS;
        *out = CRequest {
            method: Span::EMPTY,
            target: Span::EMPTY,
            authorization: Span::EMPTY,
            accept: Span::EMPTY,
            request_id: Span::EMPTY,
            body: Span::of(NO_PARSER_MESSAGE.as_bytes()),
            keep_alive: 0,
            too_large: 0,
        };
        return HTTP_ERROR;
    }
    // SAFETY: a non-NULL `parser` is live and not aliased during the call (the caller's contract).
    let p = unsafe { &mut *parser };
    match p.parser.next_event() {
        Event::NeedMore => HTTP_NEED_MORE,
        Event::Continue => HTTP_CONTINUE,
        Event::Request => {
            let r = p.parser.request();
            *out = CRequest {
                method: Span::of(&r.method),
                target: Span::of(&r.target),
                authorization: Span::of_option(&r.authorization),
                accept: Span::of_option(&r.accept),
                request_id: Span::of_option(&r.request_id),
                body: Span::of(&r.body),
                keep_alive: r.keep_alive.into(),
                too_large: r.too_large.into(),
            };
            HTTP_REQUEST
        }
        Event::Error(code, message) => {
            p.error = message;
            *status = code;
            out.body = Span::of(p.error.as_bytes());
            HTTP_ERROR
        }
    }
}

/// The first half of `submit_simple`: the input type of `input_type_code` and the element bytes of
/// `body` when it is exactly `{"input": [numbers]}` of that (numeric) type; None for anything else,
/// a NULL `body` included.
///
/// # Safety
/// `body` is NULL or points to `len` readable bytes.
pub unsafe fn simple_input(body: *const u8, len: usize, input_type_code: u32) -> Option<(InputType, Vec<u8>)> {
    if body.is_null() {
        return None;
    }
    let input_type = InputType::from_code(input_type_code)?;
    // SAFETY: `body` points to `len` readable bytes (the caller's contract, non-NULL checked above).
    let body = unsafe { std::slice::from_raw_parts(body, len) };
    Some((input_type, encode_simple_input(body, input_type)?))
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of, MaybeUninit};
    use std::ptr::null_mut;

    use super::*;

    unsafe extern "C" fn never(
        _: *mut PyObject,
        _: *const u8,
        _: usize,
        _: u32,
        _: u32,
        _: u64,
        _: u64,
        _: *mut *mut PyObject,
    ) -> i32 {
        -1
    }

    static API: CApi = CApi::new(never);

    fn span(s: &Span) -> &[u8] {
        // SAFETY: spans of a request stay valid until the next call on its parser; tests read them
        // before that.
        unsafe { std::slice::from_raw_parts(s.ptr, s.len) }
    }

    /// The layouts of the header, field by field (x86-64 and other LP64 targets).
    #[test]
    fn layouts_match_the_header() {
        let word = size_of::<usize>();
        assert_eq!(size_of::<Span>(), 2 * word);
        assert_eq!(offset_of!(CRequest, body), 5 * 2 * word);
        assert_eq!(offset_of!(CRequest, keep_alive), 6 * 2 * word);
        assert_eq!(offset_of!(CRequest, too_large), 6 * 2 * word + 1);
        assert_eq!(size_of::<CRequest>(), 6 * 2 * word + word, "two bytes, padded to a word");
        assert_eq!(offset_of!(CApi, parser_new), 2 * word);
        assert_eq!(offset_of!(CApi, submit_simple), 6 * word);
        assert_eq!(size_of::<CApi>(), 7 * word);
        assert_eq!((API.api_size, API.request_size), (size_of::<CApi>(), size_of::<CRequest>()));
    }

    #[test]
    fn a_request_goes_through_the_c_functions() {
        let parser = (API.parser_new)(1024, 1024);
        let mut out = MaybeUninit::<CRequest>::zeroed();
        let mut status = 0u16;
        let head = b"POST /m/predict HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        // SAFETY: `parser` is live, `head` readable, `out` and `status` writable.
        let (first, event) = unsafe {
            (API.feed)(parser, head.as_ptr(), 10);
            let first = (API.next)(parser, out.as_mut_ptr(), &mut status);
            (API.feed)(parser, head[10..].as_ptr(), head.len() - 10);
            (first, (API.next)(parser, out.as_mut_ptr(), &mut status))
        };
        assert_eq!((first, event), (HTTP_NEED_MORE, HTTP_REQUEST));
        // SAFETY: `next` wrote the whole request.
        let request = unsafe { out.assume_init_ref() };
        assert_eq!(span(&request.method), b"POST");
        assert_eq!(span(&request.target), b"/m/predict");
        assert_eq!(span(&request.body), b"{}");
        assert!(request.accept.ptr.is_null());
        assert_eq!((request.keep_alive, request.too_large), (1, 0));
        // SAFETY: `parser` is live and not used afterwards.
        unsafe { (API.parser_free)(parser) };
    }

    #[test]
    fn an_error_carries_its_status_and_message() {
        let parser = (API.parser_new)(1024, 1024);
        let mut out = MaybeUninit::<CRequest>::zeroed();
        let mut status = 0u16;
        // SAFETY: `parser` is live, the bytes readable, `out` and `status` writable.
        let event = unsafe {
            (API.feed)(parser, b"\x01\x02\r\n\r\n".as_ptr(), 6);
            (API.next)(parser, out.as_mut_ptr(), &mut status)
        };
        assert_eq!((event, status), (HTTP_ERROR, 400));
        // SAFETY: `next` wrote the body span of the error; the parser is still live.
        assert!(!span(unsafe { &out.assume_init_ref().body }).is_empty());
        // SAFETY: `parser` is live and not used afterwards.
        unsafe { (API.parser_free)(parser) };
    }

    #[test]
    fn null_pointers_are_harmless() {
        let mut out = MaybeUninit::<CRequest>::zeroed();
        let mut status = 0u16;
        // SAFETY: every pointer is NULL or valid, as the functions' contracts allow.
        unsafe {
            (API.parser_free)(null_mut());
            (API.feed)(null_mut(), b"GET".as_ptr(), 3);
            assert_eq!((API.next)(null_mut(), null_mut(), &mut status), HTTP_NULL_ARGUMENT);
            assert_eq!((API.next)(null_mut(), out.as_mut_ptr(), null_mut()), HTTP_NULL_ARGUMENT);
            assert_eq!(status, 0, "nothing written");
            assert_eq!((API.next)(null_mut(), out.as_mut_ptr(), &mut status), HTTP_ERROR);
            assert_eq!(status, NO_PARSER_STATUS);
            let request = out.assume_init_ref();
            assert_eq!(span(&request.body), NO_PARSER_MESSAGE.as_bytes());
            assert!(request.method.ptr.is_null() && request.target.len == 0);

            let parser = (API.parser_new)(1024, 1024);
            (API.feed)(parser, std::ptr::null(), 5);
            assert_eq!((API.next)(parser, null_mut(), &mut status), HTTP_NULL_ARGUMENT);
            let event = (API.next)(parser, out.as_mut_ptr(), &mut status);
            assert_eq!(event, HTTP_NEED_MORE, "the NULL data was ignored");
            (API.parser_free)(parser);

            assert_eq!(simple_input(std::ptr::null(), 5, InputType::Doubles.code()), None);
        }
    }

    #[test]
    fn simple_input_takes_numeric_bodies_of_known_types_only() {
        let body = b"{\"input\": [1, 2]}";
        // SAFETY: `body` is readable for its length.
        let input = |code| unsafe { simple_input(body.as_ptr(), body.len(), code) };
        let (input_type, bytes) = input(InputType::Ints.code()).unwrap();
        assert_eq!((input_type, bytes.len()), (InputType::Ints, 8));
        assert_eq!(input(InputType::Strings.code()), None);
        assert_eq!(input(InputType::ALL.len() as u32), None, "an unknown code");
    }
}
