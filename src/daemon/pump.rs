//! The input pump: everything that wakes the reconcile loop (the source's
//! events, the node's interfaces) comes in here. Reports are logged and
//! counted as they arrive (the `tortie_invalid_inputs` gauge follows the
//! problems in force), the census of nodes is kept, and updates are
//! gathered into batches with one adaptive debounce: the first change
//! after a quiet spell goes out at once; changes arriving within the
//! window after a batch (the debounce, or the last compute time if longer,
//! at most [`MAX_WINDOW`]) are coalesced into the next one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::datastore::{Changes, Event, Report, Status};
use crate::hostifaces::InterfaceAddrs;
use crate::model::{ResourceKey, Update};

use super::checks::Census;
use super::metrics::Metrics;

/// What wakes the reconcile loop.
pub enum Input {
    Source(Event),
    /// The node's interfaces and addresses changed.
    Interfaces(InterfaceAddrs),
}

/// The longest a change waits for others to join its batch.
pub const MAX_WINDOW: Duration = Duration::from_secs(1);

/// Diagnostics logged per report; the rest are counted, not printed, so
/// that one huge broken file cannot flood the log.
const LOGGED_PER_REPORT: usize = 20;

/// Inputs gathered for one compute: at most one update per key (the
/// latest: a file moved within the tree is a delete then a put of the same
/// object, which together are no change).
#[derive(Default)]
pub struct Batch {
    pub updates: Vec<Update>,
    /// The latest interface map, when it changed.
    pub interfaces: Option<InterfaceAddrs>,
    /// Key → its update's place in `updates`.
    index: HashMap<ResourceKey, usize>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.interfaces.is_none()
    }

    fn push(&mut self, u: Update) {
        match self.index.get(&u.key) {
            Some(&i) => self.updates[i] = u,
            None => {
                self.index.insert(u.key.clone(), self.updates.len());
                self.updates.push(u);
            }
        }
    }
}

/// How waiting for inputs ended.
pub enum Next {
    Batch(Batch),
    /// Nothing due yet.
    Idle,
    /// Every sender is gone.
    Closed,
}

pub struct Pump {
    rx: Receiver<Input>,
    metrics: Arc<Metrics>,
    pub census: Census,
    /// Errors by stage of every item that has some now.
    invalid: HashMap<String, Vec<&'static str>>,
    pending: Batch,
    /// When the pending batch goes out.
    due: Option<Instant>,
    last_sent: Option<Instant>,
    debounce: Duration,
    window: Duration,
}

impl Pump {
    pub fn new(rx: Receiver<Input>, debounce: Duration, metrics: Arc<Metrics>) -> Pump {
        Pump {
            rx,
            metrics,
            census: Census::default(),
            invalid: HashMap::new(),
            pending: Batch::default(),
            due: None,
            last_sent: None,
            debounce,
            window: debounce.min(MAX_WINDOW),
        }
    }

    /// Gathers the initial listing until the source says it is complete;
    /// None if `stop` is set or the source is gone first.
    pub fn initial(&mut self, stop: &AtomicBool) -> Option<Vec<Update>> {
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Input::Source(Event::Synced)) => break,
                Ok(input) => self.take(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
        self.due = None;
        Some(std::mem::take(&mut self.pending).updates)
    }

    /// The last batch took `took` to compute: the window follows it.
    pub fn computed(&mut self, took: Duration) {
        self.window = self.debounce.max(took).min(MAX_WINDOW);
    }

    /// Waits for inputs until `until` (at most 200 ms); a batch when one is due.
    pub fn next(&mut self, until: Instant) -> Next {
        let wake = self.due.map_or(until, |d| d.min(until));
        let wait = wake
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(200));
        match self.rx.recv_timeout(wait) {
            Ok(input) => {
                self.take(input);
                // Whatever else is queued joins at no cost.
                for _ in 0..10_000 {
                    let Ok(more) = self.rx.try_recv() else { break };
                    self.take(more);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) if self.pending.is_empty() => return Next::Closed,
            Err(RecvTimeoutError::Disconnected) => {}
        }
        if self.pending.is_empty() {
            self.due = None;
            return Next::Idle;
        }
        let now = Instant::now();
        let due = *self.due.get_or_insert_with(|| {
            // Quiet since the last batch: at once. Else at the window's end.
            self.last_sent.map_or(now, |t| (t + self.window).max(now))
        });
        if now < due {
            return Next::Idle;
        }
        self.due = None;
        self.last_sent = Some(now);
        let batch = std::mem::take(&mut self.pending);
        tracing::debug!(
            updates = batch.updates.len(),
            interfaces = batch.interfaces.is_some(),
            "changes received"
        );
        Next::Batch(batch)
    }

    fn take(&mut self, input: Input) {
        match input {
            Input::Interfaces(map) => self.pending.interfaces = Some(map),
            Input::Source(Event::Changes(c)) => self.changes(c),
            Input::Source(Event::Note(n)) => {
                tracing::warn!(note = %n, "kubernetes watch error; retrying with backoff")
            }
            Input::Source(Event::Synced) => {}
        }
    }

    fn changes(&mut self, c: Changes) {
        let mut gauge = false;
        for r in &c.reports {
            gauge |= self.report(r);
        }
        if gauge {
            self.publish_invalid();
        }
        for u in &c.updates {
            self.census.note(u);
        }
        for u in c.updates {
            self.pending.push(u);
        }
    }

    /// Logs and counts one report; true when the gauge must follow.
    fn report(&mut self, r: &Report) -> bool {
        let span = tracing::info_span!("input", item = %r.item);
        let _entered = span.enter();
        log_report(r, &self.metrics);
        let errors: Vec<&'static str> = r.errors_by_stage().collect();
        if errors.is_empty() {
            self.invalid.remove(&r.item).is_some()
        } else {
            self.invalid.insert(r.item.clone(), errors);
            true
        }
    }

    fn publish_invalid(&self) {
        let mut by_stage: BTreeMap<String, u64> = BTreeMap::new();
        for stage in self.invalid.values().flatten() {
            *by_stage.entry(stage.to_string()).or_default() += 1;
        }
        self.metrics.set_invalid_now(by_stage);
    }
}

/// Logs a report (inside its item's span) and counts its errors.
fn log_report(r: &Report, metrics: &Metrics) {
    let shown = r.diagnostics.len().min(LOGGED_PER_REPORT);
    for d in &r.diagnostics[..shown] {
        let stage = d.stage.label();
        match d.severity {
            crate::diag::Severity::Error => tracing::error!(stage, "{}", d.one_line()),
            crate::diag::Severity::Warning => tracing::warn!(stage, "{}", d.one_line()),
            crate::diag::Severity::Note => tracing::info!(stage, "{}", d.one_line()),
        }
    }
    for d in r.diagnostics.iter().filter(|d| d.is_error()) {
        metrics.invalid_input(d.stage.label(), false);
    }
    if shown < r.diagnostics.len() {
        let count = r.diagnostics.len() - shown;
        tracing::warn!(count, "more problems here were not logged");
    }
    let object = r.item.starts_with("k8s:");
    match r.status {
        Status::Kept => {
            metrics.invalid_input("file", true);
            tracing::error!("invalid file: its previous content stays in force until it is fixed");
        }
        Status::Rejected if object => tracing::error!("invalid object: skipped"),
        Status::Rejected => tracing::error!("file rejected: nothing of it is in force"),
        Status::Read(_) | Status::Removed if object => {
            tracing::info!(problems = r.diagnostics.len(), "object's problems changed")
        }
        Status::Read(resources) => tracing::info!(resources, "file read"),
        Status::Removed => tracing::info!("file removed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(name: &str) -> Input {
        let text =
            format!("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: {name}}}\n");
        let r = crate::model::load::load_str(&text, std::path::Path::new("t.yaml"));
        let res = r.resources.into_iter().next().unwrap().resource;
        Input::Source(Event::Changes(Changes {
            updates: vec![Update::put(res)],
            reports: Vec::new(),
        }))
    }

    fn wait_batch(p: &mut Pump, bound: Duration) -> (Batch, Duration) {
        let start = Instant::now();
        loop {
            if let Next::Batch(b) = p.next(start + bound) {
                return (b, start.elapsed());
            }
            assert!(start.elapsed() < bound, "no batch within {bound:?}");
        }
    }

    #[test]
    fn the_first_change_after_quiet_goes_at_once_and_a_burst_is_coalesced() {
        let (tx, rx) = std::sync::mpsc::channel();
        let debounce = Duration::from_millis(300);
        let mut p = Pump::new(rx, debounce, Arc::new(Metrics::default()));
        tx.send(put("a")).unwrap();
        let (b, took) = wait_batch(&mut p, Duration::from_secs(2));
        eprintln!("first change out after {took:?}");
        assert_eq!(b.updates.len(), 1);
        assert!(took < Duration::from_millis(100), "{took:?}");
        // A burst right after: held until the window ends, then one batch.
        for n in ["b", "c", "d"] {
            tx.send(put(n)).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let (b, took) = wait_batch(&mut p, Duration::from_secs(2));
        eprintln!("burst out after {took:?}");
        assert_eq!(b.updates.len(), 3, "coalesced into one batch");
        assert!(took <= MAX_WINDOW, "{took:?}");
        // After a quiet spell longer than the window: at once again.
        std::thread::sleep(debounce + Duration::from_millis(50));
        tx.send(put("e")).unwrap();
        let (_, took) = wait_batch(&mut p, Duration::from_secs(2));
        assert!(took < Duration::from_millis(100), "{took:?}");
    }

    #[test]
    fn a_delete_and_a_put_of_one_key_in_a_batch_leave_only_the_put() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut p = Pump::new(rx, Duration::from_millis(1), Arc::new(Metrics::default()));
        let Input::Source(Event::Changes(mut put_a)) = put("a") else {
            unreachable!()
        };
        let a = put_a.updates.pop().unwrap();
        let changes = Changes {
            updates: vec![Update::delete(a.key.clone()), a.clone()],
            reports: Vec::new(),
        };
        tx.send(Input::Source(Event::Changes(changes))).unwrap();
        tx.send(put("b")).unwrap();
        let (b, _) = wait_batch(&mut p, Duration::from_secs(2));
        let names: Vec<(&str, bool)> = b
            .updates
            .iter()
            .map(|u| (u.key.name.as_str(), u.value.is_some()))
            .collect();
        assert_eq!(names, [("a", true), ("b", true)]);
        assert_eq!(b.updates[0], a);
    }

    #[test]
    fn the_invalid_inputs_gauge_falls_when_a_file_is_fixed() {
        let (tx, rx) = std::sync::mpsc::channel();
        let metrics = Arc::new(Metrics::default());
        let mut p = Pump::new(rx, Duration::from_millis(1), metrics.clone());
        let bad = crate::model::load::load_str("kind: Nope\n", std::path::Path::new("bad.yaml"));
        assert!(bad.has_errors());
        let report = |diagnostics| {
            Input::Source(Event::Changes(Changes {
                updates: Vec::new(),
                reports: vec![Report {
                    item: "bad.yaml".into(),
                    status: Status::Read(0),
                    diagnostics,
                }],
            }))
        };
        tx.send(report(bad.diagnostics.clone())).unwrap();
        p.next(Instant::now());
        let gauge = |m: &Metrics| {
            m.render()
                .lines()
                .filter(|l| l.starts_with("tortie_invalid_inputs{"))
                .count()
        };
        assert_eq!(gauge(&metrics), 1, "{}", metrics.render());
        tx.send(report(Vec::new())).unwrap();
        p.next(Instant::now());
        assert_eq!(gauge(&metrics), 0, "{}", metrics.render());
    }
}
