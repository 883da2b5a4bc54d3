//! Taking ownership of the socket the supervisor handed down as an inherited fd.

use std::ffi::OsStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

use protocol::WORKER_FD_ENV;

use crate::error::WorkerError;

/// Set once the descriptor has been wrapped: owning it twice would close it twice.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The socket named by [`WORKER_FD_ENV`], marked close-on-exec so programs the
/// handler runs cannot talk to (or hold open) the supervisor's channel.
/// The environment is left as it is.
pub(crate) fn take_inherited() -> Result<UnixStream, WorkerError> {
    let fd = parse_fd(std::env::var_os(WORKER_FD_ENV).as_deref())?;
    check_socket(fd)?;
    set_cloexec(fd).map_err(|e| bad_fd(fd, &e))?;
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(WorkerError::AlreadyServing);
    }
    // SAFETY: `fd` is an open socket (checked above), and `TAKEN` makes this
    // the only owner the process ever creates for it.
    Ok(unsafe { UnixStream::from_raw_fd(fd) })
}

fn parse_fd(value: Option<&OsStr>) -> Result<RawFd, WorkerError> {
    let value = value.ok_or(WorkerError::NotSupervised)?;
    value
        .to_str()
        .and_then(|s| s.trim().parse::<RawFd>().ok())
        .filter(|&fd| fd >= 0)
        .ok_or_else(|| WorkerError::BadFdNumber(value.to_string_lossy().into_owned()))
}

fn check_socket(fd: RawFd) -> Result<(), WorkerError> {
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat only writes into the buffer it is given.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return Err(bad_fd(fd, &io::Error::last_os_error()));
    }
    // SAFETY: fstat succeeded, so it filled the buffer.
    let mode = unsafe { stat.assume_init() }.st_mode;
    if mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(WorkerError::BadFd {
            fd,
            reason: "not a socket".into(),
        });
    }
    Ok(())
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD only touch the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn bad_fd(fd: RawFd, error: &io::Error) -> WorkerError {
    WorkerError::BadFd {
        fd,
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_must_hold_a_descriptor_number() {
        assert!(matches!(parse_fd(None), Err(WorkerError::NotSupervised)));
        assert_eq!(parse_fd(Some(OsStr::new("7"))).unwrap(), 7);
        for bad in ["", "x", "-1", "3.0", "99999999999"] {
            let err = parse_fd(Some(OsStr::new(bad))).unwrap_err();
            assert!(
                matches!(&err, WorkerError::BadFdNumber(v) if v == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_message_names_the_variable() {
        assert_eq!(
            WorkerError::NotSupervised.to_string(),
            "not started by a supervisor: SUPERVISOR_WORKER_FD is not set"
        );
    }

    #[test]
    fn a_descriptor_that_is_not_a_socket_is_refused() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        assert!(matches!(check_socket(fd), Err(WorkerError::BadFd { .. })));
    }
}
