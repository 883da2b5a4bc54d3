//! The job file a one-liner stands for: its flags as the TOML keys they
//! mean, written by the toml crate's serializer (so any path, delimiter or
//! argument is quoted right), and what was typed for each flag, so that an
//! error in a key can name the flag instead.

use std::path::Path;

use serde::Serialize;

use crate::cli::{Format, OneLinerArgs, Order, StdinMode};

/// What a one-liner's job is called where a job file's path would be: in
/// the plan (`job: NAME (command line)`) and as [`crate::config::Job::file`].
pub const ORIGIN: &str = "command line";

/// A job name when `--name` is not given and the command's program makes
/// none.
const FALLBACK_NAME: &str = "one-liner";

/// A one-liner as job-file text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFileText {
    /// The job file: loaded as it is, printed by `--print-job`.
    pub toml: String,
    /// Each flag given and what was typed after it, in the order of the job
    /// file's keys; the command as `--`.
    pub typed: Vec<(&'static str, String)>,
    /// Whether `--name` was given: the job then keeps its state folder
    /// between runs.
    pub named: bool,
}

impl JobFileText {
    /// The job file as `--print-job` prints it: a comment that says where
    /// it came from and where its relative paths point, then the TOML.
    pub fn printed(&self, dir: &Path) -> String {
        format!(
            "# The job of a one-liner (supervisor --print-job). Relative paths in it\n\
             # resolve against the job file's folder; the one-liner's did against\n\
             # {}\n\n{}",
            dir.display(),
            self.toml
        )
    }
}

/// The job file of the one-liner `args` (with `-j N` as `workers`), or why
/// the flags make none. The TOML is not checked here: loading it is.
pub fn job_file(args: &OneLinerArgs, workers: Option<u16>) -> Result<JobFileText, String> {
    let mut typed: Vec<(&'static str, String)> = Vec::new();
    let source = &args.source;
    let (program, _) = args.command.split_first().ok_or_else(|| {
        "a one-liner needs the command to run for each chunk, after `--`: e.g. \
         `supervisor --lines urls.txt -- curl -sSO {item}`"
            .to_owned()
    })?;
    let delimiter = match &args.delimiter {
        Some(text) if source.file.is_some() || source.pipe => {
            typed.push(("--delimiter", text.clone()));
            Some(unescape(text).map_err(|e| format!("--delimiter {text}: {e}"))?)
        }
        Some(_) => {
            return Err(
                "--delimiter goes with --file or --pipe, whose records it ends; --lines cuts \
                 at newlines and --range has no records"
                    .to_owned(),
            );
        }
        None => None,
    };
    let mut table = SourceTable::default();
    let bytes = if let Some(range) = source.range {
        typed.push(("--range", range.to_string()));
        table.range = Some(RangeTable {
            start: range.start,
            end: range.end,
        });
        false
    } else if let Some(path) = &source.file {
        typed.push(("--file", path.clone()));
        table.file = Some(FileTable {
            path: path.clone(),
            delimiter,
        });
        true
    } else if let Some(path) = &source.lines {
        typed.push(("--lines", path.clone()));
        table.lines = Some(LinesTable { path: path.clone() });
        false
    } else {
        typed.push(("--pipe", String::new()));
        table.stdin = Some(StdinTable { delimiter });
        true
    };
    if let Some(chunk) = &args.chunk {
        typed.push(("--chunk", chunk.clone()));
        table.chunk = Some(NumberOrText::of(chunk));
    }
    if let Some(target) = &args.target {
        typed.push(("--target", target.clone()));
        table.target = Some(target.clone());
    }
    // Like parallel --pipepart and --pipe: bytes go to the command's stdin.
    let stdin = args.stdin.unwrap_or(if bytes {
        StdinMode::Chunk
    } else {
        StdinMode::None
    });
    if let Some(given) = args.stdin {
        typed.push(("--stdin", stdin_name(given).to_owned()));
    }
    let success_exit = (!args.success_exit.is_empty()).then(|| {
        let list: Vec<String> = args.success_exit.iter().map(i64::to_string).collect();
        typed.push(("--success-exit", list.join(",")));
        args.success_exit.clone()
    });
    if let Some(timeout) = &args.timeout {
        typed.push(("--timeout", timeout.clone()));
    }
    if let Some(retries) = args.retries {
        typed.push(("--retries", retries.to_string()));
    }
    typed.push(("--", args.command.join(" ")));
    let worker = WorkerTable {
        exec: args.command.clone(),
        stdin: (stdin == StdinMode::Chunk).then_some("chunk"),
        success_exit,
        timeout: args.timeout.clone(),
        retries: args.retries,
    };
    if let Some(workers) = workers {
        typed.push(("--workers", workers.to_string()));
    }
    if let Some(max) = &args.max_failed {
        typed.push(("--max-failed", max.clone()));
    }
    let supervisor = (workers.is_some() || args.max_failed.is_some()).then(|| SupervisorTable {
        workers,
        max_failed: args.max_failed.as_deref().map(NumberOrText::of),
    });
    let output = OutputTable {
        path: args.output.clone().unwrap_or_else(|| "-".to_owned()),
        format: match args.format.unwrap_or(Format::Raw) {
            Format::Raw => "raw",
            Format::Jsonl => "jsonl",
        },
        order: args.order.map(|order| match order {
            Order::Index => "index",
            Order::Completion => "completion",
        }),
    };
    for (flag, given) in [("--output", &args.output), ("--name", &args.name)] {
        if let Some(text) = given {
            typed.push((flag, text.clone()));
        }
    }
    if args.format.is_some() {
        typed.push(("--format", output.format.to_owned()));
    }
    if let Some(order) = output.order {
        typed.push(("--order", order.to_owned()));
    }
    let name = args.name.clone().unwrap_or_else(|| name_of(program));
    let file = JobFile {
        job: JobTable { name },
        source: table,
        worker,
        supervisor,
        output,
    };
    let toml = toml::to_string(&file).map_err(|e| format!("cannot write the job file: {e}"))?;
    Ok(JobFileText {
        toml,
        typed,
        named: args.name.is_some(),
    })
}

fn stdin_name(mode: StdinMode) -> &'static str {
    match mode {
        StdinMode::Chunk => "chunk",
        StdinMode::None => "none",
    }
}

/// A job name made from the command's program (`tr`, `python3.12`): what
/// the log, the summary and metrics call an unnamed one-liner.
fn name_of(program: &str) -> String {
    let base = Path::new(program)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("");
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        FALLBACK_NAME.to_owned()
    } else {
        name
    }
}

/// A delimiter as typed, its escapes (those a shell makes awkward to type)
/// turned into the characters they stand for.
fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('n') => '\n',
            Some('t') => '\t',
            Some('r') => '\r',
            Some('0') => '\0',
            Some('\\') => '\\',
            Some(other) => {
                return Err(format!(
                    "`\\{other}` is no escape this knows: use \\n, \\t, \\r, \\0 or \\\\"
                ));
            }
            None => return Err("ends in a lone `\\`: write \\\\ for a backslash".to_owned()),
        });
    }
    Ok(out)
}

/// A value the job file takes as an integer or as text (`chunk`,
/// `max_failed`): what was typed, as the integer it reads as if it does.
#[derive(Serialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(i64),
    Text(String),
}

impl NumberOrText {
    fn of(text: &str) -> Self {
        let digits = text.replace('_', "");
        let plain = text.trim_start_matches('-');
        match digits.parse::<i64>() {
            // `_` only between digits, as TOML has it.
            Ok(n) if !plain.starts_with('_') && !plain.ends_with('_') && !plain.contains("__") => {
                NumberOrText::Number(n)
            }
            _ => NumberOrText::Text(text.to_owned()),
        }
    }
}

#[derive(Serialize)]
struct JobFile {
    job: JobTable,
    source: SourceTable,
    worker: WorkerTable,
    #[serde(skip_serializing_if = "Option::is_none")]
    supervisor: Option<SupervisorTable>,
    output: OutputTable,
}

#[derive(Serialize)]
struct JobTable {
    name: String,
}

#[derive(Serialize, Default)]
struct SourceTable {
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk: Option<NumberOrText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<RangeTable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<FileTable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lines: Option<LinesTable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stdin: Option<StdinTable>,
}

#[derive(Serialize)]
struct RangeTable {
    start: u64,
    end: u64,
}

#[derive(Serialize)]
struct FileTable {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    delimiter: Option<String>,
}

#[derive(Serialize)]
struct LinesTable {
    path: String,
}

#[derive(Serialize)]
struct StdinTable {
    #[serde(skip_serializing_if = "Option::is_none")]
    delimiter: Option<String>,
}

#[derive(Serialize)]
struct WorkerTable {
    exec: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stdin: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    success_exit: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<i64>,
}

#[derive(Serialize)]
struct SupervisorTable {
    #[serde(skip_serializing_if = "Option::is_none")]
    workers: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_failed: Option<NumberOrText>,
}

#[derive(Serialize)]
struct OutputTable {
    path: String,
    format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::Cli;

    /// The job file of the one-liner `words` (after `supervisor`).
    fn text_of(words: &[&str]) -> Result<JobFileText, String> {
        let cli = Cli::try_parse_from(std::iter::once("supervisor").chain(words.iter().copied()))
            .unwrap_or_else(|e| panic!("{words:?}: {e}"));
        job_file(&cli.run.job.one_liner, cli.run.workers)
    }

    fn table_of(words: &[&str]) -> toml::Table {
        toml::from_str(&text_of(words).unwrap().toml).unwrap()
    }

    #[test]
    fn a_pipe_is_a_stdin_source() {
        // The `stdin` source is a job file's too; its run is tested where it
        // lives. Its default delimiter, "\n", is left to it.
        assert_eq!(
            text_of(&["--pipe", "--", "tr", "a-z", "A-Z"]).unwrap().toml,
            "[job]\nname = \"tr\"\n\n\
             [source.stdin]\n\n\
             [worker]\nexec = [\"tr\", \"a-z\", \"A-Z\"]\nstdin = \"chunk\"\n\n\
             [output]\npath = \"-\"\nformat = \"raw\"\n"
        );
        let text = text_of(&[
            "--pipe",
            "--chunk",
            "1MiB",
            "--delimiter",
            "\\0",
            "--stdin",
            "none",
            "--name",
            "nul",
            "--",
            "wc",
            "-c",
        ])
        .unwrap();
        assert_eq!(
            text.toml,
            "[job]\nname = \"nul\"\n\n\
             [source]\nchunk = \"1MiB\"\n\n\
             [source.stdin]\ndelimiter = \"\\u0000\"\n\n\
             [worker]\nexec = [\"wc\", \"-c\"]\n\n\
             [output]\npath = \"-\"\nformat = \"raw\"\n"
        );
        assert!(text.named);
        let table: toml::Table = toml::from_str(&text.toml).unwrap();
        assert_eq!(table["source"]["stdin"]["delimiter"].as_str(), Some("\0"));
        // A delimiter with a newline in it is written as a multi-line string.
        let table = table_of(&["--pipe", "--delimiter", "\n\n", "--", "cat"]);
        assert_eq!(table["source"]["stdin"]["delimiter"].as_str(), Some("\n\n"));
    }

    #[test]
    fn every_flag_lands_in_its_key() {
        let table = table_of(&[
            "-j",
            "3",
            "--lines",
            "in.txt",
            "--chunk",
            "10_000",
            "--success-exit",
            "0,1",
            "--timeout",
            "90s",
            "--retries",
            "4",
            "--max-failed",
            "5%",
            "--output",
            "out.jsonl",
            "--format",
            "jsonl",
            "--order",
            "completion",
            "--stdin",
            "chunk",
            "--",
            "grep",
            "-F",
            "x",
        ]);
        let expected: toml::Table = toml::from_str(
            r#"
job = { name = "grep" }
source = { lines = { path = "in.txt" }, chunk = 10000 }
worker = { exec = ["grep", "-F", "x"], stdin = "chunk", success_exit = [0, 1], timeout = "90s", retries = 4 }
supervisor = { workers = 3, max_failed = "5%" }
output = { path = "out.jsonl", format = "jsonl", order = "completion" }
"#,
        )
        .unwrap();
        assert_eq!(table, expected);
        // Flags left out leave their keys to the job file's defaults.
        let table = table_of(&["--range", "0..10", "--", "echo", "{start}"]);
        let expected: toml::Table = toml::from_str(
            r#"
job = { name = "echo" }
source = { range = { start = 0, end = 10 } }
worker = { exec = ["echo", "{start}"] }
output = { path = "-", format = "raw" }
"#,
        )
        .unwrap();
        assert_eq!(table, expected);
        let table = table_of(&[
            "--file", "big.log", "--chunk", "auto", "--target", "1s", "--", "gzip",
        ]);
        assert_eq!(table["source"]["chunk"].as_str(), Some("auto"));
        assert_eq!(table["source"]["target"].as_str(), Some("1s"));
        let table = table_of(&["--file", "big.log", "--max-failed", "7", "--", "gzip"]);
        // The job file's default delimiter, "\n", is left to it.
        assert_eq!(table["source"]["file"].get("delimiter"), None);
        assert_eq!(table["worker"]["stdin"].as_str(), Some("chunk"));
        assert_eq!(table["supervisor"]["max_failed"].as_integer(), Some(7));
    }

    #[test]
    fn anything_typed_comes_back_from_the_toml_as_it_was_typed() {
        let awkward = [
            "it's \"quoted\" \\ back\\slashed",
            "$(touch marker) `x` ${HOME}",
            "new\nline and\ttab",
            "ünïcödé ✓ '''",
            "",
            "{item}",
        ];
        let path = "dir with 'quotes' and \"more\"/in put.txt";
        let mut words = vec!["--lines", path, "--output", awkward[0], "--", "printf"];
        words.extend(awkward);
        let table = table_of(&words);
        assert_eq!(table["source"]["lines"]["path"].as_str(), Some(path));
        assert_eq!(table["output"]["path"].as_str(), Some(awkward[0]));
        let exec: Vec<&str> = table["worker"]["exec"]
            .as_array()
            .unwrap()
            .iter()
            .map(|word| word.as_str().unwrap())
            .collect();
        assert_eq!(exec[0], "printf");
        assert_eq!(exec[1..], awkward);
    }

    #[test]
    fn flags_that_make_no_job_say_so() {
        let error = text_of(&["--range", "0..9"]).unwrap_err();
        assert!(error.contains("after `--`"), "{error}");
        let error = text_of(&["--lines", "x", "--delimiter", ";", "--", "cat"]).unwrap_err();
        assert!(
            error.starts_with("--delimiter goes with --file or --pipe"),
            "{error}"
        );
        let error = text_of(&["--pipe", "--delimiter", "a\\", "--", "cat"]).unwrap_err();
        assert!(
            error.starts_with("--delimiter a\\: ends in a lone"),
            "{error}"
        );
    }

    #[test]
    fn an_unnamed_one_liner_is_named_after_its_program() {
        assert_eq!(name_of("tr"), "tr");
        assert_eq!(name_of("/usr/bin/python3.12"), "python3.12");
        assert_eq!(name_of("./my tool"), "my_tool");
        assert_eq!(name_of(".."), FALLBACK_NAME);
        assert_eq!(name_of(""), FALLBACK_NAME);
    }

    #[test]
    fn numbers_stay_numbers_and_sizes_stay_text() {
        let shown = |text: &str| {
            toml::to_string(
                &[("v", NumberOrText::of(text))]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )
            .unwrap()
        };
        assert_eq!(shown("10"), "v = 10\n");
        assert_eq!(shown("10_000"), "v = 10000\n");
        assert_eq!(shown("-3"), "v = -3\n");
        assert_eq!(shown("1MiB"), "v = \"1MiB\"\n");
        assert_eq!(shown("5%"), "v = \"5%\"\n");
        assert_eq!(shown("_1"), "v = \"_1\"\n");
        assert_eq!(shown("1__0"), "v = \"1__0\"\n");
    }

    #[test]
    fn escapes_are_the_ones_toml_has() {
        assert_eq!(unescape("\\n").unwrap(), "\n");
        assert_eq!(unescape("a\\tb\\r\\0\\\\").unwrap(), "a\tb\r\0\\");
        assert_eq!(unescape(";").unwrap(), ";");
        assert!(unescape("\\x").is_err());
    }
}
