//! The [`Store`]: where settled chunks go. A finished chunk's record goes to
//! the output and its place to the journal; a chunk out of attempts goes to
//! the failed file and the journal; group commits make them durable in that
//! order, and the final flush makes everything durable at the end.

use std::path::Path;
use std::time::Instant;

use super::failures::FailureWriter;
use super::output::ResultWriter;
use crate::dispatcher::{ChunkFailure, ResultMeta};
use crate::journal::{Entry, EntryKind, JournalWriter};

pub struct Store {
    output: ResultWriter,
    failures: FailureWriter,
    /// `None` when the output cannot be resumed (stdout), and once a commit
    /// failed: nothing more is journaled after that.
    journal: Option<JournalWriter>,
    /// The first error writing the output, the failed file or the journal:
    /// the run aborts on it, and it is the reason given.
    write_error: Option<String>,
}

impl Store {
    pub fn new(
        output: ResultWriter,
        failures: FailureWriter,
        journal: Option<JournalWriter>,
    ) -> Self {
        Self {
            output,
            failures,
            journal,
            write_error: None,
        }
    }

    /// The failed file's path, whether or not a chunk failed yet.
    pub fn failed_file(&self) -> &Path {
        self.failures.path()
    }

    /// Appends a finished chunk's record to the output and notes where it
    /// landed for the next commit.
    pub fn write_result(&mut self, meta: &ResultMeta, output: &[u8]) -> Result<(), String> {
        let (offset, len) = match self.output.write(meta, output) {
            Ok(placed) => placed,
            Err(error) => return Err(self.failed_write(error.to_string())),
        };
        if let Some(journal) = &mut self.journal {
            journal.append(&Entry {
                kind: EntryKind::Done,
                index: meta.index,
                start: meta.start,
                end: meta.end,
                offset,
                len,
            });
        }
        Ok(())
    }

    /// Writes a chunk out of attempts to the failed file (synced), then
    /// notes it for the next commit.
    pub fn write_failure(&mut self, failure: &ChunkFailure<'_>) -> Result<(), String> {
        if let Err(error) = self.failures.write(failure) {
            let error = format!(
                "cannot write the failed file {}: {error}",
                self.failures.path().display()
            );
            return Err(self.failed_write(error));
        }
        if let Some(journal) = &mut self.journal {
            journal.append(&Entry {
                kind: EntryKind::Failed,
                index: failure.chunk.index,
                start: failure.chunk.start,
                end: failure.chunk.end,
                offset: 0,
                len: 0,
            });
        }
        Ok(())
    }

    /// Makes settled chunks durable when the group commit is due: the output
    /// flushed, then the journal's committer syncs output and journal. Never
    /// waits for the disk.
    pub fn commit_if_due(&mut self, now: Instant) -> Result<(), String> {
        let Some(journal) = &mut self.journal else {
            return Ok(());
        };
        if !journal.is_due(now) {
            return Ok(());
        }
        let committed = match self.output.flush() {
            Ok(()) => journal
                .commit(self.output.file())
                .map_err(|e| format!("cannot make the journal durable: {e}")),
            Err(e) => Err(format!("cannot write the output: {e}")),
        };
        if let Err(error) = &committed {
            // Nothing more is journaled: the run aborts, and a later run
            // resumes from the last commit that made it to disk.
            self.journal = None;
            self.failed_write(error.clone());
        }
        committed
    }

    /// When a commit will be due if nothing else happens.
    pub fn next_commit(&self) -> Option<Instant> {
        self.journal.as_ref().and_then(JournalWriter::next_due)
    }

    /// The last commit, then everything made durable: the journal never
    /// points past output that is on disk. The error is the first write
    /// error of the run, if there was one, else the first of this.
    pub fn finish(self) -> Result<(), String> {
        let Self {
            mut output,
            failures,
            journal,
            write_error,
        } = self;
        let finished = (|| {
            output
                .flush()
                .map_err(|e| format!("cannot write the output: {e}"))?;
            if let Some(journal) = journal {
                journal
                    .finish(output.file())
                    .map_err(|e| format!("cannot make the journal durable: {e}"))?;
            }
            output
                .finish()
                .map_err(|e| format!("cannot write the output: {e}"))?;
            failures
                .finish()
                .map_err(|e| format!("cannot write the failed file: {e}"))
        })();
        match write_error {
            Some(error) => Err(error),
            None => finished,
        }
    }

    /// Notes the first write error; the run loop aborts on it.
    fn failed_write(&mut self, error: String) -> String {
        self.write_error.get_or_insert_with(|| error.clone());
        error
    }
}
