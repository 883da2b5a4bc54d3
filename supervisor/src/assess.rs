//! What a run of the job would do with what earlier runs left, decided from
//! reads alone: who holds the state folder, whether the journal fits the job,
//! whether the output is what the journal vouches for. `check` prints the
//! [`Assessment`]; a run, holding the lock, acts on it.

use std::io;

use crate::config::{Job, OutputPath};
use crate::journal::{self, FAILED_FILE, JournalError, Recovered};

/// How the command line asked to treat an earlier run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Discard the earlier run's journal, output and failed file.
    pub fresh: bool,
    /// Run only the chunks that failed for good last time.
    pub retry_failed: bool,
}

/// Whether the caller holds the job's state folder lock already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// `check`: ask who holds it, without taking it.
    Probe,
    /// A run, which took it before assessing: the holder is itself.
    Held,
}

#[derive(Debug)]
pub struct Assessment {
    /// Another supervisor runs the job now: `Some(pid)` when it wrote one.
    /// Never set for [`Lock::Held`].
    pub holder: Option<Option<u32>>,
    pub start: Start,
}

/// Where a run starts.
#[derive(Debug)]
pub enum Start {
    /// The output is stdout: nothing can be checked or cut later, so no
    /// journal is kept and a run always starts over.
    Unjournaled,
    /// From the beginning: a new journal, output and failed file.
    Fresh(Fresh),
    /// Going on from an earlier run's journal.
    Resume(Resume),
    /// Nothing can start as asked (exit 2).
    Refuse(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fresh {
    NoJournal,
    /// A journal that records no settled chunk: nothing to keep.
    NoRecords,
    /// `--fresh`.
    Asked,
}

#[derive(Debug)]
pub struct Resume {
    pub recovered: Recovered,
    /// The output's length now, when it is a regular file; the run cuts it
    /// back to `recovered.output_len`.
    pub output_len: Option<u64>,
    /// `--retry-failed`: only the chunks that failed for good run.
    pub retry_failed: bool,
}

#[derive(Debug)]
pub enum Refusal {
    /// The journal is for another job, or damaged.
    Journal(JournalError),
    /// The output lost bytes the journal counts as finished chunks.
    OutputShorter {
        len: u64,
        kept: u64,
    },
    OutputMissing {
        kept: u64,
    },
    /// `--retry-failed` with no earlier run to retry.
    NothingToRetry,
    /// `--retry-failed` after a run in which no chunk failed for good.
    NoFailures,
    /// `--retry-failed` of a run to stdout, which keeps no journal.
    RetryNeedsJournal,
    /// The state folder or the output cannot be read.
    Unreadable(String),
}

impl Refusal {
    /// What a run says when it refuses (the wording of errors, with advice).
    pub fn message(&self, job: &Job) -> String {
        match self {
            Refusal::Journal(error) => error_chain(error),
            Refusal::OutputShorter { len, kept } => format!(
                "cannot resume the output {}: it is shorter than the journal says ({len} bytes, \
                 the journal counts {kept}): run with --fresh",
                output_path(job)
            ),
            Refusal::OutputMissing { kept } => format!(
                "cannot resume the output {}: it is missing, but the journal counts {kept} bytes \
                 of it: run with --fresh",
                output_path(job)
            ),
            Refusal::NothingToRetry => format!(
                "--retry-failed: there is no earlier run of this job to retry (state folder {})",
                job.state_dir.display()
            ),
            Refusal::NoFailures => format!(
                "--retry-failed: no chunk failed for good in the earlier run (state folder {}); \
                 run without it to go on",
                job.state_dir.display()
            ),
            Refusal::RetryNeedsJournal => {
                "--retry-failed needs an output file: a run to stdout keeps no journal".to_owned()
            }
            Refusal::Unreadable(reason) => reason.clone(),
        }
    }
}

/// Decides how a run of `job` would start; reads only, creates nothing.
pub fn assess(job: &Job, options: Options, lock: Lock) -> Assessment {
    let holder = match lock {
        Lock::Held => None,
        Lock::Probe => match journal::lock_holder(&job.state_dir) {
            Ok(holder) => holder,
            Err(error) => {
                return Assessment {
                    holder: None,
                    start: Start::Refuse(Refusal::Unreadable(error_chain(&error))),
                };
            }
        },
    };
    Assessment {
        holder,
        start: start(job, options),
    }
}

fn start(job: &Job, options: Options) -> Start {
    let OutputPath::File(output) = &job.output.path else {
        if options.retry_failed {
            return Start::Refuse(Refusal::RetryNeedsJournal);
        }
        return Start::Unjournaled;
    };
    if options.fresh {
        return Start::Fresh(Fresh::Asked);
    }
    let chunks = job.chunk_count();
    let fingerprint = journal::fingerprint(job);
    let recovered = match journal::inspect(&job.state_dir, &fingerprint, chunks, Some(output)) {
        Ok(Some(recovered)) => recovered,
        Ok(None) if options.retry_failed => return Start::Refuse(Refusal::NothingToRetry),
        Ok(None) => return Start::Fresh(Fresh::NoJournal),
        Err(
            error @ (JournalError::Changed { .. }
            | JournalError::Corrupt { .. }
            | JournalError::OutputChanged { .. }),
        ) => {
            return Start::Refuse(Refusal::Journal(error));
        }
        Err(error) => return Start::Refuse(Refusal::Unreadable(error_chain(&error))),
    };
    if recovered.records == 0 {
        // A run that settled no chunk is started over, output and all.
        return if options.retry_failed {
            Start::Refuse(Refusal::NothingToRetry)
        } else {
            Start::Fresh(Fresh::NoRecords)
        };
    }
    let kept = recovered.output_len;
    let output_len = match std::fs::metadata(output) {
        Ok(meta) if meta.is_file() => Some(meta.len()),
        // A device or a pipe has no length to check or cut.
        Ok(_) => None,
        // Only failed chunks so far: the run makes the output anew.
        Err(e) if e.kind() == io::ErrorKind::NotFound && kept == 0 => Some(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Start::Refuse(Refusal::OutputMissing { kept });
        }
        Err(e) => {
            return Start::Refuse(Refusal::Unreadable(format!(
                "cannot read {}: {e}",
                output.display()
            )));
        }
    };
    if let Some(len) = output_len
        && len < kept
    {
        return Start::Refuse(Refusal::OutputShorter { len, kept });
    }
    if options.retry_failed && recovered.failed.is_clear() {
        return Start::Refuse(Refusal::NoFailures);
    }
    Start::Resume(Resume {
        recovered,
        output_len,
        retry_failed: options.retry_failed,
    })
}

/// Where the failed file of `job` is.
pub fn failed_file(job: &Job) -> std::path::PathBuf {
    job.state_dir.join(FAILED_FILE)
}

fn output_path(job: &Job) -> String {
    match &job.output.path {
        OutputPath::File(path) => path.display().to_string(),
        OutputPath::Stdout => "stdout".to_owned(),
    }
}

/// An error and its causes on one line, as `{:#}` prints an anyhow chain.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job read from a real job file in its own folder, with `extra` TOML
    /// appended.
    fn job(extra: &str) -> (tempfile::TempDir, Job) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("squares.toml");
        std::fs::write(
            &path,
            format!(
                "[source]\nrange = {{ start = 0, end = 1000 }}\nchunk = 100\n\n\
                 [worker]\ncommand = [\"/bin/sh\"]\n{extra}\n"
            ),
        )
        .unwrap();
        (dir, crate::config::load(&path, None).unwrap())
    }

    fn probe(job: &Job, options: Options) -> Assessment {
        assess(job, options, Lock::Probe)
    }

    #[test]
    fn another_supervisor_holding_the_job_is_named_and_a_holder_is_not_itself() {
        let (_dir, job) = job("");
        assert_eq!(probe(&job, Options::default()).holder, None);
        let lock = journal::lock_state(&job.state_dir).unwrap();
        assert_eq!(
            probe(&job, Options::default()).holder,
            Some(Some(std::process::id()))
        );
        // A run assesses after taking the lock: the holder it would see is itself.
        assert_eq!(assess(&job, Options::default(), Lock::Held).holder, None);
        drop(lock);
    }

    #[test]
    fn nothing_to_retry_and_retrying_to_stdout_are_refused() {
        let (_dir, job) = job("");
        let retry = Options {
            retry_failed: true,
            ..Options::default()
        };
        assert!(matches!(
            probe(&job, retry).start,
            Start::Refuse(Refusal::NothingToRetry)
        ));
        let (_dir, to_stdout) = self::job("[output]\npath = \"-\"");
        assert!(matches!(
            probe(&to_stdout, retry).start,
            Start::Refuse(Refusal::RetryNeedsJournal)
        ));
        assert!(matches!(
            probe(&to_stdout, Options::default()).start,
            Start::Unjournaled
        ));
    }

    #[test]
    fn fresh_starts_over_without_reading_a_damaged_journal() {
        let (_dir, job) = job("");
        std::fs::create_dir_all(&job.state_dir).unwrap();
        std::fs::write(job.state_dir.join(journal::JOURNAL_FILE), b"garbage").unwrap();
        assert!(matches!(
            probe(&job, Options::default()).start,
            Start::Refuse(Refusal::Journal(JournalError::Corrupt { .. }))
        ));
        let fresh = Options {
            fresh: true,
            ..Options::default()
        };
        assert!(matches!(
            probe(&job, fresh).start,
            Start::Fresh(Fresh::Asked)
        ));
        // Assessing wrote nothing.
        assert_eq!(
            std::fs::read(job.state_dir.join(journal::JOURNAL_FILE)).unwrap(),
            b"garbage"
        );
    }
}
