//! `tortie demo`: builds a sandbox node (network namespaces only; the
//! host's own namespace is never programmed), walks the NetworkPolicy
//! tutorial step by step, and after each step sends real packets and
//! prints who can reach whom next to what the policy says.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::time::Instant;

use crate::sandbox::{Node, Probe, Proto, Servers, UPLINK_OUTSIDE_IP, probe_all};

const POLICIES: [(&str, &str); 8] = [
    (
        "01-backend-ingress-deny",
        include_str!("../fixtures/seeds/004-01-backend-ingress-deny.yaml"),
    ),
    (
        "02-backend-ingress-allow-frontend",
        include_str!("../fixtures/seeds/004-02-backend-ingress-allow-frontend.yaml"),
    ),
    (
        "03-all-pods-allow-within-namespace",
        include_str!("../fixtures/seeds/004-03-all-pods-allow-within-namespace.yaml"),
    ),
    (
        "04-backend-ingress-allow-monitoring-namespace",
        include_str!("../fixtures/seeds/004-04-backend-ingress-allow-monitoring-namespace.yaml"),
    ),
    (
        "05-backend-ingress-allow-monitoring-app",
        include_str!("../fixtures/seeds/004-05-backend-ingress-allow-monitoring-app.yaml"),
    ),
    (
        "06-frontend-egress-deny",
        include_str!("../fixtures/seeds/004-06-frontend-egress-deny.yaml"),
    ),
    (
        "07-frontend-egress-allow-to-backend",
        include_str!("../fixtures/seeds/004-07-frontend-egress-allow-to-backend.yaml"),
    ),
    (
        "08-all-pods-egress-allow-dns",
        include_str!("../fixtures/seeds/004-08-all-pods-egress-allow-dns.yaml"),
    ),
];

/// One step of the tutorial: policies added and removed, and the expected
/// reachability of the six connections the demo probes.
struct Step {
    title: &'static str,
    add: &'static [usize],
    remove: &'static [usize],
    label_kube_system: bool,
    expect: [bool; 6],
}

const CONNECTIONS: [&str; 6] = [
    "frontend            -> backend:8080/tcp",
    "monitoring          -> backend:8080/tcp",
    "monitoring/other    -> backend:8080/tcp",
    "backend             -> outside:80/tcp",
    "frontend            -> coredns:53/udp",
    "backend             -> coredns:53/udp",
];

const STEPS: [Step; 9] = [
    Step {
        title: "no policy: everything is allowed",
        add: &[],
        remove: &[],
        label_kube_system: false,
        expect: [true, true, true, true, true, true],
    },
    Step {
        title: "01 puts backend in ingress default deny",
        add: &[0],
        remove: &[],
        label_kube_system: false,
        expect: [false, false, false, true, true, true],
    },
    Step {
        title: "02 allows frontend -> backend",
        add: &[1],
        remove: &[],
        label_kube_system: false,
        expect: [true, false, false, true, true, true],
    },
    Step {
        title: "03 allows within the namespace (02 removed)",
        add: &[2],
        remove: &[1],
        label_kube_system: false,
        expect: [true, false, false, true, true, true],
    },
    Step {
        title: "04 allows namespaces labelled type=monitoring",
        add: &[3],
        remove: &[],
        label_kube_system: false,
        expect: [true, true, true, true, true, true],
    },
    Step {
        title: "05 allows only app=monitoring there (04 removed)",
        add: &[4],
        remove: &[3],
        label_kube_system: false,
        expect: [true, true, false, true, true, true],
    },
    Step {
        title: "06 puts frontend in egress default deny",
        add: &[5],
        remove: &[],
        label_kube_system: false,
        expect: [false, true, false, true, false, true],
    },
    Step {
        title: "07 allows frontend -> backend egress (DNS still blocked)",
        add: &[6],
        remove: &[],
        label_kube_system: false,
        expect: [true, true, false, true, false, true],
    },
    Step {
        title: "08 allows DNS for all pods: backend loses its egress",
        add: &[7],
        remove: &[],
        label_kube_system: true,
        expect: [true, true, false, false, true, true],
    },
];

/// What the demo found.
#[derive(Debug, Default)]
pub struct DemoReport {
    pub steps: usize,
    pub probes: usize,
    pub mismatches: Vec<String>,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo needs root (it creates network namespaces); run it with sudo")]
    NotRoot,
    #[error("`{0}` is not installed: apt-get install {1}")]
    Missing(&'static str, &'static str),
    #[error("applying step {step}: {source}")]
    Apply {
        step: usize,
        #[source]
        source: crate::nft::NftError,
    },
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
}

fn check_prerequisites() -> Result<(), DemoError> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Err(DemoError::NotRoot);
    }
    for (bin, pkg) in [("nft", "nftables"), ("ip", "iproute2")] {
        let ok = std::process::Command::new(bin).arg("-V").output().is_ok();
        if !ok {
            return Err(DemoError::Missing(bin, pkg));
        }
    }
    Ok(())
}

fn yaml_for(node: &Node, policies: &[usize], kube_system_labelled: bool) -> String {
    let mut labels = BTreeMap::new();
    let pod_label = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    labels.insert(
        ("default".to_string(), "frontend".to_string()),
        pod_label("app", "frontend"),
    );
    labels.insert(
        ("default".to_string(), "backend".to_string()),
        pod_label("app", "backend"),
    );
    labels.insert(
        ("monitoring".to_string(), "monitoring".to_string()),
        pod_label("app", "monitoring"),
    );
    labels.insert(
        ("monitoring".to_string(), "other".to_string()),
        pod_label("app", "other"),
    );
    labels.insert(
        ("kube-system".to_string(), "coredns".to_string()),
        pod_label("k8s-app", "kube-dns"),
    );
    let mut ns_labels = BTreeMap::new();
    ns_labels.insert(
        "monitoring".to_string(),
        vec![("type".to_string(), "monitoring".to_string())],
    );
    if kube_system_labelled {
        ns_labels.insert(
            "kube-system".to_string(),
            vec![("contains".to_string(), "coredns".to_string())],
        );
    }
    let mut y = node.cluster_yaml(&labels, &ns_labels);
    for &i in policies {
        y.push_str("---\n");
        y.push_str(POLICIES[i].1);
    }
    y
}

/// Runs the tutorial in a sandbox, writing a readable account to `out`.
pub fn run(out: &mut dyn Write) -> Result<DemoReport, DemoError> {
    check_prerequisites()?;
    let started = Instant::now();
    writeln!(
        out,
        "tortie demo: a sandbox node in network namespaces (the host's own namespace is not touched)"
    )?;
    let mut node = Node::new("demo");
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
    let outside = node.outside.as_ref().expect("outside");
    let _web = Servers::start(outside, "outside", &[(Proto::Tcp, 80)]);
    for p in &node.pods {
        writeln!(
            out,
            "  pod {:<24} {:<14} on {}",
            format!("{}/{}", p.namespace, p.name),
            p.ip4,
            p.iface
        )?;
    }
    writeln!(
        out,
        "  outside host {UPLINK_OUTSIDE_IP} on the node's uplink eth1\n"
    )?;

    let pod = |ns: &str, n: &str| node.pod(ns, n);
    let out_ip: IpAddr = UPLINK_OUTSIDE_IP.parse().expect("ip");
    let probes = [
        Probe {
            from: pod("default", "frontend").ns.path(),
            to: pod("default", "backend").ip4,
            port: 8080,
            proto: Proto::Tcp,
        },
        Probe {
            from: pod("monitoring", "monitoring").ns.path(),
            to: pod("default", "backend").ip4,
            port: 8080,
            proto: Proto::Tcp,
        },
        Probe {
            from: pod("monitoring", "other").ns.path(),
            to: pod("default", "backend").ip4,
            port: 8080,
            proto: Proto::Tcp,
        },
        Probe {
            from: pod("default", "backend").ns.path(),
            to: out_ip,
            port: 80,
            proto: Proto::Tcp,
        },
        Probe {
            from: pod("default", "frontend").ns.path(),
            to: pod("kube-system", "coredns").ip4,
            port: 53,
            proto: Proto::Udp,
        },
        Probe {
            from: pod("default", "backend").ns.path(),
            to: pod("kube-system", "coredns").ip4,
            port: 53,
            proto: Proto::Udp,
        },
    ];
    let mut report = DemoReport::default();
    let mut active: Vec<usize> = Vec::new();
    for (i, step) in STEPS.iter().enumerate() {
        active.retain(|p| !step.remove.contains(p));
        active.extend_from_slice(step.add);
        let yaml = yaml_for(&node, &active, step.label_kube_system);
        let ruleset = crate::sandbox::compile_yaml(&yaml, &node.name);
        let applied = node
            .dataplane
            .borrow_mut()
            .apply(&ruleset)
            .map_err(|source| DemoError::Apply { step: i, source })?;
        node.record_applied(&yaml, &ruleset);
        writeln!(out, "step {i}: {}", step.title)?;
        let names: Vec<&str> = active.iter().map(|&p| POLICIES[p].0).collect();
        writeln!(
            out,
            "  policies: {}",
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        )?;
        writeln!(
            out,
            "  applied in {:.1} ms: {} chains written, {} set/map elements changed, {} rules in force",
            applied.duration.as_secs_f64() * 1000.0,
            applied.stats.chains_written,
            applied.stats.elements_added + applied.stats.elements_deleted,
            ruleset.rule_count()
        )?;
        let mut got = probe_all(&probes);
        // One retry for cells that disagree, as the upstream suite does.
        let wrong: Vec<usize> = (0..got.len())
            .filter(|&c| got[c] != step.expect[c])
            .collect();
        if !wrong.is_empty() {
            let again = probe_all(&wrong.iter().map(|&c| probes[c].clone()).collect::<Vec<_>>());
            for (c, g) in wrong.into_iter().zip(again) {
                got[c] = g;
            }
        }
        // `tortie trace` on the same ruleset must say what the packets did.
        for (c, p) in probes.iter().enumerate() {
            let proto = if p.proto == Proto::Tcp { 6 } else { 17 };
            let disagrees = match node.trace_probe(&p.from, p.to, proto, Some(p.port)) {
                crate::trace::probe::Traced::Trace(t) => (t.verdict == "allow") != got[c],
                crate::trace::probe::Traced::Not(_) => true,
            };
            if disagrees {
                let conn = CONNECTIONS[c];
                report
                    .mismatches
                    .push(format!("step {i}: trace disagrees: {conn}"));
            }
        }
        for (c, conn) in CONNECTIONS.iter().enumerate() {
            let word = if got[c] { "allowed" } else { "denied " };
            let ok = got[c] == step.expect[c];
            writeln!(
                out,
                "    {conn}  {word}  {}",
                if ok { "as expected" } else { "UNEXPECTED" }
            )?;
            if !ok {
                report
                    .mismatches
                    .push(format!("step {i} ({}): {conn}", step.title));
            }
        }
        report.probes += probes.len();
        report.steps += 1;
        writeln!(out)?;
    }
    writeln!(
        out,
        "{} steps, {} connection checks, {} unexpected, in {:.1} s; sandbox removed.",
        report.steps,
        report.probes,
        report.mismatches.len(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(report)
}
