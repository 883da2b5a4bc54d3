//! The `supervisor` binary: parses the command line, runs, and owns the exit codes.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use supervisor::cli::{Cli, Command};
use supervisor::dispatcher::Outcome;
use supervisor::logging::LogFormat;
use supervisor::progress::{Progress, ProgressMode};
use supervisor::resume::{Options, SetupError};
use supervisor::run::{Reporting, RunSummary, run};
use supervisor::{config, generate, logging, plan, report};

/// Exit codes of the contract that are not a run's own outcome.
mod exit {
    pub const OK: u8 = 0;
    pub const BAD_INPUT: u8 = 2;
    pub const ABORTED: u8 = 3;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let progress = match cli.command {
        None => Progress::new(cli.run.progress),
        Some(_) => Progress::new(ProgressMode::Never),
    };
    logging::init(cli.run.log_format, &progress);
    let (job_path, workers, check_only) = match cli.command {
        Some(Command::Check { workers, job }) => (job, workers, true),
        Some(Command::Completions { shell }) => {
            return printed(generate::completions(shell, &mut std::io::stdout().lock()));
        }
        Some(Command::Man) => return printed(generate::man_page(&mut std::io::stdout().lock())),
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
    let options = Options {
        fresh: cli.run.fresh,
        retry_failed: cli.run.retry_failed,
    };
    let reporting = Reporting {
        progress,
        metrics_addr: cli.run.metrics_addr,
    };
    match runtime.block_on(run(&job, options, reporting)) {
        Ok(summary) => {
            let mut code = summary.exit_code;
            if let Some(path) = &cli.run.report
                && let Err(error) = report::write_report(path, &summary.report)
            {
                eprintln!("error: cannot write the report {}: {error}", path.display());
                code = code.max(exit::ABORTED);
            }
            tell(&summary, cli.run.log_format);
            ExitCode::from(code)
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

/// The end of a run, for the person who started it: plain lines, or with
/// `--log-format json` log events like every other line on stderr.
fn tell(summary: &RunSummary, format: LogFormat) {
    let mut lines: Vec<String> = report::summary(&summary.report)
        .lines()
        .map(str::to_owned)
        .collect();
    if let Some(failed) = &summary.failed_file {
        lines.push(format!("failed chunks are listed in {}", failed.display()));
    }
    match &summary.outcome {
        Outcome::Aborted { reason } => lines.push(format!("error: aborted: {reason}")),
        Outcome::Drained { .. } => lines.push(format!(
            "stopped after a drain ({} chunks cancelled); run the same command again to resume",
            summary.counts.cancelled
        )),
        Outcome::Finished { .. } => {}
    }
    for line in lines {
        match format {
            LogFormat::Text => eprintln!("{line}"),
            LogFormat::Json => tracing::info!(target: "summary", "{line}"),
        }
    }
}

fn printed(result: std::io::Result<()>) -> ExitCode {
    match result.and_then(|()| std::io::stdout().flush()) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(exit::ABORTED)
        }
    }
}
