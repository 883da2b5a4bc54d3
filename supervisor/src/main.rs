//! The `supervisor` binary: parses the command line, runs, and owns the exit codes.

use std::process::ExitCode;

use clap::Parser;
use supervisor::cli::{Cli, Command};
use supervisor::dispatcher::Outcome;
use supervisor::resume::{Options, SetupError};
use supervisor::run::{RunSummary, output_name, run};
use supervisor::{config, plan};

/// Exit codes of the contract.
mod exit {
    pub const OK: u8 = 0;
    pub const CHUNKS_FAILED: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const ABORTED: u8 = 3;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let options = Options {
        fresh: cli.run.fresh,
        retry_failed: cli.run.retry_failed,
    };
    let (job_path, workers, check_only) = match cli.command {
        Some(Command::Check { workers, job }) => (job, workers, true),
        None => (
            cli.run.job.expect("clap requires the job file"),
            cli.run.workers,
            false,
        ),
    };
    let job = match config::load(&job_path, workers.map(usize::from)) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    if check_only {
        print!("{}", plan::describe(&job));
        return ExitCode::from(exit::OK);
    }
    // One thread: workers get the cores, and the thread that forks them lives
    // as long as the supervisor, which the parent-death signal requires.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(exit::ABORTED);
        }
    };
    match runtime.block_on(run(&job, options)) {
        Ok(summary) => {
            report(&job, &summary);
            ExitCode::from(match summary.outcome {
                Outcome::Finished { failed } if failed + summary.failed_before == 0 => exit::OK,
                Outcome::Finished { .. } => exit::CHUNKS_FAILED,
                // 130 for SIGINT, 143 for SIGTERM, as a shell reports them.
                Outcome::Drained { signal } => (128 + signal) as u8,
                Outcome::Aborted { .. } => exit::ABORTED,
            })
        }
        Err(SetupError::Refused(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::BAD_INPUT)
        }
        Err(SetupError::Failed(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::ABORTED)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn report(job: &supervisor::config::Job, summary: &RunSummary) {
    let counts = summary.counts;
    let total = counts
        .total
        .map_or_else(|| "?".to_owned(), |t| t.to_string());
    let earlier = if summary.done_before > 0 {
        format!(" ({} by an earlier run)", summary.done_before)
    } else {
        String::new()
    };
    eprintln!(
        "{}: {} of {total} chunks done{earlier}, {} failed, {} retried, {} worker crashes, in {:.2}s; output: {}",
        job.name,
        counts.done + summary.done_before,
        counts.failed + summary.failed_before,
        counts.retried,
        counts.crashes,
        summary.elapsed.as_secs_f64(),
        output_name(&job.output.path),
    );
    if let Some(failed) = &summary.failed_file {
        eprintln!("failed chunks are listed in {}", failed.display());
    }
    match &summary.outcome {
        Outcome::Aborted { reason } => eprintln!("error: aborted: {reason}"),
        Outcome::Drained { .. } => eprintln!(
            "stopped after a drain ({} chunks cancelled); run the same command again to resume",
            counts.cancelled
        ),
        Outcome::Finished { .. } => {}
    }
}
