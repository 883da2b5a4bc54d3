//! Reading a journal record by record, without changing it: the header's
//! fingerprint first, then each whole, intact record in the order written,
//! up to the first that is cut short or fails its checksum. What a resumed
//! run recovers and what `merge` proves are both read this way.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::format::{BadRecord, RECORD_LEN, decode_record};
use super::open::read_header;
use super::{Entry, Fingerprint, JournalError};

/// A journal being read: its fingerprint, then its records one by one.
pub struct Scan<R: Read> {
    /// What the journal was written for.
    pub fingerprint: Fingerprint,
    reader: BufReader<R>,
    path: PathBuf,
    /// Whole records the file holds after the header, read or not.
    whole: u64,
    /// Records read and trusted so far.
    records: u64,
    /// Bytes after the header, whole records and any torn tail.
    body_len: u64,
    /// A record was cut short or failed its checksum: nothing from it on is
    /// trusted.
    stopped: bool,
    /// A whole record failed its checksum and an intact one follows it: not a
    /// torn last write but damage, at this record.
    damaged_at: Option<u64>,
}

impl<R: Read> Scan<R> {
    /// Reads and checks the header of the journal `file`, `len` bytes long,
    /// at `path` (for messages).
    pub fn new(file: R, path: &Path, len: u64) -> Result<Self, JournalError> {
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let (fingerprint, header_len) = read_header(&mut reader, path, len)?;
        let body_len = len - header_len;
        Ok(Self {
            fingerprint,
            reader,
            path: path.to_path_buf(),
            whole: body_len / RECORD_LEN as u64,
            records: 0,
            body_len,
            stopped: false,
            damaged_at: None,
        })
    }

    /// The next trusted record, or `None` at the end or at the first record
    /// that is cut short or fails its checksum (a torn write, or damage:
    /// either way nothing after it is trusted). A record whose checksum holds
    /// but whose content no supervisor writes is an error.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, JournalError> {
        if self.stopped || self.records == self.whole {
            return Ok(None);
        }
        let mut bytes = [0; RECORD_LEN];
        // The error is made only when there is one: it copies the path.
        if let Err(e) = self.reader.read_exact(&mut bytes) {
            return Err(JournalError::io("read the journal", &self.path)(e));
        }
        match decode_record(&bytes) {
            Ok(entry) => {
                self.records += 1;
                Ok(Some(entry))
            }
            Err(BadRecord::Checksum) => {
                self.stopped = true;
                if self.any_intact_record_after() {
                    self.damaged_at = Some(self.records);
                }
                Ok(None)
            }
            Err(BadRecord::Invalid(reason)) => Err(JournalError::corrupt(
                &self.path,
                format!("record {}: {reason}", self.records),
            )),
        }
    }

    /// Whether any whole record after the one just read is intact. A torn
    /// write only ever spoils the last; one read wrong with good ones after
    /// it was damaged on disk, and what follows it is lost, not unwritten.
    fn any_intact_record_after(&mut self) -> bool {
        let mut bytes = [0; RECORD_LEN];
        for _ in self.records + 1..self.whole {
            if self.reader.read_exact(&mut bytes).is_err() {
                return false;
            }
            if decode_record(&bytes).is_ok() {
                return true;
            }
        }
        false
    }

    /// Where the records stopped being trusted because of damage rather
    /// than a torn last write (see [`Scan::next_entry`]).
    pub fn damaged_at(&self) -> Option<u64> {
        self.damaged_at
    }

    /// The journal holds a header and nothing after it.
    pub fn is_bare(&self) -> bool {
        self.body_len == 0
    }

    /// Records read and trusted so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes past the records read so far: once [`next_entry`](Self::next_entry)
    /// has said `None`, what a run cuts off as torn.
    pub fn untrusted_bytes(&self) -> u64 {
        self.body_len - self.records * RECORD_LEN as u64
    }

    /// A message about this journal, as its other errors are worded.
    pub fn corrupt(&self, reason: impl Into<String>) -> JournalError {
        JournalError::corrupt(&self.path, reason)
    }
}

/// Opens the journal at `path` for a [`Scan`].
pub fn scan(path: &Path) -> Result<Scan<std::fs::File>, JournalError> {
    let file = std::fs::File::open(path).map_err(JournalError::io("open the journal", path))?;
    let len = file
        .metadata()
        .map_err(JournalError::io("read the journal", path))?
        .len();
    Scan::new(file, path, len)
}
