//! The durable journal of finished chunks, and what resume needs: the job's
//! fingerprint, the state folder's lock, reading an earlier run back, and
//! group-committed appends.
//!
//! # Files
//!
//! The state folder holds `lock` (held with an open-file-description lock by
//! the running supervisor, its pid inside), `journal`, and `failed.jsonl` (written by the
//! output module). The journal is a header that fingerprints the job, then
//! one 56-byte record per chunk that ended: done, with the offset, length
//! and CRC-32 of its record in the output, or failed for good (the layout is in
//! `journal/format.rs`). For the same chunk a later record wins: a chunk
//! that failed and then succeeded on a `--retry-failed` run has a failed
//! record, then a done one.
//!
//! # Durability
//!
//! The output holds the results; the journal says which of its bytes are
//! finished chunks. One rule makes resume exact: **the journal never points
//! past durable output.** Each commit, on the committer thread, goes:
//!
//! 1. (run loop) the output's buffer is flushed into the file, then the
//!    records are handed over ([`JournalWriter::commit`]), which returns at once;
//! 2. the output is synced (`fdatasync`; the first time `fsync` and its
//!    folder too, since this run may have created it);
//! 3. the records are appended to the journal;
//! 4. the journal is synced (`fdatasync`).
//!
//! A record is durable once step 4 has returned for its group. The run loop
//! commits when [`JournalWriter::is_due`] says so: [`COMMIT_INTERVAL`] (20 ms)
//! after the last commit, or at once when 64 Ki records wait. If the disk is
//! slower than that, the batches that queue up are written as one group, and
//! past a short queue records wait in the run loop's buffer: the run loop
//! never blocks on the disk. Once 64 Ki records wait there
//! ([`JournalWriter::is_backlogged`]) no new chunk starts until they are
//! handed over, so memory stays bounded on a slow disk. [`JournalWriter::finish`] commits the rest and
//! waits, on every clean end, a drain after SIGTERM or SIGINT included.
//!
//! What a crash (kill -9, power loss) costs: the chunks that finished in the
//! last commit interval, plus those in commits the disk had not finished.
//! Their records may be in the output, but no durable journal record covers
//! them: on resume the output is cut to the end of the last recorded chunk
//! and they run again. No chunk is recorded without its output, and no
//! output is kept without its record, so the output holds each chunk once.
//!
//! A crash during step 3 can leave a partial record, and a power loss a tail
//! of garbage. Reading stops at the first record that is cut short or fails
//! its checksum and truncates the journal there (`Recovered::torn_bytes`).
//! A bad record followed by good ones is damage, not a torn write, and is
//! treated the same way: nothing from it on is trusted. Since records are
//! appended in output order, every record dropped describes bytes past the
//! last one kept, which the output loses in the same cut.
//!
//! A new journal (first run, `--fresh`) is written under a temporary name,
//! synced, renamed into place and its folder synced; an old journal is
//! removed, and the folder synced, before the failed file is, so a failed
//! file never outlives its journal.
//!
//! `merge` writes the journal of the job it merged in one go
//! ([`JournalComposer`]) beside its final name, and renames it into place
//! after the output and the failed file: a job's journal is the last thing
//! a merge puts down.
//!
//! The failed file is not synced by the journal: a failed record should be
//! appended only once the failed file's line is on disk, or a crash may leave
//! a chunk counted as failed with no line saying why.
//!
//! # Use
//!
//! ```text
//! let _lock = lock_state(&job.state_dir)?;
//! let (mut journal, recovered) = open(&job.state_dir, &fingerprint(job), job.chunk_count(), fresh)?;
//! let mut output = ResultWriter::resume(path, recovered.output_len)?;    // or create when no records
//! // for each result, in the order written:
//! let (offset, len) = output.write(meta, bytes)?;
//! journal.append(&Entry { kind: EntryKind::Done, index, start, end, offset, len });
//! // each turn of the run loop:
//! if journal.is_due(now) { output.flush()?; journal.commit(output.file())?; }
//! // at the end:
//! output.flush()?; journal.finish(output.file())?;
//! ```

mod compose;
mod error;
mod fingerprint;
mod format;
mod inspect;
mod lock;
mod open;
mod scan;
mod writer;

#[cfg(test)]
mod tests;

pub use compose::JournalComposer;
pub use error::JournalError;
pub use fingerprint::{Fingerprint, fingerprint};
pub use format::{Entry, EntryKind, crc32};
pub use inspect::inspect;
pub use lock::{LOCK_FILE, StateLock, lock_holder, lock_state};
pub use open::{FAILED_FILE, JOURNAL_FILE, Recovered, create, open, resume};
pub use scan::{Scan, scan};
pub use writer::{COMMIT_INTERVAL, COMMIT_RECORDS, JournalWriter};
