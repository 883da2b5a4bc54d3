//! Setting the store up as the assessment decided: a new journal, output and
//! failed file, or an earlier run's, cut back to what its journal vouches
//! for; and the chunks this run skips.

use anyhow::{Context as _, anyhow};
use fixedbitset::FixedBitSet;
use tracing::{info, warn};

use super::failures::FailureWriter;
use super::files::Store;
use super::output::ResultWriter;
use crate::assess::{Resume, Start, failed_file};
use crate::chunks::Settled;
use crate::config::{Job, OutputPath};
use crate::journal;
use crate::run::SetupError;

/// The store and what the run needs to know of earlier runs.
pub struct Opened {
    pub store: Store,
    /// Chunks an earlier run settled (done, or failed for good).
    pub skip: Option<FixedBitSet>,
    /// Chunks an earlier run finished.
    pub done_before: u64,
    /// Chunks that failed for good in an earlier run and are not retried now.
    pub failed_before: u64,
    /// With `chunk = "auto"`: the chunks an earlier run settled, whose
    /// boundaries the run keeps; and whether only those run (`--retry-failed`).
    pub settled: Vec<Settled>,
    pub settled_only: bool,
}

/// Opens the store of `job` as `start` says. The caller holds the state
/// folder's lock, and has since it assessed.
pub fn open(job: &Job, start: Start) -> Result<Opened, SetupError> {
    let failed_path = failed_file(job);
    let failed_writer = |keep: bool| {
        let writer = if keep {
            FailureWriter::append_to(failed_path.clone())
        } else {
            FailureWriter::new(failed_path.clone())
        };
        writer
            .with_context(|| format!("cannot prepare the failed file {}", failed_path.display()))
            .map_err(SetupError::Failed)
    };
    let create_output = || match make_parent(&job.output.path)
        .and_then(|()| ResultWriter::create(&job.output.path))
    {
        Ok(output) => Ok(output.in_format(job.output.format)),
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
            Err(SetupError::Refused(error.into()))
        }
        Err(error) => Err(SetupError::Failed(anyhow::Error::new(error).context(
            match &job.output.path {
                OutputPath::File(path) => format!("cannot create the output {}", path.display()),
                OutputPath::Stdout => "cannot write to stdout".to_owned(),
            },
        ))),
    };
    let fresh = |journal| -> Result<Opened, SetupError> {
        Ok(Opened {
            store: Store::new(create_output()?, failed_writer(false)?, journal),
            skip: None,
            done_before: 0,
            failed_before: 0,
            settled: Vec::new(),
            settled_only: false,
        })
    };
    match start {
        Start::Refuse(refusal) => Err(SetupError::Refused(anyhow!(refusal.message(job)))),
        Start::Unjournaled => fresh(None),
        Start::Fresh(_) => {
            // The output first: it is locked before anything is written, so
            // a job refused for another's output leaves its state untouched.
            let output = create_output()?;
            let journal = journal::create(&job.state_dir, &journal::fingerprint(job))
                .map_err(SetupError::from)?;
            Ok(Opened {
                store: Store::new(output, failed_writer(false)?, Some(journal)),
                skip: None,
                done_before: 0,
                failed_before: 0,
                settled: Vec::new(),
                settled_only: false,
            })
        }
        Start::Resume(resume) => resumed(job, resume, failed_writer),
    }
}

/// The output's folder, made (durably) if it is missing.
fn make_parent(output: &OutputPath) -> std::io::Result<()> {
    match output {
        OutputPath::File(path) => match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => crate::durable::create_dir_all(dir),
            _ => Ok(()),
        },
        OutputPath::Stdout => Ok(()),
    }
}

fn resumed(
    job: &Job,
    resume: Resume,
    failed_writer: impl Fn(bool) -> Result<FailureWriter, SetupError>,
) -> Result<Opened, SetupError> {
    let Resume {
        mut recovered,
        retry_failed,
        ..
    } = resume;
    let settled = recovered.settled.take().unwrap_or_default();
    let OutputPath::File(path) = &job.output.path else {
        unreachable!("a run to stdout is never resumed");
    };
    let resolved =
        |notes: &std::collections::BTreeMap<String, String>| notes.get("worker.resolved").cloned();
    let now = journal::fingerprint(job);
    if let (Some(was), Some(is)) = (resolved(&recovered.notes), resolved(&now.notes))
        && was != is
    {
        info!("the worker command now resolves to {is} (the earlier run's was {was}); resuming");
    }
    match recovered.damaged_at {
        Some(record) => warn!(
            "the journal is damaged at record {record} (a checksum fails where more records \
             follow): nothing from there on is trusted, {} bytes are cut off, and the chunks \
             they described run again",
            recovered.torn_bytes
        ),
        None if recovered.torn_bytes > 0 => warn!(
            "the journal ended in {} torn bytes (the previous run stopped mid-write); \
             the chunks they described run again",
            recovered.torn_bytes
        ),
        None => {}
    }
    let journal = journal::resume(&job.state_dir, &recovered).map_err(SetupError::from)?;
    let output = ResultWriter::resume(path, recovered.output_len)
        .with_context(|| format!("cannot resume the output {}", path.display()))
        .map_err(SetupError::Refused)?
        .in_format(job.output.format);
    let block = job.block();
    let of = match job.known_block_len() {
        Some(count) => format!(" of {count}"),
        None => String::new(),
    };
    let done_before = recovered.done.count_ones(..) as u64;
    let failed_earlier = recovered.failed.count_ones(..) as u64;
    let skip = if retry_failed {
        let mut skip = FixedBitSet::with_capacity(recovered.failed.len());
        // Only the run's own chunks: a shard's source gives no others, and
        // with "auto" only those the journal records have boundaries.
        let len = skip.len() as u64;
        skip.insert_range(block.start.min(len) as usize..block.end.min(len) as usize);
        skip.difference_with(&recovered.failed);
        info!("retrying the {failed_earlier} chunks that failed for good last time");
        skip
    } else {
        info!(
            "resuming: {done_before}{of} chunks were finished by an earlier run \
             ({failed_earlier} failed for good)"
        );
        let mut skip = recovered.done;
        skip.union_with(&recovered.failed);
        skip
    };
    Ok(Opened {
        store: Store::new(output, failed_writer(!retry_failed)?, Some(journal)),
        skip: Some(skip),
        done_before,
        failed_before: if retry_failed { 0 } else { failed_earlier },
        settled,
        settled_only: retry_failed,
    })
}
