//! The run loop: feeds the dispatcher what happens (worker news, timers,
//! signals) and carries out its effects through [`Edges`], committing the
//! journal in groups and keeping systemd informed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use protocol::message::Input;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::warn;

use crate::chunks::{ChunkSource, FileChunks, LineCount, LinesChunks, RangeChunks};
use crate::config::{InputFile, Job, Order, OutputPath, Source};
use crate::dispatcher::{Counts, Dispatcher, Event, Outcome, Settings};
use crate::edges::{Edges, Observers};
use crate::journal::JournalWriter;
use crate::metrics::Metrics;
use crate::notify::{Notifier, progress_status};
use crate::output::{FailureWriter, ResultWriter};
use crate::process::rss_bytes;
use crate::progress::Progress;
use crate::report::{Report, ReportCollector, ReportInput};
use crate::resume::{self, Options, SetupError};

/// What reports on the run besides the log, as the command line asked.
pub struct Reporting {
    pub progress: Progress,
    pub metrics_addr: Option<SocketAddr>,
}

/// What a finished run reports to `main`; the figures are in `report`.
pub struct RunSummary {
    pub report: Report,
    pub exit_code: u8,
    pub outcome: Outcome,
    pub counts: Counts,
    /// Where the failed chunks are listed, when there are any.
    pub failed_file: Option<std::path::PathBuf>,
}

/// Pending news a worker task may have queued before the loop takes it.
const NEWS_QUEUE: usize = 1024;
/// News handled before the loop flushes writes and looks at its timers.
const NEWS_BATCH: usize = 256;
/// How often the loop checks the group commit when nothing else happens.
const HOUSEKEEPING: Duration = Duration::from_millis(20);
/// How often systemd hears the progress.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Runs (or resumes) the job to its end. Errors are failures to set the run
/// up; everything that goes wrong with workers is part of the outcome.
pub async fn run(
    job: &Job,
    options: Options,
    reporting: Reporting,
) -> Result<RunSummary, SetupError> {
    let started = Instant::now();
    // Listen before any worker exists, so no signal finds the default action.
    let listen = |kind| {
        signal(kind).map_err(|e| SetupError::Failed(anyhow!("cannot listen for signals: {e}")))
    };
    let mut sigterm = listen(SignalKind::terminate())?;
    let mut sigint = listen(SignalKind::interrupt())?;
    let mut sighup = listen(SignalKind::hangup())?;

    let metrics = match reporting.metrics_addr {
        Some(addr) => Some(Metrics::install(addr, &job.name).map_err(|e| {
            SetupError::Refused(e.context(format!("cannot serve metrics on {addr}")))
        })?),
        None => None,
    };
    let prepared = resume::prepare(job, options)?;
    let progress = reporting.progress;
    progress.start(
        Some(job.chunk_count()),
        prepared.done_before + prepared.failed_before,
    );
    let (news_tx, mut news_rx) = mpsc::channel(NEWS_QUEUE);
    let mut edges = Edges::new(
        job,
        news_tx,
        prepared.output,
        prepared.failures,
        prepared.journal,
        Observers {
            notifier: Notifier::from_env(),
            report: ReportCollector::new(job.supervisor.workers, started),
            metrics,
            progress: progress.clone(),
        },
    );
    let source = chunk_source(job)?;
    let mut dispatcher = Dispatcher::new(settings(job), source, prepared.skip, Instant::now());
    dispatcher.start(Instant::now(), &mut edges);

    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut signals = Signals::default();
    let mut status = StatusClock::new(&edges.notifier, Instant::now());
    let outcome = loop {
        edges.deliver_followups(&mut dispatcher);
        edges.flush_writes();
        let now = Instant::now();
        if let Err(error) = edges.commit_if_due(now) {
            dispatcher.abort(error, now, &mut edges);
        }
        if let Some(outcome) = dispatcher.outcome() {
            break outcome;
        }
        let deadline = dispatcher.next_deadline();
        let sleep_until = deadline.unwrap_or_else(|| now + Duration::from_secs(3600));
        let number = tokio::select! {
            news = news_rx.recv() => {
                let Some(news) = news else { unreachable!("the loop holds a sender") };
                edges.take_news(news, &mut dispatcher);
                for _ in 0..NEWS_BATCH {
                    match news_rx.try_recv() {
                        Ok(news) => edges.take_news(news, &mut dispatcher),
                        Err(_) => break,
                    }
                }
                continue;
            }
            _ = tokio::time::sleep_until(sleep_until.into()), if deadline.is_some() => {
                dispatcher.handle(Event::Tick, Instant::now(), &mut edges);
                continue;
            }
            _ = housekeeping.tick() => {
                status.tick(&dispatcher, &mut edges, Instant::now());
                continue;
            }
            _ = sigterm.recv() => libc::SIGTERM,
            _ = sigint.recv() => libc::SIGINT,
            _ = sighup.recv() => libc::SIGHUP,
        };
        if signals.escalate(number) {
            // Once tokio listens for a signal its default action never comes
            // back: the third one ends the process on purpose, here.
            warn!("a third signal: killing every worker and exiting now; run again to resume");
            edges.kill_everything();
            std::process::exit(128 + signals.first.unwrap_or(number));
        }
        dispatcher.handle(Event::Signal { number }, Instant::now(), &mut edges);
    };

    progress.finish();
    let counts = dispatcher.counts();
    let failures_listed = counts.failed + prepared.failed_before > 0;
    let failed_file = failures_listed.then(|| edges.failures.path().to_owned());
    for (slot, pid) in edges.pids().collect::<Vec<_>>() {
        edges.report.sample_rss(slot, pid);
    }
    let Edges {
        output,
        failures,
        journal,
        write_error,
        report,
        ..
    } = edges;
    let outcome = match (
        outcome,
        write_error,
        finish_files(output, failures, journal),
    ) {
        (Outcome::Aborted { reason }, ..) => Outcome::Aborted { reason },
        (_, Some(error), _) | (_, None, Err(error)) => Outcome::Aborted { reason: error },
        (outcome, None, Ok(())) => outcome,
    };
    drop(prepared.lock);
    let exit_code = exit_code(&outcome, prepared.failed_before);
    let elapsed = started.elapsed();
    let output_name = output_name(&job.output.path);
    let report = report.build(&ReportInput {
        job_name: &job.name,
        outcome: &outcome,
        exit_code: i32::from(exit_code),
        counts,
        done_before: prepared.done_before,
        failed_before: prepared.failed_before,
        elapsed,
        output: &output_name,
        failed_file: failed_file.as_deref(),
    });
    Ok(RunSummary {
        report,
        exit_code,
        outcome,
        counts,
        failed_file,
    })
}

/// The exit status of a run that got going (the contract's table).
pub fn exit_code(outcome: &Outcome, failed_before: u64) -> u8 {
    match *outcome {
        Outcome::Finished { failed } if failed + failed_before == 0 => 0,
        Outcome::Finished { .. } => 1,
        // 130 for SIGINT, 143 for SIGTERM, as a shell reports them.
        Outcome::Drained { signal } => u8::try_from(128 + signal).unwrap_or(u8::MAX),
        Outcome::Aborted { .. } => 3,
    }
}

/// The last group commit, then everything made durable: the journal never
/// points past output that is on disk.
fn finish_files(
    mut output: ResultWriter,
    failures: FailureWriter,
    journal: Option<JournalWriter>,
) -> Result<(), String> {
    output
        .flush()
        .map_err(|e| format!("cannot write the output: {e}"))?;
    if let Some(journal) = journal {
        journal
            .finish(output.file())
            .map_err(|e| format!("cannot make the journal durable: {e}"))?;
    }
    output
        .finish()
        .map_err(|e| format!("cannot write the output: {e}"))?;
    failures
        .finish()
        .map_err(|e| format!("cannot write the failed file: {e}"))
}

/// The job's chunks, produced lazily as the run goes.
fn chunk_source(job: &Job) -> Result<Box<dyn ChunkSource>, SetupError> {
    let cannot_read = |path: &std::path::Path, e: std::io::Error| {
        SetupError::Failed(anyhow!("cannot read the input {}: {e}", path.display()))
    };
    // Chunks were counted from the file as the job was loaded; cutting a
    // file that changed since would disagree with that count.
    if let Some(input) = job.source.input() {
        let now = std::fs::metadata(&input.path).map_err(|e| cannot_read(&input.path, e))?;
        if now.len() != input.size || now.modified().ok() != input.modified {
            return Err(SetupError::Refused(anyhow!(
                "the input {} changed while the job was being loaded; run again",
                input.path.display()
            )));
        }
    }
    Ok(match &job.source {
        Source::Range { start, end } => Box::new(RangeChunks::new(*start, *end, job.chunk)),
        Source::File { input, delimiter } => Box::new(
            FileChunks::open(&input.path, delimiter.clone(), job.chunk)
                .map_err(|e| cannot_read(&input.path, e))?,
        ),
        Source::Lines { input, lines } => Box::new(
            LinesChunks::open(
                &input.path,
                LineCount {
                    lines: *lines,
                    size: input.size,
                },
                job.chunk,
            )
            .map_err(|e| cannot_read(&input.path, e))?,
        ),
    })
}

/// The source as workers are told it in their welcome.
fn worker_input(source: &Source) -> Input {
    // Validation made sure the path is UTF-8.
    let path = |input: &InputFile| input.path.to_string_lossy().into_owned();
    match source {
        Source::Range { .. } => Input::Range,
        Source::File { input, .. } => Input::File { path: path(input) },
        Source::Lines { input, .. } => Input::Lines { path: path(input) },
    }
}

fn settings(job: &Job) -> Settings {
    let defaults = Settings::new(job.supervisor.workers);
    Settings {
        retries: job.worker.retries,
        timeout: job.worker.timeout,
        start_timeout: job.worker.start_timeout,
        restart_max: job.supervisor.restart.max,
        restart_within: job.supervisor.restart.within,
        ordered: job.output.order == Order::Index,
        params_json: job.worker.params_json.clone(),
        input: worker_input(&job.source),
        drain_timeout: job.supervisor.drain_timeout,
        max_chunks: job.worker.max_chunks,
        seed: fastrand::u64(..),
        ..defaults
    }
}

pub fn output_name(path: &OutputPath) -> String {
    match path {
        OutputPath::Stdout => "stdout".to_owned(),
        OutputPath::File(path) => path.display().to_string(),
    }
}

/// Counts SIGTERM/SIGINT/SIGHUP: the count only goes up.
#[derive(Debug, Default)]
struct Signals {
    count: u32,
    /// Decides the exit status: 128 + the signal that started the drain.
    first: Option<i32>,
}

impl Signals {
    /// Records a signal; true when it is the third.
    fn escalate(&mut self, number: i32) -> bool {
        self.count += 1;
        self.first.get_or_insert(number);
        self.count >= 3
    }
}

/// Paces what systemd hears: STATUS= about once a second, WATCHDOG=1 at half
/// the watchdog interval, EXTEND_TIMEOUT_USEC while a drain makes progress.
struct StatusClock {
    next_status: Instant,
    watchdog: Option<(Duration, Instant)>,
    /// Chunks settled when the drain was last seen making progress.
    drain_progress: Option<u64>,
}

impl StatusClock {
    fn new(notifier: &Notifier, now: Instant) -> Self {
        Self {
            next_status: now,
            watchdog: notifier.watchdog_interval().map(|every| (every, now)),
            drain_progress: None,
        }
    }

    fn tick(&mut self, dispatcher: &Dispatcher, edges: &mut Edges<'_>, now: Instant) {
        if let Some((every, next)) = &mut self.watchdog
            && now >= *next
        {
            edges.notifier.watchdog();
            *next = now + *every;
        }
        if now < self.next_status {
            return;
        }
        self.next_status = now + STATUS_EVERY;
        let counts = dispatcher.counts();
        let draining = dispatcher.is_draining();
        let pids: Vec<(usize, u32)> = edges.pids().collect();
        let mut workers_rss = 0;
        for &(slot, pid) in &pids {
            edges.report.sample_rss(slot, pid);
            workers_rss += rss_bytes(pid).unwrap_or(0);
        }
        if let Some(metrics) = &mut edges.metrics {
            let own = rss_bytes(std::process::id()).unwrap_or(0);
            metrics.gauges(
                dispatcher.in_flight(),
                dispatcher.queued(),
                pids.len(),
                own,
                workers_rss,
            );
        }
        if !edges.notifier.is_active() {
            return;
        }
        let text = progress_status(&counts, dispatcher.in_flight(), edges.alive(), draining);
        edges.notifier.status(&text);
        if draining {
            let settled = counts.done + counts.failed + counts.cancelled;
            if self.drain_progress != Some(settled) {
                // systemd's stop timeout waits as long as the drain moves.
                edges.notifier.extend_timeout(STATUS_EVERY * 10);
                self.drain_progress = Some(settled);
            }
        }
    }
}
