//! `tortie run`: the long-running agent, a thin loop: updates in (the
//! source's per-object deltas, `pump`) → engine (`desired`) → ruleset
//! changes → kernel (`kernel`). It loads every source completely before
//! the first apply (a partial ruleset is never installed), debounces once
//! and adaptively (the first change after quiet goes at once, bursts are
//! coalesced), re-reads the kernel on every refresh interval to repair
//! drift, serves metrics and health, warns loudly about a misconfigured
//! node (`checks`), and on SIGTERM leaves the rules in force. A restart
//! adopts the table already in the kernel: the first apply is a delta.
//!
//! Kernel faults: every nft call has a deadline and is abandoned at once on
//! SIGTERM/SIGINT (nft commits atomically, so an abandoned transaction
//! leaves the previous ruleset in force); failed applies are retried with
//! jittered exponential backoff and climb the rebuild / re-create ladder;
//! readiness drops after repeated failures, liveness follows the loop's
//! heartbeat. One agent per network namespace (a lock under /run/tortie).

mod checks;
pub mod counters;
mod desired;
pub mod http;
mod kernel;
pub mod metrics;
mod pump;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::datastore::dir;
use crate::datastore::kubernetes::{self, CalicoApi};
use crate::nft::lock::LockError;
use crate::nft::{Limits, Target};
use metrics::Metrics;
use pump::{Input, Next, Pump};

pub use kernel::RETRY_ON_CHANGE_AFTER;

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
    /// Connection logs for every local workload (`--connection-logs`), in
    /// addition to FelixConfiguration `connectionLogsEnabled`.
    pub connection_logs: bool,
    /// With the NFLOG backend: syslog destination and optional JSON file.
    pub syslog: crate::logging::Sink,
    pub log_json: Option<PathBuf>,
    /// How finely policy hits are exported.
    pub hit_detail: metrics::HitDetail,
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

/// How stale the loop's heartbeat may get before /livez fails: one apply
/// may list the table and send up to three transactions, each bounded by
/// its deadline; a minute more covers a large recompute.
pub fn liveness_bound(limits: &Limits) -> Duration {
    limits.list + limits.transaction * 3 + Duration::from_secs(60)
}

/// Runs until `stop` is set. Returns only on a setup error or on stop.
pub fn run(opts: &Options, stop: Arc<AtomicBool>) -> Result<(), DaemonError> {
    // First of all: a second agent on the same namespace stops here.
    let lock = crate::nft::lock::acquire(&opts.target, &opts.lock_dir)?;
    tracing::info!(lock = %lock.path.display(), "holding the agent lock for this network namespace");
    let limits = Limits {
        stop: Some(stop.clone()),
        ..opts.nft_limits.clone()
    };
    let metrics = Arc::new(Metrics::default());
    metrics.set_liveness_bound(liveness_bound(&limits));
    serve_metrics(opts, &metrics, &stop)?;
    let log_ctx = start_packet_log(opts, &metrics, &stop);
    let (tx, rx) = mpsc::channel::<Input>();
    let _source = start_source(opts, &tx)?;
    let mut pump = Pump::new(rx, opts.debounce, metrics.clone());
    // The node's interfaces are read while the listing arrives.
    let ifaces_watch = watch_interfaces(&opts.target);
    let Some(initial) = pump.initial(&stop) else {
        return Ok(());
    };
    let (ifaces, _ifaces_watch) = follow_interfaces(ifaces_watch, &tx);
    drop(tx);
    let mut desired = desired::Desired::new(
        initial,
        ifaces,
        opts,
        &desired::Ctx::new(&metrics, &log_ctx, &pump.census),
    );
    let refresh = desired.refresh_every(opts);
    let _counters = start_counters(opts, &limits, refresh, &metrics);
    let mut kernel = kernel::Kernel::new(&opts.target, limits, refresh, desired.take_change());
    while !stop.load(Ordering::Relaxed) {
        metrics.heartbeat();
        if !kernel.tick(&desired.view(opts), &metrics, &stop) {
            break;
        }
        let batch = match pump.next(kernel.wake_by()) {
            Next::Batch(b) => b,
            Next::Idle => continue,
            Next::Closed => break,
        };
        let started = std::time::Instant::now();
        if desired.apply(
            batch,
            opts,
            &desired::Ctx::new(&metrics, &log_ctx, &pump.census),
        ) {
            kernel.changed(desired.take_change());
        }
        pump.computed(started.elapsed());
    }
    tracing::info!("stopping; the ruleset stays in force");
    drop(lock);
    Ok(())
}

/// Sets its flag when dropped: stops a helper thread when `run` returns.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Starts the rule-counter reader (every `min(10 s, refresh)`, less often
/// when reading is costly); it stops when `run` returns (on a stop too:
/// the loop then ends).
fn start_counters(
    opts: &Options,
    limits: &Limits,
    refresh: Duration,
    metrics: &Arc<Metrics>,
) -> Option<StopOnDrop> {
    metrics.set_hit_detail(opts.hit_detail);
    let own = Arc::new(AtomicBool::new(false));
    let every = refresh.min(Duration::from_secs(10));
    match counters::spawn(
        opts.target.clone(),
        limits.clone(),
        every,
        metrics.clone(),
        own.clone(),
    ) {
        Ok(_) => Some(StopOnDrop(own)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the rule-counter reader; no policy hit metrics");
            None
        }
    }
}

fn serve_metrics(
    opts: &Options,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
) -> Result<(), DaemonError> {
    let Some(addr) = opts.metrics_addr else {
        return Ok(());
    };
    let bound = http::serve(addr, metrics.clone(), stop.clone())
        .map_err(|source| DaemonError::Metrics { addr, source })?;
    tracing::info!(addr = %bound, "serving /metrics, /livez and /readyz");
    Ok(())
}

/// With the NFLOG backend, starts reading logged packets; returns the
/// context the reader names policies and endpoints from.
fn start_packet_log(
    opts: &Options,
    metrics: &Metrics,
    stop: &Arc<AtomicBool>,
) -> crate::logging::SharedContext {
    let log_ctx: crate::logging::SharedContext = Default::default();
    let crate::calc::LogBackend::Nflog { group } = opts.log_backend else {
        if opts.connection_logs {
            tracing::warn!(
                backend = "kernel",
                "--connection-logs needs --log-backend nflog: connection records go to the kernel log without the deciding rules"
            );
        }
        return log_ctx;
    };
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
            tracing::info!(group, syslog = %opts.syslog, "reading logged packets from NFLOG");
        }
        Err(e) => tracing::error!(
            group,
            error = %e,
            "cannot read NFLOG; logged packets will not reach syslog"
        ),
    }
    log_ctx
}

/// A running source; dropping it stops the directory watch (the
/// Kubernetes thread ends when the loop's receiver goes).
#[derive(Default)]
struct Source {
    _dir: Option<dir::Watching>,
    _kubernetes: Option<std::thread::JoinHandle<()>>,
}

/// Starts the datastore's source: its events reach the loop as
/// `Input::Source`, the initial listing first, then `Synced`.
fn start_source(opts: &Options, tx: &mpsc::Sender<Input>) -> Result<Source, DaemonError> {
    let sink = tx.clone();
    let send = move |ev| sink.send(Input::Source(ev)).is_ok();
    match &opts.datastore {
        Datastore::Dir(root) => {
            let dopts = dir::DirOptions {
                limits: opts.limits,
                debounce: opts.debounce,
                rescan_every: opts.rescan_interval,
            };
            let watching = dir::watch(root, dopts, send).map_err(DaemonError::from)?;
            Ok(Source {
                _dir: Some(watching),
                ..Source::default()
            })
        }
        Datastore::Kubernetes(calico) => {
            let (ktx, krx) = mpsc::channel();
            let thread = kubernetes::spawn(*calico, ktx).map_err(|e| DaemonError::Datastore {
                path: PathBuf::from("kubernetes"),
                source: e,
            })?;
            std::thread::spawn(move || {
                for ev in krx {
                    if !send(ev) {
                        break;
                    }
                }
            });
            Ok(Source {
                _kubernetes: Some(thread),
                ..Source::default()
            })
        }
    }
}

/// The node's interfaces being followed, their maps not yet taken.
type InterfacesWatch = (
    crate::hostifaces::Watch,
    mpsc::Receiver<crate::hostifaces::InterfaceAddrs>,
);

/// Starts following the node's interfaces (host endpoints with only
/// expectedIPs bind to those holding their addresses; the checks look for
/// the pods' interfaces); None (said loudly) if they cannot be followed.
fn watch_interfaces(target: &Target) -> Option<InterfacesWatch> {
    let (itx, irx) = mpsc::channel();
    match crate::hostifaces::watch(target, Duration::from_millis(100), itx) {
        Ok(w) => Some((w, irx)),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot follow the node's interfaces: host endpoints with only expectedIPs police nothing"
            );
            None
        }
    }
}

/// The current interface map (None if the interfaces cannot be followed or
/// no map came within 2 s: no check is made on a guess); every later one
/// goes to the loop as `Input::Interfaces`.
fn follow_interfaces(
    watch: Option<InterfacesWatch>,
    tx: &mpsc::Sender<Input>,
) -> (
    Option<crate::hostifaces::InterfaceAddrs>,
    Option<crate::hostifaces::Watch>,
) {
    let Some((w, irx)) = watch else {
        return (None, None);
    };
    let mut first = irx.recv_timeout(Duration::from_secs(2)).ok();
    // Maps that came while the listing arrived: the latest is current.
    while let Ok(m) = irx.try_recv() {
        first = Some(m);
    }
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
