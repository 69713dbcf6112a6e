//! The model containers connected to the engine ("replicas"), by ZeroMQ routing identity: their
//! model and input type, the batch each has in flight, its AIMD batch size and round-trip estimate,
//! when each was last heard from (liveness), and, per model, which replicas are idle.
//!
//! Bookkeeping only: the engine loop ([`crate::engine`]) does the socket I/O and tells the registry
//! what happened; the tasks of a replica that goes are handed back for the queues
//! ([`crate::queue`]) to requeue.

use std::time::{Duration, Instant};

use foldhash::HashMap;

use crate::aimd::{Aimd, AimdConfig};
use crate::queue::Task;
use crate::rpc::InputType;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub model: u32,
    pub replica_id: u32,
    pub input_type: InputType,
}

/// A batch sent to a replica, waiting for its answer.
pub(crate) struct Batch {
    pub(crate) msg_id: u32,
    pub(crate) tasks: Vec<Task>,
    pub(crate) sent: Instant,
}

pub(crate) struct Replica {
    pub(crate) model: u32,
    pub(crate) replica_id: u32,
    pub(crate) input_type: InputType,
    last_seen: Instant,
    /// Set by the engine loop when it sends the replica a batch.
    pub(crate) inflight: Option<Batch>,
    pub(crate) aimd: Aimd,
    /// Moving average of recent batch round trips: a queued request with less time left than this
    /// cannot be answered in time by this replica.
    pub(crate) round_trip: Duration,
}

#[derive(Default)]
struct ModelReplicas {
    /// Identities of the replicas with no batch in flight.
    idle: Vec<Vec<u8>>,
    count: usize,
    next_replica_id: u32,
}

/// What became of a response (see [`Registry::answered`]).
pub(crate) enum Answer {
    /// From an identity that is not a registered replica.
    Unknown,
    /// Its message id is not that of the replica's batch in flight.
    Unmatched,
    /// The answer to `batch`; the replica is idle again.
    Batch { model: u32, batch: Batch, latency: Duration },
}

pub(crate) struct Registry {
    replicas: HashMap<Vec<u8>, Replica>,
    models: Vec<ModelReplicas>,
    aimd: AimdConfig,
    /// Replicas silent for longer are dropped.
    heartbeat_timeout: Duration,
    next_liveness_check: Instant,
}

impl Registry {
    pub(crate) fn new(aimd: AimdConfig, heartbeat_timeout: Duration, now: Instant) -> Registry {
        Registry { replicas: HashMap::default(), models: Vec::new(), aimd, heartbeat_timeout, next_liveness_check: now }
    }

    fn model(&mut self, model: u32) -> &mut ModelReplicas {
        let i = model as usize;
        if self.models.len() <= i {
            self.models.resize_with(i + 1, ModelReplicas::default);
        }
        &mut self.models[i]
    }

    /// How many models have had a replica (the ids below this).
    pub(crate) fn model_count(&self) -> usize {
        self.models.len()
    }

    /// Connected replicas of `model`.
    pub(crate) fn count(&self, model: u32) -> usize {
        self.models.get(model as usize).map_or(0, |m| m.count)
    }

    pub(crate) fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_timeout
    }

    pub(crate) fn get_mut(&mut self, identity: &[u8]) -> Option<&mut Replica> {
        self.replicas.get_mut(identity)
    }

    /// Notes that `identity` was heard from at `now`; false when it is not a registered replica.
    pub(crate) fn touch(&mut self, identity: &[u8], now: Instant) -> bool {
        match self.replicas.get_mut(identity) {
            Some(replica) => {
                replica.last_seen = now;
                true
            }
            None => false,
        }
    }

    /// Registers a new replica of `model`, idle; its id is the next of the model's.
    pub(crate) fn register(&mut self, identity: &[u8], model: u32, input_type: InputType, now: Instant) -> ReplicaInfo {
        let entry = self.model(model);
        let replica_id = entry.next_replica_id;
        entry.next_replica_id += 1;
        entry.count += 1;
        entry.idle.push(identity.to_vec());
        let aimd = Aimd::new(self.aimd);
        self.replicas.insert(
            identity.to_vec(),
            Replica {
                model,
                replica_id,
                input_type,
                last_seen: now,
                inflight: None,
                aimd,
                round_trip: Duration::ZERO,
            },
        );
        ReplicaInfo { model, replica_id, input_type }
    }

    /// An idle replica of `model`, no longer idle; the caller sends it a batch or gives it back with
    /// [`Registry::push_idle`].
    pub(crate) fn pop_idle(&mut self, model: u32) -> Option<Vec<u8>> {
        self.models.get_mut(model as usize)?.idle.pop()
    }

    pub(crate) fn push_idle(&mut self, model: u32, identity: Vec<u8>) {
        self.model(model).idle.push(identity);
    }

    /// A response `msg_id` from `identity` at `now`. When it answers the batch in flight, the batch
    /// comes back, AIMD and the round-trip estimate learn its latency, and the replica is idle again.
    pub(crate) fn answered(&mut self, identity: &[u8], msg_id: u32, now: Instant) -> Answer {
        let Some(replica) = self.replicas.get_mut(identity) else { return Answer::Unknown };
        let Some(batch) = replica.inflight.take_if(|b| b.msg_id == msg_id) else { return Answer::Unmatched };
        let latency = now - batch.sent;
        let slo = batch.tasks.iter().map(|t| t.slo).min().unwrap_or_default();
        replica.aimd.observe(batch.tasks.len(), latency, slo);
        replica.round_trip = if replica.round_trip.is_zero() { latency } else { (replica.round_trip * 4 + latency) / 5 };
        let model = replica.model;
        self.model(model).idle.push(identity.to_vec());
        Answer::Batch { model, batch, latency }
    }

    /// Takes back the batch in flight of `identity` (it will not be answered), with the replica's
    /// id; the replica is idle again. None when it is unknown or has no batch in flight.
    pub(crate) fn take_inflight(&mut self, identity: &[u8]) -> Option<(u32, Batch)> {
        let replica = self.replicas.get_mut(identity)?;
        let batch = replica.inflight.take()?;
        let (model, replica_id) = (replica.model, replica.replica_id);
        self.model(model).idle.push(identity.to_vec());
        Some((replica_id, batch))
    }

    /// Forgets a replica; it comes back with its batch in flight, whose tasks the caller requeues.
    pub(crate) fn remove(&mut self, identity: &[u8]) -> Option<Replica> {
        let replica = self.replicas.remove(identity)?;
        let entry = self.model(replica.model);
        entry.count -= 1;
        entry.idle.retain(|i| i != identity);
        Some(replica)
    }

    /// When a liveness check is due at `now`: the replicas silent for longer than the heartbeat
    /// timeout (the caller removes them). Otherwise nothing.
    pub(crate) fn silent(&mut self, now: Instant) -> Vec<Vec<u8>> {
        if now < self.next_liveness_check {
            return Vec::new();
        }
        let timeout = self.heartbeat_timeout;
        self.next_liveness_check = now + (timeout / 4).min(Duration::from_secs(1));
        self.replicas
            .iter()
            .filter(|(_, r)| now.duration_since(r.last_seen) > timeout)
            .map(|(identity, _)| identity.clone())
            .collect()
    }

    /// When the next liveness check is due.
    pub(crate) fn next_liveness_check(&self) -> Instant {
        self.next_liveness_check
    }

    /// The longest round-trip estimate of the replicas with a batch in flight, when some have one and
    /// none of those batches holds more than `max_batch` tasks.
    pub(crate) fn small_batches_round_trip(&self, max_batch: usize) -> Option<Duration> {
        let mut longest = None;
        for replica in self.replicas.values() {
            let Some(batch) = &replica.inflight else { continue };
            if batch.tasks.len() > max_batch {
                return None;
            }
            longest = longest.max(Some(replica.round_trip));
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::task;
    use crate::queue::{Queues, Take};

    const MS: Duration = Duration::from_millis(1);
    const SLO: Duration = Duration::from_secs(1);

    fn registry(heartbeat_timeout: Duration, now: Instant) -> Registry {
        Registry::new(AimdConfig::default(), heartbeat_timeout, now)
    }

    /// Sends `keys` to `identity` as batch `msg_id` at `now`.
    fn send(registry: &mut Registry, identity: &[u8], msg_id: u32, keys: &[u64], now: Instant) {
        let tasks = keys.iter().map(|&key| task(key, SLO, now)).collect();
        registry.get_mut(identity).unwrap().inflight = Some(Batch { msg_id, tasks, sent: now });
    }

    fn keys(batch: &Batch) -> Vec<u64> {
        batch.tasks.iter().map(|t| t.key).collect()
    }

    #[test]
    fn replicas_get_ids_per_model_and_start_idle() {
        let now = Instant::now();
        let mut r = registry(SLO, now);
        let info = r.register(b"a", 0, InputType::Doubles, now);
        assert_eq!(info, ReplicaInfo { model: 0, replica_id: 0, input_type: InputType::Doubles });
        assert_eq!(r.register(b"b", 2, InputType::Ints, now).replica_id, 0);
        assert_eq!(r.register(b"c", 0, InputType::Doubles, now).replica_id, 1);
        assert_eq!((r.count(0), r.count(1), r.count(2), r.count(9)), (2, 0, 1, 0));
        assert_eq!(r.model_count(), 3);
        let mut idle = vec![r.pop_idle(0).unwrap(), r.pop_idle(0).unwrap()];
        idle.sort();
        assert_eq!(idle, [b"a".to_vec(), b"c".to_vec()]);
        assert_eq!(r.pop_idle(0), None);
        assert_eq!(r.pop_idle(9), None);
        assert!(r.touch(b"a", now) && !r.touch(b"z", now));
    }

    #[test]
    fn an_answer_returns_the_batch_and_makes_the_replica_idle() {
        let now = Instant::now();
        let mut r = registry(SLO, now);
        r.register(b"a", 0, InputType::Doubles, now);
        let identity = r.pop_idle(0).unwrap();
        send(&mut r, &identity, 7, &[1, 2], now);
        assert!(matches!(r.answered(b"a", 6, now + MS), Answer::Unmatched));
        assert!(matches!(r.answered(b"x", 7, now + MS), Answer::Unknown));
        assert_eq!(r.pop_idle(0), None, "busy while its batch is in flight");
        let Answer::Batch { model, batch, latency } = r.answered(b"a", 7, now + 10 * MS) else { panic!("no batch") };
        assert_eq!((model, keys(&batch), latency), (0, vec![1, 2], 10 * MS));
        assert_eq!(r.get_mut(b"a").unwrap().round_trip, 10 * MS, "the first round trip is taken as is");
        assert_eq!(r.pop_idle(0).as_deref(), Some(b"a".as_slice()));
        assert!(matches!(r.answered(b"a", 7, now + MS), Answer::Unmatched), "answered once");
        // Later round trips move the estimate by a fifth.
        send(&mut r, b"a", 8, &[3], now);
        assert!(matches!(r.answered(b"a", 8, now + 20 * MS), Answer::Batch { .. }));
        assert_eq!(r.get_mut(b"a").unwrap().round_trip, 12 * MS);
    }

    #[test]
    fn full_answered_batches_grow_the_aimd_size() {
        let now = Instant::now();
        let mut r = registry(SLO, now);
        r.register(b"a", 0, InputType::Doubles, now);
        assert_eq!(r.get_mut(b"a").unwrap().aimd.batch_size(), 1);
        send(&mut r, b"a", 1, &[1], now);
        r.answered(b"a", 1, now + MS);
        assert_eq!(r.get_mut(b"a").unwrap().aimd.batch_size(), 2);
    }

    #[test]
    fn a_silent_replica_is_found_and_its_batch_requeued() {
        let start = Instant::now();
        let timeout = 100 * MS;
        let mut r = registry(timeout, start);
        let mut queues = Queues::new(100);
        for (token, key) in [(1, 1), (2, 2)] {
            queues.enqueue(task(key, SLO, start), token);
        }
        r.register(b"quiet", 0, InputType::Doubles, start);
        r.register(b"alive", 0, InputType::Doubles, start);
        let Take::Batch(tasks) = queues.take_batch(0, 2, start, start) else { panic!("no batch") };
        r.get_mut(b"quiet").unwrap().inflight = Some(Batch { msg_id: 0, tasks, sent: start });
        r.pop_idle(0);
        r.pop_idle(0);
        assert!(r.silent(start).is_empty(), "nobody is silent yet");
        assert_eq!(r.next_liveness_check(), start + timeout / 4);
        assert!(r.silent(start + 10 * MS).is_empty(), "the next check is not due");
        r.touch(b"alive", start + 90 * MS);
        assert_eq!(r.silent(start + 150 * MS), [b"quiet".to_vec()]);
        let gone = r.remove(b"quiet").unwrap();
        assert_eq!(r.count(0), 1);
        assert!(r.remove(b"quiet").is_none());
        queues.requeue(gone.model, gone.inflight.into_iter().flat_map(|b| b.tasks));
        let Take::Batch(again) = queues.take_batch(0, 2, start, start + 150 * MS) else { panic!("not requeued") };
        assert_eq!(again.iter().map(|t| t.key).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn a_removed_replica_is_no_longer_idle() {
        let now = Instant::now();
        let mut r = registry(SLO, now);
        r.register(b"a", 0, InputType::Doubles, now);
        r.register(b"b", 0, InputType::Doubles, now);
        assert!(r.remove(b"a").unwrap().inflight.is_none());
        assert_eq!(r.pop_idle(0).as_deref(), Some(b"b".as_slice()));
        assert_eq!(r.pop_idle(0), None);
        assert!(!r.touch(b"a", now));
    }

    #[test]
    fn a_batch_taken_back_leaves_the_replica_idle() {
        let now = Instant::now();
        let mut r = registry(SLO, now);
        r.register(b"a", 0, InputType::Doubles, now);
        assert!(r.take_inflight(b"a").is_none(), "nothing in flight");
        let identity = r.pop_idle(0).unwrap();
        send(&mut r, &identity, 3, &[4, 5], now);
        let (replica_id, batch) = r.take_inflight(b"a").unwrap();
        assert_eq!((replica_id, keys(&batch)), (0, vec![4, 5]));
        assert_eq!(r.pop_idle(0).as_deref(), Some(b"a".as_slice()));
        assert!(matches!(r.answered(b"a", 3, now), Answer::Unmatched), "a late answer matches nothing");
    }

    #[test]
    fn spinning_needs_small_batches_in_flight() {
        let now = Instant::now();
        let mut r = registry(SLO, now);
        r.register(b"a", 0, InputType::Doubles, now);
        r.register(b"b", 0, InputType::Doubles, now);
        assert_eq!(r.small_batches_round_trip(2), None, "nothing in flight");
        r.get_mut(b"a").unwrap().round_trip = 3 * MS;
        r.get_mut(b"b").unwrap().round_trip = 5 * MS;
        send(&mut r, b"a", 1, &[1, 2], now);
        assert_eq!(r.small_batches_round_trip(2), Some(3 * MS), "only replicas with a batch count");
        send(&mut r, b"b", 2, &[3], now);
        assert_eq!(r.small_batches_round_trip(2), Some(5 * MS));
        send(&mut r, b"a", 3, &[1, 2, 4], now);
        assert_eq!(r.small_batches_round_trip(2), None, "a larger batch is in flight");
    }
}
