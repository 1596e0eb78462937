//! Loading: files and directories of YAML or JSON → valid resources plus
//! every diagnostic. One bad document never hides the others, and an
//! invalid resource is reported and left out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::yaml::{self, Budget, FieldPath, Limits, Node, Pool, Value};
use super::{Resource, ResourceKey, ResourceKind, decode_resource, validate};
use crate::diag::{Diagnostic, Severity, Stage, file_error};

/// Where a resource was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

/// A valid resource and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub resource: Resource,
    pub origin: Origin,
}

impl Loaded {
    /// A diagnostic about this resource as a whole, placed at its document.
    pub fn diagnostic(
        &self,
        severity: Severity,
        path: Option<yaml::FieldPath>,
        message: String,
        hint: &str,
    ) -> Diagnostic {
        Diagnostic {
            severity,
            stage: Stage::Validation,
            file: Some(self.origin.file.clone()),
            pos: Some(yaml::Pos {
                line: self.origin.line,
                col: 1,
            }),
            resource: Some(self.resource.key().to_string()),
            path,
            message,
            hint: Some(hint.to_string()),
            source: None,
            source_line: 1,
        }
    }
}

/// The result of loading: the valid resources and all diagnostics.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub resources: Vec<Loaded>,
    pub diagnostics: Vec<Diagnostic>,
    /// The whole input was refused (too large, or over its value budget):
    /// nothing of it is in `resources`.
    pub rejected: bool,
    /// Which value budget ran out, when that is why it was rejected.
    pub over_budget: Option<yaml::BudgetKind>,
    /// Values parsed (including copies made by aliases).
    pub values: usize,
    /// Documents of kinds tortie does not use, skipped (each has a note).
    pub skipped: usize,
}

impl LoadResult {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
    pub fn extend(&mut self, other: LoadResult) {
        // Moved, not copied, when this is the first (often the only) file.
        if self.resources.is_empty() {
            self.resources = other.resources;
        } else {
            self.resources.extend(other.resources);
        }
        self.diagnostics.extend(other.diagnostics);
        self.rejected |= other.rejected;
        self.over_budget = self.over_budget.or(other.over_budget);
        self.values += other.values;
        self.skipped += other.skipped;
    }

    /// `--strict`: the documents skipped for their kind become errors.
    pub fn make_strict(&mut self) {
        for d in &mut self.diagnostics {
            if d.severity == Severity::Note && d.stage == Stage::Decode {
                d.severity = Severity::Error;
                d.message = d.message.replacen("skipped ", "unexpected kind: ", 1);
                d.hint = Some("remove the document, or run without --strict to skip it".into());
            }
        }
    }

    /// Counts of (errors, warnings, notes).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |s| self.diagnostics.iter().filter(|d| d.severity == s).count();
        (n(Severity::Error), n(Severity::Warning), n(Severity::Note))
    }
}

/// Whether a path looks like a resource file.
pub fn is_resource_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    ) && !p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Lists the resource files under `path` (a file, or a directory walked
/// recursively), sorted so that loading is deterministic.
pub fn resource_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(walk(path)?.into_keys().collect())
}

/// The resource files under `path` with their metadata (of the file a
/// symlink points to). Directories and files whose names start with `.`
/// are skipped; symlinks are followed (to files and to directories, each
/// directory once, so a link loop ends); dangling links are skipped.
pub fn walk(
    path: &Path,
) -> std::io::Result<std::collections::BTreeMap<PathBuf, std::fs::Metadata>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        out.insert(path.to_path_buf(), meta);
        return Ok(out);
    }
    let mut seen = std::collections::HashSet::new();
    seen.insert((meta.dev(), meta.ino()));
    let mut stack = vec![path.to_path_buf()];
    let mut first = true;
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // The root must be readable; a subdirectory may vanish mid-walk.
            Err(e) if first => return Err(e),
            Err(_) => continue,
        };
        first = false;
        for entry in entries.flatten() {
            let p = entry.path();
            if p.file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'))
            {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                if seen.insert((meta.dev(), meta.ino())) {
                    stack.push(p);
                }
            } else if meta.is_file() && is_resource_file(&p) {
                out.insert(p, meta);
            }
        }
    }
    Ok(out)
}

/// Loads every path (files or directories) with the one-shot commands'
/// limits.
pub fn load_paths(paths: &[PathBuf]) -> LoadResult {
    load_paths_with(paths, &Limits::CLI)
}

/// Loads every path; `limits` bound each file and all files together.
pub fn load_paths_with(paths: &[PathBuf], limits: &Limits) -> LoadResult {
    let pool = Pool::new(limits.max_total_values);
    let mut result = LoadResult::default();
    for path in paths {
        match resource_files(path) {
            Ok(files) => {
                for f in files {
                    let mut budget = Budget::with_pool(limits.max_file_values, &pool, 0);
                    let one = load_file_with(&f, limits.max_file_bytes, &mut budget);
                    if one.rejected {
                        pool.release(budget.charged());
                    }
                    result.extend(one);
                }
            }
            Err(e) => result.diagnostics.push(file_error(
                path,
                Stage::Io,
                format!("cannot read `{}`: {e}", path.display()),
            )),
        }
    }
    check_duplicates(&mut result);
    result
}

/// Loads one file from disk (one-shot commands' limits).
pub fn load_file(path: &Path) -> LoadResult {
    let mut budget = Budget::new(Limits::CLI.max_file_values);
    load_file_with(path, Limits::CLI.max_file_bytes, &mut budget)
}

/// Loads one file of at most `max_bytes`, counting values against `budget`.
/// The file is read one document at a time: its whole text is never held.
pub fn load_file_with(path: &Path, max_bytes: u64, budget: &mut Budget) -> LoadResult {
    let rejected = |d: Diagnostic| LoadResult {
        diagnostics: vec![d],
        rejected: true,
        ..LoadResult::default()
    };
    let io = |e: std::io::Error| file_error(path, Stage::Io, format!("cannot read: {e}"));
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return rejected(io(e)),
    };
    match file.metadata() {
        Ok(m) if m.len() > max_bytes => return rejected(too_big(path, m.len(), max_bytes)),
        Ok(_) => {}
        Err(e) => return rejected(io(e)),
    }
    // The file may grow while it is read: never read past the limit.
    let reader =
        std::io::BufReader::with_capacity(1 << 16, std::io::Read::take(file, max_bytes + 1));
    let threads = loader_threads();
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    if threads > 1 && size >= PARALLEL_FROM_BYTES {
        return load_parallel(path, reader, max_bytes, budget, threads);
    }
    let mut ctx = Ctx::new(path);
    let outcome = yaml::for_each_document_in(reader, budget, max_bytes, |doc, text| {
        ctx.raw_document(doc, text)
    });
    match outcome {
        Ok(()) => ctx.finish(None, budget),
        Err(yaml::ReadError::OverBudget(over)) => ctx.finish(Some(over), budget),
        Err(e) => rejected(read_error(path, e, max_bytes)),
    }
}

/// Threads that parse one large file: `TORTIE_LOADER_THREADS`, default 1.
/// Measured on the shared 2-core machine with the 75 MB XL dump, two
/// threads cost more CPU (1.7 s against 1.45 s) and 20 MB more, and were
/// not faster while other work held the cores; they can only pay where
/// cores are idle.
fn loader_threads() -> usize {
    std::env::var("TORTIE_LOADER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, MAX_THREADS)
}

/// Files from this size on are parsed and decoded by several threads.
pub const PARALLEL_FROM_BYTES: u64 = 8 << 20;
/// At most this many threads parse one file.
const MAX_THREADS: usize = 4;
/// Documents handed to a thread at a time.
const BATCH_DOCS: usize = 256;

/// The diagnostic for a file that could not be read to its end.
fn read_error(path: &Path, e: yaml::ReadError, max_bytes: u64) -> Diagnostic {
    match e {
        yaml::ReadError::Io { line, error } => {
            let message = match error.kind() {
                std::io::ErrorKind::InvalidData => {
                    format!("the file is not UTF-8 text (line {line})")
                }
                _ => format!("cannot read (line {line}): {error}"),
            };
            file_error(path, Stage::Io, message)
        }
        yaml::ReadError::TooLong(bytes) => too_big(path, bytes, max_bytes),
        yaml::ReadError::OverBudget(over) => file_error(path, Stage::Syntax, over.to_string()),
        yaml::ReadError::Stopped => file_error(path, Stage::Io, "reading stopped".into()),
    }
}

/// What one thread made of one batch of documents.
struct Part {
    result: LoadResult,
    values: usize,
    over: Option<yaml::OverBudget>,
}

/// `load_file_with` on `threads` threads: this one reads and splits the
/// file, the others parse, decode and validate batches of documents; the
/// parts are put back in file order, so the result is the same as reading
/// the file on one thread. The file's value budget is shared while it is
/// read (an overrun stops the reading); the datastore's is charged at the end.
fn load_parallel(
    path: &Path,
    reader: impl std::io::BufRead,
    max_bytes: u64,
    budget: &mut Budget,
    threads: usize,
) -> LoadResult {
    let file_pool = Pool::new(budget.file_limit());
    let (jobs, queue) = std::sync::mpsc::sync_channel::<(usize, Batch)>(threads * 2);
    let queue = std::sync::Mutex::new(queue);
    let (done, parts) = std::sync::mpsc::channel::<(usize, Part)>();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (outcome, last_line) = std::thread::scope(|s| {
        for _ in 0..threads {
            let (queue, done, file_pool, stop) = (&queue, done.clone(), &file_pool, &stop);
            s.spawn(move || {
                loop {
                    let job = queue
                        .lock()
                        .map_err(|_| ())
                        .and_then(|q| q.recv().map_err(|_| ()));
                    let Ok((seq, docs)) = job else { break };
                    let part = parse_batch(path, &docs, file_pool);
                    if part.over.is_some() {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    if done.send((seq, part)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done);
        let (mut batch, mut seq, mut last_line) = (Batch::default(), 0, 1);
        let outcome = yaml::split_stream(reader, max_bytes, |doc, start| {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(yaml::ReadError::Stopped);
            }
            last_line = start;
            batch.push(doc, start);
            if batch.docs.len() >= BATCH_DOCS {
                jobs.send((seq, std::mem::take(&mut batch)))
                    .map_err(|_| yaml::ReadError::Stopped)?;
                seq += 1;
            }
            Ok(())
        });
        if !batch.docs.is_empty() && outcome.is_ok() {
            let _ = jobs.send((seq, batch));
        }
        drop(jobs);
        (outcome, last_line)
    });
    let mut parts: Vec<(usize, Part)> = parts.into_iter().collect();
    parts.sort_by_key(|(seq, _)| *seq);
    assemble(path, parts, outcome, last_line, max_bytes, budget)
}

/// Documents handed to a thread: their texts in one string (one allocation
/// per batch, freed by the thread that parses it) with each one's end and
/// first line.
#[derive(Default)]
struct Batch {
    text: String,
    docs: Vec<(usize, usize)>,
}

impl Batch {
    fn push(&mut self, doc: &str, first_line: usize) {
        self.text.push_str(doc);
        self.docs.push((self.text.len(), first_line));
    }
}

/// Parses, decodes and validates one batch, counting values in `pool`.
fn parse_batch(path: &Path, batch: &Batch, pool: &Pool) -> Part {
    let mut budget = Budget::with_pool(usize::MAX, pool, 0);
    let mut ctx = Ctx::new(path);
    let mut over = None;
    let mut from = 0;
    for (end, start) in &batch.docs {
        let text = &batch.text[from..*end];
        from = *end;
        let result = match yaml::parse_one_within(text, *start, &mut budget) {
            Err(yaml::ParseError::OverBudget(e)) => {
                // The shared pool is the file's budget.
                over = Some(yaml::OverBudget {
                    kind: yaml::BudgetKind::File,
                    ..e
                });
                break;
            }
            Err(yaml::ParseError::Syntax(e)) => Err(e),
            Ok(node) => Ok(node),
        };
        let doc = yaml::RawDocument {
            first_line: *start,
            result,
        };
        ctx.raw_document(doc, text);
    }
    Part {
        values: budget.used(),
        result: ctx.result,
        over,
    }
}

/// The parts of a file read in parallel, in order, as one result.
fn assemble(
    path: &Path,
    parts: Vec<(usize, Part)>,
    outcome: Result<(), yaml::ReadError>,
    last_line: usize,
    max_bytes: u64,
    budget: &mut Budget,
) -> LoadResult {
    let mut ctx = Ctx::new(path);
    let total: usize = parts.iter().map(|(_, p)| p.result.resources.len()).sum();
    ctx.result.resources.reserve_exact(total);
    let mut values = 0;
    for (_, part) in parts {
        if let Some(over) = part.over {
            return ctx.finish(Some(over), budget);
        }
        values += part.values;
        // Appended, not moved in: the reserved room is kept.
        ctx.result.resources.extend(part.result.resources);
        ctx.result.diagnostics.extend(part.result.diagnostics);
        ctx.result.skipped += part.result.skipped;
    }
    match outcome {
        Ok(()) | Err(yaml::ReadError::Stopped) => {}
        Err(e) => {
            return LoadResult {
                diagnostics: vec![read_error(path, e, max_bytes)],
                rejected: true,
                ..LoadResult::default()
            };
        }
    }
    let pos = yaml::Pos {
        line: last_line,
        col: 1,
    };
    match budget.charge(values, pos) {
        Ok(()) => ctx.finish(None, budget),
        Err(over) => ctx.finish(Some(over), budget),
    }
}

fn too_big(path: &Path, size: u64, max_bytes: u64) -> Diagnostic {
    let mut d = file_error(
        path,
        Stage::Io,
        format!(
            "the file is {size} bytes, more than the limit of {max_bytes} bytes ({}); it is not read",
            human_bytes(max_bytes)
        ),
    );
    d.hint = Some(
        "if this file is legitimate, raise the limit with --max-file-size (env TORTIE_MAX_FILE_SIZE), or split it into several files".into(),
    );
    d
}

/// Reads a UTF-8 file, refusing (before reading) one larger than `max_bytes`.
pub fn read_text(path: &Path, max_bytes: u64) -> Result<String, Box<Diagnostic>> {
    use std::io::Read;
    let io = |e: std::io::Error| Box::new(file_error(path, Stage::Io, format!("cannot read: {e}")));
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > max_bytes {
        return Err(Box::new(too_big(path, size, max_bytes)));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(Box::new(too_big(path, bytes.len() as u64, max_bytes)));
    }
    String::from_utf8(bytes).map_err(|_| {
        Box::new(file_error(
            path,
            Stage::Io,
            "the file is not UTF-8 text".into(),
        ))
    })
}

/// A size such as `16MiB`, `64M`, `500KB` or `1048576` (bytes). Binary
/// units (`K`, `KiB`, `M`, `MiB`, `G`, `GiB`) and decimal ones (`KB`, `MB`,
/// `GB`); at least one byte.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&b| b > 0)
}

/// `16 MiB`, `300 KiB`, `12 bytes`.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} bytes"),
    }
}

/// Loads resources from text; `path` names the source in diagnostics.
pub fn load_str(text: &str, path: &Path) -> LoadResult {
    let mut budget = Budget::new(Limits::CLI.max_file_values);
    load_str_with(text, path, &mut budget)
}

/// Loads resources from text, counting values against `budget`. Documents
/// are parsed and decoded one at a time; when the budget runs out, the whole
/// text is rejected with one positioned error and nothing of it is kept.
pub fn load_str_with(text: &str, path: &Path, budget: &mut Budget) -> LoadResult {
    let mut ctx = Ctx::new(path);
    let mut outcome = Ok(());
    yaml::split_documents(text, |chunk, start| {
        if outcome.is_err() {
            return;
        }
        match yaml::parse_one_within(chunk, start, budget) {
            Err(yaml::ParseError::OverBudget(e)) => outcome = Err(e),
            Err(yaml::ParseError::Syntax(e)) => ctx.raw_document(
                yaml::RawDocument {
                    first_line: start,
                    result: Err(e),
                },
                chunk,
            ),
            Ok(node) => ctx.raw_document(
                yaml::RawDocument {
                    first_line: start,
                    result: Ok(node),
                },
                chunk,
            ),
        }
    });
    ctx.finish(outcome.err(), budget)
}

/// Loads one document given as a tree without text (a Kubernetes object's
/// JSON value): the same checks and diagnostics as a file's document,
/// placed by resource and field path only (no line or column).
pub fn load_node(node: &Node, path: &Path) -> LoadResult {
    let mut ctx = Ctx::new(path);
    ctx.document(node, &FieldPath::root(), 1);
    let mut result = ctx.result;
    for d in &mut result.diagnostics {
        d.pos = None;
    }
    result
}

/// A hint for a syntax error on `line` of a document starting at file line
/// `first_line`.
fn syntax_hint(text: &str, first_line: usize, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(first_line)?)?;
    if l.contains(['“', '”', '‘', '’']) {
        return Some("this line contains curly quotes (“ ” ‘ ’): use straight quotes".into());
    }
    if l.contains('\t') {
        return Some("YAML does not allow tabs for indentation: use spaces".into());
    }
    None
}

/// Loading one file: the document being read and everything found so far.
struct Ctx<'t> {
    file: PathBuf,
    /// The text of the document being read and its first file line.
    text: &'t str,
    first_line: usize,
    /// A shared copy of that text for diagnostics, made at the first one
    /// (a document without problems is never copied).
    source: Option<Arc<str>>,
    result: LoadResult,
}

impl<'t> Ctx<'t> {
    fn new(path: &Path) -> Self {
        Ctx {
            file: path.to_path_buf(),
            text: "",
            first_line: 1,
            source: None,
            result: LoadResult::default(),
        }
    }

    /// Handles one document of the file (its text starts at its first line).
    fn raw_document(&mut self, doc: yaml::RawDocument, text: &str) {
        // The text lives only for this call: the context forgets it after.
        let mut ctx = Ctx {
            file: std::mem::take(&mut self.file),
            text,
            first_line: doc.first_line,
            source: None,
            result: std::mem::take(&mut self.result),
        };
        match doc.result {
            Err(e) => {
                let hint = syntax_hint(text, doc.first_line, e.pos.line);
                ctx.push(
                    Severity::Error,
                    Stage::Syntax,
                    Some(e.pos),
                    None,
                    None,
                    format!("YAML syntax error: {}", e.message),
                    hint,
                )
            }
            Ok(node) => ctx.document(&node, &FieldPath::root(), doc.first_line),
        }
        self.file = ctx.file;
        self.result = ctx.result;
    }

    /// The result; with `over`, the whole file is rejected for its budget.
    fn finish(mut self, over: Option<yaml::OverBudget>, budget: &Budget) -> LoadResult {
        if let Some(over) = over {
            self.result = LoadResult {
                rejected: true,
                over_budget: Some(over.kind),
                ..LoadResult::default()
            };
            self.push(
                Severity::Error,
                Stage::Syntax,
                Some(over.pos),
                None,
                None,
                over.to_string(),
                Some(over.hint()),
            );
        }
        self.result.values = budget.used();
        self.result
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        severity: Severity,
        stage: Stage,
        pos: Option<yaml::Pos>,
        resource: Option<String>,
        path: Option<FieldPath>,
        message: String,
        hint: Option<String>,
    ) {
        let source = (!self.text.is_empty()).then(|| {
            self.source
                .get_or_insert_with(|| Arc::from(self.text))
                .clone()
        });
        self.result.diagnostics.push(Diagnostic {
            severity,
            stage,
            file: Some(self.file.clone()),
            pos,
            resource,
            path,
            message,
            hint,
            source,
            source_line: self.first_line,
        });
    }

    fn document(&mut self, node: &Node, base: &FieldPath, first_line: usize) {
        let err = |ctx: &mut Ctx<'_>, pos, message: String, hint: Option<String>| {
            ctx.push(
                Severity::Error,
                Stage::Decode,
                Some(pos),
                None,
                Some(base.clone()),
                message,
                hint,
            )
        };
        if !matches!(node.value, Value::Map(_)) {
            err(
                self,
                node.pos,
                format!(
                    "expected a resource (a map with apiVersion, kind, metadata and spec), found {}",
                    node.kind_name()
                ),
                None,
            );
            return;
        }
        if self.skip_foreign(node) {
            return;
        }
        let allowed = ["apiVersion", "kind", "metadata", "spec", "status", "items"];
        // An EndpointSlice has no `spec`: its fields sit at the top level.
        let slice = node.get("kind").and_then(Node::as_str) == Some("EndpointSlice");
        if let Value::Map(entries) = &node.value
            && !slice
        {
            for (k, _) in entries {
                let name = k.as_str().unwrap_or("");
                if !allowed.contains(&name) {
                    let hint = super::de::suggest(name, &allowed)
                        .map(|s| format!("did you mean `{s}`? field names are case-sensitive"))
                        .or_else(|| {
                            Some("a resource has apiVersion, kind, metadata and spec".into())
                        });
                    err(
                        self,
                        k.pos,
                        format!("unknown top-level field `{name}`"),
                        hint,
                    );
                    return;
                }
            }
        }
        let api = node.get("apiVersion").and_then(Node::as_str);
        let kind = node.get("kind").and_then(Node::as_str);
        let (Some(api), Some(kind)) = (api, kind) else {
            let missing = if api.is_none() { "apiVersion" } else { "kind" };
            err(
                self,
                node.pos,
                format!("missing `{missing}`"),
                Some("every resource starts with `apiVersion:` and `kind:`, e.g. `apiVersion: projectcalico.org/v3` and `kind: GlobalNetworkPolicy`".into()),
            );
            return;
        };
        if kind == "List" || (kind.ends_with("List") && node.get("items").is_some()) {
            let item_kind = kind.strip_suffix("List").unwrap_or("");
            match node.get("items").map(|n| &n.value) {
                Some(Value::Seq(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        let p = base.key("items").index(i);
                        if !item_kind.is_empty()
                            && item.get("kind").and_then(Node::as_str) != Some(item_kind)
                            && item.get("kind").is_some()
                        {
                            err(
                                self,
                                item.pos,
                                format!("a {kind} may only hold {item_kind} items"),
                                None,
                            );
                            continue;
                        }
                        self.document(item, &p, first_line);
                    }
                }
                Some(Value::Null) | None => {}
                Some(_) => err(self, node.pos, "`items` must be a list".into(), None),
            }
            return;
        }
        let rkind = match ResourceKind::resolve(api, kind) {
            Ok(k) => k,
            Err((msg, hint)) => {
                let pos = node.get("kind").map(|n| n.pos).unwrap_or(node.pos);
                err(self, pos, msg, Some(hint));
                return;
            }
        };
        let name = node
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Node::as_str)
            .unwrap_or("<unnamed>");
        let ns = node
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Node::as_str);
        let label = match (rkind.namespaced(), ns) {
            (true, Some(ns)) => format!("{} {ns}/{name}", rkind.kind_name()),
            (true, None) => format!("{} default/{name}", rkind.kind_name()),
            _ => format!("{} {name}", rkind.kind_name()),
        };
        if api == "extensions/v1beta1" || api == "networking.k8s.io/v1beta1" {
            self.push(
                Severity::Warning,
                Stage::Decode,
                node.get("apiVersion").map(|n| n.pos),
                Some(label.clone()),
                None,
                format!("apiVersion `{api}` is obsolete (removed in Kubernetes 1.16); it is read as networking.k8s.io/v1"),
                Some("write `apiVersion: networking.k8s.io/v1`".into()),
            );
        }
        let resource = match decode_resource(node, rkind, base) {
            Ok(r) => r,
            Err(errors) => {
                for e in errors {
                    self.push(
                        Severity::Error,
                        Stage::Decode,
                        e.pos.or(Some(node.pos)),
                        Some(label.clone()),
                        Some(e.path.clone()),
                        e.message,
                        e.hint,
                    );
                }
                return;
            }
        };
        let findings = validate::validate(&resource);
        let mut valid = true;
        for f in findings {
            let full = FieldPath(base.0.iter().chain(f.path.0.iter()).cloned().collect());
            let pos = finding_pos(node, &f, self.text, self.first_line);
            valid &= f.warning;
            self.push(
                if f.warning {
                    Severity::Warning
                } else {
                    Severity::Error
                },
                Stage::Validation,
                Some(pos),
                Some(label.clone()),
                Some(full),
                f.message,
                f.hint,
            );
        }
        if valid {
            self.result.resources.push(super::load::Loaded {
                resource,
                origin: Origin {
                    file: self.file.clone(),
                    line: node.pos.line.max(first_line),
                },
            });
        }
    }
}

impl Ctx<'_> {
    /// A document of a kind tortie does not use (whatever its fields) is
    /// skipped with a note.
    fn skip_foreign(&mut self, node: &Node) -> bool {
        let api = node.get("apiVersion").and_then(Node::as_str);
        let kind = node.get("kind").and_then(Node::as_str);
        let (Some(api), Some(kind)) = (api, kind) else {
            return false;
        };
        if kind.ends_with("List")
            || ResourceKind::resolve(api, kind).is_ok()
            || !is_foreign_kind(api, kind)
        {
            return false;
        }
        let name = node
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Node::as_str)
            .unwrap_or("<unnamed>");
        self.result.skipped += 1;
        self.push(
            Severity::Note,
            Stage::Decode,
            node.get("kind").map(|n| n.pos),
            Some(format!("{kind} {name}")),
            None,
            format!("skipped {kind} ({api}): tortie does not use this kind"),
            Some("--strict makes this an error".into()),
        );
        true
    }
}

/// Calico's kinds that are not policy (IPAM, BGP, cluster and node state).
const CALICO_OTHER_KINDS: &[&str] = &[
    "BGPConfiguration",
    "BGPFilter",
    "BGPPeer",
    "BlockAffinity",
    "CalicoNodeStatus",
    "ClusterInformation",
    "IPAMBlock",
    "IPAMConfig",
    "IPAMConfiguration",
    "IPAMHandle",
    "IPPool",
    "IPReservation",
    "KubeControllersConfiguration",
    "Node",
];

/// A kind that tortie does not use and may skip: Calico's non-policy kinds,
/// and any kind of
/// another API group that is not a network policy and does not look like a
/// misspelt kind tortie reads. Network policy kinds tortie does not enforce
/// (e.g. AdminNetworkPolicy) and typos stay errors.
pub fn is_foreign_kind(api: &str, kind: &str) -> bool {
    match api {
        super::CALICO_API | super::CALICO_CRD_API => CALICO_OTHER_KINDS.contains(&kind),
        _ => {
            !kind.is_empty()
                && !api.is_empty()
                && !kind.to_ascii_lowercase().contains("networkpolic")
                && !looks_like_a_kind_tortie_reads(kind)
        }
    }
}

/// `pods`, `Pods`, `NetworkPolicys`, `GlobalNetworkpolicy`, `Namespce`: a
/// kind tortie reads in another case, in the plural, or (for names of six
/// letters or more) within two edits. Short real kinds (`Node`, `Job`) are
/// not mistaken for `Pod`.
fn looks_like_a_kind_tortie_reads(kind: &str) -> bool {
    let lower = kind.to_ascii_lowercase();
    ResourceKind::ALL.iter().any(|k| {
        let name = k.kind_name().to_ascii_lowercase();
        let plural_y = name
            .strip_suffix('y')
            .is_some_and(|stem| lower == format!("{stem}ies"));
        lower == name
            || lower == format!("{name}s")
            || plural_y
            || (lower.len() >= 6 && super::de::edit_distance(&lower, &name) <= 2)
    })
}

/// Where to point for a validation finding: the key of a field the hint
/// says to remove; the offending character of a value whose message names a
/// column (`(at column N)`, a byte offset into the value) when the value is
/// written verbatim on its line; otherwise the value.
fn finding_pos(doc: &Node, f: &validate::Finding, text: &str, first_line: usize) -> yaml::Pos {
    if f.hint.as_deref().is_some_and(|h| h.starts_with("remove `"))
        && let Some(pos) = doc.locate_key(&f.path)
    {
        return pos;
    }
    let pos = doc.locate(&f.path);
    let Some(offset) = column_in_message(&f.message) else {
        return pos;
    };
    let value = locate_node(doc, &f.path).and_then(Node::as_str);
    let line = pos
        .line
        .checked_sub(first_line)
        .and_then(|i| text.lines().nth(i));
    let (Some(value), Some(line)) = (value, line) else {
        return pos;
    };
    let rest: String = line.chars().skip(pos.col.saturating_sub(1)).collect();
    let quote = if rest.starts_with(value) {
        0
    } else if (rest.starts_with('"') || rest.starts_with('\'')) && rest[1..].starts_with(value) {
        1
    } else {
        return pos;
    };
    let Some(before) = value.get(..offset.min(value.len())) else {
        return pos;
    };
    yaml::Pos {
        line: pos.line,
        col: pos.col + quote + before.chars().count(),
    }
}

/// The byte offset in `(at column N)`, if the message has one.
fn column_in_message(message: &str) -> Option<usize> {
    let (_, rest) = message.rsplit_once("(at column ")?;
    let n: usize = rest.strip_suffix(')')?.parse().ok()?;
    n.checked_sub(1)
}

/// The node at exactly `path`, if there is one.
fn locate_node<'n>(doc: &'n Node, path: &FieldPath) -> Option<&'n Node> {
    let mut node = doc;
    for seg in &path.0 {
        node = match (seg, &node.value) {
            (yaml::Seg::Key(k), Value::Map(_)) => node.get(k)?,
            (yaml::Seg::Index(i), Value::Seq(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

/// Two definitions of one resource: the later one is an error and is left
/// out (in place: the resources are not copied).
fn check_duplicates(result: &mut LoadResult) {
    // Keys borrowed from the resources: nothing is copied per resource.
    let mut first: std::collections::HashMap<(ResourceKind, Option<&str>, &str), usize> =
        std::collections::HashMap::with_capacity(result.resources.len());
    let mut dropped = Vec::new();
    let resources = &result.resources;
    for (i, loaded) in resources.iter().enumerate() {
        let kind = loaded.resource.kind();
        let meta = loaded.resource.meta();
        let namespace = meta.namespace.as_deref().filter(|_| kind.namespaced());
        let name = meta.name.as_deref().unwrap_or_default();
        let Some(&f) = first.get(&(kind, namespace, name)) else {
            first.insert((kind, namespace, name), i);
            continue;
        };
        let key: ResourceKey = loaded.resource.key();
        let original = &resources[f].origin;
        let message = format!(
            "{key} is defined twice; the first definition ({}:{}) is used",
            original.file.display(),
            original.line
        );
        result.diagnostics.push(loaded.diagnostic(
            Severity::Error,
            None,
            message,
            "give each resource a unique name, or delete one copy",
        ));
        dropped.push(i);
    }
    drop(first);
    let mut i = 0;
    let mut next = dropped.iter().peekable();
    result.resources.retain(|_| {
        let keep = next.peek() != Some(&&i);
        if !keep {
            next.next();
        }
        i += 1;
        keep
    });
}

#[cfg(test)]
mod tests;
