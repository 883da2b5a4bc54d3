//! The run loop: sets a run up (lock, assessment, store, source, workers),
//! then feeds the dispatcher what happens (worker updates, timers, chunks
//! ready, signals) and lets [`Edges`] carry out its effects, committing the
//! store in groups, until the run has an outcome.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tokio::sync::{Notify, mpsc};
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

use crate::assess::{self, Lock, Options};
use crate::chunks::{
    AutoChunks, ChunkSource, Cutter, Cutting, FileChunks, FileCursor, Layout, LineCount,
    LinesChunks, LinesCursor, Prefetch, RangeChunks, RangeCursor, Settled, SizedCutter, Sizer,
    StdinChunks,
};
use crate::config::{Job, Source, defaults};
use crate::descriptors;
use crate::dispatcher::{Counts, Dispatcher, Event, Outcome, Settings};
use crate::edges::Edges;
use crate::journal;
use crate::observers::Observers;
use crate::observers::Snapshot;
use crate::observers::metrics::Metrics;
use crate::observers::notify::Notifier;
use crate::observers::progress::Progress;
use crate::observers::report::{Report, ReportCollector, ReportInput, ShardReport};
use crate::signals::Escalation;
use crate::store::{self, FileSpill};
use crate::workers::{self, UpdateKind, WorkerPool, WorkerUpdate, frame_events};

/// Why a run could not be set up.
#[derive(Debug)]
pub enum SetupError {
    /// The job's state forbids running it as asked; nothing was started:
    /// locked by another supervisor, a changed job, nothing to retry.
    Refused(anyhow::Error),
    /// The output or the state folder cannot be written.
    Failed(anyhow::Error),
}

impl From<journal::JournalError> for SetupError {
    /// The machine running out of what the state needs fails the run (exit
    /// 3, which a service manager may retry); anything else about the state
    /// is a refusal (exit 2): run again as it is, it would change nothing.
    fn from(error: journal::JournalError) -> Self {
        if error.is_exhaustion() {
            SetupError::Failed(error.into())
        } else {
            SetupError::Refused(error.into())
        }
    }
}

/// What reports on the run besides the log, as the command line asked.
pub struct Reporting {
    pub progress: Progress,
    pub metrics_addr: Option<SocketAddr>,
}

/// How a run that got going ended.
pub enum RunEnd {
    /// The dispatcher decided an outcome and the store is flushed.
    Ended(Box<RunSummary>),
    /// A third signal: every worker was killed at once and nothing flushed
    /// beyond the last commit. `signal` is the one that started the drain.
    Killed { signal: i32 },
}

/// What an ended run tells `main`.
pub struct RunSummary {
    pub outcome: Outcome,
    pub counts: Counts,
    /// Chunks that failed for good in an earlier run and were not retried.
    pub failed_before: u64,
    /// Where the failed chunks are listed, when there are any.
    pub failed_file: Option<PathBuf>,
    done_before: u64,
    elapsed: Duration,
    job_name: String,
    shard: Option<ShardReport>,
    output: String,
    collector: ReportCollector,
}

impl RunSummary {
    /// The run report, with the exit status `main` decided.
    pub fn report(&self, exit_code: u8) -> Report {
        self.collector.build(&ReportInput {
            job_name: &self.job_name,
            shard: self.shard.clone(),
            outcome: &self.outcome,
            exit_code: i32::from(exit_code),
            counts: self.counts,
            done_before: self.done_before,
            failed_before: self.failed_before,
            elapsed: self.elapsed,
            output: &self.output,
            failed_file: self.failed_file.as_deref(),
            log_lines_dropped: crate::logging::dropped(),
        })
    }
}

/// Pending updates a worker task may have queued before the loop takes them.
const UPDATE_QUEUE: usize = 1024;
/// Updates handled before the loop flushes writes and looks at its timers.
const UPDATE_BATCH: usize = 256;
/// How often the loop looks at the group commit and the heartbeat when
/// nothing else happens.
const HOUSEKEEPING: Duration = Duration::from_millis(20);
/// A wait this much longer than the loop ever waits means the supervisor
/// was stopped, not that workers were slow.
const PAUSE: Duration = Duration::from_secs(1);
/// How often the loop looks for what workers left behind.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long the end of a run waits for killed leftovers to be reaped.
const SETTLE_ORPHANS: Duration = Duration::from_secs(2);
/// How long the third signal waits for killed workers to be reaped.
const REAP_AFTER_KILL: Duration = Duration::from_secs(2);

/// Runs (or resumes) the job to its end. `signals` carries the numbers of
/// SIGTERM, SIGINT and SIGHUP as they arrive (see [`crate::signals::listen`]);
/// tests send their own. Errors are failures to set the run up; everything
/// that goes wrong with workers is part of the outcome.
pub async fn run(
    job: &Job,
    options: Options,
    reporting: Reporting,
    mut signals: mpsc::UnboundedReceiver<i32>,
) -> Result<RunEnd, SetupError> {
    let started = Instant::now();
    // Before anything is written: a run that would run out of descriptors
    // is refused, rather than every worker's spawn failing like a crash.
    let limit =
        descriptors::ensure(job.supervisor.workers).map_err(|e| SetupError::Refused(e.into()))?;
    if limit.now != limit.was {
        tracing::debug!("open-file limit raised from {} to {}", limit.was, limit.now);
    }
    let metrics = match reporting.metrics_addr {
        Some(addr) => Some(
            Metrics::install(addr, &job.name, job.shard.as_ref()).map_err(|e| {
                SetupError::Refused(e.context(format!("cannot serve metrics on {addr}")))
            })?,
        ),
        None => None,
    };
    // What workers leave behind becomes ours to kill, not init's to keep.
    if let Err(error) = workers::become_subreaper() {
        warn!(
            "cannot adopt what workers leave behind ({error}); a process a worker detaches may outlive the run"
        );
    }
    // Held for the whole run: a second supervisor on the same job is refused.
    let lock = journal::lock_state(&job.state_dir).map_err(SetupError::from)?;
    if let Some(shard) = &job.shard {
        info!("running as shard {}", shard.describe(job.chunk_count()));
    }
    let assessment = assess::assess(job, options, Lock::Held);
    let mut opened = store::open(job, assessment.start)?;
    let settled = std::mem::take(&mut opened.settled);
    let (source, source_ready) = chunk_source(job, settled, opened.settled_only)?;
    let progress = reporting.progress;
    progress.start(
        job.known_block_len(),
        opened.done_before + opened.failed_before,
    );
    let (updates_tx, mut updates) = mpsc::channel(UPDATE_QUEUE);
    let workers = job.supervisor.workers;
    let mut edges = Edges {
        workers: WorkerPool::new(job.worker.clone(), workers, updates_tx),
        store: opened.store,
        observers: Observers::new(
            workers,
            ReportCollector::new(workers, started),
            progress,
            metrics,
            Notifier::from_env(),
            Instant::now(),
        ),
    };
    let spill = FileSpill::new_in(&job.state_dir).map_err(|e| {
        SetupError::Failed(anyhow!(
            "cannot make room for results in {}: {e}",
            job.state_dir.display()
        ))
    })?;
    let mut dispatcher =
        Dispatcher::new(Settings::for_job(job), source, opened.skip, Instant::now())
            .with_spill(Box::new(spill));
    dispatcher.start(Instant::now(), &mut edges);

    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut escalation = Escalation::default();
    let mut last_sweep = Instant::now();
    // Dispatch waits while settled chunks wait for the disk; the turn that
    // sees them handed on (the housekeeping timer wakes it) restarts it.
    let mut was_backlogged = false;
    let outcome = loop {
        edges.deliver_spawn_events(&mut dispatcher);
        edges.workers.flush();
        let now = Instant::now();
        if let Err(error) = edges.store.commit_if_due(now) {
            dispatcher.abort(error, now, &mut edges);
        }
        let backlogged = edges.store.is_backlogged();
        if was_backlogged && !backlogged {
            // The disk caught up: dispatch, which waited for it, goes on.
            dispatcher.handle(Event::Tick, now, &mut edges);
        }
        was_backlogged = backlogged;
        if let Some(outcome) = dispatcher.outcome() {
            break outcome;
        }
        let deadline = dispatcher.next_deadline();
        let sleep_until = deadline.unwrap_or_else(|| now + Duration::from_secs(3600));
        let woke = tokio::select! {
            Some(update) = updates.recv() => Woke::Update(update),
            () = tokio::time::sleep_until(sleep_until.into()), if deadline.is_some() => Woke::Deadline,
            () = source_ready.notified() => Woke::SourceReady,
            _ = housekeeping.tick() => Woke::Housekeeping,
            Some(number) = signals.recv() => Woke::Signal(number),
        };
        let woken = Instant::now();
        // The loop never waits longer than a housekeeping interval: a far
        // longer gap means the supervisor itself was stopped.
        let gap = woken.saturating_duration_since(now);
        if gap > PAUSE {
            warn!(
                "the supervisor did not run for {}; workers' deadlines move by as much",
                crate::dispatcher::humanize(gap)
            );
            dispatcher.postpone_deadlines(gap.saturating_sub(HOUSEKEEPING));
        }
        match woke {
            Woke::Update(update) if matches!(update.kind, UpdateKind::Exited { .. }) => {
                take_update(update, &mut dispatcher, &mut edges);
                // Whatever the worker left behind is ours by now.
                sweep_orphans();
            }
            Woke::Update(update) => {
                take_update(update, &mut dispatcher, &mut edges);
                for _ in 0..UPDATE_BATCH {
                    match updates.try_recv() {
                        Ok(update) => take_update(update, &mut dispatcher, &mut edges),
                        Err(_) => break,
                    }
                }
            }
            Woke::Deadline => {
                // Answers that arrived by now count before a timeout is
                // judged: the tasks read their sockets first.
                tokio::task::yield_now().await;
                while let Ok(update) = updates.try_recv() {
                    take_update(update, &mut dispatcher, &mut edges);
                }
                dispatcher.handle(Event::Tick, Instant::now(), &mut edges);
            }
            Woke::SourceReady => {
                dispatcher.handle(Event::SourceReady, Instant::now(), &mut edges);
            }
            Woke::Housekeeping => {
                if last_sweep.elapsed() >= SWEEP_EVERY {
                    last_sweep = Instant::now();
                    sweep_orphans();
                }
                let pids: Vec<(usize, u32)> = edges.workers.pids().collect();
                let snapshot = Snapshot {
                    counts: dispatcher.counts(),
                    in_flight: dispatcher.in_flight(),
                    queued: dispatcher.queued(),
                    draining: dispatcher.is_draining(),
                    pids: &pids,
                };
                edges.observers.tick(Instant::now(), &snapshot);
            }
            Woke::Signal(number) => {
                if escalation.escalate(number) {
                    // Once the supervisor listens for a signal its default
                    // action never comes back: the third one ends the run on
                    // purpose. The journal already matches the durable output.
                    warn!(
                        "a third signal: killing every worker and exiting now; run again to resume"
                    );
                    edges.workers.kill_everything();
                    reap(&mut updates, &mut edges.workers).await;
                    edges.observers.progress.finish();
                    return Ok(RunEnd::Killed {
                        signal: escalation.first().unwrap_or(number),
                    });
                }
                dispatcher.handle(Event::Signal { number }, Instant::now(), &mut edges);
            }
        }
    };

    settle_orphans().await;
    let Edges {
        store,
        mut observers,
        ..
    } = edges;
    let counts = dispatcher.counts();
    let failed_file =
        (counts.failed + opened.failed_before > 0).then(|| store.failed_file().to_owned());
    let outcome = match (outcome, store.finish()) {
        (Outcome::Aborted { reason }, _) => Outcome::Aborted { reason },
        (_, Err(reason)) => Outcome::Aborted { reason },
        (Outcome::Finished { .. }, Ok(())) if let Some(reason) = input_changed(job) => {
            Outcome::Aborted { reason }
        }
        (outcome, Ok(())) => outcome,
    };
    observers.finish(&outcome, &counts);
    drop(lock);
    Ok(RunEnd::Ended(Box::new(RunSummary {
        outcome,
        counts,
        failed_before: opened.failed_before,
        failed_file,
        done_before: opened.done_before,
        elapsed: started.elapsed(),
        job_name: job.name.clone(),
        shard: job
            .shard
            .as_ref()
            .map(|shard| ShardReport::new(shard, job.chunk_count())),
        output: job.output.path.name(),
        collector: observers.report,
    })))
}

/// Whether the input file changed since the job was loaded: its chunks were
/// cut from one version and may have been read from another, so a run that
/// seems to have finished has an output nobody can trust.
fn input_changed(job: &Job) -> Option<String> {
    let input = job.source.input()?;
    let now = std::fs::metadata(&input.path).ok();
    let same = now
        .as_ref()
        .is_some_and(|meta| meta.len() == input.size && meta.modified().ok() == input.modified);
    (!same).then(|| {
        format!(
            "the input {} changed during the run: its output may mix the old and the new; \
             run again with --fresh",
            input.path.display()
        )
    })
}

/// What woke the run loop.
enum Woke {
    Update(WorkerUpdate),
    Deadline,
    SourceReady,
    Housekeeping,
    Signal(i32),
}

/// Kills what the workers left behind and waits, briefly, until it is
/// reaped: no process a worker started outlives the run.
async fn settle_orphans() {
    let deadline = tokio::time::Instant::now() + SETTLE_ORPHANS;
    while sweep_orphans() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sweep_orphans();
}

/// Ends what workers left behind (see [`workers::sweep_orphans`]), saying
/// so: a worker that leaks processes is worth knowing about. Returns how
/// many it ended.
fn sweep_orphans() -> usize {
    let ended = workers::sweep_orphans();
    if let Some(((pid, name), rest)) = ended.split_first() {
        let more = match rest.len() {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        warn!(
            "ended pid {pid} ({name}){more}: left running by a worker, outside its process group"
        );
    }
    ended.len()
}

/// Waits, briefly, for the tasks of killed workers to reap them, so that
/// none is left a zombie of a process that goes on (a test, say). A worker
/// its task cannot reap in time is left to the kernel's SIGKILL.
async fn reap(updates: &mut mpsc::Receiver<WorkerUpdate>, workers: &mut WorkerPool) {
    let deadline = tokio::time::Instant::now() + REAP_AFTER_KILL;
    while workers.alive() > 0 {
        match tokio::time::timeout_at(deadline, updates.recv()).await {
            Ok(Some(WorkerUpdate {
                slot,
                generation,
                kind: UpdateKind::Exited { .. },
                ..
            })) => workers.forget(slot, generation),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// Hands what a worker's task reported to the dispatcher, as events.
fn take_update(update: WorkerUpdate, dispatcher: &mut Dispatcher, edges: &mut Edges) {
    let WorkerUpdate {
        slot,
        generation,
        kind,
        held: _held,
    } = update;
    let now = Instant::now();
    match kind {
        UpdateKind::Frames(batch) => {
            for event in frame_events(slot, generation, &batch) {
                dispatcher.handle(event, now, edges);
            }
            edges.workers.recycle(batch);
        }
        UpdateKind::Broken(error) => {
            let event = Event::ProtocolError {
                slot,
                generation,
                error,
            };
            dispatcher.handle(event, now, edges);
        }
        UpdateKind::Disconnected => {
            dispatcher.handle(Event::Disconnected { slot, generation }, now, edges);
        }
        UpdateKind::Exited { status, last_words } => {
            // The handle goes first: the dispatcher may start a successor in
            // the same slot while it handles the exit.
            edges.workers.forget(slot, generation);
            let event = Event::Exited {
                slot,
                generation,
                status,
                last_words,
            };
            dispatcher.handle(event, now, edges);
        }
    }
}

/// The job's chunks, produced lazily as the run goes: a range on the loop
/// itself, a file's or lines' cut ahead on a thread. The `Notify` wakes the
/// loop when a source that had no chunk ready has some again. `settled` are
/// the chunks of a `chunk = "auto"` job that an earlier run settled, and
/// with `settled_only` no other chunk is cut.
fn chunk_source(
    job: &Job,
    settled: Vec<Settled>,
    settled_only: bool,
) -> Result<(Box<dyn ChunkSource>, Arc<Notify>), SetupError> {
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
    if let Some(auto) = job.auto {
        return auto_source(job, auto.target, settled, settled_only);
    }
    let cutter: Box<dyn Cutter> = match &job.source {
        Source::Range { start, end } => {
            let never = Arc::new(Notify::new());
            let range = RangeChunks::new(*start, *end, job.chunk).within(job.block());
            return Ok((Box::new(range), never));
        }
        Source::Stdin { delimiter } => {
            let stdin = crate::chunks::stdin_descriptor()
                .map_err(|e| SetupError::Failed(anyhow!("cannot read standard input: {e}")))?;
            let terminal = if std::io::IsTerminal::is_terminal(&stdin) {
                " (a terminal: end it with Ctrl-D)"
            } else {
                ""
            };
            info!(
                "the input is standard input{terminal}: it is read once, so this run keeps no \
                 journal and cannot be resumed"
            );
            let cutting = Cutting::new(delimiter.clone(), job.chunk);
            let stdin = StdinChunks::start(stdin, cutting).map_err(|e| {
                SetupError::Failed(anyhow!("cannot start reading standard input: {e}"))
            })?;
            let ready = stdin.ready();
            return Ok((Box::new(stdin), ready));
        }
        Source::File {
            input,
            delimiter,
            chunks,
        } => Box::new(
            FileChunks::open(&input.path, delimiter.clone(), job.chunk)
                .map_err(|e| cannot_read(&input.path, e))?
                .with_total(*chunks)
                .within(job.block()),
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
            .map_err(|e| cannot_read(&input.path, e))?
            .within(job.block()),
        ),
    };
    let prefetch = Prefetch::start(cutter)
        .map_err(|e| SetupError::Failed(anyhow!("cannot start cutting the input: {e}")))?;
    let ready = prefetch.ready();
    Ok((Box::new(prefetch), ready))
}

/// A `chunk = "auto"` job's chunks: sized as the run goes, around the ones
/// an earlier run settled.
fn auto_source(
    job: &Job,
    target: Duration,
    settled: Vec<Settled>,
    settled_only: bool,
) -> Result<(Box<dyn ChunkSource>, Arc<Notify>), SetupError> {
    let cannot_read = |path: &std::path::Path, e: std::io::Error| {
        SetupError::Failed(anyhow!("cannot read the input {}: {e}", path.display()))
    };
    let max = match job.source {
        Source::File { .. } => defaults::MAX_AUTO_FILE_CHUNK,
        Source::Range { .. } | Source::Lines { .. } | Source::Stdin { .. } => u64::MAX,
    };
    let sizer = Sizer::new(target, job.supervisor.workers, job.chunk, max);
    let layout = Layout::new(settled, settled_only);
    let cutter: Box<dyn SizedCutter> = match &job.source {
        Source::Range { start, end } => {
            let cursor = Box::new(RangeCursor::new(*start, *end));
            let source = AutoChunks::inline(sizer, layout, cursor);
            let ready = source.ready();
            return Ok((Box::new(source), ready));
        }
        Source::File {
            input, delimiter, ..
        } => Box::new(
            FileCursor::open(&input.path, delimiter.clone())
                .map_err(|e| cannot_read(&input.path, e))?,
        ),
        Source::Lines { input, lines } => Box::new(
            LinesCursor::open(
                &input.path,
                LineCount {
                    lines: *lines,
                    size: input.size,
                },
            )
            .map_err(|e| cannot_read(&input.path, e))?,
        ),
        // The job file refuses it: blocks are cut before any is timed.
        Source::Stdin { .. } => {
            return Err(SetupError::Refused(anyhow!(
                "`chunk = \"auto\"` is not for a `stdin` source"
            )));
        }
    };
    let source = AutoChunks::threaded(sizer, layout, cutter)
        .map_err(|e| SetupError::Failed(anyhow!("cannot start cutting the input: {e}")))?;
    let ready = source.ready();
    Ok((Box::new(source), ready))
}
