//! The two largest steps of a build, made fast. A build's pods are turned
//! into endpoints ahead of the loop that pushes them, a batch at a time,
//! each batch split over two threads ([`crate::par`]): a pod's endpoint
//! reads only what the build has settled before that loop (profiles,
//! settings, node), so the endpoints are those the loop would make, handed
//! out in input order. The endpoints are then sorted by id on keys that
//! compare as integers.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::pods::KeyedPod;
use super::{Cluster, Endpoint, EndpointId, Inherited, Input};
use crate::intern::FxHasher;
use crate::model::{Pod, Resource};

/// Pods per batch: large enough that two threads pay off, small enough
/// that the batch's endpoints are a small part of the build's memory.
const BATCH: usize = 8192;

/// One pod of the build's input.
#[derive(Clone, Copy)]
pub(super) enum PodIn<'a> {
    Keyed(KeyedPod<'a>),
    Model(&'a Pod),
}

impl<'a> PodIn<'a> {
    pub(super) fn of(input: Input<'a>) -> Option<PodIn<'a>> {
        match input {
            Input::Pod(key, pod) => Some(PodIn::Keyed(KeyedPod(key, pod))),
            Input::Resource(Resource::Pod(p)) => Some(PodIn::Model(p)),
            Input::Resource(_) => None,
        }
    }

    fn endpoint(&self, c: &Cluster, memo: &mut Inherited) -> Option<Endpoint> {
        match self {
            PodIn::Keyed(p) => c.pod_endpoint_in(p, memo),
            PodIn::Model(p) => c.pod_endpoint_in(*p, memo),
        }
    }
}

/// The endpoints of a build's pods, in input order.
pub(super) struct PodEndpoints<'a> {
    pods: Vec<PodIn<'a>>,
    next: usize,
    ready: std::vec::IntoIter<Option<Endpoint>>,
    /// One per thread, kept across batches.
    memos: [Inherited; 2],
}

impl<'a> PodEndpoints<'a> {
    pub(super) fn new(pods: Vec<PodIn<'a>>) -> Self {
        PodEndpoints {
            pods,
            next: 0,
            ready: Vec::new().into_iter(),
            memos: Default::default(),
        }
    }

    /// The endpoint of the next pod in input order (`None` for a pod that
    /// has none); call once per pod, as the input yields them.
    pub(super) fn next(&mut self, c: &Cluster) -> Option<Endpoint> {
        if self.ready.len() == 0 {
            self.fill(c);
        }
        self.ready.next().expect("called once per pod")
    }

    fn fill(&mut self, c: &Cluster) {
        let end = (self.next + BATCH).min(self.pods.len());
        let batch = &self.pods[self.next..end];
        self.next = end;
        let [m0, m1] = &mut self.memos;
        let made: Vec<Option<Endpoint>> = if batch.len() < BATCH / 4 {
            batch.iter().map(|p| p.endpoint(c, m0)).collect()
        } else {
            let (lo, hi) = batch.split_at(batch.len() / 2);
            let (mut a, b) = crate::par::join(
                || lo.iter().map(|p| p.endpoint(c, m1)).collect::<Vec<_>>(),
                || hi.iter().map(|p| p.endpoint(c, m0)).collect::<Vec<_>>(),
            );
            a.extend(b);
            a
        };
        self.ready = made.into_iter();
    }
}

/// From how many endpoints on [`sort_endpoints`] sorts on two threads.
const PARALLEL_SORT: usize = 16_384;

/// An endpoint's position under a key that orders as its id does wherever
/// two keys differ: the rank of its namespace (host endpoints after every
/// namespace), then the first 16 bytes of its name.
type Keyed = (u64, u128, u32);

fn name_prefix(name: &str) -> u128 {
    let mut b = [0u8; 16];
    let n = name.len().min(16);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    u128::from_be_bytes(b)
}

/// Sorts endpoints by id (ties kept in input order) by sorting positions
/// under integer keys, comparing ids only where the keys tie, then moving
/// each endpoint once.
pub(super) fn sort_endpoints(endpoints: &mut [Endpoint]) {
    let order: Vec<u32> = {
        let mut keyed = keys(endpoints);
        let ids = &*endpoints;
        let by_id = |a: &Keyed, b: &Keyed| {
            ((a.0, a.1).cmp(&(b.0, b.1)))
                .then_with(|| ids[a.2 as usize].id.cmp(&ids[b.2 as usize].id))
                .then(a.2.cmp(&b.2))
        };
        if keyed.len() < PARALLEL_SORT {
            keyed.sort_unstable_by(by_id);
        } else {
            // Each half sorted on its own thread; the stable sort then finds
            // the two runs and merges them.
            let (lo, hi) = keyed.split_at_mut(ids.len() / 2);
            crate::par::join(|| lo.sort_unstable_by(by_id), || hi.sort_unstable_by(by_id));
            keyed.sort_by(by_id);
        }
        keyed.into_iter().map(|k| k.2).collect()
    };
    permute(endpoints, order);
}

fn keys(endpoints: &[Endpoint]) -> Vec<Keyed> {
    type Ranks<'e> = HashMap<&'e str, u64, BuildHasherDefault<FxHasher>>;
    let mut rank: Ranks = HashMap::default();
    for e in endpoints {
        if let EndpointId::Workload { namespace, .. } = &e.id {
            rank.entry(namespace.as_str()).or_insert(0);
        }
    }
    let mut namespaces: Vec<&str> = rank.keys().copied().collect();
    namespaces.sort_unstable();
    for (i, ns) in namespaces.iter().enumerate() {
        rank.insert(ns, i as u64);
    }
    let hosts = namespaces.len() as u64;
    (endpoints.iter().enumerate())
        .map(|(i, e)| match &e.id {
            EndpointId::Workload { namespace, name } => {
                (rank[namespace.as_str()], name_prefix(name), i as u32)
            }
            EndpointId::Host { name } => (hosts, name_prefix(name), i as u32),
        })
        .collect()
}

/// Position i takes the endpoint at order[i]: each cycle followed once.
fn permute(endpoints: &mut [Endpoint], mut order: Vec<u32>) {
    for start in 0..order.len() {
        let mut i = start;
        while order[i] as usize != start && order[i] != u32::MAX {
            let next = order[i] as usize;
            endpoints.swap(i, next);
            order[i] = u32::MAX;
            i = next;
        }
        order[i] = u32::MAX;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_prefixes_order_as_the_names_do_where_they_differ() {
        let names = [
            "",
            "a",
            "a\0",
            "ab",
            "pod-10",
            "pod-2",
            "pod-20000000000000001",
            "pod-20000000000000002",
            "z",
        ];
        for a in names {
            for b in names {
                let (pa, pb) = (name_prefix(a), name_prefix(b));
                if pa != pb {
                    assert_eq!(pa.cmp(&pb), a.cmp(b), "{a:?} vs {b:?}");
                }
            }
        }
        let long = |n: u8| format!("pod-2000000000000000{n}");
        assert_eq!(
            name_prefix(&long(1)),
            name_prefix(&long(2)),
            "a tie: ids decide"
        );
    }
}
