//! The command line: what a user may type, parsed by clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "supervisor",
    version,
    about = "Runs a chunked job on N worker processes, replaces workers that crash or hang, retries their chunks.",
    long_about = "Runs a chunked job on N worker processes, replaces workers that crash or hang, \
                  retries their chunks. Running the same command again after any stop resumes: \
                  finished chunks are not run again.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Worker processes [default: the job file's, else the CPUs available]
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Discard an earlier run's journal, output and failed file, and start over
    #[arg(long, conflicts_with = "retry_failed")]
    pub fresh: bool,

    /// Run only the chunks that failed for good last time
    #[arg(long)]
    pub retry_failed: bool,

    /// The job file
    #[arg(value_name = "JOB.toml", required = true)]
    pub job: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the job file and print the plan (chunks, workers, paths)
    Check {
        /// Worker processes, as for a run
        #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,

        /// The job file
        #[arg(value_name = "JOB.toml")]
        job: PathBuf,
    },
}
