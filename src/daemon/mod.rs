//! `tortie run`: the long-running agent. It loads every source completely
//! before the first apply (a partial ruleset is never installed), then
//! watches for changes, debounces bursts into one transaction, re-reads the
//! kernel on every refresh interval to repair drift, serves metrics and
//! health, and on SIGTERM leaves the rules in force. A restart adopts the
//! table already in the kernel: the first apply is a delta against it.
//!
//! Kernel faults: every nft call has a deadline and is abandoned at once on
//! SIGTERM/SIGINT (nft commits atomically, so an abandoned transaction
//! leaves the previous ruleset in force); failed applies are retried with
//! jittered exponential backoff and climb the rebuild / re-create ladder;
//! readiness drops after repeated failures, liveness follows the loop's
//! heartbeat. One agent per network namespace (a lock under /run/tortie).

mod counters;
pub mod http;
pub mod metrics;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::compile::incremental::{Incremental, Outcome};
use crate::compile::ir::Ruleset;
use crate::datastore::dir::{self, FileChange, InForce, Update};
use crate::datastore::kubernetes::{self, CalicoApi, SourceEvent};
use crate::model::Resource;
use crate::nft::lock::LockError;
use crate::nft::{Backoff, Dataplane, Limits, NftError, Step, Target};
use metrics::{Metrics, PolicyLabels, Snapshot};

/// Where resources come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datastore {
    Dir(PathBuf),
    Kubernetes(CalicoApi),
}

impl std::str::FromStr for Datastore {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("dir", path)) if !path.is_empty() => Ok(Datastore::Dir(PathBuf::from(path))),
            _ if s == "kubernetes" => Ok(Datastore::Kubernetes(CalicoApi::V3)),
            _ => Err(format!(
                "unknown datastore `{s}`: use dir:PATH or kubernetes"
            )),
        }
    }
}

/// What wakes the reconcile loop.
enum Input {
    File(FileChange),
    Kube(SourceEvent),
    /// The node's interfaces and addresses changed.
    Interfaces(crate::hostifaces::InterfaceAddrs),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub datastore: Datastore,
    pub node: String,
    pub target: Target,
    pub metrics_addr: Option<SocketAddr>,
    /// Overrides FelixConfiguration `nftablesRefreshInterval` (default 90 s).
    pub refresh: Option<Duration>,
    /// Quiet time that ends a burst of file events.
    pub debounce: Duration,
    /// Where Log actions and logged drops go.
    pub log_backend: crate::calc::LogBackend,
    /// With the NFLOG backend: syslog destination and optional JSON file.
    pub syslog: crate::logging::Sink,
    pub log_json: Option<PathBuf>,
    /// Deadlines of nft calls (the stop flag is filled in by `run`).
    pub nft_limits: Limits,
    /// Where the one-agent-per-namespace lock files live.
    pub lock_dir: PathBuf,
    /// Input budgets and the periodic rescan of the directory datastore.
    pub limits: crate::model::yaml::Limits,
    pub rescan_interval: Duration,
    /// The agent's log level, which FelixConfiguration logSeverityScreen
    /// sets (unless RUST_LOG does).
    pub log_level: Option<crate::obs::Level>,
}

/// The shortest refresh interval accepted (flag or FelixConfiguration): a
/// refresh reads the whole table back from the kernel.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot read the datastore {path}: {source}")]
    Datastore {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch {path}: {reason}")]
    Watch { path: PathBuf, reason: String },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
}

impl From<dir::DirError> for DaemonError {
    fn from(e: dir::DirError) -> Self {
        match e {
            dir::DirError::Read { path, source } => DaemonError::Datastore { path, source },
            dir::DirError::Watch { path, reason } => DaemonError::Watch { path, reason },
        }
    }
}

impl DaemonError {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DaemonError::Datastore { .. } => "datastore",
            DaemonError::Watch { .. } => "watch",
            DaemonError::Metrics { .. } => "metrics",
            DaemonError::Lock(_) => "lock",
        }
    }
}

/// One log event through `tracing` (see `crate::obs` for where it goes):
/// `msg`, then `key=value` pairs in Display form.
pub fn log(level: &str, msg: &str, fields: &[(&str, String)]) {
    let mut f = String::new();
    for (k, v) in fields {
        if !f.is_empty() {
            f.push(' ');
        }
        if v.contains(char::is_whitespace) || v.is_empty() {
            f.push_str(&format!("{k}={v:?}"));
        } else {
            f.push_str(&format!("{k}={v}"));
        }
    }
    match level {
        "error" => tracing::error!(fields = %f, "{msg}"),
        "warn" => tracing::warn!(fields = %f, "{msg}"),
        "debug" => tracing::debug!(fields = %f, "{msg}"),
        _ => tracing::info!(fields = %f, "{msg}"),
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What the loop computes from a snapshot of resources.
struct Desired {
    engine: Incremental,
    policy_tiers: BTreeMap<String, String>,
    refresh: Duration,
}

impl Desired {
    fn ruleset(&self) -> &Ruleset {
        self.engine.ruleset()
    }
}

/// Publishes what a full compile produced: notes, the log context, metrics.
fn publish(
    engine: &Incremental,
    opts: &Options,
    metrics: &Metrics,
    log_ctx: &crate::logging::SharedContext,
) -> (BTreeMap<String, String>, Duration) {
    let node = opts.node.as_str();
    let cluster = engine.cluster();
    let ruleset = engine.ruleset();
    if let (Some(level), Some(sev)) = (&opts.log_level, &cluster.settings.log_severity) {
        level.set_felix_severity(sev);
    }
    for n in &cluster.notes {
        log("warn", &n.message, &[("subject", n.subject.clone())]);
    }
    let locals: Vec<_> = cluster.local_endpoints(node).collect();
    if let Ok(mut c) = log_ctx.write() {
        c.index = ruleset.log_index.clone();
        c.endpoints = locals
            .iter()
            .filter_map(|e| Some((e.iface.clone()?, e.id.to_string())))
            .collect();
    }
    let local_policies: BTreeSet<String> = locals
        .iter()
        .flat_map(|e| cluster.policies_for(e).map(|p| p.id.to_string()))
        .collect();
    publish_sizes(ruleset, locals.len(), local_policies.len(), metrics);
    (
        cluster
            .policies
            .iter()
            .map(|p| (p.id.to_string(), p.tier.clone()))
            .collect(),
        cluster.settings.refresh_interval,
    )
}

fn publish_sizes(
    ruleset: &Ruleset,
    local_endpoints: usize,
    local_policies: usize,
    metrics: &Metrics,
) {
    metrics.set_snapshot(Snapshot {
        local_endpoints,
        local_policies,
        selectors: ruleset.sets.keys().filter(|k| k.starts_with('s')).count(),
        set_members: ruleset.sets.values().map(|s| s.elements.len()).sum(),
        rules: ruleset.rule_count(),
        chains: ruleset.chains.len(),
        sets: ruleset.sets.len(),
    });
}

/// Follows the node's interfaces (host endpoints with only expectedIPs
/// bind to those holding their addresses): the current map now, every
/// later one as `Input::Interfaces`.
fn watch_interfaces(
    target: &Target,
    tx: &mpsc::Sender<Input>,
) -> (
    crate::hostifaces::InterfaceAddrs,
    Option<crate::hostifaces::Watch>,
) {
    let (itx, irx) = mpsc::channel();
    match crate::hostifaces::watch(target, Duration::from_millis(100), itx) {
        Ok(w) => {
            let first = irx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
            let forward = tx.clone();
            std::thread::spawn(move || {
                for m in irx {
                    if forward.send(Input::Interfaces(m)).is_err() {
                        break;
                    }
                }
            });
            (first, Some(w))
        }
        Err(e) => {
            log(
                "warn",
                "cannot follow the node's interfaces: host endpoints with only expectedIPs police nothing",
                &[("error", e.to_string())],
            );
            (Default::default(), None)
        }
    }
}

fn compute(
    resources: Vec<Resource>,
    opts: &Options,
    metrics: &Metrics,
    log_ctx: &crate::logging::SharedContext,
    host_interfaces: crate::hostifaces::InterfaceAddrs,
) -> Desired {
    let backend = opts.log_backend;
    let (env, problems) = crate::calc::felix_env(std::env::vars());
    for p in problems {
        log("warn", &p, &[]);
    }
    let context = crate::compile::incremental::NodeContext {
        host_interfaces,
        felix_env: Some(env),
    };
    let engine = Incremental::with_context(resources, &opts.node, context, move |s| {
        s.log_backend = backend
    });
    let (policy_tiers, refresh) = publish(&engine, opts, metrics, log_ctx);
    Desired {
        engine,
        policy_tiers,
        refresh,
    }
}

fn report_diagnostics(diagnostics: &[crate::diag::Diagnostic], metrics: &Metrics) {
    for d in diagnostics {
        let level = if d.is_error() { "error" } else { "warn" };
        log(
            level,
            &d.one_line(),
            &[("stage", d.stage.label().to_string())],
        );
        if d.is_error() {
            metrics.invalid_input(d.stage.label(), false);
        }
    }
}

/// Diagnostics logged per file change; the rest are counted, not printed,
/// so that one huge broken file cannot flood the log.
const LOGGED_PER_FILE: usize = 20;

fn report_file(c: &FileChange, metrics: &Metrics) {
    let shown = c.diagnostics.len().min(LOGGED_PER_FILE);
    report_diagnostics(&c.diagnostics[..shown], metrics);
    let file = ("file", c.path.display().to_string());
    if shown < c.diagnostics.len() {
        for d in c.diagnostics[shown..].iter().filter(|d| d.is_error()) {
            metrics.invalid_input(d.stage.label(), false);
        }
        let count = (c.diagnostics.len() - shown).to_string();
        let msg = "more problems in this file were not logged";
        log("warn", msg, &[file.clone(), ("count", count)]);
    }
    match &c.update {
        Update::Kept => {
            metrics.invalid_input("file", true);
            let msg = "invalid file: its previous content stays in force until it is fixed";
            log("error", msg, &[file]);
        }
        Update::Rejected => log("error", "file rejected: nothing of it is in force", &[file]),
        Update::Set(r) => log(
            "info",
            "file read",
            &[file, ("resources", r.len().to_string())],
        ),
        Update::Removed => log("info", "file removed", &[file]),
    }
}

/// Packets and bytes per policy and action.
type PolicyHits = BTreeMap<PolicyLabels, (u64, u64)>;

/// Reads rule counters and sums them per policy and action, and the
/// implicit drops per endpoint and reason.
fn policy_hits(
    target: &Target,
    limits: &Limits,
    tiers: &BTreeMap<String, String>,
    ruleset: &Ruleset,
) -> Result<(PolicyHits, counters::Drops), NftError> {
    let json = crate::nft::exec::list_table_json_with(target, limits)?.unwrap_or_default();
    let counters = crate::nft::state::rule_counters(&json).map_err(NftError::Parse)?;
    let drops = counters::implicit_drops(&counters, ruleset);
    let mut out = PolicyHits::new();
    for crate::nft::state::RuleCounter {
        note,
        packets,
        bytes,
        ..
    } in counters
    {
        // Notes of policy rules read `<kind>/[<ns>/]<name> <dir>#<n> <Action>`.
        let mut words = note.split(' ');
        let (Some(id), Some(rule), Some(action)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        if !rule.contains('#') {
            continue;
        }
        let parts: Vec<&str> = id.split('/').collect();
        let (kind, namespace, name) = match parts.as_slice() {
            [k, n] => (*k, "", *n),
            [k, ns, n] => (*k, *ns, *n),
            _ => continue,
        };
        let labels = PolicyLabels {
            tier: tiers.get(id).cloned().unwrap_or_default(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            policy: name.to_string(),
            action: action.to_string(),
        };
        let e = out.entry(labels).or_default();
        e.0 += packets;
        e.1 += bytes;
    }
    Ok((out, drops))
}

/// Runs until `stop` is set. Returns only on a setup error or on stop.
pub fn run(opts: &Options, stop: Arc<AtomicBool>) -> Result<(), DaemonError> {
    // First of all: a second agent on the same namespace stops here.
    let lock = crate::nft::lock::acquire(&opts.target, &opts.lock_dir)?;
    log(
        "info",
        "holding the agent lock for this network namespace",
        &[("lock", lock.path.display().to_string())],
    );
    let limits = Limits {
        stop: Some(stop.clone()),
        ..opts.nft_limits.clone()
    };
    let metrics = Arc::new(Metrics::default());
    metrics.set_liveness_bound(liveness_bound(&limits));
    if let Some(addr) = opts.metrics_addr {
        let bound = http::serve(addr, metrics.clone(), stop.clone())
            .map_err(|source| DaemonError::Metrics { addr, source })?;
        log(
            "info",
            "serving /metrics, /livez and /readyz",
            &[("addr", bound.to_string())],
        );
    }
    let log_ctx: crate::logging::SharedContext = Default::default();
    if let crate::calc::LogBackend::Nflog { group } = opts.log_backend {
        let stats = Arc::new(crate::logging::LogStats::default());
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| opts.node.clone());
        let lopts = crate::logging::LogOptions {
            group,
            sink: opts.syslog.clone(),
            json: opts.log_json.clone(),
            hostname,
            netns: match &opts.target {
                Target::Netns(p) => Some(p.clone()),
                Target::Current => None,
            },
        };
        match crate::logging::spawn(lopts, log_ctx.clone(), stats.clone(), stop.clone()) {
            Ok(()) => {
                metrics.set_log_stats(stats);
                log(
                    "info",
                    "reading logged packets from NFLOG",
                    &[
                        ("group", group.to_string()),
                        ("syslog", opts.syslog.to_string()),
                    ],
                );
            }
            Err(e) => log(
                "error",
                "cannot read NFLOG; logged packets will not reach syslog",
                &[("group", group.to_string()), ("error", e.to_string())],
            ),
        }
    }
    let (tx, rx) = mpsc::channel::<Input>();
    let mut dir_files: Option<InForce> = None;
    let mut _watcher = None;
    let mut _kube_thread = None;
    let resources: Vec<Resource> = match &opts.datastore {
        Datastore::Dir(root) => {
            let sink = tx.clone();
            let dopts = dir::DirOptions {
                limits: opts.limits,
                debounce: opts.debounce,
                rescan_every: opts.rescan_interval,
            };
            let (watching, initial) =
                dir::watch(root, dopts, move |c| sink.send(Input::File(c)).is_ok())
                    .map_err(DaemonError::from)?;
            let mut files = InForce::default();
            for c in initial {
                report_file(&c, &metrics);
                files.apply(c);
            }
            log(
                "info",
                "initial listing complete",
                &[
                    ("files", files.file_count().to_string()),
                    ("node", opts.node.clone()),
                ],
            );
            let snapshot = files.snapshot();
            dir_files = Some(files);
            _watcher = Some(watching);
            snapshot
        }
        Datastore::Kubernetes(calico) => {
            let (ktx, krx) = mpsc::channel::<SourceEvent>();
            _kube_thread = Some(kubernetes::spawn(*calico, opts.debounce, ktx).map_err(|e| {
                DaemonError::Datastore {
                    path: PathBuf::from("kubernetes"),
                    source: e,
                }
            })?);
            let forward = tx.clone();
            std::thread::spawn(move || {
                for ev in krx {
                    if forward.send(Input::Kube(ev)).is_err() {
                        break;
                    }
                }
            });
            // The first ruleset waits for the complete initial listing.
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(Input::Kube(SourceEvent::Snapshot {
                        resources,
                        diagnostics,
                    })) => {
                        report_diagnostics(&diagnostics, &metrics);
                        log(
                            "info",
                            "initial listing complete",
                            &[
                                ("objects", resources.len().to_string()),
                                ("node", opts.node.clone()),
                            ],
                        );
                        break resources;
                    }
                    Ok(Input::Kube(SourceEvent::Error(e))) => log(
                        "warn",
                        "kubernetes watch error; retrying with backoff",
                        &[("error", e)],
                    ),
                    _ => {}
                }
            }
        }
    };

    let mut dp = Dataplane::new(opts.target.clone());
    dp.set_limits(limits.clone());
    let (ifaces, _ifaces_watch) = watch_interfaces(&opts.target, &tx);
    let mut desired = compute(resources, opts, &metrics, &log_ctx, ifaces);
    let mut pending_apply = true;
    let mut backoff = Backoff::default();
    let mut next_attempt = Instant::now();
    let mut last_failure = Instant::now();
    let refresh_every = |d: &Desired| opts.refresh.unwrap_or(d.refresh).max(MIN_REFRESH);
    let mut next_refresh = Instant::now() + refresh_every(&desired);
    let mut next_counters = Instant::now();

    while !stop.load(Ordering::Relaxed) {
        metrics.heartbeat();
        let now = Instant::now();
        if pending_apply && now >= next_attempt {
            match apply_once(&mut dp, desired.ruleset(), &metrics, false) {
                Ok(()) => {
                    pending_apply = false;
                    backoff.reset();
                }
                Err(e) => {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let delay = backoff.next_delay();
                    log_failure(
                        "apply failed; the previous ruleset stays in force",
                        &e,
                        &dp,
                        delay,
                    );
                    last_failure = Instant::now();
                    next_attempt = last_failure + delay;
                }
            }
        }
        if !pending_apply && now >= next_refresh {
            next_refresh = now + refresh_every(&desired);
            dp.invalidate();
            if let Err(e) = apply_once(&mut dp, desired.ruleset(), &metrics, true) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                pending_apply = true;
                let delay = backoff.next_delay();
                log_failure("refresh failed", &e, &dp, delay);
                last_failure = Instant::now();
                next_attempt = last_failure + delay;
            }
        }
        // Counters are read only while the kernel answers: a failing nft is
        // not called more often than the backoff allows.
        if !pending_apply && now >= next_counters {
            next_counters = now + Duration::from_secs(10).min(refresh_every(&desired));
            match policy_hits(
                &opts.target,
                &limits,
                &desired.policy_tiers,
                desired.ruleset(),
            ) {
                Ok((hits, drops)) => {
                    metrics.set_policy_hits(hits);
                    metrics.set_implicit_drops(drops);
                }
                Err(e) => log(
                    "warn",
                    "cannot read rule counters",
                    &[("error", e.to_string()), ("cause", e.label().to_string())],
                ),
            }
        }
        // Wait for changes (or the next deadline), then drain a burst.
        let wait =
            Duration::from_millis(200).min(next_refresh.saturating_duration_since(Instant::now()));
        let first = match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(i) => i,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut inputs = vec![first];
        let burst_end = Instant::now() + Duration::from_secs(1);
        while let Ok(i) = rx.recv_timeout(opts.debounce) {
            inputs.push(i);
            if Instant::now() > burst_end {
                break;
            }
        }
        tracing::debug!(inputs = inputs.len(), "changes received");
        let mut files_changed = false;
        let mut ifaces_changed = false;
        let mut latest = None;
        for i in inputs {
            match i {
                Input::Interfaces(map) => {
                    if desired.engine.set_host_interfaces(map) == Outcome::Full {
                        let (tiers, refresh) = publish(&desired.engine, opts, &metrics, &log_ctx);
                        desired.policy_tiers = tiers;
                        desired.refresh = refresh;
                        ifaces_changed = true;
                        log(
                            "info",
                            "the node's interfaces changed; host endpoints re-bound",
                            &[],
                        );
                    }
                }
                Input::File(c) => {
                    report_file(&c, &metrics);
                    if let Some(files) = dir_files.as_mut() {
                        files_changed |= files.apply(c);
                    }
                }
                Input::Kube(SourceEvent::Snapshot {
                    resources,
                    diagnostics,
                }) => latest = Some((resources, diagnostics)),
                Input::Kube(SourceEvent::Error(e)) => log(
                    "warn",
                    "kubernetes watch error; retrying with backoff",
                    &[("error", e)],
                ),
            }
        }
        let resources = if let Some((resources, diagnostics)) = latest {
            report_diagnostics(&diagnostics, &metrics);
            resources
        } else if let (Some(files), true) = (dir_files.as_ref(), files_changed) {
            files.snapshot()
        } else {
            if ifaces_changed {
                pending_apply = true;
                next_attempt = after_change(next_attempt, last_failure, dp.consecutive_failures());
            }
            continue;
        };
        let started = Instant::now();
        let count = resources.len();
        let outcome = desired.engine.update(resources);
        match outcome {
            Outcome::Full | Outcome::Parts(_) => {
                let (tiers, refresh) = publish(&desired.engine, opts, &metrics, &log_ctx);
                desired.policy_tiers = tiers;
                desired.refresh = refresh;
            }
            Outcome::Sets(_) => {
                let snap = metrics.snapshot();
                publish_sizes(
                    desired.ruleset(),
                    snap.local_endpoints,
                    snap.local_policies,
                    &metrics,
                );
            }
            Outcome::Unchanged => {}
        }
        log(
            "info",
            "change detected",
            &[
                ("objects", count.to_string()),
                ("recompute", format!("{outcome:?}")),
                (
                    "compute_ms",
                    format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
                ),
            ],
        );
        pending_apply = true;
        next_attempt = after_change(next_attempt, last_failure, dp.consecutive_failures());
    }
    log("info", "stopping; the ruleset stays in force", &[]);
    drop(lock);
    Ok(())
}

/// While applies fail, a new change may pull the next retry forward, but
/// never closer than this to the last failure: a flapping input cannot
/// turn the backoff into a tight loop, and a fix still lands quickly.
pub const RETRY_ON_CHANGE_AFTER: Duration = Duration::from_secs(1);

/// When to attempt the apply a new change calls for.
fn after_change(scheduled: Instant, last_failure: Instant, failures: u32) -> Instant {
    if failures == 0 {
        return Instant::now();
    }
    scheduled.min((last_failure + RETRY_ON_CHANGE_AFTER).max(Instant::now()))
}

/// How stale the loop's heartbeat may get before /livez fails: one apply
/// may list the table and send up to three transactions, each bounded by
/// its deadline; a minute more covers a large recompute.
pub fn liveness_bound(limits: &Limits) -> Duration {
    limits.list + limits.transaction * 3 + Duration::from_secs(60)
}

/// One apply (or, with `refresh`, a drift check) with its metrics and
/// logs. Ladder steps above the plain delta are logged before they run.
fn apply_once(
    dp: &mut Dataplane,
    ruleset: &Ruleset,
    metrics: &Metrics,
    refresh: bool,
) -> Result<(), NftError> {
    let step = dp.step();
    if step != Step::Delta {
        log(
            "warn",
            &format!("ladder: trying a {} of table inet tortie", step.label()),
            &[(
                "consecutive_failures",
                dp.consecutive_failures().to_string(),
            )],
        );
        metrics.ladder_step(step.metric_label());
    }
    metrics.apply_started(dp.next_call_deadline());
    let result = dp.apply(ruleset);
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
                let msg = if refresh {
                    "drift found in table inet tortie and repaired"
                } else {
                    "ruleset applied"
                };
                log(
                    if refresh { "warn" } else { "info" },
                    msg,
                    &[
                        ("chains_written", r.stats.chains_written.to_string()),
                        ("chains_deleted", r.stats.chains_deleted.to_string()),
                        ("elements_added", r.stats.elements_added.to_string()),
                        ("elements_deleted", r.stats.elements_deleted.to_string()),
                        ("step", r.step.label().to_string()),
                        ("ms", format!("{:.1}", r.duration.as_secs_f64() * 1000.0)),
                    ],
                );
            }
        }
        Err(NftError::Interrupted { .. }) => metrics.apply_abandoned(),
        Err(e) => metrics.apply_failed(e.label(), dp.consecutive_failures()),
    }
    result.map(|_| ())
}

fn log_failure(msg: &str, e: &NftError, dp: &Dataplane, delay: Duration) {
    log(
        "error",
        msg,
        &[
            ("error", e.to_string()),
            ("cause", e.label().to_string()),
            (
                "consecutive_failures",
                dp.consecutive_failures().to_string(),
            ),
            ("next_step", dp.step().label().to_string()),
            ("retry_in_ms", delay.as_millis().to_string()),
        ],
    );
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
