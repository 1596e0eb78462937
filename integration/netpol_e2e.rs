//! The upstream Kubernetes NetworkPolicy e2e cases (test/e2e/network/netpol),
//! on their topology: namespaces x, y, z; pods a, b, c in each (labels
//! `pod=<name>`, namespaces labelled `ns=<name>` and
//! `kubernetes.io/metadata.name`); servers on ports 80 and 81 over TCP and
//! UDP, with named ports `serve-<port>-<proto>`. Each case writes its
//! expected truth table from the case's description; every cell is probed
//! with real packets (loopback cells are skipped, as upstream does).

mod support;

use std::collections::BTreeMap;

use support::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct P {
    ns: char,
    pod: char,
}

fn p(s: &str) -> P {
    let b = s.as_bytes();
    P {
        ns: b[0] as char,
        pod: b[2] as char,
    }
}

const NAMESPACES: [char; 3] = ['x', 'y', 'z'];
const PODS: [char; 3] = ['a', 'b', 'c'];

fn ip_of(pp: P) -> String {
    let n = NAMESPACES.iter().position(|c| *c == pp.ns).unwrap() + 1;
    let m = PODS.iter().position(|c| *c == pp.pod).unwrap() + 1;
    format!("198.18.{n}.{m}")
}

struct World {
    node: Node,
    _servers: Vec<Servers>,
}

fn world(tag: &str) -> World {
    let mut node = Node::new(tag);
    for ns in NAMESPACES {
        for pod in PODS {
            node.add_pod(
                &ns.to_string(),
                &pod.to_string(),
                &ip_of(P { ns, pod }),
                None,
            );
        }
    }
    let ports = [
        (Proto::Tcp, 80),
        (Proto::Tcp, 81),
        (Proto::Udp, 80),
        (Proto::Udp, 81),
    ];
    let servers = node
        .pods
        .iter()
        .map(|pod| Servers::start(&pod.ns, &format!("{}/{}", pod.namespace, pod.name), &ports))
        .collect();
    World {
        node,
        _servers: servers,
    }
}

type Expect = dyn Fn(P, P, u16, Proto) -> bool;

impl World {
    fn cluster(
        &self,
        extra_pod_labels: &[(&str, &str, &str)],
        extra_ns_labels: &[(&str, &str, &str)],
    ) -> String {
        let mut labels = BTreeMap::new();
        for pod in &self.node.pods {
            let mut l = vec![("pod".to_string(), pod.name.clone())];
            for (who, k, v) in extra_pod_labels {
                if *who == format!("{}/{}", pod.namespace, pod.name) {
                    l.push((k.to_string(), v.to_string()));
                }
            }
            labels.insert((pod.namespace.clone(), pod.name.clone()), l);
        }
        let mut ns_labels = BTreeMap::new();
        for ns in NAMESPACES {
            let mut l = vec![("ns".to_string(), ns.to_string())];
            for (who, k, v) in extra_ns_labels {
                if *who == ns.to_string() {
                    l.push((k.to_string(), v.to_string()));
                }
            }
            ns_labels.insert(ns.to_string(), l);
        }
        self.node.cluster_yaml(&labels, &ns_labels)
    }

    /// Applies the policies (with optional extra labels) and checks all cells.
    fn phase(
        &self,
        name: &str,
        policies: &[&str],
        pod_labels: &[(&str, &str, &str)],
        ns_labels: &[(&str, &str, &str)],
        expect: &Expect,
    ) {
        let mut y = self.cluster(pod_labels, ns_labels);
        for pol in policies {
            y.push_str("---\n");
            y.push_str(pol);
            y.push('\n');
        }
        self.node.apply_yaml(&y);
        let mut cells = Vec::new();
        for from in self.node.pods.iter() {
            for to in self.node.pods.iter() {
                if std::ptr::eq(from, to) {
                    continue;
                }
                let f = P {
                    ns: from.namespace.chars().next().unwrap(),
                    pod: from.name.chars().next().unwrap(),
                };
                let t = P {
                    ns: to.namespace.chars().next().unwrap(),
                    pod: to.name.chars().next().unwrap(),
                };
                for port in [80u16, 81] {
                    for proto in [Proto::Tcp, Proto::Udp] {
                        cells.push((
                            Probe {
                                from: from.ns.path(),
                                to: to.ip4,
                                port,
                                proto,
                            },
                            expect(f, t, port, proto),
                            format!(
                                "{name}: {}/{} -> {}/{}:{port} {proto:?}",
                                f.ns, f.pod, t.ns, t.pod
                            ),
                        ));
                    }
                }
            }
        }
        assert_eq!(cells.len(), 288);
        if let Err(e) = self.node.check_truth_table(&cells) {
            panic!("{e}");
        }
    }
}

fn np(ns: char, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}"
    )
}

fn case(tag: &str, policies: &[String], expect: &Expect) {
    if !kernel::require_kernel(tag) {
        return;
    }
    let w = world(tag);
    let refs: Vec<&str> = policies.iter().map(String::as_str).collect();
    w.phase(tag, &refs, &[], &[], expect);
}

const XA: &str = "{podSelector: {matchLabels: {pod: a}}";

fn to_xa(t: P) -> bool {
    t.ns == 'x' && t.pod == 'a'
}

#[test]
fn e01_default_deny_ingress() {
    case(
        "e01",
        &[np('x', "deny", "{podSelector: {}, policyTypes: [Ingress]}")],
        &|_, t, _, _| t.ns != 'x',
    );
}

#[test]
fn e02_default_deny_all() {
    case(
        "e02",
        &[np(
            'x',
            "deny",
            "{podSelector: {}, policyTypes: [Ingress, Egress]}",
        )],
        &|f, t, _, _| f.ns != 'x' && t.ns != 'x',
    );
}

#[test]
fn e03_allow_from_pods_in_server_namespace_by_pod_selector() {
    case(
        "e03",
        &[np(
            'x',
            "p",
            &format!("{XA}, ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}"),
        )],
        &|f, t, _, _| !to_xa(t) || f == p("x/b"),
    );
}

#[test]
fn e04_allow_ingress_for_a_target() {
    case(
        "e04",
        &[
            np('x', "deny", "{podSelector: {}, policyTypes: [Ingress]}"),
            np('x', "allow-a", &format!("{XA}, ingress: [{{}}]}}")),
        ],
        &|_, t, _, _| t.ns != 'x' || t.pod == 'a',
    );
}

#[test]
fn e05_allow_from_all_namespaces() {
    case(
        "e05",
        &[np(
            'x',
            "p",
            &format!("{XA}, ingress: [{{from: [{{namespaceSelector: {{}}}}]}}]}}"),
        )],
        &|_, _, _, _| true,
    );
}

#[test]
fn e06_allow_only_from_other_namespace_by_namespace_selector() {
    case(
        "e06",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}]}}]}}"
            ),
        )],
        &|f, t, _, _| !to_xa(t) || f.ns == 'y',
    );
}

#[test]
fn e07_pod_selector_match_expressions() {
    case(
        "e07",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, ingress: [{{from: [{{podSelector: {{matchExpressions: [{{key: pod, operator: In, values: [b]}}]}}}}]}}]}}"
            ),
        )],
        &|f, t, _, _| !to_xa(t) || f == p("x/b"),
    );
}

#[test]
fn e08_namespace_selector_match_expressions() {
    case(
        "e08",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, ingress: [{{from: [{{namespaceSelector: {{matchExpressions: [{{key: ns, operator: In, values: [y]}}]}}}}]}}]}}"
            ),
        )],
        &|f, t, _, _| !to_xa(t) || f.ns == 'y',
    );
}

#[test]
fn e09_pod_selector_or_namespace_selector() {
    case(
        "e09",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}, {{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}"
            ),
        )],
        &|f, t, _, _| !to_xa(t) || f.ns == 'y' || f == p("x/b"),
    );
}

#[test]
fn e10_pod_selector_and_namespace_selector() {
    case(
        "e10",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, ingress: [{{from: [{{namespaceSelector: {{matchExpressions: [{{key: ns, operator: In, values: [y, z]}}]}}, podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}"
            ),
        )],
        &|f, t, _, _| !to_xa(t) || (f.pod == 'b' && f.ns != 'x'),
    );
}

#[test]
fn e11_multiple_pod_and_namespace_selectors() {
    case(
        "e11",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, ingress: [{{from: [{{namespaceSelector: {{matchExpressions: [{{key: ns, operator: NotIn, values: [x]}}]}}, podSelector: {{matchExpressions: [{{key: pod, operator: In, values: [b, c]}}]}}}}]}}]}}"
            ),
        )],
        &|f, t, _, _| !to_xa(t) || (f.ns != 'x' && (f.pod == 'b' || f.pod == 'c')),
    );
}

#[test]
fn e12_any_pod_selectors() {
    case(
        "e12",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}, {{podSelector: {{matchLabels: {{pod: c}}}}}}]}}]}}"
            ),
        )],
        &|f, t, _, _| !to_xa(t) || f == p("x/b") || f == p("x/c"),
    );
}

#[test]
fn e13_only_a_pod_in_another_namespace() {
    case(
        "e13",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}, podSelector: {{matchLabels: {{pod: a}}}}}}]}}]}}"
            ),
        )],
        &|f, t, _, _| !to_xa(t) || f == p("y/a"),
    );
}

#[test]
fn e14_ports() {
    case(
        "e14",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}], ports: [{{port: 81, protocol: TCP}}]}}]}}"
            ),
        )],
        &|f, t, port, proto| !to_xa(t) || (f.ns == 'y' && port == 81 && proto == Proto::Tcp),
    );
}

#[test]
fn e15_stacked_policies_with_overlapping_pod_selectors() {
    case(
        "e15",
        &[
            np(
                'x',
                "p81",
                &format!(
                    "{XA}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}], ports: [{{port: 81}}]}}]}}"
                ),
            ),
            np(
                'x',
                "p80",
                &format!(
                    "{XA}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}], ports: [{{port: 80}}]}}]}}"
                ),
            ),
        ],
        &|f, t, _, proto| !to_xa(t) || (f.ns == 'y' && proto == Proto::Tcp),
    );
}

#[test]
fn e16_allow_all() {
    case(
        "e16",
        &[np('x', "p", "{podSelector: {}, ingress: [{}]}")],
        &|_, _, _, _| true,
    );
}

#[test]
fn e17_ingress_on_one_named_port() {
    case(
        "e17",
        &[np(
            'x',
            "p",
            &format!("{XA}, ingress: [{{ports: [{{port: serve-81-tcp}}]}}]}}"),
        )],
        &|_, t, port, proto| !to_xa(t) || (port == 81 && proto == Proto::Tcp),
    );
}

#[test]
fn e18_ingress_from_namespace_on_one_named_port() {
    case(
        "e18",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}], ports: [{{port: serve-80-tcp}}]}}]}}"
            ),
        )],
        &|f, t, port, proto| !to_xa(t) || (f.ns == 'y' && port == 80 && proto == Proto::Tcp),
    );
}

#[test]
fn e19_egress_on_one_named_port() {
    case(
        "e19",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, policyTypes: [Egress], egress: [{{ports: [{{port: serve-80-tcp}}]}}]}}"
            ),
        )],
        &|f, _, port, proto| f != p("x/a") || (port == 80 && proto == Proto::Tcp),
    );
}

#[test]
fn e20_updated_policy() {
    if !kernel::require_kernel("e20") {
        return;
    }
    let w = world("e20");
    w.phase(
        "e20 allow-all",
        &[&np('x', "p", &format!("{XA}, ingress: [{{}}]}}"))],
        &[],
        &[],
        &|_, _, _, _| true,
    );
    w.phase(
        "e20 deny-all",
        &[&np('x', "p", &format!("{XA}, policyTypes: [Ingress]}}"))],
        &[],
        &[],
        &|_, t, _, _| !to_xa(t),
    );
}

#[test]
fn e21_ingress_from_updated_namespace() {
    if !kernel::require_kernel("e21") {
        return;
    }
    let w = world("e21");
    let pol = np(
        'x',
        "p",
        &format!(
            "{XA}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns2: updated}}}}}}]}}]}}"
        ),
    );
    w.phase("e21 before", &[&pol], &[], &[], &|_, t, _, _| !to_xa(t));
    w.phase(
        "e21 after labelling y",
        &[&pol],
        &[],
        &[("y", "ns2", "updated")],
        &|f, t, _, _| !to_xa(t) || f.ns == 'y',
    );
}

#[test]
fn e22_ingress_from_updated_pod() {
    if !kernel::require_kernel("e22") {
        return;
    }
    let w = world("e22");
    let pol = np(
        'x',
        "p",
        &format!(
            "{XA}, ingress: [{{from: [{{podSelector: {{matchLabels: {{pod2: updated}}}}}}]}}]}}"
        ),
    );
    w.phase("e22 before", &[&pol], &[], &[], &|_, t, _, _| !to_xa(t));
    w.phase(
        "e22 after labelling x/b",
        &[&pol],
        &[("x/b", "pod2", "updated")],
        &[],
        &|f, t, _, _| !to_xa(t) || f == p("x/b"),
    );
}

#[test]
fn e23_deny_ingress_from_other_namespaces() {
    case(
        "e23",
        &[np(
            'x',
            "p",
            "{podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}",
        )],
        &|f, t, _, _| t.ns != 'x' || f.ns == 'x',
    );
}

#[test]
fn e24_deny_ingress_to_updated_pod() {
    if !kernel::require_kernel("e24") {
        return;
    }
    let w = world("e24");
    let pol = np(
        'x',
        "p",
        "{podSelector: {matchLabels: {target: isolated}}, policyTypes: [Ingress]}",
    );
    w.phase("e24 before", &[&pol], &[], &[], &|_, _, _, _| true);
    w.phase(
        "e24 after labelling x/a",
        &[&pol],
        &[("x/a", "target", "isolated")],
        &[],
        &|_, t, _, _| !to_xa(t),
    );
}

#[test]
fn e25_deny_egress_by_pod_selector() {
    case(
        "e25",
        &[np('x', "p", &format!("{XA}, policyTypes: [Egress]}}"))],
        &|f, _, _, _| f != p("x/a"),
    );
}

#[test]
fn e26_deny_egress_from_a_namespace() {
    case(
        "e26",
        &[np('x', "p", "{podSelector: {}, policyTypes: [Egress]}")],
        &|f, _, _, _| f.ns != 'x',
    );
}

#[test]
fn e27_ingress_and_egress_together() {
    case(
        "e27",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, policyTypes: [Ingress, Egress], ingress: [{{}}], egress: [{{ports: [{{port: 80}}]}}]}}"
            ),
        )],
        &|f, _, port, proto| f != p("x/a") || (port == 80 && proto == Proto::Tcp),
    );
}

#[test]
fn e28_client_side_egress_deny_wins_over_server_allow() {
    case(
        "e28",
        &[
            np(
                'x',
                "deny-egress",
                &format!("{XA}, policyTypes: [Egress]}}"),
            ),
            np(
                'y',
                "allow-from-xa",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}]}]}",
            ),
        ],
        &|f, t, _, _| f != p("x/a") && (t.ns != 'y' || f == p("x/a")),
    );
}

#[test]
fn e29_egress_to_other_namespace_by_pod_and_namespace_selector() {
    case(
        "e29",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, policyTypes: [Egress], egress: [{{to: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}, podSelector: {{matchLabels: {{pod: a}}}}}}]}}]}}"
            ),
        )],
        &|f, t, _, _| f != p("x/a") || t == p("y/a"),
    );
}

#[test]
fn e30_any_port_on_a_specific_protocol() {
    case(
        "e30",
        &[np(
            'x',
            "p",
            &format!("{XA}, ingress: [{{ports: [{{protocol: TCP}}]}}]}}"),
        )],
        &|_, t, _, proto| !to_xa(t) || proto == Proto::Tcp,
    );
}

#[test]
fn e31_ingress_allow_all_takes_precedence() {
    case(
        "e31",
        &[
            np(
                'x',
                "only-b-80",
                &format!(
                    "{XA}, ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}], ports: [{{port: 80}}]}}]}}"
                ),
            ),
            np('x', "allow-all", &format!("{XA}, ingress: [{{}}]}}")),
        ],
        &|_, _, _, _| true,
    );
}

#[test]
fn e32_egress_allow_all_takes_precedence() {
    case(
        "e32",
        &[
            np(
                'x',
                "only-80",
                &format!("{XA}, policyTypes: [Egress], egress: [{{ports: [{{port: 80}}]}}]}}"),
            ),
            np(
                'x',
                "allow-all",
                &format!("{XA}, policyTypes: [Egress], egress: [{{}}]}}"),
            ),
        ],
        &|_, _, _, _| true,
    );
}

#[test]
fn e33_stop_enforcing_deleted_policies() {
    if !kernel::require_kernel("e33") {
        return;
    }
    let w = world("e33");
    w.phase(
        "e33 deny-all",
        &[&np('x', "p", "{podSelector: {}, policyTypes: [Ingress]}")],
        &[],
        &[],
        &|_, t, _, _| t.ns != 'x',
    );
    w.phase("e33 deleted", &[], &[], &[], &|_, _, _, _| true);
}

#[test]
fn e34_egress_to_a_cidr_block() {
    let yb = ip_of(p("y/b"));
    case(
        "e34",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, policyTypes: [Egress], egress: [{{to: [{{ipBlock: {{cidr: {yb}/32}}}}]}}]}}"
            ),
        )],
        &|f, t, _, _| f != p("x/a") || t == p("y/b"),
    );
}

#[test]
fn e35_egress_cidr_block_with_except() {
    let yb = ip_of(p("y/b"));
    case(
        "e35",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, policyTypes: [Egress], egress: [{{to: [{{ipBlock: {{cidr: 192.0.0.0/4, except: [{yb}/32]}}}}]}}]}}"
            ),
        )],
        &|f, t, _, _| f != p("x/a") || t != p("y/b"),
    );
}

#[test]
fn e36_ip_in_cidr_and_except_allowed_by_another_policy() {
    let yb = ip_of(p("y/b"));
    case(
        "e36",
        &[
            np(
                'x',
                "p",
                &format!(
                    "{XA}, policyTypes: [Egress], egress: [{{to: [{{ipBlock: {{cidr: 192.0.0.0/4, except: [{yb}/32]}}}}]}}]}}"
                ),
            ),
            np(
                'x',
                "p2",
                &format!(
                    "{XA}, policyTypes: [Egress], egress: [{{to: [{{ipBlock: {{cidr: {yb}/32}}}}]}}]}}"
                ),
            ),
        ],
        &|_, _, _, _| true,
    );
}

#[test]
fn e37_ingress_and_egress_independently() {
    case(
        "e37",
        &[
            np(
                'x',
                "in",
                &format!(
                    "{XA}, ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}"
                ),
            ),
            np(
                'x',
                "out",
                &format!(
                    "{XA}, policyTypes: [Egress], egress: [{{to: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}"
                ),
            ),
        ],
        &|f, t, _, _| (!to_xa(t) || f == p("x/b")) && (f != p("x/a") || t == p("x/b")),
    );
}

#[test]
fn e38_sctp_is_not_tcp() {
    case(
        "e38",
        &[np(
            'x',
            "p",
            &format!("{XA}, ingress: [{{ports: [{{port: 80, protocol: SCTP}}]}}]}}"),
        )],
        &|_, t, _, _| !to_xa(t),
    );
}

#[test]
fn e39_pods_selected_by_an_sctp_policy_are_isolated() {
    case(
        "e39",
        &[np(
            'x',
            "p",
            "{podSelector: {}, ingress: [{ports: [{protocol: SCTP}]}]}",
        )],
        &|_, t, _, _| t.ns != 'x',
    );
}

#[test]
fn e40_udp_only_policy_does_not_allow_tcp() {
    case(
        "e40",
        &[np(
            'x',
            "p",
            &format!("{XA}, ingress: [{{ports: [{{port: 81, protocol: UDP}}]}}]}}"),
        )],
        &|_, t, port, proto| !to_xa(t) || (port == 81 && proto == Proto::Udp),
    );
}

#[test]
fn e41_namespace_selector_default_name_label() {
    case(
        "e41",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: y}}}}}}]}}]}}"
            ),
        )],
        &|f, t, _, _| !to_xa(t) || f.ns == 'y',
    );
}

#[test]
fn e42_namespace_selector_expressions_default_name_label_egress() {
    case(
        "e42",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, policyTypes: [Egress], egress: [{{to: [{{namespaceSelector: {{matchExpressions: [{{key: kubernetes.io/metadata.name, operator: NotIn, values: [y]}}]}}}}]}}]}}"
            ),
        )],
        &|f, t, _, _| f != p("x/a") || t.ns != 'y',
    );
}

#[test]
fn udp_default_deny_ingress() {
    case(
        "u01",
        &[np('x', "deny", "{podSelector: {}, policyTypes: [Ingress]}")],
        &|_, t, _, _| t.ns != 'x',
    );
}

#[test]
fn udp_ports() {
    case(
        "u02",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}], ports: [{{port: 81, protocol: UDP}}]}}]}}"
            ),
        )],
        &|f, t, port, proto| !to_xa(t) || (f.ns == 'y' && port == 81 && proto == Proto::Udp),
    );
}

#[test]
fn udp_only_a_pod_in_another_namespace() {
    case(
        "u03",
        &[np(
            'x',
            "p",
            &format!(
                "{XA}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}, podSelector: {{matchLabels: {{pod: a}}}}}}], ports: [{{protocol: UDP}}]}}]}}"
            ),
        )],
        &|f, t, _, proto| !to_xa(t) || (f == p("y/a") && proto == Proto::Udp),
    );
}
