//! A comparable summary of tortie's table: per chain the list of rule
//! hashes (from the rule comments), per set and map its elements. Built
//! from the desired IR, or parsed from `nft -j list table` output.

use std::collections::{BTreeMap, BTreeSet};

mod json;

use crate::compile::ir::{Change, Ruleset};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableState {
    pub chains: BTreeMap<String, Vec<String>>,
    pub sets: BTreeMap<String, BTreeSet<String>>,
    pub maps: BTreeMap<String, BTreeMap<String, String>>,
}

impl TableState {
    /// What the kernel holds after `ruleset` is applied.
    pub fn of(ruleset: &Ruleset) -> TableState {
        TableState {
            chains: ruleset
                .chains
                .values()
                .map(|c| {
                    (
                        c.name.clone(),
                        c.rules.iter().map(|r| r.hash(&c.name)).collect(),
                    )
                })
                .collect(),
            sets: ruleset
                .sets
                .values()
                .map(|s| (s.name.clone(), s.elements.clone()))
                .collect(),
            maps: ruleset
                .maps
                .values()
                .map(|m| (m.name.clone(), m.elements.clone()))
                .collect(),
        }
    }

    /// Moves this view on by `change`, whose names refer to `desired`:
    /// named chains, sets and maps are copied from it (or dropped when it
    /// lacks them), element deltas applied. Costs what the change costs.
    pub fn advance(&mut self, desired: &Ruleset, change: &Change) {
        for name in &change.chains {
            match desired.chains.get(name) {
                Some(c) => {
                    let hashes = c.rules.iter().map(|r| r.hash(&c.name)).collect();
                    self.chains.insert(name.clone(), hashes);
                }
                None => {
                    self.chains.remove(name);
                }
            }
        }
        let copy_set = |st: &mut TableState, name: &String| match desired.sets.get(name) {
            Some(s) => {
                st.sets.insert(name.clone(), s.elements.clone());
            }
            None => {
                st.sets.remove(name);
            }
        };
        for name in &change.sets {
            copy_set(self, name);
        }
        for (name, d) in &change.elements {
            match self.sets.get_mut(name) {
                Some(have) if !super::plan::has_unreadable(have) => {
                    d.removed.iter().for_each(|e| {
                        have.remove(e);
                    });
                    have.extend(d.added.iter().cloned());
                }
                _ => copy_set(self, name),
            }
        }
        for name in &change.maps {
            match desired.maps.get(name) {
                Some(m) => {
                    self.maps.insert(name.clone(), m.elements.clone());
                }
                None => {
                    self.maps.remove(name);
                }
            }
        }
    }

    /// Parses `nft -j list table inet tortie` (typed, `state::json`).
    /// Anything unexpected in an element makes that set read as unknown
    /// (it will be rewritten); a rule tortie did not write reads as an
    /// unknown hash.
    pub fn parse_json(text: &str) -> Result<TableState, String> {
        json::table_state(text)
    }
}

/// One rule's counter, with the chain it sits in and its note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounter {
    pub chain: String,
    pub note: String,
    pub packets: u64,
    pub bytes: u64,
    /// The chain the rule jumps or goes to, if its verdict is one.
    pub jump: Option<String>,
}

/// Every rule with a counter and one of our comments, from `nft -j list
/// table` output. The note is the comment after the hash.
pub fn rule_counters(text: &str) -> Result<Vec<RuleCounter>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    json::rule_counters(text)
}
