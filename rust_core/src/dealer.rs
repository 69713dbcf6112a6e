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

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::RawFd;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::link::{tcp_endpoint, Link};
use crate::zmtp;

/// How long to wait before connecting again (libzmq's default `ZMQ_RECONNECT_IVL`).
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);
/// The longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Dealer {
    /// Where to connect: resolved at each connection attempt.
    host: String,
    port: u16,
    link: Option<Link>,
    /// Messages sent while there is no connection, encoded: they go first on the next one.
    queued: Vec<u8>,
    retry_at: Instant,
    /// When a caller last used the connection (see [`KeptDealer`]).
    last_call: Instant,
}

impl Dealer {
    /// A DEALER for `endpoint` (`tcp://host:port`); it connects on the first call to `wait`.
    pub fn new(endpoint: &str) -> io::Result<Dealer> {
        let (host, port) = tcp_endpoint(endpoint)?;
        let now = Instant::now();
        Ok(Dealer { host, port, link: None, queued: Vec::new(), retry_at: now, last_call: now })
    }

    /// Whether the handshake with the peer is done.
    pub fn is_connected(&self) -> bool {
        self.link.as_ref().is_some_and(Link::is_ready)
    }

    /// Queues a message and writes what the socket takes now; never blocks. The rest is written by
    /// the next calls.
    pub fn send<'a>(&mut self, frames: impl ExactSizeIterator<Item = &'a [u8]>) {
        self.last_call = Instant::now();
        let Some(link) = &mut self.link else { return zmtp::put_message(&mut self.queued, frames) };
        link.queue(frames);
        if link.flush().is_err() {
            self.disconnect();
        }
    }

    /// Waits until a whole message has arrived (true) or `timeout` has passed (false), first polling
    /// without sleeping for up to `spin`. The message is [`Dealer::message`] until the next call.
    /// Connection losses are not errors: the connection is made again. A peer that breaks the
    /// protocol is one (its connection is dropped, and made again at the next call).
    pub fn wait(&mut self, timeout: Duration, spin: Duration) -> io::Result<bool> {
        let found = self.wait_inner(timeout, spin);
        self.last_call = Instant::now();
        found
    }

    fn wait_inner(&mut self, timeout: Duration, spin: Duration) -> io::Result<bool> {
        if let Some(link) = &mut self.link {
            link.release_message();
        }
        let start = Instant::now();
        let (deadline, spin_until) = (start + timeout, start + spin.min(timeout));
        loop {
            match self.link.as_mut().map(Dealer::step) {
                Some(Ok(Some(found))) => {
                    if found {
                        return Ok(true);
                    }
                }
                Some(Ok(None)) => continue, // bytes came: parse them
                Some(Err(e)) => {
                    self.disconnect();
                    if e.kind() == io::ErrorKind::InvalidData {
                        return Err(e);
                    }
                }
                None => {
                    if self.connect(deadline) {
                        continue;
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            if now < spin_until {
                std::hint::spin_loop();
                continue;
            }
            match &self.link {
                Some(link) => poll(link.fd(), link.has_output(), deadline - now),
                None => std::thread::sleep(self.retry_at.min(deadline).saturating_duration_since(now)),
            }
        }
    }

    /// Parses, writes and reads once: Some(true) when a message is there, None when bytes came (parse
    /// again), Some(false) when there is nothing to do but wait. An error of kind `InvalidData` is a
    /// protocol error; any other, a lost connection.
    fn step(link: &mut Link) -> io::Result<Option<bool>> {
        let found = link.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        link.flush()?; // our READY, a PONG, or what the socket did not take at once
        if found {
            return Ok(Some(link.hand_out()));
        }
        Ok(if link.fill()? { None } else { Some(false) })
    }

    /// The frames of the message [`Dealer::wait`] found (None, or no frames, if it found none).
    pub fn message(&self) -> Option<impl ExactSizeIterator<Item = &[u8]>> {
        self.link.as_ref().map(Link::message)
    }

    /// Reads what has come and answers PINGs, without taking a message: what [`KeptDealer`]'s thread
    /// does while nobody calls.
    fn keep(&mut self) {
        let Some(link) = &mut self.link else { return };
        let lost = loop {
            match link.fill() {
                Ok(true) => {}
                Ok(false) => break false,
                Err(_) => break true,
            }
        };
        if lost || link.parse().is_err() || link.flush().is_err() {
            self.disconnect(); // the owner's next wait connects again
        }
    }

    /// Drops the connection (queued output too); a later `wait` connects again.
    pub fn close(&mut self) {
        self.disconnect();
        self.queued.clear();
    }

    /// Connects if it is time to: whether a connection was made.
    fn connect(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now < self.retry_at || now >= deadline {
            return false;
        }
        self.retry_at = now + RECONNECT_INTERVAL;
        let timeout = (deadline - now).clamp(Duration::from_millis(1), CONNECT_TIMEOUT);
        let address = (self.host.as_str(), self.port).to_socket_addrs().ok().and_then(|mut a| a.next());
        let stream = address.and_then(|address| TcpStream::connect_timeout(&address, timeout).ok());
        let Some(Ok(mut link)) = stream.map(|s| Link::new(s, "DEALER", &[b"ROUTER"])) else { return false };
        link.queue_encoded(&std::mem::take(&mut self.queued));
        self.link = Some(link);
        true
    }

    fn disconnect(&mut self) {
        // What was queued for this connection goes with it (see the module's documentation).
        self.link = None;
        self.retry_at = Instant::now() + RECONNECT_INTERVAL;
    }
}

/// How often [`KeptDealer`]'s thread looks, and how long a connection must have gone unused before
/// it steps in (the frontend's ZMTP heartbeat timeout is 3 s by default).
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

/// Sleeps until `fd` is readable (or writable, with `write`), or `timeout` has passed.
fn poll(fd: RawFd, write: bool, timeout: Duration) {
    let events = libc::POLLIN | if write { libc::POLLOUT } else { 0 };
    let mut fd = libc::pollfd { fd, events, revents: 0 };
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask; EINTR and errors just end the wait.
    unsafe { libc::ppoll(&mut fd, 1, &timeout, std::ptr::null()) };
}

#[cfg(test)]
mod tests {
    use std::io::Write;

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
        dealer.message().unwrap().map(<[u8]>::to_vec).collect()
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
