//! The seam between the dataplane logic and the kernel: run one atomic
//! transaction, list tortie's table. `NftKernel` is the real thing (the
//! `nft` binary with deadlines); `fake::FakeKernel` is an in-memory model
//! for tests without root.

use super::NftError;
use super::exec::{self, Limits, Target};
use super::state::TableState;

/// What the dataplane needs from a kernel.
pub trait Kernel: Send + std::fmt::Debug {
    /// Applies `text` (nft syntax) as one transaction: all of it or none.
    fn transaction(&mut self, text: &str, limits: &Limits) -> Result<(), NftError>;
    /// What tortie's table holds; `None` when it does not exist.
    fn list(&mut self, limits: &Limits) -> Result<Option<TableState>, NftError>;
}

/// The real kernel, through the `nft` binary.
#[derive(Debug, Clone)]
pub struct NftKernel {
    pub target: Target,
}

impl Kernel for NftKernel {
    fn transaction(&mut self, text: &str, limits: &Limits) -> Result<(), NftError> {
        exec::run_transaction_with(&self.target, text, limits)
    }

    fn list(&mut self, limits: &Limits) -> Result<Option<TableState>, NftError> {
        match exec::list_table_json_with(&self.target, limits)? {
            None => Ok(None),
            Some(json) => TableState::parse_json(&json)
                .map(Some)
                .map_err(NftError::Parse),
        }
    }
}
