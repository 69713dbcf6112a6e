//! The engine loop: one native thread that owns the ROUTER ([`crate::router`]: ZeroMQ's protocol
//! spoken by this thread, no I/O thread) and wires the request queues (`queue`) to the replica
//! registry (`replicas`): it takes commands, sends batches, reads answers and heartbeats, and
//! publishes completions and stats. Callers submit requests through a channel and collect
//! completions in bulk; an eventfd tells them when completions are waiting.
//!
//! At low load, a caller that wakes the engine while its thread sleeps does the thread's intake
//! itself instead ([`Engine::wake`]): it takes the requests and sends the batches that can go now,
//! and brings the thread's wake-up forward with a timerfd when a new deadline comes sooner. The
//! caller then reads the answers of those batches too ([`Engine::read_answers`], when the router's
//! descriptor [`Engine::answer_fd`] is readable), and the thread sleeps on its timers alone: a lone
//! request does not wake the engine thread at all, and its completion reaches the caller without an
//! eventfd.
//!
//! Lost containers: each replica is known by the identity of its connection, and the router
//! reports every connection lost (closed, reset, or silent for `ping_timeout` after a ZMTP PING,
//! which the container's side answers even while its model runs: libzmq's I/O thread in Clipper's
//! containers, the connection's keeper thread in ours), after the last message read from it: the
//! replica is dropped at once and its batch requeued. The RPC heartbeat timeout stays as the last
//! resort for a container that hangs while its connection lives.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, MutexGuard};

use crate::aimd::AimdConfig;
use crate::cache::{cache_key, PredictionCache};
use crate::epoll::{self, Epoll};
use crate::eventfd::EventFd;
use crate::log;
use crate::queue::{Queues, Take, Task};
use crate::replicas::{Answer, Batch, Registry};
use crate::router::Router;
use crate::rpc::{self, Inbound, InputType};
use crate::stats::Window;
use crate::timerfd::TimerFd;

pub use crate::queue::{Completion, ModelSettings, Status};
pub use crate::replicas::ReplicaInfo;

/// The defaults of [`EngineConfig`]; the Python module exports them, and every layer above reads them
/// from there.
pub const DEFAULT_RPC_ADDRESS: &str = "tcp://127.0.0.1:7000";
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_QUEUE: usize = 10_000;
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(3);


#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Endpoint the ROUTER listens on, e.g. `tcp://127.0.0.1:7000` (`*` for every interface).
    pub rpc_address: String,
    pub cache_bytes: usize,
    /// Replicas silent for longer are dropped and their in-flight work requeued.
    pub heartbeat_timeout: Duration,
    /// ZMTP heartbeats on each container connection: a PING every `ping_interval`, and a connection
    /// that has sent nothing (not even the PONG) for `ping_timeout` after a PING is closed, which
    /// drops its replica. Zero disables them.
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub aimd: AimdConfig,
    /// Requests a model's queue holds at most; past it, requests are refused (`Status::Overloaded`).
    pub max_queue: usize,
    /// While only small batches are in flight, poll for up to one round trip before sleeping
    /// (`Worker::spin_until_ready`): lower latency at low load, for CPU.
    pub spin: bool,
    /// For tests: the cache keys of inputs keep only this many low bits (64: all), so that different
    /// inputs share keys and the cache and the queues must tell them apart by their bytes.
    #[doc(hidden)]
    pub cache_key_bits: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            rpc_address: DEFAULT_RPC_ADDRESS.into(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            aimd: AimdConfig::default(),
            max_queue: DEFAULT_MAX_QUEUE,
            spin: true,
            cache_key_bits: 64,
        }
    }
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
    /// Whether the caller reads the answers (see [`Engine::wake`]); written under the worker's lock.
    caller_reads: AtomicBool,
    models: Mutex<Vec<ModelName>>,
    stats: Mutex<Vec<ModelStats>>,
    replicas: Mutex<Vec<ReplicaInfo>>,
}

impl Shared {
    /// Wakes the engine thread if it sleeps (once: the first caller to see it asleep writes the eventfd).
    fn wake_thread(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.wake_fd.notify();
        }
    }
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
    /// The engine thread's state: held by that thread except while it sleeps (see [`Engine::wake`]);
    /// None once the thread has ended (its sockets closed with it).
    worker: Arc<Mutex<Option<Worker>>>,
    commands: Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
    rpc_endpoint: String,
    /// The router's epoll set (see [`Engine::answer_fd`]).
    answer_fd: RawFd,
    /// Applied to every cache key (see [`EngineConfig::cache_key_bits`]).
    key_mask: u64,
}

impl Engine {
    /// Binds the RPC socket and starts the engine thread.
    pub fn start(config: EngineConfig) -> io::Result<Engine> {
        let router = Router::bind(&config.rpc_address, config.ping_interval, config.ping_timeout)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", config.rpc_address)))?;
        let rpc_endpoint = router.endpoint()?;
        let answer_fd = router.epoll_fd();
        let shared = Arc::new(Shared {
            cache: Mutex::new(PredictionCache::new(config.cache_bytes)),
            completions: Mutex::new(Vec::new()),
            completion_fd: EventFd::new()?,
            wake_fd: EventFd::new()?,
            sleeping: AtomicBool::new(false),
            caller_reads: AtomicBool::new(false),
            models: Mutex::new(Vec::new()),
            stats: Mutex::new(Vec::new()),
            replicas: Mutex::new(Vec::new()),
        });
        let timer = TimerFd::new()?;
        let sleep_set = Epoll::new()?;
        for fd in [shared.wake_fd.fd(), timer.fd(), router.epoll_fd()] {
            sleep_set.add(fd, 0, libc::EPOLLIN)?;
        }
        let key_mask = u64::MAX.checked_shr(64 - config.cache_key_bits.min(64)).unwrap_or(0);
        let (commands, receiver) = crossbeam_channel::unbounded();
        let worker = Arc::new(Mutex::new(Some(Worker::new(config, shared.clone(), receiver, router, timer, sleep_set))));
        let thread_worker = worker.clone();
        let thread = std::thread::Builder::new()
            .name("clipper-engine".into())
            .spawn(move || Worker::run(&thread_worker))?;
        Ok(Engine { shared, worker, commands, thread: Mutex::new(Some(thread)), rpc_endpoint, answer_fd, key_mask })
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
        let key = cache_key(model, input) & self.key_mask;
        if let Some(hit) = self.shared.cache.lock().get(key, model, input) {
            return Some(hit);
        }
        let task = Task::new(model, input_type, key, Arc::from(input), slo, Instant::now());
        // The engine thread lives as long as this handle; a send cannot fail before shutdown.
        let _ = self.commands.send(Command::Predict(task, token));
        None
    }

    fn send(&self, command: Command) {
        let _ = self.commands.send(command);
        self.wake();
    }

    /// Has the submitted requests taken. While the engine thread sleeps at low load, the caller takes
    /// them itself and sends the batches that can go now (`Worker::step_for_caller`), which spares
    /// the thread a wake-up; otherwise the thread is woken.
    ///
    /// True when the caller is to read the answers: from then on, while it returns true, it watches
    /// [`Engine::answer_fd`] and calls [`Engine::read_answers`] when that is readable; the engine
    /// thread no longer wakes for them. False: the thread reads them (stop watching).
    pub fn wake(&self) -> bool {
        fence(Ordering::SeqCst);
        if self.shared.sleeping.load(Ordering::SeqCst) {
            let stepped = self.worker.try_lock().is_some_and(|mut w| w.as_mut().is_some_and(Worker::step_for_caller));
            if !stepped {
                self.shared.wake_thread();
            }
        } // else awake: it checks the commands before it sleeps
        self.shared.caller_reads.load(Ordering::SeqCst)
    }

    /// The descriptor to watch while [`Engine::wake`] says the caller reads the answers: readable when
    /// something has come from a container (an answer, a heartbeat, a new connection).
    pub fn answer_fd(&self) -> RawFd {
        self.answer_fd
    }

    /// Reads what has come from the containers, sends the batches that can go now, and moves the
    /// completions into `out` (without the completion eventfd). Whether the caller still reads the
    /// answers: false when the load grew or the engine stops (the thread reads them again).
    pub fn read_answers(&self, out: &mut Vec<Completion>) -> bool {
        self.worker.lock().as_mut().is_some_and(|worker| worker.read_for_caller(out))
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


/// The engine thread's state: the router and what it wires together.
struct Worker {
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    router: Router,
    queues: Queues,
    replicas: Registry,
    next_msg_id: u32,
    /// The mean size of the recent batches sent (each batch weighs 1/8).
    recent_batch: f64,
    running: bool,
    spin: bool,
    /// When the sleeping thread wakes at the latest; a caller's step brings it forward with `timer`.
    sleep_until: Instant,
    timer: TimerFd,
    timer_set: bool,
    /// What the thread sleeps on: the wake-up eventfd, the timer and, unless the caller reads the
    /// answers, the router's set.
    sleep_set: Epoll,
}

impl Worker {
    fn new(
        config: EngineConfig,
        shared: Arc<Shared>,
        commands: Receiver<Command>,
        router: Router,
        timer: TimerFd,
        sleep_set: Epoll,
    ) -> Worker {
        Worker {
            shared,
            commands,
            router,
            queues: Queues::new(config.max_queue),
            replicas: Registry::new(config.aimd, config.heartbeat_timeout, Instant::now()),
            next_msg_id: 0,
            recent_batch: 0.0,
            running: true,
            spin: config.spin,
            sleep_until: Instant::now(),
            timer,
            timer_set: false,
            sleep_set,
        }
    }

    /// The engine thread: steps, then sleeps without the lock, so that callers can step meanwhile.
    /// When it ends, the worker goes with it: the listener and every connection close then.
    fn run(worker: &Mutex<Option<Worker>>) {
        let mut guard = worker.lock();
        loop {
            let this = guard.as_mut().expect("only this thread takes the worker away");
            if !this.running {
                break;
            }
            let wait_until = this.step();
            if !this.running {
                break;
            }
            if let Some(timeout) = this.fall_asleep(wait_until) {
                let sleep_set = this.sleep_set.fd();
                MutexGuard::unlocked(&mut guard, || epoll::wait(sleep_set, timeout));
            }
            guard.as_mut().expect("only this thread takes the worker away").wake_up();
        }
        *guard = None;
    }

    /// Takes commands, reads answers, ends expired requests, drops silent replicas and sends batches;
    /// returns when a batch wait ends.
    fn step(&mut self) -> Option<Instant> {
        self.take_commands();
        self.receive_all();
        let now = Instant::now();
        self.queues.expire(now);
        for identity in self.replicas.silent(now) {
            let reason = format!("silent for {:?}", self.replicas.heartbeat_timeout());
            self.drop_replica(&identity, &reason);
        }
        let wait_until = self.dispatch(now);
        self.publish_completions();
        wait_until
    }

    /// The part of [`Worker::step`] a caller does while the engine thread sleeps at low load: takes
    /// the commands and sends what can be sent now; the caller then reads the answers
    /// (`read_for_caller`). Expiries and liveness stay the thread's; a deadline sooner than its wake-up
    /// (the SLO of a request, a batch wait) sets the timer. False when the thread must wake after all
    /// (and read the answers again): under load (more requests come while it wakes, and its batches
    /// grow: sent at once, they were a fifth smaller), to stop, or to poll for the answer to a small
    /// batch (`Worker::spin_until_ready`).
    fn step_for_caller(&mut self) -> bool {
        if self.recent_batch > SMALL_BATCH as f64 {
            self.set_caller_reads(false);
            return false;
        }
        self.take_commands();
        let wait_until = self.dispatch(Instant::now());
        self.publish_completions();
        self.keep_caller_reading(wait_until)
    }

    /// While the caller reads the answers: reads what came, sends what can go now and hands the
    /// completions over. Whether the caller goes on reading (see `step_for_caller`).
    fn read_for_caller(&mut self, out: &mut Vec<Completion>) -> bool {
        if !self.shared.caller_reads.load(Ordering::Relaxed) {
            return false;
        }
        self.receive_all();
        let wait_until = self.dispatch(Instant::now());
        out.append(self.queues.completed());
        if self.recent_batch <= SMALL_BATCH as f64 && self.keep_caller_reading(wait_until) {
            return true;
        }
        self.set_caller_reads(false);
        self.shared.wake_thread(); // it reads the answers from now on, and takes what was submitted
        false
    }

    /// After the caller's step: the caller reads the answers from now on, unless the thread must wake
    /// (false); a deadline sooner than the thread's wake-up sets the timer.
    fn keep_caller_reading(&mut self, batch_wait_until: Option<Instant>) -> bool {
        if !self.running || self.wants_spin() {
            self.set_caller_reads(false);
            return false;
        }
        let wake_at = self.next_deadline(batch_wait_until);
        if wake_at < self.sleep_until {
            self.sleep_until = wake_at;
            self.timer.set(wake_at);
            self.timer_set = true;
        }
        self.set_caller_reads(true);
        true
    }

    /// Who reads the answers: the caller (the thread sleeps without the router's set) or the thread.
    fn set_caller_reads(&mut self, caller: bool) {
        if self.shared.caller_reads.swap(caller, Ordering::SeqCst) == caller {
            return;
        }
        let router = self.router.epoll_fd();
        let changed = if caller { self.sleep_set.delete(router) } else { self.sleep_set.add(router, 0, libc::EPOLLIN) };
        if let Err(e) = changed {
            // Cannot happen with valid descriptors; were it to, the thread's wake-ups still read them.
            log::warn(&format!("cannot change what the engine thread sleeps on: {e}"));
        }
    }

    fn take_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            self.handle_command(command);
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Predict(task, token) => self.enqueue(task, token),
            Command::Configure(model, settings) => self.queues.configure(model, settings),
            Command::Cancel(tokens) => self.queues.cancel(&tokens),
            Command::Shutdown => self.running = false,
        }
    }

    fn enqueue(&mut self, task: Task, token: u64) {
        let hit = self.shared.cache.lock().peek(task.key, task.model, &task.input);
        if let Some(hit) = hit {
            return self.queues.complete(token, Status::Ok, hit);
        }
        if self.replicas.count(task.model) == 0 {
            return self.queues.complete(token, Status::NoModel, Arc::from([]));
        }
        self.queues.enqueue(task, token);
    }

    /// Sends a batch to every idle replica that has work; returns when a batch wait ends.
    fn dispatch(&mut self, now: Instant) -> Option<Instant> {
        let mut wait_until: Option<Instant> = None;
        for model in 0..self.queues.model_count().min(self.replicas.model_count()) as u32 {
            while let Some(identity) = self.replicas.pop_idle(model) {
                let replica = self.replicas.get_mut(&identity).expect("idle replica is registered");
                let size = self.queues.settings(model).batch_size.unwrap_or_else(|| replica.aimd.batch_size());
                let finish_by = now + replica.round_trip;
                match self.queues.take_batch(model, size, finish_by, now) {
                    Take::Batch(tasks) => self.send_batch(identity, tasks, now),
                    Take::Wait(fill_by) => {
                        wait_until = Some(wait_until.map_or(fill_by, |w| w.min(fill_by)));
                        self.replicas.push_idle(model, identity);
                        break;
                    }
                    Take::Empty => {
                        self.replicas.push_idle(model, identity);
                        break;
                    }
                }
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
            let model = replica.model;
            self.replicas.push_idle(model, identity);
            for task in tasks {
                self.queues.complete_task(task.id, Status::ModelError, &message);
            }
            return;
        }
        let msg_id = self.next_msg_id;
        self.next_msg_id = self.next_msg_id.wrapping_add(1);
        self.recent_batch += (tasks.len() as f64 - self.recent_batch) / 8.0;
        let inputs: Vec<&[u8]> = tasks.iter().map(|t| &*t.input).collect();
        let head = rpc::predict_request_head(msg_id, input_type, &inputs);
        let frames: Vec<&[u8]> = head.iter().map(Vec::as_slice).chain(inputs.iter().copied()).collect();
        let sent = self.router.send(&identity, frames.into_iter());
        let replica = self.replicas.get_mut(&identity).expect("idle replica is registered");
        replica.inflight = Some(Batch { msg_id, tasks, sent: now });
        if !sent {
            // The container has disconnected: its batch goes back to the queue for the others.
            self.drop_replica(&identity, "it disconnected");
        }
    }

    /// Reads every message that has come, and drops the replicas whose connections were lost (each
    /// after the messages read from its connection).
    fn receive_all(&mut self) {
        self.router.poll(Duration::ZERO);
        loop {
            let received = self.router.recv();
            for identity in self.router.take_lost() {
                self.drop_replica(&identity, "its connection closed");
            }
            let Some(received) = received else { return };
            match rpc::decode_inbound(&received.frames()) {
                Ok(message) => self.handle_inbound(&received.identity, message),
                Err(e) => self.reject_malformed(&received.identity, e),
            }
        }
    }

    /// A message that breaks the protocol. Its sender's batch in flight would wait for an answer that
    /// may never come (and the replica would take no work again): it fails now, with the reason.
    fn reject_malformed(&mut self, identity: &[u8], error: rpc::DecodeError) {
        log::warn(&format!("dropped a malformed RPC message: {error}"));
        let Some((replica_id, batch)) = self.replicas.take_inflight(identity) else { return };
        let message: Arc<[u8]> = format!("replica {replica_id} sent a malformed response: {error}").into_bytes().into();
        for task in &batch.tasks {
            self.queues.complete_task(task.id, Status::ModelError, &message);
        }
    }

    fn handle_inbound(&mut self, identity: &[u8], message: Inbound<'_>) {
        let now = Instant::now();
        let known = self.replicas.touch(identity, now);
        match message {
            Inbound::Heartbeat => {
                let kind = if known { rpc::HEARTBEAT_KEEPALIVE } else { rpc::HEARTBEAT_REQUEST_METADATA };
                let reply = rpc::heartbeat_reply(kind);
                self.router.send(identity, reply.iter().map(Vec::as_slice));
            }
            Inbound::NewContainer { name, version, input_type } if !known => {
                let model = intern_model(&self.shared, name, version);
                let info = self.replicas.register(identity, model, input_type, now);
                self.shared.replicas.lock().push(info);
            }
            Inbound::NewContainer { .. } => {}
            Inbound::Response { msg_id, outputs } => self.handle_response(identity, msg_id, &outputs, now),
        }
    }

    fn handle_response(&mut self, identity: &[u8], msg_id: u32, outputs: &[&[u8]], now: Instant) {
        let (model, batch, latency) = match self.replicas.answered(identity, msg_id, now) {
            Answer::Batch { model, batch, latency } => (model, batch, latency),
            Answer::Unknown => return,
            Answer::Unmatched => return log::warn("dropped a response that matches no batch in flight"),
        };
        if outputs.len() != batch.tasks.len() {
            let message: Arc<[u8]> =
                format!("model returned {} outputs for a batch of {}", outputs.len(), batch.tasks.len())
                    .into_bytes()
                    .into();
            for task in &batch.tasks {
                self.queues.complete_task(task.id, Status::ModelError, &message);
            }
        } else {
            for (task, output) in batch.tasks.iter().zip(outputs) {
                if let Some(message) = output.strip_prefix(rpc::ERROR_MARKER) {
                    self.queues.complete_task(task.id, Status::ModelError, &Arc::from(message));
                } else {
                    let fragment = json_fragment(output);
                    self.shared.cache.lock().put(task.key, task.model, task.input.clone(), fragment.clone());
                    self.queues.complete_task(task.id, Status::Ok, &fragment);
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

    /// Forgets a replica; the batch it had in flight goes back to its model's queue.
    fn drop_replica(&mut self, identity: &[u8], reason: &str) {
        let Some(replica) = self.replicas.remove(identity) else { return };
        log::warn(&format!("dropped replica {} of model {}: {reason}", replica.replica_id, replica.model));
        self.queues.requeue(replica.model, replica.inflight.into_iter().flat_map(|b| b.tasks));
        self.shared
            .replicas
            .lock()
            .retain(|r| !(r.model == replica.model && r.replica_id == replica.replica_id));
    }

    fn publish_queue_lengths(&self) {
        let models = self.queues.model_count().max(self.replicas.model_count());
        let mut stats = self.shared.stats.lock();
        if stats.len() < models {
            stats.resize_with(models, ModelStats::default);
        }
        for (model, entry) in stats.iter_mut().enumerate().take(models) {
            entry.queued = self.queues.queued(model as u32);
            entry.replicas = self.replicas.count(model as u32);
        }
    }

    fn publish_completions(&mut self) {
        let completed = self.queues.completed();
        if completed.is_empty() {
            return;
        }
        let mut shared = self.shared.completions.lock();
        let was_empty = shared.is_empty();
        shared.append(completed);
        drop(shared);
        if was_empty {
            self.shared.completion_fd.notify();
        }
    }

    /// The soonest of the liveness check, the queues' deadlines and the batch wait.
    fn next_deadline(&mut self, batch_wait_until: Option<Instant>) -> Instant {
        let mut until = self.replicas.next_liveness_check();
        if let Some(deadline) = self.queues.next_deadline() {
            until = until.min(deadline);
        }
        if let Some(t) = batch_wait_until {
            until = until.min(t);
        }
        until
    }

    /// Marks the thread asleep (callers now step for it) and returns how long to sleep; None when
    /// there is work already: a command came, or the spin found something.
    fn fall_asleep(&mut self, batch_wait_until: Option<Instant>) -> Option<Duration> {
        let until = self.next_deadline(batch_wait_until).min(self.router.keep_alive(Instant::now()));
        self.sleep_until = until;
        self.shared.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !self.commands.is_empty() || self.spin_until_ready(until) {
            return None;
        }
        Some(until.saturating_duration_since(Instant::now()))
    }

    fn wake_up(&mut self) {
        self.shared.sleeping.store(false, Ordering::SeqCst);
        self.shared.wake_fd.clear();
        if self.timer_set {
            self.timer.clear();
            self.timer_set = false;
        }
    }

    /// Whether the thread would poll for an answer rather than sleep: see `spin_until_ready`.
    fn wants_spin(&self) -> bool {
        self.spin && self.replicas.small_batches_round_trip(SMALL_BATCH).is_some()
    }

    /// While only small batches are in flight (spare capacity), polls without sleeping, yielding the
    /// core to whoever needs it, for up to about one round trip; true if something arrived. A thread
    /// that slept must be woken when the answer comes, and on virtual machines an idle vCPU takes tens
    /// of microseconds to wake. Under load (larger batches) the engine sleeps as usual.
    fn spin_until_ready(&mut self, until: Instant) -> bool {
        if !self.spin {
            return false;
        }
        let Some(round_trip) = self.replicas.small_batches_round_trip(SMALL_BATCH) else { return false };
        let spin_until = Instant::now() + round_trip.clamp(MIN_SPIN, MAX_SPIN);
        while Instant::now() < spin_until.min(until) {
            if self.router.poll(Duration::ZERO) || !self.commands.is_empty() {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }
}

/// Low load: no batch larger. The engine spins while none in flight is (`Worker::spin_until_ready`),
/// and callers send batches for it while the recent ones were not on average (`Worker::step_for_caller`:
/// a mean, so that a few small batches under load do not let callers send more of them).
const SMALL_BATCH: usize = 2;
/// Bounds of that spin (the longest is public: tests measure the CPU a spin costs against it).
const MIN_SPIN: Duration = Duration::from_micros(50);
pub const MAX_SPIN: Duration = Duration::from_micros(300);

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

