//! `rust_core::simple_input::encode_simple_input` on untrusted predict bodies. Byte 0 picks the input
//! type (integers, floats, doubles). Invariants: it never panics; a body it accepts is valid JSON
//! (serde_json) of the form {"input": [numbers]} with one element of the type's width per number,
//! and doubles carry the numbers' values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_core::rpc::InputType;
use rust_core::simple_input::encode_simple_input;

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else { return };
    let input_type = [InputType::Ints, InputType::Floats, InputType::Doubles][usize::from(control % 3)];
    let Some(encoded) = encode_simple_input(body, input_type) else { return };
    let value: serde_json::Value = serde_json::from_slice(body).expect("accepted a body that is not JSON");
    let object = value.as_object().expect("accepted a body that is not an object");
    assert_eq!(object.len(), 1, "accepted other keys");
    let numbers = object["input"].as_array().expect("input is not an array");
    let width = if input_type == InputType::Doubles { 8 } else { 4 };
    assert_eq!(encoded.len(), numbers.len() * width, "one element per number");
    if input_type == InputType::Doubles {
        for (number, bytes) in numbers.iter().zip(encoded.chunks(8)) {
            let expected = number.as_f64().expect("not a number");
            let got = f64::from_le_bytes(bytes.try_into().unwrap());
            assert!(got == expected || (got - expected).abs() <= expected.abs() * 1e-15, "{got} != {expected}");
        }
    }
});
