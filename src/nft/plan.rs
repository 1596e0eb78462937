//! Planning one nft transaction that turns what is in force into what is
//! desired: only the delta (new and removed chains, flush-and-refill of
//! changed chains, set and map element additions and deletions), ordered so
//! that every reference resolves inside the transaction. A chain is never
//! left empty between two transactions: flush and refill travel together.
//!
//! `delta` compares everything; `delta_of` looks only at the objects a
//! `Change` names, so its cost follows the change. Element additions are
//! written as re-declarations (`add set S { type …; elements = { … } }`):
//! nft then fetches only the table list, where `add element` makes it
//! fetch every interval set's elements first (seconds at XL). Removals
//! from small sets flush and refill them; only large sets get `delete
//! element`, which pays that fetch.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::elements::Removals;
use super::rules::Op;
use super::state::TableState;
use crate::compile::ir::{
    Chain, Change, ElementDelta, Rank, Ruleset, Set, TABLE_FAMILY, TABLE_NAME, VerdictMap,
};

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
    /// `prepare` as objects: the sets it creates, with their elements.
    pub created: Vec<Set>,
    /// `cleanup` as objects, in its order.
    pub removed: Removals,
    /// `text` as objects, in its order, for one netlink batch; `None`
    /// when some of it has no netlink form here (a new base chain or map,
    /// a whole-table rewrite).
    pub ops: Option<Vec<Op>>,
    /// Whether `prepare` creates the table itself (the first load).
    pub new_table: bool,
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
        text,
        ..whole_plan(desired)
    }
}

/// An empty plan with the statistics of writing all of `desired`.
fn whole_plan(desired: &Ruleset) -> Plan {
    Plan {
        prepare: String::new(),
        text: String::new(),
        cleanup: String::new(),
        created: Vec::new(),
        removed: Removals::default(),
        ops: None,
        new_table: false,
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

/// The first load, into a table that does not exist (or is empty): the
/// table and every set with its elements are created first (`prepare`,
/// one netlink batch: nothing refers to the sets yet, and without base
/// chains nothing can change a verdict), then every chain, map and rule in
/// one transaction (`text`) that finds its sets in place. Loading the
/// elements over netlink skips nft's parsing and interval merging of them,
/// the larger part of a whole-table `nft -f`.
pub fn create_table(desired: &Ruleset) -> Plan {
    let t = table();
    Plan {
        prepare: format!("add table {t}\n{}", desired.render_sets()),
        text: format!("add table {t}\n{}", desired.render_without_sets()),
        created: desired.sets.values().cloned().collect(),
        new_table: true,
        ..whole_plan(desired)
    }
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

/// Sets up to this size are flushed and refilled when they lose elements;
/// larger ones get `delete element` (which makes nft fetch every interval
/// set's elements first).
pub const REFILL_MAX: usize = 1000;

/// The objects a delta looks at, and the element deltas it may trust.
struct Scope<'a> {
    sets: BTreeSet<&'a str>,
    deltas: BTreeMap<&'a str, &'a ElementDelta>,
    maps: BTreeSet<&'a str>,
    chains: BTreeSet<&'a str>,
}

impl<'a> Scope<'a> {
    fn everything(current: &'a TableState, desired: &'a Ruleset) -> Scope<'a> {
        let names = |a: Vec<&'a String>, b: Vec<&'a String>| {
            a.into_iter().chain(b).map(String::as_str).collect()
        };
        Scope {
            sets: names(desired.sets.keys().collect(), current.sets.keys().collect()),
            deltas: BTreeMap::new(),
            maps: names(desired.maps.keys().collect(), current.maps.keys().collect()),
            chains: names(
                desired.chains.keys().collect(),
                current.chains.keys().collect(),
            ),
        }
    }

    fn of(change: &'a Change) -> Scope<'a> {
        let deltas: BTreeMap<&str, &ElementDelta> = change
            .elements
            .iter()
            .filter(|(n, _)| !change.sets.contains(*n))
            .map(|(n, d)| (n.as_str(), d))
            .collect();
        Scope {
            sets: change
                .sets
                .iter()
                .map(String::as_str)
                .chain(deltas.keys().copied())
                .collect(),
            deltas,
            maps: change.maps.iter().map(String::as_str).collect(),
            chains: change.chains.iter().map(String::as_str).collect(),
        }
    }
}

/// The pieces of a plan, in the order they are sent.
#[derive(Default)]
struct Parts {
    stats: PlanStats,
    prepare: String,       // new sets, filled, in an earlier transaction
    head: String,          // objects to create
    body: String,          // element changes of kept sets
    rewrites: String,      // chain rewrites (base chains last)
    base_rewrites: String, //
    map_dels: String,      // stale map elements
    map_adds: String,      // map elements, once their chains exist
    chain_flushes: String, // cleanup: rules of removed chains
    maps_chains: String,   // cleanup: removed maps, then removed chains
    chain_dels: String,    //
    set_dels: String,      // cleanup: removed sets, last of all
    created: Vec<Set>,     // prepare, as objects
    removed: Removals,     // cleanup, as objects
    ops: Ops,              // the change, as objects
}

/// The change transaction's parts as objects, in the same pieces as the text.
#[derive(Default)]
struct Ops {
    head: Vec<Op>,
    body: Vec<Op>,
    rewrites: Vec<Op>,
    base_rewrites: Vec<Op>,
    map_dels: Vec<Op>,
    map_adds: Vec<Op>,
    /// Something in the text has no netlink form.
    text_only: bool,
}

/// The delta from `current` to `desired`; an empty plan when nothing differs.
pub fn delta(current: &TableState, desired: &Ruleset) -> Plan {
    plan_scope(current, desired, &Scope::everything(current, desired))
}

/// The delta from `current` to `desired` looking only at what `change`
/// names: element deltas are trusted (checked against `current`), named
/// chains, sets and maps are compared whole.
pub fn delta_of(current: &TableState, desired: &Ruleset, change: &Change) -> Plan {
    plan_scope(current, desired, &Scope::of(change))
}

fn plan_scope(current: &TableState, desired: &Ruleset, scope: &Scope) -> Plan {
    let mut p = Parts::default();
    for name in &scope.sets {
        let delta = scope.deltas.get(name).copied();
        plan_set(
            &mut p,
            name,
            current.sets.get(*name),
            desired.sets.get(*name),
            delta,
        );
    }
    for name in &scope.maps {
        plan_map(
            &mut p,
            name,
            current.maps.get(*name),
            desired.maps.get(*name),
        );
    }
    plan_chains(&mut p, current, desired, &scope.chains);
    p.finish()
}

fn decl_with(set: &Set, elements: &BTreeSet<String>) -> String {
    format!(
        "add set {} {} {{ {} elements = {{ {} }} }}\n",
        table(),
        set.name,
        set.ty.declaration(),
        element_block(elements)
    )
}

/// Whether a listing could not render some element of `elements`.
pub fn has_unreadable(elements: &BTreeSet<String>) -> bool {
    elements
        .range("<unreadable".to_string()..)
        .next()
        .is_some_and(|e| e.starts_with("<unreadable"))
}

fn plan_set(
    p: &mut Parts,
    name: &str,
    have: Option<&BTreeSet<String>>,
    want: Option<&Set>,
    delta: Option<&ElementDelta>,
) {
    let t = table();
    let (have, set) = match (have, want) {
        (None, None) => return,
        (Some(_), None) => {
            let _ = writeln!(p.set_dels, "delete set {t} {name}");
            p.removed.sets.push(name.to_string());
            return;
        }
        (None, Some(set)) => {
            p.created.push(set.clone());
            if set.elements.is_empty() {
                let _ = writeln!(
                    p.prepare,
                    "add set {t} {name} {{ {} }}",
                    set.ty.declaration()
                );
            } else {
                p.prepare.push_str(&decl_with(set, &set.elements));
                p.stats.elements_added += set.elements.len();
            }
            return;
        }
        (Some(have), Some(set)) => (have, set),
    };
    let unreadable = has_unreadable(have);
    let (gone, new): (BTreeSet<String>, BTreeSet<String>) = match delta {
        Some(d) if !unreadable => (
            d.removed
                .iter()
                .filter(|e| have.contains(*e))
                .cloned()
                .collect(),
            d.added
                .iter()
                .filter(|e| !have.contains(*e))
                .cloned()
                .collect(),
        ),
        _ => (
            have.difference(&set.elements).cloned().collect(),
            set.elements.difference(have).cloned().collect(),
        ),
    };
    if unreadable || (!gone.is_empty() && set.elements.len() <= REFILL_MAX) {
        // Cannot name what to delete, or cheap to rewrite: refill.
        let _ = writeln!(p.body, "flush set {t} {name}");
        p.ops.body.push(Op::FlushSet(name.to_string()));
        if !set.elements.is_empty() {
            p.body.push_str(&decl_with(set, &set.elements));
            p.ops.body.push(elements_op(set, &set.elements, true));
        }
        p.stats.elements_deleted += have.len();
        p.stats.elements_added += set.elements.len();
        return;
    }
    if !gone.is_empty() {
        let _ = writeln!(
            p.body,
            "delete element {t} {name} {{ {} }}",
            element_block(&gone)
        );
        p.ops.body.push(elements_op(set, &gone, false));
        p.stats.elements_deleted += gone.len();
    }
    if !new.is_empty() {
        p.body.push_str(&decl_with(set, &new));
        p.ops.body.push(elements_op(set, &new, true));
        p.stats.elements_added += new.len();
    }
}

fn elements_op(set: &Set, elements: &BTreeSet<String>, add: bool) -> Op {
    Op::Elements {
        set: set.name.clone(),
        ty: set.ty,
        elements: elements.iter().cloned().collect(),
        add,
    }
}

fn map_op(name: &str, elements: &[(&String, &String)]) -> Op {
    Op::MapElements {
        map: name.to_string(),
        elements: elements
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn map_decl(name: &str, elements: &[(&String, &String)]) -> String {
    let items: Vec<String> = elements
        .iter()
        .map(|(k, v)| format!("\"{k}\" : {v}"))
        .collect();
    format!(
        "add map {} {name} {{ type ifname : verdict; elements = {{ {} }} }}\n",
        table(),
        items.join(", ")
    )
}

fn plan_map(
    p: &mut Parts,
    name: &str,
    have: Option<&BTreeMap<String, String>>,
    want: Option<&VerdictMap>,
) {
    let t = table();
    let Some(map) = want else {
        if have.is_some() {
            let _ = writeln!(p.maps_chains, "delete map {t} {name}");
            p.removed.maps.push(name.to_string());
        }
        return;
    };
    let Some(have) = have else {
        // Declared now, filled once the chains it points at exist.
        let _ = writeln!(p.head, "add map {t} {name} {{ type ifname : verdict; }}");
        p.ops.text_only = true;
        let all: Vec<_> = map.elements.iter().collect();
        if !all.is_empty() {
            p.map_adds.push_str(&map_decl(name, &all));
            p.ops.map_adds.push(map_op(name, &all));
            p.stats.elements_added += all.len();
        }
        return;
    };
    let stale = have.iter().any(|(k, v)| map.elements.get(k) != Some(v));
    let new: Vec<_> = if stale {
        // Flush and refill: `delete element` would make nft fetch every set.
        let _ = writeln!(p.map_dels, "flush map {t} {name}");
        p.ops.map_dels.push(Op::FlushSet(name.to_string()));
        p.stats.elements_deleted += have.len();
        map.elements.iter().collect()
    } else {
        map.elements
            .iter()
            .filter(|(k, _)| !have.contains_key(*k))
            .collect()
    };
    if !new.is_empty() {
        p.map_adds.push_str(&map_decl(name, &new));
        p.ops.map_adds.push(map_op(name, &new));
        p.stats.elements_added += new.len();
    }
}

fn hashes(chain: &Chain) -> Vec<String> {
    chain.rules.iter().map(|r| r.hash(&chain.name)).collect()
}

fn plan_chains(p: &mut Parts, current: &TableState, desired: &Ruleset, names: &BTreeSet<&str>) {
    let t = table();
    let mut chains: Vec<&Chain> = names
        .iter()
        .filter_map(|n| desired.chains.get(*n))
        .collect();
    chains.sort_by(|a, b| (a.rank, &a.name).cmp(&(b.rank, &b.name)));
    // Declare every new chain first so that jumps resolve, then rewrite
    // changed ones in dependency order.
    for chain in &chains {
        if current.chains.contains_key(&chain.name) {
            continue;
        }
        match chain.hook {
            Some(h) => {
                let _ = writeln!(
                    p.head,
                    "add chain {t} {} {{ type {} hook {} priority {}; policy accept; }}",
                    chain.name, h.kind, h.hook, h.priority
                );
                p.ops.text_only = true;
            }
            None => {
                let _ = writeln!(p.head, "add chain {t} {}", chain.name);
                p.ops.head.push(Op::NewChain(chain.name.clone()));
            }
        }
    }
    for chain in &chains {
        let have = current.chains.get(&chain.name);
        if have == Some(&hashes(chain)) {
            continue;
        }
        let (out, ops) = if chain.rank == Rank::Base {
            (&mut p.base_rewrites, &mut p.ops.base_rewrites)
        } else {
            (&mut p.rewrites, &mut p.ops.rewrites)
        };
        if have.is_some() {
            let _ = writeln!(out, "flush chain {t} {}", chain.name);
            ops.push(Op::FlushChain(chain.name.clone()));
        }
        for r in &chain.rules {
            let _ = writeln!(out, "add rule {t} {} {}", chain.name, r.render(&chain.name));
            ops.push(Op::AddRule {
                chain: chain.name.clone(),
                rule: r.clone(),
            });
        }
        p.stats.chains_written += 1;
    }
    // Removed chains: flushed first (they may jump to one another), deleted
    // after the removed maps whose elements jump to them.
    let mut dels = String::new();
    for name in names {
        if current.chains.contains_key(*name) && !desired.chains.contains_key(*name) {
            let _ = writeln!(p.chain_flushes, "flush chain {t} {name}");
            let _ = writeln!(dels, "delete chain {t} {name}");
            p.removed.flushed.push(name.to_string());
            p.removed.chains.push(name.to_string());
            p.stats.chains_deleted += 1;
        }
    }
    p.chain_dels = dels;
}

impl Parts {
    fn finish(mut self) -> Plan {
        let t = table();
        self.maps_chains.push_str(&self.chain_dels);
        let cleanup = cleanup_text(&self.chain_flushes, &self.maps_chains, &self.set_dels);
        let change = [
            &self.head,
            &self.body,
            &self.rewrites,
            &self.map_dels,
            &self.map_adds,
            &self.base_rewrites,
        ];
        let text = if change.iter().all(|s| s.is_empty()) {
            String::new()
        } else {
            let mut text = format!("add table {t}\n");
            change.iter().for_each(|s| text.push_str(s));
            text
        };
        let o = self.ops;
        let ops = (!o.text_only && !text.is_empty()).then(|| {
            [
                o.head,
                o.body,
                o.rewrites,
                o.map_dels,
                o.map_adds,
                o.base_rewrites,
            ]
            .concat()
        });
        Plan {
            prepare: with_table(self.prepare),
            text,
            cleanup,
            stats: self.stats,
            created: self.created,
            removed: self.removed,
            ops,
            new_table: false,
        }
    }
}

/// The `Change` that takes `before` to `after`, found by comparing them
/// whole (for tests, benchmarks and tools; the compiler produces changes
/// without comparing).
pub fn change_between(before: &Ruleset, after: &Ruleset) -> Change {
    let mut c = Change::default();
    let names = |a: Vec<&String>, b: Vec<&String>| -> BTreeSet<String> {
        a.into_iter().chain(b).cloned().collect()
    };
    for n in names(
        before.chains.keys().collect(),
        after.chains.keys().collect(),
    ) {
        if before.chains.get(&n) != after.chains.get(&n) {
            c.chains.insert(n);
        }
    }
    for n in names(before.maps.keys().collect(), after.maps.keys().collect()) {
        if before.maps.get(&n) != after.maps.get(&n) {
            c.maps.insert(n);
        }
    }
    for n in names(before.sets.keys().collect(), after.sets.keys().collect()) {
        match (before.sets.get(&n), after.sets.get(&n)) {
            (Some(a), Some(b)) if a.ty == b.ty => {
                let d = ElementDelta {
                    added: b.elements.difference(&a.elements).cloned().collect(),
                    removed: a.elements.difference(&b.elements).cloned().collect(),
                };
                if !d.is_empty() {
                    c.elements.insert(n, d);
                }
            }
            (a, b) if a != b => {
                c.sets.insert(n);
            }
            _ => {}
        }
    }
    c
}
