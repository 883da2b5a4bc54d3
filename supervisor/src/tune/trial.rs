//! One trial of `supervisor tune`: the job run in-process with one setting
//! of the knobs, in a private folder (its own output and state, never the
//! job's), from the start of its source: over a sample of a range sized to
//! take about the trial's time, or until the time is up, when it drains as
//! after SIGTERM (a file or lines source, and the first trial). What it
//! measured comes from its run report, its output's records and `getrusage`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::assess::Options;
use crate::config::{AutoChunk, Job, OutputFormat, OutputPath, Source, defaults};
use crate::observers::progress::{Progress, ProgressMode};
use crate::resources::{Who, usage};
use crate::run::{Reporting, RunEnd, SetupError, run};

/// How a trial cuts its chunks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Chunking {
    /// This many units (items, bytes, lines) per chunk.
    Fixed(u64),
    /// `chunk = "auto"` with this target.
    Auto(Duration),
}

/// The knobs of one trial.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    pub workers: usize,
    pub chunking: Chunking,
    /// Of a range, only this many items from its start: every trial then
    /// runs to its end, tail included, as a whole job would.
    pub sample: Option<u64>,
}

/// What one trial measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub setting: Setting,
    pub wall: Duration,
    /// Chunks done, and the source's positions they covered (integers of a
    /// range, bytes of a file or lines source).
    pub chunks: u64,
    pub covered: u64,
    /// The workers' own time for those chunks, summed.
    pub worker_seconds: f64,
    /// Chunk times at the workers.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// CPU seconds of the supervisor and of its workers over the trial.
    pub supervisor_cpu: f64,
    pub workers_cpu: f64,
    pub worker_peak_rss: Option<u64>,
    /// The source ran out before the trial's time did.
    pub finished: bool,
}

impl Measured {
    /// Positions of the source covered per second of the trial's wall.
    pub fn throughput(&self) -> f64 {
        self.covered as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// What a position costs on a worker, in seconds.
    pub fn cost(&self) -> Option<f64> {
        (self.covered > 0).then(|| self.worker_seconds / self.covered as f64)
    }
}

/// The fields of an output record a trial reads.
#[derive(Deserialize)]
struct Record {
    start: u64,
    end: u64,
    seconds: f64,
}

/// Runs `job` as `setting` says for at most about `time`, in `dir`, which
/// it leaves as it found it. `n` numbers the trial's files.
pub async fn run_trial(
    job: &Job,
    setting: Setting,
    time: Duration,
    dir: &Path,
    n: usize,
) -> anyhow::Result<Measured> {
    let output = dir.join(format!("trial-{n}.jsonl"));
    let state = dir.join(format!("trial-{n}.state"));
    let trial = trial_job(job, setting, time, &output, &state);
    let (stop, signals) = mpsc::unbounded_channel();
    let supervisor_before = cpu(Who::Supervisor);
    let workers_before = cpu(Who::Workers);
    let started = Instant::now();
    // A sample runs to its end; the timer is only a bound, at twice its time.
    let bound = if setting.sample.is_some() {
        time * 2
    } else {
        time
    };
    let timer = tokio::spawn(async move {
        tokio::time::sleep(bound).await;
        // A drain, as after SIGTERM: chunks in flight finish and count.
        let _ = stop.send(libc::SIGTERM);
        stop
    });
    let reporting = Reporting {
        progress: Progress::new(ProgressMode::Never),
        metrics_addr: None,
    };
    let options = Options {
        fresh: true,
        retry_failed: false,
    };
    let ended = run(&trial, options, reporting, signals).await;
    let wall = started.elapsed();
    timer.abort();
    let summary = match ended {
        Ok(RunEnd::Ended(summary)) => summary,
        Ok(RunEnd::Killed { .. }) => return Err(anyhow!("the trial was killed")),
        Err(SetupError::Refused(e) | SetupError::Failed(e)) => return Err(e),
    };
    let report = summary.report(0);
    if report.outcome == "aborted" {
        return Err(anyhow!("the trial aborted: {}", report.exit_reason));
    }
    let text = std::fs::read_to_string(&output)
        .with_context(|| format!("cannot read the trial's output {}", output.display()))?;
    let (mut chunks, mut covered, mut worker_seconds) = (0, 0, 0.0);
    for line in text.lines() {
        let record: Record = serde_json::from_str(line).context("a trial record")?;
        chunks += 1;
        covered += record.end - record.start;
        worker_seconds += record.seconds;
    }
    let _ = std::fs::remove_file(&output);
    let _ = std::fs::remove_dir_all(&state);
    Ok(Measured {
        setting,
        wall,
        chunks,
        covered,
        worker_seconds,
        p50: report.latency_seconds.p50,
        p99: report.latency_seconds.p99,
        supervisor_cpu: cpu(Who::Supervisor) - supervisor_before,
        workers_cpu: cpu(Who::Workers) - workers_before,
        worker_peak_rss: report.workers.iter().filter_map(|w| w.peak_rss_bytes).max(),
        finished: report.outcome.starts_with("finished"),
    })
}

fn cpu(who: Who) -> f64 {
    usage(who).map_or(0.0, |u| u.cpu_seconds)
}

/// The job as a trial runs it: its knobs set, its output and state private.
fn trial_job(job: &Job, setting: Setting, time: Duration, output: &Path, state: &Path) -> Job {
    let mut trial = job.clone();
    trial.supervisor.workers = setting.workers;
    if let (Source::Range { start, end }, Some(sample)) = (&mut trial.source, setting.sample) {
        *end = start.saturating_add(sample.max(1)).min(*end);
    }
    match setting.chunking {
        Chunking::Fixed(chunk) => {
            trial.chunk = chunk.max(1);
            trial.auto = None;
        }
        Chunking::Auto(target) => {
            trial.chunk = smallest_auto_chunk(&job.source);
            trial.auto = Some(AutoChunk { target });
        }
    }
    // Records carry each chunk's range: what the trial covered is read back.
    trial.output.path = OutputPath::File(output.to_path_buf());
    trial.output.format = OutputFormat::Jsonl;
    trial.state_dir = state.to_path_buf();
    trial.supervisor.drain_timeout = time.max(Duration::from_secs(1));
    trial
}

/// The smallest chunk `chunk = "auto"` may cut, as validation sets it.
fn smallest_auto_chunk(source: &Source) -> u64 {
    source.units().div_ceil(defaults::MAX_CHUNKS).max(1)
}
