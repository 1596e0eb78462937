//! Prometheus metrics for `tortie run`, served through the `prometheus`
//! crate's registry and text encoder, with its process collector
//! (`process_*`). Where Felix has a metric with the same meaning, its name
//! and shape are used (`felix_int_dataplane_apply_time_seconds` is a
//! summary, as in Felix). The health state behind `/livez` and `/readyz`
//! lives here too, so that `felix_resync_state` always agrees with them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::proto::{
    Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary,
};
use prometheus::{Encoder, Registry, TextEncoder};

/// Consecutive failed applies after which the agent reports not ready.
pub const NOT_READY_AFTER_FAILURES: u32 = 3;

/// Per-policy hit counters are reported for at most this many label sets;
/// the rest are summed into `policy="(other)"`.
pub const MAX_POLICY_SERIES: usize = 2000;

/// Per-rule hit counters are reported for at most this many label sets;
/// the rest are summed into `policy="(other)"`.
pub const MAX_RULE_SERIES: usize = 10_000;

/// How finely policy hits are exported: per rule and per policy, or per
/// policy only (fewer series).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HitDetail {
    #[default]
    Rule,
    Policy,
}

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

/// Labels of one per-rule hit series: a policy's rule by direction and
/// index (the IPv4 and IPv6 copies of a rule are one series).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleLabels {
    pub tier: String,
    pub kind: String,
    pub namespace: String,
    pub policy: String,
    pub direction: String,
    pub rule: String,
    pub action: String,
}

impl RuleLabels {
    fn policy(&self) -> PolicyLabels {
        PolicyLabels {
            tier: self.tier.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            policy: self.policy.clone(),
            action: self.action.clone(),
        }
    }

    fn other() -> RuleLabels {
        RuleLabels {
            tier: String::new(),
            kind: String::new(),
            namespace: String::new(),
            policy: "(other)".into(),
            direction: String::new(),
            rule: String::new(),
            action: String::new(),
        }
    }
}

/// A bounded family of hit series: a series, once reported, keeps its
/// labels for as long as the kernel has it (so that its counter stays
/// monotonic); new series beyond `cap` are summed into one `other` series.
#[derive(Debug)]
struct Bounded<K> {
    admitted: std::collections::BTreeSet<K>,
    series: BTreeMap<K, (u64, u64)>,
}

impl<K> Default for Bounded<K> {
    fn default() -> Self {
        Bounded {
            admitted: Default::default(),
            series: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Bounded<K> {
    fn set(&mut self, hits: BTreeMap<K, (u64, u64)>, cap: usize, other: K) {
        self.admitted.retain(|k| hits.contains_key(k));
        let mut series = BTreeMap::new();
        for (k, v) in hits {
            let key = if self.admitted.contains(&k) || self.admitted.len() < cap {
                self.admitted.insert(k.clone());
                k
            } else {
                other.clone()
            };
            let e: &mut (u64, u64) = series.entry(key).or_default();
            e.0 += v.0;
            e.1 += v.1;
        }
        self.series = series;
    }
}

#[derive(Debug, Default)]
struct Inner {
    applies: u64,
    apply_failures: u64,
    nft_calls: u64,
    apply_seconds_sum: f64,
    apply_seconds_count: u64,
    /// The most recent apply times, for the summary's quantiles.
    apply_window: VecDeque<f64>,
    /// Problems in the input as it stands now (gauge), by stage.
    invalid_now: BTreeMap<String, u64>,
    /// Misconfiguration checks (`daemon::checks`) and whether each holds.
    misconfigured: BTreeMap<&'static str, bool>,
    /// Packets and bytes dropped by implicit rules, by (endpoint, reason).
    implicit_drops: BTreeMap<(String, String), (u64, u64)>,
    last_success_unix: f64,
    in_sync: bool,
    snapshot: Snapshot,
    invalid: BTreeMap<String, u64>,
    kept_previous_files: u64,
    refreshes: u64,
    drift_repairs: u64,
    policy_hits: Bounded<PolicyLabels>,
    rule_hits: Bounded<RuleLabels>,
    staged_hits: Bounded<RuleLabels>,
    staged_differs: Bounded<RuleLabels>,
    hit_detail: HitDetail,
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

/// Apply times kept for the summary's quantiles.
const APPLY_WINDOW: usize = 500;

/// Shared, updated by the reconcile loop, read by the HTTP endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    log_stats: Mutex<Option<std::sync::Arc<crate::logging::LogStats>>>,
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
            if m.apply_window.len() == APPLY_WINDOW {
                m.apply_window.pop_front();
            }
            m.apply_window.push_back(seconds);
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

    /// How finely policy hits are exported (set once, at start).
    pub fn set_hit_detail(&self, detail: HitDetail) {
        self.with(|m| m.hit_detail = detail);
    }

    /// One reading of the kernel's rule counters: per-rule hits (summed
    /// per policy as well) and implicit drops.
    pub fn set_rule_hits(&self, tally: super::counters::Tally) {
        let mut per_policy: BTreeMap<PolicyLabels, (u64, u64)> = BTreeMap::new();
        for (k, v) in &tally.rules {
            let e = per_policy.entry(k.policy()).or_default();
            e.0 += v.0;
            e.1 += v.1;
        }
        self.with(|m| {
            let other = RuleLabels::other();
            m.policy_hits
                .set(per_policy, MAX_POLICY_SERIES, other.policy());
            m.staged_hits
                .set(tally.staged, MAX_RULE_SERIES, other.clone());
            m.staged_differs
                .set(tally.staged_differs, MAX_RULE_SERIES, other.clone());
            if m.hit_detail == HitDetail::Rule {
                m.rule_hits.set(tally.rules, MAX_RULE_SERIES, other);
            }
            m.implicit_drops = tally.drops;
        });
    }

    pub fn set_log_stats(&self, stats: std::sync::Arc<crate::logging::LogStats>) {
        *self.log_stats.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
    }

    /// Whether /readyz answers 200 now.
    pub fn in_sync(&self) -> bool {
        self.readiness_at(Instant::now()).is_ok()
    }

    /// Problems in the input as it stands now, by stage (a gauge: it falls
    /// when the input is fixed).
    pub fn set_invalid_now(&self, by_stage: BTreeMap<String, u64>) {
        self.with(|m| m.invalid_now = by_stage);
    }

    /// Which misconfiguration checks hold now (a gauge per check).
    pub fn set_misconfigured(&self, checks: BTreeMap<&'static str, bool>) {
        self.with(|m| m.misconfigured = checks);
    }

    /// The exposition text: everything below, plus `process_*`.
    pub fn render(&self) -> String {
        let registry = Registry::new();
        let process = prometheus::process_collector::ProcessCollector::for_self();
        let _ = registry.register(Box::new(process));
        let mut families = registry.gather();
        // A family with no series yet (no failures, say) is left out: the
        // encoder refuses empty families.
        families.extend(
            self.families()
                .into_iter()
                .filter(|f| !f.get_metric().is_empty()),
        );
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }

    fn resync_state(&self) -> f64 {
        if self.in_sync() {
            3.0
        } else if self.with(|m| m.ever_synced) {
            2.0
        } else {
            1.0
        }
    }

    fn families(&self) -> Vec<MetricFamily> {
        let resync = self.resync_state();
        let log_stats = self
            .log_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut f = self.with(|m| {
            let mut f = Families::default();
            f.summary(
                "felix_int_dataplane_apply_time_seconds",
                "Time to apply a ruleset to the kernel.",
                m,
            );
            f.counter("felix_int_dataplane_failures", "Failed applies.", m.apply_failures as f64);
            f.counter("felix_nft_calls", "nft transactions sent (successful or not).", m.nft_calls as f64);
            f.counter("tortie_applies_total", "Reconciliations that ended with the kernel in step.", m.applies as f64);
            f.gauge("tortie_last_successful_apply_timestamp_seconds", "Unix time of the last successful apply.", m.last_success_unix);
            f.gauge("felix_resync_state", "1 waiting for the first sync, 2 out of sync after failures, 3 in sync (follows /readyz).", resync);
            f.gauge("tortie_dataplane_consecutive_failures", "Failed applies since the last success.", f64::from(m.consecutive_failures));
            let s = &m.snapshot;
            f.gauge("felix_active_local_endpoints", "Endpoints on this node.", s.local_endpoints as f64);
            f.gauge("felix_active_local_policies", "Policies that apply to an endpoint on this node.", s.local_policies as f64);
            f.gauge("felix_active_local_selectors", "Selector sets in the ruleset.", s.selectors as f64);
            f.gauge("tortie_set_members", "Elements across all sets.", s.set_members as f64);
            f.gauge("felix_nft_rules", "Rules in table inet tortie.", s.rules as f64);
            f.gauge("felix_nft_chains", "Chains in table inet tortie.", s.chains as f64);
            f.gauge("felix_nft_sets", "Sets in table inet tortie.", s.sets as f64);
            f.counter("tortie_refreshes_total", "Comparisons of the kernel with the desired ruleset.", m.refreshes as f64);
            f.counter("tortie_drift_repairs_total", "Refreshes that found and repaired a difference.", m.drift_repairs as f64);
            f.counter("tortie_invalid_files_kept_total", "Edits rejected as invalid, previous content kept.", m.kept_previous_files as f64);
            f.labelled_counter("tortie_dataplane_failures_total", "Failed applies, by cause.", &["cause"], m.failures_by_cause.iter().map(|(k, v)| (vec![k.as_str()], *v as f64)));
            f.labelled_counter("tortie_ladder_steps_total", "Applies that escalated to a full rebuild or a re-created table.", &["step"], m.ladder_steps.iter().map(|(k, v)| (vec![k.as_str()], *v as f64)));
            f.labelled_counter("tortie_invalid_input_total", "Problems found in the input, by stage.", &["stage"], m.invalid.iter().map(|(k, v)| (vec![k.as_str()], *v as f64)));
            f.labelled_gauge("tortie_invalid_inputs", "Problems in the input as it stands now, by stage.", &["stage"], m.invalid_now.iter().map(|(k, v)| (vec![k.as_str()], *v as f64)));
            f.labelled_gauge("tortie_misconfigured", "1 while a misconfiguration check holds (wrong_node: no endpoint on this node but endpoints on others; no_interfaces: local pods but none of their interfaces exists).", &["check"], m.misconfigured.iter().map(|(k, v)| (vec![*k], f64::from(u8::from(*v)))));
            let policy = ["tier", "kind", "namespace", "policy", "action"];
            let hits = |pick: fn(&(u64, u64)) -> u64| {
                m.policy_hits.series.iter().map(move |(l, v)| {
                    (vec![l.tier.as_str(), l.kind.as_str(), l.namespace.as_str(), l.policy.as_str(), l.action.as_str()], pick(v) as f64)
                })
            };
            f.labelled_counter("tortie_policy_packets", "Packets matched by a policy's rules.", &policy, hits(|v| v.0));
            f.labelled_counter("tortie_policy_bytes", "Bytes matched by a policy's rules.", &policy, hits(|v| v.1));
            let rule = ["tier", "kind", "namespace", "policy", "direction", "rule", "action"];
            let series = rule_series;
            if m.hit_detail == HitDetail::Rule {
                f.labelled_counter("tortie_rule_packets", "Packets matched by one policy rule (its IPv4 and IPv6 forms together).", &rule, series(&m.rule_hits, |v| v.0).into_iter());
                f.labelled_counter("tortie_rule_bytes", "Bytes matched by one policy rule (its IPv4 and IPv6 forms together).", &rule, series(&m.rule_hits, |v| v.1).into_iter());
            }
            f.labelled_counter("tortie_staged_rule_packets", "New connections the staged view decided, by its deciding rule (kind snp, sgnp or sknp for staged policies).", &rule, series(&m.staged_hits, |v| v.0).into_iter());
            f.labelled_counter("tortie_staged_differs_packets", "New connections whose staged verdict differs from the enforced one, by the deciding staged rule (action Deny: would deny; Allow: would allow).", &rule, series(&m.staged_differs, |v| v.0).into_iter());
            let drops = |pick: fn(&(u64, u64)) -> u64| {
                m.implicit_drops.iter().map(move |((ep, reason), v)| (vec![ep.as_str(), reason.as_str()], pick(v) as f64))
            };
            f.labelled_counter("tortie_implicit_drop_packets", "Packets dropped because no policy or profile allowed them, by endpoint and reason.", &["endpoint", "reason"], drops(|v| v.0));
            f.labelled_counter("tortie_implicit_drop_bytes", "Bytes dropped because no policy or profile allowed them, by endpoint and reason.", &["endpoint", "reason"], drops(|v| v.1));
            f
        });
        let build = [env!("CARGO_PKG_VERSION"), env!("TORTIE_GIT_COMMIT")];
        f.labelled_gauge(
            "tortie_build_info",
            "tortie's version and git commit (always 1).",
            &["version", "commit"],
            [(build.to_vec(), 1.0)].into_iter(),
        );
        if let Some(ls) = &log_stats {
            use std::sync::atomic::Ordering::Relaxed;
            let results = [
                ("received", ls.received.load(Relaxed)),
                ("written", ls.written.load(Relaxed)),
                ("dropped", ls.dropped.load(Relaxed)),
                ("error", ls.errors.load(Relaxed)),
                ("suppressed", ls.suppressed.load(Relaxed)),
                ("overrun", ls.overruns.load(Relaxed)),
            ];
            f.labelled_counter(
                "tortie_logged_packets_total",
                "Logged packets read from NFLOG, by what became of them.",
                &["result"],
                results.iter().map(|(k, v)| (vec![*k], *v as f64)),
            );
        }
        f.0
    }
}

/// The samples of a per-rule family: label values and the picked count.
fn rule_series(b: &Bounded<RuleLabels>, pick: fn(&(u64, u64)) -> u64) -> Vec<(Vec<&str>, f64)> {
    b.series
        .iter()
        .map(|(l, v)| {
            let labels = vec![
                l.tier.as_str(),
                l.kind.as_str(),
                l.namespace.as_str(),
                l.policy.as_str(),
                l.direction.as_str(),
                l.rule.as_str(),
                l.action.as_str(),
            ];
            (labels, pick(v) as f64)
        })
        .collect()
}

/// Metric families built from the current state at each scrape.
#[derive(Default)]
struct Families(Vec<MetricFamily>);

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn labelled(names: &[&str], values: &[&str]) -> Metric {
    let mut m = Metric::default();
    let pairs = names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            let mut p = LabelPair::default();
            p.set_name(n.to_string());
            p.set_value(v.to_string());
            p
        })
        .collect();
    m.set_label(pairs);
    m
}

impl Families {
    fn counter(&mut self, name: &str, help: &str, v: f64) {
        self.labelled_counter(name, help, &[], [(Vec::new(), v)].into_iter());
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.labelled_gauge(name, help, &[], [(Vec::new(), v)].into_iter());
    }

    fn labelled_counter<'a>(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        series: impl Iterator<Item = (Vec<&'a str>, f64)>,
    ) {
        self.series(name, help, MetricType::COUNTER, labels, series, |m, v| {
            let mut c = Counter::default();
            c.set_value(v);
            m.set_counter(c);
        });
    }

    fn labelled_gauge<'a>(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        series: impl Iterator<Item = (Vec<&'a str>, f64)>,
    ) {
        self.series(name, help, MetricType::GAUGE, labels, series, |m, v| {
            let mut g = Gauge::default();
            g.set_value(v);
            m.set_gauge(g);
        });
    }

    /// One family of `kind`, a metric per labelled value; `set` stores it.
    fn series<'a>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        labels: &[&str],
        series: impl Iterator<Item = (Vec<&'a str>, f64)>,
        set: impl Fn(&mut Metric, f64),
    ) {
        let metrics = series
            .map(|(values, v)| {
                let mut m = labelled(labels, &values);
                set(&mut m, v);
                m
            })
            .collect();
        self.0.push(family(name, help, kind, metrics));
    }

    /// Felix's summary objectives (0.5, 0.9, 0.99) over the last
    /// [`APPLY_WINDOW`] applies; sum and count over all of them.
    fn summary(&mut self, name: &str, help: &str, m: &Inner) {
        let mut sorted: Vec<f64> = m.apply_window.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let quantiles = [0.5, 0.9, 0.99]
            .iter()
            .map(|q| {
                let mut quantile = Quantile::default();
                quantile.set_quantile(*q);
                let value = if sorted.is_empty() {
                    f64::NAN
                } else {
                    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
                    sorted[i]
                };
                quantile.set_value(value);
                quantile
            })
            .collect();
        let mut s = Summary::default();
        s.set_sample_count(m.apply_seconds_count);
        s.set_sample_sum(m.apply_seconds_sum);
        s.set_quantile(quantiles);
        let mut metric = Metric::default();
        metric.set_summary(s);
        self.0
            .push(family(name, help, MetricType::SUMMARY, vec![metric]));
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

#[cfg(test)]
mod exposition_tests {
    use super::*;

    fn scrape(m: &Metrics) -> prometheus_parse::Scrape {
        let text = m.render();
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"))
    }

    fn value(s: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        s.samples
            .iter()
            .filter(|x| x.metric == name)
            .filter(|x| label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
            .find_map(|x| match x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
    }

    fn rule(policy: &str, index: &str) -> RuleLabels {
        RuleLabels {
            tier: "default".into(),
            kind: "knp".into(),
            namespace: "d".into(),
            policy: policy.into(),
            direction: "ingress".into(),
            rule: index.into(),
            action: "Allow".into(),
        }
    }

    fn tally(rules: &[(RuleLabels, u64)]) -> super::super::counters::Tally {
        super::super::counters::Tally {
            rules: rules
                .iter()
                .map(|(l, n)| (l.clone(), (*n, n * 60)))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn series_beyond_the_cap_are_summed_and_admitted_series_keep_their_labels() {
        let mut b = Bounded::default();
        let other = rule("(other)", "");
        let hits = |names: &[&str]| names.iter().map(|n| (rule(n, "0"), (1, 60))).collect();
        b.set(hits(&["b", "c", "d"]), 2, other.clone());
        assert_eq!(b.series.len(), 3);
        assert_eq!(b.series[&other], (1, 60));
        // "a" sorts first but arrives later: it does not push "c" out.
        b.set(hits(&["a", "b", "c", "d"]), 2, other.clone());
        assert!(b.series.contains_key(&rule("c", "0")));
        assert_eq!(b.series[&other], (2, 120));
        // Once "b" is gone, a place is free again.
        b.set(hits(&["a", "c"]), 2, other.clone());
        assert!(b.series.contains_key(&rule("a", "0")) && !b.series.contains_key(&other));
    }

    /// Every metric name in an expression (`tortie_…` or `felix_…`).
    fn metric_names(expr: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, _) in expr.match_indices(['t', 'f']) {
            let rest = &expr[i..];
            let starts = i == 0 || !expr.as_bytes()[i - 1].is_ascii_alphanumeric();
            if starts && (rest.starts_with("tortie_") || rest.starts_with("felix_")) {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                out.push(rest[..end].to_string());
            }
        }
        out
    }

    #[test]
    fn the_grafana_dashboard_queries_only_metrics_tortie_exports() {
        let text = include_str!("../../manifests/grafana-dashboard.json");
        let dash: serde_json::Value = serde_json::from_str(text).expect("dashboard JSON");
        let m = Metrics::default();
        m.set_rule_hits(super::super::counters::Tally {
            rules: [(rule("web", "0"), (5, 300))].into(),
            drops: [(
                ("workload d/a".into(), "no profile allowed".into()),
                (1, 60),
            )]
            .into(),
            staged: [(rule("web", "0"), (2, 120))].into(),
            staged_differs: [(rule("web", "0"), (1, 60))].into(),
        });
        m.apply_succeeded(0.01, true, 1.0);
        m.apply_failed("timeout", 1);
        m.set_invalid_now([("decode".to_string(), 1)].into());
        m.set_misconfigured([("wrong_node", false)].into());
        let exposed: std::collections::BTreeSet<String> = m
            .render()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
            .collect();
        let panels = dash["panels"].as_array().expect("panels");
        let mut ids = std::collections::BTreeSet::new();
        let mut queried = 0;
        for p in panels {
            assert!(
                ids.insert(p["id"].as_u64().expect("panel id")),
                "duplicate id"
            );
            assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
            for t in p["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                let names = metric_names(expr);
                assert!(!names.is_empty(), "{expr}");
                for n in names {
                    assert!(
                        exposed.contains(&n),
                        "panel {:?} queries {n}, not exported",
                        p["title"]
                    );
                    queried += 1;
                }
            }
        }
        assert!(queried >= panels.len());
    }

    #[test]
    fn per_policy_detail_exports_no_rule_series() {
        let m = Metrics::default();
        m.set_hit_detail(HitDetail::Policy);
        m.set_rule_hits(tally(&[(rule("web", "0"), 4), (rule("web", "1"), 1)]));
        let s = scrape(&m);
        assert_eq!(
            value(&s, "tortie_policy_packets", Some(("policy", "web"))),
            Some(5.0)
        );
        assert_eq!(value(&s, "tortie_rule_packets", None), None);
    }

    #[test]
    fn the_exposition_parses_and_has_felix_shapes_process_and_build_series() {
        let m = Metrics::default();
        for t in [0.01, 0.02, 0.03, 0.5] {
            m.apply_succeeded(t, true, 1.0);
        }
        m.apply_failed("timeout", 1);
        m.set_invalid_now([("decode".to_string(), 2)].into());
        m.set_rule_hits(super::super::counters::Tally {
            rules: [(rule("web", "0"), (5, 300)), (rule("web", "1"), (2, 120))].into(),
            drops: [(
                (
                    "workload default/nginx".to_string(),
                    "end of tier default".to_string(),
                ),
                (3, 180),
            )]
            .into(),
            ..Default::default()
        });
        let s = scrape(&m);
        assert_eq!(
            value(&s, "tortie_rule_packets", Some(("rule", "1"))),
            Some(2.0)
        );
        assert_eq!(
            value(&s, "tortie_policy_packets", Some(("policy", "web"))),
            Some(7.0)
        );
        let summary = s
            .samples
            .iter()
            .find(|x| x.metric == "felix_int_dataplane_apply_time_seconds")
            .expect("the apply-time summary");
        let prometheus_parse::Value::Summary(q) = &summary.value else {
            panic!("apply time is not a summary: {:?}", summary.value)
        };
        assert_eq!(q.len(), 3);
        assert_eq!(
            value(&s, "felix_int_dataplane_apply_time_seconds_count", None),
            Some(4.0)
        );
        assert_eq!(value(&s, "felix_int_dataplane_failures", None), Some(1.0));
        assert_eq!(value(&s, "felix_resync_state", None), Some(3.0));
        assert!(value(&s, "process_resident_memory_bytes", None).unwrap() > 0.0);
        assert_eq!(
            value(
                &s,
                "tortie_build_info",
                Some(("version", env!("CARGO_PKG_VERSION")))
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "tortie_invalid_inputs", Some(("stage", "decode"))),
            Some(2.0)
        );
        assert_eq!(
            value(
                &s,
                "tortie_implicit_drop_packets",
                Some(("reason", "end of tier default"))
            ),
            Some(3.0)
        );
        assert_eq!(
            value(
                &s,
                "tortie_dataplane_failures_total",
                Some(("cause", "timeout"))
            ),
            Some(1.0)
        );
    }
}
