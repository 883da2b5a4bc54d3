//! The command line: what a user may type, parsed by clap.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;
use crate::observers::progress::ProgressMode;
use crate::shard::Shard;

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

    /// Run shard I (counted from 0) of N: the I-th of N contiguous blocks of the job's
    /// chunks, with an output and state folder of its own [default: from a Slurm array
    /// task, an AWS Batch array job or a Google Cloud Batch task; 0/1 runs the whole job]
    #[arg(long, value_name = "I/N", allow_hyphen_values = true)]
    pub shard: Option<Shard>,

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

    /// Serve Prometheus metrics while running: HOST:PORT (127.0.0.1:9464,
    /// localhost:9464) or :PORT for every interface
    #[arg(long, value_name = "ADDR", value_parser = metrics_addr)]
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

        /// Also start one worker, greet it and stop it, to see that it can
        /// start (exit 2, with what it said, when it cannot)
        #[arg(long)]
        start: bool,

        /// The shard to plan, as for a run
        #[arg(long, value_name = "I/N", allow_hyphen_values = true)]
        shard: Option<Shard>,

        /// The job file
        #[arg(value_name = "JOB.toml")]
        job: PathBuf,
    },
    /// Combine the outputs of the job's shards into the job's own output, proving every
    /// chunk present exactly once
    Merge {
        /// Merge the shards of this count [default: the one count the shards' names show]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        shards: Option<u64>,

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

/// `HOST:PORT`, resolved to its first address, or `:PORT` for every
/// interface, as exporters take it.
fn metrics_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{port:?} is not a port number"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    text.to_socket_addrs()
        .map_err(|e| format!("expected HOST:PORT or :PORT: {e}"))?
        .next()
        .ok_or_else(|| format!("{text} names no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addresses_read_as_exporters_read_them() {
        assert_eq!(
            metrics_addr("127.0.0.1:9464").unwrap().to_string(),
            "127.0.0.1:9464"
        );
        assert_eq!(metrics_addr(":9464").unwrap().to_string(), "0.0.0.0:9464");
        assert!(metrics_addr("localhost:9464").unwrap().ip().is_loopback());
        assert!(metrics_addr("9464").is_err());
        assert!(metrics_addr(":port").is_err());
    }
}
