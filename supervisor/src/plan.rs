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
    let _ = writeln!(plan, "state: {}", job.state_dir.display());
    let _ = writeln!(plan, "resume: {}", resume(job, assessment));
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
    }
}

/// `chunk = "auto"`: the count is decided as the run goes; what can be
/// said before is how few chunks it takes when items cost nothing (the
/// sizes then only grow and shrink) and how many at most.
fn auto_chunks(job: &Job, target: std::time::Duration) -> String {
    let unit = match job.source {
        Source::Range { .. } => "items",
        Source::File { .. } => "bytes",
        Source::Lines { .. } => "lines",
    };
    let max = match job.source {
        Source::File { .. } => crate::config::defaults::MAX_AUTO_FILE_CHUNK,
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
        | Refusal::RetryNeedsJournal => {
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
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::assess::{Lock, Options, assess};
    use crate::config::OutputPath;
    use crate::journal::{self, Entry, EntryKind};

    /// The plan as `check` prints it now.
    fn plan_of(job: &Job) -> String {
        describe(job, &assess(job, Options::default(), Lock::Probe))
    }

    /// A job read from a real job file in its own folder, with `extra` TOML
    /// appended.
    fn job(extra: &str) -> (tempfile::TempDir, Job) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("squares.toml");
        std::fs::write(
            &path,
            format!(
                r#"
[source]
range = {{ start = 0, end = 1000 }}
chunk = 100

[worker]
command = ["/bin/sh", "-c", "true"]
{extra}
"#
            ),
        )
        .unwrap();
        let job = crate::config::load(&path, None).unwrap();
        (dir, job)
    }

    fn resume_line(job: &Job) -> String {
        let plan = plan_of(job);
        let line = plan.lines().find(|line| line.starts_with("resume: "));
        line.unwrap().trim_start_matches("resume: ").to_owned()
    }

    fn output_path(job: &Job) -> PathBuf {
        match &job.output.path {
            OutputPath::File(path) => path.clone(),
            OutputPath::Stdout => panic!("the test job writes a file"),
        }
    }

    /// What a run leaves: chunks 0 and 2 done (50 bytes each), 1 failed for
    /// good, and an output of `output_len` bytes.
    fn leave_a_run(job: &Job, output_len: usize) {
        let fingerprint = journal::fingerprint(job);
        let (mut writer, _) =
            journal::open(&job.state_dir, &fingerprint, job.chunk_count(), true).unwrap();
        for (kind, index, offset, len) in [
            (EntryKind::Done, 0, 0, 50),
            (EntryKind::Failed, 1, 0, 0),
            (EntryKind::Done, 2, 50, 50),
        ] {
            // Each chunk's record is 50 bytes of 'x', as the output below.
            let checksum = if len > 0 {
                crc32fast::hash(&[b'x'; 50])
            } else {
                0
            };
            writer.append(&Entry {
                kind,
                index,
                start: index * 100,
                end: index * 100 + 100,
                offset,
                len,
                checksum,
            });
        }
        writer.finish(None).unwrap();
        std::fs::write(output_path(job), vec![b'x'; output_len]).unwrap();
    }

    #[test]
    fn the_plan_keeps_its_lines_and_ends_with_resume() {
        let (_dir, job) = job("");
        let plan = plan_of(&job);
        assert!(
            plan.contains("chunks: 10 of 100 items (the last 100)\n"),
            "{plan}"
        );
        assert!(plan.contains(&format!("state: {}\n", job.state_dir.display())));
        assert!(
            plan.ends_with("resume: fresh start (no journal)\n"),
            "{plan}"
        );
        assert!(
            !job.state_dir.exists(),
            "check must not create the state folder"
        );
    }

    #[test]
    fn a_file_source_is_described_with_its_size_delimiter_and_count() {
        let dir = tempfile::tempdir().unwrap();
        // 50 records of 100 bytes: cut near 2048 and 4096, three chunks.
        let record = [vec![b'x'; 98], b"\r\n".to_vec()].concat();
        std::fs::write(dir.path().join("in.txt"), record.repeat(50)).unwrap();
        let path = dir.path().join("cut.toml");
        std::fs::write(
            &path,
            "[source]\nfile = { path = \"in.txt\", delimiter = \"\\r\\n\" }\nchunk = 2048\n\n\
             [worker]\ncommand = [\"/bin/sh\"]\n",
        )
        .unwrap();
        let job = crate::config::load(&path, None).unwrap();
        let plan = plan_of(&job);
        let input = dir.path().join("in.txt").canonicalize().unwrap();
        assert!(
            plan.contains(&format!(
                "source: file {} (5000 bytes, 4.9 KiB), records end with \"\\r\\n\"\n",
                input.display()
            )),
            "{plan}"
        );
        assert!(
            plan.contains(
                "chunks: 3 of about 2048 bytes, 2.0 KiB, each cut just after a delimiter\n"
            ),
            "{plan}"
        );
        assert!(
            plan.contains(&format!("working directory: {}\n", job.dir.display())),
            "{plan}"
        );
    }

    #[test]
    fn automatic_chunks_are_decided_at_run_time_with_an_estimate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auto.toml");
        std::fs::write(
            &path,
            "[source]\nrange = { start = 0, end = 10_000_000 }\nchunk = \"auto\"\n\
             target = \"100ms\"\n\n[worker]\ncommand = [\"/bin/sh\"]\n\n\
             [supervisor]\nworkers = 2\n",
        )
        .unwrap();
        let job = crate::config::load(&path, None).unwrap();
        let plan = plan_of(&job);
        let line = plan.lines().find(|l| l.starts_with("chunks: ")).unwrap();
        assert!(
            line.starts_with("chunks: decided at run time (chunk = \"auto\"), each about 100ms of work on a worker; about "),
            "{line}"
        );
        assert!(
            line.ends_with(
                ", at most 10000000 (chunks of at least 1 items); `supervisor tune` measures them"
            ),
            "{line}"
        );
    }

    #[test]
    fn a_run_to_stdout_always_starts_over() {
        let (_dir, job) = job("[output]\npath = \"-\"");
        assert_eq!(
            resume_line(&job),
            "no journal: a run to stdout always starts over"
        );
    }

    #[test]
    fn an_earlier_run_would_be_resumed() {
        let (_dir, job) = job("");
        leave_a_run(&job, 130);
        let journal_before = std::fs::read(job.state_dir.join(journal::JOURNAL_FILE)).unwrap();
        assert_eq!(
            resume_line(&job),
            "would resume: 2 of 10 chunks done, 1 failed for good; \
             the output is cut back to 100 bytes (it has 130)"
        );
        // Looking changed nothing.
        assert_eq!(std::fs::metadata(output_path(&job)).unwrap().len(), 130);
        assert_eq!(
            std::fs::read(job.state_dir.join(journal::JOURNAL_FILE)).unwrap(),
            journal_before
        );
    }

    #[test]
    fn settings_outside_the_fingerprint_do_not_stop_a_resume() {
        let (_dir, job) = job("retries = 5");
        leave_a_run(&job, 100);
        let mut other = job.clone();
        other.supervisor.workers += 1;
        assert_eq!(
            resume_line(&other),
            "would resume: 2 of 10 chunks done, 1 failed for good; \
             the output is cut back to 100 bytes"
        );
    }

    #[test]
    fn a_journal_without_records_is_a_fresh_start() {
        let (_dir, job) = job("");
        let fingerprint = journal::fingerprint(&job);
        let (writer, _) = journal::open(&job.state_dir, &fingerprint, 10, true).unwrap();
        writer.finish(None).unwrap();
        assert_eq!(
            resume_line(&job),
            "fresh start (the journal records no finished chunk)"
        );
    }

    #[test]
    fn only_failed_chunks_need_no_output() {
        let (_dir, job) = job("");
        let fingerprint = journal::fingerprint(&job);
        let (mut writer, _) = journal::open(&job.state_dir, &fingerprint, 10, true).unwrap();
        writer.append(&Entry {
            kind: EntryKind::Failed,
            index: 4,
            start: 400,
            end: 500,
            offset: 0,
            len: 0,
            checksum: 0,
        });
        writer.finish(None).unwrap();
        assert_eq!(
            resume_line(&job),
            "would resume: 0 of 10 chunks done, 1 failed for good; \
             the output is cut back to 0 bytes"
        );
    }

    #[test]
    fn an_edited_output_would_be_refused() {
        let (_dir, job) = job("");
        leave_a_run(&job, 100);
        let mut output = std::fs::read(output_path(&job)).unwrap();
        output[60] = b'y';
        std::fs::write(output_path(&job), &output).unwrap();
        assert_eq!(
            resume_line(&job),
            "would refuse: the output is not what the journal recorded (chunk 2's bytes \
             50..100 differ); use --fresh"
        );
    }

    #[test]
    fn a_changed_job_would_be_refused_with_what_changed() {
        let (_dir, job) = job("");
        leave_a_run(&job, 100);
        let mut changed = job.clone();
        changed.chunk = 50;
        assert_eq!(
            resume_line(&changed),
            "would refuse: the job changed (chunk 100 → 50); use --fresh"
        );
    }

    #[test]
    fn long_changed_values_are_cut() {
        let (_dir, job) = job("");
        leave_a_run(&job, 100);
        let mut changed = job.clone();
        changed.worker.params_json = format!(r#"{{"key":"{}"}}"#, "v".repeat(200));
        let line = resume_line(&changed);
        assert!(
            line.starts_with("would refuse: the job changed (worker.params {} → {\"key\":\"vvv")
        );
        assert!(line.ends_with("…); use --fresh"), "{line}");
        assert!(line.len() < 200, "{line}");
    }

    #[test]
    fn a_damaged_journal_would_be_refused() {
        let (_dir, job) = job("");
        std::fs::create_dir_all(&job.state_dir).unwrap();
        std::fs::write(job.state_dir.join(journal::JOURNAL_FILE), b"garbage").unwrap();
        assert_eq!(
            resume_line(&job),
            "would refuse: the journal is damaged: the header is cut short; use --fresh"
        );
    }

    #[test]
    fn an_output_shorter_than_the_journal_would_be_refused() {
        let (_dir, job) = job("");
        leave_a_run(&job, 60);
        assert_eq!(
            resume_line(&job),
            "would refuse: the output is shorter than the journal says (60 bytes, the \
             journal counts 100); use --fresh"
        );
        std::fs::remove_file(output_path(&job)).unwrap();
        assert_eq!(
            resume_line(&job),
            "would refuse: the output is missing, but the journal counts 100 bytes of it; \
             use --fresh"
        );
    }
}
