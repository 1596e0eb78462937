//! Helpers for tests that run the real `tortie run`: one HTTP request to
//! its metrics/health endpoint, and atomic file writes into its datastore.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// `GET path` on `addr`: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    Some((code, body.unwrap_or_default()))
}

/// Writes a file atomically (as editors and config management do).
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits up to `bound` for the trio's verdicts to become `want`; returns
/// how long it took. `context` adds to the failure message (e.g. the
/// agent's log).
pub fn wait_verdicts(
    t: &super::Trio,
    want: (bool, bool),
    bound: Duration,
    what: &str,
    context: impl Fn() -> String,
) -> Duration {
    let start = std::time::Instant::now();
    loop {
        let got = t.verdicts();
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "{what}: still {got:?} after {bound:?}, wanted {want:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
