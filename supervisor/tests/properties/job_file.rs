//! The job-file loader (`config::load`) against generated job files, the
//! same files damaged, and text that is hardly TOML at all: a valid file
//! loads; anything else is refused with one line that names a place inside
//! the file and a key; nothing panics, nothing is written, and no number in
//! the file becomes an allocation.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::{Index, select};
use supervisor::config::{self, ConfigError, Job};

use super::config as cases;
use super::peak::peak_alloc;

/// Lines of the input file that `file` and `lines` sources read.
const INPUT: &str = "alpha\nbeta\ngamma\ndelta\nepsilon\nzeta\neta\ntheta\n";

fn table(name: &str, lines: Vec<Option<String>>) -> String {
    let mut text = format!("[{name}]\n");
    for line in lines.into_iter().flatten() {
        text.push_str(&line);
        text.push('\n');
    }
    text.push('\n');
    text
}

fn maybe(values: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    prop::option::of(select(values).prop_map(str::to_owned))
}

fn source() -> impl Strategy<Value = String> {
    let range = (
        0u64..1000,
        1u64..1_000_000,
        maybe(&["chunk = 1000", "chunk = 7"]),
    )
        .prop_map(|(start, len, chunk)| {
            table(
                "source",
                vec![
                    Some(format!(
                        "range = {{ start = {start}, end = {} }}",
                        start + len
                    )),
                    chunk,
                ],
            )
        });
    let file = (
        select(
            &[
                "file = { path = \"input.txt\" }",
                "file = { path = \"input.txt\", delimiter = \"a\" }",
            ][..],
        ),
        maybe(&["chunk = \"8B\"", "chunk = \"1KiB\""]),
    )
        .prop_map(|(file, chunk)| table("source", vec![Some(file.to_owned()), chunk]));
    let lines = (maybe(&["chunk = 1", "chunk = 3", "chunk = 100"]),).prop_map(|(chunk,)| {
        table(
            "source",
            vec![Some("lines = { path = \"input.txt\" }".to_owned()), chunk],
        )
    });
    prop_oneof![3 => range, 1 => file, 1 => lines]
}

fn worker() -> impl Strategy<Value = String> {
    // Not `exec`: it needs exec-worker beside the loading binary, and a
    // test binary has none.
    let program = select(
        &[
            "command = [\"sh\", \"-c\", \"exit 0\"]",
            "command = [\"cat\"]",
            "command = [\"/bin/true\", \"{not a placeholder}\"]",
        ][..],
    )
    .prop_map(|line| vec![line.to_owned()]);
    (
        program,
        maybe(&["timeout = \"1s\"", "timeout = \"2m 30s\""]),
        maybe(&["start_timeout = \"5s\""]),
        maybe(&["retries = 0", "retries = 3", "retries = 1000"]),
        maybe(&["max_chunks = 0", "max_chunks = 10"]),
        maybe(&["memory_limit = \"512MiB\"", "memory_limit = \"2GiB\""]),
        maybe(&["env = { RUST_LOG = \"info\", A_B = \"\" }"]),
        maybe(&["params = { modulus = 10007, name = \"é\", list = [1, 2.5, true] }"]),
    )
        .prop_map(
            |(program, timeout, start, retries, max_chunks, memory, env, params)| {
                let mut lines: Vec<Option<String>> = program.into_iter().map(Some).collect();
                lines.extend([timeout, start, retries, max_chunks, memory, env, params]);
                table("worker", lines)
            },
        )
}

fn rest() -> impl Strategy<Value = String> {
    (
        maybe(&["name = \"squares\"", "name = \"a.b-c_9\""]),
        (
            maybe(&["workers = 1", "workers = 4", "workers = 1024"]),
            maybe(&["restart = { max = 3, within = \"10s\" }"]),
            maybe(&["drain_timeout = \"5s\""]),
            maybe(&["max_failed = \"5%\"", "max_failed = 3"]),
        ),
        (
            maybe(&[
                "path = \"out.jsonl\"",
                "path = \"-\"",
                "path = \"deeper/out.raw\"",
            ]),
            maybe(&["format = \"jsonl\"", "format = \"raw\""]),
            maybe(&["order = \"index\"", "order = \"completion\""]),
        ),
        maybe(&["dir = \".state\"", "dir = \"state/of/it\""]),
    )
        .prop_map(
            |(name, (workers, restart, drain, max_failed), (path, format, order), state)| {
                let mut text = String::new();
                if name.is_some() {
                    text.push_str(&table("job", vec![name]));
                }
                text.push_str(&table(
                    "supervisor",
                    vec![workers, restart, drain, max_failed],
                ));
                text.push_str(&table("output", vec![path, format, order]));
                if state.is_some() {
                    text.push_str(&table("state", vec![state]));
                }
                text
            },
        )
}

/// A job file that is valid as written.
fn job_file() -> impl Strategy<Value = String> {
    (source(), worker(), rest(), any::<bool>()).prop_map(|(source, worker, rest, rest_first)| {
        if rest_first {
            format!("# a job\n{rest}{source}{worker}")
        } else {
            format!("{source}{worker}{rest}")
        }
    })
}

/// Bits of TOML and near-TOML: values of every type, keys of every table,
/// and the characters that make or break its syntax.
const SNIPPETS: &[&str] = &[
    "=",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    ",",
    ".",
    "#",
    "\n",
    "\r\n",
    "\t",
    " ",
    "\\",
    "\\u0000",
    "\\n",
    "é",
    "\u{0}",
    "\u{7f}",
    "\u{feff}",
    "😀",
    "0",
    "-1",
    "+1",
    "1_000",
    "0x10",
    "0o7",
    "0b1",
    "1e400",
    "-0.0",
    "nan",
    "inf",
    "-inf",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "true",
    "false",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    "[]",
    "{}",
    "[1, \"a\"]",
    "{ a = 1 }",
    "\"\"",
    "\"64MiB\"",
    "\"0s\"",
    "\"1ns\"",
    "\"-1s\"",
    "\"auto\"",
    "\"5%\"",
    "\"101%\"",
    "\"-\"",
    "\"/\"",
    "\"..\"",
    "\"input.txt\"",
    "\"/dev/null\"",
    "\"a\\nb\"",
    "job",
    "name",
    "source",
    "range",
    "start",
    "end",
    "chunk",
    "target",
    "file",
    "lines",
    "path",
    "delimiter",
    "worker",
    "command",
    "exec",
    "stdin",
    "success_exit",
    "env",
    "params",
    "timeout",
    "start_timeout",
    "retries",
    "max_chunks",
    "memory_limit",
    "supervisor",
    "workers",
    "restart",
    "max",
    "within",
    "drain_timeout",
    "max_failed",
    "output",
    "format",
    "order",
    "state",
    "dir",
    "a.b.c = 1",
    "[worker.env]",
    "[[source]]",
    "{index}",
    "{item}",
];

/// Ways to damage a job file's text.
#[derive(Debug, Clone)]
enum Damage {
    Delete(Index, usize),
    Insert(Index, &'static str),
    InsertChar(Index, char),
    /// Everything after the first `=` of a line becomes another value.
    Revalue(Index, &'static str),
    DuplicateLine(Index),
    RemoveLine(Index),
    SwapLines(Index, Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<Index>(), 1usize..24).prop_map(|(at, n)| Damage::Delete(at, n)),
        (any::<Index>(), select(SNIPPETS)).prop_map(|(at, s)| Damage::Insert(at, s)),
        (any::<Index>(), any::<char>()).prop_map(|(at, c)| Damage::InsertChar(at, c)),
        (any::<Index>(), select(SNIPPETS)).prop_map(|(at, s)| Damage::Revalue(at, s)),
        any::<Index>().prop_map(Damage::DuplicateLine),
        any::<Index>().prop_map(Damage::RemoveLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Damage::SwapLines(a, b)),
    ]
}

/// The char boundary at or before `index` of the text's length.
fn boundary(text: &str, at: &Index) -> usize {
    let mut at = at.index(text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &mut String, damage: &Damage) {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let n = lines.len();
    match damage {
        Damage::Delete(at, len) => {
            let start = boundary(text, at);
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            text.replace_range(start..end, "");
            return;
        }
        Damage::Insert(at, snippet) => {
            text.insert_str(boundary(text, at), snippet);
            return;
        }
        Damage::InsertChar(at, c) => {
            text.insert(boundary(text, at), *c);
            return;
        }
        Damage::Revalue(at, value) => {
            let line = &mut lines[at.index(n)];
            if let Some(eq) = line.find('=') {
                line.replace_range(eq + 1.., &format!(" {value}"));
            }
        }
        Damage::DuplicateLine(at) => {
            let line = lines[at.index(n)].clone();
            lines.insert(at.index(n), line);
        }
        Damage::RemoveLine(at) => {
            lines.remove(at.index(n));
        }
        Damage::SwapLines(a, b) => lines.swap(a.index(n), b.index(n)),
    }
    *text = lines.join("\n");
}

thread_local! {
    /// One folder per test thread, with the input file; the job file is
    /// rewritten for every case.
    static DIR: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    paths
}

/// Loads `text` as a job file, checking what holds whatever the text: no
/// panic, no allocation beyond the text's own scale, nothing written, and a
/// refusal that names a place in the file and a key.
fn load(text: &str) -> Result<Job, ConfigError> {
    DIR.with(|dir| {
        let mut dir = dir.borrow_mut();
        let dir = dir.get_or_insert_with(|| {
            let dir = super::scratch_dir();
            std::fs::write(dir.path().join("input.txt"), INPUT).unwrap();
            dir
        });
        let path = dir.path().join("job.toml");
        std::fs::write(&path, text).unwrap();
        let before = listing(dir.path());
        let (loaded, peak) = peak_alloc(|| config::load(&path, None));
        let bound = (1 << 20) + 64 * text.len();
        assert!(
            peak <= bound,
            "loading {} bytes allocated {peak}:\n{text}",
            text.len()
        );
        assert_eq!(listing(dir.path()), before, "loading wrote files:\n{text}");
        if let Err(error) = &loaded {
            assert_located(error, text);
        }
        loaded
    })
}

fn assert_located(error: &ConfigError, text: &str) {
    let shown = error.to_string();
    assert!(!error.key.is_empty(), "no key: {shown}\nfor:\n{text}");
    let Some((line, column)) = error.location() else {
        panic!("no location: {shown}\nfor:\n{text}");
    };
    let Some(row) = text.split('\n').nth(line - 1) else {
        panic!(
            "line {line} of a file of {} lines: {shown}\nfor:\n{text}",
            text.split('\n').count()
        );
    };
    let width = row.chars().count();
    assert!(
        (1..=width + 1).contains(&column),
        "column {column} of a line of {width} characters: {shown}\nfor:\n{text}"
    );
}

#[test]
fn an_error_quoting_a_value_with_a_newline_is_still_one_line() {
    for text in [
        "[source]\nrange = { start = 0, end = 10 }\n[worker]\ncommand = [\"a\\nb\"]\n",
        "[job]\nname = \"a\\nb\"\n[source]\nrange = { start = 0, end = 10 }\n[worker]\ncommand = [\"sh\"]\n",
        "[source]\nfile = { path = \"x\\ny\" }\n[worker]\ncommand = [\"sh\"]\n",
    ] {
        let error = load(text).expect_err(text);
        let shown = error.to_string();
        assert!(
            !shown.contains('\n'),
            "more than one line: {shown:?}\nfor:\n{text}"
        );
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_valid_job_file_loads(text in job_file()) {
        let job = load(&text).unwrap_or_else(|e| panic!("{e}\nfor:\n{text}"));
        prop_assert!(job.chunk_count() >= 1);
        let _ = supervisor::journal::fingerprint(&job);
    }

    #[test]
    fn a_damaged_job_file_loads_or_is_refused_with_its_place(
        text in job_file(),
        damages in prop::collection::vec(damage(), 1..5),
    ) {
        let mut text = text;
        for damage in &damages {
            apply(&mut text, damage);
        }
        if let Ok(job) = load(&text) {
            prop_assert!(job.chunk_count() >= 1);
            let _ = supervisor::journal::fingerprint(&job);
        }
    }

    #[test]
    fn a_refusal_is_one_line(
        text in job_file(),
        damages in prop::collection::vec(damage(), 1..5),
    ) {
        let mut text = text;
        for damage in &damages {
            apply(&mut text, damage);
        }
        if let Err(error) = load(&text) {
            let shown = error.to_string();
            prop_assert!(!shown.contains('\n'), "more than one line: {shown:?}\nfor:\n{text}");
        }
    }

    #[test]
    fn arbitrary_text_is_refused_with_its_place(
        pieces in prop::collection::vec(
            prop_oneof![select(SNIPPETS).prop_map(str::to_owned), any::<char>().prop_map(String::from)],
            0..60,
        ),
    ) {
        let text: String = pieces.concat();
        let _ = load(&text);
    }
}
