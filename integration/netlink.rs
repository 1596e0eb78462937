//! Element changes over tortie's own nf_tables netlink socket, checked
//! against nft itself: every kind of element is applied through
//! `Dataplane::apply_change` in a throwaway namespace and listed back with
//! `nft -j list set`, next to the same state loaded from the text renderer
//! into a second namespace; a long seeded random walk ends in exactly the
//! expected contents; a concurrent writer is detected; and swapping
//! rulesets through `apply_change` (elements alone, and rules with
//! elements) never gives a wrong verdict.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::*;
use tortie::compile::ir::{Change, ElementDelta, Ruleset, Set, SetType};
use tortie::nft::{Dataplane, NftError, plan};
use tortie::synth::Rng;

const TYPES: [(&str, SetType); 5] = [
    ("s4-t", SetType::Ipv4),
    ("s6-t", SetType::Ipv6),
    ("sp-t", SetType::Port),
    ("np4-t", SetType::NamedPortV4),
    ("np6-t", SetType::NamedPortV6),
];

/// A table of one set per type holding `contents[i]`.
fn table(contents: &[BTreeSet<String>; 5]) -> Ruleset {
    let mut rs = Ruleset::default();
    for ((name, ty), elements) in TYPES.iter().zip(contents) {
        rs.sets.insert(
            name.to_string(),
            Set {
                name: name.to_string(),
                ty: *ty,
                elements: elements.clone(),
                comment: "netlink test".into(),
            },
        );
    }
    rs
}

/// The table with `s4` in the first (IPv4) set and the others empty.
fn one(s4: &[&str]) -> Ruleset {
    table(&[
        set_of(s4),
        set_of(&[]),
        set_of(&[]),
        set_of(&[]),
        set_of(&[]),
    ])
}

fn set_of(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The `elem` list of `nft -j list set inet tortie NAME` in `ns`.
fn listed(ns: &Netns, name: &str) -> serde_json::Value {
    let out = ns.output(&["nft", "-j", "list", "set", "inet", "tortie", name]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("nft -j list set {name}: {e}: {out}"));
    v["nftables"]
        .as_array()
        .and_then(|a| a.iter().find_map(|i| i.get("set")))
        .map(|s| s.get("elem").cloned().unwrap_or(serde_json::Value::Null))
        .unwrap_or_else(|| panic!("no set {name} in {out}"))
}

/// Loads `rs` with the text renderer into a fresh namespace and compares
/// every set's listing with `ns`'s.
fn same_as_text_renderer(ns: &Netns, rs: &Ruleset, what: &str) {
    let reference = Netns::new("nlref");
    tortie::nft::exec::run_transaction(&reference.target(), &rs.render())
        .unwrap_or_else(|e| panic!("{what}: the text renderer's table does not load: {e}"));
    for (name, _) in TYPES {
        assert_eq!(
            listed(ns, name),
            listed(&reference, name),
            "{what}: set {name} via netlink (left) differs from the text renderer's (right)"
        );
    }
}

/// Asserts that the kernel's table in `ns` holds `rs`, naming differences.
fn assert_holds(ns: &Netns, rs: &Ruleset, what: &str) {
    let have = tortie::nft::readback::read_target(&ns.target(), Duration::from_secs(30))
        .unwrap()
        .expect("the table exists");
    let json = tortie::nft::exec::list_table_json(&ns.target())
        .unwrap()
        .unwrap();
    let by_json = tortie::nft::TableState::parse_json(&json).unwrap();
    assert_eq!(
        have, by_json,
        "{what}: the netlink read-back equals nft's JSON listing"
    );
    let want = tortie::nft::TableState::of(rs);
    for (name, w) in &want.sets {
        let h = have.sets.get(name).cloned().unwrap_or_default();
        let missing: Vec<_> = w.difference(&h).collect();
        let extra: Vec<_> = h.difference(w).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{what}: set {name} lacks {missing:?} and has extra {extra:?}"
        );
    }
    assert_eq!(have, want, "{what}");
}

/// Applies `to` as a change from `from`; asserts it went over netlink.
fn step(dp: &mut Dataplane, from: &Ruleset, to: &Ruleset) {
    let change = plan::change_between(from, to);
    assert!(change.elements_only(), "{change:?}");
    let r = dp
        .apply_change(to, &change)
        .unwrap_or_else(|e| panic!("apply_change: {e}"));
    assert!(
        r.netlink || change.is_empty(),
        "not sent over netlink: {r:?}"
    );
}

#[test]
fn every_kind_of_element_change_lists_back_like_the_text_renderer() {
    if !kernel::require_kernel("nl-kinds") {
        return;
    }
    let ns = Netns::new("nlkinds");
    let mut dp = Dataplane::new(ns.target());
    let empty: [BTreeSet<String>; 5] = Default::default();
    let mut cur = table(&empty);
    dp.apply(&cur).unwrap();
    let stages: Vec<[BTreeSet<String>; 5]> = vec![
        [
            set_of(&["198.18.0.5", "198.18.1.0/24", "198.18.3.1-198.18.3.9"]),
            set_of(&[
                "fd74:6f72::1",
                "fd74:6f72:1::/64",
                "fd74:6f72:2::5-fd74:6f72:2::9",
            ]),
            set_of(&["80", "443", "8000-8080", "65535"]),
            set_of(&["198.18.0.5 . 6 . 80", "198.18.0.6 . 17 . 53"]),
            set_of(&["fd74:6f72::1 . 6 . 80", "fd74:6f72::2 . 132 . 9000"]),
        ],
        // Adjacent intervals (each ends where the next starts) and the
        // ends of the ranges.
        [
            set_of(&[
                "198.18.0.5",
                "198.18.0.6",
                "198.18.0.7",
                "198.18.1.0/24",
                "198.18.2.0/24",
                "0.0.0.0/8",
            ]),
            set_of(&[
                "fd74:6f72:1::1",
                "fd74:6f72:1::2",
                "fd74:6f72::/64",
                "fd74:6f72:0:1::/64",
            ]),
            set_of(&["0", "1", "2-79", "80", "65535"]),
            set_of(&["198.18.0.5 . 6 . 80", "198.18.0.5 . 6 . 81"]),
            set_of(&["fd74:6f72::1 . 6 . 80"]),
        ],
        // A CIDR replacing the addresses it covers (normalised input:
        // "remove the small ones, add the CIDR").
        [
            set_of(&[
                "198.18.0.0/24",
                "198.18.1.0/24",
                "198.18.2.0/24",
                "0.0.0.0/8",
            ]),
            set_of(&["fd74:6f72::/63", "fd74:6f72:1::/64"]),
            set_of(&["0-79", "80", "65535"]),
            set_of(&[]),
            set_of(&["fd74:6f72::1 . 6 . 80", "fd74:6f72::1 . 17 . 80"]),
        ],
        // Split again, and the top of the address space.
        [
            set_of(&["198.18.0.1", "198.18.0.200-198.18.0.255", "255.255.255.255"]),
            set_of(&["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fd74:6f72::7"]),
            set_of(&["22"]),
            set_of(&["198.18.0.9 . 6 . 22"]),
            set_of(&[]),
        ],
        empty.clone(),
    ];
    for (i, contents) in stages.iter().enumerate() {
        let next = table(contents);
        step(&mut dp, &cur, &next);
        same_as_text_renderer(&ns, &next, &format!("stage {i}"));
        assert_holds(&ns, &next, &format!("stage {i}"));
        cur = next;
    }
}

/// The walk's model: non-overlapping intervals of offsets 0..256 for the
/// three interval sets, plain elements for the two concatenations.
#[derive(Default)]
struct Model {
    intervals: [BTreeSet<(u32, u32)>; 3],
    concat: [BTreeSet<String>; 2],
}

impl Model {
    fn text(which: usize, a: u32, b: u32) -> String {
        let (p, q) = match which {
            0 => (format!("198.18.7.{a}"), format!("198.18.7.{b}")),
            1 => {
                let v6 = |o: u32| std::net::Ipv6Addr::from((0xfd74_6f72u128 << 96) | o as u128);
                (v6(a).to_string(), v6(b).to_string())
            }
            _ => ((1000 + a).to_string(), (1000 + b).to_string()),
        };
        let size = b - a + 1;
        let bits = size.trailing_zeros();
        if a == b {
            p
        } else if which < 2 && size.is_power_of_two() && a.is_multiple_of(size) {
            // nft lists an aligned block as a prefix, as the compiler writes it.
            format!("{p}/{}", if which == 0 { 32 - bits } else { 128 - bits })
        } else {
            format!("{p}-{q}")
        }
    }

    fn sets(&self) -> [BTreeSet<String>; 5] {
        let iv = |w: usize| -> BTreeSet<String> {
            self.intervals[w]
                .iter()
                .map(|&(a, b)| Model::text(w, a, b))
                .collect()
        };
        [
            iv(0),
            iv(1),
            iv(2),
            self.concat[0].clone(),
            self.concat[1].clone(),
        ]
    }

    /// One random change: a block of 1, 4 or 16 offsets is added
    /// (replacing the intervals it covers; nothing when one interval
    /// already holds it), or an element removed.
    fn random_change(&mut self, rng: &mut Rng) {
        let which = rng.below(5) as usize;
        if which >= 3 {
            let s = &mut self.concat[which - 3];
            if !s.is_empty() && rng.below(3) == 0 {
                let victim = s
                    .iter()
                    .nth(rng.below(s.len() as u64) as usize)
                    .cloned()
                    .unwrap();
                s.remove(&victim);
            } else if which == 3 {
                s.insert(format!(
                    "198.18.7.{} . 6 . {}",
                    rng.below(256),
                    80 + rng.below(3)
                ));
            } else {
                let a = std::net::Ipv6Addr::from((0xfd74_6f72u128 << 96) | rng.below(256) as u128);
                s.insert(format!("{a} . 17 . {}", 53 + rng.below(3)));
            }
            return;
        }
        let s = &mut self.intervals[which];
        if !s.is_empty() && rng.below(3) == 0 {
            let victim = *s.iter().nth(rng.below(s.len() as u64) as usize).unwrap();
            s.remove(&victim);
            return;
        }
        let size = [1u32, 4, 16][rng.below(3) as usize];
        let lo = rng.below(256) as u32 / size * size;
        let hi = lo + size - 1;
        let overlapping: Vec<(u32, u32)> = s
            .iter()
            .copied()
            .filter(|&(a, b)| a <= hi && b >= lo)
            .collect();
        if overlapping.iter().any(|&(a, b)| a <= lo && b >= hi) {
            return;
        }
        overlapping.iter().for_each(|iv| {
            s.remove(iv);
        });
        s.insert((lo, hi));
    }
}

#[test]
fn a_seeded_random_walk_of_1000_element_changes_ends_exactly_as_expected() {
    if !kernel::require_kernel("nl-walk") {
        return;
    }
    let seed = std::env::var("TORTIE_WALK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 * 0x9e37_79b9 + 1);
    eprintln!("random walk seed {seed} (rerun with TORTIE_WALK_SEED={seed})");
    let ns = Netns::new("nlwalk");
    let mut dp = Dataplane::new(ns.target());
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let mut cur = table(&model.sets());
    dp.apply(&cur).unwrap();
    let started = Instant::now();
    let mut batch_time = Duration::ZERO;
    for i in 0..1000 {
        // One to three element changes per batch, across sets.
        for _ in 0..=rng.below(3) {
            model.random_change(&mut rng);
        }
        let next = table(&model.sets());
        let change = plan::change_between(&cur, &next);
        let t0 = Instant::now();
        let r = dp
            .apply_change(&next, &change)
            .unwrap_or_else(|e| panic!("seed {seed}, change {i}: {e}"));
        batch_time += t0.elapsed();
        assert!(
            r.netlink || change.is_empty(),
            "seed {seed}, change {i}: {r:?}"
        );
        if i % 250 == 249 {
            assert_holds(&ns, &next, &format!("seed {seed}: after change {i}"));
        }
        cur = next;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "seed {seed}: the walk is too slow"
        );
    }
    eprintln!(
        "1000 batches in {:?} (mean {:?} per apply_change)",
        batch_time,
        batch_time / 1000
    );
    assert_holds(&ns, &cur, &format!("seed {seed}: final contents"));
    same_as_text_renderer(&ns, &cur, &format!("seed {seed}, final"));
}

#[test]
fn a_concurrent_writer_is_detected_and_the_next_apply_repairs() {
    if !kernel::require_kernel("nl-genid") {
        return;
    }
    let ns = Netns::new("nlgen");
    let mut dp = Dataplane::new(ns.target());
    let a = table(&[
        set_of(&["198.18.0.1"]),
        set_of(&[]),
        set_of(&[]),
        set_of(&[]),
        set_of(&[]),
    ]);
    dp.apply(&a).unwrap();
    let b = table(&[
        set_of(&["198.18.0.1", "198.18.0.2"]),
        set_of(&[]),
        set_of(&[]),
        set_of(&[]),
        set_of(&[]),
    ]);
    step(&mut dp, &a, &b);
    // Someone else commits (a table of their own) and removes one of ours.
    ns.exec(&[
        "nft",
        "add table inet other; delete element inet tortie s4-t { 198.18.0.1 }",
    ]);
    let c = table(&[
        set_of(&["198.18.0.1", "198.18.0.2", "198.18.0.3"]),
        set_of(&[]),
        set_of(&[]),
        set_of(&[]),
        set_of(&[]),
    ]);
    let err = dp
        .apply_change(&c, &plan::change_between(&b, &c))
        .expect_err("a stale generation id is refused");
    assert!(matches!(err, NftError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("re-reads"), "{err}");
    assert!(listed(&ns, "s4-t").to_string().contains("198.18.0.2"));
    assert!(
        !listed(&ns, "s4-t").to_string().contains("198.18.0.3"),
        "nothing was written"
    );
    // The next apply reads the kernel and repairs all of it.
    let r = dp.apply_change(&c, &Change::default()).unwrap();
    assert!(r.read_back, "{r:?}");
    assert!(dp.verify(&c).unwrap());
    ns.exec(&["nft", "list table inet other"]);
}

#[test]
fn kernel_refusals_name_the_set_and_element_and_change_nothing() {
    if !kernel::require_kernel("nl-refuse") {
        return;
    }
    let ns = Netns::new("nlrefuse");
    let mut dp = Dataplane::new(ns.target());
    let a = one(&["198.18.0.5", "198.18.0.9"]);
    dp.apply(&a).unwrap();
    // A delta that is not normalised: a CIDR covering existing addresses
    // without removing them. The kernel refuses the overlap.
    let mut change = Change::default();
    change.elements.insert(
        "s4-t".into(),
        ElementDelta {
            added: set_of(&["198.18.0.0/24", "198.18.5.1"]),
            removed: BTreeSet::new(),
        },
    );
    let b = one(&["198.18.0.5", "198.18.0.9", "198.18.0.0/24", "198.18.5.1"]);
    let err = dp.apply_change(&b, &change).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, NftError::Element { .. }), "{text}");
    assert!(
        text.contains("s4-t") && text.contains("198.18.0.0/24"),
        "{text}"
    );
    assert!(text.contains("File exists"), "{text}");
    assert_eq!(dp.consecutive_failures(), 1);
    // All or nothing: the other element of the batch was not added.
    assert!(!listed(&ns, "s4-t").to_string().contains("198.18.5.1"));
    assert!(dp.verify(&a).unwrap());
}

#[test]
fn a_refresh_lists_nothing_until_someone_else_commits() {
    if !kernel::require_kernel("nl-refresh") {
        return;
    }
    let ns = Netns::new("nlrefresh");
    let mut dp = Dataplane::new(ns.target());
    let a = one(&["198.18.0.5"]);
    dp.apply(&a).unwrap();
    let b = one(&["198.18.0.5", "198.18.0.6"]);
    step(&mut dp, &a, &b);
    let r = dp.refresh(&b).unwrap();
    assert!(!r.read_back && !r.sent, "{r:?}");
    // Drift by hand: the generation moves on, the refresh reads and repairs.
    ns.exec(&["nft", "delete element inet tortie s4-t { 198.18.0.6 }"]);
    let r = dp.refresh(&b).unwrap();
    assert!(r.read_back && r.sent, "{r:?}");
    assert_holds(&ns, &b, "after the repair");
    let r = dp.refresh(&b).unwrap();
    assert!(!r.read_back && !r.sent, "{r:?}");
}

// ---- no window while swapping through apply_change ----

const POLICY_A: &str = "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: a, namespace: default}\nspec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {matchLabels: {app: good}}}]}]}\n";
/// The same meaning as A with other rules (TCP 80 only): flipping between
/// them rewrites the policy chain and keeps the `good` selector set.
const POLICY_A2: &str = "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: a, namespace: default}\nspec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {matchLabels: {app: good}}}], ports: [{protocol: TCP, port: 80}]}]}\n";
const POLICY_B: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: b}\nspec: {selector: app == 'server', order: 5, types: [Ingress], ingress: [{action: Deny, source: {nets: [198.18.0.4/32]}}, {action: Allow, protocol: TCP, source: {selector: app == 'good'}, destination: {ports: [80]}}]}\n";

/// Remote pods labelled `app=good` (on another node): `n` of them, so the
/// `good` selector set gains and loses elements.
fn remote_goods(n: usize) -> String {
    (0..n)
        .map(|i| format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: r{i}, namespace: default, labels: {{app: good}}}}\nspec: {{nodeName: node2}}\nstatus: {{podIP: 198.18.9.{}}}\n", i + 1))
        .collect()
}

#[test]
fn no_wrong_verdict_while_swapping_through_apply_change() {
    if !kernel::require_kernel("nl-swap") {
        return;
    }
    let w = Trio::new("nlswap");
    let rs = |policy: &str, goods: usize| {
        compile_yaml(
            &format!("{}{}---\n{policy}", w.cluster_yaml(), remote_goods(goods)),
            "node1",
        )
    };
    // Element-only steps (remote pods come and go), then rules and
    // elements together (the policy flips while pods come and go).
    let mut sequence = Vec::new();
    for i in 0..100 {
        sequence.push(rs(POLICY_A, i % 4));
    }
    for i in 0..90 {
        let policy = [POLICY_A2, POLICY_A, POLICY_B][i % 3];
        sequence.push(rs(policy, (i * 3) % 5));
    }
    let mut cur = rs(POLICY_A, 0);
    let mut dp = w.node.dataplane.borrow_mut();
    dp.apply(&cur).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let probing = w.probe_while(stop.clone(), 1, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(300));
    let (mut by_netlink, mut mixed, mut mixed_by_netlink) = (0, 0, 0);
    let started = Instant::now();
    for next in &sequence {
        let change = plan::change_between(&cur, next);
        let r = dp.apply_change(next, &change).unwrap();
        by_netlink += r.netlink as usize;
        let both = !change.elements_only() && !change.elements.is_empty();
        mixed += both as usize;
        mixed_by_netlink += (both && r.netlink) as usize;
        cur = next.clone();
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (attempts, wrong) = probing.join().unwrap();
    eprintln!(
        "{} changes in {took:?} ({by_netlink} over netlink, {mixed} with rules and elements, {mixed_by_netlink} of those over netlink); {attempts} probes, {} wrong",
        sequence.len(),
        wrong.len()
    );
    assert!(
        by_netlink >= 50,
        "element-only changes went over netlink ({by_netlink})"
    );
    assert!(
        mixed >= 20,
        "changes carried rules and elements together ({mixed})"
    );
    assert_eq!(
        mixed_by_netlink, mixed,
        "every change of rules and elements went as one netlink batch"
    );
    assert!(attempts >= 50, "the prober ran ({attempts} attempts)");
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert!(dp.verify(&cur).unwrap());
    // The probes moved counters: the netlink counter reader agrees with
    // the JSON listing (the network is quiet by now).
    std::thread::sleep(Duration::from_millis(300));
    let target = w.node.ns.target();
    let by_netlink =
        tortie::nft::readback::rule_counters(&target, Duration::from_secs(30)).unwrap();
    let json = tortie::nft::exec::list_table_json(&target)
        .unwrap()
        .unwrap();
    let by_json = tortie::nft::state::rule_counters(&json).unwrap();
    assert_eq!(by_netlink, by_json);
    let packets: u64 = by_netlink.iter().map(|c| c.packets).sum();
    assert!(packets > 0, "the probes were counted");
}

/// The text of `nft list set inet tortie NAME` in `ns` (declaration,
/// flags, comment and elements), or `None` when there is no such set.
fn set_text(ns: &Netns, name: &str) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "nft", "list", "set", "inet", "tortie", name,
        ])
        .output()
        .expect("ip netns exec nft");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `sets` plus one chain whose rules look every set of the table up.
fn using(sets: &Ruleset) -> Ruleset {
    use tortie::compile::ir::{Chain, Rank, Rule};
    let mut rs = sets.clone();
    let matches = [
        "ip saddr @s4-t",
        "ip6 saddr @s6-t",
        "tcp dport @sp-t",
        "ip daddr . meta l4proto . th dport @np4-t",
        "ip6 daddr . meta l4proto . th dport @np6-t",
    ];
    let rules = matches
        .iter()
        .map(|m| Rule::new(*m, "accept", "netlink test"))
        .collect();
    rs.chains.insert(
        "filter-users".into(),
        Chain {
            name: "filter-users".into(),
            hook: None,
            rank: Rank::Leaf,
            rules,
        },
    );
    rs
}

#[test]
fn sets_created_and_deleted_over_netlink_list_exactly_like_nft_declared_ones() {
    if !kernel::require_kernel("netlink set creation") {
        return;
    }
    let ns = Netns::new("nlset");
    let mut dp = Dataplane::new(ns.target());
    // Before: a table with one chain and no set.
    let mut before = using(&Ruleset::default());
    before.chains.values_mut().for_each(|c| {
        c.name = "filter-other".into();
        c.rules.truncate(0);
        c.rules
            .push(tortie::compile::ir::Rule::new("", "accept", "netlink test"));
    });
    before.chains = before
        .chains
        .into_values()
        .map(|c| (c.name.clone(), c))
        .collect();
    dp.apply(&before).expect("a first table");
    // After: every kind of set, with elements of every shape and a
    // comment, and a chain that looks them up.
    let mut sets = table(&[
        set_of(&["198.18.0.1", "198.18.2.0/24", "198.18.9.1-198.18.9.7"]),
        set_of(&["fd74:6f72::1", "fd74:6f72:1::/64"]),
        set_of(&["80", "443", "9000-9100"]),
        set_of(&["198.18.0.5 . 6 . 80", "198.18.0.6 . 17 . 53"]),
        set_of(&["fd74:6f72::5 . 6 . 8080"]),
    ]);
    for (i, set) in sets.sets.values_mut().enumerate() {
        set.comment = format!("app == \"web-{i}\" && tier in {{'a', 'b'}}");
    }
    let mut wanted = using(&sets);
    wanted.chains.extend(before.chains.clone());
    let batches = dp.side_batches();
    let change = plan::change_between(&before, &wanted);
    dp.apply_change(&wanted, &change)
        .expect("new sets and the chain using them");
    assert_eq!(
        dp.side_batches(),
        batches + 1,
        "the new sets went as one netlink batch"
    );
    assert_holds(&ns, &wanted, "after creating the sets");
    // The same table from the text renderer, in another namespace: every
    // new set lists identically (type, flags, comment, elements).
    let reference = Netns::new("nlsetref");
    tortie::nft::exec::run_transaction(&reference.target(), &wanted.render())
        .expect("the text renderer's table loads");
    for (name, _) in TYPES {
        let (got, want) = (set_text(&ns, name), set_text(&reference, name));
        assert!(got.is_some(), "set {name} exists");
        assert_eq!(
            got, want,
            "set {name}: created over netlink (left), by nft (right)"
        );
    }
    // Back: the chain goes and the sets are deleted, again over netlink.
    let change = plan::change_between(&wanted, &before);
    dp.apply_change(&before, &change).expect("the sets removed");
    assert_eq!(
        dp.side_batches(),
        batches + 2,
        "the deletions went as one netlink batch"
    );
    for (name, _) in TYPES {
        assert_eq!(set_text(&ns, name), None, "set {name} is gone");
    }
    let chains = ns.output(&["nft", "list", "chains"]);
    assert!(
        chains.contains("filter-other") && !chains.contains("filter-users"),
        "{chains}"
    );
    assert_holds(&ns, &before, "after deleting the sets");
}

/// The golden cases: each `rulesets/<case>.yaml` compiled for the node (and
/// host interfaces) its header names, as `rulesets/run.rs` compiles them.
fn golden_rulesets() -> Vec<(String, Ruleset)> {
    use tortie::calc::{Cluster, HostInterface};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rulesets");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    cases
        .iter()
        .map(|case| {
            let text = std::fs::read_to_string(case).unwrap();
            let header: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
            let node = header[0].strip_prefix("# node: ").unwrap().trim();
            let hosts: Vec<HostInterface> = header
                .iter()
                .filter_map(|l| l.strip_prefix("# host-interface: "))
                .map(|s| s.parse().unwrap())
                .collect();
            let loaded = tortie::model::load::load_file(case);
            let resources: Vec<_> = loaded.resources.into_iter().map(|l| l.resource).collect();
            let mut cluster = Cluster::build(&resources, node);
            cluster.host_interfaces = HostInterface::map(&hosts);
            let name = case.file_stem().unwrap().to_string_lossy().into_owned();
            (name, tortie::compile::compile(&cluster, node))
        })
        .collect()
}

/// Fails naming the first differing line when `nft list table` of tortie's
/// table differs between `by_nft` (loaded by nft) and `by_netlink`.
fn same_listing(name: &str, by_nft: &Netns, by_netlink: &Netns) {
    let listing = |ns: &Netns| ns.output(&["nft", "list", "table", "inet", "tortie"]);
    let (want, got) = (listing(by_nft), listing(by_netlink));
    if want != got {
        let line = want
            .lines()
            .zip(got.lines())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("nft:     {a}\nnetlink: {b}"))
            .unwrap_or_else(|| "one listing is longer".into());
        panic!("{name}: `nft list table` differs\n{line}");
    }
}

/// `nft -j list table inet tortie` without the handles (which differ
/// between two namespaces loaded in different orders).
fn json_without_handles(ns: &Netns) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("handle");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let out = ns.output(&["nft", "-j", "list", "table", "inet", "tortie"]);
    let mut v: serde_json::Value = serde_json::from_str(&out).unwrap();
    strip(&mut v);
    v
}

/// Netlink attributes `(type, value)` of one message.
fn nl_attrs(mut b: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((
            u16::from_ne_bytes([b[2], b[3]]) & 0x3fff,
            b[4..len].to_vec(),
        ));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

/// Every rule of the table as the kernel dumps it: (chain, expressions,
/// user data), in order, handles left out.
fn kernel_rules(ns: &Netns) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut sock = tortie::nft::netlink::NlSocket::open(&ns.target()).unwrap();
    let table = tortie::nft::netlink::cstr("tortie");
    let raw = sock
        .dump(7, &[(1, table)], true, Duration::from_secs(30))
        .unwrap();
    raw.iter()
        .map(|m| {
            let a = nl_attrs(&m.payload);
            let get = |k: u16| {
                a.iter()
                    .find(|(t, _)| *t == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (
                String::from_utf8_lossy(&get(2)).into_owned(),
                get(4),
                get(7),
            )
        })
        .collect()
}

#[test]
fn every_golden_rule_added_over_netlink_lists_exactly_like_nfts_own() {
    use tortie::nft::Kernel;
    use tortie::nft::rules::Op;
    if !kernel::require_kernel("nl-golden-rules") {
        return;
    }
    let cases = golden_rulesets();
    assert!(cases.len() >= 20, "the golden cases ({})", cases.len());
    let limits = tortie::nft::Limits::default();
    let mut rules = 0;
    for (name, rs) in &cases {
        let by_nft = Netns::new("nlgold");
        tortie::nft::exec::run_transaction(&by_nft.target(), &rs.render())
            .unwrap_or_else(|e| panic!("{name}: nft loads the golden table: {e}"));
        // The same table with every chain empty, then every rule over netlink.
        let mut empty = rs.clone();
        empty.chains.values_mut().for_each(|c| c.rules.clear());
        let by_netlink = Netns::new("nlgold");
        tortie::nft::exec::run_transaction(&by_netlink.target(), &empty.render())
            .unwrap_or_else(|e| panic!("{name}: the empty chains load: {e}"));
        let ops: Vec<Op> = rs
            .ordered_chains()
            .iter()
            .flat_map(|c| {
                c.rules.iter().map(|r| Op::AddRule {
                    chain: c.name.clone(),
                    rule: r.clone(),
                })
            })
            .collect();
        rules += ops.len();
        let mut k = tortie::nft::NftKernel::new(by_netlink.target());
        k.list(&limits).unwrap();
        k.change(&ops, &limits)
            .unwrap_or_else(|e| panic!("{name}: the rules over netlink: {e}"));
        same_listing(name, &by_nft, &by_netlink);
        assert_eq!(
            json_without_handles(&by_nft),
            json_without_handles(&by_netlink),
            "{name}: `nft -j list table` (handles stripped) differs"
        );
        // Below the listing: the very expressions and user data the kernel holds.
        let (want, got) = (kernel_rules(&by_nft), kernel_rules(&by_netlink));
        assert_eq!(want.len(), got.len(), "{name}: rule count");
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(
                w, g,
                "{name}: chain {}: the kernel's expressions differ",
                w.0
            );
        }
    }
    eprintln!(
        "{} golden rulesets, {rules} rules: identical listings",
        cases.len()
    );
}

/// The ruleset generation id in `ns` now.
fn genid(ns: &Netns) -> u32 {
    tortie::nft::netlink::NlSocket::open(&ns.target())
        .unwrap()
        .genid(Duration::from_secs(5))
        .unwrap()
}

/// `nft list chain inet tortie NAME` in `ns`.
fn chain_text(ns: &Netns, name: &str) -> String {
    ns.output(&["nft", "list", "chain", "inet", "tortie", name])
}

#[test]
fn a_rule_and_an_element_change_commit_as_one_netlink_transaction() {
    use tortie::compile::ir::Rule;
    if !kernel::require_kernel("nl-rule-and-element") {
        return;
    }
    let ns = Netns::new("nlmix");
    let mut dp = Dataplane::new(ns.target());
    let before = using(&one(&["198.18.0.1"]));
    dp.apply(&before).unwrap();
    let mut after = using(&one(&["198.18.0.1", "198.18.4.0/24"]));
    let users = after.chains.get_mut("filter-users").unwrap();
    users.rules.insert(
        0,
        Rule::new(
            "ip saddr 198.18.7.0/24 tcp dport 22-23",
            "drop",
            "netlink test",
        ),
    );
    users.rules.push(Rule::new(
        "ct state established,related",
        "accept",
        "netlink test",
    ));
    let change = plan::change_between(&before, &after);
    assert!(
        !change.chains.is_empty() && !change.elements.is_empty(),
        "{change:?}"
    );
    let g = genid(&ns);
    let r = dp.apply_change(&after, &change).unwrap();
    assert!(r.netlink && r.sent, "{r:?}");
    assert_eq!(genid(&ns), g.wrapping_add(1), "exactly one commit");
    assert_holds(&ns, &after, "after the mixed change");
    let reference = Netns::new("nlmixref");
    tortie::nft::exec::run_transaction(&reference.target(), &after.render()).unwrap();
    assert_eq!(
        chain_text(&ns, "filter-users"),
        chain_text(&reference, "filter-users"),
        "the chain rewritten over netlink (left) and by nft (right)"
    );
    same_as_text_renderer(&ns, &after, "after the mixed change");
}

#[test]
fn a_rule_without_netlink_encoding_goes_through_nft_and_lands_the_same() {
    use tortie::compile::ir::Rule;
    if !kernel::require_kernel("nl-unencodable") {
        return;
    }
    let ns = Netns::new("nlunenc");
    let mut dp = Dataplane::new(ns.target());
    let before = using(&one(&["198.18.0.1"]));
    dp.apply(&before).unwrap();
    let mut after = before.clone();
    after
        .chains
        .get_mut("filter-users")
        .unwrap()
        .rules
        .push(Rule::new(
            "meta l4proto tcp tcp dport { 80, 8000-8080 }",
            "accept",
            "netlink test",
        ));
    let r = dp
        .apply_change(&after, &plan::change_between(&before, &after))
        .unwrap();
    assert!(!r.netlink && r.sent, "{r:?}");
    assert_eq!(dp.consecutive_failures(), 0);
    assert_holds(&ns, &after, "after the fallback");
    assert!(chain_text(&ns, "filter-users").contains("tcp dport { 80, 8000-8080 }"));
    // Without that rule the chain encodes again: over netlink.
    let r = dp
        .apply_change(&before, &plan::change_between(&after, &before))
        .unwrap();
    assert!(r.netlink && r.sent, "{r:?}");
    assert_holds(&ns, &before, "back over netlink");
}

/// Every golden table, plus one whose sets are large enough to span many
/// packed messages, loaded into an empty namespace by `Dataplane::apply`
/// (the table and its sets over netlink, then the chains through nft)
/// lists exactly like the same table loaded by `nft -f` whole.
#[test]
fn a_first_load_with_its_sets_over_netlink_lists_exactly_like_nft_f() {
    if !kernel::require_kernel("nl-first-load") {
        return;
    }
    let mut cases = golden_rulesets();
    assert!(cases.len() >= 20, "the golden cases ({})", cases.len());
    let big = |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<BTreeSet<_>>();
    let mut large = using(&table(&[
        big(1300, &|i| match i % 3 {
            0 => format!("198.18.{}.{}", i / 250, i % 250),
            1 => format!("198.19.{}.0/28", i / 16),
            _ => {
                let (octet, at) = (200 + i % 50, (i / 50) * 4);
                format!("198.19.{octet}.{at}-198.19.{octet}.{}", at + 2)
            }
        }),
        big(1100, &|i| format!("fd74:6f72:{:x}::/64", i + 1)),
        big(700, &|i| format!("{}-{}", 1000 + i * 10, 1000 + i * 10 + 3)),
        big(1200, &|i| {
            format!("198.18.{}.{} . 6 . {}", i / 200, i % 200, 80 + i % 7)
        }),
        big(600, &|i| format!("fd74:6f72::{:x} . 17 . 53", i + 1)),
    ]));
    large.sets.values_mut().for_each(|s| s.comment.clear());
    cases.push(("large sets".into(), large));
    for (name, rs) in &cases {
        let by_nft = Netns::new("nlfirst");
        tortie::nft::exec::run_transaction(&by_nft.target(), &plan::replace_table(rs).text)
            .unwrap_or_else(|e| panic!("{name}: nft loads the table: {e}"));
        let ours = Netns::new("nlfirst");
        let mut dp = Dataplane::new(ours.target());
        dp.apply(rs)
            .unwrap_or_else(|e| panic!("{name}: the first load: {e}"));
        assert_eq!(
            dp.side_batches(),
            1,
            "{name}: the table and its sets went as one netlink batch"
        );
        same_listing(name, &by_nft, &ours);
        assert!(dp.verify(rs).unwrap(), "{name}: read back as desired");
    }
}
