//! Faults the proof found (RELIABILITY.md lists them), each shown by a test
//! that fails until it is fixed; ignored until then, with the reason.

use crate::harness::Scenario;

#[test]
#[ignore = "fault: with --log-format json a refused job file is told in plain text"]
fn with_a_json_log_a_refused_job_file_is_told_in_json() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "odd.toml",
        "[source]\nrange = { start = 0, end = 10 }\n\n[worker]\ncommand = [\"no-such-program\"]\n",
    );
    let finished = scenario.run(&["--log-format", "json", job.to_str().unwrap()]);
    finished.expect_code(2);
    for line in finished.stderr.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nstderr:\n{}", finished.stderr));
        assert!(event["fields"]["message"].is_string(), "{event}");
    }
    assert!(
        finished.stderr.contains("worker.command"),
        "{}",
        finished.stderr
    );
}
