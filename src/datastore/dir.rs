//! The directory datastore: every YAML/JSON file under a directory, watched
//! with inotify and emitted as per-file changes, each carrying the
//! per-object updates it caused (documents are diffed by key and content
//! hash: editing one document of a file of 1,000 is one update).
//!
//! The source owns a thread that follows the tree: after every burst of
//! events (debounced) and on a periodic safety rescan it walks the whole
//! tree, so renames and moves of directories in and out, deleted subtrees,
//! symlink retargets and inotify queue overflows (which force every file to
//! be re-read) all end with the files in force equal to the files on disk.
//! Files are read and parsed by bounded workers off the reconcile loop —
//! small files in their own lane, so a 50 MB file never delays them — each
//! within the input [`Limits`]. The source keeps only what it needs to
//! compute deltas: a stamp, a content hash and a value count per file, and
//! per key which files define it with a hash of each definition — never a
//! copy of the objects (the consumer holds those).
//!
//! A key defined in two files is an error reported on the second; the
//! first file by path wins, and when its definition goes the next file's is
//! read again and takes over.
//!
//! A file changed into something invalid is reported and its previous
//! content stays in force; a new invalid file contributes its valid
//! documents, except when it is rejected whole (too large, over budget).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::Watcher;
use sha2::{Digest, Sha256};

use super::{Changes, Event, Report, Status};
use crate::diag::{Diagnostic, Severity};
use crate::model::load::{LoadResult, Loaded, load_str_with, read_text, walk};
use crate::model::yaml::{Budget, BudgetKind, Limits, Pool};
use crate::model::{Resource, ResourceKey, Update};

/// How the source reads and follows the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirOptions {
    pub limits: Limits,
    /// Quiet time that ends a burst of file events.
    pub debounce: Duration,
    /// How often the whole tree is compared with what is in force, whatever
    /// the events said.
    pub rescan_every: Duration,
}

impl Default for DirOptions {
    fn default() -> Self {
        DirOptions {
            limits: Limits::DAEMON,
            debounce: Duration::from_millis(30),
            rescan_every: Duration::from_secs(30),
        }
    }
}

/// One file's change, as the source emits it: what became of the file,
/// its diagnostics now, and the per-object updates it caused (editing one
/// document of a file of 1,000 is one update).
#[derive(Debug, Clone, PartialEq)]
pub struct FileChange {
    pub path: PathBuf,
    pub status: Status,
    pub diagnostics: Vec<Diagnostic>,
    pub updates: Vec<Update>,
}

impl FileChange {
    /// The change as the consumer takes it: the updates and the file's report.
    pub fn into_changes(self) -> Changes {
        Changes {
            updates: self.updates,
            reports: vec![Report {
                item: self.path.display().to_string(),
                status: self.status,
                diagnostics: self.diagnostics,
            }],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot read the datastore {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch {path}: {reason}")]
    Watch { path: PathBuf, reason: String },
}

/// What identifies a file's content on disk without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }
}

type Hash = [u8; 32];

/// What the source remembers of one file.
#[derive(Debug, Clone)]
struct Tracked {
    /// The path, shared with the key index.
    id: Arc<Path>,
    /// None: read it again on the next rescan (its last read was refused
    /// for the datastore budget, which may have room later).
    stamp: Option<Stamp>,
    /// Hash of the content in force (None: nothing of it is in force).
    hash: Option<Hash>,
    /// Values charged to the datastore pool for the content in force.
    charged: usize,
    /// The keys its content in force defines.
    keys: Vec<Arc<ResourceKey>>,
}

/// One file's definition of a key.
#[derive(Debug, Clone)]
struct Holder {
    file: Arc<Path>,
    /// Hash of the object it defines ([`super::value_hash`]).
    hash: u64,
    line: u32,
}

/// Who defines a key, and which definition the consumer has.
#[derive(Debug, Default)]
struct KeyState {
    /// Sorted by path: the first file wins (deterministic).
    holders: Vec<Holder>,
    /// Hash of the value last sent (None: nothing, or a delete).
    in_force: Option<u64>,
}

/// Work for a parser: read `path` and parse it unless its content hashes
/// to `known`.
#[derive(Debug)]
struct Job {
    path: PathBuf,
    generation: u64,
    known: Option<Hash>,
    credit: usize,
    large: bool,
}

#[derive(Debug)]
enum Parsed {
    /// Same content as in force.
    Unchanged(Stamp),
    /// Not there (or no longer a file).
    Gone,
    Loaded {
        stamp: Option<Stamp>,
        hash: Hash,
        result: LoadResult,
        /// [`super::value_hash`] of each resource in `result`, computed off the loop.
        hashes: Vec<u64>,
        charged: usize,
        datastore_full: bool,
    },
}

impl Parsed {
    fn rejected(stamp: Option<Stamp>, d: Diagnostic) -> Parsed {
        Parsed::Loaded {
            stamp,
            hash: [0; 32],
            result: LoadResult {
                diagnostics: vec![d],
                rejected: true,
                ..LoadResult::default()
            },
            hashes: Vec::new(),
            charged: 0,
            datastore_full: false,
        }
    }
}

#[derive(Debug)]
struct Done {
    path: PathBuf,
    generation: u64,
    parsed: Parsed,
}

/// Files of at least this size are parsed in the large-file lane.
const LARGE_FILE: u64 = 1 << 20;

/// Reads and parses one file within the limits (runs on a worker).
fn parse_job(job: &Job, limits: &Limits, pool: &Pool) -> Parsed {
    let Ok(meta) = std::fs::metadata(&job.path) else {
        return Parsed::Gone;
    };
    if !meta.is_file() {
        return Parsed::Gone;
    }
    let stamp = Stamp::of(&meta);
    let text = match read_text(&job.path, limits.max_file_bytes) {
        Ok(t) => t,
        Err(_) if !job.path.exists() => return Parsed::Gone,
        Err(d) => return Parsed::rejected(Some(stamp), *d),
    };
    let hash: Hash = Sha256::digest(text.as_bytes()).into();
    if job.known == Some(hash) {
        return Parsed::Unchanged(stamp);
    }
    let mut budget = Budget::with_pool(limits.max_file_values, pool, job.credit);
    let result = load_str_with(&text, &job.path, &mut budget);
    drop(text);
    let mut scratch = String::new();
    let hashes = result
        .resources
        .iter()
        .map(|l| super::value_hash(&l.resource, &mut scratch))
        .collect();
    let datastore_full = result.over_budget == Some(BudgetKind::Datastore);
    Parsed::Loaded {
        stamp: (!datastore_full).then_some(stamp),
        hash,
        result,
        hashes,
        charged: budget.charged(),
        datastore_full,
    }
}

/// The source's state: what it knows of each file, which file defines
/// each key, and the jobs in flight. Pure bookkeeping (no threads), so
/// that it can be tested step by step.
struct Tree {
    root: PathBuf,
    pool: Arc<Pool>,
    files: BTreeMap<PathBuf, Tracked>,
    keys: HashMap<Arc<ResourceKey>, KeyState>,
    /// Path → generation of the job in flight.
    inflight: HashMap<PathBuf, u64>,
    /// Paths that changed while their job was in flight.
    again: BTreeSet<PathBuf>,
    /// Files whose values must be read again, though their content did not
    /// change: a key they define lost its winning definition elsewhere.
    promote: BTreeSet<PathBuf>,
    /// Promotions found but not yet turned into jobs.
    promote_queue: Vec<PathBuf>,
    generation: u64,
}

/// A document of a file just read, by key.
type Fresh = HashMap<ResourceKey, Resource>;

impl Tree {
    fn new(root: &Path, pool: Arc<Pool>) -> Tree {
        Tree {
            root: root.to_path_buf(),
            pool,
            files: BTreeMap::new(),
            keys: HashMap::new(),
            inflight: HashMap::new(),
            again: BTreeSet::new(),
            promote: BTreeSet::new(),
            promote_queue: Vec::new(),
            generation: 0,
        }
    }

    /// Compares the tree on disk with what is known: files gone are
    /// removed (returned as changes), new, changed or `forced` files get a
    /// job. `all` forces every file (after an inotify overflow).
    fn rescan(
        &mut self,
        forced: &BTreeSet<PathBuf>,
        all: bool,
    ) -> std::io::Result<(Vec<FileChange>, Vec<Job>)> {
        let on_disk = match walk(&self.root) {
            Ok(files) => files,
            // The root itself is gone: so is every file under it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        let mut changes = Vec::new();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !on_disk.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            changes.extend(self.remove(&path));
        }
        let mut jobs = Vec::new();
        for (path, meta) in on_disk {
            let stamp = Stamp::of(&meta);
            let known = self.files.get(&path);
            let stale = known.is_none_or(|t| t.stamp != Some(stamp));
            // A job in flight read the file already; an event names it again
            // if it changed since (and a rescan after it settles compares).
            let busy = self.inflight.contains_key(&path);
            if (stale && !busy) || all || forced.contains(&path) {
                jobs.extend(self.job(&path, stamp.len >= LARGE_FILE));
            }
        }
        jobs.extend(self.promotions());
        Ok((changes, jobs))
    }

    /// A job for `path`, unless one is in flight (then it runs again after).
    fn job(&mut self, path: &Path, large: bool) -> Option<Job> {
        if self.inflight.contains_key(path) {
            self.again.insert(path.to_path_buf());
            return None;
        }
        self.generation += 1;
        self.inflight.insert(path.to_path_buf(), self.generation);
        let known = self.files.get(path);
        let promoting = self.promote.contains(path);
        Some(Job {
            path: path.to_path_buf(),
            generation: self.generation,
            known: known.and_then(|t| t.hash).filter(|_| !promoting),
            credit: known.map_or(0, |t| t.charged),
            large,
        })
    }

    /// Jobs for the files whose values are needed again.
    fn promotions(&mut self) -> Vec<Job> {
        let queue = std::mem::take(&mut self.promote_queue);
        let mut jobs = Vec::new();
        for path in queue {
            let large = std::fs::metadata(&path).is_ok_and(|m| m.len() >= LARGE_FILE);
            jobs.extend(self.job(&path, large));
        }
        jobs
    }

    /// Forgets a file (and any job in flight for it): deletes for the keys
    /// it won, promotions of other files defining them; its report clears.
    fn remove(&mut self, path: &Path) -> Option<FileChange> {
        self.inflight.remove(path);
        self.again.remove(path);
        self.promote.remove(path);
        let t = self.files.remove(path)?;
        self.pool.release(t.charged);
        let mut updates = Vec::new();
        for k in &t.keys {
            self.drop_holder(k, &t.id);
            self.reconcile(k, &t.id, &mut Fresh::new(), &mut updates);
        }
        // Also for a file never in force: its report (a rejection) clears.
        Some(FileChange {
            path: path.to_path_buf(),
            status: Status::Removed,
            diagnostics: Vec::new(),
            updates,
        })
    }

    fn drop_holder(&mut self, key: &ResourceKey, file: &Arc<Path>) {
        if let Some(state) = self.keys.get_mut(key) {
            state.holders.retain(|h| h.file != *file);
        }
    }

    /// Brings what the consumer has for `key` in step with its winning
    /// definition: a put (its value is in `fresh`, the file just read), a
    /// delete (no definition left), or a promotion (another file wins now:
    /// its values are read again).
    fn reconcile(
        &mut self,
        key: &ResourceKey,
        file: &Arc<Path>,
        fresh: &mut Fresh,
        out: &mut Vec<Update>,
    ) {
        let Some(state) = self.keys.get_mut(key) else {
            return;
        };
        let Some(winner) = state.holders.first() else {
            if state.in_force.is_some() {
                out.push(Update::delete(key.clone()));
            }
            self.keys.remove(key);
            return;
        };
        if state.in_force == Some(winner.hash) {
            return;
        }
        if winner.file == *file
            && let Some(value) = fresh.remove(key)
        {
            state.in_force = Some(winner.hash);
            out.push(Update::put(value));
            return;
        }
        let path = winner.file.to_path_buf();
        if self.promote.insert(path.clone()) {
            self.promote_queue.push(path);
        }
    }

    /// Takes a parser's result: the change to emit (if any) and the jobs to
    /// run next (the file changed while it was parsed, or promotions).
    fn complete(&mut self, done: Done) -> (Option<FileChange>, Vec<Job>) {
        if self.inflight.get(&done.path) != Some(&done.generation) {
            if let Parsed::Loaded { charged, .. } = done.parsed {
                self.pool.release(charged);
            }
            return (None, Vec::new());
        }
        self.inflight.remove(&done.path);
        let change = self.settle(&done.path, done.parsed);
        let mut jobs = Vec::new();
        if self.again.remove(&done.path) {
            let large = std::fs::metadata(&done.path).is_ok_and(|m| m.len() >= LARGE_FILE);
            jobs.extend(self.job(&done.path, large));
        }
        jobs.extend(self.promotions());
        (change, jobs)
    }

    fn settle(&mut self, path: &Path, parsed: Parsed) -> Option<FileChange> {
        let (stamp, hash, result, hashes, charged, full) = match parsed {
            Parsed::Gone => return self.remove(path),
            Parsed::Unchanged(stamp) => {
                if let Some(t) = self.files.get_mut(path) {
                    t.stamp = Some(stamp);
                }
                return None;
            }
            Parsed::Loaded {
                stamp,
                hash,
                result,
                hashes,
                charged,
                datastore_full,
            } => (stamp, hash, result, hashes, charged, datastore_full),
        };
        let previous = self.files.remove(path);
        let in_force = previous.as_ref().is_some_and(|t| t.hash.is_some());
        let refused = result.rejected || (in_force && result.has_errors());
        if refused {
            self.pool.release(charged);
            let stamp = if full { None } else { stamp };
            return Some(self.refuse(path, previous, stamp, result.diagnostics));
        }
        self.promote.remove(path);
        let (id, old_keys) = match previous {
            Some(p) => {
                self.pool.release(p.charged);
                (p.id, p.keys)
            }
            None => (Arc::from(path), Vec::new()),
        };
        let mut diagnostics = result.diagnostics;
        let (mut fresh, keys) = self.hold(&id, result.resources, hashes, &mut diagnostics);
        let mut updates = Vec::new();
        for k in old_keys.iter().filter(|k| !fresh.contains_key(k.as_ref())) {
            self.drop_holder(k, &id);
            self.reconcile(k, &id, &mut Fresh::new(), &mut updates);
        }
        for k in &keys {
            self.reconcile(k, &id, &mut fresh, &mut updates);
        }
        let count = keys.len();
        self.files.insert(
            path.to_path_buf(),
            Tracked {
                id,
                stamp,
                hash: Some(hash),
                charged,
                keys,
            },
        );
        Some(FileChange {
            path: path.to_path_buf(),
            status: Status::Read(count),
            diagnostics,
            updates,
        })
    }

    /// A read that cannot take effect: the previous content (if any) stays.
    fn refuse(
        &mut self,
        path: &Path,
        previous: Option<Tracked>,
        stamp: Option<Stamp>,
        diagnostics: Vec<Diagnostic>,
    ) -> FileChange {
        let in_force = previous.as_ref().is_some_and(|t| t.hash.is_some());
        let kept = previous.unwrap_or_else(|| Tracked {
            id: Arc::from(path),
            stamp: None,
            hash: None,
            charged: 0,
            keys: Vec::new(),
        });
        self.files
            .insert(path.to_path_buf(), Tracked { stamp, ..kept });
        FileChange {
            path: path.to_path_buf(),
            status: if in_force {
                Status::Kept
            } else {
                Status::Rejected
            },
            diagnostics,
            updates: Vec::new(),
        }
    }

    /// Records `file`'s definitions (the first of a key within the file
    /// counts; a later one is an error, as `tortie validate` says); returns
    /// the values by key and the keys, shared with the index.
    fn hold(
        &mut self,
        file: &Arc<Path>,
        resources: Vec<Loaded>,
        hashes: Vec<u64>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> (Fresh, Vec<Arc<ResourceKey>>) {
        let mut fresh = Fresh::with_capacity(resources.len());
        let mut keys = Vec::with_capacity(resources.len());
        for (loaded, hash) in resources.into_iter().zip(hashes) {
            let key = loaded.resource.key();
            let line = u32::try_from(loaded.origin.line).unwrap_or(u32::MAX);
            if fresh.contains_key(&key) {
                let first = self
                    .keys
                    .get(&key)
                    .and_then(|s| s.holders.iter().find(|h| h.file == *file));
                let first = first.map_or(0, |h| h.line);
                diagnostics.push(duplicate(&key, (file, line), (file, first)));
                continue;
            }
            let shared = match self.keys.get_key_value(&key) {
                Some((k, _)) => k.clone(),
                None => Arc::new(key.clone()),
            };
            let state = self.keys.entry(shared.clone()).or_default();
            state.holders.retain(|h| h.file != *file);
            let holder = Holder {
                file: file.clone(),
                hash,
                line,
            };
            let at = state.holders.partition_point(|h| h.file < *file);
            // Almost every key has one holder: room for one, not four.
            state.holders.reserve_exact(1);
            state.holders.insert(at, holder);
            // Reported on the later definition: this one, or (when this
            // file now comes first) the one it displaces.
            if at > 0 {
                let w = &state.holders[0];
                diagnostics.push(duplicate(&key, (file, line), (&w.file, w.line)));
            } else if let Some(next) = state.holders.get(1) {
                diagnostics.push(duplicate(&key, (&next.file, next.line), (file, line)));
            }
            fresh.insert(key, loaded.resource);
            keys.push(shared);
        }
        (fresh, keys)
    }
}

/// The error for a second definition of `key` (at `at`); `first` is the
/// one used.
fn duplicate(key: &ResourceKey, at: (&Path, u32), first: (&Path, u32)) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        stage: crate::diag::Stage::Validation,
        file: Some(at.0.to_path_buf()),
        pos: Some(crate::model::yaml::Pos {
            line: at.1 as usize,
            col: 1,
        }),
        resource: Some(key.to_string()),
        path: None,
        message: format!(
            "{key} is defined twice; the first definition ({}:{}) is used",
            first.0.display(),
            first.1
        ),
        hint: Some("give each resource a unique name, or delete one copy".into()),
        source: None,
        source_line: 1,
    }
}

/// What the source thread waits for.
enum Msg {
    Fs(notify::Result<notify::Event>),
    Done(Done),
}

/// Parser threads: `small` workers for ordinary files and one for large
/// files, so a large file never delays a small one.
struct Workers {
    small: Sender<Job>,
    large: Sender<Job>,
}

impl Workers {
    fn start(limits: Limits, pool: Arc<Pool>, out: Sender<Msg>) -> std::io::Result<Workers> {
        let small_workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        let lane = |name: &str, n: usize| -> std::io::Result<Sender<Job>> {
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..n {
                let (rx, out, pool) = (rx.clone(), out.clone(), pool.clone());
                std::thread::Builder::new()
                    .name(format!("tortie-{name}-{i}"))
                    .stack_size(8 << 20)
                    .spawn(move || worker(&rx, &out, &limits, &pool))?;
            }
            Ok(tx)
        };
        Ok(Workers {
            small: lane("parse", small_workers)?,
            large: lane("parse-large", 1)?,
        })
    }

    fn send(&self, job: Job) {
        let lane = if job.large { &self.large } else { &self.small };
        let _ = lane.send(job);
    }
}

fn worker(jobs: &Mutex<Receiver<Job>>, out: &Sender<Msg>, limits: &Limits, pool: &Pool) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let parsed = parse_guarded(&job, limits, pool);
        let done = Done {
            path: job.path,
            generation: job.generation,
            parsed,
        };
        if out.send(Msg::Done(done)).is_err() {
            return;
        }
    }
}

/// [`parse_job`], with a panic in the loader turned into a rejected file
/// instead of a lost worker (and a path that would never be read again).
fn parse_guarded(job: &Job, limits: &Limits, pool: &Pool) -> Parsed {
    let run = std::panic::AssertUnwindSafe(|| parse_job(job, limits, pool));
    std::panic::catch_unwind(run).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let mut d = crate::diag::file_error(
            &job.path,
            crate::diag::Stage::Syntax,
            format!("internal error while reading this file ({why}); it is rejected"),
        );
        d.hint = Some("this is a bug in tortie: please report it with the file".into());
        // Not retried until the file changes.
        let stamp = std::fs::metadata(&job.path).ok().map(|m| Stamp::of(&m));
        Parsed::rejected(stamp, d)
    })
}

/// A running directory source; dropping it stops the thread.
pub struct Watching {
    stop: Arc<AtomicBool>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn start_watcher(root: &Path, tx: Sender<Msg>) -> Result<notify::RecommendedWatcher, DirError> {
    let err = |e: notify::Error| DirError::Watch {
        path: root.to_path_buf(),
        reason: e.to_string(),
    };
    let mut w = notify::recommended_watcher(move |ev| {
        let _ = tx.send(Msg::Fs(ev));
    })
    .map_err(err)?;
    w.watch(root, notify::RecursiveMode::Recursive)
        .map_err(err)?;
    Ok(w)
}

/// Starts following `root`: lists and parses every file and sends each
/// file's change to `sink`, then [`Event::Synced`] (the initial listing is
/// complete when this returns), then keeps sending each file's change
/// until `sink` returns false or the handle is dropped.
pub fn watch(
    root: &Path,
    opts: DirOptions,
    sink: impl Fn(Event) -> bool + Send + 'static,
) -> Result<Watching, DirError> {
    let (tx, rx) = mpsc::channel::<Msg>();
    // Watch before the initial listing, so no change slips between them.
    let watcher = start_watcher(root, tx.clone())?;
    let pool = Arc::new(Pool::new(opts.limits.max_total_values));
    let workers =
        Workers::start(opts.limits, pool.clone(), tx.clone()).map_err(|source| DirError::Read {
            path: root.to_path_buf(),
            source,
        })?;
    let mut source = Source {
        tree: Tree::new(root, pool),
        workers,
        watcher,
        watched: std::fs::canonicalize(root).ok(),
        tx,
        opts,
        held: Held::default(),
    };
    let mut initial = Vec::new();
    source
        .rescan(&BTreeSet::new(), false, &mut |c| {
            initial.extend(c);
            true
        })
        .map_err(|e| DirError::Read {
            path: root.to_path_buf(),
            source: e,
        })?;
    let mut fs_events = Vec::new();
    while !source.tree.inflight.is_empty() {
        match rx.recv() {
            Ok(Msg::Done(done)) => source.complete(done, &mut |c: Vec<FileChange>| {
                initial.extend(c);
                true
            }),
            Ok(Msg::Fs(ev)) => fs_events.push(ev),
            Err(_) => break,
        }
    }
    for c in initial {
        sink(Event::Changes(c.into_changes()));
    }
    sink(Event::Synced);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let file_sink = move |c: Vec<FileChange>| sink(Event::Changes(merge(c)));
    std::thread::Builder::new()
        .name("tortie-dir".into())
        .spawn(move || source.run(rx, fs_events, &flag, &file_sink))
        .map_err(|source| DirError::Read {
            path: root.to_path_buf(),
            source,
        })?;
    Ok(Watching { stop })
}

/// Removals and reads waiting for the other reads started by the same
/// rescan: a file renamed within the tree is a removal and a read, a
/// document moved between files two reads; sent together, the objects
/// never leave (no window without them). At most [`HOLD_REMOVALS`].
#[derive(Default)]
struct Held {
    changes: Vec<FileChange>,
    awaiting: BTreeSet<PathBuf>,
    since: Option<Instant>,
}

/// The longest removals wait for the reads they came with.
const HOLD_REMOVALS: Duration = Duration::from_secs(1);

impl Held {
    fn overdue(&self) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= HOLD_REMOVALS)
    }

    fn take(&mut self) -> Vec<FileChange> {
        self.awaiting.clear();
        self.since = None;
        std::mem::take(&mut self.changes)
    }
}

/// Several files' changes as one batch for the consumer.
fn merge(changes: Vec<FileChange>) -> Changes {
    let mut out = Changes::default();
    for c in changes {
        let one = c.into_changes();
        out.updates.extend(one.updates);
        out.reports.extend(one.reports);
    }
    out
}

/// The source thread's state.
struct Source {
    tree: Tree,
    workers: Workers,
    watcher: notify::RecommendedWatcher,
    /// Where the root resolved to when the watch was set up.
    watched: Option<PathBuf>,
    tx: Sender<Msg>,
    opts: DirOptions,
    held: Held,
}

/// Events gathered during one burst.
#[derive(Default)]
struct Burst {
    paths: BTreeSet<PathBuf>,
    overflow: bool,
    started: Option<Instant>,
}

impl Burst {
    /// Adds an event; false when it is not a change (reads, opens), which
    /// must not start or prolong a burst: walking the tree raises them.
    fn add(&mut self, ev: notify::Result<notify::Event>) -> bool {
        use notify::EventKind::*;
        match ev {
            Ok(ev) if ev.need_rescan() => self.overflow = true,
            Ok(ev) if matches!(ev.kind, Create(_) | Modify(_) | Remove(_) | Any | Other) => {
                self.paths.extend(ev.paths)
            }
            Ok(_) => return false,
            // An error from the watcher means events may be lost.
            Err(_) => self.overflow = true,
        }
        self.started.get_or_insert_with(Instant::now);
        true
    }
}

impl Source {
    fn run(
        mut self,
        rx: Receiver<Msg>,
        early: Vec<notify::Result<notify::Event>>,
        stop: &AtomicBool,
        sink: &dyn Fn(Vec<FileChange>) -> bool,
    ) {
        let mut burst = Burst::default();
        for e in early {
            burst.add(e);
        }
        let mut last_event = Instant::now();
        let mut next_rescan = Instant::now() + self.opts.rescan_every;
        let mut alive = true;
        while alive && !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let due = burst
                .started
                .map(|s| (last_event + self.opts.debounce).min(s + Duration::from_secs(1)));
            if due.is_some_and(|d| now >= d) {
                let b = std::mem::take(&mut burst);
                self.rescan_logged(&b.paths, b.overflow, sink);
                next_rescan = now + self.opts.rescan_every;
            } else if now >= next_rescan {
                self.rescan_logged(&BTreeSet::new(), false, sink);
                next_rescan = now + self.opts.rescan_every;
            }
            let until = due.unwrap_or(next_rescan).min(next_rescan);
            let wait = until
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(200));
            match rx.recv_timeout(wait) {
                Ok(Msg::Fs(ev)) => {
                    if burst.add(ev) {
                        last_event = Instant::now();
                    }
                }
                Ok(Msg::Done(done)) => {
                    let mut ok = true;
                    self.complete(done, &mut |c| {
                        ok &= sink(c);
                        ok
                    });
                    alive = ok;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => alive = false,
            }
            if self.held.overdue() {
                let late = self.held.take();
                if !late.is_empty() {
                    alive &= sink(late);
                }
            }
        }
    }

    fn rescan_logged(
        &mut self,
        forced: &BTreeSet<PathBuf>,
        all: bool,
        sink: &dyn Fn(Vec<FileChange>) -> bool,
    ) {
        if let Err(e) = self.rescan(forced, all, &mut |c| sink(c)) {
            tracing::error!(
                root = %self.tree.root.display(),
                error = %e,
                "cannot list the datastore; what is in force stays until it can"
            );
        }
    }

    /// Walks the tree and dispatches the jobs it needs; emits removals, or
    /// holds them until the reads this rescan started are done.
    fn rescan(
        &mut self,
        forced: &BTreeSet<PathBuf>,
        all: bool,
        emit: &mut dyn FnMut(Vec<FileChange>) -> bool,
    ) -> std::io::Result<()> {
        self.rewatch_if_moved();
        if all {
            tracing::warn!(
                root = %self.tree.root.display(),
                "file events were lost (inotify queue overflow); re-reading every file"
            );
        }
        let (changes, jobs) = self.tree.rescan(forced, all)?;
        // Removals, or reads of several files (a document moved from one
        // to another), travel as one change.
        if !changes.is_empty() || jobs.len() > 1 || !self.held.awaiting.is_empty() {
            self.held.changes.extend(changes);
            self.held
                .awaiting
                .extend(jobs.iter().map(|j| j.path.clone()));
            self.held.since.get_or_insert_with(Instant::now);
        }
        if !self.held.changes.is_empty() && self.held.awaiting.is_empty() {
            emit(self.held.take());
        }
        for job in jobs {
            self.workers.send(job);
        }
        Ok(())
    }

    /// When the root is a symlink that now points elsewhere (e.g. a
    /// git-sync checkout), watch its new target.
    fn rewatch_if_moved(&mut self) {
        let now = std::fs::canonicalize(&self.tree.root).ok();
        if now.is_none() || now == self.watched {
            return;
        }
        if let Ok(w) = start_watcher(&self.tree.root, self.tx.clone()) {
            self.watcher = w;
            self.watched = now;
        }
    }

    fn complete(&mut self, done: Done, emit: &mut dyn FnMut(Vec<FileChange>) -> bool) {
        let heavy = matches!(&done.parsed, Parsed::Loaded { result, .. } if result.rejected || result.values > 100_000);
        let path = done.path.clone();
        let (change, jobs) = self.tree.complete(done);
        if self.held.awaiting.remove(&path) {
            // Read again (it changed while parsed): still awaited.
            self.held.awaiting.extend(
                jobs.iter()
                    .filter(|j| j.path == path)
                    .map(|j| j.path.clone()),
            );
            self.held.changes.extend(change);
            if self.held.awaiting.is_empty() {
                emit(self.held.take());
            }
        } else if let Some(c) = change {
            emit(vec![c]);
        }
        for job in jobs {
            self.workers.send(job);
        }
        if heavy {
            super::trim_heap();
        }
    }
}

#[cfg(test)]
mod tests;
