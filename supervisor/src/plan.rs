//! What `supervisor check` prints: the plan a run of the job would follow.

use std::fmt::Write as _;

use crate::config::{Job, Order, OutputFormat, Source};
use crate::run::output_name;

pub fn describe(job: &Job) -> String {
    let mut plan = String::new();
    let chunks = job.chunk_count();
    let Source::Range { start, end } = job.source;
    let last = (end - start) - (chunks - 1) * job.chunk;
    let worker = &job.worker;
    let command = std::iter::once(worker.program.display().to_string())
        .chain(worker.args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let timeout = worker.timeout.map_or("none".to_owned(), |t| {
        humantime::format_duration(t).to_string()
    });
    let order = match job.output.order {
        Order::Index => "index",
        Order::Completion => "completion",
    };
    let format = match job.output.format {
        OutputFormat::Jsonl => "jsonl",
    };
    let restart = &job.supervisor.restart;
    // Writing into a String cannot fail.
    let _ = writeln!(plan, "job: {} ({})", job.name, job.file.display());
    let _ = writeln!(plan, "source: range [{start}, {end})");
    let _ = writeln!(
        plan,
        "chunks: {chunks} of {} items (the last {last})",
        job.chunk
    );
    let _ = writeln!(plan, "workers: {}", job.supervisor.workers);
    let _ = writeln!(plan, "command: {command}");
    let _ = writeln!(
        plan,
        "per attempt: timeout {timeout}, retries {}",
        worker.retries
    );
    let _ = writeln!(
        plan,
        "restarts: at most {} within {}",
        restart.max,
        humantime::format_duration(restart.within)
    );
    let _ = writeln!(
        plan,
        "drain: chunks in flight get {} after SIGTERM/SIGINT",
        humantime::format_duration(job.supervisor.drain_timeout)
    );
    if worker.max_chunks > 0 {
        let _ = writeln!(plan, "workers replaced after {} chunks", worker.max_chunks);
    }
    if let Some(limit) = worker.memory_limit {
        let _ = writeln!(
            plan,
            "memory limit: {} per worker (address space)",
            bytesize::ByteSize(limit).display().iec()
        );
    }
    let _ = writeln!(
        plan,
        "output: {} ({format}, order {order})",
        output_name(&job.output.path)
    );
    let _ = writeln!(plan, "state: {}", job.state_dir.display());
    plan
}
