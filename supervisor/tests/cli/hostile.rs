//! A hostile worker against the real supervisor: every lie of the protocol's
//! failure rules, told by the reference worker's own serve loop (exact bytes,
//! exact order), costs at most an attempt, never a chunk, never the run.

use serde_json::Value;

use super::{assert_exactly_once, record};
use crate::harness::{Record, Scenario, read_records, squares_job};

/// Room for the replacements a test's lies cost: a lie on a worker holding
/// several chunks costs a crash without an attempt (none of them is surely
/// the culprit), then another when the chunk is tried again alone.
const RESTARTS: &str = "[supervisor]\nrestart = { max = 50, within = \"1m\" }";

fn attempts_above_one(records: &[Record]) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r.attempt > 1)
        .map(|r| r.index)
        .collect()
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_second_answer_for_a_chunk_gets_the_worker_replaced_and_the_chunk_written_once() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "twice.toml",
        &squares_job(12_000, 1000, &["--fault", "twice:3"], RESTARTS),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    let records = read_records(&scenario.path("twice.jsonl"));
    assert_exactly_once(&records, 12);
    // The first answer counted; the second broke the protocol.
    assert_eq!(record(&records, 3).attempt, 1);
    assert!(
        finished.stderr.contains("broke the protocol") && finished.stderr.contains("chunk 3"),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn answers_out_of_order_are_taken_as_they_come() {
    let scenario = Scenario::new();
    // One worker, so the chunks after a held one are queued at it: chunk
    // 4's answer comes before 3's, 8's before 7's.
    let job = scenario.job(
        "reorder.toml",
        &squares_job(
            12_000,
            1000,
            &["--fault", "reorder:3", "--fault", "reorder:7"],
            "",
        ),
    );
    let finished = scenario.run(&["-w", "1", job.to_str().unwrap()]);
    finished.expect_code(0);
    let records = read_records(&scenario.path("reorder.jsonl"));
    assert_exactly_once(&records, 12);
    assert_eq!(attempts_above_one(&records), Vec::<u64>::new());
    assert!(
        !finished.stderr.contains("broke the protocol"),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn each_malformed_answer_costs_its_chunk_one_attempt() {
    let scenario = Scenario::new();
    // A payload with bytes after the message, one that ends early, a length
    // past the payload's end, an error that is not UTF-8, an empty frame,
    // and a stream that ends inside a frame: each on one chunk's first
    // attempt only.
    let lies = [
        "trailing:1:2",
        "short:3:2",
        "overlong:5:2",
        "badutf8:7:2",
        "empty:9:2",
        "torn:11:2",
    ];
    let args: Vec<&str> = lies.iter().flat_map(|lie| ["--fault", lie]).collect();
    let job = scenario.job(
        "malformed.toml",
        &squares_job(14_000, 1000, &args, RESTARTS),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    let records = read_records(&scenario.path("malformed.jsonl"));
    assert_exactly_once(&records, 14);
    assert_eq!(attempts_above_one(&records), [1, 3, 5, 7, 9, 11]);
    for attempt in records.iter().filter(|r| r.attempt > 1) {
        assert_eq!(attempt.attempt, 2, "{attempt:?}");
    }
    assert!(
        finished
            .stderr
            .contains("broke the protocol: malformed message"),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn failures_with_the_largest_errors_a_frame_holds_keep_the_supervisor_small() {
    let scenario = Scenario::new();
    // Every attempt of every chunk fails with an error of 64 MiB: 8 of them
    // in all, 512 MiB if the supervisor kept what it was sent.
    let lies: Vec<String> = (0..4).map(|i| format!("bigerror:{i}")).collect();
    let args: Vec<&str> = lies
        .iter()
        .flat_map(|lie| ["--fault", lie.as_str()])
        .collect();
    let job = scenario.job(
        "bigerror.toml",
        &squares_job(4_000, 1000, &args, "retries = 1"),
    );
    let report = scenario.path("report.json");
    let finished = scenario.run(&[
        "-w",
        "2",
        "--report",
        report.to_str().unwrap(),
        job.to_str().unwrap(),
    ]);
    finished.expect_code(1);
    let failed =
        std::fs::read_to_string(scenario.path(".supervisor/bigerror/failed.jsonl")).unwrap();
    let failed: Vec<Value> = failed
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(failed.len(), 4);
    for chunk in &failed {
        let attempts = chunk["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{}", chunk["index"]);
        for attempt in attempts {
            let error = attempt["error"].as_str().unwrap();
            assert!(error.starts_with("injected error of"), "{}", &error[..80]);
            assert!(error.len() <= 80 << 10, "an error of {} bytes", error.len());
        }
    }
    let report = read_json(&report);
    let peak = report["supervisor_peak_rss_bytes"].as_u64().unwrap();
    // Two workers' frames of 64 MiB on their way at once, and the rest of
    // the supervisor: far below what was sent.
    assert!(
        peak < 256 << 20,
        "the supervisor peaked at {} MiB",
        peak >> 20
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_worker_that_shuts_its_socket_and_lives_on_is_killed_and_replaced() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "close.toml",
        &squares_job(
            10_000,
            1000,
            &["--fault", "close:3:2", "--fault", "close:6:2"],
            &format!("timeout = \"30s\"\n{RESTARTS}"),
        ),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    let records = read_records(&scenario.path("close.jsonl"));
    assert_exactly_once(&records, 10);
    assert_eq!(record(&records, 3).attempt, 2);
    assert_eq!(record(&records, 6).attempt, 2);
    scenario.assert_no_survivors();
}

#[test]
fn a_worker_claiming_the_longest_time_there_is_disturbs_nothing() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "timeless.toml",
        &squares_job(
            10_000,
            1000,
            &["--fault", "timeless:0", "--fault", "timeless:4"],
            "",
        ),
    );
    let report = scenario.path("report.json");
    scenario
        .run(&[
            "-w",
            "2",
            "--report",
            report.to_str().unwrap(),
            job.to_str().unwrap(),
        ])
        .expect_code(0);
    let records = read_records(&scenario.path("timeless.jsonl"));
    assert_exactly_once(&records, 10);
    assert_eq!(attempts_above_one(&records), Vec::<u64>::new());
    let report = read_json(&report);
    assert_eq!(report["chunks"]["done"], 10, "{report:#}");
    assert!(
        report["latency_seconds"]["max"].as_f64().is_some(),
        "{report:#}"
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_worker_speaking_another_protocol_version_ends_the_run_with_exit_3() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "version.toml",
        &squares_job(10_000, 1000, &["--speak-version", "1"], ""),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(3);
    assert!(
        finished.stderr.contains(&format!(
            "speaks version 1, the supervisor version {}",
            protocol::PROTOCOL_VERSION
        )),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_worker_that_answers_before_its_hello_is_broken_and_the_run_ends_at_the_restart_limit() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "early.toml",
        &squares_job(
            10_000,
            1000,
            &["--answer-before-hello"],
            "[supervisor]\nrestart = { max = 2, within = \"1m\" }",
        ),
    );
    let finished = scenario.run(&["-w", "1", job.to_str().unwrap()]);
    finished.expect_code(3);
    assert!(
        finished.stderr.contains("broke the protocol"),
        "{}",
        finished.stderr
    );
    assert!(
        !scenario.path("early.jsonl").exists()
            || read_records(&scenario.path("early.jsonl")).is_empty()
    );
    scenario.assert_no_survivors();
}

/// A job whose workers say hello and then never read: with params of 4 MiB
/// the supervisor's Welcome cannot even be written whole.
fn deaf_job(scenario: &Scenario, extra: &str) -> std::path::PathBuf {
    let blob = "x".repeat(4 << 20);
    scenario.job(
        "deaf.toml",
        &squares_job(
            10_000,
            1000,
            &["--deaf-after-hello"],
            &format!("timeout = \"1s\"\nparams = {{ blob = \"{blob}\" }}\n{extra}"),
        ),
    )
}

#[test]
fn workers_that_never_read_are_killed_at_the_timeout_until_the_restart_limit() {
    let scenario = Scenario::new();
    let job = deaf_job(
        &scenario,
        "[supervisor]\nrestart = { max = 2, within = \"1m\" }",
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(3);
    assert!(finished.stderr.contains("timed out"), "{}", finished.stderr);
    scenario.assert_no_survivors();
}

#[test]
fn a_drain_is_not_held_up_by_workers_that_never_read() {
    let scenario = Scenario::new();
    let job = deaf_job(
        &scenario,
        "[supervisor]\ndrain_timeout = \"1s\"\nrestart = { max = 1000, within = \"1m\" }",
    );
    let mut run = scenario.start(&["-w", "2", job.to_str().unwrap()]);
    run.wait_for_line("a worker timed out", |line| line.contains("timed out"));
    run.signal(nix::sys::signal::Signal::SIGTERM);
    run.finish().expect_code(143);
    scenario.assert_no_survivors();
}
