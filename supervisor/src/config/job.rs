//! The validated job: what the rest of the supervisor runs from.

use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::shard::JobShard;

/// A validated job: everything the supervisor needs, with paths made absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job file's path as the user gave it.
    pub file: PathBuf,
    /// The job file's folder, absolute and canonical: relative paths resolve against it.
    pub dir: PathBuf,
    pub name: String,
    pub source: Source,
    /// Items per chunk: integers of a range, bytes of a file, lines of a
    /// lines source. When the file sets none, a range or lines source is cut
    /// into about 1024 chunks, a file into about 256 of 64 KiB to 16 MiB.
    /// With `chunk = "auto"` it is the smallest chunk the run may cut, which
    /// bounds how many chunks there can be ([`Job::chunk_count`]).
    pub chunk: u64,
    /// `chunk = "auto"`: chunk sizes are decided as the run goes.
    pub auto: Option<AutoChunk>,
    pub worker: WorkerSpec,
    pub supervisor: SupervisorSpec,
    pub output: OutputSpec,
    /// Journal and failed list. Default: `.supervisor/{name}` beside the output
    /// file, or in the job's folder when the output is stdout.
    pub state_dir: PathBuf,
    /// The shard this run is, when the job runs as shards (`--shard`, or a
    /// scheduler's array task); the output and state folder are then the
    /// shard's own (see [`crate::shard::for_shard`]).
    pub shard: Option<JobShard>,
}

impl Job {
    /// How many chunks the source is cut into; chunk `k` covers
    /// `[start + k·chunk, min(start + (k+1)·chunk, end))`. With
    /// `chunk = "auto"` the most there can be: chunks of the smallest size.
    pub fn chunk_count(&self) -> u64 {
        self.source.chunk_count(self.chunk)
    }

    /// The chunk indices this run covers: all of them, or its shard's block.
    pub fn block(&self) -> Range<u64> {
        let chunks = self.chunk_count();
        match &self.shard {
            Some(shard) => shard.shard.block(chunks),
            None => 0..chunks,
        }
    }

    /// The chunk count when it is fixed before the run: not with `chunk = "auto"`.
    pub fn known_chunk_count(&self) -> Option<u64> {
        self.auto.is_none().then(|| self.chunk_count())
    }

    /// How many chunks this run covers (its shard's, or all), when that is
    /// fixed before the run.
    pub fn known_block_len(&self) -> Option<u64> {
        self.auto.is_none().then(|| {
            let block = self.block();
            block.end - block.start
        })
    }

    /// Why the job cannot run as shards, when it cannot: shard I of N is the
    /// I-th of N blocks of chunk indices, which needs the count before the run.
    pub fn shard_refusal(&self) -> Option<String> {
        self.auto.map(|_| {
            format!(
                "{}: `chunk = \"auto\"` decides the chunk count at run time, and a shard is a \
                 block of chunk indices: set `chunk` to a number to run shards (`supervisor tune` \
                 suggests one)",
                self.file.display()
            )
        })
    }
}

/// `chunk = "auto"`: the run starts with small chunks, measures how long
/// items take on the workers, and sizes chunks to take about `target`,
/// smaller again as the work runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoChunk {
    /// How long a chunk should take on a worker; 250 ms by default.
    pub target: Duration,
}

/// Where the items come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Integers in `[start, end)`; never empty.
    Range { start: u64, end: u64 },
    /// One file cut into byte ranges, each ending just after `delimiter`
    /// (or at the end of the file); an empty file has no chunks.
    File {
        input: InputFile,
        /// Never empty; `\n` by default.
        delimiter: Vec<u8>,
        /// Counted when the job was loaded: no chunk is empty, so a record
        /// longer than a chunk makes fewer, larger chunks.
        chunks: u64,
    },
    /// One file, `chunk` lines per chunk.
    Lines {
        input: InputFile,
        /// Counted when the job was loaded.
        lines: u64,
    },
}

/// The input file of a `file` or `lines` source, as it was when the job was
/// loaded: a resumed run must see the same file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Absolute, and valid UTF-8: workers are handed it as text.
    pub path: PathBuf,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

impl Source {
    /// How many chunks of `chunk` items the source is cut into: integers,
    /// bytes or lines; a file's as counted at load.
    pub fn chunk_count(&self, chunk: u64) -> u64 {
        match self {
            Source::Range { start, end } => (end - start).div_ceil(chunk),
            Source::File { chunks, .. } => *chunks,
            Source::Lines { lines, .. } => lines.div_ceil(chunk),
        }
    }

    /// What the source's chunks are cut from, in the units `chunk` counts:
    /// integers of a range, bytes of a file, lines of a lines source.
    pub fn units(&self) -> u64 {
        match self {
            Source::Range { start, end } => end - start,
            Source::File { input, .. } => input.size,
            Source::Lines { lines, .. } => *lines,
        }
    }

    /// The input file, for the sources that have one.
    pub fn input(&self) -> Option<&InputFile> {
        match self {
            Source::Range { .. } => None,
            Source::File { input, .. } | Source::Lines { input, .. } => Some(input),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    /// The resolved absolute path of `command[0]`; for an `exec` job, the
    /// `exec-worker` that hosts the per-chunk command.
    pub program: PathBuf,
    /// `command[1..]`; for an `exec` job, the host's options, `--`, then the
    /// resolved command and its arguments.
    pub args: Vec<String>,
    /// The keys that decide what a worker computes, as the job file wrote
    /// them (`worker.command` or `worker.exec` and `worker.stdin`, as JSON):
    /// what a resume must match, whatever `program` resolves to today.
    pub written: Vec<(String, String)>,
    /// Workers run in the job file's folder, so relative paths in their
    /// arguments mean what they mean in the job file.
    pub cwd: PathBuf,
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
    /// The circuit breaker: past this many chunks failed for good, dispatch
    /// stops, the run drains and aborts. `None`, the default: never.
    pub max_failed: Option<MaxFailed>,
}

/// How many chunks may fail for good before the run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxFailed {
    /// More than this many.
    Count(u64),
    /// More than this share of the chunks finished so far (done or failed),
    /// in parts per million; judged once enough chunks finished for the
    /// share to say something (one failure in 20 is 5%).
    Share { per_million: u32 },
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

impl OutputPath {
    /// The output as the user would name it: a path, or "stdout".
    pub fn name(&self) -> String {
        match self {
            OutputPath::Stdout => "stdout".to_owned(),
            OutputPath::File(path) => path.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// One JSON record per chunk.
    Jsonl,
    /// The workers' bytes, concatenated.
    Raw,
}

impl OutputFormat {
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Jsonl => "jsonl",
            OutputFormat::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Index,
    Completion,
}
