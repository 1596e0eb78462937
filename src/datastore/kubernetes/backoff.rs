//! The watchers' retry delay: exponential from `min` to a small cap, each
//! delay drawn at random from its upper half (so thousands of nodes that
//! lost the same API server do not come back in step), reset on success.
//! kube-rs's default (0.8 s growing to 30 s) made a change wait up to a
//! minute after an outage; with a 2 s cap a watcher tries again at most
//! 2 s after the server answers.

use std::time::Duration;

use kube::runtime::utils::Backoff;

/// Capped, jittered exponential backoff for [`kube::runtime::WatchStreamExt::backoff`].
#[derive(Debug, Clone)]
pub struct CappedBackoff {
    min: Duration,
    cap: Duration,
    current: Duration,
    rng: u64,
}

impl CappedBackoff {
    pub fn new(min: Duration, cap: Duration) -> CappedBackoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // Distinct per instance even when created in the same nanosecond.
        let here = &seed as *const u64 as u64;
        CappedBackoff {
            min,
            cap: cap.max(min),
            current: min,
            rng: (seed ^ here.rotate_left(32)) | 1,
        }
    }

    /// xorshift64*: enough for jitter, no dependency.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    /// A delay in [current/2, current]; then current doubles up to the cap.
    fn next(&mut self) -> Option<Duration> {
        let top = self.current.as_millis() as u64;
        let half = top / 2;
        let delay = Duration::from_millis(half + self.random() % (top - half + 1));
        self.current = (self.current * 2).min(self.cap);
        Some(delay)
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_are_jittered_and_reset() {
        let min = Duration::from_millis(250);
        let cap = Duration::from_secs(2);
        let mut b = CappedBackoff::new(min, cap);
        let first: Vec<Duration> = b.by_ref().take(40).collect();
        assert!(first[0] >= min / 2 && first[0] <= min, "{first:?}");
        assert!(
            first.iter().all(|d| *d <= cap),
            "never above the cap: {first:?}"
        );
        let late = &first[10..];
        assert!(late.iter().all(|d| *d >= cap / 2), "{late:?}");
        assert!(
            late.iter().any(|d| *d != late[0]),
            "jittered, not constant: {late:?}"
        );
        b.reset();
        let again = b.next().unwrap();
        assert!(again <= min, "reset starts from min again: {again:?}");
    }
}
