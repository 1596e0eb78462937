//! A fast reader for the plainest documents: a block mapping of `key:
//! value` lines at column 1 whose values are scalars or one-line flow
//! collections (the shape of `kubectl`/JSON dumps). It builds exactly the
//! tree the full parser builds, or gives up (`None`) on anything else —
//! comments after values, escapes, anchors, tags, nested blocks, non-ASCII
//! lines — and the document is then read by the full parser.

use super::{Budget, MAX_DEPTH, Node, ParseError, Pos, Value, check_duplicate, resolve_scalar};
use saphyr_parser::ScalarStyle;

/// Gives up: the document is not in the fast reader's subset.
struct Unsupported;

/// Parses `text` (one document, whose first line is file line `first_line`)
/// when it is in the subset. Values are charged to `budget` as the full
/// parser charges them; when the reader gives up, they are given back.
pub(super) fn parse(
    text: &str,
    first_line: usize,
    budget: &mut Budget,
) -> Option<Result<Node, ParseError>> {
    let mut reader = Reader { budget, charged: 0 };
    match reader.document(text, first_line) {
        Ok(node) => Some(Ok(node)),
        Err(Stop::Error(e)) => Some(Err(e)),
        Err(Stop::Unsupported(Unsupported)) => {
            let charged = reader.charged;
            reader.budget.refund(charged);
            None
        }
    }
}

enum Stop {
    Unsupported(Unsupported),
    Error(ParseError),
}

impl From<Unsupported> for Stop {
    fn from(u: Unsupported) -> Self {
        Stop::Unsupported(u)
    }
}

struct Reader<'b, 'p> {
    budget: &'b mut Budget<'p>,
    charged: usize,
}

/// One line being read: its bytes, file line and the read offset.
struct Line<'t> {
    bytes: &'t [u8],
    text: &'t str,
    line: usize,
    at: usize,
}

impl Line<'_> {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.at + 1,
        }
    }
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }
    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
    }
}

impl Reader<'_, '_> {
    fn count(&mut self, pos: Pos) -> Result<(), Stop> {
        self.charged += 1;
        self.budget
            .take(1, pos)
            .map_err(|e| Stop::Error(ParseError::OverBudget(e)))
    }

    fn document(&mut self, text: &str, first_line: usize) -> Result<Node, Stop> {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        let mut index = None;
        let mut root_pos = None;
        for (i, raw) in text.split('\n').enumerate() {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            let trimmed = raw.trim_start_matches(' ');
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if !raw.is_ascii() || raw.contains('\t') || trimmed.len() != raw.len() {
                return Err(Unsupported.into());
            }
            let mut line = Line {
                bytes: raw.as_bytes(),
                text: raw,
                line: first_line + i,
                at: 0,
            };
            if root_pos.is_none() {
                let pos = line.pos();
                self.count(pos)?;
                root_pos = Some(pos);
            }
            let (key, value) = self.block_entry(&mut line)?;
            check_duplicate(&entries, &mut index, &key)
                .map_err(|e| Stop::Error(ParseError::Syntax(e)))?;
            entries.push((key, value));
        }
        let pos = root_pos.ok_or(Unsupported)?;
        Ok(Node {
            value: Value::Map(entries),
            pos,
        })
    }

    /// `key: value` at column 1, the value ending the line.
    fn block_entry(&mut self, line: &mut Line<'_>) -> Result<(Node, Node), Stop> {
        let key_pos = line.pos();
        let end = line
            .bytes
            .iter()
            .position(|&b| b == b':')
            .ok_or(Unsupported)?;
        let key_text = &line.text[..end];
        if !plain_start(line.bytes[0])
            || !key_text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
        {
            return Err(Unsupported.into());
        }
        line.at = end + 1;
        if line.peek() != Some(b' ') {
            return Err(Unsupported.into());
        }
        line.skip_spaces();
        self.count(key_pos)?;
        let key = Node {
            value: Value::Str(key_text.to_string()),
            pos: key_pos,
        };
        let value = match line.peek() {
            Some(b'{' | b'[' | b'"' | b'\'') => self.flow_value(line, 0)?,
            Some(b) if plain_start(b) => {
                let pos = line.pos();
                let rest = line.text[line.at..].trim_end_matches(' ');
                if rest.bytes().any(|b| matches!(b, b'#' | b':')) {
                    return Err(Unsupported.into());
                }
                line.at = line.bytes.len();
                self.count(pos)?;
                Node {
                    value: resolve_scalar(rest, ScalarStyle::Plain),
                    pos,
                }
            }
            _ => return Err(Unsupported.into()),
        };
        line.skip_spaces();
        if line.at != line.bytes.len() {
            return Err(Unsupported.into());
        }
        Ok((key, value))
    }

    fn flow_value(&mut self, line: &mut Line<'_>, depth: usize) -> Result<Node, Stop> {
        if depth >= MAX_DEPTH {
            return Err(Unsupported.into());
        }
        let pos = line.pos();
        match line.peek() {
            Some(b'{') => {
                self.count(pos)?;
                line.at += 1;
                let entries = self.flow_map(line, depth)?;
                Ok(Node {
                    value: Value::Map(entries),
                    pos,
                })
            }
            Some(b'[') => {
                self.count(pos)?;
                line.at += 1;
                let items = self.flow_seq(line, depth)?;
                Ok(Node {
                    value: Value::Seq(items),
                    pos,
                })
            }
            Some(q @ (b'"' | b'\'')) => {
                let start = line.at + 1;
                let len = line.bytes[start..]
                    .iter()
                    .position(|&b| b == q)
                    .ok_or(Unsupported)?;
                let s = &line.text[start..start + len];
                if s.contains('\\') {
                    return Err(Unsupported.into());
                }
                line.at = start + len + 1;
                self.count(pos)?;
                Ok(Node {
                    value: Value::Str(s.to_string()),
                    pos,
                })
            }
            Some(b) if plain_start(b) => {
                let rest = &line.bytes[line.at..];
                let len = rest
                    .iter()
                    .position(|&b| {
                        matches!(
                            b,
                            b',' | b'[' | b']' | b'{' | b'}' | b':' | b'#' | b'"' | b'\''
                        )
                    })
                    .unwrap_or(rest.len());
                let s = line.text[line.at..line.at + len].trim_end_matches(' ');
                line.at += len;
                self.count(pos)?;
                Ok(Node {
                    value: resolve_scalar(s, ScalarStyle::Plain),
                    pos,
                })
            }
            _ => Err(Unsupported.into()),
        }
    }

    fn flow_seq(&mut self, line: &mut Line<'_>, depth: usize) -> Result<Vec<Node>, Stop> {
        let mut items = Vec::new();
        loop {
            line.skip_spaces();
            if line.peek() == Some(b']') {
                line.at += 1;
                return Ok(items);
            }
            items.push(self.flow_value(line, depth + 1)?);
            line.skip_spaces();
            match line.peek() {
                Some(b',') => line.at += 1,
                Some(b']') => {}
                _ => return Err(Unsupported.into()),
            }
        }
    }

    fn flow_map(&mut self, line: &mut Line<'_>, depth: usize) -> Result<Vec<(Node, Node)>, Stop> {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        let mut index = None;
        loop {
            line.skip_spaces();
            if line.peek() == Some(b'}') {
                line.at += 1;
                return Ok(entries);
            }
            let quoted = matches!(line.peek(), Some(b'"' | b'\''));
            let key = self.flow_value(line, depth + 1)?;
            if !matches!(key.value, Value::Str(_)) {
                return Err(Unsupported.into());
            }
            line.skip_spaces();
            if line.peek() != Some(b':') {
                return Err(Unsupported.into());
            }
            line.at += 1;
            // After a plain key, `:` must be followed by a space.
            if !quoted && line.peek() != Some(b' ') {
                return Err(Unsupported.into());
            }
            line.skip_spaces();
            if matches!(line.peek(), Some(b',' | b'}') | None) {
                return Err(Unsupported.into());
            }
            let value = self.flow_value(line, depth + 1)?;
            check_duplicate(&entries, &mut index, &key)
                .map_err(|e| Stop::Error(ParseError::Syntax(e)))?;
            entries.push((key, value));
            line.skip_spaces();
            match line.peek() {
                Some(b',') => line.at += 1,
                Some(b'}') => {}
                _ => return Err(Unsupported.into()),
            }
        }
    }
}

/// A character a plain scalar of the subset may start with.
fn plain_start(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'/'
}
