//! Synthetic clusters for benchmarks and scale tests: namespaces, pods with
//! labels, IPs and named ports spread over nodes, Kubernetes
//! NetworkPolicies and Calico GlobalNetworkPolicies with selectors, named
//! ports and nets, and network sets. Deterministic for a given size.

use std::collections::BTreeMap;

use crate::model::types::*;
use crate::model::{Object, Pod, Resource};

/// How big a cluster to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub namespaces: usize,
    /// Pods cluster-wide.
    pub pods: usize,
    /// Pods on the node being compiled (`node-0`).
    pub local_pods: usize,
    /// Kubernetes NetworkPolicies plus Calico GlobalNetworkPolicies.
    pub policies: usize,
    pub network_sets: usize,
}

impl Size {
    pub const S: Size = Size {
        namespaces: 10,
        pods: 1_000,
        local_pods: 20,
        policies: 100,
        network_sets: 10,
    };
    pub const M: Size = Size {
        namespaces: 50,
        pods: 10_000,
        local_pods: 50,
        policies: 1_000,
        network_sets: 50,
    };
    pub const L: Size = Size {
        namespaces: 100,
        pods: 100_000,
        local_pods: 100,
        policies: 10_000,
        network_sets: 100,
    };
    pub const XL: Size = Size {
        namespaces: 200,
        pods: 250_000,
        local_pods: 250,
        policies: 10_000,
        network_sets: 200,
    };

    pub fn by_name(name: &str) -> Option<Size> {
        Some(match name {
            "S" | "s" => Size::S,
            "M" | "m" => Size::M,
            "L" | "l" => Size::L,
            "XL" | "xl" => Size::XL,
            _ => return None,
        })
    }
}

/// A small deterministic generator (xorshift64*) for seeded random tests:
/// a failing sequence is replayed from its printed seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The node whose ruleset benchmarks compile.
pub const LOCAL_NODE: &str = "node-0";

fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn meta(name: String, namespace: Option<String>, l: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace,
        labels: l.into(),
        ..ObjectMeta::default()
    }
}

/// Addresses in 198.18.0.0/15 usable for pods (the .0 and .255 of each /24
/// are skipped).
const V4_PODS: usize = 512 * 254;

/// The address of pod `i`: from the test range 198.18.0.0/15 while it lasts,
/// then from fd74:6f72::/32.
pub fn pod_ip(i: usize) -> String {
    if i < V4_PODS {
        let block = i / 254;
        format!("198.{}.{}.{}", 18 + block / 256, block % 256, 1 + i % 254)
    } else {
        let n = i - V4_PODS + 1;
        format!("fd74:6f72::{:x}:{:x}", n >> 16, n & 0xffff)
    }
}

/// Apps per namespace: pods of one app share labels.
const APPS_PER_NAMESPACE: usize = 20;

/// Builds the cluster.
pub fn generate(size: Size) -> Vec<Resource> {
    let mut out = Vec::new();
    for n in 0..size.namespaces {
        out.push(Resource::Namespace(Object {
            metadata: meta(
                format!("ns-{n}"),
                None,
                labels(&[
                    ("team", format!("team-{}", n % 10)),
                    (
                        "env",
                        if n % 3 == 0 {
                            "prod".into()
                        } else {
                            "dev".into()
                        },
                    ),
                ]),
            ),
            spec: (),
        }));
    }
    let nodes = (size.pods / size.local_pods.max(1)).max(1);
    for i in 0..size.pods {
        let ns = i % size.namespaces;
        let app = (i / size.namespaces) % APPS_PER_NAMESPACE;
        // The first `local_pods` pods land on node-0; the rest spread out.
        let node = if i < size.local_pods {
            0
        } else {
            1 + i % nodes.max(1)
        };
        let ports = vec![ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            protocol: None,
        }];
        out.push(Resource::Pod(Pod {
            metadata: meta(
                format!("pod-{i}"),
                Some(format!("ns-{ns}")),
                labels(&[
                    ("app", format!("app-{app}")),
                    ("tier", ["web", "api", "db"][i % 3].to_string()),
                ]),
            ),
            spec: PodSpec {
                node_name: Some(format!("node-{node}").into()),
                service_account_name: None,
                host_network: false,
                containers: vec![Container { ports }],
            },
            status: PodStatus {
                pod_ip: Some(pod_ip(i)),
                pod_ips: vec![],
                phase: Some("Running".into()),
            },
        }));
    }
    for s in 0..size.network_sets {
        out.push(Resource::GlobalNetworkSet(Object {
            metadata: meta(
                format!("set-{s}"),
                None,
                labels(&[("feed", format!("feed-{}", s % 20))]),
            ),
            spec: NetworkSetSpec {
                nets: (0..10)
                    .map(|k| format!("172.{}.{}.0/24", 16 + s % 16, (s * 10 + k) % 256))
                    .collect(),
                allowed_egress_domains: None,
            },
        }));
    }
    let k8s = size.policies * 4 / 5;
    for p in 0..k8s {
        let ns = p % size.namespaces;
        let app = (p / size.namespaces) % APPS_PER_NAMESPACE;
        let peer_app = (app + 1) % APPS_PER_NAMESPACE;
        let sel = |k: &str, v: String| LabelSelector {
            match_labels: [(k.to_string(), v)].into(),
            match_expressions: vec![],
        };
        let from = vec![
            NetworkPolicyPeer {
                pod_selector: Some(sel("app", format!("app-{peer_app}"))),
                ..NetworkPolicyPeer::default()
            },
            NetworkPolicyPeer {
                namespace_selector: Some(sel("team", format!("team-{}", p % 10))),
                pod_selector: Some(sel("tier", "web".into())),
                ..NetworkPolicyPeer::default()
            },
        ];
        let ports = vec![
            NetworkPolicyPort {
                protocol: None,
                port: Some(IntOrString::Int(8080 + (p % 5) as i64)),
                end_port: None,
            },
            NetworkPolicyPort {
                protocol: None,
                port: Some(IntOrString::Str("http".into())),
                end_port: None,
            },
        ];
        out.push(Resource::K8sNetworkPolicy(Box::new(Object {
            metadata: meta(format!("np-{p}"), Some(format!("ns-{ns}")), BTreeMap::new()),
            spec: K8sNetworkPolicySpec {
                pod_selector: sel("app", format!("app-{app}")),
                ingress: vec![NetworkPolicyIngressRule { from, ports }],
                egress: vec![],
                policy_types: vec![PolicyType::Ingress],
            },
        })));
    }
    for g in 0..size.policies - k8s {
        let mut deny = Rule::allow();
        deny.action = Action::Deny;
        deny.source.selector = Some(format!("feed == 'feed-{}'", g % 20));
        let mut allow = Rule::allow();
        allow.protocol = Some(Protocol::Tcp);
        allow.destination.ports = vec![Port::Range(443, 443), Port::Range(8000, 8100)];
        allow.source.nets = vec![
            format!("192.168.{}.0/24", g % 256),
            format!("192.169.{}.0/24", g % 256),
        ];
        out.push(Resource::GlobalNetworkPolicy(Box::new(Object {
            metadata: meta(format!("gnp-{g}"), None, BTreeMap::new()),
            spec: PolicySpec {
                order: Some((g % 100) as f64),
                selector: Some(format!(
                    "app == 'app-{}' && tier == 'api'",
                    g % APPS_PER_NAMESPACE
                )),
                types: vec![PolicyType::Ingress],
                ingress: vec![deny, allow],
                ..PolicySpec::default()
            },
        })));
    }
    out
}
