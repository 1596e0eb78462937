//! A label index over endpoints and network sets: for a selector, the
//! candidates that could match it, found from its `==`, `in` and `has()`
//! terms without scanning every endpoint.

use std::collections::HashMap;

use super::{Endpoint, NetworkSet};
use crate::selector::Selector;

/// Postings lists for `key=value` and `key`, per kind of labelled thing.
#[derive(Debug, Clone, Default)]
pub struct LabelIndex {
    endpoints: Postings,
    sets: Postings,
}

#[derive(Debug, Clone, Default)]
struct Postings {
    count: usize,
    by_pair: HashMap<(String, String), Vec<usize>>,
    by_key: HashMap<String, Vec<usize>>,
}

impl Postings {
    fn build<'a>(
        items: impl Iterator<Item = &'a std::collections::BTreeMap<String, String>>,
    ) -> Postings {
        let mut p = Postings::default();
        for (i, labels) in items.enumerate() {
            p.count += 1;
            for (k, v) in labels {
                p.by_pair.entry((k.clone(), v.clone())).or_default().push(i);
                p.by_key.entry(k.clone()).or_default().push(i);
            }
        }
        p
    }

    /// Sorted candidate positions, or `None` when the selector cannot narrow.
    fn narrow(&self, sel: &Selector) -> Option<Vec<usize>> {
        match sel {
            Selector::Equal(k, v) => Some(
                self.by_pair
                    .get(&(k.clone(), v.clone()))
                    .cloned()
                    .unwrap_or_default(),
            ),
            Selector::Has(k) => Some(self.by_key.get(k).cloned().unwrap_or_default()),
            Selector::In(k, vs) => {
                let mut out: Vec<usize> = vs
                    .iter()
                    .flat_map(|v| {
                        self.by_pair
                            .get(&(k.clone(), v.clone()))
                            .into_iter()
                            .flatten()
                            .copied()
                    })
                    .collect();
                out.sort_unstable();
                out.dedup();
                Some(out)
            }
            Selector::Contains(k, _) | Selector::StartsWith(k, _) | Selector::EndsWith(k, _) => {
                Some(self.by_key.get(k).cloned().unwrap_or_default())
            }
            Selector::And(terms) => {
                // The smallest narrowing term bounds the conjunction.
                terms
                    .iter()
                    .filter_map(|t| self.narrow(t))
                    .min_by_key(Vec::len)
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
        self.narrow(sel)
            .unwrap_or_else(|| (0..self.count).collect())
    }
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
