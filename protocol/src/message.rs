//! The messages, one enum per direction. Plain structs only: bincode is not
//! self-describing, so no `flatten`, `untagged` or skipped fields here.
//!
//! Changing anything in this file changes the wire format: bump
//! [`PROTOCOL_VERSION`] and the test vectors in PROTOCOL.md together.

use serde::{Deserialize, Serialize};

/// Both sides send their version first; a mismatch ends the handshake.
pub const PROTOCOL_VERSION: u32 = 3;

/// Messages from the supervisor to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupervisorMessage {
    /// The answer to [`WorkerMessage::Hello`]; work may follow.
    Welcome(Welcome),
    /// Work on one chunk. Several may be outstanding; each gets exactly one answer.
    Assign(Assign),
    /// Abandon this chunk if it is not finished; it is still answered
    /// (with `Cancelled`, or `Done`/`Failed` if it finished first).
    Cancel(Cancel),
    /// No more work: answer every chunk already assigned, then exit.
    Stop,
    /// Work on one chunk whose bytes travel with it: the job's input can be
    /// read only once (a `stdin` source). Answered like an `Assign`.
    AssignData(AssignData),
}

/// Messages from a worker to the supervisor. Borrowed, so the supervisor
/// decodes results in place without copying them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerMessage<'a> {
    /// The first frame a worker sends. Its layout never changes across
    /// versions, so a mismatch can always be reported with both numbers.
    Hello(Hello),
    /// The chunk finished; its output bytes.
    #[serde(borrow)]
    Done(Done<'a>),
    /// The chunk failed; the attempt may be retried elsewhere.
    #[serde(borrow)]
    Failed(Failed<'a>),
    /// The chunk was abandoned after a `Cancel`.
    Cancelled(Cancelled),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol_version: u32,
    /// The worker's slot, 0-based; stable across replacements of the slot.
    pub worker_id: u32,
    /// The job's `[worker] params` table, as a JSON text.
    pub params: String,
    /// What the chunks' ranges point into.
    pub input: Input,
}

/// The job's source, as a worker needs to know it: what `start` and `end`
/// count, and the file a chunk's byte range lies in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// `[start, end)` are integers; there is no file.
    Range,
    /// `[start, end)` are byte offsets into `path`, cut just after a delimiter.
    File { path: String },
    /// `[start, end)` are byte offsets into `path`, cut at line ends;
    /// `first_item` is the number of the chunk's first line.
    Lines { path: String },
    /// `[start, end)` are byte offsets into the supervisor's standard input,
    /// cut just after a delimiter; the bytes come in each `AssignData`.
    Stdin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assign {
    pub index: u64,
    /// Chunk covers `[start, end)`: items for a range source, bytes for files.
    pub start: u64,
    pub end: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The number of the chunk's first item, counted from 0 over the whole
    /// job: `start` for a range, the first byte (`start`) for a file, the
    /// first line's number for lines.
    pub first_item: u64,
}

/// An [`Assign`] and the chunk's bytes, `end - start` of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignData {
    pub index: u64,
    pub start: u64,
    pub end: u64,
    pub attempt: u32,
    pub first_item: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl AssignData {
    /// The assignment without its bytes.
    pub fn assign(&self) -> Assign {
        Assign {
            index: self.index,
            start: self.start,
            end: self.end,
            attempt: self.attempt,
            first_item: self.first_item,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    pub index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done<'a> {
    pub index: u64,
    /// Wall-clock nanoseconds the worker's handler spent on this chunk, from
    /// the moment it started the chunk to the moment it finished; time the
    /// chunk spent queued at the worker is not included.
    pub elapsed_ns: u64,
    #[serde(with = "serde_bytes", borrow)]
    pub output: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed<'a> {
    pub index: u64,
    #[serde(borrow)]
    pub error: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelled {
    pub index: u64,
}
