//! The supervisor binary end to end: real worker processes, sockets, signals
//! and files. Faults come from the reference worker's switches, so every
//! scenario fails the same way each time.

mod auto;
mod containment;
mod drain;
mod faults;
mod found;
mod harness;
mod hostile;
mod items;
mod metrics;
mod oneliner;
mod progress;
mod python;
mod report;
mod resources;
mod shards;
mod sources;
mod stdin;
mod tune;

use std::collections::BTreeMap;

use harness::{
    Record, Scenario, parse_announcement, parse_records, read_records, repo_root, squares_job,
    wait_for_busy_workers,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SQUARES_TOTAL: u64 = 49_259_937_824;

/// The sum over i in [start, end) of (i*i) % 10007, as the worker computes it.
fn squares(start: u64, end: u64) -> u64 {
    (start..end).map(|i| (i * i) % 10007).sum()
}

/// Asserts every chunk index in `0..count` appears exactly once, with the
/// right answer.
fn assert_exactly_once(records: &[Record], count: u64) {
    let mut seen = BTreeMap::new();
    for record in records {
        *seen.entry(record.index).or_insert(0) += 1;
        assert_eq!(
            record.output,
            serde_json::json!(squares(record.start, record.end)),
            "{record:?}"
        );
    }
    let missing: Vec<_> = (0..count).filter(|i| !seen.contains_key(i)).collect();
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(missing.is_empty(), "missing chunks {missing:?}");
    assert!(doubled.is_empty(), "chunks written twice {doubled:?}");
    assert_eq!(records.len() as u64, count);
}

fn record(records: &[Record], index: u64) -> &Record {
    records
        .iter()
        .find(|r| r.index == index)
        .unwrap_or_else(|| panic!("no record for chunk {index}"))
}

fn failed_file(scenario: &Scenario, job_name: &str) -> Vec<serde_json::Value> {
    let path = scenario
        .dir()
        .join(".supervisor")
        .join(job_name)
        .join("failed.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn the_example_gives_the_known_answer_on_1_2_and_4_workers() {
    let example = std::fs::read_to_string(repo_root().join("examples/squares.toml")).unwrap();
    let mut ordered_outputs = Vec::new();
    for workers in ["1", "2", "4"] {
        let scenario = Scenario::new();
        let job = scenario.job("squares.toml", &example);
        scenario
            .run(&["--workers", workers, job.to_str().unwrap()])
            .expect_code(0);
        let records = read_records(&scenario.path("squares.jsonl"));
        assert_exactly_once(&records, 100);
        let total: u64 = records.iter().map(|r| r.output.as_u64().unwrap()).sum();
        assert_eq!(total, SQUARES_TOTAL);
        assert!(records.windows(2).all(|w| w[0].index < w[1].index));
        if workers == "4" {
            let used: std::collections::BTreeSet<_> = records.iter().map(|r| r.worker).collect();
            assert!(used.iter().all(|&w| w < 4), "{used:?}");
        }
        // Byte for byte, but for which worker ran a chunk and how long it took.
        let text = std::fs::read_to_string(scenario.path("squares.jsonl")).unwrap();
        let normalized: Vec<String> = text
            .lines()
            .map(|line| {
                let mut value: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(line).unwrap();
                value.remove("worker");
                value.remove("seconds");
                serde_json::to_string(&value).unwrap()
            })
            .collect();
        ordered_outputs.push(normalized);
        scenario.assert_no_survivors();
    }
    assert_eq!(ordered_outputs[0], ordered_outputs[1]);
    assert_eq!(ordered_outputs[0], ordered_outputs[2]);
}

#[test]
fn check_prints_the_plan_and_starts_nothing() {
    let scenario = Scenario::new();
    let job = scenario.job("plan.toml", &squares_job(1000, 30, &[], ""));
    let finished = scenario.run(&["check", "-w", "3", job.to_str().unwrap()]);
    finished.expect_code(0);
    let plan = String::from_utf8(finished.stdout.clone()).unwrap();
    assert!(
        plan.contains("chunks: 34 of 30 items (the last 10)"),
        "{plan}"
    );
    assert!(plan.contains("workers: 3"), "{plan}");
    assert!(!scenario.path("plan.jsonl").exists());
    assert!(!scenario.path(".supervisor").exists());
}

#[test]
fn a_worker_killed_from_outside_mid_chunk_is_replaced_and_its_chunk_retried() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "kill.toml",
        &squares_job(
            20_000,
            1000,
            &["--slow-ms", "300", "--stderr-lines", "1"],
            "",
        ),
    );
    let mut run = scenario.start(&["-w", "2", job.to_str().unwrap()]);
    // The worker announces each chunk as it starts it; kill it right there.
    let line = run.wait_for_line("announcing chunk 3", |line| {
        parse_announcement("squares-worker", line).is_some_and(|a| a.index == 3 && a.attempt == 1)
    });
    let pid = parse_announcement("squares-worker", &line).unwrap().pid;
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let finished = run.finish();
    finished.expect_code(0);
    let records = read_records(&scenario.path("kill.jsonl"));
    assert_exactly_once(&records, 20);
    assert_eq!(record(&records, 3).attempt, 2);
    assert!(finished.stderr.contains("SIGKILL"), "{}", finished.stderr);
    scenario.assert_no_survivors();
}

#[test]
fn workers_die_with_a_supervisor_killed_by_sigkill() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "orphans.toml",
        &squares_job(
            20_000,
            1000,
            &["--slow-ms", "60000", "--stderr-lines", "1"],
            "",
        ),
    );
    let mut run = scenario.start(&["-w", "2", job.to_str().unwrap()]);
    // Both workers are busy with a chunk when the supervisor dies.
    wait_for_busy_workers(&mut run, "squares-worker", 2);
    kill(Pid::from_raw(run.pid() as i32), Signal::SIGKILL).unwrap();
    assert_eq!(run.finish().code, None, "killed by a signal");
    scenario.assert_no_survivors();
}

#[test]
fn a_crash_on_the_first_attempt_is_retried_and_the_run_completes() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "crash.toml",
        &squares_job(10_000, 1000, &["--fault", "crash:3:2"], ""),
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
            .all(|r| r.attempt == 1)
    );
    assert!(
        !scenario
            .dir()
            .join(".supervisor/crash/failed.jsonl")
            .exists()
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_chunk_that_always_crashes_is_failed_and_every_other_chunk_is_written() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "poison.toml",
        &squares_job(10_000, 1000, &["--fault", "crash:3"], "retries = 2"),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(1);
    let records = read_records(&scenario.path("poison.jsonl"));
    assert_eq!(
        records.iter().map(|r| r.index).collect::<Vec<_>>(),
        [0, 1, 2, 4, 5, 6, 7, 8, 9]
    );
    let failed = failed_file(&scenario, "poison");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["index"], 3);
    assert_eq!(failed[0]["start"], 3000);
    let attempts = failed[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    for (n, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["attempt"], n as u64 + 1);
        let error = attempt["error"].as_str().unwrap();
        assert!(error.contains("SIGABRT"), "{error}");
    }
    assert!(
        finished.stderr.contains("failed.jsonl"),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_chunk_that_keeps_failing_lists_every_attempts_error() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "fail.toml",
        &squares_job(5_000, 1000, &["--fault", "fail:1"], "retries = 1"),
    );
    scenario
        .run(&["-w", "1", job.to_str().unwrap()])
        .expect_code(1);
    let failed = failed_file(&scenario, "fail");
    let errors: Vec<_> = failed[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        errors,
        [
            "injected failure on chunk 1 attempt 1",
            "injected failure on chunk 1 attempt 2"
        ]
    );
    assert_eq!(read_records(&scenario.path("fail.jsonl")).len(), 4);
    scenario.assert_no_survivors();
}

#[test]
fn a_hung_chunk_is_killed_at_the_timeout_and_retried() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "hang.toml",
        &squares_job(6_000, 1000, &["--fault", "hang:2:2"], "timeout = \"1s\""),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    let records = read_records(&scenario.path("hang.jsonl"));
    assert_exactly_once(&records, 6);
    assert_eq!(record(&records, 2).attempt, 2);
    assert!(
        finished.stderr.contains("timed out after 1s on chunk 2"),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_worker_that_exits_at_start_up_ends_the_run_at_once_with_exit_3() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "startup.toml",
        &squares_job(
            6_000,
            1000,
            &["--exit-at-start"],
            "[supervisor]\nrestart = { max = 5, within = \"1m\" }",
        ),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(3);
    // No worker of the run ever started: the program cannot, and restarting
    // it until the limit would only say so six times.
    assert!(
        finished.stderr.contains("could not start (exit status 1)"),
        "{}",
        finished.stderr
    );
    assert!(
        !finished.stderr.contains("workers crashed"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("exit status 1"),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_worker_that_never_says_hello_is_replaced_until_the_limit() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "silent.toml",
        &squares_job(
            6_000,
            1000,
            &["--hang-at-start"],
            "start_timeout = \"1s\"\n[supervisor]\nrestart = { max = 1, within = \"1m\" }",
        ),
    );
    let finished = scenario.run(&["-w", "1", job.to_str().unwrap()]);
    finished.expect_code(3);
    assert!(
        finished.stderr.contains("did not say hello within 1s"),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn garbage_and_oversized_frames_get_the_worker_replaced_and_the_run_goes_on() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "garbage.toml",
        &squares_job(
            10_000,
            1000,
            &["--fault", "garbage:2:2", "--fault", "oversized:6:2"],
            "",
        ),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    let records = read_records(&scenario.path("garbage.jsonl"));
    assert_exactly_once(&records, 10);
    assert_eq!(record(&records, 2).attempt, 2);
    assert_eq!(record(&records, 6).attempt, 2);
    assert!(
        finished
            .stderr
            .contains("broke the protocol: malformed message"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("exceeds the limit"),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn completion_order_writes_every_chunk_once() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "completion.toml",
        &squares_job(
            200_000,
            1000,
            &["--fault", "crash:17:2"],
            "[output]\norder = \"completion\"",
        ),
    );
    scenario
        .run(&["-w", "2", job.to_str().unwrap()])
        .expect_code(0);
    assert_exactly_once(&read_records(&scenario.path("completion.jsonl")), 200);
    scenario.assert_no_survivors();
}

#[test]
fn output_to_stdout_carries_records_only() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "stdout.toml",
        &squares_job(10_000, 1000, &[], "[output]\npath = \"-\""),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    let records = parse_records(std::str::from_utf8(&finished.stdout).unwrap());
    assert_exactly_once(&records, 10);
    assert!(
        finished.stderr.contains("10 of 10 chunks done"),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn bad_job_files_exit_2_before_anything_is_written() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let mut names: Vec<_> = std::fs::read_dir(&fixtures)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 15, "{names:?}");
    for name in names {
        let scenario = Scenario::new();
        std::fs::copy(fixtures.join(&name), scenario.path(&name)).unwrap();
        for args in [vec![name.as_str()], vec!["check", name.as_str()]] {
            let finished = scenario.run(&args);
            finished.expect_code(2);
            let stderr = finished.stderr.trim_end();
            assert!(
                !stderr.contains('\n'),
                "{name}: more than one line:\n{stderr}"
            );
            let location = stderr
                .strip_prefix(&format!("error: {name}:"))
                .unwrap_or_else(|| panic!("{name}: no location in {stderr:?}"));
            let mut parts = location.splitn(3, ':');
            let line: u32 = parts.next().unwrap().parse().unwrap_or(0);
            let column: u32 = parts.next().unwrap_or("").parse().unwrap_or(0);
            assert!(line >= 1 && column >= 1, "{name}: {stderr}");
            let rest = parts.next().unwrap_or("");
            let key = rest.trim_start().split(':').next().unwrap_or("");
            assert!(!key.is_empty(), "{name}: no key in {stderr}");
            assert!(finished.stdout.is_empty(), "{name}");
        }
        let left: Vec<_> = std::fs::read_dir(scenario.dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            left,
            std::slice::from_ref(&name),
            "{name}: something was written"
        );
        scenario.assert_no_survivors();
    }
}

#[test]
fn a_missing_job_file_is_a_clear_error() {
    let scenario = Scenario::new();
    let finished = scenario.run(&["nowhere.toml"]);
    finished.expect_code(2);
    assert!(
        finished.stderr.contains("nowhere.toml"),
        "{}",
        finished.stderr
    );
}

#[test]
fn a_bad_command_line_exits_2() {
    let scenario = Scenario::new();
    scenario.run(&["--workers", "0", "job.toml"]).expect_code(2);
    scenario.run(&["--no-such-flag", "job.toml"]).expect_code(2);
    scenario.run(&[]).expect_code(2);
}

#[test]
fn printing_to_a_reader_that_went_away_is_a_quiet_exit_0() {
    // `supervisor man | head -1`: the reader is gone before the first write,
    // which fails with EPIPE whatever the page's size.
    for command in [&["man"][..], &["completions", "bash"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let ran = std::process::Command::new(harness::supervisor_bin())
            .args(command)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&ran.stderr);
        assert_eq!(ran.status.code(), Some(0), "{command:?}: {stderr}");
        assert!(stderr.is_empty(), "{command:?}: {stderr}");
    }
}

#[test]
fn an_output_that_cannot_be_created_exits_3_naming_it() {
    let scenario = Scenario::new();
    // A folder where the output file should be.
    std::fs::create_dir(scenario.path("taken.jsonl")).unwrap();
    let job = scenario.job(
        "taken.toml",
        &squares_job(1000, 100, &[], "[output]\npath = \"taken.jsonl\""),
    );
    let finished = scenario.run(&[job.to_str().unwrap()]);
    finished.expect_code(3);
    assert!(
        finished.stderr.contains("cannot create the output")
            && finished.stderr.contains("taken.jsonl"),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}
