//! The kernel side: applying a desired ruleset to tortie's own table in
//! one atomic transaction, holding only the delta from what is in force;
//! reading the table back to detect and repair drift; falling back to an
//! atomic full rebuild after repeated failures. Other tables are never
//! touched.

pub mod exec;
pub mod plan;
pub mod state;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::compile::ir::Ruleset;
pub use exec::Target;
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
}

impl NftError {
    pub fn label(&self) -> &'static str {
        match self {
            NftError::Spawn(_) => "spawn",
            NftError::Rejected { .. } => "rejected",
            NftError::List { .. } => "list",
            NftError::Parse(_) => "parse",
            NftError::Netns { .. } => "netns",
        }
    }
}

/// Reads what tortie's table holds now (empty when it does not exist).
pub fn read_state(target: &Target) -> Result<TableState, NftError> {
    match exec::list_table_json(target)? {
        None => Ok(TableState::default()),
        Some(json) => TableState::parse_json(&json).map_err(NftError::Parse),
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
}

/// Consecutive failures after which the next apply rebuilds the table.
pub const REBUILD_AFTER_FAILURES: u32 = 3;
/// Consecutive failures after which the table is deleted and re-created.
pub const REPLACE_AFTER_FAILURES: u32 = 5;

/// Keeps the kernel in step with desired rulesets.
#[derive(Debug)]
pub struct Dataplane {
    target: Target,
    /// What tortie last put in force; `None` means "read the kernel".
    last: Option<TableState>,
    failures: u32,
}

impl Dataplane {
    pub fn new(target: Target) -> Dataplane {
        Dataplane {
            target,
            last: None,
            failures: 0,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Forget what was applied, so the next apply compares with the kernel
    /// (the periodic drift check).
    pub fn invalidate(&mut self) {
        self.last = None;
    }

    /// The transaction that would bring the kernel to `desired`.
    pub fn plan(&mut self, desired: &Ruleset) -> Result<(Plan, bool), NftError> {
        if self.failures >= REPLACE_AFTER_FAILURES {
            return Ok((plan::replace_table(desired), false));
        }
        if self.failures >= REBUILD_AFTER_FAILURES {
            return Ok((plan::full_rebuild(desired), false));
        }
        let (current, read) = match &self.last {
            Some(s) => (s.clone(), false),
            None => (read_state(&self.target)?, true),
        };
        let p = if current == TableState::default() {
            // Nothing there (first start): create the table whole.
            plan::replace_table(desired)
        } else {
            plan::delta(&current, desired)
        };
        Ok((p, read))
    }

    /// Brings the kernel to `desired` in one transaction. On failure the
    /// kernel keeps its previous state (nft transactions are atomic) and the
    /// next attempt re-reads the kernel; after repeated failures it
    /// rebuilds the whole table, still in one transaction.
    pub fn apply(&mut self, desired: &Ruleset) -> Result<ApplyReport, NftError> {
        let start = Instant::now();
        let (p, read_back) = match self.plan(desired) {
            Ok(x) => x,
            Err(e) => {
                self.failures += 1;
                return Err(e);
            }
        };
        if p.is_empty() {
            self.last = Some(TableState::of(desired));
            self.failures = 0;
            return Ok(ApplyReport {
                stats: p.stats,
                duration: start.elapsed(),
                sent: false,
                read_back,
            });
        }
        // New sets are created and filled before the rules that use them.
        let sent = if p.prepare.is_empty() {
            Ok(())
        } else {
            exec::run_transaction(&self.target, &p.prepare)
        }
        .and_then(|()| {
            if p.text.is_empty() {
                Ok(())
            } else {
                exec::run_transaction(&self.target, &p.text)
            }
        });
        match sent {
            Ok(()) => {
                self.failures = 0;
                let mut cleanup = p.cleanup.clone();
                if p.stats.full_rebuild && p.text.contains("\nflush table ") {
                    // A rebuild keeps objects that are no longer wanted
                    // (empty, unreferenced); a read-back finds them.
                    self.last = None;
                    if let Ok((c, _)) = self.plan(desired) {
                        cleanup.push_str(&c.cleanup);
                    }
                }
                self.last = Some(TableState::of(desired));
                if !cleanup.is_empty()
                    && let Err(e) = exec::run_transaction(&self.target, &cleanup)
                {
                    // Leftovers are unreferenced and change no verdict; the
                    // next apply reads the kernel and retries their removal.
                    self.last = None;
                    return Err(e);
                }
                Ok(ApplyReport {
                    stats: p.stats,
                    duration: start.elapsed(),
                    sent: true,
                    read_back,
                })
            }
            Err(e) => {
                self.last = None;
                self.failures += 1;
                Err(e)
            }
        }
    }

    /// Compares the kernel with `desired` and repairs any difference.
    pub fn refresh(&mut self, desired: &Ruleset) -> Result<ApplyReport, NftError> {
        self.invalidate();
        self.apply(desired)
    }

    /// Whether the kernel holds exactly `desired` now.
    pub fn verify(&self, desired: &Ruleset) -> Result<bool, NftError> {
        Ok(read_state(&self.target)? == TableState::of(desired))
    }
}

/// Retries `apply` with capped exponential backoff; gives up after
/// `attempts`. Returns the last error.
pub fn apply_with_retry(
    dp: &mut Dataplane,
    desired: &Ruleset,
    attempts: u32,
    first_delay: Duration,
) -> Result<ApplyReport, NftError> {
    let mut delay = first_delay;
    let mut last_err = None;
    for _ in 0..attempts.max(1) {
        match dp.apply(desired) {
            Ok(r) => return Ok(r),
            Err(e) => {
                last_err = Some(e);
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    Err(last_err.expect("at least one attempt"))
}

#[cfg(test)]
mod tests;
