//! The state folder's lock: one supervisor per job at a time, and the others
//! told which process holds it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::JournalError;
use crate::{durable, file_lock};

/// The lock file's name in the state folder.
pub const LOCK_FILE: &str = "lock";

/// An exclusive lock on `<state dir>/lock`, held until dropped.
///
/// It is an open-file-description lock (`F_OFD_SETLK`): like `flock`, it
/// belongs to the open file, so the kernel releases it when the process dies
/// however it dies, and a lock left by a killed supervisor never needs
/// cleaning up; unlike `flock`, it can be asked about without being taken
/// ([`lock_holder`]), so `check` reads the state folder without touching it.
/// The file itself stays; removing it on exit would let a second supervisor
/// lock a new file while a third still holds the old.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
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
    durable::create_dir_all(dir).map_err(JournalError::io("create the state folder", dir))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(JournalError::io("open the lock file", &path))?;
    if !file_lock::try_lock(&file).map_err(JournalError::io("lock", &path))? {
        return Err(JournalError::Locked {
            dir: dir.to_path_buf(),
            pid: recorded_pid(&file),
        });
    }
    // Written only once the lock is ours, so that a holder's pid is never
    // overwritten by a process that then fails to lock.
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
        .map_err(JournalError::io("write the lock file", &path))?;
    Ok(StateLock { _file: file, path })
}

/// Who holds the lock of the state folder `dir`, without taking it or
/// creating anything: `None` when nobody does (or there is no lock file),
/// `Some(pid)` when a supervisor does, with the pid it wrote if readable.
pub fn lock_holder(dir: &Path) -> Result<Option<Option<u32>>, JournalError> {
    let path = dir.join(LOCK_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JournalError::io("open the lock file", &path)(e)),
    };
    if !file_lock::is_locked(&file).map_err(JournalError::io("ask about the lock", &path))? {
        return Ok(None);
    }
    Ok(Some(recorded_pid(&file)))
}

/// The pid a holder wrote, for messages only: the holder may not have
/// written it yet, or the file may hold anything.
fn recorded_pid(mut file: &File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
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
        // The lock is per open file description: a second open in the same
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

    #[test]
    fn the_holder_is_told_without_taking_the_lock_or_creating_anything() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        assert_eq!(lock_holder(&dir).unwrap(), None);
        assert!(!dir.exists(), "asking created the folder");
        let held = lock_state(&dir).unwrap();
        assert_eq!(lock_holder(&dir).unwrap(), Some(Some(std::process::id())));
        // Asking did not take it: the holder still holds, a newcomer is refused.
        assert!(matches!(lock_state(&dir), Err(JournalError::Locked { .. })));
        drop(held);
        assert_eq!(lock_holder(&dir).unwrap(), None);
        let _again = lock_state(&dir).unwrap();
    }
}
