//! The engine over real ZeroMQ sockets, with containers played by DEALER threads.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rust_core::engine::{Completion, Engine, EngineConfig, ModelSettings, Status, DEFAULT_HEARTBEAT_TIMEOUT, MAX_SPIN};
use rust_core::rpc::{self, InputType};

fn engine(heartbeat_timeout: Duration) -> Engine {
    Engine::start(EngineConfig {
        rpc_address: "tcp://127.0.0.1:0".into(),
        heartbeat_timeout,
        ..EngineConfig::default()
    })
    .expect("engine starts")
}

/// A container thread: registers, then answers each batch with `answer(inputs)` after `delay`.
struct FakeContainer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeContainer {
    fn start(endpoint: &str, model: &str, delay: Duration, answer: fn(&[Vec<u8>]) -> Vec<Vec<u8>>) -> Self {
        Self::start_raw(endpoint, model, delay, move |msg_id, inputs| rpc::predict_response(msg_id, &answer(inputs)))
    }

    /// Like `start`, but `respond(msg_id, inputs)` makes the whole response message, valid or not.
    fn start_raw(
        endpoint: &str,
        model: &str,
        delay: Duration,
        respond: impl Fn(u32, &[Vec<u8>]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> Self {
        Self::spawn(endpoint, model, delay, Some(Duration::from_millis(100)), respond)
    }

    /// Like `start` with no delay, but it heartbeats only to register: nothing from it wakes an idle
    /// engine, whose own timers must.
    fn start_quiet(endpoint: &str, model: &str, answer: fn(&[Vec<u8>]) -> Vec<Vec<u8>>) -> Self {
        Self::spawn(endpoint, model, Duration::ZERO, None, move |msg_id, inputs| rpc::predict_response(msg_id, &answer(inputs)))
    }

    fn spawn(
        endpoint: &str,
        model: &str,
        delay: Duration,
        idle_heartbeat: Option<Duration>,
        respond: impl Fn(u32, &[Vec<u8>]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> Self {
        let endpoint = endpoint.to_string();
        let model = model.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let ctx = zmq::Context::new();
            let socket = ctx.socket(zmq::DEALER).unwrap();
            socket.set_linger(0).unwrap();
            socket.connect(&endpoint).unwrap();
            socket.send_multipart([vec![], rpc::MSG_HEARTBEAT.to_le_bytes().to_vec()], 0).unwrap();
            let mut last_heartbeat = Instant::now();
            while !stopped.load(Ordering::SeqCst) {
                if socket.poll(zmq::POLLIN, 20).unwrap() == 0 {
                    // Idle containers heartbeat, as the real runtime does.
                    if idle_heartbeat.is_some_and(|every| last_heartbeat.elapsed() > every) {
                        socket.send_multipart([vec![], rpc::MSG_HEARTBEAT.to_le_bytes().to_vec()], 0).unwrap();
                        last_heartbeat = Instant::now();
                    }
                    continue;
                }
                let frames = socket.recv_multipart(0).unwrap();
                let kind = u32::from_le_bytes(frames[2][..4].try_into().unwrap());
                if kind == rpc::MSG_HEARTBEAT {
                    if frames[3] == rpc::HEARTBEAT_REQUEST_METADATA.to_le_bytes() {
                        socket.send_multipart(rpc::new_container(&model, "1", InputType::Doubles), 0).unwrap();
                    }
                    continue;
                }
                let msg_id = u32::from_le_bytes(frames[3][..4].try_into().unwrap());
                let inputs = &frames[7..];
                let until = Instant::now() + delay;
                while Instant::now() < until && !stopped.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(5).min(delay));
                }
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                socket.send_multipart(respond(msg_id, inputs), 0).unwrap();
            }
        });
        FakeContainer { stop, thread: Some(thread) }
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
    }
}

fn sum(inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    inputs
        .iter()
        .map(|i| {
            let s: f64 = i.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).sum();
            format!("{s:?}").into_bytes()
        })
        .collect()
}

fn batch_len(inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    vec![inputs.len().to_string().into_bytes(); inputs.len()]
}

fn fail(inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    vec![[rpc::ERROR_MARKER, b"ValueError: boom"].concat(); inputs.len()]
}

fn doubles(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Submits and wakes the engine, as the query frontend does after each burst.
fn submit(engine: &Engine, token: u64, model: u32, input_type: InputType, input: &[u8], slo: Duration) -> Option<Arc<[u8]>> {
    let hit = engine.submit(token, model, input_type, input, slo);
    engine.wake();
    hit
}

/// Collects completions as the query frontend does: drained when the engine thread publishes them,
/// and read with the answers while the engine says the caller reads those (`read_answers` says false,
/// and does nothing, otherwise).
fn wait_for(engine: &Engine, count: usize, timeout: Duration) -> Vec<Completion> {
    collect(engine, count, timeout, true)
}

/// Like `wait_for`, reading the answers too or not (then only the engine thread's completions come).
fn collect(engine: &Engine, count: usize, timeout: Duration, read_answers: bool) -> Vec<Completion> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < count && start.elapsed() < timeout {
        engine.drain(&mut out);
        if read_answers {
            engine.read_answers(&mut out);
        }
        thread::sleep(Duration::from_millis(1));
    }
    out
}

fn wait_for_replicas(engine: &Engine, n: usize) {
    let start = Instant::now();
    while engine.replicas().len() != n {
        assert!(start.elapsed() < Duration::from_secs(5), "replicas did not register");
        thread::sleep(Duration::from_millis(5));
    }
}

const SLO: Duration = Duration::from_secs(2);

#[test]
fn predicts_then_serves_from_cache() {
    let engine = engine(DEFAULT_HEARTBEAT_TIMEOUT);
    let model = engine.model("sum", "1");
    let _c = FakeContainer::start(engine.rpc_endpoint(), "sum", Duration::ZERO, sum);
    wait_for_replicas(&engine, 1);
    let input = doubles(&[1.0, 2.5]);
    assert!(submit(&engine, 7, model, InputType::Doubles, &input, SLO).is_none());
    let done = wait_for(&engine, 1, SLO);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].token, done[0].status, &*done[0].payload), (7, Status::Ok, b"3.5".as_slice()));
    let hit = submit(&engine, 8, model, InputType::Doubles, &input, SLO);
    assert_eq!(hit.as_deref(), Some(b"3.5".as_slice()));
    assert_eq!(engine.cache_counts(), (2, 1));
}

#[test]
fn inputs_whose_cache_keys_collide_get_their_own_answers() {
    // Keys narrowed to one bit: among 30 inputs, every key is shared by about 15.
    let engine = Engine::start(EngineConfig {
        rpc_address: "tcp://127.0.0.1:0".into(),
        cache_key_bits: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let model = engine.model("sum", "1");
    let _c = FakeContainer::start(engine.rpc_endpoint(), "sum", Duration::from_millis(5), sum);
    wait_for_replicas(&engine, 1);
    let input = |n: u64| doubles(&[n as f64, 0.5]);
    let answer = |token: u64| format!("{:?}", (token % 1000) as f64 + 0.5).into_bytes();
    // Each input twice, all queued together: colliding inputs are never merged into one task.
    for n in 0..30u64 {
        for token in [n, n + 1000] {
            assert!(submit(&engine, token, model, InputType::Doubles, &input(n), SLO).is_none());
        }
    }
    let done = wait_for(&engine, 60, SLO);
    assert_eq!(done.len(), 60);
    for c in &done {
        assert_eq!((c.status, &*c.payload), (Status::Ok, answer(c.token).as_slice()), "token {}", c.token);
    }
    // Again: a cache hit is the input's own answer, and another input's entry under its key is a miss.
    let (mut hits, mut missed) = (0, 0);
    for n in 0..30u64 {
        match submit(&engine, 2000 + n, model, InputType::Doubles, &input(n), SLO) {
            Some(hit) => {
                assert_eq!(&*hit, answer(n).as_slice(), "input {n} was answered from another input's entry");
                hits += 1;
            }
            None => missed += 1,
        }
    }
    assert!(hits >= 1 && missed >= 20, "{hits} hits, {missed} misses");
    let done = wait_for(&engine, missed, SLO);
    assert_eq!(done.len(), missed);
    for c in &done {
        assert_eq!((c.status, &*c.payload), (Status::Ok, answer(c.token).as_slice()), "token {}", c.token);
    }
}

#[test]
fn concurrent_requests_for_one_input_share_one_computation() {
    let engine = engine(DEFAULT_HEARTBEAT_TIMEOUT);
    let model = engine.model("len", "1");
    let _c = FakeContainer::start(engine.rpc_endpoint(), "len", Duration::from_millis(50), batch_len);
    wait_for_replicas(&engine, 1);
    for token in 0..5 {
        submit(&engine, token, model, InputType::Doubles, &doubles(&[1.0]), SLO);
    }
    let done = wait_for(&engine, 5, SLO);
    assert_eq!(done.len(), 5);
    assert!(done.iter().all(|c| c.status == Status::Ok));
    assert_eq!(engine.stats()[model as usize].predictions, 1);
}

#[test]
fn no_replica_answers_at_once() {
    let engine = engine(DEFAULT_HEARTBEAT_TIMEOUT);
    let model = engine.model("absent", "1");
    submit(&engine, 1, model, InputType::Doubles, &doubles(&[1.0]), SLO);
    let done = wait_for(&engine, 1, Duration::from_millis(500));
    assert_eq!(done[0].status, Status::NoModel);
}

#[test]
fn slow_model_times_out_at_the_slo() {
    let engine = engine(DEFAULT_HEARTBEAT_TIMEOUT);
    let model = engine.model("slow", "1");
    let _c = FakeContainer::start(engine.rpc_endpoint(), "slow", Duration::from_millis(300), sum);
    wait_for_replicas(&engine, 1);
    let start = Instant::now();
    submit(&engine, 1, model, InputType::Doubles, &doubles(&[1.0]), Duration::from_millis(50));
    let done = wait_for(&engine, 1, Duration::from_secs(1));
    assert_eq!(done[0].status, Status::Timeout);
    assert!(start.elapsed() < Duration::from_millis(200), "timed out after {:?}", start.elapsed());
}

#[test]
fn fixed_batch_size_is_used_when_saturated() {
    let engine = engine(DEFAULT_HEARTBEAT_TIMEOUT);
    let model = engine.model("fixed", "1");
    engine.configure_model(model, ModelSettings { batch_size: Some(9), batch_wait: Duration::ZERO });
    let _c = FakeContainer::start(engine.rpc_endpoint(), "fixed", Duration::from_millis(2), batch_len);
    wait_for_replicas(&engine, 1);
    for token in 0..450u64 {
        submit(&engine, token, model, InputType::Doubles, &doubles(&[token as f64]), Duration::from_secs(10));
    }
    let done = wait_for(&engine, 450, Duration::from_secs(10));
    assert_eq!(done.len(), 450);
    let nines = done.iter().filter(|c| &*c.payload == b"9").count();
    assert!(nines >= 400, "{nines} of 450 saw a batch of 9");
    assert!(done.iter().all(|c| c.payload.as_ref() <= b"9".as_slice()));
}

#[test]
fn batch_wait_fills_batches() {
    let engine = engine(DEFAULT_HEARTBEAT_TIMEOUT);
    let model = engine.model("wait", "1");
    engine.configure_model(model, ModelSettings { batch_size: Some(4), batch_wait: Duration::from_millis(100) });
    let _c = FakeContainer::start(engine.rpc_endpoint(), "wait", Duration::ZERO, batch_len);
    wait_for_replicas(&engine, 1);
    for token in 0..4u64 {
        submit(&engine, token, model, InputType::Doubles, &doubles(&[token as f64]), SLO);
        thread::sleep(Duration::from_millis(10));
    }
    let done = wait_for(&engine, 4, SLO);
    assert!(done.iter().all(|c| &*c.payload == b"4"), "{done:?}");
}

#[test]
fn model_errors_complete_with_the_message_and_are_not_cached() {
    let engine = engine(DEFAULT_HEARTBEAT_TIMEOUT);
    let model = engine.model("bad", "1");
    let _c = FakeContainer::start(engine.rpc_endpoint(), "bad", Duration::ZERO, fail);
    wait_for_replicas(&engine, 1);
    let input = doubles(&[1.0]);
    submit(&engine, 1, model, InputType::Doubles, &input, SLO);
    let done = wait_for(&engine, 1, SLO);
    assert_eq!((done[0].status, &*done[0].payload), (Status::ModelError, b"ValueError: boom".as_slice()));
    assert!(submit(&engine, 2, model, InputType::Doubles, &input, SLO).is_none());
}

#[test]
fn a_malformed_response_fails_its_batch_at_once_and_the_replica_keeps_serving() {
    let engine = engine(DEFAULT_HEARTBEAT_TIMEOUT);
    let model = engine.model("m", "1");
    // Every other response announces more outputs than it has frames; the others are fine.
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _c = FakeContainer::start_raw(engine.rpc_endpoint(), "m", Duration::ZERO, move |msg_id, inputs| {
        let mut message = rpc::predict_response(msg_id, &sum(inputs));
        if count.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            message.pop();
        }
        message
    });
    wait_for_replicas(&engine, 1);
    let start = Instant::now();
    submit(&engine, 1, model, InputType::Doubles, &doubles(&[1.0]), SLO);
    let done = wait_for(&engine, 1, SLO);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].status, Status::ModelError);
    let message = String::from_utf8_lossy(&done[0].payload).into_owned();
    assert!(message.contains("malformed response"), "{message}");
    assert!(start.elapsed() < SLO / 2, "failed at once, not at the deadline: {:?}", start.elapsed());
    submit(&engine, 2, model, InputType::Doubles, &doubles(&[2.0]), SLO);
    let done = wait_for(&engine, 1, SLO);
    assert_eq!((done[0].status, &*done[0].payload), (Status::Ok, b"2.0".as_slice()), "the replica takes work again");
}

#[test]
fn silent_replica_is_dropped_and_its_batch_goes_to_another() {
    let engine = engine(Duration::from_millis(400));
    let model = engine.model("m", "1");
    let hung = FakeContainer::start(engine.rpc_endpoint(), "m", Duration::from_secs(60), sum);
    wait_for_replicas(&engine, 1);
    submit(&engine, 1, model, InputType::Doubles, &doubles(&[2.0]), Duration::from_secs(5));
    thread::sleep(Duration::from_millis(50));
    let _healthy = FakeContainer::start(engine.rpc_endpoint(), "m", Duration::ZERO, sum);
    let done = wait_for(&engine, 1, Duration::from_secs(4));
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].status, &*done[0].payload), (Status::Ok, b"2.0".as_slice()));
    assert_eq!(engine.replicas().len(), 1);
    hung.stop.store(true, Ordering::SeqCst);
}

#[test]
fn outputs_that_are_not_json_become_strings() {
    use rust_core::engine::json_fragment;
    assert_eq!(&*json_fragment(b"1"), b"1");
    assert_eq!(&*json_fragment(b"[1, 2]"), b"[1, 2]");
    assert_eq!(&*json_fragment(b"{\"a\":1}"), b"{\"a\":1}");
    assert_eq!(&*json_fragment(b"DEFAULT"), b"\"DEFAULT\"");
    assert_eq!(&*json_fragment(b"NaN"), b"\"NaN\"");
    assert_eq!(&*json_fragment(b"say \"hi\""), b"\"say \\\"hi\\\"\"");
    // Only looks like JSON: embedded as a string, so the response stays JSON (found by fuzzing).
    for almost in [b"\"\\ud800\"".as_slice(), b"1e400", b"\"\xff\""] {
        let fragment = json_fragment(almost);
        assert!(serde_json::from_slice::<serde_json::Value>(&fragment).unwrap().is_string(), "{almost:?}");
    }
}

#[test]
fn disconnected_replica_is_dropped_at_the_next_send_not_at_the_heartbeat_timeout() {
    let engine = engine(DEFAULT_HEARTBEAT_TIMEOUT);
    let model = engine.model("m", "1");
    let leaving = FakeContainer::start(engine.rpc_endpoint(), "m", Duration::ZERO, sum);
    // Busy enough that the departed replica is offered work too.
    let _staying = FakeContainer::start(engine.rpc_endpoint(), "m", Duration::from_millis(20), sum);
    wait_for_replicas(&engine, 2);
    drop(leaving); // closes its socket: the ROUTER forgets the peer
    thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    for token in 0..20u64 {
        submit(&engine, token, model, InputType::Doubles, &doubles(&[token as f64]), SLO);
        thread::sleep(Duration::from_millis(2));
    }
    let done = wait_for(&engine, 20, SLO);
    assert_eq!(done.len(), 20);
    assert!(done.iter().all(|c| c.status == Status::Ok), "{done:?}");
    assert!(start.elapsed() < Duration::from_secs(1), "served in {:?}", start.elapsed());
    assert_eq!(engine.replicas().len(), 1);
}

#[test]
fn a_full_queue_refuses_at_once() {
    let engine = Engine::start(EngineConfig {
        rpc_address: "tcp://127.0.0.1:0".into(),
        max_queue: 5,
        ..EngineConfig::default()
    })
    .unwrap();
    let model = engine.model("slow", "1");
    engine.configure_model(model, ModelSettings { batch_size: Some(1), batch_wait: Duration::ZERO });
    let _c = FakeContainer::start(engine.rpc_endpoint(), "slow", Duration::from_millis(200), batch_len);
    wait_for_replicas(&engine, 1);
    submit(&engine, 0, model, InputType::Doubles, &doubles(&[0.0]), SLO);
    thread::sleep(Duration::from_millis(50)); // in flight: the replica is busy for 200 ms
    for token in 1..10u64 {
        submit(&engine, token, model, InputType::Doubles, &doubles(&[token as f64]), SLO);
    }
    let refused = wait_for(&engine, 4, Duration::from_millis(100));
    // One is in flight, five wait in the queue: the other four are refused without waiting.
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(refused.iter().all(|c| c.status == Status::Overloaded && c.token >= 6));
}

#[test]
fn cancelled_requests_are_not_sent_to_the_model() {
    let engine = engine(DEFAULT_HEARTBEAT_TIMEOUT);
    let model = engine.model("m", "1");
    engine.configure_model(model, ModelSettings { batch_size: Some(1), batch_wait: Duration::ZERO });
    let _c = FakeContainer::start(engine.rpc_endpoint(), "m", Duration::from_millis(100), batch_len);
    wait_for_replicas(&engine, 1);
    for token in 0..4u64 {
        submit(&engine, token, model, InputType::Doubles, &doubles(&[token as f64]), SLO);
    }
    engine.cancel(vec![1, 2]);
    let done = wait_for(&engine, 2, Duration::from_secs(1));
    let tokens: Vec<u64> = done.iter().map(|c| c.token).collect();
    assert_eq!(tokens, [0, 3]);
    thread::sleep(Duration::from_millis(150));
    assert_eq!(engine.stats()[model as usize].predictions, 2, "the cancelled inputs never reached the model");
}

#[test]
fn a_replica_whose_connection_closes_mid_batch_is_dropped_at_once_and_its_batch_resent() {
    let engine = engine(DEFAULT_HEARTBEAT_TIMEOUT);
    let model = engine.model("m", "1");
    let dying = FakeContainer::start(engine.rpc_endpoint(), "m", Duration::from_secs(60), sum);
    wait_for_replicas(&engine, 1);
    submit(&engine, 1, model, InputType::Doubles, &doubles(&[2.0, 0.5]), Duration::from_secs(10));
    thread::sleep(Duration::from_millis(50)); // in flight at the dying replica, which says nothing
    let _healthy = FakeContainer::start(engine.rpc_endpoint(), "m", Duration::ZERO, sum);
    wait_for_replicas(&engine, 2);
    assert!(wait_for(&engine, 1, Duration::from_millis(200)).is_empty(), "still in flight");
    let start = Instant::now();
    drop(dying); // its socket closes: the TCP connection ends
    let done = wait_for(&engine, 1, Duration::from_secs(5));
    let elapsed = start.elapsed();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].status, &*done[0].payload), (Status::Ok, b"2.5".as_slice()));
    assert!(elapsed < Duration::from_secs(1), "resent after {elapsed:?}, not at the heartbeat timeout");
    assert_eq!(engine.replicas().len(), 1);
}

#[test]
fn a_registration_from_a_connection_already_gone_leaves_no_ghost() {
    let engine = engine(DEFAULT_HEARTBEAT_TIMEOUT);
    let _model = engine.model("m", "1");
    let ctx = zmq::Context::new();
    for _ in 0..5 {
        let socket = ctx.socket(zmq::DEALER).unwrap();
        socket.set_linger(1000).unwrap(); // what is sent before the close still goes out
        socket.connect(engine.rpc_endpoint()).unwrap();
        socket.send_multipart([vec![], rpc::MSG_HEARTBEAT.to_le_bytes().to_vec()], 0).unwrap();
        let reply = socket.recv_multipart(0).unwrap();
        assert_eq!(reply[3], rpc::HEARTBEAT_REQUEST_METADATA.to_le_bytes());
        // Registers and leaves at once: the engine may read the registration before or after the loss.
        socket.send_multipart(rpc::new_container("m", "1", InputType::Doubles), 0).unwrap();
        drop(socket);
    }
    let start = Instant::now();
    while !engine.replicas().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(2), "ghost replicas: {:?}", engine.replicas());
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(200));
    assert!(engine.replicas().is_empty(), "a ghost came back: {:?}", engine.replicas());
    // A container that connects again registers as usual.
    let _back = FakeContainer::start(engine.rpc_endpoint(), "m", Duration::ZERO, sum);
    wait_for_replicas(&engine, 1);
}

#[test]
fn a_container_that_reconnects_registers_again_as_a_new_replica() {
    let engine = engine(DEFAULT_HEARTBEAT_TIMEOUT);
    let model = engine.model("m", "1");
    let first = FakeContainer::start(engine.rpc_endpoint(), "m", Duration::ZERO, sum);
    wait_for_replicas(&engine, 1);
    drop(first);
    let start = Instant::now();
    while !engine.replicas().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(1), "the closed replica was not dropped");
        thread::sleep(Duration::from_millis(2));
    }
    let _second = FakeContainer::start(engine.rpc_endpoint(), "m", Duration::ZERO, sum);
    wait_for_replicas(&engine, 1);
    assert_eq!(engine.replicas()[0].replica_id, 1, "a new replica");
    submit(&engine, 1, model, InputType::Doubles, &doubles(&[1.0]), SLO);
    assert_eq!(wait_for(&engine, 1, SLO)[0].status, Status::Ok);
}

/// A TCP relay between containers and the engine that can go dark: it stops passing bytes but
/// keeps both connections open, as a host that vanished without a FIN.
struct Relay {
    endpoint: String,
    dark: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl Relay {
    fn start(upstream: &str) -> Relay {
        let upstream = upstream.trim_start_matches("tcp://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
        let (dark, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (dark2, done2) = (dark.clone(), done.clone());
        thread::spawn(move || {
            while !done2.load(Ordering::SeqCst) {
                let Ok((down, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                down.set_nonblocking(false).unwrap();
                let up = TcpStream::connect(&upstream).unwrap();
                for (from, to) in [(down.try_clone().unwrap(), up.try_clone().unwrap()), (up, down)] {
                    let (dark, done) = (dark2.clone(), done2.clone());
                    thread::spawn(move || Self::pump(from, to, &dark, &done));
                }
            }
        });
        Relay { endpoint, dark, done }
    }

    fn pump(mut from: TcpStream, mut to: TcpStream, dark: &AtomicBool, done: &AtomicBool) {
        from.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let mut buf = [0u8; 65536];
        while !done.load(Ordering::SeqCst) {
            if dark.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(10)); // holds both sockets open, passes nothing
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_peer_that_vanishes_without_closing_is_dropped_at_the_ping_timeout() {
    let engine = Engine::start(EngineConfig {
        rpc_address: "tcp://127.0.0.1:0".into(),
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(300),
        ..EngineConfig::default() // the heartbeat timeout of 30 s plays no part
    })
    .unwrap();
    let model = engine.model("m", "1");
    let relay = Relay::start(engine.rpc_endpoint());
    let far = FakeContainer::start(&relay.endpoint, "m", Duration::from_secs(60), sum);
    wait_for_replicas(&engine, 1);
    submit(&engine, 1, model, InputType::Doubles, &doubles(&[4.0]), Duration::from_secs(10));
    thread::sleep(Duration::from_millis(50));
    let _near = FakeContainer::start(engine.rpc_endpoint(), "m", Duration::ZERO, sum);
    wait_for_replicas(&engine, 2);
    // Silent in its batch for many ping intervals, its ZeroMQ I/O thread answering the pings: kept.
    assert!(wait_for(&engine, 1, Duration::from_millis(1000)).is_empty(), "still in flight");
    assert_eq!(engine.replicas().len(), 2);
    let start = Instant::now();
    relay.dark.store(true, Ordering::SeqCst);
    let done = wait_for(&engine, 1, Duration::from_secs(5));
    let elapsed = start.elapsed();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].status, &*done[0].payload), (Status::Ok, b"4.0".as_slice()));
    assert!(elapsed >= Duration::from_millis(250), "dropped before the ping timeout: {elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "resent after {elapsed:?}");
    assert_eq!(engine.replicas().len(), 1);
    far.stop.store(true, Ordering::SeqCst);
}

/// The tids of this process's engine threads.
fn engine_threads() -> Vec<u32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
            (name.trim() == "clipper-engine").then_some(tid)
        })
        .collect()
}

/// An engine started with `spin`, and its thread's tid (other tests start engines at the same time:
/// retried until exactly one new engine thread appeared).
fn engine_with_thread(spin: bool) -> (Engine, u32) {
    loop {
        let before = engine_threads();
        let engine =
            Engine::start(EngineConfig { rpc_address: "tcp://127.0.0.1:0".into(), spin, ..EngineConfig::default() })
                .unwrap();
        thread::sleep(Duration::from_millis(5));
        let new: Vec<u32> = engine_threads().into_iter().filter(|t| !before.contains(t)).collect();
        if let [tid] = new[..] {
            return (engine, tid);
        }
    }
}

/// CPU time a thread of this process has run (`/proc/.../schedstat`, nanoseconds).
fn thread_runtime(tid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).unwrap();
    Duration::from_nanos(stat.split_whitespace().next().unwrap().parse().unwrap())
}

/// The engine thread's CPU time over `n` requests, one at a time, to a model that answers after 5 ms.
fn engine_cpu_over_slow_requests(spin: bool, n: u64) -> Duration {
    let (engine, tid) = engine_with_thread(spin);
    let model = engine.model("slow", "1");
    let _c = FakeContainer::start(engine.rpc_endpoint(), "slow", Duration::from_millis(5), sum);
    wait_for_replicas(&engine, 1);
    let start = thread_runtime(tid);
    for i in 0..n {
        assert!(submit(&engine, i, model, InputType::Doubles, &doubles(&[i as f64]), SLO).is_none());
        assert_eq!(wait_for(&engine, 1, SLO).len(), 1);
    }
    thread_runtime(tid) - start
}

#[test]
fn with_spin_off_the_engine_sleeps_while_a_small_batch_is_in_flight() {
    // With the spin on, the engine polls for up to 300 µs after sending each batch of one; off, it
    // sleeps until the answer. So the spin adds up to 20 x 300 µs of CPU; at least a quarter of that is
    // asked for: the CPU time of the sleeping engine itself differs from machine to machine (a wake-up
    // costs 50 to 300 µs on some VMs, so no ratio holds everywhere) and is noisy when other tests load
    // the cores (a spin that yields accrues less), hence three tries; were the switch broken, none would pass.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let on = engine_cpu_over_slow_requests(true, 20);
        let off = engine_cpu_over_slow_requests(false, 20);
        if on > off + 20 * MAX_SPIN / 4 {
            return;
        }
        seen.push((on, off));
    }
    panic!("engine CPU over 20 slow requests, (spin on, off): {seen:?}");
}

/// Voluntary context switches of a thread of this process: each is a sleep, and so a wake-up after it.
fn thread_wakeups(tid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:")).unwrap();
    line.trim().parse().unwrap()
}

#[test]
fn lone_requests_do_not_wake_the_sleeping_engine_thread() {
    // Spin off, one request at a time: the engine thread sleeps between them. The caller's wake takes
    // the request and sends its batch itself, and the caller reads the answer, so the thread wakes
    // only for its timers (a PING a second, the SLO timer its first request set). The old ways
    // measure 2 per request (the thread took each request and read each answer) and 1 (it read each
    // answer); the bar is a quarter per request, for the load of other tests.
    let (engine, tid) = engine_with_thread(false);
    let model = engine.model("lone", "1");
    let _c = FakeContainer::start(engine.rpc_endpoint(), "lone", Duration::from_millis(2), sum);
    wait_for_replicas(&engine, 1);
    let n = 40;
    let start = thread_wakeups(tid);
    for i in 0..n {
        assert!(submit(&engine, i, model, InputType::Doubles, &doubles(&[i as f64]), SLO).is_none());
        assert!(engine.wake(), "at low load the caller reads the answers");
        let done = wait_for(&engine, 1, SLO);
        assert_eq!(done[0].status, Status::Ok, "{done:?}");
    }
    let wakeups = thread_wakeups(tid) - start;
    assert!(wakeups < n / 4, "{wakeups} wake-ups of the engine thread for {n} requests");
}

#[test]
fn under_load_the_engine_thread_reads_the_answers_again() {
    let (engine, _) = engine_with_thread(false);
    let model = engine.model("load", "1");
    let _c = FakeContainer::start(engine.rpc_endpoint(), "load", Duration::from_millis(2), batch_len);
    wait_for_replicas(&engine, 1);
    submit(&engine, 0, model, InputType::Doubles, &doubles(&[0.0]), SLO);
    assert!(engine.wake(), "a lone request: the caller reads its answer");
    assert_eq!(wait_for(&engine, 1, SLO).len(), 1);
    // Bursts of 16: as AIMD lets batches grow past what the caller sends itself, the thread takes over,
    // and then the completions come through the eventfd alone (the caller no longer reads answers).
    // Each burst within 300 ms (the model takes 2 ms a batch): the thread's timers (a PING a second,
    // the SLO) would read what nobody else does, but later.
    let mut token = 1;
    for burst in 0..50 {
        for _ in 0..16 {
            assert!(engine.submit(token, model, InputType::Doubles, &doubles(&[token as f64]), SLO).is_none());
            token += 1;
        }
        let caller_reads = engine.wake();
        let done = collect(&engine, 16, Duration::from_millis(300), caller_reads);
        assert!(done.len() == 16 && done.iter().all(|c| c.status == Status::Ok), "burst {burst}: {done:?}");
        if !caller_reads {
            return;
        }
    }
    panic!("the caller still reads the answers after 50 bursts of 16");
}

#[test]
fn with_spin_off_a_request_sent_by_the_caller_still_times_out_at_its_slo() {
    // The sleeping thread would next wake for a PING, a second away: the caller's step sets the timer.
    let (engine, _) = engine_with_thread(false);
    let model = engine.model("slow", "1");
    let _c = FakeContainer::start(engine.rpc_endpoint(), "slow", Duration::from_millis(1500), sum);
    wait_for_replicas(&engine, 1);
    let start = Instant::now();
    submit(&engine, 1, model, InputType::Doubles, &doubles(&[1.0]), Duration::from_millis(50));
    let done = wait_for(&engine, 1, Duration::from_secs(2));
    assert_eq!(done[0].status, Status::Timeout);
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(50) && elapsed < Duration::from_millis(400), "{elapsed:?}");
}

#[test]
fn with_spin_off_a_batch_wait_begun_by_the_caller_still_ends_on_time() {
    // As above: the sleeping thread's next wake-up is a PING, a second away.
    let (engine, _) = engine_with_thread(false);
    let model = engine.model("wait", "1");
    engine.configure_model(model, ModelSettings { batch_size: Some(4), batch_wait: Duration::from_millis(50) });
    let _c = FakeContainer::start_quiet(engine.rpc_endpoint(), "wait", batch_len);
    wait_for_replicas(&engine, 1);
    let start = Instant::now();
    submit(&engine, 1, model, InputType::Doubles, &doubles(&[1.0]), SLO);
    let done = wait_for(&engine, 1, SLO);
    let elapsed = start.elapsed();
    assert_eq!(&*done[0].payload, b"1", "a batch of one after the wait");
    assert!(elapsed >= Duration::from_millis(50) && elapsed < Duration::from_millis(400), "{elapsed:?}");
}

#[test]
fn shutdown_closes_the_rpc_port_while_the_handle_lives() {
    let engine = engine(DEFAULT_HEARTBEAT_TIMEOUT);
    let address = engine.rpc_endpoint().trim_start_matches("tcp://").to_string();
    engine.shutdown();
    TcpListener::bind(&address).expect("the port is free once the engine has stopped");
}
