//! A label index over endpoints and network sets: for a selector, the
//! candidates that could match it, found from its `==`, `in` and `has()`
//! terms without scanning every endpoint.

use super::labels::{LabelMap, Sym, SymMap};
use super::{Endpoint, NetworkSet};
use crate::selector::Selector;

/// Postings lists for `key=value` and `key`, per kind of labelled thing.
#[derive(Debug, Clone, Default)]
pub struct LabelIndex {
    endpoints: Postings,
    sets: Postings,
}

/// Positions are `u32`: half the size of `usize`, and no cluster has four
/// billion endpoints.
#[derive(Debug, Clone, Default)]
struct Postings {
    count: usize,
    by_pair: SymMap<(Sym, Sym), Vec<u32>>,
    by_key: SymMap<Sym, Vec<u32>>,
}

const NONE: &[u32] = &[];

impl Postings {
    fn build<'a>(items: impl Iterator<Item = &'a LabelMap>) -> Postings {
        let mut p = Postings::default();
        for (i, labels) in items.enumerate() {
            p.count += 1;
            for (k, v) in labels.syms() {
                p.by_pair.entry((k, v)).or_default().push(i as u32);
                p.by_key.entry(k).or_default().push(i as u32);
            }
        }
        p
    }

    /// Positions carrying `key == value` (none when either text was never
    /// seen on any label).
    fn pair(&self, key: &str, value: &str) -> &[u32] {
        match (Sym::lookup(key), Sym::lookup(value)) {
            (Some(k), Some(v)) => self.by_pair.get(&(k, v)).map_or(NONE, Vec::as_slice),
            _ => NONE,
        }
    }

    fn key(&self, key: &str) -> &[u32] {
        Sym::lookup(key)
            .and_then(|k| self.by_key.get(&k))
            .map_or(NONE, Vec::as_slice)
    }

    /// How many candidates `narrow` would return, without building them.
    fn estimate(&self, sel: &Selector) -> Option<usize> {
        match sel {
            Selector::Equal(k, v) => Some(self.pair(k, v).len()),
            Selector::Has(k)
            | Selector::Contains(k, _)
            | Selector::StartsWith(k, _)
            | Selector::EndsWith(k, _) => Some(self.key(k).len()),
            Selector::In(k, vs) => Some(vs.iter().map(|v| self.pair(k, v).len()).sum()),
            Selector::And(terms) => terms.iter().filter_map(|t| self.estimate(t)).min(),
            Selector::Or(terms) => terms.iter().map(|t| self.estimate(t)).sum(),
            _ => None,
        }
    }

    /// Sorted candidate positions, or `None` when the selector cannot narrow.
    fn narrow(&self, sel: &Selector) -> Option<Vec<u32>> {
        match sel {
            Selector::Equal(k, v) => Some(self.pair(k, v).to_vec()),
            Selector::Has(k)
            | Selector::Contains(k, _)
            | Selector::StartsWith(k, _)
            | Selector::EndsWith(k, _) => Some(self.key(k).to_vec()),
            Selector::In(k, vs) => {
                let mut out: Vec<u32> = vs
                    .iter()
                    .flat_map(|v| self.pair(k, v).iter().copied())
                    .collect();
                out.sort_unstable();
                out.dedup();
                Some(out)
            }
            Selector::And(terms) => {
                // The smallest narrowing term bounds the conjunction; only
                // that one is built.
                let best = terms
                    .iter()
                    .filter_map(|t| self.estimate(t).map(|n| (n, t)))
                    .min_by_key(|(n, _)| *n)?;
                self.narrow(best.1)
            }
            Selector::Or(terms) => {
                let mut out = Vec::new();
                for t in terms {
                    out.extend(self.narrow(t)?);
                }
                out.sort_unstable();
                out.dedup();
                Some(out)
            }
            _ => None,
        }
    }

    fn candidates(&self, sel: &Selector) -> Vec<usize> {
        match self.narrow(sel) {
            Some(found) => found.into_iter().map(|i| i as usize).collect(),
            None => (0..self.count).collect(),
        }
    }
}

/// A `key == value` every match of `sel` must have (a top-level term of a
/// conjunction), choosing the one the fewest endpoints carry.
pub fn required_pair(sel: &Selector, index: &LabelIndex) -> Option<(String, String)> {
    let terms: Vec<&Selector> = match sel {
        Selector::And(t) => t.iter().collect(),
        other => vec![other],
    };
    let mut best: Option<(usize, (String, String))> = None;
    for t in terms {
        let candidate = match t {
            Selector::Equal(k, v) => Some((k.clone(), v.clone())),
            Selector::And(_) => required_pair(t, index),
            _ => None,
        };
        if let Some(pair) = candidate {
            let n = index.endpoints.pair(&pair.0, &pair.1).len();
            if best.as_ref().is_none_or(|(m, _)| n < *m) {
                best = Some((n, pair));
            }
        }
    }
    best.map(|(_, p)| p)
}

impl LabelIndex {
    pub fn build(endpoints: &[Endpoint], sets: &[NetworkSet]) -> LabelIndex {
        LabelIndex {
            endpoints: Postings::build(endpoints.iter().map(|e| &e.labels)),
            sets: Postings::build(sets.iter().map(|s| &s.labels)),
        }
    }

    /// Endpoint positions that may match `sel` (a superset of the matches).
    pub fn candidate_endpoints(&self, sel: &Selector) -> Vec<usize> {
        self.endpoints.candidates(sel)
    }

    /// Network set positions that may match `sel`.
    pub fn candidate_sets(&self, sel: &Selector) -> Vec<usize> {
        self.sets.candidates(sel)
    }
}
