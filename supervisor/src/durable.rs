//! Making files and folders survive a crash: a name is on disk only once
//! the folder holding it is synced, and a file replaced is written beside
//! its target, synced, renamed over it, and its folder synced.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::Path;

/// Syncs a folder, so that the names created, renamed or removed in it are on disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Syncs the folder holding `path`: `.` for a bare name.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Creates `dir` and any missing parents, syncing the parent of each folder
/// it creates: a folder that vanished in a crash would take the files
/// inside it along.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
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
    std::fs::create_dir_all(dir)?;
    for path in missing.into_iter().rev() {
        sync_parent(path)?;
    }
    Ok(())
}

/// Replaces the file at `path` with `bytes`: a reader sees the old file or
/// the new one, never half of one, and the new one survives a crash once
/// this returns. The temporary file (beside the target, so the rename stays
/// within one file system) is removed if anything fails.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let mut temp_name = OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let written = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)?;
        sync_parent(path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// A file too large to hold in memory, replaced like [`replace`] does:
/// written under a temporary name beside its target (`.NAME.partial`, which
/// never looks like the file itself), then synced, renamed over the target
/// and its folder synced by [`Staged::commit`]. Dropped before that, the
/// temporary file is removed. One writer per target at a time: the caller
/// holds a lock that says so, and a temporary file a crash left behind is
/// simply written over.
#[derive(Debug)]
pub struct Staged {
    file: File,
    temp: std::path::PathBuf,
    target: std::path::PathBuf,
    committed: bool,
}

impl Staged {
    /// Starts the new content of `target`, empty.
    pub fn create(target: &Path) -> io::Result<Self> {
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
        let mut temp_name = OsString::from(".");
        temp_name.push(name);
        temp_name.push(".partial");
        let temp = target.with_file_name(temp_name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        Ok(Self {
            file,
            temp,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    /// The file to write the new content into.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where the content is written until it is committed.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Puts the new content in place: synced, renamed over the target, and
    /// the folder synced, so that after a crash the target is the old file
    /// or the whole new one.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.temp, &self.target)?;
        self.committed = true;
        sync_parent(&self.target)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Removes a file if it is there; true if it was.
pub fn remove_if_present(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_every_missing_level() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/c");
        create_dir_all(&dir).unwrap();
        assert!(dir.is_dir());
        create_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_replaced_file_is_whole_and_leaves_no_temporary_behind() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("report.json");
        std::fs::write(&path, "old").unwrap();
        replace(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["report.json"]);
        // A folder that does not exist is an error, and leaves nothing.
        assert!(replace(&root.path().join("missing/x"), b"x").is_err());
    }

    #[test]
    fn a_staged_file_replaces_its_target_only_when_committed() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("out.jsonl");
        std::fs::write(&path, "old").unwrap();
        let names = || {
            let mut names: Vec<_> = std::fs::read_dir(root.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        let staged = Staged::create(&path).unwrap();
        staged.file().write_all(b"new").unwrap();
        assert_eq!(names(), [".out.jsonl.partial", "out.jsonl"]);
        drop(staged);
        assert_eq!(names(), ["out.jsonl"]);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");

        let staged = Staged::create(&path).unwrap();
        staged.file().write_all(b"new").unwrap();
        staged.commit().unwrap();
        assert_eq!(names(), ["out.jsonl"]);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn removing_a_missing_file_is_not_an_error() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("gone");
        assert!(!remove_if_present(&path).unwrap());
        std::fs::write(&path, "x").unwrap();
        assert!(remove_if_present(&path).unwrap());
    }
}
