//! One ZMTP connection over a non-blocking TCP socket: the bytes read go to a [`Decoder`] (the
//! greeting and READY exchange, messages queued for the owner, PINGs answered), and the bytes to
//! write wait in a buffer until the socket takes them. The owner ([`crate::dealer`],
//! [`crate::router`]) decides when to read, write and wait; a `Link` never blocks.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};

use crate::zmtp::{self, Decoder, ProtocolError};

/// The host (brackets taken off an IPv6 address) and port of a `tcp://host:port` endpoint.
pub(crate) fn tcp_endpoint(endpoint: &str) -> io::Result<(String, u16)> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, format!("{endpoint:?} is not tcp://host:port"));
    let (host, port) = endpoint.strip_prefix("tcp://").and_then(|a| a.rsplit_once(':')).ok_or_else(invalid)?;
    let port = port.parse().map_err(|_| invalid())?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return Err(invalid());
    }
    Ok((host.to_owned(), port))
}

pub(crate) struct Link {
    stream: TcpStream,
    decoder: Decoder,
    /// Bytes to write: `output[written..]`.
    output: Vec<u8>,
    written: usize,
    /// Messages queued before our READY went out: they follow it, and it follows the peer's greeting
    /// (libzmq drops a connection whose READY arrives in the same segment as the greeting).
    held: Vec<u8>,
}

impl Link {
    /// A link over a connected `stream`, our greeting queued.
    pub(crate) fn new(stream: TcpStream, socket_type: &'static str, peer_types: &'static [&'static [u8]]) -> io::Result<Link> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(Link {
            stream,
            decoder: Decoder::new(socket_type, peer_types),
            output: zmtp::greeting().to_vec(),
            written: 0,
            held: Vec::new(),
        })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Whether the handshake is done.
    pub(crate) fn is_ready(&self) -> bool {
        self.decoder.is_ready()
    }

    /// The identity the peer's READY named (empty: none).
    pub(crate) fn peer_identity(&self) -> &[u8] {
        self.decoder.peer_identity()
    }

    /// Whether bytes wait to be written.
    pub(crate) fn has_output(&self) -> bool {
        self.written < self.output.len()
    }

    /// Queues a message, to be written by the next `flush` (after the handshake if our READY has not
    /// gone out yet).
    pub(crate) fn queue<'a>(&mut self, frames: impl ExactSizeIterator<Item = &'a [u8]>) {
        zmtp::put_message(self.queue_buffer(), frames);
    }

    /// Queues bytes already encoded as whole messages (what was queued before the link existed).
    pub(crate) fn queue_encoded(&mut self, messages: &[u8]) {
        self.queue_buffer().extend_from_slice(messages);
    }

    fn queue_buffer(&mut self) -> &mut Vec<u8> {
        if self.decoder.greeted() { &mut self.output } else { &mut self.held }
    }

    /// Queues a PING (ZMTP heartbeat) with no context.
    pub(crate) fn queue_ping(&mut self) {
        if self.is_ready() {
            zmtp::put_ping(&mut self.output, b"");
        }
    }

    /// Writes what the socket takes now. An error means the connection is lost.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.written = 0;
        Ok(())
    }

    /// Reads what the socket has now: whether anything came. An error (the peer's end of the stream
    /// among them) means the connection is lost.
    pub(crate) fn fill(&mut self) -> io::Result<bool> {
        match self.stream.read(self.decoder.room()) {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                self.decoder.filled(n);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Parses what was read: whether a whole message is there. Queues our READY (then what was held
    /// for after it) and PONGs, which `flush` writes.
    pub(crate) fn parse(&mut self) -> Result<bool, ProtocolError> {
        let greeted = self.decoder.greeted();
        let found = self.decoder.parse(&mut self.output);
        if !greeted && self.decoder.greeted() {
            self.output.append(&mut self.held);
        }
        found
    }

    /// Hands out the first whole message, if any ([`Link::message`] until `release_message`).
    pub(crate) fn hand_out(&mut self) -> bool {
        self.decoder.hand_out()
    }

    /// The frames of the message handed out (none if none is).
    pub(crate) fn message(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.decoder.message()
    }

    /// Drops the message handed out, if any, and the bytes no longer needed.
    pub(crate) fn release_message(&mut self) {
        self.decoder.release_message();
    }
}
