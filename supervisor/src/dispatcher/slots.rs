//! The life of a worker slot: started, ready, stopped or killed, exited, and
//! restarted after a backoff; what a worker's exit costs the chunks it held;
//! the restart budget that aborts a run whose workers keep crashing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use protocol::SupervisorMessage;

use super::queue::Work;
use super::state::{Dispatcher, RunPhase};
use super::types::{Effects, Generation, KillCause, LAST_WORDS, RunEvent, humanize};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum SlotPhase {
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

/// One worker position, numbered from 0, and the process holding it now.
#[derive(Debug)]
pub(super) struct Slot {
    pub generation: Generation,
    pub phase: SlotPhase,
    pub pid: Option<u32>,
    /// In the order sent; the worker works on the front one.
    pub in_flight: VecDeque<Work>,
    /// Since when the front chunk has been the one the worker works on.
    pub head_since: Instant,
    /// Why the supervisor is killing it; the first reason wins.
    pub cause: Option<KillCause>,
    /// Chunks given to this worker process; counts against `max_chunks`.
    pub assigned: u64,
    /// Crashes of this slot since its last finished chunk; sizes the backoff.
    pub crash_streak: u32,
}

impl Slot {
    pub fn new(max_in_flight: usize, now: Instant) -> Self {
        Self {
            generation: 0,
            phase: SlotPhase::Gone,
            pid: None,
            in_flight: VecDeque::with_capacity(max_in_flight),
            head_since: now,
            cause: None,
            assigned: 0,
            crash_streak: 0,
        }
    }

    /// Moves every deadline of the slot `by` later: the supervisor was not
    /// running for that long, and nobody may be blamed for it.
    pub fn postpone(&mut self, by: Duration) {
        match &mut self.phase {
            SlotPhase::Waiting { until: deadline }
            | SlotPhase::Starting { deadline }
            | SlotPhase::Stopping { deadline } => *deadline += by,
            SlotPhase::Ready | SlotPhase::Killing | SlotPhase::Gone => {}
        }
        self.head_since += by;
    }

    /// When a `Tick` has something to do for this slot.
    pub fn deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        match self.phase {
            SlotPhase::Starting { deadline } | SlotPhase::Stopping { deadline } => Some(deadline),
            SlotPhase::Waiting { until } => Some(until),
            SlotPhase::Ready if !self.in_flight.is_empty() => timeout.map(|t| self.head_since + t),
            _ => None,
        }
    }
}

/// Recent crashes: more than the limit within the window abort the run.
#[derive(Debug, Default)]
pub(super) struct RestartBudget {
    crashes: VecDeque<Instant>,
}

impl RestartBudget {
    /// Records a crash at `now`; returns the crashes within `within`.
    fn record(&mut self, now: Instant, within: Duration) -> usize {
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > within)
        {
            self.crashes.pop_front();
        }
        self.crashes.len()
    }
}

impl Dispatcher {
    /// Whether news from `generation` in `slot` is about its worker now.
    pub(super) fn is_current(&self, slot: usize, generation: Generation) -> bool {
        self.slots.get(slot).is_some_and(|s| {
            s.generation == generation
                && !matches!(s.phase, SlotPhase::Gone | SlotPhase::Waiting { .. })
        })
    }

    pub(super) fn spawn(&mut self, slot: usize, now: Instant, fx: &mut impl Effects) {
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

    /// Asks the world to end a worker; its `Exited` settles its chunks.
    pub(super) fn kill(&mut self, slot: usize, cause: KillCause, fx: &mut impl Effects) {
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

    /// Asks a worker to answer what it holds and exit.
    pub(super) fn stop(&mut self, slot: usize, now: Instant, fx: &mut impl Effects) {
        let s = &mut self.slots[slot];
        s.phase = SlotPhase::Stopping {
            deadline: now + self.settings.stop_grace,
        };
        fx.send(slot, s.generation, &SupervisorMessage::Stop);
    }

    /// A worker process is gone: what it held is settled, and the slot is
    /// restarted, backed off, or left empty at the end of the run.
    pub(super) fn exited(
        &mut self,
        slot: usize,
        status: &str,
        last_words: &str,
        now: Instant,
        fx: &mut impl Effects,
    ) {
        let s = &mut self.slots[slot];
        // Stopped on purpose: at the end, in a drain, or to be replaced.
        let expected =
            matches!(s.phase, SlotPhase::Stopping { .. }) || self.phase != RunPhase::Running;
        let before_hello = matches!(s.phase, SlotPhase::Starting { .. }) && s.cause.is_none();
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
            self.queue.retry(work);
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
                self.queue.retry(work);
            }
            return;
        }
        if expected {
            return self.spawn(slot, now, fx);
        }
        let said = if last_words.is_empty() {
            String::new()
        } else {
            format!("{LAST_WORDS}{last_words}")
        };
        if before_hello && !self.ever_ready {
            // No worker of this run has started yet and this one died before
            // it could say hello: the program cannot start (an import error,
            // a missing file), and restarting it would only say so again.
            let reason = format!("worker {slot} could not start ({status}){said}");
            return self.abort(reason, now, fx);
        }
        let description = match &cause {
            Some(cause) => format!("worker {slot} {cause} ({status}){said}"),
            None => format!("worker {slot} exited unexpectedly ({status}){said}"),
        };
        if let Some(work) = culprit {
            self.attempt_failed(slot, work, description.clone(), now, fx);
            if self.phase != RunPhase::Running {
                return;
            }
        }
        self.counts.crashes += 1;
        let recent = self.restarts.record(now, self.settings.restart_within);
        if recent > self.settings.restart_max as usize {
            let reason = format!(
                "workers crashed {recent} times within {} (the limit is {}); the last: {description}",
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

    /// Each slot's deadline: a backoff over, a worker silent at start or
    /// deaf to `Stop`, a chunk past its timeout.
    pub(super) fn tick_slots(&mut self, now: Instant, fx: &mut impl Effects) {
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
}
