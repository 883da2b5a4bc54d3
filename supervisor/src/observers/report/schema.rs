//! The run report's JSON schema (`docs/report.md` describes every field).

use std::collections::BTreeMap;

use serde::Serialize;

/// Bumped when a field changes meaning or goes away; new fields do not bump it.
pub const REPORT_VERSION: u32 = 1;

/// The run report; `docs/report.md` describes every field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub report_version: u32,
    pub job: String,
    /// The shard this run was, when the job runs as shards.
    pub shard: Option<ShardReport>,
    /// "finished", "finished_with_failures", "drained" or "aborted".
    pub outcome: String,
    pub exit_reason: String,
    pub exit_code: i32,
    pub started_at: String,
    pub finished_at: String,
    pub wall_seconds: f64,
    pub chunks: ChunkCounts,
    pub throughput_chunks_per_s: f64,
    pub latency_seconds: Latency,
    pub queue_wait_seconds: QueueWait,
    pub worker_crashes: u64,
    pub cpu_seconds: CpuSeconds,
    pub supervisor_peak_rss_bytes: Option<u64>,
    pub workers: Vec<WorkerReport>,
    pub failed: Vec<FailedChunk>,
    pub failed_truncated: bool,
    pub output: String,
    pub failed_file: Option<String>,
    /// Log lines dropped because stderr was not read as fast as they came.
    pub log_lines_dropped: u64,
}

/// Which shard a run was and where that came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardReport {
    pub index: u64,
    pub count: u64,
    /// `command-line`, `kubernetes`, `slurm`, `aws-batch` or `google-batch`.
    pub from: String,
    /// The shard's block of chunk indices, `[first_chunk, end_chunk)`.
    pub first_chunk: u64,
    pub end_chunk: u64,
}

impl ShardReport {
    /// The report of `shard` of a job of `chunks` chunks.
    pub fn new(shard: &crate::shard::JobShard, chunks: u64) -> Self {
        let block = shard.shard.block(chunks);
        Self {
            index: shard.shard.index,
            count: shard.shard.count,
            from: shard.from.label().to_owned(),
            first_chunk: block.start,
            end_chunk: block.end,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkCounts {
    pub total: Option<u64>,
    /// Including those an earlier run finished, so it matches the output file.
    pub done: u64,
    /// Including those an earlier run failed that this one did not retry.
    pub failed: u64,
    pub retried: u64,
    pub cancelled: u64,
    pub skipped: u64,
    pub done_before: u64,
    pub failed_before: u64,
}

/// `None` (null) when no chunk finished in this run: there is nothing to measure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueWait {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuSeconds {
    pub supervisor: Option<f64>,
    pub workers: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerReport {
    pub slot: usize,
    pub chunks: u64,
    pub failed_attempts: u64,
    pub restarts: u64,
    pub processes: u64,
    pub exit_causes: BTreeMap<String, u64>,
    pub peak_rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedChunk {
    pub index: u64,
    pub start: u64,
    pub end: u64,
    pub attempts: u32,
    /// The last attempt's error; the failed file has every attempt's.
    pub error: String,
}
