//! The kernel side: applying a desired ruleset to tortie's own table in
//! one atomic transaction, holding only the delta from what is in force;
//! reading the table back to detect and repair drift; falling back to an
//! atomic full rebuild after repeated failures. Other tables are never
//! touched.
//!
//! `Dataplane` talks to the kernel only through the `kernel::Kernel` seam:
//! `NftKernel` runs the `nft` binary (bounded by `exec::Limits`) and sends
//! element changes, and the change step of `apply_change` (chains and
//! rules encoded by `rules`), over its own netlink socket (`netlink`);
//! `fake::FakeKernel` is the in-memory model the unit tests use.
//!
//! `apply` compares the whole desired ruleset with what is in force;
//! `apply_change` plans only what an `ir::Change` names and keeps its view
//! of the kernel up to date by applying the change to it, so both cost in
//! proportion to the change.

pub mod elements;
pub mod exec;
pub mod fake;
pub mod kernel;
pub mod lock;
pub mod netlink;
pub mod plan;
pub mod readback;
pub mod rules;
pub mod state;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use crate::backoff::Backoff;
use crate::compile::ir::{Change, Ruleset};
pub use elements::{ElementBatch, SetElements};
pub use exec::{Limits, Target};
pub use kernel::{Kernel, NftKernel};
pub use plan::{Plan, PlanStats};
pub use state::TableState;

/// Errors from the kernel side; `label()` names them for metrics.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft: {0} (is the nftables package installed?)")]
    Spawn(String),
    #[error("nft rejected the transaction: {stderr}")]
    Rejected { stderr: String },
    #[error("cannot list table inet tortie: {stderr}")]
    List { stderr: String },
    #[error("cannot read the table listing: {0}")]
    Parse(String),
    #[error("cannot enter network namespace {}: {reason}", path.display())]
    Netns { path: PathBuf, reason: String },
    #[error(
        "nft {what} did not finish within {}s and was killed (timeout; raise --nft-timeout or --nft-list-timeout if the table is very large)",
        after.as_secs_f64()
    )]
    Timeout { what: &'static str, after: Duration },
    #[error("nft crashed (signal {signal}) during a {what}{}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Crashed {
        what: &'static str,
        signal: i32,
        stderr: String,
    },
    #[error(
        "nft {what} abandoned because tortie is stopping (atomic: the kernel keeps the previous ruleset)"
    )]
    Interrupted { what: &'static str },
    #[error("nf_tables netlink socket ({what}): {reason}")]
    Netlink { what: &'static str, reason: String },
    #[error(
        "element batch refused (planned against ruleset generation {expected}): {reason}; tortie re-reads its table and repairs it"
    )]
    Conflict { expected: u32, reason: String },
    #[error("the kernel refused to {what}: {reason}")]
    Object { what: String, reason: String },
    #[error(
        "rule `{rule}` of chain {chain} has no netlink encoding ({reason}); the change goes through nft instead"
    )]
    Unencodable {
        chain: String,
        rule: String,
        reason: String,
    },
    #[error("the kernel refused to {} element `{element}` of set {set}: {reason}", if *add { "add" } else { "remove" })]
    Element {
        set: String,
        element: String,
        add: bool,
        reason: String,
    },
}

impl NftError {
    pub fn label(&self) -> &'static str {
        match self {
            NftError::Spawn(_) => "spawn",
            NftError::Rejected { .. } => "rejected",
            NftError::List { .. } => "list",
            NftError::Parse(_) => "parse",
            NftError::Netns { .. } => "netns",
            NftError::Timeout { .. } => "timeout",
            NftError::Crashed { .. } => "crashed",
            NftError::Interrupted { .. } => "interrupted",
            NftError::Netlink { .. } => "netlink",
            NftError::Conflict { .. } => "conflict",
            NftError::Element { .. } => "element",
            NftError::Object { .. } => "object",
            NftError::Unencodable { .. } => "unencodable",
        }
    }
}

/// Reads what tortie's table holds now (empty when it does not exist).
pub fn read_state(target: &Target) -> Result<TableState, NftError> {
    let mut k = NftKernel::new(target.clone());
    Ok(k.list(&Limits::default())?.unwrap_or_default())
}

/// Which rung of the failure ladder an apply is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Step {
    /// The delta against what is in force (read from the kernel after a failure).
    #[default]
    Delta,
    /// Rewrite the whole table in one transaction, keeping its base chains.
    Rebuild,
    /// Delete and re-create the table in one transaction.
    Replace,
}

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Step::Delta => "delta",
            Step::Rebuild => "full rebuild",
            Step::Replace => "delete and re-create",
        }
    }

    /// The step as a metric label value.
    pub fn metric_label(self) -> &'static str {
        match self {
            Step::Delta => "delta",
            Step::Rebuild => "rebuild",
            Step::Replace => "replace",
        }
    }
}

/// What one apply did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    pub stats: PlanStats,
    pub duration: Duration,
    /// Whether anything was sent to the kernel.
    pub sent: bool,
    /// Whether the kernel was read (startup, refresh, or after a failure).
    pub read_back: bool,
    /// The ladder step this apply took.
    pub step: Step,
    /// Whether the change step went as one netlink batch (no nft run):
    /// an element-only change, or chains and rules with their elements.
    pub netlink: bool,
}

/// Consecutive failures after which the next apply rebuilds the table.
pub const REBUILD_AFTER_FAILURES: u32 = 3;
/// Consecutive failures after which the table is deleted and re-created.
pub const REPLACE_AFTER_FAILURES: u32 = 5;

/// Keeps the kernel in step with desired rulesets.
#[derive(Debug)]
pub struct Dataplane {
    kernel: Box<dyn Kernel>,
    limits: Limits,
    /// What tortie last put in force; `None` means "read the kernel".
    last: Option<TableState>,
    failures: u32,
    /// Set creations and deletions sent as netlink batches so far.
    side_batches: u64,
    /// Whether `apply_change` may send chain and rule changes over netlink
    /// (off with `TORTIE_RULES_OVER_NETLINK=0`: every rule change then runs
    /// nft, as the nft fault tests need).
    rule_batches: bool,
}

/// The environment variable that turns rule changes over netlink off.
pub const RULES_OVER_NETLINK: &str = "TORTIE_RULES_OVER_NETLINK";

impl Dataplane {
    pub fn new(target: Target) -> Dataplane {
        Dataplane::with_kernel(Box::new(NftKernel::new(target)), Limits::default())
    }

    /// A dataplane over any kernel (the fake one in tests).
    pub fn with_kernel(kernel: Box<dyn Kernel>, limits: Limits) -> Dataplane {
        let rule_batches = std::env::var(RULES_OVER_NETLINK).map_or(true, |v| v != "0");
        if !rule_batches {
            tracing::info!(
                variable = RULES_OVER_NETLINK,
                "rule changes go through nft, not netlink"
            );
        }
        Dataplane {
            kernel,
            limits,
            side_batches: 0,
            last: None,
            failures: 0,
            rule_batches,
        }
    }

    /// Whether chain and rule changes may go over netlink (benchmarks
    /// compare both paths on one table).
    pub fn set_rule_batches(&mut self, on: bool) {
        self.rule_batches = on;
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// The ladder step the next apply takes.
    pub fn step(&self) -> Step {
        if self.failures >= REPLACE_AFTER_FAILURES {
            Step::Replace
        } else if self.failures >= REBUILD_AFTER_FAILURES {
            Step::Rebuild
        } else {
            Step::Delta
        }
    }

    /// The deadline of the first call the next apply makes: a listing when
    /// it must read the kernel, else a transaction.
    pub fn next_call_deadline(&self) -> Duration {
        if self.last.is_none() && self.step() == Step::Delta {
            self.limits.list
        } else {
            self.limits.transaction
        }
    }

    /// Forget what was applied, so the next apply compares with the kernel
    /// (the periodic drift check).
    pub fn invalidate(&mut self) {
        self.last = None;
    }

    fn read(&mut self) -> Result<TableState, NftError> {
        Ok(self.kernel.list(&self.limits)?.unwrap_or_default())
    }

    /// The delta from what is in force (read from the kernel when unknown).
    fn plan_delta(&mut self, desired: &Ruleset) -> Result<(Plan, bool), NftError> {
        let read = self.last.is_none();
        if read {
            self.last = Some(self.read()?);
        }
        let current = self.last.as_ref().expect("just set");
        let p = if *current == TableState::default() {
            // Nothing there (first start): create the table whole, its
            // sets first.
            plan::create_table(desired)
        } else {
            plan::delta(current, desired)
        };
        Ok((p, read))
    }

    /// The transaction that would bring the kernel to `desired`, on the
    /// ladder step that the consecutive failures call for.
    pub fn plan(&mut self, desired: &Ruleset) -> Result<(Plan, bool), NftError> {
        match self.step() {
            Step::Replace => Ok((plan::replace_table(desired), false)),
            Step::Rebuild => Ok((plan::full_rebuild(desired), false)),
            Step::Delta => self.plan_delta(desired),
        }
    }

    /// Counts a failure: the next attempt re-reads the kernel, and enough
    /// of them in a row move up the ladder.
    fn failed(&mut self, e: NftError) -> NftError {
        self.last = None;
        self.failures += 1;
        e
    }

    /// Brings the kernel to `desired` in one transaction. On failure the
    /// kernel keeps its previous state (nft transactions are atomic) and the
    /// next attempt re-reads the kernel; after repeated failures it
    /// rebuilds the whole table, then replaces it, still atomically. Every
    /// failure counts, the cleanup transaction's included.
    pub fn apply(&mut self, desired: &Ruleset) -> Result<ApplyReport, NftError> {
        let start = Instant::now();
        let step = self.step();
        let (mut p, read_back) = self.plan(desired).map_err(|e| self.failed(e))?;
        let mut report = ApplyReport {
            stats: p.stats,
            duration: Duration::ZERO,
            sent: !p.is_empty(),
            read_back,
            step,
            netlink: false,
        };
        // The full comparison (start, refresh, repair) goes through nft.
        self.send_change(&mut p, false)?;
        // Leftovers are unreferenced and change no verdict; a failure here
        // still counts, so a cleanup that keeps failing climbs the ladder
        // instead of repeating forever.
        if p.stats.full_rebuild && p.text.contains("\nflush table ") {
            // A rebuild keeps objects that are no longer wanted (empty,
            // unreferenced); a read-back finds them.
            self.last = None;
            let (c, _) = self.plan_delta(desired).map_err(|e| self.failed(e))?;
            let cleanup = format!("{}{}", p.cleanup, c.cleanup);
            if !cleanup.is_empty() {
                self.kernel
                    .transaction(&cleanup, &self.limits)
                    .map_err(|e| self.failed(e))?;
            }
        } else if !p.cleanup.is_empty() {
            let batch = ElementBatch {
                remove: std::mem::take(&mut p.removed),
                ..ElementBatch::default()
            };
            self.side_transaction(&p.cleanup, &batch)?;
        }
        self.last = Some(TableState::of(desired));
        self.failures = 0;
        report.duration = start.elapsed();
        Ok(report)
    }

    /// Sends a plan's prepare and change transactions: new sets are
    /// created and filled before the rules that use them. With `netlink`,
    /// the change goes as one netlink batch when the plan has it as
    /// objects and every rule encodes (then true), else (or when the
    /// socket fails, or another program committed since) through nft.
    fn send_change(&mut self, p: &mut Plan, netlink: bool) -> Result<bool, NftError> {
        if !p.prepare.is_empty() {
            let batch = ElementBatch {
                table: p.new_table,
                create: std::mem::take(&mut p.created),
                ..ElementBatch::default()
            };
            self.side_transaction(&p.prepare, &batch)?;
        }
        if p.text.is_empty() {
            return Ok(false);
        }
        let netlink = netlink && self.rule_batches;
        let ops = p.ops.as_ref().filter(|o| {
            netlink && o.iter().map(rules::Op::messages).sum::<usize>() <= netlink::MAX_BATCH
        });
        if let Some(ops) = ops {
            match self.kernel.change(ops, &self.limits) {
                Ok(()) => return Ok(true),
                Err(e @ NftError::Unencodable { .. }) => {
                    tracing::info!(error = %e, "sending the change through nft");
                }
                Err(e @ NftError::Netlink { .. }) => {
                    tracing::warn!(error = %e, ops = ops.len(), "netlink change batch failed; sending the change through nft instead");
                }
                Err(e @ NftError::Conflict { .. }) => {
                    tracing::debug!(error = %e, ops = ops.len(), "sending the change through nft instead of netlink");
                }
                Err(e) => return Err(self.failed(e)),
            }
        }
        self.kernel
            .transaction(&p.text, &self.limits)
            .map_err(|e| self.failed(e))?;
        Ok(false)
    }

    /// How many set creations and deletions went as netlink batches.
    pub fn side_batches(&self) -> u64 {
        self.side_batches
    }

    /// A transaction that cannot change a verdict (new sets nothing refers
    /// to yet, or objects nothing refers to any more): one netlink batch
    /// when tortie's view is tied to the generation id, else (or when the
    /// socket fails, or another program committed since) `text` through
    /// nft, as before netlink.
    fn side_transaction(&mut self, text: &str, batch: &ElementBatch) -> Result<(), NftError> {
        if batch.len() <= netlink::MAX_BATCH {
            match self.kernel.elements(batch, &self.limits) {
                Ok(()) => {
                    self.side_batches += 1;
                    return Ok(());
                }
                Err(e @ (NftError::Netlink { .. } | NftError::Conflict { .. })) => {
                    tracing::debug!(error = %e, "sending set creations or deletions through nft instead");
                }
                Err(e) => return Err(self.failed(e)),
            }
        }
        self.kernel
            .transaction(text, &self.limits)
            .map_err(|e| self.failed(e))
    }

    /// Brings the kernel to `desired` given what changed since the last
    /// apply, at a cost in proportion to the change: only the objects
    /// `change` names are planned, and the view of the kernel is moved on
    /// by the change (never rebuilt from `desired`). Element-only changes
    /// go as one netlink batch checked against the ruleset generation; a
    /// concurrent writer makes it fail, and the next apply re-reads the
    /// kernel. Falls back to `apply` (the full comparison) when the view is
    /// unknown (start, after a failure, after `invalidate`), when the
    /// ladder calls for a rebuild, or when `change.full`.
    pub fn apply_change(
        &mut self,
        desired: &Ruleset,
        change: &Change,
    ) -> Result<ApplyReport, NftError> {
        if change.full || self.last.is_none() || self.step() != Step::Delta {
            return self.apply(desired);
        }
        let start = Instant::now();
        let mut report = ApplyReport::default();
        if change.elements_only()
            && let Some(batch) = self.element_batch(desired, change)
        {
            report.stats.elements_added = batch.sets.iter().map(|s| s.added.len()).sum();
            report.stats.elements_deleted = batch.sets.iter().map(|s| s.removed.len()).sum();
            if batch.is_empty() {
                report.duration = start.elapsed();
                return Ok(report);
            }
            match self.kernel.elements(&batch, &self.limits) {
                Ok(()) => {
                    report.sent = true;
                    report.netlink = true;
                    return Ok(self.advanced(desired, change, report, start));
                }
                Err(e @ NftError::Netlink { .. }) => {
                    tracing::warn!(error = %e, elements = batch.len(), "netlink element batch failed; sending the change through nft instead");
                }
                Err(e) => return Err(self.failed(e)),
            }
        }
        let last = self.last.as_ref().expect("checked above");
        let mut p = plan::delta_of(last, desired, change);
        report.stats = p.stats;
        report.sent = !p.is_empty();
        report.netlink = self.send_change(&mut p, true)?;
        if !p.cleanup.is_empty() {
            let batch = ElementBatch {
                remove: std::mem::take(&mut p.removed),
                ..ElementBatch::default()
            };
            self.side_transaction(&p.cleanup, &batch)?;
        }
        Ok(self.advanced(desired, change, report, start))
    }

    /// Records a successful change: the view moves on, failures reset.
    fn advanced(
        &mut self,
        desired: &Ruleset,
        change: &Change,
        mut report: ApplyReport,
        start: Instant,
    ) -> ApplyReport {
        if let Some(last) = self.last.as_mut() {
            last.advance(desired, change);
        }
        self.failures = 0;
        report.duration = start.elapsed();
        report
    }

    /// The element-only `change` as one batch against the current view;
    /// `None` when it cannot go as one (a set missing or unreadable in the
    /// view, or too many elements).
    fn element_batch(&self, desired: &Ruleset, change: &Change) -> Option<ElementBatch> {
        let last = self.last.as_ref()?;
        let mut batch = ElementBatch::default();
        for (name, d) in change.elements.iter().filter(|(_, d)| !d.is_empty()) {
            let have = last.sets.get(name)?;
            let set = desired.sets.get(name)?;
            if plan::has_unreadable(have) {
                return None;
            }
            let removed: Vec<String> = d
                .removed
                .iter()
                .filter(|e| have.contains(*e))
                .cloned()
                .collect();
            let added: Vec<String> = d
                .added
                .iter()
                .filter(|e| !have.contains(*e))
                .cloned()
                .collect();
            if !removed.is_empty() || !added.is_empty() {
                batch.sets.push(SetElements {
                    set: name.clone(),
                    ty: set.ty,
                    removed,
                    added,
                });
            }
        }
        (batch.len() <= netlink::MAX_BATCH).then_some(batch)
    }

    /// Compares the kernel with `desired` and repairs any difference. When
    /// the ruleset generation id shows that nothing was committed since
    /// tortie's view was last known to be right, the kernel cannot have
    /// drifted and the view stands in for it (no listing); otherwise the
    /// kernel is read.
    pub fn refresh(&mut self, desired: &Ruleset) -> Result<ApplyReport, NftError> {
        let trusted = self.last.is_some()
            && self.step() == Step::Delta
            && self.kernel.unchanged(&self.limits);
        if !trusted {
            self.invalidate();
        }
        self.apply(desired)
    }

    /// Whether the kernel holds exactly `desired` now. What was read
    /// becomes the view (it is what is in force).
    pub fn verify(&mut self, desired: &Ruleset) -> Result<bool, NftError> {
        let state = self.read()?;
        let same = state == TableState::of(desired);
        self.last = Some(state);
        Ok(same)
    }
}

/// Retries `apply` with jittered exponential backoff from `first_delay`;
/// gives up after `attempts`. Returns the last error.
pub fn apply_with_retry(
    dp: &mut Dataplane,
    desired: &Ruleset,
    attempts: u32,
    first_delay: Duration,
) -> Result<ApplyReport, NftError> {
    let mut backoff = Backoff::new(first_delay, crate::backoff::CAP);
    let mut last_err = None;
    for i in 0..attempts.max(1) {
        match dp.apply(desired) {
            Ok(r) => return Ok(r),
            Err(e) => {
                last_err = Some(e);
                if i + 1 < attempts {
                    std::thread::sleep(backoff.next_delay());
                }
            }
        }
    }
    Err(last_err.expect("at least one attempt"))
}

#[cfg(test)]
mod tests;
