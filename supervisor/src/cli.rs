//! The command line: what a user may type, parsed by clap.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    override_usage = "supervisor [OPTIONS] JOB.toml\n       \
                      supervisor [OPTIONS] --range START..END|--file PATH|--lines PATH|--pipe \
                      [ONE-LINER OPTIONS] -- COMMAND [ARG]...\n       \
                      supervisor <COMMAND>",
    after_help = "A one-liner names the job with flags instead of a job file and runs exactly \
                  the job its job file would (--print-job prints that file). Its COMMAND runs \
                  once per chunk, as argv with no shell, with placeholders such as {item}, \
                  {items}, {start}, {end}, {index}.",
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
    #[arg(short, long, visible_short_alias = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
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

    #[command(flatten)]
    pub job: JobArgs,
}

/// The job: a job file, or a one-liner's flags and command.
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// The job file
    #[arg(value_name = "JOB.toml", required_unless_present_any = SOURCES)]
    pub job_file: Option<PathBuf>,

    /// Words after the job file: a one-liner's command typed without its `--`,
    /// caught to say so.
    #[arg(hide = true, value_name = "WORD")]
    pub stray: Vec<String>,

    #[command(flatten)]
    pub one_liner: OneLinerArgs,
}

/// The flags that name a one-liner's source; one of them makes a one-liner.
pub const SOURCES: [&str; 4] = ["range", "file", "lines", "pipe"];

/// A job named on the command line alone: the flags of a one-liner. Each
/// stands for a key of the job file (see [`crate::oneliner`]).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "One-liner (instead of JOB.toml)")]
pub struct OneLinerArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Records end just after TEXT (--file, --pipe) [default: \n]; \n, \t, \r, \0
    /// and \\ stand for what they mean in TOML
    #[arg(long, value_name = "TEXT")]
    pub delimiter: Option<String>,

    /// Items per chunk for --range and --lines, bytes ("64MiB") for --file and
    /// --pipe, or auto: sized as the run goes, from measured chunk times
    /// [default: as a job file's; 1 with {item}]
    #[arg(long, value_name = "N|SIZE|auto")]
    pub chunk: Option<String>,

    /// With --chunk auto: how long a chunk should take on a worker, e.g. 1s
    /// [default: 250ms]
    #[arg(long, value_name = "DURATION")]
    pub target: Option<String>,

    /// The chunk's bytes on the command's stdin, or /dev/null [default: chunk
    /// for --file and --pipe, none for --range and --lines]
    #[arg(long, value_name = "MODE")]
    pub stdin: Option<StdinMode>,

    /// Exit statuses of the command that count as success, e.g. 0,1 for grep
    /// [default: 0]
    #[arg(long, value_name = "STATUS,...", value_delimiter = ',', num_args = 1)]
    pub success_exit: Vec<i64>,

    /// Time an attempt may take before it is killed and retried, e.g. 90s
    /// [default: 1h]
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// Attempts after the first before a chunk fails for good [default: 2]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub retries: Option<i64>,

    /// Stop the run (exit 3) once more than N chunks, or more than a share of
    /// those finished ("5%"), failed for good [default: never]
    #[arg(long, value_name = "N|SHARE%")]
    pub max_failed: Option<String>,

    /// Where the output goes; - for stdout [default: -]
    #[arg(long, value_name = "PATH")]
    pub output: Option<String>,

    /// raw: the commands' output, concatenated; jsonl: a record per chunk
    /// [default: raw]
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,

    /// index: in chunk order, whatever the workers (parallel -k); completion:
    /// as chunks finish [default: index]
    #[arg(long, value_name = "ORDER")]
    pub order: Option<Order>,

    /// Names the job: its state folder is then .supervisor/NAME beside the
    /// output, and running the same one-liner again resumes (with --output
    /// FILE). Without it the state lives in a temporary folder, removed at
    /// the end
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Print the job file this one-liner stands for, and exit
    #[arg(long)]
    pub print_job: bool,

    /// The command run once per chunk, after `--`: argv, never a shell
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// A one-liner's source: at most one.
#[derive(Debug, Clone, Default, Args)]
#[group(id = "source", multiple = false)]
pub struct SourceArgs {
    /// The integers START to END, END excluded (START..END)
    #[arg(long, value_name = "START..END", value_parser = range)]
    pub range: Option<RangeArg>,

    /// A file cut into byte ranges just after a delimiter, each on the
    /// command's stdin (parallel --pipepart)
    #[arg(long, value_name = "PATH")]
    pub file: Option<String>,

    /// A file of one item per line, for {item} (parallel's {}) or {items}
    #[arg(long, value_name = "PATH")]
    pub lines: Option<String>,

    /// The supervisor's stdin, cut into blocks just after a delimiter, each on
    /// the command's stdin (parallel --pipe)
    #[arg(long)]
    pub pipe: bool,
}

impl SourceArgs {
    /// Whether a source flag was given: the command line is a one-liner.
    pub fn given(&self) -> bool {
        self.range.is_some() || self.file.is_some() || self.lines.is_some() || self.pipe
    }
}

/// `START..END`, END excluded, as `[source] range` has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeArg {
    pub start: u64,
    pub end: u64,
}

impl std::fmt::Display for RangeArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// `START..END`, each a whole number (`_` between digits allowed, as in TOML).
fn range(text: &str) -> Result<RangeArg, String> {
    let number = |part: &str| -> Option<u64> {
        let digits = part.trim().replace('_', "");
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    };
    let wrong = || {
        format!(
            "expected START..END, two whole numbers from 0 with END excluded, as in 0..1000; \
             got {text:?}"
        )
    };
    let (start, end) = text.split_once("..").ok_or_else(wrong)?;
    Ok(RangeArg {
        start: number(start).ok_or_else(wrong)?,
        end: number(end).ok_or_else(wrong)?,
    })
}

/// `[worker] stdin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StdinMode {
    /// The chunk's bytes
    Chunk,
    /// Nothing: /dev/null
    None,
}

/// `[output] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The commands' output bytes, concatenated
    Raw,
    /// One JSON record per chunk
    Jsonl,
}

/// `[output] order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Order {
    /// In chunk order, whatever the workers
    Index,
    /// As chunks finish
    Completion,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the job file (or one-liner) and print the plan (chunks, workers, paths)
    #[command(override_usage = "supervisor check [OPTIONS] JOB.toml\n       \
                                supervisor check [OPTIONS] --range START..END|--file PATH|\
                                --lines PATH|--pipe [ONE-LINER OPTIONS] -- COMMAND [ARG]...")]
    Check {
        /// Worker processes, as for a run
        #[arg(short, long, visible_short_alias = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,

        /// Also start one worker, greet it and stop it, to see that it can
        /// start (exit 2, with what it said, when it cannot)
        #[arg(long)]
        start: bool,

        /// The shard to plan, as for a run
        #[arg(long, value_name = "I/N", allow_hyphen_values = true)]
        shard: Option<Shard>,

        /// Boxed: the one-liner's flags are many, the other commands' few.
        #[command(flatten)]
        job: Box<JobArgs>,
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
    fn a_range_is_start_dot_dot_end() {
        assert_eq!(
            range("0..1000"),
            Ok(RangeArg {
                start: 0,
                end: 1000
            })
        );
        assert_eq!(
            range("1_000..10_000_000"),
            Ok(RangeArg {
                start: 1000,
                end: 10_000_000
            })
        );
        // Reversed and empty ranges are the job file's to refuse, in its words.
        assert_eq!(range("5..3"), Ok(RangeArg { start: 5, end: 3 }));
        for bad in [
            "", "10", "..10", "0..", "-1..5", "0...5", "a..b", "0..=5", "0..1e3",
        ] {
            let error = range(bad).unwrap_err();
            assert!(error.starts_with("expected START..END"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_command_line_parses_as_declared() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn a_one_liner_takes_its_command_after_the_double_dash() {
        let cli = Cli::try_parse_from([
            "supervisor",
            "-j",
            "3",
            "--lines",
            "in.txt",
            "--name",
            "n",
            "--",
            "printf",
            "%s\n",
            "{item}",
            "--name",
        ])
        .unwrap();
        assert_eq!(cli.run.workers, Some(3));
        let job = &cli.run.job;
        assert_eq!(job.job_file, None);
        assert_eq!(job.one_liner.source.lines.as_deref(), Some("in.txt"));
        assert_eq!(job.one_liner.name.as_deref(), Some("n"));
        assert_eq!(
            job.one_liner.command,
            ["printf", "%s\n", "{item}", "--name"]
        );
        // Two sources are one too many.
        let two = Cli::try_parse_from(["supervisor", "--pipe", "--lines", "x", "--", "cat"]);
        assert!(two.is_err());
        // Neither a job file nor a source.
        assert!(Cli::try_parse_from(["supervisor", "--chunk", "3"]).is_err());
        let check =
            Cli::try_parse_from(["supervisor", "check", "--range", "0..9", "--", "true"]).unwrap();
        assert!(matches!(check.command, Some(Command::Check { .. })));
    }

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
