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
                Ok(None)
            }
            Err(BadRecord::Invalid(reason)) => Err(JournalError::corrupt(
                &self.path,
                format!("record {}: {reason}", self.records),
            )),
        }
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
