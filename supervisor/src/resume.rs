//! Setting a run up against what an earlier run left behind: the state
//! folder's lock, the journal, the output to resume or to start, the failed
//! file, and the chunks this run skips.

use anyhow::{Context as _, anyhow};
use fixedbitset::FixedBitSet;
use tracing::{info, warn};

use crate::config::{Job, OutputPath};
use crate::journal::{self, JournalWriter, StateLock};
use crate::output::{FailureWriter, ResultWriter};

/// How the command line asked to treat an earlier run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Discard the earlier run's journal, output and failed file.
    pub fresh: bool,
    /// Run only the chunks that failed for good last time.
    pub retry_failed: bool,
}

/// Why a run could not be set up.
#[derive(Debug)]
pub enum SetupError {
    /// The job's state forbids running it as asked; nothing was started
    /// (exit 2): locked by another supervisor, a changed job, nothing to retry.
    Refused(anyhow::Error),
    /// The output or the state folder cannot be written (exit 3).
    Failed(anyhow::Error),
}

/// Everything the run loop needs to start.
pub struct Prepared {
    /// Held for the whole run: a second supervisor on the same job is refused.
    pub lock: StateLock,
    pub journal: Option<JournalWriter>,
    pub output: ResultWriter,
    pub failures: FailureWriter,
    /// Chunks an earlier run settled (done, or failed for good).
    pub skip: Option<FixedBitSet>,
    /// Chunks an earlier run finished.
    pub done_before: u64,
    /// Chunks that failed for good in an earlier run and are not retried now.
    pub failed_before: u64,
}

pub fn prepare(job: &Job, options: Options) -> Result<Prepared, SetupError> {
    let refused = |e: journal::JournalError| SetupError::Refused(e.into());
    let lock = journal::lock_state(&job.state_dir).map_err(refused)?;
    let failed_path = job.state_dir.join("failed.jsonl");
    let path = match &job.output.path {
        OutputPath::File(path) => path,
        OutputPath::Stdout => {
            // What went to stdout cannot be truncated or checked later, so a
            // run to stdout always starts over.
            if options.retry_failed {
                return Err(SetupError::Refused(anyhow!(
                    "--retry-failed needs an output file: a run to stdout keeps no journal"
                )));
            }
            return Ok(Prepared {
                lock,
                journal: None,
                output: ResultWriter::create(&job.output.path)
                    .context("cannot write to stdout")
                    .map_err(SetupError::Failed)?
                    .in_format(job.output.format),
                failures: new_failures(&failed_path, false)?,
                skip: None,
                done_before: 0,
                failed_before: 0,
            });
        }
    };
    let chunk_count = job.chunk_count();
    let fingerprint = journal::fingerprint(job);
    let (journal, recovered) =
        journal::open(&job.state_dir, &fingerprint, chunk_count, options.fresh).map_err(refused)?;
    if recovered.torn_bytes > 0 {
        warn!(
            "the journal ended in {} torn bytes (the previous run stopped mid-write); \
             the chunks they described run again",
            recovered.torn_bytes
        );
    }
    let resumed = recovered.records > 0;
    if options.retry_failed && !resumed {
        return Err(SetupError::Refused(anyhow!(
            "--retry-failed: there is no earlier run of this job to retry (state folder {})",
            job.state_dir.display()
        )));
    }
    let output = if resumed {
        ResultWriter::resume(path, recovered.output_len)
            .with_context(|| format!("cannot resume the output {}", path.display()))
            .map_err(SetupError::Refused)?
    } else {
        ResultWriter::create(&job.output.path)
            .with_context(|| format!("cannot create the output {}", path.display()))
            .map_err(SetupError::Failed)?
    }
    .in_format(job.output.format);
    let done_before = recovered.done.count_ones(..) as u64;
    let failed_earlier = recovered.failed.count_ones(..) as u64;
    let skip = if options.retry_failed {
        let mut skip = FixedBitSet::with_capacity(recovered.failed.len());
        skip.insert_range(..);
        skip.difference_with(&recovered.failed);
        info!("retrying the {failed_earlier} chunks that failed for good last time");
        Some(skip)
    } else if resumed {
        let mut skip = recovered.done;
        skip.union_with(&recovered.failed);
        info!(
            "resuming: {done_before} of {chunk_count} chunks were finished by an earlier run \
             ({failed_earlier} failed for good)"
        );
        Some(skip)
    } else {
        None
    };
    Ok(Prepared {
        lock,
        journal: Some(journal),
        output,
        failures: new_failures(&failed_path, resumed && !options.retry_failed)?,
        skip,
        done_before,
        failed_before: if options.retry_failed {
            0
        } else {
            failed_earlier
        },
    })
}

/// The failed file: kept and appended to when resuming, started anew otherwise.
fn new_failures(path: &std::path::Path, keep: bool) -> Result<FailureWriter, SetupError> {
    let writer = if keep {
        FailureWriter::append_to(path.to_owned())
    } else {
        FailureWriter::new(path.to_owned())
    };
    writer
        .with_context(|| format!("cannot prepare the failed file {}", path.display()))
        .map_err(SetupError::Failed)
}
