//! The `supervisor` binary: parses the command line, runs the command, and
//! alone decides the exit status.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use supervisor::assess::{self, Lock, Options};
use supervisor::cli::{Cli, Command};
use supervisor::dispatcher::Outcome;
use supervisor::logging::{self, LogFormat};
use supervisor::observers::progress::{Progress, ProgressMode};
use supervisor::observers::report;
use supervisor::run::{Reporting, RunEnd, RunSummary, SetupError, run};
use supervisor::{config, generate, plan, signals, tune};

/// The contract's exit statuses.
mod exit {
    /// Every chunk finished.
    pub const OK: u8 = 0;
    /// The run finished, but some chunks failed for good.
    pub const SOME_FAILED: u8 = 1;
    /// A bad command line or job file, or a state that forbids the run:
    /// nothing was started, nothing written.
    pub const BAD_INPUT: u8 = 2;
    /// Aborted: workers crash faster than the restart limit allows, or the
    /// output cannot be written.
    pub const ABORTED: u8 = 3;

    /// Stopped by `signal` after a drain: 130 for SIGINT, 143 for SIGTERM,
    /// as a shell reports them.
    pub fn signalled(signal: i32) -> u8 {
        u8::try_from(128 + signal).unwrap_or(u8::MAX)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let progress = match cli.command {
        None => Progress::new(cli.run.progress),
        Some(_) => Progress::new(ProgressMode::Never),
    };
    let quiet = matches!(cli.command, Some(Command::Tune { .. }));
    logging::init_with(
        cli.run.log_format,
        &progress,
        if quiet { "error" } else { "info" },
    );
    let (job_path, workers, check_only) = match cli.command {
        Some(Command::Check { workers, job }) => (job, workers, true),
        Some(Command::Tune {
            budget,
            max_workers,
            plot,
            job,
        }) => return tune_job(&job, budget, max_workers, plot.as_deref()),
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
        let assessment = assess::assess(&job, Options::default(), Lock::Probe);
        print!("{}", plan::describe(&job, &assessment));
        return printed(Ok(()));
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
    let ended = runtime.block_on(async {
        // Before any worker exists, so that no signal finds its default action.
        let signals = signals::listen()
            .map_err(|e| SetupError::Failed(anyhow::anyhow!("cannot listen for signals: {e}")))?;
        run(&job, options, reporting, signals).await
    });
    let summary = match ended {
        Ok(RunEnd::Ended(summary)) => summary,
        Ok(RunEnd::Killed { signal }) => return ExitCode::from(exit::signalled(signal)),
        Err(SetupError::Refused(error)) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(exit::BAD_INPUT);
        }
        Err(SetupError::Failed(error)) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(exit::ABORTED);
        }
    };
    let mut code = exit_code(&summary);
    let report = summary.report(code);
    if let Some(path) = &cli.run.report
        && let Err(error) = report::write_report(path, &report)
    {
        eprintln!("error: cannot write the report {}: {error}", path.display());
        code = code.max(exit::ABORTED);
    }
    tell(&summary, &report, cli.run.log_format);
    ExitCode::from(code)
}

/// `supervisor tune`: 0 with a recommendation; 2 for a bad job file; 3
/// when a trial could not run.
fn tune_job(
    path: &std::path::Path,
    budget: std::time::Duration,
    max_workers: Option<u16>,
    plot: Option<&std::path::Path>,
) -> ExitCode {
    let job = match config::load(path, None) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    if let Some(plot) = plot
        && !plot
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg") || e.eq_ignore_ascii_case("png"))
    {
        eprintln!(
            "error: --plot {}: the plot is drawn as .svg or .png, by the file's extension",
            plot.display()
        );
        return ExitCode::from(exit::BAD_INPUT);
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let options = tune::Options {
        budget,
        max_workers: max_workers.map_or(2 * cpus, usize::from),
        target: job
            .auto
            .map_or(config::defaults::AUTO_TARGET, |auto| auto.target),
    };
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
    match runtime.block_on(tune::tune(&job, &options, plot)) {
        Ok(_) => printed(Ok(())),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::ABORTED)
        }
    }
}

/// The exit status of a run that got going (the contract's table).
fn exit_code(summary: &RunSummary) -> u8 {
    match summary.outcome {
        Outcome::Finished { failed } if failed + summary.failed_before == 0 => exit::OK,
        Outcome::Finished { .. } => exit::SOME_FAILED,
        Outcome::Drained { signal } => exit::signalled(signal),
        Outcome::Aborted { .. } => exit::ABORTED,
    }
}

/// The end of a run, for the person who started it: plain lines, or with
/// `--log-format json` log events like every other line on stderr.
fn tell(summary: &RunSummary, report: &report::Report, format: LogFormat) {
    let mut lines: Vec<String> = report::summary(report).lines().map(str::to_owned).collect();
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
