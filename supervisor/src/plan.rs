//! What `supervisor check` prints: the plan a run of the job would follow.

use std::fmt::Write as _;

use crate::assess::{Assessment, Fresh, Refusal, Resume, Start, error_chain};
use crate::config::{Job, MaxFailed, Order, Source};
use crate::journal::JournalError;

/// Longest setting value a `resume:` line shows in full.
const SHOWN_VALUE: usize = 60;

/// The plan, one `name: value` line each, ending with whether a run would
/// resume, as `assessment` (of the job's state folder) says.
pub fn describe(job: &Job, assessment: &Assessment) -> String {
    lines(
        job,
        &job.state_dir.display().to_string(),
        &resume(job, assessment),
    )
}

/// The plan of a job that keeps no state from one run to the next (a
/// one-liner without a name): its state folder is a temporary one.
pub fn describe_unkept(job: &Job) -> String {
    lines(
        job,
        "a temporary folder, removed when the run ends (kept only to list failed chunks)",
        "no: a one-liner without --name starts over each time",
    )
}

fn lines(job: &Job, state: &str, resume: &str) -> String {
    let mut plan = String::new();
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
    let format = job.output.format.name();
    let restart = &job.supervisor.restart;
    // Writing into a String cannot fail.
    let _ = writeln!(plan, "job: {} ({})", job.name, job.file.display());
    let _ = writeln!(plan, "source: {}", source(&job.source));
    let _ = writeln!(plan, "chunks: {}", chunks(job));
    if let Some(shard) = &job.shard {
        let _ = writeln!(plan, "shard: {}", shard.describe(job.chunk_count()));
    }
    let _ = writeln!(plan, "workers: {}", job.supervisor.workers);
    let _ = writeln!(plan, "command: {command}");
    let _ = writeln!(plan, "working directory: {}", worker.cwd.display());
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
    match job.supervisor.max_failed {
        Some(MaxFailed::Count(max)) => {
            let _ = writeln!(
                plan,
                "circuit breaker: more than {max} chunks failed for good stop the run (exit 3)"
            );
        }
        Some(MaxFailed::Share { per_million }) => {
            let _ = writeln!(
                plan,
                "circuit breaker: more than {}% of the chunks finished failed for good stop the \
                 run (exit 3)",
                f64::from(per_million) / 10_000.0
            );
        }
        None => {}
    }
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
        job.output.path.name()
    );
    let _ = writeln!(plan, "state: {state}");
    let _ = writeln!(plan, "resume: {resume}");
    plan
}

fn source(source: &Source) -> String {
    match source {
        Source::Range { start, end } => format!("range [{start}, {end})"),
        Source::File {
            input, delimiter, ..
        } => format!(
            "file {} ({}), records end with {}",
            input.path.display(),
            bytes(input.size),
            serde_json::to_string(&String::from_utf8_lossy(delimiter)).expect("a string")
        ),
        Source::Lines { input, lines } => format!(
            "lines {} ({lines} lines, {})",
            input.path.display(),
            bytes(input.size)
        ),
        Source::Stdin { delimiter } => format!(
            "standard input, read once as the run goes, records end with {}",
            serde_json::to_string(&String::from_utf8_lossy(delimiter)).expect("a string")
        ),
    }
}

/// How the source is cut: the count, the size, and the last chunk's size
/// when it is known without reading the input.
fn chunks(job: &Job) -> String {
    if let Some(auto) = job.auto {
        return auto_chunks(job, auto.target);
    }
    let count = job.chunk_count();
    let size = job.chunk;
    let short = |total: u64| match count {
        0 => 0,
        _ => total - (count - 1) * size,
    };
    match &job.source {
        Source::Range { start, end } => {
            format!("{count} of {size} items (the last {})", short(end - start))
        }
        Source::File { .. } => format!(
            "{count} of about {}, each cut just after a delimiter",
            bytes(size)
        ),
        Source::Lines { lines, .. } => {
            format!("{count} of {size} lines (the last {})", short(*lines))
        }
        Source::Stdin { .. } => format!(
            "as many as the input makes (known when it ends), of about {}, each cut just after \
             a delimiter",
            bytes(size)
        ),
    }
}

/// `chunk = "auto"`: the count is decided as the run goes; what can be
/// said before is how few chunks it takes when items cost nothing (the
/// sizes then only grow and shrink) and how many at most.
fn auto_chunks(job: &Job, target: std::time::Duration) -> String {
    let unit = match job.source {
        Source::Range { .. } => "items",
        Source::File { .. } | Source::Stdin { .. } => "bytes",
        Source::Lines { .. } => "lines",
    };
    let max = match job.source {
        // `chunk = "auto"` is refused for standard input at load.
        Source::File { .. } | Source::Stdin { .. } => crate::config::defaults::MAX_AUTO_FILE_CHUNK,
        Source::Range { .. } | Source::Lines { .. } => u64::MAX,
    };
    let sizer = crate::chunks::Sizer::new(target, job.supervisor.workers, job.chunk, max);
    let fewest = sizer.simulate(job.source.units(), 0.0);
    format!(
        "decided at run time (chunk = \"auto\"), each about {} of work on a worker; \
         about {fewest} if items cost next to nothing, more as they cost more, at most {} \
         (chunks of at least {} {unit}); `supervisor tune` measures them",
        humantime::format_duration(target),
        job.chunk_count(),
        job.chunk,
    )
}

fn bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} bytes");
    }
    format!("{n} bytes, {}", bytesize::ByteSize(n).display().iec())
}

/// Whether a run would resume, and from what.
fn resume(job: &Job, assessment: &Assessment) -> String {
    if let Some(pid) = assessment.holder {
        let who = match pid {
            Some(pid) => format!("another supervisor (pid {pid})"),
            None => "another supervisor".to_owned(),
        };
        return format!(
            "would refuse: {who} is running the job in {}",
            job.state_dir.display()
        );
    }
    match &assessment.start {
        Start::Unjournaled if job.source.is_stream() => "no journal: a `stdin` source cannot \
             resume (its input is gone once read), so a run always starts over"
            .to_owned(),
        Start::Unjournaled => "no journal: a run to stdout always starts over".to_owned(),
        Start::Fresh(Fresh::NoJournal | Fresh::Asked) => "fresh start (no journal)".to_owned(),
        // A run that never finished a chunk is started over, output and all.
        Start::Fresh(Fresh::NoRecords) => {
            "fresh start (the journal records no finished chunk)".to_owned()
        }
        Start::Resume(resume) => would_resume(resume, job.known_block_len()),
        Start::Refuse(refusal) => refused(refusal),
    }
}

fn refused(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Journal(JournalError::Changed { changes, .. }) => {
            let changes = changes
                .iter()
                .map(|(field, was, now)| format!("{field} {} → {}", cut(was), cut(now)))
                .collect::<Vec<_>>()
                .join(", ");
            format!("would refuse: the job changed ({changes}); use --fresh")
        }
        Refusal::Journal(JournalError::Corrupt { reason, .. }) => {
            format!("would refuse: the journal is damaged: {reason}; use --fresh")
        }
        Refusal::Journal(JournalError::OutputChanged {
            index, offset, len, ..
        }) => format!(
            "would refuse: the output is not what the journal recorded (chunk {index}'s bytes \
             {offset}..{} differ); use --fresh",
            offset + len
        ),
        Refusal::OutputMissing { kept } => format!(
            "would refuse: the output is missing, but the journal counts {kept} bytes of \
             it; use --fresh"
        ),
        Refusal::OutputShorter { len, kept } => format!(
            "would refuse: the output is shorter than the journal says ({len} bytes, the \
             journal counts {kept}); use --fresh"
        ),
        Refusal::Journal(_)
        | Refusal::Unreadable(_)
        | Refusal::NothingToRetry
        | Refusal::NoFailures
        | Refusal::RetryNeedsJournal
        | Refusal::RetryNeedsInput => {
            let reason = match refusal {
                Refusal::Journal(error) => error_chain(error),
                Refusal::Unreadable(reason) => reason.clone(),
                _ => "nothing to retry".to_owned(),
            };
            format!("cannot tell: {reason}")
        }
    }
}

fn would_resume(resume: &Resume, chunks: Option<u64>) -> String {
    let recovered = &resume.recovered;
    let kept = recovered.output_len;
    let of = chunks.map_or_else(String::new, |chunks| format!(" of {chunks}"));
    let mut text = format!(
        "would resume: {}{of} chunks done, {} failed for good; the output is cut back to {kept} bytes",
        recovered.done.count_ones(..),
        recovered.failed.count_ones(..),
    );
    if let Some(len) = resume.output_len
        && len > kept
    {
        let _ = write!(text, " (it has {len})");
    }
    match recovered.damaged_at {
        Some(record) => {
            let _ = write!(
                text,
                "; the journal is damaged at record {record}: from it on, {} bytes are cut off \
                 and their chunks run again",
                recovered.torn_bytes
            );
        }
        None if recovered.torn_bytes > 0 => {
            let _ = write!(
                text,
                "; the journal's last {} bytes are torn and are cut off",
                recovered.torn_bytes
            );
        }
        None => {}
    }
    text
}

/// A setting's value cut short: params and argument lists can be long, and
/// the field name already says where to look.
fn cut(value: &str) -> String {
    match value.char_indices().nth(SHOWN_VALUE) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests;
