//! The engine: one native thread that owns the ZeroMQ ROUTER, the per-model queues, the replica
//! table and the deadlines. Callers submit requests through a channel and collect completions in
//! bulk; an eventfd tells them when completions are waiting.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::aimd::{Aimd, AimdConfig};
use crate::cache::{cache_key, PredictionCache};
use crate::eventfd::EventFd;
use crate::rpc::{self, Inbound, InputType};
use crate::stats::Window;

/// The defaults of [`EngineConfig`]; the Python module exports them, and every layer above reads them
/// from there.
pub const DEFAULT_RPC_ADDRESS: &str = "tcp://127.0.0.1:7000";
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_QUEUE: usize = 10_000;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// ZeroMQ endpoint the ROUTER binds, e.g. `tcp://127.0.0.1:7000`.
    pub rpc_address: String,
    pub cache_bytes: usize,
    /// Replicas silent for longer are dropped and their in-flight work requeued.
    pub heartbeat_timeout: Duration,
    pub aimd: AimdConfig,
    /// Requests a model's queue holds at most; past it, requests are refused (`Status::Overloaded`).
    pub max_queue: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            rpc_address: DEFAULT_RPC_ADDRESS.into(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            aimd: AimdConfig::default(),
            max_queue: DEFAULT_MAX_QUEUE,
        }
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The payload is the model's output as a JSON fragment.
    Ok = 0,
    /// The SLO passed before any answer.
    Timeout = 1,
    /// The model has no connected replica.
    NoModel = 2,
    /// The model failed the batch; the payload is its error message.
    ModelError = 3,
    /// The model's queue is full: the request was refused at once, without waiting.
    Overloaded = 4,
}

impl Status {
    /// Every status, in code order.
    pub const ALL: [Status; 5] = [Status::Ok, Status::Timeout, Status::NoModel, Status::ModelError, Status::Overloaded];

    /// The status's name as Python sees it (`clipper.rust_core.STATUS_<NAME>`).
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Timeout => "timeout",
            Status::NoModel => "no_model",
            Status::ModelError => "model_error",
            Status::Overloaded => "overloaded",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Completion {
    pub token: u64,
    pub status: Status,
    pub payload: Arc<[u8]>,
}

/// Per-model batching settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModelSettings {
    /// A fixed batch size; `None` lets AIMD choose per replica.
    pub batch_size: Option<usize>,
    /// How long a replica waits for a batch to fill (delayed batching).
    pub batch_wait: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub model: u32,
    pub replica_id: u32,
    pub input_type: InputType,
}

#[derive(Clone, Debug, Default)]
pub struct ModelStats {
    pub predictions: u64,
    pub batches: u64,
    pub queued: usize,
    pub replicas: usize,
    pub cache_lookups: u64,
    pub cache_hits: u64,
    pub batch_sizes: Window,
    /// Batch round-trip latency in microseconds.
    pub latencies_us: Window,
}

struct ModelName {
    name: String,
    version: String,
}

/// State the caller's threads and the engine thread share.
struct Shared {
    cache: Mutex<PredictionCache>,
    completions: Mutex<Vec<Completion>>,
    completion_fd: EventFd,
    wake_fd: EventFd,
    sleeping: AtomicBool,
    models: Mutex<Vec<ModelName>>,
    stats: Mutex<Vec<ModelStats>>,
    replicas: Mutex<Vec<ReplicaInfo>>,
}

enum Command {
    Predict(Task, u64),
    Configure(u32, ModelSettings),
    Cancel(Vec<u64>),
    Shutdown,
}

/// Handle to a running engine; dropping it stops the engine thread.
pub struct Engine {
    shared: Arc<Shared>,
    commands: Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
    rpc_endpoint: String,
}

impl Engine {
    /// Binds the RPC socket and starts the engine thread.
    pub fn start(config: EngineConfig) -> io::Result<Engine> {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::ROUTER).map_err(io::Error::from)?;
        socket.set_linger(0).map_err(io::Error::from)?;
        socket.set_router_handover(true).map_err(io::Error::from)?;
        // Sending to a container that has gone fails at once, instead of vanishing silently.
        socket.set_router_mandatory(true).map_err(io::Error::from)?;
        socket.bind(&config.rpc_address).map_err(|e| {
            io::Error::new(io::ErrorKind::AddrInUse, format!("cannot bind {}: {e}", config.rpc_address))
        })?;
        let rpc_endpoint = socket
            .get_last_endpoint()
            .map_err(io::Error::from)?
            .unwrap_or_else(|_| config.rpc_address.clone());
        let shared = Arc::new(Shared {
            cache: Mutex::new(PredictionCache::new(config.cache_bytes)),
            completions: Mutex::new(Vec::new()),
            completion_fd: EventFd::new()?,
            wake_fd: EventFd::new()?,
            sleeping: AtomicBool::new(false),
            models: Mutex::new(Vec::new()),
            stats: Mutex::new(Vec::new()),
            replicas: Mutex::new(Vec::new()),
        });
        let (commands, receiver) = crossbeam_channel::unbounded();
        let worker = Worker::new(config, shared.clone(), receiver, socket);
        let thread = std::thread::Builder::new()
            .name("clipper-engine".into())
            .spawn(move || worker.run())?;
        Ok(Engine { shared, commands, thread: Mutex::new(Some(thread)), rpc_endpoint })
    }

    /// The endpoint the RPC socket is bound to (with the real port when 0 was asked).
    pub fn rpc_endpoint(&self) -> &str {
        &self.rpc_endpoint
    }

    /// The id of a model version, interned on first use.
    pub fn model(&self, name: &str, version: &str) -> u32 {
        intern_model(&self.shared, name, version)
    }

    pub fn model_name(&self, model: u32) -> Option<(String, String)> {
        let models = self.shared.models.lock();
        models.get(model as usize).map(|m| (m.name.clone(), m.version.clone()))
    }

    pub fn configure_model(&self, model: u32, settings: ModelSettings) {
        self.send(Command::Configure(model, settings));
    }

    /// Submits one prediction. A cache hit returns the output at once; otherwise the request
    /// completes later under `token` (see [`Engine::drain`]). The engine thread picks the
    /// request up at its next wake-up: call [`Engine::wake`] once after a burst of submits.
    pub fn submit(&self, token: u64, model: u32, input_type: InputType, input: &[u8], slo: Duration) -> Option<Arc<[u8]>> {
        let key = cache_key(model, input);
        if let Some(hit) = self.shared.cache.lock().get(key) {
            return Some(hit);
        }
        let now = Instant::now();
        let task = Task {
            deadline: now + slo,
            enqueued: now,
            slo,
            key,
            model,
            input_type,
            input: input.to_vec(),
        };
        // The engine thread lives as long as this handle; a send cannot fail before shutdown.
        let _ = self.commands.send(Command::Predict(task, token));
        None
    }

    fn send(&self, command: Command) {
        let _ = self.commands.send(command);
        self.wake();
    }

    /// Wakes the engine thread if it sleeps, so that it takes the submitted requests.
    pub fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.shared.sleeping.swap(false, Ordering::SeqCst) {
            self.shared.wake_fd.notify();
        }
    }

    /// Withdraws submitted requests (their client has gone): they complete never, and work that
    /// only they were waiting for is not sent to a model.
    pub fn cancel(&self, tokens: Vec<u64>) {
        self.send(Command::Cancel(tokens));
    }

    /// The file descriptor that becomes readable when completions are waiting.
    pub fn completion_fd(&self) -> RawFd {
        self.shared.completion_fd.fd()
    }

    /// Moves every waiting completion into `out`.
    pub fn drain(&self, out: &mut Vec<Completion>) {
        self.shared.completion_fd.clear();
        out.append(&mut self.shared.completions.lock());
    }

    pub fn stats(&self) -> Vec<ModelStats> {
        let mut stats = self.shared.stats.lock().clone();
        stats.resize_with(self.shared.models.lock().len(), ModelStats::default);
        stats
    }

    pub fn cache_counts(&self) -> (u64, u64) {
        self.shared.cache.lock().counts()
    }

    pub fn replicas(&self) -> Vec<ReplicaInfo> {
        self.shared.replicas.lock().clone()
    }

    /// Stops the engine thread; outstanding requests are dropped without completion.
    pub fn shutdown(&self) {
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            self.send(Command::Shutdown);
            let _ = thread.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn intern_model(shared: &Shared, name: &str, version: &str) -> u32 {
    let mut models = shared.models.lock();
    if let Some(i) = models.iter().position(|m| m.name == name && m.version == version) {
        return i as u32;
    }
    models.push(ModelName { name: name.into(), version: version.into() });
    (models.len() - 1) as u32
}

/// One queued prediction: the work a replica is sent. Requests for the same key share it.
struct Task {
    deadline: Instant,
    enqueued: Instant,
    slo: Duration,
    key: u64,
    model: u32,
    input_type: InputType,
    input: Vec<u8>,
}

impl PartialEq for Task {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline
    }
}
impl Eq for Task {}
impl PartialOrd for Task {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Task {
    /// Reversed, so that the max-heap pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.deadline.cmp(&self.deadline)
    }
}

#[derive(Default)]
struct ModelQueue {
    tasks: BinaryHeap<Task>,
    settings: ModelSettings,
    idle: Vec<Vec<u8>>,
    replicas: usize,
    next_replica_id: u32,
}

struct Batch {
    msg_id: u32,
    tasks: Vec<Task>,
    sent: Instant,
}

struct Replica {
    model: u32,
    replica_id: u32,
    input_type: InputType,
    last_seen: Instant,
    inflight: Option<Batch>,
    aimd: Aimd,
    /// Moving average of recent batch round trips: a queued request with less time left than this
    /// cannot be answered in time by this replica.
    round_trip: Duration,
}

struct Worker {
    config: EngineConfig,
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    socket: zmq::Socket,
    queues: Vec<ModelQueue>,
    replicas: HashMap<Vec<u8>, Replica>,
    /// Live requests: token -> cache key of the task they wait on.
    live: HashMap<u64, u64>,
    /// Tokens waiting on each queued or in-flight key.
    waiters: HashMap<u64, Vec<u64>>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    completed: Vec<Completion>,
    next_msg_id: u32,
    next_liveness_check: Instant,
    running: bool,
}

impl Worker {
    fn new(config: EngineConfig, shared: Arc<Shared>, commands: Receiver<Command>, socket: zmq::Socket) -> Worker {
        Worker {
            config,
            shared,
            commands,
            socket,
            queues: Vec::new(),
            replicas: HashMap::new(),
            live: HashMap::new(),
            waiters: HashMap::new(),
            deadlines: BinaryHeap::new(),
            completed: Vec::new(),
            next_msg_id: 0,
            next_liveness_check: Instant::now(),
            running: true,
        }
    }

    fn run(mut self) {
        while self.running {
            while let Ok(command) = self.commands.try_recv() {
                self.handle_command(command);
            }
            self.receive_all();
            let now = Instant::now();
            self.expire(now);
            if now >= self.next_liveness_check {
                self.drop_silent_replicas(now);
            }
            let wait_until = self.dispatch(now);
            self.publish_completions();
            if !self.running {
                break;
            }
            self.sleep(wait_until);
        }
    }

    fn queue(&mut self, model: u32) -> &mut ModelQueue {
        let i = model as usize;
        if self.queues.len() <= i {
            self.queues.resize_with(i + 1, ModelQueue::default);
        }
        &mut self.queues[i]
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Predict(task, token) => self.enqueue(task, token),
            Command::Configure(model, settings) => self.queue(model).settings = settings,
            Command::Cancel(tokens) => self.cancel(&tokens),
            Command::Shutdown => self.running = false,
        }
    }

    fn enqueue(&mut self, task: Task, token: u64) {
        let hit = self.shared.cache.lock().peek(task.key);
        if let Some(hit) = hit {
            return self.complete(token, Status::Ok, hit);
        }
        let max_queue = self.config.max_queue;
        let queue = self.queue(task.model);
        if queue.replicas == 0 {
            return self.complete(token, Status::NoModel, Arc::from([]));
        }
        if queue.tasks.len() >= max_queue && !self.waiters.contains_key(&task.key) {
            return self.complete(token, Status::Overloaded, Arc::from([]));
        }
        self.live.insert(token, task.key);
        self.deadlines.push(Reverse((task.deadline, token)));
        match self.waiters.entry(task.key) {
            Entry::Occupied(mut e) => e.get_mut().push(token),
            Entry::Vacant(e) => {
                e.insert(vec![token]);
                self.queue(task.model).tasks.push(task);
            }
        }
    }

    /// Forgets requests whose client has gone: tasks nobody waits for any more are not sent.
    fn cancel(&mut self, tokens: &[u64]) {
        for token in tokens {
            if let Some(key) = self.live.remove(token) {
                if let Some(waiting) = self.waiters.get_mut(&key) {
                    waiting.retain(|t| t != token);
                }
            }
        }
    }

    fn complete(&mut self, token: u64, status: Status, payload: Arc<[u8]>) {
        self.completed.push(Completion { token, status, payload });
    }

    /// Completes every live request waiting on `key`.
    fn complete_key(&mut self, key: u64, status: Status, payload: &Arc<[u8]>) {
        for token in self.waiters.remove(&key).unwrap_or_default() {
            if self.live.remove(&token).is_some() {
                self.completed.push(Completion { token, status, payload: payload.clone() });
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, token))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if let Some(key) = self.live.remove(&token) {
                if let Some(tokens) = self.waiters.get_mut(&key) {
                    tokens.retain(|&t| t != token);
                }
                self.complete(token, Status::Timeout, Arc::from([]));
            }
        }
    }

    fn has_waiters(&self, key: u64) -> bool {
        self.waiters.get(&key).is_some_and(|t| !t.is_empty())
    }

    /// Sends a batch to every idle replica that has work; returns when a batch wait ends.
    fn dispatch(&mut self, now: Instant) -> Option<Instant> {
        let mut wait_until: Option<Instant> = None;
        for model in 0..self.queues.len() {
            while let Some(identity) = self.queues[model].idle.pop() {
                let queue = &self.queues[model];
                let Some(oldest) = queue.tasks.peek() else {
                    self.queues[model].idle.push(identity);
                    break;
                };
                let replica = &self.replicas[&identity];
                let size = queue.settings.batch_size.unwrap_or_else(|| replica.aimd.batch_size());
                let finish_by = now + replica.round_trip;
                let fill_by = oldest.enqueued + queue.settings.batch_wait;
                if queue.tasks.len() < size && fill_by > now {
                    wait_until = Some(wait_until.map_or(fill_by, |w| w.min(fill_by)));
                    self.queues[model].idle.push(identity);
                    break;
                }
                let mut tasks = Vec::with_capacity(size.min(queue.tasks.len()));
                let mut late = Vec::new();
                while tasks.len() < size {
                    let Some(task) = self.queues[model].tasks.pop() else { break };
                    if !self.has_waiters(task.key) {
                        // Every request for it has timed out: do not spend a model on it.
                        self.waiters.remove(&task.key);
                    } else if task.deadline < finish_by {
                        late.push(task);
                    } else {
                        tasks.push(task);
                    }
                }
                if tasks.is_empty() {
                    // Only late requests: send a batch of them all the same (the round trip estimate may
                    // be stale, and this batch renews it); the others wait in the queue as before.
                    tasks = late.split_off(late.len().saturating_sub(size));
                    for task in late {
                        self.queues[model].tasks.push(task);
                    }
                } else {
                    // They would miss their deadline in this batch anyway: their defaults now, and the
                    // batch goes to requests that can still make it (goodput under overload).
                    for task in late {
                        self.complete_key(task.key, Status::Timeout, &Arc::from([]));
                    }
                }
                if tasks.is_empty() {
                    self.queues[model].idle.push(identity);
                    continue;
                }
                self.send_batch(identity, tasks, now);
            }
        }
        self.publish_queue_lengths();
        wait_until
    }

    fn send_batch(&mut self, identity: Vec<u8>, tasks: Vec<Task>, now: Instant) {
        let replica = self.replicas.get_mut(&identity).expect("idle replica is registered");
        let input_type = tasks[0].input_type;
        if replica.input_type != input_type {
            let message: Arc<[u8]> = format!(
                "replica {} expects input type {:?} but the request has {:?}",
                replica.replica_id, replica.input_type, input_type
            )
            .into_bytes()
            .into();
            self.queues[replica.model as usize].idle.push(identity);
            for task in tasks {
                self.complete_key(task.key, Status::ModelError, &message);
            }
            return;
        }
        let msg_id = self.next_msg_id;
        self.next_msg_id = self.next_msg_id.wrapping_add(1);
        let inputs: Vec<&[u8]> = tasks.iter().map(|t| t.input.as_slice()).collect();
        let head = rpc::predict_request_head(msg_id, input_type, &inputs);
        let more = zmq::SNDMORE | zmq::DONTWAIT;
        let sent = self.socket.send(&identity, more).is_ok()
            && head.iter().all(|frame| self.socket.send(frame, more).is_ok())
            && inputs.iter().enumerate().all(|(i, input)| {
                let flags = if i + 1 == inputs.len() { zmq::DONTWAIT } else { more };
                self.socket.send(*input, flags).is_ok()
            });
        replica.inflight = Some(Batch { msg_id, tasks, sent: now });
        if !sent {
            // The container has disconnected: its batch goes back to the queue for the others.
            self.drop_replica(&identity, "it disconnected");
        }
    }

    fn receive_all(&mut self) {
        while let Ok(frames) = self.socket.recv_multipart(zmq::DONTWAIT) {
            let Some((identity, rest)) = frames.split_first() else { continue };
            let rest: Vec<&[u8]> = rest.iter().map(Vec::as_slice).collect();
            match rpc::decode_inbound(&rest) {
                Ok(message) => self.handle_inbound(identity, message),
                Err(e) => self.reject_malformed(identity, e),
            }
        }
    }

    /// A message that breaks the protocol. Its sender's batch in flight would wait for an answer that
    /// may never come (and the replica would take no work again): it fails now, with the reason.
    fn reject_malformed(&mut self, identity: &[u8], error: rpc::DecodeError) {
        log_warn(&format!("dropped a malformed RPC message: {error}"));
        let Some(replica) = self.replicas.get_mut(identity) else { return };
        let Some(batch) = replica.inflight.take() else { return };
        let message: Arc<[u8]> =
            format!("replica {} sent a malformed response: {error}", replica.replica_id).into_bytes().into();
        self.queues[replica.model as usize].idle.push(identity.to_vec());
        for task in &batch.tasks {
            self.complete_key(task.key, Status::ModelError, &message);
        }
    }

    fn handle_inbound(&mut self, identity: &[u8], message: Inbound<'_>) {
        let now = Instant::now();
        let known = match self.replicas.get_mut(identity) {
            Some(replica) => {
                replica.last_seen = now;
                true
            }
            None => false,
        };
        match message {
            Inbound::Heartbeat => {
                let kind = if known { rpc::HEARTBEAT_KEEPALIVE } else { rpc::HEARTBEAT_REQUEST_METADATA };
                let reply = rpc::heartbeat_reply(kind);
                if self.socket.send(identity, zmq::SNDMORE | zmq::DONTWAIT).is_ok() {
                    let _ = self.socket.send_multipart(reply, zmq::DONTWAIT);
                }
            }
            Inbound::NewContainer { name, version, input_type } if !known => {
                let model = intern_model(&self.shared, name, version);
                let queue = self.queue(model);
                let replica_id = queue.next_replica_id;
                queue.next_replica_id += 1;
                queue.replicas += 1;
                queue.idle.push(identity.to_vec());
                self.replicas.insert(
                    identity.to_vec(),
                    Replica {
                        model,
                        replica_id,
                        input_type,
                        last_seen: now,
                        inflight: None,
                        aimd: Aimd::new(self.config.aimd),
                        round_trip: Duration::ZERO,
                    },
                );
                self.shared.replicas.lock().push(ReplicaInfo { model, replica_id, input_type });
            }
            Inbound::NewContainer { .. } => {}
            Inbound::Response { msg_id, outputs } => self.handle_response(identity, msg_id, &outputs, now),
        }
    }

    fn handle_response(&mut self, identity: &[u8], msg_id: u32, outputs: &[&[u8]], now: Instant) {
        let Some(replica) = self.replicas.get_mut(identity) else { return };
        let Some(batch) = replica.inflight.take_if(|b| b.msg_id == msg_id) else {
            return log_warn("dropped a response that matches no batch in flight");
        };
        let latency = now - batch.sent;
        let slo = batch.tasks.iter().map(|t| t.slo).min().unwrap_or_default();
        replica.aimd.observe(batch.tasks.len(), latency, slo);
        replica.round_trip = if replica.round_trip.is_zero() { latency } else { (replica.round_trip * 4 + latency) / 5 };
        let model = replica.model;
        self.queues[model as usize].idle.push(identity.to_vec());
        if outputs.len() != batch.tasks.len() {
            let message: Arc<[u8]> =
                format!("model returned {} outputs for a batch of {}", outputs.len(), batch.tasks.len())
                    .into_bytes()
                    .into();
            for task in &batch.tasks {
                self.complete_key(task.key, Status::ModelError, &message);
            }
        } else {
            for (task, output) in batch.tasks.iter().zip(outputs) {
                if let Some(message) = output.strip_prefix(rpc::ERROR_MARKER) {
                    self.complete_key(task.key, Status::ModelError, &Arc::from(message));
                } else {
                    let fragment = json_fragment(output);
                    self.shared.cache.lock().put(task.key, fragment.clone());
                    self.complete_key(task.key, Status::Ok, &fragment);
                }
            }
        }
        let mut stats = self.shared.stats.lock();
        if stats.len() <= model as usize {
            stats.resize_with(model as usize + 1, ModelStats::default);
        }
        let entry = &mut stats[model as usize];
        entry.batches += 1;
        entry.predictions += batch.tasks.len() as u64;
        entry.batch_sizes.record(batch.tasks.len() as u64);
        entry.latencies_us.record(latency.as_micros() as u64);
    }

    fn drop_silent_replicas(&mut self, now: Instant) {
        let timeout = self.config.heartbeat_timeout;
        self.next_liveness_check = now + (timeout / 4).min(Duration::from_secs(1));
        let silent: Vec<Vec<u8>> = self
            .replicas
            .iter()
            .filter(|(_, r)| now.duration_since(r.last_seen) > timeout)
            .map(|(identity, _)| identity.clone())
            .collect();
        for identity in silent {
            self.drop_replica(&identity, &format!("silent for {timeout:?}"));
        }
    }

    /// Forgets a replica; the batch it had in flight goes back to its model's queue.
    fn drop_replica(&mut self, identity: &[u8], reason: &str) {
        let Some(replica) = self.replicas.remove(identity) else { return };
        log_warn(&format!("dropped replica {} of model {}: {reason}", replica.replica_id, replica.model));
        let queue = &mut self.queues[replica.model as usize];
        queue.replicas -= 1;
        queue.idle.retain(|i| i != identity);
        for task in replica.inflight.into_iter().flat_map(|b| b.tasks) {
            queue.tasks.push(task);
        }
        self.shared
            .replicas
            .lock()
            .retain(|r| !(r.model == replica.model && r.replica_id == replica.replica_id));
    }

    fn publish_queue_lengths(&self) {
        let mut stats = self.shared.stats.lock();
        if stats.len() < self.queues.len() {
            stats.resize_with(self.queues.len(), ModelStats::default);
        }
        for (entry, queue) in stats.iter_mut().zip(&self.queues) {
            entry.queued = queue.tasks.len();
            entry.replicas = queue.replicas;
        }
    }

    fn publish_completions(&mut self) {
        if self.completed.is_empty() {
            return;
        }
        let mut shared = self.shared.completions.lock();
        let was_empty = shared.is_empty();
        shared.append(&mut self.completed);
        drop(shared);
        if was_empty {
            self.shared.completion_fd.notify();
        }
    }

    fn sleep(&mut self, batch_wait_until: Option<Instant>) {
        let now = Instant::now();
        let mut until = self.next_liveness_check;
        if let Some(&Reverse((deadline, _))) = self.deadlines.peek() {
            until = until.min(deadline);
        }
        if let Some(t) = batch_wait_until {
            until = until.min(t);
        }
        let timeout_ms = until.saturating_duration_since(now).as_micros().div_ceil(1000) as i64;
        self.shared.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !self.commands.is_empty() {
            self.shared.sleeping.store(false, Ordering::SeqCst);
            return;
        }
        let mut items = [
            self.socket.as_poll_item(zmq::POLLIN),
            zmq::PollItem::from_fd(self.shared.wake_fd.fd(), zmq::POLLIN),
        ];
        if !self.spin_until_ready(&mut items, until) {
            let _ = zmq::poll(&mut items, timeout_ms);
        }
        self.shared.sleeping.store(false, Ordering::SeqCst);
        self.shared.wake_fd.clear();
    }

    /// While only small batches are in flight (spare capacity), polls without sleeping, yielding the
    /// core to whoever needs it, for up to about one round trip; true if something arrived. A thread
    /// that slept must be woken when the answer comes, and on virtual machines an idle vCPU takes tens
    /// of microseconds to wake. Under load (larger batches) the engine sleeps as usual.
    fn spin_until_ready(&self, items: &mut [zmq::PollItem<'_>], until: Instant) -> bool {
        let inflight = || self.replicas.values().filter_map(|r| r.inflight.as_ref().map(|b| (b, r.round_trip)));
        if inflight().any(|(batch, _)| batch.tasks.len() > SPIN_MAX_BATCH) {
            return false;
        }
        let Some(round_trip) = inflight().map(|(_, round_trip)| round_trip).max() else { return false };
        let spin_until = Instant::now() + round_trip.clamp(MIN_SPIN, MAX_SPIN);
        while Instant::now() < spin_until.min(until) {
            if zmq::poll(items, 0).unwrap_or(0) > 0 || !self.commands.is_empty() {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }
}

/// The engine spins while no batch in flight is larger (see `Worker::spin_until_ready`).
const SPIN_MAX_BATCH: usize = 2;
/// Bounds of that spin.
const MIN_SPIN: Duration = Duration::from_micros(50);
const MAX_SPIN: Duration = Duration::from_micros(300);

/// The output as it is embedded in a JSON response: itself when it is valid JSON, else a string.
pub fn json_fragment(output: &[u8]) -> Arc<[u8]> {
    // A full parse: skipping values (IgnoredAny) would let invalid UTF-8, lone surrogate escapes and
    // out-of-range numbers through, and the response would not be JSON.
    if serde_json::from_slice::<serde_json::Value>(output).is_ok() {
        return Arc::from(output.trim_ascii());
    }
    let text = String::from_utf8_lossy(output);
    Arc::from(serde_json::to_vec(&text).expect("a string always serialises"))
}

fn log_warn(message: &str) {
    eprintln!("{{\"level\":\"warning\",\"component\":\"engine\",\"message\":{}}}", serde_json::to_string(message).unwrap());
}
