//! Python workers end to end: the supervisor binary with workers written
//! with the Python SDK (`worker/python`), run as
//! `python3 -m supervisor_worker handlers.py:NAME` from the SDK's source tree.
//! Results, a crash, a drain and its resume, systemd's SIGTERM, cancelling
//! by a second signal and by the drain timeout, a lines source, and the
//! `heavy-python` example.
//!
//! The handlers announce each chunk as they start it, on stderr, as the
//! reference worker does with `--stderr-lines 1`: that is how a test knows
//! a chunk is in flight, and on which process. `python3` must be on PATH: the
//! tests fail without it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use super::{SQUARES_TOTAL, assert_exactly_once, record};
use crate::harness::{
    self, Announced, Scenario, assert_stderr_contains, indices, read_records, repo_root,
    wait_for_busy_workers,
};

/// The handlers every test picks from, by name.
const HANDLERS: &str = r#"
import os, sys, time

def announce(chunk):
    # One write per line, so lines of different chunks never mix.
    sys.stderr.write(f"pyworker[{os.getpid()}]: chunk {chunk.index} attempt {chunk.attempt}\n")
    sys.stderr.flush()

def squares(chunk):
    return sum((i * i) % 10007 for i in range(chunk.start, chunk.end))

def plain(chunk):
    return squares(chunk)

def detach(chunk):
    """Starts a process that leaves the worker's process group and session,
    as a daemonizing tool would, and does not wait for it."""
    import subprocess
    subprocess.Popen(["sleep", "300"], start_new_session=True)
    return squares(chunk)

def crash_on_3(chunk):
    announce(chunk)
    if chunk.index == 3 and chunk.attempt == 1:
        os.abort()
    return squares(chunk)

def slow(chunk):
    announce(chunk)
    time.sleep(0.1)
    return squares(chunk)

def very_slow(chunk):
    announce(chunk)
    time.sleep(0.3)
    return squares(chunk)

def hold_5(chunk):
    """The first run of chunk 5 holds on (a minute at most) until it is
    killed. A marker file in the job's folder (the workers' working
    directory) tells a rerun, whose attempt may still be 1: a worker that
    dies with several chunks outstanding costs none of them an attempt."""
    first = chunk.index == 5 and not os.path.exists("held-5")
    if first:
        # Before the announcement, which the test kills this worker on:
        # made after it, a kill in between left no marker, and the retry
        # held on for the whole minute too.
        open("held-5", "w").close()
    announce(chunk)
    if first:
        time.sleep(60)
    return squares(chunk)

def until_cancelled(chunk):
    """Runs until the supervisor cancels the chunk, or a minute at most."""
    announce(chunk)
    deadline = time.monotonic() + 60
    while not chunk.cancelled and time.monotonic() < deadline:
        time.sleep(0.005)
    return squares(chunk)

def count_lines(chunk):
    lines = list(chunk.lines())
    return {
        "input": chunk.input,
        "first_item": chunk.first_item,
        "lines": len(lines),
        "first": lines[0].decode() if lines else None,
    }

def upper(chunk):
    """A stdin chunk's bytes, upper-cased; the worker of chunk 2's first
    attempt dies first, so its retry must bring the same bytes."""
    data = chunk.read()
    assert chunk.input == "stdin" and chunk.path is None
    assert len(data) == chunk.end - chunk.start
    if chunk.index == 2 and chunk.attempt == 1:
        os.abort()
    return data.upper()
"#;

/// Fails (rather than skips) when there is no Python to test with.
fn require_python() {
    let version = Command::new("python3").arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "python3 is needed for the Python worker tests: {version:?}"
    );
}

/// The SDK's source folder, on the workers' PYTHONPATH.
fn sdk_source() -> PathBuf {
    let src = repo_root().join("worker/python/src");
    let src = src.canonicalize().unwrap_or(src);
    assert!(
        src.join("supervisor_worker/__main__.py").exists(),
        "no SDK at {}",
        src.display()
    );
    src
}

/// Writes the handlers into the scenario's folder and returns a job file
/// whose workers run `handler` from it over `[0, end)` in chunks of `chunk`.
/// `extra` goes at the end of the `[worker]` table, so it may hold worker
/// keys and then other tables.
fn python_job(scenario: &Scenario, handler: &str, end: u64, chunk: u64, extra: &str) -> String {
    let source = format!("[source]\nrange = {{ start = 0, end = {end} }}\nchunk = {chunk}\n");
    python_job_with_source(scenario, handler, &source, extra)
}

fn python_job_with_source(scenario: &Scenario, handler: &str, source: &str, extra: &str) -> String {
    require_python();
    let handlers = scenario.path("handlers.py");
    std::fs::write(&handlers, HANDLERS).unwrap();
    // Absolute, so the job does not depend on the workers' working directory.
    let target = format!("{}:{handler}", handlers.display());
    format!(
        "{source}\n[worker]\ncommand = [\"python3\", \"-m\", \"supervisor_worker\", {target:?}]\n\
         env = {{ PYTHONPATH = {:?} }}\n{extra}\n",
        sdk_source().display().to_string()
    )
}

/// How the handlers tag their announcements.
const TAG: &str = "pyworker";

fn parse_announcement(line: &str) -> Option<Announced> {
    harness::parse_announcement(TAG, line)
}

fn announcements(stderr: &str) -> Vec<Announced> {
    stderr.lines().filter_map(parse_announcement).collect()
}

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{text}"))
}

/// Every way the report says a worker process ended, over all slots.
fn exit_causes(report: &Value) -> Vec<String> {
    let mut causes = Vec::new();
    for worker in report["workers"].as_array().unwrap() {
        for (cause, count) in worker["exit_causes"].as_object().unwrap() {
            for _ in 0..count.as_u64().unwrap() {
                causes.push(cause.clone());
            }
        }
    }
    causes
}

#[test]
fn python_workers_give_every_chunk_once_with_the_right_answer() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "results.toml",
        &python_job(&scenario, "plain", 200_000, 1000, ""),
    );
    let finished = scenario.run(&["-w", "3", job.to_str().unwrap()]);
    finished.expect_code(0);
    let records = read_records(&scenario.path("results.jsonl"));
    assert_exactly_once(&records, 200);
    assert_eq!(
        indices(&records),
        (0..200).collect::<Vec<_>>(),
        "order = \"index\" is the default"
    );
    assert!(records.iter().all(|r| r.attempt == 1 && r.worker < 3));
    assert!(
        records.iter().all(|r| r.seconds > 0.0),
        "elapsed_ns missing"
    );
    assert_stderr_contains(&finished, "0 worker crashes");
    scenario.assert_no_survivors();
}

#[test]
fn a_python_worker_that_aborts_is_replaced_and_its_chunk_retried() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "crash.toml",
        &python_job(&scenario, "crash_on_3", 10_000, 1000, ""),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    let records = read_records(&scenario.path("crash.jsonl"));
    assert_exactly_once(&records, 10);
    assert_eq!(record(&records, 3).attempt, 2);
    assert!(
        records
            .iter()
            .filter(|r| r.index != 3)
            .all(|r| r.attempt == 1),
        "{records:?}"
    );
    assert_stderr_contains(&finished, "SIGABRT");
    assert!(
        !scenario
            .dir()
            .join(".supervisor/crash/failed.jsonl")
            .exists()
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_python_worker_killed_mid_chunk_is_replaced_and_no_chunk_is_lost() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "held.toml",
        &python_job(&scenario, "hold_5", 10_000, 1000, ""),
    );
    let mut run = scenario.start(&["-w", "2", job.to_str().unwrap()]);
    let line = run.wait_for_line("chunk 5 starting", |line| {
        parse_announcement(line).is_some_and(|a| a.index == 5)
    });
    let held = parse_announcement(&line).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(held.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let finished = run.finish();
    finished.expect_code(0);
    assert_stderr_contains(&finished, "killed by SIGKILL");
    let records = read_records(&scenario.path("held.jsonl"));
    assert_exactly_once(&records, 10);
    assert!(scenario.path("held-5").exists());
    scenario.assert_no_survivors();
}

#[test]
fn sigterm_drains_python_workers_exits_143_and_the_same_command_resumes() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "term.toml",
        &python_job(&scenario, "slow", 30_000, 1000, ""),
    );
    let args = ["-w", "2", job.to_str().unwrap()];
    let mut run = scenario.start(&args);
    wait_for_busy_workers(&mut run, TAG, 2);
    run.signal(Signal::SIGTERM);
    let finished = run.finish();
    finished.expect_code(143);
    assert_stderr_contains(&finished, "stopped after a drain (0 chunks cancelled)");
    let output = scenario.path("term.jsonl");
    let written = indices(&read_records(&output));
    assert!(
        written.len() < 30,
        "the run ended before the signal could stop it: {}",
        finished.stderr
    );
    assert_eq!(
        written,
        (0..written.len() as u64).collect::<Vec<_>>(),
        "the output after a drain is not a prefix in index order"
    );
    let started: BTreeSet<u64> = announcements(&finished.stderr)
        .iter()
        .map(|a| a.index)
        .collect();
    let lost: Vec<_> = started.iter().filter(|i| !written.contains(i)).collect();
    assert!(
        lost.is_empty(),
        "chunks that started before the drain but are not in the output: {lost:?}\n{}",
        finished.stderr
    );
    scenario.assert_no_survivors();

    let rerun = scenario.run(&args);
    rerun.expect_code(0);
    assert_stderr_contains(
        &rerun,
        &format!("30 of 30 chunks done ({} by an earlier run)", written.len()),
    );
    let again: Vec<_> = announcements(&rerun.stderr)
        .iter()
        .map(|a| a.index)
        .filter(|i| written.contains(i))
        .collect();
    assert!(again.is_empty(), "finished chunks ran again: {again:?}");
    assert_exactly_once(&read_records(&output), 30);
    scenario.assert_no_survivors();
}

#[test]
fn python_workers_ignore_a_sigterm_from_anyone_but_the_supervisor() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "cgroup.toml",
        &python_job(&scenario, "very_slow", 12_000, 1000, ""),
    );
    let args = ["-w", "2", job.to_str().unwrap()];
    let mut run = scenario.start(&args);
    let busy = wait_for_busy_workers(&mut run, TAG, 2);
    // KillMode=control-group: every process of the unit at once. The test is
    // not the workers' parent.
    for worker in &busy {
        kill(Pid::from_raw(worker.pid as i32), Signal::SIGTERM).unwrap();
    }
    run.signal(Signal::SIGTERM);
    let finished = run.finish();
    finished.expect_code(143);
    assert_eq!(
        finished.stderr.matches("ignoring SIGTERM from pid").count(),
        2,
        "{}",
        finished.stderr
    );
    assert_stderr_contains(&finished, "stopped after a drain (0 chunks cancelled)");
    let written = indices(&read_records(&scenario.path("cgroup.jsonl")));
    for worker in &busy {
        assert!(
            written.contains(&worker.index),
            "chunk {} was in flight on a worker that got a SIGTERM from outside, and is not in the output {written:?}:\n{}",
            worker.index,
            finished.stderr
        );
    }
    scenario.assert_no_survivors();
    scenario.run(&args).expect_code(0);
    assert_exactly_once(&read_records(&scenario.path("cgroup.jsonl")), 12);
    scenario.assert_no_survivors();
}

/// A second signal sends Cancel for the chunks in flight and stops every
/// worker at the same time, so whether a worker's `Cancelled` beats its
/// SIGTERM is a race: this test checks the outcome only. The next one, where
/// the drain timeout cancels without stopping anyone, sees the answers.
#[test]
fn a_second_sigterm_cancels_the_chunks_python_workers_are_running() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "twice.toml",
        &python_job(&scenario, "until_cancelled", 20_000, 1000, ""),
    );
    let report = scenario.path("twice-report.json");
    let mut run = scenario.start(&[
        "-w",
        "2",
        "--report",
        report.to_str().unwrap(),
        job.to_str().unwrap(),
    ]);
    wait_for_busy_workers(&mut run, TAG, 2);
    run.signal(Signal::SIGTERM);
    // Two signals sent back to back may arrive as one.
    run.wait_for_line("the drain starting", |line| line.contains("draining"));
    run.signal(Signal::SIGTERM);
    let finished = run.finish();
    finished.expect_code(143);
    let records = read_records(&scenario.path("twice.jsonl"));
    assert!(
        records.is_empty(),
        "cancelled chunks were written: {records:?}"
    );
    assert_stderr_contains(&finished, "(2 chunks cancelled)");
    let report = read_report(&report);
    assert_eq!(report["chunks"]["cancelled"], 2, "{report:#}");
    assert_eq!(report["chunks"]["done"], 0, "{report:#}");
    // The second signal also stops the workers (SIGTERM to each group, then
    // SIGKILL after a grace): a Python worker obeys its parent's SIGTERM at
    // once, so none lasts until the SIGKILL.
    let causes = exit_causes(&report);
    assert_eq!(causes.len(), 2, "{report:#}");
    for cause in &causes {
        assert!(
            cause.ends_with("(killed by SIGTERM)") || cause.ends_with("(exit status 0)"),
            "{cause}: {report:#}"
        );
    }
    scenario.assert_no_survivors();
}

/// The drain timeout cancels the chunks in flight without stopping the
/// workers: each handler sees `chunk.cancelled`, the SDK answers `Cancelled`,
/// and the worker exits 0 on Stop. A worker that kept its chunk would be
/// killed after the grace, which the report would show as its exit cause.
#[test]
fn python_workers_answer_cancelled_at_the_drain_timeout_and_exit_when_stopped() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "timeout.toml",
        &python_job(
            &scenario,
            "until_cancelled",
            20_000,
            1000,
            "[supervisor]\ndrain_timeout = \"1s\"",
        ),
    );
    let report = scenario.path("timeout-report.json");
    let mut run = scenario.start(&[
        "-w",
        "2",
        "--report",
        report.to_str().unwrap(),
        job.to_str().unwrap(),
    ]);
    wait_for_busy_workers(&mut run, TAG, 2);
    run.signal(Signal::SIGTERM);
    let finished = run.finish();
    finished.expect_code(143);
    assert_stderr_contains(&finished, "cancelling 2 chunks in flight");
    assert_stderr_contains(&finished, "(2 chunks cancelled)");
    // The workers gave their chunks up when asked; none had to be killed.
    assert!(
        !finished.stderr.contains("did not give up"),
        "{}",
        finished.stderr
    );
    assert!(read_records(&scenario.path("timeout.jsonl")).is_empty());
    let report = read_report(&report);
    assert_eq!(report["chunks"]["cancelled"], 2, "{report:#}");
    // Each worker answered Cancelled, then exited on its own when stopped:
    // not killed, not gone with its chunk.
    assert_eq!(
        exit_causes(&report),
        ["exit status 0", "exit status 0"],
        "{report:#}"
    );
    assert_eq!(report["worker_crashes"], 0, "{report:#}");
    scenario.assert_no_survivors();
}

#[test]
fn a_python_worker_reads_its_lines_from_the_input_file() {
    let scenario = Scenario::new();
    let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(scenario.path("input.txt"), &text).unwrap();
    let job = scenario.job(
        "lines.toml",
        &python_job_with_source(
            &scenario,
            "count_lines",
            "[source]\nlines = { path = \"input.txt\" }\nchunk = 64\n",
            "",
        ),
    );
    scenario
        .run(&["-w", "2", job.to_str().unwrap()])
        .expect_code(0);
    let records = read_records(&scenario.path("lines.jsonl"));
    assert_eq!(indices(&records), (0..16).collect::<Vec<_>>());
    let mut next_line = 0;
    for record in &records {
        let output = &record.output;
        assert_eq!(output["input"], "lines", "{record:?}");
        assert_eq!(output["first_item"], next_line, "{record:?}");
        assert_eq!(output["first"], format!("line {next_line}"), "{record:?}");
        let lines = output["lines"].as_u64().unwrap();
        assert_eq!(
            lines,
            if record.index == 15 {
                1000 - 15 * 64
            } else {
                64
            }
        );
        next_line += lines;
    }
    assert_eq!(next_line, 1000);
    scenario.assert_no_survivors();
}

#[test]
fn the_heavy_python_example_gives_the_known_answer() {
    require_python();
    let scenario = Scenario::new();
    let examples = repo_root().join("examples");
    std::fs::copy(examples.join("heavy.py"), scenario.path("heavy.py")).unwrap();
    // The example finds the SDK relative to its own folder; from the
    // scenario's folder it is found by its absolute path.
    let text = std::fs::read_to_string(examples.join("heavy-python.toml")).unwrap();
    let relative = "PYTHONPATH = \"../worker/python/src\"";
    assert!(text.contains(relative), "{text}");
    let absolute = format!("PYTHONPATH = {:?}", sdk_source().display().to_string());
    let job = scenario.job("heavy-python.toml", &text.replace(relative, &absolute));
    scenario
        .run(&["-w", "4", job.to_str().unwrap()])
        .expect_code(0);
    let records = read_records(&scenario.path("heavy-python.jsonl"));
    assert_exactly_once(&records, 100);
    let total: u64 = records.iter().map(|r| r.output.as_u64().unwrap()).sum();
    assert_eq!(total, SQUARES_TOTAL);
    scenario.assert_no_survivors();
}

#[test]
fn what_a_python_worker_detaches_does_not_outlive_the_run() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "detach.toml",
        &python_job(&scenario, "detach", 8000, 1000, ""),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    assert_exactly_once(&read_records(&scenario.path("detach.jsonl")), 8);
    // Eight `sleep 300` in sessions of their own were started; none is left.
    scenario.assert_no_survivors();
}

#[test]
fn a_python_worker_reads_the_bytes_a_stdin_chunk_brings() {
    let scenario = Scenario::new();
    let text: String = (0..5000).map(|i| format!("line {i} abc\n")).collect();
    let input = scenario.path("input.txt");
    std::fs::write(&input, &text).unwrap();
    let job = scenario.job(
        "upper.toml",
        &python_job_with_source(
            &scenario,
            "upper",
            "[source]\nstdin = {}\nchunk = \"4KiB\"\n",
            "\n[output]\npath = \"-\"\nformat = \"raw\"\n",
        ),
    );
    let launch = harness::Launch::default().stdin(std::fs::File::open(&input).unwrap());
    let finished = scenario
        .start_with(&["-w", "2", job.to_str().unwrap()], launch)
        .finish();
    finished.expect_code(0);
    assert!(
        finished.stdout == text.to_uppercase().as_bytes(),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}
