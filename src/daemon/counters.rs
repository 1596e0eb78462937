//! Reading the kernel's rule counters into what operators ask about: the
//! packets dropped because nothing allowed them (implicit drops), by
//! endpoint and reason. (Per-policy hits are summed in `daemon::policy_hits`.)

use std::collections::{BTreeMap, BTreeSet};

use crate::compile::ir::Ruleset;
use crate::nft::state::RuleCounter;

/// (endpoint, reason) → (packets, bytes).
pub type Drops = BTreeMap<(String, String), (u64, u64)>;

/// How many endpoint names a shared chain's label lists before "+N".
const NAMED: usize = 3;

/// The implicit drops among `counters`. An end-of-tier drop sits in a tier
/// walk that endpoints with the same policies share, so its endpoint label
/// names those endpoints (the first few, then `+N`): the kernel counts the
/// walk once for all of them.
pub fn implicit_drops(counters: &[RuleCounter], ruleset: &Ruleset) -> Drops {
    let owners = walk_owners(ruleset);
    let mut out = Drops::new();
    for c in counters {
        let Some((endpoint, reason)) = classify(&c.note) else {
            continue;
        };
        let endpoint =
            endpoint.unwrap_or_else(|| owners.get(&c.chain).cloned().unwrap_or_default());
        let e = out.entry((endpoint, reason)).or_default();
        e.0 += c.packets;
        e.1 += c.bytes;
    }
    out
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

/// For each tier-walk chain, the endpoints whose chains jump to it.
fn walk_owners(ruleset: &Ruleset) -> BTreeMap<String, String> {
    let mut users: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for chain in ruleset.chains.values() {
        let Some(owner) = chain
            .rules
            .last()
            .and_then(|r| r.note.strip_suffix(": no profile allowed"))
        else {
            continue;
        };
        for r in &chain.rules {
            if let Some(walk) = r.action.strip_prefix("jump ")
                && walk.contains("-tiers-")
            {
                users.entry(walk).or_default().insert(owner.to_string());
            }
        }
    }
    users
        .into_iter()
        .map(|(walk, eps)| {
            let mut names: Vec<String> = eps.iter().take(NAMED).cloned().collect();
            if eps.len() > NAMED {
                names.push(format!("+{}", eps.len() - NAMED));
            }
            (walk.to_string(), names.join(", "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(chain: &str, note: &str, packets: u64) -> RuleCounter {
        RuleCounter {
            chain: chain.into(),
            note: note.into(),
            packets,
            bytes: packets * 60,
        }
    }

    #[test]
    fn implicit_drops_are_named_by_endpoint_and_reason() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: d}\nspec: {nodeName: n1}\nstatus: {podIP: 198.18.0.1}\n---\n\
                    apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: d}\nspec: {podSelector: {}}\n";
        let rs = crate::sandbox::compile_yaml(yaml, "n1");
        let walk = rs
            .chains
            .keys()
            .find(|k| k.starts_with("filter-tiers-"))
            .unwrap()
            .clone();
        let counters = [
            rc(&walk, "end of tier default: no policy allowed or passed", 4),
            rc("filter-tw-x", "workload d/a: no profile allowed", 1),
            rc("filter-to-wl-dispatch", "unknown workload interface", 2),
            rc("filter-pi-knp/d/deny", "knp/d/deny ingress#0 Allow", 9),
        ];
        let d = implicit_drops(&counters, &rs);
        assert_eq!(
            d[&("workload d/a".into(), "end of tier default".into())],
            (4, 240)
        );
        assert_eq!(
            d[&("workload d/a".into(), "no profile allowed".into())],
            (1, 60)
        );
        assert_eq!(d[&(String::new(), "unknown interface".into())], (2, 120));
        assert_eq!(d.len(), 3, "{d:?}");
    }
}
