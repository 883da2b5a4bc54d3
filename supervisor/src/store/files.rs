//! The [`Store`]: where settled chunks go. A finished chunk's record goes to
//! the output and its place to the journal; a chunk out of attempts goes to
//! the failed file and the journal; group commits make them durable in that
//! order, and the final flush makes everything durable at the end.

use std::path::Path;
use std::time::Instant;

use super::failures::FailureWriter;
use super::output::ResultWriter;
use crate::dispatcher::{ChunkFailure, ResultMeta};
use crate::journal::{COMMIT_INTERVAL, Entry, EntryKind, JournalWriter};

pub struct Store {
    output: ResultWriter,
    failures: FailureWriter,
    /// `None` when the output cannot be resumed (stdout), and once a commit
    /// failed: nothing more is journaled after that.
    journal: Option<JournalWriter>,
    /// The first error writing the output, the failed file or the journal:
    /// the run aborts on it, and it is the reason given.
    write_error: Option<String>,
    /// When an output without a journal was last flushed.
    last_flush: Instant,
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
            last_flush: Instant::now(),
        }
    }

    /// The failed file's path, whether or not a chunk failed yet.
    pub fn failed_file(&self) -> &Path {
        self.failures.path()
    }

    /// Appends a finished chunk's record to the output and notes where it
    /// landed for the next commit.
    pub fn write_result(&mut self, meta: &ResultMeta, output: &[u8]) -> Result<(), String> {
        let (offset, len, checksum) = match self.output.write(meta, output) {
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
                checksum,
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
                checksum: 0,
            });
        }
        Ok(())
    }

    /// Makes settled chunks durable when the group commit is due: the output
    /// flushed, then the journal's committer syncs output and journal. Never
    /// waits for the disk.
    pub fn commit_if_due(&mut self, now: Instant) -> Result<(), String> {
        let Some(journal) = &mut self.journal else {
            // No journal (stdout): records still go out as often, so a pipe
            // reader sees each chunk within a commit interval.
            if now.saturating_duration_since(self.last_flush) >= COMMIT_INTERVAL {
                self.last_flush = now;
                return self
                    .output
                    .flush()
                    .map_err(|e| self.failed_write(format!("cannot write the output: {e}")));
            }
            return Ok(());
        };
        if !journal.is_due(now) {
            return Ok(());
        }
        let committed = match self
            .output
            .flush()
            .map_err(|e| format!("cannot write the output: {e}"))
            .and_then(|()| self.output.check_intact().map_err(|e| e.to_string()))
        {
            Ok(()) => journal
                .commit(self.output.file())
                .map_err(|e| format!("cannot make the journal durable: {e}")),
            Err(e) => Err(e),
        };
        if let Err(error) = &committed {
            // Nothing more is journaled: the run aborts, and a later run
            // resumes from the last commit that made it to disk.
            self.journal = None;
            self.failed_write(error.clone());
        }
        committed
    }

    /// Whether finished chunks wait in memory because the journal's
    /// committer is behind (the disk is slow): dispatch waits for it.
    pub fn is_backlogged(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(JournalWriter::is_backlogged)
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
            ..
        } = self;
        let finished = (|| {
            output
                .flush()
                .map_err(|e| format!("cannot write the output: {e}"))?;
            output.check_intact().map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::chunks::ChunkSpec;
    use crate::config::{OutputFormat, OutputPath};
    use crate::dispatcher::AttemptError;
    use crate::journal::{self, Fingerprint, JOURNAL_FILE, Recovered};

    const CHUNKS: u64 = 8;

    fn fingerprint() -> Fingerprint {
        Fingerprint::from_fields([("chunk".to_owned(), "1".to_owned())].into())
    }

    /// A store writing raw output to `output`, journaled in `state`.
    fn store(output: PathBuf, state: &Path) -> Store {
        let journal = journal::create(state, &fingerprint()).unwrap();
        Store::new(
            ResultWriter::create(&OutputPath::File(output))
                .unwrap()
                .in_format(OutputFormat::Raw),
            FailureWriter::new(state.join(journal::FAILED_FILE)).unwrap(),
            Some(journal),
        )
    }

    fn meta(index: u64) -> ResultMeta {
        ResultMeta {
            index,
            start: index,
            end: index + 1,
            attempt: 1,
            worker: 0,
            seconds: 0.0,
        }
    }

    fn read_back(state: &Path) -> Recovered {
        journal::inspect(state, &fingerprint(), CHUNKS, None)
            .unwrap()
            .expect("a journal")
    }

    #[test]
    fn results_and_failures_reach_their_files_and_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.raw");
        let state = dir.path().join("state");
        let mut store = store(output.clone(), &state);
        store.write_result(&meta(0), b"zero").unwrap();
        let errors = [AttemptError {
            attempt: 1,
            worker: 0,
            error: "boom".to_owned(),
        }];
        let chunk = ChunkSpec {
            index: 1,
            start: 1,
            end: 2,
            first_item: 1,
        };
        store
            .write_failure(&ChunkFailure {
                chunk,
                errors: &errors,
            })
            .unwrap();
        store.write_result(&meta(2), b"two").unwrap();
        assert_eq!(store.failed_file(), state.join(journal::FAILED_FILE));
        store.finish().unwrap();

        assert_eq!(std::fs::read(&output).unwrap(), b"zerotwo");
        let recovered = read_back(&state);
        assert_eq!(recovered.done.ones().collect::<Vec<_>>(), [0, 2]);
        assert_eq!(recovered.failed.ones().collect::<Vec<_>>(), [1]);
        assert_eq!(recovered.output_len, 7);
        let failed = std::fs::read_to_string(state.join(journal::FAILED_FILE)).unwrap();
        assert!(failed.contains("\"boom\""), "{failed}");
    }

    #[test]
    fn a_commit_waits_for_its_time_and_then_makes_the_records_durable() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut store = store(dir.path().join("out.raw"), &state);
        assert_eq!(store.next_commit(), None, "nothing waits yet");
        store.write_result(&meta(0), b"zero").unwrap();
        let due = store.next_commit().expect("a record waits");
        store.commit_if_due(due - Duration::from_millis(1)).unwrap();
        let journal_len = || std::fs::metadata(state.join(JOURNAL_FILE)).unwrap().len();
        let header_only = journal_len();
        store.commit_if_due(due).unwrap();
        assert_eq!(store.next_commit(), None, "handed to the committer");
        store.finish().unwrap();
        assert!(journal_len() > header_only);
        assert_eq!(read_back(&state).records, 1);
    }

    #[test]
    fn a_write_error_is_kept_and_given_again_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        // /dev/full takes nothing: the first flush fails.
        let mut store = store(PathBuf::from("/dev/full"), &state);
        store.write_result(&meta(0), b"zero").unwrap();
        let due = store.next_commit().unwrap();
        let error = store.commit_if_due(due).unwrap_err();
        assert!(error.starts_with("cannot write the output"), "{error}");
        // Nothing more is journaled after a failed commit.
        store.write_result(&meta(1), b"one").unwrap();
        assert_eq!(store.next_commit(), None);
        assert_eq!(store.finish().unwrap_err(), error);
        assert_eq!(read_back(&state).records, 0);
    }
}
