//! An incremental HTTP/1.1 request parser for the query frontend, over [`httparse`].
//!
//! `httparse` tokenizes the request line, headers and chunk sizes; this module adds what a server
//! needs on top: framing (Content-Length or chunked), keep-alive, `Expect: 100-continue`, limits on
//! the head and the body, and strict rejection of ambiguous framing (both Content-Length and
//! Transfer-Encoding, differing Content-Lengths: the request-smuggling cases).
//!
//! Bytes go in with [`RequestParser::feed`]; [`RequestParser::next_event`] then yields requests one
//! at a time (pipelining), a [`Event::Continue`] when a client waits for permission to send its
//! body, or an [`Event::Error`] after which the parser stays failed.

use std::mem::MaybeUninit;

const MAX_HEADERS: usize = 100;
/// Buffers larger than this are freed once their request is done, not kept for the next one.
const KEPT_CAPACITY: usize = 64 << 10;
/// Longest chunk-size line (with extensions) accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 1024;

/// A complete request. Fields are reused from one request to the next.
#[derive(Debug, Default)]
pub struct Request {
    pub method: Vec<u8>,
    /// The request target as sent (path and query).
    pub target: Vec<u8>,
    pub authorization: Option<Vec<u8>>,
    pub accept: Option<Vec<u8>>,
    pub request_id: Option<Vec<u8>>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
    /// HTTP/1.1 (`false`: HTTP/1.0).
    pub http11: bool,
    pub expect_continue: bool,
    /// The body exceeded the limit; it was read and dropped (`body` is empty).
    pub too_large: bool,
}

/// What [`RequestParser::next_event`] found in the bytes fed so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// More bytes are needed.
    NeedMore,
    /// A request head asked for `100 Continue` (HTTP/1.1 `Expect: 100-continue`); its body follows.
    Continue,
    /// A complete request: read it with [`RequestParser::request`].
    Request,
    /// The bytes are not an acceptable request: answer with this status and close the connection.
    Error(u16, String),
}

#[derive(Debug, Clone, Copy)]
enum State {
    Head,
    /// `remaining` body bytes of a Content-Length body.
    Body { remaining: u64 },
    ChunkSize,
    ChunkData { remaining: u64 },
    ChunkEnd,
    Trailers,
    Failed,
}

/// One connection's parser.
#[derive(Debug)]
pub struct RequestParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
    /// How far the search for the end of the head has looked (an offset in `buf`).
    scanned: usize,
    /// Pending head length at which an unfinished head is tokenized again.
    check_at: usize,
    state: State,
    request: Request,
    max_head: usize,
    max_body: usize,
}

impl RequestParser {
    /// A parser that answers 431 past `max_head` bytes of request line and headers, and reads but
    /// drops bodies over `max_body` bytes (the request then has `too_large`).
    pub fn new(max_head: usize, max_body: usize) -> Self {
        RequestParser {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            check_at: 0,
            state: State::Head,
            request: Request::default(),
            max_head,
            max_body,
        }
    }

    /// Appends bytes received from the client.
    pub fn feed(&mut self, data: &[u8]) {
        if matches!(self.state, State::Failed) {
            return;
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            if self.buf.capacity() > KEPT_CAPACITY {
                self.buf = Vec::new(); // one large request must not pin its buffer for the connection's life
            }
            self.scanned = 0;
            self.start = 0;
        } else if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned = self.scanned.saturating_sub(self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The request of the latest [`Event::Request`], valid until the next call to `next_event`.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The next event in the bytes fed so far.
    pub fn next_event(&mut self) -> Event {
        loop {
            let step = match self.state {
                State::Failed => return Event::NeedMore,
                State::Head => self.parse_head(),
                State::Body { remaining } => {
                    let remaining = self.take_body(remaining);
                    if remaining > 0 {
                        self.state = State::Body { remaining };
                        return Event::NeedMore;
                    }
                    self.state = State::Head;
                    Ok(Some(Event::Request))
                }
                State::ChunkSize => self.parse_chunk_size(),
                State::ChunkData { remaining } => {
                    let remaining = self.take_body(remaining);
                    if remaining > 0 {
                        self.state = State::ChunkData { remaining };
                        return Event::NeedMore;
                    }
                    self.state = State::ChunkEnd;
                    Ok(None)
                }
                State::ChunkEnd => self.parse_chunk_end(),
                State::Trailers => self.parse_trailers(),
            };
            match step {
                Ok(Some(event)) => return event,
                Ok(None) => {}
                Err((status, message)) => {
                    self.state = State::Failed;
                    self.buf = Vec::new();
                    self.start = 0;
                    return Event::Error(status, message);
                }
            }
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Ok(None): go on with the new state; Ok(Some(e)): report e; Err: fail.
    fn parse_head(&mut self) -> Result<Option<Event>, (u16, String)> {
        // Skip the empty lines a client may send between requests (RFC 9112 section 2.2).
        while self.pending().first().is_some_and(|&b| b == b'\r' || b == b'\n') {
            self.start += 1;
        }
        let Some(head_len) = self.find_head_end() else {
            if self.pending().len() > self.max_head {
                return Err(head_too_large(self.max_head));
            }
            // Reject what is not HTTP before its head ends (a TLS hello never does); tokenizing the
            // partial head each time it doubles keeps a byte-by-byte sender linear.
            if self.pending().len() >= self.check_at {
                self.check_at = 2 * self.pending().len();
                let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
                if let Err(e) = httparse::Request::new(&mut []).parse_with_uninit_headers(self.pending(), &mut headers) {
                    return Err(parse_error(e));
                }
            }
            return Ok(Some(Event::NeedMore));
        };
        self.check_at = 0;
        if head_len > self.max_head {
            return Err(head_too_large(self.max_head));
        }
        // Header slots are left uninitialized: httparse writes those it uses (no 3 KiB memset per request).
        let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut []);
        let buf = &self.buf[self.start..self.start + head_len];
        match parsed.parse_with_uninit_headers(buf, &mut headers) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err((400, "malformed HTTP request: incomplete head".into())),
            Err(e) => return Err(parse_error(e)),
        }
        let r = &mut self.request;
        r.method.clear();
        r.method.extend_from_slice(parsed.method.unwrap_or("").as_bytes());
        r.target.clear();
        r.target.extend_from_slice(parsed.path.unwrap_or("").as_bytes());
        r.http11 = parsed.version == Some(1);
        r.authorization = None;
        r.accept = None;
        r.request_id = None;
        r.body.clear();
        if r.body.capacity() > KEPT_CAPACITY {
            r.body = Vec::new();
        }
        r.expect_continue = false;
        r.too_large = false;
        let framing = read_headers(parsed.headers, r)?;
        if r.method == b"CONNECT" || framing.upgrade {
            return Err((400, "protocol upgrades are not supported".into()));
        }
        r.keep_alive = if r.http11 { !framing.close } else { framing.keep_alive && !framing.close };
        self.start += head_len;
        self.state = match (framing.chunked, framing.content_length) {
            (true, _) => State::ChunkSize,
            (false, Some(n)) if n > 0 => State::Body { remaining: n },
            _ => State::Head,
        };
        if matches!(self.state, State::Head) {
            return Ok(Some(Event::Request));
        }
        self.request.too_large = framing.content_length.is_some_and(|n| n > self.max_body as u64);
        if self.request.expect_continue && self.request.http11 {
            return Ok(Some(Event::Continue));
        }
        Ok(None)
    }

    /// The length of the head (through its empty line) if it is complete.
    fn find_head_end(&mut self) -> Option<usize> {
        let from = self.scanned.max(self.start);
        let buf = &self.buf[..];
        for i in memchr::memchr_iter(b'\n', &buf[from..]).map(|i| from + i) {
            // "\n\n" or "\n\r\n" ends the head.
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2 - self.start);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3 - self.start);
            }
        }
        // Look again at the last two bytes once more arrive: they may begin the terminator.
        self.scanned = buf.len().saturating_sub(2).max(self.start);
        None
    }

    /// Moves up to `remaining` pending bytes into the body (or drops them once it is too large);
    /// returns what remains.
    fn take_body(&mut self, remaining: u64) -> u64 {
        let n = self.pending().len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let r = &mut self.request;
        if !r.too_large && r.body.len() + n > self.max_body {
            r.too_large = true;
        }
        if r.too_large {
            r.body = Vec::new();
        } else {
            r.body.extend_from_slice(&self.buf[self.start..self.start + n]);
        }
        self.start += n;
        remaining - n as u64
    }

    fn parse_chunk_size(&mut self) -> Result<Option<Event>, (u16, String)> {
        match httparse::parse_chunk_size(self.pending()) {
            Ok(httparse::Status::Complete((used, _))) if used > MAX_CHUNK_LINE => {
                Err((400, "malformed HTTP request: chunk size line too long".into()))
            }
            Ok(httparse::Status::Complete((used, size))) => {
                self.start += used;
                self.state = if size == 0 { State::Trailers } else { State::ChunkData { remaining: size } };
                Ok(None)
            }
            Ok(httparse::Status::Partial) if self.pending().len() > MAX_CHUNK_LINE => {
                Err((400, "malformed HTTP request: chunk size line too long".into()))
            }
            Ok(httparse::Status::Partial) => Ok(Some(Event::NeedMore)),
            Err(_) => Err((400, "malformed HTTP request: invalid chunk size".into())),
        }
    }

    fn parse_chunk_end(&mut self) -> Result<Option<Event>, (u16, String)> {
        let used = match self.pending() {
            [b'\r', b'\n', ..] => 2,
            [b'\n', ..] => 1,
            [] | [b'\r'] => return Ok(Some(Event::NeedMore)),
            _ => return Err((400, "malformed HTTP request: chunk data not followed by CRLF".into())),
        };
        self.start += used;
        self.state = State::ChunkSize;
        Ok(None)
    }

    fn parse_trailers(&mut self) -> Result<Option<Event>, (u16, String)> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::parse_headers(self.pending(), &mut headers) {
            Ok(httparse::Status::Complete((used, _))) if used > self.max_head => Err(head_too_large(self.max_head)),
            Ok(httparse::Status::Complete((used, _))) => {
                self.start += used;
                self.state = State::Head;
                Ok(Some(Event::Request))
            }
            Ok(httparse::Status::Partial) if self.pending().len() > self.max_head => Err(head_too_large(self.max_head)),
            Ok(httparse::Status::Partial) => Ok(Some(Event::NeedMore)),
            Err(e) => Err((400, format!("malformed HTTP request: trailer: {e}"))),
        }
    }
}

fn parse_error(e: httparse::Error) -> (u16, String) {
    match e {
        httparse::Error::TooManyHeaders => (431, format!("more than {MAX_HEADERS} header fields")),
        e => (400, format!("malformed HTTP request: {e}")),
    }
}

fn head_too_large(max_head: usize) -> (u16, String) {
    (431, format!("request line and headers exceed the limit of {max_head} bytes"))
}

#[derive(Default)]
struct Framing {
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

/// Reads the headers the server acts on into `r` and the message framing.
fn read_headers(headers: &[httparse::Header<'_>], r: &mut Request) -> Result<Framing, (u16, String)> {
    let mut framing = Framing::default();
    let mut has_upgrade_header = false;
    let mut connection_upgrade = false;
    let mut transfer_encodings = 0;
    for h in headers {
        let name = h.name.as_bytes();
        let value = trim(h.value);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(value).ok_or((400, "malformed HTTP request: invalid Content-Length".into()))?;
            if framing.content_length.is_some_and(|m| m != n) {
                return Err((400, "malformed HTTP request: conflicting Content-Length headers".into()));
            }
            framing.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encodings += 1;
            if !value.eq_ignore_ascii_case(b"chunked") || transfer_encodings > 1 {
                return Err((400, "malformed HTTP request: only Transfer-Encoding: chunked is supported".into()));
            }
            framing.chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                framing.close |= token.eq_ignore_ascii_case(b"close");
                framing.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                connection_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            has_upgrade_header = true;
        } else if name.eq_ignore_ascii_case(b"expect") {
            r.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"authorization") {
            r.authorization = Some(value.to_vec());
        } else if name.eq_ignore_ascii_case(b"accept") {
            r.accept = Some(value.to_vec());
        } else if name.eq_ignore_ascii_case(b"x-request-id") {
            r.request_id = Some(value.to_vec());
        }
    }
    if framing.chunked && framing.content_length.is_some() {
        return Err((400, "malformed HTTP request: both Content-Length and Transfer-Encoding".into()));
    }
    framing.upgrade = has_upgrade_header && connection_upgrade;
    Ok(framing)
}

fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(value.len());
    let end = value.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &value[start..end]
}
