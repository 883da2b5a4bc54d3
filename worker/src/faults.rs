//! Deterministic fault injection for testing supervisors: make a worker crash,
//! exit, hang, fail or break the protocol on chosen chunks and attempts, or
//! use a set amount of memory on every chunk. The lies about the wire itself
//! (answers twice or out of order, frames cut or padded) need the exact order
//! of bytes on the socket that the SDK's batched answers do not promise: a
//! worker with one of them serves with [`crate::hostile`]'s loop instead.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use protocol::WorkerMessage;
use protocol::connection::FrameWriter;
use protocol::message::{Cancelled, Done, Hello};
use thiserror::Error;

use crate::context::{Chunk, Context};

/// What a [`Fault`] does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Abort the process (SIGABRT).
    Crash,
    /// Exit the process with status 3.
    Exit,
    /// Sleep forever, ignoring cancellation.
    Hang,
    /// Answer `Failed`.
    Fail,
    /// Write a 64-byte frame that is not a message onto the socket, then go on.
    Garbage,
    /// Write a frame header announcing 0xFFFF_FFF0 bytes and a few bytes of
    /// body onto the socket, then go on.
    Oversized,
    /// Answer `Cancelled` for the chunk, which nobody cancelled, then go on
    /// (its real answer follows).
    Cancel,
    /// Answer `Done` for a chunk it was never given (the index plus a
    /// million), then go on.
    Stray,
    /// Say `Hello` again, then go on.
    Hello,
    /// Answer `Done` for the chunk twice.
    Twice,
    /// Hold the chunk's answer back until the next chunk's is sent.
    Reorder,
    /// Answer with a `Done` frame whose payload has three bytes after the message.
    Trailing,
    /// Answer with a `Done` frame whose payload ends before the output's length.
    Short,
    /// Answer with a `Done` whose output length points past the payload's end.
    Overlong,
    /// Answer `Failed` with an error that is not UTF-8.
    BadUtf8,
    /// Answer with a frame of length 0.
    Empty,
    /// Answer `Failed` with the largest error a frame can carry (64 MiB less
    /// the 20 bytes before it): a valid answer, and a heavy one.
    BigError,
    /// Shut the socket's sending side down, then live on, neither reading
    /// nor exiting.
    Close,
    /// Answer `Done` with an `elapsed_ns` of 2^64 - 1.
    Timeless,
    /// Send the first half of the chunk's `Done` frame, then exit with status 0:
    /// the stream ends inside a frame.
    Torn,
}

impl FaultKind {
    const ALL: [FaultKind; 20] = [
        FaultKind::Crash,
        FaultKind::Exit,
        FaultKind::Hang,
        FaultKind::Fail,
        FaultKind::Garbage,
        FaultKind::Oversized,
        FaultKind::Cancel,
        FaultKind::Stray,
        FaultKind::Hello,
        FaultKind::Twice,
        FaultKind::Reorder,
        FaultKind::Trailing,
        FaultKind::Short,
        FaultKind::Overlong,
        FaultKind::BadUtf8,
        FaultKind::Empty,
        FaultKind::BigError,
        FaultKind::Close,
        FaultKind::Timeless,
        FaultKind::Torn,
    ];

    /// True for the lies that shape the chunk's own answer, which only
    /// [`crate::hostile`]'s loop can tell.
    pub fn needs_own_loop(self) -> bool {
        matches!(
            self,
            FaultKind::Twice
                | FaultKind::Reorder
                | FaultKind::Trailing
                | FaultKind::Short
                | FaultKind::Overlong
                | FaultKind::BadUtf8
                | FaultKind::Empty
                | FaultKind::BigError
                | FaultKind::Close
                | FaultKind::Timeless
                | FaultKind::Torn
        )
    }

    /// The name used in `KIND:INDEX[:BELOW]`.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::Exit => "exit",
            FaultKind::Hang => "hang",
            FaultKind::Fail => "fail",
            FaultKind::Garbage => "garbage",
            FaultKind::Oversized => "oversized",
            FaultKind::Cancel => "cancel",
            FaultKind::Stray => "stray",
            FaultKind::Hello => "hello",
            FaultKind::Twice => "twice",
            FaultKind::Reorder => "reorder",
            FaultKind::Trailing => "trailing",
            FaultKind::Short => "short",
            FaultKind::Overlong => "overlong",
            FaultKind::BadUtf8 => "badutf8",
            FaultKind::Empty => "empty",
            FaultKind::BigError => "bigerror",
            FaultKind::Close => "close",
            FaultKind::Timeless => "timeless",
            FaultKind::Torn => "torn",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault on one chunk, written `KIND:INDEX[:BELOW]`: it fires on chunk
/// `INDEX` while the attempt is below `BELOW` (on every attempt without it).
/// So `crash:5:2` crashes the first attempt of chunk 5 and lets the retry pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub index: u64,
    pub below: Option<u32>,
}

/// Why a `KIND:INDEX[:BELOW]` text is not a [`Fault`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FaultParseError {
    #[error("expected KIND:INDEX[:BELOW], got {0:?}")]
    Shape(String),
    #[error(
        "unknown fault kind {0:?} (expected crash, exit, hang, fail, garbage, oversized, cancel, \
         stray, hello, twice, reorder, trailing, short, overlong, badutf8, empty, bigerror, close, \
         timeless or torn)"
    )]
    Kind(String),
    #[error("{what} must be a non-negative integer, got {value:?}")]
    Number { what: &'static str, value: String },
}

impl FromStr for Fault {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(':');
        let (Some(kind), Some(index), below, None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(FaultParseError::Shape(s.into()));
        };
        let kind = FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == kind)
            .ok_or_else(|| FaultParseError::Kind(kind.into()))?;
        Ok(Fault {
            kind,
            index: number("INDEX", index)?,
            below: below.map(|b| number("BELOW", b)).transpose()?,
        })
    }
}

fn number<T: FromStr>(what: &'static str, value: &str) -> Result<T, FaultParseError> {
    value.parse().map_err(|_| FaultParseError::Number {
        what,
        value: value.into(),
    })
}

/// A fault that makes the chunk fail, or could not do its damage.
#[derive(Debug, Error)]
pub enum Injected {
    #[error("injected failure on chunk {index} attempt {attempt}")]
    Failure { index: u64, attempt: u32 },
    #[error("cannot inject {kind}: {source}")]
    Write { kind: FaultKind, source: io::Error },
    #[error("{0} shapes the chunk's answer: only a worker serving with its own loop can inject it")]
    NeedsOwnLoop(FaultKind),
}

impl Fault {
    /// True if this fault fires on this attempt of this chunk.
    pub fn fires_on(&self, chunk: &Chunk) -> bool {
        chunk.index == self.index && self.below.is_none_or(|below| chunk.attempt < below)
    }

    /// Does the damage. Returns for every kind but `crash`, `exit` and
    /// `hang`; `fail` with the error to answer.
    pub fn inject(&self, ctx: &Context, chunk: &Chunk) -> Result<(), Injected> {
        let raw = |bytes: &[u8]| {
            ctx.raw_socket_for_tests()
                .write_all(bytes)
                .map_err(|source| Injected::Write {
                    kind: self.kind,
                    source,
                })
        };
        match self.kind {
            FaultKind::Crash => std::process::abort(),
            FaultKind::Exit => std::process::exit(3),
            FaultKind::Hang => hang(),
            FaultKind::Fail => Err(Injected::Failure {
                index: chunk.index,
                attempt: chunk.attempt,
            }),
            FaultKind::Garbage => raw(&garbage_frame()),
            FaultKind::Oversized => raw(&oversized_frame_start()),
            FaultKind::Cancel => raw(&frame(&WorkerMessage::Cancelled(Cancelled {
                index: chunk.index,
            }))),
            FaultKind::Stray => raw(&frame(&WorkerMessage::Done(Done {
                index: chunk.index + 1_000_000,
                elapsed_ns: 0,
                output: b"0",
            }))),
            FaultKind::Hello => raw(&frame(&WorkerMessage::Hello(Hello {
                protocol_version: protocol::PROTOCOL_VERSION,
                pid: std::process::id(),
            }))),
            kind => Err(Injected::NeedsOwnLoop(kind)),
        }
    }
}

/// One whole frame of `message`, as the SDK would send it.
pub(crate) fn frame(message: &WorkerMessage<'_>) -> Vec<u8> {
    let mut out = FrameWriter::new();
    out.push(message).expect("a small message fits a frame");
    out.pending().to_vec()
}

/// Injects every fault in `faults` that fires on `chunk`, in order.
pub fn inject_all(faults: &[Fault], ctx: &Context, chunk: &Chunk) -> Result<(), Injected> {
    faults
        .iter()
        .filter(|f| f.fires_on(chunk))
        .try_for_each(|f| f.inject(ctx, chunk))
}

/// The page size assumed when touching memory: touching more often than
/// the real page size costs little, touching less often leaves pages unmapped.
const PAGE: usize = 4096;

/// Allocates `mebibytes` MiB, writes a byte into every 4 KiB of it so the
/// pages are really mapped (an untouched allocation costs only address
/// space), and frees it. When the allocation fails, for example under a
/// lower `RLIMIT_AS`, the Rust allocator aborts the process (SIGABRT) after
/// printing `memory allocation of N bytes failed`.
pub fn allocate_and_touch(mebibytes: u32) {
    let bytes = usize::try_from(u64::from(mebibytes) << 20).expect("a 64-bit address space");
    let mut block = vec![0u8; bytes];
    for offset in (0..bytes).step_by(PAGE) {
        block[offset] = 1;
    }
    // Otherwise the writes to a buffer nobody reads may be optimised away.
    std::hint::black_box(&mut block);
}

/// Sleeps forever.
pub fn hang() -> ! {
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

/// Sleeps for `duration` unless `cancelled` turns true first (it is asked
/// every 10 ms); true if it did.
pub fn sleep_unless_cancelled(cancelled: impl Fn() -> bool, duration: Duration) -> bool {
    const TICK: Duration = Duration::from_millis(10);
    let until = Instant::now() + duration;
    loop {
        if cancelled() {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        thread::sleep(left.min(TICK));
    }
}

/// A frame header announcing 0xFFFF_FFF0 bytes, and the first few of them.
pub(crate) fn oversized_frame_start() -> Vec<u8> {
    let mut bytes = 0xFFFF_FFF0_u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"oversize");
    bytes
}

/// A whole frame whose payload is no message: its variant tag is out of range
/// and the rest is a fixed pseudo-random sequence, the same on every run.
pub(crate) fn garbage_frame() -> [u8; 64] {
    let mut frame = [0u8; 64];
    frame[..4].copy_from_slice(&60u32.to_le_bytes());
    frame[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut x: u32 = 0x9E37_79B9;
    for byte in &mut frame[8..] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *byte = x.to_le_bytes()[0];
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(index: u64, attempt: u32) -> Chunk {
        Chunk {
            index,
            start: 0,
            end: 1,
            attempt,
            first_item: 0,
            data: None,
        }
    }

    #[test]
    fn parses_kind_index_and_an_optional_bound() {
        assert_eq!(
            "crash:5:2".parse(),
            Ok(Fault {
                kind: FaultKind::Crash,
                index: 5,
                below: Some(2)
            })
        );
        assert_eq!(
            "oversized:0".parse(),
            Ok(Fault {
                kind: FaultKind::Oversized,
                index: 0,
                below: None
            })
        );
    }

    #[test]
    fn refuses_malformed_faults() {
        for bad in [
            "crash",
            "crash:",
            "crash:x",
            "crash:1:2:3",
            "crash:1:-1",
            "slow:1",
            "",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
        assert!(matches!("boom:1".parse::<Fault>(), Err(FaultParseError::Kind(k)) if k == "boom"));
    }

    #[test]
    fn fires_on_its_chunk_while_the_attempt_is_below_the_bound() {
        let once: Fault = "crash:5:2".parse().unwrap();
        assert!(once.fires_on(&chunk(5, 1)));
        assert!(!once.fires_on(&chunk(5, 2)));
        assert!(!once.fires_on(&chunk(4, 1)));
        let always: Fault = "fail:5".parse().unwrap();
        assert!(always.fires_on(&chunk(5, 1)) && always.fires_on(&chunk(5, 9)));
    }

    #[test]
    fn every_kind_parses_by_its_name() {
        for kind in FaultKind::ALL {
            let fault: Fault = format!("{kind}:1").parse().unwrap();
            assert_eq!(fault.kind, kind);
        }
    }

    #[test]
    fn allocating_a_few_mebibytes_returns() {
        allocate_and_touch(0);
        allocate_and_touch(3);
    }

    #[test]
    fn garbage_is_a_whole_frame_that_does_not_decode() {
        let frame = garbage_frame();
        let mut buffer = protocol::connection::FrameReader::new();
        buffer.fill_from(&mut &frame[..]).unwrap();
        let payload = buffer.next_frame().unwrap().unwrap();
        assert_eq!(payload.len(), 60);
        assert!(protocol::codec::decode_supervisor_message(payload).is_err());
        assert!(protocol::codec::decode_worker_message(payload).is_err());
    }
}
