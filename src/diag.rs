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
    /// The source text, for the caret line.
    pub source: Option<Arc<str>>,
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
            && let Some(line) = src.lines().nth(pos.line.saturating_sub(1))
        {
            let num = pos.line.to_string();
            let pad = " ".repeat(num.len());
            let col_chars = pos.col.saturating_sub(1);
            let prefix: String = line.chars().take(col_chars).collect();
            let token_len = line
                .chars()
                .skip(col_chars)
                .take_while(|c| !c.is_whitespace() && *c != ':' && *c != ',')
                .count()
                .max(1);
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{num} | {line}");
            let lead: String = prefix
                .chars()
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{pad} | {lead}{}", "^".repeat(token_len));
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

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
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
    }
}
