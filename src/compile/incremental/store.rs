//! The engine's one copy of every object, by key: pods as compact records
//! (what the calculation reads of them, `calc::PodRecord`), everything
//! else boxed as the model holds it. At XL (250,000 pods) this is about a
//! quarter of the memory the model objects took.

use std::collections::BTreeMap;
use std::ops::RangeFrom;

use crate::calc::{Input, PodRecord};
use crate::model::{Resource, ResourceKey};

#[derive(Debug)]
enum Stored {
    Pod(PodRecord),
    Other(Box<Resource>),
}

impl Stored {
    fn of(r: Resource) -> Stored {
        match r {
            Resource::Pod(p) => Stored::Pod(PodRecord::of(&p)),
            other => Stored::Other(Box::new(other)),
        }
    }

    fn input<'a>(&'a self, key: &'a ResourceKey) -> Input<'a> {
        match self {
            Stored::Pod(p) => Input::Pod(key, p),
            Stored::Other(r) => Input::Resource(r),
        }
    }
}

/// Every object in force, in key order.
#[derive(Debug, Default)]
pub(super) struct Store {
    map: BTreeMap<ResourceKey, Stored>,
}

impl Store {
    /// Takes `resources` (the last of a key wins), freeing each model pod
    /// as its record is made.
    pub fn of(resources: Vec<Resource>) -> Store {
        let map = (resources.into_iter())
            .map(|r| (r.key(), Stored::of(r)))
            .collect();
        Store { map }
    }

    pub fn get<'a>(&'a self, key: &'a ResourceKey) -> Option<Input<'a>> {
        self.map.get(key).map(|s| s.input(key))
    }

    /// The object under `key` when it is not a pod.
    pub fn resource(&self, key: &ResourceKey) -> Option<&Resource> {
        match self.map.get(key)? {
            Stored::Other(r) => Some(r),
            Stored::Pod(_) => None,
        }
    }

    pub fn contains_key(&self, key: &ResourceKey) -> bool {
        self.map.contains_key(key)
    }

    /// Whether `value` under `key` is what is in force already (for a pod:
    /// everything the calculation reads of it is the same).
    pub fn holds(&self, key: &ResourceKey, value: Option<&Resource>) -> bool {
        match (self.map.get(key), value) {
            (None, None) => true,
            (Some(Stored::Pod(old)), Some(Resource::Pod(new))) => *old == PodRecord::of(new),
            (Some(Stored::Other(old)), Some(new)) => **old == *new,
            _ => false,
        }
    }

    pub fn put(&mut self, key: ResourceKey, value: Option<Resource>) {
        match value {
            Some(r) => self.map.insert(key, Stored::of(r)),
            None => self.map.remove(&key),
        };
    }

    /// Every object that is not a pod, in key order.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.map.values().filter_map(|s| match s {
            Stored::Other(r) => Some(&**r),
            Stored::Pod(_) => None,
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = &ResourceKey> {
        self.map.keys()
    }

    /// Every object, in key order (what `Cluster::build_from` reads).
    pub fn inputs(&self) -> impl Iterator<Item = Input<'_>> + Clone {
        self.map.iter().map(|(k, s)| s.input(k))
    }

    /// The objects from `range` on that are not pods, in key order.
    pub fn resources_from(
        &self,
        range: RangeFrom<ResourceKey>,
    ) -> impl Iterator<Item = (&ResourceKey, &Resource)> {
        self.map.range(range).filter_map(|(k, s)| match s {
            Stored::Other(r) => Some((k, &**r)),
            Stored::Pod(_) => None,
        })
    }
}
