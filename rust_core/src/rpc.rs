//! Clipper RPC v3: the frames exchanged between the frontend's ROUTER and a container's DEALER.
//!
//! Frames are listed as the DEALER sees them: the ROUTER's routing-identity frame is not part of
//! these layouts. All integers are little-endian. Frontend-to-container messages carry a `u32`
//! RPC-version frame after the empty delimiter; container-to-frontend messages do not.

use std::fmt;

pub const RPC_VERSION: u32 = 3;

pub const MSG_NEW_CONTAINER: u32 = 0;
pub const MSG_CONTAINER_CONTENT: u32 = 1;
pub const MSG_HEARTBEAT: u32 = 2;

pub const HEARTBEAT_KEEPALIVE: u32 = 0;
pub const HEARTBEAT_REQUEST_METADATA: u32 = 1;

pub const REQUEST_PREDICT: u32 = 0;
pub const REQUEST_FEEDBACK: u32 = 1;

/// Prefix of an output that reports a failed batch instead of a prediction. Our container runtime
/// answers a batch whose model raised with one such output per input; to a Clipper frontend it is
/// plain text, so the wire format stays v3.
pub const ERROR_MARKER: &[u8] = b"\x00error:";

/// Input element types and their wire codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum InputType {
    Bytes = 0,
    Ints = 1,
    Floats = 2,
    Doubles = 3,
    Strings = 4,
}

impl InputType {
    /// Every input type, in code order.
    pub const ALL: [InputType; 5] = [InputType::Bytes, InputType::Ints, InputType::Floats, InputType::Doubles, InputType::Strings];

    /// The canonical name of the input type, as apps and models declare it.
    pub fn name(self) -> &'static str {
        match self {
            InputType::Bytes => "bytes",
            InputType::Ints => "integers",
            InputType::Floats => "floats",
            InputType::Doubles => "doubles",
            InputType::Strings => "strings",
        }
    }

    /// The input type of a wire code, if any.
    pub fn from_code(code: u32) -> Option<InputType> {
        InputType::ALL.into_iter().find(|t| t.code() == code)
    }

    pub fn code(self) -> u32 {
        self as u32
    }
}

/// A message from a container, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    Heartbeat,
    NewContainer {
        name: &'a str,
        version: &'a str,
        input_type: InputType,
    },
    Response {
        msg_id: u32,
        outputs: Vec<&'a [u8]>,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DecodeError {}

fn read_u32(frame: &[u8]) -> Result<u32, DecodeError> {
    let bytes: [u8; 4] = frame.try_into().map_err(|_| DecodeError("expected a 4-byte u32 frame"))?;
    Ok(u32::from_le_bytes(bytes))
}

fn read_u64s(frame: &[u8]) -> Result<impl Iterator<Item = u64> + '_, DecodeError> {
    if !frame.len().is_multiple_of(8) {
        return Err(DecodeError("u64 array frame length is not a multiple of 8"));
    }
    Ok(frame.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())))
}

/// Decodes a container-to-frontend message (frames after the routing identity).
pub fn decode_inbound<'a>(frames: &[&'a [u8]]) -> Result<Inbound<'a>, DecodeError> {
    let [delimiter, kind, rest @ ..] = frames else {
        return Err(DecodeError("message has fewer than two frames"));
    };
    if !delimiter.is_empty() {
        return Err(DecodeError("first frame is not the empty delimiter"));
    }
    match read_u32(kind)? {
        MSG_HEARTBEAT => Ok(Inbound::Heartbeat),
        MSG_NEW_CONTAINER => {
            let [name, version, input_type, rpc_version, ..] = rest else {
                return Err(DecodeError("registration needs name, version, input type and RPC version"));
            };
            if read_u32(rpc_version)? != RPC_VERSION {
                return Err(DecodeError("registration names an RPC version other than 3"));
            }
            let text = |f: &'a [u8]| std::str::from_utf8(f).map_err(|_| DecodeError("registration field is not UTF-8"));
            let code = text(input_type)?
                .trim()
                .parse::<u32>()
                .map_err(|_| DecodeError("input type is not a decimal number"))?;
            Ok(Inbound::NewContainer {
                name: text(name)?,
                version: text(version)?,
                input_type: InputType::from_code(code).ok_or(DecodeError("unknown input type code"))?,
            })
        }
        MSG_CONTAINER_CONTENT => {
            let [msg_id, _header_len, header, outputs @ ..] = rest else {
                return Err(DecodeError("response needs msg id, header length and header frames"));
            };
            let msg_id = read_u32(msg_id)?;
            let mut header = read_u64s(header)?;
            let count = header.next().ok_or(DecodeError("response header is empty"))?;
            if count as usize != outputs.len() {
                return Err(DecodeError("response output count differs from its frames"));
            }
            let mut sliced = Vec::with_capacity(outputs.len());
            for (frame, len) in outputs.iter().zip(header.by_ref()) {
                // Clipper reads exactly len_i bytes of each frame; longer frames are truncated.
                let len = usize::try_from(len).map_err(|_| DecodeError("output length overflows"))?;
                sliced.push(frame.get(..len).ok_or(DecodeError("output frame shorter than its length"))?);
            }
            if sliced.len() != outputs.len() {
                return Err(DecodeError("response header lists fewer lengths than outputs"));
            }
            Ok(Inbound::Response { msg_id, outputs: sliced })
        }
        _ => Err(DecodeError("unknown message type")),
    }
}

/// A message from the frontend, decoded (the container's side of the wire).
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Keep-alive, or [`HEARTBEAT_REQUEST_METADATA`]: the container is to register.
    Heartbeat { heartbeat_type: u32 },
    /// A batch: `input_type` is the header's code as sent (the container checks it against its own).
    Predict { msg_id: u32, input_type: u64, inputs: Vec<&'a [u8]> },
    /// Never sent by Clipper's frontend; containers do not answer it.
    Feedback { msg_id: u32 },
}

/// Decodes a frontend-to-container message, as a container's DEALER receives it.
pub fn decode_request<'a>(frames: &[&'a [u8]]) -> Result<Request<'a>, DecodeError> {
    let [delimiter, version, kind, rest @ ..] = frames else {
        return Err(DecodeError("message has fewer than three frames"));
    };
    if !delimiter.is_empty() {
        return Err(DecodeError("first frame is not the empty delimiter"));
    }
    if read_u32(version)? != RPC_VERSION {
        return Err(DecodeError("unsupported RPC version (expected 3)"));
    }
    match read_u32(kind)? {
        MSG_HEARTBEAT => match rest {
            [heartbeat_type] => Ok(Request::Heartbeat { heartbeat_type: read_u32(heartbeat_type)? }),
            _ => Err(DecodeError("heartbeat: expected 4 frames")),
        },
        MSG_CONTAINER_CONTENT => {
            let [msg_id, request_type, rest @ ..] = rest else {
                return Err(DecodeError("container content: expected at least 5 frames"));
            };
            let msg_id = read_u32(msg_id)?;
            match read_u32(request_type)? {
                REQUEST_FEEDBACK => return Ok(Request::Feedback { msg_id }),
                REQUEST_PREDICT => {}
                _ => return Err(DecodeError("unknown request type")),
            }
            let [header_len, header, inputs @ ..] = rest else {
                return Err(DecodeError("predict: expected at least 7 frames"));
            };
            let header_len: [u8; 8] = (*header_len).try_into().map_err(|_| DecodeError("predict: bad header length frame"))?;
            if u64::from_le_bytes(header_len) != header.len() as u64 || header.len() < 16 {
                return Err(DecodeError("predict: bad header length"));
            }
            let lengths = header.len() / 8 - 2;
            let mut header = read_u64s(header)?;
            let (input_type, count) = (header.next().unwrap_or(0), header.next().unwrap_or(0));
            if count != inputs.len() as u64 || lengths != inputs.len() {
                return Err(DecodeError("predict: the header announces another number of inputs"));
            }
            if !header.zip(inputs).all(|(len, input)| len == input.len() as u64) {
                return Err(DecodeError("predict: input frame sizes differ from the header"));
            }
            Ok(Request::Predict { msg_id, input_type, inputs: inputs.to_vec() })
        }
        _ => Err(DecodeError("unexpected message type")),
    }
}

/// The frontend's reply to a heartbeat: keep-alive, or a request to register.
pub fn heartbeat_reply(heartbeat_type: u32) -> [Vec<u8>; 4] {
    [
        Vec::new(),
        RPC_VERSION.to_le_bytes().to_vec(),
        MSG_HEARTBEAT.to_le_bytes().to_vec(),
        heartbeat_type.to_le_bytes().to_vec(),
    ]
}

/// The fixed frames of a prediction request; the input frames follow, one per input.
pub fn predict_request_head<I: AsRef<[u8]>>(msg_id: u32, input_type: InputType, inputs: &[I]) -> [Vec<u8>; 7] {
    let mut header = Vec::with_capacity(8 * (2 + inputs.len()));
    header.extend_from_slice(&u64::from(input_type.code()).to_le_bytes());
    header.extend_from_slice(&(inputs.len() as u64).to_le_bytes());
    for input in inputs {
        header.extend_from_slice(&(input.as_ref().len() as u64).to_le_bytes());
    }
    [
        Vec::new(),
        RPC_VERSION.to_le_bytes().to_vec(),
        MSG_CONTAINER_CONTENT.to_le_bytes().to_vec(),
        msg_id.to_le_bytes().to_vec(),
        REQUEST_PREDICT.to_le_bytes().to_vec(),
        (header.len() as u64).to_le_bytes().to_vec(),
        header,
    ]
}

/// The fixed frames of a container's prediction response; the output frames follow, one per output.
pub fn predict_response_head<O: AsRef<[u8]>>(msg_id: u32, outputs: &[O]) -> [Vec<u8>; 5] {
    let mut header = Vec::with_capacity(8 * (1 + outputs.len()));
    header.extend_from_slice(&(outputs.len() as u64).to_le_bytes());
    for output in outputs {
        header.extend_from_slice(&(output.as_ref().len() as u64).to_le_bytes());
    }
    [
        Vec::new(),
        MSG_CONTAINER_CONTENT.to_le_bytes().to_vec(),
        msg_id.to_le_bytes().to_vec(),
        (header.len() as u64).to_le_bytes().to_vec(),
        header,
    ]
}

/// A container's whole prediction response (the container side of the wire).
pub fn predict_response<O: AsRef<[u8]>>(msg_id: u32, outputs: &[O]) -> Vec<Vec<u8>> {
    let mut frames = predict_response_head(msg_id, outputs).to_vec();
    frames.extend(outputs.iter().map(|o| o.as_ref().to_vec()));
    frames
}

/// A container's registration message (the container side of the wire).
pub fn new_container(name: &str, version: &str, input_type: InputType) -> [Vec<u8>; 6] {
    [
        Vec::new(),
        MSG_NEW_CONTAINER.to_le_bytes().to_vec(),
        name.as_bytes().to_vec(),
        version.as_bytes().to_vec(),
        input_type.code().to_string().into_bytes(),
        RPC_VERSION.to_le_bytes().to_vec(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(frames: &[Vec<u8>]) -> Vec<&[u8]> {
        frames.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn input_types_are_listed_once_in_code_order_and_round_trip() {
        for (code, t) in InputType::ALL.into_iter().enumerate() {
            assert_eq!(t.code(), code as u32);
            assert_eq!(InputType::from_code(t.code()), Some(t));
        }
        assert_eq!(InputType::from_code(InputType::ALL.len() as u32), None);
        assert_eq!(InputType::from_code(u32::MAX), None);
        let mut names = InputType::ALL.map(InputType::name).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), InputType::ALL.len(), "names are distinct");
    }

    #[test]
    fn heartbeat_from_container() {
        let frames: [&[u8]; 2] = [b"", &[2, 0, 0, 0]];
        assert_eq!(decode_inbound(&frames), Ok(Inbound::Heartbeat));
    }

    #[test]
    fn heartbeat_reply_bytes() {
        assert_eq!(
            heartbeat_reply(HEARTBEAT_REQUEST_METADATA),
            [vec![], vec![3, 0, 0, 0], vec![2, 0, 0, 0], vec![1, 0, 0, 0]]
        );
    }

    #[test]
    fn registration_as_sent_by_clipper_rpc_py() {
        let frames: [&[u8]; 6] = [b"", &[0, 0, 0, 0], b"m", b"v1", b"3", &[3, 0, 0, 0]];
        assert_eq!(
            decode_inbound(&frames),
            Ok(Inbound::NewContainer { name: "m", version: "v1", input_type: InputType::Doubles })
        );
        assert_eq!(new_container("m", "v1", InputType::Doubles).to_vec(), frames.map(<[u8]>::to_vec).to_vec());
    }

    #[test]
    fn registration_without_rpc_version_is_refused() {
        let frames: [&[u8]; 5] = [b"", &[0, 0, 0, 0], b"m", b"1", b"3"];
        assert!(decode_inbound(&frames).is_err());
        let frames: [&[u8]; 6] = [b"", &[0, 0, 0, 0], b"m", b"1", b"3", &[2, 0, 0, 0]];
        assert!(decode_inbound(&frames).is_err());
    }

    #[test]
    fn predict_request_matches_reference_example() {
        // The example of docs/protocol.md: doubles batch [1.0,2.0], [3.0,4.0].
        let inputs: Vec<Vec<u8>> = [[1.0f64, 2.0], [3.0, 4.0]]
            .iter()
            .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let head = predict_request_head(7, InputType::Doubles, &inputs);
        assert_eq!(head[0], b"");
        assert_eq!(head[1], [3, 0, 0, 0]);
        assert_eq!(head[2], [1, 0, 0, 0]);
        assert_eq!(head[3], [7, 0, 0, 0]);
        assert_eq!(head[4], [0, 0, 0, 0]);
        assert_eq!(head[5], [32, 0, 0, 0, 0, 0, 0, 0]);
        let mut expected = Vec::new();
        for v in [3u64, 2, 16, 16] {
            expected.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(head[6], expected);
    }

    #[test]
    fn response_round_trip_matches_reference_example() {
        let frames = predict_response(7, &[b"0.3".as_slice(), b"0.7"]);
        assert_eq!(frames[1], [1, 0, 0, 0]);
        assert_eq!(frames[2], [7, 0, 0, 0]);
        assert_eq!(frames[3], 24u64.to_le_bytes());
        let mut header = Vec::new();
        for v in [2u64, 3, 3] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(frames[4], header);
        assert_eq!(
            decode_inbound(&refs(&frames)),
            Ok(Inbound::Response { msg_id: 7, outputs: vec![b"0.3".as_slice(), b"0.7"] })
        );
    }

    #[test]
    fn response_frames_longer_than_their_length_are_truncated() {
        let mut frames = predict_response(1, &[b"ab".as_slice()]);
        frames[5] = b"abc".to_vec();
        assert_eq!(
            decode_inbound(&refs(&frames)),
            Ok(Inbound::Response { msg_id: 1, outputs: vec![b"ab".as_slice()] })
        );
    }

    #[test]
    fn requests_decode_as_the_container_sees_them() {
        let inputs: Vec<Vec<u8>> = vec![vec![1; 16], vec![], vec![2; 8]];
        let head = predict_request_head(9, InputType::Doubles, &inputs);
        let frames: Vec<&[u8]> = head.iter().map(Vec::as_slice).chain(inputs.iter().map(Vec::as_slice)).collect();
        let expected = Request::Predict { msg_id: 9, input_type: 3, inputs: refs(&inputs) };
        assert_eq!(decode_request(&frames), Ok(expected));
        let heartbeat = heartbeat_reply(HEARTBEAT_REQUEST_METADATA);
        assert_eq!(decode_request(&refs(&heartbeat)), Ok(Request::Heartbeat { heartbeat_type: 1 }));
        let feedback: [&[u8]; 5] = [b"", &[3, 0, 0, 0], &[1, 0, 0, 0], &[4, 0, 0, 0], &[1, 0, 0, 0]];
        assert_eq!(decode_request(&feedback), Ok(Request::Feedback { msg_id: 4 }));
        // Each frame of the predict request changed in turn: only the inputs' bytes may change freely.
        for (i, frame) in frames.iter().enumerate().take(7) {
            let mut bad = frames.clone();
            let changed = [frame.to_vec(), vec![0]].concat();
            bad[i] = &changed;
            assert!(decode_request(&bad).is_err(), "frame {i} lengthened");
        }
        assert!(decode_request(&frames[..frames.len() - 1]).is_err(), "an input missing");
        let mut longer = frames.clone();
        longer[7] = &[0; 17];
        assert!(decode_request(&longer).is_err(), "an input longer than the header says");
        assert!(decode_request(&frames[..6]).is_err(), "no header");
        assert!(decode_request(&frames[..2]).is_err());
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let cases: Vec<Vec<&[u8]>> = vec![
            vec![],
            vec![b""],
            vec![b"x", &[2, 0, 0, 0]],
            vec![b"", &[2, 0, 0]],
            vec![b"", &[9, 0, 0, 0]],
            vec![b"", &[1, 0, 0, 0], &[1, 0, 0, 0]],
            vec![b"", &[1, 0, 0, 0], &[1, 0, 0, 0], &[8, 0, 0, 0, 0, 0, 0, 0], &[1, 0, 0]],
            vec![b"", &[1, 0, 0, 0], &[1, 0, 0, 0], &[16; 8], &[2; 16], b"a"],
            vec![b"", &[0, 0, 0, 0], b"m", b"1", b"x", &[3, 0, 0, 0]],
            vec![b"", &[0, 0, 0, 0], &[0xff], b"1", b"3", &[3, 0, 0, 0]],
        ];
        for frames in cases {
            assert!(decode_inbound(&frames).is_err(), "{frames:?}");
        }
    }
}
