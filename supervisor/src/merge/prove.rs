//! What a shard must prove before its output is used: that it exists, that
//! no supervisor is running it, that it ran this very job as that shard
//! (its journal's fingerprint is the job's with the shard's `I/N` and
//! output), that every chunk of its block is settled, that its output holds
//! every byte its journal counts, and that its failed file has a line for
//! every chunk that failed. Each refusal is one line naming the shard.

use std::ops::Range;
use std::path::{Path, PathBuf};

use fixedbitset::FixedBitSet;

use super::failed;
use crate::config::{Job, OutputPath};
use crate::journal::{self, EntryKind, FAILED_FILE, JOURNAL_FILE, JournalError};
use crate::shard::{JobShard, Scheduler, Shard, for_shard};

/// A shard whose journal holds up, and what it holds.
#[derive(Debug)]
pub struct Proven {
    pub shard: Shard,
    /// The job as that shard ran it: its output and state folder.
    pub output: PathBuf,
    pub state_dir: PathBuf,
    pub block: Range<u64>,
    /// The fingerprint its journal was checked against.
    pub fingerprint: journal::Fingerprint,
    pub done: u64,
    pub failed: u64,
    /// Its journal is one record per chunk in index order, the done ones
    /// back to back from the output's start: it can be merged as it is
    /// read, with no table.
    pub in_order: bool,
}

impl Proven {
    pub fn journal(&self) -> PathBuf {
        self.state_dir.join(JOURNAL_FILE)
    }

    pub fn failed_file(&self) -> PathBuf {
        self.state_dir.join(FAILED_FILE)
    }

    /// The shard as messages name it.
    pub fn name(&self) -> String {
        name(self.shard)
    }
}

pub fn name(shard: Shard) -> String {
    format!("shard {} of {}", shard.index, shard.count)
}

/// Checks shard `shard` of `job` (the whole job, as its file says).
pub fn prove(job: &Job, shard: Shard) -> Result<Proven, String> {
    let as_shard = JobShard {
        shard,
        from: Scheduler::CommandLine,
        evidence: String::new(),
    };
    let named = name(shard);
    let shard_job = for_shard(job.clone(), as_shard).map_err(|e| format!("{named}: {e}"))?;
    let OutputPath::File(output) = &shard_job.output.path else {
        unreachable!("a shard's output is always a file");
    };
    let state_dir = &shard_job.state_dir;
    let run_it = format!("`supervisor --shard {shard} {}`", job.file.display());
    let journal_path = state_dir.join(JOURNAL_FILE);
    // Asked first: a shard that just started may have no journal yet.
    match journal::lock_holder(state_dir) {
        Ok(None) => {}
        Ok(Some(pid)) => {
            let who = pid.map_or_else(
                || "a supervisor".to_owned(),
                |p| format!("a supervisor (pid {p})"),
            );
            return Err(format!(
                "{named} is still running: {who} holds {}; merge once it has finished",
                state_dir.display()
            ));
        }
        Err(e) => return Err(format!("{named}: {e}")),
    }
    match journal_path.try_exists() {
        Ok(true) => {}
        Ok(false) => {
            return Err(format!(
                "{named} is missing: there is no journal in {} (run it: {run_it})",
                state_dir.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "{named}: cannot look at {}: {e}",
                journal_path.display()
            ));
        }
    }
    let expected = journal::fingerprint(&shard_job);
    let block = shard.block(job.chunk_count());
    let width = (block.end - block.start) as usize;
    let mut done = FixedBitSet::with_capacity(width);
    let mut failed = FixedBitSet::with_capacity(width);
    let mut output_len = 0u64;
    let (mut next, mut in_order) = (block.start, true);
    read_entries(&named, &journal_path, &expected, &block, |entry| {
        let at = (entry.index - block.start) as usize;
        in_order &=
            entry.index == next && (entry.kind == EntryKind::Failed || entry.offset == output_len);
        next += 1;
        match entry.kind {
            EntryKind::Done => {
                done.insert(at);
                failed.set(at, false);
                output_len = output_len.max(entry.offset + entry.len);
            }
            EntryKind::Failed => {
                failed.insert(at);
                done.set(at, false);
            }
        }
    })?;
    let mut settled = done.clone();
    settled.union_with(&failed);
    let settled_count = settled.count_ones(..) as u64;
    if settled_count < block.end - block.start {
        let first_missing = block.start + settled.zeroes().next().unwrap_or(0) as u64;
        return Err(format!(
            "{named} is incomplete: {settled_count} of its {} chunks [{}, {}) are settled, \
             chunk {first_missing} is the first that is not; run it again to finish it: {run_it}",
            block.end - block.start,
            block.start,
            block.end
        ));
    }
    check_output(&named, output, output_len)?;
    let failed_count = failed.count_ones(..) as u64;
    if failed_count > 0 {
        let path = state_dir.join(FAILED_FILE);
        let lines = failed::lines_of(&path, &failed, block.start).map_err(|e| {
            format!(
                "{named}: cannot read its failed file {}: {e}",
                path.display()
            )
        })?;
        if let Some(index) = failed
            .ones()
            .map(|at| block.start + at as u64)
            .find(|index| !lines.contains_key(index))
        {
            return Err(format!(
                "{named}: its journal says chunk {index} failed for good, but its failed file \
                 {} has no line for it",
                path.display()
            ));
        }
    }
    Ok(Proven {
        shard,
        output: output.clone(),
        state_dir: state_dir.clone(),
        block,
        fingerprint: expected,
        done: done.count_ones(..) as u64,
        failed: failed_count,
        in_order,
    })
}

/// Reads the trusted records of a shard's journal into `visit`, after
/// checking the journal was written for `expected`, and that every record is
/// for a chunk of the shard's `block`.
pub fn read_entries(
    named: &str,
    path: &Path,
    expected: &journal::Fingerprint,
    block: &Range<u64>,
    mut visit: impl FnMut(&journal::Entry),
) -> Result<(), String> {
    let damaged = |e: JournalError| format!("{named}: {e}");
    let mut scan = journal::scan(path).map_err(damaged)?;
    if scan.fingerprint.digest != expected.digest {
        let changes: Vec<String> = scan
            .fingerprint
            .changes(expected)
            .into_iter()
            .map(|(field, was, now)| format!("{field} {} → {}", shown(&was), shown(&now)))
            .collect();
        return Err(format!(
            "{named} ({}) did not run this job: {} (the shard's → the job's)",
            path.parent().unwrap_or(path).display(),
            changes.join(", ")
        ));
    }
    while let Some(entry) = scan.next_entry().map_err(damaged)? {
        if !block.contains(&entry.index) {
            return Err(format!(
                "{named}: its journal {} records chunk {}, outside the shard's chunks [{}, {})",
                path.display(),
                entry.index,
                block.start,
                block.end
            ));
        }
        visit(&entry);
    }
    Ok(())
}

fn check_output(named: &str, output: &Path, needed: u64) -> Result<(), String> {
    let len = match std::fs::metadata(output) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && needed == 0 => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{named}: its output {} is missing, but its journal counts {needed} bytes of it",
                output.display()
            ));
        }
        Err(e) => return Err(format!("{named}: cannot read {}: {e}", output.display())),
    };
    if len < needed {
        return Err(format!(
            "{named}: its output {} is shorter than its journal says ({len} bytes, the journal \
             counts {needed})",
            output.display()
        ));
    }
    Ok(())
}

/// A fingerprint's value in a message: long ones (params, argument lists)
/// are cut, since the field's name already says where to look.
fn shown(value: &str) -> String {
    const SHOWN: usize = 60;
    match value.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_owned(),
    }
}
