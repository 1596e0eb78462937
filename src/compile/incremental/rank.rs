//! Where a policy sits in evaluation order, as the engine holds it. The
//! order of a policy's tier is not copied into each rank but read through
//! one cell per tier, so a tier's order changing updates the ranks of all
//! its policies with one write. That write keeps every sorted list sorted
//! whenever the tier keeps its place among the tiers holding policies,
//! which is what makes a tier order change cost nothing per policy.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as Mem};

use crate::calc::{Cluster, OrderKey, Policy, Tier};

/// A tier's order (behind the cell its policies' ranks share) and name.
/// The cell is atomic only so that the engine stays `Send` and `Sync`; the
/// engine alone writes it.
#[derive(Debug, Clone)]
pub(super) struct TierPlace {
    order: Arc<AtomicU64>,
    name: Arc<str>,
}

impl TierPlace {
    fn of(t: &Tier) -> TierPlace {
        TierPlace {
            order: Arc::new(AtomicU64::new(order_of(t).to_bits())),
            name: t.name.as_str().into(),
        }
    }

    fn order(&self) -> OrderKey {
        OrderKey(f64::from_bits(self.order.load(Mem::Relaxed)))
    }
}

/// A tier without an order comes last (`Cluster::policy_rank`).
fn order_of(t: &Tier) -> f64 {
    t.order.unwrap_or(f64::INFINITY)
}

impl PartialEq for TierPlace {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for TierPlace {}
impl PartialOrd for TierPlace {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for TierPlace {
    fn cmp(&self, o: &Self) -> Ordering {
        if Arc::ptr_eq(&self.order, &o.order) {
            return Ordering::Equal;
        }
        (self.order(), &*self.name).cmp(&(o.order(), &*o.name))
    }
}

/// A policy's place: its tier's, then its own order and name; the same
/// order as `Cluster::policy_rank`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Rank {
    tier: TierPlace,
    own: (OrderKey, String),
}

/// The cell of every tier the cluster holds, kept in step with its tiers.
#[derive(Default)]
pub(super) struct TierPlaces(HashMap<String, TierPlace>);

impl TierPlaces {
    /// Cells for every tier of `cluster` (a rebuild).
    pub fn of(cluster: &Cluster) -> TierPlaces {
        let cells = cluster
            .tiers
            .iter()
            .map(|(n, t)| (n.clone(), TierPlace::of(t)));
        TierPlaces(cells.collect())
    }

    /// `p`'s rank. Its tier is held: a policy of a missing tier is not.
    pub fn rank(&self, p: &Policy) -> Rank {
        Rank {
            tier: self.0[&p.tier].clone(),
            own: p.sort_key(),
        }
    }

    /// Tier `t` appeared, or its order changed: writes the cell its
    /// policies' ranks read (a new one for a new tier).
    pub fn put(&mut self, t: &Tier) {
        match self.0.get(&t.name) {
            Some(place) => place.order.store(order_of(t).to_bits(), Mem::Relaxed),
            None => {
                self.0.insert(t.name.clone(), TierPlace::of(t));
            }
        }
    }

    /// Tier `name` went (its policies went first).
    pub fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::TierAction;

    fn tier(name: &str, order: Option<f64>) -> Tier {
        Tier {
            name: name.into(),
            order,
            default_action: TierAction::Deny,
            log_dropped: false,
        }
    }

    /// Tier places order by order (unset last), then name, and one write
    /// to a tier's cell moves every place already taken of it.
    #[test]
    fn ranks_follow_their_tier_cell() {
        let mut places = TierPlaces::default();
        places.put(&tier("a", Some(10.0)));
        places.put(&tier("b", Some(20.0)));
        places.put(&tier("c", None));
        let a = places.0["a"].clone();
        let b = places.0["b"].clone();
        let c = places.0["c"].clone();
        assert!(a < b && b < c);
        places.put(&tier("a", Some(30.0)));
        assert!(b < a && a < c, "the rank taken before the write moved");
        places.put(&tier("b", Some(30.0)));
        assert!(a < b, "equal orders fall back to the tier name");
        places.remove("a");
        places.put(&tier("a", Some(1.0)));
        assert!(places.0["a"] < b, "the new tier reads its own order");
        assert!(a.order() == OrderKey(30.0), "a new tier gets a new cell");
    }
}
