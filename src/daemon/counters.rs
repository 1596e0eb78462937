//! Reading the kernel's rule counters into what operators ask about: hits
//! per policy rule (and, summed, per policy) and the packets dropped because
//! nothing allowed them (implicit drops), by endpoint and reason. Everything
//! is derived from one rule dump of the kernel's table (chain, comment,
//! counter and jump target of each rule), so the reader needs nothing from
//! the reconcile loop and runs on its own thread ([`spawn`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::nft::state::RuleCounter;
use crate::nft::{Limits, NftError, Target};

use super::metrics::{Metrics, RuleLabels};

/// (endpoint, reason) → (packets, bytes).
pub type Drops = BTreeMap<(String, String), (u64, u64)>;

/// Per-rule series → (packets, bytes).
pub type RuleHits = BTreeMap<RuleLabels, (u64, u64)>;

/// How many endpoint names a shared chain's label lists before "+N".
const NAMED: usize = 3;

/// What one rule dump says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub rules: RuleHits,
    pub drops: Drops,
    /// The staged view's deciding rules (`compile::staged`): every new
    /// connection the staged view decided, by its rule.
    pub staged: RuleHits,
    /// Of those, the connections whose staged verdict differs from the
    /// enforced one ("would deny" / "would allow"), by staged rule.
    pub staged_differs: RuleHits,
}

/// What a rule's note says it counts.
enum Counted<'a> {
    Enforced(&'a str),
    Staged(&'a str),
    StagedDiffers(&'a str),
    /// The enforced copy inside a staged shadow walk: counted once already.
    Shadow,
}

fn counted(note: &str) -> Counted<'_> {
    if let Some(n) = note.strip_prefix("log: staged: ") {
        Counted::StagedDiffers(n)
    } else if let Some(n) = note.strip_prefix("staged: ") {
        Counted::Staged(n)
    } else if note.starts_with("shadow: ") || note.starts_with("log: ") {
        Counted::Shadow
    } else {
        Counted::Enforced(note)
    }
}

/// Sorts every counter of one dump into policy-rule hits and implicit
/// drops. A policy's tier is the tier whose walk jumps to its chain; an
/// end-of-tier drop sits in a tier walk that endpoints with the same
/// policies share, so its endpoint label names those endpoints (the first
/// few, then `+N`): the kernel counts the walk once for all of them.
pub fn tally(counters: &[RuleCounter]) -> Tally {
    let tiers = policy_tiers(counters);
    let owners = walk_owners(counters);
    let mut out = Tally::default();
    for c in counters {
        let slot = match counted(&c.note) {
            Counted::Shadow => continue,
            Counted::Enforced(n) => match classify(n) {
                Some((endpoint, reason)) => {
                    let endpoint = endpoint
                        .unwrap_or_else(|| owners.get(&c.chain).cloned().unwrap_or_default());
                    out.drops.entry((endpoint, reason)).or_default()
                }
                None => match rule_labels(n, &tiers) {
                    Some(l) => out.rules.entry(l).or_default(),
                    None => continue,
                },
            },
            Counted::Staged(n) => match rule_labels(n, &tiers) {
                Some(l) => out.staged.entry(l).or_default(),
                None => continue,
            },
            Counted::StagedDiffers(n) => match rule_labels(n, &tiers) {
                Some(l) => out.staged_differs.entry(l).or_default(),
                None => continue,
            },
        };
        slot.0 += c.packets;
        slot.1 += c.bytes;
    }
    out
}

/// Policy id → tier, from the tier walks: after a rule noted
/// `start of tier T`, each jump whose note is a policy id enters a policy
/// of tier T.
fn policy_tiers(counters: &[RuleCounter]) -> HashMap<&str, &str> {
    let mut current: HashMap<&str, &str> = HashMap::new();
    let mut out = HashMap::new();
    for c in counters {
        let note = c.note.strip_prefix("staged: ").unwrap_or(&c.note);
        if let Some(tier) = note.strip_prefix("start of tier ") {
            current.insert(c.chain.as_str(), tier);
        } else if c.jump.is_some()
            && !c.note.contains(' ')
            && let Some(tier) = current.get(c.chain.as_str())
        {
            out.insert(c.note.as_str(), *tier);
        }
    }
    out
}

/// Notes of policy rules read `<kind>/[<ns>/]<name> <dir>#<n> <Action>`.
fn rule_labels(note: &str, tiers: &HashMap<&str, &str>) -> Option<RuleLabels> {
    let mut words = note.split(' ');
    let (id, rule, action) = (words.next()?, words.next()?, words.next()?);
    let (direction, index) = rule.split_once('#')?;
    let parts: Vec<&str> = id.split('/').collect();
    let (kind, namespace, name) = match parts.as_slice() {
        [k, n] => (*k, "", *n),
        [k, ns, n] => (*k, *ns, *n),
        _ => return None,
    };
    Some(RuleLabels {
        tier: tiers.get(id).copied().unwrap_or_default().to_string(),
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        policy: name.to_string(),
        direction: direction.to_string(),
        rule: index.to_string(),
        action: action.to_string(),
    })
}

/// (endpoint if the note names it, reason) for an implicit drop's note.
fn classify(note: &str) -> Option<(Option<String>, String)> {
    if let Some(ep) = note.strip_suffix(": no profile allowed") {
        return Some((Some(ep.to_string()), "no profile allowed".into()));
    }
    if let Some(rest) = note.strip_prefix("end of tier ") {
        let tier = rest.split(':').next().unwrap_or_default();
        return Some((None, format!("end of tier {tier}")));
    }
    match note {
        "unknown workload interface" => Some((Some(String::new()), "unknown interface".into())),
        "DefaultEndpointToHostAction: Drop" => {
            Some((Some(String::new()), "DefaultEndpointToHostAction".into()))
        }
        _ => None,
    }
}

/// For each tier-walk chain, the endpoints whose chains jump to it. An
/// endpoint's chain ends with its `<endpoint>: no profile allowed` drop.
fn walk_owners(counters: &[RuleCounter]) -> BTreeMap<String, String> {
    let mut walks: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for c in counters {
        if let Some(ep) = c.note.strip_suffix(": no profile allowed") {
            owner.insert(c.chain.as_str(), ep);
        }
        if let Some(walk) = c.jump.as_deref().filter(|j| j.contains("-tiers-")) {
            walks.entry(c.chain.as_str()).or_default().push(walk);
        }
    }
    let mut users: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (chain, targets) in walks {
        if let Some(ep) = owner.get(chain) {
            for walk in targets {
                users.entry(walk).or_default().insert(ep);
            }
        }
    }
    users
        .into_iter()
        .map(|(walk, eps)| {
            let mut names: Vec<String> = eps.iter().take(NAMED).map(|e| e.to_string()).collect();
            if eps.len() > NAMED {
                names.push(format!("+{}", eps.len() - NAMED));
            }
            (walk.to_string(), names.join(", "))
        })
        .collect()
}

/// Reads one rule dump: over netlink, or (when that fails) from the JSON
/// listing.
fn read(target: &Target, limits: &Limits) -> Result<Vec<RuleCounter>, NftError> {
    match crate::nft::readback::rule_counters(target, limits.list) {
        Ok(c) => Ok(c),
        Err(e) => {
            tracing::debug!(error = %e, "netlink counters unavailable; listing the table");
            let json = crate::nft::exec::list_table_json_with(target, limits)?.unwrap_or_default();
            crate::nft::state::rule_counters(&json).map_err(NftError::Parse)
        }
    }
}

/// The reader spends at most 1/`COST_FACTOR` of a core: the pause after a
/// read is at least this many times what the read cost.
pub const COST_FACTOR: u32 = 20;

/// The pause before the next read: `every`, stretched so that reading
/// costs at most 1/[`COST_FACTOR`] of the time.
pub fn next_pause(every: Duration, cost: Duration) -> Duration {
    every.max(cost * COST_FACTOR)
}

/// Starts the thread that reads the kernel's rule counters every `every`
/// (or less often when a read is costly; see [`next_pause`]) into
/// `metrics`, until `stop` is set. It works in the target's namespace on
/// its own socket, so a slow dump never delays an apply.
pub fn spawn(
    target: Target,
    limits: Limits,
    every: Duration,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tortie-counters".into())
        .spawn(move || {
            let mut failing = false;
            // The first apply comes first.
            sleep_unless_stopped(every, &stop);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match read(&target, &limits) {
                    Ok(counters) => {
                        metrics.set_rule_hits(tally(&counters));
                        failing = false;
                    }
                    Err(e) if !failing => {
                        tracing::warn!(error = %e, cause = e.label(), "cannot read rule counters");
                        failing = true;
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot read rule counters"),
                }
                let pause = next_pause(every, started.elapsed());
                sleep_unless_stopped(pause, &stop);
            }
        })
}

/// Sleeps `pause` in short steps, returning early once `stop` is set.
fn sleep_unless_stopped(pause: Duration, stop: &AtomicBool) {
    let until = Instant::now() + pause;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a rule dump of `rs` would return, each rule counting `hits` of
    /// its note (60 bytes per packet).
    fn dump(rs: &crate::compile::ir::Ruleset, hits: &[(&str, u64)]) -> Vec<RuleCounter> {
        let mut out = Vec::new();
        for (name, chain) in &rs.chains {
            for r in &chain.rules {
                let packets = hits.iter().find(|h| h.0 == r.note).map_or(0, |h| h.1);
                let jump = r.action.split(' ').collect::<Vec<_>>();
                let jump = jump
                    .windows(2)
                    .find(|w| w[0] == "jump" || w[0] == "goto")
                    .map(|w| w[1].to_string());
                out.push(RuleCounter {
                    chain: name.clone(),
                    note: r.note.clone(),
                    packets,
                    bytes: packets * 60,
                    jump,
                });
            }
        }
        out
    }

    const CLUSTER: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: d, labels: {app: a}}\nspec: {nodeName: n1}\nstatus: {podIP: 198.18.0.1}\n---\n\
        apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: d, labels: {app: a}}\nspec: {nodeName: n1}\nstatus: {podIP: 198.18.0.2}\n---\n\
        apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: sec}\nspec: {order: 10}\n---\n\
        apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: sec.web}\nspec: {tier: sec, selector: all(), ingress: [{action: Deny, protocol: UDP}, {action: Pass}]}\n---\n\
        apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: d}\nspec: {podSelector: {}, ingress: [{ports: [{port: 80}]}]}\n";

    #[test]
    fn policy_rules_are_counted_with_the_tier_whose_walk_enters_them() {
        let rs = crate::sandbox::compile_yaml(CLUSTER, "n1");
        let counters = dump(
            &rs,
            &[
                ("gnp/sec.web ingress#0 Deny", 3),
                ("gnp/sec.web ingress#1 Pass", 5),
                ("knp/d/web ingress#0 Allow", 7),
            ],
        );
        let t = tally(&counters);
        let hit = |tier: &str, kind: &str, ns: &str, policy: &str, rule: &str, action: &str| {
            let l = RuleLabels {
                tier: tier.into(),
                kind: kind.into(),
                namespace: ns.into(),
                policy: policy.into(),
                direction: "ingress".into(),
                rule: rule.into(),
                action: action.into(),
            };
            t.rules.get(&l).copied()
        };
        // IPv4 and IPv6 copies of one rule add up to one series.
        let v4v6 = |n: u64| {
            let copies = counters.iter().filter(|c| c.packets == n).count() as u64;
            assert!(copies >= 1);
            Some((n * copies, n * copies * 60))
        };
        assert_eq!(hit("sec", "gnp", "", "sec.web", "0", "Deny"), v4v6(3));
        assert_eq!(hit("sec", "gnp", "", "sec.web", "1", "Pass"), v4v6(5));
        assert_eq!(hit("default", "knp", "d", "web", "0", "Allow"), v4v6(7));
        assert!(
            t.rules.keys().all(|l| !l.tier.is_empty()),
            "{:?}",
            t.rules.keys()
        );
    }

    #[test]
    fn staged_rules_are_counted_apart_and_shadow_copies_not_at_all() {
        let yaml = include_str!("../../rulesets/staged-deny-over-allow.yaml");
        let rs = crate::sandbox::compile_yaml(yaml, "node1");
        let counters = dump(
            &rs,
            &[
                ("np/shop/allow-web ingress#0 Allow", 4),
                ("shadow: np/shop/allow-web ingress#0 Allow", 4),
                ("staged: snp/shop/allow-web ingress#0 Deny", 4),
                ("log: staged: snp/shop/allow-web ingress#0 Deny", 4),
                ("shadow: workload shop/web: no profile allowed", 9),
            ],
        );
        assert!(
            counters
                .iter()
                .any(|c| c.note.starts_with("shadow: ") && c.packets > 0),
            "the staged golden has shadow walks"
        );
        let t = tally(&counters);
        let labels = |kind: &str, action: &str| RuleLabels {
            tier: "default".into(),
            kind: kind.into(),
            namespace: "shop".into(),
            policy: "allow-web".into(),
            direction: "ingress".into(),
            rule: "0".into(),
            action: action.into(),
        };
        let copies = |note: &str| counters.iter().filter(|c| c.note == note).count() as u64;
        let n = copies("np/shop/allow-web ingress#0 Allow");
        assert_eq!(t.rules.get(&labels("np", "Allow")), Some(&(4 * n, 240 * n)));
        let n = copies("staged: snp/shop/allow-web ingress#0 Deny");
        assert_eq!(
            t.staged.get(&labels("snp", "Deny")),
            Some(&(4 * n, 240 * n))
        );
        let n = copies("log: staged: snp/shop/allow-web ingress#0 Deny");
        assert_eq!(
            t.staged_differs.get(&labels("snp", "Deny")),
            Some(&(4 * n, 240 * n))
        );
        assert_eq!(t.rules.len(), 1, "{:?}", t.rules);
        assert!(
            t.drops.keys().all(|(ep, _)| !ep.contains("shadow")),
            "{:?}",
            t.drops
        );
    }

    #[test]
    fn implicit_drops_are_named_by_endpoint_and_reason() {
        let rs = crate::sandbox::compile_yaml(CLUSTER, "n1");
        let counters = dump(
            &rs,
            &[
                ("end of tier default: no policy allowed or passed", 4),
                ("workload d/a: no profile allowed", 1),
                ("unknown workload interface", 2),
            ],
        );
        let d = tally(&counters).drops;
        let walk_hits = counters.iter().filter(|c| c.packets == 4).count() as u64;
        assert_eq!(
            d[&(
                "workload d/a, workload d/b".into(),
                "end of tier default".into()
            )],
            (4 * walk_hits, 240 * walk_hits)
        );
        // Its ingress and egress chains each end with this drop.
        assert_eq!(
            d[&("workload d/a".into(), "no profile allowed".into())],
            (2, 120)
        );
        assert!(d[&(String::new(), "unknown interface".into())].0 >= 2);
    }

    #[test]
    fn policy_rule_notes_become_labels() {
        let tiers = HashMap::from([("np/default/p", "security")]);
        let l = rule_labels("np/default/p egress#2 Allow", &tiers).unwrap();
        assert_eq!(
            (l.tier.as_str(), l.kind.as_str(), l.namespace.as_str()),
            ("security", "np", "default")
        );
        assert_eq!(
            (
                l.policy.as_str(),
                l.direction.as_str(),
                l.rule.as_str(),
                l.action.as_str()
            ),
            ("p", "egress", "2", "Allow")
        );
        assert!(rule_labels("gnp/x end-of-tier Deny", &tiers).is_none());
        assert!(rule_labels("profile kns.default #0", &tiers).is_none());
    }

    #[test]
    fn a_costly_read_stretches_the_pause() {
        let every = Duration::from_secs(10);
        assert_eq!(next_pause(every, Duration::from_millis(100)), every);
        assert_eq!(
            next_pause(every, Duration::from_secs(2)),
            Duration::from_secs(40)
        );
    }
}
