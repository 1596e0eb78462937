//! Each case: a Kubernetes NetworkPolicy and the Calico policy written out
//! by hand from the conversion rules.

use std::path::Path;

use super::*;
use crate::model::Resource;
use crate::model::load::load_str;

fn k8s(spec: &str) -> Object<K8sNetworkPolicySpec> {
    let text = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: ns1}}\nspec:\n{spec}"
    );
    let r = load_str(&text, Path::new("k8s.yaml"));
    assert!(!r.has_errors(), "{:?}", r.diagnostics);
    match r.resources.into_iter().next().unwrap().resource {
        Resource::K8sNetworkPolicy(o) => *o,
        other => panic!("{other:?}"),
    }
}

fn calico(spec: &str) -> PolicySpec {
    let text = format!(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: ns1}}\nspec:\n{spec}"
    );
    let r = load_str(&text, Path::new("calico.yaml"));
    assert!(!r.has_errors(), "{:?}", r.diagnostics);
    match r.resources.into_iter().next().unwrap().resource {
        Resource::NetworkPolicy(o) => o.spec,
        other => panic!("{other:?}"),
    }
}

fn check(k8s_spec: &str, calico_spec: &str) {
    let converted = convert_k8s_policy(&k8s(k8s_spec));
    assert_eq!(converted.metadata.name.as_deref(), Some("p"));
    assert_eq!(converted.metadata.namespace.as_deref(), Some("ns1"));
    assert_eq!(converted.spec, calico(calico_spec), "\nfrom:\n{k8s_spec}");
    // Everything generated must itself be valid Calico.
    let findings = crate::model::validate::validate(&Resource::NetworkPolicy(Box::new(converted)));
    assert!(findings.iter().all(|f| f.warning), "{findings:?}");
}

#[test]
fn empty_pod_selector_and_default_types() {
    check(
        "  podSelector: {}\n",
        "  tier: default\n  order: 1000\n  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Ingress]\n",
    );
}

#[test]
fn match_labels_are_sorted_and_expressions_follow() {
    check(
        "  podSelector:\n    matchLabels: {tier: db, app: Srv1}\n    matchExpressions:\n    - {key: env, operator: In, values: [prod, dev]}\n    - {key: zone, operator: NotIn, values: [a]}\n    - {key: canary, operator: Exists}\n    - {key: legacy, operator: DoesNotExist}\n",
        "  tier: default\n  order: 1000\n  selector: \"projectcalico.org/orchestrator == 'k8s' && app == 'Srv1' && tier == 'db' && env in { 'prod', 'dev' } && zone not in { 'a' } && has(canary) && ! has(legacy)\"\n  types: [Ingress]\n",
    );
}

#[test]
fn policy_types_given_are_kept_and_egress_rules_imply_egress() {
    check(
        "  podSelector: {}\n  policyTypes: [Egress]\n",
        "  tier: default\n  order: 1000\n  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Egress]\n",
    );
    check(
        "  podSelector: {}\n  egress: [{}]\n",
        "  tier: default\n  order: 1000\n  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Ingress, Egress]\n  egress: [{action: Allow}]\n",
    );
    // Ingress rules in an Egress-only policy are dropped.
    check(
        "  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]\n",
        "  tier: default\n  order: 1000\n  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Egress]\n",
    );
}

#[test]
fn empty_rule_allows_all() {
    check(
        "  podSelector: {}\n  ingress: [{}]\n",
        "  tier: default\n  order: 1000\n  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Ingress]\n  ingress: [{action: Allow}]\n",
    );
}

#[test]
fn peers_pod_namespace_and_both() {
    check(
        "  podSelector: {matchLabels: {run: nginx}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {run: access}}\n    - namespaceSelector: {matchLabels: {type: monitoring}}\n    - namespaceSelector: {matchLabels: {type: monitoring}}\n      podSelector: {matchLabels: {app: monitoring}}\n    - namespaceSelector: {}\n",
        "  tier: default\n  order: 1000\n  selector: projectcalico.org/orchestrator == 'k8s' && run == 'nginx'\n  types: [Ingress]\n  ingress:\n  - action: Allow\n    source: {selector: projectcalico.org/orchestrator == 'k8s' && run == 'access'}\n  - action: Allow\n    source: {selector: projectcalico.org/orchestrator == 'k8s', namespaceSelector: type == 'monitoring'}\n  - action: Allow\n    source: {selector: projectcalico.org/orchestrator == 'k8s' && app == 'monitoring', namespaceSelector: type == 'monitoring'}\n  - action: Allow\n    source: {selector: projectcalico.org/orchestrator == 'k8s', namespaceSelector: all()}\n",
    );
}

#[test]
fn ip_block_with_except_becomes_not_nets() {
    check(
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: 198.18.0.0/15, except: [198.18.1.0/24, 198.18.2.0/24]}\n",
        "  tier: default\n  order: 1000\n  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Egress]\n  egress:\n  - action: Allow\n    destination: {nets: [198.18.0.0/15], notNets: [198.18.1.0/24, 198.18.2.0/24]}\n",
    );
}

#[test]
fn ports_default_to_tcp_and_group_per_protocol() {
    check(
        "  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n    - {port: 53, protocol: UDP}\n    - {port: 8000, endPort: 8080, protocol: TCP}\n    - {port: serve-81-tcp}\n    - {port: 9000, protocol: SCTP}\n",
        "  tier: default\n  order: 1000\n  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Ingress]\n  ingress:\n  - {action: Allow, protocol: SCTP, destination: {ports: [9000]}}\n  - {action: Allow, protocol: TCP, destination: {ports: [80, '8000:8080', serve-81-tcp]}}\n  - {action: Allow, protocol: UDP, destination: {ports: [53]}}\n",
    );
}

#[test]
fn a_protocol_without_a_port_means_every_port() {
    check(
        "  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: TCP}\n    - {protocol: TCP, port: 80}\n    - {protocol: UDP, port: 81}\n",
        "  tier: default\n  order: 1000\n  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Ingress]\n  ingress:\n  - {action: Allow, protocol: TCP}\n  - {action: Allow, protocol: UDP, destination: {ports: [81]}}\n",
    );
}

#[test]
fn peers_cross_protocols_and_egress_puts_both_in_destination() {
    check(
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector: {matchLabels: {a: b}}\n    - ipBlock: {cidr: 198.18.0.0/24}\n    ports:\n    - {port: 80}\n    - {port: 53, protocol: UDP}\n",
        "  tier: default\n  order: 1000\n  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Egress]\n  egress:\n  - {action: Allow, protocol: TCP, destination: {selector: projectcalico.org/orchestrator == 'k8s' && a == 'b', ports: [80]}}\n  - {action: Allow, protocol: UDP, destination: {selector: projectcalico.org/orchestrator == 'k8s' && a == 'b', ports: [53]}}\n  - {action: Allow, protocol: TCP, destination: {nets: [198.18.0.0/24], ports: [80]}}\n  - {action: Allow, protocol: UDP, destination: {nets: [198.18.0.0/24], ports: [53]}}\n",
    );
}

#[test]
fn seed_001_access_nginx_matches_what_calicoctl_showed() {
    // Seed 001 prints the converted access-nginx policy; ours must agree.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/seeds");
    let k = crate::model::load::load_file(&path.join("001-access-nginx-k8s.yaml"));
    let c = crate::model::load::load_file(&path.join("001-access-nginx-calico.yaml"));
    let (Resource::K8sNetworkPolicy(k), Resource::NetworkPolicy(c)) =
        (&k.resources[0].resource, &c.resources[0].resource)
    else {
        panic!()
    };
    let converted = convert_k8s_policy(k);
    assert_eq!(converted.spec.selector, c.spec.selector);
    assert_eq!(converted.spec.order, c.spec.order);
    assert_eq!(converted.spec.types, c.spec.types);
    assert_eq!(converted.spec.ingress, c.spec.ingress);
}

#[test]
fn port_simplification_merges_ranges() {
    let p = simplify_ports(vec![
        Port::Range(81, 81),
        Port::Range(80, 80),
        Port::Range(82, 90),
        Port::Range(100, 100),
        Port::Named("b".into()),
        Port::Named("b".into()),
    ]);
    assert_eq!(
        p,
        vec![
            Port::Range(80, 90),
            Port::Range(100, 100),
            Port::Named("b".into())
        ]
    );
}

#[test]
fn implicit_profiles() {
    let p = namespace_profile("dev", &[("team".to_string(), "a".to_string())].into());
    assert_eq!(p.metadata.name.as_deref(), Some("kns.dev"));
    assert_eq!(
        p.spec.labels_to_apply.get("pcns.team").map(String::as_str),
        Some("a")
    );
    assert_eq!(
        p.spec
            .labels_to_apply
            .get("pcns.projectcalico.org/name")
            .map(String::as_str),
        Some("dev")
    );
    assert_eq!(p.spec.ingress, vec![Rule::allow()]);
    let s = service_account_profile(
        "dev",
        "api",
        &[("role".to_string(), "x".to_string())].into(),
    );
    assert_eq!(s.metadata.name.as_deref(), Some("ksa.dev.api"));
    assert_eq!(
        s.spec.labels_to_apply.get("pcsa.role").map(String::as_str),
        Some("x")
    );
    assert!(s.spec.ingress.is_empty());
}
