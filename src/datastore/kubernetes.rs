//! The Kubernetes datastore: watchers (list, then watch with bookmarks;
//! resume from the last resourceVersion, relist on 410 Gone) for
//! Namespaces, Pods, ServiceAccounts, NetworkPolicies, ClusterNetworkPolicies
//! (policy.networking.k8s.io/v1alpha2, when its CRD is installed) and the Calico kinds,
//! either `projectcalico.org/v3` (tortie's CRDs, so `kubectl apply` of
//! calicoctl YAML works unchanged) or the `crd.projectcalico.org/v1`
//! objects of an existing Calico cluster.
//!
//! Each object is turned back into JSON and read by tortie's own loader, so
//! an invalid object is reported and skipped exactly as a bad file would be.
//! Watcher events pass straight through as per-object updates (whatever is
//! queued goes as one batch; nothing waits: the daemon debounces), and
//! [`Event::Synced`] follows once every kind has been listed completely. A
//! relist after 410 Gone yields only the differences from what was known
//! (nothing at all when nothing changed), and an object whose JSON is
//! unchanged is not parsed again. The source keeps a fingerprint, key and
//! value hash per object, not the objects.
//!
//! Failures: configuration mistakes (no configuration, a missing
//! kubeconfig, 401, 403) make [`spawn`] fail at once ([`connect`]). While
//! the API server is unreachable nothing is sent, the last ruleset stays in
//! force, and each watcher retries after a capped, jittered delay
//! ([`backoff`], at most [`Tuning::backoff_cap`]); its first error is
//! reported, then one summary per [`Tuning::error_summary`]. A Calico kind
//! or ClusterNetworkPolicy the server does not serve (CRD not installed: 404) is taken as empty,
//! noted once, and listed again only every [`Tuning::recheck_absent`] or
//! as soon as a CustomResourceDefinition watch shows its CRD.
//! EndpointSlices (`discovery.k8s.io/v1`, for `services` rule matches) are
//! watched the same way, and tolerated when not served (404) or not
//! granted (403): taken as empty, noted once, listed again on the timer.

pub mod backoff;
pub mod connect;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ResourceExt};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use tokio::sync::Notify;

use self::backoff::CappedBackoff;

use super::{Changes, Event, Report, Status};
use crate::diag::Diagnostic;
use crate::model::load::load_str;
use crate::model::{Resource, ResourceKey, Update};

/// Which API group holds the Calico kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalicoApi {
    /// `projectcalico.org/v3`, served by tortie's CRDs (or Calico's API server).
    V3,
    /// `crd.projectcalico.org/v1`, the storage of a Calico cluster in
    /// Kubernetes-datastore mode.
    CrdV1,
}

impl CalicoApi {
    fn group_version(self) -> (&'static str, &'static str) {
        match self {
            CalicoApi::V3 => ("projectcalico.org", "v3"),
            CalicoApi::CrdV1 => ("crd.projectcalico.org", "v1"),
        }
    }
}

/// The Calico kinds tortie watches: (kind, plural).
pub const CALICO_KINDS: [(&str, &str); 11] = [
    ("GlobalNetworkPolicy", "globalnetworkpolicies"),
    ("NetworkPolicy", "networkpolicies"),
    ("HostEndpoint", "hostendpoints"),
    ("GlobalNetworkSet", "globalnetworksets"),
    ("NetworkSet", "networksets"),
    ("Tier", "tiers"),
    ("Profile", "profiles"),
    ("FelixConfiguration", "felixconfigurations"),
    ("StagedGlobalNetworkPolicy", "stagedglobalnetworkpolicies"),
    ("StagedNetworkPolicy", "stagednetworkpolicies"),
    (
        "StagedKubernetesNetworkPolicy",
        "stagedkubernetesnetworkpolicies",
    ),
];

/// ClusterNetworkPolicy (kubernetes-sigs/network-policy-api): group,
/// version, kind, plural. Its CRD is upstream's and often not installed,
/// so it is watched like the Calico kinds: absent (404) is taken as empty.
pub const CNP_RESOURCE: (&str, &str, &str, &str) = (
    "policy.networking.k8s.io",
    "v1alpha2",
    "ClusterNetworkPolicy",
    "clusternetworkpolicies",
);

fn cnp_resource() -> ApiResource {
    let (group, version, kind, plural) = CNP_RESOURCE;
    api_resource(group, version, kind, plural)
}

/// A custom kind read as dynamic objects.
fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// How the watchers pace themselves. [`Tuning::new`] gives the values
/// `tortie run` uses; tests shorten some of them.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// First retry delay after an error.
    pub backoff_min: Duration,
    /// Longest retry delay: after an outage a watcher is back at most this
    /// long after the server answers again.
    pub backoff_cap: Duration,
    /// How often a Calico kind the server does not serve is listed again.
    pub recheck_absent: Duration,
    /// While a watcher keeps failing, one summary per this interval.
    pub error_summary: Duration,
    /// Extra pause after 401 / 403 while running (credentials or RBAC
    /// changed under a running agent): retrying faster cannot help.
    pub auth_pause: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning::new()
    }
}

impl Tuning {
    pub fn new() -> Tuning {
        Tuning {
            backoff_min: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(2),
            recheck_absent: Duration::from_secs(300),
            error_summary: Duration::from_secs(30),
            auth_pause: Duration::from_secs(30),
        }
    }
}

/// How long [`spawn`]'s access check may take before it gives up and lets
/// the watchers retry (the server may simply be down).
pub const ACCESS_CHECK_DEADLINE: Duration = Duration::from_secs(3);

/// What the source keeps of one object: enough to tell what changed (a
/// fingerprint of its JSON, the key and a hash of the resource it loads
/// to, its diagnostics), never the object itself.
#[derive(Debug, Default, Clone, PartialEq)]
struct Entry {
    fingerprint: u64,
    /// None when the object is invalid (it is reported and skipped).
    key: Option<ResourceKey>,
    value: u64,
    diagnostics: Vec<Diagnostic>,
}

/// An object just loaded: what to keep, and the value to send.
#[derive(Debug)]
struct Fresh {
    entry: Entry,
    resource: Option<Resource>,
}

/// Per kind: synced once, and the objects by `namespace/name`.
#[derive(Debug, Default)]
struct Store {
    synced: bool,
    objects: HashMap<String, Entry>,
}

/// Whether an optional (Calico) kind is currently not served.
#[derive(Default)]
struct Presence {
    absent: AtomicBool,
    noted: AtomicBool,
    /// A built-in kind tortie can do without (EndpointSlice): 403 is taken
    /// like 404 (as empty, noted once, listed again on the timer), and
    /// no CRD can bring it back.
    builtin: bool,
    /// Woken by the CRD watcher when this kind's CRD appears or changes.
    created: Notify,
}

/// What a watcher tells the source's loop.
#[derive(Debug)]
enum Msg {
    Changes(Changes),
    /// This kind's first listing is complete (sent once per kind).
    Synced,
    Note(String),
}

fn fingerprint(json: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    json.hash(&mut h);
    h.finish()
}

/// Loads an object's JSON (labelled `label` in diagnostics); None when its
/// JSON is the same as `old`'s (not parsed again).
fn load_json(label: &str, json: Result<String, String>, old: Option<&Entry>) -> Option<Fresh> {
    let json = match json {
        Ok(json) => json,
        Err(e) => {
            let d = crate::diag::file_error(
                Path::new(label),
                crate::diag::Stage::Decode,
                format!("cannot encode object: {e}"),
            );
            let entry = Entry {
                diagnostics: vec![d],
                ..Entry::default()
            };
            let same = old.is_some_and(|o| *o == entry);
            return (!same).then_some(Fresh {
                entry,
                resource: None,
            });
        }
    };
    let fp = fingerprint(&json);
    if old.is_some_and(|o| o.fingerprint == fp) {
        return None;
    }
    let r = load_str(&json, Path::new(label));
    let resource = r.resources.into_iter().next().map(|l| l.resource);
    let entry = Entry {
        fingerprint: fp,
        key: resource.as_ref().map(Resource::key),
        value: resource.as_ref().map_or(0, super::value_hash),
        diagnostics: r.diagnostics,
    };
    Some(Fresh { entry, resource })
}

/// What the consumer must hear when an object goes from `old` to `new`
/// (`value` is `new`'s resource): a delete, a put, a report.
fn diff(
    label: &str,
    old: Option<&Entry>,
    new: Option<&Entry>,
    value: Option<Resource>,
    out: &mut Changes,
) {
    let old_key = old.and_then(|e| e.key.as_ref());
    let new_key = new.and_then(|e| e.key.as_ref());
    if let Some(k) = old_key
        && old_key != new_key
    {
        out.updates.push(Update::delete(k.clone()));
    }
    if let (Some(v), Some(n)) = (value, new)
        && (old_key != new_key || old.map(|o| o.value) != Some(n.value))
    {
        out.updates.push(Update::put(v));
    }
    let before = old.map_or(&[][..], |e| &e.diagnostics[..]);
    let after = new.map_or(&[][..], |e| &e.diagnostics[..]);
    if before != after {
        let status = match new {
            None => Status::Removed,
            Some(e) if e.key.is_some() => Status::Read(1),
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
    fn record(&mut self, label: &str, id: String, fresh: Fresh, out: &mut Changes) {
        diff(
            label,
            self.objects.get(&id),
            Some(&fresh.entry),
            fresh.resource,
            out,
        );
        self.objects.insert(id, fresh.entry);
    }

    fn forget(&mut self, label: &str, id: &str, out: &mut Changes) {
        if let Some(old) = self.objects.remove(id) {
            diff(label, Some(&old), None, None, out);
        }
    }
}

fn key_of<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Reports a failing watcher's first error, then at most one summary per
/// interval, until it succeeds again (or has had no error for
/// [`EPISODE_GAP`]: a resumed watch that sees no change sends no event).
struct ErrorGate {
    kind: String,
    every: Duration,
    since: Option<Instant>,
    last: Instant,
    latest: Instant,
    quiet: usize,
}

/// Errors further apart than this belong to different outages.
const EPISODE_GAP: Duration = Duration::from_secs(10);

impl ErrorGate {
    fn new(kind: &str, every: Duration) -> ErrorGate {
        ErrorGate {
            kind: kind.to_string(),
            every,
            since: None,
            last: Instant::now(),
            latest: Instant::now(),
            quiet: 0,
        }
    }

    fn report(&mut self, error: &str) -> Option<String> {
        let now = Instant::now();
        if now.duration_since(self.latest) > EPISODE_GAP {
            self.since = None;
        }
        self.latest = now;
        let Some(since) = self.since else {
            self.since = Some(now);
            self.last = now;
            self.quiet = 0;
            return Some(format!("{}: {error}", self.kind));
        };
        self.quiet += 1;
        if now.duration_since(self.last) < self.every {
            return None;
        }
        let (n, for_) = (self.quiet, now.duration_since(since).as_secs());
        self.last = now;
        self.quiet = 0;
        Some(format!(
            "{}: still failing after {for_}s ({n} more errors since the last report): {error}",
            self.kind
        ))
    }

    fn ok(&mut self) {
        self.since = None;
    }
}

fn api_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

/// One kind's watcher: how it encodes objects for the loader, where it
/// sends changes, how it paces itself.
struct KindWatch<K: kube::Resource, F> {
    kind: String,
    api: Api<K>,
    /// The object as JSON for the loader.
    encode: F,
    out: tokio::sync::mpsc::UnboundedSender<Msg>,
    tuning: Tuning,
    /// Set for kinds that may be absent (Calico CRDs not installed).
    optional: Option<Arc<Presence>>,
    /// Wakes the CRD watcher the first time a kind is found absent.
    crd_watch: Arc<Notify>,
}

/// How a watcher stream ended.
enum Ended {
    /// The kind is not served (404): park until a re-check is due.
    Absent,
    /// The stream ended (the runtime is shutting down).
    Closed,
}

impl<K, F> KindWatch<K, F>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(&K) -> Result<String, String>,
{
    /// Runs until the runtime stops: watch; while absent, wait for a
    /// re-check (timer or CRD event); watch again.
    async fn run(self) {
        let mut gate = ErrorGate::new(&self.kind, self.tuning.error_summary);
        let mut store = Store::default();
        loop {
            if let Ended::Closed = self.watch(&mut store, &mut gate).await {
                return;
            }
            let Some(p) = &self.optional else { return };
            tokio::select! {
                _ = tokio::time::sleep(self.tuning.recheck_absent) => {}
                _ = p.created.notified() => {}
            }
        }
    }

    fn send(&self, msg: Msg) {
        let _ = self.out.send(msg);
    }

    fn label(&self, id: &str) -> String {
        format!("k8s:{}/{id}", self.kind)
    }

    fn load(&self, obj: &K, old: Option<&Entry>) -> Option<Fresh> {
        load_json(&self.label(&key_of(obj)), (self.encode)(obj), old)
    }

    /// Applies one watcher event to the store: what changed goes into
    /// `out`; true when this completes the kind's first listing. A relist
    /// (after 410 Gone) yields only the differences from what was known.
    fn apply_event(
        &self,
        store: &mut Store,
        buffer: &mut HashMap<String, Option<Fresh>>,
        event: watcher::Event<K>,
        out: &mut Changes,
    ) -> bool {
        match event {
            watcher::Event::Init => buffer.clear(),
            watcher::Event::InitApply(obj) => {
                let id = key_of(&obj);
                let fresh = self.load(&obj, store.objects.get(&id));
                buffer.insert(id, fresh);
            }
            watcher::Event::InitDone => {
                let listed = std::mem::take(buffer);
                let gone: Vec<String> = store
                    .objects
                    .keys()
                    .filter(|id| !listed.contains_key(*id))
                    .cloned()
                    .collect();
                for id in gone {
                    store.forget(&self.label(&id), &id, out);
                }
                for (id, fresh) in listed {
                    if let Some(f) = fresh {
                        store.record(&self.label(&id), id, f, out);
                    }
                }
                return !std::mem::replace(&mut store.synced, true);
            }
            watcher::Event::Apply(obj) => {
                let id = key_of(&obj);
                if let Some(f) = self.load(&obj, store.objects.get(&id)) {
                    store.record(&self.label(&id), id, f, out);
                }
            }
            watcher::Event::Delete(obj) => {
                let id = key_of(&obj);
                store.forget(&self.label(&id), &id, out);
            }
        }
        false
    }

    async fn watch(&self, store: &mut Store, gate: &mut ErrorGate) -> Ended {
        let backoff = CappedBackoff::new(self.tuning.backoff_min, self.tuning.backoff_cap);
        let mut stream = watcher(self.api.clone(), watcher::Config::default())
            .backoff(backoff)
            .boxed();
        let mut buffer = HashMap::new();
        loop {
            let next = stream.try_next().await;
            let event = match next {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ended::Closed,
                Err(e) => match self.failed(&e, store, gate).await {
                    Some(ended) => return ended,
                    None => continue,
                },
            };
            gate.ok();
            // `Init` comes before the first LIST is answered: it does not
            // show that the kind is served.
            if let Some(p) = &self.optional
                && !matches!(event, watcher::Event::Init)
            {
                p.absent.store(false, Ordering::Relaxed);
                p.noted.store(false, Ordering::Relaxed);
            }
            let mut out = Changes::default();
            let synced = self.apply_event(store, &mut buffer, event, &mut out);
            if !out.updates.is_empty() || !out.reports.is_empty() {
                self.send(Msg::Changes(out));
            }
            if synced {
                self.send(Msg::Synced);
            }
        }
    }

    /// Handles a watcher error; `Some` when the kind turned out absent.
    async fn failed(
        &self,
        e: &watcher::Error,
        store: &mut Store,
        gate: &mut ErrorGate,
    ) -> Option<Ended> {
        let code = api_code(e);
        if let (Some(p), Some(404)) = (&self.optional, code) {
            self.absent(p, store, 404);
            return Some(Ended::Absent);
        }
        if let (Some(p), Some(403)) = (&self.optional, code)
            && p.builtin
        {
            self.absent(p, store, 403);
            return Some(Ended::Absent);
        }
        if let Some(msg) = gate.report(&e.to_string()) {
            self.send(Msg::Note(msg));
        }
        if matches!(code, Some(401 | 403)) {
            tokio::time::sleep(self.tuning.auth_pause).await;
        }
        None
    }

    /// Takes the kind as empty (deletes for what it had) and notes it once
    /// per absence.
    fn absent(&self, p: &Presence, store: &mut Store, code: u16) {
        let mut out = Changes::default();
        let ids: Vec<String> = store.objects.keys().cloned().collect();
        for id in ids {
            store.forget(&self.label(&id), &id, &mut out);
        }
        if !out.updates.is_empty() || !out.reports.is_empty() {
            self.send(Msg::Changes(out));
        }
        if !std::mem::replace(&mut store.synced, true) {
            self.send(Msg::Synced);
        }
        p.absent.store(true, Ordering::Relaxed);
        if !p.noted.swap(true, Ordering::Relaxed) {
            self.send(Msg::Note(absent_note(
                &self.kind,
                p.builtin,
                code,
                self.tuning.recheck_absent,
            )));
        }
        if !p.builtin {
            self.crd_watch.notify_one();
        }
    }
}

/// What an operator hears, once, about a kind taken as empty.
fn absent_note(kind: &str, builtin: bool, code: u16, recheck: Duration) -> String {
    match (builtin, code) {
        (true, 403) => format!(
            "{kind}: tortie may not list or watch it (403 Forbidden): taken as empty, so `services` \
             rule matches hold no endpoints; grant get, list and watch on \
             endpointslices.discovery.k8s.io (manifests/rbac.yaml does); listed again every {recheck:?}"
        ),
        (true, _) => format!(
            "{kind}: not served by the API server (discovery.k8s.io/v1 needs Kubernetes 1.21 or \
             later): taken as empty, so `services` rule matches hold no endpoints; listed again every {recheck:?}"
        ),
        (false, _) => format!(
            "{kind}: not served by the API server (its CustomResourceDefinition is not \
             installed): taken as empty; listed again every {recheck:?} or when the CRD is created"
        ),
    }
}

/// Watches CustomResourceDefinitions (metadata only) once some kind is
/// absent, and wakes an absent kind's watcher when its CRD shows up. If
/// tortie may not watch CRDs, says so once and re-checks rarely.
async fn watch_crds(
    client: kube::Client,
    kinds: BTreeMap<String, Arc<Presence>>,
    start: Arc<Notify>,
    out: tokio::sync::mpsc::UnboundedSender<Msg>,
    tuning: Tuning,
) {
    start.notified().await;
    let mut gate = ErrorGate::new("CustomResourceDefinition", tuning.error_summary);
    let mut noted = false;
    loop {
        let api: Api<PartialObjectMeta<CustomResourceDefinition>> = Api::all(client.clone());
        let backoff = CappedBackoff::new(tuning.backoff_min, tuning.backoff_cap);
        let mut stream = watcher(api, watcher::Config::default())
            .backoff(backoff)
            .boxed();
        loop {
            match stream.try_next().await {
                Ok(Some(watcher::Event::Apply(m) | watcher::Event::InitApply(m))) => {
                    gate.ok();
                    if let Some(p) = kinds.get(&m.name_any())
                        && p.absent.load(Ordering::Relaxed)
                    {
                        p.created.notify_one();
                    }
                }
                Ok(Some(_)) => gate.ok(),
                Ok(None) => return,
                Err(e) if matches!(api_code(&e), Some(401 | 403 | 404)) => {
                    if !std::mem::replace(&mut noted, true) {
                        let _ = out.send(Msg::Note(format!(
                            "cannot watch CustomResourceDefinitions ({e}): absent Calico kinds \
                             are listed again only every {:?}; grant get, list and watch on \
                             customresourcedefinitions.apiextensions.k8s.io to notice new CRDs at once",
                            tuning.recheck_absent
                        )));
                    }
                    break;
                }
                Err(e) => {
                    if let Some(msg) = gate.report(&e.to_string()) {
                        let _ = out.send(Msg::Note(msg));
                    }
                }
            }
        }
        tokio::time::sleep(tuning.recheck_absent).await;
    }
}

fn calico_resource(calico: CalicoApi, kind: &str, plural: &str) -> ApiResource {
    let (group, version) = calico.group_version();
    api_resource(group, version, kind, plural)
}

/// Every resource tortie lists, for the access check.
pub fn watched_resources(calico: CalicoApi) -> Vec<ApiResource> {
    let mut out = vec![
        ApiResource::erase::<Namespace>(&()),
        ApiResource::erase::<Pod>(&()),
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<NetworkPolicy>(&()),
    ];
    out.extend(
        CALICO_KINDS
            .iter()
            .map(|(kind, plural)| calico_resource(calico, kind, plural)),
    );
    out.push(cnp_resource());
    out
}

/// The watcher tasks being started, and what they share.
struct Watchers {
    client: kube::Client,
    out: tokio::sync::mpsc::UnboundedSender<Msg>,
    tuning: Tuning,
    crd_start: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watchers {
    fn spawn<K, F>(&mut self, kind: String, api: Api<K>, encode: F, optional: Option<Arc<Presence>>)
    where
        K: kube::Resource
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        F: Fn(&K) -> Result<String, String> + Send + Sync + 'static,
    {
        let w = KindWatch {
            kind,
            api,
            encode,
            out: self.out.clone(),
            tuning: self.tuning.clone(),
            optional,
            crd_watch: self.crd_start.clone(),
        };
        self.tasks.push(tokio::spawn(w.run()));
    }

    /// A built-in Kubernetes kind, labelled `name`.
    fn typed<K>(&mut self, name: &'static str)
    where
        K: kube::Resource
            + Clone
            + Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default,
    {
        let encode = |o: &K| serde_json::to_string(o).map_err(|e| e.to_string());
        let api = Api::all(self.client.clone());
        self.spawn(name.to_string(), api, encode, None);
    }

    /// EndpointSlices (for `services` rule matches): optional, since an old
    /// API server may not serve them and RBAC may not grant them.
    fn endpoint_slices(&mut self) {
        let encode = |o: &EndpointSlice| serde_json::to_string(o).map_err(|e| e.to_string());
        let presence = Arc::new(Presence {
            builtin: true,
            ..Presence::default()
        });
        let api = Api::all(self.client.clone());
        self.spawn(
            ENDPOINT_SLICE_LABEL.to_string(),
            api,
            encode,
            Some(presence),
        );
    }

    /// The Calico kinds (optional: their CRDs may be absent); returns their
    /// presence flags by CRD name (`plural.group`).
    fn calico(&mut self, calico: CalicoApi) -> BTreeMap<String, Arc<Presence>> {
        let mut presences = BTreeMap::new();
        for (kind, plural) in CALICO_KINDS {
            let ar = calico_resource(calico, kind, plural);
            let (crd, presence) = self.optional(&ar);
            presences.insert(crd, presence);
        }
        presences
    }

    /// A custom kind whose CRD may be absent, read as dynamic objects;
    /// returns its CRD name (`plural.group`) and presence flag.
    fn optional(&mut self, ar: &ApiResource) -> (String, Arc<Presence>) {
        let label = format!("{}.{}", ar.kind, ar.group);
        let presence = Arc::new(Presence::default());
        let types = kube::api::TypeMeta {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
        };
        let encode = move |o: &DynamicObject| {
            // List items may come without apiVersion/kind: set them.
            let mut o = o.clone();
            o.types = Some(types.clone());
            serde_json::to_string(&o).map_err(|e| e.to_string())
        };
        let api = Api::all_with(self.client.clone(), ar);
        self.spawn(label, api, encode, Some(presence.clone()));
        (format!("{}.{}", ar.plural, ar.group), presence)
    }
}

/// The EndpointSlice watcher's name in notes and item labels.
const ENDPOINT_SLICE_LABEL: &str = "EndpointSlice.discovery.k8s.io";

/// Most watcher messages folded into one batch of changes.
const BATCH: usize = 10_000;

/// Watches everything and sends changes to `out` as they come (whatever
/// is already queued goes as one batch; nothing waits), then
/// [`Event::Synced`] once every kind has been listed, until the receiver
/// goes away.
pub async fn run(
    client: kube::Client,
    calico: CalicoApi,
    tuning: Tuning,
    out: std::sync::mpsc::Sender<Event>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Msg>();
    let mut w = Watchers {
        client: client.clone(),
        out: tx,
        tuning: tuning.clone(),
        crd_start: Arc::new(Notify::new()),
        tasks: Vec::new(),
    };
    w.typed::<Namespace>("Namespace");
    w.typed::<Pod>("Pod");
    w.typed::<ServiceAccount>("ServiceAccount");
    w.typed::<NetworkPolicy>("NetworkPolicy.networking.k8s.io");
    w.endpoint_slices();
    let mut presences = w.calico(calico);
    let (crd, presence) = w.optional(&cnp_resource());
    presences.insert(crd, presence);
    let kinds = w.tasks.len();
    let crds = watch_crds(
        client,
        presences,
        w.crd_start.clone(),
        w.out.clone(),
        tuning,
    );
    w.tasks.push(tokio::spawn(crds));
    let Watchers { tasks, out: tx, .. } = w;
    drop(tx);
    let mut synced = 0;
    while let Some(first) = rx.recv().await {
        let mut msgs = vec![first];
        while msgs.len() < BATCH
            && let Ok(m) = rx.try_recv()
        {
            msgs.push(m);
        }
        if forward(msgs, &mut synced, kinds, &out).is_err() {
            break;
        }
    }
    for t in tasks {
        t.abort();
    }
}

/// Sends a batch of watcher messages on, in order; `Synced` goes out when
/// the last kind completes its first listing.
fn forward(
    msgs: Vec<Msg>,
    synced: &mut usize,
    kinds: usize,
    out: &std::sync::mpsc::Sender<Event>,
) -> Result<(), std::sync::mpsc::SendError<Event>> {
    let mut batch = Changes::default();
    let flush = |batch: &mut Changes| {
        let b = std::mem::take(batch);
        if b.updates.is_empty() && b.reports.is_empty() {
            return Ok(());
        }
        out.send(Event::Changes(b))
    };
    for m in msgs {
        match m {
            Msg::Changes(c) => {
                batch.updates.extend(c.updates);
                batch.reports.extend(c.reports);
            }
            Msg::Synced => {
                *synced += 1;
                if *synced == kinds {
                    flush(&mut batch)?;
                    out.send(Event::Synced)?;
                }
            }
            Msg::Note(n) => out.send(Event::Note(n))?,
        }
    }
    flush(&mut batch)
}

/// Connects (in-cluster configuration or KUBECONFIG), checks that the API
/// server accepts tortie's credentials and RBAC, then starts the source on
/// its own thread with its own runtime. A configuration mistake is an
/// error here, at once, saying what is missing and what to do; an API
/// server that cannot be reached is not (the watchers retry it).
pub fn spawn(
    calico: CalicoApi,
    out: std::sync::mpsc::Sender<Event>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            std::io::Error::other(format!("cannot start the Kubernetes client runtime: {e}"))
        })?;
    let client = rt
        .block_on(async {
            let client = connect::client().await?;
            let resources = watched_resources(calico);
            connect::check_access(&client, &resources, ACCESS_CHECK_DEADLINE).await?;
            Ok::<_, connect::ConnectError>(client)
        })
        .map_err(std::io::Error::other)?;
    std::thread::Builder::new()
        .name("tortie-kubernetes".into())
        .spawn(move || rt.block_on(run(client, calico, Tuning::new(), out)))
}

#[cfg(test)]
mod mock;
#[cfg(test)]
mod tests;
