//! ZMTP 3.1, ZeroMQ's wire protocol, as far as a DEALER and a ROUTER speak it to each other with the
//! NULL security mechanism: the greeting, the READY handshake, message frames, and the PING/PONG
//! heartbeat commands; [`Decoder`] reads a connection's bytes. A codec only, no sockets (see
//! `link`).
//!
//! A connection starts with a 64-byte greeting each way (signature, version, mechanism), then each
//! side sends a READY command naming its socket type, then frames. A frame is a flags byte (more
//! frames follow; 8-byte length; command), its length (one byte, or eight big-endian) and its body.
//! A command's body is its name (one length byte, then the name) and its data.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;

pub const GREETING_LEN: usize = 64;

const FLAG_MORE: u8 = 0x01;
const FLAG_LONG: u8 = 0x02;
const FLAG_COMMAND: u8 = 0x04;

/// The longest frame accepted from a peer: a bound on what one claimed length can make us buffer.
pub const MAX_FRAME: u64 = 1 << 32;

#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZMTP: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Our greeting: the signature, version 3.1, the NULL mechanism, not a server.
pub fn greeting() -> [u8; GREETING_LEN] {
    let mut g = [0u8; GREETING_LEN];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3;
    g[11] = 1;
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// Checks a peer's greeting: ZMTP 3 or later, with the NULL mechanism.
pub fn check_greeting(g: &[u8]) -> Result<(), ProtocolError> {
    if g.len() != GREETING_LEN || g[0] != 0xff || g[9] & 1 != 1 {
        return Err(ProtocolError("the peer's greeting has no ZMTP signature"));
    }
    if g[10] < 3 {
        return Err(ProtocolError("the peer speaks a ZMTP version before 3.0"));
    }
    let mechanism = &g[12..32];
    if &mechanism[..4] != b"NULL" || mechanism[4..].iter().any(|&b| b != 0) {
        return Err(ProtocolError("the peer asks for a security mechanism other than NULL"));
    }
    Ok(())
}

fn put_frame(out: &mut Vec<u8>, flags: u8, body: &[u8]) {
    match u8::try_from(body.len()) {
        Ok(len) => out.extend_from_slice(&[flags, len]),
        Err(_) => {
            out.push(flags | FLAG_LONG);
            out.extend_from_slice(&(body.len() as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(body);
}

/// Appends a message: one frame per item, "more" on all but the last. An empty message is one
/// empty frame.
pub fn put_message<'a>(out: &mut Vec<u8>, frames: impl ExactSizeIterator<Item = &'a [u8]>) {
    let last = frames.len().saturating_sub(1);
    let mut any = false;
    for (i, frame) in frames.enumerate() {
        put_frame(out, if i < last { FLAG_MORE } else { 0 }, frame);
        any = true;
    }
    if !any {
        put_frame(out, 0, b"");
    }
}

fn put_command(out: &mut Vec<u8>, name: &[u8], data: &[u8]) {
    let mut body = Vec::with_capacity(1 + name.len() + data.len());
    body.push(name.len() as u8);
    body.extend_from_slice(name);
    body.extend_from_slice(data);
    put_frame(out, FLAG_COMMAND, &body);
}

/// Appends the READY command of a socket of `socket_type` naming `identity` (empty: a ROUTER gives
/// the connection one of its own).
pub fn put_ready(out: &mut Vec<u8>, socket_type: &str, identity: &[u8]) {
    let mut data = Vec::new();
    for (name, value) in [("Socket-Type", socket_type.as_bytes()), ("Identity", identity)] {
        data.push(name.len() as u8);
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&(value.len() as u32).to_be_bytes());
        data.extend_from_slice(value);
    }
    put_command(out, b"READY", &data);
}

/// Appends the answer to a PING: a PONG with the PING's context.
pub fn put_pong(out: &mut Vec<u8>, ping_data: &[u8]) {
    // A PING's data is a 2-byte TTL, then the context (at most 16 bytes).
    put_command(out, b"PONG", ping_data.get(2..).unwrap_or_default());
}

/// Appends a PING with no TTL and `context` (at most 16 bytes).
pub fn put_ping(out: &mut Vec<u8>, context: &[u8]) {
    let mut data = vec![0, 0];
    data.extend_from_slice(&context[..context.len().min(16)]);
    put_command(out, b"PING", &data);
}

/// One frame read off a buffer: where its body lies in that buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub more: bool,
    pub command: bool,
    pub body: std::ops::Range<usize>,
}

/// The frame at the start of `buf`, if all of it is there, and the bytes it takes.
pub fn next_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let Some(&flags) = buf.first() else { return Ok(None) };
    if flags & !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND) != 0 {
        return Err(ProtocolError("a frame's flags have reserved bits set"));
    }
    let (len, header) = if flags & FLAG_LONG != 0 {
        let Some(bytes) = buf.get(1..9) else { return Ok(None) };
        (u64::from_be_bytes(bytes.try_into().expect("8 bytes")), 9)
    } else {
        let Some(&len) = buf.get(1) else { return Ok(None) };
        (u64::from(len), 2)
    };
    if len > MAX_FRAME {
        return Err(ProtocolError("a frame is longer than 4 GiB"));
    }
    let end = header + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let command = flags & FLAG_COMMAND != 0;
    if command && flags & FLAG_MORE != 0 {
        return Err(ProtocolError("a command frame has the 'more' flag"));
    }
    Ok(Some((Frame { more: flags & FLAG_MORE != 0, command, body: header..end }, end)))
}

/// The total length of the frame at the start of `buf`, once its header is there.
pub fn frame_len(buf: &[u8]) -> Option<u64> {
    match buf.first()? & FLAG_LONG {
        0 => Some(2 + u64::from(*buf.get(1)?)),
        _ => Some(9 + u64::from_be_bytes(buf.get(1..9)?.try_into().ok()?)),
    }
}

/// A command: its name and data.
pub fn split_command(body: &[u8]) -> Result<(&[u8], &[u8]), ProtocolError> {
    let (&len, rest) = body.split_first().ok_or(ProtocolError("an empty command"))?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(ProtocolError("a command's name is cut short"));
    }
    Ok(rest.split_at(len))
}

/// The value of property `name` (any case) in a READY command's data.
pub fn property<'a>(mut data: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, ProtocolError> {
    const CUT: ProtocolError = ProtocolError("a READY property is cut short");
    let mut found = None;
    while let Some((&name_len, rest)) = data.split_first() {
        let (key, rest) = rest.split_at_checked(usize::from(name_len)).ok_or(CUT)?;
        let (len, rest) = rest.split_at_checked(4).ok_or(CUT)?;
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let (value, rest) = rest.split_at_checked(len).ok_or(CUT)?;
        if found.is_none() && key.eq_ignore_ascii_case(name.as_bytes()) {
            found = Some(value);
        }
        data = rest;
    }
    Ok(found)
}

/// Bytes of room offered per read at least.
const READ_CHUNK: usize = 64 << 10;
/// The most room offered for one frame at once.
const MAX_READ: usize = 16 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the peer's greeting.
    Greeting,
    /// Waiting for the peer's READY.
    Handshake,
    /// Exchanging messages.
    Ready,
}

/// The reading side of one connection: bytes in (from any source), whole messages out, with the
/// greeting and READY exchange and the PINGs dealt with on the way. What it has to answer (our
/// READY once the peer's greeting is there, PONGs) it appends to the output given to `parse`.
pub struct Decoder {
    /// Our socket type, and the peer socket types we talk to.
    socket_type: &'static str,
    peer_types: &'static [&'static [u8]],
    phase: Phase,
    /// The `Identity` property of the peer's READY (empty when it has none).
    peer_identity: Vec<u8>,
    /// Bytes read and not yet parsed: `input[consumed..filled]` (`input` is a buffer, zeroed once, that
    /// only grows).
    input: Vec<u8>,
    consumed: usize,
    filled: usize,
    /// Where the frames of the messages read lie in `input`: whole messages, then the one being read.
    frames: VecDeque<Range<usize>>,
    /// How many frames each whole message in `frames` has, in order.
    messages: VecDeque<usize>,
    /// Whether the first of `messages` was handed out (and goes at the next `release_message`).
    handed_out: bool,
}

impl Decoder {
    /// The decoder of a `socket_type` socket that talks to peers of `peer_types`.
    pub fn new(socket_type: &'static str, peer_types: &'static [&'static [u8]]) -> Decoder {
        Decoder {
            socket_type,
            peer_types,
            phase: Phase::Greeting,
            peer_identity: Vec::new(),
            input: Vec::new(),
            consumed: 0,
            filled: 0,
            frames: VecDeque::new(),
            messages: VecDeque::new(),
            handed_out: false,
        }
    }

    /// Whether the peer's greeting has come (and our READY was queued).
    pub fn greeted(&self) -> bool {
        self.phase != Phase::Greeting
    }

    /// Whether the handshake is done.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// The identity the peer's READY named (empty: none).
    pub fn peer_identity(&self) -> &[u8] {
        &self.peer_identity
    }

    /// Room to read into: the rest of a frame whose header is there (up to 16 MiB at once), and at
    /// least 64 KiB. Say how much was read with `filled`.
    pub fn room(&mut self) -> &mut [u8] {
        let unparsed = &self.input[self.consumed..self.filled];
        let frame = frame_len(unparsed).map_or(0, |n| n.min(MAX_READ as u64) as usize);
        let room = frame.saturating_sub(unparsed.len()).max(READ_CHUNK);
        if self.input.len() - self.filled < room {
            self.input.resize(self.filled + room, 0);
        }
        &mut self.input[self.filled..]
    }

    /// `n` bytes were read into `room`.
    pub fn filled(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.input.len());
    }

    /// Takes `bytes` as if read.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = self.room();
            let n = room.len().min(bytes.len());
            room[..n].copy_from_slice(&bytes[..n]);
            self.filled(n);
            bytes = &bytes[n..];
        }
    }

    /// Parses what was read (the greeting, the handshake, commands and message frames) until the bytes
    /// run out: whether a whole message is there. Appends our READY and PONGs to `output`.
    pub fn parse(&mut self, output: &mut Vec<u8>) -> Result<bool, ProtocolError> {
        loop {
            let buf = &self.input[self.consumed..self.filled];
            if self.phase == Phase::Greeting {
                let Some(greeting) = buf.get(..GREETING_LEN) else { return Ok(false) };
                check_greeting(greeting)?;
                self.consumed += GREETING_LEN;
                self.phase = Phase::Handshake;
                put_ready(output, self.socket_type, b"");
                continue;
            }
            let Some((frame, used)) = next_frame(buf)? else { return Ok(!self.messages.is_empty()) };
            let body = self.consumed + frame.body.start..self.consumed + frame.body.end;
            self.consumed += used;
            if self.phase == Phase::Handshake {
                self.handshake(frame.command, body)?;
            } else if frame.command {
                let (name, data) = split_command(&self.input[body])?;
                match name {
                    b"PING" => put_pong(output, data),
                    b"ERROR" => return Err(ProtocolError("the peer closed the connection with an ERROR command")),
                    _ => {} // PONG, and commands of later versions
                }
            } else {
                self.frames.push_back(body);
                if !frame.more {
                    let earlier: usize = self.messages.iter().sum();
                    self.messages.push_back(self.frames.len() - earlier);
                }
            }
        }
    }

    fn handshake(&mut self, command: bool, body: Range<usize>) -> Result<(), ProtocolError> {
        if !command {
            return Err(ProtocolError("the peer sent a message before its READY"));
        }
        let (name, data) = split_command(&self.input[body])?;
        if name != b"READY" {
            return Err(ProtocolError("the peer's first command is not READY"));
        }
        match property(data, "Socket-Type")? {
            Some(t) if self.peer_types.contains(&t) => {}
            _ => return Err(ProtocolError("the peer's socket type does not talk to ours")),
        }
        self.peer_identity = property(data, "Identity")?.unwrap_or_default().to_vec();
        self.phase = Phase::Ready;
        Ok(())
    }

    /// Hands out the first whole message, if any ([`Decoder::message`] until `release_message`).
    pub fn hand_out(&mut self) -> bool {
        self.handed_out = !self.messages.is_empty();
        self.handed_out
    }

    /// The frames of the message handed out (none if none is).
    pub fn message(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        let count = if self.handed_out { self.messages[0] } else { 0 };
        self.frames.range(..count).map(|r| &self.input[r.clone()])
    }

    /// Drops the message handed out, if any, and the bytes no longer needed.
    pub fn release_message(&mut self) {
        if std::mem::take(&mut self.handed_out) {
            let count = self.messages.pop_front().expect("the message handed out");
            self.frames.drain(..count);
        }
        // Move what is still needed to the front: always when no frame is kept (a few bytes at most, as a
        // rule), else once the bytes before the first frame kept are half the buffer.
        let base = self.frames.front().map_or(self.consumed, |r| r.start);
        if base > 0 && (self.frames.is_empty() || base >= self.input.len() / 2) {
            self.input.copy_within(base..self.filled, 0);
            for r in &mut self.frames {
                *r = r.start - base..r.end - base;
            }
            self.consumed -= base;
            self.filled -= base;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(mut buf: &[u8]) -> Vec<(bool, bool, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((frame, used)) = next_frame(buf).unwrap() {
            out.push((frame.more, frame.command, buf[frame.body].to_vec()));
            buf = &buf[used..];
        }
        assert!(buf.is_empty(), "a partial frame left over");
        out
    }

    #[test]
    fn our_greeting_is_one_we_accept() {
        let g = greeting();
        assert_eq!(g.len(), 64);
        check_greeting(&g).unwrap();
        assert_eq!(&g[10..12], &[3, 1]);
    }

    #[test]
    fn greetings_of_other_protocols_and_mechanisms_are_refused() {
        let mut old = greeting();
        old[10] = 2;
        assert!(check_greeting(&old).is_err());
        let mut plain = greeting();
        plain[12..17].copy_from_slice(b"PLAIN");
        assert!(check_greeting(&plain).is_err());
        let mut curve = greeting();
        curve[12..17].copy_from_slice(b"CURVE");
        assert!(check_greeting(&curve).is_err());
        assert!(check_greeting(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n............................................").is_err());
        assert!(check_greeting(&greeting()[..63]).is_err());
    }

    #[test]
    fn a_message_round_trips_with_short_and_long_frames() {
        let long = vec![7u8; 300];
        let mut out = Vec::new();
        put_message(&mut out, [b"".as_slice(), b"abc", &long].into_iter());
        assert_eq!(&out[..4], &[FLAG_MORE, 0, FLAG_MORE, 3]);
        assert_eq!(out[7], FLAG_LONG);
        assert_eq!(
            frames(&out),
            vec![(true, false, vec![]), (true, false, b"abc".to_vec()), (false, false, long)]
        );
    }

    #[test]
    fn a_frame_is_read_only_once_all_of_it_is_there() {
        let mut out = Vec::new();
        put_message(&mut out, [vec![1u8; 1000].as_slice()].into_iter());
        for cut in 0..out.len() {
            assert_eq!(next_frame(&out[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(frame_len(&out), Some(1009));
        assert_eq!(frame_len(&out[..5]), None);
        assert!(next_frame(&out).unwrap().is_some());
    }

    #[test]
    fn bad_frames_are_refused() {
        assert!(next_frame(&[0x08, 0]).is_err(), "reserved flag");
        assert!(next_frame(&[FLAG_COMMAND | FLAG_MORE, 0]).is_err(), "a command with more");
        let mut huge = vec![FLAG_LONG];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(next_frame(&huge).is_err(), "longer than MAX_FRAME");
    }

    #[test]
    fn ready_names_the_socket_type_and_an_empty_identity() {
        let mut out = Vec::new();
        put_ready(&mut out, "DEALER", b"");
        let parsed = frames(&out);
        assert_eq!(parsed.len(), 1);
        let (more, command, body) = &parsed[0];
        assert!(!more && *command);
        let (name, data) = split_command(body).unwrap();
        assert_eq!(name, b"READY");
        assert_eq!(property(data, "socket-type").unwrap(), Some(b"DEALER".as_slice()));
        assert_eq!(property(data, "Identity").unwrap(), Some(b"".as_slice()));
        assert_eq!(property(data, "Resource").unwrap(), None);
        assert!(property(&data[..data.len() - 1], "Identity").is_err(), "cut short");
    }

    /// Every message `decoder` has after taking `bytes`, handed out and released one by one.
    fn decode(decoder: &mut Decoder, bytes: &[u8], output: &mut Vec<u8>) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        decoder.feed(bytes);
        let mut messages = Vec::new();
        while decoder.parse(output)? {
            assert!(decoder.hand_out());
            messages.push(decoder.message().map(<[u8]>::to_vec).collect());
            decoder.release_message();
        }
        Ok(messages)
    }

    #[test]
    fn a_decoder_reads_the_handshake_and_messages_however_the_bytes_are_cut() {
        let mut peer = greeting().to_vec();
        put_ready(&mut peer, "ROUTER", b"");
        put_ping(&mut peer, b"abc");
        let expected: Vec<Vec<Vec<u8>>> = (0..5u8).map(|i| vec![vec![], vec![i], vec![i; 100 * usize::from(i)]]).collect();
        for message in &expected {
            put_message(&mut peer, message.iter().map(Vec::as_slice));
        }
        for cut in [1, 7, 64, 1000, peer.len()] {
            let mut decoder = Decoder::new("DEALER", &[b"ROUTER"]);
            let mut output = Vec::new();
            let mut got = Vec::new();
            for chunk in peer.chunks(cut) {
                got.extend(decode(&mut decoder, chunk, &mut output).unwrap());
            }
            assert_eq!(got, expected, "cut every {cut} bytes");
            assert!(decoder.is_ready() && decoder.peer_identity().is_empty());
            // What it answered: our READY, then the PONG.
            let (ready, used) = next_frame(&output).unwrap().unwrap();
            let (name, data) = split_command(&output[ready.body]).unwrap();
            assert_eq!((name, property(data, "Socket-Type").unwrap()), (b"READY".as_slice(), Some(b"DEALER".as_slice())));
            let (pong, _) = next_frame(&output[used..]).unwrap().unwrap();
            assert_eq!(split_command(&output[used..][pong.body]).unwrap(), (b"PONG".as_slice(), b"abc".as_slice()));
        }
    }

    #[test]
    fn a_decoder_refuses_peers_of_other_socket_types_and_messages_before_ready() {
        let mut publisher = greeting().to_vec();
        put_ready(&mut publisher, "PUB", b"");
        assert!(decode(&mut Decoder::new("ROUTER", &[b"DEALER"]), &publisher, &mut Vec::new()).is_err());
        let mut hasty = greeting().to_vec();
        put_message(&mut hasty, [b"hello".as_slice()].into_iter());
        assert!(decode(&mut Decoder::new("ROUTER", &[b"DEALER"]), &hasty, &mut Vec::new()).is_err());
        let mut named = greeting().to_vec();
        put_ready(&mut named, "DEALER", b"replica-7");
        let mut decoder = Decoder::new("ROUTER", &[b"DEALER"]);
        assert!(decode(&mut decoder, &named, &mut Vec::new()).unwrap().is_empty());
        assert_eq!(decoder.peer_identity(), b"replica-7");
    }

    #[test]
    fn a_pong_carries_the_ping_context() {
        let mut ping = Vec::new();
        put_ping(&mut ping, b"ctx");
        let (_, _, body) = &frames(&ping)[0];
        let (name, data) = split_command(body).unwrap();
        assert_eq!(name, b"PING");
        let mut pong = Vec::new();
        put_pong(&mut pong, data);
        let (_, _, body) = &frames(&pong)[0];
        assert_eq!(split_command(body).unwrap(), (b"PONG".as_slice(), b"ctx".as_slice()));
        assert!(split_command(&[5, b'P']).is_err());
    }
}
