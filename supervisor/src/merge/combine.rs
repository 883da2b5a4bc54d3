//! The merge itself: the shards proven, the job's state folder locked, then
//! the output, failed file and journal written beside their targets shard
//! after shard, and put in place: the old journal removed first, the
//! journal last, so that a crash anywhere leaves either the job's earlier
//! files or the merged ones, never a journal that vouches for the wrong
//! output. Running it again does the same again.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use fixedbitset::FixedBitSet;

use super::MergeError;
use super::copy::Copier;
use super::failed::lines_of;
use super::find::shard_count;
use super::prove::{Proven, prove, read_entries};
use super::table::ChunkTable;
use crate::config::{Job, OutputPath};
use crate::durable::{self, Staged};
use crate::journal::{
    self, Entry, EntryKind, FAILED_FILE, JOURNAL_FILE, JournalComposer, JournalError,
};
use crate::shard::Shard;

/// How the command line asked for the merge.
#[derive(Debug, Clone, Copy, Default)]
pub struct MergeOptions {
    /// `--shards N`: merge the shards of this count, whatever else lies
    /// beside them.
    pub shards: Option<u64>,
}

/// What a merge did.
#[derive(Debug)]
pub struct Merged {
    pub shards: u64,
    pub chunks: u64,
    pub done: u64,
    pub failed: u64,
    /// The merged output's length.
    pub bytes: u64,
    pub output: PathBuf,
    /// The job's failed file, when some chunks failed for good.
    pub failed_file: Option<PathBuf>,
    /// Whether the output's bytes were copied in the kernel throughout.
    pub in_kernel: bool,
    /// From the start to the last byte copied: the rest of `elapsed` is
    /// mostly the disk writing what was copied (fsync).
    pub copied: Duration,
    pub elapsed: Duration,
}

/// Merges the shards of `job` (the whole job, as its file says) into its
/// output, failed file and journal.
pub fn merge(job: &Job, options: MergeOptions) -> Result<Merged, MergeError> {
    let started = Instant::now();
    let OutputPath::File(output) = &job.output.path else {
        return Err(MergeError::refused(format!(
            "the job's output is stdout ({}): such a job cannot run as shards, so there is \
             nothing to merge",
            job.file.display()
        )));
    };
    let count = shard_count(job, output, options.shards)?;
    if count == 1 {
        return whole(job, output, started);
    }
    let mut proven = Vec::new();
    let mut refusals = Vec::new();
    for index in 0..count {
        let shard = Shard::new(index, count).map_err(|e| anyhow!(e))?;
        match prove(job, shard) {
            Ok(shard) => proven.push(shard),
            Err(refusal) => refusals.push(refusal),
        }
    }
    if !refusals.is_empty() {
        return Err(MergeError::Refused(refusals));
    }
    // The blocks tile the job's chunks, so every chunk is in exactly one
    // proven shard: the merge covers the job.
    let _lock = journal::lock_state(&job.state_dir).map_err(|e| match e {
        JournalError::Locked { .. } => MergeError::refused(format!("cannot merge: {e}")),
        other => MergeError::Failed(anyhow!(other)),
    })?;
    let mut files = Files::create(job, output)?;
    let mut merged = Merged {
        shards: count,
        chunks: job.chunk_count(),
        done: 0,
        failed: 0,
        bytes: 0,
        output: output.clone(),
        failed_file: None,
        in_kernel: true,
        copied: Duration::ZERO,
        elapsed: Duration::ZERO,
    };
    let mut copier = Copier::new();
    for shard in &proven {
        files.add(shard, &mut copier, &mut merged)?;
    }
    merged.in_kernel = copier.in_kernel();
    merged.copied = started.elapsed();
    merged.failed_file = files.commit(job, merged.failed > 0)?;
    merged.elapsed = started.elapsed();
    Ok(merged)
}

/// Shard 0 of 1 is the job run whole (`--shard 0/1`, a one-task array):
/// there is nothing to combine, only its own journal to prove complete.
fn whole(job: &Job, output: &Path, started: Instant) -> Result<Merged, MergeError> {
    let chunks = job.chunk_count();
    let refuse = |why: String| {
        MergeError::refused(format!(
            "the job ran whole (shard 0 of 1), but {why} (state folder {})",
            job.state_dir.display()
        ))
    };
    if let Ok(Some(pid)) = journal::lock_holder(&job.state_dir) {
        let who = pid.map_or_else(
            || "a supervisor".to_owned(),
            |p| format!("a supervisor (pid {p})"),
        );
        return Err(refuse(format!("{who} is still running it")));
    }
    let recovered = match journal::inspect(
        &job.state_dir,
        &journal::fingerprint(job),
        chunks,
        Some(output),
    ) {
        Ok(Some(recovered)) => recovered,
        Ok(None) => return Err(refuse("it has no journal".to_owned())),
        Err(error) => return Err(refuse(format!("its journal cannot be used: {error}"))),
    };
    let done = recovered.done.count_ones(..) as u64;
    let failed = recovered.failed.count_ones(..) as u64;
    if done + failed < chunks {
        return Err(refuse(format!(
            "only {} of its {chunks} chunks are settled; run it again to finish it",
            done + failed
        )));
    }
    let len = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    if len < recovered.output_len {
        return Err(refuse(format!(
            "its output {} is shorter than its journal says",
            output.display()
        )));
    }
    Ok(Merged {
        shards: 1,
        chunks,
        done,
        failed,
        bytes: recovered.output_len,
        output: output.to_path_buf(),
        failed_file: (failed > 0).then(|| job.state_dir.join(FAILED_FILE)),
        in_kernel: true,
        copied: Duration::ZERO,
        elapsed: started.elapsed(),
    })
}

/// One shard's chunks, taken in index order: each done chunk's record is
/// copied (a run of records contiguous in the shard's output as one copy)
/// and each chunk gets its record in the merged journal.
struct Appender<'a> {
    files: &'a mut Files,
    shard: &'a Proven,
    source: Option<&'a File>,
    copier: &'a mut Copier,
    merged: &'a mut Merged,
    /// Records not copied yet: (offset in the shard's output, offset in the
    /// merged output, length).
    pending: Option<(u64, u64, u64)>,
    /// The index the next chunk must have.
    next: u64,
    /// The shard's failed chunks, less the block's start.
    failed: FixedBitSet,
}

impl Appender<'_> {
    fn push(&mut self, entry: Entry) -> Result<(), MergeError> {
        if entry.index != self.next {
            return Err(changed(self.shard));
        }
        self.next += 1;
        let record = match entry.kind {
            EntryKind::Failed => {
                self.merged.failed += 1;
                self.failed
                    .insert((entry.index - self.shard.block.start) as usize);
                Entry {
                    offset: 0,
                    len: 0,
                    ..entry
                }
            }
            EntryKind::Done => {
                self.merged.done += 1;
                let at = self.merged.bytes;
                self.merged.bytes += entry.len;
                self.pending = match self.pending {
                    Some((from, to, len)) if from + len == entry.offset => {
                        Some((from, to, len + entry.len))
                    }
                    Some(run) => {
                        self.copy(run)?;
                        Some((entry.offset, at, entry.len))
                    }
                    None => Some((entry.offset, at, entry.len)),
                };
                Entry {
                    offset: at,
                    ..entry
                }
            }
        };
        self.files.journal.push(&record).with_context(|| {
            format!(
                "cannot write {}",
                self.files.journal_file.temp_path().display()
            )
        })?;
        Ok(())
    }

    /// Copies what is pending; returns the shard's failed chunks.
    fn finish(mut self) -> Result<FixedBitSet, MergeError> {
        if self.next != self.shard.block.end {
            return Err(changed(self.shard));
        }
        if let Some(run) = self.pending.take() {
            self.copy(run)?;
        }
        Ok(self.failed)
    }

    fn copy(&mut self, (from, to, len): (u64, u64, u64)) -> Result<(), MergeError> {
        if len == 0 {
            return Ok(());
        }
        let source = self
            .source
            .expect("a shard with done chunks has its output open");
        self.copier
            .copy(source, from, len, self.files.output.file(), to)
            .with_context(|| {
                format!(
                    "cannot copy {}'s records from {} into {}",
                    self.shard.name(),
                    self.shard.output.display(),
                    self.files.output.temp_path().display()
                )
            })?;
        Ok(())
    }
}

/// A shard's journal no longer says what it said when it was proven.
pub(super) fn changed(shard: &Proven) -> MergeError {
    MergeError::refused(format!(
        "{}: its journal changed while it was being merged; merge again once nothing runs it",
        shard.name()
    ))
}

/// The job's three files, each being written beside its target.
struct Files {
    output: Staged,
    journal: JournalComposer<BufWriter<File>>,
    journal_file: Staged,
    failed: BufWriter<File>,
    failed_file: Staged,
}

impl Files {
    fn create(job: &Job, output: &Path) -> Result<Self, MergeError> {
        let staged = |path: &Path| {
            Staged::create(path).with_context(|| format!("cannot write beside {}", path.display()))
        };
        durable::create_dir_all(&job.state_dir).with_context(|| {
            format!("cannot create the state folder {}", job.state_dir.display())
        })?;
        let output_file = staged(output)?;
        let journal_file = staged(&job.state_dir.join(JOURNAL_FILE))?;
        let failed_file = staged(&job.state_dir.join(FAILED_FILE))?;
        let clone = |staged: &Staged| {
            staged
                .file()
                .try_clone()
                .with_context(|| format!("cannot write {}", staged.temp_path().display()))
        };
        let journal = JournalComposer::new(
            BufWriter::with_capacity(1 << 20, clone(&journal_file)?),
            &journal::fingerprint(job),
        )
        .with_context(|| format!("cannot write {}", journal_file.temp_path().display()))?;
        Ok(Self {
            failed: BufWriter::new(clone(&failed_file)?),
            output: output_file,
            journal,
            journal_file,
            failed_file,
        })
    }

    /// Adds one shard's chunks in index order: their records to the output,
    /// a record each to the journal, and the failed ones' lines. A shard
    /// whose journal has one record per chunk in index order (the usual
    /// case) is streamed from its journal; any other is read into a
    /// `ChunkTable` first.
    fn add(
        &mut self,
        shard: &Proven,
        copier: &mut Copier,
        merged: &mut Merged,
    ) -> Result<(), MergeError> {
        let source = if shard.done > 0 {
            Some(File::open(&shard.output).with_context(|| {
                format!(
                    "{}: cannot read its output {}",
                    shard.name(),
                    shard.output.display()
                )
            })?)
        } else {
            None
        };
        let width = (shard.block.end - shard.block.start) as usize;
        let mut appender = Appender {
            files: self,
            shard,
            source: source.as_ref(),
            copier,
            merged,
            pending: None,
            next: shard.block.start,
            failed: FixedBitSet::with_capacity(width),
        };
        if shard.in_order {
            let mut added = Ok(());
            read_entries(
                &shard.name(),
                &shard.journal(),
                &shard.fingerprint,
                &shard.block,
                |entry| {
                    if added.is_ok() {
                        added = appender.push(*entry);
                    }
                },
            )
            .map_err(MergeError::refused)?;
            added?;
        } else {
            for entry in ChunkTable::read(shard)?.entries() {
                appender.push(entry)?;
            }
        }
        let failed = appender.finish()?;
        if shard.failed > 0 {
            self.add_failed_lines(shard, &failed)?;
        }
        Ok(())
    }

    /// The failed chunks' lines, in index order, each the last one the
    /// shard wrote for it.
    fn add_failed_lines(&mut self, shard: &Proven, failed: &FixedBitSet) -> Result<(), MergeError> {
        let path = shard.failed_file();
        let read_error = || {
            format!(
                "{}: cannot read its failed file {}",
                shard.name(),
                path.display()
            )
        };
        let lines = lines_of(&path, failed, shard.block.start).with_context(read_error)?;
        let file = File::open(&path).with_context(read_error)?;
        let mut line = Vec::new();
        for (offset, len) in lines.into_values() {
            line.resize(len as usize, 0);
            file.read_exact_at(&mut line, offset)
                .with_context(read_error)?;
            line.push(b'\n');
            self.failed.write_all(&line).with_context(|| {
                format!("cannot write {}", self.failed_file.temp_path().display())
            })?;
        }
        Ok(())
    }

    /// Puts the merged files in place. The job's old journal goes first, so
    /// that until the new one is in place a run of the job finds none and
    /// starts over, rather than trusting an old journal with a new output;
    /// then the failed file (or none), the output, and last the journal.
    fn commit(self, job: &Job, any_failed: bool) -> Result<Option<PathBuf>, MergeError> {
        let Files {
            output,
            journal,
            journal_file,
            failed,
            failed_file,
            ..
        } = self;
        let state = &job.state_dir;
        // Into the files; each is synced as it is committed.
        journal
            .into_inner()
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", journal_file.temp_path().display()))?;
        failed
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", failed_file.temp_path().display()))?;
        let journal_path = state.join(JOURNAL_FILE);
        let failed_path = state.join(FAILED_FILE);
        durable::remove_if_present(&journal_path)
            .and_then(|_| durable::sync_dir(state))
            .with_context(|| format!("cannot remove the old journal {}", journal_path.display()))?;
        let failed_file = if any_failed {
            failed_file
                .commit()
                .with_context(|| format!("cannot write {}", failed_path.display()))?;
            Some(failed_path)
        } else {
            drop(failed_file);
            durable::remove_if_present(&failed_path)
                .and_then(|_| durable::sync_dir(state))
                .with_context(|| format!("cannot remove the old {}", failed_path.display()))?;
            None
        };
        let output_path = output.temp_path().to_path_buf();
        output
            .commit()
            .with_context(|| format!("cannot put {} in place", output_path.display()))?;
        journal_file
            .commit()
            .with_context(|| format!("cannot write {}", journal_path.display()))?;
        Ok(failed_file)
    }
}
