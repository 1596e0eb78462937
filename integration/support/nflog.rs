//! A sandbox node for the logging tests: pods nginx, access and other
//! (labelled `run: <name>`), servers on nginx, a ruleset compiled and
//! applied, and tortie's NFLOG reader writing to a test syslog socket.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tortie::calc::Cluster;
use tortie::compile::compile;
use tortie::compile::ir::Ruleset;
use tortie::logging::{LogContext, LogOptions, LogStats, Sink};
use tortie::model::Resource;
use tortie::model::load::load_str;
use tortie::sandbox::{Node, Probe, Proto, Servers, probe_all};

pub struct LogWorld {
    pub node: Node,
    _servers: Servers,
    labels: BTreeMap<(String, String), Vec<(String, String)>>,
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<LogStats>,
    socket: Option<(UnixDatagram, PathBuf)>,
}

impl Drop for LogWorld {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some((_, p)) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl LogWorld {
    /// The node, with servers on nginx at `ports`.
    pub fn new(tag: &str, ports: &[(Proto, u16)]) -> LogWorld {
        let mut node = Node::new(tag);
        node.add_pod("default", "nginx", "198.18.0.2", None);
        node.add_pod("default", "access", "198.18.0.3", None);
        node.add_pod("default", "other", "198.18.0.4", None);
        let servers = Servers::start(&node.pod("default", "nginx").ns, "nginx", ports);
        let labels = ["nginx", "access", "other"]
            .into_iter()
            .map(|n| {
                let pod = ("default".to_string(), n.to_string());
                (pod, vec![("run".to_string(), n.to_string())])
            })
            .collect();
        LogWorld {
            node,
            _servers: servers,
            labels,
            stop: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(LogStats::default()),
            socket: None,
        }
    }

    /// The node's pods plus `policies`, loaded (no errors allowed) and
    /// built into a cluster, which `tune` may adjust; compiled and applied.
    pub fn apply(&mut self, policies: &str, tune: impl FnOnce(&mut Cluster)) -> (Cluster, Ruleset) {
        let y = format!(
            "{}---\n{policies}",
            self.node.cluster_yaml(&self.labels, &BTreeMap::new())
        );
        let r = load_str(&y, std::path::Path::new("t.yaml"));
        assert!(!r.has_errors(), "{:?}", r.diagnostics);
        let res: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
        let mut cluster = Cluster::build(&res, "node1");
        tune(&mut cluster);
        let rs = compile(&cluster, "node1");
        self.node.dataplane.borrow_mut().apply(&rs).unwrap();
        (cluster, rs)
    }

    /// Starts the NFLOG reader on `group` for `rs`, writing to a fresh
    /// test syslog socket (or to `other`, with a JSON file).
    pub fn listen(
        &mut self,
        cluster: &Cluster,
        rs: &Ruleset,
        group: u16,
        other: Option<(Sink, PathBuf)>,
    ) {
        let (stats, stop) = (self.stats.clone(), self.stop.clone());
        self.socket = Some(start_reader(
            &self.node, cluster, rs, group, other, stats, stop,
        ));
    }

    /// One probe from pod `from` to nginx.
    pub fn attempt(&self, from: &str, port: u16, proto: Proto) -> bool {
        let to: IpAddr = self.node.pod("default", "nginx").ip4;
        probe_all(&[Probe {
            from: self.node.pod("default", from).ns.path(),
            to,
            port,
            proto,
        }])[0]
    }

    /// Messages received within `window`.
    pub fn messages(&self, window: Duration) -> Vec<String> {
        let (sock, _) = self.socket.as_ref().expect("syslog socket");
        receive(sock, window)
    }
}

/// Starts tortie's NFLOG reader in `node`'s namespace on `group` for `rs`
/// (node `node1`), writing to a fresh test syslog socket (or to `other`,
/// with a JSON file); returns that socket and its path (the caller removes
/// it and sets `stop`).
pub fn start_reader(
    node: &Node,
    cluster: &Cluster,
    rs: &Ruleset,
    group: u16,
    other: Option<(Sink, PathBuf)>,
    stats: Arc<LogStats>,
    stop: Arc<AtomicBool>,
) -> (UnixDatagram, PathBuf) {
    let path =
        std::env::temp_dir().join(format!("tortie-syslog-{}-{group}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let endpoints = cluster
        .local_endpoints("node1")
        .filter_map(|e| Some((e.iface.clone()?, e.id.to_string())))
        .collect();
    let ctx = Arc::new(RwLock::new(LogContext {
        index: rs.log_index.clone(),
        endpoints,
        connection_rate: 0,
    }));
    let (sink, json) = match other {
        Some((sink, json)) => (sink, Some(json)),
        None => (Sink::Unix(path.clone()), None),
    };
    let opts = LogOptions {
        group,
        sink,
        json,
        hostname: "node1".into(),
        netns: Some(node.ns.path()),
    };
    tortie::logging::spawn(opts, ctx, stats, stop).expect("bind NFLOG group");
    (sock, path)
}

/// The messages `sock` receives within `window`.
pub fn receive(sock: &UnixDatagram, window: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + window;
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}
