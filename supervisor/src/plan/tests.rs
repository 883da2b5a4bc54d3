//! Tests of what `check` prints: the plan of a job and what a run would do
//! with what earlier runs left.

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
        plan.contains("chunks: 3 of about 2048 bytes, 2.0 KiB, each cut just after a delimiter\n"),
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
    assert!(line.starts_with("would refuse: the job changed (worker.params {} → {\"key\":\"vvv"));
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
