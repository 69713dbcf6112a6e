//! A ZeroMQ ROUTER, spoken by the engine thread itself: it accepts model containers' DEALER
//! connections on a TCP listener and exchanges messages with each under a routing identity, with
//! no I/O thread between the engine and its sockets (libzmq's ROUTER moves every message through
//! one: two thread hand-offs per batch).
//!
//! What the engine relies on, as it did with libzmq's ROUTER (with `ZMQ_ROUTER_MANDATORY`,
//! `ZMQ_ROUTER_HANDOVER` and ZMTP heartbeats):
//! - each connection gets an identity of its own: the one its READY names, else `0` and a
//!   big-endian counter; a later connection naming an identity in use takes it over, and the earlier
//!   one is closed and reported lost (before the later one's first message);
//! - sending to an identity with no connection fails at once;
//! - a connection lost (closed, reset, broken protocol, or silent for `ping_timeout` after a PING;
//!   PINGs go every `ping_interval`) is reported by [`Router::take_lost`] with its identity, after
//!   every message read from it: nothing arrives from a connection after its loss;
//! - a connection that has not finished its handshake in 30 s is closed;
//! - when the process runs out of file descriptors, it stops accepting for 100 ms at a time, logged
//!   once (the listener stays readable while a connection waits: without the pause, the engine
//!   would spin).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::epoll::{Epoll, NO_EVENT};
use crate::link::{tcp_endpoint, Link};
use crate::log;

/// The listener's epoll token; links count from `FIRST_LINK`.
const LISTENER: u64 = 0;
const FIRST_LINK: u64 = 1;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 64;
/// A connection that has not finished its handshake by then is closed (libzmq's `ZMQ_HANDSHAKE_IVL`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the listener is left alone after `accept` failed for want of descriptors or memory.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A message received: who sent it, and its frames (copied out of the connection's buffer).
pub struct Received {
    pub identity: Vec<u8>,
    bytes: Vec<u8>,
    frames: Vec<Range<usize>>,
}

impl Received {
    pub fn frames(&self) -> Vec<&[u8]> {
        self.frames.iter().map(|r| &self.bytes[r.clone()]).collect()
    }
}

struct Peer {
    link: Link,
    accepted: Instant,
    /// Set once the handshake is done.
    identity: Option<Vec<u8>>,
    /// Whether the socket is watched for writability (output waits).
    writing: bool,
    last_ping: Instant,
    /// The connection is lost if nothing comes before then (set when a PING goes out).
    answer_by: Option<Instant>,
}

pub struct Router {
    listener: TcpListener,
    epoll: Epoll,
    peers: HashMap<u64, Peer>,
    by_identity: HashMap<Vec<u8>, u64>,
    next_token: u64,
    next_anonymous: u32,
    /// Links with something to read, as the last `poll` found.
    ready: Vec<u64>,
    lost: Vec<Vec<u8>>,
    ping_interval: Duration,
    ping_timeout: Duration,
    handshake_timeout: Duration,
    /// When `keep_alive` has something to do next (a PING, a deadline, accepting again).
    next_due: Instant,
    /// Set while accepting is paused (see `ACCEPT_PAUSE`): when to start again.
    accept_paused_until: Option<Instant>,
    /// Whether the pauses since the last connection accepted were logged (once per streak).
    accept_failure_logged: bool,
}

/// The socket address of `tcp://host:port` (`*` for every interface, IPv6 addresses in brackets).
fn bind_address(endpoint: &str) -> io::Result<SocketAddr> {
    let (host, port) = tcp_endpoint(endpoint)?;
    let host = if host == "*" { "0.0.0.0" } else { &host };
    let unknown = || io::Error::new(io::ErrorKind::InvalidInput, format!("{endpoint:?}: {host} has no address"));
    (host, port).to_socket_addrs()?.next().ok_or_else(unknown)
}

impl Router {
    /// Listens on `endpoint` (`tcp://host:port`, port 0 for any); PINGs every `ping_interval` (zero:
    /// none) and drops connections silent for `ping_timeout` after one.
    pub fn bind(endpoint: &str, ping_interval: Duration, ping_timeout: Duration) -> io::Result<Router> {
        let listener = TcpListener::bind(bind_address(endpoint)?)?;
        listener.set_nonblocking(true)?;
        let router = Router {
            listener,
            epoll: Epoll::new()?,
            peers: HashMap::new(),
            by_identity: HashMap::new(),
            next_token: FIRST_LINK,
            next_anonymous: rand_u32(),
            ready: Vec::new(),
            lost: Vec::new(),
            ping_interval,
            ping_timeout,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            next_due: Instant::now(),
            accept_paused_until: None,
            accept_failure_logged: false,
        };
        router.epoll.add(router.listener.as_raw_fd(), LISTENER, libc::EPOLLIN)?;
        Ok(router)
    }

    /// The endpoint listened on, with the port the system chose.
    pub fn endpoint(&self) -> io::Result<String> {
        Ok(format!("tcp://{}", self.listener.local_addr()?))
    }

    /// The descriptor of the router's epoll set: readable while a connection waits to be accepted or a
    /// link has something to read or can write what waits (another set can watch it; see `engine`).
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.fd()
    }

    /// Waits up to `timeout` for a connection to accept or bytes to read or write; notes the links
    /// with something to read. Whether anything happened.
    pub fn poll(&mut self, timeout: Duration) -> bool {
        let mut events = [NO_EVENT; EVENTS];
        let events = self.epoll.poll(&mut events, timeout);
        for event in events {
            let (token, flags) = (event.u64, event.events);
            match token {
                LISTENER => self.accept(),
                _ => {
                    if flags & libc::EPOLLOUT as u32 != 0 {
                        self.flush(token);
                    }
                    if flags & !(libc::EPOLLOUT as u32) != 0 && !self.ready.contains(&token) {
                        self.ready.push(token);
                    }
                }
            }
        }
        !events.is_empty()
    }

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted) => continue,
                Err(e) => return self.pause_accepting(e),
            };
            self.accept_failure_logged = false;
            let Ok(link) = Link::new(stream, "ROUTER", &[b"DEALER", b"REQ"]) else { continue };
            let token = self.next_token;
            self.next_token += 1;
            let fd = link.fd();
            let now = Instant::now();
            self.peers.insert(token, Peer { link, accepted: now, identity: None, writing: false, last_ping: now, answer_by: None });
            let first_due = now + if self.ping_interval.is_zero() { self.handshake_timeout } else { self.ping_interval };
            self.next_due = self.next_due.min(first_due);
            if self.epoll.add(fd, token, libc::EPOLLIN).is_err() {
                self.peers.remove(&token);
                continue;
            }
            self.flush(token); // our greeting
            self.ready.push(token); // the peer's greeting may be there already
        }
    }

    /// `accept` failed for a lasting reason (no descriptors or memory left): the waiting connection
    /// keeps the listener readable, so it leaves the epoll set until `keep_alive` puts it back.
    fn pause_accepting(&mut self, error: io::Error) {
        let fd = self.listener.as_raw_fd();
        if self.epoll.delete(fd).is_err() {
            return;
        }
        if !self.accept_failure_logged {
            log::warn(&format!("cannot accept container connections ({error}); trying again every {ACCEPT_PAUSE:?}"));
            self.accept_failure_logged = true;
        }
        let until = Instant::now() + ACCEPT_PAUSE;
        self.accept_paused_until = Some(until);
        self.next_due = self.next_due.min(until);
    }

    /// The next message from any connection, reading what the last `poll` found.
    pub fn recv(&mut self) -> Option<Received> {
        while let Some(&token) = self.ready.last() {
            let Some(peer) = self.peers.get_mut(&token) else {
                self.ready.pop();
                continue;
            };
            let parsed = peer.link.parse();
            let handshake_done = peer.identity.is_none() && peer.link.is_ready();
            match parsed {
                Err(_) => {
                    self.close(token);
                    continue;
                }
                Ok(true) => {
                    if handshake_done {
                        self.identify(token);
                    }
                    self.flush(token);
                    let Some(peer) = self.peers.get_mut(&token) else { continue }; // lost while writing
                    peer.link.hand_out();
                    let identity = peer.identity.clone().expect("a message comes after the handshake");
                    let (mut bytes, mut frames) = (Vec::new(), Vec::with_capacity(peer.link.message().len()));
                    for frame in peer.link.message() {
                        frames.push(bytes.len()..bytes.len() + frame.len());
                        bytes.extend_from_slice(frame);
                    }
                    peer.link.release_message();
                    return Some(Received { identity, bytes, frames });
                }
                Ok(false) => {
                    if handshake_done {
                        self.identify(token);
                    }
                    self.flush(token);
                }
            }
            let Some(peer) = self.peers.get_mut(&token) else { continue };
            match peer.link.fill() {
                Ok(true) => peer.answer_by = None,
                Ok(false) => {
                    self.ready.pop();
                }
                Err(_) => self.close(token),
            }
        }
        None
    }

    /// Gives a connection whose handshake is done its identity.
    fn identify(&mut self, token: u64) {
        let Some(peer) = self.peers.get_mut(&token) else { return };
        let identity = match peer.link.peer_identity() {
            [] => {
                let n = self.next_anonymous;
                self.next_anonymous = n.wrapping_add(1);
                let mut identity = vec![0];
                identity.extend_from_slice(&n.to_be_bytes());
                identity
            }
            named => named.to_vec(),
        };
        peer.identity = Some(identity.clone());
        if let Some(earlier) = self.by_identity.insert(identity, token) {
            self.close(earlier); // handover: reported lost, the identity now the later connection's
        }
    }

    /// Sends a message to the connection of `identity`; false when there is none (or it was just lost).
    pub fn send<'a>(&mut self, identity: &[u8], frames: impl ExactSizeIterator<Item = &'a [u8]>) -> bool {
        let Some(&token) = self.by_identity.get(identity) else { return false };
        let Some(peer) = self.peers.get_mut(&token) else { return false };
        peer.link.queue(frames);
        self.flush(token)
    }

    /// Writes what the link's socket takes now, watching it for writability while output waits;
    /// false if the connection was lost.
    fn flush(&mut self, token: u64) -> bool {
        let Some(peer) = self.peers.get_mut(&token) else { return false };
        if peer.link.flush().is_err() {
            self.close(token);
            return false;
        }
        let writing = peer.link.has_output();
        if writing != peer.writing {
            peer.writing = writing;
            let events = libc::EPOLLIN | if writing { libc::EPOLLOUT } else { 0 };
            let fd = peer.link.fd();
            if self.epoll.modify(fd, token, events).is_err() {
                self.close(token);
                return false;
            }
        }
        true
    }

    fn close(&mut self, token: u64) {
        let Some(peer) = self.peers.remove(&token) else { return };
        // Closing the socket (dropping the link) takes it out of the epoll set.
        if let Some(identity) = peer.identity {
            if self.by_identity.get(&identity) == Some(&token) {
                self.by_identity.remove(&identity);
            }
            self.lost.push(identity);
        }
    }

    /// The identities whose connections were lost since the last call.
    pub fn take_lost(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.lost)
    }

    /// PINGs the connections due one, and closes those that did not answer a PING in time or have not
    /// finished their handshake in [`HANDSHAKE_TIMEOUT`]; returns when it has something to do next.
    /// Cheap to call often: before then it does nothing.
    pub fn keep_alive(&mut self, now: Instant) -> Instant {
        if now < self.next_due {
            return self.next_due;
        }
        let mut next = now + self.handshake_timeout;
        if let Some(until) = self.accept_paused_until {
            if now >= until && self.epoll.add(self.listener.as_raw_fd(), LISTENER, libc::EPOLLIN).is_ok() {
                self.accept_paused_until = None;
            } else {
                let until = until.max(now + ACCEPT_PAUSE * u32::from(now >= until));
                self.accept_paused_until = Some(until);
                next = next.min(until);
            }
        }
        let (mut silent, mut ping) = (Vec::new(), Vec::new());
        for (&token, peer) in &mut self.peers {
            if !peer.link.is_ready() {
                let due = peer.accepted + self.handshake_timeout;
                if now >= due {
                    silent.push(token);
                }
                next = next.min(due);
                continue;
            }
            if peer.answer_by.is_some_and(|t| now >= t) {
                silent.push(token);
                continue;
            }
            if !self.ping_interval.is_zero() {
                if now >= peer.last_ping + self.ping_interval {
                    peer.link.queue_ping();
                    peer.last_ping = now;
                    peer.answer_by.get_or_insert(now + self.ping_timeout);
                    ping.push(token);
                }
                next = next.min(peer.last_ping + self.ping_interval);
            }
            if let Some(t) = peer.answer_by {
                next = next.min(t);
            }
        }
        for token in silent {
            self.close(token);
        }
        for token in ping {
            self.flush(token);
        }
        self.next_due = next.max(now + Duration::from_millis(1));
        self.next_due
    }

    /// How many connections are open (handshake done or not).
    pub fn connections(&self) -> usize {
        self.peers.len()
    }
}

/// A start for the anonymous identities that differs between runs (libzmq starts at a random number
/// too), so that identities of an earlier run of the frontend are not taken for current ones.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState's keys are random per process.
    std::collections::hash_map::RandomState::new().build_hasher().finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dealer(context: &zmq::Context, endpoint: &str) -> zmq::Socket {
        let socket = context.socket(zmq::DEALER).unwrap();
        socket.set_linger(0).unwrap();
        socket.set_rcvtimeo(5000).unwrap();
        socket.connect(endpoint).unwrap();
        socket
    }

    /// Polls and reads until a message comes (5 s at most).
    fn recv(router: &mut Router) -> Received {
        let started = Instant::now();
        loop {
            if let Some(received) = router.recv() {
                return received;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "no message within 5 s");
            router.poll(Duration::from_millis(10));
        }
    }

    fn lost_within(router: &mut Router, timeout: Duration) -> Vec<Vec<u8>> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            router.poll(Duration::from_millis(10));
            while router.recv().is_some() {}
            router.keep_alive(Instant::now());
            let lost = router.take_lost();
            if !lost.is_empty() {
                return lost;
            }
        }
        Vec::new()
    }

    #[test]
    fn messages_go_both_ways_with_libzmq_dealers_each_under_its_identity() {
        let context = zmq::Context::new();
        let mut router = Router::bind("tcp://127.0.0.1:0", Duration::ZERO, Duration::ZERO).unwrap();
        let endpoint = router.endpoint().unwrap();
        let (a, b) = (dealer(&context, &endpoint), dealer(&context, &endpoint));
        let big = vec![5u8; 300_000];
        a.send_multipart([b"".to_vec(), b"from a".to_vec(), big.clone()], 0).unwrap();
        b.send_multipart([b"".to_vec(), b"from b".to_vec()], 0).unwrap();
        let (first, second) = (recv(&mut router), recv(&mut router));
        let (from_a, from_b) = if first.frames()[1] == b"from a" { (first, second) } else { (second, first) };
        assert_eq!(from_a.frames(), vec![b"".as_slice(), b"from a", &big]);
        assert_eq!(from_b.frames(), vec![b"".as_slice(), b"from b"]);
        assert_ne!(from_a.identity, from_b.identity);
        assert_eq!(from_a.identity.len(), 5);
        assert!(router.send(&from_b.identity, [b"".as_slice(), b"to b", &big].into_iter()));
        assert!(router.send(&from_a.identity, [b"to a".as_slice()].into_iter()));
        // Big messages go out as the socket takes them, between polls.
        let reader = std::thread::spawn(move || (a.recv_multipart(0).unwrap(), b.recv_multipart(0).unwrap()));
        let started = Instant::now();
        while !reader.is_finished() && started.elapsed() < Duration::from_secs(5) {
            router.poll(Duration::from_millis(10));
        }
        let (to_a, to_b) = reader.join().unwrap();
        assert_eq!(to_a, vec![b"to a".to_vec()]);
        assert_eq!(to_b, vec![vec![], b"to b".to_vec(), big]);
        assert!(!router.send(b"\x00nobody", [b"x".as_slice()].into_iter()), "no such identity");
    }

    #[test]
    fn a_closed_connection_is_reported_once_after_its_messages() {
        let context = zmq::Context::new();
        let mut router = Router::bind("tcp://127.0.0.1:0", Duration::ZERO, Duration::ZERO).unwrap();
        let endpoint = router.endpoint().unwrap();
        let socket = dealer(&context, &endpoint);
        for i in 0..3u8 {
            socket.send_multipart([vec![i]], 0).unwrap();
        }
        let identity = recv(&mut router).identity;
        drop(socket);
        std::thread::sleep(Duration::from_millis(100));
        router.poll(Duration::ZERO);
        let rest: Vec<Vec<u8>> = std::iter::from_fn(|| router.recv()).map(|r| r.frames()[0].to_vec()).collect();
        assert_eq!(rest, vec![vec![1], vec![2]], "messages read before the loss");
        assert_eq!(lost_within(&mut router, Duration::from_secs(2)), vec![identity.clone()]);
        assert!(router.take_lost().is_empty());
        assert!(!router.send(&identity, [b"x".as_slice()].into_iter()));
        assert_eq!(router.connections(), 0);
    }

    #[test]
    fn a_peer_that_does_not_answer_pings_is_lost_and_one_that_does_is_kept() {
        let context = zmq::Context::new();
        let mut router = Router::bind("tcp://127.0.0.1:0", Duration::from_millis(50), Duration::from_millis(200)).unwrap();
        let endpoint = router.endpoint().unwrap();
        let alive = dealer(&context, &endpoint);
        alive.send(b"alive".as_slice(), 0).unwrap();
        let alive_identity = recv(&mut router).identity;
        // A peer that completes the handshake, then says nothing more and reads nothing.
        let mut mute = std::net::TcpStream::connect(router.endpoint().unwrap().trim_start_matches("tcp://")).unwrap();
        let mut hello = crate::zmtp::greeting().to_vec();
        std::io::Write::write_all(&mut mute, &hello).unwrap();
        hello.clear();
        // Our READY only after the router's greeting (as libzmq wants it).
        std::thread::sleep(Duration::from_millis(50));
        router.poll(Duration::ZERO);
        while router.recv().is_some() {}
        crate::zmtp::put_ready(&mut hello, "DEALER", b"");
        crate::zmtp::put_message(&mut hello, [b"mute".as_slice()].into_iter());
        std::io::Write::write_all(&mut mute, &hello).unwrap();
        let mute_identity = recv(&mut router).identity;
        assert_eq!(lost_within(&mut router, Duration::from_secs(3)), vec![mute_identity]);
        assert!(router.send(&alive_identity, [b"still there".as_slice()].into_iter()), "libzmq answers PINGs");
        assert_eq!(alive.recv_bytes(0).unwrap(), b"still there");
    }

    #[test]
    fn a_later_connection_with_the_same_named_identity_takes_it_over() {
        let context = zmq::Context::new();
        let mut router = Router::bind("tcp://127.0.0.1:0", Duration::ZERO, Duration::ZERO).unwrap();
        let endpoint = router.endpoint().unwrap();
        let named = |text: &[u8]| {
            let socket = context.socket(zmq::DEALER).unwrap();
            socket.set_linger(0).unwrap();
            socket.set_rcvtimeo(5000).unwrap();
            socket.set_identity(b"replica-1").unwrap();
            socket.connect(&endpoint).unwrap();
            socket.send(text, 0).unwrap();
            socket
        };
        let first = named(b"first");
        assert_eq!(recv(&mut router).identity, b"replica-1");
        let second = named(b"second");
        let received = recv(&mut router);
        assert_eq!((received.identity.as_slice(), received.frames()), (b"replica-1".as_slice(), vec![b"second".as_slice()]));
        assert_eq!(router.take_lost(), vec![b"replica-1".to_vec()], "the earlier connection, closed");
        assert!(router.send(b"replica-1", [b"to the second".as_slice()].into_iter()));
        assert_eq!(second.recv_bytes(0).unwrap(), b"to the second");
        first.set_rcvtimeo(200).unwrap();
        assert!(first.recv_bytes(0).is_err(), "the first connection was closed");
    }

    #[test]
    fn peers_that_are_not_zmtp_dealers_are_closed_without_a_word() {
        let mut router = Router::bind("tcp://127.0.0.1:0", Duration::ZERO, Duration::ZERO).unwrap();
        let address = router.endpoint().unwrap().trim_start_matches("tcp://").to_owned();
        let mut http = std::net::TcpStream::connect(&address).unwrap();
        std::io::Write::write_all(&mut http, &[b'G'; 100]).unwrap();
        let started = Instant::now();
        while router.connections() > 0 || started.elapsed() < Duration::from_millis(100) {
            assert!(started.elapsed() < Duration::from_secs(5), "the connection stayed open");
            router.poll(Duration::from_millis(10));
            assert!(router.recv().is_none());
        }
        assert!(router.take_lost().is_empty(), "no identity was ever given");
    }

    #[test]
    fn a_connection_that_never_finishes_its_handshake_is_closed() {
        let mut router = Router::bind("tcp://127.0.0.1:0", Duration::ZERO, Duration::ZERO).unwrap();
        router.handshake_timeout = Duration::from_millis(200);
        let address = router.endpoint().unwrap().trim_start_matches("tcp://").to_owned();
        let _idle = std::net::TcpStream::connect(&address).unwrap();
        router.poll(Duration::from_millis(100));
        assert_eq!(router.connections(), 1);
        let started = Instant::now();
        while router.connections() > 0 {
            assert!(started.elapsed() < Duration::from_secs(5), "the idle connection stayed open");
            let due = router.keep_alive(Instant::now());
            router.poll(due.saturating_duration_since(Instant::now()));
        }
        assert!(started.elapsed() >= Duration::from_millis(50), "closed before its time");
        assert!(router.take_lost().is_empty(), "no identity was ever given");
    }

    #[test]
    fn endpoints_name_a_tcp_host_and_port() {
        assert_eq!(bind_address("tcp://127.0.0.1:7000").unwrap(), "127.0.0.1:7000".parse().unwrap());
        assert_eq!(bind_address("tcp://*:7000").unwrap(), "0.0.0.0:7000".parse().unwrap());
        assert_eq!(bind_address("tcp://[::1]:7000").unwrap(), "[::1]:7000".parse().unwrap());
        for bad in ["127.0.0.1:7000", "tcp://127.0.0.1", "tcp://127.0.0.1:x", "ipc:///tmp/s"] {
            assert!(bind_address(bad).is_err(), "{bad}");
        }
    }
}
