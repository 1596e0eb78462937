//! Real packets through `services` rule matches: a client pod allowed to
//! egress to a Service's endpoints (known from its EndpointSlice) reaches
//! them on the slice's target port only; and while `tortie run` (directory
//! datastore) is running, an endpoint added to or removed from the slice
//! takes effect within a bounded time as a set-element change: no chain,
//! rule or set of the kernel's table is replaced (their handles stay).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::*;

const API0: &str = "198.18.0.10";
const API1: &str = "198.18.0.11";
const OTHER: &str = "198.18.0.12";

/// A node with `client`, two endpoints of Service `api` (`api-0` serving
/// TCP 8080 and 9090, `api-1` serving 8080) and `other` (serving 8080, not
/// in the Service), all in `default`.
struct Lab {
    node: Node,
    _servers: Vec<Servers>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let mut node = Node::new(tag);
        node.add_pod("default", "client", "198.18.0.3", None);
        let mut servers = Vec::new();
        for (name, ip, ports) in [
            ("api-0", API0, &[8080, 9090][..]),
            ("api-1", API1, &[8080][..]),
            ("other", OTHER, &[8080][..]),
        ] {
            node.add_pod("default", name, ip, None);
            let ports: Vec<(Proto, u16)> = ports.iter().map(|p| (Proto::Tcp, *p)).collect();
            servers.push(Servers::start(&node.pod("default", name).ns, name, &ports));
        }
        Lab {
            node,
            _servers: servers,
        }
    }

    fn cluster_yaml(&self) -> String {
        let labels = ["client", "api-0", "api-1", "other"]
            .iter()
            .map(|n| {
                let app = if n.starts_with("api") { "api" } else { n };
                (
                    ("default".to_string(), n.to_string()),
                    vec![("app".to_string(), app.to_string())],
                )
            })
            .collect();
        self.node.cluster_yaml(&labels, &Default::default())
    }

    /// Whether `client` reaches each `(address, port)`.
    fn reach(&self, targets: &[(&str, u16)]) -> Vec<bool> {
        self.reach_from("client", targets)
    }

    /// Whether pod `from` reaches each `(address, port)`.
    fn reach_from(&self, from: &str, targets: &[(&str, u16)]) -> Vec<bool> {
        let from = self.node.pod("default", from).ns.path();
        let probes: Vec<Probe> = targets
            .iter()
            .map(|(ip, port)| Probe {
                from: from.clone(),
                to: ip.parse().unwrap(),
                port: *port,
                proto: Proto::Tcp,
            })
            .collect();
        probe_all(&probes)
    }

    /// Every chain, rule and set of the table with its kernel handle
    /// (counters and set elements left out): equal before and after a
    /// change exactly when nothing was replaced.
    fn handles(&self) -> Vec<String> {
        let text = self
            .node
            .ns
            .output(&["nft", "-a", "list", "table", "inet", "tortie"]);
        let mut out: Vec<String> = text
            .lines()
            .filter(|l| l.contains("# handle"))
            .map(|l| {
                let mut words: Vec<&str> = Vec::new();
                let mut it = l.split_whitespace().peekable();
                while let Some(w) = it.next() {
                    if w == "packets" || w == "bytes" {
                        it.next();
                        continue;
                    }
                    words.push(w);
                }
                words.join(" ")
            })
            .collect();
        out.sort();
        assert!(out.len() > 10, "no table in the node namespace:\n{text}");
        out
    }
}

/// An EndpointSlice of Service `api` in `default` holding `addresses`,
/// with target port 8080/TCP.
fn slice(addresses: &[&str]) -> String {
    let endpoints: Vec<String> = addresses
        .iter()
        .map(|a| format!("{{addresses: ['{a}'], conditions: {{ready: true}}}}"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: api-x1, namespace: default, labels: {{kubernetes.io/service-name: api}}}}\naddressType: IPv4\nendpoints: [{}]\nports: [{{name: http, port: 8080, protocol: TCP}}]\n",
        endpoints.join(", ")
    )
}

/// `client` may egress to Service `api` only (everything else it sends is
/// denied by the policy's last rule).
const CLIENT_TO_API: &str = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: client-to-api, namespace: default}\nspec:\n  selector: app == 'client'\n  types: [Egress]\n  egress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      services: {name: api}\n  - action: Deny\n";

#[test]
fn egress_to_a_service_reaches_its_endpoints_on_the_target_port_only() {
    if !kernel::require_kernel("services_egress") {
        return;
    }
    let lab = Lab::new("svce");
    let yaml = format!(
        "{}---\n{}---\n{CLIENT_TO_API}",
        lab.cluster_yaml(),
        slice(&[API0, API1])
    );
    lab.node.apply_yaml(&yaml);
    let targets = [
        (API0, 8080),  // an endpoint, on the target port
        (API1, 8080),  // the other endpoint
        (API0, 9090),  // an endpoint, another port it serves
        (OTHER, 8080), // the target port, another address
    ];
    let got = lab.reach(&targets);
    assert_eq!(
        got,
        vec![true, true, false, false],
        "client → {targets:?}: the Service's endpoints on 8080 only"
    );
    // Without the policy the client reaches all four (the denials above
    // are the policy's, not the lab's).
    lab.node.apply_yaml(&lab.cluster_yaml());
    assert_eq!(lab.reach(&targets), vec![true; 4], "no policy: all open");
}

/// `tortie run` on a directory; killed on drop.
struct Daemon {
    child: Child,
    metrics: String,
}

impl Daemon {
    fn start(dir: &Path, netns: &str) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_tortie"))
            .args(["run", "--node", "node1", "--netns", netns])
            .args(["--refresh-interval", "1s"])
            .arg(format!("--datastore=dir:{}", dir.display()))
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tortie run");
        let d = Daemon {
            child,
            metrics: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while agent::http_get(&d.metrics, "/readyz").map(|(c, _)| c) != Some(200) {
            assert!(Instant::now() < deadline, "tortie run did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Probes until `client → (ip, 8080)` is `want`, at most `bound`; returns
/// how long it took.
fn wait_reach(lab: &Lab, ip: &str, want: bool, bound: Duration, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        if lab.reach(&[(ip, 8080)]) == [want] {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "{what}: client → {ip}:8080 still {} after {bound:?}",
            !want
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_endpoint_slice_change_while_running_is_a_set_element_change() {
    if !kernel::require_kernel("services_daemon") {
        return;
    }
    let lab = Lab::new("svcd");
    let dir = TempDir(std::env::temp_dir().join(format!("tortie-svc-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join("cluster.yaml"), lab.cluster_yaml()).unwrap();
    std::fs::write(dir.0.join("policy.yaml"), CLIENT_TO_API).unwrap();
    let slice_file = dir.0.join("slice.yaml");
    agent::write_atomically(&slice_file, &slice(&[API0]));
    let _d = Daemon::start(&dir.0, &lab.node.ns.name);
    let bound = Duration::from_secs(2);
    wait_reach(&lab, API0, true, bound, "initial ruleset");
    assert_eq!(
        lab.reach(&[(API1, 8080)]),
        [false],
        "api-1 not in the slice yet"
    );
    let before = lab.handles();

    // api-0 stays an endpoint throughout: probe it while the slice changes.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, from) = (stop.clone(), lab.node.pod("default", "client").ns.path());
        std::thread::spawn(move || {
            enter_netns(&from);
            let (mut attempts, mut wrong) = (0, 0);
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                attempts += 1;
                let to = API0.parse().unwrap();
                if !probe_once(Proto::Tcp, to, 8080, Duration::from_millis(900)) {
                    wrong += 1;
                }
            }
            (attempts, wrong)
        })
    };

    agent::write_atomically(&slice_file, &slice(&[API0, API1]));
    let added = wait_reach(&lab, API1, true, bound, "endpoint added");
    let after_add = lab.handles();
    agent::write_atomically(&slice_file, &slice(&[API0]));
    let removed = wait_reach(&lab, API1, false, bound, "endpoint removed");
    let after_remove = lab.handles();
    stop.store(true, Ordering::Relaxed);
    let (attempts, wrong) = prober.join().unwrap();
    eprintln!(
        "endpoint added: in force after {added:?}; removed: after {removed:?}; \
         api-0 probed {attempts} times during the changes, {wrong} failed"
    );
    assert_eq!(
        after_add, before,
        "adding an endpoint replaced chains, rules or sets"
    );
    assert_eq!(
        after_remove, before,
        "removing an endpoint replaced chains, rules or sets"
    );
    assert!(attempts > 0, "the prober ran");
    assert_eq!(wrong, 0, "api-0 stayed reachable while the slice changed");
    assert_eq!(
        lab.reach(&[(API0, 9090), (OTHER, 8080)]),
        [false, false],
        "other ports and addresses stay denied"
    );
    // The check can fail: a policy edit re-renders its chain, and the
    // handles change.
    let edited = CLIENT_TO_API.replace(
        "  - action: Deny\n",
        &format!("  - action: Allow\n    protocol: TCP\n    destination: {{nets: [{OTHER}/32], ports: [8080]}}\n  - action: Deny\n"),
    );
    agent::write_atomically(&dir.0.join("policy.yaml"), &edited);
    wait_reach(&lab, OTHER, true, bound, "policy edited");
    assert_ne!(
        lab.handles(),
        before,
        "a re-rendered chain shows in the handles"
    );
}

#[test]
fn ingress_from_a_service_admits_its_endpoints_only() {
    if !kernel::require_kernel("services_ingress") {
        return;
    }
    let lab = Lab::new("svci");
    // Service `clients` has one endpoint, the client pod; `other` admits
    // its endpoints (from source ports 1024 and up) and nothing else.
    let clients = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: clients-1, namespace: default, labels: {kubernetes.io/service-name: clients}}\naddressType: IPv4\nendpoints: [{addresses: ['198.18.0.3']}]\nports: [{port: 7000}]\n";
    let policy = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: other-from-clients}\nspec:\n  selector: app == 'other'\n  types: [Ingress]\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source:\n      services: {name: clients, namespace: default}\n      ports: ['1024:65535']\n  - action: Deny\n";
    lab.node.apply_yaml(&format!(
        "{}---\n{clients}---\n{policy}",
        lab.cluster_yaml()
    ));
    assert_eq!(
        lab.reach_from("client", &[(OTHER, 8080)]),
        [true],
        "an endpoint of `clients` is admitted (the slice's port 7000 plays no part for a source)"
    );
    assert_eq!(
        lab.reach_from("api-1", &[(OTHER, 8080)]),
        [false],
        "a pod outside `clients` is not"
    );
    assert_eq!(
        lab.reach_from("api-1", &[(API0, 8080)]),
        [true],
        "the lab routes between the pods (the denial is the policy's)"
    );
}
