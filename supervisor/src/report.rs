//! The run report: what a run did, gathered from the dispatcher's events,
//! written as JSON for `--report FILE` and told in a few lines on stderr.
//!
//! [`ReportCollector`] only consumes [`RunEvent`]s. It sees every chunk sent
//! and finished, so what it does per chunk is histogram records, counter
//! bumps and an entry in a map sized up front: nothing that allocates in a
//! steady run. The schema is documented in `docs/report.md`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::dispatcher::{Counts, Outcome, RunEvent};

/// Bumped when a field changes meaning or goes away; new fields do not bump it.
pub const REPORT_VERSION: u32 = 1;

/// Permanently failed chunks listed in the report at most; the failed file
/// has them all.
pub const FAILED_LIST_CAP: usize = 1000;

/// Distinct exit causes kept per worker slot. Causes can name a chunk
/// ("timed out after 1m on chunk 17"), so without a cap a long run of
/// timeouts would grow the map without end; the rest are counted as
/// [`OTHER_CAUSES`].
const EXIT_CAUSES_CAP: usize = 64;
const OTHER_CAUSES: &str = "other";

/// Histograms are sized for an hour from the start, so recording never has
/// to grow them in an ordinary run; a longer chunk still fits, by a resize.
const HISTOGRAM_HIGH_MICROS: u64 = 3_600 * 1_000_000;
const HISTOGRAM_SIGFIG: u8 = 3;

/// Gathers what the report needs while the run goes on.
#[derive(Debug)]
pub struct ReportCollector {
    started_at: SystemTime,
    /// Worker-measured chunk times, in microseconds.
    latency: Histogram<u64>,
    /// Time chunks sat queued at a worker before it could start them, in microseconds.
    queue_wait: Histogram<u64>,
    slots: Vec<SlotStats>,
    failed: Vec<FailedChunk>,
    failed_truncated: bool,
}

#[derive(Debug, Default, Clone)]
struct SlotStats {
    chunks: u64,
    failed_attempts: u64,
    restarts: u64,
    processes: u64,
    exit_causes: BTreeMap<String, u64>,
    peak_rss_bytes: Option<u64>,
    /// The slot's current worker process, once started.
    pid: Option<u32>,
}

impl ReportCollector {
    /// `started` is when the run began, on the clock the run loop uses.
    pub fn new(workers: usize, started: Instant) -> Self {
        let started_at = SystemTime::now()
            .checked_sub(started.elapsed())
            .unwrap_or_else(SystemTime::now);
        Self {
            started_at,
            latency: new_histogram(),
            queue_wait: new_histogram(),
            slots: vec![SlotStats::default(); workers],
            failed: Vec::new(),
            failed_truncated: false,
        }
    }

    pub fn observe(&mut self, event: &RunEvent<'_>) {
        match *event {
            RunEvent::ChunkDone {
                worker,
                seconds,
                waited,
                ..
            } => {
                record(&mut self.latency, seconds);
                record(&mut self.queue_wait, waited);
                self.slot(worker).chunks += 1;
            }
            RunEvent::ChunkRetried { worker, .. } => {
                self.slot(worker as usize).failed_attempts += 1;
            }
            RunEvent::ChunkFailed {
                chunk,
                attempts,
                worker,
                error,
            } => {
                self.slot(worker).failed_attempts += 1;
                if self.failed.len() < FAILED_LIST_CAP {
                    self.failed.push(FailedChunk {
                        index: chunk.index,
                        start: chunk.start,
                        end: chunk.end,
                        attempts,
                        error: error.to_owned(),
                    });
                } else {
                    self.failed_truncated = true;
                }
            }
            RunEvent::WorkerStarted { slot, pid } => {
                let stats = self.slot(slot);
                stats.processes += 1;
                stats.pid = Some(pid);
            }
            RunEvent::WorkerReady { slot } => {
                // A run shorter than the loop's sampling interval would
                // otherwise end with no memory figure at all; once per
                // worker start is cheap.
                if let Some(pid) = self.slot(slot).pid {
                    self.sample_rss(slot, pid);
                }
            }
            RunEvent::WorkerExited {
                slot,
                status,
                cause,
                expected,
                ..
            } => {
                let stats = self.slot(slot);
                stats.pid = None;
                if !expected {
                    stats.restarts += 1;
                }
                // The status alone says how it died, the cause alone why
                // the supervisor acted: together they tell a story.
                let cause = match cause {
                    Some(cause) => format!("{cause} ({status})"),
                    None => status.to_owned(),
                };
                let causes = &mut stats.exit_causes;
                if let Some(count) = causes.get_mut(&cause) {
                    *count += 1;
                } else if causes.len() < EXIT_CAUSES_CAP {
                    causes.insert(cause, 1);
                } else {
                    *causes.entry(OTHER_CAUSES.to_owned()).or_default() += 1;
                }
            }
            RunEvent::WorkerRetiring { .. }
            | RunEvent::WorkerBusy { .. }
            | RunEvent::ChunkDispatched { .. }
            | RunEvent::ChunkCancelled { .. }
            | RunEvent::Aborting { .. }
            | RunEvent::DrainStarted { .. }
            | RunEvent::Cancelling { .. } => {}
        }
    }

    /// Reads the worker's high-water resident memory (VmHWM) and keeps the
    /// slot's largest. A process already gone is skipped silently: it is
    /// sampled on a best-effort basis.
    pub fn sample_rss(&mut self, slot: usize, pid: u32) {
        if let Some(bytes) = peak_rss_bytes(pid) {
            let peak = &mut self.slot(slot).peak_rss_bytes;
            *peak = Some(peak.map_or(bytes, |p| p.max(bytes)));
        }
    }

    pub fn build(&self, input: &ReportInput<'_>) -> Report {
        let counts = input.counts;
        let wall_seconds = input.elapsed.as_secs_f64();
        let throughput = if wall_seconds > 0.0 {
            counts.done as f64 / wall_seconds
        } else {
            0.0
        };
        let own = usage(libc::RUSAGE_SELF);
        let children = usage(libc::RUSAGE_CHILDREN);
        let (outcome, exit_reason) = describe(input);
        Report {
            report_version: REPORT_VERSION,
            job: input.job_name.to_owned(),
            outcome: outcome.to_owned(),
            exit_reason,
            exit_code: input.exit_code,
            started_at: rfc3339(self.started_at),
            finished_at: rfc3339(SystemTime::now()),
            wall_seconds,
            chunks: ChunkCounts {
                total: counts.total,
                done: counts.done + input.done_before,
                failed: counts.failed + input.failed_before,
                retried: counts.retried,
                cancelled: counts.cancelled,
                skipped: counts.skipped,
                done_before: input.done_before,
                failed_before: input.failed_before,
            },
            throughput_chunks_per_s: throughput,
            latency_seconds: Latency {
                p50: quantile(&self.latency, 0.50),
                p90: quantile(&self.latency, 0.90),
                p95: quantile(&self.latency, 0.95),
                p99: quantile(&self.latency, 0.99),
                max: maximum(&self.latency),
                // To the nanosecond: finer digits would be noise.
                mean: (!self.latency.is_empty()).then(|| (self.latency.mean() * 1e3).round() / 1e9),
            },
            queue_wait_seconds: QueueWait {
                p50: quantile(&self.queue_wait, 0.50),
                p90: quantile(&self.queue_wait, 0.90),
                p99: quantile(&self.queue_wait, 0.99),
                max: maximum(&self.queue_wait),
            },
            worker_crashes: counts.crashes,
            cpu_seconds: CpuSeconds {
                supervisor: own.map(|u| u.cpu_seconds),
                workers: children.map(|u| u.cpu_seconds),
            },
            supervisor_peak_rss_bytes: own.map(|u| u.max_rss_bytes),
            workers: self
                .slots
                .iter()
                .enumerate()
                .map(|(slot, s)| WorkerReport {
                    slot,
                    chunks: s.chunks,
                    failed_attempts: s.failed_attempts,
                    restarts: s.restarts,
                    processes: s.processes,
                    exit_causes: s.exit_causes.clone(),
                    peak_rss_bytes: s.peak_rss_bytes,
                })
                .collect(),
            failed: self.failed.clone(),
            failed_truncated: self.failed_truncated,
            output: input.output.to_owned(),
            failed_file: input.failed_file.map(|p| p.display().to_string()),
        }
    }

    /// A slot the run did not announce (more slots than `workers`) is added
    /// rather than dropped, so no event is lost to a miscount.
    fn slot(&mut self, slot: usize) -> &mut SlotStats {
        if slot >= self.slots.len() {
            self.slots.resize_with(slot + 1, SlotStats::default);
        }
        &mut self.slots[slot]
    }
}

/// What the run loop knows at the end that the events did not say.
#[derive(Debug)]
pub struct ReportInput<'a> {
    pub job_name: &'a str,
    pub outcome: &'a Outcome,
    pub exit_code: i32,
    pub counts: Counts,
    pub done_before: u64,
    pub failed_before: u64,
    pub elapsed: Duration,
    /// The output as the user would name it: a path, or "stdout".
    pub output: &'a str,
    pub failed_file: Option<&'a Path>,
}

/// The run report; `docs/report.md` describes every field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub report_version: u32,
    pub job: String,
    /// "finished", "finished_with_failures", "drained" or "aborted".
    pub outcome: String,
    pub exit_reason: String,
    pub exit_code: i32,
    pub started_at: String,
    pub finished_at: String,
    pub wall_seconds: f64,
    pub chunks: ChunkCounts,
    pub throughput_chunks_per_s: f64,
    pub latency_seconds: Latency,
    pub queue_wait_seconds: QueueWait,
    pub worker_crashes: u64,
    pub cpu_seconds: CpuSeconds,
    pub supervisor_peak_rss_bytes: Option<u64>,
    pub workers: Vec<WorkerReport>,
    pub failed: Vec<FailedChunk>,
    pub failed_truncated: bool,
    pub output: String,
    pub failed_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkCounts {
    pub total: Option<u64>,
    /// Including those an earlier run finished, so it matches the output file.
    pub done: u64,
    /// Including those an earlier run failed that this one did not retry.
    pub failed: u64,
    pub retried: u64,
    pub cancelled: u64,
    pub skipped: u64,
    pub done_before: u64,
    pub failed_before: u64,
}

/// `None` (null) when no chunk finished in this run: there is nothing to measure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueWait {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuSeconds {
    pub supervisor: Option<f64>,
    pub workers: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerReport {
    pub slot: usize,
    pub chunks: u64,
    pub failed_attempts: u64,
    pub restarts: u64,
    pub processes: u64,
    pub exit_causes: BTreeMap<String, u64>,
    pub peak_rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedChunk {
    pub index: u64,
    pub start: u64,
    pub end: u64,
    pub attempts: u32,
    /// The last attempt's error; the failed file has every attempt's.
    pub error: String,
}

/// Writes the report so that a reader sees the old file or the new one,
/// never half of one, and the new one survives a crash once this returns.
pub fn write_report(path: &Path, report: &Report) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(report).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Beside the target, so the rename stays within one file system.
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    let written = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// The end of a run in two lines, each ending in a newline. The first keeps
/// the wording scripts have long matched on.
pub fn summary(report: &Report) -> String {
    let chunks = &report.chunks;
    let total = chunks
        .total
        .map_or_else(|| "?".to_owned(), |t| t.to_string());
    let earlier = if chunks.done_before > 0 {
        format!(" ({} by an earlier run)", chunks.done_before)
    } else {
        String::new()
    };
    let mut text = format!(
        "{}: {} of {total} chunks done{earlier}, {} failed, {} retried, {} worker crashes, in {:.2}s; output: {}\n",
        report.job,
        chunks.done,
        chunks.failed,
        chunks.retried,
        report.worker_crashes,
        report.wall_seconds,
        report.output,
    );
    let latency = &report.latency_seconds;
    match (latency.p50, latency.p95, latency.p99, latency.max) {
        (Some(p50), Some(p95), Some(p99), Some(max)) => text.push_str(&format!(
            "chunk time p50 {}, p95 {}, p99 {}, max {}; {} chunks/s\n",
            human_seconds(p50),
            human_seconds(p95),
            human_seconds(p99),
            human_seconds(max),
            three_digits(report.throughput_chunks_per_s),
        )),
        _ => text.push_str("no chunk finished in this run\n"),
    }
    text
}

fn new_histogram() -> Histogram<u64> {
    let mut histogram = Histogram::new_with_bounds(1, HISTOGRAM_HIGH_MICROS, HISTOGRAM_SIGFIG)
        .expect("constant histogram bounds are valid");
    histogram.auto(true);
    histogram
}

fn record(histogram: &mut Histogram<u64>, seconds: f64) {
    // A worker's clock is its own: a negative or absurd time is clamped
    // rather than allowed to poison the figures.
    let micros = if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1e6).round() as u64
    } else {
        0
    };
    if histogram.record(micros).is_err() {
        histogram.saturating_record(micros);
    }
}

fn quantile(histogram: &Histogram<u64>, q: f64) -> Option<f64> {
    (!histogram.is_empty()).then(|| histogram.value_at_quantile(q) as f64 / 1e6)
}

fn maximum(histogram: &Histogram<u64>) -> Option<f64> {
    (!histogram.is_empty()).then(|| histogram.max() as f64 / 1e6)
}

fn describe(input: &ReportInput<'_>) -> (&'static str, String) {
    match input.outcome {
        Outcome::Finished { failed } => {
            let all = failed + input.failed_before;
            if all == 0 {
                return ("finished", "every chunk finished".to_owned());
            }
            let chunks = if all == 1 { "chunk" } else { "chunks" };
            let earlier = if input.failed_before > 0 {
                format!(" ({} of them in an earlier run)", input.failed_before)
            } else {
                String::new()
            };
            (
                "finished_with_failures",
                format!("{all} {chunks} failed for good{earlier}"),
            )
        }
        Outcome::Drained { signal } => {
            let name = nix::sys::signal::Signal::try_from(*signal)
                .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned());
            (
                "drained",
                format!("stopped by {name} after a drain; running again resumes"),
            )
        }
        Outcome::Aborted { reason } => ("aborted", reason.clone()),
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu_seconds: f64,
    max_rss_bytes: u64,
}

/// User plus system time and peak memory of this process (`RUSAGE_SELF`)
/// or of its reaped children (`RUSAGE_CHILDREN`).
fn usage(who: libc::c_int) -> Option<Usage> {
    // SAFETY: rusage is plain integers, for which all zeroes is a value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live, writable rusage of the right type.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return None;
    }
    // Summed in whole microseconds (exact in an f64), so the figure carries
    // no float noise.
    let micros = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    Some(Usage {
        cpu_seconds: (micros(usage.ru_utime) + micros(usage.ru_stime)) / 1e6,
        // Linux gives it in KiB.
        max_rss_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
    })
}

/// The process's resident high-water mark, from /proc; `None` once it is gone.
fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let mut words = line.split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(kib * 1024),
        Some(_) => None,
    }
}

/// Seconds in the unit that reads best: 152µs, 3.4ms, 1.25s.
fn human_seconds(seconds: f64) -> String {
    if seconds < 1e-3 {
        format!("{:.0}µs", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{}ms", three_digits(seconds * 1e3))
    } else {
        format!("{}s", three_digits(seconds))
    }
}

/// About three significant digits, without trailing noise.
fn three_digits(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunks::ChunkSpec;
    use crate::dispatcher::KillCause;

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
            outcome,
            exit_code: 0,
            counts,
            done_before: 0,
            failed_before: 0,
            elapsed: Duration::from_secs(2),
            output: "/data/squares.jsonl",
            failed_file: None,
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
    fn vm_hwm_is_read_in_kib() {
        let status =
            "Name:\tsquares-worker\nVmPeak:\t   10000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tkthreadd\n"), None);
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
}
