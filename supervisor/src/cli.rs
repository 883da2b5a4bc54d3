//! The command line: what a user may type, parsed by clap.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;
use crate::observers::progress::ProgressMode;

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

    /// A progress bar on stderr: auto (when it is a terminal), always or never
    #[arg(long, value_name = "WHEN", default_value = "auto")]
    pub progress: ProgressMode,

    /// Write the run report (JSON) to FILE at the end
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Serve Prometheus metrics while running, e.g. 127.0.0.1:9464
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Log lines as text or as JSON objects (filter with RUST_LOG)
    #[arg(long, value_name = "F", default_value = "text")]
    pub log_format: LogFormat,

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
    /// Run a bounded sample of the job with 1 worker, then more workers and
    /// chunk sizes one at a time; print the table and the knee, and recommend
    /// `workers` and `chunk`. The job's output and journal are not touched
    Tune {
        /// How long all the trials take together, e.g. 30s or 2m
        #[arg(long = "for", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
        budget: std::time::Duration,

        /// The most workers tried [default: twice the CPUs available]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
        max_workers: Option<u16>,

        /// Draw throughput against workers and chunk size to FILE (.svg or .png)
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,

        /// The job file
        #[arg(value_name = "JOB.toml")]
        job: PathBuf,
    },
    /// Print shell completions
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e}; write e.g. 30s or 2m")),
    }
}
