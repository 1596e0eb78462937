//! The kernel side under stress: no window while rulesets are swapped, drift
//! repair after hand edits, and a rejected transaction leaving the last good
//! state in force.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::*;
use tortie::compile::ir::{Rank, Rule as IrRule, Ruleset};
use tortie::nft::{Dataplane, plan};

type World = Trio;

fn world(tag: &str) -> World {
    Trio::new(tag)
}

impl World {
    fn ruleset(&self, policy: &str) -> Ruleset {
        compile_yaml(&format!("{}---\n{policy}", self.cluster_yaml()), "node1")
    }
}

/// Two rulesets with the same meaning (only `good` reaches the server) but
/// different chains, sets and rules, so every swap rewrites the table.
const POLICY_A: &str = "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: a, namespace: default}\nspec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {matchLabels: {app: good}}}]}]}\n";
const POLICY_B: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: b}\nspec: {selector: app == 'server', order: 5, types: [Ingress], ingress: [{action: Deny, source: {nets: [198.18.0.4/32]}}, {action: Allow, protocol: TCP, source: {nets: [198.18.0.3/32]}, destination: {ports: [80]}}]}\n";

#[test]
fn no_wrong_verdict_while_200_rulesets_are_swapped() {
    if !kernel::require_kernel("swap") {
        return;
    }
    let w = world("swap");
    let (a, b) = (w.ruleset(POLICY_A), w.ruleset(POLICY_B));
    w.node.dataplane.borrow_mut().apply(&a).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let probing = w.probe_while(stop.clone(), 2, Duration::from_secs(300));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut chains_written = 0;
    for i in 0..200 {
        let rs = if i % 2 == 0 { &b } else { &a };
        let r = w.node.dataplane.borrow_mut().apply(rs).unwrap();
        assert!(r.sent);
        chains_written += r.stats.chains_written;
    }
    let swap_time = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    finish_probing(
        stop,
        probing,
        &format!("200 swaps in {swap_time:?} ({chains_written} chain rewrites)"),
        100,
    );
}

#[test]
fn no_wrong_verdict_across_forced_full_rebuilds() {
    if !kernel::require_kernel("rebuild") {
        return;
    }
    let w = world("rebuild");
    let (a, b) = (w.ruleset(POLICY_A), w.ruleset(POLICY_B));
    w.node.dataplane.borrow_mut().apply(&a).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let probing = w.probe_while(stop.clone(), 2, Duration::from_secs(300));
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..60 {
        let rs = if i % 2 == 0 { &b } else { &a };
        let p = plan::full_rebuild(rs);
        tortie::nft::exec::run_transaction(&w.node.ns.target(), &p.text).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    finish_probing(stop, probing, "60 full rebuilds", 20);
}

/// Stops the prober, reports, and asserts it ran and saw no wrong verdict.
fn finish_probing(
    stop: Arc<AtomicBool>,
    probing: std::thread::JoinHandle<(usize, Vec<String>)>,
    what: &str,
    min_attempts: usize,
) {
    stop.store(true, Ordering::Relaxed);
    let (attempts, wrong) = probing.join().unwrap();
    eprintln!("{what}; {attempts} probes, {} wrong", wrong.len());
    assert!(
        attempts >= min_attempts,
        "the prober ran ({attempts} attempts)"
    );
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

#[test]
fn drift_is_detected_and_repaired() {
    if !kernel::require_kernel("drift") {
        return;
    }
    let w = world("drift");
    let a = w.ruleset(POLICY_A);
    let mut dp = Dataplane::new(w.node.ns.target());
    dp.apply(&a).unwrap();
    assert!(dp.verify(&a).unwrap());
    assert_eq!(w.verdicts(), (true, false));
    // A no-change apply sends nothing.
    assert!(!dp.apply(&a).unwrap().sent);

    // 1. Someone deletes the whole table: everything is allowed until repaired.
    w.node
        .ns
        .exec(&["nft", "delete", "table", "inet", "tortie"]);
    assert_eq!(w.verdicts(), (true, true));
    let r = dp.refresh(&a).unwrap();
    assert!(r.sent && r.read_back);
    assert!(dp.verify(&a).unwrap());
    assert_eq!(w.verdicts(), (true, false));

    // 2. Someone flushes the server's ingress chain.
    let tw = a
        .chains
        .keys()
        .find(|k| k.starts_with("filter-tw-"))
        .unwrap()
        .clone();
    let server_tw = format!("filter-tw-{}", w.node.pod("default", "server").iface);
    assert!(a.chains.contains_key(&server_tw), "{tw}");
    w.node
        .ns
        .exec(&["nft", "flush", "chain", "inet", "tortie", &server_tw]);
    assert!(!dp.verify(&a).unwrap());
    let r = dp.refresh(&a).unwrap();
    assert_eq!(
        r.stats.chains_written, 1,
        "only the flushed chain is rewritten"
    );
    assert!(dp.verify(&a).unwrap());
    assert_eq!(w.verdicts(), (true, false));

    // 3. Someone deletes a set element (the good client's address).
    let set = a
        .sets
        .values()
        .find(|s| s.elements.contains("198.18.0.3"))
        .unwrap()
        .name
        .clone();
    w.node.ns.exec(&[
        "nft",
        "delete",
        "element",
        "inet",
        "tortie",
        &set,
        "{ 198.18.0.3 }",
    ]);
    assert_eq!(w.verdicts(), (false, false));
    let r = dp.refresh(&a).unwrap();
    assert_eq!((r.stats.elements_added, r.stats.chains_written), (1, 0));
    assert!(dp.verify(&a).unwrap());
    assert_eq!(w.verdicts(), (true, false));

    // 4. Someone adds a rule to one of our chains.
    w.node.ns.exec(&[
        "nft", "insert", "rule", "inet", "tortie", &server_tw, "accept",
    ]);
    assert_eq!(w.verdicts(), (true, true));
    dp.refresh(&a).unwrap();
    assert_eq!(w.verdicts(), (true, false));
}

#[test]
fn a_rejected_transaction_keeps_the_last_good_state() {
    if !kernel::require_kernel("reject") {
        return;
    }
    let w = world("reject");
    let a = w.ruleset(POLICY_A);
    let mut dp = Dataplane::new(w.node.ns.target());
    dp.apply(&a).unwrap();
    // A ruleset the kernel refuses: a jump to a chain that does not exist.
    let mut broken = w.ruleset(POLICY_B);
    let chain = broken
        .chains
        .values_mut()
        .find(|c| c.rank == Rank::Leaf)
        .unwrap();
    chain
        .rules
        .push(IrRule::new("", "jump no-such-chain", "broken on purpose"));
    for attempt in 1..=3 {
        let err = dp.apply(&broken).unwrap_err();
        assert!(
            err.to_string().contains("no-such-chain") || err.to_string().contains("No such file"),
            "{err}"
        );
        assert_eq!(dp.consecutive_failures(), attempt);
        // The previous ruleset is still in force, whole.
        assert!(dp.verify(&a).unwrap());
        assert_eq!(w.verdicts(), (true, false));
    }
    // After repeated failures the next attempt is a whole-table rebuild in
    // one transaction; with a valid ruleset it succeeds.
    let (p, _) = dp.plan(&w.ruleset(POLICY_B)).unwrap();
    assert!(p.stats.full_rebuild);
    let b = w.ruleset(POLICY_B);
    dp.apply(&b).unwrap();
    assert_eq!(dp.consecutive_failures(), 0);
    assert!(dp.verify(&b).unwrap());
    assert_eq!(w.verdicts(), (true, false));
}
