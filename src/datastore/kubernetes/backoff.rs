//! The watchers' retry delay for kube-rs: [`crate::backoff::Backoff`] from
//! `min` to a small cap, reset on success. kube-rs's default (0.8 s growing
//! to 30 s) made a change wait up to a minute after an outage; with a 2 s
//! cap a watcher tries again at most 2 s after the server answers.

use std::time::Duration;

use kube::runtime::utils::Backoff;

/// Capped, jittered exponential backoff for [`kube::runtime::WatchStreamExt::backoff`].
#[derive(Debug, Clone)]
pub struct CappedBackoff(crate::backoff::Backoff);

impl CappedBackoff {
    pub fn new(min: Duration, cap: Duration) -> CappedBackoff {
        CappedBackoff(crate::backoff::Backoff::new(min, cap))
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    /// A delay in [step/2, step]; then the step doubles up to the cap.
    fn next(&mut self) -> Option<Duration> {
        Some(self.0.next_delay())
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.0.reset();
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
