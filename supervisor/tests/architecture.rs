//! ARCHITECTURE.md stays true: every file, folder and name it shows in code
//! format exists in the repository.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every file and folder of the repository, relative to its root, except
/// build output and version control.
fn paths(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if matches!(name.as_str(), "target" | ".git" | "__pycache__") {
                continue;
            }
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                pending.push(path);
            }
            found.push(relative);
        }
    }
    found
}

/// Every word of Rust code outside comments, in every `.rs` file.
fn code_words(root: &Path, paths: &[String]) -> HashSet<String> {
    let mut words = HashSet::new();
    for path in paths.iter().filter(|p| p.ends_with(".rs")) {
        let text = std::fs::read_to_string(root.join(path)).unwrap();
        for line in text.lines() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for word in line.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                if !word.is_empty() {
                    words.insert(word.to_owned());
                }
            }
        }
    }
    words
}

/// The spans in single backticks, outside fenced blocks.
fn code_spans(text: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let (Some(span), Some(_)) = (parts.next(), parts.next()) {
            spans.push(span.to_owned());
        }
    }
    spans
}

fn is_identifier_path(span: &str) -> bool {
    span.split("::").all(|segment| {
        let mut chars = segment.chars();
        chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && chars.all(|c| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn every_file_and_name_in_the_map_exists() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let paths = paths(&root);
    let words = code_words(&root, &paths);
    let is_path_suffix = |span: &str| {
        let span = span.trim_end_matches('/');
        paths
            .iter()
            .any(|p| p == span || p.ends_with(&format!("/{span}")))
    };
    let mut missing = Vec::new();
    let mut checked = 0;
    for span in code_spans(&text) {
        let span = span.trim_end_matches("()");
        let found = if span.contains('/') || span.ends_with(".rs") || span.ends_with(".md") {
            is_path_suffix(span)
        } else if span.contains('-') && !span.contains(' ') {
            // A binary: a file or folder of that name.
            paths.iter().any(|p| {
                let name = Path::new(p).file_stem().unwrap().to_string_lossy();
                name == span
            })
        } else if is_identifier_path(span) {
            span.split("::").all(|segment| words.contains(segment))
        } else {
            // Prose in code format (a command line, a setting): not a name.
            continue;
        };
        checked += 1;
        if !found {
            missing.push(span.to_owned());
        }
    }
    assert!(
        checked > 50,
        "only {checked} names were checked: is the map there?"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names what the repository does not have: {missing:?}"
    );
}
