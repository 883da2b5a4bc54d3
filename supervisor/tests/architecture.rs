//! ARCHITECTURE.md stays true: every file, folder and name it shows in code
//! format exists in the repository, and every source file is on it; and
//! the layout's rules hold (a `//!` line in every file, none over 600 lines
//! before its tests, exit codes in `main.rs` alone).

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

/// The Rust source files of the crates, relative to the repository's root,
/// tests and benches aside.
fn source_files(root: &Path) -> Vec<String> {
    let mut files: Vec<String> = paths(root)
        .into_iter()
        .filter(|p| p.ends_with(".rs"))
        .filter(|p| {
            ["supervisor/src/", "protocol/src/", "worker/src/"]
                .iter()
                .any(|c| p.starts_with(c))
        })
        .collect();
    files.sort();
    files
}

/// The part of a source file before its unit tests (`#[cfg(test)] mod tests`
/// at the bottom); a file of tests alone has none.
fn code_before_tests(path: &str, text: &str) -> usize {
    if path.ends_with("/tests.rs") || path.contains("/tests/") {
        return 0;
    }
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .position(|pair| pair[0] == "#[cfg(test)]" && pair[1].starts_with("mod tests"))
        .unwrap_or(lines.len())
}

#[test]
fn every_source_file_is_on_the_map() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let spans: Vec<String> = code_spans(&text)
        .into_iter()
        .map(|s| s.trim_end_matches("()").to_owned())
        .collect();
    let named = |wanted: &str| {
        spans
            .iter()
            .any(|s| s == wanted || wanted.ends_with(&format!("/{s}")))
    };
    let unmapped: Vec<String> = source_files(&root)
        .into_iter()
        .filter(|path| {
            let file = Path::new(path);
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let folder = file
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy();
            let stem = file.file_stem().unwrap().to_string_lossy();
            let root_of_folder = format!("{stem}/");
            // Tests, crate roots, the root of a module folder and a binary
            // (named by what it is called) are found through what they hold.
            let implied = name == "tests.rs"
                || name == "lib.rs"
                || folder == "tests"
                || named(&root_of_folder)
                || folder == "bin" && named(&stem);
            !(implied || named(&name) || named(path))
        })
        .collect();
    assert!(
        unmapped.is_empty(),
        "ARCHITECTURE.md says nothing of {unmapped:?}: say what each owns"
    );
}

#[test]
fn every_source_file_says_what_it_owns_and_stays_short() {
    let root = repo_root();
    let mut silent = Vec::new();
    let mut long = Vec::new();
    for path in source_files(&root) {
        let text = std::fs::read_to_string(root.join(&path)).unwrap();
        if !text.starts_with("//!") {
            silent.push(path.clone());
        }
        let code = code_before_tests(&path, &text);
        if path.starts_with("supervisor/src/") && code > 600 {
            long.push(format!("{path}: {code} lines"));
        }
    }
    assert!(
        silent.is_empty(),
        "no `//!` line saying what they own: {silent:?}"
    );
    assert!(
        long.is_empty(),
        "over 600 lines before their tests: {long:?}"
    );
}

#[test]
fn only_main_ends_the_process() {
    let root = repo_root();
    let callers: Vec<String> = source_files(&root)
        .into_iter()
        .filter(|p| p.starts_with("supervisor/src/") && !p.starts_with("supervisor/src/bin/"))
        .filter(|p| p != "supervisor/src/main.rs")
        .filter(|p| {
            std::fs::read_to_string(root.join(p))
                .unwrap()
                .lines()
                .any(|line| !line.trim_start().starts_with("//") && line.contains("process::exit"))
        })
        .collect();
    assert!(
        callers.is_empty(),
        "only main.rs maps outcomes to exit codes: {callers:?}"
    );
}
