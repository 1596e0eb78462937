//! ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`, from
//! kubernetes-sigs/network-policy-api v0.2.0): its typed spec as users
//! write it, and its conversion to a Calico GlobalNetworkPolicy placed the
//! way Calico 3.32 places it (libcalico-go
//! `lib/backend/k8s/conversion/clusternetworkpolicy.go`): tier `kube-admin`
//! (order 1000, before `default`) or `kube-baseline` (order 10,000,000,
//! after it), both with default action Pass; policy order = `priority`;
//! Accept → Allow, Deny → Deny, Pass → Pass; one rule per protocol group
//! and peer. Validation lives in `validate/cnp.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::Object;
use super::convert::{ORCHESTRATOR_LABEL, label_selector_text, simplify_ports};
use super::types::*;

/// The tier Calico gives Admin ClusterNetworkPolicies.
pub const ADMIN_TIER: &str = "kube-admin";
/// The tier Calico gives Baseline ClusterNetworkPolicies.
pub const BASELINE_TIER: &str = "kube-baseline";
/// The rule annotation that carries a rule's `name` (Calico's key).
pub const RULE_NAME_ANNOTATION: &str = "name";
/// Most rules per direction, peers per rule, protocols per rule and
/// networks per peer the API allows.
pub const MAX_ITEMS: usize = 25;
/// Highest `priority`.
pub const MAX_PRIORITY: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CnpTier {
    Admin,
    Baseline,
}

impl CnpTier {
    /// The Calico tier policies of this tier are placed in.
    pub fn calico_tier(self) -> &'static str {
        match self {
            CnpTier::Admin => ADMIN_TIER,
            CnpTier::Baseline => BASELINE_TIER,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CnpAction {
    Accept,
    Deny,
    Pass,
}

impl CnpAction {
    pub fn calico(self) -> Action {
        match self {
            CnpAction::Accept => Action::Allow,
            CnpAction::Deny => Action::Deny,
            CnpAction::Pass => Action::Pass,
        }
    }
}

/// Pods chosen by a namespace selector AND a pod selector.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespacedPod {
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    /// Required by the API; `None` is reported by validation.
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
}

/// `spec.subject`: exactly one of the two.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CnpSubject {
    #[serde(default)]
    pub namespaces: Option<LabelSelector>,
    #[serde(default)]
    pub pods: Option<NamespacedPod>,
}

/// An ingress or egress peer: exactly one field. `networks` is egress only;
/// `nodes` and `domainNames` (experimental upstream) are read so that
/// validation can say they are not supported.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CnpPeer {
    #[serde(default)]
    pub namespaces: Option<LabelSelector>,
    #[serde(default)]
    pub pods: Option<NamespacedPod>,
    #[serde(default)]
    pub networks: Option<Vec<String>>,
    #[serde(default)]
    pub nodes: Option<IgnoredAny>,
    #[serde(default)]
    pub domain_names: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnpPortRange {
    pub start: i64,
    pub end: i64,
}

/// A destination port: a number or a range (exactly one).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnpPort {
    #[serde(default)]
    pub number: Option<i64>,
    #[serde(default)]
    pub range: Option<CnpPortRange>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CnpProtoPorts {
    #[serde(default)]
    pub destination_port: Option<CnpPort>,
}

/// One `protocols` entry: exactly one field.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CnpProtocol {
    #[serde(default)]
    pub tcp: Option<CnpProtoPorts>,
    #[serde(default)]
    pub udp: Option<CnpProtoPorts>,
    #[serde(default)]
    pub sctp: Option<CnpProtoPorts>,
    #[serde(default)]
    pub destination_named_port: Option<String>,
}

/// An ingress (`from`) or egress (`to`) rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CnpRule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub action: Option<CnpAction>,
    #[serde(default)]
    pub from: Option<Vec<CnpPeer>>,
    #[serde(default)]
    pub to: Option<Vec<CnpPeer>>,
    #[serde(default)]
    pub protocols: Option<Vec<CnpProtocol>>,
}

impl CnpRule {
    /// The rule's peers (`from` or `to`, whichever is set).
    pub fn peers(&self) -> &[CnpPeer] {
        self.from
            .as_deref()
            .or(self.to.as_deref())
            .unwrap_or_default()
    }
}

/// `spec` of a ClusterNetworkPolicy. Required fields are options here so
/// that validation reports each missing one with its path.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterNetworkPolicySpec {
    #[serde(default)]
    pub tier: Option<CnpTier>,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub subject: Option<CnpSubject>,
    #[serde(default)]
    pub ingress: Vec<CnpRule>,
    #[serde(default)]
    pub egress: Vec<CnpRule>,
}

/// Converts a (validated) ClusterNetworkPolicy to the GlobalNetworkPolicy
/// Calico 3.32 makes of it.
pub fn convert_cnp(o: &Object<ClusterNetworkPolicySpec>) -> Object<PolicySpec> {
    let spec = &o.spec;
    let (ns_sel, pod_sel) = match &spec.subject {
        Some(CnpSubject {
            pods: Some(p),
            namespaces: None,
        }) => (
            label_selector_text(&p.namespace_selector, false),
            label_selector_text(&p.pod_selector.clone().unwrap_or_default(), true),
        ),
        Some(CnpSubject {
            namespaces: Some(ns),
            ..
        }) => (
            label_selector_text(ns, false),
            format!("{ORCHESTRATOR_LABEL} == 'k8s'"),
        ),
        // Validation rejects a missing subject; select nothing if one slips by.
        _ => ("all()".into(), format!("{ORCHESTRATOR_LABEL} == 'none'")),
    };
    let ingress: Vec<Rule> = spec.ingress.iter().flat_map(|r| rules(r, true)).collect();
    let egress: Vec<Rule> = spec.egress.iter().flat_map(|r| rules(r, false)).collect();
    let mut types = Vec::new();
    if !ingress.is_empty() {
        types.push(PolicyType::Ingress);
    }
    if !egress.is_empty() {
        types.push(PolicyType::Egress);
    }
    Object {
        metadata: ObjectMeta {
            name: o.metadata.name.clone(),
            ..ObjectMeta::default()
        },
        spec: PolicySpec {
            tier: Some(spec.tier.unwrap_or(CnpTier::Admin).calico_tier().into()),
            order: Some(spec.priority.unwrap_or(0) as f64),
            selector: Some(pod_sel),
            namespace_selector: Some(ns_sel),
            types,
            ingress,
            egress,
            ..PolicySpec::default()
        },
    }
}

/// The protocol groups of a rule, sorted as Calico sorts them (no
/// protocol first, then SCTP, TCP, UDP): `None` ports mean every port.
fn protocol_groups(protocols: &[CnpProtocol]) -> Vec<(Option<Protocol>, Option<Vec<Port>>)> {
    let mut groups: BTreeMap<&'static str, Option<Vec<Port>>> = BTreeMap::new();
    for p in protocols {
        let (key, port) = match p {
            CnpProtocol { tcp: Some(t), .. } => ("TCP", t.destination_port.as_ref().map(port_of)),
            CnpProtocol { udp: Some(t), .. } => ("UDP", t.destination_port.as_ref().map(port_of)),
            CnpProtocol { sctp: Some(t), .. } => ("SCTP", t.destination_port.as_ref().map(port_of)),
            CnpProtocol {
                destination_named_port: Some(n),
                ..
            } => ("", Some(Port::Named(n.clone()))),
            // An empty entry matches everything: only that group remains.
            _ => return vec![(None, None)],
        };
        let entry = groups.entry(key).or_insert_with(|| Some(Vec::new()));
        match (port, entry.as_mut()) {
            (None, _) => *entry = None,
            (Some(port), Some(list)) => list.push(port),
            (Some(_), None) => {}
        }
    }
    if groups.is_empty() {
        return vec![(None, None)];
    }
    groups
        .into_iter()
        .map(|(k, ports)| (Protocol::from_name(k), ports.map(simplify_ports)))
        .collect()
}

fn port_of(p: &CnpPort) -> Port {
    match (p.number, p.range) {
        (Some(n), _) => Port::Range(n as u16, n as u16),
        (None, Some(r)) => Port::Range(r.start as u16, r.end as u16),
        (None, None) => Port::Range(1, 65535),
    }
}

/// The entities a peer stands for (sources for ingress, destinations for
/// egress): one, except that `networks` of both families become one entity
/// per family (a Calico rule holds CIDRs of one family; Felix splits such
/// a rule by family the same way).
fn peer_entities(peer: &CnpPeer) -> Vec<EntityRule> {
    let mut e = EntityRule::default();
    if let Some(ns) = &peer.namespaces {
        e.namespace_selector = Some(label_selector_text(ns, false));
    } else if let Some(p) = &peer.pods {
        e.namespace_selector = Some(label_selector_text(&p.namespace_selector, false));
        e.selector = Some(label_selector_text(
            &p.pod_selector.clone().unwrap_or_default(),
            true,
        ));
    } else if let Some(nets) = &peer.networks {
        let nets: Vec<String> = nets.iter().map(|n| normalize_cidr(n)).collect();
        let (v6, v4): (Vec<String>, Vec<String>) = nets.into_iter().partition(|n| n.contains(':'));
        return [v4, v6]
            .into_iter()
            .filter(|n| !n.is_empty())
            .map(|nets| EntityRule {
                nets,
                ..EntityRule::default()
            })
            .collect();
    }
    vec![e]
}

/// A CIDR with its host bits cleared (`198.18.0.1/24` → `198.18.0.0/24`),
/// as Calico stores it.
pub fn normalize_cidr(text: &str) -> String {
    match text.parse::<ipnet::IpNet>() {
        Ok(n) => n.trunc().to_string(),
        Err(_) => text.to_string(),
    }
}

/// The Calico rules of one CNP rule: protocol groups × peers, in that order.
fn rules(rule: &CnpRule, ingress: bool) -> Vec<Rule> {
    let action = rule.action.unwrap_or(CnpAction::Deny).calico();
    let metadata = rule
        .name
        .as_ref()
        .filter(|n| !n.is_empty())
        .map(|n| RuleMetadata {
            annotations: BTreeMap::from([(RULE_NAME_ANNOTATION.to_string(), n.clone())]),
        });
    let protocols = rule.protocols.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    for (protocol, ports) in protocol_groups(protocols) {
        for entity in rule.peers().iter().flat_map(peer_entities) {
            let mut r = Rule::allow();
            r.action = action;
            r.protocol = protocol;
            r.metadata = metadata.clone();
            if ingress {
                r.source = entity;
            } else {
                r.destination = entity;
            }
            r.destination.ports = ports.clone().unwrap_or_default();
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests;
