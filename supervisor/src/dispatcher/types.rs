//! The words the dispatcher and the world around it share: what it is told
//! ([`Event`]), what it asks ([`Effects`]), what it reports ([`RunEvent`]),
//! and how a run ends ([`Outcome`], [`Counts`]).

use std::time::Duration;

use protocol::{SupervisorMessage, WorkerMessage};

use crate::chunks::ChunkSpec;

/// Numbers each worker process the run starts, so that news from a replaced
/// worker is never mistaken for news from its successor in the same slot.
pub type Generation = u64;

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
        /// The last lines it wrote to stderr: why it died, often.
        last_words: String,
    },
    /// A deadline from [`Dispatcher::next_deadline`](super::Dispatcher::next_deadline)
    /// may have passed.
    Tick,
    /// The chunk source has chunks again after it had none ready.
    SourceReady,
    /// SIGTERM, SIGINT or SIGHUP reached the supervisor. The first drains, the
    /// second cancels what is in flight; the run loop handles a third itself.
    Signal { number: i32 },
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
    /// Settled chunks wait for the disk: no new chunk should start until
    /// they are handed on, so memory stays bounded whatever the disk's speed.
    fn is_backlogged(&self) -> bool {
        false
    }
}

/// The facts about a finished chunk that travel with its output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResultMeta {
    pub index: u64,
    pub start: u64,
    pub end: u64,
    pub attempt: u32,
    pub worker: u32,
    pub seconds: f64,
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
    /// `max_failed` was passed: no chunk starts any more, those in flight
    /// finish, and the run aborts with `reason`.
    Tripped {
        reason: &'a str,
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

impl Counts {
    /// Chunks this run brought to an end, one way or another.
    pub fn settled(&self) -> u64 {
        self.done + self.failed + self.cancelled
    }
}

/// The most of a worker's error message kept per attempt: errors wait in
/// memory until their chunk settles, so each is bounded, whatever a worker
/// sends (up to a whole frame).
pub const MAX_ERROR_BYTES: usize = 64 * 1024;

/// `error` whole when short, else its start and its end (where a traceback
/// says what went wrong) around a note of what was cut.
pub fn bounded(error: &str) -> String {
    if error.len() <= MAX_ERROR_BYTES {
        return error.to_owned();
    }
    let half = MAX_ERROR_BYTES / 2;
    let mut head = half;
    while !error.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = error.len() - half;
    while !error.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{}…({} bytes cut)…{}",
        &error[..head],
        tail - head,
        &error[tail..]
    )
}

/// Introduces, in an error, the last lines a worker wrote to stderr.
pub const LAST_WORDS: &str = "; its last words on stderr:\n";

/// A duration the way messages show it: `1m 30s`.
pub fn humanize(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}
