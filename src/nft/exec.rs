//! Running the `nft` binary: one transaction from stdin (`nft -f -`), or a
//! JSON listing of tortie's own table, optionally inside a named network
//! namespace (entered with setns in the child, so this process stays put).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::NftError;
use crate::compile::ir::{TABLE_FAMILY, TABLE_NAME};

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

    fn command(&self, program: &str) -> Result<Command, NftError> {
        let mut cmd = Command::new(program);
        if let Target::Netns(path) = self {
            let file = std::fs::File::open(path).map_err(|e| NftError::Netns {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            use std::os::fd::AsRawFd;
            let fd = file.as_raw_fd();
            // SAFETY: setns is async-signal-safe; the fd stays open because
            // `file` lives until after spawn (it is moved into the closure).
            unsafe {
                cmd.pre_exec(move || {
                    let _keep = &file;
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Ok(cmd)
    }
}

/// Sends one transaction to `nft -f -`. nft applies a file as a single
/// kernel transaction: all of it or none of it.
pub fn run_transaction(target: &Target, text: &str) -> Result<(), NftError> {
    let mut child = target
        .command("nft")?
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NftError::Spawn(e.to_string()))?;
    {
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A write error means nft exited early; its status says why.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NftError::Spawn(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Rejected {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `nft -j list table inet tortie`; `Ok(None)` when the table does not exist.
pub fn list_table_json(target: &Target) -> Result<Option<String>, NftError> {
    let out = target
        .command("nft")?
        .args(["-j", "list", "table", TABLE_FAMILY, TABLE_NAME])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NftError::Spawn(e.to_string()))?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No such file or directory") {
        Ok(None)
    } else {
        Err(NftError::List {
            stderr: stderr.trim().to_string(),
        })
    }
}
