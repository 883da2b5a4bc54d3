//! A job run as N shards and merged, end to end: the merged output equals
//! one run of the whole job (jsonl records in index order, raw bytes
//! identical), whatever the shards went through; merge refuses shards that
//! do not add up to the job and writes nothing then; the shard comes from
//! the command line or a scheduler's variables.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::sources::text_file;
use crate::harness::{Finished, Launch, Record, Scenario, read_records, squares_job};

/// What a run decides about each chunk, in output order: not the worker,
/// the attempt or the time, which differ between any two runs.
fn essence(records: &[Record]) -> Vec<(u64, u64, u64, Value)> {
    records
        .iter()
        .map(|r| (r.index, r.start, r.end, r.output.clone()))
        .collect()
}

/// A job file in a scenario, run whole and as shards.
struct Job<'a> {
    scenario: &'a Scenario,
    path: PathBuf,
    name: &'static str,
    output: &'static str,
}

impl<'a> Job<'a> {
    fn new(scenario: &'a Scenario, name: &'static str, output: &'static str, text: &str) -> Self {
        Self {
            scenario,
            path: scenario.job(&format!("{name}.toml"), text),
            name,
            output,
        }
    }

    fn file(&self) -> &str {
        self.path.to_str().unwrap()
    }

    fn output(&self) -> PathBuf {
        self.scenario.path(self.output)
    }

    fn state(&self) -> PathBuf {
        self.scenario.path(".supervisor").join(self.name)
    }

    fn shard_output(&self, index: u64, count: u64) -> PathBuf {
        let output = Path::new(self.output);
        let stem = output.file_stem().unwrap().to_str().unwrap();
        let name = match output.extension() {
            Some(extension) => format!(
                "{stem}.shard-{index}-of-{count}.{}",
                extension.to_str().unwrap()
            ),
            None => format!("{stem}.shard-{index}-of-{count}"),
        };
        self.scenario.path(&name)
    }

    fn shard_state(&self, index: u64, count: u64) -> PathBuf {
        self.scenario
            .path(".supervisor")
            .join(format!("{}.shard-{index}-of-{count}", self.name))
    }

    /// Runs the whole job, and moves what it wrote out of the way: the
    /// output to `reference`, for comparing with a merge.
    fn run_whole_as_reference(&self, reference: &str) -> PathBuf {
        self.scenario.run(&["-w", "2", self.file()]).expect_code(0);
        let kept = self.scenario.path(reference);
        std::fs::rename(self.output(), &kept).unwrap();
        std::fs::remove_dir_all(self.state()).unwrap();
        kept
    }

    fn run_shard(&self, index: u64, count: u64, env: &[(&str, &str)]) -> Finished {
        let shard = format!("{index}/{count}");
        let launch = env
            .iter()
            .fold(Launch::default(), |launch, (k, v)| launch.env(k, v));
        self.scenario
            .start_with(&["-w", "2", "--shard", &shard, self.file()], launch)
            .finish()
    }

    fn run_shards(&self, count: u64) {
        for index in 0..count {
            self.run_shard(index, count, &[]).expect_code(0);
        }
    }

    fn merge(&self, extra: &[&str]) -> Finished {
        let mut args = vec!["merge"];
        args.extend_from_slice(extra);
        args.push(self.file());
        self.scenario.run(&args)
    }
}

fn assert_same_records(merged: &Path, reference: &Path) {
    let merged = read_records(merged);
    let reference = read_records(reference);
    assert_eq!(essence(&merged), essence(&reference));
    let indices: Vec<u64> = merged.iter().map(|r| r.index).collect();
    assert_eq!(indices, (0..merged.len() as u64).collect::<Vec<_>>());
}

fn assert_stderr_has(finished: &Finished, needle: &str) {
    assert!(
        finished.stderr.contains(needle),
        "{}: no {needle:?} in stderr:\n{}",
        finished.description,
        finished.stderr
    );
}

#[test]
fn n_shards_merged_equal_one_run_of_the_whole_job() {
    // 100 chunks, and 23: not divisible by 2, 3 or 7.
    for (end, chunk) in [(10_000, 100), (2_250, 100)] {
        for count in [1, 2, 3, 7] {
            let scenario = Scenario::new();
            let job = Job::new(
                &scenario,
                "squares",
                "squares.jsonl",
                &squares_job(end, chunk, &[], ""),
            );
            let reference = job.run_whole_as_reference("reference.jsonl");
            job.run_shards(count);
            let merged = job.merge(&[]);
            merged.expect_code(0);
            assert_same_records(&job.output(), &reference);
            if count > 1 {
                assert_stderr_has(&merged, &format!("merged {count} shards"));
            }
            // The merge left the job's journal: a run now has nothing to do,
            // and a second merge writes the same output again.
            let after = scenario.run(&["-w", "2", job.file()]);
            after.expect_code(0);
            assert_stderr_has(&after, "by an earlier run");
            let before = std::fs::read(job.output()).unwrap();
            job.merge(&[]).expect_code(0);
            assert_eq!(std::fs::read(job.output()).unwrap(), before);
            scenario.assert_no_survivors();
        }
    }
}

#[test]
fn raw_shards_of_a_file_and_of_lines_merge_byte_identical() {
    for source in [
        "file = { path = \"input.txt\" }\nchunk = \"16KiB\"",
        "lines = { path = \"input.txt\" }\nchunk = 700",
    ] {
        let scenario = Scenario::new();
        let input = text_file(&scenario.path("input.txt"), 6_000, false);
        let job = Job::new(
            &scenario,
            "copy",
            "copy.txt",
            &format!(
                "[source]\n{source}\n\n[worker]\nexec = [\"cat\"]\nstdin = \"chunk\"\n\n\
                 [output]\npath = \"copy.txt\"\nformat = \"raw\"\n"
            ),
        );
        let reference = job.run_whole_as_reference("reference.txt");
        assert_eq!(std::fs::read(&reference).unwrap(), input);
        for count in [1, 2, 3, 7] {
            job.run_shards(count);
            job.merge(&["--shards", &count.to_string()]).expect_code(0);
            assert!(
                std::fs::read(job.output()).unwrap() == input,
                "{source}: {count} shards merged differ from the input"
            );
        }
        scenario.assert_no_survivors();
    }
}

#[test]
fn records_a_shard_wrote_out_of_order_are_merged_in_index_order() {
    let scenario = Scenario::new();
    let job = Job::new(
        &scenario,
        "squares",
        "squares.jsonl",
        &squares_job(
            3_000,
            100,
            &[],
            "retries = 0\n[output]\norder = \"completion\"",
        ),
    );
    let reference = job.run_whole_as_reference("reference.jsonl");
    // Shard 1 of 2 (chunks 15 to 29) loses chunk 17 for good, then a retry
    // appends it after every other chunk; completion order shuffles the rest.
    let faults = [("SQUARES_WORKER_FAULTS", "fail:17")];
    job.run_shard(0, 2, &[]).expect_code(0);
    job.run_shard(1, 2, &faults).expect_code(1);
    scenario
        .run(&["-w", "2", "--shard", "1/2", "--retry-failed", job.file()])
        .expect_code(0);
    let shard_records = read_records(&job.shard_output(1, 2));
    assert_eq!(shard_records.last().unwrap().index, 17);
    job.merge(&[]).expect_code(0);
    let mut reference_records = read_records(&reference);
    reference_records.sort_by_key(|r| r.index);
    assert_eq!(
        essence(&read_records(&job.output())),
        essence(&reference_records)
    );
    assert!(!job.state().join("failed.jsonl").exists());
}

#[test]
fn chunks_that_failed_in_shards_are_merged_into_the_failed_file_and_exit_1() {
    let scenario = Scenario::new();
    let job = Job::new(
        &scenario,
        "squares",
        "squares.jsonl",
        &squares_job(2_000, 100, &[], "retries = 1"),
    );
    // Chunks 3 and 4 are shard 0's, 13 is shard 2's.
    let faults = [("SQUARES_WORKER_FAULTS", "fail:3,fail:4,fail:13")];
    for index in 0..3 {
        job.run_shard(index, 3, &faults)
            .expect_code(if index == 1 { 0 } else { 1 });
    }
    let merged = job.merge(&[]);
    merged.expect_code(1);
    assert_stderr_has(&merged, "3 failed");
    let records = read_records(&job.output());
    let indices: Vec<u64> = records.iter().map(|r| r.index).collect();
    let expected: Vec<u64> = (0..20).filter(|i| ![3, 4, 13].contains(i)).collect();
    assert_eq!(indices, expected);
    let failed: Vec<Value> = std::fs::read_to_string(job.state().join("failed.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let failed_indices: Vec<u64> = failed
        .iter()
        .map(|f| f["index"].as_u64().unwrap())
        .collect();
    assert_eq!(failed_indices, [3, 4, 13]);
    assert_eq!(failed[0]["attempts"].as_array().unwrap().len(), 2);
    // The job knows what failed: a run now does nothing and says so (1), and
    // --retry-failed runs just those chunks, on one machine.
    scenario.run(&["-w", "2", job.file()]).expect_code(1);
    scenario
        .run(&["-w", "2", "--retry-failed", job.file()])
        .expect_code(0);
    let mut all: Vec<u64> = read_records(&job.output())
        .iter()
        .map(|r| r.index)
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
    scenario.assert_no_survivors();
}

#[test]
fn a_shard_with_no_chunks_is_complete_and_merges() {
    let scenario = Scenario::new();
    let job = Job::new(
        &scenario,
        "squares",
        "squares.jsonl",
        &squares_job(300, 100, &[], ""),
    );
    let reference = job.run_whole_as_reference("reference.jsonl");
    // Three chunks in five shards: shards 0 and 2 have none.
    let empty = job.run_shard(0, 5, &[]);
    empty.expect_code(0);
    assert_stderr_has(&empty, "no chunks (the job has 3, fewer than its shards)");
    assert_eq!(std::fs::read(job.shard_output(0, 5)).unwrap(), b"");
    for index in 1..5 {
        job.run_shard(index, 5, &[]).expect_code(0);
    }
    job.merge(&[]).expect_code(0);
    assert_same_records(&job.output(), &reference);
    scenario.assert_no_survivors();
}

/// What a refused merge must leave: no output, no journal, no temporary file.
fn assert_nothing_written(job: &Job<'_>, finished: &Finished) {
    finished.expect_code(2);
    assert_stderr_has(finished, "nothing was written");
    assert!(!job.output().exists(), "{}", job.output().display());
    assert!(!job.state().join("journal").exists());
    let leftovers: Vec<String> = std::fs::read_dir(job.scenario.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn merge_refuses_a_missing_shard_naming_it() {
    let scenario = Scenario::new();
    let job = Job::new(
        &scenario,
        "squares",
        "squares.jsonl",
        &squares_job(1_000, 100, &[], ""),
    );
    job.run_shard(0, 3, &[]).expect_code(0);
    job.run_shard(2, 3, &[]).expect_code(0);
    let merged = job.merge(&[]);
    assert_nothing_written(&job, &merged);
    assert_stderr_has(&merged, "shard 1 of 3 is missing");
    assert_stderr_has(&merged, "--shard 1/3");
    // Nothing at all ran: said so.
    let scenario = Scenario::new();
    let job = Job::new(
        &scenario,
        "squares",
        "squares.jsonl",
        &squares_job(1_000, 100, &[], ""),
    );
    let merged = job.merge(&[]);
    assert_nothing_written(&job, &merged);
    assert_stderr_has(&merged, "no shards of the job squares were found");
}

#[test]
fn merge_refuses_shards_of_another_job_naming_what_differs() {
    let scenario = Scenario::new();
    let text = squares_job(1_000, 100, &[], "params = { modulus = 10007 }");
    let job = Job::new(&scenario, "squares", "squares.jsonl", &text);
    job.run_shards(2);
    // The job file changed after the shards ran.
    std::fs::write(&job.path, text.replace("10007", "7")).unwrap();
    let merged = job.merge(&[]);
    assert_nothing_written(&job, &merged);
    assert_stderr_has(&merged, "shard 0 of 2");
    assert_stderr_has(&merged, "shard 1 of 2");
    assert_stderr_has(
        &merged,
        r#"did not run this job: worker.params {"modulus":10007} → {"modulus":7}"#,
    );

    // A shard's files taken from a split of another size and renamed.
    std::fs::write(&job.path, &text).unwrap();
    job.run_shard(1, 3, &[]).expect_code(0);
    std::fs::remove_dir_all(job.shard_state(1, 2)).unwrap();
    std::fs::rename(job.shard_state(1, 3), job.shard_state(1, 2)).unwrap();
    std::fs::rename(job.shard_output(1, 3), job.shard_output(1, 2)).unwrap();
    let merged = job.merge(&[]);
    assert_nothing_written(&job, &merged);
    assert_stderr_has(&merged, "shard 1 of 2");
    assert_stderr_has(&merged, "shard 1/3 → 1/2");
}

#[test]
fn merge_refuses_an_incomplete_shard() {
    let scenario = Scenario::new();
    let job = Job::new(
        &scenario,
        "squares",
        "squares.jsonl",
        &squares_job(
            1_000,
            100,
            &[],
            "[supervisor]\nrestart = { max = 0, within = \"1m\" }",
        ),
    );
    job.run_shard(0, 2, &[]).expect_code(0);
    // Shard 1 aborts when its worker crashes past the restart limit.
    job.run_shard(1, 2, &[("SQUARES_WORKER_FAULTS", "crash:7")])
        .expect_code(3);
    let merged = job.merge(&[]);
    assert_nothing_written(&job, &merged);
    assert_stderr_has(&merged, "shard 1 of 2 is incomplete");
    assert_stderr_has(&merged, "of its 5 chunks [5, 10) are settled");
    // Run again, it finishes, and the merge goes through.
    job.run_shard(1, 2, &[]).expect_code(0);
    job.merge(&[]).expect_code(0);
    assert_eq!(read_records(&job.output()).len(), 10);
    scenario.assert_no_survivors();
}

#[test]
fn merge_refuses_mixed_shard_counts_unless_told_which() {
    let scenario = Scenario::new();
    let job = Job::new(
        &scenario,
        "squares",
        "squares.jsonl",
        &squares_job(1_000, 100, &[], ""),
    );
    job.run_shards(2);
    job.run_shard(0, 3, &[]).expect_code(0);
    let merged = job.merge(&[]);
    assert_nothing_written(&job, &merged);
    assert_stderr_has(&merged, "shards of different counts");
    assert_stderr_has(&merged, "of 2 (shards 0, 1) and of 3 (shard 0)");
    let merged = job.merge(&["--shards", "3"]);
    assert_nothing_written(&job, &merged);
    assert_stderr_has(&merged, "shard 1 of 3 is missing");
    job.merge(&["--shards", "2"]).expect_code(0);
    assert_eq!(read_records(&job.output()).len(), 10);
}

#[test]
fn merge_refuses_a_shard_that_is_still_running() {
    let scenario = Scenario::new();
    let job = Job::new(
        &scenario,
        "squares",
        "squares.jsonl",
        &squares_job(1_000, 100, &[], ""),
    );
    job.run_shard(0, 2, &[]).expect_code(0);
    let mut running = scenario.start_with(
        &["-w", "1", "--shard", "1/2", job.file()],
        Launch::default().env("SQUARES_WORKER_FAULTS", "hang:6"),
    );
    running.wait_for_line("the shard starting", |line| {
        line.contains("running as shard 1 of 2")
    });
    let merged = job.merge(&[]);
    assert_nothing_written(&job, &merged);
    assert_stderr_has(&merged, "shard 1 of 2 is still running: a supervisor (pid");
    drop(running);
    scenario.assert_no_survivors();
}

#[test]
fn bad_shard_values_exit_2_before_anything_runs() {
    let scenario = Scenario::new();
    let job = Job::new(
        &scenario,
        "squares",
        "squares.jsonl",
        &squares_job(1_000, 100, &[], ""),
    );
    for bad in ["3/2", "0/0", "half", "-1/2", "1/2/3"] {
        let finished = scenario.run(&["--shard", bad, job.file()]);
        finished.expect_code(2);
        assert_stderr_has(&finished, "--shard");
    }
    // A scheduler's variables that make no sense are refused too.
    let finished = scenario
        .start_with(
            &[job.file()],
            Launch::default()
                .env("SLURM_ARRAY_TASK_ID", "4")
                .env("SLURM_ARRAY_TASK_COUNT", "4")
                .env("SLURM_ARRAY_TASK_MIN", "0"),
        )
        .finish();
    finished.expect_code(2);
    assert_stderr_has(
        &finished,
        "cannot tell which shard this Slurm array task is",
    );
    // Sharding needs an output file.
    let to_stdout = scenario.job(
        "stdout.toml",
        &squares_job(1_000, 100, &[], "[output]\npath = \"-\""),
    );
    let finished = scenario.run(&["--shard", "0/2", to_stdout.to_str().unwrap()]);
    finished.expect_code(2);
    assert_stderr_has(&finished, "output is stdout cannot run as shards");
    let entries: Vec<_> = std::fs::read_dir(scenario.dir()).unwrap().collect();
    assert_eq!(entries.len(), 2, "something was written: {entries:?}");
}

/// `check` under each scheduler's variables: which shard, and from whom.
#[test]
fn the_shard_comes_from_each_schedulers_variables() {
    let scenario = Scenario::new();
    let job = Job::new(
        &scenario,
        "squares",
        "squares.jsonl",
        &squares_job(1_000, 100, &[], ""),
    );
    let check = |env: &[(&str, &str)], args: &[&str]| {
        let launch = env
            .iter()
            .fold(Launch::default(), |launch, (k, v)| launch.env(k, v));
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        all.push(job.file());
        let finished = scenario.start_with(&all, launch).finish();
        finished.expect_code(0);
        String::from_utf8(finished.stdout).unwrap()
    };
    // A Slurm array from 1 in steps of 2 (--array=1-7:2): task 5 is shard 2 of 4.
    let plan = check(
        &[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ],
        &[],
    );
    assert!(
        plan.contains("shard: 2 of 4, chunks [5, 7) of 10 (2 chunks), from a Slurm array task"),
        "{plan}"
    );
    assert!(plan.contains("squares.shard-2-of-4.jsonl"), "{plan}");
    assert!(
        plan.contains(".supervisor/squares.shard-2-of-4\n"),
        "{plan}"
    );
    let plan = check(
        &[
            ("AWS_BATCH_JOB_ARRAY_INDEX", "0"),
            ("AWS_BATCH_JOB_ARRAY_SIZE", "3"),
        ],
        &[],
    );
    assert!(
        plan.contains("shard: 0 of 3, chunks [0, 3) of 10 (3 chunks), from an AWS Batch array job"),
        "{plan}"
    );
    let plan = check(&[("BATCH_TASK_INDEX", "4"), ("BATCH_TASK_COUNT", "5")], &[]);
    assert!(
        plan.contains(
            "shard: 4 of 5, chunks [8, 10) of 10 (2 chunks), from a Google Cloud Batch task"
        ),
        "{plan}"
    );
    let plan = check(&[("JOB_COMPLETION_INDEX", "1")], &["--shard", "1/2"]);
    assert!(
        plan.contains(
            "shard: 1 of 2, chunks [5, 10) of 10 (5 chunks), from a Kubernetes Indexed Job"
        ),
        "{plan}"
    );
    // --shard wins over the environment, and 0/1 runs the whole job.
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "1"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
    ];
    let plan = check(&slurm, &["--shard", "0/1"]);
    assert!(
        !plan.contains("shard:") && !plan.contains(".shard-"),
        "{plan}"
    );
    let plan = check(&[], &[]);
    assert!(
        !plan.contains("shard:") && !plan.contains(".shard-"),
        "{plan}"
    );
}

#[test]
fn a_shard_from_slurm_runs_its_block_and_reports_it() {
    let scenario = Scenario::new();
    let job = Job::new(
        &scenario,
        "squares",
        "squares.jsonl",
        &squares_job(1_000, 100, &[], ""),
    );
    let report = scenario.path("report.json");
    let finished = scenario
        .start_with(
            &["-w", "2", "--report", report.to_str().unwrap(), job.file()],
            Launch::default()
                .env("SLURM_ARRAY_TASK_ID", "3")
                .env("SLURM_ARRAY_TASK_COUNT", "2")
                .env("SLURM_ARRAY_TASK_MIN", "1")
                .env("SLURM_ARRAY_TASK_STEP", "2"),
        )
        .finish();
    finished.expect_code(0);
    assert_stderr_has(
        &finished,
        "running as shard 1 of 2, chunks [5, 10) of 10 (5 chunks), from a Slurm array task (SLURM_ARRAY_TASK_ID=3",
    );
    let records = read_records(&job.shard_output(1, 2));
    assert_eq!(
        records.iter().map(|r| r.index).collect::<Vec<_>>(),
        [5, 6, 7, 8, 9]
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        report["shard"],
        serde_json::json!({"index": 1, "count": 2, "from": "slurm", "first_chunk": 5, "end_chunk": 10})
    );
    assert_eq!(report["chunks"]["total"], 5);
    assert_eq!(report["chunks"]["done"], 5);
    assert!(!job.output().exists());
}

/// A merge killed at any moment leaves the job's earlier files or the whole
/// merged ones: never a half output under the real name, never a journal
/// without the output it vouches for. The moments are spread over the
/// merge's run; whichever of them lands where, the check holds.
#[test]
fn a_merge_killed_at_any_moment_leaves_no_half_file_that_looks_whole() {
    let scenario = Scenario::new();
    let mut input = Vec::new();
    let mut line = 0u64;
    while input.len() < 24 << 20 {
        input.extend_from_slice(
            format!("line {line} {}\n", "x".repeat((line % 97) as usize)).as_bytes(),
        );
        line += 1;
    }
    std::fs::write(scenario.path("input.txt"), &input).unwrap();
    let job = Job::new(
        &scenario,
        "copy",
        "copy.txt",
        "[source]\nfile = { path = \"input.txt\" }\nchunk = \"1MiB\"\n\n[worker]\nexec = [\"cat\"]\n\
         stdin = \"chunk\"\n\n[output]\npath = \"copy.txt\"\nformat = \"raw\"\n",
    );
    job.run_shards(3);
    let check = |moment: &str| {
        let journal = job.state().join("journal");
        match std::fs::read(job.output()) {
            Ok(bytes) => assert!(
                bytes == input,
                "{moment}: the output is there but not whole"
            ),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{moment}");
                assert!(!journal.exists(), "{moment}: a journal without its output");
            }
        }
    };
    for delay_ms in [0, 1, 3, 10, 30, 100, 200, 300] {
        let merging = scenario.start(&["merge", job.file()]);
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        merging.signal(nix::sys::signal::Signal::SIGKILL);
        let finished = merging.finish();
        check(&format!("killed after {delay_ms} ms ({:?})", finished.code));
    }
    job.merge(&[]).expect_code(0);
    check("merged");
    assert!(job.state().join("journal").exists());
    let leftovers: Vec<String> = std::fs::read_dir(scenario.dir())
        .unwrap()
        .chain(std::fs::read_dir(job.state()).unwrap())
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
