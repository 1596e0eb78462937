//! The Calico selector language: parsing, evaluation against a label map,
//! canonical printing and a stable id derived from the canonical form.
//!
//! The grammar (lowest precedence first):
//! ```text
//! selector := ε | or
//! or       := and ("||" and)*
//! and      := op ("&&" op)*
//! op       := "!"* ( "has(" LABEL ")" | "all(" ")" | "global(" ")" | "(" or ")"
//!                  | LABEL ("=="|"!="|"contains"|"starts with"|"ends with") STRING
//!                  | LABEL ("in"|"not in") "{" [STRING ("," STRING)*] [","] "}" )
//! ```
//! Labels are `[A-Za-z0-9_./-]{1,512}`; strings use `"` or `'` with no escapes.
//! Whitespace is a space or a tab; anything else (a newline included) is an error.

mod parse;

use std::collections::BTreeMap;
use std::fmt;

pub use parse::{MAX_LABEL_LEN, MAX_SELECTOR_LEN, parse};

/// The label holding an endpoint's namespace; absent on non-namespaced
/// endpoints (host endpoints, global network sets).
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";

/// A parse error, with the byte offset in the selector text where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at column {})", .offset + 1)]
pub struct SelectorError {
    /// Byte offset into the selector text (0-based).
    pub offset: usize,
    pub message: String,
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    All,
    Global,
    Has(String),
    Equal(String, String),
    NotEqual(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Contains(String, String),
    StartsWith(String, String),
    EndsWith(String, String),
    Not(Box<Selector>),
    And(Vec<Selector>),
    Or(Vec<Selector>),
}

/// Something a selector can be evaluated against.
pub trait Labels {
    fn get(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

impl Labels for std::collections::HashMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        std::collections::HashMap::get(self, key).map(String::as_str)
    }
}

impl<L: Labels + ?Sized> Labels for &L {
    fn get(&self, key: &str) -> Option<&str> {
        (**self).get(key)
    }
}

impl Selector {
    /// Whether the selector matches the given labels.
    ///
    /// `!=` and `not in` match when the label is absent; every other
    /// label operator needs the label to be present.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Selector::All | Selector::Global => true,
            Selector::Has(k) => labels.get(k).is_some(),
            Selector::Equal(k, v) => labels.get(k) == Some(v.as_str()),
            Selector::NotEqual(k, v) => labels.get(k) != Some(v.as_str()),
            Selector::In(k, vs) => labels.get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Selector::NotIn(k, vs) => !labels.get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Selector::Contains(k, v) => labels.get(k).is_some_and(|x| x.contains(v.as_str())),
            Selector::StartsWith(k, v) => labels.get(k).is_some_and(|x| x.starts_with(v.as_str())),
            Selector::EndsWith(k, v) => labels.get(k).is_some_and(|x| x.ends_with(v.as_str())),
            Selector::Not(s) => !s.matches(labels),
            Selector::And(ss) => ss.iter().all(|s| s.matches(labels)),
            Selector::Or(ss) => ss.iter().any(|s| s.matches(labels)),
        }
    }

    /// The canonical text. `parse(s.canonical())` yields `s` again.
    pub fn canonical(&self) -> String {
        self.to_string()
    }

    /// A stable id derived from the canonical text: `s:` followed by the
    /// unpadded base64url SHA-224 of `s:<canonical>`. Used to name selector
    /// sets; equal to the id Calico gives the same selector.
    pub fn uid(&self) -> String {
        use base64::Engine;
        use sha2::Digest;
        let digest = sha2::Sha224::digest(format!("s:{}", self.canonical()).as_bytes());
        format!(
            "s:{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
        )
    }

    /// Whether `global()` appears anywhere in the expression.
    pub fn uses_global(&self) -> bool {
        match self {
            Selector::Global => true,
            Selector::Not(s) => s.uses_global(),
            Selector::And(ss) | Selector::Or(ss) => ss.iter().any(Selector::uses_global),
            _ => false,
        }
    }

    /// Every label key the selector reads.
    pub fn label_keys(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_keys(&mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    fn collect_keys<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Selector::All | Selector::Global => {}
            Selector::Has(k)
            | Selector::Equal(k, _)
            | Selector::NotEqual(k, _)
            | Selector::In(k, _)
            | Selector::NotIn(k, _)
            | Selector::Contains(k, _)
            | Selector::StartsWith(k, _)
            | Selector::EndsWith(k, _) => out.push(k),
            Selector::Not(s) => s.collect_keys(out),
            Selector::And(ss) | Selector::Or(ss) => ss.iter().for_each(|s| s.collect_keys(out)),
        }
    }

    /// Conjunction of two selectors, dropping `all()` operands.
    pub fn and(self, other: Selector) -> Selector {
        match (self, other) {
            (Selector::All, o) | (o, Selector::All) => o,
            (a, b) => Selector::And(vec![a, b]),
        }
    }

    /// Rewrites a rule's `namespaceSelector` the way Calico does: a whole
    /// `global()` selects non-namespaced entities, a whole `all()` selects
    /// every namespaced one. Other selectors are returned unchanged (they are
    /// matched against namespace labels by the caller).
    pub fn is_whole_global(&self) -> bool {
        matches!(self, Selector::Global)
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    if v.contains('"') {
        write!(f, "'{v}'")
    } else {
        write!(f, "\"{v}\"")
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_str("all()"),
            Selector::Global => f.write_str("global()"),
            Selector::Has(k) => write!(f, "has({k})"),
            Selector::Equal(k, v) => {
                write!(f, "{k} == ")?;
                write_quoted(f, v)
            }
            Selector::NotEqual(k, v) => {
                write!(f, "{k} != ")?;
                write_quoted(f, v)
            }
            Selector::Contains(k, v) => {
                write!(f, "{k} contains ")?;
                write_quoted(f, v)
            }
            Selector::StartsWith(k, v) => {
                write!(f, "{k} starts with ")?;
                write_quoted(f, v)
            }
            Selector::EndsWith(k, v) => {
                write!(f, "{k} ends with ")?;
                write_quoted(f, v)
            }
            Selector::In(k, vs) | Selector::NotIn(k, vs) => {
                let op = if matches!(self, Selector::In(..)) {
                    "in"
                } else {
                    "not in"
                };
                write!(f, "{k} {op} {{")?;
                for (i, v) in vs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write_quoted(f, v)?;
                }
                f.write_str("}")
            }
            Selector::Not(s) => write!(f, "!{s}"),
            Selector::And(ss) | Selector::Or(ss) => {
                let sep = if matches!(self, Selector::And(_)) {
                    " && "
                } else {
                    " || "
                };
                f.write_str("(")?;
                for (i, s) in ss.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    write!(f, "{s}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

#[cfg(test)]
mod tests;
