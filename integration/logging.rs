//! Logged packets with real traffic: the NFLOG backend writing RFC 5424
//! messages to a test syslog socket, logDropped, the rate limit, and the
//! kernel backend's Calico-compatible prefix in the kernel log.

mod support;

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::nflog::LogWorld;
use support::*;
use tortie::calc::LogBackend;
use tortie::logging::Sink;

/// A node with pods nginx, access, other (labelled `run: <name>`),
/// servers on nginx at TCP 80 and UDP 9999, and (with the NFLOG backend) a
/// syslog socket fed by the reader.
struct World(LogWorld);

impl std::ops::Deref for World {
    type Target = LogWorld;
    fn deref(&self) -> &LogWorld {
        &self.0
    }
}

fn world(tag: &str) -> World {
    World(LogWorld::new(tag, &[(Proto::Tcp, 80), (Proto::Udp, 9999)]))
}

impl World {
    /// Compiles `policies` for the node with `backend`, applies them, and
    /// (for NFLOG) starts the reader writing to a fresh test syslog socket.
    fn apply(&mut self, policies: &str, backend: LogBackend) {
        self.apply_to(policies, backend, None);
    }

    /// As `apply`, optionally with another syslog destination and a JSON file.
    fn apply_to(&mut self, policies: &str, backend: LogBackend, other: Option<(Sink, PathBuf)>) {
        let (cluster, rs) = self.0.apply(policies, |c| c.settings.log_backend = backend);
        if let LogBackend::Nflog { group } = backend {
            self.0.listen(&cluster, &rs, group, other);
        }
    }
}

fn seed(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/seeds")
            .join(name),
    )
    .unwrap()
}

#[test]
fn nflog_one_syslog_message_per_denied_attempt_naming_the_policy() {
    if !kernel::require_kernel("nflog") {
        return;
    }
    let mut w = world("nflog");
    let policies = format!(
        "{}---\n{}",
        seed("001-access-nginx-k8s.yaml").replace("extensions/v1beta1", "networking.k8s.io/v1"),
        seed("001-log-denied-packets.yaml")
    );
    w.apply(&policies, LogBackend::Nflog { group: 11 });
    for _ in 0..5 {
        assert!(!w.attempt("other", 80, Proto::Tcp));
    }
    let denied = w.messages(Duration::from_millis(800));
    assert_eq!(
        denied.len(),
        5,
        "one message per denied attempt: {denied:#?}"
    );
    eprintln!("example: {}", denied[0]);
    for m in &denied {
        assert!(m.starts_with("<134>1 "), "{m}");
        assert!(m.contains("action=\"Log\" kind=\"np\" namespace=\"default\" policy=\"log-denied-packets\" tier=\"default\" rule=\"ingress#0\" direction=\"ingress\" proto=\"tcp\" src=\"198.18.0.4\""), "{m}");
        assert!(m.contains("dst=\"198.18.0.2\" dport=\"80\""), "{m}");
        assert!(m.contains("endpoint=\"workload default/nginx\""), "{m}");
    }
    for _ in 0..5 {
        assert!(w.attempt("access", 80, Proto::Tcp));
    }
    let allowed = w.messages(Duration::from_millis(500));
    assert!(
        allowed.is_empty(),
        "allowed connections are not logged: {allowed:#?}"
    );
    assert_eq!(w.stats.dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn log_dropped_names_the_tier_of_an_end_of_tier_drop() {
    if !kernel::require_kernel("log_dropped") {
        return;
    }
    let mut w = world("ldrop");
    let policies = "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 10, logDropped: true}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: security.nginx}\nspec: {tier: security, selector: run == 'nginx', types: [Ingress], ingress: [{action: Allow, source: {selector: run == 'access'}}]}\n";
    w.apply(policies, LogBackend::Nflog { group: 12 });
    assert!(!w.attempt("other", 80, Proto::Tcp));
    assert!(w.attempt("access", 80, Proto::Tcp));
    let m = w.messages(Duration::from_millis(800));
    assert_eq!(m.len(), 1, "{m:#?}");
    eprintln!("example: {}", m[0]);
    assert!(m[0].starts_with("<132>1 "), "drops are warnings: {}", m[0]);
    assert!(
        m[0].contains(" DROP [tortie@32473 action=\"Drop\" tier=\"security\" rule=\"end of tier\""),
        "{}",
        m[0]
    );
    assert!(m[0].contains("src=\"198.18.0.4\""), "{}", m[0]);
    assert!(
        m[0].contains("endpoint=\"workload default/nginx\""),
        "the endpoint whose chain dropped: {}",
        m[0]
    );
    assert!(
        m[0].contains("dropped by end of tier (tier security)"),
        "{}",
        m[0]
    );
}

#[test]
fn the_rate_limit_caps_a_flood() {
    if !kernel::require_kernel("rate") {
        return;
    }
    let mut w = world("rate");
    let policies = "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {logActionRateLimit: 5/second, logActionRateLimitBurst: 5}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: log-and-deny-udp}\nspec: {selector: run == 'nginx', types: [Ingress], ingress: [{action: Log, protocol: UDP}, {action: Deny, protocol: UDP}, {action: Allow}]}\n";
    w.apply(policies, LogBackend::Nflog { group: 13 });
    let from = w.node.pod("default", "other").ns.path();
    let to: IpAddr = w.node.pod("default", "nginx").ip4;
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        enter_netns(&from);
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..400u32 {
            let _ = s.send_to(&i.to_be_bytes(), (to, 9999));
            std::thread::sleep(Duration::from_micros(2500));
        }
    });
    sender.join().unwrap();
    let flood = started.elapsed().as_secs_f64();
    let m = w.messages(Duration::from_millis(800));
    let cap = 5.0 + 5.0 * (flood + 0.8) + 1.0;
    eprintln!(
        "{} messages for 400 packets in {flood:.2} s (cap {cap:.0})",
        m.len()
    );
    assert!(m.len() >= 5, "the burst gets through: {}", m.len());
    assert!(
        (m.len() as f64) <= cap,
        "{} messages exceed the rate limit (cap {cap:.0})",
        m.len()
    );
    // The flood was still denied: rate limiting never turns a drop into an accept.
    assert!(!w.attempt("other", 9999, Proto::Udp));
}

#[test]
fn udp_syslog_and_json_lines() {
    if !kernel::require_kernel("udp_json") {
        return;
    }
    let mut w = world("udp");
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let json = std::env::temp_dir().join(format!("tortie-log-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&json);
    let sink = Sink::Udp(receiver.local_addr().unwrap());
    let policies = "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {logDropped: true}\n---\nkind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: isolate, namespace: default}\nspec: {podSelector: {matchLabels: {run: nginx}}, policyTypes: [Ingress]}\n";
    w.apply_to(
        policies,
        LogBackend::Nflog { group: 14 },
        Some((sink, json.clone())),
    );
    assert!(!w.attempt("other", 80, Proto::Tcp));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + Duration::from_millis(800);
    while Instant::now() < end {
        if let Ok(n) = receiver.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains("action=\"Drop\" tier=\"default\" rule=\"end of tier\""),
        "{}",
        got[0]
    );
    let lines = std::fs::read_to_string(&json).unwrap();
    let first: serde_json::Value =
        serde_json::from_str(lines.lines().next().expect("a JSON line")).unwrap();
    assert_eq!(first["action"], "Drop");
    assert_eq!(first["endpoint"], "workload default/nginx");
    assert_eq!(first["src"], "198.18.0.4");
    let _ = std::fs::remove_file(&json);
}

/// Sets a sysctl for the test and restores it after, even on failure.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let old = std::fs::read_to_string(path).unwrap().trim().to_string();
        std::fs::write(path, value).unwrap();
        Sysctl { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, &self.old);
    }
}

#[test]
fn kernel_backend_lines_carry_the_calico_prefix() {
    if !kernel::require_kernel("kernel_log") {
        return;
    }
    let mut w = world("klog");
    let policies = format!(
        "{}---\n{}",
        seed("001-access-nginx-k8s.yaml").replace("extensions/v1beta1", "networking.k8s.io/v1"),
        seed("001-log-denied-packets.yaml")
    );
    w.apply(&policies, LogBackend::Kernel);
    let _all_netns = Sysctl::set("/proc/sys/net/netfilter/nf_log_all_netns", "1");
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .expect("open /dev/kmsg");
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    kmsg.seek(SeekFrom::End(0))
        .expect("seek to the end of the kernel log");
    assert!(!w.attempt("other", 80, Proto::Tcp));
    let mut found = Vec::new();
    let end = Instant::now() + Duration::from_secs(2);
    let mut buf = vec![0u8; 8192];
    while Instant::now() < end && found.is_empty() {
        match kmsg.read(&mut buf) {
            Ok(n) => {
                let line = String::from_utf8_lossy(&buf[..n]).into_owned();
                if line.contains("calico-packet: ") && line.contains("SRC=198.18.0.4") {
                    found.push(line);
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert!(
        !found.is_empty(),
        "no `calico-packet: ` line for the denied packet in the kernel log"
    );
    eprintln!("example: {}", found[0].trim());
    assert!(
        found[0].contains("DST=198.18.0.2") && found[0].contains("DPT=80"),
        "{}",
        found[0]
    );
}

/// NFLOG messages reach the log within tens of milliseconds, not after the
/// kernel's default batching (100 packets or 1 s): tortie sets the group's
/// queue threshold and flush timeout when it binds.
#[test]
fn a_denied_packet_is_logged_without_the_kernels_one_second_batching() {
    if !kernel::require_kernel("nflog") {
        return;
    }
    let mut w = world("nflate");
    let policies = format!(
        "{}---\n{}",
        seed("001-access-nginx-k8s.yaml").replace("extensions/v1beta1", "networking.k8s.io/v1"),
        seed("001-log-denied-packets.yaml")
    );
    w.apply(&policies, LogBackend::Nflog { group: 12 });
    let start = Instant::now();
    assert!(!w.attempt("other", 80, Proto::Tcp));
    let mut first = None;
    while first.is_none() && start.elapsed() < Duration::from_secs(3) {
        if !w.messages(Duration::from_millis(5)).is_empty() {
            first = Some(start.elapsed());
        }
    }
    let first = first.expect("the denied attempt is logged");
    eprintln!("logged {first:?} after the attempt began (its probe waits 250 ms)");
    assert!(
        first < Duration::from_millis(700),
        "logged {first:?} after the attempt began"
    );
}
