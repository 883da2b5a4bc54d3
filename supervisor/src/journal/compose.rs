//! A whole journal written in one go rather than appended to as a run goes:
//! what `merge` leaves for the job it merged, so that a run of the job
//! afterwards finds every chunk settled.

use std::io::{self, Write};

use super::Fingerprint;
use super::format::{Entry, RECORD_LEN, encode_header, encode_record};

/// Writes a journal to `out`: the header for a fingerprint, then records in
/// the order they are pushed, which must be output order (done records by
/// increasing offset), as a run appends them.
pub struct JournalComposer<W: Write> {
    out: W,
    record: [u8; RECORD_LEN],
}

impl<W: Write> JournalComposer<W> {
    pub fn new(mut out: W, fingerprint: &Fingerprint) -> io::Result<Self> {
        out.write_all(&encode_header(fingerprint))?;
        Ok(Self {
            out,
            record: [0; RECORD_LEN],
        })
    }

    pub fn push(&mut self, entry: &Entry) -> io::Result<()> {
        encode_record(entry, &mut self.record);
        self.out.write_all(&self.record)
    }

    /// The writer, for the caller to flush and sync.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EntryKind, inspect, open::JOURNAL_FILE};
    use super::*;

    #[test]
    fn a_composed_journal_reads_back_as_a_run_would() {
        let root = tempfile::tempdir().unwrap();
        let fingerprint = Fingerprint::from_fields([("chunk".to_owned(), "10".to_owned())].into());
        let mut bytes = Vec::new();
        let mut composer = JournalComposer::new(&mut bytes, &fingerprint).unwrap();
        for (index, kind, offset) in [
            (0, EntryKind::Done, 0),
            (1, EntryKind::Failed, 0),
            (2, EntryKind::Done, 7),
        ] {
            let len = if kind == EntryKind::Done { 7 } else { 0 };
            composer
                .push(&Entry {
                    kind,
                    index,
                    start: index * 10,
                    end: index * 10 + 10,
                    offset,
                    len,
                    checksum: 0,
                })
                .unwrap();
        }
        std::fs::write(root.path().join(JOURNAL_FILE), &bytes).unwrap();
        let read = inspect(root.path(), &fingerprint, 3, None)
            .unwrap()
            .unwrap();
        assert_eq!(read.done.ones().collect::<Vec<_>>(), [0, 2]);
        assert_eq!(read.failed.ones().collect::<Vec<_>>(), [1]);
        assert_eq!((read.output_len, read.torn_bytes, read.records), (14, 0, 3));
    }
}
