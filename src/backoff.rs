//! Exponential backoff with jitter, for every retry tortie makes (failed
//! kernel calls, Kubernetes watches): each delay is drawn from the upper
//! half of the current step (so no two agents, or watchers, retry in
//! lockstep and no delay is ever near zero), and the step doubles up to a
//! cap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Distinguishes backoffs created in the same nanosecond.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// Felix-like defaults for kernel calls: 200 ms doubling to 30 s.
pub const FIRST: Duration = Duration::from_millis(200);
pub const CAP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    step: Duration,
    seed: u64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(FIRST, CAP)
    }
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Backoff {
            first,
            cap: cap.max(first),
            step: first,
            seed: (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_add(
                INSTANCES
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ) | 1,
        }
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.step = self.first;
    }

    /// The current step (the largest delay `next_delay` can return now).
    pub fn step(&self) -> Duration {
        self.step
    }

    /// The delay before the next attempt, in `[step/2, step]`; then the step
    /// doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: enough randomness for jitter, no dependency.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = self.step / 2;
        let frac = (self.seed % 1_000_001) as f64 / 1_000_000.0;
        let delay = half + half.mul_f64(frac);
        self.step = (self.step * 2).min(self.cap);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut step = Duration::from_millis(200);
        let mut seen = Vec::new();
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
            seen.push(d);
            step = (step * 2).min(Duration::from_secs(30));
        }
        assert_eq!(b.step(), Duration::from_secs(30));
        // At the cap, jitter still varies the delay.
        let tail: std::collections::BTreeSet<_> = seen[10..].iter().collect();
        assert!(tail.len() > 1, "no jitter: {seen:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(200));
    }

    #[test]
    fn the_total_wait_of_n_retries_grows_geometrically() {
        // Ten retries from 200 ms wait at least 0.1 + 0.2 + … ≈ 50 s in
        // all: a crashing nft is retried a handful of times a minute.
        let mut b = Backoff::default();
        let total: Duration = (0..10).map(|_| b.next_delay()).sum();
        assert!(total >= Duration::from_secs(40), "{total:?}");
    }
}
