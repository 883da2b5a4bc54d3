//! The knobs of a run, already validated: what the job file decided and what
//! the supervisor fixes for itself (pipelining, grace periods, buffers).

use std::time::Duration;

use protocol::message::Input;

use crate::config::{InputFile, Job, MaxFailed, Order, Source, defaults};

#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: usize,
    /// Attempts after the first before a chunk fails for good.
    pub retries: u32,
    /// Per attempt, measured from when the worker can start on the chunk.
    pub timeout: Option<Duration>,
    /// Time a new worker gets to say hello.
    pub start_timeout: Duration,
    /// More unexpected exits than `restart_max` within `restart_within` abort the run.
    pub restart_max: u32,
    pub restart_within: Duration,
    /// `order = "index"`: results are written in index order.
    pub ordered: bool,
    /// The job's params as JSON, handed to every worker in its welcome.
    pub params_json: String,
    /// The job's source as workers see it, also in the welcome.
    pub input: Input,
    /// Chunks outstanding on one worker at most.
    pub max_in_flight: usize,
    /// How much queued work to keep at a worker beyond the chunk it runs:
    /// enough to hide a round trip, little enough to balance the tail.
    pub queue_target: Duration,
    /// After `Stop`, time a worker gets to exit by itself.
    pub stop_grace: Duration,
    /// Between the polite and the hard kill.
    pub kill_grace: Duration,
    /// Results that may wait for a lower index, in chunks and in bytes.
    pub reorder_capacity: usize,
    pub reorder_max_bytes: usize,
    /// On the first SIGTERM/SIGINT, time chunks in flight get to finish.
    pub drain_timeout: Duration,
    /// Replace a worker after it was given this many chunks; 0 = never.
    pub max_chunks: u64,
    /// The circuit breaker; `None`: never.
    pub max_failed: Option<MaxFailed>,
    /// Delay before restarting a slot whose worker crashed again: doubles
    /// from `backoff_base` per repeated crash, capped, with ±50% jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Seeds the jitter, so tests are repeatable.
    pub seed: u64,
}

impl Settings {
    /// A job file's defaults for `workers` workers, with no timeout and a
    /// fixed seed: what tests start from.
    pub fn new(workers: usize) -> Self {
        Self {
            workers,
            retries: defaults::RETRIES,
            timeout: None,
            start_timeout: defaults::START_TIMEOUT,
            restart_max: defaults::RESTART.max,
            restart_within: defaults::RESTART.within,
            ordered: true,
            params_json: "{}".to_owned(),
            input: Input::Range,
            max_in_flight: 64,
            queue_target: Duration::from_millis(5),
            stop_grace: Duration::from_secs(10),
            kill_grace: Duration::from_secs(2),
            reorder_capacity: (workers * 64 * 4).max(4096),
            reorder_max_bytes: 64 << 20,
            drain_timeout: defaults::DRAIN_TIMEOUT,
            max_chunks: 0,
            max_failed: None,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            seed: 0,
        }
    }

    /// What a run of `job` uses, with a random seed for the jitter.
    pub fn for_job(job: &Job) -> Self {
        Self {
            retries: job.worker.retries,
            timeout: job.worker.timeout,
            start_timeout: job.worker.start_timeout,
            restart_max: job.supervisor.restart.max,
            restart_within: job.supervisor.restart.within,
            ordered: job.output.order == Order::Index,
            params_json: job.worker.params_json.clone(),
            input: worker_input(&job.source),
            drain_timeout: job.supervisor.drain_timeout,
            max_chunks: job.worker.max_chunks,
            max_failed: job.supervisor.max_failed,
            seed: fastrand::u64(..),
            ..Self::new(job.supervisor.workers)
        }
    }
}

/// The source as workers are told it in their welcome.
fn worker_input(source: &Source) -> Input {
    // Validation made sure the path is UTF-8.
    let path = |input: &InputFile| input.path.to_string_lossy().into_owned();
    match source {
        Source::Range { .. } => Input::Range,
        Source::File { input, .. } => Input::File { path: path(input) },
        Source::Lines { input, .. } => Input::Lines { path: path(input) },
    }
}
