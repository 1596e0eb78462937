//! ClusterNetworkPolicy: conversion cases (each expected GlobalNetworkPolicy
//! written by hand from Calico 3.32's conversion rules) and malformed
//! input, each error checked for its line, column, message and hint.

use std::path::Path;

use super::*;
use crate::model::Resource;
use crate::model::load::{LoadResult, load_str};

fn load(spec: &str) -> LoadResult {
    let text = format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: guard}}\nspec:\n{spec}"
    );
    load_str(&text, Path::new("cnp.yaml"))
}

fn cnp(spec: &str) -> Object<ClusterNetworkPolicySpec> {
    let r = load(spec);
    assert!(
        !r.has_errors(),
        "{:#?}",
        r.diagnostics
            .iter()
            .map(|d| d.one_line())
            .collect::<Vec<_>>()
    );
    match r.resources.into_iter().next().unwrap().resource {
        Resource::ClusterNetworkPolicy(o) => *o,
        other => panic!("{other:?}"),
    }
}

fn gnp(spec: &str) -> PolicySpec {
    let text = format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: guard}}\nspec:\n{spec}"
    );
    let r = load_str(&text, Path::new("gnp.yaml"));
    assert!(!r.has_errors(), "{:?}", r.diagnostics);
    match r.resources.into_iter().next().unwrap().resource {
        Resource::GlobalNetworkPolicy(o) => o.spec,
        other => panic!("{other:?}"),
    }
}

fn check(cnp_spec: &str, gnp_spec: &str) {
    let converted = convert_cnp(&cnp(cnp_spec));
    assert_eq!(converted.metadata.name.as_deref(), Some("guard"));
    assert_eq!(converted.spec, gnp(gnp_spec), "\nfrom:\n{cnp_spec}");
    let findings =
        crate::model::validate::validate(&Resource::GlobalNetworkPolicy(Box::new(converted)));
    assert!(findings.iter().all(|f| f.warning), "{findings:?}");
}

#[test]
fn admin_namespaces_subject_with_ordered_rules() {
    check(
        "  tier: Admin\n  priority: 10\n  subject: {namespaces: {matchLabels: {team: red}}}\n  ingress:\n  - name: no-blue\n    action: Deny\n    from: [{namespaces: {matchLabels: {team: blue}}}]\n  - action: Accept\n    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: mon}}}}]\n",
        "  tier: kube-admin\n  order: 10\n  namespaceSelector: \"team == 'red'\"\n  selector: \"projectcalico.org/orchestrator == 'k8s'\"\n  types: [Ingress]\n  ingress:\n  - action: Deny\n    metadata: {annotations: {name: no-blue}}\n    source: {namespaceSelector: \"team == 'blue'\"}\n  - action: Allow\n    source: {namespaceSelector: all(), selector: \"projectcalico.org/orchestrator == 'k8s' && app == 'mon'\"}\n",
    );
}

#[test]
fn baseline_pods_subject_egress_protocol_groups_by_peer() {
    // Protocol groups (none, SCTP, TCP, UDP) outside, peers inside; ports of
    // one protocol merged; named ports carry no protocol.
    check(
        "  tier: Baseline\n  priority: 1000\n  subject: {pods: {namespaceSelector: {matchLabels: {env: prod}}, podSelector: {matchLabels: {app: web}}}}\n  egress:\n  - action: Pass\n    to:\n    - networks: [198.18.5.7/24]\n    - namespaces: {}\n    protocols:\n    - udp: {destinationPort: {number: 53}}\n    - tcp: {destinationPort: {range: {start: 8000, end: 8080}}}\n    - tcp: {destinationPort: {number: 80}}\n  - action: Accept\n    to: [{pods: {namespaceSelector: {}, podSelector: {}}}]\n    protocols: [{destinationNamedPort: http}, {sctp: {destinationPort: {number: 9}}}]\n",
        "  tier: kube-baseline\n  order: 1000\n  namespaceSelector: \"env == 'prod'\"\n  selector: \"projectcalico.org/orchestrator == 'k8s' && app == 'web'\"\n  types: [Egress]\n  egress:\n  - action: Pass\n    protocol: TCP\n    destination: {nets: [198.18.5.0/24], ports: [80, '8000:8080']}\n  - action: Pass\n    protocol: TCP\n    destination: {namespaceSelector: all(), ports: [80, '8000:8080']}\n  - action: Pass\n    protocol: UDP\n    destination: {nets: [198.18.5.0/24], ports: [53]}\n  - action: Pass\n    protocol: UDP\n    destination: {namespaceSelector: all(), ports: [53]}\n  - action: Allow\n    destination: {namespaceSelector: all(), selector: \"projectcalico.org/orchestrator == 'k8s'\", ports: [http]}\n  - action: Allow\n    protocol: SCTP\n    destination: {namespaceSelector: all(), selector: \"projectcalico.org/orchestrator == 'k8s'\", ports: [9]}\n",
    );
}

#[test]
fn networks_of_both_families_become_one_rule_per_family() {
    check(
        "  tier: Admin\n  priority: 3\n  subject: {namespaces: {}}\n  egress:\n  - action: Deny\n    to: [{networks: ['fd74:6f72::1/64', 198.18.0.0/16, 198.19.0.0/16]}]\n",
        "  tier: kube-admin\n  order: 3\n  namespaceSelector: all()\n  selector: \"projectcalico.org/orchestrator == 'k8s'\"\n  types: [Egress]\n  egress:\n  - action: Deny\n    destination: {nets: [198.18.0.0/16, 198.19.0.0/16]}\n  - action: Deny\n    destination: {nets: ['fd74:6f72::/64']}\n",
    );
}

#[test]
fn no_rules_means_no_policy_types() {
    let c = convert_cnp(&cnp(
        "  tier: Admin\n  priority: 0\n  subject: {namespaces: {}}\n",
    ));
    assert!(c.spec.types.is_empty());
    assert_eq!(c.spec.namespace_selector.as_deref(), Some("all()"));
}

/// (line, column, message fragment, hint fragment)
type Expected = (usize, usize, &'static str, &'static str);

fn assert_errors(spec: &str, expected: &[Expected]) {
    let r = load(spec);
    let mut errors: Vec<_> = r.errors().collect();
    errors.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)));
    let lines: Vec<String> = errors.iter().map(|d| d.one_line()).collect();
    assert_eq!(errors.len(), expected.len(), "{lines:#?}");
    for (d, (line, col, msg, hint)) in errors.iter().zip(expected) {
        let pos = d.pos.expect("position");
        assert_eq!((pos.line, pos.col), (*line, *col), "{}", d.one_line());
        assert!(d.message.contains(msg), "{:?} lacks {msg:?}", d.message);
        let h = d.hint.clone().unwrap_or_default();
        assert!(h.contains(hint), "hint {h:?} lacks {hint:?}");
        assert_eq!(d.resource.as_deref(), Some("ClusterNetworkPolicy guard"));
    }
    assert!(r.resources.is_empty(), "an invalid resource was kept");
}

const SUBJECT: &str = "  subject: {namespaces: {}}\n";

#[test]
fn bad_tier_is_reported_with_the_choices() {
    assert_errors(
        &format!("  tier: Admn\n  priority: 1\n{SUBJECT}"),
        &[(5, 9, "Admn", "Admin")],
    );
}

#[test]
fn priority_out_of_range_and_missing_fields() {
    assert_errors(
        &format!("  tier: Admin\n  priority: 1001\n{SUBJECT}"),
        &[(
            6,
            13,
            "priority 1001 is out of range 0-1000",
            "0 (checked first)",
        )],
    );
    assert_errors(
        "  priority: 5\n",
        &[
            (5, 3, "needs `tier`", "tier: Admin"),
            (5, 3, "needs `subject`", "namespaces"),
        ],
    );
}

#[test]
fn subject_with_both_namespaces_and_pods() {
    assert_errors(
        "  tier: Admin\n  priority: 1\n  subject:\n    namespaces: {}\n    pods: {namespaceSelector: {}, podSelector: {}}\n",
        &[(9, 11, "both `namespaces` and `pods`", "keep one")],
    );
}

#[test]
fn unknown_action_and_missing_peers() {
    assert_errors(
        &format!(
            "  tier: Admin\n  priority: 1\n{SUBJECT}  ingress:\n  - action: Allow\n    from: [{{namespaces: {{}}}}]\n"
        ),
        &[(9, 13, "unknown value `Allow`", "Accept, Deny, Pass")],
    );
    // Decoding succeeded: validation reports the rule without peers.
    assert_errors(
        &format!(
            "  tier: Admin\n  priority: 1\n{SUBJECT}  ingress:\n  - action: Deny\n  - action: Pass\n    from: []\n"
        ),
        &[
            (9, 5, "at least one peer in `from`", "namespaces"),
            (11, 11, "at least one peer in `from`", "namespaces"),
        ],
    );
}

#[test]
fn bad_cidr_bare_address_and_networks_in_ingress() {
    assert_errors(
        &format!(
            "  tier: Admin\n  priority: 1\n{SUBJECT}  egress:\n  - action: Deny\n    to: [{{networks: [198.18.0.0/33, 198.18.0.9]}}]\n  ingress:\n  - action: Deny\n    from: [{{networks: [198.18.0.0/16]}}]\n"
        ),
        &[
            (10, 22, "`198.18.0.0/33` is not a CIDR", "198.18.0.0/24"),
            (10, 37, "`198.18.0.9` is not a CIDR", "198.18.0.9/32"),
            (13, 23, "egress only", "namespaces"),
        ],
    );
}

#[test]
fn bad_ports_and_named_port_towards_networks() {
    assert_errors(
        &format!(
            "  tier: Admin\n  priority: 1\n{SUBJECT}  egress:\n  - action: Deny\n    to: [{{networks: [198.18.0.0/16]}}]\n    protocols:\n    - tcp: {{destinationPort: {{number: 70000}}}}\n    - udp: {{destinationPort: {{range: {{start: 90, end: 80}}}}}}\n    - destinationNamedPort: http\n    - {{tcp: {{destinationPort: {{number: 1}}}}, destinationNamedPort: dns}}\n"
        ),
        &[
            (12, 39, "port 70000 is out of range", ""),
            (13, 38, "range start 90 must be less than end 80", "number"),
            (14, 29, "named port cannot be used", "port number"),
            (15, 67, "more than one of", "entry of its own"),
        ],
    );
}

#[test]
fn experimental_peers_and_wrong_api_version() {
    assert_errors(
        &format!(
            "  tier: Admin\n  priority: 1\n{SUBJECT}  egress:\n  - action: Deny\n    to: [{{nodes: {{}}}}]\n"
        ),
        &[(10, 18, "`nodes` peers", "networks")],
    );
    let r = load_str(
        "apiVersion: networking.k8s.io/v1\nkind: ClusterNetworkPolicy\nmetadata: {name: x}\nspec: {}\n",
        Path::new("x.yaml"),
    );
    let e: Vec<_> = r.errors().collect();
    assert_eq!(e.len(), 1);
    assert!(
        e[0].hint
            .as_deref()
            .unwrap_or("")
            .contains("policy.networking.k8s.io/v1alpha2"),
        "{}",
        e[0].one_line()
    );
}

#[test]
fn implicit_tiers_place_admin_before_and_baseline_after_networkpolicies() {
    use crate::calc::Cluster;
    let text = "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: base}\nspec: {tier: Baseline, priority: 0, subject: {namespaces: {}}, ingress: [{action: Deny, from: [{namespaces: {}}]}]}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: a}\nspec: {podSelector: {}}\n---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: late}\nspec: {tier: Admin, priority: 900, subject: {namespaces: {}}, ingress: [{action: Pass, from: [{namespaces: {}}]}]}\n---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: early}\nspec: {tier: Admin, priority: 2, subject: {namespaces: {}}, ingress: [{action: Accept, from: [{namespaces: {}}]}]}\n";
    let r = load_str(text, Path::new("tiers.yaml"));
    assert!(!r.has_errors(), "{:?}", r.diagnostics);
    let resources: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
    let c = Cluster::build(&resources, "n1");
    let order: Vec<String> = c.policies.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(
        order,
        ["kcnp/early", "kcnp/late", "knp/a/np", "kcnp/base"],
        "no Tier object names kube-admin or kube-baseline"
    );
    for (tier, order) in [(ADMIN_TIER, 1_000.0), (BASELINE_TIER, 10_000_000.0)] {
        let t = &c.tiers[tier];
        assert_eq!(t.order, Some(order));
        assert_eq!(t.default_action, TierAction::Pass);
    }
    assert!(c.notes.is_empty(), "{:?}", c.notes);
}
