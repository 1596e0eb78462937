//! Trace unit tests: every golden ruleset parses, and table tests of
//! attribution on small clusters.

use std::path::{Path, PathBuf};

use super::*;
use crate::model::Resource;
use crate::model::load::{load_file, load_str};

fn golden(ext: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rulesets");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// The rule lines of an `nft -f` table text.
fn rule_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_chain = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("chain ") {
            in_chain = true;
        } else if line == "}" {
            in_chain = false;
        } else if in_chain && !line.starts_with("type ") {
            out.push(line.to_string());
        }
    }
    out
}

#[test]
fn every_rule_of_every_golden_ruleset_parses() {
    let files = golden("nft");
    assert!(files.len() >= 10, "golden rulesets found: {}", files.len());
    let mut rules = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for line in rule_lines(&text) {
            nft::parse_rule(&line).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            rules += 1;
        }
    }
    assert!(rules > 500, "only {rules} rules in the golden rulesets");
}

fn resources(r: crate::model::load::LoadResult) -> Vec<Resource> {
    let errors: Vec<String> = r.errors().map(|d| d.one_line()).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    r.resources.into_iter().map(|l| l.resource).collect()
}

#[test]
fn every_compiled_golden_ruleset_evaluates_whole() {
    for f in golden("yaml") {
        let text = std::fs::read_to_string(&f).unwrap();
        let node = text
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("# node: ")
            .trim();
        let cluster = Cluster::build(&resources(load_file(&f)), node);
        let rs = crate::compile::compile(&cluster, node);
        let parsed = eval::Parsed::new(&rs).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let n: usize = parsed.chains.values().map(Vec::len).sum();
        assert_eq!(n, rs.rule_count(), "{}", f.display());
    }
}

const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {nodeName: node1}
status: {podIP: 198.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: good, namespace: default, labels: {app: good}}
spec: {nodeName: node1}
status: {podIP: 198.18.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: far, namespace: default, labels: {app: far}}
spec: {nodeName: node2}
status: {podIP: 198.18.1.3}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: pass-web}
spec: {tier: default, order: 1, selector: \"app == 'web'\", types: [Ingress], ingress: [{action: Pass, protocol: TCP, destination: {ports: [81]}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-good, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: good}}}], ports: [{port: 80}]}]
";

fn cluster() -> Cluster {
    Cluster::build(&resources(load_str(CLUSTER, Path::new("t.yaml"))), "node1")
}

fn query(from: &str, to: &str, port: u16) -> Query {
    Query {
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
        proto: 6,
        port: Some(port),
        sport: None,
        icmp_type: None,
        icmp_code: None,
        iif: None,
        oif: None,
        dnat: None,
        ct_invalid: false,
    }
}

#[test]
fn pod_to_pod_names_the_deciding_policy_and_rule() {
    let c = cluster();
    let t = trace_cluster(&c, "node1", &query("default/good", "default/web", 80)).unwrap();
    assert_eq!(t.verdict, "allow");
    let stages: Vec<(&str, &str)> = t
        .stages
        .iter()
        .map(|s| (s.stage.as_str(), s.verdict.as_str()))
        .collect();
    assert_eq!(
        stages,
        [("egress", "allow"), ("ingress", "allow")],
        "{t:#?}"
    );
    let egress = &t.stages[0];
    assert_eq!(egress.tiers[0].tier, "profiles");
    assert_eq!(egress.tiers[0].outcome, "allow");
    assert_eq!(egress.tiers[0].policies[0].name, "kns.default");
    let ingress = t.stages.iter().find(|s| s.stage == "ingress").unwrap();
    assert!(
        ingress.endpoint.starts_with("default/web ("),
        "{}",
        ingress.endpoint
    );
    let tier = &ingress.tiers[0];
    assert_eq!(tier.tier, "default");
    assert_eq!(tier.outcome, "allow");
    assert_eq!(tier.policies[0].name, "pass-web");
    assert_eq!(tier.policies[0].rule, None);
    assert_eq!(tier.policies[1].kind, "knp");
    assert_eq!(tier.policies[1].namespace, "default");
    assert_eq!(tier.policies[1].rule, Some(0));
    assert_eq!(tier.policies[1].action.as_deref(), Some("allow"));
}

#[test]
fn end_of_tier_drop_and_pass_are_told_apart() {
    let c = cluster();
    let t = trace_cluster(&c, "node1", &query("default/far", "default/web", 80)).unwrap();
    assert_eq!(t.verdict, "deny");
    let ingress = t.stages.last().unwrap();
    assert_eq!(ingress.stage, "ingress");
    assert_eq!(ingress.verdict, "deny");
    assert_eq!(ingress.tiers[0].outcome, "end-of-tier drop");
    // Port 81: the GNP passes; no tier after it, so the namespace's profile
    // decides.
    let t = trace_cluster(&c, "node1", &query("default/good", "default/web", 81)).unwrap();
    let ingress = t.stages.last().unwrap();
    assert_eq!(ingress.tiers[0].outcome, "pass");
    assert_eq!(ingress.tiers[0].policies[0].action.as_deref(), Some("pass"));
    let profiles = ingress.tiers.last().unwrap();
    assert_eq!(profiles.tier, "profiles");
    assert_eq!(profiles.outcome, "allow");
    assert_eq!(profiles.policies[0].rule, Some(0));
    assert_eq!(t.verdict, "allow");
}

#[test]
fn unknown_names_say_what_exists() {
    let c = cluster();
    let e = trace_cluster(&c, "node1", &query("default/nope", "default/web", 80)).unwrap_err();
    assert!(e.to_string().contains("far, good, web"), "{e}");
    let e = trace_cluster(&c, "node9", &query("default/good", "default/web", 80)).unwrap_err();
    assert!(e.to_string().contains("node1, node2"), "{e}");
    let e = trace_cluster(&c, "node1", &query("hostendpoint/x", "default/web", 80)).unwrap_err();
    assert!(e.to_string().contains("no such HostEndpoint"), "{e}");
    let mut q = query("default/good", "default/web", 80);
    q.port = None;
    assert!(trace_cluster(&c, "node1", &q).is_err());
}

#[test]
fn peers_and_protocols_parse() {
    assert_eq!(
        "hostendpoint/eth0".parse::<Peer>(),
        Ok(Peer::HostEndpoint("eth0".into()))
    );
    assert_eq!(
        "fd74:6f72::1".parse::<Peer>(),
        Ok(Peer::Ip("fd74:6f72::1".parse().unwrap()))
    );
    assert!("a/b/c".parse::<Peer>().is_err());
    assert!("web".parse::<Peer>().is_err());
    assert_eq!(parse_proto("TCP"), Ok(6));
    assert_eq!(parse_proto("icmpv6"), Ok(58));
    assert_eq!(parse_proto("112"), Ok(112));
    assert!(parse_proto("300").is_err());
}

#[test]
fn a_foreign_dnat_sends_the_packet_to_the_pod_it_names() {
    let mut c = cluster();
    c.host_interfaces
        .insert("eth1".into(), vec!["198.18.100.1".parse().unwrap()]);
    let mut q = query("198.18.100.2", "198.18.100.1", 30080);
    q.iif = Some("eth1".into());
    // To the node itself: no host endpoint, nothing polices it.
    let t = trace_cluster(&c, "node1", &q).unwrap();
    assert_eq!(t.verdict, "allow");
    assert!(t.stages.is_empty(), "{t:#?}");
    // A NodePort DNAT to web:80: web's ingress policy decides.
    q.dnat = Some("198.18.0.2:80".parse().unwrap());
    let t = trace_cluster(&c, "node1", &q).unwrap();
    assert_eq!(t.verdict, "deny");
    let s = t.stages.last().unwrap();
    assert_eq!((s.stage.as_str(), s.verdict.as_str()), ("ingress", "deny"));
    assert!(s.endpoint.starts_with("default/web"), "{}", s.endpoint);
}

#[test]
fn untracked_policy_sees_the_replies_of_tracked_connections() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("integration/trace/untracked-deny-drops-replies.yaml");
    let c = Cluster::build(&resources(load_file(&f)), "node1");
    let mut q = query("default/web", "198.18.10.2", 80);
    q.oif = Some("eth0".into());
    let t = trace_cluster(&c, "node1", &q).unwrap();
    assert_eq!(t.verdict, "deny");
    let (reply, state, at) = t.reply.clone().expect("the reply is shown");
    assert_eq!(state, "established");
    assert_eq!(reply.iif.as_deref(), Some("eth0"));
    assert!(t.stages[..at].iter().all(|s| s.verdict != "deny"), "{t:#?}");
    let last = t.stages.last().unwrap();
    assert_eq!(last.stage, "untracked");
    assert!(last.endpoint.ends_with("(reply)"), "{}", last.endpoint);
    let p = &last.tiers.last().unwrap().policies[0];
    assert_eq!((p.name.as_str(), p.rule), ("untracked-deny-in", Some(0)));
    // An ICMP destination-unreachable gets no reply to drop.
    q.proto = 1;
    q.port = None;
    q.icmp_type = Some(3);
    let t = trace_cluster(&c, "node1", &q).unwrap();
    assert_eq!(t.verdict, "allow");
    assert!(t.reply.is_none());
}
