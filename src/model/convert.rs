//! Kubernetes NetworkPolicy → Calico `projectcalico.org/v3` NetworkPolicy,
//! with Calico's conventions: tier `default`, order 1000, the orchestrator
//! clause in pod selectors, TCP by default, one Allow rule per peer and
//! protocol, `endPort` as a range, ipBlock `except` as `notNets`.
//! Also the implicit profiles that carry namespace (`kns.<ns>`) and
//! service-account (`ksa.<ns>.<sa>`) labels to endpoints.

use std::collections::{BTreeMap, BTreeSet};

use super::types::*;
use super::{LabelPairs, Object};

/// Order given to every converted Kubernetes policy.
pub const K8S_POLICY_ORDER: f64 = 1000.0;
pub const ORCHESTRATOR_LABEL: &str = "projectcalico.org/orchestrator";
pub const SERVICE_ACCOUNT_LABEL: &str = "projectcalico.org/serviceaccount";
pub const NAMESPACE_LABEL_PREFIX: &str = "pcns.";
pub const SERVICE_ACCOUNT_LABEL_PREFIX: &str = "pcsa.";
pub const NAME_LABEL: &str = "projectcalico.org/name";

fn quote(v: &str) -> String {
    if v.contains('\'') {
        format!("\"{v}\"")
    } else {
        format!("'{v}'")
    }
}

/// Selector text for a Kubernetes label selector. `orchestrator` adds the
/// `projectcalico.org/orchestrator == 'k8s'` clause used for pod selectors.
pub fn label_selector_text(sel: &LabelSelector, orchestrator: bool) -> String {
    let mut parts = Vec::new();
    if orchestrator {
        parts.push(format!("{ORCHESTRATOR_LABEL} == 'k8s'"));
    }
    for (k, v) in &sel.match_labels {
        parts.push(format!("{k} == {}", quote(v)));
    }
    for req in &sel.match_expressions {
        let values = || {
            req.values
                .iter()
                .map(|v| quote(v))
                .collect::<Vec<_>>()
                .join(", ")
        };
        parts.push(match req.operator.as_str() {
            "In" => format!("{} in {{ {} }}", req.key, values()),
            "NotIn" => format!("{} not in {{ {} }}", req.key, values()),
            "Exists" => format!("has({})", req.key),
            _ => format!("! has({})", req.key),
        });
    }
    if parts.is_empty() {
        "all()".into()
    } else {
        parts.join(" && ")
    }
}

/// The policy types a Kubernetes API server would default to: the given
/// ones, or Ingress plus Egress when there are egress rules.
pub fn k8s_policy_types(spec: &K8sNetworkPolicySpec) -> Vec<PolicyType> {
    if !spec.policy_types.is_empty() {
        let mut t = spec.policy_types.clone();
        t.sort();
        t.dedup();
        return t;
    }
    if spec.egress.is_empty() {
        vec![PolicyType::Ingress]
    } else {
        vec![PolicyType::Ingress, PolicyType::Egress]
    }
}

/// Converts a (validated) Kubernetes NetworkPolicy.
pub fn convert_k8s_policy(np: &Object<K8sNetworkPolicySpec>) -> Object<PolicySpec> {
    let spec = &np.spec;
    let types = k8s_policy_types(spec);
    let ingress = if types.contains(&PolicyType::Ingress) {
        spec.ingress
            .iter()
            .flat_map(|r| convert_rule(&r.from, &r.ports, true))
            .collect()
    } else {
        Vec::new()
    };
    let egress = if types.contains(&PolicyType::Egress) {
        spec.egress
            .iter()
            .flat_map(|r| convert_rule(&r.to, &r.ports, false))
            .collect()
    } else {
        Vec::new()
    };
    Object {
        metadata: ObjectMeta {
            name: np.metadata.name.clone(),
            namespace: np.metadata.namespace.clone(),
            ..ObjectMeta::default()
        },
        spec: PolicySpec {
            tier: Some("default".into()),
            order: Some(K8S_POLICY_ORDER),
            selector: Some(label_selector_text(&spec.pod_selector, true)),
            types,
            ingress,
            egress,
            ..PolicySpec::default()
        },
    }
}

/// Per-protocol port lists; `None` ports mean every port of the protocol.
fn group_ports(ports: &[NetworkPolicyPort]) -> Vec<(Protocol, Option<Vec<Port>>)> {
    let mut groups: BTreeMap<String, Option<Vec<Port>>> = BTreeMap::new();
    for p in ports {
        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let entry = groups.entry(proto).or_insert_with(|| Some(Vec::new()));
        match (&p.port, entry.as_mut()) {
            (None, _) => *entry = None,
            (_, None) => {}
            (Some(IntOrString::Int(n)), Some(list)) => {
                let lo = *n as u16;
                let hi = p.end_port.map(|e| e as u16).unwrap_or(lo);
                list.push(Port::Range(lo, hi));
            }
            (Some(IntOrString::Str(name)), Some(list)) => list.push(Port::Named(name.clone())),
        }
    }
    groups
        .into_iter()
        .map(|(proto, ports)| {
            let proto = Protocol::from_name(&proto).unwrap_or(Protocol::Tcp);
            (proto, ports.map(simplify_ports))
        })
        .collect()
}

/// Sorts ports, merges overlapping or adjacent numeric ranges, and removes
/// duplicate names.
pub fn simplify_ports(ports: Vec<Port>) -> Vec<Port> {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    let mut names = BTreeSet::new();
    for p in ports {
        match p {
            Port::Range(a, b) => ranges.push((a, b)),
            Port::Named(n) => {
                names.insert(n);
            }
        }
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some((_, hi)) if u32::from(a) <= u32::from(*hi) + 1 => *hi = (*hi).max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
        .into_iter()
        .map(|(a, b)| Port::Range(a, b))
        .chain(names.into_iter().map(Port::Named))
        .collect()
}

fn convert_peer(peer: &NetworkPolicyPeer) -> EntityRule {
    let mut e = EntityRule::default();
    if let Some(block) = &peer.ip_block {
        e.nets = vec![block.cidr.clone()];
        e.not_nets = block.except.clone();
        return e;
    }
    match (&peer.pod_selector, &peer.namespace_selector) {
        (Some(pod), None) => e.selector = Some(label_selector_text(pod, true)),
        (pod, Some(ns)) => {
            e.selector = Some(match pod {
                Some(p) => label_selector_text(p, true),
                None => format!("{ORCHESTRATOR_LABEL} == 'k8s'"),
            });
            e.namespace_selector = Some(label_selector_text(ns, false));
        }
        (None, None) => {}
    }
    e
}

fn convert_rule(
    peers: &[NetworkPolicyPeer],
    ports: &[NetworkPolicyPort],
    ingress: bool,
) -> Vec<Rule> {
    let peer_entities: Vec<EntityRule> = if peers.is_empty() {
        vec![EntityRule::default()]
    } else {
        peers.iter().map(convert_peer).collect()
    };
    let groups: Vec<(Option<Protocol>, Vec<Port>)> = if ports.is_empty() {
        vec![(None, Vec::new())]
    } else {
        group_ports(ports)
            .into_iter()
            .map(|(proto, ports)| (Some(proto), ports.unwrap_or_default()))
            .collect()
    };
    let mut rules = Vec::new();
    for peer in &peer_entities {
        for (proto, ports) in &groups {
            let mut rule = Rule::allow();
            rule.protocol = *proto;
            if ingress {
                rule.source = peer.clone();
                rule.destination.ports = ports.clone();
            } else {
                rule.destination = peer.clone();
                rule.destination.ports = ports.clone();
            }
            rules.push(rule);
        }
    }
    rules
}

/// The implicit profile of a namespace: allows everything and applies the
/// namespace's labels as `pcns.<key>` (plus `pcns.projectcalico.org/name`).
pub fn namespace_profile(name: &str, labels: &LabelPairs) -> Object<ProfileSpec> {
    let mut apply: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (format!("{NAMESPACE_LABEL_PREFIX}{k}"), v.clone()))
        .collect();
    apply.insert(
        format!("{NAMESPACE_LABEL_PREFIX}{NAME_LABEL}"),
        name.to_string(),
    );
    Object {
        metadata: ObjectMeta {
            name: Some(format!("kns.{name}")),
            ..ObjectMeta::default()
        },
        spec: ProfileSpec {
            ingress: vec![Rule::allow()],
            egress: vec![Rule::allow()],
            labels_to_apply: apply,
        },
    }
}

/// The implicit profile of a service account: applies its labels as `pcsa.<key>`.
pub fn service_account_profile(
    namespace: &str,
    name: &str,
    labels: &LabelPairs,
) -> Object<ProfileSpec> {
    let mut apply: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{k}"), v.clone()))
        .collect();
    apply.insert(
        format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{NAME_LABEL}"),
        name.to_string(),
    );
    Object {
        metadata: ObjectMeta {
            name: Some(format!("ksa.{namespace}.{name}")),
            ..ObjectMeta::default()
        },
        spec: ProfileSpec {
            ingress: Vec::new(),
            egress: Vec::new(),
            labels_to_apply: apply,
        },
    }
}

#[cfg(test)]
mod tests;
