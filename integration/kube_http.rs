//! `tortie run --datastore kubernetes` against a real-HTTP mock API server
//! (support/kubeapi.rs) serving the synthetic S cluster: ready within 30 s
//! with exactly the cluster's 20 local endpoints (so a half-served list
//! cannot pass as ready), then a pod added on node-0 through the watch
//! raises that to 21 within 10 s.

#[path = "support/kubeapi.rs"]
mod kubeapi;
#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use kubeapi::{Agent, KubeApi};
use support::*;
use tortie::model::Resource;
use tortie::synth::{LOCAL_NODE, Size, generate, pod_ip};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tortie-kube-http-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A new pod on node-0: a copy of the first local pod, renamed, with the
/// next free address.
fn new_local_pod(cluster: &[Resource], size: Size) -> Resource {
    let mut pod = cluster
        .iter()
        .find_map(|r| match r {
            Resource::Pod(p) if p.spec.node_name.as_deref() == Some(LOCAL_NODE) => Some(p.clone()),
            _ => None,
        })
        .expect("a local pod");
    pod.metadata.name = Some("pod-added".into());
    pod.status.pod_ip = Some(pod_ip(size.pods));
    Resource::Pod(pod)
}

#[test]
fn run_from_a_kubernetes_api_is_ready_with_every_local_endpoint_and_follows_the_watch() {
    if !kernel::require_kernel("kube_http") {
        return;
    }
    let size = Size::S;
    let cluster = generate(size);
    let api = KubeApi::start(&cluster);
    let dir = temp_dir("s");
    let kc = api.kubeconfig(&dir);
    let ns = Netns::new("kubehttp");
    let log = dir.join("agent.log");
    let mut agent = Agent::start(&kc, &ns.name, &log);
    let context = || {
        format!(
            "agent log:\n{}\nrequests:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            api.requests().join("\n")
        )
    };
    let ready = agent.wait_ready(Duration::from_secs(30));
    let Some(ready) = ready else {
        panic!("not ready within 30 s\n{}", context());
    };
    let local = agent.metric("felix_active_local_endpoints");
    assert_eq!(local, Some(size.local_pods as f64), "{}", context());
    eprintln!("S ready after {ready:?} with {local:?} local endpoints");
    api.put(&new_local_pod(&cluster, size));
    let took = agent
        .wait_metric(
            "felix_active_local_endpoints",
            size.local_pods as f64 + 1.0,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|got| panic!("still {got:?} local endpoints after 10 s\n{}", context()));
    eprintln!("pod added through the watch counted after {took:?}");
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/api/v1/pods?") && r.contains("watch=")),
        "no pod watch in:\n{}",
        requests.join("\n")
    );
    // 1,000 pods in pages of 500: the list was read to the end by its
    // continue tokens.
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/pods?") && r.contains("continue=")),
        "the pod list was not paged:\n{}",
        requests.join("\n")
    );
    eprintln!(
        "{} requests, the first 40:\n{}",
        requests.len(),
        requests[..requests.len().min(40)].join("\n")
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
