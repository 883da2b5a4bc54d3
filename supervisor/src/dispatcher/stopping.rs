//! How a run stops: a signal starts a drain, a second one or the drain's
//! deadline cancels what is in flight, the outcome is decided and every
//! worker stopped; or the run aborts.

use std::time::Instant;

use protocol::SupervisorMessage;
use protocol::message::Cancel;

use super::slots::SlotPhase;
use super::state::{Dispatcher, DrainCause, RunPhase};
use super::types::{Effects, KillCause, Outcome, RunEvent};
use crate::config::MaxFailed;

impl Dispatcher {
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
        self.advance(now, fx);
    }

    /// SIGTERM, SIGINT or SIGHUP: the first starts a drain (no chunk
    /// starts, those in flight get the drain timeout), the second cancels
    /// what is in flight and stops every worker.
    pub(super) fn signal(&mut self, number: i32, now: Instant, fx: &mut impl Effects) {
        match self.phase {
            RunPhase::Running => {
                fx.observe(&RunEvent::DrainStarted {
                    signal: number,
                    in_flight: self.in_flight,
                });
                self.drain(DrainCause::Signal(number), now, fx);
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

    /// `max_failed` was passed: no chunk starts any more, those in flight
    /// finish (so the failed file is complete), then the run aborts.
    pub(super) fn trip(&mut self, reason: String, now: Instant, fx: &mut impl Effects) {
        if self.phase != RunPhase::Running {
            return;
        }
        fx.observe(&RunEvent::Tripped {
            reason: &reason,
            in_flight: self.in_flight,
        });
        self.drain(DrainCause::TooManyFailures(reason), now, fx);
    }

    /// Stops dispatching; what is in flight gets the drain timeout.
    fn drain(&mut self, why: DrainCause, now: Instant, fx: &mut impl Effects) {
        self.phase = RunPhase::Draining {
            why,
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

    /// Asks every worker to abandon the chunks it holds.
    fn cancel_in_flight(&mut self, fx: &mut impl Effects) {
        fx.observe(&RunEvent::Cancelling {
            in_flight: self.in_flight,
        });
        if let RunPhase::Draining { cancelled, .. } = &mut self.phase {
            *cancelled = true;
        }
        for (slot, s) in self.slots.iter_mut().enumerate() {
            if matches!(s.phase, SlotPhase::Ready | SlotPhase::Stopping { .. }) {
                for work in &mut s.in_flight {
                    work.cancel_sent = true;
                    let cancel = SupervisorMessage::Cancel(Cancel {
                        index: work.chunk.index,
                    });
                    fx.send(slot, s.generation, &cancel);
                }
            }
        }
    }

    /// The drain's deadline: past it what is in flight is cancelled, and
    /// past the grace after that, workers still holding chunks are killed.
    pub(super) fn drain_deadline(&mut self, now: Instant, fx: &mut impl Effects) {
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
    }

    /// The run's outcome is decided: every worker is stopped.
    pub(super) fn end(&mut self, outcome: Outcome, now: Instant, fx: &mut impl Effects) {
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

    /// Whether `max_failed` has been passed, and how, in words.
    pub(super) fn breaker_tripped(&self) -> Option<String> {
        let failed = self.counts.failed;
        match self.settings.max_failed? {
            MaxFailed::Count(max) => (failed > max).then(|| {
                format!(
                    "{failed} chunks failed for good, more than max_failed allows ({max}); \
                     dispatch stopped and the run drained"
                )
            }),
            MaxFailed::Share { per_million } => {
                let finished = self.counts.done + failed;
                // A share says something once enough chunks finished for
                // one failure to be within it.
                let enough = 1_000_000u64.div_ceil(u64::from(per_million.max(1)));
                let past =
                    u128::from(failed) * 1_000_000 > u128::from(per_million) * u128::from(finished);
                (finished >= enough && past).then(|| {
                    format!(
                        "{failed} of the {finished} chunks finished failed for good, more than \
                         max_failed allows ({}%); dispatch stopped and the run drained",
                        f64::from(per_million) / 10_000.0
                    )
                })
            }
        }
    }
}
