//! The directory datastore: every YAML/JSON file under a directory, watched
//! with inotify. Each file's last valid content is remembered: when a file
//! is changed into something invalid, the change is reported and the
//! previous content stays in force; a file that is removed is forgotten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diag::Diagnostic;
use crate::model::Resource;
use crate::model::load::{is_resource_file, load_file, resource_files};

/// What loading one file produced.
#[derive(Debug, Default)]
pub struct FileReport {
    pub path: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
    /// The file had errors and its previous content was kept.
    pub kept_previous: bool,
}

/// The resources of a directory, file by file.
#[derive(Debug, Default)]
pub struct DirSource {
    root: PathBuf,
    files: BTreeMap<PathBuf, Vec<Resource>>,
}

impl DirSource {
    pub fn new(root: &Path) -> DirSource {
        DirSource {
            root: root.to_path_buf(),
            files: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Loads every file (the initial listing).
    pub fn load_all(&mut self) -> Result<Vec<FileReport>, std::io::Error> {
        let files = resource_files(&self.root)?;
        Ok(files.iter().map(|f| self.reload(f)).collect())
    }

    /// Re-reads one path after a change (or notices that it is gone).
    pub fn reload(&mut self, path: &Path) -> FileReport {
        let mut report = FileReport {
            path: path.to_path_buf(),
            ..FileReport::default()
        };
        if !path.exists() || !is_resource_file(path) {
            self.files.remove(path);
            return report;
        }
        let loaded = load_file(path);
        let has_errors = loaded.has_errors();
        report.diagnostics = loaded.diagnostics;
        match (has_errors, self.files.contains_key(path)) {
            (true, true) => report.kept_previous = true,
            _ => {
                self.files.insert(
                    path.to_path_buf(),
                    loaded.resources.into_iter().map(|l| l.resource).collect(),
                );
            }
        }
        report
    }

    /// Everything currently in force, in a stable order. A resource defined
    /// in two files is taken from the first file (by path).
    pub fn snapshot(&self) -> Vec<Resource> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for resources in self.files.values() {
            for r in resources {
                if seen.insert(r.key()) {
                    out.push(r.clone());
                }
            }
        }
        out
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_edit_keeps_the_previous_content_and_removal_forgets() {
        let dir = std::env::temp_dir().join(format!("tortie-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.yaml");
        std::fs::write(
            &f,
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: a}\n",
        )
        .unwrap();
        let mut src = DirSource::new(&dir);
        src.load_all().unwrap();
        assert_eq!(src.snapshot().len(), 1);
        std::fs::write(
            &f,
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: Bad_Name}\n",
        )
        .unwrap();
        let r = src.reload(&f);
        assert!(r.kept_previous);
        assert!(!r.diagnostics.is_empty());
        assert_eq!(src.snapshot()[0].key().name, "a");
        std::fs::write(
            &f,
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: b}\n",
        )
        .unwrap();
        assert!(!src.reload(&f).kept_previous);
        assert_eq!(src.snapshot()[0].key().name, "b");
        std::fs::remove_file(&f).unwrap();
        src.reload(&f);
        assert!(src.snapshot().is_empty());
        // A new file with errors contributes its valid documents.
        let g = dir.join("q.yaml");
        std::fs::write(
            &g,
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: ok}\n---\nkind: Nope\n",
        )
        .unwrap();
        let r = src.reload(&g);
        assert!(!r.kept_previous && !r.diagnostics.is_empty());
        assert_eq!(src.snapshot().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
