//! Loading: files and directories of YAML or JSON → valid resources plus
//! every diagnostic. One bad document never hides the others, and an
//! invalid resource is reported and left out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::yaml::{self, FieldPath, Node, Value};
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

/// The result of loading: the valid resources and all diagnostics.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub resources: Vec<Loaded>,
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadResult {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
    pub fn extend(&mut self, other: LoadResult) {
        self.resources.extend(other.resources);
        self.diagnostics.extend(other.diagnostics);
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
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let p = entry.path();
            let ft = entry.file_type()?;
            if ft.is_dir() {
                if !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
                {
                    stack.push(p);
                }
            } else if is_resource_file(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Loads every path (files or directories).
pub fn load_paths(paths: &[PathBuf]) -> LoadResult {
    let mut result = LoadResult::default();
    for path in paths {
        match resource_files(path) {
            Ok(files) => {
                for f in files {
                    result.extend(load_file(&f));
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

/// Loads one file from disk.
pub fn load_file(path: &Path) -> LoadResult {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => load_str(&text, path),
            Err(_) => {
                let mut r = LoadResult::default();
                r.diagnostics.push(file_error(
                    path,
                    Stage::Io,
                    "the file is not UTF-8 text".into(),
                ));
                r
            }
        },
        Err(e) => {
            let mut r = LoadResult::default();
            r.diagnostics
                .push(file_error(path, Stage::Io, format!("cannot read: {e}")));
            r
        }
    }
}

/// Loads resources from text; `path` names the source in diagnostics.
pub fn load_str(text: &str, path: &Path) -> LoadResult {
    let source: Arc<str> = Arc::from(text);
    let mut ctx = Ctx {
        file: path.to_path_buf(),
        source,
        result: LoadResult::default(),
    };
    for doc in yaml::parse_documents(text) {
        match doc.result {
            Err(e) => ctx.push(
                Severity::Error,
                Stage::Syntax,
                Some(e.pos),
                None,
                None,
                format!("YAML syntax error: {}", e.message),
                syntax_hint(text, e.pos.line),
            ),
            Ok(node) => ctx.document(&node, &FieldPath::root(), doc.first_line),
        }
    }
    ctx.result
}

fn syntax_hint(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.saturating_sub(1))?;
    if l.contains(['“', '”', '‘', '’']) {
        return Some("this line contains curly quotes (“ ” ‘ ’): use straight quotes".into());
    }
    if l.contains('\t') {
        return Some("YAML does not allow tabs for indentation: use spaces".into());
    }
    None
}

struct Ctx {
    file: PathBuf,
    source: Arc<str>,
    result: LoadResult,
}

impl Ctx {
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
        self.result.diagnostics.push(Diagnostic {
            severity,
            stage,
            file: Some(self.file.clone()),
            pos,
            resource,
            path,
            message,
            hint,
            source: Some(self.source.clone()),
        });
    }

    fn document(&mut self, node: &Node, base: &FieldPath, first_line: usize) {
        let err = |ctx: &mut Ctx, pos, message: String, hint: Option<String>| {
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
        let allowed = ["apiVersion", "kind", "metadata", "spec", "status", "items"];
        if let Value::Map(entries) = &node.value {
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
            let pos = node.locate(&f.path);
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

/// Two definitions of one resource: the later one is an error and is left out.
fn check_duplicates(result: &mut LoadResult) {
    let mut seen: std::collections::HashMap<ResourceKey, Origin> = std::collections::HashMap::new();
    let mut keep = Vec::with_capacity(result.resources.len());
    for loaded in std::mem::take(&mut result.resources) {
        let key = loaded.resource.key();
        if let Some(first) = seen.get(&key) {
            result.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                stage: Stage::Validation,
                file: Some(loaded.origin.file.clone()),
                pos: Some(yaml::Pos {
                    line: loaded.origin.line,
                    col: 1,
                }),
                resource: Some(key.to_string()),
                path: None,
                message: format!(
                    "{key} is defined twice; the first definition ({}:{}) is used",
                    first.file.display(),
                    first.line
                ),
                hint: Some("give each resource a unique name, or delete one copy".into()),
                source: None,
            });
            continue;
        }
        seen.insert(key, loaded.origin.clone());
        keep.push(loaded);
    }
    result.resources = keep;
}

#[cfg(test)]
mod tests;
