//! Open-file-description locks (`F_OFD_SETLK`) on whole files: like
//! `flock`, they belong to the open file and go when it is closed, however
//! the process ends; unlike `flock`, they can be asked about without being
//! taken.

use std::fs::File;
use std::io;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

/// The whole file, for writing.
fn whole_file(kind: libc::c_short) -> libc::flock {
    // SAFETY: flock is plain integers, for which all zeroes is a value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

/// Takes an exclusive lock on `file` (open for writing) without waiting:
/// `Ok(false)` when another open file holds one.
pub fn try_lock(file: &File) -> io::Result<bool> {
    match fcntl(file, FcntlArg::F_OFD_SETLK(&whole_file(libc::F_WRLCK as _))) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(errno) => Err(errno.into()),
    }
}

/// Whether another open file holds a lock on `file`; takes nothing.
pub fn is_locked(file: &File) -> io::Result<bool> {
    let mut probe = whole_file(libc::F_WRLCK as _);
    fcntl(file, FcntlArg::F_OFD_GETLK(&mut probe))?;
    Ok(probe.l_type != libc::F_UNLCK as libc::c_short)
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;

    #[test]
    fn a_second_open_of_the_file_is_refused_and_sees_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap()
        };
        let first = open();
        assert!(!is_locked(&open()).unwrap());
        assert!(try_lock(&first).unwrap());
        let second = open();
        assert!(is_locked(&second).unwrap());
        assert!(!try_lock(&second).unwrap());
        drop(first);
        assert!(try_lock(&second).unwrap());
    }
}
