//! The pipes between the worker and its command, and the system calls on
//! them: close-on-exec (the command gets its ends as 0, 1 and 2 only), the
//! worker's ends non-blocking (one thread watches them all with `poll`), and
//! the data pipes made large.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};

/// Bytes a data pipe holds, if the system lets this user have that much
/// (`/proc/sys/fs/pipe-max-size`, 1 MiB by default): the default 64 KiB makes
/// the command and the worker take turns, waking each other, every 64 KiB.
const DATA_PIPE: libc::c_int = 1 << 20;

pub struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
}

/// A pipe with both ends close-on-exec and blocking.
pub fn pipe() -> io::Result<Pipe> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new and owned by nobody else.
    Ok(unsafe {
        Pipe {
            read: OwnedFd::from_raw_fd(fds[0]),
            write: OwnedFd::from_raw_fd(fds[1]),
        }
    })
}

/// A pipe for a chunk's bytes: as large as allowed. A smaller one only
/// costs speed, so a refusal (a user past `pipe-user-pages-soft`) is no error.
pub fn data_pipe() -> io::Result<Pipe> {
    let pipe = pipe()?;
    // SAFETY: F_SETPIPE_SZ only resizes the pipe's buffer.
    unsafe { libc::fcntl(pipe.write.as_raw_fd(), libc::F_SETPIPE_SZ, DATA_PIPE) };
    Ok(pipe)
}

/// Bytes `pipe` holds.
pub fn capacity(pipe: BorrowedFd<'_>) -> usize {
    // SAFETY: F_GETPIPE_SZ only asks.
    let size = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETPIPE_SZ) };
    usize::try_from(size).unwrap_or(64 * 1024)
}

/// Makes the worker's end non-blocking. The flag belongs to that end alone:
/// a pipe's two ends are separate open files.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL only touch the open file's flags.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags == -1
        || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } == -1
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What a read of a non-blocking descriptor gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Bytes(usize),
    End,
    /// Nothing there for now.
    Empty,
}

/// One `read` into `buf`, retried when a signal interrupts it.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [MaybeUninit<u8>]) -> io::Result<Read> {
    loop {
        // SAFETY: read writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return Ok(Read::End),
            1.. => return Ok(Read::Bytes(n.unsigned_abs())),
            _ => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock => return Ok(Read::Empty),
                    _ => return Err(e),
                }
            }
        }
    }
}

/// Appends what `fd` has now to `out`, growing it as needed but never past
/// `limit` bytes; stops once it has emptied the pipe, or at `budget` bytes. Returns whether the
/// stream ended, or `None` when it holds more than `limit` allows.
pub fn read_capped(
    fd: BorrowedFd<'_>,
    out: &mut Vec<u8>,
    limit: usize,
    budget: usize,
) -> io::Result<Option<bool>> {
    let mut taken = 0;
    while taken < budget {
        if out.len() == limit {
            // Full: one byte more, or the end, decides.
            let mut probe = [MaybeUninit::uninit(); 1];
            return match read(fd, &mut probe)? {
                Read::Bytes(_) => Ok(None),
                Read::End => Ok(Some(true)),
                Read::Empty => Ok(Some(false)),
            };
        }
        reserve_capped(out, limit);
        let room = limit - out.len();
        let spare = out.spare_capacity_mut();
        let room = spare.len().min(room);
        match read(fd, &mut spare[..room])? {
            Read::Bytes(n) => {
                // SAFETY: read initialised the first `n` spare bytes.
                unsafe { out.set_len(out.len() + n) };
                taken += n;
                if n < room {
                    // The pipe was emptied: reading again now would only
                    // chase the writer a few KiB at a time.
                    return Ok(Some(false));
                }
            }
            Read::End => return Ok(Some(true)),
            Read::Empty => return Ok(Some(false)),
        }
    }
    Ok(Some(false))
}

/// Reads are at least this large, so a small spare capacity does not mean
/// many small reads.
const MIN_READ: usize = 64 * 1024;

/// Makes room for a read: doubling, but never past `limit` (a Vec's own
/// growth would reserve up to twice the limit for an output just below it).
fn reserve_capped(buf: &mut Vec<u8>, limit: usize) {
    let spare = buf.capacity() - buf.len();
    if spare >= MIN_READ || buf.capacity() >= limit {
        return;
    }
    let more = buf
        .capacity()
        .max(MIN_READ)
        .min(limit.saturating_sub(buf.len()));
    buf.reserve_exact(more);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::fd::AsFd as _;

    fn filled(bytes: &[u8]) -> Pipe {
        let pipe = data_pipe().unwrap();
        set_nonblocking(pipe.read.as_fd()).unwrap();
        std::fs::File::from(pipe.write.try_clone().unwrap())
            .write_all(bytes)
            .unwrap();
        pipe
    }

    #[test]
    fn reads_what_is_there_then_the_end() {
        let pipe = filled(&[7; 1000]);
        let mut out = Vec::new();
        assert_eq!(
            read_capped(pipe.read.as_fd(), &mut out, 5000, usize::MAX).unwrap(),
            Some(false)
        );
        assert_eq!(out, [7; 1000]);
        drop(pipe.write);
        assert_eq!(
            read_capped(pipe.read.as_fd(), &mut out, 5000, usize::MAX).unwrap(),
            Some(true)
        );
    }

    #[test]
    fn output_stops_at_the_limit() {
        let pipe = filled(&[7; 1001]);
        let mut out = Vec::new();
        assert_eq!(
            read_capped(pipe.read.as_fd(), &mut out, 1000, usize::MAX).unwrap(),
            None
        );
        assert_eq!(out.len(), 1000);

        // Exactly the limit, then the end, is fine.
        let pipe = filled(&[7; 1000]);
        drop(pipe.write);
        let mut out = Vec::new();
        assert_eq!(
            read_capped(pipe.read.as_fd(), &mut out, 1000, usize::MAX).unwrap(),
            Some(true)
        );
        assert_eq!(out.len(), 1000);
    }

    #[test]
    fn the_buffer_never_reserves_past_the_limit() {
        let limit = 3 * MIN_READ + 17;
        let mut buf = Vec::new();
        while buf.len() < limit {
            reserve_capped(&mut buf, limit);
            let room = (buf.capacity() - buf.len())
                .min(limit - buf.len())
                .min(1000);
            buf.extend(std::iter::repeat_n(1u8, room));
        }
        assert_eq!(buf.len(), limit);
        assert!(buf.capacity() <= limit, "{}", buf.capacity());
    }
}
