//! The hand-off between the reader thread and the main thread: chunks waiting
//! to run (some of them cancelled before they ran), and the cancel flag of the
//! chunk running now.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use protocol::ProtocolError;
use protocol::codec::decode_supervisor_message;
use protocol::connection::FrameReader;
use protocol::message::SupervisorMessage;

use crate::context::Chunk;

/// What the main thread does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    Run(Chunk),
    /// Answer `Cancelled` for a chunk that was cancelled before it ran.
    Cancelled(u64),
    /// Stop was received and every chunk before it is answered.
    Stop,
}

#[derive(Debug, Default)]
pub(crate) struct Inbox {
    state: Mutex<State>,
    ready: Condvar,
    /// Read without the lock by handlers polling [`Inbox::is_cancelled`].
    cancel: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Queued>,
    running: Option<u64>,
    stopping: bool,
    /// `serve` has returned: the reader should end quietly, not take the
    /// process down with it.
    closed: bool,
}

#[derive(Debug)]
struct Queued {
    /// The chunk, with its bytes when they came with it.
    chunk: Chunk,
    /// Cancelled chunks keep their place: answers go out in the order the
    /// chunks were assigned, because the supervisor times each chunk from the
    /// answer to the one before it.
    cancelled: bool,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Handlers never run under the lock, so a poisoned lock only means a
        // panic elsewhere while the state was consistent between two statements.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes in every complete frame in `frames` under one lock and wakes the
    /// main thread. Stops at the first message that breaks the protocol.
    pub(crate) fn receive(&self, frames: &mut FrameReader) -> Result<(), ProtocolError> {
        let result = self.lock().take_frames(frames, &self.cancel);
        self.ready.notify_one();
        result
    }

    /// The next thing to do, if there is one, without blocking.
    pub(crate) fn try_next(&self) -> Option<Next> {
        self.lock().next(&self.cancel)
    }

    /// The next thing to do, blocking until there is one.
    pub(crate) fn wait_next(&self) -> Next {
        let mut state = self.lock();
        loop {
            if let Some(next) = state.next(&self.cancel) {
                return next;
            }
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Marks the running chunk finished; true if it was cancelled meanwhile.
    pub(crate) fn finish(&self) -> bool {
        let mut state = self.lock();
        state.running = None;
        self.cancel.swap(false, Ordering::Relaxed)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The supervisor is gone: whatever runs now can give up.
    pub(crate) fn cancel_all(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

impl State {
    fn take_frames(
        &mut self,
        frames: &mut FrameReader,
        cancel: &AtomicBool,
    ) -> Result<(), ProtocolError> {
        while let Some(payload) = frames.next_frame()? {
            self.apply(decode_supervisor_message(payload)?, cancel)?;
        }
        Ok(())
    }

    fn apply(
        &mut self,
        message: SupervisorMessage,
        cancel: &AtomicBool,
    ) -> Result<(), ProtocolError> {
        match message {
            SupervisorMessage::Assign(assign) => self.assigned(assign.into())?,
            SupervisorMessage::AssignData(assign) => self.assigned(assign.into())?,
            SupervisorMessage::Cancel(c) => {
                if let Some(queued) = self.queue.iter_mut().find(|q| q.chunk.index == c.index) {
                    queued.cancelled = true;
                } else if self.running == Some(c.index) {
                    cancel.store(true, Ordering::Relaxed);
                }
                // Otherwise the chunk is already answered.
            }
            SupervisorMessage::Stop => self.stopping = true,
            SupervisorMessage::Welcome(_) => {
                return Err(ProtocolError::Unexpected("a second Welcome".into()));
            }
        }
        Ok(())
    }

    fn assigned(&mut self, chunk: Chunk) -> Result<(), ProtocolError> {
        if self.stopping {
            return Err(ProtocolError::Unexpected(format!(
                "Assign for chunk {} after Stop",
                chunk.index
            )));
        }
        self.queue.push_back(Queued {
            chunk,
            cancelled: false,
        });
        Ok(())
    }

    fn next(&mut self, cancel: &AtomicBool) -> Option<Next> {
        match self.queue.pop_front() {
            Some(Queued {
                chunk,
                cancelled: true,
            }) => Some(Next::Cancelled(chunk.index)),
            Some(Queued { chunk, .. }) => {
                self.running = Some(chunk.index);
                cancel.store(false, Ordering::Relaxed);
                Some(Next::Run(chunk))
            }
            None => self.stopping.then_some(Next::Stop),
        }
    }
}

#[cfg(test)]
mod tests {
    use protocol::codec::encode_frame;
    use protocol::message::{Assign, AssignData, Cancel};

    use super::*;

    fn assign(index: u64) -> SupervisorMessage {
        SupervisorMessage::Assign(Assign {
            index,
            start: index * 10,
            end: index * 10 + 10,
            attempt: 1,
            first_item: index * 10,
        })
    }

    fn cancel(index: u64) -> SupervisorMessage {
        SupervisorMessage::Cancel(Cancel { index })
    }

    fn receive(inbox: &Inbox, messages: &[SupervisorMessage]) -> Result<(), ProtocolError> {
        let mut bytes = Vec::new();
        for m in messages {
            encode_frame(m, &mut bytes).unwrap();
        }
        let mut frames = FrameReader::new();
        frames.fill_from(&mut &bytes[..]).unwrap();
        inbox.receive(&mut frames)
    }

    fn run_index(next: Option<Next>) -> u64 {
        match next {
            Some(Next::Run(chunk)) => chunk.index,
            other => panic!("expected a chunk to run, got {other:?}"),
        }
    }

    #[test]
    fn a_queued_chunk_that_is_cancelled_is_answered_in_its_place_and_never_runs() {
        let inbox = Inbox::default();
        receive(&inbox, &[assign(0), assign(1), assign(2), cancel(1)]).unwrap();
        assert_eq!(run_index(inbox.try_next()), 0);
        assert!(!inbox.finish());
        assert_eq!(inbox.try_next(), Some(Next::Cancelled(1)));
        assert_eq!(run_index(inbox.try_next()), 2);
        assert!(!inbox.finish());
        assert_eq!(inbox.try_next(), None);
    }

    #[test]
    fn cancelling_the_running_chunk_raises_the_flag_until_it_finishes() {
        let inbox = Inbox::default();
        receive(&inbox, &[assign(0), assign(1)]).unwrap();
        assert_eq!(run_index(inbox.try_next()), 0);
        receive(&inbox, &[cancel(0)]).unwrap();
        assert!(inbox.is_cancelled());
        assert!(inbox.finish());
        assert_eq!(run_index(inbox.try_next()), 1);
        assert!(!inbox.is_cancelled());
    }

    #[test]
    fn a_cancel_for_an_answered_chunk_is_ignored() {
        let inbox = Inbox::default();
        receive(&inbox, &[assign(0)]).unwrap();
        assert_eq!(run_index(inbox.try_next()), 0);
        assert!(!inbox.finish());
        receive(&inbox, &[cancel(0), cancel(7)]).unwrap();
        assert!(!inbox.is_cancelled());
        assert_eq!(inbox.try_next(), None);
    }

    #[test]
    fn stop_comes_after_every_queued_chunk() {
        let inbox = Inbox::default();
        receive(&inbox, &[assign(0), assign(1), SupervisorMessage::Stop]).unwrap();
        assert_eq!(run_index(inbox.try_next()), 0);
        inbox.finish();
        assert_eq!(run_index(Some(inbox.wait_next())), 1);
        inbox.finish();
        assert_eq!(inbox.wait_next(), Next::Stop);
    }

    #[test]
    fn a_chunk_that_came_with_its_bytes_runs_with_them_in_its_turn() {
        let inbox = Inbox::default();
        let with_data = SupervisorMessage::AssignData(AssignData {
            index: 1,
            start: 10,
            end: 13,
            attempt: 2,
            first_item: 10,
            data: b"ab\n".to_vec(),
        });
        receive(&inbox, &[assign(0), with_data]).unwrap();
        assert_eq!(run_index(inbox.try_next()), 0);
        inbox.finish();
        match inbox.try_next() {
            Some(Next::Run(chunk)) => {
                assert_eq!(
                    (chunk.index, chunk.start, chunk.end, chunk.attempt),
                    (1, 10, 13, 2)
                );
                assert_eq!(chunk.data(), Some(&b"ab\n"[..]));
            }
            other => panic!("expected chunk 1, got {other:?}"),
        }
        let after_stop = SupervisorMessage::AssignData(AssignData {
            index: 5,
            start: 0,
            end: 0,
            attempt: 1,
            first_item: 0,
            data: Vec::new(),
        });
        let err = receive(&Inbox::default(), &[SupervisorMessage::Stop, after_stop]).unwrap_err();
        assert!(matches!(err, ProtocolError::Unexpected(_)));
    }

    #[test]
    fn work_after_stop_or_a_second_welcome_breaks_the_protocol() {
        let inbox = Inbox::default();
        let err = receive(&inbox, &[SupervisorMessage::Stop, assign(0)]).unwrap_err();
        assert!(matches!(err, ProtocolError::Unexpected(_)));

        let welcome = SupervisorMessage::Welcome(protocol::message::Welcome {
            protocol_version: protocol::PROTOCOL_VERSION,
            worker_id: 0,
            params: String::new(),
            input: protocol::message::Input::Range,
        });
        let err = receive(&Inbox::default(), &[welcome]).unwrap_err();
        assert!(matches!(err, ProtocolError::Unexpected(_)));
    }

    #[test]
    fn an_undecodable_frame_is_an_error() {
        let mut frames = FrameReader::new();
        frames
            .fill_from(&mut &[4u8, 0, 0, 0, 9, 0, 0, 0][..])
            .unwrap();
        assert!(Inbox::default().receive(&mut frames).is_err());
    }
}
