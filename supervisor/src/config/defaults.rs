//! The job file's defaults: what a run uses for a key the file leaves out.
//! One home, read by validation and by the dispatcher's settings alike.

use std::time::Duration;

use super::job::RestartPolicy;

/// The most chunks a job may have: resume keeps two bits per chunk in memory
/// (done, failed), 256 MiB at this count. With `chunk = "auto"` the smallest
/// chunk is what keeps the count within it.
pub const MAX_CHUNKS: u64 = 1 << 30;
/// Without `chunk`, a range or lines source is cut into about this many chunks.
pub const CHUNKS: u64 = 1024;
/// Without `chunk`, a file is cut into about this many chunks, of sizes
/// within these bounds: large enough that a per-chunk command's start costs
/// little, small enough that its output fits in one frame.
pub const FILE_CHUNKS: u64 = 256;
pub const MIN_FILE_CHUNK: u64 = 64 << 10;
pub const MAX_FILE_CHUNK: u64 = 16 << 20;
/// With `chunk = "auto"` and no `target`, a chunk should take about this long
/// on a worker: long enough that dispatch costs nothing, short enough that a
/// crash or the tail of the run costs little.
pub const AUTO_TARGET: Duration = Duration::from_millis(250);
/// With `chunk = "auto"`, a file source's chunks grow no larger than this
/// either, so that a chunk's output still fits in one frame.
pub const MAX_AUTO_FILE_CHUNK: u64 = MAX_FILE_CHUNK;
/// Without `[worker] timeout`, an attempt may run this long.
pub const TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Without `[worker] start_timeout`, a new worker has this long to say hello.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
pub const RETRIES: u32 = 2;
/// More crashes than `max` within `within` abort the run.
pub const RESTART: RestartPolicy = RestartPolicy {
    max: 10,
    within: Duration::from_secs(60),
};
/// Without `[supervisor] drain_timeout`, chunks in flight get this long to
/// finish after the first SIGTERM or SIGINT.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
