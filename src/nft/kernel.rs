//! The seam between the dataplane logic and the kernel: run one atomic
//! transaction, apply an element-only change or a plan's change step (as
//! one netlink batch), list tortie's table.
//! `NftKernel` is the real thing (the `nft` binary with deadlines for
//! transactions, tortie's own netlink socket for element changes and for
//! reading the table back, with nft's JSON listing as the fallback); `fake::FakeKernel` is an in-memory model for tests without
//! root.
//!
//! Both track the ruleset generation id at which tortie's view of its
//! table was last known to be right (read by a listing, or moved on by
//! tortie's own commits). An element batch carries that id; when anything
//! else committed in between, the kernel refuses it (`NftError::Conflict`).

use super::NftError;
use super::elements::ElementBatch;
use super::exec::{self, Limits, Target};
use super::netlink::NlSocket;
use super::readback;
use super::rules::Op;
use super::state::TableState;

/// What the dataplane needs from a kernel.
pub trait Kernel: Send + std::fmt::Debug {
    /// Applies `text` (nft syntax) as one transaction: all of it or none.
    fn transaction(&mut self, text: &str, limits: &Limits) -> Result<(), NftError>;
    /// What tortie's table holds; `None` when it does not exist.
    fn list(&mut self, limits: &Limits) -> Result<Option<TableState>, NftError>;
    /// Applies element additions and removals to existing sets as one
    /// transaction, refused with `NftError::Conflict` when another program
    /// committed since tortie's view was last known to be right.
    fn elements(&mut self, batch: &ElementBatch, limits: &Limits) -> Result<(), NftError>;
    /// Applies a plan's change step (chains, rules, element and map
    /// changes) as one transaction, refused like `elements` when another
    /// program committed since; `NftError::Unencodable` (nothing sent)
    /// when a rule has no netlink encoding.
    fn change(&mut self, ops: &[Op], limits: &Limits) -> Result<(), NftError>;
    /// Whether nothing at all was committed since tortie's view was last
    /// known to be right (so its table cannot have drifted).
    fn unchanged(&mut self, limits: &Limits) -> bool;
}

/// The real kernel: the `nft` binary, and a netlink socket for elements.
#[derive(Debug)]
pub struct NftKernel {
    pub target: Target,
    socket: Option<NlSocket>,
    /// The generation at which tortie's view was last known to be right.
    genid: Option<u32>,
}

impl NftKernel {
    pub fn new(target: Target) -> NftKernel {
        NftKernel {
            target,
            socket: None,
            genid: None,
        }
    }

    /// The socket, opened on first use (and again after an error).
    fn socket(&mut self) -> Result<&mut NlSocket, NftError> {
        if self.socket.is_none() {
            self.socket = Some(NlSocket::open(&self.target)?);
        }
        Ok(self.socket.as_mut().expect("just opened"))
    }

    /// The generation id now; `None` (and the socket dropped) on error.
    fn genid_now(&mut self, limits: &Limits) -> Option<u32> {
        let r = self
            .socket()
            .and_then(|s| s.genid(limits.transaction.min(LOOKUP)));
        match r {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the nftables generation id");
                self.socket = None;
                None
            }
        }
    }
}

impl NftKernel {
    /// The table read over netlink; `None` (logged) when that fails, so
    /// the caller falls back to nft's JSON listing.
    fn list_netlink(&mut self, limits: &Limits) -> Option<Option<TableState>> {
        let r = self.socket().and_then(|s| readback::read(s, limits.list));
        match r {
            Ok(state) => Some(state),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the table over netlink; listing it with nft instead");
                self.socket = None;
                None
            }
        }
    }

    fn list_json(&mut self, limits: &Limits) -> Result<Option<TableState>, NftError> {
        match exec::list_table_json_with(&self.target, limits)? {
            None => Ok(None),
            Some(json) => TableState::parse_json(&json)
                .map(Some)
                .map_err(NftError::Parse),
        }
    }
}

/// Deadline of a generation id lookup (microseconds when all is well).
const LOOKUP: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether generation `after` follows `before` with at most one commit
/// (tortie's own) in between.
fn one_commit(before: Option<u32>, after: Option<u32>) -> Option<u32> {
    let (b, a) = (before?, after?);
    (a == b || a == b.wrapping_add(1).max(1)).then_some(a)
}

impl Kernel for NftKernel {
    fn transaction(&mut self, text: &str, limits: &Limits) -> Result<(), NftError> {
        let before = self.genid_now(limits);
        let in_step = before.is_some() && before == self.genid;
        let r = exec::run_transaction_with(&self.target, text, limits);
        let after = self.genid_now(limits);
        // A whole-table rewrite makes the view right whatever came before.
        let whole = text.contains("\nflush table ") || text.contains("\ndelete table ");
        self.genid = match &r {
            Ok(()) if in_step || whole => one_commit(before, after),
            _ => None,
        };
        r
    }

    fn list(&mut self, limits: &Limits) -> Result<Option<TableState>, NftError> {
        let before = self.genid_now(limits);
        let r = match self.list_netlink(limits) {
            Some(state) => Ok(state),
            None => self.list_json(limits),
        };
        let after = self.genid_now(limits);
        self.genid = if r.is_ok() && before == after {
            after
        } else {
            None
        };
        r
    }

    fn unchanged(&mut self, limits: &Limits) -> bool {
        self.genid.is_some() && self.genid_now(limits) == self.genid
    }

    fn elements(&mut self, batch: &ElementBatch, limits: &Limits) -> Result<(), NftError> {
        self.batch(limits, |sock, genid, deadline| {
            sock.apply(batch, genid, deadline)
        })
    }

    fn change(&mut self, ops: &[Op], limits: &Limits) -> Result<(), NftError> {
        self.batch(limits, |sock, genid, deadline| {
            sock.apply_ops(ops, genid, deadline)
        })
    }
}

impl NftKernel {
    /// Sends one genid-checked batch with `send`; the view moves on with
    /// the commit, and is untied from the generation on any failure but
    /// an unencodable rule (nothing was sent then).
    fn batch(
        &mut self,
        limits: &Limits,
        send: impl FnOnce(&mut NlSocket, u32, std::time::Duration) -> Result<u32, NftError>,
    ) -> Result<(), NftError> {
        let deadline = limits.transaction;
        let genid = self.genid;
        let sock = self.socket()?;
        let Some(genid) = genid else {
            return Err(NftError::Conflict {
                expected: 0,
                reason: "tortie's view of its table is not tied to a generation id (it was not read since another program wrote)".into(),
            });
        };
        let r = send(sock, genid, deadline);
        match r {
            Ok(next) => {
                self.genid = Some(next);
                Ok(())
            }
            Err(e @ NftError::Unencodable { .. }) => Err(e),
            Err(e) => {
                if matches!(e, NftError::Netlink { .. } | NftError::Timeout { .. }) {
                    self.socket = None;
                }
                self.genid = None;
                Err(e)
            }
        }
    }
}
