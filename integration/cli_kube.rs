//! `tortie run --datastore kubernetes` fails fast on configuration
//! mistakes: the real binary, with no in-cluster environment, exits
//! non-zero within 5 s saying what is missing and what to do — for a
//! KUBECONFIG naming a missing file, no configuration at all, and an API
//! server (a tiny HTTP stand-in on 127.0.0.1) answering 401 or 403.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tortie::sandbox::Netns;

struct Outcome {
    code: Option<i32>,
    took: Duration,
    stderr: String,
}

/// Runs the agent against a throwaway namespace with `env`; kills it
/// after 10 s if it is still running.
fn run_agent(env: &[(&str, &str)], tag: &str) -> Outcome {
    let ns = Netns::new(tag);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tortie"));
    cmd.args(["run", "--datastore", "kubernetes", "--node", "n1"])
        .args([
            "--metrics-addr",
            "none",
            "--log-backend",
            "kernel",
            "--syslog",
            "none",
        ])
        .args(["--netns", &ns.name])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("start tortie");
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Outcome { code, took, stderr }
}

fn assert_fast_failure(o: &Outcome, says: &[&str]) {
    assert!(
        o.took < Duration::from_secs(5),
        "took {:?}: {}",
        o.took,
        o.stderr
    );
    assert!(
        matches!(o.code, Some(c) if c != 0),
        "exit {:?}: {}",
        o.code,
        o.stderr
    );
    for s in says {
        assert!(o.stderr.contains(s), "stderr lacks {s:?}: {}", o.stderr);
    }
    eprintln!("failed after {:?} with: {}", o.took, o.stderr.trim());
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tortie-cli-kube-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_kubeconfig_that_does_not_exist_fails_within_5_s() {
    let o = run_agent(&[("KUBECONFIG", "/nonexistent/tortie/kubeconfig")], "kc");
    assert_fast_failure(
        &o,
        &[
            "KUBECONFIG names /nonexistent/tortie/kubeconfig, which does not exist",
            "point KUBECONFIG at a kubeconfig file",
        ],
    );
}

#[test]
fn no_configuration_at_all_fails_within_5_s() {
    let home = temp_dir("home");
    let o = run_agent(&[("HOME", home.to_str().unwrap())], "none");
    let _ = std::fs::remove_dir_all(&home);
    assert_fast_failure(
        &o,
        &[
            "no Kubernetes configuration",
            "KUBERNETES_SERVICE_HOST is not set",
            "set KUBECONFIG",
        ],
    );
}

/// An HTTP server on 127.0.0.1 that answers every request with `code`
/// until dropped (bounded: it stops by itself after 20 s).
struct StatusServer {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl StatusServer {
    fn start(code: u16, reason: &'static str) -> StatusServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(20);
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        answer(&mut s, code, reason);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        StatusServer { port, stop }
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(s: &mut std::net::TcpStream, code: u16, reason: &str) {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let body = format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"stand-in says {reason}","reason":"{reason}","code":{code}}}"#
    );
    let _ = write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn kubeconfig(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\n\
         users:\n- name: u\n  user:\n    token: not-a-valid-token\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
         current-context: x\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn rejected_credentials_and_missing_rbac_fail_within_5_s() {
    for (code, reason, says) in [
        (401, "Unauthorized", "rejected tortie's credentials"),
        (403, "Forbidden", "tortie may not list"),
    ] {
        let server = StatusServer::start(code, reason);
        let dir = temp_dir(reason);
        let kc = kubeconfig(&dir, server.port);
        let o = run_agent(&[("KUBECONFIG", kc.to_str().unwrap())], &format!("c{code}"));
        let _ = std::fs::remove_dir_all(&dir);
        assert_fast_failure(&o, &[says, &format!("{code} {reason}")]);
    }
}
