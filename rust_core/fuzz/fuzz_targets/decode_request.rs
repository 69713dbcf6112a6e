//! `rust_core::rpc::decode_request`, a model container's decoder of every message the frontend sends it
//! (the Python runtime's `Dealer.recv_request` hands batches over through it). Invariants: it never
//! panics; a message it accepts is what the frames say, and re-encoding what it decoded decodes to the
//! same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_core::rpc::{self, decode_request, InputType, Request};

#[path = "frames.rs"]
mod frames;

fn refs(frames: &[Vec<u8>]) -> Vec<&[u8]> {
    frames.iter().map(Vec::as_slice).collect()
}

fuzz_target!(|data: &[u8]| {
    let frames = frames::split(data);
    let Ok(request) = decode_request(&frames) else { return };
    assert!(frames.len() >= 4 && frames[0].is_empty(), "accepted a message without the empty delimiter");
    assert_eq!(frames[1], rpc::RPC_VERSION.to_le_bytes(), "accepted another RPC version");
    match request {
        Request::Heartbeat { heartbeat_type } => {
            assert_eq!(frames[2], rpc::MSG_HEARTBEAT.to_le_bytes());
            let again = rpc::heartbeat_reply(heartbeat_type);
            assert_eq!(decode_request(&refs(&again)), Ok(Request::Heartbeat { heartbeat_type }), "heartbeat does not round-trip");
        }
        Request::Feedback { msg_id } => {
            assert_eq!(frames[2], rpc::MSG_CONTAINER_CONTENT.to_le_bytes());
            assert_eq!(frames[3], msg_id.to_le_bytes());
            assert_eq!(frames[4], rpc::REQUEST_FEEDBACK.to_le_bytes());
        }
        Request::Predict { msg_id, input_type, inputs } => {
            assert_eq!(frames[2], rpc::MSG_CONTAINER_CONTENT.to_le_bytes());
            assert_eq!(inputs, frames[7..], "the inputs are not the frames after the header");
            let Some(known) = u32::try_from(input_type).ok().and_then(InputType::from_code) else { return };
            let head = rpc::predict_request_head(msg_id, known, &inputs);
            let again: Vec<&[u8]> = head.iter().map(Vec::as_slice).chain(inputs.iter().copied()).collect();
            assert_eq!(
                decode_request(&again),
                Ok(Request::Predict { msg_id, input_type, inputs: inputs.clone() }),
                "batch does not round-trip"
            );
        }
    }
});
