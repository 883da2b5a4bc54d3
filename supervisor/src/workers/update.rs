//! What a worker's task tells the run loop, and how its frames become the
//! dispatcher's events: each payload decoded in place, borrowed from the
//! batch, never copied.

use protocol::codec::decode_worker_message;
use protocol::connection::FrameBatch;
use tokio::sync::OwnedSemaphorePermit;

use crate::dispatcher::{Event, Generation};

#[derive(Debug)]
pub struct WorkerUpdate {
    pub slot: usize,
    pub generation: Generation,
    pub kind: UpdateKind,
    /// The share of the bytes in flight between tasks and the run loop that
    /// this update holds; given back when it is dropped, once handled.
    pub held: Option<OwnedSemaphorePermit>,
}

#[derive(Debug)]
pub enum UpdateKind {
    /// Whole frames, in the order the worker sent them.
    Frames(FrameBatch),
    /// Its bytes are not frames (an oversized length): nothing more is read.
    Broken(String),
    /// Its end of the socket closed, and it did not exit soon after.
    Disconnected,
    /// It was reaped: how it ended, in words, and the last lines it wrote
    /// to stderr. Always the last update.
    Exited { status: String, last_words: String },
}

/// The dispatcher's events for a batch of frames from the worker of
/// `generation` in `slot`: one `Message` per frame, in order, until a frame
/// does not decode, which ends the batch with a `ProtocolError`.
pub fn frame_events(
    slot: usize,
    generation: Generation,
    batch: &FrameBatch,
) -> impl Iterator<Item = Event<'_>> {
    let mut payloads = batch.payloads();
    let mut broken = false;
    std::iter::from_fn(move || {
        if broken {
            return None;
        }
        let payload = payloads.next()?;
        Some(match decode_worker_message(payload) {
            Ok(message) => Event::Message {
                slot,
                generation,
                message,
            },
            Err(error) => {
                broken = true;
                Event::ProtocolError {
                    slot,
                    generation,
                    error: error.to_string(),
                }
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use protocol::WorkerMessage;
    use protocol::connection::{FrameReader, FrameWriter};
    use protocol::message::{Cancelled, Done};

    use super::*;

    fn batch_of(bytes: &[u8]) -> FrameBatch {
        let mut reader = FrameReader::new();
        reader.fill_from(&mut &bytes[..]).unwrap();
        let mut batch = FrameBatch::default();
        reader.take_frames(&mut batch).unwrap();
        batch
    }

    #[test]
    fn every_frame_becomes_a_message_in_order() {
        let mut frames = FrameWriter::new();
        frames
            .push(&WorkerMessage::Done(Done {
                index: 4,
                elapsed_ns: 10,
                output: b"42",
            }))
            .unwrap();
        frames
            .push(&WorkerMessage::Cancelled(Cancelled { index: 5 }))
            .unwrap();
        let batch = batch_of(frames.pending());
        let events: Vec<_> = frame_events(1, 7, &batch).collect();
        assert_eq!(events.len(), 2);
        let Event::Message {
            slot: 1,
            generation: 7,
            message: WorkerMessage::Done(done),
        } = &events[0]
        else {
            panic!("{:?}", events[0]);
        };
        assert_eq!((done.index, done.output), (4, &b"42"[..]));
        assert!(matches!(
            events[1],
            Event::Message {
                message: WorkerMessage::Cancelled(Cancelled { index: 5 }),
                ..
            }
        ));
    }

    #[test]
    fn a_frame_that_does_not_decode_ends_the_batch() {
        let mut bytes = Vec::new();
        // A frame of three bytes no message starts with, then a good one.
        bytes.extend_from_slice(&[3, 0, 0, 0, 9, 9, 9]);
        let mut good = FrameWriter::new();
        good.push(&WorkerMessage::Cancelled(Cancelled { index: 1 }))
            .unwrap();
        bytes.extend_from_slice(good.pending());
        let batch = batch_of(&bytes);
        let events: Vec<_> = frame_events(0, 1, &batch).collect();
        assert_eq!(events.len(), 1);
        assert!(matches!(events[0], Event::ProtocolError { slot: 0, .. }));
    }
}
