//! What selector sets are made of, kept up to date per change: every
//! endpoint's and network set's contribution (labels, addresses, named
//! ports), an inverted label index to find the members of a new selector,
//! and per set the counted members with their merged intervals, so that an
//! address coming or going costs a few tree operations and yields the exact
//! element delta (merged neighbours split or joined).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::ir::ElementDelta;
use crate::calc::labels::{LabelMap, Sym, SymMap};
use crate::calc::{Endpoint, NetworkSet};
use crate::model::ResourceKey;
use crate::selector::Selector;

/// The slots of the members holding one label pair.
type Holders = HashSet<u32, BuildHasherDefault<crate::intern::FxHasher>>;

/// What one endpoint or network set contributes to sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub labels: LabelMap,
    pub nets: Vec<IpNet>,
    /// `(name, protocol number, port, address)` for endpoints.
    pub ports: Vec<(Sym, u8, u16, IpAddr)>,
}

impl Member {
    pub fn of_endpoint(ep: &Endpoint) -> Member {
        Member {
            labels: ep.labels.clone(),
            nets: ep.addrs.iter().map(|a| IpNet::from(*a)).collect(),
            ports: Self::ports_of(ep),
        }
    }

    /// An endpoint's addresses and ports only (no labels).
    pub fn of_endpoint_ports(ep: &Endpoint) -> Member {
        Member {
            labels: LabelMap::new(),
            nets: Vec::new(),
            ports: Self::ports_of(ep),
        }
    }

    fn ports_of(ep: &Endpoint) -> Vec<(Sym, u8, u16, IpAddr)> {
        // Held for the member's life: exactly as many as there are.
        let mut out = Vec::with_capacity(ep.ports.len() * ep.addrs.len());
        for p in &ep.ports {
            let name = p.name;
            let number = p.protocol.number();
            out.extend(ep.addrs.iter().map(|a| (name, number, p.port, *a)));
        }
        out
    }

    /// As [`Member::of_endpoint`], taking the endpoint's labels.
    pub fn from_endpoint(ep: Endpoint) -> Member {
        Member {
            nets: ep.addrs.iter().map(|a| IpNet::from(*a)).collect(),
            ports: Self::ports_of(&ep),
            labels: ep.labels,
        }
    }

    pub fn of_set(s: &NetworkSet) -> Member {
        Member {
            labels: s.labels.clone(),
            nets: s.nets.clone(),
            ports: Vec::new(),
        }
    }
}

/// Every member, by the resource it comes from, with an inverted index of
/// `key=value` pairs. A slot and the id map share one copy of the key.
#[derive(Debug, Default)]
pub struct MemberIndex {
    slots: Vec<Option<(Arc<ResourceKey>, Member)>>,
    free: Vec<u32>,
    ids: HashMap<Arc<ResourceKey>, u32>,
    /// key → value → members carrying that label.
    by_pair: SymMap<Sym, SymMap<Sym, Holders>>,
}

/// A `key == value` every match of `sel` has (a top-level conjunct), if
/// any: the one [`filing_rank`] ranks first.
pub fn required_pair(sel: &Selector) -> Option<(String, String)> {
    best_ranked(required_pairs(sel).iter()).cloned()
}

/// [`required_pair`], interned.
pub fn required_sym_pair(sel: &Selector) -> Option<SymPair> {
    filing(sel).map(|(first, _)| first)
}

/// How well a required pair with `key` narrows a lookup (lower is
/// better): the namespace splits a cluster finely; the orchestrator pair
/// that every Kubernetes pod selector requires is carried by every pod,
/// so it narrows nothing; other labels lie between.
fn filing_rank(key: &str) -> u8 {
    if key == crate::calc::NAMESPACE_LABEL {
        0
    } else if key == crate::model::convert::ORCHESTRATOR_LABEL {
        2
    } else {
        1
    }
}

/// Of `pairs`, the one [`filing_rank`] ranks best (the earliest of equals).
fn best_ranked<'a>(
    pairs: impl Iterator<Item = &'a (String, String)>,
) -> Option<&'a (String, String)> {
    pairs.min_by_key(|p| filing_rank(&p.0))
}

/// Items (policies, sets) filed under the `key == value` pairs their
/// selector requires: the first as [`required_pair`] picks it and, when
/// the selector requires another, that second one too. A lookup by an
/// object's labels then finds only the items whose two pairs it carries
/// (a selector `app == 'a' && tier == 'api'` is not a candidate for every
/// pod of app `a`), however many items share the first pair.
#[derive(Debug)]
pub struct PairIndex<T> {
    keyed: SymMap<(Sym, Sym), Filed<T>>,
    unkeyed: BTreeSet<T>,
}

/// The items under one first pair: those requiring no other, and the rest
/// by their second pair.
#[derive(Debug)]
struct Filed<T> {
    only: BTreeSet<T>,
    then: SymMap<(Sym, Sym), BTreeSet<T>>,
}

impl<T> Default for PairIndex<T> {
    fn default() -> Self {
        PairIndex {
            keyed: SymMap::default(),
            unkeyed: BTreeSet::new(),
        }
    }
}

impl<T> Default for Filed<T> {
    fn default() -> Self {
        Filed {
            only: BTreeSet::new(),
            then: SymMap::default(),
        }
    }
}

/// An interned `key == value`.
type SymPair = (Sym, Sym);

/// The first and second pairs `sel` is filed under.
fn filing(sel: &Selector) -> Option<(SymPair, Option<SymPair>)> {
    let pairs = required_pairs(sel);
    let first = best_ranked(pairs.iter())?;
    let second = best_ranked(pairs.iter().filter(|p| p.0 != first.0));
    let sym = |(k, v): &(String, String)| (Sym::new(k), Sym::new(v));
    Some((sym(first), second.map(sym)))
}

impl<T: Ord + Clone> PairIndex<T> {
    pub fn clear(&mut self) {
        self.keyed.clear();
        self.unkeyed.clear();
    }

    pub fn insert(&mut self, sel: &Selector, item: T) {
        match filing(sel) {
            None => self.unkeyed.insert(item),
            Some((first, None)) => self.keyed.entry(first).or_default().only.insert(item),
            Some((first, Some(second))) => self
                .keyed
                .entry(first)
                .or_default()
                .then
                .entry(second)
                .or_default()
                .insert(item),
        };
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, sel: &Selector, item: &Q)
    where
        T: std::borrow::Borrow<Q>,
    {
        let Some((first, second)) = filing(sel) else {
            self.unkeyed.remove(item);
            return;
        };
        let Some(filed) = self.keyed.get_mut(&first) else {
            return;
        };
        match second {
            None => {
                filed.only.remove(item);
            }
            Some(second) => {
                if let Some(items) = filed.then.get_mut(&second) {
                    items.remove(item);
                    if items.is_empty() {
                        filed.then.remove(&second);
                    }
                }
            }
        }
        if filed.only.is_empty() && filed.then.is_empty() {
            self.keyed.remove(&first);
        }
    }

    /// The items whose selector requires no pair.
    pub fn unkeyed(&self) -> &BTreeSet<T> {
        &self.unkeyed
    }

    /// Every item filed under `first` (whatever its second pair).
    pub fn under(&self, first: (Sym, Sym)) -> impl Iterator<Item = &T> + '_ {
        self.keyed.get(&first).into_iter().flat_map(|f| {
            f.only
                .iter()
                .chain(f.then.values().flat_map(|items| items.iter()))
        })
    }

    /// The keyed items an object with `labels` may match: those whose
    /// first and (if any) second pair it carries; each once.
    pub fn candidates<'a>(&'a self, labels: &'a LabelMap) -> impl Iterator<Item = &'a T> + 'a {
        labels
            .syms()
            .filter_map(|pair| self.keyed.get(&pair))
            .flat_map(move |f| {
                let seconds = labels
                    .syms()
                    .filter_map(|pair| f.then.get(&pair))
                    .flat_map(|items| items.iter());
                f.only.iter().chain(seconds)
            })
    }
}

/// Every `key == value` every match of `sel` has (its top-level conjuncts).
pub fn required_pairs(sel: &Selector) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    collect_pairs(sel, &mut pairs);
    pairs
}

fn collect_pairs(sel: &Selector, out: &mut Vec<(String, String)>) {
    match sel {
        Selector::Equal(k, v) => out.push((k.clone(), v.clone())),
        Selector::And(terms) => terms.iter().for_each(|t| collect_pairs(t, out)),
        _ => {}
    }
}

impl MemberIndex {
    pub fn get(&self, key: &ResourceKey) -> Option<&Member> {
        let id = *self.ids.get(key)?;
        self.slots[id as usize].as_ref().map(|(_, m)| m)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Room for `n` members.
    pub fn with_capacity(n: usize) -> MemberIndex {
        MemberIndex {
            slots: Vec::with_capacity(n),
            ids: HashMap::with_capacity(n),
            ..MemberIndex::default()
        }
    }

    /// Gives back the spare capacity of a full build.
    pub fn shrink_to_fit(&mut self) {
        self.slots.shrink_to_fit();
        self.ids.shrink_to_fit();
    }

    /// Sets `key`'s contribution (`None`: it has none); returns the old one.
    /// A replaced member keeps its slot; only its changed labels move in
    /// the index.
    pub fn set(&mut self, key: &ResourceKey, member: Option<Member>) -> Option<Member> {
        self.set_keyed(key, None, member)
    }

    /// As [`MemberIndex::set`], holding a new member under `shared` (the
    /// engine's own copy of the key) rather than a copy of its own.
    pub fn set_shared(
        &mut self,
        shared: Option<Arc<ResourceKey>>,
        key: &ResourceKey,
        member: Option<Member>,
    ) -> Option<Member> {
        self.set_keyed(key, shared, member)
    }

    fn set_keyed(
        &mut self,
        key: &ResourceKey,
        given: Option<Arc<ResourceKey>>,
        member: Option<Member>,
    ) -> Option<Member> {
        let Some(m) = member else {
            return self.take(key);
        };
        let (id, shared) = match self.ids.get_key_value(key) {
            Some((k, id)) => (*id, k.clone()),
            None => {
                let id = self.free.pop().unwrap_or_else(|| {
                    self.slots.push(None);
                    (self.slots.len() - 1) as u32
                });
                let shared = given.unwrap_or_else(|| Arc::new(key.clone()));
                self.ids.insert(shared.clone(), id);
                (id, shared)
            }
        };
        let old = self.slots[id as usize].take().map(|(_, m)| m);
        let empty = LabelMap::new();
        let before = old.as_ref().map_or(&empty, |o| &o.labels);
        for (k, v) in before.syms() {
            if m.labels.get_sym(k.as_str()) != Some(v) {
                self.unlist(k, v, id);
            }
        }
        for (k, v) in m.labels.syms() {
            if before.get_sym(k.as_str()) != Some(v) {
                self.by_pair
                    .entry(k)
                    .or_default()
                    .entry(v)
                    .or_default()
                    .insert(id);
            }
        }
        self.slots[id as usize] = Some((shared, m));
        old
    }

    fn unlist(&mut self, k: Sym, v: Sym, id: u32) {
        let Some(values) = self.by_pair.get_mut(&k) else {
            return;
        };
        if let Some(ids) = values.get_mut(&v) {
            ids.remove(&id);
            if ids.is_empty() {
                values.remove(&v);
            }
        }
        if values.is_empty() {
            self.by_pair.remove(&k);
        }
    }

    fn take(&mut self, key: &ResourceKey) -> Option<Member> {
        let id = self.ids.remove(key)?;
        let (_, m) = self.slots[id as usize].take()?;
        for (k, v) in m.labels.syms() {
            self.unlist(k, v, id);
        }
        self.free.push(id);
        Some(m)
    }

    fn with_label(&self, k: &str, v: &str) -> impl Iterator<Item = &(Arc<ResourceKey>, Member)> {
        self.in_slots(self.holders(k, v))
    }

    fn in_slots<'a>(
        &'a self,
        slots: Option<&'a Holders>,
    ) -> impl Iterator<Item = &'a (Arc<ResourceKey>, Member)> + 'a {
        (slots.into_iter().flatten()).filter_map(|id| self.slots[*id as usize].as_ref())
    }

    /// The slots of the members labelled `k == v` (none when no label ever
    /// had that text).
    fn holders(&self, k: &str, v: &str) -> Option<&Holders> {
        let (k, v) = Sym::lookup(k).zip(Sym::lookup(v))?;
        self.by_pair.get(&k)?.get(&v)
    }

    /// Members matching `sel`. When it requires `key == value` pairs, only
    /// the holders of the pair the fewest members carry are read, and of
    /// those only the ones that every other required pair holds too are
    /// matched against `sel` (a probe of a slot set costs far less than a
    /// match against a member's labels).
    pub fn matching<'a>(&'a self, sel: &'a Selector) -> Box<dyn Iterator<Item = &'a Member> + 'a> {
        let pairs = required_pairs(sel);
        if pairs.is_empty() {
            return Box::new(
                (self.slots.iter().flatten())
                    .map(|(_, m)| m)
                    .filter(move |m| sel.matches(&m.labels)),
            );
        }
        // A pair no member carries: nothing matches.
        let Some(mut holders) = (pairs.iter())
            .map(|(k, v)| self.holders(k, v))
            .collect::<Option<Vec<&Holders>>>()
        else {
            return Box::new(std::iter::empty());
        };
        holders.sort_by_key(|h| h.len());
        let (fewest, rest) = holders.split_first().expect("a pair");
        let found: Vec<&Member> = (fewest.iter())
            .filter(|id| rest.iter().all(|h| h.contains(*id)))
            .filter_map(|id| self.slots[*id as usize].as_ref())
            .map(|(_, m)| m)
            .filter(|m| sel.matches(&m.labels))
            .collect();
        Box::new(found.into_iter())
    }

    /// Keys of members in `namespace` (by their namespace label).
    pub fn in_namespace(&self, namespace: &str) -> Vec<ResourceKey> {
        self.with_label(crate::calc::NAMESPACE_LABEL, namespace)
            .map(|(k, _)| ResourceKey::clone(k))
            .collect()
    }
}

/// The counted addresses of one address set and their merged cover.
#[derive(Debug, Clone, Default)]
pub struct AddressCounts {
    v6: bool,
    counts: BTreeMap<IpNet, u32>,
    merged: BTreeSet<IpNet>,
}

/// The element texts of one merged net (a `/0` is held as its two halves).
pub fn net_texts(n: IpNet) -> Vec<String> {
    if n.prefix_len() == 0 {
        n.subnets(1)
            .expect("a /0 has halves")
            .map(|h| h.to_string())
            .collect()
    } else if n.prefix_len() == n.max_prefix_len() {
        vec![n.addr().to_string()]
    } else {
        vec![n.to_string()]
    }
}

fn lowest(n: IpNet) -> IpNet {
    IpNet::new(n.network(), 0).expect("prefix 0")
}

fn highest(n: IpNet) -> IpNet {
    IpNet::new(n.broadcast(), n.max_prefix_len()).expect("full prefix")
}

fn sibling(n: IpNet) -> Option<IpNet> {
    let parent = n.supernet()?;
    parent.subnets(n.prefix_len()).ok()?.find(|s| *s != n)
}

impl AddressCounts {
    pub fn new(v6: bool) -> Self {
        AddressCounts {
            v6,
            ..Default::default()
        }
    }

    #[cfg(test)]
    pub fn debug(&self) -> String {
        format!("counts {:?} merged {:?}", self.counts, self.merged)
    }

    /// The elements the set holds.
    pub fn elements(&self) -> BTreeSet<String> {
        self.merged.iter().flat_map(|n| net_texts(*n)).collect()
    }

    fn family(&self, n: &IpNet) -> bool {
        matches!(n, IpNet::V6(_)) == self.v6
    }

    /// The merged net containing `n`, if any.
    fn cover_of(&self, n: IpNet) -> Option<IpNet> {
        self.merged
            .range(..=highest(n))
            .next_back()
            .copied()
            .filter(|m| m.contains(&n))
    }

    /// Counts `n` once more (`step` 1) or once less (-1), recording the
    /// element changes in `delta`.
    pub fn bump(&mut self, n: IpNet, step: i64, delta: &mut ElementDelta) {
        if !self.family(&n) {
            return;
        }
        let n = n.trunc();
        if step > 0 {
            let c = self.counts.entry(n).or_default();
            *c += 1;
            if *c == 1 {
                self.joined(n, delta);
            }
        } else if let Some(c) = self.counts.get_mut(&n) {
            *c -= 1;
            if *c == 0 {
                self.counts.remove(&n);
                self.left(n, delta);
            }
        }
    }

    fn replace(&mut self, removed: &[IpNet], added: &[IpNet], delta: &mut ElementDelta) {
        for r in removed {
            self.merged.remove(r);
            for t in net_texts(*r) {
                delta.remove(t);
            }
        }
        for a in added {
            self.merged.insert(*a);
            for t in net_texts(*a) {
                delta.add(t);
            }
        }
    }

    /// `n` is newly counted: swallow what it covers, join equal siblings.
    fn joined(&mut self, n: IpNet, delta: &mut ElementDelta) {
        if self.cover_of(n).is_some() {
            return;
        }
        let mut removed: Vec<IpNet> = self.merged.range(lowest(n)..=highest(n)).copied().collect();
        let mut block = n;
        while let Some(s) = sibling(block).filter(|s| self.merged.contains(s)) {
            removed.push(s);
            block = block.supernet().expect("a sibling has a parent");
        }
        self.replace(&removed, &[block], delta);
    }

    /// `n` is no longer counted: split its cover around it, unless another
    /// counted net still covers it.
    fn left(&mut self, n: IpNet, delta: &mut ElementDelta) {
        let Some(cover) = self.cover_of(n) else {
            return;
        };
        let mut up = n;
        while up != cover {
            up = up.supernet().expect("inside its cover");
            if self.counts.contains_key(&up) {
                return;
            }
        }
        let inside: Vec<IpNet> = self
            .counts
            .range(lowest(n)..=highest(n))
            .map(|(k, _)| *k)
            .filter(|k| n.contains(k))
            .collect();
        let inside = aggregate(&inside);
        if inside == [n] {
            // Smaller nets still tile all of it: nothing changes.
            return;
        }
        // Partly covered, `n` cannot join its siblings: they stand alone.
        let mut added = inside;
        let mut block = n;
        while block != cover {
            added.push(sibling(block).expect("inside its cover"));
            block = block.supernet().expect("inside its cover");
        }
        self.replace(&[cover], &added, delta);
    }

    /// Counts `nets` for a new set (call [`AddressCounts::settle`] after the last).
    pub fn fill(&mut self, nets: impl IntoIterator<Item = IpNet>) {
        for n in nets {
            if self.family(&n) {
                *self.counts.entry(n.trunc()).or_default() += 1;
            }
        }
    }

    /// Merges the counted nets into the cover, from scratch.
    pub fn settle(&mut self) {
        let all: Vec<IpNet> = self.counts.keys().copied().collect();
        self.merged = aggregate(&all).into_iter().collect();
    }
}

fn aggregate(nets: &[IpNet]) -> Vec<IpNet> {
    IpNet::aggregate(&nets.to_vec())
}

/// The counted `(address, protocol, port)` members of one named-port set.
#[derive(Debug, Clone, Default)]
pub struct PortCounts {
    v6: bool,
    counts: BTreeMap<(IpAddr, u8, u16), u32>,
}

fn port_text((a, p, port): (IpAddr, u8, u16)) -> String {
    format!("{a} . {p} . {port}")
}

impl PortCounts {
    pub fn new(v6: bool) -> Self {
        PortCounts {
            v6,
            ..Default::default()
        }
    }

    pub fn elements(&self) -> BTreeSet<String> {
        self.counts.keys().map(|k| port_text(*k)).collect()
    }

    pub fn bump(&mut self, key: (IpAddr, u8, u16), step: i64, delta: &mut ElementDelta) {
        if key.0.is_ipv6() != self.v6 {
            return;
        }
        if step > 0 {
            let c = self.counts.entry(key).or_default();
            *c += 1;
            if *c == 1 {
                delta.add(port_text(key));
            }
        } else if let Some(c) = self.counts.get_mut(&key) {
            *c -= 1;
            if *c == 0 {
                self.counts.remove(&key);
                delta.remove(port_text(key));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::interval::net_elements;
    use proptest::prelude::*;

    /// A selector's members are found through the rarer of its required
    /// pairs (the first or the second written), and are those it matches.
    #[test]
    fn matching_finds_the_same_members_whichever_pair_is_rarer() {
        let mut index = MemberIndex::default();
        for i in 0..40u32 {
            let app = if i % 10 == 0 { "db" } else { "web" };
            let labels = [("ns", "one"), ("app", app)];
            let member = Member {
                labels: LabelMap::layered(crate::calc::labels::pairs_of(labels), None),
                nets: vec![v4(i, 32)],
                ports: Vec::new(),
            };
            let key = ResourceKey {
                kind: crate::model::ResourceKind::Pod,
                namespace: Some("one".into()),
                name: format!("p{i}"),
            };
            index.set(&key, Some(member));
        }
        let found = |text: &str| {
            let sel = crate::selector::parse(text).expect("a valid selector");
            let mut nets: Vec<IpNet> = index.matching(&sel).flat_map(|m| m.nets.clone()).collect();
            nets.sort();
            nets
        };
        let db: Vec<IpNet> = (0..4).map(|i| v4(i * 10, 32)).collect();
        assert_eq!(found("ns == 'one' && app == 'db'"), db);
        assert_eq!(found("app == 'db' && ns == 'one'"), db);
        assert_eq!(found("ns == 'one' && app == 'web'").len(), 36);
        assert_eq!(found("ns == 'one' && app == 'none'"), Vec::<IpNet>::new());
        assert_eq!(found("has(app)").len(), 40);
    }

    /// The orchestrator pair every Kubernetes pod selector requires (and
    /// every pod carries) is filed under last: a pod finds only the
    /// policies of its namespace that name its app, wherever the pair is
    /// written, and a selector requiring nothing else is still found.
    #[test]
    fn the_orchestrator_pair_narrows_a_lookup_last() {
        const NS: &str = crate::calc::NAMESPACE_LABEL;
        const ORCH: &str = crate::model::convert::ORCHESTRATOR_LABEL;
        let texts = [
            format!("{ORCH} == 'k8s' && app == 'a' && {NS} == 'one'"),
            format!("{ORCH} == 'k8s' && app == 'b' && {NS} == 'one'"),
            format!("app == 'a' && {ORCH} == 'k8s'"),
            format!("{ORCH} == 'k8s' && app == 'b'"),
            format!("{ORCH} == 'k8s' && {NS} == 'one'"),
            format!("{ORCH} == 'k8s'"),
        ];
        let mut index = PairIndex::default();
        for (i, t) in texts.iter().enumerate() {
            index.insert(&crate::selector::parse(t).expect("a valid selector"), i);
        }
        let pod = |app: &str| {
            let labels = [(NS, "one"), (ORCH, "k8s"), ("app", app)];
            LabelMap::layered(crate::calc::labels::pairs_of(labels), None)
        };
        let found = |labels: &LabelMap| {
            let mut v: Vec<usize> = index.candidates(labels).copied().collect();
            v.sort();
            v
        };
        assert_eq!(found(&pod("a")), vec![0, 2, 4, 5]);
        assert_eq!(found(&pod("b")), vec![1, 3, 4, 5]);
        assert_eq!(found(&pod("c")), vec![4, 5]);
        let sel = crate::selector::parse(&texts[0]).expect("a valid selector");
        assert_eq!(required_pair(&sel), Some((NS.to_string(), "one".into())));
        let sel = crate::selector::parse(&texts[3]).expect("a valid selector");
        assert_eq!(required_pair(&sel), Some(("app".into(), "b".into())));
    }

    /// Whatever members come, change and go, `matching` finds exactly the
    /// members a selector matches, for selectors requiring one, two or
    /// three pairs (own or inherited; some that no member carries), with
    /// and without a further term that is not a pair.
    #[test]
    fn matching_equals_matching_every_member() {
        let mut index = MemberIndex::default();
        let key = |i: u32| ResourceKey {
            kind: crate::model::ResourceKind::Pod,
            namespace: Some("n".into()),
            name: format!("p{i}"),
        };
        // A deterministic walk: slot reuse, relabels and removals.
        let mut state = 7u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        for step in 0..600u32 {
            let i = next(60) as u32;
            if next(5) == 0 {
                index.set(&key(i), None);
                continue;
            }
            let (ns, app, tier) = (next(3), next(4), next(3));
            let mut labels = vec![("app", format!("app-{app}"))];
            if tier < 2 {
                labels.push(("tier", format!("t{tier}")));
            }
            let pairs = |l: &[(&'static str, String)]| {
                crate::calc::labels::pairs_of(l.iter().map(|(k, v)| (*k, v.as_str())))
            };
            // The namespace label is inherited, as a namespace's are.
            let inherited: Arc<crate::calc::labels::Pairs> =
                pairs(&[("ns", format!("ns-{ns}"))]).into();
            let member = Member {
                labels: LabelMap::layered(pairs(&labels), Some(inherited)),
                nets: vec![v4(step, 32)],
                ports: Vec::new(),
            };
            index.set(&key(i), Some(member));
        }
        let texts = [
            "ns == 'ns-1'",
            "ns == 'ns-1' && app == 'app-2'",
            "app == 'app-2' && ns == 'ns-1' && tier == 't0'",
            "ns == 'ns-0' && tier == 't1' && !has(other)",
            "ns == 'ns-2' && app in {'app-0', 'app-3'}",
            "ns == 'ns-1' && app == 'app-9'",
            "nobody == 'x' && ns == 'ns-1'",
            "has(tier)",
        ];
        for text in texts {
            let sel = crate::selector::parse(text).expect("a valid selector");
            let mut got: Vec<IpNet> = index.matching(&sel).flat_map(|m| m.nets.clone()).collect();
            let mut want: Vec<IpNet> = (index.slots.iter().flatten())
                .filter(|(_, m)| sel.matches(&m.labels))
                .flat_map(|(_, m)| m.nets.clone())
                .collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{text}");
        }
        let sel = crate::selector::parse("ns == 'ns-1' && app == 'app-2'").expect("valid");
        assert!(
            index.matching(&sel).next().is_some(),
            "the walk leaves such members"
        );
    }

    fn v4(host: u32, len: u8) -> IpNet {
        let addr = std::net::Ipv4Addr::from(0xC612_0000u32 + host);
        IpNet::V4(ipnet::Ipv4Net::new(addr, len).unwrap())
    }

    proptest! {
        /// After any sequence of counts, the cover equals a merge from
        /// scratch, and the recorded deltas turn the old elements into the new.
        #[test]
        fn counted_covers_equal_merges_from_scratch(
            steps in prop::collection::vec((0u32..16, prop_oneof![Just(32u8), 28u8..=32, 26u8..=32, 0u8..=32], any::<bool>()), 1..80),
        ) {
            let mut c = AddressCounts::new(false);
            let mut held: Vec<IpNet> = Vec::new();
            for (host, len, add) in steps {
                let n = v4(host, len).trunc();
                let before = c.elements();
                let mut d = ElementDelta::default();
                if add || !held.contains(&n) {
                    held.push(n);
                    c.bump(n, 1, &mut d);
                } else {
                    let i = held.iter().position(|h| *h == n).unwrap();
                    held.remove(i);
                    c.bump(n, -1, &mut d);
                }
                let want = net_elements(held.iter().copied(), false);
                prop_assert_eq!(&c.elements(), &want);
                let mut replay = before;
                for e in &d.removed { prop_assert!(replay.remove(e), "removed {} absent", e); }
                for e in &d.added { prop_assert!(replay.insert(e.clone()), "added {} present", e); }
                prop_assert_eq!(replay, want);
            }
        }
    }

    #[test]
    fn a_net_tiled_by_smaller_ones_leaves_nothing_when_it_goes() {
        // Found by the engine's model test (seed 42): .2/31 and the two
        // addresses inside it, next to .0/31.
        let mut c = AddressCounts::new(false);
        let mut d = ElementDelta::default();
        for n in [v4(0, 32), v4(1, 32), v4(2, 31), v4(2, 32), v4(3, 32)] {
            c.bump(n, 1, &mut d);
        }
        assert_eq!(c.elements(), ["198.18.0.0/30".to_string()].into());
        let mut d = ElementDelta::default();
        c.bump(v4(2, 31), -1, &mut d);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(c.elements(), ["198.18.0.0/30".to_string()].into());
    }

    #[test]
    fn adjacent_addresses_join_and_split() {
        let mut c = AddressCounts::new(false);
        let mut d = ElementDelta::default();
        c.bump(v4(0, 32), 1, &mut d);
        c.bump(v4(1, 32), 1, &mut d);
        assert_eq!(c.elements(), ["198.18.0.0/31".to_string()].into());
        let mut d = ElementDelta::default();
        c.bump(v4(0, 32), -1, &mut d);
        assert_eq!(d.removed, ["198.18.0.0/31".to_string()].into());
        assert_eq!(d.added, ["198.18.0.1".to_string()].into());
    }
}
