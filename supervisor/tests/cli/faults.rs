//! Faults found by attacking the supervisor, each as it was found: a worker
//! that lies, a supervisor stopped mid-run, a stderr nobody reads, an output
//! edited between runs, and the rest of RELIABILITY.md's list.

use nix::sys::signal::Signal;
use serde_json::Value;

use super::assert_exactly_once;
use crate::harness::{Scenario, read_records, squares_job, wait_for_busy_workers};

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_supervisor_stopped_for_longer_than_the_timeout_blames_no_worker() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "paused.toml",
        &squares_job(
            40_000,
            1000,
            &["--slow-ms", "100", "--stderr-lines", "1"],
            "timeout = \"1s\"\nretries = 0",
        ),
    );
    let report = scenario.path("report.json");
    let mut run = scenario.start(&[
        "-w",
        "2",
        "--report",
        report.to_str().unwrap(),
        job.to_str().unwrap(),
    ]);
    wait_for_busy_workers(&mut run, "squares-worker", 2);
    // The fault itself: the supervisor does not run for three timeouts'
    // worth while its workers finish their chunks and wait.
    run.signal(Signal::SIGSTOP);
    std::thread::sleep(std::time::Duration::from_secs(3));
    run.signal(Signal::SIGCONT);
    let finished = run.finish();
    finished.expect_code(0);
    assert!(
        finished.stderr.contains("the supervisor did not run for"),
        "{}",
        finished.stderr
    );
    let report = read_json(&report);
    assert_eq!(report["chunks"]["retried"], 0, "{report:#}");
    assert_eq!(report["worker_crashes"], 0, "{report:#}");
    assert_exactly_once(&read_records(&scenario.path("paused.jsonl")), 40);
    scenario.assert_no_survivors();
}
