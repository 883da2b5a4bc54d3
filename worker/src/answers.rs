//! The write side: answers encoded back to back into one buffer and sent with
//! one write, so a batch of short chunks received together is answered together.

use std::fmt::{Display, Write as _};
use std::io;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use protocol::connection::FrameWriter;
use protocol::message::{Cancelled, Done, Failed, WorkerMessage};

use crate::error::WorkerError;
use crate::inbox::Inbox;
use crate::reader::supervisor_gone;

/// Past this many buffered bytes the answers go out without waiting for the
/// queue to run dry.
const FLUSH_AT: usize = 1024 * 1024;

/// Past this much work since the last write the answers go out too: the next
/// queued chunk may run for minutes, and answers held back that long would
/// look to the supervisor like slow chunks. Short chunks still share a write.
const FLUSH_AFTER: Duration = Duration::from_millis(1);

/// An output at least this long goes out from the handler's buffer behind
/// its frame's head, and everything buffered before it, in one write,
/// instead of being copied into the buffer first: for outputs of megabytes
/// that copy costs about as much as the socket's own.
const DIRECT_AT: usize = 64 * 1024;

pub(crate) struct Answers<'a> {
    socket: &'a UnixStream,
    inbox: &'a Inbox,
    out: FrameWriter,
    /// When the main thread last wrote or woke up with new work.
    since: Instant,
    /// A moving average of how long chunks take here: what the next one
    /// will probably take.
    typical: Option<Duration>,
    /// The buffer holds a `Failed` or `Cancelled`: rare answers, which go
    /// out before the next chunk starts whatever chunks take.
    urgent: bool,
    /// Reused for handler error messages.
    error: String,
}

impl<'a> Answers<'a> {
    pub(crate) fn new(socket: &'a UnixStream, inbox: &'a Inbox) -> Self {
        Self {
            socket,
            inbox,
            out: FrameWriter::new(),
            since: Instant::now(),
            typical: None,
            urgent: false,
            error: String::new(),
        }
    }

    /// Answers a chunk the handler ran from `started` to `finished`.
    pub(crate) fn ran<E: Display>(
        &mut self,
        index: u64,
        result: Result<(), E>,
        output: &[u8],
        cancelled: bool,
        started: Instant,
        finished: Instant,
    ) -> Result<(), WorkerError> {
        let elapsed = finished.saturating_duration_since(started);
        self.typical = Some(match self.typical {
            // An eighth of the new, so one odd chunk moves it little.
            Some(typical) => (typical * 7 + elapsed) / 8,
            None => elapsed,
        });
        if cancelled {
            return self.cancelled_at(index, finished);
        }
        // Below, `write!` into a String cannot fail.
        self.error.clear();
        match result {
            Ok(()) => {
                let elapsed_ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
                if output.len() >= DIRECT_AT {
                    if self
                        .out
                        .push_done_head(index, elapsed_ns, output.len())
                        .is_ok()
                    {
                        return self.flush_with(output);
                    }
                } else {
                    let done = WorkerMessage::Done(Done {
                        index,
                        elapsed_ns,
                        output,
                    });
                    if self.out.push(&done).is_ok() {
                        return self.flush_if_due(finished);
                    }
                }
                // The only way a Done fails to encode is an output beyond the
                // frame limit: report that as the chunk's failure.
                let _ = write!(
                    self.error,
                    "output of {} bytes does not fit in a frame of at most {} bytes",
                    output.len(),
                    protocol::frame::MAX_FRAME_LEN
                );
            }
            Err(e) => {
                let _ = write!(self.error, "{e}");
            }
        }
        let failed = WorkerMessage::Failed(Failed {
            index,
            error: &self.error,
        });
        self.out.push(&failed)?;
        self.urgent = true;
        self.flush_if_due(finished)
    }

    pub(crate) fn cancelled(&mut self, index: u64) -> Result<(), WorkerError> {
        self.cancelled_at(index, Instant::now())
    }

    fn cancelled_at(&mut self, index: u64, now: Instant) -> Result<(), WorkerError> {
        self.out
            .push(&WorkerMessage::Cancelled(Cancelled { index }))?;
        self.urgent = true;
        self.flush_if_due(now)
    }

    /// `now` is a recent reading of the clock, so a chunk's answer costs no
    /// reading beyond the two that time it.
    fn flush_if_due(&mut self, now: Instant) -> Result<(), WorkerError> {
        if self.out.pending().len() > FLUSH_AT
            || now.saturating_duration_since(self.since) >= FLUSH_AFTER
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Before a chunk starts: answers still held go out now, unless they
    /// are all `Done`s and chunks here are short (batching them is what
    /// makes short chunks cheap). Otherwise a quick answer (a chunk that
    /// failed at once, say) would wait for the whole of a long chunk after
    /// it, and the supervisor, which times each chunk from the answer before
    /// it, would charge that wait to the wrong chunk.
    pub(crate) fn before_chunk(&mut self) -> Result<(), WorkerError> {
        let short = self.typical.is_some_and(|t| t < FLUSH_AFTER);
        if self.out.is_empty() || (short && !self.urgent) {
            return Ok(());
        }
        self.flush()
    }

    /// Work arrived after a wait: the time spent waiting is no reason to flush.
    pub(crate) fn start_batch(&mut self) {
        self.since = Instant::now();
    }

    pub(crate) fn flush(&mut self) -> Result<(), WorkerError> {
        self.flush_with(&[])
    }

    /// Sends what is buffered, then `tail` (the output of the `Done` whose
    /// head ends the buffer).
    fn flush_with(&mut self, tail: &[u8]) -> Result<(), WorkerError> {
        self.since = Instant::now();
        self.urgent = false;
        match self.out.write_with_tail(&mut self.socket, tail) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                supervisor_gone(self.inbox)
            }
            Err(e) => Err(e.into()),
        }
    }
}
