//! `rust_core::engine::json_fragment`: a model container's raw output (untrusted bytes off the RPC
//! socket) turned into the JSON fragment the query frontend splices into a response body.
//! Invariants: it never panics, and the fragment is always one valid JSON value (RFC 8259: UTF-8),
//! so that every 200 response body stays valid JSON whatever a model returns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_core::engine::json_fragment;

fuzz_target!(|data: &[u8]| {
    let fragment = json_fragment(data);
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&fragment) {
        panic!("json_fragment({data:?}) = {:?} is not valid JSON: {e}", String::from_utf8_lossy(&fragment));
    }
});
