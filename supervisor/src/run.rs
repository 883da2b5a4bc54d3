//! The run loop: connects the dispatcher to the world. It starts worker
//! processes and their tasks, decodes their frames into events, carries out
//! the dispatcher's effects, and writes the output and failed files.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use protocol::SupervisorMessage;
use protocol::codec::{decode_worker_message, encode_frame};
use protocol::connection::frames;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::chunks::RangeChunks;
use crate::config::{Job, Order, OutputPath, Source};
use crate::dispatcher::{
    ChunkFailure, Counts, Dispatcher, Effects, Event, Generation, Outcome, RunEvent, Settings,
};
use crate::output::{FailureWriter, ResultWriter};
use crate::process::spawn_worker;
use crate::reorder::ResultMeta;
use crate::slot::{Control, News, NewsKind, Watch, write_loop};

/// What a finished run reports to `main`.
#[derive(Debug)]
pub struct RunSummary {
    pub outcome: Outcome,
    pub counts: Counts,
    pub elapsed: Duration,
    pub failed_file: Option<std::path::PathBuf>,
}

/// Pending news a worker task may have queued before the loop takes it.
const NEWS_QUEUE: usize = 1024;
/// News handled before the loop flushes writes and looks at its timers.
const NEWS_BATCH: usize = 256;

/// Runs the job to its end. Errors are failures to set the run up; everything
/// that goes wrong with workers is part of the outcome.
pub async fn run(job: &Job) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let output = ResultWriter::create(&job.output.path)
        .with_context(|| format!("cannot create the output {}", output_name(&job.output.path)))?;
    std::fs::create_dir_all(&job.state_dir)
        .with_context(|| format!("cannot create the state folder {}", job.state_dir.display()))?;
    let failures = FailureWriter::new(job.state_dir.join("failed.jsonl"))
        .context("cannot clear the old failed file")?;

    let (news_tx, mut news_rx) = mpsc::channel(NEWS_QUEUE);
    let mut edges = Edges {
        job,
        slots: (0..job.supervisor.workers).map(|_| None).collect(),
        news: news_tx,
        followups: VecDeque::new(),
        output,
        failures,
        write_error: None,
    };
    let Source::Range { start, end } = job.source;
    let source = Box::new(RangeChunks::new(start, end, job.chunk));
    let mut dispatcher = Dispatcher::new(settings(job), source, Instant::now());
    dispatcher.start(Instant::now(), &mut edges);

    let outcome = loop {
        edges.deliver_followups(&mut dispatcher);
        edges.flush_writes();
        if let Some(outcome) = dispatcher.outcome() {
            break outcome;
        }
        let deadline = dispatcher.next_deadline();
        let sleep_until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            news = news_rx.recv() => {
                let Some(news) = news else { unreachable!("the loop holds a sender") };
                edges.take_news(news, &mut dispatcher);
                for _ in 0..NEWS_BATCH {
                    match news_rx.try_recv() {
                        Ok(news) => edges.take_news(news, &mut dispatcher),
                        Err(_) => break,
                    }
                }
            }
            _ = tokio::time::sleep_until(sleep_until.into()), if deadline.is_some() => {
                dispatcher.handle(Event::Tick, Instant::now(), &mut edges);
            }
        }
    };

    let Edges {
        output,
        failures,
        write_error,
        ..
    } = edges;
    let failed_file = (dispatcher.counts().failed > 0).then(|| failures.path().to_owned());
    let finished = output
        .finish()
        .map_err(|e| e.to_string())
        .and(failures.finish().map_err(|e| e.to_string()));
    let outcome = match (outcome, write_error.or(finished.err())) {
        (Outcome::Finished { .. }, Some(error)) => Outcome::Aborted {
            reason: format!("cannot write the output: {error}"),
        },
        (outcome, _) => outcome,
    };
    Ok(RunSummary {
        outcome,
        counts: dispatcher.counts(),
        elapsed: started.elapsed(),
        failed_file,
    })
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
        ..defaults
    }
}

pub fn output_name(path: &OutputPath) -> String {
    match path {
        OutputPath::Stdout => "stdout".to_owned(),
        OutputPath::File(path) => path.display().to_string(),
    }
}

/// A live worker as the run loop sees it.
struct SlotHandle {
    generation: Generation,
    /// Frames encoded since the last flush; sent as one buffer.
    pending: Vec<u8>,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    control: mpsc::UnboundedSender<Control>,
}

/// The dispatcher's effects, carried out on real processes and files.
struct Edges<'a> {
    job: &'a Job,
    slots: Vec<Option<SlotHandle>>,
    news: mpsc::Sender<News>,
    /// Outcomes of effects (a spawn) that the dispatcher hears about as events.
    followups: VecDeque<Event<'static>>,
    output: ResultWriter,
    failures: FailureWriter,
    write_error: Option<String>,
}

impl Edges<'_> {
    fn deliver_followups(&mut self, dispatcher: &mut Dispatcher) {
        while let Some(event) = self.followups.pop_front() {
            dispatcher.handle(event, Instant::now(), self);
        }
    }

    fn flush_writes(&mut self) {
        for handle in self.slots.iter_mut().flatten() {
            if !handle.pending.is_empty() {
                let bytes = std::mem::take(&mut handle.pending);
                // A closed queue means the worker is on its way out.
                let _ = handle.writer.send(bytes);
            }
        }
    }

    fn take_news(&mut self, news: News, dispatcher: &mut Dispatcher) {
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
        self.output.write(meta, output).map_err(|error| {
            let error = error.to_string();
            self.write_error.get_or_insert_with(|| error.clone());
            error
        })
    }

    fn write_failure(&mut self, failure: &ChunkFailure<'_>) -> Result<(), String> {
        warn!(
            chunk = failure.chunk.index,
            attempts = failure.errors.len(),
            "chunk failed for good: {}",
            failure.errors.last().map_or("", |e| e.error.as_str())
        );
        self.failures.write(failure).map_err(|error| {
            format!(
                "cannot write the failed file {}: {error}",
                self.failures.path().display()
            )
        })
    }

    fn observe(&mut self, event: &RunEvent<'_>) {
        match *event {
            RunEvent::WorkerStarted { slot, pid } => debug!(worker = slot, pid, "worker started"),
            RunEvent::WorkerReady { slot } => debug!(worker = slot, "worker ready"),
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
        }
    }
}
