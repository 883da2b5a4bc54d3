//! Reading and writing frames on a byte stream: the only protocol code that
//! does I/O, shared by the supervisor (async) and the worker SDK (blocking).
//!
//! [`FrameReader`] parses each header once, as the bytes arrive (a head/body
//! state, as tokio-util's length-delimited codec does), and hands out every
//! frame one read brought in, so a batch of frames costs one syscall. It
//! never reserves room for a length a peer merely announced: its buffer grows
//! with the bytes actually received. [`FrameWriter`] encodes messages back to
//! back into one buffer that goes out in as few writes as the stream allows.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::ops::Range;

use serde::Serialize;

use crate::codec::encode_frame;
use crate::error::ProtocolError;
use crate::frame::{HEADER_LEN, MAX_FRAME_LEN};

/// Room made for one read when nothing says more is coming.
const READ_SIZE: usize = 64 * 1024;
/// Whole frames up to this many bytes are copied into a batch of their own
/// rather than handing the read buffer over.
const COPIED_BATCH: usize = 16 * 1024;
/// A buffer that grew past this for one large frame is given back once the
/// frame is gone, so a worker's one big answer does not pin its memory.
const KEEP_CAPACITY: usize = 1 << 20;

/// Reads length-prefixed frames from a stream.
#[derive(Debug)]
pub struct FrameReader {
    /// Initialised bytes; `buf[..filled]` were received. Reads land in
    /// `buf[filled..]`, so the buffer is zeroed only when it grows.
    buf: Vec<u8>,
    filled: usize,
    /// Bytes before this were handed out and can be dropped.
    handed: usize,
    /// Payloads of whole frames received and not yet handed out, in order.
    whole: VecDeque<Range<usize>>,
    /// Where the frame being received starts (its header).
    partial: usize,
    /// That frame's payload length, once its header is in.
    body: Option<usize>,
    /// A header announced more than the cap: `(length, cap)`. Nothing after
    /// it can be read, and the frames before it are still handed out first.
    oversized: Option<(u64, u32)>,
    max: u32,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    /// A reader that accepts payloads up to [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            filled: 0,
            handed: 0,
            whole: VecDeque::new(),
            partial: 0,
            body: None,
            oversized: None,
            max: MAX_FRAME_LEN,
        }
    }

    /// The next whole frame's payload, `Ok(None)` when more bytes are needed,
    /// and an error once the frames before an oversized header are out.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, ProtocolError> {
        match self.whole.pop_front() {
            Some(payload) => {
                self.handed = payload.end;
                Ok(Some(&self.buf[payload]))
            }
            None => self.broken().map(|()| None),
        }
    }

    /// Moves every whole frame received so far into `batch` (emptied first),
    /// which then owns their bytes: the frames cross a channel without being
    /// copied, and only the start of a frame still arriving is. The error of
    /// an oversized header comes after the frames before it, which `batch`
    /// holds all the same.
    pub fn take_frames(&mut self, batch: &mut FrameBatch) -> Result<(), ProtocolError> {
        batch.payloads.clear();
        if self.whole.is_empty() {
            return self.broken();
        }
        let tail = self.partial..self.filled;
        if self.partial <= COPIED_BATCH {
            // A few small frames: copied out, so that a batch queued on its
            // way to the caller holds kilobytes, not the read buffer.
            let mut bytes = std::mem::take(&mut batch.bytes);
            bytes.clear();
            if bytes.capacity() > COPIED_BATCH {
                bytes = Vec::with_capacity(COPIED_BATCH);
            }
            bytes.extend_from_slice(&self.buf[..self.partial]);
            batch.bytes = bytes;
            batch.payloads.extend(self.whole.drain(..));
            self.buf.copy_within(tail.clone(), 0);
            self.filled = tail.len();
            self.handed = 0;
            self.partial = 0;
            return self.broken();
        }
        let mut next = std::mem::take(&mut batch.bytes);
        let room = tail.len() + READ_SIZE;
        if next.len() > room.max(KEEP_CAPACITY) {
            next = Vec::new();
        }
        if next.len() < room {
            next.resize(room, 0);
        }
        next[..tail.len()].copy_from_slice(&self.buf[tail.clone()]);
        batch.bytes = std::mem::replace(&mut self.buf, next);
        batch.payloads.extend(self.whole.drain(..));
        self.filled = tail.len();
        self.handed = 0;
        self.partial = 0;
        self.broken()
    }

    /// True if bytes of an unfinished frame are waiting behind the whole ones.
    pub fn has_partial_frame(&self) -> bool {
        self.partial < self.filled
    }

    /// One blocking read. `Ok(false)` on a clean end of stream; an error if
    /// the stream ended inside a frame.
    pub fn fill_from<R: Read>(&mut self, reader: &mut R) -> Result<bool, ProtocolError> {
        let room = self.make_room();
        let read = loop {
            match reader.read(&mut self.buf[self.filled..self.filled + room]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => break read?,
            }
        };
        self.received(read)
    }

    /// One asynchronous read; the same contract as [`FrameReader::fill_from`].
    /// Cancel-safe: dropping the future loses no bytes, so it can sit in a
    /// `select!`.
    #[cfg(feature = "tokio")]
    pub async fn fill_from_async<R>(&mut self, reader: &mut R) -> Result<bool, ProtocolError>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        use tokio::io::AsyncReadExt;
        let room = self.make_room();
        let read = reader
            .read(&mut self.buf[self.filled..self.filled + room])
            .await?;
        self.received(read)
    }

    fn broken(&self) -> Result<(), ProtocolError> {
        match self.oversized {
            Some((len, max)) => Err(ProtocolError::FrameTooLarge { len, max }),
            None => Ok(()),
        }
    }

    /// Drops what was handed out and returns how much the next read may
    /// bring: at least [`READ_SIZE`], more while a large frame arrives, but
    /// never more than the frame's bytes already received, so memory follows
    /// what the peer sent rather than what it announced.
    fn make_room(&mut self) -> usize {
        if self.handed > 0 {
            let shift = self.handed;
            self.buf.copy_within(shift..self.filled, 0);
            self.filled -= shift;
            self.partial -= shift;
            for payload in &mut self.whole {
                *payload = payload.start - shift..payload.end - shift;
            }
            self.handed = 0;
        }
        if self.buf.len() > KEEP_CAPACITY && self.filled < KEEP_CAPACITY / 4 {
            self.buf.truncate(self.filled);
            self.buf.shrink_to_fit();
        }
        let arrived = self.filled - self.partial;
        let missing = self
            .body
            .map_or(0, |body| (HEADER_LEN + body).saturating_sub(arrived));
        let room = READ_SIZE.max(missing.min(arrived));
        if self.buf.len() < self.filled + room {
            self.buf.resize(self.filled + room, 0);
        }
        room
    }

    fn received(&mut self, read: usize) -> Result<bool, ProtocolError> {
        if read == 0 {
            return if self.has_partial_frame() && self.oversized.is_none() {
                Err(ProtocolError::TornFrame)
            } else {
                Ok(false)
            };
        }
        self.filled += read;
        self.parse();
        Ok(true)
    }

    /// Walks the new bytes: each header is read once, each whole frame noted.
    fn parse(&mut self) {
        while self.oversized.is_none() {
            let arrived = self.filled - self.partial;
            let body = match self.body {
                Some(body) => body,
                None => {
                    let Some(header) = self.buf[self.partial..self.filled].first_chunk() else {
                        return;
                    };
                    let len = u32::from_le_bytes(*header);
                    if len > self.max {
                        self.oversized = Some((u64::from(len), self.max));
                        return;
                    }
                    *self.body.insert(len as usize)
                }
            };
            if arrived < HEADER_LEN + body {
                return;
            }
            let start = self.partial + HEADER_LEN;
            self.whole.push_back(start..start + body);
            self.partial = start + body;
            self.body = None;
        }
    }
}

/// Whole frames taken out of a [`FrameReader`], owning their bytes. Reused:
/// a batch handed back keeps its buffers for the next one.
#[derive(Debug, Default)]
pub struct FrameBatch {
    bytes: Vec<u8>,
    payloads: Vec<Range<usize>>,
}

impl FrameBatch {
    /// The frames' payloads, in the order they were received.
    pub fn payloads(&self) -> impl Iterator<Item = &[u8]> {
        self.payloads
            .iter()
            .map(|payload| &self.bytes[payload.clone()])
    }

    /// How many frames it holds.
    pub fn len(&self) -> usize {
        self.payloads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.payloads.is_empty()
    }

    /// Bytes of payload it holds.
    pub fn payload_bytes(&self) -> usize {
        self.payloads.iter().map(ExactSizeIterator::len).sum()
    }

    /// Bytes its buffers hold on to, used or not.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity() + self.payloads.capacity() * std::mem::size_of::<Range<usize>>()
    }
}

/// Messages encoded back to back, waiting to be written.
#[derive(Debug, Default)]
pub struct FrameWriter {
    buf: Vec<u8>,
    /// Bytes at the front already written.
    written: usize,
}

impl FrameWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `message` as one frame. On error (a message past the frame
    /// cap) nothing is appended.
    pub fn push<M: Serialize>(&mut self, message: &M) -> Result<(), ProtocolError> {
        encode_frame(message, &mut self.buf)
    }

    /// Appends an `Assign` as one frame, without serde.
    pub fn push_assign(&mut self, assign: &crate::message::Assign) {
        crate::codec::encode_assign(assign, &mut self.buf);
    }

    /// The bytes not written yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.written..]
    }

    pub fn is_empty(&self) -> bool {
        self.written == self.buf.len()
    }

    /// Appends the head of a `Done` whose output, `output_len` bytes, is
    /// not copied here but follows on the wire from where it already is:
    /// pass it to [`FrameWriter::write_with_tail`].
    pub fn push_done_head(
        &mut self,
        index: u64,
        elapsed_ns: u64,
        output_len: usize,
    ) -> Result<(), ProtocolError> {
        crate::codec::encode_done_head(index, elapsed_ns, output_len, &mut self.buf)
    }

    /// Appends an `AssignData` of `assign` and `data`, copying `data` once.
    /// On error (more data than a frame can carry) nothing is appended.
    pub fn push_assign_data(
        &mut self,
        assign: &crate::message::Assign,
        data: &[u8],
    ) -> Result<(), ProtocolError> {
        crate::codec::encode_assign_data(assign, data, &mut self.buf)
    }

    /// Moves everything pending in `other` to the end of this one. When this
    /// one is empty the buffers are swapped, so nothing is copied.
    pub fn take_from(&mut self, other: &mut FrameWriter) {
        if self.is_empty() {
            std::mem::swap(self, other);
        } else {
            // What was written goes first: a writer that never quite drains
            // between two appends (a worker reading slower than it is fed)
            // would otherwise keep every byte it ever sent.
            self.buf.drain(..self.written);
            self.written = 0;
            self.buf.extend_from_slice(other.pending());
        }
        other.clear();
    }

    /// Forgets everything pending; the buffer is kept for reuse.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.written = 0;
    }

    /// Writes everything pending, blocking as needed; then the writer is empty.
    pub fn write_to<W: Write>(&mut self, writer: &mut W) -> io::Result<()> {
        while !self.is_empty() {
            match writer.write(self.pending()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.clear();
        Ok(())
    }

    /// Writes everything pending, then `tail` (the output whose `Done` head
    /// ends what is pending), in as few vectored writes as the stream takes;
    /// then the writer is empty.
    pub fn write_with_tail<W: Write>(&mut self, writer: &mut W, tail: &[u8]) -> io::Result<()> {
        let mut slices = [io::IoSlice::new(self.pending()), io::IoSlice::new(tail)];
        let mut slices = &mut slices[..];
        io::IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            match writer.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.clear();
        Ok(())
    }

    /// Writes everything pending; the same contract as
    /// [`FrameWriter::write_to`]. Cancel-safe: what a dropped future wrote
    /// is counted, so it can sit in a `select!` beside reads.
    #[cfg(feature = "tokio")]
    pub async fn write_to_async<W>(&mut self, writer: &mut W) -> io::Result<()>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;
        while !self.is_empty() {
            match writer.write(self.pending()).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => self.written += n,
            }
        }
        self.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_supervisor_message;
    use crate::message::SupervisorMessage;

    /// A stream that takes at most `budget` bytes, then would block.
    struct Trickle {
        taken: Vec<u8>,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.budget);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.budget -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_that_never_drains_holds_only_what_it_has_not_written() {
        const FRAME: usize = 1 << 20;
        let mut writing = FrameWriter::new();
        let mut stream = Trickle {
            taken: Vec::new(),
            budget: 0,
        };
        let mut sent = Vec::new();
        for round in 0..64u8 {
            let mut posted = FrameWriter::new();
            posted.buf.extend(std::iter::repeat_n(round, FRAME));
            sent.extend_from_slice(posted.pending());
            writing.take_from(&mut posted);
            assert!(posted.is_empty());
            // The stream takes a little less than arrives: never empty.
            stream.budget = FRAME - 1000;
            let blocked = writing.write_to(&mut stream).unwrap_err();
            assert_eq!(blocked.kind(), io::ErrorKind::WouldBlock);
            assert!(
                writing.buf.len() <= 2 * FRAME,
                "round {round}: {} bytes held for {} unwritten",
                writing.buf.len(),
                writing.pending().len()
            );
        }
        stream.budget = usize::MAX;
        writing.write_to(&mut stream).unwrap();
        assert!(writing.is_empty());
        assert!(stream.taken == sent, "every byte once, in order");
    }

    fn stops(n: usize) -> Vec<u8> {
        let mut writer = FrameWriter::new();
        for _ in 0..n {
            writer.push(&SupervisorMessage::Stop).unwrap();
        }
        writer.pending().to_vec()
    }

    #[test]
    fn reads_every_frame_of_one_read_and_reports_a_clean_end() {
        let bytes = stops(3);
        let mut reader = &bytes[..];
        let mut frames = FrameReader::new();
        assert!(frames.fill_from(&mut reader).unwrap());
        let mut seen = 0;
        while let Some(payload) = frames.next_frame().unwrap() {
            assert_eq!(
                decode_supervisor_message(payload).unwrap(),
                SupervisorMessage::Stop
            );
            seen += 1;
        }
        assert_eq!(seen, 3);
        assert!(!frames.fill_from(&mut reader).unwrap());
    }

    #[test]
    fn hands_out_whole_frames_as_one_batch_and_keeps_the_partial_one() {
        let bytes = stops(3);
        let mut reader = &bytes[..bytes.len() - 1];
        let mut frames = FrameReader::new();
        frames.fill_from(&mut reader).unwrap();
        let mut batch = FrameBatch::default();
        frames.take_frames(&mut batch).unwrap();
        assert_eq!(batch.len(), 2);
        assert!(frames.has_partial_frame());
        // The last byte completes the third frame in the reader's new buffer.
        frames.fill_from(&mut &bytes[bytes.len() - 1..]).unwrap();
        frames.take_frames(&mut batch).unwrap();
        assert_eq!(batch.len(), 1);
        assert!(!frames.has_partial_frame());
    }

    #[test]
    fn an_end_inside_a_frame_is_torn() {
        let mut reader = &[9u8, 0, 0, 0, 1][..];
        let mut frames = FrameReader::new();
        assert!(frames.fill_from(&mut reader).unwrap());
        assert!(frames.next_frame().unwrap().is_none());
        assert!(matches!(
            frames.fill_from(&mut reader),
            Err(ProtocolError::TornFrame)
        ));
    }

    #[test]
    fn frames_before_an_oversized_header_come_out_first() {
        let mut bytes = stops(2);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut frames = FrameReader::new();
        assert!(frames.fill_from(&mut &bytes[..]).unwrap());
        let mut batch = FrameBatch::default();
        let error = frames.take_frames(&mut batch).unwrap_err();
        assert!(matches!(error, ProtocolError::FrameTooLarge { .. }));
        assert_eq!(batch.len(), 2);
        assert!(frames.next_frame().is_err());
    }

    #[test]
    fn a_write_interrupted_midway_goes_on_where_it_stopped() {
        /// Takes at most three bytes a call.
        struct Narrow(Vec<u8>);
        impl Write for Narrow {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let n = buf.len().min(3);
                self.0.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut writer = FrameWriter::new();
        for _ in 0..4 {
            writer.push(&SupervisorMessage::Stop).unwrap();
        }
        let expected = writer.pending().to_vec();
        let mut out = Narrow(Vec::new());
        writer.write_to(&mut out).unwrap();
        assert_eq!(out.0, expected);
        assert!(writer.is_empty());
    }

    #[test]
    fn taking_from_another_writer_keeps_the_order() {
        let mut first = FrameWriter::new();
        first.push(&SupervisorMessage::Stop).unwrap();
        let mut second = FrameWriter::new();
        second
            .push(&SupervisorMessage::Cancel(crate::message::Cancel {
                index: 7,
            }))
            .unwrap();
        let expected: Vec<u8> = [first.pending(), second.pending()].concat();
        first.take_from(&mut second);
        assert!(second.is_empty());
        assert_eq!(first.pending(), expected);
        let mut empty = FrameWriter::new();
        empty.take_from(&mut first);
        assert_eq!(empty.pending(), expected);
        assert!(first.is_empty());
    }
}
