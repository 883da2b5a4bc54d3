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

/// Starts the supervisor with its stderr a pipe nobody reads (the test keeps
/// the read end open and never reads it).
fn start_with_unread_stderr(
    scenario: &Scenario,
    args: &[&str],
) -> (std::process::Child, std::io::PipeReader) {
    let (reader, writer) = std::io::pipe().unwrap();
    let (mark, value) = scenario.mark_env();
    let child = std::process::Command::new(crate::harness::supervisor_bin())
        .args(args)
        .current_dir(scenario.dir())
        .env(mark, value)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(writer)
        .spawn()
        .unwrap();
    (child, reader)
}

/// Waits for `child` to exit, for at most the harness's patience.
fn exit_code(child: &mut std::process::Child) -> Option<i32> {
    let deadline = std::time::Instant::now() + crate::harness::PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the supervisor did not end: its log blocked it");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_stderr_nobody_reads_never_holds_the_run_up() {
    let scenario = Scenario::new();
    // Far more log than a pipe holds: 200 chunks of 200 lines each.
    let job = scenario.job(
        "chatty.toml",
        &squares_job(200_000, 1000, &["--stderr-lines", "200"], ""),
    );
    let report = scenario.path("report.json");
    let (mut child, _unread) = start_with_unread_stderr(
        &scenario,
        &[
            "-w",
            "2",
            "--report",
            report.to_str().unwrap(),
            job.to_str().unwrap(),
        ],
    );
    assert_eq!(exit_code(&mut child), Some(0));
    let report = read_json(&report);
    assert!(
        report["log_lines_dropped"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert_exactly_once(&read_records(&scenario.path("chatty.jsonl")), 200);
    scenario.assert_no_survivors();
}

#[test]
fn a_stderr_nobody_reads_does_not_stop_a_drain() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "chatty.toml",
        &squares_job(
            200_000,
            1000,
            &["--stderr-lines", "2000", "--slow-ms", "50"],
            "",
        ),
    );
    let (mut child, _unread) =
        start_with_unread_stderr(&scenario, &["-w", "2", job.to_str().unwrap()]);
    // Once chunks are being written, the log has long filled the pipe.
    let output = scenario.path("chatty.jsonl");
    let deadline = std::time::Instant::now() + crate::harness::PATIENCE;
    while read_records_if_any(&output) < 4 {
        assert!(std::time::Instant::now() < deadline, "no chunk was written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(exit_code(&mut child), Some(143));
    scenario.assert_no_survivors();
}

fn read_records_if_any(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

#[test]
fn with_a_json_log_every_line_is_json_even_what_workers_print_to_stdout() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "printing.toml",
        &squares_job(
            4000,
            1000,
            &["--stdout-lines", "2", "--stderr-lines", "1"],
            "",
        ),
    );
    let finished = scenario.run(&["-w", "2", "--log-format", "json", job.to_str().unwrap()]);
    finished.expect_code(0);
    let mut from_stdout = 0;
    for line in finished.stderr.lines() {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if event["fields"]["stream"] == "stdout" {
            from_stdout += 1;
            assert!(
                event["fields"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("stdout line"),
                "{event}"
            );
        }
    }
    assert_eq!(from_stdout, 8, "{}", finished.stderr);
    scenario.assert_no_survivors();
}

#[test]
fn an_output_edited_between_runs_is_not_resumed() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "edited.toml",
        &squares_job(
            20_000,
            1000,
            &["--slow-ms", "50", "--stderr-lines", "1"],
            "",
        ),
    );
    let job = job.to_str().unwrap();
    let mut first = scenario.start(&["-w", "2", job]);
    wait_for_busy_workers(&mut first, "squares-worker", 2);
    let output = scenario.path("edited.jsonl");
    let deadline = std::time::Instant::now() + crate::harness::PATIENCE;
    while read_records_if_any(&output) < 4 {
        assert!(std::time::Instant::now() < deadline, "no chunk was written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    first.signal(Signal::SIGTERM);
    first.finish().expect_code(143);
    // Someone adds a line at the top of the output.
    let before = std::fs::read(&output).unwrap();
    let edited = [b"{\"note\":\"checked by hand\"}\n".as_slice(), &before].concat();
    std::fs::write(&output, &edited).unwrap();

    let check = scenario.run(&["check", job]);
    check.expect_code(0);
    let plan = String::from_utf8_lossy(&check.stdout);
    assert!(
        plan.contains("resume: would refuse: the output is not what the journal recorded (chunk 0"),
        "{plan}"
    );
    let refused = scenario.run(&["-w", "2", job]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("is not what the journal recorded")
            && refused.stderr.contains("--fresh"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        std::fs::read(&output).unwrap(),
        edited,
        "the output was touched"
    );
    scenario.run(&["-w", "2", "--fresh", job]).expect_code(0);
    assert_exactly_once(&read_records(&output), 20);
    scenario.assert_no_survivors();
}

#[test]
fn two_jobs_writing_one_output_at_once_are_refused() {
    let scenario = Scenario::new();
    let slow = ["--slow-ms", "100", "--stderr-lines", "1"];
    let shared = "[output]\npath = \"shared.jsonl\"";
    let first_job = scenario.job("first.toml", &squares_job(20_000, 1000, &slow, shared));
    let second_job = scenario.job("second.toml", &squares_job(10_000, 1000, &[], shared));
    let mut first = scenario.start(&["-w", "2", first_job.to_str().unwrap()]);
    wait_for_busy_workers(&mut first, "squares-worker", 2);
    let second = scenario.run(&["-w", "2", second_job.to_str().unwrap()]);
    second.expect_code(2);
    assert!(
        second
            .stderr
            .contains("another supervisor is writing the output"),
        "{}",
        second.stderr
    );
    first.finish().expect_code(0);
    assert_exactly_once(&read_records(&scenario.path("shared.jsonl")), 20);
    scenario.assert_no_survivors();
}

#[test]
fn whatever_bytes_a_worker_returns_every_output_line_is_json() {
    let scenario = Scenario::new();
    // Pretty-printed JSON, a number beyond a double, invalid UTF-8 inside a
    // JSON string, and bytes that are no text at all.
    let script = r#"case $0 in
0) printf '{\n  "sum": 42,\n  "list": [1,\n 2]\n}\n' ;;
1) printf '1e400' ;;
2) printf '"\377"' ;;
*) printf '\000\001\377' ;;
esac"#;
    let job = scenario.job(
        "odd.toml",
        &format!(
            "[source]\nrange = {{ start = 0, end = 4 }}\nchunk = 1\n\n[worker]\nexec = [\"sh\", \"-c\", {}, \"{{index}}\"]\n",
            serde_json::to_string(script).unwrap()
        ),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    let text = std::fs::read_to_string(scenario.path("odd.jsonl")).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let by_index = |i: u64| records.iter().find(|r| r["index"] == i).unwrap();
    assert_eq!(
        by_index(0)["output"],
        serde_json::json!({"sum": 42, "list": [1, 2]})
    );
    assert_eq!(by_index(1)["output"], "1e400");
    assert_eq!(by_index(2)["output_base64"], "Iv8i");
    assert_eq!(by_index(3)["output_base64"], "AAH/");
    // And a run after it finds everything done, rather than failing to read
    // what it wrote.
    scenario
        .run(&["-w", "2", job.to_str().unwrap()])
        .expect_code(0);
    scenario.assert_no_survivors();
}

#[test]
fn large_answers_held_for_their_turn_stay_within_the_memory_budget() {
    let scenario = Scenario::new();
    // Chunk 0 is slow; the 39 after it answer 4 MiB each (156 MiB in all)
    // and must wait for it, in index order.
    let job = scenario.job(
        "large.toml",
        &squares_job(40, 1, &["--output-mb", "4", "--hold", "0:3000"], ""),
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
    let report = read_json(&report);
    let peak = report["supervisor_peak_rss_bytes"].as_u64().unwrap();
    // The reorder buffer's 64 MiB, the 16 MiB on their way from the
    // workers, and the rest of the supervisor: below the 156 MiB held.
    assert!(
        peak < 128 << 20,
        "the supervisor peaked at {} MiB",
        peak >> 20
    );
    let output = std::fs::read_to_string(scenario.path("large.jsonl")).unwrap();
    let indices: Vec<u64> = output
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["index"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(indices, (0..40).collect::<Vec<_>>());
    scenario.assert_no_survivors();
}

#[test]
fn an_input_rewritten_during_the_run_aborts_it() {
    let scenario = Scenario::new();
    std::fs::write(scenario.path("input.txt"), "one\ntwo\nthree\nfour\n").unwrap();
    // Chunk 0's command appends to the input, as someone might meanwhile.
    let job = scenario.job(
        "rewritten.toml",
        "[source]\nfile = { path = \"input.txt\" }\nchunk = 4\n\n\
         [worker]\nexec = [\"sh\", \"-c\", \"[ \\\"$0\\\" = 0 ] && echo five >> input.txt; cat\", \"{index}\"]\n\
         stdin = \"chunk\"\n\n[output]\nformat = \"raw\"\n",
    );
    let finished = scenario.run(&["-w", "1", job.to_str().unwrap()]);
    finished.expect_code(3);
    assert!(
        finished.stderr.contains("input.txt changed during the run"),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn retrying_a_run_with_no_failure_is_refused_and_earlier_failures_are_pointed_out() {
    let scenario = Scenario::new();
    let clean = scenario.job("clean.toml", &squares_job(4000, 1000, &[], ""));
    let clean = clean.to_str().unwrap();
    scenario.run(&["-w", "2", clean]).expect_code(0);
    let retry = scenario.run(&["-w", "2", "--retry-failed", clean]);
    retry.expect_code(2);
    assert!(
        retry.stderr.contains("no chunk failed for good"),
        "{}",
        retry.stderr
    );

    let failing = scenario.job(
        "failing.toml",
        &squares_job(4000, 1000, &["--fault", "fail:2"], "retries = 0"),
    );
    let failing = failing.to_str().unwrap();
    scenario.run(&["-w", "2", failing]).expect_code(1);
    let again = scenario.run(&["-w", "2", failing]);
    again.expect_code(1);
    assert!(
        again
            .stderr
            .contains("1 chunk failed for good in an earlier run; run with --retry-failed"),
        "{}",
        again.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_command_found_elsewhere_on_path_still_resumes() {
    let scenario = Scenario::new();
    let worker = crate::harness::supervisor_bin().with_file_name("squares-worker");
    // Two folders with the same worker under a name found only on PATH, as
    // a virtualenv's or a version manager's shims would be.
    for folder in ["venv-a", "venv-b"] {
        std::fs::create_dir(scenario.path(folder)).unwrap();
        std::os::unix::fs::symlink(&worker, scenario.path(folder).join("shimmed-worker")).unwrap();
    }
    let text = squares_job(
        20_000,
        1000,
        &["--slow-ms", "50", "--stderr-lines", "1"],
        "",
    )
    .replace("\"squares-worker\"", "\"shimmed-worker\"");
    let job = scenario.job("shimmed.toml", &text);
    let job = job.to_str().unwrap();
    let path = |folder: &str| {
        format!(
            "{}:{}",
            scenario.path(folder).display(),
            std::env::var("PATH").unwrap_or_default()
        )
    };
    let launch = crate::harness::Launch::default().env("PATH", &path("venv-a"));
    let mut first = scenario.start_with(&["-w", "2", job], launch);
    wait_for_busy_workers(&mut first, "squares-worker", 2);
    first.signal(Signal::SIGTERM);
    first.finish().expect_code(143);
    let done_before = read_records(&scenario.path("shimmed.jsonl")).len();
    assert!(done_before > 0);

    let launch = crate::harness::Launch::default().env("PATH", &path("venv-b"));
    let resumed = scenario.start_with(&["-w", "2", job], launch).finish();
    resumed.expect_code(0);
    assert!(
        resumed
            .stderr
            .contains("the worker command now resolves to")
            && resumed.stderr.contains("resuming"),
        "{}",
        resumed.stderr
    );
    assert!(
        resumed
            .stderr
            .contains(&format!("{done_before} of 20 chunks were finished"))
    );
    assert_exactly_once(&read_records(&scenario.path("shimmed.jsonl")), 20);
    scenario.assert_no_survivors();
}

#[test]
fn past_max_failed_the_run_drains_and_aborts_with_the_failed_file_complete() {
    let scenario = Scenario::new();
    let faults: Vec<String> = (1..40).step_by(2).map(|i| format!("fail:{i}")).collect();
    let mut args = vec!["--slow-ms", "20"];
    for fault in &faults {
        args.extend(["--fault", fault]);
    }
    let job = scenario.job(
        "breaker.toml",
        &squares_job(
            40_000,
            1000,
            &args,
            "retries = 0\n\n[supervisor]\nmax_failed = 2",
        ),
    );
    let report = scenario.path("report.json");
    let finished = scenario.run(&[
        "-w",
        "2",
        "--report",
        report.to_str().unwrap(),
        job.to_str().unwrap(),
    ]);
    finished.expect_code(3);
    assert!(
        finished.stderr.contains("max_failed"),
        "{}",
        finished.stderr
    );
    let report = read_json(&report);
    let failed = report["chunks"]["failed"].as_u64().unwrap();
    assert!(failed >= 3, "{report:#}");
    let listed = std::fs::read_to_string(scenario.path(".supervisor/breaker/failed.jsonl"))
        .unwrap()
        .lines()
        .count() as u64;
    assert_eq!(listed, failed, "the failed file lists every failure");
    let done = read_records(&scenario.path("breaker.jsonl")).len() as u64;
    assert!(
        done + failed < 40,
        "dispatch went on: {done} done, {failed} failed"
    );
    scenario.assert_no_survivors();
}

#[test]
fn records_on_stdout_arrive_as_chunks_finish_not_at_the_end() {
    use std::io::BufRead as _;
    let scenario = Scenario::new();
    let job = scenario.job(
        "piped.toml",
        &squares_job(
            20_000,
            1000,
            &["--slow-ms", "200"],
            "[output]\npath = \"-\"",
        ),
    );
    let (mark, value) = scenario.mark_env();
    let mut child = std::process::Command::new(crate::harness::supervisor_bin())
        .args(["-w", "2", job.to_str().unwrap()])
        .current_dir(scenario.dir())
        .env(mark, value)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("{\"index\":"), "{first}");
    // Twenty chunks of 200 ms on two workers take two seconds at least: a
    // record read while the supervisor still runs was not held to the end.
    assert_eq!(
        child.try_wait().unwrap(),
        None,
        "the first record came only at the end"
    );
    let rest: Vec<String> = stdout.lines().map(Result::unwrap).collect();
    assert_eq!(rest.len(), 19);
    assert!(child.wait().unwrap().success());
    scenario.assert_no_survivors();
}

#[test]
fn a_worker_that_cannot_start_ends_the_run_at_once_with_what_it_said() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "broken.toml",
        "[source]\nrange = { start = 0, end = 10 }\nchunk = 1\n\n\
         [worker]\ncommand = [\"python3\", \"-c\", \"import no_such_module_here\"]\n",
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(3);
    let stderr = &finished.stderr;
    assert!(
        stderr.contains("could not start (exit status 1)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ModuleNotFoundError: No module named 'no_such_module_here'"),
        "{stderr}"
    );
    assert!(!stderr.contains("workers crashed"), "{stderr}");
    scenario.assert_no_survivors();
}

#[test]
fn check_start_tries_one_worker_and_says_what_stopped_it() {
    let scenario = Scenario::new();
    let good = scenario.job("good.toml", &squares_job(10, 1, &[], ""));
    let checked = scenario.run(&["check", "--start", good.to_str().unwrap()]);
    checked.expect_code(0);
    let plan = String::from_utf8_lossy(&checked.stdout);
    assert!(plan.contains("start: a worker started (pid "), "{plan}");

    let bad = scenario.job(
        "bad.toml",
        "[source]\nrange = { start = 0, end = 10 }\n\n\
         [worker]\ncommand = [\"python3\", \"-c\", \"import no_such_module_here\"]\n",
    );
    let checked = scenario.run(&["check", "--start", bad.to_str().unwrap()]);
    checked.expect_code(2);
    let plan = String::from_utf8_lossy(&checked.stdout);
    assert!(
        plan.contains("start: the worker could not start (exit status 1)")
            && plan.contains("ModuleNotFoundError: No module named 'no_such_module_here'"),
        "{plan}"
    );
    assert!(!scenario.path(".supervisor").exists(), "check wrote state");
    scenario.assert_no_survivors();
}
