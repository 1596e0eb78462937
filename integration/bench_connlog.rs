//! Connection-log throughput: `cargo bench --bench connlog` (root; network
//! namespaces). A client pod sends UDP datagrams, each a new connection
//! (fresh source/destination port pair), to a server pod at increasing
//! paced rates for five seconds each (`TORTIE_CONNLOG_SECS`); every connection walks the shadow
//! view of both pods and is logged (egress + ingress paired into one
//! record) through NFLOG → reader → bounded queue → syslog writer (a unix
//! socket read by this program). Per step: connections sent, records
//! written, and where the rest went (queue full, kernel socket overruns,
//! rate limit), and the sender's achieved rate with logs off at the same
//! target (the dataplane never waits for the log). Under `cargo test` it
//! runs one small step. Prints a Markdown table (docs/performance.md,
//! "Connection logs"); `TORTIE_CONNLOG_RATES=25000,30000` picks the steps.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use support::*;
use tortie::calc::{Cluster, LogBackend};
use tortie::compile::compile;
use tortie::logging::{LogContext, LogOptions, LogStats, Sink};
use tortie::model::Resource;
use tortie::model::load::load_str;

const GROUP: u16 = 31;

/// Sends `rate` new connections per second for `secs`; returns how many.
fn send_paced(client: &Netns, to: IpAddr, rate: u64, secs: f64, base: u16) -> (u64, f64) {
    let path = client.path();
    std::thread::spawn(move || {
        enter_netns(&path);
        let socks: Vec<UdpSocket> = (0..64)
            .map(|_| UdpSocket::bind("0.0.0.0:0").expect("bind"))
            .collect();
        let start = Instant::now();
        let total = (rate as f64 * secs) as u64;
        let mut sent = 0u64;
        while sent < total && start.elapsed().as_secs_f64() < secs * 3.0 {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due.min(total) {
                let s = &socks[(sent % 64) as usize];
                let port = 1024 + ((sent / 64 + u64::from(base)) % 60_000) as u16;
                if s.send_to(b"x", SocketAddr::new(to, port)).is_ok() {
                    sent += 1;
                }
            }
            std::hint::spin_loop();
        }
        (sent, start.elapsed().as_secs_f64())
    })
    .join()
    .unwrap()
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if !kernel::require_kernel("connlog benchmark") {
        return;
    }
    let rates: Vec<u64> = if let Ok(list) = std::env::var("TORTIE_CONNLOG_RATES") {
        list.split(',')
            .filter_map(|r| r.trim().parse().ok())
            .collect()
    } else if bench {
        vec![5_000, 10_000, 20_000, 40_000, 80_000]
    } else {
        vec![2_000]
    };
    // Seconds per step: long enough that the bounded queue (32,768) cannot
    // hide a writer slower than the rate.
    let secs: f64 = std::env::var("TORTIE_CONNLOG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 5.0 } else { 1.0 });
    let mut node = Node::new("clbench");
    // Unreplied UDP entries of this namespace expire after 1 s, so the
    // steps do not fill the conntrack table (only this namespace's).
    node.ns
        .sysctl("net.netfilter.nf_conntrack_udp_timeout", "1");
    node.add_pod("default", "server", "198.18.0.2", None);
    node.add_pod("default", "client", "198.18.0.3", None);
    let mut labels = BTreeMap::new();
    for n in ["server", "client"] {
        labels.insert(
            ("default".to_string(), n.to_string()),
            vec![("run".to_string(), n.to_string())],
        );
    }
    let y = node.cluster_yaml(&labels, &BTreeMap::new());
    let r = load_str(&y, std::path::Path::new("bench.yaml"));
    let res: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
    let mut cluster = Cluster::build(&res, "node1");
    cluster.settings.log_backend = LogBackend::Nflog { group: GROUP };
    let plain = compile(&cluster, "node1");
    cluster.settings.connection_logs = true;
    cluster.settings.connection_logs_rate = 1_000_000_000;
    let logged = compile(&cluster, "node1");

    let path =
        std::env::temp_dir().join(format!("tortie-connlog-bench-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let (received, stop) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if sock.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let endpoints = cluster
        .local_endpoints("node1")
        .filter_map(|e| Some((e.iface.clone()?, e.id.to_string())))
        .collect();
    let ctx = Arc::new(RwLock::new(LogContext {
        index: logged.log_index.clone(),
        endpoints,
        connection_rate: 1_000_000_000,
    }));
    let stats = Arc::new(LogStats::default());
    let opts = LogOptions {
        group: GROUP,
        sink: Sink::Unix(path.clone()),
        json: None,
        hostname: "node1".into(),
        netns: Some(node.ns.path()),
    };
    tortie::logging::spawn(opts, ctx, stats.clone(), stop.clone()).expect("NFLOG");
    let server = node.pod("default", "server").ip4;
    let client = &node.pod("default", "client").ns;
    println!(
        "| target connections/s | sent/s, logs off | sent/s, logs on | records written | queue full | kernel overruns | rate-limited | lost |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut base = 0u16;
    for rate in rates {
        node.dataplane.borrow_mut().apply(&plain).unwrap();
        let (n_off, t_off) = send_paced(client, server, rate, secs, base);
        base = base.wrapping_add(7919);
        node.dataplane.borrow_mut().apply(&logged).unwrap();
        let before = (
            received.load(Ordering::Relaxed),
            stats.dropped.load(Ordering::Relaxed),
            stats.overruns.load(Ordering::Relaxed),
            stats.suppressed.load(Ordering::Relaxed),
        );
        let (n_on, t_on) = send_paced(client, server, rate, secs, base);
        base = base.wrapping_add(7919);
        // Let the reader and the writer drain: until nothing arrives for
        // 500 ms (at most 20 s), then let conntrack entries expire.
        let quiet_since = |last: &mut (u64, Instant)| {
            let now = received.load(Ordering::Relaxed);
            if now != last.0 {
                *last = (now, Instant::now());
            }
            last.1.elapsed()
        };
        let drain = Instant::now();
        let mut last = (received.load(Ordering::Relaxed), Instant::now());
        while quiet_since(&mut last) < Duration::from_millis(500)
            && drain.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_secs(2));
        let got = received.load(Ordering::Relaxed) - before.0;
        let dropped = stats.dropped.load(Ordering::Relaxed) - before.1;
        let overruns = stats.overruns.load(Ordering::Relaxed) - before.2;
        let limited = stats.suppressed.load(Ordering::Relaxed) - before.3;
        println!(
            "| {rate} | {:.0} | {:.0} | {got} | {dropped} | {overruns} | {limited} | {} |",
            n_off as f64 / t_off,
            n_on as f64 / t_on,
            n_on.saturating_sub(got)
        );
        if !bench {
            assert_eq!(got, n_on, "every connection of the smoke step is logged");
        }
    }
    stop.store(true, Ordering::Relaxed);
    counter.join().unwrap();
    let _ = std::fs::remove_file(&path);
}
