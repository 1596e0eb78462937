//! Installing and releasing the parts of the ruleset: reference counts per
//! object, set members counted as sets come into use, and the change record.

use super::*;
use crate::calc::labels::LabelMap;
use crate::compile::{Direction, Layer};
use ipnet::IpNet;

const LEAF_PLACES: [(Layer, Direction); 6] = [
    (Layer::Filter, Direction::Ingress),
    (Layer::Filter, Direction::Egress),
    (Layer::Mangle, Direction::Ingress),
    (Layer::Mangle, Direction::Egress),
    (Layer::Raw, Direction::Ingress),
    (Layer::Raw, Direction::Egress),
];

impl Incremental {
    /// Re-renders every dirty part, then settles leaves, sets and maps.
    pub(super) fn render(&mut self, dirty: Dirty) {
        let mut leaves = BTreeSet::new();
        if dirty.base {
            self.reinstall(Owner::Base, &mut leaves);
        }
        for id in dirty.workloads {
            self.reinstall(Owner::Workload(id), &mut leaves);
        }
        if dirty.staged {
            self.reinstall(Owner::Staged, &mut leaves);
        }
        for leaf in dirty.leaves {
            if self.refs.contains_key(&Obj::Leaf(leaf.clone())) {
                self.reinstall(Owner::Leaf(leaf), &mut leaves);
            }
        }
        // Leaves come into use or go out of it as their last user changes;
        // they use no leaves themselves.
        for leaf in leaves {
            let used = self.refs.contains_key(&Obj::Leaf(leaf.clone()));
            let owner = Owner::Leaf(leaf);
            if used != self.owned.contains_key(&owner) {
                self.reinstall(owner, &mut BTreeSet::new());
            }
        }
        self.settle();
    }

    /// The leaves of `of` that are in use.
    pub(super) fn leaves_in_use(&self, of: &LeafOf) -> Vec<Leaf> {
        LEAF_PLACES
            .iter()
            .map(|(layer, dir)| Leaf {
                layer: *layer,
                dir: *dir,
                of: of.clone(),
            })
            .filter(|l| self.refs.contains_key(&Obj::Leaf(l.clone())))
            .collect()
    }

    fn render_owner(&self, owner: &Owner) -> Option<super::super::Rendered> {
        let part = match owner {
            Owner::Base => Part::Base(
                self.cluster
                    .endpoints
                    .iter()
                    .filter(|e| matches!(e.id, EndpointId::Host { .. }))
                    .map(|e| {
                        let list = self.lists.get(&e.id).map(Vec::as_slice).unwrap_or_default();
                        let list = list.iter().map(|p| &*self.policies[p].1).collect();
                        (e.id.clone(), list)
                    })
                    .collect(),
            ),
            Owner::Workload(id) => {
                let eps = &self.cluster.endpoints;
                let at = eps.binary_search_by(|e| e.id.cmp(id)).ok()?;
                let ep = Some(&eps[at]).filter(|e| e.iface.is_some())?;
                let list = self.lists.get(id).map(Vec::as_slice).unwrap_or_default();
                Part::Workload(ep, list.iter().map(|p| &*self.policies[p].1).collect())
            }
            Owner::Staged if !self.cluster.shadow_walks() => return None,
            Owner::Staged => Part::Staged,
            Owner::Leaf(leaf) => {
                if !self.refs.contains_key(&Obj::Leaf(leaf.clone())) {
                    return None;
                }
                let policy = match &leaf.of {
                    LeafOf::Policy(id) => Some(&self.policies.get(id)?.1),
                    LeafOf::Profile(_) => None,
                };
                Part::Leaf(leaf, policy.map(|p| &**p))
            }
        };
        Some(render_part(&self.cluster, &self.node, part))
    }

    /// Renders `owner` again: its new objects are taken up before its old
    /// ones are released, so what it keeps is never removed.
    fn reinstall(&mut self, owner: Owner, leaves: &mut BTreeSet<Leaf>) {
        let old = self.owned.remove(&owner).unwrap_or_default();
        let mut objs = Vec::new();
        if let Some(r) = self.render_owner(&owner) {
            let rs = r.ruleset;
            for (name, chain) in rs.chains {
                self.take_chain(name, chain, &mut objs);
            }
            for (name, set) in rs.sets {
                let source = rs.set_sources.get(&name).cloned();
                self.take_set(name, set, source, &mut objs);
            }
            for (id, entry) in rs.log_index {
                self.take_log(id, entry, &mut objs);
            }
            for (name, map) in rs.maps {
                self.take(Obj::Map(name.clone()), &mut objs);
                self.ruleset
                    .maps
                    .entry(name.clone())
                    .or_insert_with(|| empty_map(&name));
                for (key, verdict) in map.elements {
                    self.take_entry(&name, key, verdict, &mut objs);
                }
            }
            for leaf in r.leaves {
                if self.take(Obj::Leaf(leaf.clone()), &mut objs) {
                    leaves.insert(leaf);
                }
            }
        }
        for o in old {
            if let Obj::Leaf(l) = &o {
                leaves.insert(l.clone());
            }
            self.release(o);
        }
        if !objs.is_empty() {
            self.owned.insert(owner, objs);
        }
    }

    /// One more reference to `o`; true when it is new.
    fn take(&mut self, o: Obj, objs: &mut Vec<Obj>) -> bool {
        let n = self.refs.entry(o.clone()).or_default();
        *n += 1;
        objs.push(o);
        *n == 1
    }

    fn take_chain(&mut self, name: String, chain: Chain, objs: &mut Vec<Obj>) {
        self.take(Obj::Chain(name.clone()), objs);
        if self.ruleset.chains.get(&name) != Some(&chain) {
            self.ruleset.chains.insert(name.clone(), chain);
            self.pending.chains.insert(name);
        }
    }

    fn take_log(&mut self, id: String, entry: LogEntry, objs: &mut Vec<Obj>) {
        self.take(Obj::Log(id.clone()), objs);
        self.ruleset.log_index.insert(id, entry);
    }

    fn take_entry(&mut self, map: &str, key: String, verdict: String, objs: &mut Vec<Obj>) {
        self.take(Obj::Entry(map.to_string(), key.clone()), objs);
        let m = self
            .ruleset
            .maps
            .entry(map.to_string())
            .or_insert_with(|| empty_map(map));
        if m.elements.get(&key) != Some(&verdict) {
            m.elements.insert(key, verdict);
            self.pending.maps.insert(map.to_string());
        }
    }

    fn take_set(&mut self, name: String, set: Set, source: Option<SetSource>, objs: &mut Vec<Obj>) {
        if !self.take(Obj::Set(name.clone()), objs) {
            return;
        }
        if let Some(b) = self.buried.remove(&name) {
            self.ruleset.sets.insert(name.clone(), b.set);
            if let Some(s) = b.source {
                self.index_set(&name, &s);
                self.ruleset.set_sources.insert(name.clone(), s);
            }
            if let Some(c) = b.counts {
                self.counts.insert(name, c);
            }
            return;
        }
        let mut set = set;
        if let Some(source) = source {
            let counts = self.count_members(&source);
            set.elements = match &counts {
                Counts::Addresses(c) => c.elements(),
                Counts::Ports(c) => c.elements(),
            };
            self.counts.insert(name.clone(), counts);
            self.index_set(&name, &source);
            self.ruleset.set_sources.insert(name.clone(), source);
        }
        self.ruleset.sets.insert(name.clone(), set);
        self.pending.elements.remove(&name);
        self.pending.sets.insert(name);
    }

    fn release(&mut self, o: Obj) {
        let Some(n) = self.refs.get_mut(&o) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        self.refs.remove(&o);
        match o {
            Obj::Chain(name) => {
                self.ruleset.chains.remove(&name);
                self.pending.chains.insert(name);
            }
            Obj::Set(name) => {
                if let Some(set) = self.ruleset.sets.remove(&name) {
                    let source = self.ruleset.set_sources.remove(&name);
                    if let Some(s) = &source {
                        self.unindex_set(&name, s);
                    }
                    let counts = self.counts.remove(&name);
                    self.buried.insert(
                        name,
                        Buried {
                            set,
                            source,
                            counts,
                        },
                    );
                }
            }
            Obj::Log(id) => {
                self.ruleset.log_index.remove(&id);
            }
            Obj::Map(name) => {
                self.maps_to_check.insert(name);
            }
            Obj::Entry(map, key) => {
                if let Some(m) = self.ruleset.maps.get_mut(&map) {
                    m.elements.remove(&key);
                }
                self.pending.maps.insert(map);
            }
            Obj::Leaf(_) => {}
        }
    }

    /// Ends a batch: sets no part took up again are gone, and so are maps
    /// nothing declares.
    fn settle(&mut self) {
        for (name, _) in std::mem::take(&mut self.buried) {
            self.pending.elements.remove(&name);
            self.pending.sets.insert(name);
        }
        for name in std::mem::take(&mut self.maps_to_check) {
            if !self.refs.contains_key(&Obj::Map(name.clone())) {
                self.ruleset.maps.remove(&name);
                self.pending.maps.insert(name);
            }
        }
        self.pending.elements.retain(|_, d| !d.is_empty());
    }

    // ------------------------------------------------------------------
    // Set members

    fn index_set(&mut self, name: &str, source: &SetSource) {
        let Some(sel) = source_selector(source) else {
            self.index_service_set(name, source, true);
            return;
        };
        let pair = required_sym_pair(sel);
        for k in unpaired_keys(sel) {
            let key = (Sym::new(&k), pair);
            self.sets_by_key
                .entry(key)
                .or_default()
                .insert(name.to_string());
        }
        self.sets_by_pair.insert(sel, name.to_string());
    }

    fn unindex_set(&mut self, name: &str, source: &SetSource) {
        let Some(sel) = source_selector(source) else {
            self.index_service_set(name, source, false);
            return;
        };
        let pair = required_sym_pair(sel);
        for k in unpaired_keys(sel) {
            let Some(k) = Sym::lookup(&k) else { continue };
            let key = (k, pair);
            if let Some(s) = self.sets_by_key.get_mut(&key) {
                s.remove(name);
                if s.is_empty() {
                    self.sets_by_key.remove(&key);
                }
            }
        }
        self.sets_by_pair.remove(sel, name);
    }

    /// The members of a new set, counted: from the whole snapshot's label
    /// index during a rebuild, from the member index afterwards.
    fn count_members(&self, source: &SetSource) -> Counts {
        let Some(selector) = source_selector(source) else {
            return self.count_service(source);
        };
        let mut counts = match source {
            SetSource::NamedPorts { v6, .. } => Counts::Ports(PortCounts::new(*v6)),
            SetSource::Selector { v6, .. } | SetSource::Service { v6, .. } => {
                Counts::Addresses(AddressCounts::new(*v6))
            }
        };
        let mut add = |nets: &[IpNet], ports: &mut dyn Iterator<Item = (IpAddr, u8, u16)>| {
            let mut scratch = ElementDelta::default();
            match &mut counts {
                Counts::Addresses(c) => c.fill(nets.iter().copied()),
                Counts::Ports(c) => {
                    for key in ports {
                        c.bump(key, 1, &mut scratch);
                    }
                }
            }
        };
        match &self.snapshot {
            Some(c) => {
                for i in c.index.candidate_endpoints(selector) {
                    let e = &c.endpoints[i];
                    if selector.matches(&e.labels) {
                        let nets: Vec<IpNet> = e.addrs.iter().map(|a| IpNet::from(*a)).collect();
                        add(&nets, &mut endpoint_ports(source, e).into_iter());
                    }
                }
                for i in c.index.candidate_sets(selector) {
                    let s = &c.network_sets[i];
                    if selector.matches(&s.labels) {
                        add(&s.nets, &mut std::iter::empty());
                    }
                }
            }
            None => {
                for m in self.members.matching(selector) {
                    add(&m.nets, &mut named_ports(source, m).into_iter());
                }
            }
        }
        if let Counts::Addresses(c) = &mut counts {
            c.settle();
        }
        counts
    }

    /// Moves the counts of every set `old` or `new` can be in; returns how
    /// many sets changed.
    pub(super) fn bump_members(&mut self, old: Option<&Member>, new: Option<&Member>) -> usize {
        let names = self.candidate_sets(old, new);
        let mut touched = 0;
        for name in names {
            let Some(source) = self.ruleset.set_sources.get(&name) else {
                continue;
            };
            let Some(sel) = source_selector(source) else {
                continue;
            };
            let o = old.filter(|m| sel.matches(&m.labels));
            let n = new.filter(|m| sel.matches(&m.labels));
            let mut delta = ElementDelta::default();
            match (source, self.counts.get_mut(&name)) {
                (SetSource::Selector { .. }, Some(Counts::Addresses(c))) => {
                    if o.map(|m| &m.nets) == n.map(|m| &m.nets) {
                        continue;
                    }
                    for net in o.iter().flat_map(|m| m.nets.iter()) {
                        c.bump(*net, -1, &mut delta);
                    }
                    for net in n.iter().flat_map(|m| m.nets.iter()) {
                        c.bump(*net, 1, &mut delta);
                    }
                }
                (SetSource::NamedPorts { .. }, Some(Counts::Ports(c))) => {
                    let before: Vec<_> = o.map(|m| named_ports(source, m)).unwrap_or_default();
                    let after: Vec<_> = n.map(|m| named_ports(source, m)).unwrap_or_default();
                    if before == after {
                        continue;
                    }
                    for key in before {
                        c.bump(key, -1, &mut delta);
                    }
                    for key in after {
                        c.bump(key, 1, &mut delta);
                    }
                }
                _ => continue,
            }
            if !delta.is_empty() {
                touched += 1;
                self.record_elements(&name, delta);
            }
        }
        touched
    }

    /// The sets `old` → `new` can move: for a relabel (same addresses and
    /// ports), those whose selector reads a changed key; otherwise those
    /// keyed by one of their pairs, and the unkeyed ones.
    fn candidate_sets(&self, old: Option<&Member>, new: Option<&Member>) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        if let (Some(o), Some(n)) = (old, new)
            && o.nets == n.nets
            && o.ports == n.ports
        {
            let pairs = union_of(&o.labels, &n.labels);
            for k in changed_keys(&o.labels, &n.labels) {
                // A set keyed by this key moves only for its old or new
                // value; a set reading it and keyed by another pair, only
                // for a member that has that pair.
                for v in [o.labels.get_sym(k.as_str()), n.labels.get_sym(k.as_str())]
                    .into_iter()
                    .flatten()
                {
                    names.extend(self.sets_by_pair.under((k, v)).cloned());
                }
                let reading = pairs
                    .iter()
                    .filter_map(|p| self.sets_by_key.get(&(k, Some(*p))));
                let unkeyed = self.sets_by_key.get(&(k, None));
                for s in unkeyed.into_iter().chain(reading) {
                    names.extend(s.iter().cloned());
                }
            }
            return names;
        }
        names.extend(self.sets_by_pair.unkeyed().iter().cloned());
        for m in [old, new].into_iter().flatten() {
            names.extend(self.sets_by_pair.candidates(&m.labels).cloned());
        }
        names
    }

    pub(super) fn record_elements(&mut self, name: &str, delta: ElementDelta) {
        if let Some(set) = self.ruleset.sets.get_mut(name) {
            for e in &delta.removed {
                set.elements.remove(e);
            }
            for e in &delta.added {
                set.elements.insert(e.clone());
            }
        }
        if self.pending.sets.contains(name) {
            return;
        }
        let mine = self.pending.elements_of(name);
        for e in delta.removed {
            mine.remove(e);
        }
        for e in delta.added {
            mine.add(e);
        }
    }
}

fn empty_map(name: &str) -> crate::compile::ir::VerdictMap {
    crate::compile::ir::VerdictMap {
        name: name.to_string(),
        elements: BTreeMap::new(),
    }
}

/// The labels of `a` and of `b`, each pair once, sorted.
fn union_of(a: &LabelMap, b: &LabelMap) -> Vec<(Sym, Sym)> {
    let mut pairs: Vec<(Sym, Sym)> = a.syms().chain(b.syms()).collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// The keys whose value differs between `a` and `b` (present in one only
/// included), in key order.
fn changed_keys(a: &LabelMap, b: &LabelMap) -> Vec<Sym> {
    let (mut x, mut y) = (a.syms().peekable(), b.syms().peekable());
    let mut out = Vec::new();
    loop {
        match (x.peek().copied(), y.peek().copied()) {
            (None, None) => return out,
            (Some((k, _)), None) | (None, Some((k, _))) => {
                out.push(k);
                x.next_if(|p| p.0 == k);
                y.next_if(|p| p.0 == k);
            }
            (Some((kx, vx)), Some((ky, vy))) => {
                let k = kx.min(ky);
                if kx != ky || vx != vy {
                    out.push(k);
                }
                x.next_if(|p| p.0 == k);
                y.next_if(|p| p.0 == k);
            }
        }
    }
}

/// The label keys a selector's result depends on (`global()` reads the
/// namespace label), except the key of its required pair: a set is found
/// through that pair instead.
fn unpaired_keys(sel: &crate::selector::Selector) -> Vec<String> {
    let paired = required_pair(sel).map(|(k, _)| k);
    let mut keys: Vec<String> = sel.label_keys().into_iter().map(str::to_string).collect();
    if sel.uses_global() {
        keys.push(crate::calc::NAMESPACE_LABEL.to_string());
    }
    keys.retain(|k| Some(k) != paired.as_ref());
    keys
}

/// The selector of a selector or named-port set (`None`: a Service set,
/// filled from EndpointSlices instead).
fn source_selector(source: &SetSource) -> Option<&crate::selector::Selector> {
    match source {
        SetSource::Selector { selector, .. } | SetSource::NamedPorts { selector, .. } => {
            Some(selector)
        }
        SetSource::Service { .. } => None,
    }
}

/// As [`named_ports`], for an endpoint of the snapshot.
fn endpoint_ports(source: &SetSource, e: &Endpoint) -> Vec<(IpAddr, u8, u16)> {
    if !matches!(source, SetSource::NamedPorts { .. }) {
        return Vec::new();
    }
    named_ports(source, &Member::of_endpoint_ports(e))
}

/// The `(address, protocol, port)` keys `m` contributes to a named-port set.
fn named_ports(source: &SetSource, m: &Member) -> Vec<(IpAddr, u8, u16)> {
    let SetSource::NamedPorts {
        names, protocol, ..
    } = source
    else {
        return Vec::new();
    };
    m.ports
        .iter()
        .filter(|(pname, proto, _, _)| {
            names.contains(pname.as_string())
                && protocol.is_none_or(|want| want.normalised().number() == *proto)
        })
        .map(|(_, proto, port, addr)| (*addr, *proto, *port))
        .collect()
}
