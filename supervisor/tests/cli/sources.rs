//! File and lines sources, raw output and per-chunk commands, end to end:
//! real input files much larger than a chunk, transformed in parallel into
//! output byte-identical to the serial tool's, with failures, drains and
//! resumes on the way.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use super::failed_file;
use crate::harness::{Scenario, read_records};

/// A text file of `lines` lines of varying length, with a few lines far
/// longer than the chunks the tests use, and (when `trailing` is false) a
/// last line without its newline.
pub fn text_file(path: &Path, lines: usize, trailing: bool) -> Vec<u8> {
    let mut text = Vec::new();
    let mut state = 0x9e37_79b9_u32;
    for i in 0..lines {
        // A small LCG: the same file every run, no dependency.
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let len = if i % 997 == 500 {
            150_000
        } else {
            (state >> 24) as usize % 90
        };
        text.extend_from_slice(format!("line {i}: ").as_bytes());
        text.extend((0..len).map(|j| b"abcdefghijklmnopqrstuvwxyz ,.;"[(j + i) % 30]));
        text.push(b'\n');
    }
    if !trailing {
        text.extend_from_slice(b"the last line has no newline");
    }
    std::fs::write(path, &text).unwrap();
    text
}

/// What `program args…` prints with `input` on its stdin: the serial run
/// the parallel one must match.
pub fn serial(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success());
    output.stdout
}

#[test]
fn a_file_job_with_raw_output_equals_the_serial_tool() {
    let scenario = Scenario::new();
    let input = text_file(&scenario.path("input.txt"), 40_000, false);
    assert!(input.len() > 3_000_000, "{}", input.len());
    let job = scenario.job(
        "upper.toml",
        r#"
[source]
file = { path = "input.txt" }
chunk = "64KiB"

[worker]
exec = ["tr", "a-z", "A-Z"]
stdin = "chunk"

[output]
path = "upper.txt"
format = "raw"
"#,
    );
    scenario
        .run(&["--workers", "2", job.to_str().unwrap()])
        .expect_code(0);
    let output = std::fs::read(scenario.path("upper.txt")).unwrap();
    assert!(
        output == serial("tr", &["a-z", "A-Z"], &input),
        "the output differs from `tr a-z A-Z < input.txt`"
    );
    scenario.assert_no_survivors();
}

#[test]
fn chunks_tile_the_file_on_record_boundaries_with_a_multibyte_delimiter() {
    let scenario = Scenario::new();
    // Records end with "\r\n"; some are longer than a chunk; the last has no
    // delimiter. Each chunk's command prints its range and its bytes' length.
    let mut text = Vec::new();
    for i in 0..3000 {
        let body = if i % 400 == 7 { 5000 } else { i % 70 };
        text.extend_from_slice(format!("rec{i}:{}\r\n", "x".repeat(body)).as_bytes());
    }
    text.extend_from_slice(b"tail without delimiter");
    std::fs::write(scenario.path("records.txt"), &text).unwrap();
    let job = scenario.job(
        "tiles.toml",
        r#"
[source]
file = { path = "records.txt", delimiter = "\r\n" }
chunk = 1000

[worker]
exec = ["sh", "-c", "printf '%s %s ' \"$0\" \"$1\"; wc -c", "{offset}", "{length}"]
stdin = "chunk"
"#,
    );
    scenario
        .run(&["--workers", "2", job.to_str().unwrap()])
        .expect_code(0);
    let records = read_records(&scenario.path("tiles.jsonl"));
    assert_eq!(records.len() as u64, planned_chunks(&scenario, &job));
    // Records longer than a chunk make fewer, larger chunks, none empty.
    assert!(records.len() < text.len().div_ceil(1000));
    assert!(records.iter().all(|r| r.end > r.start), "an empty chunk");
    let mut at = 0;
    for (k, record) in records.iter().enumerate() {
        assert_eq!(record.index, k as u64);
        assert_eq!(
            record.start,
            at,
            "chunk {k} does not start where {} ended",
            k - 1
        );
        let (start, end) = (record.start as usize, record.end as usize);
        if start > 0 && start < text.len() {
            assert_eq!(
                &text[start - 2..start],
                b"\r\n",
                "chunk {k} splits a record"
            );
        }
        let words: Vec<u64> = record
            .output
            .as_str()
            .unwrap_or_else(|| panic!("{record:?}"))
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        assert_eq!(
            words,
            [
                record.start,
                record.end - record.start,
                (end - start) as u64
            ]
        );
        at = record.end;
    }
    assert_eq!(at, text.len() as u64);
    // A record longer than a chunk is in one chunk longer than a chunk.
    assert!(records.iter().any(|r| r.end - r.start > 5000));
    scenario.assert_no_survivors();
}

#[test]
fn a_lines_job_hands_each_chunk_its_first_line() {
    let scenario = Scenario::new();
    let input = text_file(&scenario.path("input.txt"), 10_500, false);
    let lines = 10_501;
    let job = scenario.job(
        "lines.toml",
        r#"
[source]
lines = { path = "input.txt" }
chunk = 1000

[worker]
exec = ["sh", "-c", "head -n 1 | cut -d: -f1 | tr '\n' ' '; echo \"$0\"", "{first_line}"]
stdin = "chunk"
"#,
    );
    let plan = scenario.run(&["check", job.to_str().unwrap()]);
    plan.expect_code(0);
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(
        plan.contains("chunks: 11 of 1000 lines (the last 501)"),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("({lines} lines, {} bytes", input.len())),
        "{plan}"
    );
    scenario
        .run(&["--workers", "2", job.to_str().unwrap()])
        .expect_code(0);
    let records = read_records(&scenario.path("lines.jsonl"));
    assert_eq!(records.len(), 11);
    for (k, record) in records.iter().enumerate() {
        // Each chunk starts with line k·1000, whose text starts "line N:".
        let first = k * 1000;
        let output = record
            .output
            .as_str()
            .unwrap_or_else(|| panic!("{record:?}"));
        assert_eq!(
            output.trim_end(),
            format!("line {first} {first}"),
            "{record:?}"
        );
        let bytes = &input[record.start as usize..record.end as usize];
        let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
        let expected = if k == 10 { 500 } else { 1000 };
        assert_eq!(newlines, expected, "chunk {k}");
    }
    assert_eq!(records.last().unwrap().end, input.len() as u64);
    scenario.assert_no_survivors();
}

#[test]
fn a_command_that_fails_on_one_chunk_fails_that_chunk_alone() {
    let scenario = Scenario::new();
    text_file(&scenario.path("input.txt"), 2000, true);
    let job = scenario.job(
        "flaky.toml",
        r#"
[source]
file = { path = "input.txt" }
chunk = "16KiB"

[worker]
exec = ["sh", "-c", "if [ \"$0\" = 3 ]; then echo \"boom on $0\" >&2; exit 3; fi; wc -l", "{index}"]
stdin = "chunk"
retries = 1

[output]
format = "raw"
"#,
    );
    let finished = scenario.run(&["--workers", "2", job.to_str().unwrap()]);
    finished.expect_code(1);
    let failed = failed_file(&scenario, "flaky");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["index"], 3);
    let attempts = failed[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    for attempt in attempts {
        let error = attempt["error"].as_str().unwrap();
        assert!(
            error.contains("exited with status 3") && error.contains("boom on 3"),
            "{error}"
        );
    }
    // Every other chunk's count is in the output, in index order.
    let counts: Vec<u64> = std::fs::read_to_string(scenario.path("flaky.out"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let chunks = planned_chunks(&scenario, &job);
    assert_eq!(counts.len() as u64, chunks - 1);
    scenario.assert_no_survivors();
}

#[test]
fn a_drained_file_job_resumes_to_the_same_bytes() {
    let scenario = Scenario::new();
    let input = text_file(&scenario.path("input.txt"), 6000, false);
    // Each chunk says on stderr that it started, then takes a while.
    let job = scenario.job(
        "slow.toml",
        r#"
[source]
file = { path = "input.txt" }
chunk = "16KiB"

[worker]
exec = ["sh", "-c", "echo \"started chunk $0\" >&2; sleep 0.3; tr a-z A-Z", "{index}"]
stdin = "chunk"

[output]
path = "slow.txt"
format = "raw"
"#,
    );
    let chunks = input.len().div_ceil(16 * 1024);
    assert!(chunks > 10, "{chunks}");
    let mut run = scenario.start(&["--workers", "2", job.to_str().unwrap()]);
    let mut started = BTreeMap::new();
    while started.len() < 4 {
        let line = run.wait_for_line("a chunk starting", |l| l.contains("started chunk "));
        let index: u64 = line
            .rsplit("started chunk ")
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        started.insert(index, ());
    }
    run.signal(Signal::SIGTERM);
    let drained = run.finish();
    drained.expect_code(143);
    let partial = std::fs::read(scenario.path("slow.txt")).unwrap();
    assert!(
        partial.len() < input.len(),
        "the drain left nothing to resume"
    );

    scenario
        .run(&["--workers", "2", job.to_str().unwrap()])
        .expect_code(0);
    let output = std::fs::read(scenario.path("slow.txt")).unwrap();
    assert!(
        output == serial("tr", &["a-z", "A-Z"], &input),
        "the resumed output differs from `tr a-z A-Z < input.txt`"
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_changed_input_file_is_not_resumed() {
    let scenario = Scenario::new();
    text_file(&scenario.path("input.txt"), 500, true);
    let job = scenario.job(
        "count.toml",
        r#"
[source]
file = { path = "input.txt" }
chunk = "4KiB"

[worker]
exec = ["wc", "-l"]
stdin = "chunk"
"#,
    );
    let args = ["--workers", "2", job.to_str().unwrap()];
    scenario.run(&args).expect_code(0);
    text_file(&scenario.path("input.txt"), 700, true);
    let refused = scenario.run(&args);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("source.size") && refused.stderr.contains("--fresh"),
        "{}",
        refused.stderr
    );
    scenario
        .run(&["--fresh", "--workers", "2", job.to_str().unwrap()])
        .expect_code(0);
    scenario.assert_no_survivors();
}

#[test]
fn an_empty_file_is_a_job_with_no_chunks() {
    let scenario = Scenario::new();
    std::fs::write(scenario.path("empty.txt"), b"").unwrap();
    let job = scenario.job(
        "empty.toml",
        r#"
[source]
file = { path = "empty.txt" }

[worker]
exec = ["cat"]
stdin = "chunk"

[output]
format = "raw"
"#,
    );
    let finished = scenario.run(&[job.to_str().unwrap()]);
    finished.expect_code(0);
    assert!(
        finished.stderr.contains("0 of 0 chunks done"),
        "{}",
        finished.stderr
    );
    assert_eq!(std::fs::read(scenario.path("empty.out")).unwrap(), b"");
    scenario.assert_no_survivors();
}

#[test]
fn workers_run_in_the_job_files_folder() {
    let scenario = Scenario::new();
    std::fs::create_dir(scenario.path("jobs")).unwrap();
    std::fs::write(scenario.path("jobs/input.txt"), b"a\nb\n").unwrap();
    let job = scenario.job(
        "jobs/where.toml",
        r#"
[source]
file = { path = "input.txt" }

[worker]
exec = ["sh", "-c", "cat ./input.txt >/dev/null && pwd"]

[output]
format = "raw"
"#,
    );
    // Started from the scenario's folder, one level above the job file.
    scenario.run(&[job.to_str().unwrap()]).expect_code(0);
    let output = std::fs::read_to_string(scenario.path("jobs/where.out")).unwrap();
    let expected = scenario.path("jobs").canonicalize().unwrap();
    assert_eq!(output.trim(), expected.to_str().unwrap());
    scenario.assert_no_survivors();
}

#[test]
fn a_worker_reads_its_own_byte_range_and_the_counts_add_up_to_wc() {
    let scenario = Scenario::new();
    let input = text_file(&scenario.path("input.txt"), 30_000, false);
    let newlines = input.iter().filter(|&&b| b == b'\n').count() as u64;
    for (name, source) in [
        ("bytes", r#"file = { path = "input.txt" }"#),
        ("lines", r#"lines = { path = "input.txt" }"#),
    ] {
        let chunk = if name == "bytes" {
            "\"100KiB\""
        } else {
            "2500"
        };
        let job = scenario.job(
            &format!("{name}.toml"),
            &format!(
                "[source]\n{source}\nchunk = {chunk}\n\n[worker]\ncommand = [\"count-worker\"]\n"
            ),
        );
        scenario
            .run(&["--workers", "2", job.to_str().unwrap()])
            .expect_code(0);
        let records = read_records(&scenario.path(&format!("{name}.jsonl")));
        let total: u64 = records.iter().map(|r| r.output.as_u64().unwrap()).sum();
        assert_eq!(total, newlines, "{name}");
    }
    scenario.assert_no_survivors();
}

#[test]
fn a_command_that_hangs_is_killed_at_the_timeout_and_its_chunk_retried() {
    let scenario = Scenario::new();
    text_file(&scenario.path("input.txt"), 400, true);
    // Chunk 2 hangs on its first attempt only.
    let job = scenario.job(
        "hang.toml",
        r#"
[source]
file = { path = "input.txt" }
chunk = "4KiB"

[worker]
exec = ["sh", "-c", "if [ \"$0\" = 2 ] && [ \"$1\" = 1 ]; then sleep 600; fi; wc -l", "{index}", "{attempt}"]
stdin = "chunk"
timeout = "1s"
"#,
    );
    let finished = scenario.run(&["--workers", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    assert!(finished.stderr.contains("timed out"), "{}", finished.stderr);
    let records = read_records(&scenario.path("hang.jsonl"));
    for record in &records {
        let expected = if record.index == 2 { 2 } else { 1 };
        assert_eq!(record.attempt, expected, "{record:?}");
    }
    // The hung `sleep` went with its host: nothing of the run is left.
    scenario.assert_no_survivors();
}

/// The chunk count `check` plans for `job`: exact, for every source.
fn planned_chunks(scenario: &Scenario, job: &std::path::Path) -> u64 {
    let checked = scenario.run(&["check", job.to_str().unwrap()]);
    checked.expect_code(0);
    let plan = String::from_utf8_lossy(&checked.stdout).into_owned();
    plan.lines()
        .find_map(|line| line.strip_prefix("chunks: "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no chunk count in the plan:\n{plan}"))
}
