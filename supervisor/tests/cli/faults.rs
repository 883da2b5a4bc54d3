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

#[test]
fn a_worker_that_lies_about_its_chunks_costs_attempts_and_the_run_ends() {
    let scenario = Scenario::new();
    // Chunk 3's worker gives it up unasked on every attempt; chunk 5's
    // answers a chunk it never had, chunk 7's says hello again, each once.
    let job = scenario.job(
        "liar.toml",
        &squares_job(
            10_000,
            1000,
            &[
                "--fault",
                "cancel:3",
                "--fault",
                "stray:5:2",
                "--fault",
                "hello:7:2",
            ],
            "retries = 2",
        ),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(1);
    let records = read_records(&scenario.path("liar.jsonl"));
    let mut indices: Vec<u64> = records.iter().map(|r| r.index).collect();
    indices.sort_unstable();
    assert_eq!(indices, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
    let failed = std::fs::read_to_string(scenario.path(".supervisor/liar/failed.jsonl")).unwrap();
    let failed: Value = serde_json::from_str(failed.trim()).unwrap();
    assert_eq!(failed["index"], 3);
    let attempts = failed["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{failed:#}");
    for attempt in attempts {
        let error = attempt["error"].as_str().unwrap();
        assert!(error.contains("which was not cancelled"), "{error}");
    }
    for (chunk, lie) in [(5, "answered chunk 1000005"), (7, "said hello twice")] {
        let record = records.iter().find(|r| r.index == chunk).unwrap();
        assert_eq!(record.attempt, 2, "chunk {chunk}");
        assert!(finished.stderr.contains(lie), "{}", finished.stderr);
    }
    scenario.assert_no_survivors();
}
