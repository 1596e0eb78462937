//! The incremental engine: per-object updates in, the node's ruleset and
//! what changed in it out, with work in proportion to the change.
//!
//! The ruleset is the union of parts (`compile::Part`): the base (host
//! endpoints, dispatch, base chains), one part per local workload, and one
//! leaf per policy or profile chain in use. Each part's objects are
//! reference-counted, so re-rendering a part adds and removes only what
//! changed. Selector and named-port sets are filled from `members`: a pod
//! or network set coming, going or changing touches only the sets whose
//! selector can match it (found through a required `key == value`), and
//! each set's counted members yield exact element deltas.
//!
//! What each update touches:
//! - pods, workload and host endpoints, network sets: their set
//!   memberships; a local endpoint also re-renders its own part (a host
//!   endpoint: the base);
//! - policies: the local endpoints whose ordered policy list changes, and
//!   the policy's own chains when they are in use; nothing when it selects
//!   no local endpoint and is not in use;
//! - namespaces and service accounts: their implicit profile, the members
//!   in that namespace, and the local endpoints among them;
//! - tiers: the local endpoints that walk the tier (`tiers`);
//! - explicit profiles, FelixConfiguration, staged policies: a rebuild;
//! - with staged policies present, every batch that re-renders a part or
//!   changes a policy also re-renders the staged part whole.
//!
//! A rebuild and `compile::compile` give the same ruleset; the tests check
//! every incremental step against a full compile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::ir::{Chain, Change, ElementDelta, LogEntry, Ruleset, Set, SetSource};
use super::members::{
    AddressCounts, Member, MemberIndex, PairIndex, PortCounts, required_pair, required_sym_pair,
};
use super::{Leaf, LeafOf, Part, render_part};
use crate::calc::labels::{Sym, SymMap};
use crate::calc::{Cluster, Endpoint, EndpointId, Policy, PolicyId, PolicyKind, Settings};
use crate::model::{Resource, ResourceKey, ResourceKind, Update};

#[cfg(test)]
mod model_tests;
mod parts;
mod rank;
mod services;
mod store;
mod tiers;
mod update;

/// How an update was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    /// Only set members changed: this many sets were updated in place.
    Sets(usize),
    /// Parts of the ruleset were re-rendered (this many).
    Parts(usize),
    /// The ruleset was rebuilt from scratch.
    Full,
}

type Adjust = Box<dyn Fn(&mut Settings) + Send>;

/// What the node itself contributes besides the resources.
#[derive(Debug, Clone, Default)]
pub struct NodeContext {
    /// The node's interfaces and their addresses.
    pub host_interfaces: BTreeMap<String, Vec<IpAddr>>,
    /// `FELIX_*` environment parameters ([`crate::calc::felix_env`]).
    pub felix_env: Option<crate::model::types::FelixConfigurationSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    Base,
    Workload(EndpointId),
    Leaf(Leaf),
    /// Every staged chain and map (`compile::staged`), re-rendered whole.
    Staged,
}

/// One reference-counted object of the ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Obj {
    Chain(String),
    Set(String),
    Log(String),
    Map(String),
    Entry(String, String),
    Leaf(Leaf),
}

/// A set's members, counted.
#[derive(Debug, Clone)]
enum Counts {
    Addresses(AddressCounts),
    Ports(PortCounts),
}

/// A set whose last user went away during this batch (restored as it was
/// if a part takes it up again).
struct Buried {
    set: Set,
    source: Option<SetSource>,
    counts: Option<Counts>,
}

/// Keeps a node's ruleset in step with a changing set of resources.
pub struct Incremental {
    node: String,
    adjust: Adjust,
    resources: store::Store,
    /// Policies, profiles, tiers, settings, and this node's endpoints.
    cluster: Cluster,
    ruleset: Ruleset,
    host_interfaces: BTreeMap<String, Vec<IpAddr>>,
    felix_env: Option<crate::model::types::FelixConfigurationSpec>,
    /// Ruleset changes not yet taken by the kernel side.
    pending: Change,
    members: MemberIndex,
    counts: HashMap<String, Counts>,
    /// Selector sets by the `key == value` pairs their selector requires.
    sets_by_pair: PairIndex<String>,
    /// Selector sets by each label key their selector reads (other than
    /// that of their required pair), with that pair.
    sets_by_key: SymMap<KeyAndPair, BTreeSet<String>>,
    /// Service sets by the Service they hold (filled from EndpointSlices).
    sets_by_service: HashMap<crate::calc::ServiceKey, BTreeSet<String>>,
    /// Every policy by id, with its place in evaluation order.
    policies: crate::intern::FxMap<PolicyId, (Rank, Arc<Policy>)>,
    /// Policies by the `key == value` pairs their selector requires.
    policy_by_pair: PairIndex<PolicyId>,
    /// Local endpoints by each of their labels.
    eps_by_pair: SymMap<(Sym, Sym), BTreeSet<EndpointId>>,
    /// Policies by tier.
    policy_by_tier: HashMap<String, BTreeSet<PolicyId>>,
    /// Each tier's order, as the ranks of its policies read it.
    tier_places: TierPlaces,
    /// The policies that apply to each local endpoint, in order.
    lists: HashMap<EndpointId, Vec<PolicyId>>,
    owned: HashMap<Owner, Vec<Obj>>,
    refs: HashMap<Obj, u32>,
    /// During a rebuild, set members come from the whole cluster snapshot
    /// (shared with the thread building the member index meanwhile).
    snapshot: Option<Arc<Cluster>>,
    buried: HashMap<String, Buried>,
    maps_to_check: BTreeSet<String>,
}

/// A label key, and the required pair of the sets indexed under it.
type KeyAndPair = (Sym, Option<(Sym, Sym)>);

use rank::{Rank, TierPlaces};

/// What one batch must re-render.
#[derive(Default)]
struct Dirty {
    base: bool,
    workloads: BTreeSet<EndpointId>,
    leaves: BTreeSet<Leaf>,
    staged: bool,
}

impl Incremental {
    /// Compiles `resources` for `node`; `adjust` changes the settings taken
    /// from FelixConfiguration (e.g. the log backend chosen on the command line).
    pub fn new(
        resources: Vec<Resource>,
        node: &str,
        adjust: impl Fn(&mut Settings) + Send + 'static,
    ) -> Incremental {
        Self::with_context(resources, node, NodeContext::default(), adjust)
    }

    /// As [`Incremental::new`], knowing the node's context from the start.
    pub fn with_context(
        resources: Vec<Resource>,
        node: &str,
        context: NodeContext,
        adjust: impl Fn(&mut Settings) + Send + 'static,
    ) -> Incremental {
        let mut engine = Incremental {
            node: node.to_string(),
            adjust: Box::new(adjust),
            resources: store::Store::of(resources),
            cluster: Cluster::default(),
            ruleset: Ruleset::default(),
            host_interfaces: context.host_interfaces,
            felix_env: context.felix_env,
            pending: Change::default(),
            members: MemberIndex::default(),
            counts: HashMap::new(),
            sets_by_pair: PairIndex::default(),
            sets_by_key: SymMap::default(),
            sets_by_service: HashMap::new(),
            policies: Default::default(),
            policy_by_pair: PairIndex::default(),
            eps_by_pair: SymMap::default(),
            policy_by_tier: HashMap::new(),
            tier_places: TierPlaces::default(),
            lists: HashMap::new(),
            owned: HashMap::new(),
            refs: HashMap::new(),
            snapshot: None,
            buried: HashMap::new(),
            maps_to_check: BTreeSet::new(),
        };
        engine.rebuild();
        engine
    }

    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    /// Policies, profiles, tiers, settings and this node's endpoints as they
    /// are now (notes as of the last rebuild).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    #[cfg(test)]
    fn debug_set(&self, name: &str) -> String {
        match self.counts.get(name) {
            Some(Counts::Addresses(c)) => c.debug(),
            other => format!("{other:?}"),
        }
    }

    /// How many distinct policies apply to this node's endpoints.
    pub fn local_policy_count(&self) -> usize {
        let ids: std::collections::HashSet<&PolicyId> = self.lists.values().flatten().collect();
        ids.len()
    }

    /// What changed in the ruleset since the last call (for the kernel side).
    pub fn take_change(&mut self) -> Change {
        std::mem::take(&mut self.pending)
    }

    // ------------------------------------------------------------------
    // Rebuild

    fn rebuild(&mut self) {
        let mut cluster =
            Cluster::build_from(self.resources.inputs(), &self.node, self.felix_env.as_ref());
        (self.adjust)(&mut cluster.settings);
        cluster.host_interfaces = self.host_interfaces.clone();
        self.ruleset = Ruleset::default();
        self.counts.clear();
        self.sets_by_pair.clear();
        self.sets_by_key.clear();
        self.sets_by_service.clear();
        self.owned.clear();
        self.refs.clear();
        self.cluster = cluster.local_view(&self.node);
        self.tier_places = TierPlaces::of(&self.cluster);
        self.policies = self
            .cluster
            .policies
            .iter()
            .map(|p| (p.id.clone(), (self.tier_places.rank(p), p.clone())))
            .collect();
        self.policy_by_pair.clear();
        self.policy_by_tier.clear();
        for p in std::mem::take(&mut self.cluster.policies) {
            self.index_policy(&p, true);
            self.cluster.policies.push(p);
        }
        self.lists = self
            .cluster
            .endpoints
            .iter()
            .map(|e| (e.id.clone(), self.list_for(e)))
            .collect();
        self.eps_by_pair.clear();
        for ep in &self.cluster.endpoints {
            update::file_endpoint(&mut self.eps_by_pair, ep, true);
        }
        let mut dirty = Dirty {
            base: true,
            staged: true,
            ..Dirty::default()
        };
        dirty.workloads = self.local_workloads().collect();
        self.members = self.render_and_index(cluster, dirty);
        self.pending.merge(Change::everything());
    }

    /// Renders `dirty` from the whole `snapshot` and returns the member
    /// index of it. Both read the snapshot and neither needs the other, so
    /// the index is built on a second thread meanwhile; the store is lent
    /// to it (a render during a rebuild reads the snapshot, not the store).
    fn render_and_index(&mut self, snapshot: Cluster, dirty: Dirty) -> MemberIndex {
        let snapshot = Arc::new(snapshot);
        self.snapshot = Some(snapshot.clone());
        let store = std::mem::take(&mut self.resources);
        let (members, ()) =
            crate::par::join(|| members_of(&store, &snapshot), || self.render(dirty));
        self.resources = store;
        self.snapshot = None;
        members
    }

    fn local_workloads(&self) -> impl Iterator<Item = EndpointId> + '_ {
        self.cluster
            .endpoints
            .iter()
            .filter(|e| matches!(e.id, EndpointId::Workload { .. }) && e.iface.is_some())
            .map(|e| e.id.clone())
    }

    // ------------------------------------------------------------------
    // Updates

    /// Brings the ruleset in step with `resources` (the complete new state):
    /// the differences from what the engine holds, as updates.
    pub fn update(&mut self, resources: Vec<Resource>) -> Outcome {
        let mut new: BTreeMap<ResourceKey, Resource> =
            resources.into_iter().map(|r| (r.key(), r)).collect();
        let mut updates: Vec<Update> = self
            .resources
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .map(Update::delete)
            .collect();
        while let Some((k, r)) = new.pop_first() {
            if !self.resources.holds(&k, Some(&r)) {
                updates.push(Update {
                    key: k,
                    value: Some(r),
                });
            }
        }
        self.apply(updates)
    }

    /// Applies per-object updates from a datastore.
    pub fn apply(&mut self, updates: Vec<Update>) -> Outcome {
        let updates: Vec<Update> = last_of_each_key(updates)
            .into_iter()
            .filter(|u| !self.resources.holds(&u.key, u.value.as_ref()))
            .collect();
        if updates.is_empty() {
            return Outcome::Unchanged;
        }
        if updates
            .iter()
            .any(|u| needs_rebuild(u.key.kind) || self.tier_rebuilds(u))
        {
            for u in updates {
                self.store(u);
            }
            self.rebuild();
            return Outcome::Full;
        }
        let mut dirty = Dirty::default();
        let mut touched = 0;
        let mut member_keys = BTreeSet::new();
        let mut policies = Vec::new();
        let mut slices = Vec::new();
        let shadow_before = self.cluster.shadow_walks();
        let mut logged_namespaces = false;
        // Tiers first, so that the policies of this batch rank in them.
        let (tiers, updates): (Vec<Update>, Vec<Update>) = updates
            .into_iter()
            .partition(|u| u.key.kind == ResourceKind::Tier);
        let tier_changed = !tiers.is_empty();
        for u in tiers {
            self.tier_update(u, &mut dirty);
        }
        for u in updates {
            match u.key.kind {
                ResourceKind::EndpointSlice => {
                    let old = self.resources.resource(&u.key).and_then(services::slice_of);
                    let new = u.value.as_ref().and_then(services::slice_of);
                    slices.push((old, new));
                }
                ResourceKind::Namespace | ResourceKind::ServiceAccount => {
                    if u.key.kind == ResourceKind::Namespace {
                        logged_namespaces |= self.connection_log_namespace(&u);
                    }
                    touched += self.implicit_profile(&u, &mut dirty, &mut member_keys)
                }
                ResourceKind::NetworkPolicy
                | ResourceKind::GlobalNetworkPolicy
                | ResourceKind::K8sNetworkPolicy
                | ResourceKind::ClusterNetworkPolicy => {
                    let new = u.value.as_ref().and_then(|r| self.policy(r));
                    let old = self.held_policy(&u.key);
                    policies.push((old, new));
                }
                _ => {
                    member_keys.insert(u.key.clone());
                }
            }
            self.store(u);
        }
        touched += self.refresh_members(&member_keys, &mut dirty);
        touched += self.bump_services(slices);
        let policy_changed =
            tier_changed || policies.iter().any(|(o, n)| o.as_deref() != n.as_ref());
        for (old, new) in policies {
            self.replace_policy(old, new, &mut dirty);
        }
        // The staged part depends on every local endpoint and policy: it is
        // rendered again whenever anything but set members changed.
        let shadow = self.cluster.shadow_walks();
        // The dispatch consults the shadow maps only while they may be used.
        dirty.base |= shadow != shadow_before;
        let rendered = dirty.base || !dirty.workloads.is_empty() || !dirty.leaves.is_empty();
        dirty.staged =
            (shadow || shadow_before) && (rendered || policy_changed || logged_namespaces);
        let parts = usize::from(dirty.base)
            + dirty.workloads.len()
            + dirty.leaves.len()
            + usize::from(dirty.staged);
        self.render(dirty);
        if parts > 0 {
            Outcome::Parts(parts)
        } else if touched > 0 {
            Outcome::Sets(touched)
        } else {
            Outcome::Unchanged
        }
    }

    /// A namespace's connection-logs annotation, kept in the cluster;
    /// whether it changed.
    fn connection_log_namespace(&mut self, u: &Update) -> bool {
        let on = u
            .value
            .as_ref()
            .is_some_and(|r| crate::calc::connection_logs_annotated(r.meta()));
        let set = &mut self.cluster.connection_log_namespaces;
        if on {
            set.insert(u.key.name.clone())
        } else {
            set.remove(&u.key.name)
        }
    }

    fn store(&mut self, u: Update) {
        self.resources.put(u.key, u.value);
    }

    /// The policy a resource stands for (none when its tier is missing).
    fn policy(&self, r: &Resource) -> Option<Policy> {
        self.cluster.policy_of(r).and_then(Result::ok)
    }

    /// The policy in force for the resource at `key`: the one the engine
    /// holds under the key's id, so neither an edit nor a delete parses the
    /// old resource again (a policy whose tier is missing is not held, as
    /// it is not in force).
    fn held_policy(&self, key: &ResourceKey) -> Option<Arc<Policy>> {
        let (_, p) = self.policies.get(&policy_id(key)?)?;
        Some(p.clone())
    }

    /// The node's interfaces changed (read by netlink): re-renders the base
    /// when host endpoint bindings may move.
    pub fn set_host_interfaces(&mut self, map: BTreeMap<String, Vec<IpAddr>>) -> Outcome {
        let before = self.binding_relevant(&self.host_interfaces);
        let after = self.binding_relevant(&map);
        self.host_interfaces = map.clone();
        self.cluster.host_interfaces = map;
        if before == after {
            return Outcome::Unchanged;
        }
        self.render(Dirty {
            base: true,
            ..Dirty::default()
        });
        Outcome::Parts(1)
    }

    /// The part of an interface map that can move a binding: interfaces
    /// holding an address that a local host endpoint with only expectedIPs
    /// expects. A pod's veth coming or going is not in it, so it costs nothing.
    fn binding_relevant(
        &self,
        map: &BTreeMap<String, Vec<IpAddr>>,
    ) -> BTreeMap<String, Vec<IpAddr>> {
        let wanted: Vec<IpAddr> = self
            .cluster
            .local_endpoints(&self.node)
            .filter(|e| matches!(e.id, EndpointId::Host { .. }) && e.iface.is_none())
            .flat_map(|e| e.addrs.iter().copied())
            .collect();
        map.iter()
            .filter_map(|(name, addrs)| {
                let held: Vec<IpAddr> = addrs
                    .iter()
                    .filter(|a| wanted.contains(a))
                    .copied()
                    .collect();
                (!held.is_empty()).then(|| (name.clone(), held))
            })
            .collect()
    }
}

/// The last update of each key, in batch order (a batch may delete a key
/// then put it again).
fn last_of_each_key(updates: Vec<Update>) -> Vec<Update> {
    if updates.len() < 2 {
        return updates;
    }
    let mut last: crate::intern::FxMap<&ResourceKey, usize> = Default::default();
    for (i, u) in updates.iter().enumerate() {
        last.insert(&u.key, i);
    }
    let keep: Vec<bool> = (updates.iter().enumerate())
        .map(|(i, u)| last[&u.key] == i)
        .collect();
    (updates.into_iter().zip(keep))
        .filter_map(|(u, keep)| keep.then_some(u))
        .collect()
}

/// The id of the policy a policy resource's key stands for, as
/// `Cluster::policy_of` makes it.
fn policy_id(key: &ResourceKey) -> Option<PolicyId> {
    let kind = match key.kind {
        ResourceKind::NetworkPolicy => PolicyKind::Np,
        ResourceKind::K8sNetworkPolicy => PolicyKind::Knp,
        ResourceKind::GlobalNetworkPolicy => PolicyKind::Gnp,
        ResourceKind::ClusterNetworkPolicy => PolicyKind::Kcnp,
        _ => return None,
    };
    Some(PolicyId::new(kind, key.namespace.as_deref(), &key.name))
}

/// Kinds whose change re-renders everything (rare, and they reach every
/// part; a staged policy also turns the staged dispatch on or off).
fn needs_rebuild(kind: ResourceKind) -> bool {
    matches!(
        kind,
        ResourceKind::Profile | ResourceKind::FelixConfiguration
    ) || crate::model::staged::is_staged(kind)
}

/// What a pod, endpoint or network set contributes, as the full compile
/// would see it.
fn member_of(cluster: &Cluster, r: &Resource) -> Option<Member> {
    match r {
        Resource::NetworkSet(o) => Some(Member::of_set(&cluster.network_set_of(
            true,
            &o.metadata,
            &o.spec,
        ))),
        Resource::GlobalNetworkSet(o) => Some(Member::of_set(&cluster.network_set_of(
            false,
            &o.metadata,
            &o.spec,
        ))),
        other => cluster.endpoint_of(other).map(|e| Member::of_endpoint(&e)),
    }
}

/// The member index of a full snapshot (its endpoints and network sets),
/// each key held as the store's copy.
fn members_of(store: &store::Store, snapshot: &Cluster) -> MemberIndex {
    let mut members =
        MemberIndex::with_capacity(snapshot.endpoints.len() + snapshot.network_sets.len());
    // Most clusters have no WorkloadEndpoint: then no lookup per pod.
    let weps = store.has_kind(ResourceKind::WorkloadEndpoint);
    for ep in &snapshot.endpoints {
        let key = match &ep.id {
            EndpointId::Workload { namespace, name } => {
                let key = |kind| ResourceKey {
                    kind,
                    namespace: Some(namespace.clone()),
                    name: name.clone(),
                };
                // A workload endpoint sorts before a pod of the same
                // name (resource order, stable sort): it comes first.
                let wep = key(ResourceKind::WorkloadEndpoint);
                if weps && store.contains_key(&wep) && members.get(&wep).is_none() {
                    wep
                } else {
                    key(ResourceKind::Pod)
                }
            }
            EndpointId::Host { name } => ResourceKey {
                kind: ResourceKind::HostEndpoint,
                namespace: None,
                name: name.clone(),
            },
        };
        let shared = store.shared(&key);
        members.set_shared(shared, &key, Some(Member::of_endpoint(ep)));
    }
    for s in &snapshot.network_sets {
        let key = ResourceKey {
            kind: if s.namespace.is_some() {
                ResourceKind::NetworkSet
            } else {
                ResourceKind::GlobalNetworkSet
            },
            namespace: s.namespace.clone(),
            name: s.name.clone(),
        };
        let shared = store.shared(&key);
        members.set_shared(shared, &key, Some(Member::of_set(s)));
    }
    members.shrink_to_fit();
    members
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::synth::{LOCAL_NODE, Size, generate, pod_ip};

    /// A small deterministic pseudo-random sequence.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % n.max(1)
        }
    }

    fn full(resources: &[Resource]) -> Ruleset {
        compile(&Cluster::build(resources, LOCAL_NODE), LOCAL_NODE)
    }

    /// The resources of a YAML text, which must load without errors.
    fn loaded(y: &str) -> Vec<Resource> {
        let r = crate::model::load::load_str(y, std::path::Path::new("t.yaml"));
        let errors: Vec<_> = r.errors().collect();
        assert!(errors.is_empty(), "{errors:?}");
        r.resources.into_iter().map(|l| l.resource).collect()
    }

    /// Of a batch's updates, only each key's last stays, in batch order:
    /// a delete then a put of one key is a put, a put then a delete is a
    /// delete.
    #[test]
    fn a_batch_keeps_the_last_update_of_each_key_in_order() {
        let y = "\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: a}
spec: {selector: all()}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: b}
spec: {selector: all()}
";
        let [a, b]: [Resource; 2] = loaded(y).try_into().expect("two resources");
        let batch = vec![
            Update::delete(a.key()),
            Update::put(b.clone()),
            Update::put(a.clone()),
            Update::delete(b.key()),
        ];
        let kept = last_of_each_key(batch);
        let seen: Vec<(ResourceKey, bool)> = (kept.iter())
            .map(|u| (u.key.clone(), u.value.is_some()))
            .collect();
        assert_eq!(seen, vec![(a.key(), true), (b.key(), false)]);
    }

    /// A policy resource's key names the id `Cluster::policy_of` gives the
    /// policy, for every policy kind (so a delete finds the held policy).
    #[test]
    fn policy_keys_name_the_ids_of_their_policies() {
        let y = "\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: np, namespace: shop}
spec: {selector: all()}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: bare}
spec: {selector: all()}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: gnp}
spec: {selector: all()}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: knp, namespace: shop}
spec: {podSelector: {}}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: cnp}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
";
        let resources = loaded(y);
        assert_eq!(resources.len(), 5);
        let cluster = Cluster::build(&resources, "n1");
        for res in &resources {
            let made = cluster.policy_of(res).expect("a policy kind");
            assert_eq!(policy_id(&res.key()), Some(made.expect("valid").id));
        }
        let ns = loaded("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n");
        assert_eq!(policy_id(&ns[0].key()), None);
    }

    #[test]
    fn interface_changes_rebind_expected_ips_host_endpoints() {
        let y = "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: by-ip}\nspec: {node: n1, expectedIPs: [198.18.9.1]}\n";
        let resources = loaded(y);
        let mut engine = Incremental::new(resources.clone(), "n1", |_| {});
        assert!(!engine.ruleset().chains.contains_key("filter-fh-eth3"));
        let ifaces: BTreeMap<String, Vec<IpAddr>> =
            [("eth3".to_string(), vec!["198.18.9.1".parse().unwrap()])].into();
        assert_eq!(
            engine.set_host_interfaces(ifaces.clone()),
            Outcome::Parts(1)
        );
        let mut c = Cluster::build(&resources, "n1");
        c.host_interfaces = ifaces.clone();
        assert_eq!(engine.ruleset(), &compile(&c, "n1"));
        assert!(engine.ruleset().chains.contains_key("filter-fh-eth3"));
        assert_eq!(
            engine.set_host_interfaces(ifaces.clone()),
            Outcome::Unchanged
        );
        // A pod's veth appearing cannot move a binding: no recompile.
        let mut with_veth = ifaces;
        with_veth.insert(
            "cali0123456789a".into(),
            vec!["169.254.1.1".parse().unwrap()],
        );
        assert_eq!(engine.set_host_interfaces(with_veth), Outcome::Unchanged);
        // The address moves away: unbound again.
        engine.set_host_interfaces(BTreeMap::new());
        assert!(!engine.ruleset().chains.contains_key("filter-fh-eth3"));
    }

    /// `change` names everything that differs from `before` to `after`, and
    /// its element deltas turn `before`'s sets into `after`'s.
    pub(super) fn check_change(before: &Ruleset, after: &Ruleset, change: &Change) {
        if change.full {
            return;
        }
        let mut sets = before.sets.clone();
        for (name, d) in &change.elements {
            let s = sets.get_mut(name).expect("delta of an existing set");
            for e in &d.removed {
                assert!(s.elements.remove(e), "{name}: removed {e} was not there");
            }
            for e in &d.added {
                assert!(s.elements.insert(e.clone()), "{name}: added {e} was there");
            }
        }
        for name in &change.sets {
            sets.remove(name);
            if let Some(s) = after.sets.get(name) {
                sets.insert(name.clone(), s.clone());
            }
        }
        assert_eq!(sets, after.sets, "element deltas reproduce the new sets");
        for (name, c) in &after.chains {
            if !change.chains.contains(name) {
                assert_eq!(before.chains.get(name), Some(c), "chain {name} unnamed");
            }
        }
        for name in before.chains.keys() {
            assert!(after.chains.contains_key(name) || change.chains.contains(name));
        }
        for (name, m) in &after.maps {
            if !change.maps.contains(name) {
                assert_eq!(before.maps.get(name), Some(m), "map {name} unnamed");
            }
        }
    }

    #[test]
    fn the_last_update_of_a_key_in_a_batch_wins() {
        let resources = generate(Size::S);
        let mut engine = Incremental::new(resources.clone(), LOCAL_NODE, |_| {});
        let gnp = resources
            .iter()
            .find(|r| matches!(r, Resource::GlobalNetworkPolicy(_)))
            .unwrap()
            .clone();
        let batch = vec![Update::delete(gnp.key()), Update::put(gnp.clone())];
        assert_eq!(engine.apply(batch), Outcome::Unchanged);
        assert_eq!(engine.ruleset(), &full(&resources));
        let batch = vec![Update::put(gnp.clone()), Update::delete(gnp.key())];
        engine.apply(batch);
        let without: Vec<Resource> = resources
            .into_iter()
            .filter(|r| r.key() != gnp.key())
            .collect();
        assert_eq!(engine.ruleset(), &full(&without));
    }

    #[test]
    fn incremental_updates_equal_full_compiles() {
        let mut resources = generate(Size::S);
        let mut engine = Incremental::new(resources.clone(), LOCAL_NODE, |_| {});
        assert_eq!(engine.ruleset(), &full(&resources));
        let mut rng = Lcg(7);
        let (mut fast, mut slow) = (0, 0);
        for step in 0..150 {
            let pods: Vec<usize> = resources
                .iter()
                .enumerate()
                .filter(|(_, r)| matches!(r, Resource::Pod(_)))
                .map(|(i, _)| i)
                .collect();
            let pick = pods[rng.next(pods.len())];
            match rng.next(9) {
                0 => {
                    if let Resource::Pod(p) = &mut resources[pick] {
                        p.metadata
                            .labels
                            .insert("app", format!("app-{}", rng.next(20)));
                    }
                }
                1 => {
                    if let Resource::Pod(p) = &mut resources[pick] {
                        p.status.pod_ip = Some(pod_ip(50_000 + rng.next(200)));
                    }
                }
                2 => {
                    if let Resource::Pod(p) = resources[pick].clone() {
                        let mut p = p;
                        p.metadata.name = Some(format!("extra-{step}"));
                        p.status.pod_ip = Some(pod_ip(60_000 + step));
                        resources.push(Resource::Pod(p));
                    }
                }
                3 => {
                    resources.remove(pick);
                }
                4 => {
                    if let Resource::Pod(p) = &mut resources[pick] {
                        p.spec.node_name = Some(format!("node-{}", 1 + rng.next(40)).into());
                    }
                }
                5 => {
                    if let Some(Resource::GlobalNetworkSet(s)) = resources
                        .iter_mut()
                        .find(|r| matches!(r, Resource::GlobalNetworkSet(_)))
                    {
                        s.spec.nets.push(format!("198.19.{}.0/24", rng.next(250)));
                    }
                }
                6 => {
                    // A pod with no address yet, then a finished one.
                    if let Resource::Pod(p) = &mut resources[pick] {
                        if rng.next(2) == 0 {
                            p.status.pod_ip = None;
                        } else {
                            p.status.phase = Some("Succeeded".into());
                        }
                    }
                }
                7 => {
                    // Occasionally something that needs a recompile.
                    if let Some(Resource::GlobalNetworkPolicy(g)) = resources
                        .iter_mut()
                        .find(|r| matches!(r, Resource::GlobalNetworkPolicy(_)))
                    {
                        g.spec.order = Some(rng.next(100) as f64);
                    }
                }
                _ => {
                    if let Resource::Pod(p) = &mut resources[pick] {
                        p.metadata
                            .labels
                            .insert("tier", ["web", "api", "db"][rng.next(3)]);
                    }
                }
            }
            let before = engine.ruleset().clone();
            engine.take_change();
            let outcome = engine.update(resources.clone());
            let change = engine.take_change();
            check_change(&before, engine.ruleset(), &change);
            match outcome {
                Outcome::Sets(_) => fast += 1,
                Outcome::Full | Outcome::Parts(_) => slow += 1,
                Outcome::Unchanged => {}
            }
            assert_eq!(
                engine.ruleset(),
                &full(&resources),
                "step {step} differs from a full compile"
            );
        }
        assert!(
            fast > 80,
            "most remote changes take the fast path ({fast} fast, {slow} full)"
        );
        assert!(slow > 5, "some changes recompile ({slow})");
    }
}
