//! User-facing diagnostics: where (file:line:column, resource, field path),
//! what, and what to do; rendered in the style of rustc.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::yaml::{FieldPath, Pos};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
    /// Information that needs no action (a document of a kind tortie does
    /// not use, skipped).
    Note,
}

/// Which stage found the problem; also used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Io,
    Syntax,
    Decode,
    Validation,
    Conversion,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Io => "io",
            Stage::Syntax => "syntax",
            Stage::Decode => "decode",
            Stage::Validation => "validation",
            Stage::Conversion => "conversion",
        }
    }
}

/// One problem found in the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub stage: Stage,
    pub file: Option<PathBuf>,
    pub pos: Option<Pos>,
    /// `NetworkPolicy default/foo` when the resource is known.
    pub resource: Option<String>,
    pub path: Option<FieldPath>,
    pub message: String,
    pub hint: Option<String>,
    /// The source text around the problem (its document), for the caret
    /// line; its first line is file line `source_line`.
    pub source: Option<Arc<str>>,
    pub source_line: usize,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col` (or as much of it as is known).
    pub fn location(&self) -> String {
        let file = self
            .file
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<input>".into());
        match self.pos {
            Some(p) => format!("{file}:{}:{}", p.line, p.col),
            None => file,
        }
    }

    /// One line: `file:line:col: error: message [resource, field] (hint)`.
    pub fn one_line(&self) -> String {
        let mut s = format!(
            "{}: {}: {}",
            self.location(),
            severity_word(self.severity),
            self.message
        );
        if let Some(r) = &self.resource {
            let _ = write!(s, " [{r}");
            if let Some(p) = self.path.as_ref().filter(|p| !p.is_root()) {
                let _ = write!(s, ", field {p}");
            }
            s.push(']');
        }
        if let Some(h) = &self.hint {
            let _ = write!(s, " (help: {h})");
        }
        s
    }

    /// Multi-line rendering with the source line and a caret.
    pub fn render(&self) -> String {
        let mut out = format!("{}: {}\n", severity_word(self.severity), self.message);
        let _ = writeln!(out, "  --> {}", self.location());
        if let (Some(src), Some(pos)) = (&self.source, self.pos)
            && let Some(line) = pos
                .line
                .checked_sub(self.source_line.max(1))
                .and_then(|i| src.lines().nth(i))
        {
            let num = pos.line.to_string();
            let pad = " ".repeat(num.len());
            let (shown, lead, carets) = excerpt(line, pos.col.saturating_sub(1));
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{num} | {shown}");
            let _ = writeln!(out, "{pad} | {lead}{}", "^".repeat(carets));
        }
        if let Some(r) = &self.resource {
            let field = self
                .path
                .as_ref()
                .filter(|p| !p.is_root())
                .map(|p| format!(", field `{p}`"))
                .unwrap_or_default();
            let _ = writeln!(out, "   = in {r}{field}");
        }
        if let Some(h) = &self.hint {
            let _ = writeln!(out, "   = help: {h}");
        }
        out
    }
}

/// Lines longer than this many characters are shown cut around the caret.
pub const MAX_SHOWN_CHARS: usize = 120;

/// The length in characters of the token starting `rest`: a quoted string
/// up to its closing quote, otherwise up to a space or YAML punctuation.
fn token_len(rest: &str) -> usize {
    let mut chars = rest.chars();
    match chars.next() {
        Some(q @ ('"' | '\'')) => match chars.position(|c| c == q) {
            Some(i) => i + 2,
            None => rest.chars().count(),
        },
        _ => rest
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, ':' | ',' | ']' | '}'))
            .count(),
    }
    .max(1)
}

/// The part of `line` to print, the text before the caret (spaces, or tabs
/// where the line has tabs) and the caret's width, for a caret at
/// character `col`. A long line is cut to a window around the caret, with
/// `…` where text is left out.
fn excerpt(line: &str, col: usize) -> (String, String, usize) {
    let chars: Vec<char> = line.chars().collect();
    let col = col.min(chars.len());
    let token = token_len(&line[line.char_indices().nth(col).map_or(line.len(), |(i, _)| i)..]);
    let (start, end) = if chars.len() <= MAX_SHOWN_CHARS {
        (0, chars.len())
    } else {
        let start = col.saturating_sub(MAX_SHOWN_CHARS / 3);
        (start, (start + MAX_SHOWN_CHARS).min(chars.len()))
    };
    let mut shown = String::new();
    let mut lead = String::new();
    if start > 0 {
        shown.push('…');
        lead.push(' ');
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    lead.extend(
        chars[start..col]
            .iter()
            .map(|&c| if c == '\t' { '\t' } else { ' ' }),
    );
    let carets = token.min(end.saturating_sub(col)).max(1);
    (shown, lead, carets)
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

/// Makes a plain diagnostic about a file.
pub fn file_error(file: &Path, stage: Stage, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        stage,
        file: Some(file.to_path_buf()),
        pos: None,
        resource: None,
        path: None,
        message,
        hint: None,
        source: None,
        source_line: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(source: &str, line: usize, col: usize) -> Diagnostic {
        Diagnostic {
            pos: Some(Pos { line, col }),
            source: Some(Arc::from(source)),
            ..file_error(Path::new("f.yaml"), Stage::Decode, "bad".into())
        }
    }

    /// The source line and the caret line of a rendering.
    fn excerpt_lines(d: &Diagnostic) -> (String, String) {
        let text = d.render();
        let lines: Vec<&str> = text.lines().collect();
        let cut = |l: &str| l.split_once(" | ").map(|(_, r)| r.to_string()).unwrap();
        (cut(lines[3]), cut(lines[4]))
    }

    #[test]
    fn the_caret_covers_the_token_and_stops_at_punctuation() {
        let (line, caret) = excerpt_lines(&at("  types: [Ingres]\n", 1, 11));
        assert_eq!(line, "  types: [Ingres]");
        assert_eq!(caret, "          ^^^^^^");
        // A quoted scalar is covered up to its closing quote, spaces included.
        let (_, caret) = excerpt_lines(&at("  order: \"10 0\"\n", 1, 10));
        assert_eq!(caret, "         ^^^^^^");
        // Columns count characters, not bytes.
        let (_, caret) = excerpt_lines(&at("{“k”: x, bad: 1}\n", 1, 10));
        assert_eq!(caret, "         ^^^");
    }

    #[test]
    fn a_long_line_is_cut_around_the_caret() {
        let mut line = "x".repeat(100_000);
        line.replace_range(50_000..50_003, "BAD");
        let (shown, caret) = excerpt_lines(&at(&line, 1, 50_001));
        assert!(shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        assert_eq!(shown.chars().count(), MAX_SHOWN_CHARS + 2);
        let caret_at = caret.find('^').unwrap();
        let under: String = shown.chars().skip(caret_at).take(3).collect();
        assert_eq!(under, "BAD");
        assert!(d_render_len(&line) < 1_000);
        // Near the start: cut at the end only.
        let (shown, caret) = excerpt_lines(&at(&line, 1, 3));
        assert!(!shown.starts_with('…') && shown.ends_with('…'));
        assert_eq!(caret.find('^'), Some(2));
    }

    fn d_render_len(line: &str) -> usize {
        at(line, 1, 50_001).render().len()
    }
}
