//! Prometheus metrics for `tortie run`, in the text exposition format.
//! Where Felix has a metric with the same meaning, its name is used.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failed applies after which the agent reports not ready.
pub const NOT_READY_AFTER_FAILURES: u32 = 3;

/// Per-policy hit counters are reported for at most this many label sets;
/// the rest are summed into `policy="(other)"`.
pub const MAX_POLICY_SERIES: usize = 2000;

#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub local_endpoints: usize,
    pub local_policies: usize,
    pub selectors: usize,
    pub set_members: usize,
    pub rules: usize,
    pub chains: usize,
    pub sets: usize,
}

/// Labels of one per-policy hit series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyLabels {
    pub tier: String,
    pub kind: String,
    pub namespace: String,
    pub policy: String,
    pub action: String,
}

#[derive(Debug, Default)]
struct Inner {
    applies: u64,
    apply_failures: u64,
    nft_calls: u64,
    apply_seconds_sum: f64,
    apply_seconds_count: u64,
    last_success_unix: f64,
    in_sync: bool,
    snapshot: Snapshot,
    invalid: BTreeMap<String, u64>,
    kept_previous_files: u64,
    refreshes: u64,
    drift_repairs: u64,
    policy_hits: BTreeMap<PolicyLabels, (u64, u64)>,
    /// A ruleset was in force at least once.
    ever_synced: bool,
    consecutive_failures: u32,
    failures_by_cause: BTreeMap<String, u64>,
    ladder_steps: BTreeMap<String, u64>,
    /// The apply in progress: when it started and its first call's deadline.
    outstanding: Option<(Instant, Duration)>,
    heartbeat: Option<Instant>,
    live_bound: Duration,
}

/// Shared, updated by the reconcile loop, read by the HTTP endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    log_stats: Mutex<Option<std::sync::Arc<crate::logging::LogStats>>>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Inner {
    fn kernel_ok(&mut self) {
        self.in_sync = true;
        self.ever_synced = true;
        self.consecutive_failures = 0;
        self.outstanding = None;
    }
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// An apply begins; its first nft call is bounded by `deadline`. Retries
    /// of a failing apply keep the first attempt's start: what counts is how
    /// long the change has been waiting for the kernel.
    pub fn apply_started(&self, deadline: Duration) {
        self.with(|m| {
            m.outstanding.get_or_insert((Instant::now(), deadline));
        });
    }

    /// A drift check found the kernel already in step.
    pub fn in_step(&self) {
        self.with(Inner::kernel_ok);
    }

    /// An apply was abandoned because the agent is stopping.
    pub fn apply_abandoned(&self) {
        self.with(|m| m.outstanding = None);
    }

    pub fn ladder_step(&self, step: &str) {
        self.with(|m| *m.ladder_steps.entry(step.to_string()).or_default() += 1);
    }

    /// The reconcile loop went round once more.
    pub fn heartbeat(&self) {
        self.with(|m| m.heartbeat = Some(Instant::now()));
    }

    pub fn set_liveness_bound(&self, bound: Duration) {
        self.with(|m| {
            m.live_bound = bound;
            m.heartbeat.get_or_insert_with(Instant::now);
        });
    }

    /// Ready: a ruleset is in force, fewer than three applies in a row have
    /// failed, and the change in progress (if any) has waited for the kernel
    /// less than its first call's deadline.
    pub fn readiness_at(&self, now: Instant) -> Result<(), String> {
        self.with(|m| {
            if !m.ever_synced {
                return Err("waiting for the first ruleset to be in the kernel".into());
            }
            if m.consecutive_failures >= NOT_READY_AFTER_FAILURES {
                return Err(format!(
                    "the last {} applies failed; the previous ruleset stays in force",
                    m.consecutive_failures
                ));
            }
            if let Some((since, deadline)) = m.outstanding
                && now.saturating_duration_since(since) > deadline
            {
                return Err(format!(
                    "a change has waited {:.0}s for the kernel, beyond the {:.0}s deadline",
                    now.saturating_duration_since(since).as_secs_f64(),
                    deadline.as_secs_f64()
                ));
            }
            Ok(())
        })
    }

    /// Live: the reconcile loop's heartbeat is fresher than the bound.
    pub fn liveness_at(&self, now: Instant) -> Result<(), String> {
        self.with(|m| match m.heartbeat {
            Some(h) if now.saturating_duration_since(h) > m.live_bound => Err(format!(
                "the reconcile loop has made no progress for {:.0}s (bound {:.0}s)",
                now.saturating_duration_since(h).as_secs_f64(),
                m.live_bound.as_secs_f64()
            )),
            _ => Ok(()),
        })
    }

    pub fn apply_succeeded(&self, seconds: f64, sent: bool, now_unix: f64) {
        self.with(|m| {
            m.kernel_ok();
            m.applies += 1;
            if sent {
                m.nft_calls += 1;
            }
            m.apply_seconds_sum += seconds;
            m.apply_seconds_count += 1;
            m.last_success_unix = now_unix;
            m.in_sync = true;
        });
    }

    /// A failed apply, by cause (`NftError::label`), and how many in a row.
    pub fn apply_failed(&self, cause: &str, consecutive: u32) {
        self.with(|m| {
            m.apply_failures += 1;
            m.nft_calls += 1;
            *m.failures_by_cause.entry(cause.to_string()).or_default() += 1;
            m.consecutive_failures = consecutive;
            m.in_sync = false;
        });
    }

    pub fn refreshed(&self, repaired: bool) {
        self.with(|m| {
            m.refreshes += 1;
            if repaired {
                m.drift_repairs += 1;
            }
        });
    }

    pub fn snapshot(&self) -> Snapshot {
        self.with(|m| m.snapshot.clone())
    }

    pub fn set_snapshot(&self, s: Snapshot) {
        self.with(|m| m.snapshot = s);
    }

    pub fn invalid_input(&self, stage: &str, kept_previous: bool) {
        self.with(|m| {
            *m.invalid.entry(stage.to_string()).or_default() += 1;
            if kept_previous {
                m.kept_previous_files += 1;
            }
        });
    }

    pub fn set_policy_hits(&self, hits: BTreeMap<PolicyLabels, (u64, u64)>) {
        let mut bounded = BTreeMap::new();
        for (i, (k, v)) in hits.into_iter().enumerate() {
            let key = if i < MAX_POLICY_SERIES {
                k
            } else {
                PolicyLabels {
                    tier: String::new(),
                    kind: String::new(),
                    namespace: String::new(),
                    policy: "(other)".into(),
                    action: String::new(),
                }
            };
            let e: &mut (u64, u64) = bounded.entry(key).or_default();
            e.0 += v.0;
            e.1 += v.1;
        }
        self.with(|m| m.policy_hits = bounded);
    }

    pub fn set_log_stats(&self, stats: std::sync::Arc<crate::logging::LogStats>) {
        *self.log_stats.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
    }

    /// Whether /readyz answers 200 now.
    pub fn in_sync(&self) -> bool {
        self.readiness_at(Instant::now()).is_ok()
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let resync = if self.in_sync() {
            3
        } else if self.with(|m| m.ever_synced) {
            2
        } else {
            1
        };
        let log_stats = self
            .log_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.with(|m| {
            let mut o = String::new();
            let mut metric = |name: &str, kind: &str, help: &str, value: String| {
                let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
            };
            metric("felix_int_dataplane_apply_time_seconds_sum", "counter", "Total seconds spent applying rulesets.", format!("{}", m.apply_seconds_sum));
            metric("felix_int_dataplane_apply_time_seconds_count", "counter", "Rulesets applied.", m.apply_seconds_count.to_string());
            metric("felix_int_dataplane_failures", "counter", "Failed applies.", m.apply_failures.to_string());
            metric("felix_nft_calls", "counter", "nft transactions sent (successful or not).", m.nft_calls.to_string());
            metric("tortie_applies_total", "counter", "Reconciliations that ended with the kernel in step.", m.applies.to_string());
            metric("tortie_last_successful_apply_timestamp_seconds", "gauge", "Unix time of the last successful apply.", format!("{}", m.last_success_unix));
            metric("felix_resync_state", "gauge", "1 waiting for the first sync, 2 out of sync after failures, 3 in sync (follows /readyz).", resync.to_string());
            metric("tortie_dataplane_consecutive_failures", "gauge", "Failed applies since the last success.", m.consecutive_failures.to_string());
            metric("felix_active_local_endpoints", "gauge", "Endpoints on this node.", m.snapshot.local_endpoints.to_string());
            metric("felix_active_local_policies", "gauge", "Policies that apply to an endpoint on this node.", m.snapshot.local_policies.to_string());
            metric("felix_active_local_selectors", "gauge", "Selector sets in the ruleset.", m.snapshot.selectors.to_string());
            metric("tortie_set_members", "gauge", "Elements across all sets.", m.snapshot.set_members.to_string());
            metric("felix_nft_rules", "gauge", "Rules in table inet tortie.", m.snapshot.rules.to_string());
            metric("felix_nft_chains", "gauge", "Chains in table inet tortie.", m.snapshot.chains.to_string());
            metric("felix_nft_sets", "gauge", "Sets in table inet tortie.", m.snapshot.sets.to_string());
            metric("tortie_refreshes_total", "counter", "Comparisons of the kernel with the desired ruleset.", m.refreshes.to_string());
            metric("tortie_drift_repairs_total", "counter", "Refreshes that found and repaired a difference.", m.drift_repairs.to_string());
            metric("tortie_invalid_files_kept_total", "counter", "Edits rejected as invalid, previous content kept.", m.kept_previous_files.to_string());
            let _ = writeln!(o, "# HELP tortie_dataplane_failures_total Failed applies, by cause.\n# TYPE tortie_dataplane_failures_total counter");
            for (cause, n) in &m.failures_by_cause {
                let _ = writeln!(o, "tortie_dataplane_failures_total{{cause=\"{}\"}} {n}", escape(cause));
            }
            let _ = writeln!(o, "# HELP tortie_ladder_steps_total Applies that escalated to a full rebuild or a re-created table.\n# TYPE tortie_ladder_steps_total counter");
            for (step, n) in &m.ladder_steps {
                let _ = writeln!(o, "tortie_ladder_steps_total{{step=\"{}\"}} {n}", escape(step));
            }
            let _ = writeln!(o, "# HELP tortie_invalid_input_total Problems found in the input, by stage.\n# TYPE tortie_invalid_input_total counter");
            for (stage, n) in &m.invalid {
                let _ = writeln!(o, "tortie_invalid_input_total{{stage=\"{}\"}} {n}", escape(stage));
            }
            if let Some(ls) = &log_stats {
                use std::sync::atomic::Ordering::Relaxed;
                let _ = writeln!(o, "# HELP tortie_logged_packets_total Logged packets read from NFLOG, by what became of them.\n# TYPE tortie_logged_packets_total counter");
                let _ = writeln!(o, "tortie_logged_packets_total{{result=\"received\"}} {}", ls.received.load(Relaxed));
                let _ = writeln!(o, "tortie_logged_packets_total{{result=\"written\"}} {}", ls.written.load(Relaxed));
                let _ = writeln!(o, "tortie_logged_packets_total{{result=\"dropped\"}} {}", ls.dropped.load(Relaxed));
                let _ = writeln!(o, "tortie_logged_packets_total{{result=\"error\"}} {}", ls.errors.load(Relaxed));
            }
            let _ = writeln!(o, "# HELP tortie_policy_packets Packets matched by a policy's rules.\n# TYPE tortie_policy_packets counter");
            for (l, (p, _)) in &m.policy_hits {
                let _ = writeln!(
                    o,
                    "tortie_policy_packets{{tier=\"{}\",kind=\"{}\",namespace=\"{}\",policy=\"{}\",action=\"{}\"}} {p}",
                    escape(&l.tier),
                    escape(&l.kind),
                    escape(&l.namespace),
                    escape(&l.policy),
                    escape(&l.action)
                );
            }
            let _ = writeln!(o, "# HELP tortie_policy_bytes Bytes matched by a policy's rules.\n# TYPE tortie_policy_bytes counter");
            for (l, (_, b)) in &m.policy_hits {
                let _ = writeln!(
                    o,
                    "tortie_policy_bytes{{tier=\"{}\",kind=\"{}\",namespace=\"{}\",policy=\"{}\",action=\"{}\"}} {b}",
                    escape(&l.tier),
                    escape(&l.kind),
                    escape(&l.namespace),
                    escape(&l.policy),
                    escape(&l.action)
                );
            }
            o
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_drops_after_three_failures_and_returns_after_a_success() {
        let m = Metrics::default();
        let now = Instant::now();
        assert!(
            m.readiness_at(now).is_err(),
            "not ready before the first apply"
        );
        assert!(m.render().contains("\nfelix_resync_state 1\n"));
        m.apply_succeeded(0.1, true, 1.0);
        assert!(m.readiness_at(now).is_ok());
        for i in 1..=3 {
            m.apply_failed("timeout", i);
            assert_eq!(m.readiness_at(Instant::now()).is_ok(), i < 3, "after {i}");
        }
        let text = m.render();
        assert!(text.contains("\nfelix_resync_state 2\n"), "{text}");
        assert!(
            text.contains("\nfelix_int_dataplane_failures 3\n"),
            "{text}"
        );
        assert!(text.contains("tortie_dataplane_failures_total{cause=\"timeout\"} 3"));
        m.in_step();
        assert!(m.readiness_at(Instant::now()).is_ok());
        assert!(m.render().contains("\nfelix_resync_state 3\n"));
    }

    #[test]
    fn an_apply_outstanding_beyond_its_deadline_is_not_ready() {
        let m = Metrics::default();
        m.apply_succeeded(0.1, true, 1.0);
        m.apply_started(Duration::from_secs(2));
        let now = Instant::now();
        assert!(m.readiness_at(now + Duration::from_secs(1)).is_ok());
        let why = m.readiness_at(now + Duration::from_secs(3)).unwrap_err();
        assert!(why.contains("waited"), "{why}");
        // A failure and its retry: the wait counts from the first attempt.
        m.apply_failed("timeout", 1);
        m.apply_started(Duration::from_secs(2));
        assert!(m.readiness_at(now + Duration::from_secs(3)).is_err());
        m.apply_succeeded(0.1, true, 2.0);
        assert!(m.readiness_at(now + Duration::from_secs(3)).is_ok());
        m.apply_started(Duration::from_secs(2));
        m.apply_abandoned();
        assert!(
            m.readiness_at(Instant::now() + Duration::from_secs(3))
                .is_ok()
        );
    }

    #[test]
    fn liveness_fails_when_the_heartbeat_is_stale() {
        let m = Metrics::default();
        m.set_liveness_bound(Duration::from_secs(10));
        m.heartbeat();
        let now = Instant::now();
        assert!(m.liveness_at(now + Duration::from_secs(5)).is_ok());
        assert!(m.liveness_at(now + Duration::from_secs(11)).is_err());
        m.heartbeat();
        assert!(m.liveness_at(Instant::now()).is_ok());
    }
}
