//! Faults the proof found (RELIABILITY.md lists them), each shown by a test
//! that failed before its fix.

use crate::harness::Scenario;

#[test]
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

#[test]
fn with_a_json_log_a_bad_command_line_is_told_in_json() {
    let scenario = Scenario::new();
    for (args, named) in [
        (
            &["--log-format", "json", "--workers", "0", "job.toml"][..],
            "--workers",
        ),
        (
            &["--log-format=json", "--no-such-flag", "job.toml"],
            "--no-such-flag",
        ),
    ] {
        let finished = scenario.run(args);
        finished.expect_code(2);
        let lines: Vec<&str> = finished.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", finished.stderr);
        let event: serde_json::Value = serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", lines[0]));
        assert_eq!(event["level"], "ERROR", "{event}");
        let message = event["fields"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{message}");
    }
    // Without it, clap's own usage text as ever.
    let plain = scenario.run(&["--workers", "0", "job.toml"]);
    plain.expect_code(2);
    assert!(plain.stderr.starts_with("error: "), "{}", plain.stderr);
}

/// Starts a slow run and waits until its output holds a few records.
fn run_with_records_written(scenario: &Scenario, name: &str) -> crate::harness::Run {
    let job = scenario.job(
        &format!("{name}.toml"),
        &crate::harness::squares_job(400_000, 1000, &["--slow-ms", "10"], ""),
    );
    let run = scenario.start(&["-w", "2", job.to_str().unwrap()]);
    let output = scenario.path(&format!("{name}.jsonl"));
    let deadline = std::time::Instant::now() + crate::harness::PATIENCE;
    while std::fs::read_to_string(&output).map_or(0, |text| text.lines().count()) < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "no record was written"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    run
}

#[test]
fn an_output_emptied_during_the_run_is_not_reported_as_finished() {
    let scenario = Scenario::new();
    let run = run_with_records_written(&scenario, "emptied");
    std::fs::write(scenario.path("emptied.jsonl"), b"").unwrap();
    let finished = run.finish();
    let output = std::fs::read(scenario.path("emptied.jsonl")).unwrap();
    assert!(
        finished.code != Some(0) || !output.contains(&0),
        "exit 0, and the output holds {} NUL bytes",
        output.iter().filter(|&&b| b == 0).count()
    );
    finished.expect_code(3);
    assert!(
        finished.stderr.contains("emptied.jsonl"),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn an_output_replaced_during_the_run_is_not_reported_as_finished() {
    let scenario = Scenario::new();
    let run = run_with_records_written(&scenario, "replaced");
    let output = scenario.path("replaced.jsonl");
    std::fs::rename(&output, scenario.path("elsewhere.jsonl")).unwrap();
    std::fs::write(&output, b"{\"someone\":\"else\"}\n").unwrap();
    let finished = run.finish();
    finished.expect_code(3);
    assert!(
        finished.stderr.contains("replaced.jsonl"),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}
