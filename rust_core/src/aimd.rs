//! Adaptive batch sizing: additive increase, multiplicative decrease (Clipper, NSDI'17 §4.3).
//!
//! While batches finish under `target` × SLO and were full, the size grows by `step`; a batch
//! that takes longer and was nearly full (90%) shrinks it by `backoff` (about 10%). A slow batch
//! well under the size says little about the size (a scheduling hiccup, a container pause): were it
//! to shrink the size, a load below capacity, whose batches are rarely full, would keep the size low
//! until the next burst, which then needs several batches where one would do.

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct AimdConfig {
    /// Fraction of the SLO a batch may take. Half leaves room for one batch of queueing.
    pub target: f64,
    pub step: f64,
    pub backoff: f64,
    pub max_batch_size: usize,
}

impl Default for AimdConfig {
    fn default() -> Self {
        AimdConfig { target: 0.5, step: 1.0, backoff: 0.9, max_batch_size: 1024 }
    }
}

#[derive(Debug)]
pub struct Aimd {
    config: AimdConfig,
    size: f64,
}

impl Aimd {
    pub fn new(config: AimdConfig) -> Self {
        Aimd { config, size: 1.0 }
    }

    /// The largest batch to send next.
    pub fn batch_size(&self) -> usize {
        (self.size as usize).clamp(1, self.config.max_batch_size)
    }

    /// Feeds back one batch: its length, its round-trip latency and the tightest SLO in it.
    pub fn observe(&mut self, batch_len: usize, latency: Duration, slo: Duration) {
        if latency.as_secs_f64() > slo.as_secs_f64() * self.config.target {
            if batch_len * 10 >= self.batch_size() * 9 {
                self.size = (self.size * self.config.backoff).max(1.0);
            }
        } else if batch_len >= self.batch_size() {
            self.size = (self.size + self.config.step).min(self.config.max_batch_size as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model costing `fixed` plus `per_item` per input.
    fn latency(n: usize) -> Duration {
        Duration::from_micros(1000 + 20 * n as u64)
    }

    #[test]
    fn converges_under_the_slo_for_fixed_plus_per_item_cost() {
        let slo = Duration::from_millis(20);
        let mut aimd = Aimd::new(AimdConfig::default());
        let mut sizes = Vec::new();
        for _ in 0..5000 {
            let n = aimd.batch_size();
            aimd.observe(n, latency(n), slo);
            sizes.push(n);
        }
        // Target 10 ms: the largest batch that fits is (10000 - 1000) / 20 = 450.
        let tail = &sizes[4000..];
        assert!(tail.iter().all(|&n| latency(n) <= slo), "settled batches stay under the SLO");
        let mean = tail.iter().sum::<usize>() as f64 / tail.len() as f64;
        assert!((400.0..=451.0).contains(&mean), "mean settled size {mean}");
    }

    #[test]
    fn does_not_grow_on_partial_batches() {
        let mut aimd = Aimd::new(AimdConfig::default());
        for _ in 0..100 {
            aimd.observe(1, Duration::from_micros(10), Duration::from_millis(10));
        }
        assert_eq!(aimd.batch_size(), 2);
    }

    #[test]
    fn backs_off_by_ten_percent() {
        let mut aimd = Aimd::new(AimdConfig { max_batch_size: 10_000, ..Default::default() });
        for _ in 0..99 {
            let n = aimd.batch_size();
            aimd.observe(n, Duration::ZERO, Duration::from_millis(10));
        }
        assert_eq!(aimd.batch_size(), 100);
        aimd.observe(100, Duration::from_millis(6), Duration::from_millis(10));
        assert_eq!(aimd.batch_size(), 90);
    }

    #[test]
    fn a_slow_batch_well_under_the_size_does_not_shrink_it() {
        let mut aimd = Aimd::new(AimdConfig { max_batch_size: 10_000, ..Default::default() });
        for _ in 0..99 {
            let n = aimd.batch_size();
            aimd.observe(n, Duration::ZERO, Duration::from_millis(10));
        }
        aimd.observe(10, Duration::from_millis(50), Duration::from_millis(10));
        assert_eq!(aimd.batch_size(), 100);
        aimd.observe(90, Duration::from_millis(50), Duration::from_millis(10));
        assert_eq!(aimd.batch_size(), 90);
    }

    #[test]
    fn respects_the_cap() {
        let mut aimd = Aimd::new(AimdConfig { max_batch_size: 8, ..Default::default() });
        for _ in 0..100 {
            let n = aimd.batch_size();
            aimd.observe(n, Duration::ZERO, Duration::from_millis(10));
        }
        assert_eq!(aimd.batch_size(), 8);
    }
}
