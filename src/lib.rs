//! tortie: a Calico-Felix-compatible per-node policy dataplane on nftables.
//!
//! Data flows one way: `datastore` → `model` → `calc` → `compile` → `nft`.
//! Everything from `model` to `compile` is pure and needs neither root nor a cluster.

/// mimalloc: per-thread heaps with no shared arena lock (the Kubernetes
/// source decodes on one thread, converts on another and computes on a
/// third), and freed pages go back to the kernel on their own. Off (glibc
/// malloc) without the `mimalloc` feature, as in the fuzz targets.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod backoff;
pub mod calc;
pub mod compile;
pub mod daemon;
pub mod datastore;
pub mod demo;
pub mod diag;
pub mod hostifaces;
pub mod intern;
pub mod ipproto;
pub mod logging;
pub mod manifests;
pub mod model;
pub mod nft;
pub mod obs;
pub mod par;
pub mod sandbox;
pub mod selector;
pub mod synth;
pub mod trace;
