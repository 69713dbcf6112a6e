//! The prediction cache: ready outputs keyed by model version and input, bounded in bytes, evicted
//! with CLOCK (second chance).
//!
//! The index is a 64-bit hash of the input ([`cache_key`]), but a hash is not an identity: two inputs
//! can share a key by chance, and a client who can compute collisions could otherwise plant an answer
//! for someone else's input. So each entry keeps the model version and the input bytes it answers,
//! and a lookup is a hit only when both are equal (one `memcmp`, next to no cost beside the rest of a
//! request). An entry under the same key for another input is a miss, and storing the other input
//! replaces it.

use std::sync::Arc;

use foldhash::HashMap;

/// Bytes charged per entry on top of its output and its input: the slot (key, model, the two shared
/// pointers, the CLOCK bit: 48), the index's bucket (about 24), and the reference counts of the
/// two shared allocations (16 each). It was 64 when entries kept no input.
pub const ENTRY_OVERHEAD: usize = 104;

/// Cache key: a 64-bit hash of the input bytes seeded with the model version's id. It finds the
/// entry; the entry's model and input decide whether it is a hit.
pub fn cache_key(model: u32, input: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(input, u64::from(model))
}

struct Slot {
    key: u64,
    model: u32,
    referenced: bool,
    /// The input this entry answers, shared with the task that computed it.
    input: Arc<[u8]>,
    value: Arc<[u8]>,
}

impl Slot {
    fn answers(&self, model: u32, input: &[u8]) -> bool {
        self.model == model && *self.input == *input
    }

    fn size(&self) -> usize {
        entry_size(&self.input, &self.value)
    }
}

fn entry_size(input: &[u8], value: &[u8]) -> usize {
    input.len() + value.len() + ENTRY_OVERHEAD
}

pub struct PredictionCache {
    capacity: usize,
    used: usize,
    index: HashMap<u64, usize>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    hand: usize,
    lookups: u64,
    hits: u64,
}

impl PredictionCache {
    pub fn new(capacity_bytes: usize) -> Self {
        PredictionCache {
            capacity: capacity_bytes,
            used: 0,
            index: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            lookups: 0,
            hits: 0,
        }
    }

    /// The output for `input` to model version `model`, whose key is `key`, marked as recently used.
    /// An entry under `key` for another model or input is a miss.
    pub fn get(&mut self, key: u64, model: u32, input: &[u8]) -> Option<Arc<[u8]>> {
        self.lookups += 1;
        let hit = self.peek(key, model, input)?;
        self.hits += 1;
        Some(hit)
    }

    /// Like [`PredictionCache::get`], without counting it as a lookup.
    pub fn peek(&mut self, key: u64, model: u32, input: &[u8]) -> Option<Arc<[u8]>> {
        let slot = self.slots[*self.index.get(&key)?].as_mut()?;
        if !slot.answers(model, input) {
            return None;
        }
        slot.referenced = true;
        Some(slot.value.clone())
    }

    /// Stores the output of `input` to `model` under `key`, replacing what the key held (the same
    /// input's older output, or another input's that collides). Its input is charged to the budget
    /// too; an entry larger than the whole cache is not stored.
    pub fn put(&mut self, key: u64, model: u32, input: Arc<[u8]>, value: Arc<[u8]>) {
        let size = entry_size(&input, &value);
        if size > self.capacity {
            return;
        }
        let slot = Slot { key, model, referenced: false, input, value };
        if let Some(&i) = self.index.get(&key) {
            let old = self.slots[i].as_mut().expect("indexed slot is occupied");
            self.used = self.used - old.size() + size;
            // A newer answer for the same input keeps its second chance; another input's does not.
            let referenced = old.referenced && old.answers(model, &slot.input);
            *old = Slot { referenced, ..slot };
        } else {
            self.used += size;
            let i = match self.free.pop() {
                Some(i) => {
                    self.slots[i] = Some(slot);
                    i
                }
                None => {
                    self.slots.push(Some(slot));
                    self.slots.len() - 1
                }
            };
            self.index.insert(key, i);
        }
        while self.used > self.capacity {
            self.evict_one();
        }
    }

    fn evict_one(&mut self) {
        loop {
            self.hand = (self.hand + 1) % self.slots.len();
            match &mut self.slots[self.hand] {
                Some(slot) if slot.referenced => slot.referenced = false,
                Some(slot) => {
                    self.used -= slot.size();
                    self.index.remove(&slot.key);
                    self.slots[self.hand] = None;
                    self.free.push(self.hand);
                    return;
                }
                None => {}
            }
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// (lookups, hits) since creation.
    pub fn counts(&self) -> (u64, u64) {
        (self.lookups, self.hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: usize) -> Arc<[u8]> {
        vec![b'x'; n].into()
    }

    fn input(n: u64) -> Arc<[u8]> {
        n.to_le_bytes().into()
    }

    /// The key of `input` to model 0, narrowed to two bits: four keys for every input, so that
    /// inputs collide all the time.
    fn narrow(input: &[u8]) -> u64 {
        cache_key(0, input) & 0b11
    }

    #[test]
    fn hit_after_put_and_miss_before() {
        let mut cache = PredictionCache::new(1 << 20);
        let x = input(1);
        assert!(cache.get(7, 0, &x).is_none());
        cache.put(7, 0, x.clone(), b"1.0".as_slice().into());
        assert_eq!(cache.get(7, 0, &x).as_deref(), Some(b"1.0".as_slice()));
        assert_eq!(cache.peek(7, 0, &x).as_deref(), Some(b"1.0".as_slice()));
        assert_eq!(cache.counts(), (2, 1), "peek counts no lookup");
    }

    #[test]
    fn an_entry_answers_only_its_own_input_and_model() {
        let mut cache = PredictionCache::new(1 << 20);
        cache.put(7, 0, input(1), b"1.0".as_slice().into());
        assert!(cache.get(7, 0, &input(2)).is_none(), "another input under the same key");
        assert!(cache.get(7, 1, &input(1)).is_none(), "the same input to another model");
        assert!(cache.get(7, 0, &input(1)[..4]).is_none(), "a prefix of the input");
        assert!(cache.peek(7, 0, &input(2)).is_none());
        assert_eq!(cache.counts(), (3, 0));
        // The other input takes the key over: the first one is a miss from now on.
        cache.put(7, 0, input(2), b"2.0".as_slice().into());
        assert_eq!(cache.get(7, 0, &input(2)).as_deref(), Some(b"2.0".as_slice()));
        assert!(cache.get(7, 0, &input(1)).is_none());
        assert_eq!((cache.len(), cache.used_bytes()), (1, 8 + 3 + ENTRY_OVERHEAD));
    }

    #[test]
    fn colliding_inputs_never_get_each_others_answers() {
        let mut cache = PredictionCache::new(1 << 20);
        let answer = |n: u64| -> Arc<[u8]> { format!("{n}").into_bytes().into() };
        let mut last_of_key = [None; 4];
        for n in 0..200 {
            let x = input(n);
            cache.put(narrow(&x), 0, x.clone(), answer(n));
            last_of_key[narrow(&x) as usize] = Some(n);
            for m in 0..=n {
                let y = input(m);
                match cache.get(narrow(&y), 0, &y) {
                    Some(hit) => assert_eq!(hit, answer(m), "input {m} got another input's answer"),
                    None => assert_ne!(last_of_key[narrow(&y) as usize], Some(m), "input {m} was stored last"),
                }
            }
        }
        assert_eq!(cache.len(), 4);
        assert!(last_of_key.iter().all(Option::is_some), "the narrowed hash has collided on every key");
    }

    #[test]
    fn inputs_are_charged_to_the_byte_budget() {
        let mut cache = PredictionCache::new(1 << 20);
        cache.put(1, 0, vec![0; 1000].into(), value(10));
        assert_eq!(cache.used_bytes(), 1000 + 10 + ENTRY_OVERHEAD);
        cache.put(1, 0, vec![1; 100].into(), value(20));
        assert_eq!(cache.used_bytes(), 100 + 20 + ENTRY_OVERHEAD, "a replaced entry gives its bytes back");
        let mut small = PredictionCache::new(500);
        small.put(1, 0, vec![0; 450].into(), value(10));
        assert!(small.is_empty(), "a large input does not fit even with a small output");
    }

    #[test]
    fn stays_within_its_byte_bound() {
        let entry = 8 + 100 + ENTRY_OVERHEAD;
        let mut cache = PredictionCache::new(10 * entry);
        for key in 0..1000 {
            cache.put(key, 0, input(key), value(100));
            assert!(cache.used_bytes() <= 10 * entry);
        }
        assert_eq!(cache.len(), 10);
    }

    #[test]
    fn clock_spares_recently_used_entries() {
        let mut cache = PredictionCache::new(4 * (8 + 10 + ENTRY_OVERHEAD));
        for key in 0..4 {
            cache.put(key, 0, input(key), value(10));
        }
        cache.get(0, 0, &input(0));
        cache.put(4, 0, input(4), value(10));
        assert!(cache.get(0, 0, &input(0)).is_some(), "a referenced entry gets a second chance");
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn variable_sizes_evict_enough_and_oversize_is_skipped() {
        let mut cache = PredictionCache::new(1000);
        for key in 0..8 {
            cache.put(key, 0, input(key), value(50));
        }
        cache.put(100, 0, input(100), value(700));
        assert!(cache.used_bytes() <= 1000);
        assert!(cache.get(100, 0, &input(100)).is_some());
        cache.put(200, 0, input(200), value(2000));
        assert!(cache.get(200, 0, &input(200)).is_none());
    }

    #[test]
    fn the_overhead_charged_covers_the_slot_and_its_shared_allocations() {
        let slot = std::mem::size_of::<Option<Slot>>();
        assert_eq!(slot, 48);
        // The index's bucket (key and slot number, with its control byte and spare capacity) and the
        // two reference counts of each Arc<[u8]> (strong and weak, 8 bytes each).
        assert!(slot + 24 + 2 * 16 <= ENTRY_OVERHEAD);
    }

    #[test]
    fn keys_depend_on_model_and_input() {
        assert_eq!(cache_key(1, b"abc"), cache_key(1, b"abc"));
        assert_ne!(cache_key(1, b"abc"), cache_key(2, b"abc"));
        assert_ne!(cache_key(1, b"abc"), cache_key(1, b"abd"));
    }
}
