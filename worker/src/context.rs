//! What a handler is given: the chunk to work on and the worker's [`Context`].

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use protocol::message::Assign;
use serde::de::DeserializeOwned;

use crate::error::WorkerError;
use crate::inbox::Inbox;

/// One chunk of the job: the items (or bytes) in `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub index: u64,
    pub start: u64,
    pub end: u64,
    /// 1 for the first attempt; a retry after a crash, hang or failure counts up.
    pub attempt: u32,
}

impl From<Assign> for Chunk {
    fn from(a: Assign) -> Self {
        Self {
            index: a.index,
            start: a.start,
            end: a.end,
            attempt: a.attempt,
        }
    }
}

/// The worker's view of the run, the same for every chunk it serves.
#[derive(Debug)]
pub struct Context {
    worker_id: u32,
    params: String,
    inbox: Arc<Inbox>,
    socket: UnixStream,
}

impl Context {
    pub(crate) fn new(
        worker_id: u32,
        params: String,
        inbox: Arc<Inbox>,
        socket: UnixStream,
    ) -> Self {
        Self {
            worker_id,
            params,
            inbox,
            socket,
        }
    }

    /// The worker's slot, 0-based; a replacement for a crashed worker gets the same number.
    pub fn worker_id(&self) -> u32 {
        self.worker_id
    }

    /// The job's `[worker] params` table as JSON text.
    pub fn params_json(&self) -> &str {
        &self.params
    }

    /// The job's `[worker] params` table, deserialized. An empty text reads as `{}`.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, WorkerError> {
        let text = match self.params.trim() {
            "" => "{}",
            text => text,
        };
        serde_json::from_str(text).map_err(WorkerError::Params)
    }

    /// True once the supervisor has cancelled the chunk running now, or has
    /// gone away. Long handlers should poll this now and then and return
    /// early: whatever they return is then answered as `Cancelled`.
    pub fn is_cancelled(&self) -> bool {
        self.inbox.is_cancelled()
    }

    /// The raw socket to the supervisor, for fault injection in tests only:
    /// anything written here bypasses framing. Answers are written between
    /// handler calls, so bytes written here never split a frame.
    #[doc(hidden)]
    pub fn raw_socket_for_tests(&self) -> &UnixStream {
        &self.socket
    }

    pub(crate) fn socket(&self) -> &UnixStream {
        &self.socket
    }
}
