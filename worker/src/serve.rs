//! The worker's life: take the socket, shake hands, run chunks until Stop.

use std::fmt::Display;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use protocol::codec::decode_supervisor_message;
use protocol::connection::{FrameReader, FrameWriter};
use protocol::message::{Hello, Welcome};
use protocol::{PROTOCOL_VERSION, ProtocolError, SupervisorMessage, WorkerMessage};

use crate::answers::Answers;
use crate::context::{Chunk, Context};
use crate::error::WorkerError;
use crate::inbox::{Inbox, Next};
use crate::{signals, socket};

/// Serves chunks from the supervisor that started this process until it sends
/// `Stop`, calling `handler` for each chunk, one at a time, in the order they
/// were assigned.
///
/// The handler writes the chunk's output into the buffer it is given (empty on
/// entry, reused across chunks). `Ok` is answered as `Done` with that output
/// and the wall-clock time the handler took (its `elapsed_ns`; time the chunk
/// waited in the queue is not counted), `Err` as `Failed` with the error's
/// `Display` text, and anything returned for a chunk that was cancelled while
/// it ran as `Cancelled`.
///
/// Returns `Ok(())` once every chunk assigned before `Stop` is answered.
/// When the supervisor goes away the process exits with status 0 right away
/// (nobody is left to answer), and when it sends something unreadable the
/// process exits with status 1. A panicking handler takes the process down;
/// the supervisor then retries the chunk on a fresh worker.
///
/// Signals: SIGINT is ignored from here on, and while `serve` runs a SIGTERM
/// is obeyed only when the parent process (the supervisor) sent it: then the
/// process ends at once, killed by SIGTERM as without a handler. A SIGTERM
/// from anyone else (systemd stopping the service, a user's `kill`) is ignored
/// with a line on stderr, because the supervisor drains its workers itself.
///
/// # Errors
///
/// When the process was not started by a supervisor, the handshake fails
/// (including a protocol version mismatch), or the socket fails.
pub fn serve<H, E>(handler: H) -> Result<(), WorkerError>
where
    H: FnMut(&Context, &Chunk, &mut Vec<u8>) -> Result<(), E>,
    E: Display,
{
    serve_after(|_| Ok(()), handler)
}

/// [`serve`], calling `init` once after the handshake and before the first
/// chunk; an error from it ends serving without answering any chunk.
pub(crate) fn serve_after<I, H, E>(init: I, mut handler: H) -> Result<(), WorkerError>
where
    I: FnOnce(&Context) -> Result<(), WorkerError>,
    H: FnMut(&Context, &Chunk, &mut Vec<u8>) -> Result<(), E>,
    E: Display,
{
    let mut socket = socket::take_inherited()?;
    signals::ignore_interrupt().map_err(WorkerError::Signals)?;
    // Before Hello, so a supervisor that has its Hello knows the policy holds.
    let _serving = signals::obey_only_the_parent().map_err(WorkerError::Signals)?;
    let mut frames = FrameReader::new();
    let welcome = handshake(&mut socket, &mut frames)?;

    let inbox = Arc::new(Inbox::default());
    let reader = crate::reader::spawn(socket.try_clone()?, frames, Arc::clone(&inbox))?;
    let ctx = Context::new(
        welcome.worker_id,
        welcome.params,
        welcome.input,
        Arc::clone(&inbox),
        socket,
    );
    let result = init(&ctx).and_then(|()| run(&ctx, &inbox, &mut handler));

    // Shutting the socket down wakes the reader, which sees `closed` and
    // ends quietly instead of exiting the process.
    inbox.close();
    let _ = ctx.socket().shutdown(Shutdown::Both);
    let _ = reader.join();
    result
}

fn handshake(socket: &mut UnixStream, frames: &mut FrameReader) -> Result<Welcome, WorkerError> {
    let hello = WorkerMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        pid: std::process::id(),
    });
    let mut out = FrameWriter::new();
    out.push(&hello)?;
    out.write_to(socket)?;

    loop {
        if !frames.fill_from(socket)? {
            return Err(WorkerError::Disconnected);
        }
        if let Some(payload) = frames.next_frame()? {
            return match decode_supervisor_message(payload)? {
                SupervisorMessage::Welcome(w) if w.protocol_version == PROTOCOL_VERSION => Ok(w),
                SupervisorMessage::Welcome(w) => Err(ProtocolError::VersionMismatch {
                    worker: PROTOCOL_VERSION,
                    supervisor: w.protocol_version,
                }
                .into()),
                other => Err(ProtocolError::Unexpected(format!("{other:?} before Welcome")).into()),
            };
        }
    }
}

fn run<H, E>(ctx: &Context, inbox: &Inbox, handler: &mut H) -> Result<(), WorkerError>
where
    H: FnMut(&Context, &Chunk, &mut Vec<u8>) -> Result<(), E>,
    E: Display,
{
    let mut answers = Answers::new(ctx.socket(), inbox);
    let mut output = Vec::new();
    loop {
        let next = match inbox.try_next() {
            Some(next) => next,
            None => {
                // Everything received so far is answered: send it before blocking.
                answers.flush()?;
                let next = inbox.wait_next();
                answers.start_batch();
                next
            }
        };
        match next {
            Next::Run(chunk) => {
                answers.before_chunk()?;
                output.clear();
                let started = Instant::now();
                let result = handler(ctx, &chunk, &mut output);
                let finished = Instant::now();
                let cancelled = inbox.finish();
                answers.ran(chunk.index, result, &output, cancelled, started, finished)?;
            }
            Next::Cancelled(index) => answers.cancelled(index)?,
            Next::Stop => return answers.flush(),
        }
    }
}
