//! `rust_core::http::RequestParser` on untrusted client bytes. Byte 0 picks how the rest is fed:
//! in chunks of `byte0 % 16 + 1` bytes, with the small limits of `Limits` below.
//! Invariants: it never panics; the events do not depend on how the bytes were chunked; a request
//! body is never over the body limit (and is empty when `too_large`); an error ends the events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_core::http::{Event, RequestParser};

const MAX_HEAD: usize = 512;
const MAX_BODY: usize = 256;

fn events(data: &[u8], chunk: usize) -> Vec<String> {
    let mut parser = RequestParser::new(MAX_HEAD, MAX_BODY);
    let mut seen = Vec::new();
    for piece in data.chunks(chunk) {
        parser.feed(piece);
        loop {
            match parser.next_event() {
                Event::NeedMore => break,
                Event::Request => {
                    let r = parser.request();
                    assert!(r.body.len() <= MAX_BODY, "body over the limit");
                    assert!(!r.too_large || r.body.is_empty(), "a dropped body kept bytes");
                    seen.push(format!("{r:?}"));
                }
                Event::Continue => seen.push("continue".into()),
                Event::Error(status, message) => {
                    assert!(matches!(status, 400 | 431), "status {status}");
                    seen.push(format!("error {status} {message}"));
                    return seen;
                }
            }
        }
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    let chunked = events(rest, usize::from(control % 16) + 1);
    let whole = events(rest, rest.len().max(1));
    assert_eq!(chunked, whole, "events depend on chunking");
});
