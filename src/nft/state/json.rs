//! Reads `nft -j list table` output with the `nftables` crate's typed
//! schema: chains, rules (comment, counter, jump target), sets and their
//! elements. Only the fallback path uses this; the table is normally read
//! over netlink (`readback`).
//!
//! Two limits of the crate shape this module (docs/dependencies.md):
//! named verdict maps have no type there (nftables#237), so they get a
//! small typed struct of ours; and one object the schema does not model
//! would fail a whole-document parse, so the document is split into raw
//! items first and each is parsed on its own. A rule the schema cannot
//! read (a foreign statement) still yields its chain and comment; a set
//! element it cannot read becomes an `<unreadable …>` marker, so that set
//! is rewritten.

use std::collections::BTreeMap;

use nftables::expr::{Expression, NamedExpression};
use nftables::schema::{Chain, Rule, Set};
use nftables::stmt::{Counter, Statement};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{RuleCounter, TableState};

/// The document: its items, each parsed on its own.
#[derive(Deserialize)]
struct Listing<'a> {
    #[serde(borrow)]
    nftables: Vec<&'a RawValue>,
}

/// One item of the document; the kinds tortie's table holds.
#[derive(Deserialize)]
struct Item<'a> {
    chain: Option<Chain<'a>>,
    #[serde(borrow)]
    rule: Option<&'a RawValue>,
    set: Option<Box<Set<'a>>>,
    #[serde(borrow)]
    map: Option<VerdictMap<'a>>,
}

/// `map { type ifname : verdict }`, which the crate's `Map` cannot hold.
#[derive(Deserialize)]
struct VerdictMap<'a> {
    name: String,
    #[serde(borrow, default)]
    elem: Vec<&'a RawValue>,
}

/// A map element's verdict: `{"goto": {"target": …}}` or `jump`.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum MapVerdict {
    Goto { target: String },
    Jump { target: String },
}

/// What a rule the crate's schema cannot read still tells.
#[derive(Deserialize)]
struct ForeignRule {
    chain: String,
    comment: Option<String>,
}

/// A rule as tortie needs it: where, its comment, counter and jump.
struct RuleView {
    chain: String,
    comment: Option<String>,
    counter: Option<(u64, u64)>,
    jump: Option<String>,
}

fn items(text: &str) -> Result<Vec<Item<'_>>, String> {
    let doc: Listing<'_> = serde_json::from_str(text).map_err(|e| format!("nft JSON: {e}"))?;
    doc.nftables
        .iter()
        .map(|raw| {
            serde_json::from_str::<Item<'_>>(raw.get()).map_err(|e| format!("nft JSON item: {e}"))
        })
        .collect()
}

fn rule_view(raw: &RawValue) -> Result<RuleView, String> {
    if let Ok(rule) = serde_json::from_str::<Rule<'_>>(raw.get()) {
        let counter = rule.expr.iter().find_map(|s| match s {
            Statement::Counter(Counter::Anonymous(c)) => {
                let c = c.clone().unwrap_or_default();
                Some((c.packets.unwrap_or(0) as u64, c.bytes.unwrap_or(0) as u64))
            }
            _ => None,
        });
        let jump = rule.expr.iter().find_map(|s| match s {
            Statement::Jump(t) | Statement::Goto(t) => Some(t.target.to_string()),
            _ => None,
        });
        return Ok(RuleView {
            chain: rule.chain.to_string(),
            comment: rule.comment.map(|c| c.to_string()),
            counter,
            jump,
        });
    }
    let r: ForeignRule =
        serde_json::from_str(raw.get()).map_err(|e| format!("nft JSON rule: {e}"))?;
    Ok(RuleView {
        chain: r.chain,
        comment: r.comment,
        counter: None,
        jump: None,
    })
}

/// The table's state from the listing (see `TableState::parse_json`).
pub fn table_state(text: &str) -> Result<TableState, String> {
    let mut st = TableState::default();
    for item in items(text)? {
        if let Some(c) = item.chain {
            st.chains.entry(c.name.to_string()).or_default();
        } else if let Some(raw) = item.rule {
            let r = rule_view(raw)?;
            let comment = r.comment.unwrap_or_default();
            let hash = comment.split(';').next().unwrap_or_default().to_string();
            st.chains.entry(r.chain).or_default().push(hash);
        } else if let Some(s) = item.set {
            let elements = s.elem.iter().flat_map(|e| e.iter()).map(element_or_marker);
            st.sets.insert(s.name.to_string(), elements.collect());
        } else if let Some(m) = item.map {
            st.maps.insert(m.name, map_elements(&m.elem));
        }
    }
    Ok(st)
}

/// Every rule with a counter and one of tortie's comments (see
/// `state::rule_counters`).
pub fn rule_counters(text: &str) -> Result<Vec<RuleCounter>, String> {
    let mut out = Vec::new();
    for raw in items(text)?.into_iter().filter_map(|i| i.rule) {
        let r = rule_view(raw)?;
        let note = r.comment.as_deref().and_then(|c| c.split_once(';'));
        if let (Some((_, note)), Some((packets, bytes))) = (note, r.counter) {
            out.push(RuleCounter {
                chain: r.chain,
                note: note.to_string(),
                packets,
                bytes,
                jump: r.jump,
            });
        }
    }
    Ok(out)
}

fn map_elements(elems: &[&RawValue]) -> BTreeMap<String, String> {
    elems
        .iter()
        .map(
            |raw| match serde_json::from_str::<(String, MapVerdict)>(raw.get()) {
                Ok((key, MapVerdict::Goto { target })) => (key, format!("goto {target}")),
                Ok((key, MapVerdict::Jump { target })) => (key, format!("jump {target}")),
                Err(_) => (format!("<unreadable {}>", raw.get()), String::new()),
            },
        )
        .collect()
}

fn element_or_marker(e: &Expression<'_>) -> String {
    element_text(e).unwrap_or_else(|| {
        let shown = serde_json::to_string(e).unwrap_or_default();
        format!("<unreadable {shown}>")
    })
}

/// One set element written the way the IR writes it: `198.18.0.0/24`,
/// `198.18.0.1-198.18.0.9`, `80`, `198.18.0.5 . 6 . 80`.
fn element_text(e: &Expression<'_>) -> Option<String> {
    match e {
        Expression::String(s) => {
            Some(crate::ipproto::number(s).map_or_else(|| s.to_string(), |n| n.to_string()))
        }
        Expression::Number(n) => Some(n.to_string()),
        Expression::Range(r) => Some(format!(
            "{}-{}",
            element_text(&r.range[0])?,
            element_text(&r.range[1])?
        )),
        Expression::Named(NamedExpression::Prefix(p)) => {
            let Expression::String(addr) = p.addr.as_ref() else {
                return None;
            };
            Some(format!("{addr}/{}", p.len))
        }
        Expression::Named(NamedExpression::Concat(parts)) => {
            let parts: Option<Vec<String>> = parts.iter().map(element_text).collect();
            Some(parts?.join(" . "))
        }
        Expression::Named(NamedExpression::Elem(el)) => element_text(&el.val),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_rule_keeps_its_chain_and_reads_as_unknown() {
        let json = r#"{"nftables": [
          {"chain": {"family": "inet", "table": "tortie", "name": "filter-x", "handle": 2}},
          {"rule": {"family": "inet", "table": "tortie", "chain": "filter-x", "handle": 3,
                    "expr": [{"no-such-statement": {"x": 1}}]}}
        ]}"#;
        let st = table_state(json).unwrap();
        assert_eq!(st.chains["filter-x"], [""]);
    }

    #[test]
    fn an_element_outside_the_schema_marks_its_set_unreadable() {
        let json = r#"{"nftables": [
          {"set": {"family": "inet", "name": "s4-x", "table": "tortie", "type": "ipv4_addr",
                   "flags": ["interval"], "elem": ["198.18.0.1", {"prefix": {"addr": {"concat": []}, "len": 24}}]}},
          {"map": {"family": "inet", "name": "m", "table": "tortie", "type": "ifname", "map": "verdict",
                   "elem": [["cali1", {"accept": null}]]}}
        ]}"#;
        let st = table_state(json).unwrap();
        let set: Vec<&String> = st.sets["s4-x"].iter().collect();
        assert_eq!(set[0], "198.18.0.1");
        assert!(set[1].starts_with("<unreadable "), "{set:?}");
        assert!(st.maps["m"].keys().all(|k| k.starts_with("<unreadable ")));
    }

    #[test]
    fn counters_and_jumps_come_from_typed_statements() {
        let json = r#"{"nftables": [
          {"rule": {"family": "inet", "table": "tortie", "chain": "filter-tw-a", "handle": 3,
                    "comment": "0123456789abcdef;gnp default.p ingress#0",
                    "expr": [{"counter": {"packets": 7, "bytes": 420}}, {"jump": {"target": "filter-pi-p"}}]}},
          {"rule": {"family": "inet", "table": "tortie", "chain": "filter-tw-a", "handle": 4,
                    "expr": [{"counter": {"packets": 1, "bytes": 1}}, {"accept": null}]}}
        ]}"#;
        let c = rule_counters(json).unwrap();
        assert_eq!(c.len(), 1, "a rule without tortie's comment is not counted");
        assert_eq!((c[0].packets, c[0].bytes), (7, 420));
        assert_eq!(c[0].jump.as_deref(), Some("filter-pi-p"));
        assert_eq!(c[0].note, "gnp default.p ingress#0");
    }
}
