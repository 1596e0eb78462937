//! Overlapping intervals through the real kernel: random lists of ports,
//! port ranges and networks (both families; overlapping, adjacent, nested,
//! duplicated), placed in rules and network sets, must compile to a ruleset
//! that `nft -c` accepts and that `tortie apply` puts into a namespace —
//! one case after another on the same table — and every set in the kernel
//! must hold exactly the union of its inputs, checked with
//! `nft get element` on random points.

mod support;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;

use ipnet::IpNet;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::kernel::require_kernel;
use tortie::sandbox::{Netns, compile_yaml};

/// One rule side's interval input.
#[derive(Debug, Clone)]
struct Case {
    ports: Vec<(u16, u16)>,
    not_ports: Vec<(u16, u16)>,
    nets4: Vec<IpNet>,
    nets6: Vec<IpNet>,
    /// Nets of two network sets selected by one rule, with a pod inside.
    set_a: Vec<IpNet>,
    set_b: Vec<IpNet>,
}

fn port_list() -> impl Strategy<Value = Vec<(u16, u16)>> {
    let r = prop_oneof![
        (70u16..96, 0u16..6).prop_map(|(a, w)| (a, a + w)),
        (1u16..=65535).prop_map(|a| (a, a)),
    ];
    prop::collection::vec(r, 1..7)
}

fn nets4() -> impl Strategy<Value = Vec<IpNet>> {
    let n = (0u32..256, 22u8..=32).prop_map(|(h, len)| {
        IpNet::new(IpAddr::V4(Ipv4Addr::from(0xC612_0000u32 + h * 8)), len)
            .unwrap()
            .trunc()
    });
    prop::collection::vec(n, 1..6)
}

fn nets6() -> impl Strategy<Value = Vec<IpNet>> {
    let n = (0u128..64, 120u8..=128).prop_map(|(h, len)| {
        let base: u128 = 0xfd74_6f72_0000_0000_0000_0000_0000_0000;
        IpNet::new(IpAddr::V6(Ipv6Addr::from(base + h * 64)), len)
            .unwrap()
            .trunc()
    });
    prop::collection::vec(n, 1..6)
}

fn case() -> impl Strategy<Value = Case> {
    (port_list(), port_list(), nets4(), nets6(), nets4(), nets4()).prop_map(
        |(ports, not_ports, nets4, nets6, set_a, set_b)| Case {
            ports,
            not_ports,
            nets4,
            nets6,
            set_a,
            set_b,
        },
    )
}

fn port_yaml(p: &[(u16, u16)]) -> String {
    let items: Vec<String> = p
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("\"{a}:{b}\"")
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn net_yaml(n: &[IpNet]) -> String {
    let items: Vec<String> = n.iter().map(|n| n.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// Rule 0: ports; 1: notPorts; 2: v4 nets; 3: v6 nets; 4: the network sets
/// (and a pod whose address is inside set A's first net).
fn yaml(c: &Case) -> String {
    let pod_ip = match c.set_a[0] {
        IpNet::V4(n) => n.network(),
        IpNet::V6(_) => unreachable!(),
    };
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: d}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: d, labels: {{iv: m}}}}\nspec: {{nodeName: n1}}\nstatus: {{podIP: {pod_ip}}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: a, labels: {{iv: m}}}}\nspec: {{nets: {}}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: b, labels: {{iv: m}}}}\nspec: {{nets: {}}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: iv}}\nspec:\n  selector: all()\n  ingress:\n\
         \x20 - {{action: Allow, protocol: TCP, destination: {{ports: {}}}}}\n\
         \x20 - {{action: Allow, protocol: UDP, destination: {{notPorts: {}}}}}\n\
         \x20 - {{action: Allow, source: {{nets: {}}}}}\n\
         \x20 - {{action: Allow, source: {{nets: {}}}}}\n\
         \x20 - {{action: Allow, source: {{selector: iv == 'm'}}}}\n",
        net_yaml(&c.set_a),
        net_yaml(&c.set_b),
        port_yaml(&c.ports),
        port_yaml(&c.not_ports),
        net_yaml(&c.nets4),
        net_yaml(&c.nets6),
    )
}

/// The set (or inline value) each policy rule matches on, in rule order.
fn rule_targets(rs: &tortie::compile::ir::Ruleset) -> Vec<String> {
    let chain = &rs.chains["filter-pi-gnp/iv"];
    chain
        .rules
        .iter()
        .map(|r| {
            let m = &r.matches;
            match m.find('@') {
                Some(i) => m[i..].split_whitespace().next().unwrap().to_string(),
                None => m.split_whitespace().last().unwrap().to_string(),
            }
        })
        .collect()
}

/// Whether the kernel's set (or the inline literal) holds `point`.
fn kernel_holds(ns: &Netns, target: &str, point: &str) -> bool {
    if let Some(set) = target.strip_prefix('@') {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &ns.name, "nft", "get", "element", "inet", "tortie", set,
            ])
            .arg(format!("{{ {point} }}"))
            .output()
            .expect("nft get element");
        return out.status.success();
    }
    // An inline single value: a port, a port range or a network.
    if let Ok(p) = point.parse::<u16>() {
        return match target.split_once('-') {
            Some((a, b)) => a.parse::<u16>().unwrap() <= p && p <= b.parse::<u16>().unwrap(),
            None => target.parse::<u16>().unwrap() == p,
        };
    }
    let addr: IpAddr = point.parse().unwrap();
    let net: IpNet = target
        .parse()
        .or_else(|_| target.parse::<IpAddr>().map(IpNet::from))
        .unwrap();
    net.contains(&addr)
}

fn in_ports(list: &[(u16, u16)], p: u16) -> bool {
    list.iter().any(|&(a, b)| a <= p && p <= b)
}

fn in_nets(list: &[IpNet], a: IpAddr) -> bool {
    list.iter().any(|n| n.contains(&a))
}

/// Points near every interval end, plus random ones.
fn port_points(lists: &[&[(u16, u16)]], rng: &mut u64) -> Vec<u16> {
    let mut v: Vec<u16> = lists
        .iter()
        .flat_map(|l| l.iter())
        .flat_map(|&(a, b)| [a.saturating_sub(1), a, b, b.saturating_add(1)])
        .collect();
    for _ in 0..6 {
        *rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.push(70 + (*rng >> 33) as u16 % 40);
    }
    v.retain(|p| *p > 0);
    v.sort();
    v.dedup();
    v
}

fn net_points(list: &[IpNet]) -> Vec<IpAddr> {
    let mut v = Vec::new();
    for n in list {
        v.push(n.network());
        v.push(n.broadcast());
        for edge in [n.network(), n.broadcast()] {
            match edge {
                IpAddr::V4(a) => {
                    v.push(IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_sub(1))));
                    v.push(IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(1))));
                }
                IpAddr::V6(a) => {
                    v.push(IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_sub(1))));
                    v.push(IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(1))));
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

fn check_case(ns: &Netns, c: &Case, step: usize, rng: &mut u64) -> Result<(), String> {
    let text = yaml(c);
    let rs = compile_yaml(&text, "n1");
    // nft -c in a throwaway namespace.
    let file = std::env::temp_dir().join(format!("tortie-iv-{}-{step}.nft", std::process::id()));
    std::fs::File::create(&file)
        .and_then(|mut f| f.write_all(rs.render().as_bytes()))
        .map_err(|e| e.to_string())?;
    let checked = support::kernel::nft_check(&file);
    let _ = std::fs::remove_file(&file);
    checked.map_err(|e| format!("nft -c rejected step {step}: {e}"))?;
    // The same through `tortie apply`, on the table the previous case left.
    let input = std::env::temp_dir().join(format!("tortie-iv-{}-{step}.yaml", std::process::id()));
    std::fs::write(&input, &text).map_err(|e| e.to_string())?;
    let out = Command::new(env!("CARGO_BIN_EXE_tortie"))
        .args(["apply", "--node", "n1", "--netns", &ns.name, "-f"])
        .arg(&input)
        .output()
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&input);
    if !out.status.success() {
        return Err(format!(
            "tortie apply failed at step {step}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let targets = rule_targets(&rs);
    if targets.len() != 6 {
        return Err(format!("expected 6 matching rules, got {targets:?}"));
    }
    let mut wrong = Vec::new();
    let ports = [(0usize, &c.ports), (1, &c.not_ports)];
    for (rule, list) in ports {
        for p in port_points(&[list], rng) {
            if kernel_holds(ns, &targets[rule], &p.to_string()) != in_ports(list, p) {
                wrong.push(format!("rule {rule} port {p} (target {})", targets[rule]));
            }
        }
    }
    let mut members = c.set_a.clone();
    members.extend(c.set_b.iter().copied());
    let nets: [(usize, &[IpNet]); 3] = [(2, &c.nets4), (3, &c.nets6), (4, &members)];
    // Rule 4 renders twice (v4 set at 4, an empty v6 set at 5).
    for (rule, list) in nets {
        for a in net_points(list) {
            if kernel_holds(ns, &targets[rule], &a.to_string()) != in_nets(list, a) {
                wrong.push(format!(
                    "rule {rule} address {a} (target {})",
                    targets[rule]
                ));
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("step {step}: {c:?}\n{}", wrong.join("\n")))
    }
}

#[test]
fn overlapping_intervals_apply_and_hold_exactly_their_union() {
    if !require_kernel("overlapping_intervals_apply_and_hold_exactly_their_union") {
        return;
    }
    let ns = Netns::new("iv");
    let cases = 24;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let step = std::cell::Cell::new(0usize);
    let rng = std::cell::Cell::new(0x7472_6f74u64);
    let result = runner.run(&case(), |c| {
        step.set(step.get() + 1);
        let mut r = rng.get();
        let out = check_case(&ns, &c, step.get(), &mut r).map_err(TestCaseError::fail);
        rng.set(r);
        out
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(step.get() >= cases as usize, "ran {} cases", step.get());
}

#[test]
fn the_issue_examples_apply() {
    if !require_kernel("the_issue_examples_apply") {
        return;
    }
    let ns = Netns::new("ivx");
    let n = |s: &str| s.parse::<IpNet>().unwrap();
    let c = Case {
        ports: vec![(79, 80), (80, 80), (81, 81)],
        not_ports: vec![(81, 81), (81, 90)],
        nets4: vec![n("198.18.0.0/16"), n("198.18.1.0/24"), n("198.18.2.7/32")],
        nets6: vec![n("fd74:6f72::/120"), n("fd74:6f72::5/128")],
        set_a: vec![n("198.18.0.0/24"), n("198.18.0.0/25")],
        set_b: vec![n("198.18.0.128/25"), n("198.18.1.0/24")],
    };
    let mut rng = 1;
    check_case(&ns, &c, 0, &mut rng).unwrap();
}
