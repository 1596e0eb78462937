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

/// One raw HTTP/1.1 GET on a fresh connection: status line, headers and
/// body as sent (chunked framing left in place), read for at most `wait`.
fn raw_get(port: u16, target: &str, wait: Duration) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (start, mut out, mut buf) = (std::time::Instant::now(), Vec::new(), [0u8; 65536]);
    while start.elapsed() < wait {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) if out.ends_with(b"}") || out.ends_with(b"0\r\n\r\n") => break,
            Err(_) => {}
        }
    }
    String::from_utf8(out).unwrap()
}

fn body_json(resp: &str) -> serde_json::Value {
    let body = resp.split_once("\r\n\r\n").expect("headers end").1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The mock's protocol, as a Kubernetes client relies on it: LIST pages
/// with continue tokens that add up to the whole collection, the list
/// shape, 404 for ClusterNetworkPolicy, and WATCH as a chunked stream
/// (bookmark when asked, new events, 410 for a compacted version).
#[test]
fn the_mock_api_pages_lists_and_streams_watches_as_kubernetes_does() {
    let size = Size::S;
    let cluster = generate(size);
    let api = KubeApi::start(&cluster);
    let (mut names, mut token, mut pages, mut list_rv) = (Vec::new(), None::<String>, 0, None);
    while pages < 10 {
        let target = match &token {
            None => "/api/v1/pods?limit=300".to_string(),
            Some(t) => format!("/api/v1/pods?limit=300&continue={t}"),
        };
        let resp = raw_get(api.port, &target, Duration::from_secs(5));
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let list = body_json(&resp);
        assert_eq!(list["kind"], "PodList");
        assert_eq!(list["apiVersion"], "v1");
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            list_rv.get_or_insert(rv.clone()),
            &rv,
            "pages of one list share its version"
        );
        for item in list["items"].as_array().unwrap() {
            assert_eq!(item["kind"], "Pod");
            assert!(
                item["metadata"]["uid"].is_string()
                    && item["metadata"]["resourceVersion"].is_string()
            );
            names.push(item["metadata"]["name"].as_str().unwrap().to_string());
        }
        pages += 1;
        token = list["metadata"]["continue"].as_str().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 4, "1,000 pods in pages of 300");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), size.pods, "every pod exactly once");
    let cnp = raw_get(
        api.port,
        "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies?limit=1",
        Duration::from_secs(5),
    );
    assert!(cnp.starts_with("HTTP/1.1 404"), "{cnp}");

    let rv = list_rv.unwrap();
    let port = api.port;
    let watch = std::thread::spawn(move || {
        raw_get(
            port,
            &format!(
                "/api/v1/pods?watch=true&allowWatchBookmarks=true&timeoutSeconds=2&resourceVersion={rv}"
            ),
            Duration::from_secs(5),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    api.put(&new_local_pod(&cluster, size));
    let stream = watch.join().unwrap();
    assert!(stream.contains("Transfer-Encoding: chunked"), "{stream}");
    let bookmark = stream.find(r#""type":"BOOKMARK""#).expect("a bookmark");
    let added = stream.find(r#""type":"ADDED""#).expect("the added pod");
    assert!(bookmark < added && stream.contains("pod-added"), "{stream}");
    assert!(
        stream.ends_with("0\r\n\r\n"),
        "closed after timeoutSeconds: {stream}"
    );

    let old = raw_get(
        api.port,
        "/api/v1/pods?watch=1&resourceVersion=1",
        Duration::from_secs(5),
    );
    assert!(
        old.contains(r#""type":"ERROR""#) && old.contains(r#""code":410"#),
        "{old}"
    );
}
