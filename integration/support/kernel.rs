//! Shared by every test that needs the real kernel: whether it may run here,
//! and running `nft` inside a throwaway network namespace.

use std::path::Path;
use std::process::Command;

/// Why kernel tests cannot run on this machine, if they cannot.
pub fn kernel_unavailable() -> Option<String> {
    let nft = Command::new("nft").arg("--version").output();
    if !matches!(nft, Ok(ref o) if o.status.success()) {
        return Some("the `nft` binary is not installed (apt-get install nftables)".into());
    }
    let probe = Command::new("unshare").args(["-n", "true"]).output();
    if !matches!(probe, Ok(ref o) if o.status.success()) {
        return Some("cannot create a network namespace (needs root or CAP_SYS_ADMIN)".into());
    }
    None
}

/// Fails the test when the kernel is not usable, unless the developer has
/// explicitly opted out with TORTIE_ALLOW_SKIP=1 (never under CI=true).
/// Returns false when the test should stop early (opted-out skip).
pub fn require_kernel(test: &str) -> bool {
    let Some(why) = kernel_unavailable() else {
        return true;
    };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let opt_out = std::env::var("TORTIE_ALLOW_SKIP").is_ok_and(|v| v == "1");
    if opt_out && !ci {
        eprintln!("SKIPPED {test}: {why} (TORTIE_ALLOW_SKIP=1)");
        return false;
    }
    panic!(
        "{test} needs the kernel: {why}. Run as root, or set TORTIE_ALLOW_SKIP=1 outside CI to skip."
    );
}

/// `nft -c -f FILE` in a fresh network namespace: the real parser and the
/// kernel's checks, without touching any namespace in use.
pub fn nft_check(file: &Path) -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["-n", "nft", "-c", "-f"])
        .arg(file)
        .output()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
