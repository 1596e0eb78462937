//! Shared by the real-kernel tests: the sandbox from the library, plus the
//! checks that decide whether kernel tests can run here.

#![allow(dead_code)]

pub mod agent;
pub mod hep;
pub mod kernel;
pub mod nflog;

pub use tortie::sandbox::*;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A TCP probe that says which step failed: connect (SYN not answered) or
/// read (connected, but no data in time).
pub fn probe_tcp_detail(to: IpAddr, port: u16, timeout: Duration) -> (bool, &'static str) {
    use std::io::Read;
    let addr = std::net::SocketAddr::new(to, port);
    let mut s = match std::net::TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(_) => return (false, "connect failed"),
    };
    let _ = s.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) if n > 0 => (true, "answered"),
        _ => (false, "read failed"),
    }
}

/// A node with three pods in `default`, labelled `app=<name>`: `server`
/// (serving TCP 80), `good` and `bad`.
pub struct Trio {
    pub node: Node,
    pub labels: BTreeMap<(String, String), Vec<(String, String)>>,
    _servers: Servers,
}

impl Trio {
    pub fn new(tag: &str) -> Trio {
        let mut node = Node::new(tag);
        node.add_pod("default", "server", "198.18.0.2", None);
        node.add_pod("default", "good", "198.18.0.3", None);
        node.add_pod("default", "bad", "198.18.0.4", None);
        let servers = Servers::start(
            &node.pod("default", "server").ns,
            "server",
            &[(Proto::Tcp, 80)],
        );
        let labels = ["server", "good", "bad"]
            .iter()
            .map(|n| {
                (
                    ("default".to_string(), n.to_string()),
                    vec![("app".to_string(), n.to_string())],
                )
            })
            .collect();
        Trio {
            node,
            labels,
            _servers: servers,
        }
    }

    /// Probes good→server (must connect) and bad→server (must not) from
    /// `threads` threads each until `stop` (or `limit`); returns (attempts,
    /// wrong verdicts).
    pub fn probe_while(
        &self,
        stop: Arc<AtomicBool>,
        threads: usize,
        limit: Duration,
    ) -> std::thread::JoinHandle<(usize, Vec<String>)> {
        let good = self.node.pod("default", "good").ns.path();
        let bad = self.node.pod("default", "bad").ns.path();
        let to = self.server();
        std::thread::spawn(move || {
            let attempts = Arc::new(AtomicUsize::new(0));
            let wrong = Arc::new(Mutex::new(Vec::new()));
            let mut handles = Vec::new();
            for (ns, expect) in [(good, true), (bad, false)] {
                for _ in 0..threads {
                    let (stop, attempts, wrong, ns) =
                        (stop.clone(), attempts.clone(), wrong.clone(), ns.clone());
                    handles.push(std::thread::spawn(move || {
                        enter_netns(&ns);
                        let deadline = Instant::now() + limit;
                        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                            // An allowed connection gets 900 ms: longer than
                            // any scheduling hiccup on a loaded machine,
                            // shorter than TCP's 1 s SYN retransmission, so a
                            // SYN dropped by the ruleset still shows.
                            let timeout = Duration::from_millis(if expect { 900 } else { 200 });
                            let t0 = Instant::now();
                            let (got, how) = probe_tcp_detail(to, 80, timeout);
                            attempts.fetch_add(1, Ordering::Relaxed);
                            if got != expect {
                                wrong.lock().unwrap().push(format!(
                                    "{} got {got} ({how} after {:?})",
                                    ns.display(),
                                    t0.elapsed()
                                ));
                            }
                        }
                    }));
                }
            }
            for h in handles {
                h.join().unwrap();
            }
            let n = attempts.load(Ordering::Relaxed);
            (n, wrong.lock().unwrap().clone())
        })
    }

    pub fn server(&self) -> IpAddr {
        self.node.pod("default", "server").ip4
    }

    /// The Namespace and Pods, as YAML.
    pub fn cluster_yaml(&self) -> String {
        self.node.cluster_yaml(&self.labels, &BTreeMap::new())
    }

    /// Whether `good` and `bad` reach the server on TCP 80.
    pub fn verdicts(&self) -> (bool, bool) {
        let probe = |from: &str| Probe {
            from: self.node.pod("default", from).ns.path(),
            to: self.server(),
            port: 80,
            proto: Proto::Tcp,
        };
        let r = probe_all(&[probe("good"), probe("bad")]);
        (r[0], r[1])
    }
}
