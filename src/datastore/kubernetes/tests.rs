//! The Kubernetes source against mock API servers: a scripted one that
//! replays list and watch responses (add, modify, bookmark, disconnect and
//! reconnect from the bookmark's resourceVersion, 410 Gone and relist,
//! delete; kinds whose CRDs are not installed; an invalid object reported
//! and skipped), and [`super::mock::MockApi`] for outages of real length,
//! relists that find nothing new, absent kinds and the access check.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::json;

use super::*;
use crate::model::Resource;

fn pod(name: &str, app: &str, ip: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "5", "labels": {"app": app},
                     "uid": "u", "creationTimestamp": "2026-11-21T00:00:00Z",
                     "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
        "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "x", "ports": [{"name": "http", "containerPort": 80}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    })
}

fn list(items: Vec<serde_json::Value>, rv: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": rv}, "items": items})).unwrap()
}

fn events(evs: &[(&str, serde_json::Value)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, o) in evs {
        out.extend(serde_json::to_vec(&json!({"type": t, "object": o})).unwrap());
        out.push(b'\n');
    }
    out
}

fn ok(body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(body))
        .unwrap()
}

fn not_found() -> Response<Body> {
    let s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "the server could not find the requested resource", "reason": "NotFound", "code": 404});
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Body::from(serde_json::to_vec(&s).unwrap()))
        .unwrap()
}

/// Pods seen in a snapshot: name → app label.
fn pods_of(resources: &[Resource]) -> BTreeMap<String, String> {
    resources
        .iter()
        .filter_map(|r| match r {
            Resource::Pod(p) => Some((
                p.metadata.name.clone().unwrap(),
                p.metadata.labels.get("app").cloned().unwrap_or_default(),
            )),
            _ => None,
        })
        .collect()
}

fn state(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The consumer's side: what the updates leave, the problems reported now,
/// how often Synced came, the updates since the last `mark`, the notes.
struct Consumer {
    rx: mpsc::Receiver<Event>,
    objects: BTreeMap<crate::model::ResourceKey, Resource>,
    problems: BTreeMap<String, Vec<crate::diag::Diagnostic>>,
    synced: usize,
    since_mark: Vec<crate::model::Update>,
    notes: Vec<String>,
}

impl Consumer {
    fn new(rx: mpsc::Receiver<Event>) -> Consumer {
        Consumer {
            rx,
            objects: BTreeMap::new(),
            problems: BTreeMap::new(),
            synced: 0,
            since_mark: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Takes the next event (waiting at most `wait`); true if there was one.
    fn pump(&mut self, wait: Duration) -> bool {
        let Ok(ev) = self.rx.recv_timeout(wait) else {
            return false;
        };
        match ev {
            Event::Changes(c) => {
                for u in c.updates {
                    self.since_mark.push(u.clone());
                    match u.value {
                        Some(r) => self.objects.insert(u.key, r),
                        None => self.objects.remove(&u.key),
                    };
                }
                for r in c.reports {
                    if r.diagnostics.is_empty() {
                        self.problems.remove(&r.item);
                    } else {
                        self.problems.insert(r.item, r.diagnostics);
                    }
                }
            }
            Event::Synced => self.synced += 1,
            Event::Note(n) => self.notes.push(n),
        }
        true
    }

    fn pods(&self) -> BTreeMap<String, String> {
        pods_of(&self.objects.values().cloned().collect::<Vec<_>>())
    }

    fn mark(&mut self) {
        self.since_mark.clear();
    }

    /// Waits (bounded) until synced with pods equal to `want`; how long it took.
    fn wait_pods(&mut self, want: &[(&str, &str)], bound: Duration) -> Option<Duration> {
        let want = state(want);
        let start = Instant::now();
        while start.elapsed() < bound {
            self.pump(Duration::from_millis(10));
            if self.synced > 0 && self.pods() == want {
                return Some(start.elapsed());
            }
        }
        None
    }

    fn expect_pods(&mut self, want: &[(&str, &str)], what: &str) {
        if self.wait_pods(want, Duration::from_secs(20)).is_none() {
            panic!(
                "{what}: pods never became {want:?}; last seen {:?}",
                self.pods()
            );
        }
    }

    fn has_gnp(&self, name: &str) -> bool {
        self.objects
            .keys()
            .any(|k| k.kind == crate::model::ResourceKind::GlobalNetworkPolicy && k.name == name)
    }
}

#[test]
fn lists_watches_relists_on_410_and_reports_invalid_objects() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _runtime = rt.enter();
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let (tx, rx) = mpsc::channel();
    // The test releases the pod script step by step.
    let (go_tx, go_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (seen_tx, seen_rx) = mpsc::channel::<String>();
    rt.spawn(super::run(client, CalicoApi::V3, Tuning::new(), tx));
    let go_rx = std::sync::Arc::new(tokio::sync::Mutex::new(go_rx));
    rt.spawn(async move {
        let mut pod_requests = 0;
        while let Some((req, send)) = handle.next_request().await {
            // Each request is answered by its own task, so a scripted step
            // waiting for the test never holds up other kinds' requests.
            let go_rx = go_rx.clone();
            let uri = req.uri().to_string();
            let path = req.uri().path().to_string();
            let watching = uri.contains("watch=true");
            if path == "/api/v1/pods" {
                pod_requests += 1;
                let step = pod_requests;
                let _ = seen_tx.send(uri.clone());
                tokio::spawn(async move {
                let resp = match step {
                    1 => ok(list(vec![pod("a", "x", "198.18.0.1")], "10")),
                    2 => {
                        go_rx.lock().await.recv().await;
                        // Added, modified, a bookmark; then the stream ends.
                        ok(events(&[
                            ("ADDED", pod("b", "x", "198.18.0.2")),
                            ("MODIFIED", pod("a", "y", "198.18.0.1")),
                            ("BOOKMARK", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"resourceVersion": "12"}})),
                        ]))
                    }
                    3 => {
                        go_rx.lock().await.recv().await;
                        ok(events(&[("ERROR", json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}))]))
                    }
                    4 => ok(list(vec![pod("a", "y", "198.18.0.1"), pod("c", "z", "198.18.0.3")], "20")),
                    5 => {
                        go_rx.lock().await.recv().await;
                        ok(events(&[("DELETED", pod("a", "y", "198.18.0.1"))]))
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        ok(Vec::new())
                    }
                };
                send.send_response(resp);
                });
                continue;
            }
            tokio::spawn(async move {
            let resp = if path.starts_with("/apis/projectcalico.org/") {
                not_found()
            } else if watching {
                // Quiet kinds: an empty watch that ends after a pause.
                tokio::time::sleep(Duration::from_millis(200)).await;
                ok(Vec::new())
            } else if path == "/apis/networking.k8s.io/v1/networkpolicies" {
                ok(list(
                    vec![
                        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                               "metadata": {"name": "good", "namespace": "default"},
                               "spec": {"podSelector": {"matchLabels": {"app": "x"}}, "policyTypes": ["Ingress"]}}),
                        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                               "metadata": {"name": "bad", "namespace": "default"},
                               "spec": {"podSelector": {"matchLabels": {"app": "x"}}, "ingress": [{"ports": [{"port": 70000}]}]}}),
                    ],
                    "3",
                ))
            } else if path == "/api/v1/namespaces" {
                ok(list(vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "labels": {"team": "a"}}})], "2"))
            } else {
                ok(list(vec![], "1"))
            };
            send.send_response(resp);
            });
        }
    });

    // Initial listing: one pod, the valid policy, the invalid one reported.
    let mut c = Consumer::new(rx);
    c.expect_pods(&[("a", "x")], "initial list");
    let names: Vec<String> = c
        .objects
        .keys()
        .filter(|k| k.kind == crate::model::ResourceKind::K8sNetworkPolicy)
        .map(|k| k.name.clone())
        .collect();
    assert_eq!(names, ["good"], "the invalid policy is skipped");
    let bad: Vec<&crate::diag::Diagnostic> = c
        .problems
        .values()
        .flatten()
        .filter(|d| d.is_error())
        .collect();
    assert_eq!(bad.len(), 1, "{:?}", c.problems);
    assert!(
        bad[0].message.contains("port 70000 is out of range"),
        "{}",
        bad[0].message
    );
    assert!(bad[0].one_line().contains("NetworkPolicy default/bad"));
    assert!(
        c.objects
            .keys()
            .any(|k| k.kind == crate::model::ResourceKind::Namespace)
    );

    go_tx.send(()).unwrap();
    c.expect_pods(&[("a", "y"), ("b", "x")], "watch: added and modified");

    // The stream ended; the watcher reconnects from the bookmark's version.
    c.mark();
    go_tx.send(()).unwrap();
    c.expect_pods(
        &[("a", "y"), ("c", "z")],
        "410 Gone, then relist (b was deleted meanwhile)",
    );
    // The relist yields only the differences: b deleted, c added; the
    // unchanged a (and every other kind) sends nothing.
    let keys: Vec<(String, bool)> = c
        .since_mark
        .iter()
        .map(|u| (u.key.name.clone(), u.value.is_some()))
        .collect();
    assert_eq!(
        keys,
        [("b".to_string(), false), ("c".to_string(), true)],
        "{:?}",
        c.since_mark
    );
    let uris: Vec<String> = seen_rx.try_iter().collect();
    assert!(
        uris[2].contains("watch=true") && uris[2].contains("resourceVersion=12"),
        "reconnect resumes from the bookmark: {uris:?}"
    );
    assert!(
        !uris[3].contains("watch=true"),
        "410 leads to a relist: {uris:?}"
    );

    c.mark();
    go_tx.send(()).unwrap();
    c.expect_pods(&[("c", "z")], "watch: deleted");
    assert_eq!(c.since_mark.len(), 1, "one delete: {:?}", c.since_mark);
    assert_eq!(c.synced, 1, "Synced exactly once");
    rt.shutdown_timeout(Duration::from_secs(1));
}

use super::mock::MockApi;

const PODS: &str = "/api/v1/pods";
const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const GNPS: &str = "/apis/projectcalico.org/v3/globalnetworkpolicies";
const CORE: [&str; 4] = [
    "/api/v1/namespaces",
    PODS,
    "/api/v1/serviceaccounts",
    "/apis/networking.k8s.io/v1/networkpolicies",
];

fn calico_paths() -> Vec<String> {
    CALICO_KINDS
        .iter()
        .map(|(_, plural)| format!("/apis/projectcalico.org/v3/{plural}"))
        .collect()
}

/// A runtime, a mock serving the core kinds and CRDs (no Calico kinds),
/// and the source running against it with `tuning`.
struct Rig {
    rt: tokio::runtime::Runtime,
    api: MockApi,
    c: std::cell::RefCell<Consumer>,
}

impl Rig {
    fn start(tuning: Tuning, extra: &[&str]) -> Rig {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut paths = CORE.to_vec();
        paths.push(CRDS);
        paths.extend_from_slice(extra);
        let api = MockApi::new(&paths);
        api.put(PODS, pod("a", "x", "198.18.0.1"));
        let (tx, rx) = mpsc::channel();
        {
            let _g = rt.enter();
            let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            api.serve_on(handle);
            let client = kube::Client::new(svc, "default");
            rt.spawn(super::run(client, CalicoApi::V3, tuning, tx));
        }
        Rig {
            rt,
            api,
            c: std::cell::RefCell::new(Consumer::new(rx)),
        }
    }

    /// Notes received while waiting go into `notes`.
    fn wait_pods(
        &self,
        want: &[(&str, &str)],
        bound: Duration,
        notes: &mut Vec<String>,
    ) -> Option<Duration> {
        let mut c = self.c.borrow_mut();
        let took = c.wait_pods(want, bound);
        notes.append(&mut c.notes);
        took
    }

    /// Takes the next event; whether it carried updates.
    fn pump_updates(&self, wait: Duration) -> bool {
        let mut c = self.c.borrow_mut();
        c.mark();
        c.pump(wait);
        !c.since_mark.is_empty()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Nothing may outlive the test: abort the source and the mock.
        let rt = std::mem::replace(
            &mut self.rt,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
        );
        rt.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Takes the server down for `outage`, brings it back, changes a pod at
/// once; returns how long the change took to arrive, and the mock.
fn outage_then_change(outage: Duration, compact: bool) -> (Duration, Rig, Instant, Instant) {
    let rig = Rig::start(Tuning::new(), &[]);
    let mut notes = Vec::new();
    rig.wait_pods(&[("a", "x")], Duration::from_secs(10), &mut notes)
        .expect("initial listing");
    let down = Instant::now();
    rig.api.set_down(true);
    std::thread::sleep(outage);
    if compact {
        // A long outage: the server has compacted the versions we knew.
        rig.api.compact();
    }
    rig.api.set_down(false);
    let up = Instant::now();
    rig.api.put(PODS, pod("b", "x", "198.18.0.2"));
    let took = rig
        .wait_pods(
            &[("a", "x"), ("b", "x")],
            Duration::from_secs(5),
            &mut notes,
        )
        .unwrap_or_else(|| {
            panic!(
                "after a {outage:?} outage the change did not arrive within 5 s; notes: {notes:?}"
            )
        });
    // Each watcher reported its first error, not one per retry.
    let pod_notes = notes.iter().filter(|n| n.starts_with("Pod:")).count();
    assert!((1..=3).contains(&pod_notes), "{notes:#?}");
    (took, rig, down, up)
}

/// Requests for `path` during the outage: the watcher kept retrying, at
/// least once per cap (2 s) and not in a busy loop.
fn assert_paced_retries(rig: &Rig, path: &str, down: Instant, up: Instant) {
    let tries = rig
        .api
        .seen(path)
        .iter()
        .filter(|r| r.at >= down && r.at < up)
        .count();
    let secs = (up - down).as_secs_f64();
    assert!(
        tries as f64 >= secs / 2.5 && tries as f64 <= secs / 0.5,
        "{tries} requests to {path} in a {secs:.0} s outage"
    );
}

#[test]
fn a_change_right_after_a_15_s_outage_arrives_within_5_s_resuming_the_watch() {
    let (took, rig, down, up) = outage_then_change(Duration::from_secs(15), false);
    eprintln!("15 s outage: change delivered {took:?} after the server answered again");
    assert_paced_retries(&rig, PODS, down, up);
    // Resumed from the last resourceVersion: no second LIST of pods.
    assert_eq!(
        rig.api.count(PODS, false, down),
        0,
        "the watch resumed without a relist"
    );
    let watches = rig.api.seen(PODS);
    assert!(
        watches
            .iter()
            .filter(|r| r.watch)
            .all(|r| r.uri.contains("allowWatchBookmarks=true")),
        "every watch asks for bookmarks"
    );
}

#[test]
fn a_change_right_after_a_60_s_outage_arrives_within_5_s_after_a_relist() {
    let start = Instant::now();
    let (took, rig, down, up) = outage_then_change(Duration::from_secs(60), true);
    eprintln!(
        "60 s outage (versions compacted): change delivered {took:?} after the server answered again"
    );
    assert_paced_retries(&rig, PODS, down, up);
    assert!(
        rig.api.count(PODS, false, up) >= 1,
        "410 Gone led to a relist"
    );
    // The Calico CRDs were never installed: over this whole test (more
    // than a minute) each absent kind was listed once, not every second.
    let minutes = start.elapsed().as_secs_f64() / 60.0;
    for path in calico_paths() {
        let lists = rig.api.count(&path, false, start);
        eprintln!("{path}: {lists} LIST(s) in {minutes:.2} min");
        assert!(lists >= 1, "{path} was listed");
        assert!(
            lists as f64 <= 2.0 * minutes.max(1.0),
            "{path}: {lists} LISTs in {minutes:.2} min"
        );
    }
}

#[test]
fn a_relist_that_finds_nothing_new_sends_no_update() {
    let rig = Rig::start(Tuning::new(), &[]);
    let mut notes = Vec::new();
    rig.wait_pods(&[("a", "x")], Duration::from_secs(10), &mut notes)
        .expect("initial listing");
    // Let the initial burst end (the last kinds to sync may send one more).
    let settle = Instant::now() + Duration::from_secs(5);
    let mut last = Instant::now();
    while Instant::now() < settle && last.elapsed() < Duration::from_millis(500) {
        if rig.c.borrow_mut().pump(Duration::from_millis(20)) {
            last = Instant::now();
        }
    }
    let before = Instant::now();
    rig.api.compact();
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.api.count(PODS, false, before) == 0 {
        assert!(Instant::now() < deadline, "no relist after 410");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every kind relists (the mock compacted them all); none changed.
    let quiet = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < quiet {
        if rig.pump_updates(Duration::from_millis(20)) {
            panic!("a relist with nothing new sent updates");
        }
    }
    // A real change after the relist still arrives.
    rig.api.put(PODS, pod("a", "z", "198.18.0.1"));
    rig.wait_pods(&[("a", "z")], Duration::from_secs(5), &mut notes)
        .expect("a change after the relist");
}

fn gnp(name: &str) -> serde_json::Value {
    json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
           "metadata": {"name": name}, "spec": {"selector": "all()", "types": ["Ingress"]}})
}

/// Waits until GlobalNetworkPolicy `name` is in force; returns the
/// time it took and the notes seen meanwhile.
fn wait_gnp(rig: &Rig, name: &str, bound: Duration, notes: &mut Vec<String>) -> Option<Duration> {
    let start = Instant::now();
    let mut c = rig.c.borrow_mut();
    while start.elapsed() < bound {
        c.pump(Duration::from_millis(10));
        if c.has_gnp(name) {
            notes.append(&mut c.notes);
            return Some(start.elapsed());
        }
    }
    notes.append(&mut c.notes);
    None
}

#[test]
fn an_absent_kind_is_noted_once_and_picked_up_when_its_crd_is_created() {
    let rig = Rig::start(Tuning::new(), &[]);
    let mut notes = Vec::new();
    rig.wait_pods(&[("a", "x")], Duration::from_secs(10), &mut notes)
        .expect("the initial snapshot does not wait for absent kinds");
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle {
        let mut c = rig.c.borrow_mut();
        c.pump(Duration::from_millis(20));
        notes.append(&mut c.notes);
    }
    for (kind, _) in CALICO_KINDS {
        let label = format!("{kind}.projectcalico.org:");
        let n = notes.iter().filter(|m| m.starts_with(&label)).count();
        assert_eq!(n, 1, "{kind} noted once: {notes:#?}");
    }
    assert!(notes.iter().all(|n| n.contains("not served")), "{notes:#?}");
    // Installing the CRD (the CRD watch shows it) lists the kind at once,
    // though the timer would wait five minutes.
    rig.api.serve(GNPS);
    rig.api.put(GNPS, gnp("deny-all"));
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                     "metadata": {"name": "globalnetworkpolicies.projectcalico.org"}});
    rig.api.put(CRDS, crd);
    let took = wait_gnp(&rig, "deny-all", Duration::from_secs(5), &mut notes)
        .expect("the kind is listed once its CRD appears");
    eprintln!("CRD created: its objects arrived after {took:?}");
}

#[test]
fn without_a_crd_watch_an_absent_kind_is_listed_again_on_the_timer() {
    let mut tuning = Tuning::new();
    tuning.recheck_absent = Duration::from_secs(1);
    let rig = Rig::start(tuning, &[]);
    rig.api.fail_with(CRDS, 403);
    let start = Instant::now();
    let mut notes = Vec::new();
    rig.wait_pods(&[("a", "x")], Duration::from_secs(10), &mut notes)
        .expect("initial listing");
    std::thread::sleep(Duration::from_millis(3500));
    let lists = rig.api.count(GNPS, false, start);
    assert!(
        (3..=6).contains(&lists),
        "{lists} LISTs in ~3.5 s with a 1 s re-check"
    );
    rig.api.serve(GNPS);
    rig.api.put(GNPS, gnp("late"));
    wait_gnp(&rig, "late", Duration::from_secs(3), &mut notes).expect("picked up by the timer");
    let crd_notes = notes
        .iter()
        .filter(|n| n.contains("cannot watch CustomResourceDefinitions"))
        .count();
    assert_eq!(crd_notes, 1, "{notes:#?}");
}

#[test]
fn the_access_check_fails_on_401_and_403_and_passes_otherwise() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let check = |setup: &dyn Fn(&MockApi)| {
        let api = MockApi::new(&CORE);
        setup(&api);
        rt.block_on(async {
            let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            api.serve_on(handle);
            let client = kube::Client::new(svc, "default");
            let resources = watched_resources(CalicoApi::V3);
            let t = Instant::now();
            let r = connect::check_access(&client, &resources, Duration::from_secs(3)).await;
            assert!(t.elapsed() < Duration::from_secs(4));
            r
        })
    };
    let e = check(&|a| a.fail_with(PODS, 401)).unwrap_err();
    assert!(
        matches!(e, connect::ConnectError::Unauthorized { ref resource, .. } if resource == "pods"),
        "{e}"
    );
    let e = check(&|a| a.fail_with(GNPS, 403)).unwrap_err();
    assert!(
        e.to_string()
            .contains("may not list globalnetworkpolicies.projectcalico.org"),
        "{e}"
    );
    assert!(e.to_string().contains("manifests/rbac.yaml"), "{e}");
    // Calico kinds not installed (404) and a server that is down both pass.
    check(&|_| {}).unwrap();
    check(&|a| a.set_down(true)).unwrap();
}

#[test]
fn a_failing_watcher_reports_its_first_error_then_summaries() {
    let mut g = ErrorGate::new("Pod", Duration::from_millis(50));
    assert_eq!(g.report("refused").as_deref(), Some("Pod: refused"));
    assert_eq!(g.report("refused"), None);
    assert_eq!(g.report("refused"), None);
    std::thread::sleep(Duration::from_millis(60));
    let s = g.report("refused").expect("a summary after the interval");
    assert!(
        s.starts_with("Pod: still failing after 0s (3 more errors"),
        "{s}"
    );
    g.ok();
    assert_eq!(
        g.report("gone").as_deref(),
        Some("Pod: gone"),
        "a new outage"
    );
}

const CNPS: &str = "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies";

fn cnp(name: &str, tier: &str) -> serde_json::Value {
    json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
           "metadata": {"name": name, "uid": "u1", "generation": 1},
           "spec": {"tier": tier, "priority": 10, "subject": {"namespaces": {}},
                    "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}]},
           "status": {"conditions": []}})
}

/// Pumps until ClusterNetworkPolicy `name` is (`present`) or is not in the
/// consumer's state; how long it took.
fn wait_cnp(rig: &Rig, name: &str, present: bool, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut c = rig.c.borrow_mut();
    let has = |c: &Consumer| {
        c.objects
            .keys()
            .any(|k| k.kind == crate::model::ResourceKind::ClusterNetworkPolicy && k.name == name)
    };
    while start.elapsed() < bound {
        c.pump(Duration::from_millis(10));
        if has(&c) == present {
            return Some(start.elapsed());
        }
    }
    None
}

#[test]
fn cluster_network_policies_without_their_crd_are_noted_once_then_watched_once_it_appears() {
    let rig = Rig::start(Tuning::new(), &[]);
    let mut notes = Vec::new();
    rig.wait_pods(&[("a", "x")], Duration::from_secs(10), &mut notes)
        .expect("the initial snapshot does not wait for the absent kind");
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        let mut c = rig.c.borrow_mut();
        c.pump(Duration::from_millis(20));
        notes.append(&mut c.notes);
    }
    let cnp_notes: Vec<&String> = notes
        .iter()
        .filter(|n| n.starts_with("ClusterNetworkPolicy.policy.networking.k8s.io:"))
        .collect();
    assert_eq!(cnp_notes.len(), 1, "noted once: {notes:#?}");
    assert!(cnp_notes[0].contains("not served"), "{cnp_notes:?}");
    let start = Instant::now();
    // Absent: listed once, not retried in a loop.
    assert!(rig.api.count(CNPS, false, start - Duration::from_secs(3)) <= 2);
    rig.api.serve(CNPS);
    rig.api.put(CNPS, cnp("guard", "Admin"));
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                     "metadata": {"name": "clusternetworkpolicies.policy.networking.k8s.io"}});
    rig.api.put(CRDS, crd);
    let took = wait_cnp(&rig, "guard", true, Duration::from_secs(5))
        .expect("the kind is listed once its CRD appears");
    eprintln!("ClusterNetworkPolicy CRD created: its objects arrived after {took:?}");
    rig.api
        .delete_id(CNPS, "/guard")
        .expect("the object was there");
    wait_cnp(&rig, "guard", false, Duration::from_secs(5)).expect("a deletion is delivered");
}

#[test]
fn cluster_network_policies_are_watched_and_invalid_ones_reported() {
    let rig = Rig::start(Tuning::new(), &[CNPS]);
    rig.api.put(CNPS, cnp("admin-guard", "Admin"));
    wait_cnp(&rig, "admin-guard", true, Duration::from_secs(10)).expect("listed or watched");
    {
        let c = rig.c.borrow();
        let key = c
            .objects
            .keys()
            .find(|k| k.name == "admin-guard")
            .unwrap()
            .clone();
        let Some(Resource::ClusterNetworkPolicy(o)) = c.objects.get(&key) else {
            panic!("{key}: not a ClusterNetworkPolicy");
        };
        assert_eq!(o.spec.priority, Some(10));
    }
    // An edit arrives; an invalid object is reported with its field and
    // withdrawn, not looped on.
    rig.api.put(CNPS, cnp("admin-guard", "Admn"));
    wait_cnp(&rig, "admin-guard", false, Duration::from_secs(5))
        .expect("the now-invalid policy is withdrawn");
    let c = rig.c.borrow();
    let problems: Vec<String> = c
        .problems
        .values()
        .flatten()
        .map(|d| d.one_line())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("Admn") && p.contains("spec.tier")),
        "{problems:#?}"
    );
}
mod slices;
#[test]
fn staged_policies_are_watched_and_arrive_with_their_action() {
    const STAGED_NPS: &str = "/apis/projectcalico.org/v3/stagednetworkpolicies";
    const STAGED_KNPS: &str = "/apis/projectcalico.org/v3/stagedkubernetesnetworkpolicies";
    let rig = Rig::start(Tuning::new(), &[STAGED_NPS, STAGED_KNPS]);
    rig.api.put(
        STAGED_NPS,
        json!({"apiVersion": "projectcalico.org/v3", "kind": "StagedNetworkPolicy",
               "metadata": {"name": "tighten", "namespace": "shop"},
               "spec": {"selector": "all()", "ingress": [{"action": "Deny"}]}}),
    );
    rig.api.put(
        STAGED_KNPS,
        json!({"apiVersion": "projectcalico.org/v3", "kind": "StagedKubernetesNetworkPolicy",
               "metadata": {"name": "old", "namespace": "shop"},
               "spec": {"stagedAction": "Delete"}}),
    );
    let mut notes = Vec::new();
    rig.wait_pods(&[("a", "x")], Duration::from_secs(10), &mut notes)
        .expect("initial listing");
    let end = Instant::now() + Duration::from_secs(5);
    let mut c = rig.c.borrow_mut();
    let staged = |c: &Consumer| {
        c.objects
            .values()
            .filter_map(crate::model::staged::as_enforced)
            .map(|(action, r)| (r.key().to_string(), action))
            .collect::<Vec<_>>()
    };
    while staged(&c).len() < 2 && Instant::now() < end {
        c.pump(Duration::from_millis(20));
    }
    use crate::model::types::StagedAction;
    assert_eq!(
        staged(&c),
        [
            ("NetworkPolicy shop/tighten".to_string(), StagedAction::Set),
            (
                "NetworkPolicy (networking.k8s.io/v1) shop/old".to_string(),
                StagedAction::Delete
            ),
        ],
        "{notes:#?}"
    );
}
