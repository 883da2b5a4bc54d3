//! The state folder's lock: one supervisor per job at a time, and the others
//! told which process holds it.

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::JournalError;
use super::dirs::create_dir_all_synced;

/// An exclusive `flock` on `<state dir>/lock`, held until dropped.
///
/// `flock` belongs to the open file description, so the kernel releases it
/// when the process dies however it dies: a lock left by a killed supervisor
/// never needs cleaning up. The file itself stays; removing it on exit would
/// let a second supervisor lock a new file while a third still holds the old.
#[derive(Debug)]
pub struct StateLock {
    _file: Flock<File>,
    path: PathBuf,
}

impl StateLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the lock of the state folder `dir`, creating the folder if needed.
/// Fails at once with [`JournalError::Locked`] when another process holds it.
pub fn lock_state(dir: &Path) -> Result<StateLock, JournalError> {
    create_dir_all_synced(dir)?;
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(JournalError::io("open the lock file", &path))?;
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(file) => file,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            // The pid is only for the message: the holder may not have
            // written it yet, or the file may hold anything.
            let pid = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(JournalError::Locked {
                dir: dir.to_path_buf(),
                pid,
            });
        }
        Err((_, errno)) => {
            return Err(JournalError::io("lock", &path)(errno.into()));
        }
    };
    // Written only once the lock is ours, so that a holder's pid is never
    // overwritten by a process that then fails to lock.
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
        .map_err(JournalError::io("write the lock file", &path))?;
    Ok(StateLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_and_names_the_holder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let first = lock_state(&dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
        // flock is per open file description: a second open in the same
        // process conflicts just as another process would.
        match lock_state(&dir) {
            Err(JournalError::Locked { dir: d, pid }) => {
                assert_eq!(d, dir);
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        let again = lock_state(&dir).unwrap();
        drop(again);
    }

    #[test]
    fn a_holder_that_wrote_no_pid_yet_is_still_reported() {
        let root = tempfile::tempdir().unwrap();
        let _first = lock_state(root.path()).unwrap();
        std::fs::write(root.path().join("lock"), "").unwrap();
        let error = lock_state(root.path()).unwrap_err();
        assert!(matches!(error, JournalError::Locked { pid: None, .. }));
        assert_eq!(
            error.to_string(),
            format!(
                "another supervisor is running the job in {}",
                root.path().display()
            )
        );
    }
}
