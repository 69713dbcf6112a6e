//! The requests waiting for a model: the [`Task`] each distinct input becomes, the per-model queues
//! (earliest deadline first), the requests (tokens) that wait on each task with their deadlines, and
//! how a request ends ([`Status`], [`Completion`]).
//!
//! Requests for the same input to the same model version share one task. They are found by the
//! input's cache key, but a key is a hash: a request joins a task only when its model and input bytes
//! are those of the task; an input that collides with a waiting one becomes a task of its own.
//!
//! Bookkeeping only: no socket, no replica, no clock of its own (whatever needs the time is given
//! `now`), so that unit tests drive it. The engine loop ([`crate::engine`]) asks it for batches
//! ([`Queues::take_batch`]) and tells it how tasks ended ([`Queues::complete_task`]).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::HashMap;

use crate::rpc::InputType;

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

/// The id [`Queues`] gives each task it queues; requests wait on it and batches are completed by it.
pub(crate) type TaskId = u64;

/// One queued prediction: the work a replica is sent. Requests for the same model and input share it.
#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) deadline: Instant,
    pub(crate) enqueued: Instant,
    pub(crate) slo: Duration,
    /// Set by [`Queues::enqueue`].
    pub(crate) id: TaskId,
    /// The input's cache key ([`crate::cache::cache_key`]).
    pub(crate) key: u64,
    pub(crate) model: u32,
    pub(crate) input_type: InputType,
    /// Shared with the cache entry that the answer fills.
    pub(crate) input: Arc<[u8]>,
}

impl Task {
    /// A task submitted at `now` that must be answered within `slo`.
    pub(crate) fn new(model: u32, input_type: InputType, key: u64, input: Arc<[u8]>, slo: Duration, now: Instant) -> Task {
        Task { deadline: now + slo, enqueued: now, slo, id: 0, key, model, input_type, input }
    }
}

/// What the queues know of a task queued or in flight: what it computes, and who waits on it.
struct Waiting {
    key: u64,
    model: u32,
    input: Arc<[u8]>,
    tokens: Vec<u64>,
}

impl PartialEq for Task {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline
    }
}
impl Eq for Task {}
impl PartialOrd for Task {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Task {
    /// Reversed, so that the max-heap pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.deadline.cmp(&self.deadline)
    }
}

#[derive(Default)]
struct ModelQueue {
    tasks: BinaryHeap<Task>,
    settings: ModelSettings,
}

/// What [`Queues::take_batch`] found for an idle replica.
#[derive(Debug)]
pub(crate) enum Take {
    /// Nothing to send.
    Empty,
    /// Fewer tasks than a batch, and the batch wait of the model ends at this time: ask again then.
    Wait(Instant),
    /// A batch to send, earliest deadline first.
    Batch(Vec<Task>),
}

/// The per-model queues and the requests waiting on their tasks.
pub(crate) struct Queues {
    models: Vec<ModelQueue>,
    /// Tasks a model's queue holds at most (new keys past it are refused).
    max_queue: usize,
    /// Live requests: token -> the task they wait on.
    live: HashMap<u64, TaskId>,
    /// Every task queued or in flight, with the tokens waiting on it.
    waiters: HashMap<TaskId, Waiting>,
    /// Cache key -> the task that requests for that key join (when their model and input match).
    by_key: HashMap<u64, TaskId>,
    next_id: TaskId,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Requests that ended, not yet handed to the caller.
    completed: Vec<Completion>,
}

impl Queues {
    pub(crate) fn new(max_queue: usize) -> Queues {
        Queues {
            models: Vec::new(),
            max_queue,
            live: HashMap::default(),
            waiters: HashMap::default(),
            by_key: HashMap::default(),
            next_id: 0,
            deadlines: BinaryHeap::new(),
            completed: Vec::new(),
        }
    }

    fn queue(&mut self, model: u32) -> &mut ModelQueue {
        let i = model as usize;
        if self.models.len() <= i {
            self.models.resize_with(i + 1, ModelQueue::default);
        }
        &mut self.models[i]
    }

    /// How many models have a queue (the ids below this).
    pub(crate) fn model_count(&self) -> usize {
        self.models.len()
    }

    /// Tasks waiting in `model`'s queue (not those in flight).
    pub(crate) fn queued(&self, model: u32) -> usize {
        self.models.get(model as usize).map_or(0, |q| q.tasks.len())
    }

    pub(crate) fn settings(&self, model: u32) -> ModelSettings {
        self.models.get(model as usize).map_or_else(ModelSettings::default, |q| q.settings)
    }

    pub(crate) fn configure(&mut self, model: u32, settings: ModelSettings) {
        self.queue(model).settings = settings;
    }

    /// The requests that ended since the last call; the caller takes them out of the vector.
    pub(crate) fn completed(&mut self) -> &mut Vec<Completion> {
        &mut self.completed
    }

    /// The earliest deadline of a live request. The deadlines of requests that ended first are
    /// dropped here: left in the heap, each would wake the engine once, after its request had ended.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((deadline, token))) = self.deadlines.peek() {
            if self.live.contains_key(&token) {
                return Some(deadline);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Queues `task` for the request `token`, or has it wait on the task already queued or in flight
    /// for the same model and input. A new task finds the model's queue full: refused at once
    /// (`Overloaded`).
    pub(crate) fn enqueue(&mut self, mut task: Task, token: u64) {
        if let Some(&id) = self.by_key.get(&task.key) {
            let waiting = self.waiters.get_mut(&id).expect("an indexed task is waited on");
            if waiting.model == task.model && *waiting.input == *task.input {
                waiting.tokens.push(token);
                self.live.insert(token, id);
                self.deadlines.push(Reverse((task.deadline, token)));
                return;
            }
            // Another input with the same key: a task of its own (requests for it will not find it).
        }
        if self.queue(task.model).tasks.len() >= self.max_queue {
            return self.complete(token, Status::Overloaded, Arc::from([]));
        }
        let id = self.next_id;
        self.next_id += 1;
        task.id = id;
        self.by_key.entry(task.key).or_insert(id);
        let waiting = Waiting { key: task.key, model: task.model, input: task.input.clone(), tokens: vec![token] };
        self.waiters.insert(id, waiting);
        self.live.insert(token, id);
        self.deadlines.push(Reverse((task.deadline, token)));
        self.queue(task.model).tasks.push(task);
    }

    /// Forgets a task that nobody will complete: requests for its input start a new one.
    fn forget(&mut self, id: TaskId) -> Option<Waiting> {
        forget(&mut self.waiters, &mut self.by_key, id)
    }

    /// Puts tasks back in `model`'s queue (their replica has gone); their requests still wait.
    pub(crate) fn requeue(&mut self, model: u32, tasks: impl IntoIterator<Item = Task>) {
        let queue = self.queue(model);
        for task in tasks {
            queue.tasks.push(task);
        }
    }

    /// Forgets requests whose client has gone: tasks nobody waits for any more are not sent.
    pub(crate) fn cancel(&mut self, tokens: &[u64]) {
        for token in tokens {
            if let Some(id) = self.live.remove(token) {
                if let Some(waiting) = self.waiters.get_mut(&id) {
                    waiting.tokens.retain(|t| t != token);
                }
            }
        }
    }

    /// Ends one request (not waiting on any task).
    pub(crate) fn complete(&mut self, token: u64, status: Status, payload: Arc<[u8]>) {
        self.completed.push(Completion { token, status, payload });
    }

    /// Completes every live request waiting on the task `id`, which ends.
    pub(crate) fn complete_task(&mut self, id: TaskId, status: Status, payload: &Arc<[u8]>) {
        let Some(waiting) = self.forget(id) else { return };
        for token in waiting.tokens {
            if self.live.remove(&token).is_some() {
                self.completed.push(Completion { token, status, payload: payload.clone() });
            }
        }
    }

    /// Completes the requests whose deadline is not after `now` as timeouts. Their tasks stay queued
    /// (or in flight) until [`Queues::take_batch`] finds that nobody waits for them.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, token))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if let Some(id) = self.live.remove(&token) {
                if let Some(waiting) = self.waiters.get_mut(&id) {
                    waiting.tokens.retain(|&t| t != token);
                }
                self.complete(token, Status::Timeout, Arc::from([]));
            }
        }
    }

    /// The next batch of `model` for a replica that takes at most `size` tasks and would answer at
    /// `finish_by`. Tasks come out earliest deadline first; those nobody waits for are dropped.
    /// Fewer than `size` tasks wait until the model's batch wait after the first has passed
    /// ([`Take::Wait`]). Tasks due before `finish_by` would miss their deadline: when others can
    /// still make it, they are completed now as timeouts and the batch goes to the others; when
    /// none can, the `size` latest of them are sent all the same (the round trip estimate may be
    /// stale, and that batch renews it) and the rest stay queued.
    pub(crate) fn take_batch(&mut self, model: u32, size: usize, finish_by: Instant, now: Instant) -> Take {
        let Some(queue) = self.models.get_mut(model as usize) else { return Take::Empty };
        let Some(oldest) = queue.tasks.peek() else { return Take::Empty };
        let fill_by = oldest.enqueued + queue.settings.batch_wait;
        if queue.tasks.len() < size && fill_by > now {
            return Take::Wait(fill_by);
        }
        let mut tasks = Vec::with_capacity(size.min(queue.tasks.len()));
        let mut late = Vec::new();
        while tasks.len() < size {
            let Some(task) = queue.tasks.pop() else { break };
            if self.waiters.get(&task.id).is_none_or(|w| w.tokens.is_empty()) {
                // Every request for it has timed out or gone: do not spend a model on it.
                forget(&mut self.waiters, &mut self.by_key, task.id);
            } else if task.deadline < finish_by {
                late.push(task);
            } else {
                tasks.push(task);
            }
        }
        if tasks.is_empty() {
            tasks = late.split_off(late.len().saturating_sub(size));
            for task in late {
                queue.tasks.push(task);
            }
        } else {
            // They would miss their deadline in this batch anyway: their defaults now, and the batch
            // goes to requests that can still make it (goodput under overload).
            for task in late {
                self.complete_task(task.id, Status::Timeout, &Arc::from([]));
            }
        }
        if tasks.is_empty() {
            Take::Empty
        } else {
            Take::Batch(tasks)
        }
    }
}

/// [`Queues::forget`] on the fields it needs, for callers that hold another field.
fn forget(waiters: &mut HashMap<TaskId, Waiting>, by_key: &mut HashMap<u64, TaskId>, id: TaskId) -> Option<Waiting> {
    let waiting = waiters.remove(&id)?;
    if let Entry::Occupied(e) = by_key.entry(waiting.key) {
        if *e.get() == id {
            e.remove();
        }
    }
    Some(waiting)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const SLO: Duration = Duration::from_secs(1);

    /// A task of model 0 whose key is `key` and input the bytes of `key`, submitted at `now` with
    /// `slo`.
    pub(crate) fn task(key: u64, slo: Duration, now: Instant) -> Task {
        Task::new(0, InputType::Doubles, key, key.to_le_bytes().into(), slo, now)
    }

    fn batch(take: Take) -> Vec<Task> {
        match take {
            Take::Batch(tasks) => tasks,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    fn keys(take: Take) -> Vec<u64> {
        batch(take).iter().map(|t| t.key).collect()
    }

    fn completed(queues: &mut Queues) -> Vec<(u64, Status)> {
        queues.completed().drain(..).map(|c| (c.token, c.status)).collect()
    }

    #[test]
    fn statuses_are_listed_once_in_code_order_with_distinct_names() {
        for (code, status) in Status::ALL.into_iter().enumerate() {
            assert_eq!(status as usize, code);
        }
        let mut names = Status::ALL.map(Status::name).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Status::ALL.len());
    }

    #[test]
    fn batches_come_out_earliest_deadline_first() {
        let now = Instant::now();
        let mut queues = Queues::new(100);
        for (token, slo) in [(1, 30), (2, 10), (3, 50), (4, 20)] {
            queues.enqueue(task(token, slo * MS, now), token);
        }
        assert_eq!(keys(queues.take_batch(0, 1, now, now)), [2]);
        assert_eq!(keys(queues.take_batch(0, 10, now, now)), [4, 1, 3]);
        assert!(matches!(queues.take_batch(0, 10, now, now), Take::Empty));
        assert!(completed(&mut queues).is_empty());
    }

    #[test]
    fn a_batch_holds_at_most_its_size() {
        let now = Instant::now();
        let mut queues = Queues::new(100);
        for token in 0..10 {
            queues.enqueue(task(token, MS * (10 + token as u32), now), token);
        }
        assert_eq!(keys(queues.take_batch(0, 4, now, now)), [0, 1, 2, 3]);
        assert_eq!(queues.queued(0), 6);
        assert_eq!(keys(queues.take_batch(0, 4, now, now)), [4, 5, 6, 7]);
        assert_eq!(keys(queues.take_batch(0, 4, now, now)), [8, 9]);
        assert_eq!(queues.queued(0), 0);
    }

    #[test]
    fn tasks_that_cannot_finish_in_time_time_out_and_the_batch_goes_to_the_others() {
        let now = Instant::now();
        let mut queues = Queues::new(100);
        queues.enqueue(task(1, 5 * MS, now), 1);
        queues.enqueue(task(2, 8 * MS, now), 2);
        queues.enqueue(task(3, 50 * MS, now), 3);
        // The replica answers in 10 ms: tasks 1 and 2 would be late.
        assert_eq!(keys(queues.take_batch(0, 3, now + 10 * MS, now)), [3]);
        assert_eq!(completed(&mut queues), [(1, Status::Timeout), (2, Status::Timeout)]);
        assert_eq!(queues.queued(0), 0);
    }

    #[test]
    fn when_every_task_would_be_late_the_latest_are_sent_and_the_rest_stay_queued() {
        let now = Instant::now();
        let mut queues = Queues::new(100);
        for token in 1..=5 {
            queues.enqueue(task(token, MS * token as u32, now), token);
        }
        assert_eq!(keys(queues.take_batch(0, 2, now + 100 * MS, now)), [4, 5]);
        assert!(completed(&mut queues).is_empty(), "nobody timed out early");
        assert_eq!(queues.queued(0), 3);
        assert_eq!(keys(queues.take_batch(0, 10, now, now)), [1, 2, 3]);
    }

    #[test]
    fn expired_requests_complete_as_timeouts_and_their_tasks_are_never_sent() {
        let now = Instant::now();
        let mut queues = Queues::new(100);
        queues.enqueue(task(1, 5 * MS, now), 1);
        queues.enqueue(task(2, 50 * MS, now), 2);
        assert_eq!(queues.next_deadline(), Some(now + 5 * MS));
        queues.expire(now + 4 * MS);
        assert!(completed(&mut queues).is_empty());
        queues.expire(now + 5 * MS);
        assert_eq!(completed(&mut queues), [(1, Status::Timeout)]);
        assert_eq!(queues.next_deadline(), Some(now + 50 * MS));
        assert_eq!(keys(queues.take_batch(0, 10, now + 5 * MS, now + 5 * MS)), [2]);
        // Completing the expired task (the first queued: id 0) later completes nobody twice.
        queues.complete_task(0, Status::Ok, &Arc::from([]));
        assert!(completed(&mut queues).is_empty());
    }

    #[test]
    fn the_next_deadline_is_that_of_a_request_still_waiting() {
        let now = Instant::now();
        let mut queues = Queues::new(100);
        queues.enqueue(task(1, 5 * MS, now), 1);
        queues.enqueue(task(2, 50 * MS, now), 2);
        assert_eq!(keys(queues.take_batch(0, 1, now, now)), [1]);
        queues.complete_task(0, Status::Ok, &Arc::from([]));
        assert_eq!(completed(&mut queues), [(1, Status::Ok)]);
        assert_eq!(queues.next_deadline(), Some(now + 50 * MS), "not the answered request's");
        queues.cancel(&[2]);
        assert_eq!(queues.next_deadline(), None);
    }

    #[test]
    fn a_short_batch_waits_for_the_batch_wait_unless_full() {
        let now = Instant::now();
        let mut queues = Queues::new(100);
        queues.configure(0, ModelSettings { batch_size: None, batch_wait: 3 * MS });
        queues.enqueue(task(1, 50 * MS, now), 1);
        queues.enqueue(task(2, 50 * MS, now + MS), 2);
        match queues.take_batch(0, 3, now, now + MS) {
            Take::Wait(until) => assert_eq!(until, now + 3 * MS),
            other => panic!("expected a wait, got {other:?}"),
        }
        assert_eq!(keys(queues.take_batch(0, 2, now, now + MS)), [1, 2], "a full batch does not wait");
        queues.enqueue(task(3, 50 * MS, now + MS), 3);
        assert!(matches!(queues.take_batch(0, 3, now, now + 2 * MS), Take::Wait(_)));
        assert_eq!(keys(queues.take_batch(0, 3, now, now + 4 * MS)), [3], "the wait is over");
    }

    #[test]
    fn a_full_queue_refuses_new_keys_but_not_requests_for_a_queued_key() {
        let now = Instant::now();
        let mut queues = Queues::new(2);
        queues.enqueue(task(1, SLO, now), 1);
        queues.enqueue(task(2, SLO, now), 2);
        queues.enqueue(task(3, SLO, now), 3);
        assert_eq!(completed(&mut queues), [(3, Status::Overloaded)]);
        queues.enqueue(task(2, SLO, now), 4);
        assert!(completed(&mut queues).is_empty(), "joins the queued task");
        assert_eq!(queues.queued(0), 2);
        // The queue of another model is not full.
        queues.enqueue(Task::new(1, InputType::Doubles, 5, Arc::from([]), SLO, now), 5);
        assert!(completed(&mut queues).is_empty());
        assert_eq!(queues.queued(1), 1);
    }

    #[test]
    fn requests_for_one_key_share_a_task_and_complete_together() {
        let now = Instant::now();
        let mut queues = Queues::new(100);
        for token in [7, 8, 9] {
            queues.enqueue(task(1, SLO, now), token);
        }
        assert_eq!(queues.queued(0), 1);
        let sent = batch(queues.take_batch(0, 10, now, now));
        assert_eq!(sent.len(), 1);
        // In flight: another request for the key waits on it too.
        queues.enqueue(task(1, SLO, now), 10);
        assert_eq!(queues.queued(0), 0);
        queues.complete_task(sent[0].id, Status::Ok, &Arc::from(*b"3.5"));
        let done = queues.completed().drain(..).collect::<Vec<_>>();
        assert_eq!(done.iter().map(|c| c.token).collect::<Vec<_>>(), [7, 8, 9, 10]);
        assert!(done.iter().all(|c| c.status == Status::Ok && &*c.payload == b"3.5"));
    }

    #[test]
    fn inputs_that_share_a_key_are_separate_tasks() {
        let now = Instant::now();
        let mut queues = Queues::new(100);
        let with_input = |model: u32, input: &[u8]| Task::new(model, InputType::Doubles, 7, input.into(), SLO, now);
        queues.enqueue(with_input(0, b"a"), 1);
        queues.enqueue(with_input(0, b"b"), 2); // another input, same key
        queues.enqueue(with_input(1, b"a"), 3); // the same input to another model, same key
        queues.enqueue(with_input(0, b"a"), 4); // joins token 1's task
        assert_eq!((queues.queued(0), queues.queued(1)), (2, 1));
        let sent = batch(queues.take_batch(0, 10, now, now));
        let inputs: Vec<&[u8]> = sent.iter().map(|t| &*t.input).collect();
        assert_eq!(inputs, [b"a", b"b"]);
        // Requests for either input, queued or in flight, wait on their own task only.
        queues.enqueue(with_input(0, b"a"), 5);
        queues.enqueue(with_input(0, b"b"), 6);
        assert_eq!(queues.queued(0), 1, "a second task for b: the key finds a's task, not b's");
        queues.complete_task(sent[0].id, Status::Ok, &Arc::from(*b"A"));
        queues.complete_task(sent[1].id, Status::Ok, &Arc::from(*b"B"));
        let done: Vec<(u64, Vec<u8>)> = queues.completed().drain(..).map(|c| (c.token, c.payload.to_vec())).collect();
        assert_eq!(done, [(1, b"A".to_vec()), (4, b"A".to_vec()), (5, b"A".to_vec()), (2, b"B".to_vec())]);
        let again = batch(queues.take_batch(0, 10, now, now));
        assert_eq!(&*again[0].input, b"b");
        queues.complete_task(again[0].id, Status::Ok, &Arc::from(*b"B"));
        assert_eq!(completed(&mut queues), [(6, Status::Ok)]);
        // Once a's task has ended, the key is free: the next request for b's input takes it.
        queues.enqueue(with_input(0, b"b"), 8);
        queues.enqueue(with_input(0, b"b"), 9);
        assert_eq!(queues.queued(0), 1);
    }

    #[test]
    fn cancelled_requests_never_complete_and_a_task_nobody_waits_for_is_not_sent() {
        let now = Instant::now();
        let mut queues = Queues::new(100);
        queues.enqueue(task(1, SLO, now), 1);
        queues.enqueue(task(1, SLO, now), 2);
        queues.enqueue(task(3, SLO, now + MS), 3);
        queues.cancel(&[1, 3]);
        let sent = batch(queues.take_batch(0, 10, now, now));
        assert_eq!(sent.iter().map(|t| t.key).collect::<Vec<_>>(), [1], "token 2 still waits on key 1");
        queues.complete_task(sent[0].id, Status::Ok, &Arc::from([]));
        assert_eq!(completed(&mut queues), [(2, Status::Ok)]);
        queues.expire(now + 2 * SLO);
        assert!(completed(&mut queues).is_empty(), "a cancelled request does not time out either");
    }

    #[test]
    fn requeued_tasks_come_back_in_deadline_order() {
        let now = Instant::now();
        let mut queues = Queues::new(100);
        for token in 1..=4 {
            queues.enqueue(task(token, MS * (10 * token as u32), now), token);
        }
        let Take::Batch(batch) = queues.take_batch(0, 2, now, now) else { panic!("no batch") };
        assert_eq!(queues.queued(0), 2);
        queues.requeue(0, batch);
        assert_eq!(keys(queues.take_batch(0, 10, now, now)), [1, 2, 3, 4]);
    }

    #[test]
    fn settings_and_unknown_models() {
        let now = Instant::now();
        let mut queues = Queues::new(100);
        assert!(matches!(queues.take_batch(5, 1, now, now), Take::Empty));
        assert_eq!(queues.settings(5).batch_size, None);
        queues.configure(5, ModelSettings { batch_size: Some(9), batch_wait: MS });
        assert_eq!(queues.settings(5).batch_size, Some(9));
        assert_eq!(queues.model_count(), 6);
        assert_eq!(queues.queued(5), 0);
    }
}
