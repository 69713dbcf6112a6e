//! `rust_core::rpc::decode_inbound`, the frontend's decoder of every message a model container sends
//! (frames after the ROUTER's routing identity). Invariants: it never panics; a message it accepts is
//! what the frames say, and re-encoding what it decoded decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_core::rpc::{self, decode_inbound, Inbound};

#[path = "frames.rs"]
mod frames;

fn refs(frames: &[Vec<u8>]) -> Vec<&[u8]> {
    frames.iter().map(Vec::as_slice).collect()
}

fuzz_target!(|data: &[u8]| {
    let frames = frames::split(data);
    let Ok(message) = decode_inbound(&frames) else { return };
    assert!(frames.len() >= 2 && frames[0].is_empty(), "accepted a message without the empty delimiter");
    match message {
        Inbound::Heartbeat => assert_eq!(frames[1], rpc::MSG_HEARTBEAT.to_le_bytes()),
        Inbound::NewContainer { name, version, input_type } => {
            assert_eq!(frames[1], rpc::MSG_NEW_CONTAINER.to_le_bytes());
            assert_eq!(frames[5], rpc::RPC_VERSION.to_le_bytes());
            let again = rpc::new_container(name, version, input_type);
            assert_eq!(
                decode_inbound(&refs(&again)),
                Ok(Inbound::NewContainer { name, version, input_type }),
                "registration does not round-trip"
            );
        }
        Inbound::Response { msg_id, outputs } => {
            assert_eq!(frames[1], rpc::MSG_CONTAINER_CONTENT.to_le_bytes());
            assert_eq!(outputs.len(), frames.len() - 5, "output count differs from the output frames");
            for (output, frame) in outputs.iter().zip(&frames[5..]) {
                assert!(frame.starts_with(output), "an output is not a prefix of its frame");
            }
            let again = rpc::predict_response(msg_id, &outputs);
            assert_eq!(
                decode_inbound(&refs(&again)),
                Ok(Inbound::Response { msg_id, outputs: outputs.clone() }),
                "response does not round-trip"
            );
        }
    }
});
