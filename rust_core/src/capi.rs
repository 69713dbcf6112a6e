//! The C interface the Cython protocol calls with no Python object in between: the HTTP parser
//! ([`crate::http`]) and the submission of simple predict bodies ([`crate::simple_input`]).
//! `rust_core/include/clipper_capi.h` declares these layouts; the Python module exports [`C_API`]
//! in a capsule.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::http::{Event, RequestParser};
use crate::python::Engine;
use crate::rpc::InputType;
use crate::simple_input::encode_simple_input;

#[repr(C)]
pub struct Span {
    ptr: *const u8,
    len: usize,
}

impl Span {
    fn of(bytes: &[u8]) -> Span {
        Span { ptr: bytes.as_ptr(), len: bytes.len() }
    }

    fn of_option(bytes: &Option<Vec<u8>>) -> Span {
        bytes.as_deref().map_or(Span { ptr: std::ptr::null(), len: 0 }, Span::of)
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
    submit_simple: unsafe extern "C" fn(*mut pyo3::ffi::PyObject, *const u8, usize, u32, u32, u64, u64, *mut *mut pyo3::ffi::PyObject) -> i32,
}

pub static C_API: CApi = CApi {
    api_size: std::mem::size_of::<CApi>(),
    request_size: std::mem::size_of::<CRequest>(),
    parser_new,
    parser_free,
    feed,
    next,
    submit_simple,
};

extern "C" fn parser_new(max_head: usize, max_body: usize) -> *mut CParser {
    Box::into_raw(Box::new(CParser { parser: RequestParser::new(max_head, max_body), error: String::new() }))
}

/// # Safety
/// `parser` comes from `parser_new` and is not used afterwards.
unsafe extern "C" fn parser_free(parser: *mut CParser) {
    if !parser.is_null() {
        drop(Box::from_raw(parser));
    }
}

/// # Safety
/// `parser` is live and `data` points to `len` readable bytes.
unsafe extern "C" fn feed(parser: *mut CParser, data: *const u8, len: usize) {
    if len > 0 {
        (*parser).parser.feed(std::slice::from_raw_parts(data, len));
    }
}

/// # Safety
/// `parser` is live; `out` and `status` are writable.
unsafe extern "C" fn next(parser: *mut CParser, out: *mut CRequest, status: *mut u16) -> i32 {
    let p = &mut *parser;
    match p.parser.next_event() {
        Event::NeedMore => 0,
        Event::Continue => 1,
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
            2
        }
        Event::Error(code, message) => {
            p.error = message;
            *status = code;
            (*out).body = Span::of(p.error.as_bytes());
            3
        }
    }
}

/// Submits the input of a predict body that is exactly `{"input": [numbers]}`: 1 with a new
/// reference in `*hit` for a cache hit, 0 when submitted under `token`, -1 (nothing done) for any
/// other body, input type or engine object: the caller then takes the full path.
///
/// # Safety
/// Called with the GIL held; `engine` is a live object, `body` points to `len` readable bytes and
/// `hit` is writable.
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn submit_simple(
    engine: *mut pyo3::ffi::PyObject,
    body: *const u8,
    len: usize,
    input_type: u32,
    model: u32,
    slo_micros: u64,
    token: u64,
    hit: *mut *mut pyo3::ffi::PyObject,
) -> i32 {
    let Some(input_type) = InputType::from_code(input_type) else { return -1 };
    let Some(input) = encode_simple_input(std::slice::from_raw_parts(body, len), input_type) else { return -1 };
    let py = Python::assume_gil_acquired();
    let engine = Bound::from_borrowed_ptr(py, engine);
    let Ok(engine) = engine.downcast::<Engine>() else { return -1 };
    let slo = std::time::Duration::from_micros(slo_micros);
    match engine.get().inner.submit(token, model, input_type, &input, slo) {
        Some(output) => {
            *hit = PyBytes::new(py, &output).into_ptr();
            1
        }
        None => 0,
    }
}
