//! What one update touches: members, local endpoints, policies, implicit
//! profiles. Each records the parts to re-render in `Dirty`.

use super::*;
use crate::calc::{Input, OrderKey};
use crate::compile::members::required_pairs;
use crate::model::convert;

/// Where a policy sits for an endpoint: everything of it that an
/// endpoint's chains (not the policy's own) depend on.
type Placement = (PolicyId, String, OrderKey, bool, bool, bool, bool, bool);

fn placement(p: &Policy) -> Placement {
    (
        p.id.clone(),
        p.tier.clone(),
        OrderKey(p.order.unwrap_or(f64::INFINITY)),
        p.ingress,
        p.egress,
        p.spec.pre_dnat,
        p.spec.do_not_track,
        p.spec.apply_on_forward,
    )
}

/// The endpoint a Pod, WorkloadEndpoint or HostEndpoint key stands for.
fn endpoint_id(key: &ResourceKey) -> Option<EndpointId> {
    match key.kind {
        ResourceKind::Pod | ResourceKind::WorkloadEndpoint => Some(EndpointId::Workload {
            namespace: key.namespace.clone().unwrap_or_else(|| "default".into()),
            name: key.name.clone(),
        }),
        ResourceKind::HostEndpoint => Some(EndpointId::Host {
            name: key.name.clone(),
        }),
        _ => None,
    }
}

/// Files a local endpoint under each of its labels (or takes it out).
pub(super) fn file_endpoint(
    index: &mut SymMap<(Sym, Sym), BTreeSet<EndpointId>>,
    ep: &Endpoint,
    add: bool,
) {
    for pair in ep.labels.syms() {
        if add {
            index.entry(pair).or_default().insert(ep.id.clone());
        } else if let Some(ids) = index.get_mut(&pair) {
            ids.remove(&ep.id);
            if ids.is_empty() {
                index.remove(&pair);
            }
        }
    }
}

impl Incremental {
    /// A namespace or service account changed: its implicit profile, and
    /// through it the labels of every member in that namespace.
    pub(super) fn implicit_profile(
        &mut self,
        u: &Update,
        dirty: &mut Dirty,
        member_keys: &mut BTreeSet<ResourceKey>,
    ) -> usize {
        let name = u.key.name.as_str();
        let (profile, namespace, account, spec) = match u.key.kind {
            ResourceKind::Namespace => (
                format!("kns.{name}"),
                name.to_string(),
                None,
                u.value
                    .as_ref()
                    .map(|r| convert::namespace_profile(name, &r.meta().labels).spec),
            ),
            _ => {
                let ns = u.key.namespace.clone().unwrap_or_else(|| "default".into());
                let spec = u
                    .value
                    .as_ref()
                    .map(|r| convert::service_account_profile(&ns, name, &r.meta().labels).spec);
                (format!("ksa.{ns}.{name}"), ns, Some(name), spec)
            }
        };
        // A profile that cannot be held is left out, as a full build leaves it.
        let old = match spec.map(crate::calc::Profile::of) {
            Some(Ok(p)) => self.cluster.profiles.insert(profile.clone(), p),
            _ => self.cluster.profiles.remove(&profile),
        };
        let before = old.map(|p| p.spec.labels_to_apply).unwrap_or_default();
        let after = self
            .cluster
            .profiles
            .get(&profile)
            .map(|p| p.spec.labels_to_apply.clone())
            .unwrap_or_default();
        let changed: Vec<(String, Option<String>)> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(*k) != after.get(*k))
            .map(|k| (k.clone(), after.get(k).cloned()))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        let mut touched = 0;
        for key in self.members.in_namespace(&namespace) {
            match self.patch_inherited(&key, account, &changed) {
                Some(n) => touched += n,
                None => {
                    member_keys.insert(key);
                }
            }
        }
        dirty
            .leaves
            .extend(self.leaves_in_use(&LeafOf::Profile(profile)));
        touched
    }

    /// Applies inherited label changes to a remote pod's or a network set's
    /// member in place (its own labels win, as in `Cluster`): the number of
    /// sets changed, or `None` when the member must be derived again
    /// instead (local endpoints, workload endpoints with explicit profiles).
    fn patch_inherited(
        &mut self,
        key: &ResourceKey,
        account: Option<&str>,
        changed: &[(String, Option<String>)],
    ) -> Option<usize> {
        let own: &dyn Fn(&str) -> bool = match self.resources.get(key) {
            Some(Input::Pod(_, p)) if p.node() != Some(self.node.as_str()) => {
                let sa = p.service_account().unwrap_or("default");
                if account.is_some_and(|a| a != sa) {
                    return Some(0);
                }
                &|k| p.has_label(k)
            }
            Some(Input::Resource(Resource::NetworkSet(o))) => {
                if account.is_some() {
                    return Some(0);
                }
                &|k| o.metadata.labels.contains_key(k)
            }
            _ => return None,
        };
        let old = self.members.get(key)?;
        let mut new = old.clone();
        for (k, v) in changed {
            if own(k) {
                continue;
            }
            match v {
                Some(v) => new.labels.insert(k.clone(), v.clone()),
                None => new.labels.remove(k),
            };
        }
        if &new == old {
            return Some(0);
        }
        let old = self.members.set(key, Some(new.clone()));
        Some(self.bump_members(old.as_ref(), Some(&new)))
    }

    /// Re-derives the members and endpoints of `keys` from their resources;
    /// returns how many sets changed.
    pub(super) fn refresh_members(
        &mut self,
        keys: &BTreeSet<ResourceKey>,
        dirty: &mut Dirty,
    ) -> usize {
        let mut touched = 0;
        for key in keys {
            let r = self.resources.get(key);
            let ep = r.and_then(|r| self.cluster.endpoint_of_input(r));
            let local = ep.as_ref().filter(|e| e.node == self.node).cloned();
            let member = match (ep, r) {
                (Some(e), _) => Some(Member::from_endpoint(e)),
                (None, Some(Input::Resource(r))) => member_of(&self.cluster, r),
                (None, _) => None,
            };
            if member.as_ref() != self.members.get(key) {
                let shared = self.resources.shared(key);
                let old = self.members.set_shared(shared, key, member.clone());
                touched += self.bump_members(old.as_ref(), member.as_ref());
            }
            if let Some(id) = endpoint_id(key) {
                self.local_endpoint(id, local, dirty);
            }
        }
        touched
    }

    /// The ids of the policies that apply to `ep`, in order.
    pub(super) fn list_for(&self, ep: &Endpoint) -> Vec<PolicyId> {
        let keyed = self.policy_by_pair.candidates(&ep.labels);
        let mut found: Vec<(&Rank, &PolicyId)> = keyed
            .chain(self.policy_by_pair.unkeyed())
            .filter_map(|id| {
                let (rank, p) = self.policies.get(id)?;
                p.applies_to.matches(&ep.labels).then_some((rank, id))
            })
            .collect();
        found.sort();
        found.dedup();
        found.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// Files `p` under the `key == value` pairs its selector requires (or
    /// as unkeyed), so endpoints find the policies they may match.
    pub(super) fn index_policy(&mut self, p: &Policy, add: bool) {
        if add {
            self.policy_by_pair.insert(&p.applies_to, p.id.clone());
        } else {
            self.policy_by_pair.remove(&p.applies_to, &p.id);
        }
        let in_tier = self.policy_by_tier.entry(p.tier.clone()).or_default();
        if add {
            in_tier.insert(p.id.clone());
        } else {
            in_tier.remove(&p.id);
            if in_tier.is_empty() {
                self.policy_by_tier.remove(&p.tier);
            }
        }
    }

    /// Puts `ep` (or nothing) in the cluster's list of local endpoints under
    /// `id`, marking the part it changes.
    fn local_endpoint(&mut self, id: EndpointId, ep: Option<Endpoint>, dirty: &mut Dirty) {
        let eps = &self.cluster.endpoints;
        let at = eps.binary_search_by(|e| e.id.cmp(&id));
        let old = at.ok().map(|i| &eps[i]);
        if old == ep.as_ref() {
            return;
        }
        match &ep {
            Some(e) => {
                let list = self.list_for(e);
                self.lists.insert(id.clone(), list);
            }
            None => {
                self.lists.remove(&id);
            }
        }
        if let Ok(i) = at {
            file_endpoint(&mut self.eps_by_pair, &self.cluster.endpoints[i], false);
        }
        if let Some(e) = &ep {
            file_endpoint(&mut self.eps_by_pair, e, true);
        }
        let eps = &mut self.cluster.endpoints;
        let host = matches!(id, EndpointId::Host { .. });
        match (at, ep) {
            (Ok(i), Some(e)) => eps[i] = e,
            (Ok(i), None) => {
                eps.remove(i);
            }
            (Err(i), Some(e)) => eps.insert(i, e),
            (Err(_), None) => return,
        }
        if host {
            dirty.base = true;
        } else {
            dirty.workloads.insert(id);
        }
    }

    /// The positions in `cluster.endpoints` of the local endpoints that
    /// `policies` may select: those carrying the pair each one's selector
    /// requires (every endpoint for a selector requiring none).
    fn endpoints_for(&self, policies: [Option<&Policy>; 2]) -> Vec<usize> {
        let eps = &self.cluster.endpoints;
        let mut ids: BTreeSet<&EndpointId> = BTreeSet::new();
        for p in policies.into_iter().flatten() {
            let pairs = required_pairs(&p.applies_to);
            if pairs.is_empty() {
                return (0..eps.len()).collect();
            }
            // Every match carries every pair: the fewest holders suffice.
            let holders = pairs.iter().map(|(k, v)| {
                let pair = Sym::lookup(k).zip(Sym::lookup(v));
                pair.and_then(|pair| self.eps_by_pair.get(&pair))
            });
            let fewest = holders.min_by_key(|h| h.map_or(0, BTreeSet::len));
            ids.extend(fewest.flatten().into_iter().flatten());
        }
        ids.into_iter()
            .filter_map(|id| eps.binary_search_by(|e| e.id.cmp(id)).ok())
            .collect()
    }

    /// Where a policy of `rank` is (or would go) in `cluster.policies`.
    pub(super) fn rank_position(&self, rank: &Rank) -> usize {
        self.cluster
            .policies
            .partition_point(|q| match self.policies.get(&q.id) {
                Some((held, _)) => held < rank,
                None => self.tier_places.rank(q) < *rank,
            })
    }

    /// A policy changed from `old` to `new` (either may be absent).
    pub(super) fn replace_policy(
        &mut self,
        old: Option<Arc<Policy>>,
        new: Option<Policy>,
        dirty: &mut Dirty,
    ) {
        let new = new.map(Arc::new);
        let Some(id) = old.as_ref().or(new.as_ref()).map(|p| p.id.clone()) else {
            return;
        };
        let rank = new.as_ref().map(|p| self.tier_places.rank(p));
        // A policy keeping its rank keeps its place in `cluster.policies`.
        let mut kept = None;
        if let Some((was, p)) = self.policies.remove(&id) {
            self.index_policy(&p, false);
            let at = self.rank_position(&was);
            if self.cluster.policies.get(at).is_some_and(|p| p.id == id) {
                if rank.as_ref() == Some(&was) {
                    kept = Some(at);
                } else {
                    self.cluster.policies.remove(at);
                }
            }
        }
        if let (Some(p), Some(rank)) = (&new, &rank) {
            match kept {
                Some(at) => self.cluster.policies[at] = p.clone(),
                None => {
                    let at = self.rank_position(rank);
                    self.cluster.policies.insert(at, p.clone());
                }
            }
            self.policies.insert(id.clone(), (rank.clone(), p.clone()));
            self.index_policy(p, true);
        }
        // The same selector and placement: no endpoint's list changes.
        let same_place = match (&old, &new) {
            (Some(o), Some(n)) => o.applies_to == n.applies_to && placement(o) == placement(n),
            _ => false,
        };
        let eps = if same_place {
            Vec::new()
        } else {
            self.endpoints_for([old.as_deref(), new.as_deref()])
        };
        for i in eps {
            let ep = &self.cluster.endpoints[i];
            let was = old
                .as_ref()
                .filter(|p| p.applies_to.matches(&ep.labels))
                .map(|p| placement(p));
            let now = new
                .as_ref()
                .filter(|p| p.applies_to.matches(&ep.labels))
                .map(|p| placement(p));
            if was != now {
                let list = self.lists.entry(ep.id.clone()).or_default();
                list.retain(|p| p != &id);
                if let (Some(_), Some(rank)) = (&now, &rank) {
                    let at = list.partition_point(|p| &self.policies[p].0 < rank);
                    list.insert(at, id.clone());
                }
                match &ep.id {
                    EndpointId::Host { .. } => dirty.base = true,
                    id => {
                        dirty.workloads.insert(id.clone());
                    }
                }
            }
        }
        if old.as_ref().map(|p| &p.spec) != new.as_ref().map(|p| &p.spec) {
            dirty.leaves.extend(self.leaves_in_use(&LeafOf::Policy(id)));
        }
    }
}
