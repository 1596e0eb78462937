//! The Kubernetes source against a mock API server that replays list and
//! watch responses: add, modify, bookmark, disconnect and reconnect from the
//! bookmark's resourceVersion, 410 Gone and relist, delete; kinds whose CRDs
//! are not installed; and an invalid object reported and skipped.

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
        Duration::from_millis(20),
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
