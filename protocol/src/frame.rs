//! Length-prefixed frames: a `u32` little-endian payload length, then the
//! payload. No I/O here; the cap is checked before any memory is reserved.

use crate::error::ProtocolError;

/// The largest payload either side accepts. Chunk outputs travel in one frame.
pub const MAX_FRAME_LEN: u32 = 64 * 1024 * 1024;

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// Finds the first complete frame at the front of `buf`.
///
/// Returns the payload's byte range within `buf` and the total length
/// (header + payload) to consume, `Ok(None)` when more bytes are needed, and an
/// error as soon as the header announces more than `max` bytes.
pub fn split_frame(
    buf: &[u8],
    max: u32,
) -> Result<Option<(std::ops::Range<usize>, usize)>, ProtocolError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*header);
    if len > max {
        return Err(ProtocolError::FrameTooLarge {
            len: u64::from(len),
            max,
        });
    }
    let total = HEADER_LEN + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((HEADER_LEN..total, total)))
}

/// Appends the header of a frame whose payload follows; returns the header's
/// position so [`finish_frame`] can patch in the length once it is known.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    at
}

/// Writes the payload length into the header appended by [`begin_frame`].
pub fn finish_frame(out: &mut [u8], header_at: usize, max: u32) -> Result<(), ProtocolError> {
    let len = out.len() - header_at - HEADER_LEN;
    let len32 =
        u32::try_from(len)
            .ok()
            .filter(|&l| l <= max)
            .ok_or(ProtocolError::FrameTooLarge {
                len: len as u64,
                max,
            })?;
    out[header_at..header_at + HEADER_LEN].copy_from_slice(&len32.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_more_bytes_until_the_frame_is_whole() {
        let frame = [3, 0, 0, 0, b'a', b'b', b'c', 9];
        for cut in 0..7 {
            assert_eq!(split_frame(&frame[..cut], 16).unwrap(), None, "cut {cut}");
        }
        assert_eq!(split_frame(&frame, 16).unwrap(), Some((4..7, 7)));
    }

    #[test]
    fn rejects_an_oversized_header_before_the_body_arrives() {
        let err = split_frame(&[17, 0, 0, 0], 16).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::FrameTooLarge { len: 17, max: 16 }
        ));
    }

    #[test]
    fn patches_the_length_in() {
        let mut out = vec![7];
        let at = begin_frame(&mut out);
        out.extend_from_slice(b"hello");
        finish_frame(&mut out, at, 16).unwrap();
        assert_eq!(out, [7, 5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o']);
        assert!(finish_frame(&mut out, at, 4).is_err());
    }
}
