//! A ZeroMQ DEALER connection, spoken by the calling thread itself: what a model container needs to
//! talk to a frontend's ROUTER without libzmq's I/O thread between it and the socket (two thread
//! hand-offs fewer per batch, and no per-frame call through a binding).
//!
//! It behaves as a libzmq DEALER connected to one endpoint does, as far as a container sees: it
//! connects in the background of the calls, retries every [`RECONNECT_INTERVAL`] while the peer is
//! away and after a connection is lost, queues what is sent meanwhile, and answers the peer's ZMTP
//! PINGs. Unlike libzmq, what was queued when a connection is lost is dropped with it (a container
//! heartbeats again on the next connection, and the frontend requeues the batch of a lost
//! connection). A [`Dealer`] does its I/O inside [`Dealer::send`] and [`Dealer::wait`] only; a
//! [`KeptDealer`] adds a thread that answers PINGs while its caller is busy elsewhere.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::zmtp::{self, ProtocolError};

/// How long to wait before connecting again (libzmq's default `ZMQ_RECONNECT_IVL`).
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);
/// The longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes read per `read` call at least.
const READ_CHUNK: usize = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the peer's greeting.
    Greeting,
    /// Waiting for the peer's READY.
    Handshake,
    /// Exchanging messages.
    Ready,
}

pub struct Dealer {
    /// `host:port`, resolved at each connection attempt.
    address: String,
    stream: Option<TcpStream>,
    phase: Phase,
    /// Bytes read and not yet parsed: `input[consumed..filled]` (`input` is a buffer, zeroed once, that
    /// only grows).
    input: Vec<u8>,
    consumed: usize,
    filled: usize,
    /// Where the frames of the messages read lie in `input`: whole messages, then the one being read.
    frames: VecDeque<Range<usize>>,
    /// How many frames each whole message in `frames` has, in order.
    messages: VecDeque<usize>,
    /// Whether the first of `messages` was handed out by the last `wait` (and goes at the next).
    handed_out: bool,
    /// When a caller last used the connection (see [`KeptDealer`]).
    last_call: Instant,
    /// Bytes to write: `output[written..]`.
    output: Vec<u8>,
    written: usize,
    /// Messages sent before the peer's greeting came: they follow our READY, which follows it
    /// (libzmq drops a connection whose READY arrives with the greeting).
    held: Vec<u8>,
    retry_at: Instant,
}

fn endpoint_address(endpoint: &str) -> io::Result<String> {
    let address = endpoint.strip_prefix("tcp://").ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{endpoint:?}: only tcp:// endpoints are supported"))
    })?;
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(address.to_owned()),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{endpoint:?} is not tcp://host:port"))),
    }
}

fn protocol_error(e: ProtocolError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Dealer {
    /// A DEALER for `endpoint` (`tcp://host:port`); it connects on the first call to `wait`.
    pub fn new(endpoint: &str) -> io::Result<Dealer> {
        Ok(Dealer {
            address: endpoint_address(endpoint)?,
            stream: None,
            phase: Phase::Greeting,
            input: Vec::new(),
            consumed: 0,
            filled: 0,
            frames: VecDeque::new(),
            messages: VecDeque::new(),
            handed_out: false,
            last_call: Instant::now(),
            output: Vec::new(),
            written: 0,
            held: Vec::new(),
            retry_at: Instant::now(),
        })
    }

    /// Whether the handshake with the peer is done.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Queues a message and writes what the socket takes now; never blocks. The rest is written by
    /// the next calls.
    pub fn send<'a>(&mut self, frames: impl ExactSizeIterator<Item = &'a [u8]>) {
        if self.stream.is_none() || self.phase == Phase::Greeting {
            return zmtp::put_message(&mut self.held, frames);
        }
        zmtp::put_message(&mut self.output, frames);
        self.flush();
        self.last_call = Instant::now();
    }

    /// Waits until a whole message has arrived (true) or `timeout` has passed (false), first polling
    /// without sleeping for up to `spin`. The message is [`Dealer::message`] until the next call.
    /// Connection losses are not errors: the connection is made again. A peer that breaks the
    /// protocol is one (its connection is dropped, and made again at the next call).
    pub fn wait(&mut self, timeout: Duration, spin: Duration) -> io::Result<bool> {
        let found = self.wait_inner(timeout, spin);
        self.handed_out = matches!(found, Ok(true));
        self.last_call = Instant::now();
        found
    }

    fn wait_inner(&mut self, timeout: Duration, spin: Duration) -> io::Result<bool> {
        self.take_message();
        let start = Instant::now();
        let (deadline, spin_until) = (start + timeout, start + spin.min(timeout));
        loop {
            let found = self.parse();
            if self.written < self.output.len() {
                self.flush(); // a PONG just queued, or a message the socket did not take at once
            }
            match found {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => {
                    self.disconnect();
                    return Err(protocol_error(e));
                }
            }
            if self.stream.is_none() {
                self.connect(deadline);
                self.flush();
            }
            if self.fill() {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            if now < spin_until {
                std::hint::spin_loop();
                continue;
            }
            match &self.stream {
                Some(stream) => poll(stream, !self.pending_output().is_empty(), deadline - now),
                None => std::thread::sleep(self.retry_at.min(deadline).saturating_duration_since(now)),
            }
        }
    }

    /// The frames of the message [`Dealer::wait`] found (none if it found none).
    pub fn message(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        let count = self.messages.front().copied().unwrap_or(0);
        self.frames.range(..count).map(|r| &self.input[r.clone()])
    }

    /// Reads what has come and answers PINGs, without taking a message: what [`KeptDealer`]'s thread
    /// does while nobody calls.
    fn keep(&mut self) {
        if self.stream.is_none() {
            return;
        }
        self.flush();
        while self.fill() {}
        if self.parse().is_err() {
            self.disconnect(); // the owner's next wait connects again
        }
        self.flush();
    }

    /// Drops the connection (queued output too); a later `wait` connects again.
    pub fn close(&mut self) {
        self.disconnect();
        self.held.clear();
    }

    fn pending_output(&self) -> &[u8] {
        &self.output[self.written..]
    }

    /// Marks the message found by the last `wait` as taken, and drops the bytes no longer needed.
    fn take_message(&mut self) {
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

    fn connect(&mut self, deadline: Instant) {
        let now = Instant::now();
        if now < self.retry_at || now >= deadline {
            return;
        }
        self.retry_at = now + RECONNECT_INTERVAL;
        let timeout = (deadline - now).clamp(Duration::from_millis(1), CONNECT_TIMEOUT);
        let Some(stream) = resolve(&self.address).and_then(|address| TcpStream::connect_timeout(&address, timeout).ok()) else {
            return;
        };
        if stream.set_nonblocking(true).is_err() || stream.set_nodelay(true).is_err() {
            return;
        }
        // The greeting first; READY and what was sent meanwhile once the peer's greeting is here.
        self.output.clear();
        self.output.extend_from_slice(&zmtp::greeting());
        self.written = 0;
        self.stream = Some(stream);
    }

    fn disconnect(&mut self) {
        if self.stream.take().is_some() {
            // What was queued for this connection goes with it (see the module's documentation).
            self.output.clear();
            self.written = 0;
            self.held.clear();
        }
        self.phase = Phase::Greeting;
        self.consumed = 0;
        self.filled = 0;
        self.frames.clear();
        self.messages.clear();
        self.handed_out = false;
        self.retry_at = Instant::now() + RECONNECT_INTERVAL;
    }

    /// Writes what the socket takes now.
    fn flush(&mut self) {
        let Some(stream) = &mut self.stream else { return };
        while self.written < self.output.len() {
            match stream.write(&self.output[self.written..]) {
                Ok(0) => return self.disconnect(),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.disconnect(),
            }
        }
        self.output.clear();
        self.written = 0;
    }

    /// Reads what the socket has now; whether anything came.
    fn fill(&mut self) -> bool {
        let Some(stream) = &mut self.stream else { return false };
        // Room for the rest of a frame whose header is there (up to 16 MiB at once), and READ_CHUNK.
        let unparsed = &self.input[self.consumed..self.filled];
        let frame = zmtp::frame_len(unparsed).map_or(0, |n| n.min(16 << 20) as usize);
        let room = frame.saturating_sub(unparsed.len()).max(READ_CHUNK);
        if self.input.len() - self.filled < room {
            self.input.resize(self.filled + room, 0);
        }
        match stream.read(&mut self.input[self.filled..]) {
            Ok(0) => {
                self.disconnect();
                false
            }
            Ok(n) => {
                self.filled += n;
                true
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => false,
            Err(_) => {
                self.disconnect();
                false
            }
        }
    }

    /// Parses what was read (the greeting, the handshake, commands and message frames) until the bytes
    /// run out: whether a whole message is there.
    fn parse(&mut self) -> Result<bool, ProtocolError> {
        if self.stream.is_none() {
            return Ok(false);
        }
        loop {
            let buf = &self.input[self.consumed..self.filled];
            if self.phase == Phase::Greeting {
                let Some(greeting) = buf.get(..zmtp::GREETING_LEN) else { return Ok(false) };
                zmtp::check_greeting(greeting)?;
                self.consumed += zmtp::GREETING_LEN;
                self.phase = Phase::Handshake;
                zmtp::put_ready(&mut self.output, "DEALER");
                self.output.append(&mut self.held);
                continue;
            }
            let Some((frame, used)) = zmtp::next_frame(buf)? else { return Ok(!self.messages.is_empty()) };
            let body = self.consumed + frame.body.start..self.consumed + frame.body.end;
            self.consumed += used;
            if self.phase == Phase::Handshake {
                if !frame.command {
                    return Err(ProtocolError("the peer sent a message before its READY"));
                }
                let (name, data) = zmtp::split_command(&self.input[body])?;
                if name != b"READY" {
                    return Err(ProtocolError("the peer's first command is not READY"));
                }
                match zmtp::property(data, "Socket-Type")? {
                    Some(t) if t == b"ROUTER" => {}
                    _ => return Err(ProtocolError("the peer is not a ROUTER")),
                }
                self.phase = Phase::Ready;
            } else if frame.command {
                let (name, data) = zmtp::split_command(&self.input[body])?;
                match name {
                    b"PING" => zmtp::put_pong(&mut self.output, data),
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
}

/// How often [`KeptDealer`]'s thread looks, and how long a connection must have gone unused before
/// it steps in (a third of the frontend's default ZMTP heartbeat timeout would still do).
const KEEP_INTERVAL: Duration = Duration::from_millis(100);

/// A [`Dealer`] with a thread that answers the peer's PINGs (and reads what comes) while nobody
/// has called it for [`KEEP_INTERVAL`]: so a caller busy for long, even in code that holds
/// Python's GIL, keeps its connection. The thread never takes a message, and costs nothing on the
/// path of one: it only acts on a connection left alone, and ends when the `KeptDealer` is dropped.
pub struct KeptDealer {
    dealer: Arc<Mutex<Dealer>>,
}

impl KeptDealer {
    pub fn new(endpoint: &str) -> io::Result<KeptDealer> {
        let dealer = Arc::new(Mutex::new(Dealer::new(endpoint)?));
        let weak = Arc::downgrade(&dealer);
        std::thread::Builder::new().name("clipper-dealer-keeper".into()).spawn(move || keep(&weak))?;
        Ok(KeptDealer { dealer })
    }

    /// The connection, for one call (the keeper thread waits meanwhile).
    pub fn lock(&self) -> MutexGuard<'_, Dealer> {
        self.dealer.lock()
    }
}

fn keep(dealer: &Weak<Mutex<Dealer>>) {
    loop {
        std::thread::sleep(KEEP_INTERVAL);
        let Some(shared) = dealer.upgrade() else { return };
        // A caller waiting in `wait` holds the lock, and answers PINGs itself.
        let Some(mut connection) = shared.try_lock() else { continue };
        if connection.last_call.elapsed() >= KEEP_INTERVAL {
            connection.keep();
        }
    }
}

fn resolve(address: &str) -> Option<SocketAddr> {
    address.to_socket_addrs().ok()?.next()
}

/// Sleeps until `stream` is readable (or writable, with `write`), or `timeout` has passed.
fn poll(stream: &TcpStream, write: bool, timeout: Duration) {
    let events = libc::POLLIN | if write { libc::POLLOUT } else { 0 };
    let mut fd = libc::pollfd { fd: stream.as_raw_fd(), events, revents: 0 };
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask; EINTR and errors just end the wait.
    unsafe { libc::ppoll(&mut fd, 1, &timeout, std::ptr::null()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A libzmq ROUTER on a free port; with `ping`, it PINGs each connection every 100 ms and drops
    /// one silent for 500 ms after a PING.
    fn router(context: &zmq::Context, ping: bool) -> (zmq::Socket, String) {
        let socket = context.socket(zmq::ROUTER).unwrap();
        socket.set_linger(0).unwrap();
        socket.set_rcvtimeo(5000).unwrap();
        if ping {
            // Before bind: the listener copies the socket's options when it is made.
            socket.set_heartbeat_ivl(100).unwrap();
            socket.set_heartbeat_timeout(500).unwrap();
        }
        socket.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = socket.get_last_endpoint().unwrap().unwrap();
        (socket, endpoint)
    }

    fn recv(dealer: &mut Dealer) -> Vec<Vec<u8>> {
        assert!(dealer.wait(Duration::from_secs(5), Duration::ZERO).unwrap(), "no message within 5 s");
        dealer.message().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn messages_go_both_ways_with_a_libzmq_router() {
        let context = zmq::Context::new();
        let (router, endpoint) = router(&context, false);
        let mut dealer = Dealer::new(&endpoint).unwrap();
        let big = vec![9u8; 200_000];
        dealer.send([b"".as_slice(), b"hello", &big].into_iter());
        assert!(!dealer.wait(Duration::from_millis(50), Duration::ZERO).unwrap(), "nothing sent back yet");
        assert!(dealer.is_connected());
        let parts = router.recv_multipart(0).unwrap();
        assert_eq!(parts.len(), 4, "identity, then the three frames");
        assert_eq!(&parts[1..], &[b"".to_vec(), b"hello".to_vec(), big.clone()]);
        let identity = parts[0].clone();
        for i in 0..3u8 {
            router.send_multipart([identity.clone(), vec![], vec![i], big.clone()], 0).unwrap();
        }
        for i in 0..3u8 {
            assert_eq!(recv(&mut dealer), vec![vec![], vec![i], big.clone()]);
        }
        dealer.send([b"".as_slice()].into_iter());
        assert_eq!(router.recv_multipart(0).unwrap(), vec![identity, vec![]]);
    }

    #[test]
    fn pings_are_answered_so_the_router_keeps_the_connection() {
        let context = zmq::Context::new();
        let (router, endpoint) = router(&context, true);
        let monitor_endpoint = "inproc://dealer-test-monitor";
        router.monitor(monitor_endpoint, zmq::SocketEvent::DISCONNECTED.to_raw() as i32).unwrap();
        let monitor = context.socket(zmq::PAIR).unwrap();
        monitor.connect(monitor_endpoint).unwrap();
        let mut dealer = Dealer::new(&endpoint).unwrap();
        dealer.send([b"first".as_slice()].into_iter());
        // Waiting answers the PINGs: four times the heartbeat timeout later the connection stands.
        assert!(!dealer.wait(Duration::from_secs(2), Duration::ZERO).unwrap());
        assert_eq!(monitor.poll(zmq::POLLIN, 0).unwrap(), 0, "the router dropped the connection");
        dealer.send([b"second".as_slice()].into_iter());
        assert_eq!(router.recv_multipart(0).unwrap()[1], b"first");
        assert_eq!(router.recv_multipart(0).unwrap()[1], b"second");
        // Not waiting leaves PINGs unanswered: the router drops the connection.
        assert_eq!(monitor.poll(zmq::POLLIN, 2000).unwrap(), 1, "unanswered PINGs should end the connection");
    }

    #[test]
    fn the_keeper_thread_answers_pings_while_the_caller_is_busy_and_keeps_the_messages() {
        let context = zmq::Context::new();
        let (router, endpoint) = router(&context, true);
        let kept = KeptDealer::new(&endpoint).unwrap();
        kept.lock().send([b"hello".as_slice()].into_iter());
        assert!(!kept.lock().wait(Duration::from_millis(50), Duration::ZERO).unwrap());
        let identity = router.recv_multipart(0).unwrap().remove(0);
        for i in 0..3u8 {
            router.send_multipart([identity.clone(), vec![i]], 0).unwrap();
        }
        // Busy (not calling) for four times the router's heartbeat timeout.
        std::thread::sleep(Duration::from_secs(2));
        let mut dealer = kept.lock();
        dealer.send([b"still here".as_slice()].into_iter());
        assert_eq!(router.recv_multipart(0).unwrap(), vec![identity, b"still here".to_vec()]);
        for i in 0..3u8 {
            assert_eq!(recv(&mut dealer), vec![vec![i]], "message {i}, read by the keeper, kept for the caller");
        }
        assert!(!dealer.wait(Duration::ZERO, Duration::ZERO).unwrap());
    }

    #[test]
    fn it_connects_when_the_router_comes_and_again_after_it_restarts() {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let endpoint = format!("tcp://127.0.0.1:{port}");
        let mut dealer = Dealer::new(&endpoint).unwrap();
        dealer.send([b"queued before the router".as_slice()].into_iter());
        assert!(!dealer.wait(Duration::from_millis(150), Duration::ZERO).unwrap());
        assert!(!dealer.is_connected());
        for round in 0..2 {
            let context = zmq::Context::new();
            let router = context.socket(zmq::ROUTER).unwrap();
            router.set_linger(0).unwrap();
            router.set_rcvtimeo(100).unwrap();
            router.bind(&endpoint).unwrap();
            let started = Instant::now();
            let parts = loop {
                assert!(started.elapsed() < Duration::from_secs(5), "round {round}: nothing reached the router");
                let _ = dealer.wait(Duration::from_millis(20), Duration::ZERO);
                if round == 1 {
                    dealer.send([b"hello again".as_slice()].into_iter());
                }
                if let Ok(parts) = router.recv_multipart(0) {
                    break parts;
                }
            };
            let expected: &[u8] = if round == 0 { b"queued before the router" } else { b"hello again" };
            assert_eq!(parts[1], expected, "round {round}");
            assert!(dealer.is_connected());
            drop(router);
            drop(context);
            // The loss is seen at the next wait.
            let started = Instant::now();
            while dealer.is_connected() {
                assert!(started.elapsed() < Duration::from_secs(5), "the loss was not seen");
                let _ = dealer.wait(Duration::from_millis(10), Duration::ZERO);
            }
        }
    }

    #[test]
    fn a_peer_that_is_not_a_zmtp_router_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            peer.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n........................................").unwrap();
            std::thread::sleep(Duration::from_millis(500));
        });
        let mut dealer = Dealer::new(&endpoint).unwrap();
        let error = loop {
            match dealer.wait(Duration::from_secs(5), Duration::ZERO) {
                Err(e) => break e,
                Ok(got) => assert!(!got, "a message from an HTTP server"),
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("signature"), "{error}");
        assert!(!dealer.is_connected());
        server.join().unwrap();
    }

    #[test]
    fn endpoints_must_be_tcp_host_port() {
        assert!(Dealer::new("tcp://127.0.0.1:7000").is_ok());
        assert!(Dealer::new("tcp://frontend:7000").is_ok());
        for bad in ["127.0.0.1:7000", "ipc:///tmp/x", "tcp://127.0.0.1", "tcp://:7000", "tcp://h:port"] {
            assert!(Dealer::new(bad).is_err(), "{bad}");
        }
    }
}
