//! `tortie run` as a process: a directory datastore programming a node
//! namespace. Edits reach the kernel within a second, an invalid edit keeps
//! the previous rules, a restart opens no window, and /metrics says so.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

/// The daemon process; killed on drop so a failing test leaves nothing.
struct Daemon {
    child: Child,
    metrics: String,
}

impl Daemon {
    fn start(dir: &Path, netns: &str, port: u16) -> Daemon {
        Daemon::start_as(dir, netns, port, "node1", Stdio::inherit())
    }

    /// As `start`, for node `node`, the agent's log going to `stderr`.
    fn start_as(dir: &Path, netns: &str, port: u16, node: &str, stderr: Stdio) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_tortie"))
            .args([
                "run",
                "--node",
                node,
                "--netns",
                netns,
                "--refresh-interval",
                "1s",
            ])
            .arg(format!("--datastore=dir:{}", dir.display()))
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start tortie run");
        let d = Daemon {
            child,
            metrics: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.get("/readyz").map(|(code, _)| code) != Some(200) {
            assert!(Instant::now() < deadline, "tortie run did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        support::agent::http_get(&self.metrics, path)
    }

    fn metric(&self, name_with_labels: &str) -> f64 {
        let (_, body) = self.get("/metrics").expect("metrics");
        sample(&body, name_with_labels)
            .unwrap_or_else(|| panic!("no metric {name_with_labels} in:\n{body}"))
    }

    /// The series' value, or 0 while it is not exported yet.
    fn metric_or_zero(&self, name_with_labels: &str) -> f64 {
        let (_, body) = self.get("/metrics").expect("metrics");
        sample(&body, name_with_labels).unwrap_or(0.0)
    }

    fn stop(mut self) {
        // SIGTERM: the daemon exits and leaves the rules in force.
        let pid = self.child.id() as i32;
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "tortie run exited with {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tortie run did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const ALLOW_GOOD: &str = "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: p, namespace: default}\nspec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {matchLabels: {app: good}}}]}]}\n";
const ALLOW_BOTH: &str = "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: p, namespace: default}\nspec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {}}]}]}\n";
const DENY_GOOD: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: deny-good}\nspec: {selector: app == 'server', order: 1, types: [Ingress], ingress: [{action: Deny, source: {selector: app == 'good'}}]}\n";

fn write(path: &Path, text: &str) {
    support::agent::write_atomically(path, text)
}

struct World {
    t: Trio,
    dir: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn world(tag: &str) -> World {
    let t = Trio::new(tag);
    let dir = std::env::temp_dir().join(format!("tortie-daemon-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cluster.yaml"), t.cluster_yaml()).unwrap();
    World { t, dir }
}

/// Waits (at most 1 s) for the verdicts to become `want`; returns how long it took.
fn within_a_second(w: &World, want: (bool, bool), what: &str) -> Duration {
    support::agent::wait_verdicts(&w.t, want, Duration::from_secs(1), what, String::new)
}

#[test]
fn edits_reach_the_kernel_and_invalid_edits_keep_the_previous_rules() {
    if !kernel::require_kernel("daemon_edits") {
        return;
    }
    let w = world("dmn");
    let policy = w.dir.join("policy.yaml");
    write(&policy, ALLOW_GOOD);
    let d = Daemon::start(&w.dir, &w.t.node.ns.name, free_port());
    assert_eq!(w.t.verdicts(), (true, false), "initial ruleset");

    write(&policy, ALLOW_BOTH);
    let t = within_a_second(&w, (true, true), "edit a file");
    eprintln!("edit in force after {t:?}");
    let extra = w.dir.join("deny-good.yaml");
    write(&extra, DENY_GOOD);
    within_a_second(&w, (false, true), "add a file");
    std::fs::remove_file(&extra).unwrap();
    within_a_second(&w, (true, true), "delete a file");

    // An invalid edit: reported, and the file's previous content stays.
    write(
        &policy,
        "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: p, namespace: default}\nspec: {podSelector: {matchLabels: {app: server}}, ingress: [{frm: []}]}\n",
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        w.t.verdicts(),
        (true, true),
        "the previous content of the broken file stays in force"
    );
    assert!(d.metric("tortie_invalid_files_kept_total") >= 1.0);
    assert!(d.metric("tortie_invalid_input_total{stage=\"decode\"}") >= 1.0);
    // The gauge of problems in force counts the broken file, and falls
    // once it is fixed.
    let now_invalid = "tortie_invalid_inputs{stage=\"decode\"}";
    assert_eq!(d.metric(now_invalid), 1.0);
    write(&policy, ALLOW_GOOD);
    within_a_second(&w, (true, false), "fix the file");
    let (_, body) = d.get("/metrics").expect("metrics");
    assert!(
        !body
            .lines()
            .any(|l| l.starts_with("tortie_invalid_inputs{")),
        "no problem in force after the fix:\n{body}"
    );

    // Metrics with sane values.
    assert_eq!(d.metric("felix_resync_state"), 3.0);
    assert_eq!(d.metric("felix_active_local_endpoints"), 3.0);
    assert_eq!(d.metric("felix_active_local_policies"), 1.0);
    assert!(d.metric("felix_nft_rules") > 10.0);
    assert!(d.metric("tortie_applies_total") >= 5.0);
    assert!(d.metric("felix_int_dataplane_apply_time_seconds_count") >= 5.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = d.metric("tortie_last_successful_apply_timestamp_seconds");
    assert!(
        last <= now && now - last < 60.0,
        "last apply {last}, now {now}"
    );
    assert_eq!(d.metric("felix_int_dataplane_failures"), 0.0);
    // The node is configured right: its pods and their interfaces are there.
    assert_eq!(d.metric("tortie_misconfigured{check=\"wrong_node\"}"), 0.0);
    assert_eq!(
        d.metric("tortie_misconfigured{check=\"no_interfaces\"}"),
        0.0
    );
    // Per-policy and per-rule hits come from rule counters, read on their
    // own thread every refresh (here 1 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    let series = "tortie_policy_packets{tier=\"default\",kind=\"knp\",namespace=\"default\",policy=\"p\",action=\"Allow\"}";
    let rule = "tortie_rule_packets{tier=\"default\",kind=\"knp\",namespace=\"default\",policy=\"p\",direction=\"ingress\",rule=\"0\",action=\"Allow\"}";
    while d.metric_or_zero(series) < 1.0 || d.metric_or_zero(rule) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no hits counted for the allow rule"
        );
        w.t.verdicts();
        std::thread::sleep(Duration::from_millis(200));
    }
    // The whole exposition parses as Prometheus text, has the process
    // collector's series, and counts the denied probes' end-of-tier drops.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = d.get("/metrics").expect("metrics");
        let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
            .expect("Prometheus text format");
        let find = |name: &str, reason: Option<&str>| {
            scrape.samples.iter().find(|x| {
                x.metric == name && reason.is_none_or(|r| x.labels.get("reason") == Some(r))
            })
        };
        assert!(
            find("process_resident_memory_bytes", None).is_some(),
            "{body}"
        );
        let drop = find("tortie_implicit_drop_packets", Some("end of tier default"));
        // The tier walk's owner is found from the jump targets in the
        // kernel's rule dump.
        if let Some(x) = drop {
            let endpoint = x.labels.get("endpoint").unwrap_or_default();
            assert!(endpoint.starts_with("workload "), "{endpoint:?}\n{body}");
        }
        let drops = drop
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v) => v,
                _ => 0.0,
            })
            .unwrap_or(0.0);
        if drops >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no implicit drop counted:\n{body}"
        );
        w.t.verdicts();
        std::thread::sleep(Duration::from_millis(200));
    }
    // Drift: a hand edit is repaired by the next refresh (1 s here).
    w.t.node.ns.exec(&[
        "nft",
        "flush",
        "chain",
        "inet",
        "tortie",
        "filter-pi-knp/default/p",
    ]);
    assert_eq!(w.t.verdicts(), (false, false));
    let deadline = Instant::now() + Duration::from_secs(3);
    while w.t.verdicts() != (true, false) {
        assert!(Instant::now() < deadline, "drift was not repaired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.metric("tortie_drift_repairs_total") >= 1.0);
    d.stop();
    // SIGTERM left the rules in force.
    assert_eq!(w.t.verdicts(), (true, false));
}

#[test]
fn a_restart_opens_no_window() {
    if !kernel::require_kernel("daemon_restart") {
        return;
    }
    let w = world("rst");
    write(&w.dir.join("policy.yaml"), ALLOW_GOOD);
    let port = free_port();
    let mut d = Daemon::start(&w.dir, &w.t.node.ns.name, port);
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let wrong = Arc::new(AtomicUsize::new(0));
    let to = w.t.node.pod("default", "server").ip4;
    let mut probers = Vec::new();
    for (ns, expect) in [
        (w.t.node.pod("default", "good").ns.path(), true),
        (w.t.node.pod("default", "bad").ns.path(), false),
    ] {
        let (stop, attempts, wrong) = (stop.clone(), attempts.clone(), wrong.clone());
        probers.push(std::thread::spawn(move || {
            enter_netns(&ns);
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let got = probe_once(
                    Proto::Tcp,
                    to,
                    80,
                    Duration::from_millis(if expect { 900 } else { 200 }),
                );
                attempts.fetch_add(1, Ordering::Relaxed);
                if got != expect {
                    wrong.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        // Stop (the rules stay in force), then start again: the new
        // process adopts the table in the kernel instead of rebuilding it.
        d.stop();
        std::thread::sleep(Duration::from_millis(200));
        d = Daemon::start(&w.dir, &w.t.node.ns.name, port);
    }
    d.stop();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for p in probers {
        p.join().unwrap();
    }
    let (a, bad) = (
        attempts.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed),
    );
    eprintln!("restarts: {a} probes, {bad} wrong");
    assert!(a > 50);
    assert_eq!(bad, 0, "wrong verdicts across restarts");
}

#[test]
fn a_mistyped_node_name_is_warned_about_with_the_closest_names_and_a_metric() {
    if !kernel::require_kernel("daemon_wrong_node") {
        return;
    }
    let w = world("wnode");
    write(&w.dir.join("policy.yaml"), ALLOW_GOOD);
    let log_path = w.dir.with_extension("log");
    let log = std::fs::File::create(&log_path).unwrap();
    // `Node1` for `node1`: no endpoint here, three on node1.
    let d = Daemon::start_as(&w.dir, &w.t.node.ns.name, free_port(), "Node1", log.into());
    let series = "tortie_misconfigured{check=\"wrong_node\"}";
    assert_eq!(d.metric(series), 1.0, "the warning's gauge at start");
    assert_eq!(d.metric("felix_active_local_endpoints"), 0.0);
    let text = std::fs::read_to_string(&log_path).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("no endpoint is on this node"))
        .unwrap_or_else(|| panic!("no wrong-node warning in:\n{text}"));
    assert!(line.contains("e.g. node1"), "{line}");
    assert!(
        line.contains("check=\"wrong_node\"") || line.contains("check=wrong_node"),
        "{line}"
    );
    // An endpoint on Node1 appears: on the next recompute the warning is
    // resolved and the gauge falls.
    let wep = "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: node1-k8s-w-eth0, namespace: default}\nspec: {node: Node1, interfaceName: caliw0000001, ipNetworks: [198.18.9.9/32]}\n";
    write(&w.dir.join("wep.yaml"), wep);
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.metric(series) != 0.0 {
        assert!(Instant::now() < deadline, "the gauge did not fall");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("resolved"), "{text}");
    d.stop();
    let _ = std::fs::remove_file(&log_path);
}

/// The value of the sample named exactly `name_with_labels` in `body`.
fn sample(body: &str, name_with_labels: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name_with_labels) && l[name_with_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
