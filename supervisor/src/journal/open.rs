//! Opening the journal: a new one (first run, `--fresh`), or an earlier run's,
//! checked against the job, read back, and cut to its last whole record.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek as _, SeekFrom};
use std::path::Path;

use fixedbitset::FixedBitSet;

use super::format::{Entry, EntryKind, MAGIC, encode_header};
use super::scan::Scan;
use super::writer::JournalWriter;
use super::{Fingerprint, JournalError};
use crate::chunks::Settled;
use crate::durable;

/// The journal's name in the state folder.
pub const JOURNAL_FILE: &str = "journal";
/// The failed file's name in the state folder: it belongs with the journal,
/// whose failed records it details, and goes when the journal is replaced.
pub const FAILED_FILE: &str = "failed.jsonl";

/// What an earlier run left, as its journal tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Chunks whose latest record says done; sized to the job's chunk count.
    pub done: FixedBitSet,
    /// Chunks whose latest record says failed for good.
    pub failed: FixedBitSet,
    /// The output's length as far as the journal vouches for it: the end of
    /// the furthest done record (0 when none). The output is cut to this.
    pub output_len: u64,
    /// Bytes cut from the journal's end: a torn last write, or everything
    /// from the first damaged record on.
    pub torn_bytes: u64,
    /// Whole records read (and kept).
    pub records: u64,
    /// The record whose checksum failed although whole records with good
    /// checksums follow it: damage, not a write cut short by a crash.
    pub damaged_at: Option<u64>,
    /// The notes of the fingerprint the journal was written with.
    pub notes: std::collections::BTreeMap<String, String>,
    /// For a job with `chunk = "auto"`, the boundaries of the chunks in
    /// `done` and `failed`, in index order: the run decided them, and a
    /// resumed run keeps them. Its bit sets are only as long as the highest
    /// index recorded, since the chunk count is only bounded.
    pub settled: Option<Vec<Settled>>,
}

impl Recovered {
    fn empty(chunk_count: u64, auto: bool) -> Self {
        let bits = if auto {
            0
        } else {
            usize::try_from(chunk_count).unwrap_or(usize::MAX)
        };
        Self {
            done: FixedBitSet::with_capacity(bits),
            failed: FixedBitSet::with_capacity(bits),
            output_len: 0,
            torn_bytes: 0,
            records: 0,
            damaged_at: None,
            notes: Default::default(),
            settled: auto.then(Vec::new),
        }
    }

    /// Notes the boundaries of an automatic chunk; a chunk recorded again
    /// (failed, then done on a retry) must have kept them.
    fn settle(&mut self, entry: &super::Entry) -> Result<(), String> {
        let Some(settled) = &mut self.settled else {
            return Ok(());
        };
        let index = entry.index as usize;
        if index >= self.done.len() {
            self.done.grow(index + 1);
            self.failed.grow(index + 1);
        }
        if self.done.contains(index) || self.failed.contains(index) {
            let same = settled
                .iter()
                .any(|s| s.index == entry.index && (s.start, s.end) == (entry.start, entry.end));
            if !same {
                return Err(format!(
                    "chunk {} is recorded again with other boundaries [{}, {})",
                    entry.index, entry.start, entry.end
                ));
            }
            return Ok(());
        }
        settled.push(Settled {
            index: entry.index,
            start: entry.start,
            end: entry.end,
        });
        Ok(())
    }
}

/// Opens the journal in the state folder `dir` for a job with `fingerprint`
/// and `chunk_count` chunks, and starts its committer thread.
///
/// Without a journal, or with `fresh`, a new one is made and any failed file
/// beside it removed. Otherwise the journal must have been written for the
/// same fingerprint ([`JournalError::Changed`] names what differs); it is
/// read back, cut after its last whole, intact record, and appended to.
///
/// The caller holds the folder's [`StateLock`](super::StateLock): the
/// journal is repaired and written on the assumption that nobody else is.
pub fn open(
    dir: &Path,
    fingerprint: &Fingerprint,
    chunk_count: u64,
    fresh: bool,
) -> Result<(JournalWriter, Recovered), JournalError> {
    durable::create_dir_all(dir).map_err(JournalError::io("create the state folder", dir))?;
    let path = dir.join(JOURNAL_FILE);
    let exists = path
        .try_exists()
        .map_err(JournalError::io("look for the journal", &path))?;
    let (file, recovered) = if exists && !fresh {
        recover(dir, &path, fingerprint, chunk_count)?
    } else {
        (
            start_new(dir, &path, fingerprint, exists)?,
            Recovered::empty(chunk_count, fingerprint.auto_chunks()),
        )
    };
    let writer = JournalWriter::start(file, path)?;
    Ok((writer, recovered))
}

/// Starts a new journal in the state folder `dir` (first run, `--fresh`),
/// removing an old one and its failed file, and starts its committer.
/// The caller holds the folder's [`StateLock`](super::StateLock).
pub fn create(dir: &Path, fingerprint: &Fingerprint) -> Result<JournalWriter, JournalError> {
    durable::create_dir_all(dir).map_err(JournalError::io("create the state folder", dir))?;
    let path = dir.join(JOURNAL_FILE);
    let exists = path
        .try_exists()
        .map_err(JournalError::io("look for the journal", &path))?;
    let file = start_new(dir, &path, fingerprint, exists)?;
    JournalWriter::start(file, path)
}

/// Goes on with the journal in `dir` that [`inspect`](super::inspect) read
/// as `recovered`: what it did not trust is cut off, then records are
/// appended after the rest. The caller has held the folder's
/// [`StateLock`](super::StateLock) since before it inspected the journal,
/// so the file is as it was read.
pub fn resume(dir: &Path, recovered: &Recovered) -> Result<JournalWriter, JournalError> {
    let path = dir.join(JOURNAL_FILE);
    let file = open_for_append(&path)?;
    cut_to(&file, &path, recovered)?;
    JournalWriter::start(file, path)
}

/// Truncates the journal where [`read_back`] stopped trusting it, before
/// anything is appended: records after a torn one would never be read.
fn cut_to(file: &File, path: &Path, recovered: &Recovered) -> Result<(), JournalError> {
    if recovered.torn_bytes > 0 {
        let kept = file
            .metadata()
            .map_err(JournalError::io("read the journal", path))?
            .len()
            - recovered.torn_bytes;
        file.set_len(kept)
            .and_then(|()| file.sync_all())
            .map_err(JournalError::io("cut the torn end off the journal", path))?;
    }
    Ok(())
}

/// Makes a new journal holding only the header.
///
/// The steps are ordered so that a crash anywhere leaves a state that a
/// later run reads correctly: the old journal goes first (and the folder is
/// synced), then the failed file; a run that finds no journal makes a new
/// one and removes any failed file too, so a failed file never outlives the
/// journal it belongs to. The new journal is written under a temporary name,
/// synced and renamed, so it is never seen without its whole header.
fn start_new(
    dir: &Path,
    path: &Path,
    fingerprint: &Fingerprint,
    exists: bool,
) -> Result<File, JournalError> {
    if exists {
        durable::remove_if_present(path)
            .map_err(JournalError::io("remove the old journal", path))?;
        durable::sync_dir(dir).map_err(JournalError::io("sync the folder", dir))?;
    }
    let failed = dir.join(FAILED_FILE);
    durable::remove_if_present(&failed)
        .map_err(JournalError::io("remove the old failed file", &failed))?;
    durable::replace(path, &encode_header(fingerprint))
        .map_err(JournalError::io("write the new journal", path))?;
    open_for_append(path)
}

fn open_for_append(path: &Path) -> Result<File, JournalError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(JournalError::io("open the journal", path))
}

/// Reads an earlier run's journal and cuts off a torn or damaged tail.
fn recover(
    dir: &Path,
    path: &Path,
    fingerprint: &Fingerprint,
    chunk_count: u64,
) -> Result<(File, Recovered), JournalError> {
    let file = open_for_append(path)?;
    let recovered = read_back(&file, dir, path, fingerprint, chunk_count, None)?;
    cut_to(&file, path, &recovered)?;
    Ok((file, recovered))
}

/// Reads a journal back without changing it: checks it was written for
/// `fingerprint`, and reads records up to the first that is cut short or
/// fails its checksum.
///
/// A bad record followed by good ones is damage rather than a torn write,
/// but it is handled the same way: records after it are not trusted either.
/// That is safe because records are appended in output order, so every
/// record dropped describes bytes past the last one kept; the output is cut
/// to `output_len` and those chunks run again. `torn_bytes` counts
/// everything dropped.
pub(super) fn read_back(
    file: &File,
    dir: &Path,
    path: &Path,
    fingerprint: &Fingerprint,
    chunk_count: u64,
    output: Option<&Path>,
) -> Result<Recovered, JournalError> {
    let file_len = file
        .metadata()
        .map_err(JournalError::io("read the journal", path))?
        .len();
    let mut scan = Scan::new(file, path, file_len)?;
    if scan.fingerprint.digest != fingerprint.digest {
        if scan.is_bare() {
            // Another job's journal that settled nothing holds nothing to
            // keep: starting over loses nothing, so it never blocks a run.
            return Ok(Recovered::empty(chunk_count, fingerprint.auto_chunks()));
        }
        return Err(JournalError::Changed {
            dir: dir.to_path_buf(),
            changes: scan.fingerprint.changes(fingerprint),
        });
    }

    let mut check = match output {
        Some(output) => OutputCheck::open(output)?,
        None => None,
    };
    let mut recovered = Recovered::empty(chunk_count, scan.fingerprint.auto_chunks());
    recovered.notes = std::mem::take(&mut scan.fingerprint.notes);
    while let Some(entry) = scan.next_entry()? {
        if entry.index >= chunk_count {
            return Err(scan.corrupt(format!(
                "record {} is for chunk {}, but the job has {chunk_count} chunks",
                scan.records() - 1,
                entry.index
            )));
        }
        if let Err(reason) = recovered.settle(&entry) {
            return Err(scan.corrupt(format!("record {}: {reason}", scan.records() - 1)));
        }
        let index = entry.index as usize;
        match entry.kind {
            EntryKind::Done => {
                if let Some(check) = &mut check {
                    check.verify(&entry)?;
                }
                recovered.done.insert(index);
                recovered.failed.set(index, false);
                // Every done record's bytes are in the output, even one a
                // later record overrides: the output ends after the furthest.
                recovered.output_len = recovered.output_len.max(entry.offset + entry.len);
            }
            EntryKind::Failed => {
                recovered.failed.insert(index);
                recovered.done.set(index, false);
            }
        }
    }
    recovered.records = scan.records();
    recovered.torn_bytes = scan.untrusted_bytes();
    recovered.damaged_at = scan.damaged_at();
    if let Some(settled) = &mut recovered.settled {
        settled.sort_unstable_by_key(|s| s.index);
    }
    Ok(recovered)
}

/// Reads the output along with the journal, checking each finished chunk's
/// bytes against the checksum its record carries. Records come in output
/// order, so this is one sequential read of the output.
struct OutputCheck {
    reader: BufReader<File>,
    path: std::path::PathBuf,
    /// Where the reader is.
    position: u64,
    /// The output's length: what lies beyond is not checked.
    len: u64,
    buf: Vec<u8>,
}

impl OutputCheck {
    /// `None` when there is no output to check, or it is not a regular file
    /// (a device or a pipe keeps nothing to compare).
    fn open(path: &Path) -> Result<Option<Self>, JournalError> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(JournalError::io("read the output", path)(e)),
        };
        let meta = file
            .metadata()
            .map_err(JournalError::io("read the output", path))?;
        if !meta.is_file() {
            return Ok(None);
        }
        Ok(Some(Self {
            reader: BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            position: 0,
            len: meta.len(),
            buf: vec![0; 64 << 10],
        }))
    }

    fn verify(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let end = entry.offset + entry.len;
        if end > self.len {
            return Ok(());
        }
        if self.position != entry.offset {
            self.reader
                .seek(SeekFrom::Start(entry.offset))
                .map_err(JournalError::io("read the output", &self.path))?;
        }
        let mut hasher = super::format::crc32_hasher();
        let mut left = entry.len;
        while left > 0 {
            let want = usize::try_from(left).map_or(self.buf.len(), |l| l.min(self.buf.len()));
            self.reader
                .read_exact(&mut self.buf[..want])
                .map_err(JournalError::io("read the output", &self.path))?;
            hasher.update(&self.buf[..want]);
            left -= want as u64;
        }
        self.position = end;
        if hasher.finalize() == entry.checksum {
            return Ok(());
        }
        Err(JournalError::OutputChanged {
            output: self.path.clone(),
            index: entry.index,
            offset: entry.offset,
            len: entry.len,
        })
    }
}

/// Reads and checks the header; returns the fingerprint in it and the
/// header's length, where the records start.
pub(super) fn read_header(
    reader: &mut impl Read,
    path: &Path,
    file_len: u64,
) -> Result<(Fingerprint, u64), JournalError> {
    let corrupt = |reason: &str| JournalError::corrupt(path, reason);
    let eof_is_corrupt = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            corrupt("the header is cut short")
        } else {
            JournalError::io("read the journal", path)(e)
        }
    };
    let mut magic = [0; 8];
    reader.read_exact(&mut magic).map_err(eof_is_corrupt)?;
    if &magic != MAGIC {
        return Err(if magic[..7] == MAGIC[..7] {
            JournalError::corrupt(
                path,
                format!(
                    "it is in format version {}, which this supervisor does not read",
                    magic[7]
                ),
            )
        } else {
            corrupt("it does not start like a journal")
        });
    }
    let mut len = [0; 4];
    reader.read_exact(&mut len).map_err(eof_is_corrupt)?;
    let len = u64::from(u32::from_le_bytes(len));
    // Checked against the file before anything is reserved for it.
    if MAGIC.len() as u64 + 8 + len > file_len {
        return Err(corrupt("the header is cut short"));
    }
    let mut json = vec![0; len as usize];
    reader.read_exact(&mut json).map_err(eof_is_corrupt)?;
    let mut crc = [0; 4];
    reader.read_exact(&mut crc).map_err(eof_is_corrupt)?;
    if super::format::crc32(&json) != u32::from_le_bytes(crc) {
        return Err(corrupt("the header's checksum does not match"));
    }
    let stored: Fingerprint = serde_json::from_slice(&json)
        .map_err(|e| JournalError::corrupt(path, format!("the header is unreadable: {e}")))?;
    Ok((stored, MAGIC.len() as u64 + 8 + len))
}
