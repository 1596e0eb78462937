//! A small in-process API server for the watcher tests, behind
//! `tower_test`'s mock service: collections by path with a resourceVersion
//! counter and an event log; LIST; WATCH from a resourceVersion as a long
//! poll (events since, else a BOOKMARK after [`HOLD`]); 410 Gone when the
//! version was compacted; 404 for paths not served; fixed status codes per
//! path; and outages: while down every request, held watches included,
//! fails as a dropped or refused connection would. Every request is
//! recorded with its time, so tests count LISTs and reconnects.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

/// How long a watch is held open when nothing happens.
pub const HOLD: Duration = Duration::from_millis(1000);
/// How often a held watch looks for news.
const TICK: Duration = Duration::from_millis(25);

#[derive(Default)]
struct Collection {
    objects: BTreeMap<String, Value>,
    log: Vec<(u64, &'static str, Value)>,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    pub uri: String,
    pub watch: bool,
}

#[derive(Default)]
struct State {
    rv: u64,
    compacted: u64,
    down: bool,
    collections: BTreeMap<String, Collection>,
    status: BTreeMap<String, u16>,
    seen: Vec<Seen>,
}

#[derive(Clone, Default)]
pub struct MockApi {
    state: Arc<Mutex<State>>,
}

fn key(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().unwrap_or("")
    )
}

fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("mock: {reason}"), "reason": reason, "code": code})
}

fn query<'a>(uri: &'a str, name: &str) -> Option<&'a str> {
    let q = uri.split_once('?')?.1;
    q.split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn connection_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "mock: connection dropped",
    )
}

impl MockApi {
    /// A server that serves `paths` (empty collections).
    pub fn new(paths: &[&str]) -> MockApi {
        let m = MockApi::default();
        for p in paths {
            m.serve(p);
        }
        m
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn serve(&self, path: &str) {
        self.lock().collections.entry(path.to_string()).or_default();
    }

    /// Answers every request for `path` with this status code.
    pub fn fail_with(&self, path: &str, code: u16) {
        self.lock().status.insert(path.to_string(), code);
    }

    /// Stops answering `path` with a fixed status code.
    pub fn stop_failing(&self, path: &str) {
        self.lock().status.remove(path);
    }

    /// Removes an object (a DELETED event); returns the new resourceVersion.
    pub fn delete(&self, path: &str, obj: &Value) -> u64 {
        let mut s = self.lock();
        s.rv += 1;
        let rv = s.rv;
        let c = s.collections.get_mut(path).expect("a served path");
        let gone = c.objects.remove(&key(obj)).unwrap_or_else(|| obj.clone());
        c.log.push((rv, "DELETED", gone));
        rv
    }

    /// Adds or replaces an object; returns its new resourceVersion.
    pub fn put(&self, path: &str, mut obj: Value) -> u64 {
        let mut s = self.lock();
        s.rv += 1;
        let rv = s.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let c = s.collections.get_mut(path).expect("a served path");
        let kind = if c.objects.insert(key(&obj), obj.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        c.log.push((rv, kind, obj));
        rv
    }

    /// Deletes an object (`namespace/name`; empty namespace for cluster
    /// scope) if it is there; returns the resourceVersion of the deletion.
    pub fn delete_id(&self, path: &str, id: &str) -> Option<u64> {
        let mut s = self.lock();
        s.rv += 1;
        let rv = s.rv;
        let c = s.collections.get_mut(path).expect("a served path");
        let mut obj = c.objects.remove(id)?;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        c.log.push((rv, "DELETED", obj));
        Some(rv)
    }

    /// Forgets history: a watch from any version seen so far gets 410.
    pub fn compact(&self) {
        let mut s = self.lock();
        s.rv += 1;
        s.compacted = s.rv;
    }

    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Requests for `path` (LISTs if `!watch`) at or after `since`.
    pub fn count(&self, path: &str, watch: bool, since: Instant) -> usize {
        self.seen(path)
            .iter()
            .filter(|r| r.watch == watch && r.at >= since)
            .count()
    }

    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.lock()
            .seen
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Answers the requests of `handle` until the client goes away.
    pub fn serve_on(&self, mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>) {
        let me = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let me = me.clone();
                tokio::spawn(async move {
                    match me.answer(req).await {
                        Ok(r) => send.send_response(r),
                        Err(e) => send.send_error(e),
                    }
                });
            }
        });
    }

    async fn answer(&self, req: Request<Body>) -> Result<Response<Body>, std::io::Error> {
        let uri = req.uri().to_string();
        let path = req.uri().path().to_string();
        let watch = query(&uri, "watch") == Some("true");
        {
            let mut s = self.lock();
            let seen = Seen {
                at: Instant::now(),
                path: path.clone(),
                uri: uri.clone(),
                watch,
            };
            s.seen.push(seen);
            if s.down {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "mock: connection refused",
                ));
            }
            if let Some(code) = s.status.get(&path) {
                let code = *code;
                let reason = StatusCode::from_u16(code).unwrap();
                return Ok(respond(reason, &status(code, reason.as_str())));
            }
            let Some(c) = s.collections.get(&path) else {
                return Ok(respond(StatusCode::NOT_FOUND, &status(404, "NotFound")));
            };
            if !watch {
                let items: Vec<&Value> = c.objects.values().collect();
                let body = json!({"apiVersion": "v1", "kind": "List",
                                  "metadata": {"resourceVersion": s.rv.to_string()}, "items": items});
                return Ok(respond(StatusCode::OK, &body));
            }
        }
        let from: u64 = query(&uri, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let bookmarks = query(&uri, "allowWatchBookmarks") == Some("true");
        self.long_poll(&path, from, bookmarks).await
    }

    /// Events after `from`, or a bookmark (or nothing) after [`HOLD`].
    async fn long_poll(
        &self,
        path: &str,
        from: u64,
        bookmarks: bool,
    ) -> Result<Response<Body>, std::io::Error> {
        let start = Instant::now();
        loop {
            {
                let s = self.lock();
                if s.down {
                    return Err(connection_error());
                }
                if from < s.compacted {
                    let gone = status(410, "Expired");
                    return Ok(events(&[("ERROR", gone)]));
                }
                let Some(c) = s.collections.get(path) else {
                    return Ok(respond(StatusCode::NOT_FOUND, &status(404, "NotFound")));
                };
                let news: Vec<(&str, Value)> = c
                    .log
                    .iter()
                    .filter(|(rv, _, _)| *rv > from)
                    .map(|(_, t, o)| (*t, o.clone()))
                    .collect();
                if !news.is_empty() {
                    return Ok(events(&news));
                }
                if start.elapsed() >= HOLD {
                    let mark = json!({"apiVersion": "v1", "kind": "Bookmark",
                                      "metadata": {"resourceVersion": s.rv.to_string()}});
                    return Ok(if bookmarks {
                        events(&[("BOOKMARK", mark)])
                    } else {
                        events(&[])
                    });
                }
            }
            tokio::time::sleep(TICK).await;
        }
    }
}

fn events(evs: &[(&str, Value)]) -> Response<Body> {
    let mut out = Vec::new();
    for (t, o) in evs {
        out.extend(serde_json::to_vec(&json!({"type": t, "object": o})).unwrap());
        out.push(b'\n');
    }
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(out))
        .unwrap()
}
