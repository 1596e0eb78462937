//! The Kubernetes datastore: watchers (list, then watch; relist on 410 Gone;
//! backoff on errors) for Namespaces, Pods, ServiceAccounts, NetworkPolicies
//! and the Calico kinds, either `projectcalico.org/v3` (tortie's CRDs, so
//! `kubectl apply` of calicoctl YAML works unchanged) or the
//! `crd.projectcalico.org/v1` objects of an existing Calico cluster.
//!
//! Each object is turned back into JSON and read by tortie's own loader, so
//! an invalid object is reported and skipped exactly as a bad file would be.
//! A snapshot is sent only once every kind has been listed completely;
//! after that, on every change (bursts are coalesced). While the API server
//! is unreachable nothing is sent, and the last ruleset stays in force.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject, ResourceExt};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use tokio::sync::Notify;

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

/// One object as loaded: its resources (none if invalid) and diagnostics.
#[derive(Debug, Default, Clone)]
struct Entry {
    resources: Vec<Resource>,
    diagnostics: Vec<Diagnostic>,
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

fn load_object<T: Serialize>(label: &str, obj: &T) -> Entry {
    match serde_json::to_string(obj) {
        Ok(json) => {
            let r = load_str(&json, Path::new(label));
            Entry {
                resources: r.resources.into_iter().map(|l| l.resource).collect(),
                diagnostics: r.diagnostics,
            }
        }
        Err(e) => Entry {
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

/// Runs one watcher, keeping `kind`'s store in step.
async fn watch_kind<K, F>(
    shared: Arc<Shared>,
    kind: String,
    api: Api<K>,
    to_entry: F,
    errors: tokio::sync::mpsc::UnboundedSender<String>,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(&K) -> Entry,
{
    let mut buffer: BTreeMap<String, Entry> = BTreeMap::new();
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let next = stream.try_next().await;
        let mut stores = shared.stores.lock().unwrap_or_else(|e| e.into_inner());
        let store = stores.entry(kind.clone()).or_default();
        let changed = match next {
            Ok(Some(watcher::Event::Init)) => {
                buffer.clear();
                false
            }
            Ok(Some(watcher::Event::InitApply(obj))) => {
                buffer.insert(key_of(&obj), to_entry(&obj));
                false
            }
            Ok(Some(watcher::Event::InitDone)) => {
                // Objects missing from a (re)list were deleted meanwhile.
                store.objects = std::mem::take(&mut buffer);
                store.synced = true;
                true
            }
            Ok(Some(watcher::Event::Apply(obj))) => {
                store.objects.insert(key_of(&obj), to_entry(&obj));
                true
            }
            Ok(Some(watcher::Event::Delete(obj))) => {
                store.objects.remove(&key_of(&obj));
                true
            }
            Ok(None) => break,
            Err(e) => {
                // A kind the API server does not serve (CRDs not installed)
                // is taken as empty, so plain clusters still work.
                let missing = matches!(&e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404);
                let _ = errors.send(format!("{kind}: {e}"));
                if missing && !store.synced {
                    store.synced = true;
                    true
                } else {
                    false
                }
            }
        };
        drop(stores);
        if changed {
            shared.changed.notify_one();
        }
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

/// Watches everything and sends snapshots to `out` until the receiver goes
/// away. `debounce` coalesces bursts of changes.
pub async fn run(
    client: kube::Client,
    calico: CalicoApi,
    debounce: Duration,
    out: std::sync::mpsc::Sender<SourceEvent>,
) {
    let shared = Arc::new(Shared::default());
    let (err_tx, mut err_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut tasks = Vec::new();
    macro_rules! typed {
        ($ty:ty, $name:expr) => {{
            let api: Api<$ty> = Api::all(client.clone());
            let s = shared.clone();
            let e = err_tx.clone();
            tasks.push(tokio::spawn(watch_kind(
                s,
                $name.to_string(),
                api,
                |o: &$ty| load_object(&format!("k8s:{}/{}", $name, key_of(o)), o),
                e,
            )));
        }};
    }
    typed!(Namespace, "Namespace");
    typed!(Pod, "Pod");
    typed!(ServiceAccount, "ServiceAccount");
    typed!(NetworkPolicy, "NetworkPolicy.networking.k8s.io");
    let (group, version) = calico.group_version();
    for (kind, plural) in CALICO_KINDS {
        let ar = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: format!("{group}/{version}"),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let label = format!("{kind}.{group}");
        let s = shared.clone();
        let e = err_tx.clone();
        let types = kube::api::TypeMeta {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
        };
        tasks.push(tokio::spawn(watch_kind(
            s,
            label.clone(),
            api,
            move |o: &DynamicObject| {
                // List items may come without apiVersion/kind: set them.
                let mut o = o.clone();
                o.types = Some(types.clone());
                load_object(&format!("k8s:{label}/{}", key_of(&o)), &o)
            },
            e,
        )));
    }
    let kinds = tasks.len();
    drop(err_tx);
    loop {
        tokio::select! {
            _ = shared.changed.notified() => {
                tokio::time::sleep(debounce).await;
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

/// Starts the source on its own thread (with its own runtime) using the
/// in-cluster configuration or KUBECONFIG.
pub fn spawn(
    calico: CalicoApi,
    debounce: Duration,
    out: std::sync::mpsc::Sender<SourceEvent>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tortie-kubernetes".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = out.send(SourceEvent::Error(format!(
                        "cannot start the Kubernetes client runtime: {e}"
                    )));
                    return;
                }
            };
            rt.block_on(async move {
                match kube::Client::try_default().await {
                    Ok(client) => run(client, calico, debounce, out).await,
                    Err(e) => {
                        let _ = out.send(SourceEvent::Error(format!(
                            "cannot reach the Kubernetes API (in-cluster config or KUBECONFIG): {e}"
                        )));
                    }
                }
            });
        })
}

#[cfg(test)]
mod tests;
