//! How an attempt at a chunk starts and ends: sent to a worker (with its
//! bytes, when it carries them), done, failed and retried, failed for good,
//! or failed without a worker because it cannot be sent at all.

use std::time::Instant;

use protocol::SupervisorMessage;
use protocol::codec::MAX_ASSIGN_DATA;
use protocol::message::Assign;

use super::queue::Work;
use super::state::{Dispatcher, Timing};
use super::types::{AttemptError, ChunkFailure, Effects, ResultMeta, RunEvent};
use crate::chunks::Carried;

impl Dispatcher {
    /// Why `work` cannot go to any worker, if it cannot: its bytes are more
    /// than a frame carries.
    pub(super) fn unsendable(&self, work: &Work) -> Option<String> {
        let len = match self.queue.carried(work.chunk.index)? {
            Carried::Bytes(bytes) if bytes.len() <= MAX_ASSIGN_DATA => return None,
            Carried::Bytes(bytes) => bytes.len() as u64,
            Carried::TooLarge { len } => *len,
        };
        Some(format!(
            "chunk {} (bytes {}..{} of standard input) is {len} bytes, more than the \
             {MAX_ASSIGN_DATA} one message can carry to a worker: a record that long has no \
             delimiter in it; it was not run (split such records, or set a delimiter that \
             ends them sooner)",
            work.chunk.index, work.chunk.start, work.chunk.end
        ))
    }

    /// Sends `work` to the worker in `slot`: an `Assign`, or an
    /// `AssignData` when the chunk carries its bytes.
    pub(super) fn send_assign(&self, slot: usize, work: &Work, fx: &mut impl Effects) {
        let generation = self.slots[slot].generation;
        let assign = Assign {
            index: work.chunk.index,
            start: work.chunk.start,
            end: work.chunk.end,
            attempt: work.attempt,
            first_item: work.chunk.first_item,
        };
        match self.queue.carried(work.chunk.index) {
            Some(Carried::Bytes(bytes)) => fx.send_data(slot, generation, &assign, bytes),
            // `unsendable` turned the others away.
            _ => fx.send(slot, generation, &SupervisorMessage::Assign(assign)),
        }
    }

    pub(super) fn completed(
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
        self.queue.settled(work.chunk.index);
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
        self.failed_for_good(slot, work, error, now, fx);
    }

    /// Out of attempts, or never sendable (then as if its attempt on the
    /// worker it was meant for failed with `error`: trying again cannot
    /// help): the chunk goes to the failed file with every attempt's error,
    /// and the results waiting behind it may go out.
    pub(super) fn failed_for_good(
        &mut self,
        slot: usize,
        work: Work,
        error: String,
        now: Instant,
        fx: &mut impl Effects,
    ) {
        let index = work.chunk.index;
        self.queue.settled(index);
        let mut errors = self.queue.take_errors(index);
        errors.push(AttemptError {
            attempt: work.attempt,
            worker: slot as u32,
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
}
