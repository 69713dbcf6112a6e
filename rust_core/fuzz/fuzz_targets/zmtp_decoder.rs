//! The ZMTP decoder (`rust_core::zmtp::Decoder`): what a ROUTER reads from any TCP peer on the RPC
//! port. The input is cut into chunks (each a one-byte length, then the bytes: `frames::split`), fed
//! one by one, with every whole message handed out and released after each, as the router does. It
//! must never panic, nor hand out a message before the handshake or of more bytes than it was fed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_core::zmtp::{self, Decoder};

#[path = "frames.rs"]
mod frames;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new("ROUTER", &[b"DEALER", b"REQ"]);
    // The peer's greeting is taken as given half the time, so that the fuzzer reaches the frames.
    if data.first().is_some_and(|b| b & 1 == 1) {
        decoder.feed(&zmtp::greeting());
    }
    let mut output = Vec::new();
    let mut fed = 0;
    for chunk in frames::split(data.get(1..).unwrap_or_default()) {
        decoder.feed(chunk);
        fed += chunk.len();
        loop {
            match decoder.parse(&mut output) {
                Ok(true) => {
                    assert!(decoder.is_ready(), "a message before the handshake");
                    assert!(decoder.hand_out());
                    let bytes: usize = decoder.message().map(<[u8]>::len).sum();
                    assert!(bytes <= fed + zmtp::GREETING_LEN, "a message of bytes never fed");
                    decoder.release_message();
                }
                Ok(false) => break,
                Err(_) => return, // the router closes such a connection
            }
        }
    }
});
