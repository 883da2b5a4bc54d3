//! The `supervisor` binary: parses the command line, runs, and owns the exit codes.

use std::process::ExitCode;

use clap::Parser;
use supervisor::cli::{Cli, Command};
use supervisor::dispatcher::Outcome;
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
    match runtime.block_on(run(&job)) {
        Ok(summary) => {
            report(&job, &summary);
            ExitCode::from(match summary.outcome {
                Outcome::Finished { failed: 0 } => exit::OK,
                Outcome::Finished { .. } => exit::CHUNKS_FAILED,
                Outcome::Aborted { .. } => exit::ABORTED,
            })
        }
        Err(error) => {
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
    eprintln!(
        "{}: {} of {total} chunks done, {} failed, {} retried, {} worker crashes, in {:.2}s; output: {}",
        job.name,
        counts.done,
        counts.failed,
        counts.retried,
        counts.crashes,
        summary.elapsed.as_secs_f64(),
        output_name(&job.output.path),
    );
    if let Some(failed) = &summary.failed_file {
        eprintln!("failed chunks are listed in {}", failed.display());
    }
    if let Outcome::Aborted { reason } = &summary.outcome {
        eprintln!("error: aborted: {reason}");
    }
}
