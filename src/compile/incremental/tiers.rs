//! Tier updates without a rebuild. A tier's order, default action or
//! `logDropped` changing moves its policies in evaluation order and
//! re-renders only the local endpoints that walk the tier (those with a
//! policy of it); a tier appearing or going makes the policies that name it
//! take effect or stop. A tier no local endpoint walks costs nothing.

use std::sync::Arc;

use super::{Dirty, Incremental};
use crate::calc::{EndpointId, OrderKey, Policy, Tier};
use crate::model::{Resource, ResourceKey, ResourceKind, Update};

impl Incremental {
    /// Stores a Tier update and brings the engine in step with it.
    pub(super) fn tier_update(&mut self, u: Update, dirty: &mut Dirty) {
        let name = u.key.name.clone();
        self.store(u);
        let key = ResourceKey {
            kind: ResourceKind::Tier,
            namespace: None,
            name: name.clone(),
        };
        let new = match self.resources.resource(&key) {
            Some(Resource::Tier(o)) => Some(Tier::of(&o.metadata, &o.spec)),
            _ => Tier::builtin(&name),
        };
        let old = self.cluster.tiers.get(&name).cloned();
        if old == new {
            return;
        }
        match (old, new) {
            (Some(before), Some(t)) => {
                self.tier_places.put(&t);
                self.cluster.tiers.insert(name.clone(), t);
                self.tier_moved(&name, &before, dirty);
            }
            (None, Some(t)) => {
                self.tier_places.put(&t);
                self.cluster.tiers.insert(name.clone(), t);
                self.tier_appeared(&name, dirty);
            }
            // Its policies go first: their ranks are found through it.
            (_, None) => {
                self.tier_went(&name, dirty);
                self.cluster.tiers.remove(&name);
                self.tier_places.remove(&name);
            }
        }
    }

    /// Whether `u` creates or deletes a tier while staged policies exist:
    /// the staged view holds staged policies of every tier, valid or not,
    /// only as a rebuild computes them.
    pub(super) fn tier_rebuilds(&self, u: &Update) -> bool {
        u.key.kind == ResourceKind::Tier
            && !self.cluster.staged.is_empty()
            && self.cluster.tiers.contains_key(&u.key.name)
                != (u.value.is_some() || Tier::builtin(&u.key.name).is_some())
    }

    /// The tier's order or default action changed (the ranks of its
    /// policies read the new order already): re-sorts the policies and
    /// re-renders the endpoints whose lists hold one, unless only its order
    /// changed and it keeps its place among the tiers that hold policies
    /// (then every list stays sorted and nothing is rendered: no work per
    /// policy).
    fn tier_moved(&mut self, name: &str, before: &Tier, dirty: &mut Dirty) {
        if !self.policy_by_tier.contains_key(name) || self.keeps_place(name, before) {
            return;
        }
        let ids = &self.policy_by_tier[name];
        let policies = &self.policies;
        let (mut moved, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.cluster.policies)
            .into_iter()
            .partition(|p| p.tier == name);
        moved.sort_by(|a, b| policies[&a.id].0.cmp(&policies[&b.id].0));
        self.cluster.policies = merge(moved, rest, |p| &policies[&p.id].0);
        for (ep, list) in self.lists.iter_mut() {
            if !list.iter().any(|id| ids.contains(id)) {
                continue;
            }
            list.sort_by(|a, b| policies[a].0.cmp(&policies[b].0));
            match ep {
                EndpointId::Host { .. } => dirty.base = true,
                id => {
                    dirty.workloads.insert(id.clone());
                }
            }
        }
    }

    /// Whether tier `name`, which was `before`, differs from it only in its
    /// order and sits in the same place among the tiers holding policies.
    fn keeps_place(&self, name: &str, before: &Tier) -> bool {
        let now = &self.cluster.tiers[name];
        // Staged policies are ordered by every tier, and rendered with the
        // rest: keep it simple and re-render while any exist.
        if !self.cluster.staged.is_empty()
            || now.default_action != before.default_action
            || now.log_dropped != before.log_dropped
        {
            return false;
        }
        let key = |t: &Tier| (OrderKey(t.order.unwrap_or(f64::INFINITY)), t.name.clone());
        let sequence = |this: &Tier| {
            let mut keys: Vec<_> = self
                .policy_by_tier
                .iter()
                .filter(|(_, ids)| !ids.is_empty())
                .filter_map(|(t, _)| self.cluster.tiers.get(t))
                .map(|t| if t.name == name { key(this) } else { key(t) })
                .collect();
            keys.sort();
            keys.into_iter().map(|(_, n)| n).collect::<Vec<_>>()
        };
        sequence(before) == sequence(now)
    }

    /// The tier was deleted: the policies naming it stop applying.
    fn tier_went(&mut self, name: &str, dirty: &mut Dirty) {
        let ids = self.policy_by_tier.get(name).cloned().unwrap_or_default();
        for id in ids {
            let p = self.policies[&id].1.clone();
            self.replace_policy(Some(p), None, dirty);
        }
    }

    /// The tier was created: the policies naming it start applying.
    fn tier_appeared(&mut self, name: &str, dirty: &mut Dirty) {
        let came: Vec<_> = self
            .resources
            .resources()
            .filter(|r| names_tier(r, name))
            .filter_map(|r| self.policy(r))
            .collect();
        for p in came {
            self.replace_policy(None, Some(p), dirty);
        }
    }
}

/// Two lists sorted by `key`, merged into one.
fn merge<'k, K: Ord + 'k>(
    a: Vec<Arc<Policy>>,
    b: Vec<Arc<Policy>>,
    key: impl Fn(&Policy) -> &'k K,
) -> Vec<Arc<Policy>> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
        let next = if key(x) <= key(y) { a.next() } else { b.next() };
        out.extend(next);
    }
    out.extend(a);
    out.extend(b);
    out
}

/// Whether a Calico policy resource is placed in tier `name` (Kubernetes
/// and cluster network policies sit in built-in tiers, which never go).
fn names_tier(r: &Resource, name: &str) -> bool {
    let tier = match r {
        Resource::NetworkPolicy(o) => o.spec.tier.as_deref(),
        Resource::GlobalNetworkPolicy(o) => o.spec.tier.as_deref(),
        _ => return false,
    };
    tier.unwrap_or("default") == name
}

#[cfg(test)]
mod tests {
    use crate::calc::Cluster;
    use crate::compile::compile;
    use crate::compile::incremental::{Incremental, Outcome};
    use crate::model::{Resource, Update};

    const NODE: &str = "n1";

    fn load(y: &str) -> Vec<Resource> {
        let r = crate::model::load::load_str(y, std::path::Path::new("t.yaml"));
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
        r.resources.into_iter().map(|l| l.resource).collect()
    }

    fn tier(name: &str, order: u32, action: &str) -> Resource {
        load(&format!(
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: {name}}}\nspec: {{order: {order}, defaultAction: {action}}}\n"
        ))
        .remove(0)
    }

    /// Two tiers with opposite verdicts for the same pod, one more tier no
    /// policy uses, and the pod on this node.
    fn cluster() -> Vec<Resource> {
        let mut r = load(concat!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: sec.deny}\n",
            "spec: {tier: sec, selector: app == 'web', ingress: [{action: Deny}]}\n---\n",
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: app.allow}\n",
            "spec: {tier: app, selector: app == 'web', ingress: [{action: Allow}]}\n---\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: default, labels: {app: web}}\n",
            "spec: {nodeName: n1}\nstatus: {podIP: 198.18.0.10}\n",
        ));
        r.extend([
            tier("sec", 100, "Deny"),
            tier("app", 200, "Deny"),
            tier("idle", 300, "Deny"),
        ]);
        r
    }

    fn step(engine: &mut Incremental, all: &mut Vec<Resource>, u: Update) -> Outcome {
        all.retain(|r| r.key() != u.key);
        all.extend(u.value.clone());
        let out = engine.apply(vec![u]);
        assert_eq!(engine.ruleset(), &compile(&Cluster::build(all, NODE), NODE));
        out
    }

    #[test]
    fn tier_changes_rerender_only_the_endpoints_that_walk_them() {
        let mut all = cluster();
        let mut engine = Incremental::new(all.clone(), NODE, |_| {});
        // Swapping the order of the two tiers the pod walks: its part only.
        let out = step(&mut engine, &mut all, Update::put(tier("sec", 250, "Deny")));
        assert_eq!(out, Outcome::Parts(1));
        // A default action change of a walked tier: the same.
        let out = step(&mut engine, &mut all, Update::put(tier("app", 200, "Pass")));
        assert_eq!(out, Outcome::Parts(1));
        // A tier no policy here uses: nothing to render.
        let out = step(&mut engine, &mut all, Update::put(tier("idle", 10, "Pass")));
        assert_eq!(out, Outcome::Unchanged);
        // Deleting a tier drops its policy; creating it again restores it.
        let sec = tier("sec", 250, "Deny");
        let out = step(&mut engine, &mut all, Update::delete(sec.key()));
        assert_ne!(out, Outcome::Full);
        let out = step(&mut engine, &mut all, Update::put(sec));
        assert_ne!(out, Outcome::Full);
    }

    #[test]
    fn a_walked_tier_that_keeps_its_place_among_tiers_renders_nothing() {
        let mut all = cluster();
        let mut engine = Incremental::new(all.clone(), NODE, |_| {});
        // sec (100) stays before app (200), though it passes the idle tier.
        for order in [150, 199, 120] {
            let out = step(
                &mut engine,
                &mut all,
                Update::put(tier("sec", order, "Deny")),
            );
            assert_eq!(out, Outcome::Unchanged, "sec at {order}");
        }
        // Past app: the evaluation order changes, the pod's part re-renders.
        let out = step(&mut engine, &mut all, Update::put(tier("sec", 201, "Deny")));
        assert_eq!(out, Outcome::Parts(1));
        // The same order with another default action is not a mere move.
        let out = step(&mut engine, &mut all, Update::put(tier("sec", 201, "Pass")));
        assert_eq!(out, Outcome::Parts(1));
        // Later moves are ranked from the new place.
        let out = step(&mut engine, &mut all, Update::put(tier("sec", 100, "Pass")));
        assert_eq!(out, Outcome::Parts(1));
    }
}
