//! Reading and writing frames on a byte stream: the only protocol code that
//! does I/O. Readers keep one growing buffer and hand out every complete frame
//! a single read brought in, so a batch of frames costs one syscall.

use std::io::{self, Read};

use crate::error::ProtocolError;
use crate::frame::{MAX_FRAME_LEN, split_frame};

const READ_SIZE: usize = 64 * 1024;

/// A buffer of received bytes and the frames complete within it.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    /// Bytes at the front that were already handed out as frames.
    consumed: usize,
}

impl FrameBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next complete frame's payload, or `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, ProtocolError> {
        match split_frame(&self.buf[self.consumed..], MAX_FRAME_LEN)? {
            Some((payload, total)) => {
                let start = self.consumed;
                self.consumed += total;
                Ok(Some(&self.buf[start + payload.start..start + payload.end]))
            }
            None => Ok(None),
        }
    }

    /// Every complete frame at the front, headers included, as one slice to
    /// hand on as a batch (walk it with [`frames`]); they count as consumed.
    pub fn complete_frames(&mut self) -> Result<&[u8], ProtocolError> {
        let start = self.consumed;
        while let Some((_, total)) = split_frame(&self.buf[self.consumed..], MAX_FRAME_LEN)? {
            self.consumed += total;
        }
        Ok(&self.buf[start..self.consumed])
    }

    /// True if bytes of an unfinished frame are waiting behind the whole ones.
    pub fn has_partial_frame(&self) -> bool {
        let mut at = self.consumed;
        while let Ok(Some((_, total))) = split_frame(&self.buf[at..], MAX_FRAME_LEN) {
            at += total;
        }
        at < self.buf.len()
    }

    /// Drops the frames already handed out and makes room for one more read.
    /// Memory grows only with bytes actually received, never with a length
    /// a peer merely announced.
    fn make_room(&mut self) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buf.reserve(READ_SIZE);
    }

    /// One blocking read. `Ok(false)` on a clean end of stream; an error if
    /// the stream ended inside a frame.
    pub fn fill_from<R: Read>(&mut self, reader: &mut R) -> Result<bool, ProtocolError> {
        self.make_room();
        let filled = self.buf.len();
        self.buf.resize(filled + READ_SIZE, 0);
        let read = loop {
            match reader.read(&mut self.buf[filled..]) {
                Ok(n) => break Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
        };
        self.buf.truncate(filled + *read.as_ref().unwrap_or(&0));
        let read = read?;
        self.end_check(read)
    }

    /// One asynchronous read; the same contract as [`FrameBuffer::fill_from`].
    /// Cancel-safe: dropping the future loses no bytes, so it can sit in a
    /// `select!`.
    #[cfg(feature = "tokio")]
    pub async fn fill_from_async<R>(&mut self, reader: &mut R) -> Result<bool, ProtocolError>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        use tokio::io::AsyncReadExt;
        self.make_room();
        let read = reader.read_buf(&mut self.buf).await?;
        self.end_check(read)
    }

    fn end_check(&self, read: usize) -> Result<bool, ProtocolError> {
        if read > 0 {
            Ok(true)
        } else if self.has_partial_frame() {
            Err(ProtocolError::TornFrame)
        } else {
            Ok(false)
        }
    }
}

/// The payloads of a run of whole frames, as returned by
/// [`FrameBuffer::complete_frames`].
pub fn frames(mut batch: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (payload, total) = split_frame(batch, MAX_FRAME_LEN).ok().flatten()?;
        let frame = &batch[payload];
        batch = &batch[total..];
        Some(frame)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_supervisor_message, encode_frame};
    use crate::message::SupervisorMessage;

    #[test]
    fn reads_every_frame_of_one_read_and_reports_a_clean_end() {
        let mut bytes = Vec::new();
        for _ in 0..3 {
            encode_frame(&SupervisorMessage::Stop, &mut bytes).unwrap();
        }
        let mut reader = &bytes[..];
        let mut frames = FrameBuffer::new();
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
    fn hands_out_whole_frames_as_one_batch() {
        let mut bytes = Vec::new();
        for _ in 0..3 {
            encode_frame(&SupervisorMessage::Stop, &mut bytes).unwrap();
        }
        let mut reader = &bytes[..bytes.len() - 1];
        let mut buffer = FrameBuffer::new();
        buffer.fill_from(&mut reader).unwrap();
        let batch = buffer.complete_frames().unwrap().to_vec();
        assert_eq!(frames(&batch).count(), 2);
        assert!(buffer.has_partial_frame());
    }

    #[test]
    fn an_end_inside_a_frame_is_torn() {
        let mut reader = &[9u8, 0, 0, 0, 1][..];
        let mut frames = FrameBuffer::new();
        assert!(frames.fill_from(&mut reader).unwrap());
        assert!(frames.next_frame().unwrap().is_none());
        assert!(matches!(
            frames.fill_from(&mut reader),
            Err(ProtocolError::TornFrame)
        ));
    }
}
