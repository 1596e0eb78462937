//! A sandbox of network namespaces for real packets (used by `tortie demo`
//! and the integration tests): a "node" namespace, pods in their own
//! namespaces attached by veths named as Calico names them (`cali…`, /32
//! routes, proxy ARP, default route via 169.254.1.1), an "outside"
//! namespace on the node's uplink, small TCP/UDP servers, and probes with
//! short timeouts. Everything is torn down on drop, panics included. Only
//! namespaces created here are ever programmed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::calc::{Cluster, pod_interface_name};
use crate::compile::compile;
use crate::compile::ir::Ruleset;
use crate::model::Resource;
use crate::model::load::load_str;
use crate::nft::{Dataplane, Target};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace that exists while this value lives.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A namespace with a name unique to this process and call.
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("tt{}-{}-{tag}", std::process::id(), n);
        assert!(name.len() < 64, "namespace name too long: {name}");
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    pub fn target(&self) -> Target {
        Target::named(&self.name)
    }

    /// `ip -n NAME ARGS…`
    pub fn ip(&self, args: &[&str]) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v);
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v);
    }

    /// Output of a command run inside the namespace.
    pub fn output(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")]);
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn enter<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> JoinHandle<R> {
        let path = self.path();
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
    }
}

/// Moves the calling thread into the namespace at `path`.
pub fn enter_netns(path: &Path) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: plain syscall on a valid fd; affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Servers answering with their name on some TCP and UDP ports.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn start(ns: &Netns, name: &str, ports: &[(Proto, u16)]) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &(proto, port) in ports {
            let stop = stop.clone();
            let reply = format!("{name}\n");
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            threads.push(ns.enter(move || serve(proto, port, reply, stop, ready_tx)));
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("server ready");
        }
        Servers { stop, threads }
    }
}

const SERVER_LIFETIME: Duration = Duration::from_secs(600);

fn serve(
    proto: Proto,
    port: u16,
    reply: String,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<()>,
) {
    let start = Instant::now();
    let alive = || !stop.load(Ordering::Relaxed) && start.elapsed() < SERVER_LIFETIME;
    match proto {
        Proto::Tcp => {
            let l4 = TcpListener::bind(SocketAddr::from(([0u8; 16], port))).expect("bind tcp [::]");
            l4.set_nonblocking(true).unwrap();
            ready.send(()).unwrap();
            while alive() {
                match l4.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(reply.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }
        Proto::Udp => {
            let s = UdpSocket::bind(SocketAddr::from(([0u8; 16], port))).expect("bind udp [::]");
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            ready.send(()).unwrap();
            let mut buf = [0u8; 512];
            while alive() {
                if let Ok((_, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(reply.as_bytes(), from);
                }
            }
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// One connection attempt from inside the namespace at `from` (a path);
/// true when the server answered.
pub fn probe_once(proto: Proto, to: IpAddr, port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::new(to, port);
    match proto {
        Proto::Tcp => {
            let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(timeout));
            let mut buf = [0u8; 64];
            matches!(s.read(&mut buf), Ok(n) if n > 0)
        }
        Proto::Udp => {
            let bind: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let Ok(s) = UdpSocket::bind(bind) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(timeout));
            if s.send_to(b"ping", addr).is_err() {
                return false;
            }
            let mut buf = [0u8; 64];
            matches!(s.recv_from(&mut buf), Ok((n, _)) if n > 0)
        }
    }
}

/// A probe request: from a namespace to an address.
#[derive(Debug, Clone)]
pub struct Probe {
    pub from: PathBuf,
    pub to: IpAddr,
    pub port: u16,
    pub proto: Proto,
}

/// Runs many probes in parallel (bounded worker pool) and returns results
/// in order.
pub fn probe_all(probes: &[Probe]) -> Vec<bool> {
    let results: Arc<Vec<AtomicUsize>> =
        Arc::new((0..probes.len()).map(|_| AtomicUsize::new(2)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let probes = Arc::new(probes.to_vec());
    let workers = 24.min(probes.len().max(1));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (results, next, probes) = (results.clone(), next.clone(), probes.clone());
        handles.push(std::thread::spawn(move || {
            let mut current: Option<PathBuf> = None;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= probes.len() {
                    break;
                }
                let p = &probes[i];
                if current.as_ref() != Some(&p.from) {
                    enter_netns(&p.from);
                    current = Some(p.from.clone());
                }
                let ok = probe_once(p.proto, p.to, p.port, PROBE_TIMEOUT);
                results[i].store(usize::from(ok), Ordering::SeqCst);
            }
        }));
    }
    for h in handles {
        h.join().expect("probe worker");
    }
    results
        .iter()
        .map(|r| r.load(Ordering::SeqCst) == 1)
        .collect()
}

/// A pod: its namespace, interface and addresses.
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub ns: Netns,
    pub iface: String,
    pub ip4: IpAddr,
    pub ip6: Option<IpAddr>,
}

/// The node: a namespace standing in for a host, with pods and an uplink.
pub struct Node {
    pub name: String,
    pub ns: Netns,
    pub pods: Vec<Pod>,
    pub outside: Option<Netns>,
    pub dataplane: std::cell::RefCell<Dataplane>,
    /// What was applied last and who is where, for tracing the probes.
    pub book: std::cell::RefCell<TraceBook>,
}

/// What `tortie trace` needs to know about a probe that the ruleset does
/// not say: the input last applied (and the ruleset made of it), the hosts
/// outside the node with the node interface each sits behind, and DNATs of
/// tables tortie does not own.
#[derive(Default)]
pub struct TraceBook {
    pub applied: Option<(String, Ruleset)>,
    /// (namespace path, address, node interface).
    pub remotes: Vec<(PathBuf, IpAddr, String)>,
    /// (node address, port) → (new address, port) of a foreign DNAT.
    pub dnat: Vec<((IpAddr, u16), (IpAddr, u16))>,
}

pub const UPLINK_NODE_IP: &str = "198.18.100.1";
pub const UPLINK_OUTSIDE_IP: &str = "198.18.100.2";

impl Node {
    pub fn new(tag: &str) -> Node {
        let ns = Netns::new(&format!("{tag}-node"));
        ns.sysctl("net.ipv4.ip_forward", "1");
        ns.sysctl("net.ipv6.conf.all.forwarding", "1");
        // Like a real host, the node has a default route; proxy ARP for the
        // pods' 169.254.1.1 gateway only answers for routable addresses.
        // (A veth pair stands in for the uplink: not every kernel has `dummy`.)
        ns.ip(&["link", "add", "gw0", "type", "veth", "peer", "name", "gw0p"]);
        ns.ip(&["link", "set", "gw0", "up"]);
        ns.ip(&["link", "set", "gw0p", "up"]);
        ns.ip(&["route", "add", "default", "dev", "gw0"]);
        ns.ip(&["-6", "route", "add", "default", "dev", "gw0"]);
        let dataplane = std::cell::RefCell::new(Dataplane::new(ns.target()));
        Node {
            name: "node1".into(),
            ns,
            pods: Vec::new(),
            outside: None,
            dataplane,
            book: std::cell::RefCell::new(TraceBook::default()),
        }
    }

    /// Adds a pod with a Calico-style veth. Returns its index.
    pub fn add_pod(&mut self, namespace: &str, name: &str, ip4: &str, ip6: Option<&str>) -> usize {
        let iface = pod_interface_name("cali", namespace, name);
        let pod_ns = Netns::new(&format!("{}", self.pods.len()));
        self.ns.ip(&[
            "link",
            "add",
            &iface,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pod_ns.name,
        ]);
        self.ns
            .sysctl(&format!("net.ipv4.conf.{iface}.proxy_arp"), "1");
        self.ns
            .sysctl(&format!("net.ipv4.neigh.{iface}.proxy_delay"), "0");
        self.ns.ip(&["link", "set", &iface, "up"]);
        self.ns
            .ip(&["-6", "addr", "add", "fe80::1/64", "dev", &iface, "nodad"]);
        self.ns
            .ip(&["route", "add", &format!("{ip4}/32"), "dev", &iface]);
        pod_ns.ip(&["link", "set", "eth0", "up"]);
        pod_ns.ip(&["addr", "add", &format!("{ip4}/32"), "dev", "eth0"]);
        pod_ns.ip(&[
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ]);
        pod_ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ]);
        if let Some(ip6) = ip6 {
            pod_ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{ip6}/128"),
                "dev",
                "eth0",
                "nodad",
            ]);
            pod_ns.ip(&[
                "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
            ]);
            self.ns
                .ip(&["-6", "route", "add", &format!("{ip6}/128"), "dev", &iface]);
        }
        self.pods.push(Pod {
            namespace: namespace.into(),
            name: name.into(),
            ns: pod_ns,
            iface,
            ip4: ip4.parse().unwrap(),
            ip6: ip6.map(|s| s.parse().unwrap()),
        });
        self.pods.len() - 1
    }

    /// Adds the "outside" namespace on the node's uplink `eth1`.
    pub fn add_outside(&mut self) {
        let out = Netns::new("out");
        self.ns.ip(&[
            "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &out.name,
        ]);
        self.ns.ip(&[
            "addr",
            "add",
            &format!("{UPLINK_NODE_IP}/24"),
            "dev",
            "eth1",
        ]);
        self.ns.ip(&["link", "set", "eth1", "up"]);
        out.ip(&[
            "addr",
            "add",
            &format!("{UPLINK_OUTSIDE_IP}/24"),
            "dev",
            "eth0",
        ]);
        out.ip(&["link", "set", "eth0", "up"]);
        out.ip(&["route", "add", "default", "via", UPLINK_NODE_IP]);
        self.book.borrow_mut().remotes.push((
            out.path(),
            UPLINK_OUTSIDE_IP.parse().unwrap(),
            "eth1".into(),
        ));
        self.outside = Some(out);
    }

    pub fn pod(&self, namespace: &str, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
            .unwrap_or_else(|| panic!("no pod {namespace}/{name}"))
    }

    /// YAML for the Pods and Namespaces of this node (labels given per pod),
    /// to be loaded together with policies.
    pub fn cluster_yaml(
        &self,
        pod_labels: &BTreeMap<(String, String), Vec<(String, String)>>,
        ns_labels: &BTreeMap<String, Vec<(String, String)>>,
    ) -> String {
        let mut y = String::new();
        let mut namespaces: Vec<String> = self.pods.iter().map(|p| p.namespace.clone()).collect();
        namespaces.extend(ns_labels.keys().cloned());
        namespaces.sort();
        namespaces.dedup();
        for ns in namespaces {
            let labels = ns_labels.get(&ns).cloned().unwrap_or_default();
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: '{v}'")).collect();
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{{}}}}}\n",
                l.join(", ")
            ));
        }
        for p in &self.pods {
            let labels = pod_labels
                .get(&(p.namespace.clone(), p.name.clone()))
                .cloned()
                .unwrap_or_default();
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: '{v}'")).collect();
            let mut ips = vec![format!("{{ip: '{}'}}", p.ip4)];
            if let Some(v6) = p.ip6 {
                ips.push(format!("{{ip: '{v6}'}}"));
            }
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: {}, labels: {{{}}}}}\nspec: {{nodeName: {}, containers: [{{name: c, ports: [{{name: serve-80-tcp, containerPort: 80}}, {{name: serve-81-tcp, containerPort: 81}}, {{name: serve-80-udp, containerPort: 80, protocol: UDP}}, {{name: serve-81-udp, containerPort: 81, protocol: UDP}}]}}]}}\nstatus: {{podIP: '{}', podIPs: [{}]}}\n",
                p.name,
                p.namespace,
                l.join(", "),
                self.name,
                p.ip4,
                ips.join(", ")
            ));
        }
        y
    }

    /// Compiles `yaml` for this node and applies it; panics on any input error.
    pub fn apply_yaml(&self, yaml: &str) -> Ruleset {
        let rs = compile_yaml(yaml, &self.name);
        self.dataplane
            .borrow_mut()
            .apply(&rs)
            .unwrap_or_else(|e| panic!("apply: {e}"));
        self.book.borrow_mut().applied = Some((yaml.to_string(), rs.clone()));
        rs
    }
}

/// Loads and compiles YAML text for `node`; panics on input errors.
pub fn compile_yaml(yaml: &str, node: &str) -> Ruleset {
    let r = load_str(yaml, Path::new("test.yaml"));
    let errors: Vec<String> = r.errors().map(|d| d.one_line()).collect();
    assert!(
        errors.is_empty(),
        "test input has errors:\n{}",
        errors.join("\n")
    );
    let resources: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
    compile(&Cluster::build(&resources, node), node)
}

/// A truth table: expected reachability per (from, to, port, proto).
pub type Cell = (String, String, u16, Proto);

/// Probes every cell; on mismatch, probes the wrong cells once more
/// (as the upstream suite does), then reports all that stay wrong.
pub fn check_truth_table(cells: &[(Probe, bool, String)]) -> Result<(), String> {
    let probes: Vec<Probe> = cells.iter().map(|c| c.0.clone()).collect();
    let first = probe_all(&probes);
    let wrong: Vec<usize> = (0..cells.len())
        .filter(|&i| first[i] != cells[i].1)
        .collect();
    if wrong.is_empty() {
        return Ok(());
    }
    let again = probe_all(&wrong.iter().map(|&i| probes[i].clone()).collect::<Vec<_>>());
    let still: Vec<String> = wrong
        .iter()
        .zip(again)
        .filter(|(i, got)| *got != cells[**i].1)
        .map(|(&i, got)| {
            format!(
                "{}: expected {}, got {}",
                cells[i].2,
                if cells[i].1 { "allowed" } else { "denied" },
                if got { "allowed" } else { "denied" }
            )
        })
        .collect();
    if still.is_empty() {
        Ok(())
    } else {
        Err(still.join("\n"))
    }
}

/// One ICMP echo from inside `ns` (uses the `ping` binary); true on a reply.
pub fn ping(ns: &Netns, to: IpAddr) -> bool {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "ping", "-c", "1", "-W", "1"]);
    if to.is_ipv6() {
        cmd.arg("-6");
    }
    cmd.arg(to.to_string());
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

// ----------------------------------------------------------------------
// Host-endpoint lab

/// An outside host behind one of the node's host-endpoint interfaces.
pub struct OutsideHost {
    pub name: String,
    pub ns: Netns,
    /// The node's interface towards this host (a HostEndpoint's `interfaceName`).
    pub iface: String,
    pub ip: IpAddr,
    /// The node's address on `iface`.
    pub node_ip: IpAddr,
}

/// The NodePort the lab's foreign "kube-proxy" table DNATs to the first pod.
pub const LAB_NODE_PORT: u16 = 30080;
/// TCP ports the node's own server listens on.
pub const LAB_NODE_TCP: [u16; 5] = [22, 179, 8080, 8081, 80];
/// UDP ports the node's own server listens on (68: the DHCP client failsafe).
pub const LAB_NODE_UDP: [u16; 1] = [68];
/// TCP ports served by the pods and by the outside hosts.
pub const LAB_REMOTE_TCP: [u16; 3] = [80, 81, 179];
/// UDP ports served by the outside hosts (53: DNS, 67: DHCP server).
pub const LAB_REMOTE_UDP: [u16; 2] = [53, 67];

/// A node for host-endpoint tests: outside hosts `a` (on `eth0`,
/// 198.18.10.0/24) and `b` (on `eth1`, 198.18.20.0/24) that reach the node,
/// its pods and each other only through the node (so traffic between host
/// endpoints is forwarded), pods `default/web` (198.18.0.2) and
/// `default/client` (198.18.0.3), servers everywhere (the node's own
/// namespace included), and a foreign kube-proxy-style table DNATing
/// NodePort 30080 on the node's addresses to `web:80`.
pub struct HepLab {
    // Dropped first: the servers' threads live in the namespaces below.
    servers: Vec<Servers>,
    pub hosts: Vec<OutsideHost>,
    pub node: Node,
}

impl HepLab {
    pub fn new(tag: &str) -> HepLab {
        let mut node = Node::new(tag);
        node.add_pod("default", "web", "198.18.0.2", None);
        node.add_pod("default", "client", "198.18.0.3", None);
        let hosts = vec![
            add_outside_host(&node, "a", "eth0", 10),
            add_outside_host(&node, "b", "eth1", 20),
        ];
        let mut lab = HepLab {
            servers: Vec::new(),
            hosts,
            node,
        };
        lab.start_servers();
        lab.install_node_port();
        lab
    }

    fn start_servers(&mut self) {
        let tcp = |ports: &[u16]| ports.iter().map(|&p| (Proto::Tcp, p)).collect::<Vec<_>>();
        let mut node_ports = tcp(&LAB_NODE_TCP);
        node_ports.extend(LAB_NODE_UDP.iter().map(|&p| (Proto::Udp, p)));
        let mut remote = tcp(&LAB_REMOTE_TCP);
        remote.extend(LAB_REMOTE_UDP.iter().map(|&p| (Proto::Udp, p)));
        self.servers
            .push(Servers::start(&self.node.ns, "node", &node_ports));
        for p in &self.node.pods {
            self.servers
                .push(Servers::start(&p.ns, &p.name, &tcp(&LAB_REMOTE_TCP)));
        }
        for h in &self.hosts {
            self.servers.push(Servers::start(&h.ns, &h.name, &remote));
        }
    }

    /// A NodePort as kube-proxy's nftables mode programs it, in its own table.
    fn install_node_port(&self) {
        let addrs: Vec<String> = self.hosts.iter().map(|h| h.node_ip.to_string()).collect();
        let web = self.node.pod("default", "web").ip4;
        let text = format!(
            "table ip tortie-lab-kube-proxy {{\n chain nat-prerouting {{\n  type nat hook prerouting priority dstnat; policy accept;\n  ip daddr {{ {} }} tcp dport {LAB_NODE_PORT} dnat to {web}:80\n }}\n}}\n",
            addrs.join(", ")
        );
        crate::nft::exec::run_transaction(&self.node.ns.target(), &text)
            .unwrap_or_else(|e| panic!("foreign NodePort table: {e}"));
        let mut book = self.node.book.borrow_mut();
        for h in &self.hosts {
            book.dnat.push(((h.node_ip, LAB_NODE_PORT), (web, 80)));
        }
    }

    pub fn host(&self, name: &str) -> &OutsideHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no outside host {name}"))
    }

    pub fn pod_ip(&self, name: &str) -> IpAddr {
        self.node.pod("default", name).ip4
    }

    /// The Namespace and Pods (labelled `app=<name>`), as YAML.
    pub fn cluster_yaml(&self) -> String {
        let labels = self
            .node
            .pods
            .iter()
            .map(|p| {
                (
                    (p.namespace.clone(), p.name.clone()),
                    vec![("app".to_string(), p.name.clone())],
                )
            })
            .collect();
        self.node.cluster_yaml(&labels, &BTreeMap::new())
    }
}

/// Adds an outside host on a new node interface `iface`, in 198.18.`net`.0/24
/// (node .1, host .2); the host's default route is the node.
fn add_outside_host(node: &Node, name: &str, iface: &str, net: u8) -> OutsideHost {
    let ns = Netns::new(&format!("h{name}"));
    let node_ip = format!("198.18.{net}.1");
    let ip = format!("198.18.{net}.2");
    node.ns.ip(&[
        "link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ]);
    node.ns
        .ip(&["addr", "add", &format!("{node_ip}/24"), "dev", iface]);
    node.ns.ip(&["link", "set", iface, "up"]);
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["route", "add", "default", "via", &node_ip]);
    let ip: IpAddr = ip.parse().unwrap();
    node.book
        .borrow_mut()
        .remotes
        .push((ns.path(), ip, iface.to_string()));
    OutsideHost {
        name: name.into(),
        ns,
        iface: iface.into(),
        ip,
        node_ip: node_ip.parse().unwrap(),
    }
}
