//! A worker that lies on the wire, for testing supervisors: a serve loop of
//! its own, on one thread, that writes each answer the moment it is made, so
//! every lie's bytes and their order on the socket are exact (the SDK batches
//! answers and promises neither). It does every [`FaultKind`], and lies at
//! the handshake too ([`Greeting`]).
//!
//! It runs one chunk at a time, to its end: a `Cancel` for a chunk still
//! queued is answered `Cancelled` when its turn comes, and one for the chunk
//! running is read only after it was answered, so it is ignored, as the
//! protocol allows. In this loop `hang` also stops reading.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use protocol::codec::decode_supervisor_message;
use protocol::connection::FrameReader;
use protocol::frame::{HEADER_LEN, MAX_FRAME_LEN};
use protocol::message::{Cancelled, Done, Failed, Hello};
use protocol::{PROTOCOL_VERSION, ProtocolError, SupervisorMessage, WorkerMessage};

use crate::context::Chunk;
use crate::error::WorkerError;
use crate::faults::{self, Fault, FaultKind};
use crate::{signals, socket};

/// How the worker opens the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Greeting {
    /// `Hello` in this protocol version.
    #[default]
    Honest,
    /// `Hello` in another protocol version.
    Version(u32),
    /// A `Done` for chunk 0 before the `Hello`: a first message that is not `Hello`.
    AnswerFirst,
    /// `Hello`, then never a read or a write again, alive until killed.
    Deaf,
}

/// Serves chunks until `Stop` or the end of the stream, with `work` making
/// each chunk's output from the `Welcome`'s params, and every fault in
/// `faults` done where it fires. `Err` from `work` is answered `Failed`.
///
/// # Errors
///
/// When the process was not started by a supervisor, the handshake fails,
/// or the supervisor sends something that does not decode.
pub fn serve<W>(faults: &[Fault], greeting: Greeting, mut work: W) -> Result<(), WorkerError>
where
    W: FnMut(&str, &Chunk, &mut Vec<u8>) -> Result<(), String>,
{
    let socket = socket::take_inherited()?;
    signals::ignore_interrupt().map_err(WorkerError::Signals)?;
    let mut wire = Wire {
        socket,
        frames: FrameReader::new(),
        queue: VecDeque::new(),
        stopping: false,
        held: Vec::new(),
    };
    wire.greet(greeting)?;
    let params = wire.welcome()?;
    let mut output = Vec::new();
    loop {
        if !wire.take_in()? {
            // The supervisor is gone: nobody is left to answer.
            return Ok(());
        }
        match wire.queue.pop_front() {
            Some(Queued {
                chunk,
                cancelled: true,
            }) => {
                let bytes =
                    faults::frame(&WorkerMessage::Cancelled(Cancelled { index: chunk.index }));
                wire.answer(bytes, false);
            }
            Some(Queued { chunk, .. }) => {
                run_chunk(&mut wire, faults, &params, &chunk, &mut output, &mut work)
            }
            None if wire.stopping => {
                wire.release_held();
                return Ok(());
            }
            None => {}
        }
    }
}

struct Queued {
    chunk: Chunk,
    cancelled: bool,
}

/// The socket and what has come in through it.
struct Wire {
    socket: UnixStream,
    frames: FrameReader,
    queue: VecDeque<Queued>,
    stopping: bool,
    /// Answers held back by `reorder`, sent after the next answer.
    held: Vec<Vec<u8>>,
}

impl Wire {
    fn greet(&mut self, greeting: Greeting) -> Result<(), WorkerError> {
        let hello = |protocol_version| {
            faults::frame(&WorkerMessage::Hello(Hello {
                protocol_version,
                pid: std::process::id(),
            }))
        };
        match greeting {
            Greeting::Honest => self.send(&hello(PROTOCOL_VERSION)),
            Greeting::Version(version) => self.send(&hello(version)),
            Greeting::AnswerFirst => {
                self.send(&faults::frame(&WorkerMessage::Done(Done {
                    index: 0,
                    elapsed_ns: 0,
                    output: b"0",
                })));
                self.send(&hello(PROTOCOL_VERSION));
            }
            Greeting::Deaf => {
                self.send(&hello(PROTOCOL_VERSION));
                faults::hang();
            }
        }
        Ok(())
    }

    /// Reads until the `Welcome`; returns its params.
    fn welcome(&mut self) -> Result<String, WorkerError> {
        loop {
            if let Some(payload) = self.frames.next_frame()? {
                return match decode_supervisor_message(payload)? {
                    SupervisorMessage::Welcome(welcome) => Ok(welcome.params),
                    other => {
                        Err(ProtocolError::Unexpected(format!("{other:?} before Welcome")).into())
                    }
                };
            }
            if !self.frames.fill_from(&mut self.socket)? {
                return Err(WorkerError::Disconnected);
            }
        }
    }

    /// Takes in whatever has arrived, waiting for something when there is
    /// nothing to do. False once the stream has ended.
    fn take_in(&mut self) -> Result<bool, WorkerError> {
        loop {
            self.file_frames()?;
            let idle = self.queue.is_empty() && !self.stopping;
            if !idle && !readable(&self.socket) {
                return Ok(true);
            }
            if !self.frames.fill_from(&mut self.socket)? {
                return Ok(false);
            }
            if !idle {
                self.file_frames()?;
                return Ok(true);
            }
        }
    }

    /// Files every whole frame received so far.
    fn file_frames(&mut self) -> Result<(), WorkerError> {
        while let Some(payload) = self.frames.next_frame()? {
            match decode_supervisor_message(payload)? {
                SupervisorMessage::Assign(assign) => self.queue.push_back(Queued {
                    chunk: Chunk::from(assign),
                    cancelled: false,
                }),
                SupervisorMessage::AssignData(assign) => self.queue.push_back(Queued {
                    chunk: Chunk::from(assign),
                    cancelled: false,
                }),
                SupervisorMessage::Cancel(cancel) => {
                    for queued in &mut self.queue {
                        queued.cancelled |= queued.chunk.index == cancel.index;
                    }
                }
                SupervisorMessage::Stop => self.stopping = true,
                SupervisorMessage::Welcome(_) => {
                    return Err(ProtocolError::Unexpected("a second Welcome".into()).into());
                }
            }
        }
        Ok(())
    }

    /// Sends a chunk's answer, or holds it back for after the next one.
    fn answer(&mut self, bytes: Vec<u8>, hold: bool) {
        if hold {
            self.held.push(bytes);
            return;
        }
        self.send(&bytes);
        self.release_held();
    }

    fn release_held(&mut self) {
        for bytes in std::mem::take(&mut self.held) {
            self.send(&bytes);
        }
    }

    /// Writes `bytes` whole; a supervisor that went away ends the process.
    fn send(&mut self, bytes: &[u8]) {
        match self.socket.write_all(bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.send(bytes),
            Err(_) => std::process::exit(0),
        }
    }
}

/// True when a read would not block.
fn readable(socket: &UnixStream) -> bool {
    let mut poll = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and a timeout of 0 returns at once.
    unsafe { libc::poll(&mut poll, 1, 0) > 0 }
}

fn run_chunk<W>(
    wire: &mut Wire,
    faults: &[Fault],
    params: &str,
    chunk: &Chunk,
    output: &mut Vec<u8>,
    work: &mut W,
) where
    W: FnMut(&str, &Chunk, &mut Vec<u8>) -> Result<(), String>,
{
    let mut failure = None;
    let (mut twice, mut hold, mut shape) = (false, false, None);
    for fault in faults.iter().filter(|f| f.fires_on(chunk)) {
        match fault.kind {
            FaultKind::Crash => std::process::abort(),
            FaultKind::Exit => std::process::exit(3),
            FaultKind::Hang => faults::hang(),
            FaultKind::Close => {
                let _ = wire.socket.shutdown(Shutdown::Write);
                faults::hang();
            }
            FaultKind::Fail => {
                failure = Some(format!(
                    "injected failure on chunk {} attempt {}",
                    chunk.index, chunk.attempt
                ));
            }
            FaultKind::Garbage => wire.send(&faults::garbage_frame()),
            FaultKind::Oversized => wire.send(&faults::oversized_frame_start()),
            FaultKind::Cancel => wire.send(&faults::frame(&WorkerMessage::Cancelled(Cancelled {
                index: chunk.index,
            }))),
            FaultKind::Stray => wire.send(&faults::frame(&WorkerMessage::Done(Done {
                index: chunk.index + 1_000_000,
                elapsed_ns: 0,
                output: b"0",
            }))),
            FaultKind::Hello => wire.send(&faults::frame(&WorkerMessage::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                pid: std::process::id(),
            }))),
            FaultKind::Twice => twice = true,
            FaultKind::Reorder => hold = true,
            kind => shape = Some(kind),
        }
    }
    output.clear();
    let started = Instant::now();
    let result = match failure {
        Some(error) => Err(error),
        None => work(params, chunk, output),
    };
    let elapsed_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let bytes = answer_bytes(chunk.index, result, output, elapsed_ns, shape);
    if shape == Some(FaultKind::Torn) {
        wire.send(&bytes[..bytes.len() / 2]);
        std::process::exit(0);
    }
    if twice {
        wire.send(&bytes);
    }
    wire.answer(bytes, hold);
}

/// The frame (or what passes for one) that answers chunk `index`, bent
/// the way `shape` says.
fn answer_bytes(
    index: u64,
    result: Result<(), String>,
    output: &[u8],
    elapsed_ns: u64,
    shape: Option<FaultKind>,
) -> Vec<u8> {
    let failed = |error: &str| faults::frame(&WorkerMessage::Failed(Failed { index, error }));
    let done = |elapsed_ns, output: &[u8]| {
        let mut out = protocol::connection::FrameWriter::new();
        out.push(&WorkerMessage::Done(Done {
            index,
            elapsed_ns,
            output,
        }))
        .ok()
        .map(|()| out.pending().to_vec())
    };
    let too_large = || format!("output of {} bytes does not fit in a frame", output.len());
    match shape {
        Some(FaultKind::Timeless) => done(u64::MAX, output).unwrap_or_else(|| failed(&too_large())),
        Some(FaultKind::BigError) => failed(&big_error(index)),
        Some(FaultKind::Empty) => 0u32.to_le_bytes().to_vec(),
        Some(FaultKind::BadUtf8) => {
            let mut payload = 2u32.to_le_bytes().to_vec();
            payload.extend_from_slice(&index.to_le_bytes());
            payload.extend_from_slice(&3u64.to_le_bytes());
            payload.extend_from_slice(&[0xff, 0xfe, 0xfd]);
            with_header(payload)
        }
        Some(kind @ (FaultKind::Trailing | FaultKind::Short | FaultKind::Overlong)) => {
            let whole = done(elapsed_ns, output)
                .or_else(|| done(elapsed_ns, b""))
                .expect("an empty Done fits a frame");
            let mut payload = whole[HEADER_LEN..].to_vec();
            match kind {
                FaultKind::Trailing => payload.extend_from_slice(&[0xAB; 3]),
                // The variant, the index and elapsed_ns; the output's length never comes.
                FaultKind::Short => payload.truncate(20),
                _ => {
                    let claimed = (payload.len() as u64 - 28 + 1000).to_le_bytes();
                    payload[20..28].copy_from_slice(&claimed);
                }
            }
            with_header(payload)
        }
        _ => match result {
            Ok(()) => done(elapsed_ns, output).unwrap_or_else(|| failed(&too_large())),
            Err(error) => failed(&error),
        },
    }
}

/// `payload` behind a header that gives its true length.
fn with_header(payload: Vec<u8>) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a payload within the cap");
    let mut bytes = len.to_le_bytes().to_vec();
    bytes.extend_from_slice(&payload);
    bytes
}

/// An error text as long as a `Failed` frame allows.
fn big_error(index: u64) -> String {
    let len = MAX_FRAME_LEN as usize - 20;
    let mut error = format!("injected error of {len} bytes on chunk {index}: ");
    let pad = len - error.len();
    error.push_str(&"x".repeat(pad));
    error
}

#[cfg(test)]
mod tests {
    use protocol::codec::decode_worker_message;
    use protocol::frame::split_frame;

    use super::*;

    fn decode(bytes: &[u8]) -> Result<WorkerMessage<'_>, ProtocolError> {
        let (payload, total) = split_frame(bytes, MAX_FRAME_LEN)?.expect("a whole frame");
        assert_eq!(total, bytes.len(), "one frame, nothing after it");
        decode_worker_message(&bytes[payload])
    }

    fn shaped(kind: FaultKind) -> Vec<u8> {
        answer_bytes(7, Ok(()), b"42", 1500, Some(kind))
    }

    #[test]
    fn an_honest_answer_decodes_as_done_or_failed() {
        let done = answer_bytes(7, Ok(()), b"42", 1500, None);
        assert_eq!(
            decode(&done).unwrap(),
            WorkerMessage::Done(Done {
                index: 7,
                elapsed_ns: 1500,
                output: b"42"
            })
        );
        let failed = answer_bytes(7, Err("no".into()), b"", 1500, None);
        assert_eq!(
            decode(&failed).unwrap(),
            WorkerMessage::Failed(Failed {
                index: 7,
                error: "no"
            })
        );
    }

    #[test]
    fn each_bent_answer_is_one_whole_frame_that_does_not_decode() {
        for kind in [
            FaultKind::Trailing,
            FaultKind::Short,
            FaultKind::Overlong,
            FaultKind::BadUtf8,
        ] {
            let bytes = shaped(kind);
            assert!(decode(&bytes).is_err(), "{kind} decodes");
        }
        assert_eq!(shaped(FaultKind::Empty), [0, 0, 0, 0]);
    }

    #[test]
    fn a_timeless_done_and_the_biggest_error_are_valid_answers() {
        assert!(matches!(
            decode(&shaped(FaultKind::Timeless)).unwrap(),
            WorkerMessage::Done(Done {
                index: 7,
                elapsed_ns: u64::MAX,
                ..
            })
        ));
        let bytes = shaped(FaultKind::BigError);
        assert_eq!(bytes.len(), HEADER_LEN + MAX_FRAME_LEN as usize);
        assert!(matches!(
            decode(&bytes).unwrap(),
            WorkerMessage::Failed(Failed { index: 7, .. })
        ));
    }
}
