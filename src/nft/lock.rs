//! One agent per dataplane: an exclusive `flock` on a file under
//! /run/tortie named after the target network namespace's inode (the
//! current namespace's, from /proc/self/ns/net, when no netns is given).
//! The lock lives as long as the returned value (the kernel drops it when
//! the process dies, however it dies); the file records the holder's pid.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::exec::Target;

/// Where lock files go by default.
pub const LOCK_DIR: &str = "/run/tortie";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot identify network namespace {}: {source}", path.display())]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create lock file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another tortie agent{} already programs this network namespace (lock file {} is held); stop it first, or point this one at another namespace",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        path.display()
    )]
    Held { path: PathBuf, pid: Option<u32> },
}

/// Held while the agent runs.
#[derive(Debug)]
pub struct NetnsLock {
    _file: File,
    pub path: PathBuf,
}

/// The lock file for `target` under `dir`: `netns-<dev>-<inode>.lock`.
pub fn lock_path(target: &Target, dir: &Path) -> Result<PathBuf, LockError> {
    let ns = match target {
        Target::Current => PathBuf::from("/proc/self/ns/net"),
        Target::Netns(p) => p.clone(),
    };
    let meta = std::fs::metadata(&ns).map_err(|source| LockError::Netns {
        path: ns.clone(),
        source,
    })?;
    Ok(dir.join(format!("netns-{}-{}.lock", meta.dev(), meta.ino())))
}

/// Takes the exclusive lock for `target`, or says who holds it.
pub fn acquire(target: &Target, dir: &Path) -> Result<NetnsLock, LockError> {
    let path = lock_path(target, dir)?;
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(LockError::Held {
            path,
            pid: text.trim().parse().ok(),
        });
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(NetnsLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_namespace_is_refused_with_the_holder() {
        let dir = std::env::temp_dir().join(format!("tortie-lock-{}", std::process::id()));
        let first = acquire(&Target::Current, &dir).unwrap();
        let err = acquire(&Target::Current, &dir).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, LockError::Held { pid: Some(p), path } if *p == std::process::id() && *path == first.path),
            "{msg}"
        );
        assert!(msg.contains(&first.path.display().to_string()), "{msg}");
        drop(first);
        let again = acquire(&Target::Current, &dir).expect("free after drop");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
