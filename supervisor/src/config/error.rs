//! Errors in a job file, located by line, column and key, and the rewording
//! of toml's and serde's messages for people writing job files.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A job file that cannot be used. Displays as one line,
/// `{file}:{line}:{column}: {key}: {message}`, or `{file}: {message}` when the
/// file could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The job file's path as the user gave it.
    pub file: PathBuf,
    /// 1-based; 0 only when the file could not be read.
    pub line: usize,
    /// 1-based, in characters; 0 only when the file could not be read.
    pub column: usize,
    /// The dotted key path, e.g. `worker.retries`; `(syntax)` when a TOML
    /// syntax error cannot be tied to a key; empty when the file could not be read.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    /// Line and column, both 1-based, unless the file could not be read.
    pub fn location(&self) -> Option<(usize, usize)> {
        (self.line > 0).then_some((self.line, self.column))
    }
}

impl fmt::Display for ConfigError {
    /// One line whatever the file holds: a value quoted from it (a TOML
    /// `"a\nb"`, a path with a tab) has its control characters escaped, so
    /// a refusal never breaks a log line or a line-oriented reader in two.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = OneLine(&self.file.display().to_string());
        let message = OneLine(&self.message);
        match self.location() {
            Some((line, column)) => {
                let key = OneLine(&self.key);
                write!(f, "{file}:{line}:{column}: {key}: {message}")
            }
            None => write!(f, "{file}: {message}"),
        }
    }
}

/// Text shown with its control characters escaped as Rust writes them
/// (`\n`, `\t`, `\u{1b}`), everything else as it is.
struct OneLine<'a>(&'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(char::is_control) {
            f.write_str(&rest[..at])?;
            let control = rest[at..].chars().next().unwrap_or_default();
            write!(f, "{}", control.escape_default())?;
            rest = &rest[at + control.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// The job file being read, for turning byte spans into located errors.
pub(super) struct JobText<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    /// Whether `file` is a file (a job file) or only names where the text
    /// came from (a one-liner's command line).
    pub(super) on_disk: bool,
}

impl JobText<'_> {
    pub(super) fn error(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }

    /// A document that is not TOML at all.
    pub(super) fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
        let start = e.span().map_or(0, |s| s.start);
        let message = format!("invalid TOML: {}", polish(e.message()).0);
        self.error(start..start, syntax_key(self.text, start), message)
    }

    /// TOML whose shape does not fit the job file: unknown keys, wrong types.
    pub(super) fn shape_error(
        &self,
        e: &serde_path_to_error::Error<toml::de::Error>,
    ) -> ConfigError {
        let mut key = key_path(e.path());
        let (message, unknown) = polish(e.inner().message());
        // serde_path_to_error usually ends the path with the unknown key
        // already; toml's own key errors do not.
        if let Some(unknown) = unknown
            && key != unknown
            && !key.ends_with(&format!(".{unknown}"))
        {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(&unknown);
        }
        if key.is_empty() {
            key = "(syntax)".to_owned();
        }
        let start = e.inner().span().map_or(0, |s| s.start);
        self.error(start..start, key, message)
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The dotted key path of a serde error, without the markers `Spanned` and
/// TOML datetimes use internally.
fn key_path(path: &serde_path_to_error::Path) -> String {
    let mut key = String::new();
    for segment in path {
        match segment {
            serde_path_to_error::Segment::Map { key: k } if k.starts_with("$__") => {}
            serde_path_to_error::Segment::Map { key: k }
            | serde_path_to_error::Segment::Enum { variant: k } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(k);
            }
            serde_path_to_error::Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    key
}

/// Rewords serde's and toml's messages for people writing a job file, and
/// returns the offending key of an unknown-key error, which serde names only
/// in the message.
fn polish(message: &str) -> (String, Option<String>) {
    let message = message.lines().next().unwrap_or("").trim();
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let expected = expected.trim_start_matches(',').trim();
        let text = if expected == "there are no fields" || expected.is_empty() {
            format!("unknown key `{field}`")
        } else {
            format!("unknown key `{field}`; {expected}")
        };
        return (text, Some(field.to_owned()));
    }
    // toml hands integers beyond i64 to serde as i128, which serde words oddly.
    if let Some(rest) = message.strip_prefix("invalid type: integer `")
        && let Some((digits, _)) = rest.split_once("` as i128")
    {
        return (
            format!("`{digits}` is too large for a 64-bit integer"),
            None,
        );
    }
    let mut text = message
        .replace("missing field", "missing key")
        .replace("unknown variant", "unknown value")
        .replace("invalid type: map", "invalid type: table")
        .replace("invalid type: sequence", "invalid type: array")
        .replace(", expected", "; expected");
    for (from, to) in [
        ("expected i64", "expected an integer"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
        ("expected struct", "expected a table"),
    ] {
        if let Some(at) = text.find(from) {
            text.replace_range(at.., to);
        }
    }
    (text, None)
}

/// The best key to blame for a syntax error: the key assigned on the failing
/// line, inside the nearest table header above it, or the header itself.
fn syntax_key(text: &str, offset: usize) -> String {
    let (line, _) = line_column(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let header = |l: &str| -> Option<String> {
        let l = l.trim();
        let inner = l
            .strip_prefix('[')?
            .split(']')
            .next()?
            .trim_matches('[')
            .trim();
        is_bare_key(inner).then(|| inner.to_owned())
    };
    let current = lines.get(line - 1).copied().unwrap_or("");
    if let Some(h) = header(current) {
        return h;
    }
    let table = lines[..(line - 1).min(lines.len())]
        .iter()
        .rev()
        .find_map(|l| header(l));
    let assigned = current
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| is_bare_key(k));
    match (table, assigned) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k.to_owned(),
        (Some(t), None) => t,
        (None, None) => "(syntax)".to_owned(),
    }
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('.').all(|p| {
            !p.trim().is_empty()
                && p.trim()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}
