//! The command line's job: a job file loaded, or a one-liner's job file made
//! and loaded as that file would be; what a one-liner may not do that a job
//! file may; and the temporary state folder of a one-liner without a name.

use std::path::{Path, PathBuf};

use super::blame::blame;
use super::text::{JobFileText, ORIGIN, job_file};
use crate::assess::Options;
use crate::cli::{JobArgs, OneLinerArgs};
use crate::config::{self, Job, OutputPath};
use crate::shard::{self, JobShard};

/// The job the command line names.
#[derive(Debug)]
pub struct Loaded {
    pub job: Job,
    /// Set when flags named the job rather than a job file.
    pub one_liner: Option<OneLiner>,
}

/// What a one-liner was made of.
#[derive(Debug)]
pub struct OneLiner {
    pub text: JobFileText,
    /// The folder its relative paths resolved against: where it ran.
    pub dir: PathBuf,
    /// `--print-job`: print the job file and run nothing.
    pub print_job: bool,
}

impl OneLiner {
    /// Whether `--name` was given: the job then keeps its state folder, and
    /// running it again resumes, as a job file's does.
    pub fn named(&self) -> bool {
        self.text.named
    }

    /// The job file, as `--print-job` prints it.
    pub fn printed(&self) -> String {
        self.text.printed(&self.dir)
    }
}

/// Loads the job `args` name, with `workers` (`-w`/`-j`) over the job's
/// own; the error is one line for the user, and means exit 2.
pub fn load(args: &JobArgs, workers: Option<u16>) -> Result<Loaded, String> {
    if !args.one_liner.source.given() {
        return load_file(args, workers);
    }
    let dir = std::env::current_dir()
        .and_then(|dir| dir.canonicalize())
        .map_err(|e| format!("cannot tell the current folder, which a one-liner runs in: {e}"))?;
    load_one_liner(args, workers, &dir)
}

/// Loads the one-liner `args` name as if it ran in `dir` (absolute): its
/// relative paths resolve there, and its command runs there.
pub fn load_one_liner(args: &JobArgs, workers: Option<u16>, dir: &Path) -> Result<Loaded, String> {
    let flags = &args.one_liner;
    if let Some(file) = &args.job_file {
        let words: Vec<&str> = std::iter::once(file.to_str().unwrap_or("…"))
            .chain(args.stray.iter().map(String::as_str))
            .collect();
        return Err(format!(
            "`{}`: a one-liner's command goes after `--`, as in `supervisor {} -- {}`",
            words.join(" "),
            source_flag(flags),
            words.join(" ")
        ));
    }
    let text = job_file(flags, workers)?;
    let job = config::load_text(&text.toml, Path::new(ORIGIN), dir, workers.map(usize::from))
        .map_err(|error| blame(&error, &text.typed))?;
    Ok(Loaded {
        job,
        one_liner: Some(OneLiner {
            text,
            dir: dir.to_path_buf(),
            print_job: flags.print_job,
        }),
    })
}

fn load_file(args: &JobArgs, workers: Option<u16>) -> Result<Loaded, String> {
    let flags = &args.one_liner;
    if let Some((flag, key)) = one_liner_flags(flags).first() {
        return Err(format!(
            "{flag} is a one-liner's flag (with --range, --file, --lines or --pipe); a job file \
             sets {key} itself"
        ));
    }
    if !flags.command.is_empty() {
        return Err(format!(
            "`-- {}`: a command after `--` is a one-liner's (with --range, --file, --lines or \
             --pipe); a job file names its command in `[worker] exec`",
            flags.command.join(" ")
        ));
    }
    if let Some(word) = args.stray.first() {
        return Err(format!("unexpected argument `{word}` after the job file"));
    }
    let path = args
        .job_file
        .as_ref()
        .expect("clap asks for a job file when no source flag is given");
    let job = config::load(path, workers.map(usize::from)).map_err(|e| e.to_string())?;
    Ok(Loaded {
        job,
        one_liner: None,
    })
}

/// The source flag given, as typed, for an example command line.
fn source_flag(flags: &OneLinerArgs) -> String {
    let source = &flags.source;
    if let Some(range) = source.range {
        format!("--range {range}")
    } else if let Some(path) = &source.file {
        format!("--file {path}")
    } else if let Some(path) = &source.lines {
        format!("--lines {path}")
    } else {
        "--pipe".to_owned()
    }
}

/// The one-liner flags given besides a source, each with the job-file key
/// that says the same.
fn one_liner_flags(flags: &OneLinerArgs) -> Vec<(&'static str, &'static str)> {
    [
        (
            "--delimiter",
            "`[source] file.delimiter`",
            flags.delimiter.is_some(),
        ),
        ("--chunk", "`[source] chunk`", flags.chunk.is_some()),
        ("--stdin", "`[worker] stdin`", flags.stdin.is_some()),
        (
            "--success-exit",
            "`[worker] success_exit`",
            !flags.success_exit.is_empty(),
        ),
        ("--timeout", "`[worker] timeout`", flags.timeout.is_some()),
        ("--retries", "`[worker] retries`", flags.retries.is_some()),
        (
            "--max-failed",
            "`[supervisor] max_failed`",
            flags.max_failed.is_some(),
        ),
        ("--output", "`[output] path`", flags.output.is_some()),
        ("--format", "`[output] format`", flags.format.is_some()),
        ("--order", "`[output] order`", flags.order.is_some()),
        ("--name", "`[job] name`", flags.name.is_some()),
        ("--print-job", "in the file", flags.print_job),
    ]
    .into_iter()
    .filter(|(_, _, given)| *given)
    .map(|(flag, key, _)| (flag, key))
    .collect()
}

impl Loaded {
    /// Whether a run of this job keeps its state for the next run: a job
    /// file's and a named one-liner's do.
    pub fn keeps_state(&self) -> bool {
        self.one_liner.as_ref().is_none_or(OneLiner::named)
    }

    /// What a one-liner refuses of the run options: `--retry-failed` needs
    /// the state an unnamed one-liner does not keep.
    pub fn allows(&self, options: Options) -> Result<(), String> {
        if options.retry_failed && !self.keeps_state() {
            return Err(
                "--retry-failed needs --name: a one-liner without a name keeps no \
                        state from one run to the next, so nothing failed last time"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// The job as `shard` runs it (see [`shard::for_shard`]). A one-liner
    /// runs as a shard only with a name and an output file: `merge` needs
    /// each shard's journal and output, and a job file (`--print-job`).
    pub fn for_shard(self, chosen: Option<JobShard>) -> Result<Self, String> {
        let Some(chosen) = chosen else {
            return Ok(self);
        };
        if self.one_liner.is_some() {
            let why = if !self.keeps_state() {
                Some("give it --name NAME and --output FILE")
            } else if self.job.output.path == OutputPath::Stdout {
                Some("give it --output FILE")
            } else {
                None
            };
            if let Some(fix) = why {
                return Err(format!(
                    "shard {} (from {}): a one-liner runs as shards only when it keeps each \
                     shard's journal and output for `supervisor merge`: {fix}, and merge with \
                     the job file --print-job prints",
                    chosen.shard,
                    chosen.from.describe()
                ));
            }
        }
        let Loaded { job, one_liner } = self;
        Ok(Loaded {
            job: shard::for_shard(job, chosen)?,
            one_liner,
        })
    }
}

/// The state folder of a one-liner without a name: a new folder in the
/// temporary folder (`$TMPDIR`, else /tmp), so that one-off runs leave
/// nothing in the folder they ran in. Removed when dropped, unless kept.
#[derive(Debug)]
pub struct TemporaryState {
    dir: tempfile::TempDir,
}

impl TemporaryState {
    /// Makes the folder and points `job` at it.
    pub fn make(job: &mut Job) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("supervisor-{}-", job.name))
            .tempdir()?;
        job.state_dir = dir.path().to_path_buf();
        Ok(Self { dir })
    }

    /// Leaves the folder in place: the run's failed file is in it, and the
    /// summary names it.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::super::blame::flag_of;
    use super::*;
    use crate::cli::Cli;

    #[test]
    fn a_job_file_refuses_each_flag_naming_the_key_it_sets_and_errors_in_the_key_name_it_back() {
        let cli = Cli::try_parse_from([
            "supervisor",
            "--pipe",
            "--delimiter",
            ";",
            "--chunk",
            "1",
            "--stdin",
            "none",
            "--success-exit",
            "0",
            "--timeout",
            "1s",
            "--retries",
            "1",
            "--max-failed",
            "1",
            "--output",
            "o",
            "--format",
            "raw",
            "--order",
            "index",
            "--name",
            "n",
            "--print-job",
            "--",
            "cat",
        ])
        .unwrap();
        let given = one_liner_flags(&cli.run.job.one_liner);
        assert_eq!(given.len(), 12);
        for (flag, key) in given {
            let Some(key) = key.strip_prefix("`[").and_then(|k| k.strip_suffix('`')) else {
                assert_eq!(flag, "--print-job");
                continue;
            };
            let (table, rest) = key.split_once("] ").unwrap();
            assert_eq!(flag_of(&format!("{table}.{rest}")), Some(flag), "{key}");
        }
    }
}
