//! A YAML (and JSON) document tree that remembers where every node came
//! from, so that any later error (decoding or validation) can point at
//! `file:line:column`.
//!
//! Files are split into documents at `---` lines before parsing, so that a
//! syntax error in one document never hides the documents around it, and
//! so that a file can be read one document at a time. Plain dump-shaped
//! documents are read by a fast reader (`fast`), the rest by saphyr.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use saphyr_parser::{Event, Parser, ScalarStyle};

mod fast;

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path to a field inside a document, printed as `spec.ingress[0].from`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }
    pub fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

fn plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) if plain_key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        if first {
            f.write_str("(document)")?;
        }
        Ok(())
    }
}

/// A value in the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A value with the position of its first character.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

impl Node {
    /// Describes the kind of value, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key node of `key` in this map (to point at a field name).
    pub fn key_node(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(k, _)| k),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The position of the deepest node on `path` that exists: the exact
    /// field when present, otherwise its nearest ancestor.
    pub fn locate(&self, path: &FieldPath) -> Pos {
        let mut node = self;
        for seg in &path.0 {
            let next = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(_)) => node.get(k),
                (Seg::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.pos
    }
}

impl Node {
    /// The position of the key of the field `path` names, when the field is
    /// there and is a map entry (to point at a field that should not be).
    pub fn locate_key(&self, path: &FieldPath) -> Option<Pos> {
        let (last, parent) = path.0.split_last()?;
        let Seg::Key(k) = last else { return None };
        let mut node = self;
        for seg in parent {
            node = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(_)) => node.get(k)?,
                (Seg::Index(i), Value::Seq(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        node.key_node(k).map(|n| n.pos)
    }
}

/// A YAML syntax error at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// One document cut out of a file: its first line and its parse result.
#[derive(Debug)]
pub struct RawDocument {
    /// 1-based line where the document's text starts.
    pub first_line: usize,
    pub result: Result<Node, SyntaxError>,
}

/// How deep lists and maps may nest: far beyond any real resource, and low
/// enough that dropping or walking a tree never exhausts a thread's stack.
pub const MAX_DEPTH: usize = 256;

/// What one file, and all files of one source together, may expand to.
/// A value is one scalar, list or map of the parsed tree; a value copied by
/// an alias (or kept for later aliases by an anchor) counts again, so alias
/// bombs run into the same limit. One value costs ~80 bytes while parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Files larger than this are rejected before they are read.
    pub max_file_bytes: u64,
    /// Values of one file, all its documents together.
    pub max_file_values: usize,
    /// Values of all files of one datastore (or one `tortie validate` run).
    pub max_total_values: usize,
}

impl Limits {
    /// The agent's defaults: a file up to 16 MiB (about 60,000 pods, 2.4
    /// million values; at most ~250 MB while one file is parsed) and values
    /// for an XL cluster (250,000 pods, 9.5 million values) four times over.
    pub const DAEMON: Limits = Limits {
        max_file_bytes: 16 << 20,
        max_file_values: 3_000_000,
        max_total_values: 40_000_000,
    };
    /// The one-shot commands' defaults: a whole-cluster dump in one file
    /// (the XL dump is 67 MB and 9.5 million values).
    pub const CLI: Limits = Limits {
        max_file_bytes: 256 << 20,
        max_file_values: 40_000_000,
        max_total_values: 80_000_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::CLI
    }
}

/// Values held by every file of one source: shared by concurrent parsers.
#[derive(Debug)]
pub struct Pool {
    limit: usize,
    used: AtomicUsize,
}

impl Pool {
    pub fn new(limit: usize) -> Pool {
        Pool {
            limit,
            used: AtomicUsize::new(0),
        }
    }
    pub fn limit(&self) -> usize {
        self.limit
    }
    /// Values currently charged (files in force plus parses under way).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
    /// Gives back values (a file removed, replaced, or rejected).
    pub fn release(&self, values: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(values))
            });
    }
}

/// Which limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetKind {
    File,
    Datastore,
}

/// A parse stopped because a budget ran out at `pos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    pub pos: Pos,
    pub kind: BudgetKind,
    pub limit: usize,
}

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            BudgetKind::File => write!(
                f,
                "input budget exceeded: this file holds more than {} values (parsed values plus copies made by aliases); the whole file is rejected",
                self.limit
            ),
            BudgetKind::Datastore => write!(
                f,
                "input budget exceeded: all files together hold more than {} values (parsed values plus copies made by aliases); this file is rejected",
                self.limit
            ),
        }
    }
}

impl OverBudget {
    /// How to raise the limit that ran out.
    pub fn hint(&self) -> String {
        let (flag, env) = match self.kind {
            BudgetKind::File => ("--max-file-values", "TORTIE_MAX_FILE_VALUES"),
            BudgetKind::Datastore => ("--max-datastore-values", "TORTIE_MAX_DATASTORE_VALUES"),
        };
        format!(
            "if this input is legitimate, raise the limit with {flag} (env {env}); otherwise split the file or remove the aliases that multiply it"
        )
    }
}

/// The running count of values of one file, charged to its source's pool.
#[derive(Debug)]
pub struct Budget<'a> {
    file_limit: usize,
    used: usize,
    pool: Option<&'a Pool>,
    /// Values charged to the pool so far.
    charged: usize,
    /// Values of the file's previous content, which this parse replaces.
    credit: usize,
}

/// Values are reserved from the shared pool in steps of this many (one
/// atomic operation per step, not per value).
const POOL_STEP: usize = 1024;

impl<'a> Budget<'a> {
    /// A budget of `file_limit` values with no shared pool.
    pub fn new(file_limit: usize) -> Budget<'static> {
        Budget {
            file_limit,
            used: 0,
            pool: None,
            charged: 0,
            credit: 0,
        }
    }

    /// A budget that also draws on `pool`; `credit` is what the file held
    /// before (it is given back when the new content takes its place).
    pub fn with_pool(file_limit: usize, pool: &'a Pool, credit: usize) -> Budget<'a> {
        Budget {
            file_limit,
            used: 0,
            pool: Some(pool),
            charged: 0,
            credit,
        }
    }

    /// Values counted so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Values charged to the pool (to give back if the file is not kept).
    pub fn charged(&self) -> usize {
        self.charged
    }

    /// The most values one file may hold.
    pub fn file_limit(&self) -> usize {
        self.file_limit
    }

    /// Counts `n` values (parsed elsewhere, e.g. by other threads) at once.
    pub fn charge(&mut self, n: usize, pos: Pos) -> Result<(), OverBudget> {
        self.take(n, pos)
    }

    /// Gives back `n` values counted for a parse that was abandoned (and
    /// redone another way). What the pool holds stays reserved for it.
    fn refund(&mut self, n: usize) {
        self.used = self.used.saturating_sub(n);
    }

    fn take(&mut self, n: usize, pos: Pos) -> Result<(), OverBudget> {
        let after = self.used.saturating_add(n);
        if after > self.file_limit {
            return Err(OverBudget {
                pos,
                kind: BudgetKind::File,
                limit: self.file_limit,
            });
        }
        self.used = after;
        let Some(pool) = self.pool else {
            return Ok(());
        };
        while self.used > self.charged {
            let step = POOL_STEP.max(self.used - self.charged);
            let before = pool.used.fetch_add(step, Ordering::Relaxed);
            // Checked against what is really needed, not the step reserved.
            let needed = before + (self.used - self.charged);
            self.charged += step;
            if needed.saturating_sub(self.credit) > pool.limit {
                return Err(OverBudget {
                    pos,
                    kind: BudgetKind::Datastore,
                    limit: pool.limit,
                });
            }
        }
        Ok(())
    }
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Syntax(SyntaxError),
    OverBudget(OverBudget),
}

impl From<SyntaxError> for ParseError {
    fn from(e: SyntaxError) -> Self {
        ParseError::Syntax(e)
    }
}

/// Splits `text` at `---` lines and parses every non-empty document (with
/// the one-shot commands' budget).
pub fn parse_documents(text: &str) -> Vec<RawDocument> {
    let mut budget = Budget::new(Limits::CLI.max_file_values);
    let mut docs = Vec::new();
    if let Err(e) = for_each_document(text, &mut budget, |d| docs.push(d)) {
        docs.push(RawDocument {
            first_line: e.pos.line,
            result: Err(SyntaxError {
                pos: e.pos,
                message: e.to_string(),
            }),
        });
    }
    docs
}

/// Splits `text` at `---` lines and hands each parsed document to `f` as
/// soon as it is read, so that only one document's tree is alive at a time.
/// Stops at the first budget overrun (the file is then to be rejected).
pub fn for_each_document(
    text: &str,
    budget: &mut Budget,
    mut f: impl FnMut(RawDocument),
) -> Result<(), OverBudget> {
    let mut outcome = Ok(());
    split_documents(text, |chunk, start| {
        if outcome.is_err() {
            return;
        }
        match parse_one_within(chunk, start, budget) {
            Err(ParseError::OverBudget(e)) => outcome = Err(e),
            Err(ParseError::Syntax(e)) => f(RawDocument {
                first_line: start,
                result: Err(e),
            }),
            Ok(node) => f(RawDocument {
                first_line: start,
                result: Ok(node),
            }),
        }
    });
    outcome
}

/// Why reading a stream of documents stopped.
#[derive(Debug)]
pub enum ReadError {
    OverBudget(OverBudget),
    /// Reading failed at this 1-based line (`InvalidData`: not UTF-8).
    Io {
        line: usize,
        error: std::io::Error,
    },
    /// The stream held more than the bytes it was limited to (this many).
    TooLong(u64),
    /// The consumer stopped the reading (its own error is reported).
    Stopped,
}

/// Like `for_each_document`, reading `reader` line by line: only the
/// document being parsed is held, never the whole text. `f` also gets the
/// document's text (for diagnostics). A reader limited with `take(n + 1)`
/// reports `TooLong` once it yields more than `limit` bytes.
pub fn for_each_document_in(
    reader: impl std::io::BufRead,
    budget: &mut Budget,
    limit: u64,
    mut f: impl FnMut(RawDocument, &str),
) -> Result<(), ReadError> {
    split_stream(reader, limit, |doc, start| {
        let result = match parse_one_within(doc, start, budget) {
            Err(ParseError::OverBudget(e)) => return Err(ReadError::OverBudget(e)),
            Err(ParseError::Syntax(e)) => Err(e),
            Ok(node) => Ok(node),
        };
        f(
            RawDocument {
                first_line: start,
                result,
            },
            doc,
        );
        Ok(())
    })
}

/// Reads `reader` line by line and calls `f` with the text of every
/// non-blank document (which `f` may take) and the file line it starts on.
/// Stops at the first error, `f`'s included.
pub fn split_stream(
    mut reader: impl std::io::BufRead,
    limit: u64,
    mut f: impl FnMut(&mut String, usize) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let mut doc = String::new();
    let mut line = String::new();
    let (mut start, mut number, mut bytes) = (1usize, 0usize, 0u64);
    let mut flush = |doc: &mut String, start: usize| -> Result<(), ReadError> {
        if !is_blank(doc) {
            f(doc, start)?;
        }
        doc.clear();
        Ok(())
    };
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|error| ReadError::Io {
            line: number + 1,
            error,
        })?;
        if n == 0 {
            break;
        }
        number += 1;
        bytes += n as u64;
        if bytes > limit {
            return Err(ReadError::TooLong(bytes));
        }
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_separator =
            bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") || bare == "...";
        if !is_separator {
            doc.push_str(&line);
            continue;
        }
        flush(&mut doc, start)?;
        match bare
            .strip_prefix("--- ")
            .or_else(|| bare.strip_prefix("---\t"))
        {
            Some(rest) => {
                doc.push_str("    ");
                doc.push_str(rest);
                doc.push('\n');
                start = number;
            }
            None => start = number + 1,
        }
    }
    flush(&mut doc, start)
}

/// Whether a document's text holds anything but blank and comment lines.
fn is_blank(chunk: &str) -> bool {
    !chunk
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
}

/// Calls `f` with the text of every non-blank document of `text` and the
/// file line its text starts on. Documents are slices of `text`, except one
/// that starts on its `--- value` line (the marker is replaced by spaces,
/// so that columns stay those of the file).
pub fn split_documents(text: &str, mut f: impl FnMut(&str, usize)) {
    let mut emit = |chunk: &str, start: usize| {
        if !is_blank(chunk) {
            f(chunk, start)
        }
    };
    // The document so far: a range of `text`, or an owned text when it
    // began on a `--- value` line.
    let (mut from, mut owned): (usize, Option<String>) = (0, None);
    let mut start = 1usize;
    let mut offset = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line_start = offset;
        offset += line.len();
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_separator =
            bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") || bare == "...";
        if !is_separator {
            if let Some(o) = owned.as_mut() {
                o.push_str(line);
            }
            continue;
        }
        match owned.take() {
            Some(o) => emit(&o, start),
            None => emit(&text[from..line_start], start),
        }
        from = offset;
        // A `--- value` line starts a document whose content begins on it.
        match bare
            .strip_prefix("--- ")
            .or_else(|| bare.strip_prefix("---\t"))
        {
            Some(rest) => {
                owned = Some(format!("    {rest}\n"));
                start = i + 1;
            }
            None => start = i + 2,
        }
    }
    match owned {
        Some(o) => emit(&o, start),
        None => emit(&text[from..], start),
    }
}

/// Parses one document; `first_line` shifts reported lines to file lines.
pub fn parse_one(text: &str, first_line: usize) -> Result<Node, SyntaxError> {
    let mut budget = Budget::new(Limits::CLI.max_file_values);
    parse_one_within(text, first_line, &mut budget).map_err(|e| match e {
        ParseError::Syntax(e) => e,
        ParseError::OverBudget(e) => SyntaxError {
            pos: e.pos,
            message: e.to_string(),
        },
    })
}

/// Parses one document, counting its values against `budget`.
pub fn parse_one_within(
    text: &str,
    first_line: usize,
    budget: &mut Budget,
) -> Result<Node, ParseError> {
    if let Some(result) = fast::parse(text, first_line, budget) {
        return result;
    }
    parse_full(text, first_line, budget)
}

/// Parses one document with the full YAML parser.
fn parse_full(text: &str, first_line: usize, budget: &mut Budget) -> Result<Node, ParseError> {
    let to_pos = |line: usize, col: usize| Pos {
        line: line + first_line - 1,
        col: col + 1,
    };
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        values: 0,
        budget,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(item) = parser.next_event() {
        let (event, span) = item.map_err(|e| SyntaxError {
            pos: to_pos(e.marker().line(), e.marker().col()),
            message: tidy_scan_error(e.info()),
        })?;
        let pos = to_pos(span.start.line(), span.start.col());
        builder.event(event, pos)?;
    }
    Ok(builder.root.take().unwrap_or(Node {
        value: Value::Null,
        pos: Pos {
            line: first_line,
            col: 1,
        },
    }))
}

fn tidy_scan_error(info: &str) -> String {
    let mut msg = info.to_string();
    if msg.contains("mapping values are not allowed") {
        msg.push_str(" (is a `key: value` line indented wrongly, or missing a space after a `:`?)");
    } else if msg.contains("could not find expected ':'") || msg.contains("simple key expect ':'") {
        msg = "this line is neither `key: value` nor a list item `- …`".into();
    }
    msg
}

/// Maps with more keys than this index their keys for duplicate detection;
/// smaller ones are scanned (cheaper than a hash map for a handful of keys).
const INDEX_KEYS_FROM: usize = 16;

/// A list or map being built: where it started, its anchor, the value count
/// when it started (to know its size), and its content so far.
struct Frame {
    pos: Pos,
    anchor: usize,
    values_at_start: usize,
    body: Body,
}

enum Body {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Node, Node)>,
        pending: Option<Node>,
        /// String keys → their line, once the map is large.
        index: Option<HashMap<String, usize>>,
    },
}

struct Builder<'b, 'p> {
    stack: Vec<Frame>,
    /// Anchored nodes and their sizes in values.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    /// Values in this document (including alias copies).
    values: usize,
    budget: &'b mut Budget<'p>,
}

impl Builder<'_, '_> {
    fn event(&mut self, event: Event<'_>, pos: Pos) -> Result<(), ParseError> {
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                self.count(1, pos)?;
                let value = resolve_scalar(&text, style);
                self.push(Node { value, pos }, anchor, 1)?;
            }
            Event::SequenceStart(anchor, _) => self.open(pos, anchor, Body::Seq(Vec::new()))?,
            Event::MappingStart(anchor, _) => self.open(
                pos,
                anchor,
                Body::Map {
                    entries: Vec::new(),
                    pending: None,
                    index: None,
                },
            )?,
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let size = self.values - frame.values_at_start;
                    let value = match frame.body {
                        Body::Seq(items) => Value::Seq(items),
                        Body::Map { entries, .. } => Value::Map(entries),
                    };
                    let node = Node {
                        value,
                        pos: frame.pos,
                    };
                    self.push(node, frame.anchor, size)?;
                }
            }
            Event::Alias(id) => {
                let size = match self.anchors.get(&id) {
                    Some((_, size)) => *size,
                    None => {
                        return Err(SyntaxError {
                            pos,
                            message: "alias refers to an unknown anchor".into(),
                        }
                        .into());
                    }
                };
                // Count before copying, so a chain of aliases cannot exhaust memory.
                self.count(size, pos)?;
                let node = self.anchors[&id].0.clone();
                self.push(node, 0, size)?;
            }
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => {}
        }
        Ok(())
    }

    fn count(&mut self, n: usize, pos: Pos) -> Result<(), ParseError> {
        self.values += n;
        self.budget.take(n, pos).map_err(ParseError::OverBudget)
    }

    fn open(&mut self, pos: Pos, anchor: usize, body: Body) -> Result<(), ParseError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(SyntaxError {
                pos,
                message: format!("lists and maps nest more than {MAX_DEPTH} levels deep"),
            }
            .into());
        }
        self.count(1, pos)?;
        self.stack.push(Frame {
            pos,
            anchor,
            values_at_start: self.values - 1,
            body,
        });
        Ok(())
    }

    /// Adds a finished node to its parent; `size` is its count of values.
    fn push(&mut self, node: Node, anchor: usize, size: usize) -> Result<(), ParseError> {
        if anchor != 0 {
            // The copy kept for later aliases is memory too: it counts.
            self.count(size, node.pos)?;
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame {
                body: Body::Seq(items),
                ..
            }) => items.push(node),
            Some(Frame {
                body:
                    Body::Map {
                        entries,
                        pending,
                        index,
                    },
                ..
            }) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    check_duplicate(entries, index, &key)?;
                    entries.push((key, node));
                }
            },
        }
        Ok(())
    }
}

/// Rejects a string key already in the map, in constant time per key.
fn check_duplicate(
    entries: &[(Node, Node)],
    index: &mut Option<HashMap<String, usize>>,
    key: &Node,
) -> Result<(), SyntaxError> {
    let Value::Str(k) = &key.value else {
        return Ok(());
    };
    if index.is_none() && entries.len() >= INDEX_KEYS_FROM {
        *index = Some(
            entries
                .iter()
                .filter_map(|(k, _)| Some((k.as_str()?.to_string(), k.pos.line)))
                .collect(),
        );
    }
    let first = match index {
        Some(index) => match index.entry(k.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(key.pos.line);
                None
            }
        },
        None => entries
            .iter()
            .find(|(other, _)| other.as_str() == Some(k))
            .map(|(other, _)| other.pos.line),
    };
    match first {
        Some(line) => Err(SyntaxError {
            pos: key.pos,
            message: format!("duplicate key `{k}` (first defined at line {line})"),
        }),
        None => Ok(()),
    }
}

/// YAML 1.2 core-schema resolution of a scalar.
fn resolve_scalar(text: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::Str(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(i) = parse_int(text) {
        return Value::Int(i);
    }
    if looks_like_float(text)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" => Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Value::Float(f64::NAN),
        _ => Value::Str(text.to_string()),
    }
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i64>().ok()?
    } else {
        return None;
    };
    Some(if neg { -magnitude } else { magnitude })
}

fn looks_like_float(text: &str) -> bool {
    let t = text.trim_start_matches(['-', '+']);
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && t.bytes().any(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        parse_one(text, 1).unwrap()
    }

    #[test]
    fn scalars_resolve_like_yaml_1_2() {
        let n = one("a: 80\nb: '80'\nc: 30000:32767\nd: yes\ne: ~\nf: 1.5\ng: true\nh: 0x10\n");
        assert_eq!(n.get("a").unwrap().value, Value::Int(80));
        assert_eq!(n.get("b").unwrap().value, Value::Str("80".into()));
        assert_eq!(n.get("c").unwrap().value, Value::Str("30000:32767".into()));
        assert_eq!(n.get("d").unwrap().value, Value::Str("yes".into()));
        assert_eq!(n.get("e").unwrap().value, Value::Null);
        assert_eq!(n.get("f").unwrap().value, Value::Float(1.5));
        assert_eq!(n.get("g").unwrap().value, Value::Bool(true));
        assert_eq!(n.get("h").unwrap().value, Value::Int(16));
    }

    #[test]
    fn positions_are_file_lines_and_columns() {
        let docs = parse_documents("a: 1\n---\n# c\nkind: X\nspec:\n  ports:\n  - 80\n");
        assert_eq!(docs.len(), 2);
        let d = docs[1].result.as_ref().unwrap();
        assert_eq!(docs[1].first_line, 3);
        assert_eq!(d.get("kind").unwrap().pos, Pos { line: 4, col: 7 });
        let path = FieldPath::root().key("spec").key("ports").index(0);
        assert_eq!(d.locate(&path), Pos { line: 7, col: 5 });
        // Missing fields fall back to the nearest ancestor.
        let missing = FieldPath::root().key("spec").key("nope");
        assert_eq!(d.locate(&missing), d.get("spec").unwrap().pos);
        assert_eq!(path.to_string(), "spec.ports[0]");
    }

    #[test]
    fn a_bad_document_does_not_hide_the_others() {
        let docs = parse_documents("a: [1\n---\nb: 2\n");
        assert_eq!(docs.len(), 2);
        assert!(docs[0].result.is_err());
        assert!(docs[1].result.is_ok());
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse_one("a: 1\nb: 2\na: 3\n", 1).unwrap_err();
        assert_eq!(err.pos, Pos { line: 3, col: 1 });
        assert!(err.message.contains("duplicate key `a`"));
    }

    #[test]
    fn json_documents_parse() {
        let n = one(r#"{"kind": "Tier", "metadata": {"name": "x"}, "spec": {"order": 10}}"#);
        assert_eq!(n.get("kind").unwrap().as_str(), Some("Tier"));
    }

    #[test]
    fn aliases_are_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!(
                "a{i}: &a{i} [{prev}, {prev}, {prev}, {prev}, {prev}, {prev}, {prev}, {prev}, {prev}, {prev}]\n"
            ));
        }
        let err = parse_one(&text, 1).unwrap_err();
        assert!(err.message.contains("input budget exceeded"), "{err:?}");
    }

    /// One document of ~340 bytes that expands to 1,111,111 values (under
    /// the old per-document limit of 2 million), 2,345,677 with the copies
    /// its anchors keep.
    pub(crate) fn bomb_document() -> String {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..6 {
            let p = format!("*a{}", i - 1);
            let refs = [p.as_str(); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        text
    }

    #[test]
    fn many_small_alias_bombs_run_into_the_file_budget() {
        let doc = bomb_document();
        let text: String = (0..80).map(|_| format!("---\n{doc}")).collect();
        assert!(text.len() < 40_000, "{} bytes", text.len());
        let mut budget = Budget::new(6_000_000);
        let mut seen = 0;
        let err = for_each_document(&text, &mut budget, |_| seen += 1).unwrap_err();
        // Each document alone fits (2.35 million values with its anchors'
        // copies); the third one runs the file over.
        assert_eq!(seen, 2);
        assert_eq!(err.kind, BudgetKind::File);
        assert_eq!(err.limit, 6_000_000);
        // The position is where the budget ran out: in document 3.
        let doc_start = 2 * (doc.lines().count() + 1) + 2;
        assert!(
            err.pos.line > doc_start && err.pos.line < doc_start + 6,
            "{err:?}"
        );
        assert!(err.to_string().contains("more than 6000000 values"));
        assert!(err.hint().contains("--max-file-values"));
    }

    #[test]
    fn the_pool_bounds_all_files_together_and_takes_back_what_is_released() {
        let doc = bomb_document();
        let pool = Pool::new(6_000_000);
        let mut first = Budget::with_pool(3_000_000, &pool, 0);
        parse_one_within(&doc, 1, &mut first).unwrap();
        assert!(pool.used() >= 2_345_677);
        let mut second = Budget::with_pool(3_000_000, &pool, 0);
        parse_one_within(&doc, 1, &mut second).unwrap();
        let mut third = Budget::with_pool(3_000_000, &pool, 0);
        let err = parse_one_within(&doc, 1, &mut third).unwrap_err();
        let ParseError::OverBudget(e) = err else {
            panic!("{err:?}")
        };
        assert_eq!((e.kind, e.limit), (BudgetKind::Datastore, 6_000_000));
        assert!(e.hint().contains("--max-datastore-values"));
        // The rejected parse gives back what it took; so does a removed file.
        pool.release(third.charged());
        pool.release(second.charged());
        // Re-parsing the first file in place: its old content is credited.
        let mut again = Budget::with_pool(3_000_000, &pool, first.charged());
        parse_one_within(&doc, 1, &mut again).unwrap();
        let mut fourth = Budget::with_pool(3_000_000, &pool, 0);
        parse_one_within("a: 1\n", 1, &mut fourth).unwrap();
    }

    #[test]
    fn a_200k_key_mapping_loads_in_linear_time() {
        let mut text = String::with_capacity(200_000 * 16);
        for i in 0..200_000 {
            text.push_str(&format!("key{i}: {i}\n"));
        }
        let started = std::time::Instant::now();
        let node = one(&text);
        let took = started.elapsed();
        eprintln!("200,000 keys parsed in {took:?}");
        let Value::Map(entries) = &node.value else {
            panic!("not a map")
        };
        assert_eq!(entries.len(), 200_000);
        assert_eq!(node.get("key199999").unwrap().value, Value::Int(199_999));
        // Scanning earlier keys would take minutes (2e10 comparisons).
        assert!(took < std::time::Duration::from_secs(60), "{took:?}");
        // Duplicates are still found, late in a large map and in a small one.
        text.push_str("key77: again\n");
        let err = parse_one(&text, 1).unwrap_err();
        assert_eq!(
            err.pos,
            Pos {
                line: 200_001,
                col: 1
            }
        );
        assert!(
            err.message
                .contains("duplicate key `key77` (first defined at line 78)")
        );
    }

    #[test]
    fn duplicates_are_found_on_both_sides_of_the_index_threshold() {
        for n in [
            2,
            INDEX_KEYS_FROM - 1,
            INDEX_KEYS_FROM,
            INDEX_KEYS_FROM + 1,
            40,
        ] {
            let mut text: String = (0..n).map(|i| format!("k{i}: 1\n")).collect();
            assert!(parse_one(&text, 1).is_ok());
            text.push_str("k0: 2\n");
            let err = parse_one(&text, 1).unwrap_err();
            assert_eq!(err.pos.line, n + 1, "{n} keys");
            assert!(err.message.contains("`k0` (first defined at line 1)"));
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        let err = parse_one(&deep, 1).unwrap_err();
        // The scanner's own limit or ours: either way, an error.
        assert!(
            err.message.contains("recursion limit") || err.message.contains("nest more than 256"),
            "{err:?}"
        );
        let ok = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(parse_one(&ok, 1).is_ok());
    }
}

#[cfg(test)]
mod fast_tests {
    use super::*;

    /// Every document: the fast reader either gives up or builds exactly
    /// what the full parser builds (values, positions, errors, budget).
    fn same_as_full(text: &str) -> bool {
        let mut fast_budget = Budget::new(usize::MAX);
        let Some(fast) = fast::parse(text, 7, &mut fast_budget) else {
            assert_eq!(fast_budget.used(), 0, "a refused document keeps no values");
            return false;
        };
        let mut full_budget = Budget::new(usize::MAX);
        let full = parse_full(text, 7, &mut full_budget);
        assert_eq!(fast, full, "{text}");
        assert_eq!(fast_budget.used(), full_budget.used(), "{text}");
        true
    }

    #[test]
    fn the_fast_reader_agrees_with_the_full_parser() {
        let cases = [
            "apiVersion: v1\nkind: Pod\nmetadata: {\"name\":\"p\",\"namespace\":\"n\",\"labels\":{\"app\":\"a\",\"n\":\"1\"}}\nspec: {nodeName: node-1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}\nstatus: {podIP: '198.18.0.1'}\n",
            "a: 1\nb: '2'\nc: \"x y\"\nd: true\ne: null\nf: 1.5\ng: 0x10\nh: role == 'db' && x\n",
            "\n# comment\nkey: value\n\n  # indented comment\nother: [1, 2, ]\n",
            "a: {x: 1, }\nb: []\nc: {}\nd: [[1, [2]], {k: [v]}]\n",
            "a: {\"k\":\"v\",\"l\":[\"1\",2,true,null]}\r\nb: c\r\n",
            "selector: all()\norder: 100\ntypes: [Ingress, Egress]\n",
            "a: {b c: d e, f: g}\n",
            // Errors: the same message at the same place.
            "a: 1\nb: 2\na: 3\n",
            "a: {x: 1, x: 2}\n",
            // Given up: the full parser reads these.
            "a:\n  b: 1\n",
            "a: 1 # c\n",
            "a: &x 1\nb: *x\n",
            "a: 'it''s'\n",
            "a: \"\\u0041\"\n",
            "a: {b:c}\n",
            "a: |\n  x\n",
            "- a\n- b\n",
            "a: “x”\n",
            "a: !!str 1\n",
            "--- \n",
            "a: [1,\n 2]\n",
            "a: -1\n",
            "a:b\n",
            "a: x:y\n",
        ];
        let mut fast = 0;
        for text in cases {
            fast += usize::from(same_as_full(text));
        }
        assert_eq!(fast, 9, "the first nine cases are in the subset");
    }

    /// Random edits of dump-shaped documents (punctuation inserted, bytes
    /// deleted or replaced): wherever the fast reader accepts the result, it
    /// agrees with the full parser.
    #[test]
    fn the_fast_reader_agrees_on_random_edits() {
        let base = "apiVersion: v1\nkind: Pod\nmetadata: {\"name\":\"p-1\",\"labels\":{\"app\":\"a b\",\"n\":\"1\"}}\nspec: {nodeName: node-1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}], x: [1.5, 2, true, null, 'q', 0o17, 1e3]}\nstatus: {podIP: '198.18.0.1'}\n";
        let alphabet = b"{}[],:#'\" -.0aZ_/\n&*!|>~%@\\";
        let mut seed: u64 = 0x7471_7274;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % n
        };
        assert!(same_as_full(base));
        let (mut accepted, runs) = (0, 20_000);
        for _ in 0..runs {
            let mut bytes = base.as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                let at = next(bytes.len());
                match next(3) {
                    0 => bytes.insert(at, alphabet[next(alphabet.len())]),
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes[at] = alphabet[next(alphabet.len())],
                }
            }
            let text = String::from_utf8(bytes).expect("ASCII edits");
            accepted += usize::from(same_as_full(&text));
        }
        eprintln!("{accepted} of {runs} edited documents read by the fast reader");
        assert!(accepted > runs / 10, "{accepted}");
    }

    #[test]
    fn the_fast_reader_agrees_on_every_fixture_and_a_synthetic_cluster() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut texts = Vec::new();
        for dir in ["fixtures", "rulesets", "manifests"] {
            for f in crate::model::load::resource_files(&root.join(dir)).unwrap_or_default() {
                texts.push(std::fs::read_to_string(f).unwrap());
            }
        }
        texts.push(crate::model::emit::cluster_dump(&crate::synth::generate(
            crate::synth::Size::S,
        )));
        let (mut docs, mut fast) = (0, 0);
        for text in &texts {
            let mut chunks = Vec::new();
            split_documents(text, |chunk, _| chunks.push(chunk.to_string()));
            for chunk in chunks {
                docs += 1;
                fast += usize::from(same_as_full(&chunk));
            }
        }
        eprintln!("{fast} of {docs} documents read by the fast reader");
        assert!(fast > docs / 2, "{fast} of {docs}");
    }
}
