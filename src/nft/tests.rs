use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::plan::{self, delta, full_rebuild, replace_table};
use super::state::TableState;
use crate::calc::Cluster;
use crate::compile::compile;
use crate::compile::ir::Ruleset;
use crate::model::Resource;
use crate::model::load::load_str;

fn ruleset(yaml: &str) -> Ruleset {
    let r = load_str(yaml, Path::new("t.yaml"));
    assert!(!r.has_errors());
    let res: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
    compile(&Cluster::build(&res, "n1"), "n1")
}

const BASE: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Pod
metadata: {name: srv, namespace: a, labels: {app: srv}}
spec: {nodeName: n1}
status: {podIP: 198.18.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: cli, namespace: a, labels: {app: cli}}
spec: {nodeName: n2}
status: {podIP: 198.18.0.2}
---
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: p, namespace: a}
spec:
  podSelector: {matchLabels: {app: srv}}
  ingress: [{from: [{podSelector: {matchLabels: {app: cli}}}]}]
";

#[test]
fn no_change_sends_nothing() {
    let rs = ruleset(BASE);
    assert!(delta(&TableState::of(&rs), &rs).is_empty());
}

#[test]
fn a_remote_pod_ip_change_is_a_set_element_delta_only() {
    let before = ruleset(BASE);
    let after = ruleset(&BASE.replace("198.18.0.2", "198.18.0.3"));
    let p = delta(&TableState::of(&before), &after);
    let lines: Vec<&str> = p.text.lines().collect();
    assert_eq!(lines.len(), 3, "{}", p.text);
    assert_eq!(lines[0], "add table inet tortie");
    // A small set loses an element: flushed and re-declared with its
    // contents (no `delete element`, which makes nft fetch every set).
    assert!(
        lines[1].starts_with("flush set inet tortie s4-"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("add set inet tortie s4-")
            && lines[2].ends_with("type ipv4_addr; flags interval; elements = { 198.18.0.3 } }"),
        "{}",
        lines[2]
    );
    assert!(!p.text.contains("add element") && !p.text.contains("delete element"));
    assert_eq!(p.stats.chains_written, 0);
}

#[test]
fn large_sets_lose_elements_by_delete_and_gain_them_by_re_declaration() {
    let before = ruleset(BASE);
    let mut after = before.clone();
    let name = after
        .sets
        .keys()
        .find(|n| n.starts_with("s4-"))
        .unwrap()
        .clone();
    let mut current = TableState::of(&before);
    let big: BTreeSet<String> = (0..=plan::REFILL_MAX as u32)
        .map(|i| std::net::Ipv4Addr::from(0xc612_0000 + 2 * i).to_string())
        .collect();
    current.sets.insert(name.clone(), big.clone());
    let mut want = big;
    want.remove("198.18.0.0");
    want.insert("198.18.200.1".into());
    after.sets.get_mut(&name).unwrap().elements = want;
    let p = delta(&current, &after);
    assert!(
        p.text.contains(&format!(
            "delete element inet tortie {name} {{ 198.18.0.0 }}"
        )),
        "{}",
        p.text
    );
    assert!(
        p.text.contains(&format!(
            "add set inet tortie {name} {{ type ipv4_addr; flags interval; elements = {{ 198.18.200.1 }} }}"
        )),
        "{}",
        p.text
    );
    assert_eq!((p.stats.elements_added, p.stats.elements_deleted), (1, 1));
}

#[test]
fn a_new_local_pod_adds_its_chains_and_map_entries() {
    let before = ruleset(BASE);
    let after = ruleset(&format!(
        "{BASE}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: srv2, namespace: a, labels: {{app: srv}}}}\nspec: {{nodeName: n1}}\nstatus: {{podIP: 198.18.0.9}}\n"
    ));
    let p = delta(&TableState::of(&before), &after);
    assert_eq!(p.stats.chains_written, 2, "{}", p.text);
    assert!(p.text.contains("add chain inet tortie filter-tw-cali"));
    assert!(
        p.text.contains(
            "add map inet tortie filter-to-wl { type ifname : verdict; elements = { \"cali"
        )
    );
    assert!(
        !p.text.contains("flush chain"),
        "no existing chain is rewritten:\n{}",
        p.text
    );
    // Chains are declared before the map elements that point at them.
    let decl = p.text.find("add chain inet tortie filter-tw-").unwrap();
    let elem = p
        .text
        .find("add map inet tortie filter-to-wl { type ifname : verdict; elements")
        .unwrap();
    assert!(decl < elem);
}

#[test]
fn removals_wait_for_a_second_transaction() {
    let before = ruleset(BASE);
    let after = ruleset(BASE.split("---\nkind: NetworkPolicy").next().unwrap());
    let p = delta(&TableState::of(&before), &after);
    assert!(
        p.text.contains("flush chain inet tortie filter-tw-"),
        "{}",
        p.text
    );
    // Nothing is deleted while rules that used it may still be in flight.
    assert!(!p.text.contains("delete"), "{}", p.text);
    assert!(
        p.cleanup
            .contains("delete chain inet tortie filter-pi-knp/a/p"),
        "{}",
        p.cleanup
    );
    assert!(
        p.cleanup.contains("delete set inet tortie s4-"),
        "{}",
        p.cleanup
    );
    let flush = p.cleanup.find("flush chain").unwrap();
    let delete = p.cleanup.find("delete chain").unwrap();
    assert!(flush < delete);
    // The policy chain and the tier walk that jumped to it.
    assert_eq!(p.stats.chains_deleted, 2);
}

#[test]
fn full_rebuild_refills_everything_without_deleting_base_chains() {
    let rs = ruleset(BASE);
    let p = full_rebuild(&rs);
    assert!(
        p.text
            .starts_with("add table inet tortie\nflush table inet tortie\n")
    );
    assert!(!p.text.contains("delete"), "{}", p.text);
    for set in rs.sets.keys() {
        assert!(p.text.contains(&format!("flush set inet tortie {set}\n")));
    }
    assert!(p.stats.full_rebuild);
    let r = replace_table(&rs);
    assert!(
        r.text
            .starts_with("add table inet tortie\ndelete table inet tortie\ntable inet tortie {\n")
    );
}

#[test]
fn parses_an_nft_json_listing() {
    let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
      {"table": {"family": "inet", "name": "tortie", "handle": 1}},
      {"set": {"family": "inet", "name": "s4-x", "table": "tortie", "type": "ipv4_addr", "flags": ["interval"],
               "elem": ["198.18.0.1", {"prefix": {"addr": "198.18.1.0", "len": 24}}, {"range": ["198.18.2.1", "198.18.2.9"]}]}},
      {"set": {"family": "inet", "name": "np4-y", "table": "tortie", "type": ["ipv4_addr", "inet_proto", "inet_service"],
               "elem": [{"concat": ["198.18.0.1", "tcp", 80]}]}},
      {"map": {"family": "inet", "name": "filter-to-wl", "table": "tortie", "type": "ifname", "map": "verdict",
               "elem": [["cali1", {"goto": {"target": "filter-tw-cali1"}}]]}},
      {"chain": {"family": "inet", "table": "tortie", "name": "filter-tw-cali1", "handle": 2}},
      {"rule": {"family": "inet", "table": "tortie", "chain": "filter-tw-cali1", "handle": 3, "comment": "0123456789abcdef;note", "expr": []}},
      {"rule": {"family": "inet", "table": "tortie", "chain": "filter-tw-cali1", "handle": 4, "expr": []}}
    ]}"#;
    let st = TableState::parse_json(json).unwrap();
    assert_eq!(
        st.sets["s4-x"].iter().cloned().collect::<Vec<_>>(),
        ["198.18.0.1", "198.18.1.0/24", "198.18.2.1-198.18.2.9"]
    );
    assert_eq!(
        st.sets["np4-y"].iter().cloned().collect::<Vec<_>>(),
        ["198.18.0.1 . 6 . 80"]
    );
    assert_eq!(st.maps["filter-to-wl"]["cali1"], "goto filter-tw-cali1");
    // A rule without our comment hashes as "" and so never matches a desired rule.
    assert_eq!(st.chains["filter-tw-cali1"], ["0123456789abcdef", ""]);
}

/// A host endpoint with a preDNAT policy (eth1) and one with applyOnForward
/// policy (eth0), both on node `hep1`.
const HEP_WITH_POLICIES: &str = "
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: hep1-public, labels: {role: public}}
spec: {node: hep1, interfaceName: eth1}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: hep1-uplink, labels: {role: uplink}}
spec: {node: hep1, interfaceName: eth0}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-nodeports}
spec:
  selector: role == 'public'
  order: 10
  preDNAT: true
  applyOnForward: true
  types: [Ingress]
  ingress:
  - {action: Deny, protocol: TCP, destination: {ports: ['30000:32767']}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: forward-filter}
spec:
  selector: role == 'uplink'
  order: 20
  applyOnForward: true
  types: [Ingress]
  ingress:
  - {action: Deny, protocol: TCP, destination: {ports: [25]}}
  - action: Allow
";

fn hep_ruleset(yaml: &str) -> Ruleset {
    crate::sandbox::compile_yaml(yaml, "hep1")
}

/// The same host endpoints with every policy removed.
fn hep_without_policies() -> String {
    HEP_WITH_POLICIES
        .split("---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy")
        .next()
        .unwrap()
        .to_string()
}

/// Applies `a` then `b` to a fresh namespace through the real nft; returns
/// the error of the second apply, if any, and whether the kernel ends as `b`.
fn apply_pair(a: &Ruleset, b: &Ruleset) -> (Option<String>, bool) {
    let ns = crate::sandbox::Netns::new("pln");
    let mut dp = super::Dataplane::new(ns.target());
    dp.apply(a).expect("ruleset A applies to an empty table");
    assert!(dp.verify(a).unwrap(), "kernel holds A");
    let err = dp.apply(b).err().map(|e| e.to_string());
    (err, dp.verify(b).unwrap())
}

/// Whether the namespace tests can run here. As in the integration tests'
/// `require_kernel`: when they cannot, they fail, unless the developer opted
/// out with TORTIE_ALLOW_SKIP=1 (never under CI=true).
fn kernel_tests_may_run() -> bool {
    let ok = std::process::Command::new("unshare")
        .args(["-n", "nft", "list", "tables"])
        .output()
        .is_ok_and(|o| o.status.success());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let opt_out = std::env::var("TORTIE_ALLOW_SKIP").is_ok_and(|v| v == "1");
    if !ok && (ci || !opt_out) {
        panic!(
            "namespace tests need root and nft; run as root or set TORTIE_ALLOW_SKIP=1 outside CI"
        );
    }
    ok
}

#[test]
fn losing_the_last_prednat_and_forward_policy_does_not_wedge() {
    if !kernel_tests_may_run() {
        eprintln!("SKIPPED: needs root and nft (TORTIE_ALLOW_SKIP=1)");
        return;
    }
    let a = hep_ruleset(HEP_WITH_POLICIES);
    let b = hep_ruleset(&hep_without_policies());
    assert!(
        a.chains.keys().any(|c| c.starts_with("filter-fhfw-"))
            && a.chains.keys().any(|c| c.starts_with("mangle-fh-")),
        "A has forward and preDNAT chains: {:?}",
        a.chains.keys().collect::<Vec<_>>()
    );
    let (err, equal) = apply_pair(&a, &b);
    assert_eq!(err, None, "A → B must apply");
    assert!(equal, "the kernel holds B after A → B");
}

// ---- Against the fake kernel (no root) ----

use super::fake::{FakeControl, FakeKernel, Fault};
use super::{Dataplane, Limits, NftError, Step};
use std::time::{Duration, Instant};

fn fake_dataplane(limits: Limits) -> (Dataplane, FakeControl) {
    let (k, c) = FakeKernel::new();
    (Dataplane::with_kernel(Box::new(k), limits), c)
}

/// Every golden input (compiled for the node its header names), the
/// host-endpoint pair above and its preDNAT-only, forward-only and
/// doNotTrack variants, and the small pod cluster: a pool of rulesets
/// that differ in every kind of object.
fn pool() -> Vec<(String, Ruleset)> {
    let policies: Vec<&str> = HEP_WITH_POLICIES.split("---\n").skip(2).collect();
    let heps = hep_without_policies();
    let untracked = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: untracked}\nspec: {selector: has(role), order: 5, doNotTrack: true, applyOnForward: true, types: [Ingress], ingress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}]}\n";
    let mut out = vec![
        ("hep-with".to_string(), hep_ruleset(HEP_WITH_POLICIES)),
        ("hep-without".to_string(), hep_ruleset(&heps)),
        (
            "hep-prednat-only".to_string(),
            hep_ruleset(&format!("{heps}---\n{}", policies[0])),
        ),
        (
            "hep-forward-only".to_string(),
            hep_ruleset(&format!("{heps}---\n{}", policies[1])),
        ),
        (
            "hep-untracked".to_string(),
            hep_ruleset(&format!("{heps}---\n{untracked}")),
        ),
        ("base".to_string(), ruleset(BASE)),
        ("empty".to_string(), ruleset("")),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rulesets");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let node = text
            .lines()
            .find_map(|l| l.strip_prefix("# node: "))
            .unwrap_or("node1")
            .trim()
            .to_string();
        let r = load_str(&text, &f);
        let res: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        out.push((name, compile(&Cluster::build(&res, &node), &node)));
    }
    out
}

#[test]
fn the_fake_refuses_to_delete_what_is_still_referenced() {
    use super::kernel::Kernel;
    let a = hep_ruleset(HEP_WITH_POLICIES);
    let (mut k, _) = FakeKernel::new();
    let limits = Limits::default();
    k.transaction(&super::plan::replace_table(&a).text, &limits)
        .unwrap();
    let map = a.maps.keys().find(|m| m.starts_with("mangle-")).unwrap();
    let chain = a.maps[map].elements.values().next().unwrap();
    let chain = chain.split(' ').nth(1).unwrap();
    // The order the planner used before: a chain deleted before the map
    // whose elements jump to it. The fake answers EBUSY as the kernel did.
    let t = "inet tortie";
    let chain_first =
        format!("flush chain {t} {chain}\ndelete chain {t} {chain}\ndelete map {t} {map}\n");
    let err = k.transaction(&chain_first, &limits).unwrap_err();
    assert!(err.to_string().contains("busy"), "{err}");
    // A map is itself in use while a rule looks it up (the dispatch's vmap).
    let map_first =
        format!("flush chain {t} {chain}\ndelete map {t} {map}\ndelete chain {t} {chain}\n");
    let err = k.transaction(&map_first, &limits).unwrap_err();
    assert!(err.to_string().contains("busy"), "{err}");
    assert_eq!(
        k.state(),
        Some(TableState::of(&a)),
        "failed transactions change nothing"
    );
}

#[test]
fn every_pair_of_rulesets_applies_in_either_order_on_the_fake() {
    let pool = pool();
    assert!(pool.len() >= 10, "{}", pool.len());
    for (na, a) in &pool {
        for (nb, b) in &pool {
            let (k, c) = FakeKernel::new();
            let mut dp = Dataplane::with_kernel(Box::new(k), Limits::default());
            dp.apply(a).unwrap_or_else(|e| panic!("{na}: {e}"));
            let r = dp.apply(b).unwrap_or_else(|e| panic!("{na} → {nb}: {e}"));
            assert_eq!(r.step, Step::Delta);
            assert!(dp.verify(b).unwrap(), "{na} → {nb}: kernel differs from B");
            // The planner's deltas, not a fallback, did it: no rebuild text.
            assert!(
                c.transactions()
                    .iter()
                    .skip(1)
                    .all(|t| !t.contains("delete table")),
                "{na} → {nb}"
            );
        }
    }
}

#[test]
fn the_ladder_rebuilds_after_three_failures_and_replaces_after_five() {
    let (mut dp, c) = fake_dataplane(Limits::default());
    let a = ruleset(BASE);
    dp.apply(&a).unwrap();
    c.always(Some(Fault::Fail("boom".into())));
    let mut steps = Vec::new();
    for _ in 0..7 {
        steps.push(dp.step());
        dp.invalidate();
        assert!(dp.apply(&a).is_err());
    }
    use Step::*;
    assert_eq!(
        steps,
        [Delta, Delta, Delta, Rebuild, Rebuild, Replace, Replace]
    );
    let texts = c.transactions();
    let last = texts.last().unwrap();
    assert!(last.contains("delete table inet tortie"), "{last}");
    assert!(
        texts
            .iter()
            .any(|t| t.contains("\nflush table inet tortie\n"))
    );
    c.always(None);
    let r = dp.apply(&a).unwrap();
    assert_eq!(r.step, Replace);
    assert_eq!(dp.consecutive_failures(), 0);
    assert_eq!(dp.step(), Delta);
    assert!(dp.verify(&a).unwrap());
}

#[test]
fn a_failing_cleanup_counts_as_a_failure_and_climbs_the_ladder() {
    // Before: the counter was reset once the change went through, so a
    // cleanup that always failed was retried unchanged forever.
    let (mut dp, c) = fake_dataplane(Limits::default());
    let a = ruleset(BASE);
    let b = ruleset(BASE.split("---\nkind: NetworkPolicy").next().unwrap());
    dp.apply(&a).unwrap();
    for i in 1..=3 {
        // First the change, then (the change being in force) a listing;
        // either way one call goes through and the cleanup fails.
        c.pass(1);
        c.next(1, Fault::Fail("cleanup refused".into()));
        assert!(dp.apply(&b).is_err());
        assert_eq!(dp.consecutive_failures(), i);
    }
    assert_eq!(dp.step(), Step::Rebuild);
    let r = dp.apply(&b).unwrap();
    assert_eq!(r.step, Step::Rebuild);
    assert!(
        dp.verify(&b).unwrap(),
        "the rebuild's cleanup removed the leftovers"
    );
}

#[test]
fn a_hanging_kernel_times_out_and_a_stop_abandons_it_at_once() {
    let limits = Limits {
        transaction: Duration::from_millis(100),
        list: Duration::from_millis(100),
        stop: None,
    };
    let (mut dp, c) = fake_dataplane(limits);
    let a = ruleset(BASE);
    c.always(Some(Fault::Hang));
    let t = Instant::now();
    let e = dp.apply(&a).unwrap_err();
    assert!(matches!(e, NftError::Timeout { .. }), "{e}");
    assert_eq!(e.label(), "timeout");
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(dp.consecutive_failures(), 1);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    dp.set_limits(Limits {
        transaction: Duration::from_secs(600),
        list: Duration::from_secs(600),
        stop: Some(stop.clone()),
    });
    let s = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        s.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let t = Instant::now();
    let e = dp.apply(&a).unwrap_err();
    assert_eq!(e.label(), "interrupted", "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    stop.store(false, std::sync::atomic::Ordering::Relaxed);
    c.always(Some(Fault::Crash(11)));
    let e = dp.apply(&a).unwrap_err();
    assert_eq!(e.label(), "crashed");
    assert!(e.to_string().contains("crashed (signal 11)"), "{e}");
    c.release();
    dp.apply(&a).unwrap();
    assert!(dp.verify(&a).unwrap());
}

#[test]
fn random_pairs_of_rulesets_apply_in_a_real_namespace() {
    if !kernel_tests_may_run() {
        eprintln!("SKIPPED: needs root and nft (TORTIE_ALLOW_SKIP=1)");
        return;
    }
    let pool = pool();
    // The pair that wedged nodes always, plus random ones.
    let mut pairs = vec![(0, 1), (1, 0)];
    let w = walk(pool.len(), 40);
    pairs.extend(w.chunks(2).map(|c| (c[0], c[1])));
    for (i, j) in pairs {
        let ((na, a), (nb, b)) = (&pool[i], &pool[j]);
        let (err, equal) = apply_pair(a, b);
        assert_eq!(err, None, "{na} → {nb} must apply");
        assert!(equal, "{na} → {nb}: the kernel differs from B");
    }
}

/// A deterministic xorshift walk over `0..n`, seeded from the environment
/// (`TORTIE_PAIR_SEED`) or the clock; the seed is printed for reruns.
fn walk(n: usize, len: usize) -> Vec<usize> {
    let mut seed = std::env::var("TORTIE_PAIR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("walk seed {seed} (rerun with TORTIE_PAIR_SEED={seed})");
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        })
        .collect()
}

#[test]
fn a_long_random_walk_on_one_fake_table_always_ends_in_the_desired_state() {
    let pool = pool();
    let (mut dp, _c) = fake_dataplane(Limits::default());
    let mut from = "empty";
    for i in walk(pool.len(), 300) {
        let (name, rs) = &pool[i];
        let r = dp
            .apply(rs)
            .unwrap_or_else(|e| panic!("{from} → {name}: {e}"));
        assert_eq!(r.step, Step::Delta, "{from} → {name}");
        assert!(dp.verify(rs).unwrap(), "{from} → {name}");
        from = name;
    }
}

#[test]
fn a_random_walk_on_one_real_table_always_ends_in_the_desired_state() {
    if !kernel_tests_may_run() {
        eprintln!("SKIPPED: needs root and nft (TORTIE_ALLOW_SKIP=1)");
        return;
    }
    let pool = pool();
    let ns = crate::sandbox::Netns::new("walk");
    let mut dp = super::Dataplane::new(ns.target());
    let mut from = "empty";
    for i in walk(pool.len(), 60) {
        let (name, rs) = &pool[i];
        let r = dp
            .apply(rs)
            .unwrap_or_else(|e| panic!("{from} → {name}: {e}"));
        assert_eq!(r.step, Step::Delta, "{from} → {name}");
        assert!(dp.verify(rs).unwrap(), "{from} → {name}: kernel differs");
        from = name;
    }
}

// ---- apply_change: planning by name, element batches, conflicts ----

use crate::compile::ir::Change;

#[test]
fn every_pair_of_rulesets_applies_through_apply_change_on_the_fake() {
    let pool = pool();
    for (na, a) in &pool {
        for (nb, b) in &pool {
            let (mut dp, c) = fake_dataplane(Limits::default());
            dp.apply(a).unwrap_or_else(|e| panic!("{na}: {e}"));
            let listings =
                c.calls() - c.transactions().len() - c.batches().len() - c.changes().len();
            let change = plan::change_between(a, b);
            let r = dp
                .apply_change(b, &change)
                .unwrap_or_else(|e| panic!("{na} → {nb}: {e}"));
            assert!(!r.read_back && r.step == Step::Delta, "{na} → {nb}: {r:?}");
            assert_eq!(
                c.calls() - c.transactions().len() - c.batches().len() - c.changes().len(),
                listings,
                "{na} → {nb}: no listing"
            );
            assert_eq!(dp.last, Some(TableState::of(b)), "{na} → {nb}: the view");
            assert!(dp.verify(b).unwrap(), "{na} → {nb}: kernel differs from B");
        }
    }
}

/// BASE, with the remote pod `cli` at `ip`, as (ruleset, name of its set).
fn remote_at(ip: &str) -> (Ruleset, String) {
    let rs = ruleset(&BASE.replace("198.18.0.2", ip));
    let set = rs
        .sets
        .keys()
        .find(|n| n.starts_with("s4-"))
        .unwrap()
        .clone();
    (rs, set)
}

#[test]
fn an_element_only_change_is_one_batch_with_removals_first_and_no_nft_run() {
    let (a, set) = remote_at("198.18.0.2");
    let (b, _) = remote_at("198.18.0.3");
    let (mut dp, c) = fake_dataplane(Limits::default());
    dp.apply(&a).unwrap();
    let runs = c.transactions().len();
    let first = c.batches().len();
    let r = dp.apply_change(&b, &plan::change_between(&a, &b)).unwrap();
    assert!(r.netlink && r.sent, "{r:?}");
    assert_eq!((r.stats.elements_added, r.stats.elements_deleted), (1, 1));
    assert_eq!(c.transactions().len(), runs, "no nft transaction");
    let batch = c.batches().pop().unwrap();
    assert_eq!(batch.sets.len(), 1);
    assert_eq!(batch.sets[0].set, set);
    assert_eq!(batch.sets[0].removed, vec!["198.18.0.2".to_string()]);
    assert_eq!(batch.sets[0].added, vec!["198.18.0.3".to_string()]);
    assert!(dp.verify(&b).unwrap());
    // Nothing left to do: nothing sent.
    let again = dp.apply_change(&b, &plan::change_between(&b, &b)).unwrap();
    assert!(!again.sent);
    assert_eq!(c.batches().len(), first + 1);
}

#[test]
fn a_concurrent_commit_fails_the_batch_and_the_next_apply_re_reads() {
    let (a, _) = remote_at("198.18.0.2");
    let (b, _) = remote_at("198.18.0.3");
    let (mut dp, c) = fake_dataplane(Limits::default());
    dp.apply(&a).unwrap();
    c.concurrent_commit();
    let err = dp
        .apply_change(&b, &plan::change_between(&a, &b))
        .unwrap_err();
    assert!(matches!(err, NftError::Conflict { .. }), "{err}");
    assert_eq!(err.label(), "conflict");
    assert_eq!(dp.consecutive_failures(), 1);
    assert_eq!(dp.last, None, "the view is dropped");
    // The next change is planned against a fresh read, and carries the
    // lost one with it.
    let (b2, _) = remote_at("198.18.0.4");
    let r = dp
        .apply_change(&b2, &plan::change_between(&b, &b2))
        .unwrap();
    assert!(r.read_back, "{r:?}");
    assert!(dp.verify(&b2).unwrap());
    // And element batches work again after that read.
    let r = dp.apply_change(&a, &plan::change_between(&b2, &a)).unwrap();
    assert!(r.netlink, "{r:?}");
    assert!(dp.verify(&a).unwrap());
}

#[test]
fn without_netlink_element_changes_go_through_nft_in_one_transaction() {
    let (a, set) = remote_at("198.18.0.2");
    let (b, _) = remote_at("198.18.0.3");
    let (mut dp, c) = fake_dataplane(Limits::default());
    dp.apply(&a).unwrap();
    c.netlink_down(true);
    let runs = c.transactions().len();
    let r = dp.apply_change(&b, &plan::change_between(&a, &b)).unwrap();
    assert!(!r.netlink && r.sent, "{r:?}");
    let t = c.transactions();
    assert_eq!(t.len(), runs + 1, "one transaction: {t:?}");
    assert!(
        t[runs].contains(&format!("flush set inet tortie {set}")),
        "{}",
        t[runs]
    );
    assert_eq!(dp.consecutive_failures(), 0);
    assert!(dp.verify(&b).unwrap());
}

#[test]
fn a_refused_batch_counts_as_a_failure_and_climbs_the_ladder() {
    let (a, _) = remote_at("198.18.0.2");
    let (b, _) = remote_at("198.18.0.3");
    let (mut dp, c) = fake_dataplane(Limits::default());
    dp.apply(&a).unwrap();
    c.next(
        1,
        Fault::Fail("Error: Could not process rule: No buffer space available".into()),
    );
    let err = dp
        .apply_change(&b, &plan::change_between(&a, &b))
        .unwrap_err();
    assert!(err.to_string().contains("No buffer space"), "{err}");
    assert_eq!(dp.consecutive_failures(), 1);
    assert_eq!(dp.last, None, "the view is dropped");
    // Next: a read and the full comparison (which carries the change).
    let r = dp.apply_change(&b, &Change::default()).unwrap();
    assert!(r.read_back && !r.netlink, "{r:?}");
    assert!(dp.verify(&b).unwrap());
}

#[test]
fn a_missing_element_is_refused_by_name_and_the_batch_changes_nothing() {
    let (a, set) = remote_at("198.18.0.2");
    let (mut dp, c) = fake_dataplane(Limits::default());
    dp.apply(&a).unwrap();
    let first = c.batches().len();
    // The view claims an element the kernel does not hold.
    dp.last
        .as_mut()
        .unwrap()
        .sets
        .get_mut(&set)
        .unwrap()
        .insert("198.18.0.77".into());
    let mut change = Change::default();
    let d = change.elements_of(&set);
    d.remove("198.18.0.77".into());
    d.add("198.18.0.78".into());
    let mut b = a.clone();
    b.sets
        .get_mut(&set)
        .unwrap()
        .elements
        .insert("198.18.0.78".into());
    let err = dp.apply_change(&b, &change).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&set) && text.contains("198.18.0.77") && text.contains("remove"),
        "{text}"
    );
    assert!(dp.verify(&a).unwrap(), "all or nothing");
    assert_eq!(c.batches().len(), first + 1);
}

#[test]
fn apply_change_plans_only_the_objects_the_change_names() {
    let a = ruleset(BASE);
    let b = ruleset(&BASE.replace("matchLabels: {app: cli}", "matchLabels: {app: srv}"));
    let full = plan::change_between(&a, &b);
    assert!(!full.chains.is_empty() && !full.elements_only(), "{full:?}");
    let current = TableState::of(&a);
    // Naming nothing plans nothing, whatever differs.
    assert!(plan::delta_of(&current, &b, &Change::default()).is_empty());
    // Naming one chain rewrites that chain only.
    let chain = full.chains.iter().next().unwrap().clone();
    let mut one = Change::default();
    one.chains.insert(chain.clone());
    let p = plan::delta_of(&current, &b, &one);
    assert_eq!(p.stats.chains_written, 1, "{}", p.text);
    assert!(p.text.contains(&chain));
    let rules = p.text.lines().filter(|l| l.starts_with("add rule")).count();
    assert_eq!(rules, b.chains[&chain].rules.len(), "{}", p.text);
    // Naming everything that differs matches the full comparison.
    assert_eq!(plan::delta_of(&current, &b, &full), delta(&current, &b));
}

#[test]
fn the_full_path_is_taken_at_start_on_full_changes_and_up_the_ladder() {
    let (a, _) = remote_at("198.18.0.2");
    let (b, _) = remote_at("198.18.0.3");
    let (mut dp, c) = fake_dataplane(Limits::default());
    let r = dp.apply_change(&a, &Change::default()).unwrap();
    assert!(r.read_back, "start: the kernel is read");
    let r = dp.apply_change(&b, &Change::everything()).unwrap();
    assert!(!r.netlink && r.sent, "full: the whole comparison, {r:?}");
    assert!(dp.verify(&b).unwrap());
    c.always(Some(Fault::Fail("boom".into())));
    for _ in 0..super::REBUILD_AFTER_FAILURES {
        let _ = dp.apply_change(&a, &plan::change_between(&b, &a));
    }
    c.always(None);
    let r = dp.apply_change(&a, &plan::change_between(&b, &a)).unwrap();
    assert_eq!(r.step, Step::Rebuild, "{r:?}");
    assert!(dp.verify(&a).unwrap());
}

#[test]
fn a_refresh_reads_the_kernel_only_when_something_was_committed_meanwhile() {
    let (a, _) = remote_at("198.18.0.2");
    let (b, _) = remote_at("198.18.0.3");
    let (mut dp, c) = fake_dataplane(Limits::default());
    dp.apply(&a).unwrap();
    dp.apply_change(&b, &plan::change_between(&a, &b)).unwrap();
    let r = dp.refresh(&b).unwrap();
    assert!(
        !r.read_back && !r.sent,
        "no commit since: the view stands, {r:?}"
    );
    c.concurrent_commit();
    let r = dp.refresh(&b).unwrap();
    assert!(
        r.read_back && !r.sent,
        "a commit elsewhere: read, nothing to repair, {r:?}"
    );
    let r = dp.refresh(&b).unwrap();
    assert!(!r.read_back, "the read re-anchored the view, {r:?}");
    // A view that is not tied to a generation (after a failure) is read.
    c.next(1, Fault::Fail("boom".into()));
    assert!(dp.apply_change(&a, &plan::change_between(&b, &a)).is_err());
    let r = dp.refresh(&a).unwrap();
    assert!(r.read_back && r.sent, "{r:?}");
    assert!(dp.verify(&a).unwrap());
}

#[test]
fn the_netlink_read_back_equals_the_json_listing_for_every_ruleset() {
    if !kernel_tests_may_run() {
        eprintln!("SKIPPED: needs root and nft (TORTIE_ALLOW_SKIP=1)");
        return;
    }
    let limits = Limits::default();
    let mut compared = (0, 0, 0, 0);
    for (name, rs) in pool() {
        let ns = crate::sandbox::Netns::new("rb");
        assert_eq!(
            super::readback::read_target(&ns.target(), limits.list).unwrap(),
            None,
            "{name}: no table yet"
        );
        super::Dataplane::new(ns.target()).apply(&rs).unwrap();
        let json = super::exec::list_table_json(&ns.target()).unwrap().unwrap();
        let by_json = TableState::parse_json(&json).unwrap();
        let by_netlink = super::readback::read_target(&ns.target(), limits.list)
            .unwrap()
            .unwrap();
        for (set, want) in &by_json.sets {
            assert_eq!(by_netlink.sets.get(set), Some(want), "{name}: set {set}");
        }
        assert_eq!(by_netlink.maps, by_json.maps, "{name}: maps");
        assert_eq!(by_netlink.chains, by_json.chains, "{name}: chains");
        assert_eq!(by_netlink, by_json, "{name}");
        assert_eq!(by_netlink, TableState::of(&rs), "{name}: as desired");
        let counters = super::readback::rule_counters(&ns.target(), limits.list).unwrap();
        let by_json = super::state::rule_counters(&json).unwrap();
        assert_eq!(counters, by_json, "{name}: rule counters");
        compared.3 += counters.len();
        compared.0 += by_netlink.chains.values().map(Vec::len).sum::<usize>();
        compared.1 += by_netlink.sets.values().map(BTreeSet::len).sum::<usize>();
        compared.2 += by_netlink.maps.values().map(BTreeMap::len).sum::<usize>();
    }
    eprintln!("compared {compared:?} (rules, set elements, map elements, counters)");
    assert!(
        compared.0 > 100 && compared.1 > 40 && compared.2 > 5 && compared.3 > 100,
        "{compared:?}"
    );
}

// ---- apply_change: chains and rules over netlink ----

const INGRESS: &str = "ingress: [{from: [{podSelector: {matchLabels: {app: cli}}}]}]";
const INGRESS_80: &str = "ingress: [{from: [{podSelector: {matchLabels: {app: cli}}}], ports: [{port: 80, protocol: TCP}]}]";

/// BASE (remote pod at .2), and BASE with the pod at .3 and the policy
/// narrowed to TCP port 80: a change of rules and elements together.
fn rules_and_elements() -> (Ruleset, Ruleset, String) {
    let (a, set) = remote_at("198.18.0.2");
    let b = ruleset(
        &BASE
            .replace("198.18.0.2", "198.18.0.3")
            .replace(INGRESS, INGRESS_80),
    );
    (a, b, set)
}

#[test]
fn rules_and_elements_changed_together_are_one_netlink_batch_and_no_nft_run() {
    use super::rules::Op;
    let (a, b, set) = rules_and_elements();
    let change = plan::change_between(&a, &b);
    assert!(
        !change.chains.is_empty() && !change.elements.is_empty(),
        "{change:?}"
    );
    let (mut dp, c) = fake_dataplane(Limits::default());
    dp.apply(&a).unwrap();
    let runs = c.transactions().len();
    let r = dp.apply_change(&b, &change).unwrap();
    assert!(r.netlink && r.sent, "{r:?}");
    assert_eq!(c.transactions().len(), runs, "no nft transaction");
    let changes = c.changes();
    assert_eq!(changes.len(), 1, "one batch: {changes:?}");
    let ops = &changes[0];
    let first_rule = ops
        .iter()
        .position(|o| matches!(o, Op::AddRule { .. }))
        .expect("rules");
    let element = ops
        .iter()
        .position(|o| matches!(o, Op::Elements { set: s, .. } | Op::FlushSet(s) if *s == set))
        .expect("the element change");
    assert!(element < first_rule, "elements before the rules: {ops:?}");
    assert!(
        ops.iter().any(|o| matches!(o, Op::FlushChain(_))),
        "{ops:?}"
    );
    assert!(
        ops.iter()
            .any(|o| matches!(o, Op::AddRule { rule, .. } if rule.matches.contains("dport 80"))),
        "{ops:?}"
    );
    assert!(dp.verify(&b).unwrap());
}

/// `a` with one more rule, outside what the encoder covers, in a policy chain.
fn with_unencodable_rule(a: &Ruleset) -> (Ruleset, String) {
    let mut b = a.clone();
    let chain = b
        .chains
        .keys()
        .find(|n| n.starts_with("filter-pi-"))
        .expect("a policy chain")
        .clone();
    b.chains
        .get_mut(&chain)
        .unwrap()
        .rules
        .push(crate::compile::ir::Rule::new(
            "meta l4proto tcp tcp dport { 80, 8000-8080 }",
            "accept",
            "x",
        ));
    (b, chain)
}

#[test]
fn a_rule_without_netlink_encoding_sends_the_change_through_nft() {
    let (a, _) = remote_at("198.18.0.2");
    let (b, chain) = with_unencodable_rule(&a);
    let (mut dp, c) = fake_dataplane(Limits::default());
    dp.apply(&a).unwrap();
    let runs = c.transactions().len();
    let r = dp.apply_change(&b, &plan::change_between(&a, &b)).unwrap();
    assert!(!r.netlink && r.sent, "{r:?}");
    assert!(c.changes().is_empty(), "nothing sent over netlink");
    let t = c.transactions();
    assert_eq!(t.len(), runs + 1);
    assert!(
        t[runs].contains(&format!("flush chain inet tortie {chain}")),
        "{}",
        t[runs]
    );
    assert_eq!(dp.consecutive_failures(), 0);
    assert!(dp.verify(&b).unwrap());
}

#[test]
fn without_netlink_or_after_a_concurrent_commit_rule_changes_go_through_nft() {
    let (a, b, _) = rules_and_elements();
    for conflict in [false, true] {
        let (mut dp, c) = fake_dataplane(Limits::default());
        dp.apply(&a).unwrap();
        if conflict {
            c.concurrent_commit();
        } else {
            c.netlink_down(true);
        }
        let runs = c.transactions().len();
        let r = dp.apply_change(&b, &plan::change_between(&a, &b)).unwrap();
        assert!(!r.netlink && r.sent, "conflict {conflict}: {r:?}");
        assert_eq!(c.transactions().len(), runs + 1, "conflict {conflict}");
        assert_eq!(c.changes().len(), conflict as usize, "conflict {conflict}");
        assert!(dp.verify(&b).unwrap(), "conflict {conflict}");
    }
}

#[test]
fn a_random_walk_through_apply_change_on_a_real_table_sends_rules_over_netlink() {
    if !kernel_tests_may_run() {
        eprintln!("SKIPPED: needs root and nft (TORTIE_ALLOW_SKIP=1)");
        return;
    }
    let pool = pool();
    let ns = crate::sandbox::Netns::new("nlwalk");
    let mut dp = super::Dataplane::new(ns.target());
    let (mut from, mut cur) = ("empty", Ruleset::default());
    let (mut steps, mut by_netlink) = (0, 0);
    for i in walk(pool.len(), 60) {
        let (name, rs) = &pool[i];
        let change = plan::change_between(&cur, rs);
        let r = dp
            .apply_change(rs, &change)
            .unwrap_or_else(|e| panic!("{from} → {name}: {e}"));
        assert_eq!(r.step, Step::Delta, "{from} → {name}");
        assert_eq!(dp.consecutive_failures(), 0, "{from} → {name}");
        assert!(dp.verify(rs).unwrap(), "{from} → {name}: kernel differs");
        steps += 1;
        by_netlink += (r.netlink && !change.elements_only()) as usize;
        (from, cur) = (name, rs.clone());
    }
    eprintln!("{steps} steps, {by_netlink} with chains over netlink");
    assert!(by_netlink > 0, "some chain changes went over netlink");
}

#[test]
fn a_first_load_creates_the_table_and_its_sets_in_one_batch_then_the_chains() {
    let (a, set) = remote_at("198.18.0.2");
    let (mut dp, c) = fake_dataplane(Limits::default());
    let r = dp.apply(&a).unwrap();
    assert!(r.sent && r.stats.full_rebuild, "{r:?}");
    let batches = c.batches();
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert!(batches[0].table, "the batch creates the table");
    let names: Vec<&String> = batches[0].create.iter().map(|s| &s.name).collect();
    assert_eq!(names, a.sets.keys().collect::<Vec<_>>());
    assert!(
        batches[0]
            .create
            .iter()
            .any(|s| s.name == set && s.elements.contains("198.18.0.2"))
    );
    let runs = c.transactions();
    assert_eq!(runs.len(), 1, "one nft transaction for the chains");
    assert!(
        !runs[0].contains("\tset ") && !runs[0].contains("delete table"),
        "{}",
        runs[0]
    );
    assert!(runs[0].contains("\tchain "), "{}", runs[0]);
    assert!(dp.verify(&a).unwrap());
}

#[test]
fn a_first_load_without_netlink_declares_the_sets_through_nft_first() {
    let (a, _) = remote_at("198.18.0.2");
    let (mut dp, c) = fake_dataplane(Limits::default());
    c.netlink_down(true);
    dp.apply(&a).unwrap();
    let runs = c.transactions();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs[0].contains("\tset ") && !runs[0].contains("\tchain "),
        "{}",
        runs[0]
    );
    assert!(
        runs[1].contains("\tchain ") && !runs[1].contains("\tset "),
        "{}",
        runs[1]
    );
    assert!(dp.verify(&a).unwrap());
}
