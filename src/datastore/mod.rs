//! Where resources come from: a directory of YAML/JSON files (`dir`), or a
//! Kubernetes API server (`kubernetes`). Every object, whatever its source,
//! goes through the same loader, so validation and diagnostics are the same.
//! Kubernetes client types stay in this layer.
//!
//! Both sources emit deltas, never snapshots: batches of per-object
//! [`Update`]s with a [`Report`] per file or object whose diagnostics
//! changed, and one [`Event::Synced`] once every initial listing is done.
//! A source keeps only what it needs to compute deltas (a content hash per
//! key), never a second copy of the objects: the engine holds those.

pub mod dir;
pub mod kubernetes;

use crate::diag::Diagnostic;
use crate::model::{Resource, Update};

/// What a source sends to its consumer, in order.
#[derive(Debug)]
pub enum Event {
    /// Objects that changed, and what their files or objects report now.
    Changes(Changes),
    /// Every initial listing is complete (sent once, after the first
    /// listings' changes): what was sent so far is the whole input.
    Synced,
    /// A note from the source itself (a watcher error, a kind not served).
    Note(String),
}

/// One batch of changes.
#[derive(Debug, Default)]
pub struct Changes {
    pub updates: Vec<Update>,
    pub reports: Vec<Report>,
}

/// What one file or object reports now; replaces its earlier report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The file's path, or `k8s:<Kind>/<namespace>/<name>`.
    pub item: String,
    pub status: Status,
    /// Every problem the item has now (empty once it is fixed).
    pub diagnostics: Vec<Diagnostic>,
}

/// What became of one file or object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Read; it defines this many resources.
    Read(usize),
    /// Gone: nothing of it is in force.
    Removed,
    /// Changed into something invalid; its previous content stays.
    Kept,
    /// New and rejected whole; nothing of it is in force.
    Rejected,
}

impl Report {
    /// Errors by stage, as the `tortie_invalid_inputs` gauge counts them.
    pub fn errors_by_stage(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.stage.label())
    }
}

/// A content hash of one object (its Debug form is complete and stable):
/// what a source keeps to tell a changed object from an unchanged one.
/// The form is written whole into `scratch` (reused between calls) and
/// hashed in one piece, a fraction of the cost of feeding the hasher each
/// of its many small fragments.
pub(crate) fn value_hash(r: &Resource, scratch: &mut String) -> u64 {
    use std::fmt::Write;
    use std::hash::Hasher;
    scratch.clear();
    let _ = write!(scratch, "{r:?}");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(scratch.as_bytes());
    // A huge object does not keep its room for good.
    scratch.shrink_to(64 * 1024);
    h.finish()
}

/// Gives freed heap back to the kernel: after a large parse or a rejected
/// file (directory), after the initial listing (Kubernetes), so that a
/// refused file or a finished start-up leaves no resident memory behind.
/// The allocator is mimalloc (`src/lib.rs`); `mi_collect(true)` frees
/// what the calling thread's heap and the shared segments hold unused
/// (the alias-bomb fault test checks that the memory comes back).
pub(crate) fn trim_heap() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: mi_collect takes no pointers; it only releases free memory.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(not(feature = "mimalloc"), target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory held by the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}
