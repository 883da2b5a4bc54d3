//! The dispatcher: the single owner of a run's state.
//!
//! It is fed [`Event`]s (a worker spoke, disconnected or exited, a timer fired)
//! and answers through the [`Effects`] it is handed: spawn, send, kill, write.
//! It does no I/O and reads no clock (`now` comes with every call), so it is
//! tested without processes. It never formats output either: what happened
//! goes out as [`RunEvent`]s for whoever reports on the run.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use protocol::message::{Assign, Input, Welcome};
use protocol::{PROTOCOL_VERSION, SupervisorMessage, WorkerMessage};

use fixedbitset::FixedBitSet;

use crate::chunks::{ChunkSource, ChunkSpec};
use crate::reorder::{Reorder, ResultMeta};

/// Numbers each worker process the run starts, so that news from a replaced
/// worker is never mistaken for news from its successor in the same slot.
pub type Generation = u64;

/// The knobs of a run, already validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: usize,
    /// Attempts after the first before a chunk fails for good.
    pub retries: u32,
    /// Per attempt, measured from when the worker can start on the chunk.
    pub timeout: Option<Duration>,
    /// Time a new worker gets to say hello.
    pub start_timeout: Duration,
    /// More unexpected exits than `restart_max` within `restart_within` abort the run.
    pub restart_max: u32,
    pub restart_within: Duration,
    /// `order = "index"`: results are written in index order.
    pub ordered: bool,
    /// The job's params as JSON, handed to every worker in its welcome.
    pub params_json: String,
    /// The job's source as workers see it, also in the welcome.
    pub input: Input,
    /// Chunks outstanding on one worker at most.
    pub max_in_flight: usize,
    /// How much queued work to keep at a worker beyond the chunk it runs:
    /// enough to hide a round trip, little enough to balance the tail.
    pub queue_target: Duration,
    /// After `Stop`, time a worker gets to exit by itself.
    pub stop_grace: Duration,
    /// Between the polite and the hard kill.
    pub kill_grace: Duration,
    /// Results that may wait for a lower index, in chunks and in bytes.
    pub reorder_capacity: usize,
    pub reorder_max_bytes: usize,
    /// On the first SIGTERM/SIGINT, time chunks in flight get to finish.
    pub drain_timeout: Duration,
    /// Replace a worker after it was given this many chunks; 0 = never.
    pub max_chunks: u64,
    /// Delay before restarting a slot whose worker crashed again: doubles
    /// from `backoff_base` per repeated crash, capped, with ±50% jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Seeds the jitter, so tests are repeatable.
    pub seed: u64,
}

impl Settings {
    pub fn new(workers: usize) -> Self {
        Self {
            workers,
            retries: 2,
            timeout: None,
            start_timeout: Duration::from_secs(30),
            restart_max: 10,
            restart_within: Duration::from_secs(60),
            ordered: true,
            params_json: "{}".to_owned(),
            input: Input::Range,
            max_in_flight: 64,
            queue_target: Duration::from_millis(5),
            stop_grace: Duration::from_secs(10),
            kill_grace: Duration::from_secs(2),
            reorder_capacity: (workers * 64 * 4).max(4096),
            reorder_max_bytes: 256 << 20,
            drain_timeout: Duration::from_secs(30),
            max_chunks: 0,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            seed: 0,
        }
    }
}

/// What the dispatcher is told.
#[derive(Debug)]
pub enum Event<'a> {
    Spawned {
        slot: usize,
        generation: Generation,
        pid: u32,
    },
    SpawnFailed {
        slot: usize,
        generation: Generation,
        error: String,
    },
    Message {
        slot: usize,
        generation: Generation,
        message: WorkerMessage<'a>,
    },
    /// The worker's bytes were not a valid frame or message.
    ProtocolError {
        slot: usize,
        generation: Generation,
        error: String,
    },
    /// The worker's end of the socket closed.
    Disconnected { slot: usize, generation: Generation },
    /// The worker process was reaped; `status` says how it ended. Every frame
    /// it sent has been delivered before this.
    Exited {
        slot: usize,
        generation: Generation,
        status: String,
    },
    /// A deadline from [`Dispatcher::next_deadline`] may have passed.
    Tick,
    /// SIGTERM, SIGINT or SIGHUP reached the supervisor. The first drains, the
    /// second cancels what is in flight; the run loop handles a third itself.
    Signal { number: i32 },
}

/// One failed attempt of a chunk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AttemptError {
    pub attempt: u32,
    pub worker: u32,
    pub error: String,
}

/// A chunk that ran out of attempts.
#[derive(Debug)]
pub struct ChunkFailure<'a> {
    pub chunk: ChunkSpec,
    pub errors: &'a [AttemptError],
}

/// Why the supervisor ended a worker. Displayed, it completes "worker N …",
/// the words logs, reports and the failed file use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillCause {
    /// A chunk at the head of its queue ran past `timeout`.
    TimedOut {
        after: Duration,
        chunk: u64,
        outstanding: usize,
    },
    /// Undecodable bytes, an oversized frame, or a message out of place.
    BrokeProtocol(String),
    /// Its socket closed while the process went on.
    Disconnected,
    /// No hello within `start_timeout`.
    SilentStart(Duration),
    /// Still running `stop_grace` after `Stop`.
    IgnoredStop(Duration),
    /// Still holding chunks after the drain cancelled them.
    IgnoredCancel,
    SecondSignal,
    Aborting,
    NotNeeded,
}

impl std::fmt::Display for KillCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TimedOut {
                after,
                chunk,
                outstanding: 1,
            } => write!(f, "timed out after {} on chunk {chunk}", humanize(*after)),
            Self::TimedOut {
                after,
                chunk,
                outstanding,
            } => write!(
                f,
                "timed out after {} with {outstanding} chunks outstanding, the first {chunk}",
                humanize(*after)
            ),
            Self::BrokeProtocol(detail) => write!(f, "broke the protocol: {detail}"),
            Self::Disconnected => f.write_str("closed its connection"),
            Self::SilentStart(within) => {
                write!(f, "did not say hello within {}", humanize(*within))
            }
            Self::IgnoredStop(within) => write!(
                f,
                "did not exit within {} of being stopped",
                humanize(*within)
            ),
            Self::IgnoredCancel => f.write_str("did not give up its chunks when cancelled"),
            Self::SecondSignal => f.write_str("was stopped by a second signal"),
            Self::Aborting => f.write_str("the run is aborting"),
            Self::NotNeeded => f.write_str("was not needed any more"),
        }
    }
}

/// What happened, for logs, progress and reports.
#[derive(Debug)]
pub enum RunEvent<'a> {
    WorkerStarted {
        slot: usize,
        pid: u32,
    },
    WorkerReady {
        slot: usize,
    },
    /// The worker has had its share of chunks (`max_chunks`) and is replaced.
    WorkerRetiring {
        slot: usize,
    },
    WorkerExited {
        slot: usize,
        pid: Option<u32>,
        status: &'a str,
        /// Why the supervisor stopped it, if it did.
        cause: Option<&'a KillCause>,
        /// Part of an orderly stop rather than a crash.
        expected: bool,
    },
    ChunkRetried {
        chunk: ChunkSpec,
        failed_attempt: u32,
        worker: u32,
        error: &'a str,
    },
    Aborting {
        reason: &'a str,
    },
    /// No more chunks start; those in flight get until the drain timeout.
    DrainStarted {
        signal: i32,
        in_flight: usize,
    },
    /// Chunks still in flight are being cancelled (drain timeout or a second signal).
    Cancelling {
        in_flight: usize,
    },
    ChunkCancelled {
        chunk: ChunkSpec,
    },
    ChunkDispatched {
        chunk: ChunkSpec,
        attempt: u32,
        worker: usize,
    },
    ChunkDone {
        chunk: ChunkSpec,
        attempt: u32,
        worker: usize,
        /// The worker's own time for the chunk.
        seconds: f64,
        /// How long it sat queued at the worker before it could start.
        waited: f64,
    },
    /// Out of attempts: written to the failed file.
    ChunkFailed {
        chunk: ChunkSpec,
        attempts: u32,
        /// The slot of the last attempt.
        worker: usize,
        error: &'a str,
    },
    /// The chunk the worker in `slot` is working on now changed.
    WorkerBusy {
        slot: usize,
        chunk: Option<u64>,
    },
}

/// What the dispatcher asks of the world.
pub trait Effects {
    /// Start a worker process for `slot`; report back with `Spawned` or
    /// `SpawnFailed`, and later `Exited`.
    fn spawn(&mut self, slot: usize, generation: Generation);
    fn send(&mut self, slot: usize, generation: Generation, message: &SupervisorMessage);
    /// Stop the worker's process group: TERM, `grace`, KILL; `Exited` follows.
    fn kill(&mut self, slot: usize, generation: Generation, grace: Duration);
    /// A finished chunk, in output order.
    fn write_result(&mut self, meta: &ResultMeta, output: &[u8]) -> Result<(), String>;
    fn write_failure(&mut self, failure: &ChunkFailure<'_>) -> Result<(), String>;
    fn observe(&mut self, event: &RunEvent<'_>);
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every chunk was written or failed for good.
    Finished {
        failed: u64,
    },
    /// Stopped by a signal after the chunks in flight finished or were
    /// cancelled; running again resumes.
    Drained {
        signal: i32,
    },
    Aborted {
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: Option<u64>,
    pub done: u64,
    pub failed: u64,
    pub retried: u64,
    /// Workers that exited unexpectedly and were replaced or would have been.
    pub crashes: u64,
    /// Chunks abandoned by a drain; a later run does them.
    pub cancelled: u64,
    /// Chunks an earlier run settled, skipped by this one.
    pub skipped: u64,
}

/// How long a finished chunk took at its worker, and how long it waited there.
#[derive(Debug, Clone, Copy)]
struct Timing {
    seconds: f64,
    waited: f64,
}

#[derive(Debug, Clone, Copy)]
struct Work {
    chunk: ChunkSpec,
    attempt: u32,
    /// When it was last sent to a worker.
    sent_at: Instant,
    /// It was outstanding on a worker that died with several chunks, so which
    /// one killed it is unknown. A suspect runs alone on a worker: should that
    /// worker die too, the blame is certain.
    suspect: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SlotPhase {
    /// Restarting after repeated crashes, once the backoff has passed.
    Waiting {
        until: Instant,
    },
    Starting {
        deadline: Instant,
    },
    Ready,
    Stopping {
        deadline: Instant,
    },
    Killing,
    Gone,
}

#[derive(Debug)]
struct Slot {
    generation: Generation,
    phase: SlotPhase,
    pid: Option<u32>,
    /// In the order sent; the worker works on the front one.
    in_flight: VecDeque<Work>,
    /// Since when the front chunk has been the one the worker works on.
    head_since: Instant,
    /// Why the supervisor is killing it; the first reason wins.
    cause: Option<KillCause>,
    /// Chunks given to this worker process; counts against `max_chunks`.
    assigned: u64,
    /// Crashes of this slot since its last finished chunk; sizes the backoff.
    crash_streak: u32,
}

#[derive(Debug, Clone, PartialEq)]
enum RunPhase {
    Running,
    Draining {
        signal: i32,
        /// When to cancel what is in flight, then when to kill what still is.
        deadline: Option<Instant>,
        cancelled: bool,
    },
    /// Workers are being stopped; the outcome is decided.
    Ending(Outcome),
}

pub struct Dispatcher {
    settings: Settings,
    source: Box<dyn ChunkSource>,
    /// A fresh chunk taken from the source that the reorder window did not yet admit.
    peeked: Option<ChunkSpec>,
    source_done: bool,
    /// Chunks waiting for another attempt, lowest index first so that ordered
    /// output is held up as little as possible.
    retries: BTreeMap<u64, Work>,
    /// Errors of chunks that have failed at least once and are not settled.
    errors: HashMap<u64, Vec<AttemptError>>,
    slots: Vec<Slot>,
    next_generation: Generation,
    reorder: Option<Reorder>,
    crashes: VecDeque<Instant>,
    /// Moving average of chunk durations as the workers time them; sizes the
    /// pipeline to each worker.
    average_seconds: Option<f64>,
    in_flight: usize,
    counts: Counts,
    phase: RunPhase,
    /// Chunks an earlier run settled: never dispatched, passed over in order.
    skip: Option<FixedBitSet>,
    rng: fastrand::Rng,
    started: Instant,
    /// Fresh chunks taken from the source and sent.
    fresh_dispatched: u64,
}

impl Dispatcher {
    /// `skip` holds the chunks an earlier run already settled (done or
    /// failed for good): they are neither dispatched nor waited for.
    pub fn new(
        settings: Settings,
        source: Box<dyn ChunkSource>,
        skip: Option<FixedBitSet>,
        now: Instant,
    ) -> Self {
        let reorder = settings.ordered.then(|| {
            Reorder::new(
                settings.reorder_capacity,
                settings.reorder_max_bytes,
                skip.clone(),
            )
        });
        let slots = (0..settings.workers)
            .map(|_| Slot {
                generation: 0,
                phase: SlotPhase::Gone,
                pid: None,
                in_flight: VecDeque::with_capacity(settings.max_in_flight),
                head_since: now,
                cause: None,
                assigned: 0,
                crash_streak: 0,
            })
            .collect();
        let counts = Counts {
            total: source.total(),
            skipped: skip.as_ref().map_or(0, |s| s.count_ones(..) as u64),
            ..Counts::default()
        };
        let rng = fastrand::Rng::with_seed(settings.seed);
        Self {
            settings,
            source,
            peeked: None,
            source_done: false,
            retries: BTreeMap::new(),
            errors: HashMap::new(),
            slots,
            next_generation: 1,
            reorder,
            crashes: VecDeque::new(),
            average_seconds: None,
            in_flight: 0,
            counts,
            phase: RunPhase::Running,
            skip,
            rng,
            started: now,
            fresh_dispatched: 0,
        }
    }

    /// Starts every worker slot.
    pub fn start(&mut self, now: Instant, fx: &mut impl Effects) {
        for slot in 0..self.slots.len() {
            self.spawn(slot, now, fx);
        }
        self.settle(now, fx);
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Chunks sent to workers and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Once every worker is gone after the run finished or aborted.
    pub fn outcome(&self) -> Option<Outcome> {
        if self.slots.iter().any(|slot| slot.phase != SlotPhase::Gone) {
            return None;
        }
        match &self.phase {
            RunPhase::Ending(outcome) => Some(outcome.clone()),
            RunPhase::Running | RunPhase::Draining { .. } => None,
        }
    }

    /// The earliest moment a `Tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let drain = match self.phase {
            RunPhase::Draining { deadline, .. } => deadline,
            _ => None,
        };
        self.slots
            .iter()
            .filter_map(|slot| match slot.phase {
                SlotPhase::Starting { deadline } | SlotPhase::Stopping { deadline } => {
                    Some(deadline)
                }
                SlotPhase::Waiting { until } => Some(until),
                SlotPhase::Ready if !slot.in_flight.is_empty() => {
                    self.settings.timeout.map(|t| slot.head_since + t)
                }
                _ => None,
            })
            .chain(drain)
            .min()
    }

    /// Chunks waiting to be sent: retries, and fresh ones not yet taken
    /// from the source.
    pub fn queued(&self) -> u64 {
        let untouched = self.counts.total.map_or(0, |total| {
            total.saturating_sub(self.counts.skipped + self.fresh_dispatched)
        });
        untouched + self.retries.len() as u64
    }

    /// Whether a drain is under way.
    pub fn is_draining(&self) -> bool {
        matches!(self.phase, RunPhase::Draining { .. })
    }

    /// Ends the run early: every worker is killed, chunks in flight are abandoned.
    pub fn abort(&mut self, reason: String, now: Instant, fx: &mut impl Effects) {
        if matches!(self.phase, RunPhase::Ending(Outcome::Aborted { .. })) {
            return;
        }
        fx.observe(&RunEvent::Aborting { reason: &reason });
        self.phase = RunPhase::Ending(Outcome::Aborted { reason });
        for slot in 0..self.slots.len() {
            self.kill(slot, KillCause::Aborting, fx);
        }
        self.settle(now, fx);
    }

    pub fn handle(&mut self, event: Event<'_>, now: Instant, fx: &mut impl Effects) {
        match event {
            Event::Spawned {
                slot,
                generation,
                pid,
            } => {
                if self.is_current(slot, generation) {
                    self.slots[slot].pid = Some(pid);
                    fx.observe(&RunEvent::WorkerStarted { slot, pid });
                }
            }
            Event::SpawnFailed {
                slot,
                generation,
                error,
            } => {
                if self.is_current(slot, generation) {
                    self.exited(slot, &format!("could not be started: {error}"), now, fx);
                }
            }
            Event::Message {
                slot,
                generation,
                message,
            } => {
                if self.is_current(slot, generation) {
                    self.message(slot, message, now, fx);
                }
            }
            Event::ProtocolError {
                slot,
                generation,
                error,
            } => {
                if self.is_current(slot, generation) {
                    self.kill(slot, KillCause::BrokeProtocol(error), fx);
                }
            }
            Event::Disconnected { slot, generation } => {
                if self.is_current(slot, generation)
                    && !matches!(self.slots[slot].phase, SlotPhase::Stopping { .. })
                {
                    self.kill(slot, KillCause::Disconnected, fx);
                }
            }
            Event::Exited {
                slot,
                generation,
                status,
            } => {
                if self.is_current(slot, generation) {
                    self.exited(slot, &status, now, fx);
                }
            }
            Event::Tick => self.tick(now, fx),
            Event::Signal { number } => self.signal(number, now, fx),
        }
        self.settle(now, fx);
    }

    fn is_current(&self, slot: usize, generation: Generation) -> bool {
        self.slots.get(slot).is_some_and(|s| {
            s.generation == generation
                && !matches!(s.phase, SlotPhase::Gone | SlotPhase::Waiting { .. })
        })
    }

    fn spawn(&mut self, slot: usize, now: Instant, fx: &mut impl Effects) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let s = &mut self.slots[slot];
        s.generation = generation;
        s.phase = SlotPhase::Starting {
            deadline: now + self.settings.start_timeout,
        };
        s.pid = None;
        s.cause = None;
        s.assigned = 0;
        debug_assert!(s.in_flight.is_empty());
        fx.spawn(slot, generation);
    }

    fn message(
        &mut self,
        slot: usize,
        message: WorkerMessage<'_>,
        now: Instant,
        fx: &mut impl Effects,
    ) {
        let phase = self.slots[slot].phase;
        if phase == SlotPhase::Killing {
            // Nothing it says counts any more; its chunks settle when it exits.
            return;
        }
        match message {
            WorkerMessage::Hello(hello) => {
                if !matches!(phase, SlotPhase::Starting { .. }) {
                    return self.kill(
                        slot,
                        KillCause::BrokeProtocol("said hello twice".into()),
                        fx,
                    );
                }
                if hello.protocol_version != PROTOCOL_VERSION {
                    // Every worker runs the same program: replacing it cannot help.
                    let reason = format!(
                        "protocol version mismatch: worker {slot} speaks version {}, the supervisor version {PROTOCOL_VERSION}",
                        hello.protocol_version
                    );
                    return self.abort(reason, now, fx);
                }
                let s = &mut self.slots[slot];
                s.phase = SlotPhase::Ready;
                let welcome = SupervisorMessage::Welcome(Welcome {
                    protocol_version: PROTOCOL_VERSION,
                    worker_id: slot as u32,
                    params: self.settings.params_json.clone(),
                    input: self.settings.input.clone(),
                });
                fx.send(slot, s.generation, &welcome);
                fx.observe(&RunEvent::WorkerReady { slot });
            }
            WorkerMessage::Done(done) => {
                if let Some((work, waited)) = self.answered(slot, done.index, now, fx) {
                    // The worker's own timing: answers arrive in batches, so
                    // the supervisor's clock cannot time a single chunk.
                    let seconds = done.elapsed_ns as f64 / 1e9;
                    let timing = Timing { seconds, waited };
                    self.completed(slot, work, timing, done.output, now, fx);
                }
            }
            WorkerMessage::Failed(failed) => {
                if let Some((work, _)) = self.answered(slot, failed.index, now, fx) {
                    self.attempt_failed(slot, work, failed.error.to_owned(), now, fx);
                }
            }
            WorkerMessage::Cancelled(cancelled) => {
                // Only the supervisor cancels, so this attempt costs the chunk
                // nothing; a later run does it.
                if let Some((work, _)) = self.answered(slot, cancelled.index, now, fx) {
                    self.counts.cancelled += 1;
                    fx.observe(&RunEvent::ChunkCancelled { chunk: work.chunk });
                    if self.phase == RunPhase::Running {
                        self.retries.insert(work.chunk.index, work);
                    }
                }
            }
        }
    }

    /// Takes an answered chunk off the worker's queue and restarts the
    /// timeout clock for the next one.
    fn answered(
        &mut self,
        slot: usize,
        index: u64,
        now: Instant,
        fx: &mut impl Effects,
    ) -> Option<(Work, f64)> {
        let position = self.slots[slot]
            .in_flight
            .iter()
            .position(|w| w.chunk.index == index);
        let Some(position) = position else {
            let detail = format!("answered chunk {index}, which it was not given");
            self.kill(slot, KillCause::BrokeProtocol(detail), fx);
            return None;
        };
        let s = &mut self.slots[slot];
        let work = s.in_flight.remove(position)?;
        let mut waited = 0.0;
        if position == 0 {
            waited = s
                .head_since
                .saturating_duration_since(work.sent_at)
                .as_secs_f64();
            s.head_since = now;
            let next = s.in_flight.front().map(|w| w.chunk.index);
            fx.observe(&RunEvent::WorkerBusy { slot, chunk: next });
        }
        self.in_flight -= 1;
        Some((work, waited))
    }

    fn completed(
        &mut self,
        slot: usize,
        work: Work,
        timing: Timing,
        output: &[u8],
        now: Instant,
        fx: &mut impl Effects,
    ) {
        let Timing { seconds, waited } = timing;
        self.average_seconds = Some(match self.average_seconds {
            None => seconds,
            Some(average) => average + (seconds - average) * 0.1,
        });
        if !self.errors.is_empty() {
            self.errors.remove(&work.chunk.index);
        }
        self.slots[slot].crash_streak = 0;
        fx.observe(&RunEvent::ChunkDone {
            chunk: work.chunk,
            attempt: work.attempt,
            worker: slot,
            seconds,
            waited,
        });
        self.counts.done += 1;
        let meta = ResultMeta {
            index: work.chunk.index,
            start: work.chunk.start,
            end: work.chunk.end,
            attempt: work.attempt,
            worker: slot as u32,
            seconds,
        };
        let written = match &mut self.reorder {
            Some(reorder) => reorder.done(meta, output, |m, o| fx.write_result(m, o)),
            None => fx.write_result(&meta, output),
        };
        if let Err(error) = written {
            self.abort(format!("cannot write the output: {error}"), now, fx);
        }
    }

    fn attempt_failed(
        &mut self,
        slot: usize,
        work: Work,
        error: String,
        now: Instant,
        fx: &mut impl Effects,
    ) {
        let index = work.chunk.index;
        let worker = slot as u32;
        if work.attempt <= self.settings.retries {
            fx.observe(&RunEvent::ChunkRetried {
                chunk: work.chunk,
                failed_attempt: work.attempt,
                worker,
                error: &error,
            });
            self.errors.entry(index).or_default().push(AttemptError {
                attempt: work.attempt,
                worker,
                error,
            });
            self.counts.retried += 1;
            self.retries.insert(
                index,
                Work {
                    attempt: work.attempt + 1,
                    suspect: false,
                    ..work
                },
            );
            return;
        }
        let mut errors = self.errors.remove(&index).unwrap_or_default();
        errors.push(AttemptError {
            attempt: work.attempt,
            worker,
            error,
        });
        self.counts.failed += 1;
        if let Some(last) = errors.last() {
            fx.observe(&RunEvent::ChunkFailed {
                chunk: work.chunk,
                attempts: work.attempt,
                worker: slot,
                error: &last.error,
            });
        }
        let written = fx
            .write_failure(&ChunkFailure {
                chunk: work.chunk,
                errors: &errors,
            })
            .and_then(|()| match &mut self.reorder {
                Some(reorder) => reorder.skip(index, |m, o| fx.write_result(m, o)),
                None => Ok(()),
            });
        if let Err(error) = written {
            self.abort(format!("cannot write the output: {error}"), now, fx);
        }
    }

    /// Asks the world to end a worker; its `Exited` settles its chunks.
    fn kill(&mut self, slot: usize, cause: KillCause, fx: &mut impl Effects) {
        let s = &mut self.slots[slot];
        match s.phase {
            SlotPhase::Starting { .. } | SlotPhase::Ready | SlotPhase::Stopping { .. } => {
                s.cause.get_or_insert(cause);
                s.phase = SlotPhase::Killing;
                fx.kill(slot, s.generation, self.settings.kill_grace);
            }
            // No process to kill: the restart simply does not happen.
            SlotPhase::Waiting { .. } => s.phase = SlotPhase::Gone,
            SlotPhase::Killing | SlotPhase::Gone => {}
        }
    }

    fn stop(&mut self, slot: usize, now: Instant, fx: &mut impl Effects) {
        let s = &mut self.slots[slot];
        s.phase = SlotPhase::Stopping {
            deadline: now + self.settings.stop_grace,
        };
        fx.send(slot, s.generation, &SupervisorMessage::Stop);
    }

    fn exited(&mut self, slot: usize, status: &str, now: Instant, fx: &mut impl Effects) {
        let s = &mut self.slots[slot];
        // Stopped on purpose: at the end, in a drain, or to be replaced.
        let expected =
            matches!(s.phase, SlotPhase::Stopping { .. }) || self.phase != RunPhase::Running;
        s.phase = SlotPhase::Gone;
        let cause = s.cause.take();
        let pid = s.pid.take();
        if matches!(self.phase, RunPhase::Draining { .. }) {
            // A drain gives up what a worker held when it exits: cancelled.
            self.counts.cancelled += s.in_flight.len() as u64;
            for work in &s.in_flight {
                fx.observe(&RunEvent::ChunkCancelled { chunk: work.chunk });
            }
        }
        // Answers travel in batches, so a worker that dies with several chunks
        // outstanding may have finished some of them: only a lone chunk is
        // surely the one it died on. The others are run again, alone.
        let culprit = match s.in_flight.len() {
            1 => s.in_flight.pop_front(),
            _ => None,
        };
        self.in_flight -= s.in_flight.len() + usize::from(culprit.is_some());
        for mut work in s.in_flight.drain(..) {
            work.suspect = true;
            self.retries.insert(work.chunk.index, work);
        }
        fx.observe(&RunEvent::WorkerBusy { slot, chunk: None });
        fx.observe(&RunEvent::WorkerExited {
            slot,
            pid,
            status,
            cause: cause.as_ref(),
            expected,
        });
        if self.phase != RunPhase::Running {
            // Draining or ending: what it held is left for a later run.
            if let Some(work) = culprit {
                self.retries.insert(work.chunk.index, work);
            }
            return;
        }
        if expected {
            return self.spawn(slot, now, fx);
        }
        let description = match &cause {
            Some(cause) => format!("worker {slot} {cause} ({status})"),
            None => format!("worker {slot} exited unexpectedly ({status})"),
        };
        if let Some(work) = culprit {
            self.attempt_failed(slot, work, description.clone(), now, fx);
            if self.phase != RunPhase::Running {
                return;
            }
        }
        self.counts.crashes += 1;
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > self.settings.restart_within)
        {
            self.crashes.pop_front();
        }
        if self.crashes.len() > self.settings.restart_max as usize {
            let reason = format!(
                "workers crashed {} times within {} (the limit is {}); the last: {description}",
                self.crashes.len(),
                humanize(self.settings.restart_within),
                self.settings.restart_max,
            );
            return self.abort(reason, now, fx);
        }
        let streak = &mut self.slots[slot].crash_streak;
        *streak += 1;
        match self.backoff(self.slots[slot].crash_streak) {
            None => self.spawn(slot, now, fx),
            Some(delay) => self.slots[slot].phase = SlotPhase::Waiting { until: now + delay },
        }
    }

    /// How long to wait before restarting a slot after its `streak`-th crash
    /// in a row: nothing after the first, then doubling, capped, jittered.
    fn backoff(&mut self, streak: u32) -> Option<Duration> {
        let doublings = streak.checked_sub(2)?;
        let base = self
            .settings
            .backoff_base
            .saturating_mul(1 << doublings.min(20))
            .min(self.settings.backoff_max);
        Some(base.mul_f64(0.5 + self.rng.f64()))
    }

    fn signal(&mut self, number: i32, now: Instant, fx: &mut impl Effects) {
        match self.phase {
            RunPhase::Running => {
                fx.observe(&RunEvent::DrainStarted {
                    signal: number,
                    in_flight: self.in_flight,
                });
                self.phase = RunPhase::Draining {
                    signal: number,
                    deadline: Some(now + self.settings.drain_timeout),
                    cancelled: false,
                };
                for slot in 0..self.slots.len() {
                    if matches!(
                        self.slots[slot].phase,
                        SlotPhase::Starting { .. } | SlotPhase::Waiting { .. }
                    ) {
                        self.kill(slot, KillCause::NotNeeded, fx);
                    }
                }
            }
            RunPhase::Draining { .. } => {
                // The second signal: nothing in flight may take any longer.
                self.cancel_in_flight(fx);
                for slot in 0..self.slots.len() {
                    self.kill(slot, KillCause::SecondSignal, fx);
                }
            }
            RunPhase::Ending(_) => {}
        }
    }

    /// Asks every worker to abandon the chunks it holds.
    fn cancel_in_flight(&mut self, fx: &mut impl Effects) {
        fx.observe(&RunEvent::Cancelling {
            in_flight: self.in_flight,
        });
        if let RunPhase::Draining { cancelled, .. } = &mut self.phase {
            *cancelled = true;
        }
        for (slot, s) in self.slots.iter().enumerate() {
            if matches!(s.phase, SlotPhase::Ready | SlotPhase::Stopping { .. }) {
                for work in &s.in_flight {
                    let cancel = SupervisorMessage::Cancel(protocol::message::Cancel {
                        index: work.chunk.index,
                    });
                    fx.send(slot, s.generation, &cancel);
                }
            }
        }
    }

    fn tick(&mut self, now: Instant, fx: &mut impl Effects) {
        if let RunPhase::Draining {
            deadline: Some(deadline),
            cancelled,
            ..
        } = self.phase
            && deadline <= now
        {
            let next = if cancelled {
                for slot in 0..self.slots.len() {
                    if !self.slots[slot].in_flight.is_empty() {
                        self.kill(slot, KillCause::IgnoredCancel, fx);
                    }
                }
                None
            } else {
                self.cancel_in_flight(fx);
                Some(now + self.settings.stop_grace)
            };
            if let RunPhase::Draining { deadline, .. } = &mut self.phase {
                *deadline = next;
            }
        }
        for slot in 0..self.slots.len() {
            let s = &self.slots[slot];
            let cause = match s.phase {
                SlotPhase::Waiting { until } if until <= now => {
                    if self.phase == RunPhase::Running {
                        self.spawn(slot, now, fx);
                    } else {
                        self.slots[slot].phase = SlotPhase::Gone;
                    }
                    continue;
                }
                SlotPhase::Starting { deadline } if deadline <= now => {
                    KillCause::SilentStart(self.settings.start_timeout)
                }
                SlotPhase::Stopping { deadline } if deadline <= now => {
                    KillCause::IgnoredStop(self.settings.stop_grace)
                }
                SlotPhase::Ready => match (s.in_flight.front(), self.settings.timeout) {
                    (Some(work), Some(timeout)) if s.head_since + timeout <= now => {
                        KillCause::TimedOut {
                            after: timeout,
                            chunk: work.chunk.index,
                            outstanding: s.in_flight.len(),
                        }
                    }
                    _ => continue,
                },
                _ => continue,
            };
            self.kill(slot, cause, fx);
        }
    }

    /// After every event: hand out work, retire workers that had their share,
    /// and notice when the run is over.
    fn settle(&mut self, now: Instant, fx: &mut impl Effects) {
        match self.phase {
            RunPhase::Running => {
                self.dispatch(now, fx);
                self.retire_exhausted(now, fx);
                let finished = self.phase == RunPhase::Running && self.nothing_left();
                if let Some(error) = self.source.error() {
                    // The source ran dry because it could not read the input:
                    // finishing now would leave chunks never written.
                    let reason = format!("cannot read the input: {error}");
                    return self.abort(reason, now, fx);
                }
                if finished {
                    self.end(
                        Outcome::Finished {
                            failed: self.counts.failed,
                        },
                        now,
                        fx,
                    );
                }
            }
            RunPhase::Draining { signal, .. } => {
                if self.in_flight == 0 {
                    self.end(Outcome::Drained { signal }, now, fx);
                }
            }
            RunPhase::Ending(_) => {}
        }
    }

    fn nothing_left(&mut self) -> bool {
        if self.in_flight > 0 || !self.retries.is_empty() {
            return false;
        }
        if self.peeked.is_none() && !self.source_done {
            self.peeked = self.next_fresh();
            self.source_done = self.peeked.is_none();
        }
        self.peeked.is_none()
    }

    /// The run's outcome is decided: every worker is stopped.
    fn end(&mut self, outcome: Outcome, now: Instant, fx: &mut impl Effects) {
        self.phase = RunPhase::Ending(outcome);
        for slot in 0..self.slots.len() {
            match self.slots[slot].phase {
                SlotPhase::Ready => self.stop(slot, now, fx),
                SlotPhase::Starting { .. } | SlotPhase::Waiting { .. } => {
                    self.kill(slot, KillCause::NotNeeded, fx)
                }
                _ => {}
            }
        }
    }

    /// Workers that were given `max_chunks` chunks are stopped once they have
    /// answered them all, and replaced when they exit.
    fn retire_exhausted(&mut self, now: Instant, fx: &mut impl Effects) {
        let max = self.settings.max_chunks;
        if max == 0 {
            return;
        }
        for slot in 0..self.slots.len() {
            let s = &self.slots[slot];
            if s.phase == SlotPhase::Ready && s.assigned >= max && s.in_flight.is_empty() {
                fx.observe(&RunEvent::WorkerRetiring { slot });
                self.stop(slot, now, fx);
            }
        }
    }

    fn dispatch(&mut self, now: Instant, fx: &mut impl Effects) {
        let window = self.window();
        let max_chunks = self.settings.max_chunks;
        for slot in 0..self.slots.len() {
            if self.slots[slot].phase != SlotPhase::Ready {
                continue;
            }
            while self.slots[slot].in_flight.len() < window {
                let s = &self.slots[slot];
                if s.in_flight.iter().any(|w| w.suspect)
                    || (max_chunks > 0 && s.assigned >= max_chunks)
                {
                    break;
                }
                let alone = s.in_flight.is_empty();
                let Some(work) = self.next_work(alone) else {
                    break;
                };
                let work = Work {
                    sent_at: now,
                    ..work
                };
                let s = &mut self.slots[slot];
                if s.in_flight.is_empty() {
                    s.head_since = now;
                    fx.observe(&RunEvent::WorkerBusy {
                        slot,
                        chunk: Some(work.chunk.index),
                    });
                }
                s.in_flight.push_back(work);
                s.assigned += 1;
                self.in_flight += 1;
                let assign = SupervisorMessage::Assign(Assign {
                    index: work.chunk.index,
                    start: work.chunk.start,
                    end: work.chunk.end,
                    attempt: work.attempt,
                    first_item: work.chunk.first_item,
                });
                fx.send(slot, s.generation, &assign);
                fx.observe(&RunEvent::ChunkDispatched {
                    chunk: work.chunk,
                    attempt: work.attempt,
                    worker: slot,
                });
            }
        }
    }

    /// The next chunk to send; a suspect only to a worker with nothing else
    /// outstanding (`alone`).
    fn next_work(&mut self, alone: bool) -> Option<Work> {
        if let Some(entry) = self.retries.first_entry() {
            return (alone || !entry.get().suspect).then(|| entry.remove());
        }
        let chunk = match self.peeked.take() {
            Some(chunk) => chunk,
            None if self.source_done => return None,
            None => match self.next_fresh() {
                Some(chunk) => chunk,
                None => {
                    self.source_done = true;
                    return None;
                }
            },
        };
        if let Some(reorder) = &self.reorder
            && !reorder.admits(chunk.index)
        {
            self.peeked = Some(chunk);
            return None;
        }
        self.fresh_dispatched += 1;
        Some(Work {
            chunk,
            attempt: 1,
            // Set when it is sent.
            sent_at: self.started,
            suspect: false,
        })
    }

    /// The next chunk from the source that an earlier run did not settle.
    fn next_fresh(&mut self) -> Option<ChunkSpec> {
        loop {
            let chunk = self.source.next_chunk()?;
            let settled = self
                .skip
                .as_ref()
                .is_some_and(|skip| skip.contains(chunk.index as usize));
            if !settled {
                return Some(chunk);
            }
        }
    }

    /// Chunks to keep outstanding per worker: one running, plus as many as
    /// cover `queue_target` at the average chunk duration.
    fn window(&self) -> usize {
        let Some(average) = self.average_seconds else {
            return 1;
        };
        let queued = if average > 0.0 {
            (self.settings.queue_target.as_secs_f64() / average) as usize
        } else {
            usize::MAX
        };
        queued
            .saturating_add(1)
            .min(self.settings.max_in_flight)
            .max(1)
    }
}

fn humanize(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
#[path = "dispatcher_tests.rs"]
mod tests;
