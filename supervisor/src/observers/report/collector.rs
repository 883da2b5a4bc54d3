//! Gathering the report while the run goes on: [`ReportCollector`] only
//! consumes [`RunEvent`]s. It sees every chunk sent and finished, so what it
//! does per chunk is histogram records, counter bumps and an entry in a map
//! sized up front: nothing that allocates in a steady run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

use super::schema::{
    ChunkCounts, CpuSeconds, FailedChunk, Latency, QueueWait, REPORT_VERSION, Report, ShardReport,
    WorkerReport,
};
use crate::dispatcher::{Counts, Outcome, RunEvent};
use crate::resources::{Who, peak_rss_bytes, usage};
use crate::signals;

/// Permanently failed chunks listed in the report at most; the failed file
/// has them all.
pub const FAILED_LIST_CAP: usize = 1000;

/// The most of each failed chunk's error the report keeps: the failed file
/// has them longer.
const FAILED_ERROR_BYTES: usize = 4 * 1024;

/// Distinct exit causes kept per worker slot. Causes can name a chunk
/// ("timed out after 1m on chunk 17"), so without a cap a long run of
/// timeouts would grow the map without end; the rest are counted as
/// [`OTHER_CAUSES`].
pub(super) const EXIT_CAUSES_CAP: usize = 64;
pub(super) const OTHER_CAUSES: &str = "other";

/// Histograms are sized for an hour from the start, so recording never has
/// to grow them in an ordinary run; a longer chunk still fits, by a resize.
const HISTOGRAM_HIGH_MICROS: u64 = 3_600 * 1_000_000;
const HISTOGRAM_SIGFIG: u8 = 3;

/// Gathers what the report needs while the run goes on.
#[derive(Debug)]
pub struct ReportCollector {
    started_at: SystemTime,
    /// Worker-measured chunk times, in microseconds.
    latency: Timings,
    /// Time chunks sat queued at a worker before it could start them, in microseconds.
    queue_wait: Timings,
    pub(super) slots: Vec<WorkerStats>,
    failed: Vec<FailedChunk>,
    failed_truncated: bool,
}

#[derive(Debug, Default, Clone)]
pub(super) struct WorkerStats {
    chunks: u64,
    failed_attempts: u64,
    restarts: u64,
    processes: u64,
    exit_causes: BTreeMap<String, u64>,
    pub(super) peak_rss_bytes: Option<u64>,
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
            latency: Timings::default(),
            queue_wait: Timings::default(),
            slots: vec![WorkerStats::default(); workers],
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
                self.latency.record(seconds);
                self.queue_wait.record(waited);
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
                        error: cut(error, FAILED_ERROR_BYTES),
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
            | RunEvent::Tripped { .. }
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
        let own = usage(Who::Supervisor);
        let children = usage(Who::Workers);
        let (outcome, exit_reason) = describe(input);
        let latency = self.latency.histogram();
        let queue_wait = self.queue_wait.histogram();
        Report {
            report_version: REPORT_VERSION,
            job: input.job_name.to_owned(),
            shard: input.shard.clone(),
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
                p50: quantile(&latency, 0.50),
                p90: quantile(&latency, 0.90),
                p95: quantile(&latency, 0.95),
                p99: quantile(&latency, 0.99),
                max: maximum(&latency),
                // To the nanosecond: finer digits would be noise.
                mean: (!latency.is_empty()).then(|| (latency.mean() * 1e3).round() / 1e9),
            },
            queue_wait_seconds: QueueWait {
                p50: quantile(&queue_wait, 0.50),
                p90: quantile(&queue_wait, 0.90),
                p99: quantile(&queue_wait, 0.99),
                max: maximum(&queue_wait),
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
            log_lines_dropped: input.log_lines_dropped,
        }
    }

    /// A slot the run did not announce (more slots than `workers`) is added
    /// rather than dropped, so no event is lost to a miscount.
    fn slot(&mut self, slot: usize) -> &mut WorkerStats {
        if slot >= self.slots.len() {
            self.slots.resize_with(slot + 1, WorkerStats::default);
        }
        &mut self.slots[slot]
    }
}

/// What the run loop knows at the end that the events did not say.
#[derive(Debug)]
pub struct ReportInput<'a> {
    pub job_name: &'a str,
    pub shard: Option<ShardReport>,
    pub outcome: &'a Outcome,
    pub exit_code: i32,
    pub counts: Counts,
    pub done_before: u64,
    pub failed_before: u64,
    pub elapsed: Duration,
    /// The output as the user would name it: a path, or "stdout".
    pub output: &'a str,
    pub failed_file: Option<&'a Path>,
    pub log_lines_dropped: u64,
}

/// `text` cut to at most `max` bytes, at a character's edge, marked.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…(cut)", &text[..end])
}

fn new_histogram() -> Histogram<u64> {
    let mut histogram = Histogram::new_with_bounds(1, HISTOGRAM_HIGH_MICROS, HISTOGRAM_SIGFIG)
        .expect("constant histogram bounds are valid");
    histogram.auto(true);
    histogram
}

/// Durations in microseconds, recorded into a histogram in runs of equal
/// values: chunks that take the same time (all those of a no-op job, 0 µs)
/// cost a comparison each, not a histogram record.
#[derive(Debug)]
struct Timings {
    histogram: Histogram<u64>,
    /// A value not yet recorded, and how many times it was seen.
    pending: u64,
    repeats: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            histogram: new_histogram(),
            pending: 0,
            repeats: 0,
        }
    }
}

impl Timings {
    fn record(&mut self, seconds: f64) {
        // A worker's clock is its own: a negative or absurd time is clamped
        // rather than allowed to poison the figures.
        let micros = if seconds.is_finite() && seconds > 0.0 {
            // Rounded by adding a half: no libm call per chunk.
            (seconds * 1e6 + 0.5) as u64
        } else {
            0
        };
        if micros == self.pending {
            self.repeats += 1;
            return;
        }
        record_n(&mut self.histogram, self.pending, self.repeats);
        self.pending = micros;
        self.repeats = 1;
    }

    /// Everything recorded so far.
    fn histogram(&self) -> std::borrow::Cow<'_, Histogram<u64>> {
        if self.repeats == 0 {
            return std::borrow::Cow::Borrowed(&self.histogram);
        }
        let mut histogram = self.histogram.clone();
        record_n(&mut histogram, self.pending, self.repeats);
        std::borrow::Cow::Owned(histogram)
    }
}

fn record_n(histogram: &mut Histogram<u64>, micros: u64, count: u64) {
    if count > 0 && histogram.record_n(micros, count).is_err() {
        histogram.saturating_record_n(micros, count);
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
            let name = signals::name(*signal);
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
