//! The one bincode configuration, and the only code that calls bincode.
//!
//! Little-endian fixed-width integers (simple to implement in any language),
//! enum variants as `u32`, lengths as `u64`. Decoding is size-limited and
//! rejects trailing bytes.

use bincode::config::{Configuration, Fixint, Limit, LittleEndian};
use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::frame::{self, MAX_FRAME_LEN};
use crate::message::{Assign, Done, SupervisorMessage, WorkerMessage};

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

/// The variant tag of `Assign` and of `Done`, each the second of its enum.
const ASSIGN_TAG: u32 = 1;
const DONE_TAG: u32 = 1;
/// Bytes of an `Assign` payload: tag, index, start, end, attempt, first_item.
const ASSIGN_LEN: usize = 40;

/// Appends an `Assign` as one whole frame, the bytes bincode would write
/// (a test holds them equal): the message sent for every chunk, written
/// field by field rather than through serde.
pub fn encode_assign(assign: &Assign, out: &mut Vec<u8>) {
    out.reserve(frame::HEADER_LEN + ASSIGN_LEN);
    out.extend_from_slice(&(ASSIGN_LEN as u32).to_le_bytes());
    out.extend_from_slice(&ASSIGN_TAG.to_le_bytes());
    for value in [assign.index, assign.start, assign.end] {
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&assign.attempt.to_le_bytes());
    out.extend_from_slice(&assign.first_item.to_le_bytes());
}

/// Decodes one frame payload sent by the supervisor.
pub fn decode_supervisor_message(payload: &[u8]) -> Result<SupervisorMessage, ProtocolError> {
    // The message of every chunk, read field by field; anything else, and
    // anything malformed, goes through bincode and its errors.
    if payload.len() == ASSIGN_LEN && u32_at(payload, 0) == ASSIGN_TAG {
        return Ok(SupervisorMessage::Assign(Assign {
            index: u64_at(payload, 4),
            start: u64_at(payload, 12),
            end: u64_at(payload, 20),
            attempt: u32_at(payload, 28),
            first_item: u64_at(payload, 32),
        }));
    }
    decode(payload)
}

/// Decodes one frame payload sent by a worker, borrowing from `payload`.
pub fn decode_worker_message(payload: &[u8]) -> Result<WorkerMessage<'_>, ProtocolError> {
    // `Done`, the answer of every chunk, read field by field when its
    // output's length is exactly what the frame holds.
    if payload.len() >= DONE_OVERHEAD
        && u32_at(payload, 0) == DONE_TAG
        && u64_at(payload, 20) == (payload.len() - DONE_OVERHEAD) as u64
    {
        return Ok(WorkerMessage::Done(Done {
            index: u64_at(payload, 4),
            elapsed_ns: u64_at(payload, 12),
            output: &payload[DONE_OVERHEAD..],
        }));
    }
    decode(payload)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
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
    fn the_hand_written_paths_agree_with_bincode() {
        let assign = Assign {
            index: u64::MAX - 1,
            start: 3,
            end: 1 << 40,
            attempt: 7,
            first_item: 99,
        };
        let mut by_hand = Vec::new();
        encode_assign(&assign, &mut by_hand);
        let mut by_serde = Vec::new();
        encode_frame(&SupervisorMessage::Assign(assign), &mut by_serde).unwrap();
        assert_eq!(by_hand, by_serde);
        assert_eq!(
            decode_supervisor_message(&by_hand[4..]).unwrap(),
            SupervisorMessage::Assign(assign)
        );
        let payload = &by_hand[4..];
        assert_eq!(
            decode(payload).map_err(|e| e.to_string()),
            Ok(SupervisorMessage::Assign(assign))
        );
        for output in [&b""[..], b"42", &[0xff; 300]] {
            let done = WorkerMessage::Done(Done {
                index: 5,
                elapsed_ns: 1234,
                output,
            });
            let mut frame = Vec::new();
            encode_frame(&done, &mut frame).unwrap();
            assert_eq!(decode_worker_message(&frame[4..]).unwrap(), done);
            // A length that disagrees with the frame is bincode's to refuse.
            let mut bad = frame[4..].to_vec();
            bad[20] ^= 1;
            assert!(decode_worker_message(&bad).is_err());
        }
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
