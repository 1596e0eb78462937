//! Incremental recompilation. The common events at scale (pods on other
//! nodes appearing, disappearing, changing labels or addresses, and network
//! sets being edited) only change which addresses selector sets hold. For
//! those, each set keeps a count per member address, and an event adjusts
//! only the sets whose selector matches the entity's old or new labels: a
//! few selector evaluations instead of a full compile. Every other change
//! (policies, namespaces, tiers, profiles, configuration, host and local
//! endpoints) recompiles the node's ruleset. Either way the result is the
//! same as a full compile (tested on random event sequences).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::address_elements;
use super::compile;
use super::ir::{Change, Ruleset, SetSource};
use crate::calc::{Cluster, Endpoint, EndpointId, NetworkSet, Settings};
use crate::model::{Resource, ResourceKey, ResourceKind, Update};

/// What one pod or network set contributes to sets.
#[derive(Debug, Clone, PartialEq)]
struct Member {
    node: Option<String>,
    labels: BTreeMap<String, String>,
    nets: Vec<IpNet>,
    /// `(name, protocol number, port, address)` for endpoints.
    ports: Vec<(String, u8, u16, IpAddr)>,
}

fn member_of_endpoint(ep: &Endpoint) -> Member {
    Member {
        node: Some(ep.node.clone()),
        labels: ep.labels.clone(),
        nets: ep.addrs.iter().map(|a| IpNet::from(*a)).collect(),
        ports: ep
            .ports
            .iter()
            .flat_map(|p| {
                ep.addrs
                    .iter()
                    .map(move |a| (p.name.clone(), p.protocol.number(), p.port, *a))
            })
            .collect(),
    }
}

fn member_of_set(s: &NetworkSet) -> Member {
    Member {
        node: None,
        labels: s.labels.clone(),
        nets: s.nets.clone(),
        ports: Vec::new(),
    }
}

/// How an update was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    /// Only set members changed: this many sets were updated in place.
    Sets(usize),
    /// The ruleset was recompiled.
    Full,
}

type Adjust = Box<dyn Fn(&mut Settings) + Send>;

/// Keeps a node's ruleset in step with a changing set of resources.
pub struct Incremental {
    node: String,
    adjust: Adjust,
    resources: BTreeMap<ResourceKey, Resource>,
    /// The last full compile's snapshot, trimmed to what updates need: this
    /// node's endpoints, policies, profiles and settings.
    cluster: Cluster,
    ruleset: Ruleset,
    addr_counts: BTreeMap<String, BTreeMap<IpNet, u32>>,
    port_counts: BTreeMap<String, BTreeMap<(IpAddr, u8, u16), u32>>,
    /// The node's interfaces (host endpoints with only expectedIPs bind to
    /// the ones holding their addresses).
    host_interfaces: BTreeMap<String, Vec<IpAddr>>,
    /// FelixConfiguration parameters from `FELIX_*` variables (they win).
    felix_env: Option<crate::model::types::FelixConfigurationSpec>,
    /// Ruleset changes not yet taken by the kernel side.
    pending: Change,
}

/// What the node itself contributes besides the resources.
#[derive(Debug, Clone, Default)]
pub struct NodeContext {
    /// The node's interfaces and their addresses.
    pub host_interfaces: BTreeMap<String, Vec<IpAddr>>,
    /// `FELIX_*` environment parameters ([`crate::calc::felix_env`]).
    pub felix_env: Option<crate::model::types::FelixConfigurationSpec>,
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
            resources: BTreeMap::new(),
            cluster: Cluster::default(),
            ruleset: Ruleset::default(),
            addr_counts: BTreeMap::new(),
            port_counts: BTreeMap::new(),
            host_interfaces: context.host_interfaces,
            felix_env: context.felix_env,
            pending: Change::everything(),
        };
        engine.rebuild(resources.into_iter().map(|r| (r.key(), r)).collect());
        engine
    }

    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    /// The snapshot of the last full compile (set members may have moved on).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn rebuild(&mut self, resources: BTreeMap<ResourceKey, Resource>) {
        let list: Vec<Resource> = resources.values().cloned().collect();
        let mut cluster = Cluster::build_with_env(&list, &self.node, self.felix_env.as_ref());
        (self.adjust)(&mut cluster.settings);
        cluster.host_interfaces = self.host_interfaces.clone();
        self.ruleset = compile(&cluster, &self.node);
        // Counts from every endpoint and network set, through the index.
        self.addr_counts.clear();
        self.port_counts.clear();
        for (name, source) in &self.ruleset.set_sources {
            match source {
                SetSource::Selector { selector, .. } => {
                    let counts = self.addr_counts.entry(name.clone()).or_default();
                    for i in cluster.index.candidate_endpoints(selector) {
                        let ep = &cluster.endpoints[i];
                        if selector.matches(&ep.labels) {
                            for a in &ep.addrs {
                                *counts.entry(IpNet::from(*a)).or_default() += 1;
                            }
                        }
                    }
                    for i in cluster.index.candidate_sets(selector) {
                        let s = &cluster.network_sets[i];
                        if selector.matches(&s.labels) {
                            for n in &s.nets {
                                *counts.entry(*n).or_default() += 1;
                            }
                        }
                    }
                }
                SetSource::NamedPorts {
                    selector,
                    names,
                    protocol,
                    ..
                } => {
                    let counts = self.port_counts.entry(name.clone()).or_default();
                    for i in cluster.index.candidate_endpoints(selector) {
                        let ep = &cluster.endpoints[i];
                        if !selector.matches(&ep.labels) {
                            continue;
                        }
                        for p in ep.ports.iter().filter(|p| names.contains(&p.name)) {
                            if protocol
                                .is_some_and(|want| want.normalised() != p.protocol.normalised())
                            {
                                continue;
                            }
                            for a in &ep.addrs {
                                *counts.entry((*a, p.protocol.number(), p.port)).or_default() += 1;
                            }
                        }
                    }
                }
            }
        }
        // Remote endpoints and the label index are not needed any more: the
        // counts stand for them, and old contributions are re-derived from
        // the previous resource when it changes.
        let node = self.node.clone();
        cluster.endpoints.retain(|e| e.node == node);
        cluster.network_sets.clear();
        cluster.index = Default::default();
        self.cluster = cluster;
        self.resources = resources;
    }

    /// The node's interfaces changed (read by netlink): recompiles when host
    /// endpoint bindings may move, i.e. whenever the map differs.
    pub fn set_host_interfaces(&mut self, map: BTreeMap<String, Vec<IpAddr>>) -> Outcome {
        let before = self.binding_relevant(&self.host_interfaces);
        let after = self.binding_relevant(&map);
        self.host_interfaces = map;
        if before == after {
            return Outcome::Unchanged;
        }
        let resources = std::mem::take(&mut self.resources);
        self.rebuild(resources);
        self.pending.merge(Change::everything());
        Outcome::Full
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
            if self.resources.get(&k) != Some(&r) {
                updates.push(Update {
                    key: k,
                    value: Some(r),
                });
            }
        }
        self.apply(updates)
    }

    /// What changed in the ruleset since the last call (for the kernel side).
    pub fn take_change(&mut self) -> Change {
        std::mem::take(&mut self.pending)
    }

    /// Applies per-object updates from a datastore.
    pub fn apply(&mut self, updates: Vec<Update>) -> Outcome {
        let updates: Vec<Update> = updates
            .into_iter()
            .filter(|u| self.resources.get(&u.key) != u.value.as_ref())
            .collect();
        if updates.is_empty() {
            return Outcome::Unchanged;
        }
        let member_only = updates.iter().all(|u| {
            matches!(
                u.key.kind,
                ResourceKind::Pod | ResourceKind::NetworkSet | ResourceKind::GlobalNetworkSet
            )
        });
        let mut deltas = Vec::new();
        if member_only {
            for u in &updates {
                let old = self
                    .resources
                    .get(&u.key)
                    .and_then(|r| member_of(&self.cluster, r));
                let fresh = u.value.as_ref().and_then(|r| member_of(&self.cluster, r));
                let local = |m: &Option<Member>| {
                    m.as_ref()
                        .is_some_and(|m| m.node.as_deref() == Some(self.node.as_str()))
                };
                if local(&old) || local(&fresh) {
                    deltas.clear();
                    break;
                }
                deltas.push((old, fresh));
            }
        }
        for u in updates {
            match u.value {
                Some(r) => self.resources.insert(u.key, r),
                None => self.resources.remove(&u.key),
            };
        }
        if deltas.is_empty() {
            let resources = std::mem::take(&mut self.resources);
            self.rebuild(resources);
            self.pending.merge(Change::everything());
            return Outcome::Full;
        }
        let dirty = self.count_members(deltas);
        self.refill(&dirty);
        Outcome::Sets(dirty.len())
    }

    /// Moves the address and port counts by each `(old, new)` contribution;
    /// returns the sets touched.
    fn count_members(
        &mut self,
        deltas: Vec<(Option<Member>, Option<Member>)>,
    ) -> std::collections::BTreeSet<String> {
        let mut dirty = std::collections::BTreeSet::new();
        for (old, fresh) in deltas {
            for (m, step) in [(&old, -1i64), (&fresh, 1)] {
                let Some(m) = m else { continue };
                for (name, source) in &self.ruleset.set_sources {
                    match source {
                        SetSource::Selector { selector, .. } if selector.matches(&m.labels) => {
                            let counts = self.addr_counts.entry(name.clone()).or_default();
                            for n in &m.nets {
                                bump(counts, *n, step);
                            }
                            dirty.insert(name.clone());
                        }
                        SetSource::NamedPorts {
                            selector,
                            names,
                            protocol,
                            ..
                        } if selector.matches(&m.labels) => {
                            let counts = self.port_counts.entry(name.clone()).or_default();
                            for (pname, proto, port, addr) in &m.ports {
                                if !names.contains(pname)
                                    || protocol
                                        .is_some_and(|want| want.normalised().number() != *proto)
                                {
                                    continue;
                                }
                                bump(counts, (*addr, *proto, *port), step);
                            }
                            dirty.insert(name.clone());
                        }
                        _ => {}
                    }
                }
            }
        }
        dirty
    }

    /// Re-derives the elements of `dirty` sets from their counts and records
    /// the element changes.
    fn refill(&mut self, dirty: &std::collections::BTreeSet<String>) {
        for name in dirty {
            let elements = match &self.ruleset.set_sources[name] {
                SetSource::Selector { v6, .. } => {
                    address_elements(self.addr_counts[name].keys().copied(), *v6)
                }
                SetSource::NamedPorts { v6, .. } => self.port_counts[name]
                    .keys()
                    .filter(|(a, _, _)| a.is_ipv6() == *v6)
                    .map(|(a, p, port)| format!("{a} . {p} . {port}"))
                    .collect(),
            };
            let Some(set) = self.ruleset.sets.get_mut(name) else {
                continue;
            };
            let delta = self.pending.elements_of(name);
            for e in set.elements.difference(&elements) {
                delta.remove(e.clone());
            }
            for e in elements.difference(&set.elements) {
                delta.add(e.clone());
            }
            set.elements = elements;
        }
        self.pending.elements.retain(|_, d| !d.is_empty());
    }
}

fn bump<K: Ord>(counts: &mut BTreeMap<K, u32>, key: K, step: i64) {
    if step > 0 {
        *counts.entry(key).or_default() += 1;
    } else if let Some(c) = counts.get_mut(&key) {
        *c -= 1;
        if *c == 0 {
            counts.remove(&key);
        }
    }
}

/// What a pod or network set contributes, as the full compile would see it.
fn member_of(cluster: &Cluster, r: &Resource) -> Option<Member> {
    match r {
        Resource::Pod(p) => cluster.pod_endpoint(p).map(|e| member_of_endpoint(&e)),
        Resource::NetworkSet(o) => Some(member_of_set(&cluster.network_set_of(
            true,
            &o.metadata,
            &o.spec,
        ))),
        Resource::GlobalNetworkSet(o) => Some(member_of_set(&cluster.network_set_of(
            false,
            &o.metadata,
            &o.spec,
        ))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn interface_changes_rebind_expected_ips_host_endpoints() {
        let y = "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: by-ip}\nspec: {node: n1, expectedIPs: [198.18.9.1]}\n";
        let r = crate::model::load::load_str(y, std::path::Path::new("h.yaml"));
        let resources: Vec<Resource> = r.resources.into_iter().map(|l| l.resource).collect();
        let mut engine = Incremental::new(resources.clone(), "n1", |_| {});
        assert!(!engine.ruleset().chains.contains_key("filter-fh-eth3"));
        let ifaces: BTreeMap<String, Vec<IpAddr>> =
            [("eth3".to_string(), vec!["198.18.9.1".parse().unwrap()])].into();
        assert_eq!(engine.set_host_interfaces(ifaces.clone()), Outcome::Full);
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
    fn check_change(before: &Ruleset, after: &Ruleset, change: &Change) {
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
                            .insert("app".into(), format!("app-{}", rng.next(20)));
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
                        p.spec.node_name = Some(format!("node-{}", 1 + rng.next(40)));
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
                            .insert("tier".into(), ["web", "api", "db"][rng.next(3)].into());
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
                Outcome::Full => slow += 1,
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
