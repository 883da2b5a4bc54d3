//! The run report (`--report FILE`) end to end: its counts against the output
//! and failed files of the same run, and its outcome and exit code after
//! failures, a drain and an abort.

use std::path::Path;

use nix::sys::signal::Signal;
use serde_json::Value;

use super::{assert_exactly_once, failed_file};
use crate::harness::{Finished, Scenario, read_records, squares_job};

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{text}"))
}

fn count(report: &Value, pointer: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} is not a count in {report:#}"))
}

fn seconds(report: &Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {report:#}"))
}

/// One object per slot, numbered 0 to `workers` − 1 in order.
fn assert_worker_slots(report: &Value, workers: u64) {
    let slots: Vec<u64> = report["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("no workers list in {report:#}"))
        .iter()
        .map(|w| w["slot"].as_u64().unwrap())
        .collect();
    assert_eq!(slots, (0..workers).collect::<Vec<_>>(), "{report:#}");
}

fn assert_exit_code(report: &Value, finished: &Finished) {
    assert_eq!(
        report["exit_code"].as_i64().map(|c| c as i32),
        finished.code,
        "the report's exit code is not the process's: {report:#}"
    );
}

#[test]
fn the_report_agrees_with_the_output_and_failed_files_after_a_crash_and_a_poison_chunk() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "faults.toml",
        &squares_job(
            10_000,
            1000,
            &["--fault", "crash:3:2", "--fault", "fail:5"],
            "retries = 1",
        ),
    );
    let report_path = scenario.path("report.json");
    let finished = scenario.run(&[
        "-w",
        "2",
        "--report",
        report_path.to_str().unwrap(),
        job.to_str().unwrap(),
    ]);
    finished.expect_code(1);
    let report = read_report(&report_path);
    let records = read_records(&scenario.path("faults.jsonl"));
    let failed = failed_file(&scenario, "faults");

    assert_eq!(report["outcome"], "finished_with_failures", "{report:#}");
    assert_exit_code(&report, &finished);
    assert_eq!(report["job"], "faults");
    assert_eq!(count(&report, "/chunks/total"), 10);
    assert_eq!(count(&report, "/chunks/done"), records.len() as u64);
    assert_eq!(count(&report, "/chunks/failed"), failed.len() as u64);
    assert_eq!(count(&report, "/chunks/failed"), 1);
    // The crash on chunk 3 and the first failure of chunk 5, at least.
    assert!(count(&report, "/chunks/retried") >= 2, "{report:#}");
    assert_eq!(count(&report, "/chunks/done_before"), 0);

    let listed = report["failed"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{report:#}");
    assert_eq!(listed[0]["index"], failed[0]["index"]);
    assert_eq!(listed[0]["start"], failed[0]["start"]);
    assert_eq!(listed[0]["attempts"], 2);
    let last_error = failed[0]["attempts"].as_array().unwrap().last().unwrap()["error"].clone();
    assert_eq!(listed[0]["error"], last_error);
    assert_eq!(report["failed_truncated"], false);

    let p50 = seconds(&report, "/latency_seconds/p50");
    let p95 = seconds(&report, "/latency_seconds/p95");
    let p99 = seconds(&report, "/latency_seconds/p99");
    let max = seconds(&report, "/latency_seconds/max");
    assert!(
        0.0 <= p50 && p50 <= p95 && p95 <= p99 && p99 <= max,
        "{report:#}"
    );
    assert!(seconds(&report, "/throughput_chunks_per_s") > 0.0);

    assert_worker_slots(&report, 2);
    let workers = report["workers"].as_array().unwrap();
    let chunks: u64 = workers.iter().map(|w| w["chunks"].as_u64().unwrap()).sum();
    assert_eq!(chunks, records.len() as u64, "{report:#}");
    // Every failed attempt was one retry or the final failure.
    let failed_attempts: u64 = workers
        .iter()
        .map(|w| w["failed_attempts"].as_u64().unwrap())
        .sum();
    assert_eq!(
        failed_attempts,
        count(&report, "/chunks/retried") + count(&report, "/chunks/failed"),
        "{report:#}"
    );
    let restarts: u64 = workers
        .iter()
        .map(|w| w["restarts"].as_u64().unwrap())
        .sum();
    assert!(restarts >= 1, "{report:#}");
    assert!(
        workers
            .iter()
            .any(|w| w["peak_rss_bytes"].as_u64().is_some_and(|b| b > 0)),
        "no worker's memory was measured: {report:#}"
    );

    // The summary on stderr tells the same numbers.
    assert!(
        finished
            .stderr
            .contains("faults: 9 of 10 chunks done, 1 failed, "),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("chunk time p50 "),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_drained_run_reports_drained_and_143_and_its_resume_reports_what_came_before() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "drain.toml",
        &squares_job(
            20_000,
            1000,
            &["--slow-ms", "200", "--stderr-lines", "1"],
            "",
        ),
    );
    let report_path = scenario.path("drain-report.json");
    let args = [
        "-w",
        "2",
        "--report",
        report_path.to_str().unwrap(),
        job.to_str().unwrap(),
    ];
    let mut run = scenario.start(&args);
    run.wait_for_line("a worker announcing a chunk", |line| {
        line.contains("]: chunk ")
    });
    run.signal(Signal::SIGTERM);
    let finished = run.finish();
    finished.expect_code(143);
    let report = read_report(&report_path);
    assert_eq!(report["outcome"], "drained", "{report:#}");
    assert_eq!(report["exit_code"], 143);
    assert_exit_code(&report, &finished);
    assert!(
        report["exit_reason"]
            .as_str()
            .is_some_and(|r| r.contains("SIGTERM")),
        "{report:#}"
    );
    let written = read_records(&scenario.path("drain.jsonl")).len() as u64;
    assert_eq!(count(&report, "/chunks/done"), written, "{report:#}");
    assert_worker_slots(&report, 2);
    scenario.assert_no_survivors();

    let rerun = scenario.run(&args);
    rerun.expect_code(0);
    let report = read_report(&report_path);
    assert_eq!(report["outcome"], "finished", "{report:#}");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(count(&report, "/chunks/done"), 20);
    assert_eq!(count(&report, "/chunks/done_before"), written);
    assert_eq!(count(&report, "/chunks/failed"), 0);
    assert_exactly_once(&read_records(&scenario.path("drain.jsonl")), 20);
    scenario.assert_no_survivors();
}

#[test]
fn an_aborted_run_reports_why_and_exit_3() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "abort.toml",
        &squares_job(
            6_000,
            1000,
            &["--exit-at-start"],
            "[supervisor]\nrestart = { max = 2, within = \"1m\" }",
        ),
    );
    let report_path = scenario.path("abort-report.json");
    let finished = scenario.run(&[
        "-w",
        "1",
        "--report",
        report_path.to_str().unwrap(),
        job.to_str().unwrap(),
    ]);
    finished.expect_code(3);
    let report = read_report(&report_path);
    assert_eq!(report["outcome"], "aborted", "{report:#}");
    assert_exit_code(&report, &finished);
    assert!(
        report["exit_reason"]
            .as_str()
            .is_some_and(|r| r.contains("could not start (exit status 1)")),
        "{report:#}"
    );
    assert_eq!(count(&report, "/chunks/done"), 0);
    // Nothing finished, so there is nothing to take percentiles of.
    assert!(report["latency_seconds"]["p50"].is_null(), "{report:#}");
    assert_worker_slots(&report, 1);
    // It died once and was not restarted: it could not start.
    assert_eq!(count(&report, "/workers/0/restarts"), 1, "{report:#}");
    assert_eq!(count(&report, "/workers/0/processes"), 1, "{report:#}");
    scenario.assert_no_survivors();
}
