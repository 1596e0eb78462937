//! `tortie run` against a misbehaving `nft`: a fake placed first on PATH
//! that hangs while a flag file exists, or kills itself with SIGSEGV, and
//! otherwise runs the real nft. Checks: a change made during a hang is in
//! force soon after nft recovers, readiness is false meanwhile, SIGTERM is
//! honoured within 2 s even mid-hang, a crashing nft is retried at a
//! bounded rate, and a second agent on the same namespace is refused.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const ALLOW_GOOD: &str = "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: p, namespace: default}\nspec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {matchLabels: {app: good}}}]}]}\n";
const ALLOW_BOTH: &str = "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: p, namespace: default}\nspec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {}}]}]}\n";

/// nft deadline given to the agent in these tests.
const DEADLINE: Duration = Duration::from_secs(2);

/// A test's files: the datastore, the fake nft, its flag files and logs.
struct World {
    t: Trio,
    root: PathBuf,
}

impl World {
    fn new(tag: &str) -> World {
        let t = Trio::new(tag);
        let root = std::env::temp_dir().join(format!("tortie-fnft-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["data", "bin"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("data/cluster.yaml"), t.cluster_yaml()).unwrap();
        write(&root.join("data/policy.yaml"), ALLOW_GOOD);
        let real = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("the real nft");
        let r = root.display();
        let script = format!(
            "#!/bin/sh\nulimit -c 0\necho \"$$ $*\" >> {r}/calls\nif [ -e {r}/hang ]; then sleep 600; fi\nif [ -e {r}/crash ]; then kill -SEGV $$; fi\nexec {real} \"$@\"\n"
        );
        let fake = root.join("bin/nft");
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        World { t, root }
    }

    fn flag(&self, name: &str, on: bool) {
        let p = self.root.join(name);
        if on {
            std::fs::write(p, "").unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }

    /// Calls the fake nft has seen: `(pid, args)` per line.
    fn calls(&self) -> Vec<(i32, String)> {
        std::fs::read_to_string(self.root.join("calls"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (pid, args) = l.split_once(' ')?;
                Some((pid.parse().ok()?, args.to_string()))
            })
            .collect()
    }

    /// Waits (at most 5 s) until nft has been called more than `seen` times.
    fn wait_for_a_new_call(&self, seen: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.calls().len() == seen {
            assert!(Instant::now() < deadline, "no nft call after the change");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn policy(&self, text: &str) {
        write(&self.root.join("data/policy.yaml"), text);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("agent.log")).unwrap_or_default()
    }

    /// Waits up to `bound` for the verdicts; returns how long it took.
    fn until_verdicts(&self, want: (bool, bool), bound: Duration, what: &str) -> Duration {
        support::agent::wait_verdicts(&self.t, want, bound, what, || self.log())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn write(path: &Path, text: &str) {
    support::agent::write_atomically(path, text)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The agent, with the fake nft first on PATH; killed on drop.
struct Agent {
    child: Child,
    addr: String,
}

impl Agent {
    fn spawn(w: &World, port: u16, log: &str) -> Agent {
        Agent::spawn_with(w, port, log, |_| {})
    }

    fn spawn_with(w: &World, port: u16, log: &str, tweak: impl FnOnce(&mut Command)) -> Agent {
        let path = format!(
            "{}:{}",
            w.root.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(w.root.join(log)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tortie"));
        tweak(&mut cmd);
        let child = cmd
            .args(["run", "--node", "node1", "--netns", &w.t.node.ns.name])
            .args(["--refresh-interval", "60s", "--log-backend", "kernel"])
            .args(["--nft-timeout", "2s", "--nft-list-timeout", "2s"])
            .arg(format!("--lock-dir={}", w.root.join("lock").display()))
            .arg(format!("--datastore=dir:{}", w.root.join("data").display()))
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .env("PATH", path)
            // These tests fault nft: every rule change must run it.
            .env(tortie::nft::RULES_OVER_NETLINK, "0")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tortie run");
        Agent {
            child,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    fn start(w: &World) -> Agent {
        Agent::ready(w, Agent::spawn(w, free_port(), "agent.log"))
    }

    fn ready(w: &World, a: Agent) -> Agent {
        let deadline = Instant::now() + Duration::from_secs(20);
        while a.code("/readyz") != Some(200) {
            assert!(
                Instant::now() < deadline,
                "tortie run did not become ready:\n{}",
                w.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        support::agent::http_get(&self.addr, path)
    }

    fn code(&self, path: &str) -> Option<u16> {
        self.get(path).map(|(c, _)| c)
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.get("/metrics").expect("metrics");
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits (at most `bound`) for `path` to answer `code`.
    fn until_code(&self, path: &str, code: u16, bound: Duration) -> Duration {
        let start = Instant::now();
        while self.code(path) != Some(code) {
            assert!(
                start.elapsed() < bound,
                "{path} is not {code} after {bound:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        start.elapsed()
    }

    /// SIGTERM; returns how long the agent took to exit, and whether it
    /// exited cleanly.
    fn terminate(&mut self, bound: Duration) -> (Duration, bool) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (start.elapsed(), status.success());
            }
            assert!(start.elapsed() < bound, "no exit {bound:?} after SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn a_hung_nft_times_out_and_the_change_lands_after_recovery() {
    if !kernel::require_kernel("faults_nft_hang") {
        return;
    }
    let w = World::new("hang");
    let mut a = Agent::start(&w);
    assert_eq!(w.t.verdicts(), (true, false), "initial ruleset");

    // nft hangs; a change arrives meanwhile.
    w.flag("hang", true);
    w.policy(ALLOW_BOTH);
    // Not ready once the change has waited longer than the deadline.
    let t = a.until_code("/readyz", 503, DEADLINE + Duration::from_secs(2));
    eprintln!("MEASURED not ready {t:?} after the hang began");
    assert_eq!(
        w.t.verdicts(),
        (true, false),
        "the previous ruleset stays in force"
    );
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(a.code("/readyz"), Some(503), "still not ready while hung");
    assert_eq!(
        a.code("/readiness"),
        Some(503),
        "Felix's path says the same"
    );
    assert_eq!(a.code("/livez"), Some(200), "the loop is alive");
    assert_eq!(a.code("/liveness"), Some(200), "Felix's path says the same");
    assert_eq!(a.metric("felix_resync_state"), 2.0, "follows readiness");
    let failures = a.metric("felix_int_dataplane_failures");
    let timeouts = a.metric("tortie_dataplane_failures_total{cause=\"timeout\"}");
    assert!(failures >= 3.0 && timeouts >= 3.0, "{failures} {timeouts}");
    assert!(w.log().contains("timeout"), "{}", w.log());
    // Every hung nft was killed with its process group (its `sleep` too).
    let hung: Vec<i32> = w.calls().iter().map(|(p, _)| *p).collect();
    std::thread::sleep(DEADLINE);
    let stuck: Vec<_> = hung[..hung.len() - 1]
        .iter()
        .filter(|p| alive(**p))
        .collect();
    assert!(stuck.is_empty(), "nft processes left behind: {stuck:?}");

    // nft recovers: the change is in force within deadline + backoff. The
    // call in flight may still time out (one deadline); the retry after it
    // waits at most the backoff step after n+1 failures, 200 ms × 2^n; 2 s
    // more for the apply itself and the probes.
    let n = a.metric("tortie_dataplane_consecutive_failures") as u32;
    w.flag("hang", false);
    let step = Duration::from_millis(200) * 2u32.pow(n.min(7));
    let bound = DEADLINE + step + Duration::from_secs(2);
    let t = w.until_verdicts((true, true), bound, "change after recovery");
    eprintln!("MEASURED change in force {t:?} after nft recovered (bound {bound:?})");
    let t = a.until_code("/readyz", 200, Duration::from_secs(2));
    eprintln!("ready again {t:?} after the change was in force");
    assert_eq!(a.metric("felix_resync_state"), 3.0);

    // SIGTERM during a hang is honoured within 2 s.
    w.flag("hang", true);
    w.policy(ALLOW_GOOD);
    w.wait_for_a_new_call(w.calls().len());
    std::thread::sleep(Duration::from_millis(300));
    let (t, clean) = a.terminate(Duration::from_secs(2));
    eprintln!("MEASURED exit {t:?} after SIGTERM during a hung nft");
    assert!(clean, "clean exit on SIGTERM:\n{}", w.log());
    let (pid, _) = *w.calls().last().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!alive(pid), "the hung nft {pid} was killed on stop");
    assert!(w.log().contains("stopping; the ruleset stays in force"));
    // The abandoned transaction changed nothing: the last ruleset stays.
    assert_eq!(w.t.verdicts(), (true, true));
}

#[test]
fn a_crashing_nft_is_retried_at_a_bounded_rate() {
    if !kernel::require_kernel("faults_nft_crash") {
        return;
    }
    let w = World::new("crash");
    let a = Agent::start(&w);
    w.flag("crash", true);
    w.policy(ALLOW_BOTH);
    let before = w.calls().len();
    let window = Duration::from_secs(20);
    std::thread::sleep(window);
    let calls = w.calls().len() - before;
    eprintln!(
        "MEASURED {calls} nft calls in {window:?} while nft crashes ({:.0} per minute)",
        calls as f64 * 60.0 / window.as_secs_f64()
    );
    // Backoff from 200 ms doubling (delays in the upper half of each step):
    // at most 9 retries fit in 20 s; 15 leaves room for counter reads.
    assert!((3..=15).contains(&calls), "{calls} calls in {window:?}");
    let log = w.log();
    assert!(log.contains("crashed (signal 11)"), "{log}");
    assert!(log.contains("ladder: trying a full rebuild"), "{log}");
    assert!(a.metric("tortie_ladder_steps_total{step=\"rebuild\"}") >= 1.0);
    assert!(a.metric("tortie_ladder_steps_total{step=\"replace\"}") >= 1.0);
    assert!(a.metric("tortie_dataplane_failures_total{cause=\"crashed\"}") >= 5.0);
    assert!(
        log.contains("ladder: trying a delete and re-create"),
        "{log}"
    );
    assert_eq!(w.t.verdicts(), (true, false), "the old ruleset stays");
    // Recovery: the next retry (its step is at most 30 s) applies the change.
    w.flag("crash", false);
    let t = w.until_verdicts((true, true), Duration::from_secs(32), "after crashes");
    eprintln!("MEASURED change in force {t:?} after nft stopped crashing");
}

#[test]
fn a_second_agent_on_the_same_namespace_is_refused() {
    if !kernel::require_kernel("faults_nft_lock") {
        return;
    }
    let w = World::new("lock");
    let a = Agent::start(&w);
    let mut b = Agent::spawn(&w, free_port(), "second.log");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = b.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the second agent is still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("MEASURED second agent exited after {:?}", start.elapsed());
    assert!(!status.success());
    let err = std::fs::read_to_string(w.root.join("second.log")).unwrap();
    let pid = a.child.id();
    assert!(
        err.contains("another tortie agent")
            && err.contains(&format!("(pid {pid})"))
            && err.contains("lock file"),
        "{err}"
    );
    assert_eq!(
        a.code("/readyz"),
        Some(200),
        "the first agent is unaffected"
    );
}

#[test]
fn a_refresh_interval_below_one_second_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_tortie"))
        .args(["run", "--node", "n1", "--refresh-interval", "1ms"])
        .args(["--datastore", "dir:/nonexistent", "--metrics-addr", "none"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--refresh-interval `1ms` is below the minimum of 1s"),
        "{err}"
    );
}

#[test]
fn ctrl_c_to_the_process_group_reaches_only_tortie() {
    if !kernel::require_kernel("faults_nft_ctrl_c") {
        return;
    }
    let w = World::new("intr");
    // The agent leads its own process group, as a shell's foreground job does.
    let a = Agent::spawn_with(&w, free_port(), "agent.log", |c| {
        use std::os::unix::process::CommandExt;
        c.process_group(0);
    });
    let mut a = Agent::ready(&w, a);
    w.flag("hang", true);
    w.policy(ALLOW_BOTH);
    w.wait_for_a_new_call(w.calls().len());
    std::thread::sleep(Duration::from_millis(300));
    let (pid, _) = *w.calls().last().unwrap();
    // Ctrl-C: SIGINT to the whole foreground group. nft, in a group of its
    // own, does not get it; tortie does, kills nft and exits cleanly.
    let start = Instant::now();
    // SAFETY: signalling the process group our child leads.
    unsafe { libc::kill(-(a.child.id() as i32), libc::SIGINT) };
    let status = loop {
        if let Some(s) = a.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "no exit after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!(
        "MEASURED exit {:?} after Ctrl-C during a hung nft",
        start.elapsed()
    );
    assert!(status.success(), "{status}\n{}", w.log());
    let log = w.log();
    assert!(
        !log.contains("crashed"),
        "nft must not have been hit: {log}"
    );
    assert!(!log.contains("apply failed"), "{log}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!alive(pid), "the hung nft {pid} was killed on stop");
    assert_eq!(w.t.verdicts(), (true, false), "the last ruleset stays");
}
