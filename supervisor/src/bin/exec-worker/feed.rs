//! Feeding a chunk's bytes of the input file to the command's stdin, as
//! much at a time as the pipe takes: with `splice`, which moves references
//! to the file's cached pages into the pipe instead of copying the bytes
//! twice through a buffer; with `pread` and `write` where the file's file
//! system cannot splice.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use crate::error::InputError;

/// Bytes read at a time when splicing is not possible.
const PIECE: usize = 256 * 1024;

/// Where feeding stands after [`Feed::pump`].
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// Every byte is in the pipe, or the command closed its stdin: close it.
    Done,
    /// The pipe is full: wait until it can take more.
    Blocked,
}

/// The chunk's bytes still to go, `[at, end)` of the file.
pub struct Feed<'a> {
    file: &'a File,
    path: &'a Path,
    start: u64,
    at: u64,
    end: u64,
    splice: bool,
    /// For `pread` and `write`: bytes read, and how many of them went out.
    piece: Vec<u8>,
    sent: usize,
}

impl<'a> Feed<'a> {
    pub fn new(file: &'a File, path: &'a Path, start: u64, end: u64) -> Self {
        Self {
            file,
            path,
            start,
            at: start,
            end,
            splice: true,
            piece: Vec::new(),
            sent: 0,
        }
    }

    /// Bytes handed to the pipe so far.
    pub fn fed(&self) -> u64 {
        self.at - self.start - (self.piece.len() - self.sent) as u64
    }

    /// Moves bytes into `pipe`, non-blocking, until it is full or all went.
    /// A command that exits without reading them all is no error here: its
    /// exit status says whether it succeeded.
    pub fn pump(&mut self, pipe: BorrowedFd<'_>) -> Result<Fed, InputError> {
        loop {
            if self.at == self.end && self.sent == self.piece.len() {
                return Ok(Fed::Done);
            }
            let moved = if self.splice {
                self.splice_some(pipe)
            } else {
                self.copy_some(pipe)
            };
            match moved {
                Ok(()) => {}
                Err(Stop::Blocked) => return Ok(Fed::Blocked),
                Err(Stop::Closed) => return Ok(Fed::Done),
                Err(Stop::Input(e)) => return Err(e),
            }
        }
    }

    fn splice_some(&mut self, pipe: BorrowedFd<'_>) -> Result<(), Stop> {
        let mut offset = libc::loff_t::try_from(self.at).map_err(|_| Stop::Input(self.short()))?;
        let len = usize::try_from(self.end - self.at).unwrap_or(usize::MAX);
        // SAFETY: splice reads the file at `offset` (updating it) and writes
        // to the pipe; no memory of ours is touched but `offset`.
        let n = unsafe {
            libc::splice(
                self.file.as_raw_fd(),
                &mut offset,
                pipe.as_raw_fd(),
                std::ptr::null_mut(),
                len.min(1 << 30),
                libc::SPLICE_F_NONBLOCK,
            )
        };
        match n {
            0 => Err(Stop::Input(self.short())),
            1.. => {
                self.at += n.unsigned_abs() as u64;
                if n.unsigned_abs() < len.min(1 << 30) {
                    // The pipe is full: splicing again now would only chase
                    // the reader a few KiB at a time.
                    return Err(Stop::Blocked);
                }
                Ok(())
            }
            _ => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => Ok(()),
                    Some(libc::EAGAIN) => Err(Stop::Blocked),
                    Some(libc::EPIPE) => Err(Stop::Closed),
                    // This file system cannot splice: copy instead.
                    Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                        self.splice = false;
                        Ok(())
                    }
                    _ => Err(Stop::Input(self.read_error(e))),
                }
            }
        }
    }

    fn copy_some(&mut self, pipe: BorrowedFd<'_>) -> Result<(), Stop> {
        if self.sent == self.piece.len() {
            let want = usize::try_from(self.end - self.at).map_or(PIECE, |left| left.min(PIECE));
            self.piece.resize(want, 0);
            let n = loop {
                match self.file.read_at(&mut self.piece, self.at) {
                    Ok(0) => return Err(Stop::Input(self.short())),
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Stop::Input(self.read_error(e))),
                }
            };
            self.piece.truncate(n);
            self.sent = 0;
            self.at += n as u64;
        }
        let rest = &self.piece[self.sent..];
        // SAFETY: write reads at most `rest.len()` bytes from `rest`.
        let n = unsafe { libc::write(pipe.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
        if n >= 0 {
            self.sent += n.unsigned_abs();
            if n.unsigned_abs() < rest.len() {
                return Err(Stop::Blocked);
            }
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => Ok(()),
            Some(libc::EAGAIN) => Err(Stop::Blocked),
            Some(libc::EPIPE) => Err(Stop::Closed),
            _ => Err(Stop::Input(InputError::Write(e))),
        }
    }

    fn short(&self) -> InputError {
        InputError::Short {
            path: self.path.display().to_string(),
            at: self.at,
            end: self.end,
        }
    }

    fn read_error(&self, source: io::Error) -> InputError {
        InputError::Read {
            path: self.path.display().to_string(),
            start: self.start,
            end: self.end,
            source,
        }
    }
}

enum Stop {
    Blocked,
    Closed,
    Input(InputError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipes::{data_pipe, set_nonblocking};
    use std::io::Read as _;
    use std::os::fd::AsFd as _;

    fn temp_file(contents: &[u8]) -> (std::path::PathBuf, File) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("exec-feed-{}-{n}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        let file = File::open(&path).unwrap();
        (path, file)
    }

    /// Feeds `[start, end)` into a pipe, draining it as it fills.
    fn feed_all(feed: &mut Feed<'_>) -> Result<Vec<u8>, InputError> {
        let pipe = data_pipe().unwrap();
        set_nonblocking(pipe.write.as_fd()).unwrap();
        let mut reader = File::from(pipe.read);
        let mut got = Vec::new();
        loop {
            let fed = feed.pump(pipe.write.as_fd())?;
            let mut buf = vec![0; 4 << 20];
            if fed == Fed::Done {
                drop(pipe.write);
                reader.read_to_end(&mut got).unwrap();
                return Ok(got);
            }
            let n = reader.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn both_ways_give_exactly_the_range() {
        let contents: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (path, file) = temp_file(&contents);
        for splice in [true, false] {
            let mut feed = Feed::new(&file, &path, 12_345, 2_900_000);
            feed.splice = splice;
            assert!(
                feed_all(&mut feed).unwrap() == contents[12_345..2_900_000],
                "splice {splice}"
            );
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_file_shorter_than_the_chunk_is_an_error_either_way() {
        let (path, file) = temp_file(b"short\n");
        for splice in [true, false] {
            let mut feed = Feed::new(&file, &path, 2, 100);
            feed.splice = splice;
            let err = feed_all(&mut feed).unwrap_err();
            assert!(
                err.to_string().ends_with("ends at byte 6, before the chunk's end at 100: did it change since the job started?"),
                "{err}"
            );
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_closed_pipe_ends_feeding_quietly() {
        let (path, file) = temp_file(&[1; 100_000]);
        let pipe = data_pipe().unwrap();
        drop(pipe.read);
        for splice in [true, false] {
            let mut feed = Feed::new(&file, &path, 0, 100_000);
            feed.splice = splice;
            assert_eq!(feed.pump(pipe.write.as_fd()).unwrap(), Fed::Done);
        }
        std::fs::remove_file(&path).unwrap();
    }
}
