//! The Kubernetes datastore: watchers (list, then watch with bookmarks;
//! resume from the last resourceVersion, relist on 410 Gone) for
//! Namespaces, Pods, ServiceAccounts, NetworkPolicies and the Calico kinds,
//! either `projectcalico.org/v3` (tortie's CRDs, so `kubectl apply` of
//! calicoctl YAML works unchanged) or the `crd.projectcalico.org/v1`
//! objects of an existing Calico cluster.
//!
//! Each object is turned back into JSON and read by tortie's own loader, so
//! an invalid object is reported and skipped exactly as a bad file would be.
//! A snapshot is sent only once every kind has been listed completely;
//! after that, on every change that alters what was loaded (bursts are
//! coalesced; a relist that finds what was already known sends nothing, and
//! an object whose JSON is unchanged is not parsed again).
//!
//! Failures: configuration mistakes (no configuration, a missing
//! kubeconfig, 401, 403) make [`spawn`] fail at once ([`connect`]). While
//! the API server is unreachable nothing is sent, the last ruleset stays in
//! force, and each watcher retries after a capped, jittered delay
//! ([`backoff`], at most [`Tuning::backoff_cap`]); its first error is
//! reported, then one summary per [`Tuning::error_summary`]. A Calico kind
//! the server does not serve (CRD not installed: 404) is taken as empty,
//! noted once, and listed again only every [`Tuning::recheck_absent`] or
//! as soon as a CustomResourceDefinition watch shows its CRD.

pub mod backoff;
pub mod connect;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ResourceExt};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use tokio::sync::Notify;

use self::backoff::CappedBackoff;

use crate::diag::Diagnostic;
use crate::model::Resource;
use crate::model::load::load_str;

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
pub const CALICO_KINDS: [(&str, &str); 8] = [
    ("GlobalNetworkPolicy", "globalnetworkpolicies"),
    ("NetworkPolicy", "networkpolicies"),
    ("HostEndpoint", "hostendpoints"),
    ("GlobalNetworkSet", "globalnetworksets"),
    ("NetworkSet", "networksets"),
    ("Tier", "tiers"),
    ("Profile", "profiles"),
    ("FelixConfiguration", "felixconfigurations"),
];

/// What the source reports to the daemon.
#[derive(Debug)]
pub enum SourceEvent {
    /// Everything currently known. `diagnostics` covers invalid objects.
    Snapshot {
        resources: Vec<Resource>,
        diagnostics: Vec<Diagnostic>,
    },
    /// A watcher error (the watcher retries with backoff).
    Error(String),
}

/// How the watchers pace themselves. [`Tuning::new`] gives the values
/// `tortie run` uses; tests shorten some of them.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Quiet time that ends a burst of changes before a snapshot is sent.
    pub debounce: Duration,
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

impl Tuning {
    pub fn new(debounce: Duration) -> Tuning {
        Tuning {
            debounce,
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

/// One object as loaded: its resources (none if invalid) and diagnostics,
/// and a fingerprint of its JSON so an unchanged object is not re-parsed.
#[derive(Debug, Default, Clone)]
struct Entry {
    fingerprint: u64,
    resources: Vec<Resource>,
    diagnostics: Vec<Diagnostic>,
}

impl PartialEq for Entry {
    /// Equal when they load the same: what the daemon would compute from.
    fn eq(&self, other: &Entry) -> bool {
        self.resources == other.resources && self.diagnostics == other.diagnostics
    }
}

/// Per kind: synced once, and the objects by `namespace/name`.
#[derive(Debug, Default)]
struct Store {
    synced: bool,
    objects: BTreeMap<String, Entry>,
}

#[derive(Default)]
struct Shared {
    stores: Mutex<BTreeMap<String, Store>>,
    changed: Notify,
}

/// Whether an optional (Calico) kind is currently not served.
#[derive(Default)]
struct Presence {
    absent: AtomicBool,
    noted: AtomicBool,
    /// Woken by the CRD watcher when this kind's CRD appears or changes.
    created: Notify,
}

fn fingerprint(json: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    json.hash(&mut h);
    h.finish()
}

/// Loads `obj`, reusing `old` when its JSON is unchanged.
fn load_object<T: Serialize>(label: &str, obj: &T, old: Option<&Entry>) -> Entry {
    match serde_json::to_string(obj) {
        Ok(json) => {
            let fp = fingerprint(&json);
            if let Some(old) = old.filter(|o| o.fingerprint == fp) {
                return old.clone();
            }
            let r = load_str(&json, Path::new(label));
            Entry {
                fingerprint: fp,
                resources: r.resources.into_iter().map(|l| l.resource).collect(),
                diagnostics: r.diagnostics,
            }
        }
        Err(e) => Entry {
            fingerprint: 0,
            resources: Vec::new(),
            diagnostics: vec![crate::diag::file_error(
                Path::new(label),
                crate::diag::Stage::Decode,
                format!("cannot encode object: {e}"),
            )],
        },
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

/// One kind's watcher: where it stores, how it loads, how it reports.
struct KindWatch<K: kube::Resource, F> {
    shared: Arc<Shared>,
    kind: String,
    api: Api<K>,
    to_entry: F,
    errors: tokio::sync::mpsc::UnboundedSender<String>,
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

/// Applies one watcher event to the store; true if what is loaded changed.
fn apply_event<K, F>(
    store: &mut Store,
    buffer: &mut BTreeMap<String, Entry>,
    event: watcher::Event<K>,
    to_entry: &F,
) -> bool
where
    K: kube::Resource,
    F: Fn(&K, Option<&Entry>) -> Entry,
{
    match event {
        watcher::Event::Init => {
            buffer.clear();
            false
        }
        watcher::Event::InitApply(obj) => {
            let key = key_of(&obj);
            let entry = to_entry(&obj, store.objects.get(&key));
            buffer.insert(key, entry);
            false
        }
        watcher::Event::InitDone => {
            // A relist replaces the store; objects missing from it were
            // deleted meanwhile. Only a difference is a change.
            let fresh = std::mem::take(buffer);
            let changed = !store.synced || fresh != store.objects;
            store.objects = fresh;
            store.synced = true;
            changed
        }
        watcher::Event::Apply(obj) => {
            let key = key_of(&obj);
            let entry = to_entry(&obj, store.objects.get(&key));
            store.objects.insert(key, entry.clone()) != Some(entry)
        }
        watcher::Event::Delete(obj) => store.objects.remove(&key_of(&obj)).is_some(),
    }
}

impl<K, F> KindWatch<K, F>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(&K, Option<&Entry>) -> Entry,
{
    /// Runs until the runtime stops: watch; while absent, wait for a
    /// re-check (timer or CRD event); watch again.
    async fn run(self) {
        let mut gate = ErrorGate::new(&self.kind, self.tuning.error_summary);
        loop {
            if let Ended::Closed = self.watch(&mut gate).await {
                return;
            }
            let Some(p) = &self.optional else { return };
            tokio::select! {
                _ = tokio::time::sleep(self.tuning.recheck_absent) => {}
                _ = p.created.notified() => {}
            }
        }
    }

    fn send(&self, msg: String) {
        let _ = self.errors.send(msg);
    }

    async fn watch(&self, gate: &mut ErrorGate) -> Ended {
        let backoff = CappedBackoff::new(self.tuning.backoff_min, self.tuning.backoff_cap);
        let mut stream = watcher(self.api.clone(), watcher::Config::default())
            .backoff(backoff)
            .boxed();
        let mut buffer: BTreeMap<String, Entry> = BTreeMap::new();
        loop {
            let next = stream.try_next().await;
            let event = match next {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ended::Closed,
                Err(e) => match self.failed(&e, gate).await {
                    Some(ended) => return ended,
                    None => continue,
                },
            };
            gate.ok();
            if let Some(p) = &self.optional {
                p.absent.store(false, Ordering::Relaxed);
                p.noted.store(false, Ordering::Relaxed);
            }
            let changed = {
                let mut stores = self.shared.stores.lock().unwrap_or_else(|e| e.into_inner());
                let store = stores.entry(self.kind.clone()).or_default();
                apply_event(store, &mut buffer, event, &self.to_entry)
            };
            if changed {
                self.shared.changed.notify_one();
            }
        }
    }

    /// Handles a watcher error; `Some` when the kind turned out absent.
    async fn failed(&self, e: &watcher::Error, gate: &mut ErrorGate) -> Option<Ended> {
        let code = api_code(e);
        if let (Some(p), Some(404)) = (&self.optional, code) {
            self.absent(p);
            return Some(Ended::Absent);
        }
        if let Some(msg) = gate.report(&e.to_string()) {
            self.send(msg);
        }
        if matches!(code, Some(401 | 403)) {
            tokio::time::sleep(self.tuning.auth_pause).await;
        }
        None
    }

    /// Takes the kind as empty and notes it once per absence.
    fn absent(&self, p: &Presence) {
        let changed = {
            let mut stores = self.shared.stores.lock().unwrap_or_else(|e| e.into_inner());
            let store = stores.entry(self.kind.clone()).or_default();
            let changed = !store.synced || !store.objects.is_empty();
            store.objects.clear();
            store.synced = true;
            changed
        };
        p.absent.store(true, Ordering::Relaxed);
        if !p.noted.swap(true, Ordering::Relaxed) {
            self.send(format!(
                "{}: not served by the API server (its CustomResourceDefinition is not \
                 installed): taken as empty; listed again every {:?} or when the CRD is created",
                self.kind, self.tuning.recheck_absent
            ));
        }
        self.crd_watch.notify_one();
        if changed {
            self.shared.changed.notify_one();
        }
    }
}

/// Watches CustomResourceDefinitions (metadata only) once some kind is
/// absent, and wakes an absent kind's watcher when its CRD shows up. If
/// tortie may not watch CRDs, says so once and re-checks rarely.
async fn watch_crds(
    client: kube::Client,
    kinds: BTreeMap<String, Arc<Presence>>,
    start: Arc<Notify>,
    errors: tokio::sync::mpsc::UnboundedSender<String>,
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
                        let _ = errors.send(format!(
                            "cannot watch CustomResourceDefinitions ({e}): absent Calico kinds \
                             are listed again only every {:?}; grant get, list and watch on \
                             customresourcedefinitions.apiextensions.k8s.io to notice new CRDs at once",
                            tuning.recheck_absent
                        ));
                    }
                    break;
                }
                Err(e) => {
                    if let Some(msg) = gate.report(&e.to_string()) {
                        let _ = errors.send(msg);
                    }
                }
            }
        }
        tokio::time::sleep(tuning.recheck_absent).await;
    }
}

/// The snapshot, if every kind has been listed.
fn snapshot(shared: &Shared, kinds: usize) -> Option<SourceEvent> {
    let stores = shared.stores.lock().unwrap_or_else(|e| e.into_inner());
    if stores.len() < kinds || stores.values().any(|s| !s.synced) {
        return None;
    }
    let mut resources = Vec::new();
    let mut diagnostics = Vec::new();
    for store in stores.values() {
        for e in store.objects.values() {
            resources.extend(e.resources.iter().cloned());
            diagnostics.extend(e.diagnostics.iter().cloned());
        }
    }
    Some(SourceEvent::Snapshot {
        resources,
        diagnostics,
    })
}

fn calico_resource(calico: CalicoApi, kind: &str, plural: &str) -> ApiResource {
    let (group, version) = calico.group_version();
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
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
    out
}

/// The watcher tasks being started, and what they share.
struct Watchers {
    client: kube::Client,
    shared: Arc<Shared>,
    errors: tokio::sync::mpsc::UnboundedSender<String>,
    tuning: Tuning,
    crd_start: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watchers {
    fn spawn<K, F>(
        &mut self,
        kind: String,
        api: Api<K>,
        to_entry: F,
        optional: Option<Arc<Presence>>,
    ) where
        K: kube::Resource
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        F: Fn(&K, Option<&Entry>) -> Entry + Send + Sync + 'static,
    {
        let w = KindWatch {
            shared: self.shared.clone(),
            kind,
            api,
            to_entry,
            errors: self.errors.clone(),
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
        let to_entry = move |o: &K, old: Option<&Entry>| {
            load_object(&format!("k8s:{name}/{}", key_of(o)), o, old)
        };
        self.spawn(
            name.to_string(),
            Api::all(self.client.clone()),
            to_entry,
            None,
        );
    }

    /// The Calico kinds (optional: their CRDs may be absent); returns their
    /// presence flags by CRD name (`plural.group`).
    fn calico(&mut self, calico: CalicoApi) -> BTreeMap<String, Arc<Presence>> {
        let mut presences = BTreeMap::new();
        for (kind, plural) in CALICO_KINDS {
            let ar = calico_resource(calico, kind, plural);
            let label = format!("{kind}.{}", ar.group);
            let presence = Arc::new(Presence::default());
            presences.insert(format!("{plural}.{}", ar.group), presence.clone());
            let types = kube::api::TypeMeta {
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
            };
            let name = label.clone();
            let to_entry = move |o: &DynamicObject, old: Option<&Entry>| {
                // List items may come without apiVersion/kind: set them.
                let mut o = o.clone();
                o.types = Some(types.clone());
                load_object(&format!("k8s:{name}/{}", key_of(&o)), &o, old)
            };
            let api = Api::all_with(self.client.clone(), &ar);
            self.spawn(label, api, to_entry, Some(presence));
        }
        presences
    }
}

/// Watches everything and sends snapshots to `out` until the receiver goes
/// away.
pub async fn run(
    client: kube::Client,
    calico: CalicoApi,
    tuning: Tuning,
    out: std::sync::mpsc::Sender<SourceEvent>,
) {
    let (errors, mut err_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut w = Watchers {
        client: client.clone(),
        shared: Arc::new(Shared::default()),
        errors,
        tuning: tuning.clone(),
        crd_start: Arc::new(Notify::new()),
        tasks: Vec::new(),
    };
    w.typed::<Namespace>("Namespace");
    w.typed::<Pod>("Pod");
    w.typed::<ServiceAccount>("ServiceAccount");
    w.typed::<NetworkPolicy>("NetworkPolicy.networking.k8s.io");
    let presences = w.calico(calico);
    let kinds = w.tasks.len();
    let crds = watch_crds(
        client,
        presences,
        w.crd_start.clone(),
        w.errors.clone(),
        tuning.clone(),
    );
    w.tasks.push(tokio::spawn(crds));
    let Watchers { shared, tasks, .. } = w;
    loop {
        tokio::select! {
            _ = shared.changed.notified() => {
                tokio::time::sleep(tuning.debounce).await;
                if let Some(ev) = snapshot(&shared, kinds)
                    && out.send(ev).is_err()
                {
                    break;
                }
            }
            Some(e) = err_rx.recv() => {
                if out.send(SourceEvent::Error(e)).is_err() {
                    break;
                }
            }
        }
    }
    for t in tasks {
        t.abort();
    }
}

/// Connects (in-cluster configuration or KUBECONFIG), checks that the API
/// server accepts tortie's credentials and RBAC, then starts the source on
/// its own thread with its own runtime. A configuration mistake is an
/// error here, at once, saying what is missing and what to do; an API
/// server that cannot be reached is not (the watchers retry it).
pub fn spawn(
    calico: CalicoApi,
    debounce: Duration,
    out: std::sync::mpsc::Sender<SourceEvent>,
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
        .spawn(move || rt.block_on(run(client, calico, Tuning::new(debounce), out)))
}

#[cfg(test)]
mod mock;
#[cfg(test)]
mod tests;
