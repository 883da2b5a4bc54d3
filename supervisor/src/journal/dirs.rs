//! Folders made durable: a file's name survives a crash only once the folder
//! that holds it has been synced.

use std::fs::File;
use std::io;
use std::path::Path;

use super::JournalError;

/// Syncs a folder, so that the names created, renamed or removed in it are on disk.
pub(super) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(JournalError::io("sync the folder", dir))
}

/// Creates `dir` and any missing parents, syncing the parent of each folder
/// it creates: a state folder that vanished in a crash would take the
/// journal inside it along.
pub(super) fn create_dir_all_synced(dir: &Path) -> Result<(), JournalError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(path) = cursor {
        if path.as_os_str().is_empty() || path.exists() {
            break;
        }
        missing.push(path);
        cursor = path.parent();
    }
    std::fs::create_dir_all(dir).map_err(JournalError::io("create the state folder", dir))?;
    for path in missing.into_iter().rev() {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent)?,
            _ => sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

/// Removes a file if it is there.
pub(super) fn remove_if_present(path: &Path, action: &'static str) -> Result<bool, JournalError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(JournalError::io(action, path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_every_missing_level() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/c");
        create_dir_all_synced(&dir).unwrap();
        assert!(dir.is_dir());
        create_dir_all_synced(&dir).unwrap();
    }
}
