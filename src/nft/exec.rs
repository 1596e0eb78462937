//! Running the `nft` binary: one transaction from stdin (`nft -f -`), or a
//! JSON listing of tortie's own table, optionally inside a named network
//! namespace (entered with setns in the child, so this process stays put).
//!
//! Every call is bounded: nft runs in its own process group (so a terminal's
//! Ctrl-C or a process-group signal reaches only tortie), the wait polls a
//! deadline and an optional stop flag, and on either the child's whole
//! process group is killed. Abandoning a transaction this way is safe: nft
//! commits a file as one kernel transaction, so the kernel keeps either the
//! previous ruleset or the new one, never a mix.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::NftError;
use crate::compile::ir::{TABLE_FAMILY, TABLE_NAME};

/// Default deadline of one transaction. A full apply of the XL ruleset takes
/// a few seconds on a 2-core machine; 30 s leaves a wide margin while still
/// noticing a wedged nft quickly.
pub const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline of one listing. The JSON read-back of an XL table costs
/// about two minutes of nft CPU today, so listings get a longer deadline.
pub const DEFAULT_LIST_TIMEOUT: Duration = Duration::from_secs(300);

/// Deadlines of nft calls, and the flag that abandons a call when set.
#[derive(Debug, Clone)]
pub struct Limits {
    pub transaction: Duration,
    pub list: Duration,
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            transaction: DEFAULT_TRANSACTION_TIMEOUT,
            list: DEFAULT_LIST_TIMEOUT,
            stop: None,
        }
    }
}

impl Limits {
    pub fn stopping(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }
}

/// Where to program: the current network namespace or a named one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Target {
    #[default]
    Current,
    /// A namespace under /var/run/netns (as `ip netns add` creates), or a path.
    Netns(PathBuf),
}

impl Target {
    pub fn named(name: &str) -> Target {
        if name.contains('/') {
            Target::Netns(PathBuf::from(name))
        } else {
            Target::Netns(Path::new("/var/run/netns").join(name))
        }
    }

    /// Moves the calling thread into the target's network namespace (for
    /// a thread that opens netlink sockets there; the process stays put).
    pub fn enter_thread(&self) -> Result<(), NftError> {
        let Target::Netns(path) = self else {
            return Ok(());
        };
        let netns = |reason: String| NftError::Netns {
            path: path.clone(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| netns(e.to_string()))?;
        // SAFETY: a plain syscall on an fd that stays open for the call; it
        // changes only the calling thread's network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(netns(std::io::Error::last_os_error().to_string()));
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        // Its own process group: terminal signals reach tortie only, and a
        // timeout can kill nft together with anything it started.
        cmd.process_group(0);
        cmd
    }

    /// Starts `cmd` in this network namespace. The child is spawned from a
    /// short-lived thread that entered the namespace (namespaces belong to
    /// threads, and a child inherits its spawning thread's), so that std
    /// can start it with posix_spawn (vfork). Entering the namespace in a
    /// `pre_exec` hook instead forces a fork, which copies the page tables
    /// of the whole process: measured here, 75 ms per spawn at 2 GB
    /// resident against 0.8 ms, paid by every nft call of `tortie run` at
    /// XL.
    fn spawn(&self, cmd: &mut Command) -> Result<Child, NftError> {
        let spawn = |cmd: &mut Command| cmd.spawn().map_err(|e| NftError::Spawn(e.to_string()));
        if *self == Target::Current {
            return spawn(cmd);
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter_thread()?;
                spawn(cmd)
            })
            .join()
            .unwrap_or_else(|_| Err(NftError::Spawn("the spawning thread panicked".into())))
        })
    }
}

/// What a finished nft call left behind.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

fn reader(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

fn kill_group(child: &mut Child) {
    // SAFETY: signalling the process group we created for this child.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.kill();
    let _ = child.wait();
}

/// A pidfd for `child`: readable once it exits, so the wait wakes at once
/// (no polling latency on the fast path). `None` on kernels without it.
fn pidfd(child: &Child) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    // SAFETY: a non-negative return is a file descriptor we now own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sleeps until `fd` is readable (the child exited) or `slice` passes.
fn nap(fd: Option<&OwnedFd>, slice: Duration) {
    match fd {
        Some(fd) => {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, a bounded timeout.
            unsafe { libc::poll(&mut p, 1, slice.as_millis().max(1) as i32) };
        }
        None => std::thread::sleep(slice.min(Duration::from_millis(1))),
    }
}

/// Waits for `child` until it exits, the deadline passes or stop is set
/// (checked at least every 20 ms).
fn wait_bounded(
    child: &mut Child,
    what: &'static str,
    deadline: Duration,
    limits: &Limits,
) -> Result<ExitStatus, NftError> {
    let start = Instant::now();
    let fd = pidfd(child);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => {
                kill_group(child);
                return Err(NftError::Spawn(e.to_string()));
            }
        }
        if limits.stopping() {
            kill_group(child);
            return Err(NftError::Interrupted { what });
        }
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            kill_group(child);
            return Err(NftError::Timeout {
                what,
                after: deadline,
            });
        }
        nap(fd.as_ref(), left.min(Duration::from_millis(20)));
    }
}

/// Runs nft with `args`, feeding `input` on stdin, within the deadline.
fn run_nft(
    target: &Target,
    args: &[&str],
    input: Option<&str>,
    what: &'static str,
    deadline: Duration,
    limits: &Limits,
) -> Result<Finished, NftError> {
    let mut cmd = target.command("nft");
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = target.spawn(&mut cmd)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // Written by a thread: a hung nft that never reads must not block us.
        // A write error means nft exited early; its status says why.
        let text = text.to_string();
        std::thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        });
    }
    let out = reader(child.stdout.take().expect("piped stdout"));
    let err = reader(child.stderr.take().expect("piped stderr"));
    let status = wait_bounded(&mut child, what, deadline, limits)?;
    // The pipes close when the process group is gone; bound the wait anyway.
    let grace = Duration::from_secs(2);
    let stdout = out.recv_timeout(grace).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.recv_timeout(grace).unwrap_or_default())
        .trim()
        .to_string();
    if let Some(signal) = status.signal() {
        return Err(NftError::Crashed {
            what,
            signal,
            stderr,
        });
    }
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

/// Sends one transaction to `nft -f -` with the default deadline.
pub fn run_transaction(target: &Target, text: &str) -> Result<(), NftError> {
    run_transaction_with(target, text, &Limits::default())
}

/// Sends one transaction to `nft -f -`. nft applies a file as a single
/// kernel transaction: all of it or none of it.
pub fn run_transaction_with(target: &Target, text: &str, limits: &Limits) -> Result<(), NftError> {
    let f = run_nft(
        target,
        &["-f", "-"],
        Some(text),
        "transaction",
        limits.transaction,
        limits,
    )?;
    if f.status.success() {
        Ok(())
    } else {
        Err(NftError::Rejected {
            stderr: if f.stderr.is_empty() {
                format!("nft exited with {} and said nothing", f.status)
            } else {
                f.stderr
            },
        })
    }
}

/// `nft -j list table inet tortie` with the default deadline.
pub fn list_table_json(target: &Target) -> Result<Option<String>, NftError> {
    list_table_json_with(target, &Limits::default())
}

/// `nft -j list table inet tortie`; `Ok(None)` when the table does not exist.
pub fn list_table_json_with(target: &Target, limits: &Limits) -> Result<Option<String>, NftError> {
    let f = run_nft(
        target,
        &["-j", "list", "table", TABLE_FAMILY, TABLE_NAME],
        None,
        "listing",
        limits.list,
        limits,
    )?;
    if f.status.success() {
        return Ok(Some(String::from_utf8_lossy(&f.stdout).into_owned()));
    }
    if f.stderr.contains("No such file or directory") {
        Ok(None)
    } else {
        Err(NftError::List {
            stderr: if f.stderr.is_empty() {
                format!("nft exited with {} and said nothing", f.status)
            } else {
                f.stderr
            },
        })
    }
}
