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

fn check(step: &str, expectations: &[Expect<'_>]) {
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
    if let Err(e) = check_truth_table(&cells) {
        panic!("{e}");
    }
}

#[test]
fn seed_004_tutorial_step_by_step() {
    if !kernel::require_kernel("seed_004_tutorial_step_by_step") {
        return;
    }
    let mut node = Node::new("tut");
    node.add_outside();
    node.add_pod("default", "frontend", "198.18.0.10", None);
    node.add_pod("default", "backend", "198.18.0.11", None);
    node.add_pod("monitoring", "monitoring", "198.18.0.12", None);
    node.add_pod("monitoring", "other", "198.18.0.13", None);
    node.add_pod("kube-system", "coredns", "198.18.0.53", None);
    let _backend = Servers::start(
        &node.pod("default", "backend").ns,
        "backend",
        &[(Proto::Tcp, 8080)],
    );
    let _dns = Servers::start(
        &node.pod("kube-system", "coredns").ns,
        "coredns",
        &[(Proto::Udp, 53)],
    );
    let outside = node.outside.as_ref().unwrap();
    let _web = Servers::start(outside, "kubernetes.io", &[(Proto::Tcp, 80)]);

    let mut labels: Labels = BTreeMap::new();
    labels.insert(
        ("default".into(), "frontend".into()),
        l(&[("app", "frontend")]),
    );
    labels.insert(
        ("default".into(), "backend".into()),
        l(&[("app", "backend")]),
    );
    labels.insert(
        ("monitoring".into(), "monitoring".into()),
        l(&[("app", "monitoring")]),
    );
    labels.insert(
        ("monitoring".into(), "other".into()),
        l(&[("app", "other")]),
    );
    labels.insert(
        ("kube-system".into(), "coredns".into()),
        l(&[("k8s-app", "kube-dns")]),
    );
    let mut ns_labels: NsLabels = BTreeMap::new();
    ns_labels.insert("monitoring".into(), l(&[("type", "monitoring")]));

    let p = |ns: &str, n: &str| node.pod(ns, n);
    let (fe, be, mon, oth, dns) = (
        p("default", "frontend"),
        p("default", "backend"),
        p("monitoring", "monitoring"),
        p("monitoring", "other"),
        p("kube-system", "coredns"),
    );
    let out_ip: IpAddr = UPLINK_OUTSIDE_IP.parse().unwrap();
    let table =
        |fe_be: bool, mon_be: bool, oth_be: bool, be_out: bool, fe_dns: bool, be_dns: bool| {
            vec![
                Expect {
                    from: &fe.ns,
                    from_name: "frontend",
                    to: be.ip4,
                    to_name: "backend",
                    port: 8080,
                    proto: Proto::Tcp,
                    allowed: fe_be,
                },
                Expect {
                    from: &mon.ns,
                    from_name: "monitoring",
                    to: be.ip4,
                    to_name: "backend",
                    port: 8080,
                    proto: Proto::Tcp,
                    allowed: mon_be,
                },
                Expect {
                    from: &oth.ns,
                    from_name: "monitoring/other",
                    to: be.ip4,
                    to_name: "backend",
                    port: 8080,
                    proto: Proto::Tcp,
                    allowed: oth_be,
                },
                Expect {
                    from: &be.ns,
                    from_name: "backend",
                    to: out_ip,
                    to_name: "kubernetes.io",
                    port: 80,
                    proto: Proto::Tcp,
                    allowed: be_out,
                },
                Expect {
                    from: &fe.ns,
                    from_name: "frontend",
                    to: dns.ip4,
                    to_name: "coredns",
                    port: 53,
                    proto: Proto::Udp,
                    allowed: fe_dns,
                },
                Expect {
                    from: &be.ns,
                    from_name: "backend",
                    to: dns.ip4,
                    to_name: "coredns",
                    port: 53,
                    proto: Proto::Udp,
                    allowed: be_dns,
                },
            ]
        };
    let mut policies: Vec<String> = Vec::new();
    let apply_now = |policies: &[String], ns_labels: &NsLabels| {
        let mut y = node.cluster_yaml(&labels, ns_labels);
        for p in policies {
            y.push_str("---\n");
            y.push_str(p);
        }
        node.apply_yaml(&y);
    };

    apply_now(&policies, &ns_labels);
    check("no policy", &table(true, true, true, true, true, true));

    policies.push(seed("004-01-backend-ingress-deny.yaml"));
    apply_now(&policies, &ns_labels);
    check(
        "01 backend ingress deny",
        &table(false, false, false, true, true, true),
    );

    policies.push(seed("004-02-backend-ingress-allow-frontend.yaml"));
    apply_now(&policies, &ns_labels);
    check(
        "02 allow frontend",
        &table(true, false, false, true, true, true),
    );

    policies.push(seed("004-03-all-pods-allow-within-namespace.yaml"));
    policies.remove(1);
    apply_now(&policies, &ns_labels);
    check(
        "03 within namespace",
        &table(true, false, false, true, true, true),
    );

    policies.push(seed(
        "004-04-backend-ingress-allow-monitoring-namespace.yaml",
    ));
    apply_now(&policies, &ns_labels);
    check(
        "04 monitoring namespace",
        &table(true, true, true, true, true, true),
    );

    policies.push(seed("004-05-backend-ingress-allow-monitoring-app.yaml"));
    policies.remove(2);
    apply_now(&policies, &ns_labels);
    check(
        "05 monitoring app",
        &table(true, true, false, true, true, true),
    );

    policies.push(seed("004-06-frontend-egress-deny.yaml"));
    apply_now(&policies, &ns_labels);
    check(
        "06 frontend egress deny",
        &table(false, true, false, true, false, true),
    );

    policies.push(seed("004-07-frontend-egress-allow-to-backend.yaml"));
    apply_now(&policies, &ns_labels);
    check(
        "07 egress to backend, DNS still blocked",
        &table(true, true, false, true, false, true),
    );

    ns_labels.insert("kube-system".into(), l(&[("contains", "coredns")]));
    policies.push(seed("004-08-all-pods-egress-allow-dns.yaml"));
    apply_now(&policies, &ns_labels);
    // The side effect the tutorial points out: backend is now egress-isolated too.
    check(
        "08 DNS allowed, backend egress isolated",
        &table(true, true, false, false, true, true),
    );
}
