//! Shared by the real-kernel tests: the sandbox from the library, plus the
//! checks that decide whether kernel tests can run here.

#![allow(dead_code)]

pub mod kernel;

pub use tortie::sandbox::*;
