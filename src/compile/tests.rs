use std::path::Path;

use super::*;
use crate::calc::Cluster;
use crate::model::Resource;
use crate::model::load::load_str;

fn build(yaml: &str, node: &str) -> (Cluster, Ruleset) {
    let r = load_str(yaml, Path::new("t.yaml"));
    let errors: Vec<String> = r.errors().map(|d| d.one_line()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let resources: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
    let c = Cluster::build(&resources, node);
    let rs = compile(&c, node);
    (c, rs)
}

fn cluster_with_remote_pods(remote: usize) -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: local, namespace: app, labels: {role: server}}\nspec: {nodeName: n1, containers: [{name: c, ports: [{name: web, containerPort: 80}]}]}\nstatus: {podIP: 198.18.0.1}\n---\n\
         kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: p, namespace: app}\nspec:\n  podSelector: {matchLabels: {role: server}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n    ports: [{port: web}]\n",
    );
    for i in 0..remote {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: c{i}, namespace: app, labels: {{role: client}}}}\nspec: {{nodeName: n{}, containers: [{{name: c, ports: [{{name: web, containerPort: 80}}]}}]}}\nstatus: {{podIP: 198.18.{}.{}}}\n",
            2 + i % 7,
            1 + i / 250,
            1 + i % 250
        ));
    }
    y
}

#[test]
fn ten_times_more_remote_endpoints_leaves_the_rule_count_unchanged() {
    let (_, small) = build(&cluster_with_remote_pods(30), "n1");
    let (_, large) = build(&cluster_with_remote_pods(300), "n1");
    assert_eq!(small.rule_count(), large.rule_count());
    assert_eq!(
        small.chains.keys().collect::<Vec<_>>(),
        large.chains.keys().collect::<Vec<_>>()
    );
    // The growth went into set elements.
    let members = |rs: &Ruleset| rs.sets.values().map(|s| s.elements.len()).sum::<usize>();
    assert!(
        members(&large) > members(&small) * 5,
        "{} vs {}",
        members(&large),
        members(&small)
    );
}

#[test]
fn a_policy_chain_is_shared_by_every_endpoint_using_it() {
    let mut y = cluster_with_remote_pods(0);
    y.push_str("---\napiVersion: v1\nkind: Pod\nmetadata: {name: local2, namespace: app, labels: {role: server}}\nspec: {nodeName: n1}\nstatus: {podIP: 198.18.0.2}\n");
    let (_, rs) = build(&y, "n1");
    let policy_chains: Vec<&String> = rs
        .chains
        .keys()
        .filter(|k| k.starts_with("filter-pi-"))
        .collect();
    assert_eq!(policy_chains, ["filter-pi-knp/app/p"]);
    let jumps = rs
        .chains
        .values()
        .flat_map(|c| &c.rules)
        .filter(|r| r.action == "jump filter-pi-knp/app/p")
        .count();
    // Both endpoints have the same ordered policies, so they share one tier
    // walk, which jumps to the policy once.
    assert_eq!(jumps, 1);
    let walks: std::collections::BTreeSet<&str> = rs
        .chains
        .values()
        .filter(|c| c.name.starts_with("filter-tw-"))
        .flat_map(|c| &c.rules)
        .filter_map(|r| r.action.strip_prefix("jump filter-tiers-"))
        .collect();
    assert_eq!(walks.len(), 1, "{walks:?}");
    let tw = rs
        .chains
        .keys()
        .filter(|k| k.starts_with("filter-tw-"))
        .count();
    assert_eq!(tw, 2);
}

#[test]
fn pass_tiers_have_no_end_of_tier_drop_and_deny_tiers_do() {
    let y = "
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: passing}
spec: {order: 1, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: passing.p}
spec: {tier: passing, selector: all(), ingress: [{action: Log}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: d}
spec: {selector: all(), ingress: [{action: Log}]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h}
spec: {node: n1, interfaceName: eth0}
";
    let (_, rs) = build(y, "n1");
    let walk = rs.chains["filter-fh-eth0"]
        .rules
        .iter()
        .filter_map(|r| r.action.strip_prefix("jump "))
        .find(|c| c.starts_with("filter-tiers-"))
        .expect("a tier walk");
    let chain = &rs.chains[walk];
    let ends: Vec<&str> = chain
        .rules
        .iter()
        .filter(|r| r.note.starts_with("end of tier"))
        .map(|r| r.note.as_str())
        .collect();
    assert_eq!(ends, ["end of tier default: no policy allowed or passed"]);
}

#[test]
fn workload_dispatch_fails_closed_and_host_to_workload_is_not_policed() {
    let (_, rs) = build("", "n1");
    let d = &rs.chains["filter-to-wl-dispatch"];
    assert_eq!(d.rules.last().unwrap().action, "drop");
    let out = &rs.chains["filter-OUTPUT"];
    assert_eq!(out.rules[0].matches, "oifname \"cali*\"");
    assert_eq!(out.rules[0].action, "return");
}

#[test]
fn names_are_length_limited_and_distinct() {
    let long_a = format!("filter-pi-gnp/{}", "a".repeat(200));
    let long_b = format!("filter-pi-gnp/{}b", "a".repeat(199));
    let (x, y) = (limit_name(&long_a), limit_name(&long_b));
    assert!(x.len() <= rules::MAX_NAME_LEN && y.len() <= rules::MAX_NAME_LEN);
    assert_ne!(x, y);
    assert_eq!(limit_name("filter-pi-gnp/x"), "filter-pi-gnp/x");
}

#[test]
fn overlapping_and_catch_all_nets_are_normalised_in_sets() {
    let y = "
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  selector: all()
  ingress:
  - action: Deny
    source: {nets: [198.18.0.0/16, 198.18.3.0/24, 198.19.0.0/16]}
  - action: Allow
    source: {nets: [0.0.0.0/0, 198.18.0.0/16]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h}
spec: {node: n1, interfaceName: eth0}
";
    let (_, rs) = build(y, "n1");
    let nets: Vec<Vec<&String>> = rs
        .sets
        .values()
        .map(|s| s.elements.iter().collect())
        .collect();
    assert_eq!(
        nets,
        [["0.0.0.0/1", "128.0.0.0/1"]],
        "the /0 rule needs a set; the merged /15 does not"
    );
    let text = rs.render();
    assert!(
        text.contains("ip saddr 198.18.0.0/15"),
        "adjacent /16s merge into one /15 and need no set"
    );
    assert!(
        text.contains("0.0.0.0/1") && text.contains("128.0.0.0/1"),
        "a /0 is split in two"
    );
}

/// Felix's binding: per interface, endpoints naming it and endpoints with
/// no name expecting one of its addresses compete; the first by name wins.
#[test]
fn host_endpoints_bind_to_interfaces_as_felix_resolves_them() {
    let y = "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: b-named, labels: {who: b-named}}\nspec: {node: n1, interfaceName: eth1, expectedIPs: [198.18.20.2]}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: a-by-ip, labels: {who: a-by-ip}}\nspec: {node: n1, expectedIPs: [198.18.20.1]}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: c-by-ip, labels: {who: c-by-ip}}\nspec: {node: n1, expectedIPs: [198.18.20.2, 198.18.20.3]}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {selector: has(who), ingress: [{action: Allow}]}\n";
    let r = load_str(y, Path::new("t.yaml"));
    let resources: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
    let mut c = Cluster::build(&resources, "n1");
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    c.host_interfaces
        .insert("eth1".into(), vec![ip("198.18.20.1")]);
    c.host_interfaces
        .insert("eth2".into(), vec![ip("198.18.20.2")]);
    c.host_interfaces
        .insert("eth3".into(), vec![ip("198.18.20.9")]);
    let rs = compile(&c, "n1");
    // The endpoint named in the chain's final "no profile" drop.
    let owner = |iface: &str| {
        let ch = rs.chains.get(&format!("filter-fh-{iface}"))?;
        let last = ch.rules.last()?;
        last.note.contains("no profile").then(|| last.note.clone())
    };
    // eth1: named by b-named, but a-by-ip expects its address and sorts first.
    assert!(
        owner("eth1").unwrap().contains("a-by-ip"),
        "{:?}",
        owner("eth1")
    );
    // eth2: c-by-ip expects its address; b-named names eth1, so it never
    // binds by address even though it expects 198.18.20.2.
    assert!(
        owner("eth2").unwrap().contains("c-by-ip"),
        "{:?}",
        owner("eth2")
    );
    // eth3: nobody.
    assert_eq!(owner("eth3"), None);
    // Without interface information only the named endpoint binds.
    c.host_interfaces.clear();
    let rs = compile(&c, "n1");
    assert!(rs.chains.contains_key("filter-fh-eth1"));
    assert!(!rs.chains.contains_key("filter-fh-eth2"));
}

/// Issue 12's shape: many policies that select every endpoint. The jump
/// graph must not grow with endpoints × policies: endpoints with the same
/// ordered policies share one tier walk.
#[test]
fn the_jump_graph_grows_with_distinct_policy_lists_not_endpoints_times_policies() {
    let cluster = |pods: usize| {
        let mut y = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: d}\n");
        for i in 0..100 {
            y.push_str(&format!("---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: g{i}}}\nspec: {{order: {i}, selector: all(), types: [Ingress, Egress], ingress: [{{action: Pass}}], egress: [{{action: Pass}}]}}\n"));
        }
        for i in 0..pods {
            y.push_str(&format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: d}}\nspec: {{nodeName: n1}}\nstatus: {{podIP: 198.18.0.{}}}\n", i + 1));
        }
        build(&y, "n1").1
    };
    let (few, many) = (cluster(10), cluster(100));
    // 100 policies × 2 directions in one shared walk each; then per endpoint
    // and direction a jump to the walk, one to the profile and a dispatch
    // map element. Unshared it would be 100 endpoints × 200 policy jumps.
    let per_endpoint = |rs: &Ruleset| rs.jump_count();
    assert!(
        per_endpoint(&many) <= 200 + 100 * 6 + 10,
        "{}",
        per_endpoint(&many)
    );
    // 90 more endpoints add a handful of jumps each, not 200.
    let growth = (per_endpoint(&many) - per_endpoint(&few)) / 90;
    assert!(growth <= 6, "{growth} jumps per extra endpoint");
}

/// Large enough for the compile's two-thread paths (set members found at
/// the end, the text's two halves): each selector set holds what its
/// selector picks, and the text is the sets' block followed by the rest.
#[test]
fn a_large_compile_fills_each_set_and_renders_in_order() {
    use crate::compile::ir::{SetSource, TABLE_FAMILY, TABLE_NAME};
    use crate::synth::{LOCAL_NODE, Size, generate};
    let size = Size {
        pods: 10_000,
        local_pods: 250,
        policies: 2_000,
        ..Size::S
    };
    let c = Cluster::build(&generate(size), LOCAL_NODE);
    let rs = compile(&c, LOCAL_NODE);
    let mut selector_sets = 0;
    for (name, source) in &rs.set_sources {
        if let SetSource::Selector { selector, v6 } = source {
            let want = address_elements(c.selector_nets(selector), *v6);
            assert_eq!(rs.sets[name].elements, want, "{name}");
            selector_sets += 1;
        }
    }
    assert!(selector_sets >= 64, "only {selector_sets} selector sets");
    assert!(rs.sets.len() >= 256, "only {} sets", rs.sets.len());
    let header = format!("table {TABLE_FAMILY} {TABLE_NAME} {{\n");
    let sets = rs.render_sets();
    let rest = rs.render_without_sets();
    let want = format!(
        "{}{}",
        sets.strip_suffix("}\n").expect("closed"),
        rest.strip_prefix(&header).expect("opened")
    );
    assert_eq!(rs.render(), want);
}
