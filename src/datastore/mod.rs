//! Where resources come from: a directory of YAML/JSON files (`dir`), or a
//! Kubernetes API server (`kubernetes`). Every object, whatever its source,
//! goes through the same loader, so validation and diagnostics are the same.
//! Kubernetes client types stay in this layer.

pub mod dir;
pub mod kubernetes;
