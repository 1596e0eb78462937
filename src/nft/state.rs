//! A comparable summary of tortie's table: per chain the list of rule
//! hashes (from the rule comments), per set and map its elements. Built
//! from the desired IR, or parsed from `nft -j list table` output.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

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

    /// Parses `nft -j list table inet tortie`. Anything unexpected in an
    /// element makes that set read as unknown (it will be rewritten).
    pub fn parse_json(text: &str) -> Result<TableState, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("nft JSON: {e}"))?;
        let items = v
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or("nft JSON: no `nftables` array")?;
        let mut st = TableState::default();
        for item in items {
            if let Some(c) = item.get("chain") {
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                st.chains.entry(name.to_string()).or_default();
            } else if let Some(r) = item.get("rule") {
                let chain = r.get("chain").and_then(Value::as_str).unwrap_or_default();
                let comment = r.get("comment").and_then(Value::as_str).unwrap_or_default();
                let hash = comment.split(';').next().unwrap_or_default().to_string();
                st.chains.entry(chain.to_string()).or_default().push(hash);
            } else if let Some(s) = item.get("set") {
                let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
                let mut elements = BTreeSet::new();
                for e in s
                    .get("elem")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match element_text(e) {
                        Some(t) => {
                            elements.insert(t);
                        }
                        None => {
                            elements.insert(format!("<unreadable {e}>"));
                        }
                    }
                }
                st.sets.insert(name.to_string(), elements);
            } else if let Some(m) = item.get("map") {
                let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
                let mut elements = BTreeMap::new();
                for e in m
                    .get("elem")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let pair = e.as_array();
                    let key = pair.and_then(|p| p.first()).and_then(Value::as_str);
                    let target = pair.and_then(|p| p.get(1)).and_then(verdict_text);
                    match (key, target) {
                        (Some(k), Some(t)) => {
                            elements.insert(k.to_string(), t);
                        }
                        _ => {
                            elements.insert(format!("<unreadable {e}>"), String::new());
                        }
                    }
                }
                st.maps.insert(name.to_string(), elements);
            }
        }
        Ok(st)
    }
}

fn verdict_text(v: &Value) -> Option<String> {
    for kind in ["goto", "jump"] {
        if let Some(t) = v
            .get(kind)
            .and_then(|g| g.get("target"))
            .and_then(Value::as_str)
        {
            return Some(format!("{kind} {t}"));
        }
    }
    None
}

/// Renders one JSON set element the way the IR writes it.
fn element_text(e: &Value) -> Option<String> {
    // Elements may be wrapped with per-element options.
    if let Some(inner) = e.get("elem") {
        return element_text(inner.get("val")?);
    }
    match e {
        Value::String(s) => {
            Some(crate::ipproto::number(s).map_or_else(|| s.clone(), |n| n.to_string()))
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Object(_) => {
            if let Some(p) = e.get("prefix") {
                let addr = p.get("addr")?.as_str()?;
                let len = p.get("len")?.as_u64()?;
                return Some(format!("{addr}/{len}"));
            }
            if let Some(r) = e.get("range").and_then(Value::as_array) {
                return Some(format!(
                    "{}-{}",
                    element_text(r.first()?)?,
                    element_text(r.get(1)?)?
                ));
            }
            if let Some(c) = e.get("concat").and_then(Value::as_array) {
                let parts: Option<Vec<String>> = c.iter().map(element_text).collect();
                return Some(parts?.join(" . "));
            }
            None
        }
        _ => None,
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

/// `(note, packets, bytes)` for every rule with a counter and one of our
/// comments, from `nft -j list table` output. The note is the comment after
/// the hash.
pub fn rule_counters(text: &str) -> Result<Vec<RuleCounter>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("nft JSON: {e}"))?;
    let mut out = Vec::new();
    for item in v
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let Some(comment) = rule.get("comment").and_then(Value::as_str) else {
            continue;
        };
        let Some((_, note)) = comment.split_once(';') else {
            continue;
        };
        let counter = rule
            .get("expr")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|e| e.get("counter"));
        if let Some(c) = counter {
            let packets = c.get("packets").and_then(Value::as_u64).unwrap_or(0);
            let bytes = c.get("bytes").and_then(Value::as_u64).unwrap_or(0);
            let chain = rule
                .get("chain")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let jump = rule
                .get("expr")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find_map(verdict_text)
                .and_then(|v| v.split_once(' ').map(|(_, c)| c.to_string()));
            out.push(RuleCounter {
                chain: chain.to_string(),
                note: note.to_string(),
                packets,
                bytes,
                jump,
            });
        }
    }
    Ok(out)
}
