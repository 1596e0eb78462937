//! A small Kubernetes API server over real HTTP/1.1 on 127.0.0.1, for
//! running the real `tortie run --datastore kubernetes` against a given
//! cluster (a `Vec<Resource>`, e.g. `tortie::synth::generate`).
//!
//! It serves, cluster-wide, every collection tortie lists and watches
//! (`watched_resources(CalicoApi::V3)` plus EndpointSlices and
//! CustomResourceDefinitions), except ClusterNetworkPolicy: its CRD is
//! "not installed" (404), as in most clusters. Kinds the cluster has no
//! objects of are served as empty lists; the CRD collection holds the eight
//! Calico CRDs (metadata and names only).
//!
//! LIST answers with the Kubernetes list shape (`apiVersion`, `kind: XList`,
//! `metadata.resourceVersion`, items carrying `resourceVersion` and `uid`)
//! and pages when the client sends `limit` (`metadata.continue` tokens hold
//! the list's version and the last key served). WATCH (`watch=true` or
//! `watch=1`) is a chunked stream of JSON lines: the events after the
//! requested `resourceVersion` (every object as ADDED when it is 0 or
//! missing), then new events as [`KubeApi::put`] / [`KubeApi::delete`]
//! make them (a version older than the initial objects' gets an ERROR
//! event with 410 Gone, as after compaction), and BOOKMARKs (at the start and every [`BOOKMARK_EVERY`])
//! when the client sent `allowWatchBookmarks=true`. A watch closes after
//! `timeoutSeconds` or [`WATCH_MAX`], whichever is shorter, or when the
//! client goes. Every request is recorded ([`KubeApi::requests`]).
//!
//! Objects are converted to JSON by reusing `tortie::model::emit::cluster_dump`
//! (whose `metadata`, `spec` and `status` lines are JSON already).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tortie::datastore::kubernetes::{CALICO_KINDS, CNP_RESOURCE, CalicoApi, watched_resources};
use tortie::model::Resource;

/// Longest a watch stays open.
pub const WATCH_MAX: Duration = Duration::from_secs(60);
/// How often an open watch sends a bookmark (when asked for them).
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(10);
/// How long the server lives at most (every thread stops by then).
const LIFETIME: Duration = Duration::from_secs(1800);
/// An idle keep-alive connection is closed after this.
const IDLE: Duration = Duration::from_secs(30);

/// One served collection: objects by `namespace/name` as JSON text, and
/// its event log (resourceVersion, type, object).
struct Collection {
    api_version: String,
    kind: String,
    objects: BTreeMap<String, Arc<str>>,
    log: Vec<(u64, &'static str, Arc<str>)>,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Events up to this version are not kept (the initial objects): a
    /// watch from an older version gets 410 Gone, as after compaction.
    compacted: u64,
    /// By URL path (`/api/v1/pods`).
    collections: BTreeMap<String, Collection>,
    requests: Vec<(Instant, String)>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

/// The running server; stops when dropped.
pub struct KubeApi {
    pub port: u16,
    shared: Arc<Shared>,
}

/// The URL path of a collection listed cluster-wide.
fn collection_path(group: &str, version: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}/{plural}")
    } else {
        format!("/apis/{group}/{version}/{plural}")
    }
}

/// A model resource as the API server's JSON (without resourceVersion and
/// uid): the document `cluster_dump` writes, read back line by line.
pub fn to_json(r: &Resource) -> Value {
    let doc = tortie::model::emit::cluster_dump(std::slice::from_ref(r));
    let mut obj = serde_json::Map::new();
    for line in doc.lines().filter(|l| *l != "---") {
        let (k, v) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("kubeapi: unexpected dump line {line:?}"));
        let value = if v.starts_with('{') {
            serde_json::from_str(v).unwrap_or_else(|e| panic!("kubeapi: {k}: {e}: {v}"))
        } else {
            Value::String(v.to_string())
        };
        obj.insert(k.to_string(), value);
    }
    assert!(
        obj.contains_key("kind"),
        "kubeapi: cluster_dump writes nothing for {:?}; the mock cannot serve it",
        r.key()
    );
    Value::Object(obj)
}

fn object_key(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().unwrap_or("")
    )
}

/// Sets `resourceVersion` and `uid` and returns the object as JSON text.
fn stamp(mut obj: Value, rv: u64, uid: u64) -> Arc<str> {
    let m = obj["metadata"].as_object_mut().expect("metadata");
    m.insert("resourceVersion".into(), json!(rv.to_string()));
    m.insert(
        "uid".into(),
        json!(format!("7f0e0000-0000-4000-8000-{uid:012x}")),
    );
    serde_json::to_string(&obj).expect("json").into()
}

impl State {
    fn empty_collections() -> BTreeMap<String, Collection> {
        let (cnp_group, cnp_version, _, cnp_plural) = CNP_RESOURCE;
        let mut out = BTreeMap::new();
        let mut add = |group: &str, version: &str, plural: &str, kind: &str| {
            let api_version = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            out.insert(
                collection_path(group, version, plural),
                Collection {
                    api_version,
                    kind: kind.to_string(),
                    objects: BTreeMap::new(),
                    log: Vec::new(),
                },
            );
        };
        for ar in watched_resources(CalicoApi::V3) {
            if (ar.group.as_str(), ar.plural.as_str()) != (cnp_group, cnp_plural) {
                add(&ar.group, &ar.version, &ar.plural, &ar.kind);
            }
        }
        let _ = cnp_version;
        add("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice");
        add(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
        );
        out
    }

    /// The collection an object of `apiVersion`/`kind` belongs to.
    fn path_of(&self, api_version: &str, kind: &str) -> String {
        self.collections
            .iter()
            .find(|(_, c)| c.api_version == api_version && c.kind == kind)
            .map(|(p, _)| p.clone())
            .unwrap_or_else(|| panic!("kubeapi: no collection serves {api_version} {kind}"))
    }

    /// Stores `obj` (a new version of it if present) and logs the event.
    fn put(&mut self, obj: Value) {
        let path = self.path_of(
            obj["apiVersion"].as_str().unwrap_or(""),
            obj["kind"].as_str().unwrap_or(""),
        );
        self.rv += 1;
        let (rv, key) = (self.rv, object_key(&obj));
        let text = stamp(obj, rv, rv);
        let c = self.collections.get_mut(&path).expect("collection");
        let kind = if c.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        c.objects.insert(key, text.clone());
        c.log.push((rv, kind, text));
    }

    fn delete(&mut self, path: &str, key: &str) -> bool {
        self.rv += 1;
        let rv = self.rv;
        let c = self.collections.get_mut(path).expect("collection");
        let Some(old) = c.objects.remove(key) else {
            return false;
        };
        let mut obj: Value = serde_json::from_str(&old).expect("json");
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let text: Arc<str> = serde_json::to_string(&obj).expect("json").into();
        c.log.push((rv, "DELETED", text));
        true
    }
}

fn calico_crds() -> Vec<Value> {
    CALICO_KINDS
        .iter()
        .map(|(kind, plural)| {
            json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{plural}.projectcalico.org")},
                "spec": {"group": "projectcalico.org", "scope": "Cluster",
                         "names": {"kind": kind, "plural": plural},
                         "versions": [{"name": "v3", "served": true, "storage": true}]}
            })
        })
        .collect()
}

impl KubeApi {
    /// Starts serving `resources` on an ephemeral port of 127.0.0.1.
    pub fn start(resources: &[Resource]) -> KubeApi {
        let mut state = State {
            collections: State::empty_collections(),
            ..State::default()
        };
        for r in resources {
            state.put(to_json(r));
        }
        for crd in calico_crds() {
            state.put(crd);
        }
        // The initial objects are the list, not events to replay.
        for c in state.collections.values_mut() {
            c.log.clear();
        }
        state.compacted = state.rv;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || accept_loop(listener, s));
        KubeApi { port, shared }
    }

    /// Adds or replaces an object; open watches see ADDED or MODIFIED.
    pub fn put(&self, r: &Resource) {
        self.shared.state.lock().unwrap().put(to_json(r));
        self.shared.changed.notify_all();
    }

    /// Deletes an object; open watches see DELETED. False if absent.
    pub fn delete(&self, r: &Resource) -> bool {
        let obj = to_json(r);
        let mut st = self.shared.state.lock().unwrap();
        let path = st.path_of(
            obj["apiVersion"].as_str().unwrap_or(""),
            obj["kind"].as_str().unwrap_or(""),
        );
        let done = st.delete(&path, &object_key(&obj));
        drop(st);
        self.shared.changed.notify_all();
        done
    }

    /// Every request so far, as `METHOD target -> status`.
    pub fn requests(&self) -> Vec<String> {
        let st = self.shared.state.lock().unwrap();
        st.requests.iter().map(|(_, r)| r.clone()).collect()
    }

    /// When the last LIST (not WATCH) request arrived, if any.
    pub fn last_list(&self) -> Option<Instant> {
        let st = self.shared.state.lock().unwrap();
        st.requests
            .iter()
            .filter(|(_, r)| !r.contains("watch="))
            .map(|(at, _)| *at)
            .max()
    }

    /// The collections served (URL paths) and their object counts.
    pub fn served(&self) -> Vec<(String, usize)> {
        let st = self.shared.state.lock().unwrap();
        st.collections
            .iter()
            .map(|(p, c)| (p.clone(), c.objects.len()))
            .collect()
    }

    /// A kubeconfig in `dir` pointing at this server (plain HTTP, a token).
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("kubeconfig dir");
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: tortie\n  user:\n    token: mock-token\ncontexts:\n- name: mock\n  context:\n    cluster: mock\n    user: tortie\n\
             current-context: mock\n",
            self.port
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let until = Instant::now() + LIFETIME;
    while !shared.stop.load(Ordering::Relaxed) && Instant::now() < until {
        match listener.accept() {
            Ok((stream, _)) => {
                let s = shared.clone();
                std::thread::spawn(move || serve_connection(stream, s));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    shared.changed.notify_all();
}

/// One parsed request line and the headers that matter.
struct Request {
    method: String,
    target: String,
    close: bool,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    r.read_line(&mut line).ok().filter(|&n| n > 0)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let (mut close, mut length) = (false, 0usize);
    for _ in 0..200 {
        let mut h = String::new();
        r.read_line(&mut h).ok().filter(|&n| n > 0)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((h, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "connection" => close = value.trim().eq_ignore_ascii_case("close"),
            "content-length" => length = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    std::io::Read::read_exact(r, &mut body).ok()?;
    Some(Request {
        method,
        target,
        close,
    })
}

fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = stream;
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        if handle(&req, &mut out, &shared).is_err() || req.close {
            return;
        }
    }
}

fn query<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let q = target.split_once('?')?.1;
    q.split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn record(shared: &Shared, req: &Request, code: u16) {
    let line = format!("{} {} -> {code}", req.method, req.target);
    let at = Instant::now();
    shared.state.lock().unwrap().requests.push((at, line));
}

fn handle(req: &Request, out: &mut TcpStream, shared: &Shared) -> std::io::Result<()> {
    let path = req.target.split('?').next().unwrap_or("").to_string();
    let served = shared.state.lock().unwrap().collections.contains_key(&path);
    if req.method != "GET" {
        record(shared, req, 405);
        return respond_text(
            out,
            405,
            &status(405, "MethodNotAllowed", "the mock only reads"),
        );
    }
    if !served {
        record(shared, req, 404);
        return respond_text(
            out,
            404,
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    }
    let watch = matches!(query(&req.target, "watch"), Some("true" | "1"));
    record(shared, req, 200);
    if watch {
        serve_watch(req, &path, out, shared)
    } else {
        let body = list_page(req, &path, shared);
        respond_text(out, 200, &body)
    }
}

fn status(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
    .to_string()
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        _ => "Error",
    }
}

/// One response, written with one call (small writes would each be a packet).
fn respond_text(out: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
    let mut msg = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        reason_phrase(code),
        body.len()
    );
    msg.push_str(body);
    out.write_all(msg.as_bytes())?;
    out.flush()
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// A continue token: the list's resourceVersion and the last key served.
fn parse_continue(token: &str) -> Option<(u64, String)> {
    let (rv, key) = token.split_once('-')?;
    Some((rv.parse().ok()?, unhex(key)?))
}

/// One page of a LIST (all of it without `limit`), as JSON text.
fn list_page(req: &Request, path: &str, shared: &Shared) -> String {
    let st = shared.state.lock().unwrap();
    let c = &st.collections[path];
    let limit = query(&req.target, "limit").and_then(|l| l.parse::<usize>().ok());
    let (list_rv, after) = match query(&req.target, "continue").and_then(parse_continue) {
        Some((rv, key)) => (rv, Bound::Excluded(key)),
        None => (st.rv, Bound::Unbounded),
    };
    let take = limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
    let mut items = String::new();
    let mut last = None;
    let mut range = c.objects.range::<String, _>((after, Bound::Unbounded));
    for (k, text) in range.by_ref().take(take) {
        if last.is_some() {
            items.push(',');
        }
        items.push_str(text);
        last = Some(k.clone());
    }
    let more = range.next().is_some();
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if let (true, Some(k)) = (more, last) {
        meta["continue"] = json!(format!("{list_rv}-{}", hex(&k)));
    }
    format!(
        r#"{{"apiVersion":"{}","kind":"{}List","metadata":{},"items":[{items}]}}"#,
        c.api_version, c.kind, meta
    )
}

fn chunk(out: &mut TcpStream, line: &str) -> std::io::Result<()> {
    let framed = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
    out.write_all(framed.as_bytes())?;
    out.flush()
}

fn bookmark(api_version: &str, kind: &str, rv: u64) -> String {
    json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind,
           "metadata": {"resourceVersion": rv.to_string()}}})
    .to_string()
}

/// True when the client has closed its end (or the socket failed).
fn client_gone(out: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    if out.set_nonblocking(true).is_err() {
        return true;
    }
    let gone = match out.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = out.set_nonblocking(false);
    gone
}

/// What a watch sends next: events after `since` (or every object as
/// ADDED when `since` is None), and the version they bring it to.
fn events_since(c: &Collection, since: Option<u64>, now: u64) -> (Vec<String>, u64) {
    let lines = match since {
        None => c
            .objects
            .values()
            .map(|o| format!(r#"{{"type":"ADDED","object":{o}}}"#))
            .collect(),
        Some(rv) => c
            .log
            .iter()
            .filter(|(at, _, _)| *at > rv)
            .map(|(_, t, o)| format!(r#"{{"type":"{t}","object":{o}}}"#))
            .collect(),
    };
    (lines, now)
}

fn serve_watch(
    req: &Request,
    path: &str,
    out: &mut TcpStream,
    shared: &Shared,
) -> std::io::Result<()> {
    let bookmarks = query(&req.target, "allowWatchBookmarks") == Some("true");
    let timeout = query(&req.target, "timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(WATCH_MAX, |s| Duration::from_secs(s).min(WATCH_MAX));
    let mut since = query(&req.target, "resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&v| v > 0);
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    let (api_version, kind, compacted) = {
        let st = shared.state.lock().unwrap();
        let c = &st.collections[path];
        (c.api_version.clone(), c.kind.clone(), st.compacted)
    };
    if since.is_some_and(|rv| rv < compacted) {
        // What an API server sends for a compacted version: an ERROR event.
        let gone = status(410, "Expired", "too old resource version");
        chunk(out, &format!(r#"{{"type":"ERROR","object":{gone}}}"#))?;
        write!(out, "0\r\n\r\n")?;
        return out.flush();
    }
    let start = Instant::now();
    let mut last_bookmark: Option<Instant> = None;
    while start.elapsed() < timeout && !shared.stop.load(Ordering::Relaxed) {
        let (lines, now) = {
            let st = shared.state.lock().unwrap();
            events_since(&st.collections[path], since, st.rv)
        };
        since = Some(now);
        for l in &lines {
            chunk(out, l)?;
        }
        if bookmarks && last_bookmark.is_none_or(|t| t.elapsed() >= BOOKMARK_EVERY) {
            chunk(out, &bookmark(&api_version, &kind, now))?;
            last_bookmark = Some(Instant::now());
        }
        if client_gone(out) {
            return Err(std::io::Error::other("watch client went away"));
        }
        let st = shared.state.lock().unwrap();
        if st.rv == now {
            let _ = shared.changed.wait_timeout(st, Duration::from_millis(500));
        }
    }
    write!(out, "0\r\n\r\n")?;
    out.flush()
}

/// `tortie run --datastore kubernetes` against a [`KubeApi`], programming
/// network namespace `netns` as node `node-0`; killed on drop.
pub struct Agent {
    child: std::process::Child,
    pub metrics: String,
    pub started: Instant,
}

impl Agent {
    /// Starts the agent with KUBECONFIG `kubeconfig`; its log goes to `log`.
    pub fn start(kubeconfig: &Path, netns: &str, log: &Path) -> Agent {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let metrics = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(log).expect("agent log");
        let started = Instant::now();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tortie"))
            .args(["run", "--datastore", "kubernetes"])
            .args(["--node", tortie::synth::LOCAL_NODE, "--netns", netns])
            .arg(format!("--metrics-addr={metrics}"))
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tortie run");
        Agent {
            child,
            metrics,
            started,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls /readyz until 200 (time since start) or `bound` (None); also
    /// None when the agent exits.
    pub fn wait_ready(&mut self, bound: Duration) -> Option<Duration> {
        while self.started.elapsed() < bound {
            if let Some((200, _)) = get(&self.metrics, "/readyz") {
                return Some(self.started.elapsed());
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The value of an unlabelled metric, if exported.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = get(&self.metrics, "/metrics")?;
        body.lines()
            .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(' ')))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Polls `name` until it equals `want` (time taken) or `bound` passes.
    pub fn wait_metric(
        &self,
        name: &str,
        want: f64,
        bound: Duration,
    ) -> Result<Duration, Option<f64>> {
        let start = Instant::now();
        loop {
            let got = self.metric(name);
            if got == Some(want) {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= bound {
                return Err(got);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// VmRSS and VmHWM in MB.
    pub fn memory_mb(&self) -> (f64, f64) {
        memory_mb_of(self.child.id())
    }
}

/// VmRSS and VmHWM of process `pid` in MB (0 when it is gone).
pub fn memory_mb_of(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on `addr` (Connection: close): status code and body.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out.split_once("\r\n\r\n")?.1.to_string()))
}
