//! The [`Dispatcher`]: the run's state, and what each [`Event`] does to it.
//!
//! Read [`Dispatcher::handle`] first: every event lands there, and each ends
//! with [`Dispatcher::advance`], which hands out work and notices the end.

use std::time::{Duration, Instant};

use protocol::message::{Assign, Welcome};
use protocol::{PROTOCOL_VERSION, SupervisorMessage, WorkerMessage};

use fixedbitset::FixedBitSet;

use super::queue::{Work, WorkQueue};
use super::reorder::Spill;
use super::settings::Settings;
use super::slots::{RestartBudget, Slot, SlotPhase};
use super::types::{
    AttemptError, ChunkFailure, Counts, Effects, Event, Generation, KillCause, Outcome, ResultMeta,
    RunEvent, bounded,
};
use crate::chunks::ChunkSource;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum RunPhase {
    Running,
    Draining {
        why: DrainCause,
        /// When to cancel what is in flight, then when to kill what still is.
        deadline: Option<Instant>,
        cancelled: bool,
    },
    /// Workers are being stopped; the outcome is decided.
    Ending(Outcome),
}

/// Why a drain began, which decides how the run ends.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum DrainCause {
    /// SIGTERM, SIGINT or SIGHUP: the run stops, to be resumed.
    Signal(i32),
    /// `max_failed` was passed: the run aborts once what is in flight settles.
    TooManyFailures(String),
}

/// How long a finished chunk took at its worker, and how long it waited there.
#[derive(Debug, Clone, Copy)]
struct Timing {
    seconds: f64,
    waited: f64,
}

/// The single owner of a run's state.
///
/// It is fed [`Event`]s and answers through the [`Effects`] it is handed:
/// spawn, send, kill, write. It does no I/O and reads no clock (`now` comes
/// with every call), so it is tested without processes. It never formats
/// output either: what happened goes out as [`RunEvent`]s.
pub struct Dispatcher {
    pub(super) settings: Settings,
    pub(super) queue: WorkQueue,
    pub(super) slots: Vec<Slot>,
    pub(super) next_generation: Generation,
    pub(super) restarts: RestartBudget,
    pub(super) rng: fastrand::Rng,
    /// Chunks sent to workers and not yet answered.
    pub(super) in_flight: usize,
    pub(super) counts: Counts,
    pub(super) phase: RunPhase,
    /// Some worker of this run has said hello: a worker that dies before
    /// its hello is no longer proof that none can start.
    pub(super) ever_ready: bool,
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
        let queue = WorkQueue::new(&settings, source, skip, now);
        let slots = (0..settings.workers)
            .map(|_| Slot::new(settings.max_in_flight, now))
            .collect();
        let counts = Counts {
            total: queue.total(),
            skipped: queue.skipped(),
            ..Counts::default()
        };
        let rng = fastrand::Rng::with_seed(settings.seed);
        Self {
            settings,
            queue,
            slots,
            next_generation: 1,
            restarts: RestartBudget::default(),
            rng,
            in_flight: 0,
            counts,
            phase: RunPhase::Running,
            ever_ready: false,
        }
    }

    /// Results that must wait for their turn beyond the reorder buffer's
    /// memory budget go to `spill`, so memory stays within the budget
    /// whatever workers return.
    pub fn with_spill(mut self, spill: Box<dyn Spill>) -> Self {
        self.queue.spill_to(spill);
        self
    }

    /// Starts every worker slot.
    pub fn start(&mut self, now: Instant, fx: &mut impl Effects) {
        for slot in 0..self.slots.len() {
            self.spawn(slot, now, fx);
        }
        self.advance(now, fx);
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Chunks sent to workers and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Chunks waiting to be sent.
    pub fn queued(&self) -> u64 {
        self.queue.queued()
    }

    /// Whether a drain is under way.
    pub fn is_draining(&self) -> bool {
        matches!(self.phase, RunPhase::Draining { .. })
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

    /// The supervisor itself was stopped for `paused` (SIGSTOP, a suspended
    /// machine, a long stall): what workers did meanwhile waits unread in
    /// their sockets, so every deadline moves by the pause rather than
    /// timing workers out for time the supervisor did not run.
    pub fn postpone_deadlines(&mut self, paused: Duration) {
        for slot in &mut self.slots {
            slot.postpone(paused);
        }
        if let RunPhase::Draining {
            deadline: Some(deadline),
            ..
        } = &mut self.phase
        {
            *deadline += paused;
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
            .filter_map(|slot| slot.deadline(self.settings.timeout))
            .chain(drain)
            .min()
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
                    let status = format!("could not be started: {error}");
                    self.exited(slot, &status, "", now, fx);
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
                last_words,
            } => {
                if self.is_current(slot, generation) {
                    self.exited(slot, &status, &last_words, now, fx);
                }
            }
            Event::Tick => self.tick(now, fx),
            // Nothing to do but hand the new chunks out, below.
            Event::SourceReady => {}
            Event::Signal { number } => self.signal(number, now, fx),
        }
        self.advance(now, fx);
    }

    /// After every event: hand out work, retire workers that had their share,
    /// and notice when the run is over.
    pub(super) fn advance(&mut self, now: Instant, fx: &mut impl Effects) {
        match self.phase {
            RunPhase::Running => {
                self.dispatch(now, fx);
                self.retire_exhausted(now, fx);
                let finished = self.phase == RunPhase::Running
                    && self.in_flight == 0
                    && self.queue.is_exhausted();
                if let Some(error) = self.queue.source_error() {
                    // The source ran dry because it could not read the input:
                    // finishing now would leave chunks never written.
                    let reason = format!("cannot read the input: {error}");
                    return self.abort(reason, now, fx);
                }
                if finished {
                    // A source whose chunks size themselves knows its count now.
                    let counts = &mut self.counts;
                    counts.total = counts
                        .total
                        .or(Some(counts.done + counts.failed + counts.skipped));
                    let failed = self.counts.failed;
                    self.end(Outcome::Finished { failed }, now, fx);
                }
            }
            RunPhase::Draining { ref why, .. } => {
                if self.in_flight == 0 {
                    let outcome = match why {
                        DrainCause::Signal(signal) => Outcome::Drained { signal: *signal },
                        DrainCause::TooManyFailures(reason) => Outcome::Aborted {
                            reason: reason.clone(),
                        },
                    };
                    self.end(outcome, now, fx);
                }
            }
            RunPhase::Ending(_) => {}
        }
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
                self.ever_ready = true;
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
                    self.attempt_failed(slot, work, bounded(failed.error), now, fx);
                }
            }
            WorkerMessage::Cancelled(cancelled) => {
                let Some((work, _)) = self.answered(slot, cancelled.index, now, fx) else {
                    return;
                };
                if !work.cancel_sent && self.phase == RunPhase::Running {
                    // Giving up a chunk nobody cancelled, while the run goes
                    // on, is a lie about it: the attempt is spent, so a
                    // worker that keeps doing it cannot hold the run in a
                    // loop, and the worker goes. (In a drain, giving up is
                    // what a worker signalled by a terminal or a service
                    // manager may well do: the chunk waits for a later run.)
                    let index = work.chunk.index;
                    let error = format!(
                        "worker {slot} answered Cancelled for chunk {index}, which was not cancelled"
                    );
                    self.attempt_failed(slot, work, error, now, fx);
                    let detail =
                        format!("answered Cancelled for chunk {index}, which was not cancelled");
                    return self.kill(slot, KillCause::BrokeProtocol(detail), fx);
                }
                self.counts.cancelled += 1;
                fx.observe(&RunEvent::ChunkCancelled { chunk: work.chunk });
                if self.phase == RunPhase::Running {
                    self.queue.retry(work);
                }
            }
        }
    }

    /// Takes an answered chunk off the worker's queue and restarts the
    /// timeout clock for the next one. Returns the work and how long it
    /// waited at the worker before it could start.
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
        self.queue.record_time(&work.chunk, seconds);
        self.queue.forget_errors(work.chunk.index);
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
        let written = self
            .queue
            .write_in_order(meta, output, |m, o| fx.write_result(m, o));
        if let Err(error) = written {
            self.abort(format!("cannot write the output: {error}"), now, fx);
        }
    }

    /// An attempt failed: the chunk goes again, or fails for good once it
    /// is out of attempts.
    pub(super) fn attempt_failed(
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
            self.queue.note_error(
                index,
                AttemptError {
                    attempt: work.attempt,
                    worker,
                    error,
                },
            );
            self.counts.retried += 1;
            self.queue.retry(Work {
                attempt: work.attempt + 1,
                suspect: false,
                ..work
            });
            return;
        }
        let mut errors = self.queue.take_errors(index);
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
            .and_then(|()| self.queue.pass_failed(index, |m, o| fx.write_result(m, o)));
        if let Err(error) = written {
            return self.abort(format!("cannot write the output: {error}"), now, fx);
        }
        if let Some(reason) = self.breaker_tripped() {
            self.trip(reason, now, fx);
        }
    }

    /// Deadlines: the drain's, then each slot's.
    fn tick(&mut self, now: Instant, fx: &mut impl Effects) {
        self.drain_deadline(now, fx);
        self.tick_slots(now, fx);
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

    /// Fills every ready worker's pipeline up to the window.
    fn dispatch(&mut self, now: Instant, fx: &mut impl Effects) {
        if fx.is_backlogged() {
            // The run loop says when the disk caught up, with a tick.
            return;
        }
        let window = self.queue.window();
        let max_chunks = self.settings.max_chunks;
        for slot in 0..self.slots.len() {
            if self.slots[slot].phase != SlotPhase::Ready {
                continue;
            }
            while self.slots[slot].in_flight.len() < window {
                let s = &self.slots[slot];
                // A suspect is only ever sent to a worker holding nothing, and
                // nothing joins it: it is the head whenever it is there.
                if s.in_flight.front().is_some_and(|w| w.suspect)
                    || (max_chunks > 0 && s.assigned >= max_chunks)
                {
                    break;
                }
                let alone = s.in_flight.is_empty();
                let Some(work) = self.queue.next_work(alone) else {
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
}
