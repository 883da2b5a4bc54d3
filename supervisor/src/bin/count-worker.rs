//! `count-worker`: counts the newlines in each chunk's byte range of the
//! job's input file, as `wc -l` counts them, reading the range itself with
//! positioned reads: the data never travels through the supervisor. For a
//! `stdin` source it counts the bytes that came with the chunk.
//!
//! The outputs of a `file`, `lines` or `stdin` job add up to the input's
//! `wc -l`.

use std::io::{self, Write as _};
use std::os::unix::fs::FileExt;

/// Read in pieces, so a worker's memory stays the same whatever the chunk size.
const PIECE: usize = 1 << 20;

fn main() -> Result<(), worker::WorkerError> {
    let mut piece = vec![0; PIECE];
    worker::serve(move |ctx, chunk, out| {
        if let Some(data) = chunk.data() {
            return write!(out, "{}", bytecount::count(data, b'\n'));
        }
        let file = ctx.input_file()?;
        let mut count = 0u64;
        let mut at = chunk.start;
        while at < chunk.end {
            let want = usize::try_from(chunk.end - at).map_or(PIECE, |left| left.min(PIECE));
            let read = file.read_at(&mut piece[..want], at)?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the input ends at {at}, before the chunk's end {}",
                        chunk.end
                    ),
                ));
            }
            count += bytecount::count(&piece[..read], b'\n') as u64;
            at += read as u64;
        }
        write!(out, "{count}")
    })
}
