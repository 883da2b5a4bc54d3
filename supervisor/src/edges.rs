//! The dispatcher's effects carried out on real processes and files: worker
//! processes and their tasks, frames decoded into events, results written to
//! the output, the failed file and the journal, and what happened reported to
//! the log and to systemd.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use protocol::SupervisorMessage;
use protocol::codec::{decode_worker_message, encode_frame};
use protocol::connection::frames;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::Job;
use crate::dispatcher::{ChunkFailure, Dispatcher, Effects, Event, Generation, RunEvent};
use crate::journal::{Entry, EntryKind, JournalWriter};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::output::{FailureWriter, ResultWriter};
use crate::process::{signal_group, spawn_worker};
use crate::progress::Progress;
use crate::reorder::ResultMeta;
use crate::report::ReportCollector;
use crate::slot::{Control, News, NewsKind, Watch, write_loop};
use crate::worker_log::{NO_CHUNK, forward_stderr};

/// A live worker as the run loop sees it.
struct SlotHandle {
    generation: Generation,
    pid: u32,
    /// Frames encoded since the last flush; sent as one buffer.
    pending: Vec<u8>,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    control: mpsc::UnboundedSender<Control>,
}

/// Everything that reports on the run, fed the dispatcher's events.
pub struct Observers {
    pub notifier: Notifier,
    pub report: ReportCollector,
    pub metrics: Option<Metrics>,
    pub progress: Progress,
}

/// The dispatcher's effects, carried out on real processes and files.
pub struct Edges<'a> {
    job: &'a Job,
    slots: Vec<Option<SlotHandle>>,
    news: mpsc::Sender<News>,
    /// Outcomes of effects (a spawn) that the dispatcher hears about as events.
    followups: VecDeque<Event<'static>>,
    pub output: ResultWriter,
    pub failures: FailureWriter,
    /// `None` when the output cannot be resumed (stdout).
    pub journal: Option<JournalWriter>,
    pub notifier: Notifier,
    /// The first error writing the output, the failed file or the journal.
    pub write_error: Option<String>,
    /// Slots whose worker has said hello at least once; READY=1 waits for all.
    ready: Vec<bool>,
    /// Per slot, the chunk its worker works on now, for its stderr lines.
    busy: Vec<Arc<AtomicU64>>,
    pub report: ReportCollector,
    pub metrics: Option<Metrics>,
    pub progress: Progress,
}

impl<'a> Edges<'a> {
    pub fn new(
        job: &'a Job,
        news: mpsc::Sender<News>,
        output: ResultWriter,
        failures: FailureWriter,
        journal: Option<JournalWriter>,
        observers: Observers,
    ) -> Self {
        let Observers {
            notifier,
            report,
            metrics,
            progress,
        } = observers;
        Self {
            job,
            slots: (0..job.supervisor.workers).map(|_| None).collect(),
            news,
            followups: VecDeque::new(),
            output,
            failures,
            journal,
            notifier,
            write_error: None,
            ready: vec![false; job.supervisor.workers],
            busy: (0..job.supervisor.workers)
                .map(|_| Arc::new(AtomicU64::new(NO_CHUNK)))
                .collect(),
            report,
            metrics,
            progress,
        }
    }

    /// Live workers' pids by slot.
    pub fn pids(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, handle)| handle.as_ref().map(|h| (slot, h.pid)))
    }

    /// Workers running now.
    pub fn alive(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// The third signal: no drain, no grace. Every worker's group is killed at
    /// once; the journal already matches the durable output.
    pub fn kill_everything(&self) {
        for handle in self.slots.iter().flatten() {
            signal_group(handle.pid, Signal::SIGKILL);
        }
    }

    /// Makes finished chunks durable when the group commit is due: output
    /// flushed, then the journal's committer syncs output and journal.
    pub fn commit_if_due(&mut self, now: Instant) -> Result<(), String> {
        let Some(journal) = &mut self.journal else {
            return Ok(());
        };
        if !journal.is_due(now) {
            return Ok(());
        }
        let committed = match self.output.flush() {
            Ok(()) => journal
                .commit(self.output.file())
                .map_err(|e| format!("cannot make the journal durable: {e}")),
            Err(e) => Err(format!("cannot write the output: {e}")),
        };
        if committed.is_err() {
            // Nothing more is journaled: the run aborts, and a later run
            // resumes from the last commit that made it to disk.
            self.journal = None;
        }
        committed
    }

    /// Notes the first write error; the run loop aborts on it.
    fn failed_write(&mut self, error: String) -> String {
        self.write_error.get_or_insert_with(|| error.clone());
        error
    }

    pub fn deliver_followups(&mut self, dispatcher: &mut Dispatcher) {
        while let Some(event) = self.followups.pop_front() {
            dispatcher.handle(event, Instant::now(), self);
        }
    }

    pub fn flush_writes(&mut self) {
        for handle in self.slots.iter_mut().flatten() {
            if !handle.pending.is_empty() {
                let bytes = std::mem::take(&mut handle.pending);
                // A closed queue means the worker is on its way out.
                let _ = handle.writer.send(bytes);
            }
        }
    }

    pub fn take_news(&mut self, news: News, dispatcher: &mut Dispatcher) {
        let News {
            slot,
            generation,
            kind,
        } = news;
        let now = Instant::now();
        match kind {
            NewsKind::Frames(batch) => {
                for payload in frames(&batch) {
                    match decode_worker_message(payload) {
                        Ok(message) => dispatcher.handle(
                            Event::Message {
                                slot,
                                generation,
                                message,
                            },
                            now,
                            self,
                        ),
                        Err(error) => {
                            let error = error.to_string();
                            return self.protocol_error(slot, generation, error, dispatcher);
                        }
                    }
                }
            }
            NewsKind::ProtocolError(error) => {
                self.protocol_error(slot, generation, error, dispatcher)
            }
            NewsKind::Disconnected => {
                dispatcher.handle(Event::Disconnected { slot, generation }, now, self)
            }
            NewsKind::Exited(status) => {
                // Drop the handle first: the dispatcher may start a successor
                // in the same slot while it handles the exit.
                if self.slots[slot]
                    .as_ref()
                    .is_some_and(|h| h.generation == generation)
                {
                    self.slots[slot] = None;
                }
                dispatcher.handle(
                    Event::Exited {
                        slot,
                        generation,
                        status,
                    },
                    now,
                    self,
                );
            }
        }
    }

    fn protocol_error(
        &mut self,
        slot: usize,
        generation: Generation,
        error: String,
        dispatcher: &mut Dispatcher,
    ) {
        let event = Event::ProtocolError {
            slot,
            generation,
            error,
        };
        dispatcher.handle(event, Instant::now(), self);
    }

    fn handle(&mut self, slot: usize, generation: Generation) -> Option<&mut SlotHandle> {
        self.slots[slot]
            .as_mut()
            .filter(|handle| handle.generation == generation)
    }
}

impl Effects for Edges<'_> {
    fn spawn(&mut self, slot: usize, generation: Generation) {
        let started = match spawn_worker(&self.job.worker, slot) {
            Ok(started) => started,
            Err(error) => {
                self.followups.push_back(Event::SpawnFailed {
                    slot,
                    generation,
                    error: error.to_string(),
                });
                return;
            }
        };
        self.busy[slot].store(NO_CHUNK, Ordering::Relaxed);
        tokio::spawn(forward_stderr(
            slot,
            started.pid,
            started.stderr,
            Arc::clone(&self.busy[slot]),
        ));
        let (reader, writer) = started.socket.into_split();
        let (writer_tx, writer_rx) = mpsc::unbounded_channel();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(writer, writer_rx));
        tokio::spawn(
            Watch {
                slot,
                generation,
                pid: started.pid,
                child: started.child,
                reader,
                control: control_rx,
                news: self.news.clone(),
            }
            .run(),
        );
        self.slots[slot] = Some(SlotHandle {
            generation,
            pid: started.pid,
            pending: Vec::new(),
            writer: writer_tx,
            control: control_tx,
        });
        self.followups.push_back(Event::Spawned {
            slot,
            generation,
            pid: started.pid,
        });
    }

    fn send(&mut self, slot: usize, generation: Generation, message: &SupervisorMessage) {
        if let Some(handle) = self.handle(slot, generation)
            && let Err(error) = encode_frame(message, &mut handle.pending)
        {
            warn!(worker = slot, %error, "cannot encode a message");
        }
    }

    fn kill(&mut self, slot: usize, generation: Generation, grace: Duration) {
        if let Some(handle) = self.handle(slot, generation) {
            let _ = handle.control.send(Control::Kill { grace });
        }
    }

    fn write_result(&mut self, meta: &ResultMeta, output: &[u8]) -> Result<(), String> {
        let (offset, len) = match self.output.write(meta, output) {
            Ok(placed) => placed,
            Err(error) => return Err(self.failed_write(error.to_string())),
        };
        if let Some(journal) = &mut self.journal {
            journal.append(&Entry {
                kind: EntryKind::Done,
                index: meta.index,
                start: meta.start,
                end: meta.end,
                offset,
                len,
            });
        }
        Ok(())
    }

    fn write_failure(&mut self, failure: &ChunkFailure<'_>) -> Result<(), String> {
        if let Err(error) = self.failures.write(failure) {
            let error = format!(
                "cannot write the failed file {}: {error}",
                self.failures.path().display()
            );
            return Err(self.failed_write(error));
        }
        if let Some(journal) = &mut self.journal {
            journal.append(&Entry {
                kind: EntryKind::Failed,
                index: failure.chunk.index,
                start: failure.chunk.start,
                end: failure.chunk.end,
                offset: 0,
                len: 0,
            });
        }
        Ok(())
    }

    fn observe(&mut self, event: &RunEvent<'_>) {
        self.report.observe(event);
        self.progress.observe(event);
        if let Some(metrics) = &mut self.metrics {
            metrics.observe(event);
        }
        match *event {
            RunEvent::ChunkDispatched { .. } | RunEvent::ChunkDone { .. } => {}
            RunEvent::WorkerBusy { slot, chunk } => {
                self.busy[slot].store(chunk.unwrap_or(NO_CHUNK), Ordering::Relaxed)
            }
            RunEvent::ChunkFailed {
                chunk,
                attempts,
                error,
                ..
            } => warn!(
                chunk = chunk.index,
                attempts, "chunk failed for good: {error}"
            ),
            RunEvent::WorkerStarted { slot, pid } => debug!(worker = slot, pid, "worker started"),
            RunEvent::WorkerReady { slot } => {
                debug!(worker = slot, "worker ready");
                self.ready[slot] = true;
                if self.ready.iter().all(|&r| r) {
                    self.notifier.ready();
                }
            }
            RunEvent::WorkerRetiring { slot } => {
                debug!(
                    worker = slot,
                    "worker had its share of chunks; replacing it"
                )
            }
            RunEvent::WorkerExited {
                slot,
                pid,
                status,
                cause,
                expected,
            } => {
                if expected {
                    debug!(worker = slot, pid, status, "worker stopped");
                } else if let Some(cause) = cause {
                    warn!(worker = slot, pid, status, "worker {cause}");
                } else {
                    warn!(worker = slot, pid, status, "worker exited unexpectedly");
                }
            }
            RunEvent::ChunkRetried {
                chunk,
                failed_attempt,
                worker,
                error,
            } => info!(
                chunk = chunk.index,
                attempt = failed_attempt,
                worker,
                "chunk failed, will retry: {error}"
            ),
            RunEvent::Aborting { reason } => warn!("aborting: {reason}"),
            RunEvent::DrainStarted { signal, in_flight } => {
                let name = Signal::try_from(signal).map_or("a signal", |s| s.as_str());
                warn!(
                    "{name}: draining; no new chunks start, {in_flight} in flight may finish \
                     (another signal cancels them)"
                );
                self.notifier.stopping();
            }
            RunEvent::Cancelling { in_flight } => {
                warn!("cancelling {in_flight} chunks in flight")
            }
            RunEvent::ChunkCancelled { chunk } => {
                debug!(chunk = chunk.index, "chunk cancelled; a later run does it")
            }
        }
    }
}
