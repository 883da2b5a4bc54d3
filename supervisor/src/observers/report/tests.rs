//! The report's tests: collecting events, the summary, the file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::collector::{
    EXIT_CAUSES_CAP, FAILED_LIST_CAP, OTHER_CAUSES, ReportCollector, ReportInput,
};
use super::file::write_report;
use super::schema::FailedChunk;
use super::summary::{human_seconds, summary, three_digits};
use crate::chunks::ChunkSpec;
use crate::dispatcher::{Counts, KillCause, Outcome, RunEvent};

fn chunk(index: u64) -> ChunkSpec {
    ChunkSpec {
        index,
        start: index * 100,
        end: index * 100 + 100,
        first_item: index * 100,
    }
}

fn done(index: u64, worker: usize, seconds: f64, waited: f64) -> RunEvent<'static> {
    RunEvent::ChunkDone {
        chunk: chunk(index),
        attempt: 1,
        worker,
        seconds,
        waited,
    }
}

fn input<'a>(outcome: &'a Outcome, counts: Counts) -> ReportInput<'a> {
    ReportInput {
        job_name: "squares",
        shard: None,
        outcome,
        exit_code: 0,
        counts,
        done_before: 0,
        failed_before: 0,
        elapsed: Duration::from_secs(2),
        output: "/data/squares.jsonl",
        failed_file: None,
        log_lines_dropped: 0,
    }
}

fn close(actual: Option<f64>, expected: f64) -> bool {
    // Three significant digits.
    actual.is_some_and(|a| (a - expected).abs() <= expected * 1e-3 + 1e-6)
}

#[test]
fn percentiles_come_from_the_workers_own_times() {
    let mut collector = ReportCollector::new(2, Instant::now());
    for i in 1..=100 {
        // 1 ms to 100 ms; queue waits a tenth of that.
        let seconds = i as f64 / 1000.0;
        collector.observe(&done(i, (i % 2) as usize, seconds, seconds / 10.0));
    }
    let outcome = Outcome::Finished { failed: 0 };
    let counts = Counts {
        total: Some(100),
        done: 100,
        ..Counts::default()
    };
    let report = collector.build(&input(&outcome, counts));
    let latency = &report.latency_seconds;
    assert!(close(latency.p50, 0.050), "{latency:?}");
    assert!(close(latency.p90, 0.090), "{latency:?}");
    assert!(close(latency.p95, 0.095), "{latency:?}");
    assert!(close(latency.p99, 0.099), "{latency:?}");
    assert!(close(latency.max, 0.100), "{latency:?}");
    assert!(close(latency.mean, 0.0505), "{latency:?}");
    let wait = &report.queue_wait_seconds;
    assert!(close(wait.p50, 0.0050), "{wait:?}");
    assert!(close(wait.p99, 0.0099), "{wait:?}");
    assert!(close(wait.max, 0.0100), "{wait:?}");
    assert_eq!(report.throughput_chunks_per_s, 50.0);
    assert_eq!(report.outcome, "finished");
    assert_eq!(report.exit_reason, "every chunk finished");
}

#[test]
fn a_lone_sample_is_every_percentile() {
    let mut collector = ReportCollector::new(1, Instant::now());
    collector.observe(&done(0, 0, 0.000_152, 0.0));
    let outcome = Outcome::Finished { failed: 0 };
    let report = collector.build(&input(&outcome, Counts::default()));
    let l = &report.latency_seconds;
    for value in [l.p50, l.p90, l.p95, l.p99, l.max, l.mean] {
        assert_eq!(value, Some(0.000_152), "{l:?}");
    }
    assert_eq!(report.queue_wait_seconds.max, Some(0.0));
}

#[test]
fn nonsense_times_are_clamped_not_recorded_as_they_are() {
    let mut collector = ReportCollector::new(1, Instant::now());
    collector.observe(&done(0, 0, f64::NAN, -1.0));
    collector.observe(&done(1, 0, 1e12, f64::INFINITY));
    let outcome = Outcome::Finished { failed: 0 };
    let report = collector.build(&input(&outcome, Counts::default()));
    assert_eq!(report.latency_seconds.p50, Some(0.0));
    assert!(report.latency_seconds.max.unwrap() >= 1e11);
    assert_eq!(report.queue_wait_seconds.max, Some(0.0));
}

#[test]
fn a_run_that_finished_no_chunk_has_no_latency_figures() {
    let collector = ReportCollector::new(3, Instant::now());
    let outcome = Outcome::Drained { signal: 15 };
    let report = collector.build(&input(&outcome, Counts::default()));
    assert_eq!(report.outcome, "drained");
    assert!(
        report.exit_reason.contains("SIGTERM"),
        "{}",
        report.exit_reason
    );
    assert_eq!(report.latency_seconds.p50, None);
    assert_eq!(report.latency_seconds.mean, None);
    assert_eq!(report.queue_wait_seconds.max, None);
    assert_eq!(report.throughput_chunks_per_s, 0.0);
    assert_eq!(report.workers.len(), 3);
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["latency_seconds"]["p99"].is_null());
    assert!(summary(&report).ends_with("no chunk finished in this run\n"));
}

#[test]
fn attempts_and_exits_are_charged_to_the_slot_that_had_them() {
    let mut collector = ReportCollector::new(3, Instant::now());
    collector.observe(&RunEvent::WorkerStarted { slot: 0, pid: 10 });
    collector.observe(&RunEvent::WorkerStarted { slot: 1, pid: 11 });
    // Chunk 5 fails on slot 0, is retried and fails for good on slot 1.
    collector.observe(&RunEvent::ChunkDispatched {
        chunk: chunk(5),
        attempt: 1,
        worker: 0,
    });
    collector.observe(&RunEvent::ChunkRetried {
        chunk: chunk(5),
        failed_attempt: 1,
        worker: 0,
        error: "injected failure on chunk 5 attempt 1",
    });
    collector.observe(&RunEvent::ChunkDispatched {
        chunk: chunk(5),
        attempt: 2,
        worker: 1,
    });
    collector.observe(&RunEvent::ChunkFailed {
        chunk: chunk(5),
        attempts: 2,
        worker: 1,
        error: "injected failure on chunk 5 attempt 2",
    });
    // Slot 0 crashes twice and is stopped at the end; slot 1 finishes two chunks.
    for _ in 0..2 {
        collector.observe(&RunEvent::WorkerExited {
            slot: 0,
            pid: Some(10),
            status: "killed by SIGABRT",
            cause: None,
            expected: false,
        });
        collector.observe(&RunEvent::WorkerStarted { slot: 0, pid: 12 });
    }
    collector.observe(&RunEvent::WorkerExited {
        slot: 0,
        pid: Some(12),
        status: "exit status 0",
        cause: None,
        expected: true,
    });
    collector.observe(&RunEvent::WorkerExited {
        slot: 1,
        pid: Some(11),
        status: "killed by SIGTERM",
        cause: Some(&KillCause::TimedOut {
            after: Duration::from_secs(1),
            chunk: 2,
            outstanding: 1,
        }),
        expected: false,
    });
    collector.observe(&done(1, 1, 0.01, 0.0));
    collector.observe(&done(2, 1, 0.01, 0.0));

    let outcome = Outcome::Finished { failed: 1 };
    let counts = Counts {
        total: Some(10),
        done: 2,
        failed: 1,
        retried: 1,
        crashes: 3,
        ..Counts::default()
    };
    let report = collector.build(&input(&outcome, counts));
    let [w0, w1, w2] = &report.workers[..] else {
        panic!("{:?}", report.workers)
    };
    assert_eq!((w0.slot, w1.slot, w2.slot), (0, 1, 2));
    assert_eq!((w0.chunks, w1.chunks, w2.chunks), (0, 2, 0));
    assert_eq!((w0.failed_attempts, w1.failed_attempts), (1, 1));
    assert_eq!((w0.restarts, w1.restarts, w2.restarts), (2, 1, 0));
    assert_eq!((w0.processes, w1.processes, w2.processes), (3, 1, 0));
    assert_eq!(
        w0.exit_causes,
        BTreeMap::from([
            ("killed by SIGABRT".to_owned(), 2),
            ("exit status 0".to_owned(), 1)
        ])
    );
    assert_eq!(
        w1.exit_causes,
        BTreeMap::from([(
            "timed out after 1s on chunk 2 (killed by SIGTERM)".to_owned(),
            1
        )])
    );
    assert_eq!(w2.peak_rss_bytes, None);
    assert_eq!(
        report.failed,
        [FailedChunk {
            index: 5,
            start: 500,
            end: 600,
            attempts: 2,
            error: "injected failure on chunk 5 attempt 2".to_owned(),
        }]
    );
    assert!(!report.failed_truncated);
    assert_eq!(report.outcome, "finished_with_failures");
    assert_eq!(report.exit_reason, "1 chunk failed for good");
    assert_eq!(report.worker_crashes, 3);
}

#[test]
fn exit_causes_per_slot_are_capped() {
    let mut collector = ReportCollector::new(1, Instant::now());
    let causes: Vec<KillCause> = (0..EXIT_CAUSES_CAP + 10)
        .map(|i| KillCause::TimedOut {
            after: Duration::from_secs(1),
            chunk: i as u64,
            outstanding: 1,
        })
        .collect();
    for cause in &causes {
        collector.observe(&RunEvent::WorkerExited {
            slot: 0,
            pid: None,
            status: "killed by SIGTERM",
            cause: Some(cause),
            expected: false,
        });
    }
    let outcome = Outcome::Finished { failed: 0 };
    let report = collector.build(&input(&outcome, Counts::default()));
    let exits = &report.workers[0].exit_causes;
    assert_eq!(exits.len(), EXIT_CAUSES_CAP + 1);
    assert_eq!(
        exits["timed out after 1s on chunk 0 (killed by SIGTERM)"],
        1
    );
    assert_eq!(exits[OTHER_CAUSES], 10);
    assert_eq!(exits.values().sum::<u64>(), causes.len() as u64);
}

#[test]
fn the_failed_list_stops_at_the_cap_and_says_so() {
    let mut collector = ReportCollector::new(1, Instant::now());
    let count = FAILED_LIST_CAP as u64 + 5;
    for index in 0..count {
        collector.observe(&RunEvent::ChunkFailed {
            chunk: chunk(index),
            attempts: 3,
            worker: 0,
            error: "boom",
        });
    }
    let outcome = Outcome::Finished { failed: count };
    let counts = Counts {
        failed: count,
        ..Counts::default()
    };
    let report = collector.build(&input(&outcome, counts));
    assert_eq!(report.failed.len(), FAILED_LIST_CAP);
    assert!(report.failed_truncated);
    assert_eq!(report.failed[FAILED_LIST_CAP - 1].index, count - 6);
    assert_eq!(report.chunks.failed, count);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["failed_truncated"], true);
}

#[test]
fn a_slot_beyond_the_announced_workers_is_kept() {
    let mut collector = ReportCollector::new(1, Instant::now());
    collector.observe(&done(0, 3, 0.01, 0.0));
    let outcome = Outcome::Finished { failed: 0 };
    let report = collector.build(&input(&outcome, Counts::default()));
    assert_eq!(report.workers.len(), 4);
    assert_eq!(report.workers[3].chunks, 1);
}

#[test]
fn the_peak_memory_of_a_live_process_is_read_and_kept_at_its_max() {
    let mut collector = ReportCollector::new(1, Instant::now());
    collector.sample_rss(0, std::process::id());
    let first = collector.slots[0].peak_rss_bytes.unwrap();
    assert!(first > 0);
    collector.slots[0].peak_rss_bytes = Some(u64::MAX);
    collector.sample_rss(0, std::process::id());
    assert_eq!(collector.slots[0].peak_rss_bytes, Some(u64::MAX));
    // A process that is gone leaves the figure as it was.
    collector.sample_rss(0, u32::MAX);
    assert_eq!(collector.slots[0].peak_rss_bytes, Some(u64::MAX));
}

#[test]
fn outcomes_have_their_names_and_reasons() {
    let collector = ReportCollector::new(1, Instant::now());
    let aborted = Outcome::Aborted {
        reason: "workers crashed 11 times within 1m (the limit is 10)".to_owned(),
    };
    let report = collector.build(&input(&aborted, Counts::default()));
    assert_eq!(report.outcome, "aborted");
    assert_eq!(
        report.exit_reason,
        "workers crashed 11 times within 1m (the limit is 10)"
    );

    let drained = Outcome::Drained { signal: 2 };
    let report = collector.build(&input(&drained, Counts::default()));
    assert_eq!(report.outcome, "drained");
    assert!(
        report.exit_reason.contains("SIGINT"),
        "{}",
        report.exit_reason
    );

    // Failures an earlier run left make this run's end a failed one too.
    let finished = Outcome::Finished { failed: 0 };
    let mut with_earlier = input(&finished, Counts::default());
    with_earlier.failed_before = 2;
    let report = collector.build(&with_earlier);
    assert_eq!(report.outcome, "finished_with_failures");
    assert_eq!(
        report.exit_reason,
        "2 chunks failed for good (2 of them in an earlier run)"
    );
    assert_eq!(report.chunks.failed, 2);
}

#[test]
fn the_report_has_the_contracts_fields_and_real_timestamps() {
    let collector = ReportCollector::new(2, Instant::now());
    let outcome = Outcome::Finished { failed: 0 };
    let report = collector.build(&input(&outcome, Counts::default()));
    let json = serde_json::to_value(&report).unwrap();
    for key in ["outcome", "exit_code", "throughput_chunks_per_s", "workers"] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    for key in ["total", "done", "failed", "retried"] {
        assert!(json["chunks"].get(key).is_some(), "chunks.{key} missing");
    }
    for key in ["p50", "p95", "p99", "max"] {
        assert!(
            json["latency_seconds"].get(key).is_some(),
            "latency_seconds.{key}"
        );
    }
    for stamp in [&report.started_at, &report.finished_at] {
        humantime::parse_rfc3339(stamp).unwrap_or_else(|e| panic!("{stamp}: {e}"));
        assert!(stamp.ends_with('Z'), "{stamp}");
    }
    assert!(report.started_at <= report.finished_at);
    assert!(report.cpu_seconds.supervisor.is_some_and(|s| s >= 0.0));
    assert!(report.supervisor_peak_rss_bytes.is_some_and(|b| b > 0));
}

#[test]
fn the_summary_keeps_the_familiar_first_line() {
    let mut collector = ReportCollector::new(1, Instant::now());
    collector.observe(&done(0, 0, 0.000_152, 0.0));
    collector.observe(&done(1, 0, 0.0034, 0.0));
    collector.observe(&done(2, 0, 1.25, 0.0));
    let outcome = Outcome::Finished { failed: 1 };
    let counts = Counts {
        total: Some(10),
        done: 3,
        failed: 1,
        retried: 2,
        crashes: 1,
        ..Counts::default()
    };
    let mut resumed = input(&outcome, counts);
    resumed.done_before = 6;
    let report = collector.build(&resumed);
    let text = summary(&report);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "squares: 9 of 10 chunks done (6 by an earlier run), 1 failed, 2 retried, 1 worker crashes, in 2.00s; output: /data/squares.jsonl"
    );
    assert_eq!(
        lines[1],
        "chunk time p50 3.40ms, p95 1.25s, p99 1.25s, max 1.25s; 1.50 chunks/s"
    );
    assert_eq!(lines.len(), 2);
    assert!(text.ends_with('\n'));
}

#[test]
fn human_units_read_well() {
    assert_eq!(human_seconds(0.000_152), "152µs");
    assert_eq!(human_seconds(0.0034), "3.40ms");
    assert_eq!(human_seconds(0.250), "250ms");
    assert_eq!(human_seconds(12.5), "12.5s");
    assert_eq!(three_digits(1234.4), "1234");
}

#[test]
fn the_report_file_is_replaced_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    std::fs::write(&path, "old").unwrap();
    let collector = ReportCollector::new(1, Instant::now());
    let outcome = Outcome::Finished { failed: 0 };
    let report = collector.build(&input(&outcome, Counts::default()));
    write_report(&path, &report).unwrap();
    let read: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(read, serde_json::to_value(&report).unwrap());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["report.json"], "a temporary file was left behind");
    // A folder that does not exist is an error, and leaves nothing.
    let nowhere = dir.path().join("missing/report.json");
    assert!(write_report(&nowhere, &report).is_err());
}
