//! Seed scenarios with real packets: each step applies the policies to a
//! node namespace and asserts a full truth table of connection attempts.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;

use support::*;

type Labels = BTreeMap<(String, String), Vec<(String, String)>>;
type NsLabels = BTreeMap<String, Vec<(String, String)>>;

fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn rules_seed(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("rulesets")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

fn seed(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/seeds")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

/// One expectation: from a pod (or the outside) to an address and port.
struct Expect<'a> {
    from: &'a Netns,
    from_name: &'a str,
    to: IpAddr,
    to_name: &'a str,
    port: u16,
    proto: Proto,
    allowed: bool,
}

/// Probes every expectation with real packets and traces each one on the
/// ruleset the node applied (`Node::check_truth_table`): the packets must
/// match the expectation and the trace must match the packets.
fn check(node: &Node, step: &str, expectations: &[Expect<'_>]) {
    let cells: Vec<(Probe, bool, String)> = expectations
        .iter()
        .map(|e| {
            (
                Probe {
                    from: e.from.path(),
                    to: e.to,
                    port: e.port,
                    proto: e.proto,
                },
                e.allowed,
                format!(
                    "{step}: {} -> {}:{} {:?}",
                    e.from_name, e.to_name, e.port, e.proto
                ),
            )
        })
        .collect();
    if let Err(e) = node.check_truth_table(&cells) {
        panic!("{e}");
    }
}

#[test]
fn seed_004_tutorial_step_by_step() {
    if !kernel::require_kernel("seed_004_tutorial_step_by_step") {
        return;
    }
    // The demo walks the tutorial and checks every step's truth table
    // (including the DNS side effect of step 08).
    let mut out = Vec::new();
    let report = tortie::demo::run(&mut out).expect("demo runs");
    let text = String::from_utf8_lossy(&out);
    assert_eq!(report.steps, 9, "{text}");
    assert_eq!(report.probes, 54);
    assert!(
        report.mismatches.is_empty(),
        "{:#?}\n{text}",
        report.mismatches
    );
}

/// A node with labelled pods, an outside host, and servers.
struct Sc {
    node: Node,
    labels: Labels,
    ns_labels: NsLabels,
    servers: Vec<Servers>,
}

impl Sc {
    fn new(tag: &str) -> Sc {
        let mut node = Node::new(tag);
        node.add_outside();
        Sc {
            node,
            labels: BTreeMap::new(),
            ns_labels: BTreeMap::new(),
            servers: Vec::new(),
        }
    }
    fn pod(&mut self, ns: &str, name: &str, ip: &str, ip6: Option<&str>, labels: &[(&str, &str)]) {
        self.node.add_pod(ns, name, ip, ip6);
        self.labels.insert((ns.into(), name.into()), l(labels));
    }
    fn serve_pod(&mut self, ns: &str, name: &str, ports: &[(Proto, u16)]) {
        let s = Servers::start(&self.node.pod(ns, name).ns, name, ports);
        self.servers.push(s);
    }
    fn serve_node(&mut self, ports: &[(Proto, u16)]) {
        let s = Servers::start(&self.node.ns, "node", ports);
        self.servers.push(s);
    }
    fn serve_outside(&mut self, ports: &[(Proto, u16)]) {
        let s = Servers::start(self.node.outside.as_ref().unwrap(), "outside", ports);
        self.servers.push(s);
    }
    fn apply(&self, extra: &str) {
        let mut y = self.node.cluster_yaml(&self.labels, &self.ns_labels);
        y.push_str("---\n");
        y.push_str(extra);
        self.node.apply_yaml(&y);
    }
    fn pod_ns(&self, ns: &str, name: &str) -> &Netns {
        &self.node.pod(ns, name).ns
    }
    fn ip(&self, ns: &str, name: &str) -> IpAddr {
        self.node.pod(ns, name).ip4
    }
    fn outside(&self) -> &Netns {
        self.node.outside.as_ref().unwrap()
    }
}

fn node_ip() -> IpAddr {
    UPLINK_NODE_IP.parse().unwrap()
}

#[test]
fn seed_003_access_nginx_and_default_deny() {
    if !kernel::require_kernel("seed_003") {
        return;
    }
    let mut sc = Sc::new("s003");
    sc.pod("default", "nginx", "198.18.0.2", None, &[("app", "nginx")]);
    sc.pod("default", "foo", "198.18.0.3", None, &[("app", "foo")]);
    sc.pod("default", "bar", "198.18.0.4", None, &[("app", "bar")]);
    for n in ["nginx", "foo", "bar"] {
        sc.serve_pod("default", n, &[(Proto::Tcp, 80)]);
    }
    let e = |from: &'static str, to: &'static str, allowed: bool| Expect {
        from: sc.pod_ns("default", from),
        from_name: from,
        to: sc.ip("default", to),
        to_name: to,
        port: 80,
        proto: Proto::Tcp,
        allowed,
    };
    sc.apply(&seed("003-access-nginx.yaml"));
    check(
        &sc.node,
        "access-nginx",
        &[
            e("foo", "nginx", true),
            e("bar", "nginx", false),
            e("nginx", "bar", true),
            e("foo", "bar", true),
        ],
    );
    sc.apply(&seed("003-default-deny.yaml"));
    check(
        &sc.node,
        "default-deny",
        &[
            e("foo", "nginx", false),
            e("bar", "nginx", false),
            e("nginx", "bar", false),
            e("foo", "bar", false),
        ],
    );
}

#[test]
fn seeds_000_001_srv1_and_accounts_finance() {
    if !kernel::require_kernel("seed_000") {
        return;
    }
    let mut sc = Sc::new("s000");
    sc.pod(
        "accounts",
        "srv1-frontend",
        "198.18.0.20",
        None,
        &[("app", "Srv1"), ("tier", "frontend")],
    );
    sc.pod(
        "accounts",
        "srv1-backend",
        "198.18.0.21",
        None,
        &[("app", "Srv1"), ("tier", "backend")],
    );
    sc.pod(
        "accounts",
        "srv1-db",
        "198.18.0.22",
        None,
        &[("app", "Srv1"), ("tier", "db")],
    );
    sc.pod(
        "finance",
        "srv2-frontend",
        "198.18.1.20",
        None,
        &[("app", "Srv2"), ("tier", "frontend")],
    );
    sc.ns_labels
        .insert("accounts".into(), l(&[("usage", "accounts")]));
    sc.ns_labels
        .insert("finance".into(), l(&[("usage", "finance")]));
    for n in ["srv1-frontend", "srv1-backend", "srv1-db"] {
        sc.serve_pod("accounts", n, &[(Proto::Tcp, 80), (Proto::Tcp, 3111)]);
    }
    // The corrected policies from the golden ruleset (the namespaces and pods
    // there are replaced by this node's).
    let policies: String = rules_seed("seed-000-srv1-accounts-finance.yaml")
        .split("\n---\n")
        .filter(|d| d.contains("kind: NetworkPolicy"))
        .collect::<Vec<_>>()
        .join("\n---\n");
    sc.apply(&policies);
    let e = |fns: &'static str, from: &'static str, to: &'static str, port: u16, allowed: bool| {
        Expect {
            from: sc.pod_ns(fns, from),
            from_name: from,
            to: sc.ip("accounts", to),
            to_name: to,
            port,
            proto: Proto::Tcp,
            allowed,
        }
    };
    check(
        &sc.node,
        "srv1",
        &[
            e("accounts", "srv1-frontend", "srv1-backend", 80, true),
            e("accounts", "srv1-backend", "srv1-db", 80, true),
            e("accounts", "srv1-frontend", "srv1-db", 80, false),
            e("accounts", "srv1-db", "srv1-backend", 80, false),
            e("accounts", "srv1-backend", "srv1-frontend", 80, true),
            e("finance", "srv2-frontend", "srv1-backend", 3111, true),
            e("finance", "srv2-frontend", "srv1-backend", 80, false),
            e("finance", "srv2-frontend", "srv1-db", 3111, false),
        ],
    );
}

#[test]
fn seed_001_log_denied_packets_does_not_change_verdicts() {
    if !kernel::require_kernel("seed_001_log") {
        return;
    }
    let mut sc = Sc::new("s001l");
    sc.pod("default", "nginx", "198.18.0.2", None, &[("run", "nginx")]);
    sc.pod(
        "default",
        "access",
        "198.18.0.3",
        None,
        &[("run", "access")],
    );
    sc.pod("default", "other", "198.18.0.4", None, &[("run", "other")]);
    sc.serve_pod("default", "nginx", &[(Proto::Tcp, 80)]);
    let access =
        seed("001-access-nginx-k8s.yaml").replace("extensions/v1beta1", "networking.k8s.io/v1");
    let log = seed("001-log-denied-packets.yaml");
    let e = |from: &'static str, allowed: bool| Expect {
        from: sc.pod_ns("default", from),
        from_name: from,
        to: sc.ip("default", "nginx"),
        to_name: "nginx",
        port: 80,
        proto: Proto::Tcp,
        allowed,
    };
    sc.apply(&format!("{access}\n---\n{log}"));
    check(
        &sc.node,
        "access-nginx + log-denied-packets",
        &[e("access", true), e("other", false)],
    );
    // Log alone does not decide, but a policy that selects the pod puts it
    // into default deny at the end of the tier.
    sc.apply(&log);
    check(
        &sc.node,
        "log-denied-packets alone",
        &[e("access", false), e("other", false)],
    );
}

#[test]
fn seed_001_ibm_default_host_policies_and_failsafes() {
    if !kernel::require_kernel("seed_001_ibm") {
        return;
    }
    let mut sc = Sc::new("s001i");
    sc.serve_node(&[
        (Proto::Tcp, 52311),
        (Proto::Tcp, 8080),
        (Proto::Tcp, 22),
        (Proto::Udp, 52311),
    ]);
    sc.serve_outside(&[(Proto::Tcp, 443)]);
    let policies = rules_seed("seed-001-ibm-default-host-policies.yaml")
        .replace("node: worker1", "node: node1");
    let node_probe = |port: u16, proto: Proto, allowed: bool| Expect {
        from: sc.outside(),
        from_name: "outside",
        to: node_ip(),
        to_name: "node",
        port,
        proto,
        allowed,
    };
    // Without policy, everything reaches the node.
    sc.apply("");
    check(
        &sc.node,
        "no host endpoint",
        &[node_probe(8080, Proto::Tcp, true)],
    );
    sc.apply(&policies);
    check(
        &sc.node,
        "IBM defaults",
        &[
            node_probe(52311, Proto::Tcp, true),
            node_probe(52311, Proto::Udp, true),
            node_probe(8080, Proto::Tcp, false),
            node_probe(22, Proto::Tcp, true), // failsafe
            Expect {
                from: &sc.node.ns,
                from_name: "node",
                to: UPLINK_OUTSIDE_IP.parse().unwrap(),
                to_name: "outside",
                port: 443,
                proto: Proto::Tcp,
                allowed: true,
            },
        ],
    );
    assert!(
        sc.node.ping(sc.outside(), node_ip()),
        "allow-icmp lets pings in"
    );
    // A deny-all in front of everything: failsafe port 22 still answers.
    let deny_all = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: deny-all}\nspec: {order: 1, selector: ibm.role == 'worker_public', types: [Ingress, Egress], ingress: [{action: Deny}], egress: [{action: Deny}]}\n";
    sc.apply(&format!("{policies}\n---\n{deny_all}"));
    check(
        &sc.node,
        "deny-all keeps failsafes",
        &[
            node_probe(22, Proto::Tcp, true),
            node_probe(52311, Proto::Tcp, false),
        ],
    );
    assert!(
        !sc.node.ping(sc.outside(), node_ip()),
        "deny-all blocks pings"
    );
}

fn gnp(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    )
}

const HEP_ETH1: &str = "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: node1-eth1, labels: {ibm.role: worker_public}}\nspec: {node: node1, interfaceName: eth1}\n";

#[test]
fn seed_001_deny_nodeports_pre_dnat_beside_a_foreign_nodeport_table() {
    if !kernel::require_kernel("deny_nodeports") {
        return;
    }
    let mut sc = Sc::new("dnp");
    sc.pod("default", "web", "198.18.0.2", None, &[("app", "web")]);
    sc.serve_pod("default", "web", &[(Proto::Tcp, 80), (Proto::Udp, 80)]);
    // A NodePort as kube-proxy's nftables mode would program it, in its own
    // table, plus a foreign filter table: tortie must coexist with both.
    let foreign = "table ip kube-proxy-test {\n chain nat-prerouting {\n  type nat hook prerouting priority dstnat; policy accept;\n  tcp dport 30080 dnat to 198.18.0.2:80\n  udp dport 30080 dnat to 198.18.0.2:80\n }\n}\ntable inet other-filter {\n chain input {\n  type filter hook input priority 10; policy accept;\n  counter\n }\n}\n";
    tortie::nft::exec::run_transaction(&sc.node.ns.target(), foreign).expect("foreign tables");
    // Tell trace about the NodePort: it evaluates only tortie's table.
    sc.node
        .book
        .borrow_mut()
        .dnat
        .push(((node_ip(), 30080), ("198.18.0.2".parse().unwrap(), 80)));
    let e = |to: IpAddr, port: u16, proto: Proto, allowed: bool| Expect {
        from: sc.outside(),
        from_name: "outside",
        to,
        to_name: "",
        port,
        proto,
        allowed,
    };
    sc.apply(HEP_ETH1);
    check(
        &sc.node,
        "NodePort open before the policy",
        &[
            e(node_ip(), 30080, Proto::Tcp, true),
            e(node_ip(), 30080, Proto::Udp, true),
        ],
    );
    sc.apply(&format!(
        "{HEP_ETH1}---\n{}",
        seed("001-deny-nodeports.yaml")
    ));
    let pod_ip = sc.ip("default", "web");
    check(
        &sc.node,
        "deny-nodeports",
        &[
            e(node_ip(), 30080, Proto::Tcp, false),
            e(node_ip(), 30080, Proto::Udp, false),
            e(pod_ip, 80, Proto::Tcp, true),
            e(pod_ip, 80, Proto::Udp, true),
        ],
    );
    // The foreign tables were not touched.
    let tables = sc.node.ns.output(&["nft", "list", "tables"]);
    assert!(
        tables.contains("table ip kube-proxy-test") && tables.contains("table inet other-filter"),
        "{tables}"
    );
}

#[test]
fn seed_001_whitelist_untracked() {
    if !kernel::require_kernel("whitelist") {
        return;
    }
    let mut sc = Sc::new("wl");
    sc.node
        .ns
        .ip(&["addr", "add", "198.18.50.10/32", "dev", "eth1"]);
    sc.serve_node(&[(Proto::Tcp, 80), (Proto::Tcp, 8080)]);
    let lb: IpAddr = "198.18.50.10".parse().unwrap();
    let base = rules_seed("seed-001-whitelist.yaml").replace("node: worker1", "node: node1");
    // Untracked traffic has no conntrack state, so the replies need an
    // untracked allow too (as Calico documents for doNotTrack).
    let replies = gnp(
        "whitelist-replies",
        "{selector: ibm.role=='worker_public', order: 500, doNotTrack: true, applyOnForward: true, types: [Egress], egress: [{action: Allow, protocol: TCP, source: {nets: [198.18.50.10/32], ports: [80]}}]}",
    );
    let e = |port: u16, allowed: bool| Expect {
        from: sc.outside(),
        from_name: "outside",
        to: lb,
        to_name: "lb",
        port,
        proto: Proto::Tcp,
        allowed,
    };
    sc.apply(&format!(
        "{}\n---\n{replies}",
        base.replace("198.18.60.7/32", &format!("{UPLINK_OUTSIDE_IP}/32"))
    ));
    check(
        &sc.node,
        "whitelisted client",
        &[e(80, true), e(8080, false)],
    );
    sc.apply(&format!("{base}\n---\n{replies}"));
    check(
        &sc.node,
        "client not whitelisted",
        &[e(80, false), e(8080, false)],
    );
}

#[test]
fn calico_order_deny_before_allow_pass_end_of_tier_and_log() {
    if !kernel::require_kernel("tiers") {
        return;
    }
    let mut sc = Sc::new("tier");
    sc.pod(
        "default",
        "server",
        "198.18.0.2",
        None,
        &[("app", "server")],
    );
    sc.pod("default", "a", "198.18.0.3", None, &[("role", "a")]);
    sc.pod("default", "b", "198.18.0.4", None, &[("role", "b")]);
    sc.pod("default", "c", "198.18.0.5", None, &[("role", "c")]);
    sc.serve_pod(
        "default",
        "server",
        &[
            (Proto::Tcp, 80),
            (Proto::Tcp, 81),
            (Proto::Tcp, 82),
            (Proto::Tcp, 83),
        ],
    );
    let y = [
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 10}\n".to_string(),
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: platform}\nspec: {order: 20, defaultAction: Pass}\n".to_string(),
        gnp("security.first", "{tier: security, order: 1, selector: app == 'server', types: [Ingress], ingress: [{action: Log, source: {selector: role == 'a'}}, {action: Deny, protocol: TCP, source: {selector: role == 'a'}, destination: {ports: [81]}}, {action: Pass, source: {selector: role == 'b'}}]}"),
        gnp("security.allow-a", "{tier: security, order: 2, selector: app == 'server', types: [Ingress], ingress: [{action: Allow, source: {selector: role == 'a'}}]}"),
        gnp("platform.b-82", "{tier: platform, order: 1, selector: app == 'server', types: [Ingress], ingress: [{action: Allow, protocol: TCP, source: {selector: role == 'b'}, destination: {ports: [82]}}]}"),
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: server-83, namespace: default}\nspec: {selector: app == 'server', types: [Ingress], ingress: [{action: Allow, protocol: TCP, destination: {ports: [83]}}]}\n".to_string(),
    ]
    .join("---\n");
    sc.apply(&y);
    let server = sc.ip("default", "server");
    let mut cells = Vec::new();
    let table: [(&str, [bool; 4]); 3] = [
        ("a", [true, false, true, true]),
        ("b", [false, false, true, true]),
        ("c", [false, false, false, false]),
    ];
    for (who, ports) in table {
        for (i, port) in [80u16, 81, 82, 83].into_iter().enumerate() {
            cells.push(Expect {
                from: sc.pod_ns("default", who),
                from_name: who,
                to: server,
                to_name: "server",
                port,
                proto: Proto::Tcp,
                allowed: ports[i],
            });
        }
    }
    check(&sc.node, "tiers", &cells);
}

#[test]
fn default_endpoint_to_host_action_and_host_to_workload() {
    if !kernel::require_kernel("ep_to_host") {
        return;
    }
    let mut sc = Sc::new("e2h");
    sc.pod("default", "p", "198.18.0.2", None, &[("app", "p")]);
    sc.serve_pod("default", "p", &[(Proto::Tcp, 80)]);
    sc.serve_node(&[(Proto::Tcp, 8080)]);
    let isolate = "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: deny, namespace: default}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n";
    let felix = |action: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {{name: default}}\nspec: {{defaultEndpointToHostAction: {action}}}\n"
        )
    };
    let to_host = |allowed: bool| Expect {
        from: sc.pod_ns("default", "p"),
        from_name: "pod",
        to: node_ip(),
        to_name: "node",
        port: 8080,
        proto: Proto::Tcp,
        allowed,
    };
    let host_to_pod = |allowed: bool| Expect {
        from: &sc.node.ns,
        from_name: "node",
        to: sc.ip("default", "p"),
        to_name: "pod",
        port: 80,
        proto: Proto::Tcp,
        allowed,
    };
    sc.apply(isolate);
    check(
        &sc.node,
        "default Drop; host to an isolated pod is not policed",
        &[to_host(false), host_to_pod(true)],
    );
    sc.apply(&format!("{isolate}---\n{}", felix("Accept")));
    check(&sc.node, "Accept", &[to_host(true)]);
    sc.apply(&format!("{isolate}---\n{}", felix("Return")));
    check(
        &sc.node,
        "Return (no host endpoint: allowed)",
        &[to_host(true)],
    );
}

#[test]
fn apply_on_forward_polices_routed_traffic_only_when_set() {
    if !kernel::require_kernel("aof") {
        return;
    }
    let mut sc = Sc::new("aof");
    sc.pod("default", "web", "198.18.0.2", None, &[("app", "web")]);
    sc.serve_pod("default", "web", &[(Proto::Tcp, 80), (Proto::Tcp, 81)]);
    sc.serve_node(&[(Proto::Tcp, 80), (Proto::Tcp, 81)]);
    let pol = |aof: bool| {
        gnp(
            "uplink",
            &format!(
                "{{selector: ibm.role == 'worker_public', applyOnForward: {aof}, types: [Ingress], ingress: [{{action: Deny, protocol: TCP, destination: {{ports: [81]}}}}, {{action: Allow}}]}}"
            ),
        )
    };
    let web = sc.ip("default", "web");
    let e = |to: IpAddr, port: u16, allowed: bool| Expect {
        from: sc.outside(),
        from_name: "outside",
        to,
        to_name: "",
        port,
        proto: Proto::Tcp,
        allowed,
    };
    sc.apply(&format!("{HEP_ETH1}---\n{}", pol(false)));
    check(
        &sc.node,
        "without applyOnForward",
        &[
            e(web, 80, true),
            e(web, 81, true),
            e(node_ip(), 80, true),
            e(node_ip(), 81, false),
        ],
    );
    sc.apply(&format!("{HEP_ETH1}---\n{}", pol(true)));
    check(
        &sc.node,
        "with applyOnForward",
        &[
            e(web, 80, true),
            e(web, 81, false),
            e(node_ip(), 80, true),
            e(node_ip(), 81, false),
        ],
    );
}

#[test]
fn ipv6_pods_and_policy() {
    if !kernel::require_kernel("ipv6") {
        return;
    }
    let mut sc = Sc::new("v6");
    sc.pod(
        "default",
        "server",
        "198.18.0.2",
        Some("fd74:6f72::2"),
        &[("app", "server")],
    );
    sc.pod(
        "default",
        "client",
        "198.18.0.3",
        Some("fd74:6f72::3"),
        &[("app", "client")],
    );
    sc.pod(
        "default",
        "other",
        "198.18.0.4",
        Some("fd74:6f72::4"),
        &[("app", "other")],
    );
    sc.serve_pod("default", "server", &[(Proto::Tcp, 80)]);
    let v6 = sc.node.pod("default", "server").ip6.unwrap();
    let v4 = sc.ip("default", "server");
    let e = |from: &'static str, to: IpAddr, allowed: bool| Expect {
        from: sc.pod_ns("default", from),
        from_name: from,
        to,
        to_name: "server",
        port: 80,
        proto: Proto::Tcp,
        allowed,
    };
    sc.apply("");
    check(
        &sc.node,
        "no policy",
        &[e("client", v6, true), e("other", v6, true)],
    );
    assert!(sc.node.ping(sc.pod_ns("default", "other"), v6));
    sc.apply("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\nspec: {selector: app == 'server', types: [Ingress], ingress: [{action: Allow, protocol: TCP, source: {selector: app == 'client'}, destination: {ports: [80]}}]}\n");
    check(
        &sc.node,
        "client only, both families",
        &[
            e("client", v6, true),
            e("other", v6, false),
            e("client", v4, true),
            e("other", v4, false),
        ],
    );
    assert!(
        !sc.node.ping(sc.pod_ns("default", "other"), v6),
        "ICMPv6 echo is not allowed by the policy"
    );
    sc.apply("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\nspec: {selector: app == 'server', types: [Ingress], ingress: [{action: Allow, ipVersion: 6, source: {selector: app == 'client'}}, {action: Allow, protocol: ICMPv6, icmp: {type: 128}}]}\n");
    check(
        &sc.node,
        "IPv6 only",
        &[e("client", v6, true), e("client", v4, false)],
    );
    assert!(
        sc.node.ping(sc.pod_ns("default", "other"), v6),
        "ICMPv6 type 128 allowed"
    );
}

/// Seed 002's examples, as corrected: straight quotes, `matchLabels:` under
/// each selector, `ports` at rule level instead of `to:` in an ingress rule,
/// the second example renamed (the seed reuses the name), the external CIDR
/// 172.18.0.0/24 replaced by the test's outside network, and `types` with a
/// stray line written as `policyTypes: [Ingress, Egress]`.
const SEED_002_CORRECTED: [&str; 5] = [
    "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: allow-same-namespace, namespace: default}\nspec:\n  podSelector:\n    matchLabels: {\"color\": \"blue\"}\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {\"color\": \"red\"}\n    ports:\n    - port: 80\n",
    "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: allow-other-namespace, namespace: default}\nspec:\n  podSelector:\n    matchLabels: {\"color\": \"blue\"}\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {\"color\": \"red\"}\n      namespaceSelector:\n        matchLabels: {\"something\": \"else\"}\n    ports:\n    - port: 80\n",
    "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: allow-egress-same-namespace, namespace: default}\nspec:\n  podSelector:\n    matchLabels: {\"color\": \"blue\"}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector:\n        matchLabels: {\"color\": \"red\"}\n    ports:\n    - port: 80\n",
    "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: allow-egress-external, namespace: default}\nspec:\n  podSelector:\n    matchLabels: {\"color\": \"red\"}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock:\n        cidr: 198.18.100.0/24\n",
    "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: default-ingress-deny, namespace: policy-demo}\nspec:\n  podSelector:\n    matchLabels: {}\n  policyTypes:\n  - Ingress\n  - Egress\n",
];

#[test]
fn seed_002_examples_as_corrected() {
    if !kernel::require_kernel("seed_002") {
        return;
    }
    let mut sc = Sc::new("s002");
    sc.pod("default", "blue", "198.18.0.2", None, &[("color", "blue")]);
    sc.pod("default", "red", "198.18.0.3", None, &[("color", "red")]);
    sc.pod(
        "default",
        "green",
        "198.18.0.4",
        None,
        &[("color", "green")],
    );
    sc.pod("other", "red", "198.18.1.3", None, &[("color", "red")]);
    sc.pod("other2", "red", "198.18.2.3", None, &[("color", "red")]);
    sc.pod("policy-demo", "p1", "198.18.3.1", None, &[("app", "p1")]);
    sc.pod("policy-demo", "p2", "198.18.3.2", None, &[("app", "p2")]);
    sc.ns_labels
        .insert("other".into(), l(&[("something", "else")]));
    for (ns, n) in [
        ("default", "blue"),
        ("default", "red"),
        ("default", "green"),
        ("policy-demo", "p1"),
        ("policy-demo", "p2"),
    ] {
        sc.serve_pod(ns, n, &[(Proto::Tcp, 80), (Proto::Tcp, 81)]);
    }
    sc.serve_outside(&[(Proto::Tcp, 80)]);
    let e = |fns: &'static str,
             from: &'static str,
             tns: &'static str,
             to: &'static str,
             port: u16,
             allowed: bool| Expect {
        from: sc.pod_ns(fns, from),
        from_name: from,
        to: sc.ip(tns, to),
        to_name: to,
        port,
        proto: Proto::Tcp,
        allowed,
    };
    let out = |fns: &'static str, from: &'static str, allowed: bool| Expect {
        from: sc.pod_ns(fns, from),
        from_name: from,
        to: UPLINK_OUTSIDE_IP.parse().unwrap(),
        to_name: "outside",
        port: 80,
        proto: Proto::Tcp,
        allowed,
    };
    sc.apply(&SEED_002_CORRECTED[..2].join("---\n"));
    check(
        &sc.node,
        "ingress examples",
        &[
            e("default", "red", "default", "blue", 80, true),
            e("default", "red", "default", "blue", 81, false),
            e("default", "green", "default", "blue", 80, false),
            e("other", "red", "default", "blue", 80, true),
            e("other2", "red", "default", "blue", 80, false),
        ],
    );
    sc.apply(&SEED_002_CORRECTED[..3].join("---\n"));
    check(
        &sc.node,
        "egress same namespace",
        &[
            e("default", "blue", "default", "red", 80, true),
            e("default", "blue", "default", "red", 81, false),
            e("default", "blue", "default", "green", 80, false),
        ],
    );
    sc.apply(&SEED_002_CORRECTED[..4].join("---\n"));
    check(
        &sc.node,
        "egress to a CIDR",
        &[
            out("default", "red", true),
            e("default", "red", "default", "blue", 80, false),
            out("default", "green", true),
        ],
    );
    sc.apply(&SEED_002_CORRECTED.join("---\n"));
    check(
        &sc.node,
        "deny-all in policy-demo",
        &[
            e("policy-demo", "p1", "policy-demo", "p2", 80, false),
            e("policy-demo", "p2", "policy-demo", "p1", 80, false),
            out("policy-demo", "p1", false),
            e("default", "green", "policy-demo", "p1", 80, false),
            e("default", "green", "default", "red", 80, true),
        ],
    );
}

/// Issue 10: a `notSelector`-only peer in a namespaced Calico NetworkPolicy
/// reaches only the policy's own namespace (Calico's rule conversion adds
/// `projectcalico.org/namespace == '<ns>'` as soon as notSelector is set),
/// both in an Allow (ingress) and in a Deny (egress).
#[test]
fn namespaced_not_selector_peers_stay_in_their_namespace() {
    if !kernel::require_kernel("namespaced_not_selector_peers_stay_in_their_namespace") {
        return;
    }
    let mut sc = Sc::new("nots");
    sc.pod("a", "server", "198.18.0.2", None, &[("app", "server")]);
    sc.pod("a", "friend", "198.18.0.3", None, &[("app", "friend")]);
    sc.pod("a", "blocked", "198.18.0.4", None, &[("app", "blocked")]);
    sc.pod("b", "other", "198.18.0.5", None, &[("app", "other")]);
    for (ns, n) in [
        ("a", "server"),
        ("a", "friend"),
        ("a", "blocked"),
        ("b", "other"),
    ] {
        sc.serve_pod(ns, n, &[(Proto::Tcp, 80)]);
    }
    sc.serve_outside(&[(Proto::Tcp, 80)]);
    let to = |from: &'static str,
              from_ns: &'static str,
              to_ns: &'static str,
              to: &'static str,
              allowed| Expect {
        from: sc.pod_ns(from_ns, from),
        from_name: from,
        to: sc.ip(to_ns, to),
        to_name: to,
        port: 80,
        proto: Proto::Tcp,
        allowed,
    };
    let outside_ip: IpAddr = UPLINK_OUTSIDE_IP.parse().unwrap();
    sc.apply(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: allow-not-blocked, namespace: a}\nspec:\n  selector: app == 'server'\n  ingress:\n  - action: Allow\n    source: {notSelector: app == 'blocked'}\n",
    );
    let mut cells = vec![
        to("friend", "a", "a", "server", true),
        to("blocked", "a", "a", "server", false),
        // Another namespace, and an address that is no endpoint at all:
        // outside the peer, so not allowed.
        to("other", "b", "a", "server", false),
    ];
    cells.push(Expect {
        from: sc.outside(),
        from_name: "outside",
        to: sc.ip("a", "server"),
        to_name: "server",
        port: 80,
        proto: Proto::Tcp,
        allowed: false,
    });
    check(&sc.node, "allow notSelector", &cells);
    sc.apply(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: deny-not-blocked, namespace: a}\nspec:\n  selector: app == 'server'\n  types: [Egress]\n  egress:\n  - action: Deny\n    destination: {notSelector: app == 'blocked'}\n  - action: Allow\n",
    );
    let mut cells = vec![
        to("server", "a", "a", "friend", false),
        to("server", "a", "a", "blocked", true),
        // The Deny reaches only namespace a: other namespaces and outside
        // addresses fall through to the Allow.
        to("server", "a", "b", "other", true),
    ];
    cells.push(Expect {
        from: sc.pod_ns("a", "server"),
        from_name: "server",
        to: outside_ip,
        to_name: "outside",
        port: 80,
        proto: Proto::Tcp,
        allowed: true,
    });
    check(&sc.node, "deny notSelector", &cells);
}
