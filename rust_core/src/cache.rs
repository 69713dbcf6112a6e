//! The prediction cache: ready outputs keyed by model version and input hash, bounded in bytes,
//! evicted with CLOCK (second chance).

use std::collections::HashMap;
use std::sync::Arc;

/// Bytes charged per entry on top of its output, for the key, the slot and the map.
const ENTRY_OVERHEAD: usize = 64;

/// Cache key: a 64-bit hash of the input bytes seeded with the model version's id.
pub fn cache_key(model: u32, input: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(input, u64::from(model))
}

struct Slot {
    key: u64,
    value: Arc<[u8]>,
    referenced: bool,
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
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            lookups: 0,
            hits: 0,
        }
    }

    /// Looks a key up, marking a hit as recently used.
    pub fn get(&mut self, key: u64) -> Option<Arc<[u8]>> {
        self.lookups += 1;
        let slot = self.slots[*self.index.get(&key)?].as_mut()?;
        slot.referenced = true;
        self.hits += 1;
        Some(slot.value.clone())
    }

    /// Looks a key up without counting it as a lookup.
    pub fn peek(&mut self, key: u64) -> Option<Arc<[u8]>> {
        let slot = self.slots[*self.index.get(&key)?].as_mut()?;
        slot.referenced = true;
        Some(slot.value.clone())
    }

    /// Stores an output; one larger than the whole cache is not stored.
    pub fn put(&mut self, key: u64, value: Arc<[u8]>) {
        let size = value.len() + ENTRY_OVERHEAD;
        if size > self.capacity {
            return;
        }
        if let Some(&i) = self.index.get(&key) {
            let slot = self.slots[i].as_mut().expect("indexed slot is occupied");
            self.used = self.used - (slot.value.len() + ENTRY_OVERHEAD) + size;
            slot.value = value;
            slot.referenced = true;
        } else {
            self.used += size;
            let slot = Some(Slot { key, value, referenced: false });
            let i = match self.free.pop() {
                Some(i) => {
                    self.slots[i] = slot;
                    i
                }
                None => {
                    self.slots.push(slot);
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
                    self.used -= slot.value.len() + ENTRY_OVERHEAD;
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

    #[test]
    fn hit_after_put_and_miss_before() {
        let mut cache = PredictionCache::new(1 << 20);
        assert!(cache.get(1).is_none());
        cache.put(1, b"1.0".as_slice().into());
        assert_eq!(cache.get(1).as_deref(), Some(b"1.0".as_slice()));
        assert_eq!(cache.counts(), (2, 1));
    }

    #[test]
    fn stays_within_its_byte_bound() {
        let mut cache = PredictionCache::new(10 * (100 + ENTRY_OVERHEAD));
        for key in 0..1000 {
            cache.put(key, value(100));
            assert!(cache.used_bytes() <= 10 * (100 + ENTRY_OVERHEAD));
        }
        assert_eq!(cache.len(), 10);
    }

    #[test]
    fn clock_spares_recently_used_entries() {
        let mut cache = PredictionCache::new(4 * (10 + ENTRY_OVERHEAD));
        for key in 0..4 {
            cache.put(key, value(10));
        }
        cache.get(0);
        cache.put(4, value(10));
        assert!(cache.get(0).is_some(), "a referenced entry gets a second chance");
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn variable_sizes_evict_enough_and_oversize_is_skipped() {
        let mut cache = PredictionCache::new(1000);
        for key in 0..8 {
            cache.put(key, value(50));
        }
        cache.put(100, value(800));
        assert!(cache.used_bytes() <= 1000);
        assert!(cache.get(100).is_some());
        cache.put(200, value(2000));
        assert!(cache.get(200).is_none());
    }

    #[test]
    fn keys_depend_on_model_and_input() {
        assert_eq!(cache_key(1, b"abc"), cache_key(1, b"abc"));
        assert_ne!(cache_key(1, b"abc"), cache_key(2, b"abc"));
        assert_ne!(cache_key(1, b"abc"), cache_key(1, b"abd"));
    }
}
