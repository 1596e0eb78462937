//! One kind's converter: a thread of its own that takes the watcher's
//! events through a bounded channel (so the watch stream, and with it the
//! next LIST page, never waits for conversion), converts each object into
//! a resource ([`super::convert`]) and keeps what delta computation needs
//! per object: the kind it loads to, a hash of its resource and its
//! diagnostics, never the object (its key follows from its
//! `namespace/name`). Changes go out as they are found, the first listing's
//! included; a relist (after 410 Gone) yields only the differences from
//! what was known, as one batch when it completes: deletions of what it no
//! longer lists, then what changed.

use std::collections::HashMap;
use std::path::Path;

use kube::ResourceExt;
use kube::runtime::watcher;
use tokio::sync::mpsc;

use super::Msg;
use super::convert::Converted;
use crate::datastore::{Changes, Report, Status};
use crate::diag::Diagnostic;
use crate::model::{Resource, ResourceKey, ResourceKind, Update};

/// Events queued between a watch stream and its converter: enough to cover
/// a few LIST pages of 500, few enough to bound the memory they hold.
pub const QUEUE: usize = 2048;
/// Most events folded into one message to the source's loop.
const FOLD: usize = 1024;

/// What a watch stream hands its converter.
#[derive(Debug)]
pub enum Item<K> {
    Event(watcher::Event<K>),
    /// The kind is not served: take it as empty.
    Absent,
}

/// What is kept of one object: enough to tell what changed.
#[derive(Debug, Default, Clone, PartialEq)]
struct Entry {
    /// The kind of its resource; None when the object is invalid (it is
    /// reported and skipped).
    kind: Option<ResourceKind>,
    value: u64,
    diagnostics: Vec<Diagnostic>,
    /// The listing that last saw it (a relist removes what it did not see).
    listing: u32,
}

/// Per kind: synced once, the current listing, the objects by `namespace/name`.
#[derive(Debug, Default)]
struct Store {
    synced: bool,
    listing: u32,
    objects: HashMap<String, Entry>,
    /// Where an object's Debug form is written to be hashed (reused).
    scratch: String,
}

/// The key of a `kind` resource loaded from the object `id`
/// (`namespace/name`): namespaced kinds without a namespace are in
/// `default`, as the converter puts them.
fn key_at(kind: ResourceKind, id: &str) -> ResourceKey {
    let (ns, name) = id.split_once('/').unwrap_or(("", id));
    let ns = if ns.is_empty() { "default" } else { ns };
    ResourceKey {
        kind,
        namespace: kind.namespaced().then(|| ns.to_string()),
        name: name.to_string(),
    }
}

/// What the consumer must hear when the object `id` goes from `old` to
/// `new` (`value` is `new`'s resource): a delete, a put, a report.
fn diff(
    (label, id): (&str, &str),
    old: Option<&Entry>,
    new: Option<&Entry>,
    value: Option<Resource>,
    out: &mut Changes,
) {
    let old_kind = old.and_then(|e| e.kind);
    let new_kind = new.and_then(|e| e.kind);
    if let Some(k) = old_kind
        && old_kind != new_kind
    {
        out.updates.push(Update::delete(key_at(k, id)));
    }
    if let (Some(v), Some(n)) = (value, new)
        && (old_kind != new_kind || old.map(|o| o.value) != Some(n.value))
    {
        out.updates.push(Update::put(v));
    }
    let before = old.map_or(&[][..], |e| &e.diagnostics[..]);
    let after = new.map_or(&[][..], |e| &e.diagnostics[..]);
    if before != after {
        let status = match new {
            None => Status::Removed,
            Some(e) if e.kind.is_some() => Status::Read(1),
            Some(_) => Status::Rejected,
        };
        out.reports.push(Report {
            item: label.to_string(),
            status,
            diagnostics: after.to_vec(),
        });
    }
}

impl Store {
    fn record(&mut self, label: &str, id: String, c: Converted, out: &mut Changes) {
        debug_assert!(
            (c.resource.as_ref()).is_none_or(|r| r.key() == key_at(r.kind(), &id)),
            "{id}: the key follows from the object's namespace and name"
        );
        let entry = Entry {
            kind: c.resource.as_ref().map(Resource::kind),
            value: (c.resource.as_ref())
                .map_or(0, |r| crate::datastore::value_hash(r, &mut self.scratch)),
            diagnostics: c.diagnostics,
            listing: self.listing,
        };
        diff(
            (label, &id),
            self.objects.get(&id),
            Some(&entry),
            c.resource,
            out,
        );
        self.objects.insert(id, entry);
    }

    fn forget(&mut self, label: &str, id: &str, out: &mut Changes) {
        if let Some(old) = self.objects.remove(id) {
            diff((label, id), Some(&old), None, None, out);
        }
    }
}

/// `namespace/name` (empty namespace for cluster-scoped kinds).
pub fn key_of<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// One kind's converter state, on its own thread.
struct Converter<K, F> {
    kind: String,
    convert: F,
    store: Store,
    out: mpsc::UnboundedSender<Msg>,
    /// During a relist: its changes, held until it completes so that they
    /// follow its deletions, as one batch of differences.
    relist: Option<Changes>,
    objects: std::marker::PhantomData<fn(K)>,
}

impl<K, F> Converter<K, F>
where
    K: kube::Resource,
    F: Fn(K, &Path) -> Converted,
{
    fn label(&self, id: &str) -> String {
        format!("k8s:{}/{id}", self.kind)
    }

    fn object(&mut self, obj: K, out: &mut Changes) {
        let id = key_of(&obj);
        let label = self.label(&id);
        let converted = (self.convert)(obj, Path::new(&label));
        let out = self.relist.as_mut().unwrap_or(out);
        self.store.record(&label, id, converted, out);
    }

    /// Applies one item: what changed goes into `out`; true when this
    /// completes the kind's first listing.
    fn apply(&mut self, item: Item<K>, out: &mut Changes) -> bool {
        let event = match item {
            Item::Event(e) => e,
            Item::Absent => {
                if let Some(changed) = self.relist.take() {
                    out.updates.extend(changed.updates);
                    out.reports.extend(changed.reports);
                }
                let ids: Vec<String> = self.store.objects.keys().cloned().collect();
                for id in ids {
                    self.store.forget(&self.label(&id), &id, out);
                }
                return !std::mem::replace(&mut self.store.synced, true);
            }
        };
        match event {
            watcher::Event::Init => {
                self.store.listing = self.store.listing.wrapping_add(1);
                if self.store.synced && self.relist.is_none() {
                    self.relist = Some(Changes::default());
                }
            }
            watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => self.object(obj, out),
            watcher::Event::InitDone => {
                let listing = self.store.listing;
                let gone: Vec<String> = (self.store.objects.iter())
                    .filter(|(_, e)| e.listing != listing)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in gone {
                    self.store.forget(&self.label(&id), &id, out);
                }
                if let Some(changed) = self.relist.take() {
                    out.updates.extend(changed.updates);
                    out.reports.extend(changed.reports);
                }
                return !std::mem::replace(&mut self.store.synced, true);
            }
            watcher::Event::Delete(obj) => {
                let id = key_of(&obj);
                self.store.forget(&self.label(&id), &id, out);
            }
        }
        false
    }

    /// Runs until the watch side goes away: whatever is queued is
    /// converted and sent as one message.
    fn run(mut self, mut rx: mpsc::Receiver<Item<K>>) {
        while let Some(first) = rx.blocking_recv() {
            let mut out = Changes::default();
            let mut synced = self.apply(first, &mut out);
            for _ in 1..FOLD {
                if synced {
                    break;
                }
                let Ok(item) = rx.try_recv() else { break };
                synced = self.apply(item, &mut out);
            }
            if !self.send(out) || (synced && self.out.send(Msg::Synced).is_err()) {
                return;
            }
        }
    }

    /// Sends `out` unless it is empty; false when the receiver is gone.
    fn send(&self, out: Changes) -> bool {
        (out.updates.is_empty() && out.reports.is_empty())
            || self.out.send(Msg::Changes(out)).is_ok()
    }
}

/// Starts `kind`'s converter thread; returns where to queue its events.
/// The thread ends when the returned sender is dropped.
pub fn spawn<K, F>(
    kind: &str,
    convert: F,
    out: mpsc::UnboundedSender<Msg>,
) -> std::io::Result<mpsc::Sender<Item<K>>>
where
    K: kube::Resource + Send + 'static,
    F: Fn(K, &Path) -> Converted + Send + 'static,
{
    let (tx, rx) = mpsc::channel(QUEUE);
    let c = Converter {
        kind: kind.to_string(),
        convert,
        store: Store::default(),
        out,
        relist: None,
        objects: std::marker::PhantomData,
    };
    std::thread::Builder::new()
        .name(format!(
            "tortie-k8s-{}",
            kind.split('.').next().unwrap_or(kind)
        ))
        .spawn(move || c.run(rx))?;
    Ok(tx)
}
