//! The Kubernetes datastore: watchers (list, then watch with bookmarks;
//! resume from the last resourceVersion, relist on 410 Gone) for
//! Namespaces, Pods, ServiceAccounts, NetworkPolicies, ClusterNetworkPolicies
//! (policy.networking.k8s.io/v1alpha2, when its CRD is installed) and the Calico kinds,
//! either `projectcalico.org/v3` (tortie's CRDs, so `kubectl apply` of
//! calicoctl YAML works unchanged) or the `crd.projectcalico.org/v1`
//! objects of an existing Calico cluster.
//!
//! Each object is converted straight into tortie's model, never rendered
//! as text ([`convert`]): the built-in kinds from their typed values, the
//! custom kinds by loading their JSON value as a document, so an invalid
//! object is reported (kind, namespace/name, field path, what to do) and
//! skipped as a bad file would be. Pods are decoded slim ([`pod`]: only the
//! fields tortie reads are built). Conversion runs on a thread per kind
//! ([`store`]) behind a bounded queue, so a watch stream (and its next
//! LIST page) does not wait for it. Watcher events pass straight through
//! as per-object updates (whatever is queued goes as one batch; nothing
//! waits: the daemon debounces), and [`Event::Synced`] follows once every
//! kind has been listed completely. A relist after 410 Gone yields only
//! the differences from what was known (nothing at all when nothing
//! changed). The source keeps a key, a value hash and the diagnostics per
//! object, not the objects.
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
mod convert;
mod pod;
mod store;

use std::collections::BTreeMap;
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
use tokio::sync::Notify;

use self::backoff::CappedBackoff;
use self::convert::{Converted, ToModel};

use super::{Changes, Event};

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

/// One kind's watcher: how it converts objects, where it sends changes,
/// how it paces itself. The watch stream runs here; conversion and the
/// per-object state live on the kind's converter thread ([`store`]).
struct KindWatch<K: kube::Resource, F> {
    kind: String,
    api: Api<K>,
    /// The object as a resource (moved to the converter thread at start).
    convert: Option<F>,
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

/// Where a watch stream queues its events for the converter.
type Queue<K> = tokio::sync::mpsc::Sender<store::Item<K>>;

impl<K, F> KindWatch<K, F>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(K, &Path) -> convert::Converted + Send + 'static,
{
    /// Runs until the runtime stops: starts the converter; watch; while
    /// absent, wait for a re-check (timer or CRD event); watch again.
    async fn run(mut self) {
        let Some(convert) = self.convert.take() else {
            return;
        };
        let queue = match store::spawn(&self.kind, convert, self.out.clone()) {
            Ok(q) => q,
            Err(e) => {
                tracing::error!(kind = %self.kind, error = %e, "cannot start the converter thread");
                self.send(Msg::Note(format!(
                    "{}: cannot start its converter thread ({e}): this kind is not read; \
                     restart tortie (the system may be out of threads or memory)",
                    self.kind
                )));
                return;
            }
        };
        let mut gate = ErrorGate::new(&self.kind, self.tuning.error_summary);
        loop {
            if let Ended::Closed = self.watch(&queue, &mut gate).await {
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

    /// Hands every event to the converter as it comes: the stream (and the
    /// next LIST page) waits only when the converter is [`store::QUEUE`]
    /// events behind.
    async fn watch(&self, queue: &Queue<K>, gate: &mut ErrorGate) -> Ended {
        let backoff = CappedBackoff::new(self.tuning.backoff_min, self.tuning.backoff_cap);
        let mut stream = watcher(self.api.clone(), watcher::Config::default())
            .backoff(backoff)
            .boxed();
        loop {
            let next = stream.try_next().await;
            let event = match next {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ended::Closed,
                Err(e) => match self.failed(&e, queue, gate).await {
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
            if queue.send(store::Item::Event(event)).await.is_err() {
                return Ended::Closed;
            }
        }
    }

    /// Handles a watcher error; `Some` when the kind turned out absent.
    async fn failed(
        &self,
        e: &watcher::Error,
        queue: &Queue<K>,
        gate: &mut ErrorGate,
    ) -> Option<Ended> {
        let code = api_code(e);
        if let (Some(p), Some(404)) = (&self.optional, code) {
            return Some(self.absent(p, queue, 404).await);
        }
        if let (Some(p), Some(403)) = (&self.optional, code)
            && p.builtin
        {
            return Some(self.absent(p, queue, 403).await);
        }
        if let Some(msg) = gate.report(&e.to_string()) {
            self.send(Msg::Note(msg));
        }
        if matches!(code, Some(401 | 403)) {
            tokio::time::sleep(self.tuning.auth_pause).await;
        }
        None
    }

    /// Takes the kind as empty (the converter deletes what it had) and
    /// notes it once per absence.
    async fn absent(&self, p: &Presence, queue: &Queue<K>, code: u16) -> Ended {
        if queue.send(store::Item::Absent).await.is_err() {
            return Ended::Closed;
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
        Ended::Absent
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
    fn spawn<K, F>(
        &mut self,
        kind: String,
        api: Api<K>,
        convert: F,
        optional: Option<Arc<Presence>>,
    ) where
        K: kube::Resource
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        F: Fn(K, &Path) -> Converted + Send + Sync + 'static,
    {
        let w = KindWatch {
            kind,
            api,
            convert: Some(convert),
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
            + ToModel
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default,
    {
        let api = Api::all(self.client.clone());
        self.spawn(name.to_string(), api, K::to_model, None);
    }

    /// EndpointSlices (for `services` rule matches): optional, since an old
    /// API server may not serve them and RBAC may not grant them.
    fn endpoint_slices(&mut self) {
        let presence = Arc::new(Presence {
            builtin: true,
            ..Presence::default()
        });
        let api: Api<EndpointSlice> = Api::all(self.client.clone());
        self.spawn(
            ENDPOINT_SLICE_LABEL.to_string(),
            api,
            EndpointSlice::to_model,
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
        // List items may come without apiVersion/kind: these are theirs.
        let types = kube::api::TypeMeta {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
        };
        let convert = move |o: DynamicObject, label: &Path| convert::dynamic(o, &types, label);
        let api = Api::all_with(self.client.clone(), ar);
        self.spawn(label, api, convert, Some(presence.clone()));
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
    w.typed::<pod::Pod>("Pod");
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
                    // No heap trim here: the daemon trims once, after the
                    // first compute has dropped the listing's objects.
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
