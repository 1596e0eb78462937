//! The kernel side of the loop: when to apply (at once after a change;
//! after failures, on the jittered backoff, never sooner than
//! [`RETRY_ON_CHANGE_AFTER`] after the last failure), the periodic refresh
//! that repairs drift. It holds the ruleset changes not yet in the
//! kernel (merged on every compute, cleared after a successful apply).
//! (Rule counters are read on their own thread: `daemon::counters`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::compile::ir::{Change, Ruleset};
use crate::nft::{Backoff, Dataplane, Limits, NftError, Step, Target};

use super::metrics::Metrics;

/// While applies fail, a new change may pull the next retry forward, but
/// never closer than this to the last failure: a flapping input cannot
/// turn the backoff into a tight loop, and a fix still lands quickly.
pub const RETRY_ON_CHANGE_AFTER: Duration = Duration::from_secs(1);

/// When to attempt the apply a new change calls for.
pub(super) fn after_change(scheduled: Instant, last_failure: Instant, failures: u32) -> Instant {
    if failures == 0 {
        return Instant::now();
    }
    scheduled.min((last_failure + RETRY_ON_CHANGE_AFTER).max(Instant::now()))
}

/// What the kernel side needs to know of the desired state.
pub struct View<'a> {
    pub ruleset: &'a Ruleset,
    pub refresh: Duration,
}

pub struct Kernel {
    dp: Dataplane,
    backoff: Backoff,
    pending_apply: bool,
    /// Ruleset changes not yet applied.
    change: Change,
    next_attempt: Instant,
    last_failure: Instant,
    next_refresh: Instant,
}

impl Kernel {
    pub fn new(target: &Target, limits: Limits, refresh: Duration, first: Change) -> Kernel {
        let mut dp = Dataplane::new(target.clone());
        dp.set_limits(limits);
        let now = Instant::now();
        Kernel {
            dp,
            backoff: Backoff::default(),
            pending_apply: true,
            change: first,
            next_attempt: now,
            last_failure: now,
            next_refresh: now + refresh,
        }
    }

    /// The ruleset changed by `change` (or, when empty, only needs a new
    /// apply): schedule it.
    pub fn changed(&mut self, change: Change) {
        self.change.merge(change);
        self.pending_apply = true;
        self.next_attempt = after_change(
            self.next_attempt,
            self.last_failure,
            self.dp.consecutive_failures(),
        );
    }

    /// The earliest moment something is due.
    pub fn wake_by(&self) -> Instant {
        let mut t = self.next_refresh;
        if self.pending_apply {
            t = t.min(self.next_attempt);
        }
        t
    }

    /// Does whatever is due; false when `stop` was set during a failed call.
    pub fn tick(&mut self, view: &View, metrics: &Metrics, stop: &AtomicBool) -> bool {
        let now = Instant::now();
        if self.pending_apply && now >= self.next_attempt && !self.attempt(view, metrics, stop) {
            return false;
        }
        if !self.pending_apply && now >= self.next_refresh && !self.refresh(view, metrics, stop) {
            return false;
        }
        true
    }

    fn attempt(&mut self, view: &View, metrics: &Metrics, stop: &AtomicBool) -> bool {
        let _span = tracing::info_span!("apply").entered();
        match apply_once(&mut self.dp, view.ruleset, Some(&self.change), metrics) {
            Ok(()) => {
                self.pending_apply = false;
                self.change = Change::default();
                self.backoff.reset();
                true
            }
            Err(e) if stop.load(Ordering::Relaxed) => {
                tracing::debug!(error = %e, "apply abandoned on stop");
                false
            }
            Err(e) => {
                self.failed("apply failed; the previous ruleset stays in force", &e);
                true
            }
        }
    }

    fn refresh(&mut self, view: &View, metrics: &Metrics, stop: &AtomicBool) -> bool {
        self.next_refresh = Instant::now() + view.refresh;
        match apply_once(&mut self.dp, view.ruleset, None, metrics) {
            Ok(()) => true,
            Err(_) if stop.load(Ordering::Relaxed) => false,
            Err(e) => {
                self.pending_apply = true;
                self.failed("refresh failed", &e);
                true
            }
        }
    }

    fn failed(&mut self, msg: &str, e: &NftError) {
        let delay = self.backoff.next_delay();
        tracing::error!(
            error = %e,
            cause = e.label(),
            consecutive_failures = self.dp.consecutive_failures(),
            next_step = self.dp.step().label(),
            retry_in_ms = delay.as_millis() as u64,
            "{msg}"
        );
        self.last_failure = Instant::now();
        self.next_attempt = self.last_failure + delay;
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One apply of `change` (or, without one, a drift check) with its metrics
/// and logs. Ladder steps above the plain delta are logged before they run.
fn apply_once(
    dp: &mut Dataplane,
    ruleset: &Ruleset,
    change: Option<&Change>,
    metrics: &Metrics,
) -> Result<(), NftError> {
    let refresh = change.is_none();
    let step = dp.step();
    if step != Step::Delta {
        tracing::warn!(
            consecutive_failures = dp.consecutive_failures(),
            "ladder: trying a {} of table inet tortie",
            step.label()
        );
        metrics.ladder_step(step.metric_label());
    }
    metrics.apply_started(dp.next_call_deadline());
    let result = match change {
        Some(c) => dp.apply_change(ruleset, c),
        None => dp.refresh(ruleset),
    };
    match &result {
        Ok(r) => {
            if refresh && !r.sent {
                metrics.in_step();
            } else {
                metrics.apply_succeeded(r.duration.as_secs_f64(), r.sent, unix_now());
            }
            if refresh {
                metrics.refreshed(r.sent);
            }
            if r.sent {
                log_applied(r, refresh);
            }
        }
        Err(NftError::Interrupted { .. }) => metrics.apply_abandoned(),
        Err(e) => metrics.apply_failed(e.label(), dp.consecutive_failures()),
    }
    result.map(|_| ())
}

fn log_applied(r: &crate::nft::ApplyReport, refresh: bool) {
    let ms = format!("{:.1}", r.duration.as_secs_f64() * 1000.0);
    let (chains_written, chains_deleted) = (r.stats.chains_written, r.stats.chains_deleted);
    let (elements_added, elements_deleted) = (r.stats.elements_added, r.stats.elements_deleted);
    let step = r.step.label();
    if refresh {
        tracing::warn!(
            chains_written,
            chains_deleted,
            elements_added,
            elements_deleted,
            step,
            ms = %ms,
            "drift found in table inet tortie and repaired"
        );
    } else {
        tracing::info!(
            chains_written,
            chains_deleted,
            elements_added,
            elements_deleted,
            step,
            ms = %ms,
            "ruleset applied"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_during_failures_never_retries_sooner_than_a_second_after_one() {
        let now = Instant::now();
        let far = now + Duration::from_secs(20);
        // No failures: at once.
        assert!(after_change(far, now, 0) <= Instant::now());
        // Failing, the last failure just now: pulled forward to 1 s after it.
        let t = after_change(far, now, 4);
        assert!(t >= now + RETRY_ON_CHANGE_AFTER && t < far, "{:?}", t - now);
        // A retry already due sooner stays as it is.
        let soon = now + Duration::from_millis(300);
        assert_eq!(after_change(soon, now, 1), soon);
    }
}
