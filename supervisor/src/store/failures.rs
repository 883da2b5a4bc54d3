//! The failed file: one JSON line per chunk that ran out of attempts, with
//! every attempt's error, each line on disk before the journal says so.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::dispatcher::{AttemptError, ChunkFailure};

/// The failed file: created on the first failure, each record flushed as it
/// is written so that a crash of the supervisor loses none.
pub struct FailureWriter {
    path: PathBuf,
    file: Option<File>,
}

#[derive(Serialize)]
struct FailureRecord<'a> {
    index: u64,
    start: u64,
    end: u64,
    attempts: &'a [AttemptError],
}

impl FailureWriter {
    /// A writer for `path`; an old failed file there is removed.
    pub fn new(path: PathBuf) -> io::Result<Self> {
        crate::durable::remove_if_present(&path)?;
        Ok(Self { path, file: None })
    }

    /// A writer that adds to the failed file an earlier run of the same job
    /// left, creating it when there is none. A line cut short by a crash is
    /// dropped first, so that the next record starts on a line of its own.
    pub fn append_to(path: PathBuf) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)?;
        if text.last().is_some_and(|&b| b != b'\n') {
            let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            file.set_len(whole as u64)?;
        }
        Ok(Self {
            path,
            file: Some(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, failure: &ChunkFailure<'_>) -> io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(File::create(&self.path)?),
        };
        let mut line = serde_json::to_vec(&FailureRecord {
            index: failure.chunk.index,
            start: failure.chunk.start,
            end: failure.chunk.end,
            attempts: failure.errors,
        })?;
        line.push(b'\n');
        file.write_all(&line)?;
        // On disk before the journal can say the chunk failed: failures are
        // rare, so a sync each costs nothing worth saving.
        file.sync_data()
    }

    /// Makes the failed file durable, if there is one.
    pub fn finish(self) -> io::Result<()> {
        self.file.map_or(Ok(()), |file| file.sync_all())
    }
}
