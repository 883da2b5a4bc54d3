//! The validated job: what the rest of the supervisor runs from.

use std::path::PathBuf;
use std::time::Duration;

/// A validated job: everything the supervisor needs, with paths made absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job file's path as the user gave it.
    pub file: PathBuf,
    /// The job file's folder, absolute and canonical: relative paths resolve against it.
    pub dir: PathBuf,
    pub name: String,
    pub source: Source,
    /// Items per chunk. When the file sets none, a range is cut into about
    /// 1024 chunks: `max(1, ceil(len / 1024))`.
    pub chunk: u64,
    pub worker: WorkerSpec,
    pub supervisor: SupervisorSpec,
    pub output: OutputSpec,
    /// Journal and failed list. Default: `.supervisor/{name}` beside the output
    /// file, or in the job's folder when the output is stdout.
    pub state_dir: PathBuf,
}

impl Job {
    /// How many chunks the source is cut into; chunk `k` covers
    /// `[start + k·chunk, min(start + (k+1)·chunk, end))`.
    pub fn chunk_count(&self) -> u64 {
        match self.source {
            Source::Range { start, end } => (end - start).div_ceil(self.chunk),
        }
    }
}

/// Where the items come from. Always non-empty (`start < end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Range { start: u64, end: u64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    /// The resolved absolute path of `command[0]`.
    pub program: PathBuf,
    /// `command[1..]`.
    pub args: Vec<String>,
    /// Extra environment for the worker, sorted by name.
    pub env: Vec<(String, String)>,
    /// The `[worker] params` table as JSON text; `{}` when absent. TOML
    /// datetimes become strings.
    pub params_json: String,
    /// Per attempt; default 1 hour. Always `Some` from [`load`]; `None` means
    /// no limit for callers that build a spec by hand.
    pub timeout: Option<Duration>,
    /// How long a new worker has to say hello; default 30 s.
    pub start_timeout: Duration,
    /// Attempts after the first before a chunk fails for good; default 2.
    pub retries: u32,
    /// Replace a worker once it has run this many chunks (a fresh process
    /// sheds whatever a long-lived one leaks); 0, the default, never does.
    pub max_chunks: u64,
    /// Per worker, in bytes, at least 1 MiB; `None` (the default) sets no
    /// limit. Enforced as the worker's address-space limit (`RLIMIT_AS`),
    /// which counts every mapping, reserved thread stacks included, not only
    /// resident memory: a worker that passes it fails to allocate (a Rust
    /// worker aborts) and its chunk is retried like any crash.
    pub memory_limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorSpec {
    /// The command line's `--workers`, else the file's, else the CPUs available.
    pub workers: usize,
    pub restart: RestartPolicy,
    /// On the first SIGTERM or SIGINT, how long chunks in flight get to
    /// finish before they are cancelled; always above zero, default 30 s.
    pub drain_timeout: Duration,
}

/// More than `max` worker crashes within `within` aborts the run; default 10 in 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub max: u32,
    pub within: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// Default: `{name}.jsonl` in the job's folder.
    pub path: OutputPath,
    pub format: OutputFormat,
    pub order: Order,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputPath {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Index,
    Completion,
}
