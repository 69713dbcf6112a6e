//! A window over the most recent samples of a metric, summarised as Clipper's histograms are.

use std::collections::VecDeque;

/// How many recent samples a window keeps (latencies, batch sizes).
pub const SAMPLE_WINDOW: usize = 4096;

#[derive(Clone, Debug, Default)]
pub struct Window {
    samples: VecDeque<u64>,
    count: u64,
}

/// min, max, mean, population std, p50, p95, p99 of a window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub min: u64,
    pub max: u64,
    pub mean: f64,
    pub std_dev: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Window {
    pub fn record(&mut self, value: u64) {
        if self.samples.len() == SAMPLE_WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(value);
        self.count += 1;
    }

    pub fn summary(&self) -> Summary {
        if self.samples.is_empty() {
            return Summary { count: self.count, ..Summary::default() };
        }
        let mut sorted: Vec<u64> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        let n = sorted.len() as f64;
        let mean = sorted.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = sorted.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let percentile = |p: f64| {
            // Rank p(n+1), interpolated and clamped, as Clipper's histograms do.
            let rank = (p * (n + 1.0)).clamp(1.0, n) - 1.0;
            let (lo, frac) = (rank.floor() as usize, rank.fract());
            let hi = (lo + 1).min(sorted.len() - 1);
            sorted[lo] as f64 + frac * (sorted[hi] as f64 - sorted[lo] as f64)
        };
        Summary {
            count: self.count,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            mean,
            std_dev: var.sqrt(),
            p50: percentile(0.5),
            p95: percentile(0.95),
            p99: percentile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_a_known_sequence() {
        let mut w = Window::default();
        for v in 1..=100 {
            w.record(v);
        }
        let s = w.summary();
        assert_eq!((s.count, s.min, s.max), (100, 1, 100));
        assert_eq!(s.mean, 50.5);
        assert!((s.p50 - 50.5).abs() < 1e-9);
        assert!((s.p99 - 99.99).abs() < 1e-9);
    }

    #[test]
    fn keeps_only_the_recent_window() {
        let mut w = Window::default();
        for v in 0..(SAMPLE_WINDOW as u64 + 10) {
            w.record(v);
        }
        let s = w.summary();
        assert_eq!(s.min, 10);
        assert_eq!(s.count, SAMPLE_WINDOW as u64 + 10);
    }
}
