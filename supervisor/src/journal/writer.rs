//! Appending to the journal with group commit: entries are gathered on the
//! run loop's thread, and a committer thread encodes them, syncs the output,
//! then writes and syncs the journal.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::JournalError;
use super::format::{Entry, RECORD_LEN, encode_record};

/// Longest a finished chunk waits for its record to be committed, once the
/// run loop asks: what a crash can cost is the chunks of this window.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(20);
/// Pending records that make a commit due whatever the time: bounds the
/// buffer (64 Ki records are 3 MiB) when chunks finish very fast.
pub const COMMIT_RECORDS: usize = 64 * 1024;

/// Batches handed over but not yet taken by the committer. When they are all
/// taken the disk is far behind; records then wait in the writer's buffer
/// instead, which is no loss, and the run loop never blocks; past
/// [`COMMIT_RECORDS`] of them no chunk starts until the disk catches up.
const QUEUE: usize = 4;
/// Record buffers the committer may hand back; more than the queue can hold
/// is never needed.
const SPARES: usize = QUEUE + 2;
/// Record buffers kept for reuse: one being filled while one is committed.
/// Buffers handed back past these are freed, so that a disk that once fell
/// behind does not leave a queue's worth of buffers behind.
const KEPT_SPARES: usize = 2;
/// The committer writes the journal in pieces of this many bytes at most.
const ENCODED_PIECE: usize = 64 * 1024;
/// A new buffer's room, in entries.
const INITIAL_RECORDS: usize = 256;

/// Appends records to the journal; see the module documentation for when
/// they are durable.
///
/// Dropping it without [`finish`](Self::finish) never blocks: records not yet
/// handed over are dropped (their chunks run again on resume), and the
/// committer finishes the batches it already has, then ends.
pub struct JournalWriter {
    /// Entries not yet handed to the committer, which encodes them: the run
    /// loop only copies each.
    pending: Vec<Entry>,
    pending_records: usize,
    last_commit: Instant,
    /// Emptied buffers back from the committer, reused for `pending`.
    spares: Vec<Vec<Entry>>,
    /// The output's duplicate and path, made on the first commit that names
    /// an output and held here only until a batch carries it over.
    output: Option<(File, PathBuf)>,
    output_handed_over: bool,
    batches: SyncSender<Batch>,
    returned: Receiver<Vec<Entry>>,
    failure: Arc<OnceLock<JournalError>>,
    /// Records handed to the committer and not yet durable.
    unsynced: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
    /// Where the next done record must start: the journal can only stand in
    /// for the output if records arrive in output order.
    #[cfg(debug_assertions)]
    next_offset: Option<u64>,
}

/// One commit's worth of records, and what the committer must sync first.
struct Batch {
    records: Vec<Entry>,
    /// The output to sync from now on; sent once.
    output: Option<(File, PathBuf)>,
    sync_output: bool,
}

impl JournalWriter {
    /// Starts the committer thread for `journal`, an open file positioned to
    /// append after its last whole record.
    pub(super) fn start(journal: File, path: PathBuf) -> Result<Self, JournalError> {
        let (batches, batches_rx) = mpsc::sync_channel(QUEUE);
        let (returned_tx, returned) = mpsc::sync_channel(SPARES);
        let failure = Arc::new(OnceLock::new());
        let unsynced = Arc::new(AtomicUsize::new(0));
        let committer = Committer {
            journal,
            path: path.clone(),
            output: None,
            output_is_new: false,
            encoded: Vec::with_capacity(ENCODED_PIECE),
            batches: batches_rx,
            returned: returned_tx,
            failure: Arc::clone(&failure),
            unsynced: Arc::clone(&unsynced),
        };
        let thread = std::thread::Builder::new()
            .name("journal".to_owned())
            .spawn(move || committer.run())
            .map_err(JournalError::io("start the journal's committer for", &path))?;
        Ok(Self {
            pending: Vec::with_capacity(INITIAL_RECORDS),
            pending_records: 0,
            last_commit: Instant::now(),
            spares: Vec::with_capacity(KEPT_SPARES),
            output: None,
            output_handed_over: false,
            batches,
            returned,
            failure,
            unsynced,
            thread,
            #[cfg(debug_assertions)]
            next_offset: None,
        })
    }

    /// Records that a chunk ended. Nothing is written until a commit: this
    /// only copies the entry into a buffer (no system call; no allocation
    /// once the buffers have grown to the run's batch size).
    ///
    /// Done entries must come in the order their records were written to
    /// the output, each after its bytes reached the output writer.
    pub fn append(&mut self, entry: &Entry) {
        #[cfg(debug_assertions)]
        if entry.kind == super::EntryKind::Done {
            if let Some(expected) = self.next_offset {
                debug_assert!(
                    entry.offset >= expected,
                    "journal entries out of output order: offset {} before {expected}",
                    entry.offset
                );
            }
            self.next_offset = Some(entry.offset + entry.len);
        }
        self.pending.push(*entry);
        self.pending_records += 1;
    }

    /// Whether the run loop should commit now: records are waiting and
    /// [`COMMIT_INTERVAL`] has passed since the last commit, or
    /// [`COMMIT_RECORDS`] are waiting.
    pub fn is_due(&self, now: Instant) -> bool {
        self.pending_records > 0
            && (self.pending_records >= COMMIT_RECORDS
                || now.saturating_duration_since(self.last_commit) >= COMMIT_INTERVAL)
    }

    /// When a commit will be due if nothing else happens, for the run loop's
    /// timer; `None` while nothing waits.
    pub fn next_due(&self) -> Option<Instant> {
        (self.pending_records > 0).then(|| self.last_commit + COMMIT_INTERVAL)
    }

    /// Whether records pile up because the committer is behind: with those
    /// it has not made durable yet, [`COMMIT_RECORDS`] of them wait. The run
    /// starts no chunk until fewer do, which bounds them (3 MiB).
    pub fn is_backlogged(&self) -> bool {
        self.pending_records + self.unsynced.load(Ordering::Relaxed) >= COMMIT_RECORDS
    }

    /// Records appended and not yet handed to the committer.
    pub fn pending(&self) -> usize {
        self.pending_records
    }

    /// Hands the pending records to the committer and returns at once.
    ///
    /// `output` is the output file, into which the caller has already
    /// flushed every byte the records point at; the committer syncs it
    /// before it writes the records. `None` when there is nothing to sync
    /// (failed entries only, or output to stdout). The first `Some` is
    /// duplicated and kept; later ones must be the same file.
    ///
    /// An error is one from an earlier commit that failed on the committer
    /// thread; from then on nothing more is journaled and every call returns
    /// it again.
    pub fn commit(&mut self, output: Option<&File>) -> Result<(), JournalError> {
        self.check()?;
        if self.pending_records == 0 {
            return Ok(());
        }
        let batch = self.batch(output)?;
        let carries_output = batch.output.is_some();
        let records = batch.records.len();
        // Counted before the committer can see them, so it never subtracts
        // what was not added.
        self.unsynced.fetch_add(records, Ordering::Relaxed);
        match self.batches.try_send(batch) {
            Ok(()) => {
                self.output_handed_over |= carries_output;
                self.pending_records = 0;
                self.last_commit = Instant::now();
                Ok(())
            }
            Err(TrySendError::Full(batch)) => {
                self.unsynced.fetch_sub(records, Ordering::Relaxed);
                // The committer is behind: the records wait here for the
                // next commit, and this one costs nothing.
                let empty = std::mem::replace(&mut self.pending, batch.records);
                self.spares.push(empty);
                self.output = batch.output;
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(self.stopped()),
        }
    }

    /// The last commit, then waits for the committer to make everything
    /// durable and returns the first error it met, if any.
    pub fn finish(mut self, output: Option<&File>) -> Result<(), JournalError> {
        self.check()?;
        if self.pending_records > 0 {
            let batch = self.batch(output)?;
            if self.batches.send(batch).is_err() {
                return Err(self.stopped());
            }
        }
        let Self {
            batches,
            thread,
            failure,
            ..
        } = self;
        // The committer ends once it has written every batch sent.
        drop(batches);
        let joined = thread.join();
        if let Some(error) = failure.get() {
            return Err(error.clone());
        }
        joined.map_err(|_| JournalError::CommitterGone)
    }

    fn check(&self) -> Result<(), JournalError> {
        match self.failure.get() {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    fn stopped(&self) -> JournalError {
        self.failure
            .get()
            .cloned()
            .unwrap_or(JournalError::CommitterGone)
    }

    /// Swaps the pending records out for an empty buffer, into a batch.
    fn batch(&mut self, output: Option<&File>) -> Result<Batch, JournalError> {
        if let Some(file) = output
            && !self.output_handed_over
            && self.output.is_none()
        {
            let path = crate::resources::open_file_path(file);
            let dup = file
                .try_clone()
                .map_err(JournalError::io("duplicate the descriptor of", &path))?;
            self.output = Some((dup, path));
        }
        while let Ok(buffer) = self.returned.try_recv() {
            if self.spares.len() < KEPT_SPARES {
                self.spares.push(buffer);
            }
        }
        let empty = self
            .spares
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(INITIAL_RECORDS));
        Ok(Batch {
            records: std::mem::replace(&mut self.pending, empty),
            output: self.output.take(),
            sync_output: output.is_some(),
        })
    }
}

/// The thread that makes batches durable, one round at a time.
struct Committer {
    journal: File,
    path: PathBuf,
    /// The output and its path; `None` until the first batch that names it,
    /// and for an output that cannot be synced (a device or a pipe).
    output: Option<(File, PathBuf)>,
    /// The output's name has yet to be made durable.
    output_is_new: bool,
    /// A round's records, encoded; kept between rounds.
    encoded: Vec<u8>,
    batches: Receiver<Batch>,
    returned: SyncSender<Vec<Entry>>,
    failure: Arc<OnceLock<JournalError>>,
    unsynced: Arc<AtomicUsize>,
}

impl Committer {
    fn run(mut self) {
        let mut round: Vec<Batch> = Vec::with_capacity(QUEUE);
        // Every batch waiting is taken into one round: one output sync and
        // one journal sync cover them all, so a slow disk means bigger
        // groups, not a longer queue.
        while let Ok(batch) = self.batches.recv() {
            round.push(batch);
            while round.len() < QUEUE {
                match self.batches.try_recv() {
                    Ok(batch) => round.push(batch),
                    Err(_) => break,
                }
            }
            if let Err(error) = self.commit(&mut round) {
                // Nothing more is written: after a failed sync what is on
                // disk is unknown, and a record must never outrun its output.
                let _ = self.failure.set(error);
                return;
            }
            let committed = round.iter().map(|batch| batch.records.len()).sum();
            self.unsynced.fetch_sub(committed, Ordering::Relaxed);
            for batch in round.drain(..) {
                let mut records = batch.records;
                records.clear();
                let _ = self.returned.try_send(records);
            }
        }
    }

    /// Output first, journal second: a record is only written once the bytes
    /// it points at are on disk.
    fn commit(&mut self, round: &mut [Batch]) -> Result<(), JournalError> {
        let mut sync_output = false;
        for batch in round.iter_mut() {
            if let Some((file, path)) = batch.output.take() {
                let is_file = file
                    .metadata()
                    .map_err(JournalError::io("inspect the output", &path))?
                    .is_file();
                if is_file {
                    self.output = Some((file, path));
                    self.output_is_new = true;
                }
            }
            sync_output |= batch.sync_output;
        }
        if sync_output && let Some((file, path)) = &self.output {
            if self.output_is_new {
                file.sync_all()
                    .map_err(JournalError::io("sync the output", path))?;
                sync_parent(path)?;
                self.output_is_new = false;
            } else {
                file.sync_data()
                    .map_err(JournalError::io("sync the output", path))?;
            }
        }
        // Encoded a piece at a time, so a large round costs no large buffer.
        let mut record = [0; RECORD_LEN];
        for entry in round.iter().flat_map(|batch| &batch.records) {
            encode_record(entry, &mut record);
            self.encoded.extend_from_slice(&record);
            if self.encoded.len() + RECORD_LEN > ENCODED_PIECE {
                self.write_encoded()?;
            }
        }
        self.write_encoded()?;
        self.journal
            .sync_data()
            .map_err(JournalError::io("sync the journal", &self.path))
    }
}

impl Committer {
    fn write_encoded(&mut self) -> Result<(), JournalError> {
        let written = (&self.journal)
            .write_all(&self.encoded)
            .map_err(JournalError::io("write the journal", &self.path));
        self.encoded.clear();
        written
    }
}

/// The output may have been created by this run: its name is durable only
/// once its folder is synced. A folder that cannot be opened (the output was
/// named by a path that is gone) is skipped: the file itself is synced.
fn sync_parent(path: &Path) -> Result<(), JournalError> {
    let Some(dir) = path
        .parent()
        .filter(|dir| path.is_absolute() && dir.is_dir())
    else {
        return Ok(());
    };
    match crate::durable::sync_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        synced => synced.map_err(JournalError::io("sync the folder", dir)),
    }
}
