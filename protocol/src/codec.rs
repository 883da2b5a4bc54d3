//! The one bincode configuration, and the only code that calls bincode.
//!
//! Little-endian fixed-width integers (simple to implement in any language),
//! enum variants as `u32`, lengths as `u64`. Decoding is size-limited and
//! rejects trailing bytes.

use bincode::config::{Configuration, Fixint, Limit, LittleEndian};
use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::frame::{self, MAX_FRAME_LEN};
use crate::message::{SupervisorMessage, WorkerMessage};

/// Bytes of a `Done` payload before its output: variant, index,
/// elapsed_ns and the output's length (PROTOCOL.md).
const DONE_OVERHEAD: usize = 28;

/// The largest output one `Done` can carry within the frame limit: a worker
/// can stop collecting output past it rather than fail at the encoding.
pub const MAX_DONE_OUTPUT: usize = MAX_FRAME_LEN as usize - DONE_OVERHEAD;

/// The largest `params` text a `Welcome` can carry within the frame limit,
/// leaving room for the rest of it (the input's path is at most `PATH_MAX`,
/// 4 KiB): a job whose params are larger cannot start a worker.
pub const MAX_WELCOME_PARAMS: usize = MAX_FRAME_LEN as usize - 8 * 1024;

type Config = Configuration<LittleEndian, Fixint, Limit<{ MAX_FRAME_LEN as usize }>>;

const CONFIG: Config = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding()
    .with_limit::<{ MAX_FRAME_LEN as usize }>();

/// Appends `message` to `out` as one whole frame (length prefix included).
/// On error `out` is left as it was.
pub fn encode_frame<M: Serialize>(message: &M, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let before = out.len();
    let header_at = frame::begin_frame(out);
    let result = bincode::serde::encode_into_std_write(message, out, CONFIG)
        .map_err(|e| ProtocolError::Encode(e.to_string()))
        .and_then(|_| frame::finish_frame(out, header_at, MAX_FRAME_LEN));
    if result.is_err() {
        out.truncate(before);
    }
    result
}

/// Appends the frame of a `Done` whose output is `output_len` bytes, all but
/// the output itself: the output follows from wherever it already is, so a
/// large one is sent without being copied behind its head first.
/// `head` + output is exactly what [`encode_frame`] makes of the whole `Done`.
///
/// # Errors
///
/// When the output is longer than [`MAX_DONE_OUTPUT`]; `out` is left as it was.
pub fn encode_done_head(
    index: u64,
    elapsed_ns: u64,
    output_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    if output_len > MAX_DONE_OUTPUT {
        return Err(ProtocolError::FrameTooLarge {
            len: (DONE_OVERHEAD + output_len) as u64,
            max: MAX_FRAME_LEN,
        });
    }
    let done = WorkerMessage::Done(crate::message::Done {
        index,
        elapsed_ns,
        output: &[],
    });
    let at = out.len();
    encode_frame(&done, out)?;
    // An empty output's frame ends with the output's length, 0: the frame's
    // length and that one grow by the output's.
    let frame_len =
        u32::try_from(DONE_OVERHEAD + output_len).map_err(|_| ProtocolError::FrameTooLarge {
            len: (DONE_OVERHEAD + output_len) as u64,
            max: MAX_FRAME_LEN,
        })?;
    let end = out.len();
    out[at..at + frame::HEADER_LEN].copy_from_slice(&frame_len.to_le_bytes());
    out[end - 8..end].copy_from_slice(&(output_len as u64).to_le_bytes());
    Ok(())
}

/// Decodes one frame payload sent by the supervisor.
pub fn decode_supervisor_message(payload: &[u8]) -> Result<SupervisorMessage, ProtocolError> {
    decode(payload)
}

/// Decodes one frame payload sent by a worker, borrowing from `payload`.
pub fn decode_worker_message(payload: &[u8]) -> Result<WorkerMessage<'_>, ProtocolError> {
    decode(payload)
}

fn decode<'de, T: Deserialize<'de>>(payload: &'de [u8]) -> Result<T, ProtocolError> {
    let (message, used) = bincode::serde::borrow_decode_from_slice(payload, CONFIG)
        .map_err(|e| ProtocolError::Decode(e.to_string()))?;
    match payload.len() - used {
        0 => Ok(message),
        extra => Err(ProtocolError::TrailingBytes(extra)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;

    #[test]
    fn assign_is_fixed_width_little_endian() {
        let mut out = Vec::new();
        let msg = SupervisorMessage::Assign(Assign {
            index: 1,
            start: 2,
            end: 3,
            attempt: 4,
            first_item: 5,
        });
        encode_frame(&msg, &mut out).unwrap();
        let mut expected = vec![40, 0, 0, 0, 1, 0, 0, 0];
        for v in [1u64, 2, 3] {
            expected.extend_from_slice(&v.to_le_bytes());
        }
        expected.extend_from_slice(&4u32.to_le_bytes());
        expected.extend_from_slice(&5u64.to_le_bytes());
        assert_eq!(out, expected);
        assert_eq!(decode_supervisor_message(&out[4..]).unwrap(), msg);
    }

    #[test]
    fn the_output_limit_is_what_a_done_frame_leaves() {
        let done = WorkerMessage::Done(Done {
            index: u64::MAX,
            elapsed_ns: u64::MAX,
            output: &[],
        });
        let mut frame = Vec::new();
        encode_frame(&done, &mut frame).unwrap();
        assert_eq!(frame.len() - frame::HEADER_LEN, DONE_OVERHEAD);
        assert_eq!(MAX_DONE_OUTPUT, 67_108_836);
    }

    #[test]
    fn a_done_head_and_its_output_are_the_whole_frame() {
        for output in [&b""[..], b"x", &[7; 100_000]] {
            let mut whole = b"before".to_vec();
            let done = WorkerMessage::Done(Done {
                index: 0x0102_0304_0506_0708,
                elapsed_ns: 99,
                output,
            });
            encode_frame(&done, &mut whole).unwrap();
            let mut head = b"before".to_vec();
            encode_done_head(0x0102_0304_0506_0708, 99, output.len(), &mut head).unwrap();
            head.extend_from_slice(output);
            assert!(head == whole, "{} bytes of output", output.len());
        }
        let mut out = vec![1];
        assert!(encode_done_head(0, 0, MAX_DONE_OUTPUT + 1, &mut out).is_err());
        assert_eq!(out, [1]);
        encode_done_head(0, 0, MAX_DONE_OUTPUT, &mut out).unwrap();
        assert_eq!(out.len(), 1 + frame::HEADER_LEN + DONE_OVERHEAD);
        assert_eq!(out[1..5], MAX_FRAME_LEN.to_le_bytes());
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut out = Vec::new();
        encode_frame(&SupervisorMessage::Stop, &mut out).unwrap();
        out.push(0);
        assert!(matches!(
            decode_supervisor_message(&out[4..]),
            Err(ProtocolError::TrailingBytes(1))
        ));
    }

    #[test]
    fn a_huge_declared_length_inside_a_message_is_refused() {
        // Done { index: 0, elapsed_ns: 0, output: <length u64::MAX> }
        let mut payload = vec![1, 0, 0, 0];
        payload.extend_from_slice(&0u64.to_le_bytes());
        payload.extend_from_slice(&0u64.to_le_bytes());
        payload.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_worker_message(&payload).is_err());
    }
}
