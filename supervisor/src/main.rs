//! The `supervisor` binary: parses the command line, runs the command, and
//! alone decides the exit status.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use supervisor::assess::{self, Lock, Options};
use supervisor::cli::{Cli, Command};
use supervisor::dispatcher::Outcome;
use supervisor::logging::{self, LogFormat};
use supervisor::merge::{self, MergeError, MergeOptions, Merged};
use supervisor::observers::progress::{Progress, ProgressMode};
use supervisor::observers::report;
use supervisor::oneliner::{self, TemporaryState};
use supervisor::run::{Reporting, RunEnd, RunSummary, SetupError, run};
use supervisor::{config, generate, plan, shard, signals, tune, workers};

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

/// How long the end of the log may take to reach stderr before the process
/// exits anyway: a stderr nobody reads never holds the supervisor.
const LOG_FLUSH: Duration = Duration::from_secs(2);

/// Exits with `code` once the log is out, or [`LOG_FLUSH`] has passed.
fn exit_with(code: u8) -> ExitCode {
    logging::flush(LOG_FLUSH);
    ExitCode::from(code)
}

/// Whether the command line, even one clap refuses, asks for
/// `--log-format json`.
fn json_log_asked() -> bool {
    let args: Vec<_> = std::env::args_os().collect();
    args.iter().any(|arg| arg == "--log-format=json")
        || args
            .windows(2)
            .any(|pair| pair[0] == "--log-format" && pair[1] == "json")
}

/// An error for the person who ran the command.
fn error(text: impl std::fmt::Display) {
    logging::error(&text.to_string());
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A bad command line asking for a JSON log is told in JSON too: a
        // collector reading stderr must never meet a line it cannot parse.
        Err(problem) if problem.use_stderr() && json_log_asked() => {
            logging::init_with(LogFormat::Json, &Progress::new(ProgressMode::Never), "info");
            let text = problem.render().to_string();
            logging::error(text.trim().trim_start_matches("error: "));
            return exit_with(exit::BAD_INPUT);
        }
        Err(problem) => problem.exit(),
    };
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
    let (job_args, workers, shard, check_only, trial) = match cli.command {
        Some(Command::Check {
            workers,
            start,
            shard,
            job,
        }) => (*job, workers, shard, true, start),
        Some(Command::Merge { shards, job }) => return merge_shards(&job, MergeOptions { shards }),
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
        None => (cli.run.job, cli.run.workers, cli.run.shard, false, false),
    };
    let options = Options {
        fresh: cli.run.fresh,
        retry_failed: cli.run.retry_failed,
    };
    let loaded = match oneliner::load(&job_args, workers) {
        Ok(loaded) => loaded,
        Err(problem) => {
            error(problem);
            return exit_with(exit::BAD_INPUT);
        }
    };
    if let Some(one_liner) = &loaded.one_liner
        && one_liner.print_job
    {
        return printed(
            std::io::stdout()
                .lock()
                .write_all(one_liner.printed().as_bytes()),
        );
    }
    // `--shard`, else a scheduler's array task; the job's own files otherwise.
    let loaded = match shard::choose(shard, |name| std::env::var(name).ok())
        .and_then(|chosen| loaded.for_shard(chosen))
        .and_then(|loaded| loaded.allows(options).map(|()| loaded))
    {
        Ok(loaded) => loaded,
        Err(problem) => {
            error(problem);
            return exit_with(exit::BAD_INPUT);
        }
    };
    let keeps_state = loaded.keeps_state();
    let mut job = loaded.job;
    if check_only {
        let mut plan = if keeps_state {
            let assessment = assess::assess(&job, Options::default(), Lock::Probe);
            plan::describe(&job, &assessment)
        } else {
            plan::describe_unkept(&job)
        };
        let mut started = true;
        if trial {
            let line = match start_one(&job) {
                Ok(trial) => format!(
                    "start: a worker started (pid {}) and said hello in {} ms\n",
                    trial.pid,
                    trial.hello_after.as_millis()
                ),
                Err(why) => {
                    started = false;
                    format!("start: {why}\n")
                }
            };
            plan.push_str(&line);
        }
        let shown = printed(std::io::stdout().lock().write_all(plan.as_bytes()));
        return if started {
            shown
        } else {
            exit_with(exit::BAD_INPUT)
        };
    }
    // Made only now that nothing can refuse the job: a bad command line
    // writes nothing. Dropped (and removed) on every way out of `main`.
    let temporary = if keeps_state {
        None
    } else {
        match TemporaryState::make(&mut job) {
            Ok(temporary) => Some(temporary),
            Err(problem) => {
                error(format_args!(
                    "cannot make a temporary state folder in {}: {problem}",
                    std::env::temp_dir().display()
                ));
                return exit_with(exit::ABORTED);
            }
        }
    };
    // One thread: workers get the cores, and the thread that forks them lives
    // as long as the supervisor, which the parent-death signal requires.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(problem) => {
            error(format_args!("cannot start the runtime: {problem}"));
            return exit_with(exit::ABORTED);
        }
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
        Ok(RunEnd::Killed { signal }) => return exit_with(exit::signalled(signal)),
        Err(SetupError::Refused(problem)) => {
            error(format_args!("{problem:#}"));
            return exit_with(exit::BAD_INPUT);
        }
        Err(SetupError::Failed(problem)) => {
            error(format_args!("{problem:#}"));
            return exit_with(exit::ABORTED);
        }
    };
    // The failed file is the one thing of an unnamed one-liner's state worth
    // keeping: the summary names it.
    if let Some(temporary) = temporary
        && summary.failed_file.is_some()
    {
        temporary.keep();
    }
    let mut code = exit_code(&summary);
    let report = summary.report(code);
    if let Some(path) = &cli.run.report
        && let Err(problem) = report::write_report(path, &report)
    {
        error(format_args!(
            "cannot write the report {}: {problem}",
            path.display()
        ));
        code = code.max(exit::ABORTED);
    }
    tell(&summary, &report, cli.run.log_format, keeps_state);
    exit_with(code)
}

/// `check --start`: one worker started and stopped, on a runtime of its own.
fn start_one(job: &config::Job) -> Result<workers::Trial, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(workers::try_start(job))
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
        Err(problem) => {
            error(problem);
            return exit_with(exit::BAD_INPUT);
        }
    };
    if job.source.is_stream() {
        error(format!(
            "{}: `supervisor tune` runs samples of the job's input again and again, and a \
             `stdin` source can be read only once: save a sample of the input to a file and \
             tune a `file` source over it",
            path.display()
        ));
        return exit_with(exit::BAD_INPUT);
    }
    if let Some(plot) = plot
        && !plot
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg") || e.eq_ignore_ascii_case("png"))
    {
        error(format!(
            "--plot {}: the plot is drawn as .svg or .png, by the file's extension",
            plot.display()
        ));
        return exit_with(exit::BAD_INPUT);
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
        Err(problem) => {
            error(format!("cannot start the runtime: {problem}"));
            return exit_with(exit::ABORTED);
        }
    };
    match runtime.block_on(tune::tune(&job, &options, plot)) {
        Ok(_) => printed(Ok(())),
        Err(problem) => {
            error(format!("{problem:#}"));
            exit_with(exit::ABORTED)
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
fn tell(summary: &RunSummary, report: &report::Report, format: LogFormat, resumable: bool) {
    let mut lines: Vec<String> = report::summary(report).lines().map(str::to_owned).collect();
    if let Some(failed) = &summary.failed_file {
        lines.push(format!("failed chunks are listed in {}", failed.display()));
    }
    match &summary.outcome {
        Outcome::Aborted { reason } => lines.push(format!("error: aborted: {reason}")),
        Outcome::Drained { .. } if resumable => lines.push(format!(
            "stopped after a drain ({} chunks cancelled); run the same command again to resume",
            summary.counts.cancelled
        )),
        Outcome::Drained { .. } => lines.push(format!(
            "stopped after a drain ({} chunks cancelled); a one-liner without --name keeps no \
             journal, so running it again starts over: give it --name NAME to resume",
            summary.counts.cancelled
        )),
        Outcome::Finished { .. } => {}
    }
    if summary.failed_before > 0 {
        let chunks = if summary.failed_before == 1 {
            "chunk"
        } else {
            "chunks"
        };
        lines.push(format!(
            "{} {chunks} failed for good in an earlier run; run with --retry-failed to try them again",
            summary.failed_before
        ));
    }
    let dropped = logging::dropped();
    if dropped > 0 {
        lines.push(format!(
            "{dropped} log lines were dropped: stderr was not read as fast as they came"
        ));
    }
    for line in lines {
        match format {
            LogFormat::Text => logging::print(&line),
            LogFormat::Json => tracing::info!(target: "summary", "{line}"),
        }
    }
}

/// `supervisor merge`: 0 when every chunk is in the merged output, 1 when
/// some failed for good in their shards, 2 when the shards do not add up to
/// the job (nothing written), 3 when the merged files cannot be written.
fn merge_shards(job_path: &std::path::Path, options: MergeOptions) -> ExitCode {
    let job = match config::load(job_path, None) {
        Ok(job) => job,
        Err(problem) => {
            error(problem);
            return exit_with(exit::BAD_INPUT);
        }
    };
    match merge::merge(&job, options) {
        Ok(merged) => {
            for line in merge_summary(&job.name, &merged).lines() {
                logging::notice(line);
            }
            exit_with(if merged.failed > 0 {
                exit::SOME_FAILED
            } else {
                exit::OK
            })
        }
        Err(MergeError::Refused(lines)) => {
            for line in lines {
                error(line);
            }
            logging::notice("nothing was written");
            exit_with(exit::BAD_INPUT)
        }
        Err(failure @ MergeError::Failed(_)) => {
            error(failure);
            exit_with(exit::ABORTED)
        }
    }
}

fn merge_summary(name: &str, merged: &Merged) -> String {
    let size = |bytes: u64| bytesize::ByteSize(bytes).display().si().to_string();
    let rate = |seconds: f64| {
        if seconds > 0.0 {
            format!("{}/s", size((merged.bytes as f64 / seconds) as u64))
        } else {
            "at once".to_owned()
        }
    };
    if merged.shards == 1 {
        return format!(
            "{name}: the job ran whole (shard 0 of 1), nothing to merge: {} of {} chunks done, \
             {} failed; output: {}\n",
            merged.done,
            merged.chunks,
            merged.failed,
            merged.output.display()
        );
    }
    let seconds = merged.elapsed.as_secs_f64();
    let copied = merged.copied.as_secs_f64();
    let how = if merged.in_kernel {
        "in the kernel"
    } else {
        "through a buffer"
    };
    let mut text = format!(
        "{name}: merged {} shards: {} of {} chunks done, {} failed; {} in {seconds:.2}s ({}), \
         copied {how} in {copied:.2}s ({}), the rest syncing to disk; output: {}\n",
        merged.shards,
        merged.done,
        merged.chunks,
        merged.failed,
        size(merged.bytes),
        rate(seconds),
        rate(copied),
        merged.output.display()
    );
    if let Some(failed) = &merged.failed_file {
        text.push_str(&format!(
            "failed chunks are listed in {}\n",
            failed.display()
        ));
    }
    text
}

/// What printing to stdout came to. A reader that went away (`supervisor
/// man | head -1`) is no failure: the output was wanted no further.
fn printed(result: std::io::Result<()>) -> ExitCode {
    match result.and_then(|()| std::io::stdout().flush()) {
        Ok(()) => exit_with(exit::OK),
        Err(problem) if problem.kind() == std::io::ErrorKind::BrokenPipe => exit_with(exit::OK),
        Err(problem) => {
            error(problem);
            exit_with(exit::ABORTED)
        }
    }
}
