//! Drain, resume and signals, end to end: SIGTERM, SIGINT and SIGHUP drains,
//! second signals and drain timeouts, SIGKILL and resume, a damaged journal,
//! a changed job, the state folder's lock, `--retry-failed`, `--fresh`,
//! worker recycling and memory limits, and systemd's notify protocol.
//!
//! Workers announce each chunk as they start it (`--stderr-lines 1`), which
//! is how a test knows a chunk is in flight, and by which process.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{assert_exactly_once, failed_file};
use crate::harness::{
    self, Announced, Finished, Launch, NotifySocket, PATIENCE, Run, Scenario,
    assert_stderr_contains, indices, read_records, squares_job, wait_for_busy_workers,
};

/// How the reference worker tags its announcements.
const TAG: &str = "squares-worker";

fn parse_announcement(line: &str) -> Option<Announced> {
    harness::parse_announcement(TAG, line)
}

fn announcements(stderr: &str) -> Vec<Announced> {
    stderr.lines().filter_map(parse_announcement).collect()
}

fn announced_indices(stderr: &str) -> BTreeSet<u64> {
    announcements(stderr).iter().map(|a| a.index).collect()
}

/// Waits until a worker announces it has started chunk `index`.
fn wait_for_chunk(run: &mut Run, index: u64) -> Announced {
    let line = run.wait_for_line(&format!("announcing chunk {index}"), |line| {
        parse_announcement(line).is_some_and(|a| a.index == index)
    });
    parse_announcement(&line).unwrap()
}

/// Waits until `count` chunks have been announced in this run.
fn wait_for_announcements(run: &mut Run, count: usize) {
    for n in 1..=count {
        run.wait_for_line(&format!("announcing a chunk (the {n}th)"), |line| {
            parse_announcement(line).is_some()
        });
    }
}

/// Polls `condition` until it holds, failing the test after the patience.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// An output's lines without the fields that legitimately differ between
/// runs: which worker slot ran a chunk and how long it took.
fn normalized(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let mut value: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("bad record {line:?}: {e}"));
            value.remove("worker");
            value.remove("seconds");
            serde_json::to_string(&value).unwrap()
        })
        .collect()
}

/// The normalized output of an uninterrupted run of `[0, end)` in chunks of
/// `chunk`, in a scenario of its own. The worker's switches for slowness and
/// announcements change neither chunk boundaries nor outputs, so the
/// reference goes without them.
fn reference(end: u64, chunk: u64) -> Vec<String> {
    let scenario = Scenario::new();
    let job = scenario.job("reference.toml", &squares_job(end, chunk, &[], ""));
    scenario
        .run(&["-w", "1", job.to_str().unwrap()])
        .expect_code(0);
    let lines = normalized(&scenario.path("reference.jsonl"));
    scenario.assert_no_survivors();
    lines
}

fn state_dir(scenario: &Scenario, job_name: &str) -> PathBuf {
    scenario.dir().join(".supervisor").join(job_name)
}

fn journal_path(scenario: &Scenario, job_name: &str) -> PathBuf {
    state_dir(scenario, job_name).join("journal")
}

/// Bytes in one journal record.
const RECORD_LEN: u64 = 56;

/// The length of a journal's header: magic, a u32 length, the fingerprint's
/// JSON, its checksum.
fn journal_header_len(bytes: &[u8]) -> u64 {
    assert!(
        bytes.starts_with(b"SUPJRNL"),
        "not a journal: {:?}",
        &bytes[..bytes.len().min(16)]
    );
    let json_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    16 + u64::from(json_len)
}

/// Whole records in the journal at `path`; 0 while there is none.
fn journal_records(path: &Path) -> u64 {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= 12 => {
            (bytes.len() as u64).saturating_sub(journal_header_len(&bytes)) / RECORD_LEN
        }
        _ => 0,
    }
}

/// The process group of a live process.
fn process_group(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("cannot read the stat of {pid}: {e}"));
    let (_, rest) = stat.rsplit_once(')').unwrap();
    // After the command: state, parent, group.
    rest.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// Interrupts a run of 30 slow chunks once chunk 4 has started, checks the
/// drain kept every chunk that started, then resumes the same command to an
/// output equal to an uninterrupted run's.
fn drain_then_resume(
    name: &str,
    launch: Launch,
    code: i32,
    interrupt: impl FnOnce(&Run, Announced),
) {
    let scenario = Scenario::new();
    let job = scenario.job(
        &format!("{name}.toml"),
        &squares_job(
            30_000,
            1000,
            &["--slow-ms", "100", "--stderr-lines", "1"],
            "",
        ),
    );
    let args = ["-w", "2", job.to_str().unwrap()];
    let mut run = scenario.start_with(&args, launch);
    let announced = wait_for_chunk(&mut run, 4);
    interrupt(&run, announced);
    let finished = run.finish();
    finished.expect_code(code);
    assert_stderr_contains(&finished, "stopped after a drain (0 chunks cancelled)");
    let output = scenario.path(&format!("{name}.jsonl"));
    let written = indices(&read_records(&output));
    assert!(
        written.len() < 30,
        "the run ended before the signal could stop it: {}",
        finished.stderr
    );
    assert_eq!(
        written,
        (0..written.len() as u64).collect::<Vec<_>>(),
        "the output after a drain is not a prefix in index order"
    );
    let started = announced_indices(&finished.stderr);
    let lost: Vec<_> = started.iter().filter(|i| !written.contains(i)).collect();
    assert!(
        lost.is_empty(),
        "chunks that started before the drain but are not in the output: {lost:?}\n{}",
        finished.stderr
    );
    assert!(
        announcements(&finished.stderr)
            .iter()
            .all(|a| a.attempt == 1),
        "a chunk was attempted twice:\n{}",
        finished.stderr
    );
    scenario.assert_no_survivors();

    let rerun = scenario.run(&args);
    rerun.expect_code(0);
    assert_stderr_contains(
        &rerun,
        &format!("30 of 30 chunks done ({} by an earlier run)", written.len()),
    );
    let again: Vec<_> = announced_indices(&rerun.stderr)
        .into_iter()
        .filter(|i| written.contains(i))
        .collect();
    assert!(again.is_empty(), "finished chunks ran again: {again:?}");
    assert_eq!(normalized(&output), reference(30_000, 1000));
    scenario.assert_no_survivors();
}

#[test]
fn sigterm_lets_the_chunks_in_flight_finish_exits_143_and_the_same_command_resumes() {
    drain_then_resume("term", Launch::default(), 143, |run, _| {
        run.signal(Signal::SIGTERM)
    });
}

#[test]
fn ctrl_c_to_the_foreground_group_reaches_the_supervisor_only_and_exits_130() {
    drain_then_resume(
        "ctrlc",
        Launch::default().own_process_group(),
        130,
        |run, announced| {
            // The worker was announced and the run goes on, so it is alive:
            // a group of its own keeps the terminal's Ctrl-C away from it.
            assert_eq!(process_group(run.pid()), run.pid());
            assert_eq!(
                process_group(announced.pid),
                announced.pid,
                "a worker is not the leader of its own process group"
            );
            run.signal_group(Signal::SIGINT);
        },
    );
}

#[test]
fn sighup_drains_exits_129_and_the_same_command_resumes() {
    drain_then_resume("hup", Launch::default(), 129, |run, _| {
        run.signal(Signal::SIGHUP)
    });
}

#[test]
fn sigterm_to_every_process_as_systemd_sends_it_still_drains() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "cgroup.toml",
        &squares_job(
            12_000,
            1000,
            &["--slow-ms", "300", "--stderr-lines", "1"],
            "",
        ),
    );
    let args = ["-w", "2", job.to_str().unwrap()];
    let mut run = scenario.start(&args);
    let busy = wait_for_busy_workers(&mut run, TAG, 2);
    // KillMode=control-group: every process of the unit at once.
    for worker in &busy {
        kill(Pid::from_raw(worker.pid as i32), Signal::SIGTERM).unwrap();
    }
    run.signal(Signal::SIGTERM);
    let finished = run.finish();
    finished.expect_code(143);
    assert_eq!(
        finished.stderr.matches("ignoring SIGTERM from pid").count(),
        2,
        "{}",
        finished.stderr
    );
    assert_stderr_contains(&finished, "stopped after a drain (0 chunks cancelled)");
    let written = indices(&read_records(&scenario.path("cgroup.jsonl")));
    for worker in &busy {
        assert!(
            written.contains(&worker.index),
            "chunk {} was in flight on a worker that got systemd's SIGTERM, and is not in the output {written:?}:\n{}",
            worker.index,
            finished.stderr
        );
    }
    scenario.assert_no_survivors();
    let rerun = scenario.run(&args);
    rerun.expect_code(0);
    assert_exactly_once(&read_records(&scenario.path("cgroup.jsonl")), 12);
    scenario.assert_no_survivors();
}

#[test]
fn a_second_sigterm_cancels_the_chunks_in_flight() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "twice.toml",
        &squares_job(
            20_000,
            1000,
            &["--slow-ms", "60000", "--stderr-lines", "1"],
            "",
        ),
    );
    let mut run = scenario.start(&["-w", "2", job.to_str().unwrap()]);
    wait_for_busy_workers(&mut run, TAG, 2);
    run.signal(Signal::SIGTERM);
    // Two signals sent back to back may arrive as one.
    run.wait_for_line("the drain starting", |line| line.contains("draining"));
    run.signal(Signal::SIGTERM);
    let finished = run.finish();
    finished.expect_code(143);
    let records = read_records(&scenario.path("twice.jsonl"));
    assert!(
        records.is_empty(),
        "cancelled chunks were written: {records:?}"
    );
    assert_eq!(journal_records(&journal_path(&scenario, "twice")), 0);
    assert_stderr_contains(&finished, "(2 chunks cancelled)");
    scenario.assert_no_survivors();
}

#[test]
fn chunks_still_running_at_the_drain_timeout_are_cancelled_without_a_second_signal() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "timeout.toml",
        &squares_job(
            20_000,
            1000,
            &["--slow-ms", "60000", "--stderr-lines", "1"],
            "[supervisor]\ndrain_timeout = \"1s\"",
        ),
    );
    let mut run = scenario.start(&["-w", "2", "--report", "report.json", job.to_str().unwrap()]);
    wait_for_busy_workers(&mut run, TAG, 2);
    run.signal(Signal::SIGTERM);
    let finished = run.finish();
    finished.expect_code(143);
    assert_stderr_contains(&finished, "cancelling 2 chunks in flight");
    assert_stderr_contains(&finished, "(2 chunks cancelled)");
    // The workers gave their chunks up when asked and exited when stopped;
    // none had to be killed. (During a drain a worker's exit is logged only
    // at debug level, so the report is where a kill would show.)
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scenario.path("report.json")).unwrap()).unwrap();
    for worker in report["workers"].as_array().unwrap() {
        let causes = worker["exit_causes"].as_object().unwrap();
        assert!(
            causes.keys().all(|cause| cause == "exit status 0"),
            "{causes:?}"
        );
    }
    assert!(read_records(&scenario.path("timeout.jsonl")).is_empty());
    scenario.assert_no_survivors();
}

#[test]
fn a_supervisor_killed_again_and_again_resumes_to_the_uninterrupted_output() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "killed.toml",
        &squares_job(12_000, 100, &["--slow-ms", "25", "--stderr-lines", "1"], ""),
    );
    let args = ["-w", "2", job.to_str().unwrap()];
    let journal = journal_path(&scenario, "killed");
    let mut durable = 0;
    for (round, started) in [10, 20, 30].into_iter().enumerate() {
        let mut run = scenario.start(&args);
        if round > 0 {
            let line = run.wait_for_line("saying it resumes", |line| {
                line.contains("were finished by an earlier run")
            });
            let done_before: u64 = line
                .split_once("resuming: ")
                .and_then(|(_, rest)| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no count in {line:?}"));
            assert!(
                done_before >= durable,
                "the journal held {durable} records, the resume found {done_before} chunks"
            );
        }
        wait_for_announcements(&mut run, started);
        // Only what reached the journal survives a kill: wait until this run
        // has added some, so that every round moves the job on.
        wait_until("the journal growing", || {
            journal_records(&journal) > durable
        });
        durable = journal_records(&journal);
        run.signal(Signal::SIGKILL);
        let finished = run.finish();
        assert_eq!(
            finished.code, None,
            "the run ended before the kill:\n{}",
            finished.stderr
        );
        scenario.assert_no_survivors();
    }
    let last = scenario.run(&args);
    last.expect_code(0);
    assert_stderr_contains(&last, "by an earlier run");
    assert_exactly_once(&read_records(&scenario.path("killed.jsonl")), 120);
    assert_eq!(
        normalized(&scenario.path("killed.jsonl")),
        reference(12_000, 100)
    );
    scenario.assert_no_survivors();
}

/// Drains a run part way, damages its journal, and resumes, which must say
/// `said`. Returns the first run's chunk indices and the resumed run.
fn resume_after_damaging_the_journal(
    scenario: &Scenario,
    said: &str,
    damage: impl FnOnce(&Path),
) -> (Vec<u64>, Finished) {
    let job = scenario.job(
        "torn.toml",
        &squares_job(
            30_000,
            1000,
            &["--slow-ms", "50", "--stderr-lines", "1"],
            "",
        ),
    );
    let args = ["-w", "2", job.to_str().unwrap()];
    let mut run = scenario.start(&args);
    wait_for_chunk(&mut run, 6);
    run.signal(Signal::SIGTERM);
    run.finish().expect_code(143);
    let written = indices(&read_records(&scenario.path("torn.jsonl")));
    let journal = journal_path(scenario, "torn");
    let bytes = std::fs::read(&journal).unwrap();
    let header = journal_header_len(&bytes);
    assert_eq!((bytes.len() as u64 - header) % RECORD_LEN, 0);
    assert_eq!(
        (bytes.len() as u64 - header) / RECORD_LEN,
        written.len() as u64,
        "a clean drain journals every chunk it wrote"
    );
    damage(&journal);
    let rerun = scenario.run(&args);
    rerun.expect_code(0);
    assert_stderr_contains(&rerun, said);
    assert_exactly_once(&read_records(&scenario.path("torn.jsonl")), 30);
    assert_eq!(
        normalized(&scenario.path("torn.jsonl")),
        reference(30_000, 1000)
    );
    scenario.assert_no_survivors();
    (written, rerun)
}

#[test]
fn a_journal_cut_in_the_middle_of_its_last_record_is_resumed() {
    let scenario = Scenario::new();
    let (written, rerun) = resume_after_damaging_the_journal(&scenario, "torn bytes", |journal| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(journal)
            .unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len - RECORD_LEN / 2).unwrap();
    });
    // The torn record described the last chunk written, which runs again.
    let last = *written.last().unwrap();
    assert!(
        announced_indices(&rerun.stderr).contains(&last),
        "chunk {last} lost its journal record but did not run again:\n{}",
        rerun.stderr
    );
    scenario.assert_no_survivors();
}

#[test]
fn garbage_after_the_last_journal_record_is_resumed() {
    let scenario = Scenario::new();
    let (written, rerun) = resume_after_damaging_the_journal(&scenario, "torn bytes", |journal| {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(journal)
            .unwrap();
        file.write_all(b"\xde\xad\xbe\xef\x01").unwrap();
    });
    let again: Vec<_> = announced_indices(&rerun.stderr)
        .into_iter()
        .filter(|i| written.contains(i))
        .collect();
    assert!(again.is_empty(), "journaled chunks ran again: {again:?}");
    scenario.assert_no_survivors();
}

#[test]
fn a_damaged_byte_in_the_middle_of_the_journal_is_told_as_damage_not_a_torn_end() {
    let scenario = Scenario::new();
    let (written, rerun) = resume_after_damaging_the_journal(
        &scenario,
        "the journal is damaged at record 1 ",
        |journal| {
            let mut bytes = std::fs::read(journal).unwrap();
            let header = journal_header_len(&bytes) as usize;
            // A byte of the second record's checksum: it fails with whole
            // records after it, as no torn last write leaves them.
            bytes[header + RECORD_LEN as usize + 1] ^= 0x40;
            std::fs::write(journal, bytes).unwrap();
        },
    );
    assert!(
        !rerun.stderr.contains("torn bytes") && !rerun.stderr.contains("mid-write"),
        "damage told as a torn end:\n{}",
        rerun.stderr
    );
    // Every chunk from the damaged record on runs again; the first does not.
    let again = announced_indices(&rerun.stderr);
    assert!(!again.contains(&written[0]), "{again:?}");
    assert!(written[1..].iter().all(|i| again.contains(i)), "{again:?}");
    scenario.assert_no_survivors();
}

#[test]
fn a_changed_job_refuses_to_resume_and_fresh_starts_over() {
    let scenario = Scenario::new();
    let slow = ["--slow-ms", "50", "--stderr-lines", "1"];
    let job = scenario.job("changed.toml", &squares_job(30_000, 1000, &slow, ""));
    let job = job.to_str().unwrap();
    let mut run = scenario.start(&["-w", "2", job]);
    wait_for_chunk(&mut run, 4);
    run.signal(Signal::SIGTERM);
    run.finish().expect_code(143);
    let output = scenario.path("changed.jsonl");
    let journal = journal_path(&scenario, "changed");
    let output_before = std::fs::read(&output).unwrap();
    let journal_before = std::fs::read(&journal).unwrap();
    assert!(!output_before.is_empty());

    let variants = [
        ("chunk 1000", squares_job(30_000, 500, &slow, "")),
        (
            "worker.command",
            squares_job(30_000, 1000, &["--stderr-lines", "1"], ""),
        ),
        (
            "worker.params",
            squares_job(30_000, 1000, &slow, "params = { modulus = 7 }"),
        ),
        (
            "output.order",
            squares_job(30_000, 1000, &slow, "[output]\norder = \"completion\""),
        ),
    ];
    for (field, text) in &variants {
        std::fs::write(job, text).unwrap();
        let refused = scenario.run(&["-w", "2", job]);
        refused.expect_code(2);
        assert_stderr_contains(&refused, field);
        assert_stderr_contains(&refused, "--fresh");
        assert!(
            announcements(&refused.stderr).is_empty(),
            "a refused run started workers:\n{}",
            refused.stderr
        );
        assert!(
            std::fs::read(&output).unwrap() == output_before,
            "{field}: the output changed"
        );
        assert!(
            std::fs::read(&journal).unwrap() == journal_before,
            "{field}: the journal changed"
        );
        scenario.assert_no_survivors();
    }

    std::fs::write(job, &variants[0].1).unwrap();
    let fresh = scenario.run(&["-w", "2", "--fresh", job]);
    fresh.expect_code(0);
    assert!(
        !fresh.stderr.contains("by an earlier run"),
        "{}",
        fresh.stderr
    );
    assert_exactly_once(&read_records(&output), 60);
    assert_eq!(normalized(&output), reference(30_000, 500));
    scenario.assert_no_survivors();
}

#[test]
fn a_second_supervisor_on_the_same_job_is_refused_naming_the_first() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "locked.toml",
        &squares_job(
            12_000,
            1000,
            &["--slow-ms", "200", "--stderr-lines", "1"],
            "",
        ),
    );
    let args = ["-w", "2", job.to_str().unwrap()];
    let mut first = scenario.start(&args);
    wait_for_chunk(&mut first, 0);
    let second = scenario.run(&args);
    second.expect_code(2);
    assert_stderr_contains(&second, &format!("(pid {})", first.pid()));
    assert!(
        announcements(&second.stderr).is_empty(),
        "the refused supervisor started workers:\n{}",
        second.stderr
    );
    // `check` says so too, and looking does not disturb the run.
    let check = scenario.run(&["check", job.to_str().unwrap()]);
    check.expect_code(0);
    let plan = String::from_utf8_lossy(&check.stdout);
    assert!(
        plan.contains(&format!(
            "resume: would refuse: another supervisor (pid {}) is running the job",
            first.pid()
        )),
        "{plan}"
    );
    first.signal(Signal::SIGTERM);
    first.finish().expect_code(143);
    scenario.assert_no_survivors();
    scenario.run(&args).expect_code(0);
    assert_exactly_once(&read_records(&scenario.path("locked.jsonl")), 12);
    scenario.assert_no_survivors();
}

fn failed_indices(scenario: &Scenario, job_name: &str) -> Vec<u64> {
    failed_file(scenario, job_name)
        .iter()
        .map(|f| f["index"].as_u64().unwrap())
        .collect()
}

#[test]
fn retry_failed_runs_only_the_failed_chunk_and_still_fails_while_the_fault_stays() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "retry.toml",
        &squares_job(
            10_000,
            1000,
            &["--fault", "fail:3", "--stderr-lines", "1"],
            "retries = 1",
        ),
    );
    let job = job.to_str().unwrap();
    scenario.run(&["-w", "2", job]).expect_code(1);
    assert_eq!(failed_indices(&scenario, "retry"), [3]);
    let output = scenario.path("retry.jsonl");
    let before = std::fs::read(&output).unwrap();
    assert_eq!(indices(&read_records(&output)), [0, 1, 2, 4, 5, 6, 7, 8, 9]);

    let retry = scenario.run(&["-w", "2", "--retry-failed", job]);
    retry.expect_code(1);
    let ran = announced_indices(&retry.stderr);
    assert_eq!(ran, BTreeSet::from([3]), "{}", retry.stderr);
    assert_eq!(failed_indices(&scenario, "retry"), [3]);
    assert!(
        std::fs::read(&output).unwrap() == before,
        "the output changed"
    );
    scenario.assert_no_survivors();
}

#[test]
fn retry_failed_appends_a_chunk_that_now_succeeds() {
    let scenario = Scenario::new();
    // Fails on attempts 1 and 2. `retries` is not part of the job's
    // fingerprint, so raising it lets a retry get past the fault.
    let text = |retries: u32| {
        squares_job(
            10_000,
            1000,
            &["--fault", "fail:3:3", "--stderr-lines", "1"],
            &format!("retries = {retries}"),
        )
    };
    let job = scenario.job("again.toml", &text(1));
    let job = job.to_str().unwrap();
    scenario.run(&["-w", "2", job]).expect_code(1);
    assert_eq!(failed_indices(&scenario, "again"), [3]);
    let output = scenario.path("again.jsonl");
    let before = std::fs::read(&output).unwrap();

    std::fs::write(job, text(2)).unwrap();
    let retry = scenario.run(&["-w", "2", "--retry-failed", job]);
    retry.expect_code(0);
    assert_eq!(
        announced_indices(&retry.stderr),
        BTreeSet::from([3]),
        "{}",
        retry.stderr
    );
    let after = std::fs::read(&output).unwrap();
    assert!(
        after.starts_with(&before),
        "the earlier output was not kept as it was"
    );
    let records = read_records(&output);
    assert_exactly_once(&records, 10);
    assert_eq!(records.last().unwrap().index, 3, "appended at the end");
    scenario.assert_no_survivors();

    let rerun = scenario.run(&["-w", "2", job]);
    rerun.expect_code(0);
    assert!(announcements(&rerun.stderr).is_empty(), "{}", rerun.stderr);
    assert!(std::fs::read(&output).unwrap() == after);
    scenario.assert_no_survivors();
}

#[test]
fn retry_failed_without_an_earlier_run_exits_2() {
    let scenario = Scenario::new();
    let job = scenario.job("never.toml", &squares_job(10_000, 1000, &[], ""));
    let finished = scenario.run(&["--retry-failed", job.to_str().unwrap()]);
    finished.expect_code(2);
    assert_stderr_contains(&finished, "--retry-failed");
    scenario.assert_no_survivors();
}

#[test]
fn max_chunks_replaces_a_worker_after_its_share() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "recycle.toml",
        &squares_job(12_000, 1000, &["--stderr-lines", "1"], "max_chunks = 3"),
    );
    let finished = scenario.run(&["-w", "1", job.to_str().unwrap()]);
    finished.expect_code(0);
    assert_exactly_once(&read_records(&scenario.path("recycle.jsonl")), 12);
    let mut per_worker: BTreeMap<u32, usize> = BTreeMap::new();
    for announced in announcements(&finished.stderr) {
        *per_worker.entry(announced.pid).or_default() += 1;
    }
    assert!(per_worker.len() >= 4, "{per_worker:?}");
    assert!(per_worker.values().all(|&n| n <= 3), "{per_worker:?}");
    assert_stderr_contains(&finished, "0 worker crashes");
    scenario.assert_no_survivors();
}

#[test]
fn a_memory_limit_fails_chunks_that_need_more_and_a_higher_one_lets_them_through() {
    let scenario = Scenario::new();
    let text = |limit: &str| {
        squares_job(
            3_000,
            1000,
            &["--alloc-mb", "256"],
            &format!("memory_limit = \"{limit}\"\nretries = 0"),
        )
    };
    let job = scenario.job("memory.toml", &text("64MiB"));
    let job = job.to_str().unwrap();
    scenario.run(&["-w", "2", job]).expect_code(1);
    let failed = failed_file(&scenario, "memory");
    assert_eq!(failed.len(), 3, "{failed:?}");
    for chunk in &failed {
        for attempt in chunk["attempts"].as_array().unwrap() {
            let error = attempt["error"].as_str().unwrap();
            assert!(error.contains("SIGABRT"), "{error}");
        }
    }
    scenario.assert_no_survivors();

    // The limit is not part of the job's fingerprint: raise it, retry.
    std::fs::write(job, text("2GiB")).unwrap();
    scenario
        .run(&["-w", "2", "--retry-failed", job])
        .expect_code(0);
    assert_exactly_once(&read_records(&scenario.path("memory.jsonl")), 3);
    scenario.assert_no_survivors();
}

#[test]
fn systemd_hears_ready_status_watchdog_stopping_and_extensions() {
    let scenario = Scenario::new();
    let mut notify = NotifySocket::bind(&scenario.path("notify"));
    let job = scenario.job(
        "unit.toml",
        &squares_job(
            20_000,
            1000,
            &["--slow-ms", "3000", "--stderr-lines", "1"],
            "",
        ),
    );
    let launch = Launch::default()
        .env("NOTIFY_SOCKET", notify.path().to_str().unwrap())
        .env("WATCHDOG_USEC", "200000")
        .watchdog_pid_is_self();
    let mut run = scenario.start_with(&["-w", "2", job.to_str().unwrap()], launch);
    notify.wait_for("READY=1", |m| m == "READY=1");
    notify.wait_for("STATUS= with the progress", |m| {
        m.starts_with("STATUS=") && m.contains("chunks done")
    });
    notify.wait_for("a watchdog ping", |m| m == "WATCHDOG=1");

    let busy = wait_for_busy_workers(&mut run, TAG, 2);
    for worker in &busy {
        // The worker is in the middle of a chunk, so it is alive.
        let environ = std::fs::read(format!("/proc/{}/environ", worker.pid)).unwrap();
        let names: Vec<String> = environ
            .split(|&b| b == 0)
            .filter_map(|var| var.split(|&b| b == b'=').next())
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect();
        assert!(
            names.iter().any(|n| n == "SUPERVISOR_TEST_MARK"),
            "{names:?}"
        );
        for inherited in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            assert!(
                !names.iter().any(|n| n == inherited),
                "worker {} inherited {inherited}",
                worker.pid
            );
        }
    }
    assert!(
        !notify.seen().iter().any(|m| m == "STOPPING=1"),
        "{:?}",
        notify.seen()
    );

    run.signal(Signal::SIGTERM);
    notify.wait_for("STOPPING=1", |m| m == "STOPPING=1");
    // The chunks in flight take seconds more: the drain asks for time.
    notify.wait_for("EXTEND_TIMEOUT_USEC=", |m| {
        m.strip_prefix("EXTEND_TIMEOUT_USEC=")
            .is_some_and(|usec| usec.parse::<u64>().is_ok_and(|usec| usec > 0))
    });
    notify.wait_for("STATUS= about the drain", |m| {
        m.starts_with("STATUS=draining")
    });
    let finished = run.finish();
    finished.expect_code(143);
    let seen = notify.seen();
    assert_eq!(
        seen.iter().filter(|m| *m == "READY=1").count(),
        1,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|m| *m == "STOPPING=1").count(),
        1,
        "{seen:?}"
    );
    let ready = seen.iter().position(|m| m == "READY=1").unwrap();
    let stopping = seen.iter().position(|m| m == "STOPPING=1").unwrap();
    assert!(ready < stopping, "{seen:?}");
    scenario.assert_no_survivors();
}

#[test]
fn a_finished_job_does_nothing_when_run_again_and_fresh_runs_it_all_again() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "done.toml",
        &squares_job(10_000, 1000, &["--stderr-lines", "1"], ""),
    );
    let job = job.to_str().unwrap();
    scenario.run(&["-w", "2", job]).expect_code(0);
    let output = scenario.path("done.jsonl");
    let before = std::fs::read(&output).unwrap();
    scenario.assert_no_survivors();

    let rerun = scenario.run(&["-w", "2", job]);
    rerun.expect_code(0);
    assert!(announcements(&rerun.stderr).is_empty(), "{}", rerun.stderr);
    assert_stderr_contains(&rerun, "10 of 10 chunks done (10 by an earlier run)");
    assert!(
        std::fs::read(&output).unwrap() == before,
        "the output changed"
    );
    scenario.assert_no_survivors();

    let fresh = scenario.run(&["-w", "2", "--fresh", job]);
    fresh.expect_code(0);
    assert!(
        announced_indices(&fresh.stderr).contains(&0),
        "{}",
        fresh.stderr
    );
    assert!(
        !fresh.stderr.contains("by an earlier run"),
        "{}",
        fresh.stderr
    );
    assert_exactly_once(&read_records(&output), 10);
    scenario.assert_no_survivors();
}

#[test]
fn a_run_to_stdout_keeps_no_journal_and_runs_everything_again() {
    let scenario = Scenario::new();
    let job = scenario.job(
        "piped.toml",
        &squares_job(
            10_000,
            1000,
            &["--stderr-lines", "1"],
            "[output]\npath = \"-\"",
        ),
    );
    let job = job.to_str().unwrap();
    for _ in 0..2 {
        let finished = scenario.run(&["-w", "2", job]);
        finished.expect_code(0);
        let records = crate::harness::parse_records(std::str::from_utf8(&finished.stdout).unwrap());
        assert_exactly_once(&records, 10);
        assert!(
            announced_indices(&finished.stderr).contains(&0),
            "{}",
            finished.stderr
        );
        assert!(!journal_path(&scenario, "piped").exists());
        scenario.assert_no_survivors();
    }
}
