//! The peer-selection table: for every combination of selector,
//! notSelector, namespaceSelector, serviceAccounts and nets on a rule side,
//! in a namespaced NetworkPolicy, a GlobalNetworkPolicy and a profile, the
//! addresses tortie's rendering matches must be exactly those Calico's rule
//! conversion matches.
//!
//! The expected side is an independent re-statement of libcalico-go's
//! conversion (`updateprocessors/rules.go`: `GetEntityRuleSelector`,
//! `getEndpointSelector`, `parseServiceAccounts`), done on selector TEXT as
//! Calico does it, then evaluated directly against every object's labels;
//! the tortie side is `calc::peers::side_of` and the cluster's member index,
//! as the compiler uses them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use crate::calc::peers::side_of;
use crate::calc::{Cluster, prefix_labels};
use crate::model::Resource;
use crate::model::load::load_str;
use crate::model::types::{EntityRule, ServiceAccountMatch};
use crate::selector;

const UNIVERSE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: b}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa1, namespace: a, labels: {role: r1}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa2, namespace: b, labels: {role: r2}}
---
apiVersion: v1
kind: Pod
metadata: {name: ax, namespace: a, labels: {app: x}}
spec: {nodeName: n1, serviceAccountName: sa1}
status: {podIP: 198.18.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: ay, namespace: a, labels: {app: y}}
spec: {nodeName: n1}
status: {podIP: 198.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: bx, namespace: b, labels: {app: x}}
spec: {nodeName: n2, serviceAccountName: sa2}
status: {podIP: 198.18.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: by, namespace: b, labels: {app: y}}
spec: {nodeName: n2}
status: {podIP: 198.18.0.4}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: hx, labels: {app: x}}
spec: {node: n1, interfaceName: eth0, expectedIPs: [198.18.1.1]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: hy, labels: {app: y}}
spec: {node: n2, interfaceName: eth0, expectedIPs: [198.18.1.2]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: gx, labels: {app: x}}
spec: {nets: [198.18.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: nx, namespace: a, labels: {app: x}}
spec: {nets: [198.18.3.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: ny, namespace: b, labels: {app: y}}
spec: {nets: [198.18.4.0/24]}
"#;

/// One address per object, plus one that belongs to nothing.
const PROBES: [&str; 10] = [
    "198.18.0.1",
    "198.18.0.2",
    "198.18.0.3",
    "198.18.0.4",
    "198.18.1.1",
    "198.18.1.2",
    "198.18.2.9",
    "198.18.3.9",
    "198.18.4.9",
    "198.19.9.9",
];

fn universe() -> Cluster {
    let r = load_str(UNIVERSE, Path::new("universe.yaml"));
    let errors: Vec<String> = r.errors().map(|d| d.one_line()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let resources: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
    Cluster::build(&resources, "n1")
}

// ---------------------------------------------------------------------
// Calico's conversion, restated on selector text.

fn prefixed(text: &str, prefix: &str) -> String {
    let parsed = selector::parse(text).expect("test selectors parse");
    let text = prefix_labels(&parsed, prefix).canonical();
    // Calico prints the empty selector as `all()`.
    if text.is_empty() {
        "all()".into()
    } else {
        text
    }
}

fn calico_sa(sa: &ServiceAccountMatch) -> String {
    let mut out = String::new();
    if let Some(s) = sa.selector.as_deref().filter(|s| !s.is_empty()) {
        out = prefixed(s, "pcsa.");
    }
    if sa.names.is_empty() {
        return out;
    }
    let names = format!(
        "projectcalico.org/serviceaccount in {{ '{}' }}",
        sa.names.join("', '")
    );
    if out.is_empty() {
        names
    } else {
        format!("({out}) && ({names})")
    }
}

/// `getEndpointSelector`: the positive selector text ("" = none).
fn calico_positive(e: &EntityRule, ns: &str) -> String {
    let ns_sel_field = e.namespace_selector.clone().unwrap_or_default();
    let not_sel = e.not_selector.clone().unwrap_or_default();
    let ns_sel = if !ns_sel_field.is_empty() {
        prefixed(&ns_sel_field, "pcns.")
            .replace("all()", "has(projectcalico.org/namespace)")
            .replace("global()", "!has(projectcalico.org/namespace)")
    } else if !ns.is_empty() {
        format!("projectcalico.org/namespace == '{ns}'")
    } else {
        String::new()
    };
    let mut parts = Vec::new();
    if let Some(sa) = &e.service_accounts {
        let s = calico_sa(sa);
        if !s.is_empty() {
            parts.push(s);
        }
    }
    if let Some(s) = e.selector.as_deref().filter(|s| !s.is_empty()) {
        parts.push(s.to_string());
    }
    let mut sel = match parts.len() {
        0 => String::new(),
        1 => parts.remove(0),
        _ => format!("({})", parts.join(") && (")),
    };
    if !ns_sel.is_empty() && (!sel.is_empty() || !not_sel.is_empty() || !ns_sel_field.is_empty()) {
        sel = if sel.is_empty() {
            ns_sel
        } else {
            format!("({ns_sel}) && ({sel})")
        };
    }
    sel
}

/// Addresses of every object whose labels match `text`, evaluated directly.
fn calico_members(c: &Cluster, text: &str) -> BTreeSet<IpNet> {
    let sel = selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
    let mut out = BTreeSet::new();
    for ep in &c.endpoints {
        if sel.matches(&ep.labels) {
            out.extend(ep.addrs.iter().map(|a| IpNet::from(*a)));
        }
    }
    for ns in &c.network_sets {
        if sel.matches(&ns.labels) {
            out.extend(ns.nets.iter().copied());
        }
    }
    out
}

fn contains(members: &BTreeSet<IpNet>, a: IpAddr) -> bool {
    members.iter().any(|n| n.contains(&a))
}

fn calico_matches(c: &Cluster, e: &EntityRule, ns: &str) -> BTreeSet<IpAddr> {
    let pos = calico_positive(e, ns);
    let pos = (!pos.is_empty()).then(|| calico_members(c, &pos));
    let neg = e
        .not_selector
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| calico_members(c, s));
    probes()
        .filter(|a| pos.as_ref().is_none_or(|m| contains(m, *a)))
        .filter(|a| neg.as_ref().is_none_or(|m| !contains(m, *a)))
        .filter(|a| nets_match(e, *a))
        .collect()
}

// ---------------------------------------------------------------------
// tortie's side, as the compiler renders it.

fn tortie_matches(c: &Cluster, e: &EntityRule, ns: Option<&str>) -> BTreeSet<IpAddr> {
    let side = side_of(e, ns).expect("every generated side parses");
    let pos = side.positive.map(|s| c.selector_members(&s));
    let neg = side.negative.map(|s| c.selector_members(&s));
    probes()
        .filter(|a| pos.as_ref().is_none_or(|m| contains(m, *a)))
        .filter(|a| neg.as_ref().is_none_or(|m| !contains(m, *a)))
        .filter(|a| nets_match(e, *a))
        .collect()
}

/// nets / notNets are plain CIDR matches in both conversions.
fn nets_match(e: &EntityRule, a: IpAddr) -> bool {
    let parse = |v: &[String]| -> Vec<IpNet> { v.iter().map(|n| n.parse().unwrap()).collect() };
    let nets = parse(&e.nets);
    let not = parse(&e.not_nets);
    (nets.is_empty() || nets.iter().any(|n| n.contains(&a))) && !not.iter().any(|n| n.contains(&a))
}

fn probes() -> impl Iterator<Item = IpAddr> {
    PROBES.iter().map(|p| p.parse().unwrap())
}

// ---------------------------------------------------------------------
// The table.

fn opt(v: &[&str]) -> Vec<Option<String>> {
    std::iter::once(None)
        .chain(v.iter().map(|s| Some(s.to_string())))
        .collect()
}

fn service_accounts() -> Vec<Option<ServiceAccountMatch>> {
    let sa = |names: &[&str], selector: Option<&str>| {
        Some(ServiceAccountMatch {
            names: names.iter().map(|s| s.to_string()).collect(),
            selector: selector.map(str::to_string),
        })
    };
    vec![
        None,
        sa(&[], None),
        sa(&["sa1"], None),
        sa(&["sa1", "sa2"], None),
        sa(&[], Some("role == 'r2'")),
        sa(&["sa1"], Some("role == 'r1'")),
    ]
}

fn entity_rules() -> Vec<EntityRule> {
    let mut out = Vec::new();
    let nets: [(&[&str], &[&str]); 3] = [
        (&[], &[]),
        (&["198.18.0.0/30"], &[]),
        (&[], &["198.18.0.1/32", "198.18.3.0/24"]),
    ];
    for selector in opt(&["", "app == 'x'", "all()", "!has(app)"]) {
        for not_selector in opt(&["", "app == 'y'"]) {
            for namespace_selector in opt(&["", "team == 'b'", "all()", "global()"]) {
                for service_accounts in service_accounts() {
                    for (n, nn) in nets {
                        out.push(EntityRule {
                            selector: selector.clone(),
                            not_selector: not_selector.clone(),
                            namespace_selector: namespace_selector.clone(),
                            service_accounts: service_accounts.clone(),
                            nets: n.iter().map(|s| s.to_string()).collect(),
                            not_nets: nn.iter().map(|s| s.to_string()).collect(),
                            ..EntityRule::default()
                        });
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_peer_combination_selects_what_calico_selects() {
    let c = universe();
    let rules = entity_rules();
    assert_eq!(rules.len(), 5 * 3 * 5 * 6 * 3);
    let mut mismatches = Vec::new();
    let mut distinct = BTreeSet::new();
    // A namespaced NetworkPolicy in `a`, then global policies and profiles
    // (both convert with no namespace).
    for (kind, ns) in [
        ("NetworkPolicy a", Some("a")),
        ("GlobalNetworkPolicy/Profile", None),
    ] {
        for e in &rules {
            let want = calico_matches(&c, e, ns.unwrap_or(""));
            let got = tortie_matches(&c, e, ns);
            distinct.insert(want.clone());
            if want != got {
                mismatches.push(format!(
                    "{kind}: {e:?}\n  calico {want:?}\n  tortie {got:?}"
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(5)].join("\n")
    );
    // The table discriminates: many different peer sets occur.
    assert!(
        distinct.len() >= 20,
        "only {} distinct peer sets",
        distinct.len()
    );
}

#[test]
fn a_not_selector_alone_in_a_namespaced_policy_stays_in_its_namespace() {
    let c = universe();
    let e = EntityRule {
        not_selector: Some("app == 'y'".into()),
        ..EntityRule::default()
    };
    let got = tortie_matches(&c, &e, Some("a"));
    let want: BTreeSet<IpAddr> = ["198.18.0.1", "198.18.3.9"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    // ax and network set nx (namespace a, not app=y); not bx, not the host
    // endpoints, not addresses outside every endpoint.
    assert_eq!(got, want);
    // In a global policy the same peer is everything but app=y.
    let global = tortie_matches(&c, &e, None);
    assert!(global.contains(&"198.19.9.9".parse().unwrap()));
    assert!(!global.contains(&"198.18.0.4".parse().unwrap()));
}

#[test]
fn both_rule_sides_render_the_same_peer_sets() {
    use crate::compile::compile;
    let yaml = format!(
        "{UNIVERSE}---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: a}}\nspec:\n  selector: all()\n  types: [Ingress, Egress]\n  ingress:\n  - action: Allow\n    source: {{notSelector: \"app == 'y'\"}}\n  egress:\n  - action: Allow\n    destination: {{notSelector: \"app == 'y'\"}}\n"
    );
    let r = load_str(&yaml, Path::new("p.yaml"));
    let resources: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
    let c = Cluster::build(&resources, "n1");
    let rs = compile(&c, "n1");
    let text = rs.render();
    let scope = selector::Selector::Equal(selector::NAMESPACE_LABEL.into(), "a".into());
    let uid = &scope.uid()[2..];
    for side in ["saddr", "daddr"] {
        let want = format!("ip {side} @s4-{uid} ip {side} != @s4-");
        assert!(text.contains(&want), "{side}: no `{want}` in\n{text}");
    }
}

// ---------------------------------------------------------------------
// Converted Kubernetes policies: the converted rule's peers must be
// exactly the Kubernetes NetworkPolicy peers (pods of the policy's
// namespace matching podSelector; pods of the namespaces matching
// namespaceSelector; ipBlock minus except), evaluated here directly from
// the Kubernetes objects' own labels.

/// Kubernetes semantics, straight from the objects: (namespace, labels, ip).
fn k8s_peer_matches(peer: &str, policy_ns: &str) -> BTreeSet<IpAddr> {
    let pods = [
        ("a", "x", "198.18.0.1"),
        ("a", "y", "198.18.0.2"),
        ("b", "x", "198.18.0.3"),
        ("b", "y", "198.18.0.4"),
    ];
    let ns_team = |ns: &str| ns.to_string(); // namespaces a and b carry team=<name>
    let mut out = BTreeSet::new();
    for (ns, app, ip) in pods {
        let ok = match peer {
            "podSelector: {matchLabels: {app: x}}" => ns == policy_ns && app == "x",
            "podSelector: {}" => ns == policy_ns,
            "namespaceSelector: {matchLabels: {team: b}}" => ns_team(ns) == "b",
            "namespaceSelector: {}" => true,
            "namespaceSelector: {matchLabels: {team: b}}, podSelector: {matchLabels: {app: y}}" => {
                ns_team(ns) == "b" && app == "y"
            }
            "namespaceSelector: {}, podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [x]}]}" => {
                app != "x"
            }
            "podSelector: {matchExpressions: [{key: app, operator: DoesNotExist}]}" => false,
            _ => false,
        };
        if ok {
            out.insert(ip.parse().unwrap());
        }
    }
    if peer.starts_with("ipBlock") {
        for p in probes() {
            let inside: IpNet = "198.18.0.0/24".parse().unwrap();
            let except: IpNet = "198.18.0.2/31".parse().unwrap();
            if inside.contains(&p) && !except.contains(&p) {
                out.insert(p);
            }
        }
    }
    out
}

#[test]
fn converted_kubernetes_peers_select_what_kubernetes_means() {
    let peers = [
        "podSelector: {matchLabels: {app: x}}",
        "podSelector: {}",
        "namespaceSelector: {matchLabels: {team: b}}",
        "namespaceSelector: {}",
        "namespaceSelector: {matchLabels: {team: b}}, podSelector: {matchLabels: {app: y}}",
        "namespaceSelector: {}, podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [x]}]}",
        "podSelector: {matchExpressions: [{key: app, operator: DoesNotExist}]}",
        "ipBlock: {cidr: 198.18.0.0/24, except: [198.18.0.2/31]}",
    ];
    for dir in ["ingress", "egress"] {
        for peer in peers {
            let key = if dir == "ingress" { "from" } else { "to" };
            let types = if dir == "ingress" {
                "[Ingress]"
            } else {
                "[Egress]"
            };
            let yaml = format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: a}}\nspec:\n  podSelector: {{}}\n  policyTypes: {types}\n  {dir}:\n  - {key}:\n    - {{{peer}}}\n"
            );
            let r = load_str(&yaml, Path::new("k.yaml"));
            let errors: Vec<String> = r.errors().map(|d| d.one_line()).collect();
            assert!(errors.is_empty(), "{peer}: {errors:?}");
            let Some(Resource::K8sNetworkPolicy(np)) =
                r.resources.into_iter().map(|l| l.resource).next()
            else {
                panic!("{peer}: not a Kubernetes NetworkPolicy");
            };
            let conv = crate::model::convert::convert_k8s_policy(&np);
            let rules = if dir == "ingress" {
                &conv.spec.ingress
            } else {
                &conv.spec.egress
            };
            assert_eq!(rules.len(), 1, "{peer}");
            let side = if dir == "ingress" {
                &rules[0].source
            } else {
                &rules[0].destination
            };
            let got = tortie_matches(&universe(), side, Some("a"));
            assert_eq!(
                got,
                k8s_peer_matches(peer, "a"),
                "{dir} {peer}: converted {side:?}"
            );
        }
    }
}
