//! The `stdin` source end to end: the supervisor's standard input cut into
//! blocks that travel to the workers, through `tr` byte for byte, gigabytes
//! of it in bounded memory, a worker crash, Ctrl-C, both SDKs, and the runs
//! a stream cannot have (shards, `--retry-failed`) refused.

use std::process::{Child, Command, Stdio};

use nix::sys::signal::Signal;
use serde_json::Value;

use super::failed_file;
use crate::harness::{Launch, Scenario, read_records};
use crate::sources::{serial, text_file};

/// A job reading stdin in chunks of `chunk` (a TOML value) through `exec`
/// with the chunk on the command's stdin.
fn stdin_job(chunk: &str, exec: &str, output: &str) -> String {
    format!(
        r#"
[source]
stdin = {{}}
chunk = {chunk}

[worker]
exec = {exec}
stdin = "chunk"

[output]
{output}
"#
    )
}

/// Runs `job` with `input` as its standard input, from a file.
fn run_on(
    scenario: &Scenario,
    job: &std::path::Path,
    input: &[u8],
    args: &[&str],
) -> crate::harness::Finished {
    let path = scenario.path("stdin.bin");
    std::fs::write(&path, input).unwrap();
    let mut all = vec!["--workers", "2"];
    all.extend_from_slice(args);
    all.push(job.to_str().unwrap());
    let launch = Launch::default().stdin(std::fs::File::open(&path).unwrap());
    scenario.start_with(&all, launch).finish()
}

#[test]
fn stdin_through_tr_equals_tr_alone_for_every_chunk_size() {
    let scenario = Scenario::new();
    // Lines of 150 000 bytes among short ones, and no final newline.
    let input = text_file(&scenario.path("input.txt"), 3000, false);
    let expected = serial("tr", &["a-z", "A-Z"], &input);
    for chunk in ["1", "1000", "\"64KiB\"", "\"1MiB\""] {
        let job = scenario.job(
            "upper.toml",
            &stdin_job(
                chunk,
                r#"["tr", "a-z", "A-Z"]"#,
                "path = \"-\"\nformat = \"raw\"",
            ),
        );
        let finished = run_on(&scenario, &job, &input, &[]);
        finished.expect_code(0);
        assert!(
            finished.stdout == expected,
            "chunk {chunk}: the output differs from `tr a-z A-Z` ({} bytes against {})",
            finished.stdout.len(),
            expected.len()
        );
        assert!(
            finished.stderr.contains("cannot be resumed"),
            "the start says there is no resume: {}",
            finished.stderr
        );
    }
    // To a file too, with an empty input making no chunk at all.
    let job = scenario.job(
        "to-file.toml",
        &stdin_job(
            "\"4KiB\"",
            r#"["tr", "a-z", "A-Z"]"#,
            "path = \"upper.txt\"\nformat = \"raw\"",
        ),
    );
    run_on(&scenario, &job, &input, &[]).expect_code(0);
    assert!(std::fs::read(scenario.path("upper.txt")).unwrap() == expected);
    run_on(&scenario, &job, b"", &[]).expect_code(0);
    assert!(
        std::fs::read(scenario.path("upper.txt"))
            .unwrap()
            .is_empty()
    );
    scenario.assert_no_survivors();
}

#[test]
fn exec_gets_the_stream_offsets_and_index_of_each_block() {
    let scenario = Scenario::new();
    let input: Vec<u8> = (0..500)
        .flat_map(|i| format!("record {i}\n").into_bytes())
        .collect();
    let job = scenario.job(
        "offsets.toml",
        &stdin_job(
            "200",
            r#"["sh", "-c", "printf '%s %s %s ' \"$0\" \"$1\" \"$2\"; wc -c", "{index}", "{start}", "{end}"]"#,
            "path = \"offsets.jsonl\"",
        ),
    );
    run_on(&scenario, &job, &input, &[]).expect_code(0);
    let records = read_records(&scenario.path("offsets.jsonl"));
    let mut at = 0;
    for (n, record) in records.iter().enumerate() {
        let text = record
            .output
            .as_str()
            .unwrap_or_else(|| panic!("{record:?}"));
        let words: Vec<u64> = text
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        assert_eq!(
            words[..3],
            [n as u64, record.start, record.end],
            "{record:?}"
        );
        assert_eq!(words[3], record.end - record.start, "wc -c of the block");
        assert_eq!(record.start, at);
        assert_eq!(input[record.end as usize - 1], b'\n');
        at = record.end;
    }
    assert_eq!(at, input.len() as u64);
}

/// `sh -c SCRIPT` writing into a pipe whose other end is returned.
fn generator(script: &str) -> (Child, std::process::ChildStdout) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    (child, stdout)
}

#[test]
fn gigabytes_of_stdin_go_through_in_bounded_memory_and_every_byte_is_counted() {
    const MIB: u64 = 1 << 20;
    // 512 MiB keeps the suite's time down on a debug build; set
    // STDIN_TEST_MIB=4096 for the full-size run (README gives its figures).
    let input_mib: u64 = std::env::var("STDIN_TEST_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let input = input_mib * MIB;
    let scenario = Scenario::new();
    let job = scenario.job(
        "count.toml",
        r#"
[source]
stdin = {}

[worker]
command = ["count-worker"]

[output]
path = "counts.jsonl"
"#,
    );
    // Lines of 1 KiB, generated as the supervisor reads them.
    let (mut generator, stdout) =
        generator(&format!("yes \"$(printf %01023d 0)\" | head -c {input}"));
    let report = scenario.path("report.json");
    let run = scenario.start_with(
        &[
            "--workers",
            "2",
            "--report",
            report.to_str().unwrap(),
            job.to_str().unwrap(),
        ],
        Launch::default().stdin(stdout),
    );
    // VmHWM, the peak of this process image alone (getrusage's maximum
    // would count what the test process held when it forked the
    // supervisor), read until the process is gone; it only grows.
    let status = format!("/proc/{}/status", run.pid());
    let watcher = std::thread::spawn(move || {
        let mut peak_kib = 0;
        while let Ok(text) = std::fs::read_to_string(&status) {
            let Some(kib) = text
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
            else {
                break;
            };
            peak_kib = kib;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        peak_kib
    });
    let finished = run.finish();
    let peak = watcher.join().unwrap() * 1024;
    assert!(generator.wait().unwrap().success());
    finished.expect_code(0);
    let records = read_records(&scenario.path("counts.jsonl"));
    let mut at = 0;
    let mut lines = 0;
    for (n, record) in records.iter().enumerate() {
        assert_eq!((record.index, record.start), (n as u64, at), "{record:?}");
        at = record.end;
        lines += record.output.as_u64().unwrap();
    }
    assert_eq!(at, input, "every byte in some chunk");
    assert_eq!(lines, input / 1024, "every line counted once");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        report["chunks"]["total"],
        records.len() as u64,
        "{report:#}"
    );
    // The bound does not grow with the input: blocks read ahead and in
    // flight, a few MiB each, and the process's own.
    assert!(peak > 0, "no VmHWM read");
    assert!(
        peak < 128 * MIB,
        "the supervisor peaked at {} MiB for {input_mib} MiB of input",
        peak / MIB
    );
    scenario.assert_no_survivors();
}

/// A numbered line per number from 1, for ever (until its reader goes).
const ENDLESS: &str = "i=0; while :; do i=$((i+1)); echo \"line $i\"; done";

/// What `tr 0-9 a-j` makes of the first lines of [`ENDLESS`]: enough for
/// any prefix a test sees.
fn endless_translated(bytes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0u64;
    while out.len() < bytes {
        i += 1;
        out.extend(format!("line {i}\n").bytes().map(|b| match b {
            b'0'..=b'9' => b - b'0' + b'a',
            other => other,
        }));
    }
    out
}

fn ctrl_c(to_group: bool) {
    let scenario = Scenario::new();
    let job = scenario.job(
        "endless.toml",
        &stdin_job(
            "\"4KiB\"",
            r#"["sh", "-c", "echo \"stdin-test: chunk $0\" >&2; sleep 0.2; tr 0-9 a-j", "{index}"]"#,
            "path = \"-\"\nformat = \"raw\"",
        ),
    );
    let (reader, writer) = std::io::pipe().unwrap();
    let launch = Launch::default().stdin(reader);
    let launch = if to_group {
        launch.own_process_group()
    } else {
        launch
    };
    let mut run = scenario.start_with(&["--workers", "2", job.to_str().unwrap()], launch);
    // The generator feeds the supervisor; in the group test it is in the
    // supervisor's process group, as a shell's pipeline would be.
    let mut command = Command::new("sh");
    command.arg("-c").arg(ENDLESS).stdout(writer);
    if to_group {
        use std::os::unix::process::CommandExt as _;
        command.process_group(run.pid() as i32);
    }
    let mut generator = command.spawn().unwrap();
    drop(command);
    run.wait_for_line("for chunk 5", |line| line.contains("stdin-test: chunk 5"));
    if to_group {
        run.signal_group(Signal::SIGINT);
    } else {
        run.signal(Signal::SIGINT);
    }
    let finished = run.finish();
    finished.expect_code(130);
    // The supervisor is gone and the pipe with it: the generator ends.
    let _ = generator.kill();
    generator.wait().unwrap();
    let out = &finished.stdout;
    assert!(
        !out.is_empty(),
        "chunks in flight were finished and written"
    );
    assert!(out.ends_with(b"\n"), "whole chunks only");
    assert!(
        *out == endless_translated(out.len())[..out.len()],
        "the output is not a prefix of the whole in index order"
    );
    scenario.assert_no_survivors();
}

#[test]
fn ctrl_c_stops_reading_finishes_what_is_in_flight_and_writes_a_prefix() {
    ctrl_c(false);
}

#[test]
fn ctrl_c_to_the_process_group_drains_the_same_way() {
    ctrl_c(true);
}

#[test]
fn a_chunk_that_fails_goes_to_the_failed_file_with_its_offsets() {
    let scenario = Scenario::new();
    let input: Vec<u8> = (0..100)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let job = scenario.job(
        "fail.toml",
        &stdin_job(
            "50",
            r#"["sh", "-c", "if [ \"$0\" = 2 ]; then echo no >&2; exit 3; fi; cat", "{index}"]"#,
            "path = \"-\"\nformat = \"raw\"",
        )
        .replace("[output]", "retries = 1\n\n[output]"),
    );
    let finished = run_on(&scenario, &job, &input, &[]);
    finished.expect_code(1);
    let failed = failed_file(&scenario, "fail");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["index"], 2);
    let (start, end) = (
        failed[0]["start"].as_u64().unwrap() as usize,
        failed[0]["end"].as_u64().unwrap() as usize,
    );
    let mut expected = input[..start].to_vec();
    expected.extend_from_slice(&input[end..]);
    assert!(finished.stdout == expected, "every other chunk, in order");
}

#[test]
fn shards_and_retry_failed_are_refused_for_a_stream() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "stream.toml",
        &stdin_job(
            "\"4KiB\"",
            r#"["cat"]"#,
            "path = \"out.txt\"\nformat = \"raw\"",
        ),
    );
    let refused = run_on(&scenario, &job, b"a\n", &["--shard", "0/2"]);
    refused.expect_code(2);
    assert!(
        refused
            .stderr
            .contains("a `stdin` source cannot run as shards"),
        "{}",
        refused.stderr
    );
    let launch = Launch::default()
        .stdin(Stdio::null())
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "2")
        .env("SLURM_ARRAY_TASK_MIN", "0");
    let detected = scenario
        .start_with(&["--workers", "1", job.to_str().unwrap()], launch)
        .finish();
    detected.expect_code(2);
    assert!(
        detected.stderr.contains("from a Slurm array task"),
        "{}",
        detected.stderr
    );
    assert!(
        detected.stderr.contains("cannot run as shards"),
        "{}",
        detected.stderr
    );
    let retry = run_on(&scenario, &job, b"a\n", &["--retry-failed"]);
    retry.expect_code(2);
    assert!(
        retry
            .stderr
            .contains("--retry-failed cannot run chunks of a `stdin` source"),
        "{}",
        retry.stderr
    );
    assert!(!scenario.path("out.txt").exists(), "no run started");
    // `--fresh` changes nothing: there is never a journal to start over from.
    run_on(&scenario, &job, b"a\nb\n", &["--fresh"]).expect_code(0);
    assert_eq!(std::fs::read(scenario.path("out.txt")).unwrap(), b"a\nb\n");
    let check = Command::new(crate::harness::supervisor_bin())
        .args(["check", job.to_str().unwrap()])
        .current_dir(scenario.dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{plan}");
    assert!(plan.contains("standard input"), "{plan}");
    assert!(plan.contains("cannot resume"), "{plan}");
}

#[test]
fn a_record_larger_than_a_frame_fails_alone_without_a_worker() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "huge.toml",
        &stdin_job("1", r#"["wc", "-c"]"#, "path = \"sizes.jsonl\""),
    );
    // 65 MiB with no newline in it, between two short records.
    let (mut generator, stdout) =
        generator("echo first; head -c 68157440 /dev/zero | tr '\\0' x; echo; echo last");
    let finished = scenario
        .start_with(
            &["--workers", "1", job.to_str().unwrap()],
            Launch::default().stdin(stdout),
        )
        .finish();
    assert!(generator.wait().unwrap().success());
    finished.expect_code(1);
    let failed = failed_file(&scenario, "huge");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].to_string().contains("more than"), "{failed:?}");
    let records = read_records(&scenario.path("sizes.jsonl"));
    assert_eq!(records.len(), 2, "{records:?}");
    let sizes: Vec<Option<u64>> = records.iter().map(|r| r.output.as_u64()).collect();
    assert_eq!(sizes, [Some(6), Some(5)], "`wc -c` of `first` and `last`");
    scenario.assert_no_survivors();
}

#[test]
fn a_crashed_worker_s_chunk_is_retried_with_the_same_bytes() {
    let scenario = Scenario::new();
    let input = text_file(&scenario.path("input.txt"), 2000, true);
    // The host of chunk 3's first command is killed: a worker crash.
    let job = scenario.job(
        "crash.toml",
        &stdin_job(
            "\"8KiB\"",
            r#"["sh", "-c", "if [ \"$0\" = 3 ] && [ \"$1\" = 1 ]; then kill -9 $PPID; sleep 5; fi; tr a-z A-Z", "{index}", "{attempt}"]"#,
            "path = \"-\"\nformat = \"raw\"",
        ),
    );
    let finished = run_on(&scenario, &job, &input, &[]);
    finished.expect_code(0);
    assert!(finished.stderr.contains("worker"), "{}", finished.stderr);
    assert!(finished.stdout == serial("tr", &["a-z", "A-Z"], &input));
    scenario.assert_no_survivors();
}

#[test]
fn stdin_to_stdout_is_a_pipeline_stage() {
    // producer | supervisor job.toml | consumer, all real processes.
    let scenario = Scenario::new();
    let job = scenario.job(
        "stage.toml",
        &stdin_job(
            "\"16KiB\"",
            r#"["tr", "a-z", "A-Z"]"#,
            "path = \"-\"\nformat = \"raw\"",
        ),
    );
    let script = format!(
        "seq 1 200000 | sed 's/$/ abc/' | {} --workers 2 {} | sha256sum",
        crate::harness::supervisor_bin().display(),
        job.display()
    );
    let piped = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(scenario.dir())
        .output()
        .unwrap();
    let serial = Command::new("sh")
        .arg("-c")
        .arg("seq 1 200000 | sed 's/$/ abc/' | tr a-z A-Z | sha256sum")
        .output()
        .unwrap();
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert_eq!(piped.stdout, serial.stdout);
}

/// `sh -c SCRIPT` in the scenario's folder: its stdout, after it succeeded.
fn shell(scenario: &Scenario, script: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(scenario.dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn a_pipe_one_liner_equals_tr_alone_and_its_printed_job_file() {
    let scenario = Scenario::new();
    let supervisor = crate::harness::supervisor_bin();
    let supervisor = supervisor.display();
    // Records longer than a chunk, and no final newline.
    let producer = "seq 1 60000 | sed 's/$/ abc/'; head -c 20000 /dev/zero | tr '\\0' q; \
                    echo; printf 'the end'";
    let alone = shell(&scenario, &format!("{{ {producer}; }} | tr a-z A-Z"));
    let one_liner = shell(
        &scenario,
        &format!("{{ {producer}; }} | {supervisor} --workers 2 --pipe --chunk 4KiB -- tr a-z A-Z"),
    );
    assert!(one_liner == alone, "--pipe differs from tr alone");
    let job = shell(
        &scenario,
        &format!("{supervisor} --pipe --chunk 4KiB --print-job -- tr a-z A-Z"),
    );
    std::fs::write(scenario.path("pipe.toml"), &job).unwrap();
    let from_job = shell(
        &scenario,
        &format!("{{ {producer}; }} | {supervisor} --workers 2 pipe.toml"),
    );
    assert!(
        from_job == alone,
        "the printed job file differs from tr alone"
    );
    // A stream cannot be sharded, from a one-liner either.
    let sharded = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo a | {supervisor} --shard 0/2 --name up --output up.txt --pipe -- cat"
        ))
        .current_dir(scenario.dir())
        .output()
        .unwrap();
    assert_eq!(sharded.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&sharded.stderr);
    assert!(stderr.contains("cannot run as shards"), "{stderr}");
    // Nor tuned: tune reads its input again and again.
    let tune = Command::new(crate::harness::supervisor_bin())
        .args(["tune", "pipe.toml"])
        .current_dir(scenario.dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(tune.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&tune.stderr);
    assert!(stderr.contains("can be read only once"), "{stderr}");
    scenario.assert_no_survivors();
}
