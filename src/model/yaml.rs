//! A YAML (and JSON) document tree that remembers where every node came
//! from, so that any later error (decoding or validation) can point at
//! `file:line:column`.
//!
//! Files are split into documents at `---` lines before parsing, so that a
//! syntax error in one document never hides the documents around it.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

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

/// Upper bound on nodes per document, so aliases cannot blow up memory.
const MAX_NODES: usize = 2_000_000;

/// Splits `text` at `---` lines and parses every non-empty document.
pub fn parse_documents(text: &str) -> Vec<RawDocument> {
    let mut docs = Vec::new();
    let mut chunk_start_line = 1usize;
    let mut chunk = String::new();
    let flush = |chunk: &mut String, start: usize, docs: &mut Vec<RawDocument>| {
        if chunk
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        {
            docs.push(RawDocument {
                first_line: start,
                result: parse_one(chunk, start),
            });
        }
        chunk.clear();
    };
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_separator =
            bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") || bare == "...";
        if is_separator {
            flush(&mut chunk, chunk_start_line, &mut docs);
            // A `--- value` line starts a document whose content begins on it.
            if let Some(rest) = bare
                .strip_prefix("--- ")
                .or_else(|| bare.strip_prefix("---\t"))
            {
                chunk.push_str(&" ".repeat(4));
                chunk.push_str(rest);
                chunk.push('\n');
                chunk_start_line = line_no;
            } else {
                chunk_start_line = line_no + 1;
            }
            continue;
        }
        chunk.push_str(line);
    }
    flush(&mut chunk, chunk_start_line, &mut docs);
    docs
}

/// Parses one document; `first_line` shifts reported lines to file lines.
pub fn parse_one(text: &str, first_line: usize) -> Result<Node, SyntaxError> {
    let to_pos = |line: usize, col: usize| Pos {
        line: line + first_line - 1,
        col: col + 1,
    };
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        nodes: 0,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(item) = parser.next_event() {
        let (event, span) = item.map_err(|e| SyntaxError {
            pos: to_pos(e.marker().line(), e.marker().col()),
            message: tidy_scan_error(e.info()),
        })?;
        let pos = to_pos(span.start.line(), span.start.col());
        builder.event(event, span, pos)?;
    }
    Ok(builder.root.unwrap_or(Node {
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

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<(Node, Node)>, Option<Node>),
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    nodes: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, _span: Span, pos: Pos) -> Result<(), SyntaxError> {
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let value = resolve_scalar(&text, style);
                self.push(Node { value, pos }, anchor, pos)?;
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(pos, anchor, Vec::new())),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(pos, anchor, Vec::new(), None))
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(start, anchor, items)) = self.stack.pop() {
                    self.push(
                        Node {
                            value: Value::Seq(items),
                            pos: start,
                        },
                        anchor,
                        start,
                    )?;
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(start, anchor, entries, _)) = self.stack.pop() {
                    self.push(
                        Node {
                            value: Value::Map(entries),
                            pos: start,
                        },
                        anchor,
                        start,
                    )?;
                }
            }
            Event::Alias(id) => {
                let (node, size) = self.anchors.get(&id).ok_or(SyntaxError {
                    pos,
                    message: "alias refers to an unknown anchor".into(),
                })?;
                // Count before cloning, so a chain of aliases cannot exhaust memory.
                self.nodes += size;
                if self.nodes > MAX_NODES {
                    return Err(too_large(pos));
                }
                let node = node.clone();
                self.push(node, 0, pos)?;
            }
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => {}
        }
        Ok(())
    }

    fn push(&mut self, node: Node, anchor: usize, pos: Pos) -> Result<(), SyntaxError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(too_large(pos));
        }
        if anchor != 0 {
            let size = count_nodes(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, entries, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    if let Value::Str(k) = &key.value
                        && let Some((first, _)) = entries
                            .iter()
                            .find(|(other, _)| matches!(&other.value, Value::Str(o) if o == k))
                    {
                        return Err(SyntaxError {
                            pos: key.pos,
                            message: format!(
                                "duplicate key `{k}` (first defined at line {})",
                                first.pos.line
                            ),
                        });
                    }
                    entries.push((key, node));
                }
            },
        }
        Ok(())
    }
}

fn too_large(pos: Pos) -> SyntaxError {
    SyntaxError {
        pos,
        message: format!("document is too large (more than {MAX_NODES} values)"),
    }
}

fn count_nodes(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count_nodes(k) + count_nodes(v))
                .sum::<usize>()
        }
        _ => 1,
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
        assert!(err.message.contains("too large"));
    }
}
