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

/// Waits (bounded) for a snapshot whose pods equal `want`.
fn expect_pods(
    rx: &mpsc::Receiver<SourceEvent>,
    want: &BTreeMap<String, String>,
    what: &str,
) -> (Vec<Resource>, Vec<crate::diag::Diagnostic>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(SourceEvent::Snapshot {
                resources,
                diagnostics,
            }) => {
                let got = pods_of(&resources);
                if &got == want {
                    return (resources, diagnostics);
                }
                last = Some(got);
            }
            Ok(SourceEvent::Error(_)) | Err(_) => {}
        }
    }
    panic!("{what}: no snapshot with pods {want:?}; last seen {last:?}");
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
    rt.spawn(super::run(
        client,
        CalicoApi::V3,
        Tuning::new(Duration::from_millis(20)),
        tx,
    ));
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
    let (resources, diagnostics) = expect_pods(&rx, &state(&[("a", "x")]), "initial list");
    let names: Vec<String> = resources
        .iter()
        .filter(|r| r.kind() == crate::model::ResourceKind::K8sNetworkPolicy)
        .map(|r| r.key().name)
        .collect();
    assert_eq!(names, ["good"], "the invalid policy is skipped");
    let bad: Vec<&crate::diag::Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(bad.len(), 1, "{diagnostics:?}");
    assert!(
        bad[0].message.contains("port 70000 is out of range"),
        "{}",
        bad[0].message
    );
    assert!(bad[0].one_line().contains("NetworkPolicy default/bad"));
    assert!(
        resources
            .iter()
            .any(|r| r.kind() == crate::model::ResourceKind::Namespace)
    );

    go_tx.send(()).unwrap();
    expect_pods(
        &rx,
        &state(&[("a", "y"), ("b", "x")]),
        "watch: added and modified",
    );

    // The stream ended; the watcher reconnects from the bookmark's version.
    go_tx.send(()).unwrap();
    expect_pods(
        &rx,
        &state(&[("a", "y"), ("c", "z")]),
        "410 Gone, then relist (b was deleted meanwhile)",
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

    go_tx.send(()).unwrap();
    expect_pods(&rx, &state(&[("c", "z")]), "watch: deleted");
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
    rx: mpsc::Receiver<SourceEvent>,
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
        Rig { rt, api, rx }
    }

    /// Notes (Error events) received while waiting go into `notes`.
    fn wait_pods(
        &self,
        want: &[(&str, &str)],
        bound: Duration,
        notes: &mut Vec<String>,
    ) -> Option<Duration> {
        let want = state(want);
        let start = Instant::now();
        while start.elapsed() < bound {
            match self.rx.recv_timeout(Duration::from_millis(10)) {
                Ok(SourceEvent::Snapshot { resources, .. }) if pods_of(&resources) == want => {
                    return Some(start.elapsed());
                }
                Ok(SourceEvent::Error(e)) => notes.push(e),
                _ => {}
            }
        }
        None
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
    let rig = Rig::start(Tuning::new(Duration::from_millis(20)), &[]);
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
fn a_relist_that_finds_nothing_new_sends_no_snapshot() {
    let rig = Rig::start(Tuning::new(Duration::from_millis(20)), &[]);
    let mut notes = Vec::new();
    rig.wait_pods(&[("a", "x")], Duration::from_secs(10), &mut notes)
        .expect("initial listing");
    // Let the initial burst end (the last kinds to sync may send one more).
    let settle = Instant::now() + Duration::from_secs(5);
    let mut last = Instant::now();
    while Instant::now() < settle && last.elapsed() < Duration::from_millis(500) {
        if rig.rx.recv_timeout(Duration::from_millis(20)).is_ok() {
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
        if let Ok(SourceEvent::Snapshot { .. }) = rig.rx.recv_timeout(Duration::from_millis(20)) {
            panic!("a relist with nothing new sent a snapshot");
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

fn gnps_of(ev: &SourceEvent) -> Option<Vec<String>> {
    match ev {
        SourceEvent::Snapshot { resources, .. } => Some(
            resources
                .iter()
                .filter(|r| r.kind() == crate::model::ResourceKind::GlobalNetworkPolicy)
                .map(|r| r.key().name)
                .collect(),
        ),
        SourceEvent::Error(_) => None,
    }
}

/// Waits for a snapshot holding GlobalNetworkPolicy `name`; returns the
/// time it took and the notes seen meanwhile.
fn wait_gnp(rig: &Rig, name: &str, bound: Duration, notes: &mut Vec<String>) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < bound {
        if let Ok(ev) = rig.rx.recv_timeout(Duration::from_millis(10)) {
            match gnps_of(&ev) {
                Some(names) if names.iter().any(|n| n == name) => return Some(start.elapsed()),
                Some(_) => {}
                None => {
                    if let SourceEvent::Error(e) = ev {
                        notes.push(e)
                    }
                }
            }
        }
    }
    None
}

#[test]
fn an_absent_kind_is_noted_once_and_picked_up_when_its_crd_is_created() {
    let rig = Rig::start(Tuning::new(Duration::from_millis(20)), &[]);
    let mut notes = Vec::new();
    rig.wait_pods(&[("a", "x")], Duration::from_secs(10), &mut notes)
        .expect("the initial snapshot does not wait for absent kinds");
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle {
        if let Ok(SourceEvent::Error(e)) = rig.rx.recv_timeout(Duration::from_millis(20)) {
            notes.push(e);
        }
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
    let mut tuning = Tuning::new(Duration::from_millis(20));
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
