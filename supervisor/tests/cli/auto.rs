//! `chunk = "auto"` end to end: chunks tile the source in index order and
//! each is written exactly once, through crashes, a drain and its resume, a
//! kill and its resume, items that turn dearer half way, and a job smaller
//! than one target. Sizes follow the worker's timings, so these tests assert
//! what sizes must do (tile, shrink) and never how long anything took.

use nix::sys::signal::Signal;

use super::harness::{Record, Scenario, read_records, wait_for_busy_workers};
use super::{assert_exactly_once, squares};

/// A squares job over `[0, end)` with automatic chunks of about `target`.
fn auto_job(end: u64, target: &str, worker_args: &[&str], extra: &str) -> String {
    let command = std::iter::once("squares-worker")
        .chain(worker_args.iter().copied())
        .map(|word| format!("{word:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[source]\nrange = {{ start = 0, end = {end} }}\nchunk = \"auto\"\ntarget = \"{target}\"\n\n\
         [worker]\ncommand = [{command}]\n{extra}\n"
    )
}

/// The records in index order, checked to tile `[0, end)` with right answers.
fn assert_tiles(mut records: Vec<Record>, end: u64) -> Vec<Record> {
    records.sort_by_key(|r| r.index);
    assert_exactly_once(&records, records.len() as u64);
    let mut at = 0;
    for record in &records {
        assert_eq!(record.start, at, "chunk {} does not follow", record.index);
        assert!(record.end > record.start, "chunk {} is empty", record.index);
        assert_eq!(
            record.output,
            serde_json::json!(squares(record.start, record.end))
        );
        at = record.end;
    }
    assert_eq!(at, end, "the chunks stop short of the end");
    records
}

fn sizes(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.end - r.start).collect()
}

#[test]
fn automatic_chunks_grow_shrink_and_tile_the_range_exactly_once() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "auto.toml",
        &auto_job(2_000_000, "20ms", &["--item-ns", "20"], ""),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    let records = assert_tiles(read_records(&scenario.path("auto.jsonl")), 2_000_000);
    let sizes = sizes(&records);
    assert_eq!(sizes[0], 1, "the first chunk is the smallest: {sizes:?}");
    assert!(
        sizes.iter().max().unwrap() > &10_000,
        "the chunks never grew: {sizes:?}"
    );
    assert!(
        *sizes.last().unwrap() < 1_000,
        "the last chunk did not shrink: {sizes:?}"
    );
    // The count was decided at run time: the summary has no total up front.
    assert!(
        finished.stderr.contains(&format!(
            "{} of {} chunks done",
            records.len(),
            records.len()
        )),
        "{}",
        finished.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_job_smaller_than_one_target_still_tiles() {
    let scenario = Scenario::new();
    let job = scenario.job("tiny.toml", &auto_job(10, "250ms", &[], ""));
    let finished = scenario.run(&["-w", "3", job.to_str().unwrap()]);
    finished.expect_code(0);
    let records = assert_tiles(read_records(&scenario.path("tiny.jsonl")), 10);
    assert!(records.len() <= 10);
    scenario.assert_no_survivors();
}

#[test]
fn crashes_cost_one_attempt_and_every_automatic_chunk_is_written_once() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "crashy.toml",
        &auto_job(
            200_000,
            "10ms",
            &[
                "--item-ns",
                "100",
                "--fault",
                "crash:3:2",
                "--fault",
                "exit:6:2",
                "--fault",
                "crash:9:3",
            ],
            "",
        ),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    let records = assert_tiles(read_records(&scenario.path("crashy.jsonl")), 200_000);
    let attempts = |index: u64| records[index as usize].attempt;
    assert_eq!((attempts(3), attempts(6), attempts(9)), (2, 2, 3));
    scenario.assert_no_survivors();
}

#[test]
fn items_that_turn_a_hundred_times_dearer_get_smaller_chunks() {
    let scenario = Scenario::new();
    // 10 µs an item, then 1 ms from item 3,000 on: 40 ms of work, then 1 s.
    let job = scenario.job(
        "dearer.toml",
        &auto_job(
            4_000,
            "20ms",
            &["--item-ns", "10000", "--dearer-from", "3000"],
            "",
        ),
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    let records = assert_tiles(read_records(&scenario.path("dearer.jsonl")), 4_000);
    let cheap_largest = records
        .iter()
        .filter(|r| r.end <= 3_000)
        .map(|r| r.end - r.start)
        .max()
        .unwrap();
    // Past the first chunks cut before any dear item was timed, the sizes
    // follow the new cost: 20 ms is 20 dear items.
    let dear: Vec<u64> = records
        .iter()
        .filter(|r| r.start >= 3_000)
        .map(|r| r.end - r.start)
        .collect();
    let settled_dear = &dear[dear.len().min(4)..];
    assert!(
        !settled_dear.is_empty() && settled_dear.iter().all(|&size| size * 4 < cheap_largest),
        "cheap chunks up to {cheap_largest} items, dear ones {dear:?}"
    );
    scenario.assert_no_survivors();
}

/// The first run's records, stopped part way by `stop`; then the same command
/// resumes, and the two outputs together tile the range with the first run's
/// chunks kept as they were.
fn stop_then_resume(name: &str, stop: impl FnOnce(&mut super::harness::Run), code: Option<i32>) {
    let scenario = Scenario::new();
    let job = scenario.job(
        &format!("{name}.toml"),
        &auto_job(
            3_000,
            "30ms",
            &["--item-ns", "200000", "--stderr-lines", "1"],
            "[output]\norder = \"completion\"",
        ),
    );
    let args = ["-w", "2", job.to_str().unwrap()];
    let mut run = scenario.start(&args);
    stop(&mut run);
    let first = run.finish();
    assert_eq!(first.code, code, "{}", first.stderr);
    scenario.assert_no_survivors();
    let output = scenario.path(&format!("{name}.jsonl"));
    let before: Vec<(u64, u64, u64)> = if output.exists() {
        read_records(&output)
            .iter()
            .map(|r| (r.index, r.start, r.end))
            .collect()
    } else {
        Vec::new()
    };

    let rerun = scenario.run(&args);
    rerun.expect_code(0);
    let records = assert_tiles(read_records(&output), 3_000);
    // Chunks journaled by the first run keep their boundaries (and those it
    // wrote after its last commit, cut from the output, may be cut anew).
    let kept = before
        .iter()
        .filter(|(index, start, end)| {
            records
                .iter()
                .any(|r| r.index == *index && (r.start, r.end) == (*start, *end))
        })
        .count();
    assert!(
        kept > 0 || before.is_empty(),
        "no chunk of the first run kept its place: {before:?}"
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_drained_run_of_automatic_chunks_resumes_to_a_tiling() {
    stop_then_resume(
        "drained",
        |run| {
            wait_for_busy_workers(run, "squares-worker", 2);
            run.wait_for_line("chunk 6 starting", |line| {
                line.contains("chunk 6 attempt 1 line 1")
            });
            run.signal(Signal::SIGTERM);
        },
        Some(143),
    );
}

#[test]
fn a_killed_run_of_automatic_chunks_resumes_around_what_it_settled() {
    stop_then_resume(
        "killed",
        |run| {
            run.wait_for_line("chunk 12 starting", |line| {
                line.contains("chunk 12 attempt 1 line 1")
            });
            run.signal(Signal::SIGKILL);
        },
        None,
    );
}

#[test]
fn a_lines_source_is_cut_at_line_ends_in_sizes_that_grow() {
    let scenario = Scenario::new();
    let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(scenario.path("input.txt"), &text).unwrap();
    let job = scenario.job(
        "lines.toml",
        "[source]\nlines = { path = \"input.txt\" }\nchunk = \"auto\"\ntarget = \"5ms\"\n\n\
         [worker]\ncommand = [\"squares-worker\", \"--item-ns\", \"200\"]\n",
    );
    let finished = scenario.run(&["-w", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    let records = assert_tiles(
        read_records(&scenario.path("lines.jsonl")),
        text.len() as u64,
    );
    for record in &records {
        assert_eq!(
            text.as_bytes()[record.end as usize - 1],
            b'\n',
            "chunk {} ends inside a line",
            record.index
        );
    }
    assert!(sizes(&records)[0] < sizes(&records).into_iter().max().unwrap());
    scenario.assert_no_survivors();
}
