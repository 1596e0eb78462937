//! Planning one nft transaction that turns what is in force into what is
//! desired: only the delta (new and removed chains, flush-and-refill of
//! changed chains, set and map element additions and deletions), ordered so
//! that every reference resolves inside the transaction. A chain is never
//! left empty between two transactions: flush and refill travel together.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::state::TableState;
use crate::compile::ir::{Rank, Ruleset, TABLE_FAMILY, TABLE_NAME};

fn table() -> String {
    format!("{TABLE_FAMILY} {TABLE_NAME}")
}

/// Size of a planned transaction, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanStats {
    pub chains_written: usize,
    pub chains_deleted: usize,
    pub elements_added: usize,
    pub elements_deleted: usize,
    pub full_rebuild: bool,
}

/// A change as up to three transactions: `prepare` creates and fills new
/// sets (nothing refers to them yet), `text` is the change itself (atomic),
/// then `cleanup` deletes the chains, maps and sets that nothing references
/// any more. Creating a set in the same transaction as the rules that start
/// using it was seen to make a lookup miss right after the commit (an
/// allowed SYN dropped about once per 400 swaps); split like this, the swap
/// test shows no wrong verdict. Neither `prepare` nor `cleanup` can change
/// a verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// New sets, created and filled before any rule refers to them.
    pub prepare: String,
    pub text: String,
    pub cleanup: String,
    pub stats: PlanStats,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.prepare.is_empty() && self.text.is_empty() && self.cleanup.is_empty()
    }
}

fn element_block(elements: &BTreeSet<String>) -> String {
    elements.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Rewrites the whole table in one transaction without ever removing its
/// base chains: every rule is flushed, every set and map emptied, and all
/// of it refilled. Objects that are no longer wanted stay behind empty and
/// unreferenced until the next delta removes them. Used after repeated
/// failures. (Deleting and re-creating the table instead re-creates every
/// set in the transaction that uses it, and was seen to lose allowed packets.)
pub fn full_rebuild(desired: &Ruleset) -> Plan {
    let t = table();
    let mut text = format!("add table {t}\nflush table {t}\n");
    for set in desired.sets.values() {
        let _ = writeln!(
            text,
            "add set {t} {} {{ {} }}",
            set.name,
            set.ty.declaration()
        );
        let _ = writeln!(text, "flush set {t} {}", set.name);
    }
    for map in desired.maps.values() {
        let _ = writeln!(
            text,
            "add map {t} {} {{ type ifname : verdict; }}",
            map.name
        );
        let _ = writeln!(text, "flush map {t} {}", map.name);
    }
    whole_table(text, desired)
}

/// A plan that writes the whole table: `text` then every chain, set and map.
fn whole_table(mut text: String, desired: &Ruleset) -> Plan {
    text.push_str(&desired.render());
    Plan {
        prepare: String::new(),
        text,
        cleanup: String::new(),
        stats: PlanStats {
            chains_written: desired.chains.len(),
            elements_added: desired.sets.values().map(|s| s.elements.len()).sum(),
            full_rebuild: true,
            ..PlanStats::default()
        },
    }
}

/// Replaces the table outright: delete and re-create in one transaction.
/// Used when the table does not exist yet, and as the last resort when even
/// a full rebuild keeps failing (e.g. an object of ours was altered so that
/// it cannot be refilled).
pub fn replace_table(desired: &Ruleset) -> Plan {
    let t = table();
    whole_table(format!("add table {t}\ndelete table {t}\n"), desired)
}

fn with_table(body: String) -> String {
    if body.is_empty() {
        body
    } else {
        format!("add table {}\n{body}", table())
    }
}

/// The cleanup transaction, ordered so that every object is deleted only
/// once nothing refers to it any more (the kernel answers EBUSY otherwise):
/// first the rules of removed chains go (they may jump to chains, look up
/// sets and maps), then removed maps (their elements jump to chains), then
/// the removed chains, last the removed sets. What kept objects referred to
/// was rewritten by the change transaction before this one runs: kept
/// chains are flushed and refilled, stale elements of kept maps deleted.
fn cleanup_text(flushes: &str, maps_then_chains: &str, sets: &str) -> String {
    if flushes.is_empty() && maps_then_chains.is_empty() && sets.is_empty() {
        return String::new();
    }
    format!("add table {}\n{flushes}{maps_then_chains}{sets}", table())
}

/// The delta from `current` to `desired`; an empty plan when nothing differs.
pub fn delta(current: &TableState, desired: &Ruleset) -> Plan {
    let t = table();
    let want = TableState::of(desired);
    let mut stats = PlanStats::default();
    let mut prepare = String::new(); // new sets, filled, in an earlier transaction
    let mut head = String::new(); // objects to create
    let mut body = String::new(); // element deletions, chain rewrites, additions
    let mut tail = String::new(); // removed maps, then removed chains

    // Sets.
    for (name, set) in &desired.sets {
        match current.sets.get(name) {
            None => {
                let _ = writeln!(prepare, "add set {t} {name} {{ {} }}", set.ty.declaration());
                if !set.elements.is_empty() {
                    let _ = writeln!(
                        prepare,
                        "add element {t} {name} {{ {} }}",
                        element_block(&set.elements)
                    );
                    stats.elements_added += set.elements.len();
                }
            }
            Some(have) => {
                let gone: BTreeSet<String> = have.difference(&set.elements).cloned().collect();
                let new: BTreeSet<String> = set.elements.difference(have).cloned().collect();
                if gone.iter().any(|e| e.starts_with("<unreadable")) {
                    // Cannot name what to delete: rewrite the set's contents.
                    let _ = writeln!(body, "flush set {t} {name}");
                    if !set.elements.is_empty() {
                        let _ = writeln!(
                            body,
                            "add element {t} {name} {{ {} }}",
                            element_block(&set.elements)
                        );
                    }
                    stats.elements_deleted += have.len();
                    stats.elements_added += set.elements.len();
                    continue;
                }
                if !gone.is_empty() {
                    let _ = writeln!(
                        body,
                        "delete element {t} {name} {{ {} }}",
                        element_block(&gone)
                    );
                    stats.elements_deleted += gone.len();
                }
                if !new.is_empty() {
                    let _ = writeln!(body, "add element {t} {name} {{ {} }}", element_block(&new));
                    stats.elements_added += new.len();
                }
            }
        }
    }
    // Removed sets go last of all: rules of removed chains may use them.
    let mut set_dels = String::new();
    for name in current
        .sets
        .keys()
        .filter(|n| !desired.sets.contains_key(*n))
    {
        let _ = writeln!(set_dels, "delete set {t} {name}");
    }

    // Maps: declare new ones now, fill after the chains they point at exist.
    let mut map_adds = String::new();
    let mut map_dels = String::new();
    for (name, map) in &desired.maps {
        let have = current.maps.get(name);
        if have.is_none() {
            let _ = writeln!(head, "add map {t} {name} {{ type ifname : verdict; }}");
        }
        let empty = Default::default();
        let have = have.unwrap_or(&empty);
        for (k, v) in have {
            if map.elements.get(k) != Some(v) {
                if k.starts_with("<unreadable") {
                    let _ = writeln!(map_dels, "flush map {t} {name}");
                    continue;
                }
                let _ = writeln!(map_dels, "delete element {t} {name} {{ \"{k}\" }}");
                stats.elements_deleted += 1;
            }
        }
        let flushed = have.keys().any(|k| k.starts_with("<unreadable"));
        for (k, v) in &map.elements {
            if flushed || have.get(k) != Some(v) {
                let _ = writeln!(map_adds, "add element {t} {name} {{ \"{k}\" : {v} }}");
                stats.elements_added += 1;
            }
        }
    }
    for name in current
        .maps
        .keys()
        .filter(|n| !desired.maps.contains_key(*n))
    {
        let _ = writeln!(tail, "delete map {t} {name}");
    }

    // Chains: declare every new chain first so that jumps resolve, then
    // rewrite changed ones in dependency order.
    for chain in desired.ordered_chains() {
        if !current.chains.contains_key(&chain.name) {
            match chain.hook {
                Some(h) => {
                    let _ = writeln!(
                        head,
                        "add chain {t} {} {{ type {} hook {} priority {}; policy accept; }}",
                        chain.name, h.kind, h.hook, h.priority
                    );
                }
                None => {
                    let _ = writeln!(head, "add chain {t} {}", chain.name);
                }
            }
        }
    }
    let mut rewrites = String::new();
    let mut base_rewrites = String::new();
    for chain in desired.ordered_chains() {
        let have = current.chains.get(&chain.name);
        if have == want.chains.get(&chain.name) {
            continue;
        }
        let out = if chain.rank == Rank::Base {
            &mut base_rewrites
        } else {
            &mut rewrites
        };
        if have.is_some() {
            let _ = writeln!(out, "flush chain {t} {}", chain.name);
        }
        for r in &chain.rules {
            let _ = writeln!(out, "add rule {t} {} {}", chain.name, r.render(&chain.name));
        }
        stats.chains_written += 1;
    }
    let mut removals = String::new();
    let gone: Vec<&String> = current
        .chains
        .keys()
        .filter(|n| !desired.chains.contains_key(*n))
        .collect();
    // Flush every removed chain first: they may jump to one another.
    let mut chain_dels = String::new();
    for name in &gone {
        let _ = writeln!(removals, "flush chain {t} {name}");
        let _ = writeln!(chain_dels, "delete chain {t} {name}");
    }
    // Removed maps (in `tail`) go before the chains their elements jump to.
    tail.push_str(&chain_dels);
    stats.chains_deleted = gone.len();

    let mut text = String::new();
    let cleanup = cleanup_text(&removals, &tail, &set_dels);
    if head.is_empty()
        && body.is_empty()
        && rewrites.is_empty()
        && base_rewrites.is_empty()
        && map_adds.is_empty()
        && map_dels.is_empty()
    {
        return Plan {
            prepare: with_table(prepare),
            text: String::new(),
            cleanup,
            stats,
        };
    }
    let _ = writeln!(text, "add table {t}");
    text.push_str(&head);
    text.push_str(&body);
    text.push_str(&rewrites);
    text.push_str(&map_dels);
    text.push_str(&map_adds);
    text.push_str(&base_rewrites);
    Plan {
        prepare: with_table(prepare),
        text,
        cleanup,
        stats,
    }
}
