//! `rust_core::http::RequestParser` on untrusted client bytes. Byte 0 picks how the rest is fed:
//! in chunks of `byte0 % 16 + 1` bytes, with the small limits of `Limits` below.
//! Invariants: it never panics; the events do not depend on how the bytes were chunked, but for the
//! rejection of an unfinished head, which is tokenized each time its length doubles: input that ends
//! inside a bad head may be rejected when fed whole and still be waiting when fed in chunks, and a
//! bad head that is also too long may get 400 or 431; a request body is never over the body limit
//! (and is empty when `too_large`); errors are 400 or 431 and end the events.
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
                Event::Error(status, _) => {
                    assert!(matches!(status, 400 | 431), "status {status}");
                    seen.push("error".into());
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
    let rejected_early = whole.last().is_some_and(|e| e == "error") && chunked[..] == whole[..whole.len() - 1];
    assert!(chunked == whole || rejected_early, "events depend on chunking: {chunked:?} vs {whole:?}");
});
