//! The engine's one copy of every object, by key: pods as compact records
//! (what the calculation reads of them, `calc::PodRecord`), everything
//! else boxed as the model holds it. At XL (250,000 pods) this is about a
//! quarter of the memory the model objects took.

use std::collections::BTreeMap;
use std::ops::RangeFrom;
use std::sync::Arc;

use crate::calc::{Input, PodRecord};
use crate::model::{Resource, ResourceKey, ResourceKind};

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

/// Every object in force, in key order. Keys are shared with the member
/// index (`Store::shared`): one copy of each per object.
#[derive(Debug, Default)]
pub(super) struct Store {
    map: BTreeMap<Arc<ResourceKey>, Stored>,
}

impl Store {
    /// Takes `resources` (the last of a key wins), freeing each model pod
    /// as its record is made.
    pub fn of(resources: Vec<Resource>) -> Store {
        let map = (resources.into_iter())
            .map(|r| (Arc::new(r.key()), Stored::of(r)))
            .collect();
        Store { map }
    }

    pub fn get<'a>(&'a self, key: &'a ResourceKey) -> Option<Input<'a>> {
        self.map.get(key).map(|s| s.input(key))
    }

    /// The store's copy of `key`, when it holds an object under it.
    pub fn shared(&self, key: &ResourceKey) -> Option<Arc<ResourceKey>> {
        self.map.get_key_value(key).map(|(k, _)| k.clone())
    }

    /// The object under `key` when it is not a pod.
    pub fn resource(&self, key: &ResourceKey) -> Option<&Resource> {
        match self.map.get(key)? {
            Stored::Other(r) => Some(r),
            Stored::Pod(_) => None,
        }
    }

    /// Whether any object of `kind` is stored.
    pub fn has_kind(&self, kind: ResourceKind) -> bool {
        let first = ResourceKey {
            kind,
            namespace: None,
            name: String::new(),
        };
        (self.map.range(first..).next()).is_some_and(|(k, _)| k.kind == kind)
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
        match (value, self.map.get_mut(&key)) {
            (Some(r), Some(old)) => *old = Stored::of(r),
            (Some(r), None) => {
                self.map.insert(Arc::new(key), Stored::of(r));
            }
            (None, _) => {
                self.map.remove(&key);
            }
        }
    }

    /// Every object that is not a pod, in key order.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.map.values().filter_map(|s| match s {
            Stored::Other(r) => Some(&**r),
            Stored::Pod(_) => None,
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = &ResourceKey> {
        self.map.keys().map(|k| &**k)
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
            Stored::Other(r) => Some((&**k, &**r)),
            Stored::Pod(_) => None,
        })
    }
}
