//! Looking at an earlier run's journal without touching it: what a run would
//! resume from, for `supervisor check`.

use std::fs::File;
use std::io;
use std::path::Path;

use super::open::{JOURNAL_FILE, Recovered, read_back};
use super::{Fingerprint, JournalError};

/// What a run would resume from, without writing anything or taking the
/// lock: `None` when there is no journal; [`JournalError::Changed`],
/// [`JournalError::Corrupt`] or [`JournalError::OutputChanged`] when the run
/// would refuse it.
///
/// With `output`, every finished chunk's bytes in it are checked against
/// the checksum the journal recorded for them: a resume keeps only an output
/// that is exactly what the journal describes. Bytes past the output's end
/// are not checked (a shorter output is the caller's to refuse).
///
/// A torn tail is reported in `torn_bytes` but left in place: cutting it is
/// the run's job, under the lock. A supervisor running the job meanwhile may
/// be in the middle of an append, which shows up the same way.
pub fn inspect(
    dir: &Path,
    fingerprint: &Fingerprint,
    chunk_count: u64,
    output: Option<&Path>,
) -> Result<Option<Recovered>, JournalError> {
    let path = dir.join(JOURNAL_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JournalError::io("open the journal", &path)(e)),
    };
    read_back(&file, dir, &path, fingerprint, chunk_count, output).map(Some)
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write as _;

    use super::super::format::{RECORD_LEN, encode_record};
    use super::super::{Entry, EntryKind, open};
    use super::*;

    const CHUNKS: u64 = 16;

    fn fingerprint_with(chunk: &str) -> Fingerprint {
        Fingerprint::from_fields(
            [
                ("chunk".to_owned(), chunk.to_owned()),
                ("source.end".to_owned(), "160".to_owned()),
            ]
            .into(),
        )
    }

    fn fp() -> Fingerprint {
        fingerprint_with("10")
    }

    fn entry(kind: EntryKind, index: u64, offset: u64) -> Entry {
        let len = if kind == EntryKind::Done { 100 } else { 0 };
        let offset = if kind == EntryKind::Done { offset } else { 0 };
        Entry {
            kind,
            index,
            start: index * 10,
            end: index * 10 + 10,
            offset,
            len,
            checksum: 0,
        }
    }

    /// A journal in `dir` as a run leaves it: three done (one after failing)
    /// and one failed for good.
    fn write_journal(dir: &Path) {
        let (mut writer, _) = open(dir, &fp(), CHUNKS, true).unwrap();
        for entry in [
            entry(EntryKind::Done, 0, 0),
            entry(EntryKind::Failed, 1, 0),
            entry(EntryKind::Failed, 2, 0),
            entry(EntryKind::Done, 3, 100),
            entry(EntryKind::Done, 2, 200),
        ] {
            writer.append(&entry);
        }
        writer.finish(None).unwrap();
    }

    fn journal_bytes(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join(JOURNAL_FILE)).unwrap()
    }

    #[test]
    fn no_journal_is_none_and_creates_nothing() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        assert_eq!(inspect(&dir, &fp(), CHUNKS, None).unwrap(), None);
        assert!(!dir.exists());
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(inspect(&dir, &fp(), CHUNKS, None).unwrap(), None);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn it_reads_what_a_run_would_resume_from() {
        let root = tempfile::tempdir().unwrap();
        write_journal(root.path());
        let seen = inspect(root.path(), &fp(), CHUNKS, None).unwrap().unwrap();
        assert_eq!(seen.records, 5);
        assert_eq!(seen.done.ones().collect::<Vec<_>>(), [0, 2, 3]);
        assert_eq!(seen.failed.ones().collect::<Vec<_>>(), [1]);
        assert_eq!(seen.output_len, 300);
        assert_eq!(seen.torn_bytes, 0);

        // What a run reads agrees.
        let (writer, recovered) = open(root.path(), &fp(), CHUNKS, false).unwrap();
        writer.finish(None).unwrap();
        assert_eq!(recovered, seen);
    }

    #[test]
    fn a_torn_tail_is_counted_but_left_in_place() {
        let root = tempfile::tempdir().unwrap();
        write_journal(root.path());
        let mut half = [0; RECORD_LEN];
        encode_record(&entry(EntryKind::Done, 4, 300), &mut half);
        OpenOptions::new()
            .append(true)
            .open(root.path().join(JOURNAL_FILE))
            .unwrap()
            .write_all(&half[..20])
            .unwrap();
        let before = journal_bytes(root.path());

        let seen = inspect(root.path(), &fp(), CHUNKS, None).unwrap().unwrap();
        assert_eq!(seen.records, 5);
        assert_eq!(seen.torn_bytes, 20);
        assert_eq!(seen.output_len, 300);
        assert_eq!(journal_bytes(root.path()), before);
    }

    #[test]
    fn a_changed_job_is_refused_with_its_changes() {
        let root = tempfile::tempdir().unwrap();
        write_journal(root.path());
        let before = journal_bytes(root.path());
        match inspect(root.path(), &fingerprint_with("20"), CHUNKS, None) {
            Err(JournalError::Changed { dir, changes }) => {
                assert_eq!(dir, root.path());
                assert_eq!(
                    changes,
                    [("chunk".to_owned(), "10".to_owned(), "20".to_owned())]
                );
            }
            other => panic!("expected Changed, got {other:?}"),
        }
        assert_eq!(journal_bytes(root.path()), before);
    }

    #[test]
    fn a_changed_job_whose_journal_settled_nothing_is_not_refused() {
        // A run that settled no chunk (stopped while its first chunks ran)
        // has nothing to keep: another job, or the same job with a worker
        // found elsewhere, starts over rather than being refused.
        let root = tempfile::tempdir().unwrap();
        let (writer, _) = open(root.path(), &fp(), CHUNKS, true).unwrap();
        writer.finish(None).unwrap();
        let seen = inspect(root.path(), &fingerprint_with("20"), CHUNKS, None)
            .unwrap()
            .expect("a journal");
        assert_eq!(seen.records, 0);
        assert_eq!(seen.done.count_ones(..), 0);
    }

    #[test]
    fn a_damaged_journal_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join(JOURNAL_FILE), b"not a journal at all").unwrap();
        match inspect(root.path(), &fp(), CHUNKS, None) {
            Err(JournalError::Corrupt { reason, .. }) => {
                assert_eq!(reason, "it does not start like a journal");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn a_record_past_the_job_is_refused() {
        let root = tempfile::tempdir().unwrap();
        write_journal(root.path());
        match inspect(root.path(), &fp(), 3, None) {
            Err(JournalError::Corrupt { reason, .. }) => {
                assert_eq!(reason, "record 3 is for chunk 3, but the job has 3 chunks");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn a_held_lock_does_not_stop_it() {
        let root = tempfile::tempdir().unwrap();
        write_journal(root.path());
        let _lock = super::super::lock_state(root.path()).unwrap();
        assert!(inspect(root.path(), &fp(), CHUNKS, None).unwrap().is_some());
    }
}
