//! The squares-worker binary driven over a real socket by a hand-played supervisor.

#[path = "../common/harness.rs"]
mod harness;
mod lies;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::time::Duration;

use harness::{Reply, Worker, assign, cancel, welcome};
use protocol::message::Input;
use protocol::{PROTOCOL_VERSION, ProtocolError, SupervisorMessage, WORKER_FD_ENV};

const SQUARES_WORKER: &str = env!("CARGO_BIN_EXE_squares-worker");

/// Starts squares-worker as the supervisor does.
fn spawn(args: &[&str]) -> Worker {
    Worker::spawn(SQUARES_WORKER, args)
}

const MODULUS: u64 = 10_007;

/// The squares job's answer for `[start, end)`, computed the slow, obvious way.
fn expected(start: u64, end: u64, modulus: u64) -> String {
    (start..end)
        .map(|i| u128::from(i) * u128::from(i) % u128::from(modulus))
        .sum::<u128>()
        .to_string()
}

fn done(index: u64, start: u64, end: u64) -> Reply {
    Reply::done(index, &expected(start, end, MODULUS))
}

#[test]
fn answers_assigns_in_order_with_the_right_sums() {
    let mut w = spawn(&[]);
    let hello = w.handshake(Input::Range);
    assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
    assert_eq!(hello.pid, w.pid());

    let cuts = [0, 2_500_000, 5_000_000, 7_500_001, 10_000_000];
    let mut total = 0u128;
    for (index, pair) in (0..).zip(cuts.windows(2)) {
        w.send(&[assign(index, pair[0], pair[1], 1)]);
        let Some(Reply::Done(got, output)) = w.recv() else {
            panic!("chunk {index} was not done");
        };
        assert_eq!(got, index);
        let output = String::from_utf8(output).expect("UTF-8 output");
        total += output.parse::<u128>().expect("a decimal number");
    }
    assert_eq!(total, 49_259_937_824);

    w.send(&[SupervisorMessage::Stop]);
    assert_eq!(w.recv(), None);
    assert!(w.wait().success());
}

#[test]
fn many_assigns_sent_in_one_write_are_all_answered_in_order() {
    let mut w = spawn(&[]);
    w.handshake(Input::Range);
    let batch: Vec<_> = (0..2000)
        .map(|i| assign(i, i * 500, i * 500 + 500, 1))
        .collect();
    w.send(&batch);
    let replies = w.recv_n(2000);
    for (i, reply) in (0..).zip(replies) {
        assert_eq!(reply, done(i, i * 500, i * 500 + 500));
    }
    w.close();
    assert!(w.wait().success());
}

#[test]
fn params_choose_the_modulus() {
    let mut w = spawn(&[]);
    w.handshake_with(r#"{"modulus": 7, "unrelated": true}"#, Input::Range);
    w.send(&[assign(0, 0, 1000, 1)]);
    assert_eq!(w.recv(), Some(Reply::done(0, &expected(0, 1000, 7))));
}

#[test]
fn bad_params_fail_the_chunk() {
    let mut w = spawn(&[]);
    w.handshake_with(r#"{"modulus": 0}"#, Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    let Some(Reply::Failed(0, error)) = w.recv() else {
        panic!("expected Failed");
    };
    assert!(error.contains("modulus"), "{error}");
}

#[test]
fn a_fail_fault_answers_failed_with_the_message() {
    let mut w = spawn(&["--fault", "fail:1"]);
    w.handshake(Input::Range);
    w.send(&[
        assign(0, 0, 10, 1),
        assign(1, 10, 20, 2),
        assign(2, 20, 30, 1),
    ]);
    assert_eq!(
        w.recv_n(3),
        [
            done(0, 0, 10),
            Reply::Failed(1, "injected failure on chunk 1 attempt 2".into()),
            done(2, 20, 30),
        ]
    );
}

#[test]
fn a_quick_failure_is_sent_before_a_long_chunk_after_it_starts() {
    // Both in one write: batching must not hold the failure until the
    // hanging chunk ends (it never does), or the supervisor would time the
    // failed chunk as the hanging one.
    let mut w = spawn(&[
        "--fault",
        "fail:0",
        "--fault",
        "hang:1",
        "--stderr-lines",
        "1",
    ]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1), assign(1, 10, 20, 1)]);
    assert_eq!(
        w.recv(),
        Some(Reply::Failed(
            0,
            "injected failure on chunk 0 attempt 1".into()
        ))
    );
    w.wait_for_stderr("chunk 1 attempt 1");
    w.close();
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn a_crash_below_two_kills_the_first_attempt_and_spares_the_retry() {
    let args = ["--fault", "crash:5:2"];
    let mut first = spawn(&args);
    first.handshake(Input::Range);
    first.send(&[assign(5, 500, 600, 1)]);
    assert_eq!(first.recv(), None);
    assert_eq!(first.wait().signal(), Some(libc::SIGABRT));

    let mut second = spawn(&args);
    second.handshake(Input::Range);
    second.send(&[assign(5, 500, 600, 2)]);
    assert_eq!(second.recv(), Some(done(5, 500, 600)));
}

#[test]
fn an_exit_fault_exits_with_status_3() {
    let mut w = spawn(&["--fault", "exit:0"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().code(), Some(3));
}

#[test]
fn queued_chunks_that_are_cancelled_never_run_and_are_answered_in_order() {
    // Chunk 0 sleeps until it is cancelled, so chunks 1 and 2 are still
    // queued when their Cancels arrive.
    let mut w = spawn(&["--slow-ms", "600000", "--stderr-lines", "1"]);
    w.handshake(Input::Range);
    w.send(&[
        assign(0, 0, 10, 1),
        assign(1, 10, 20, 1),
        assign(2, 20, 30, 1),
        cancel(2),
        cancel(1),
        cancel(0),
    ]);
    assert_eq!(
        w.recv_n(3),
        [
            Reply::Cancelled(0),
            Reply::Cancelled(1),
            Reply::Cancelled(2)
        ]
    );

    w.send(&[SupervisorMessage::Stop]);
    assert_eq!(w.recv(), None);
    let (status, stderr) = w.wait_with_stderr();
    assert!(status.success());
    assert!(
        !stderr.contains("chunk 1 ") && !stderr.contains("chunk 2 "),
        "{stderr}"
    );
}

#[test]
fn cancelling_the_running_chunk_ends_it_early() {
    let mut w = spawn(&["--slow-ms", "600000", "--stderr-lines", "1"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    // Each line names the process, so a test can tell which one ran a chunk.
    let pid = w.pid();
    w.wait_for_stderr(&format!("squares-worker[{pid}]: chunk 0 attempt 1 line 1"));
    w.send(&[cancel(0)]);
    assert_eq!(w.recv(), Some(Reply::Cancelled(0)));

    w.send(&[assign(1, 10, 20, 1)]);
    w.wait_for_stderr("chunk 1 attempt 1");
    // A Cancel for a chunk already answered is ignored.
    w.send(&[cancel(0), cancel(1)]);
    assert_eq!(w.recv(), Some(Reply::Cancelled(1)));
}

#[test]
fn done_carries_the_handler_time_of_its_chunk() {
    const SLOW: Duration = Duration::from_millis(300);
    let mut w = spawn(&["--slow-ms", "300"]);
    w.handshake(Input::Range);
    // Sent together: the second waits in the queue while the first runs.
    w.send(&[assign(0, 0, 10, 1), assign(1, 10, 20, 1)]);
    for index in 0..2 {
        assert_eq!(w.recv(), Some(done(index, index * 10, index * 10 + 10)));
        let elapsed = w.last_elapsed();
        // Only a lower bound: the handler sleeps at least this long, while an
        // upper bound would be a guess about the machine's load.
        assert!(elapsed >= SLOW, "chunk {index}: {elapsed:?}");
    }
}

#[test]
fn stop_answers_every_queued_chunk_then_exits_0() {
    let mut w = spawn(&[]);
    w.handshake(Input::Range);
    let mut batch: Vec<_> = (0..5)
        .map(|i| assign(i, i * 1000, i * 1000 + 1000, 1))
        .collect();
    batch.push(SupervisorMessage::Stop);
    w.send(&batch);
    let want: Vec<_> = (0..5).map(|i| done(i, i * 1000, i * 1000 + 1000)).collect();
    assert_eq!(w.recv_n(5), want);
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn the_worker_exits_when_the_supervisor_goes_away() {
    let mut w = spawn(&["--slow-ms", "600000", "--stderr-lines", "1"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    w.wait_for_stderr("chunk 0 attempt 1");
    w.close();
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn the_worker_exits_even_when_its_handler_hangs() {
    let mut w = spawn(&["--fault", "hang:0", "--stderr-lines", "1"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    w.wait_for_stderr("chunk 0 attempt 1");
    w.close();
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn the_worker_exits_when_the_supervisor_goes_away_before_welcome() {
    let mut w = spawn(&[]);
    assert!(matches!(w.recv(), Some(Reply::Hello(_))));
    w.close();
    let (status, stderr) = w.wait_with_stderr();
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("closed the connection"), "{stderr}");
}

#[test]
fn a_version_mismatch_in_welcome_is_fatal() {
    let mut w = spawn(&[]);
    assert!(matches!(w.recv(), Some(Reply::Hello(_))));
    w.send(&[welcome(PROTOCOL_VERSION + 1, "{}", Input::Range)]);
    assert_eq!(w.recv(), None);
    let (status, stderr) = w.wait_with_stderr();
    assert!(!status.success());
    assert!(stderr.contains("version mismatch"), "{stderr}");
}

#[test]
fn work_before_welcome_is_fatal() {
    let mut w = spawn(&[]);
    assert!(matches!(w.recv(), Some(Reply::Hello(_))));
    w.send(&[assign(0, 0, 10, 1)]);
    let (status, stderr) = w.wait_with_stderr();
    assert!(!status.success());
    assert!(stderr.contains("before Welcome"), "{stderr}");
}

#[test]
fn a_frame_that_does_not_decode_is_fatal() {
    let mut w = spawn(&[]);
    w.handshake(Input::Range);
    w.send_raw(&[4, 0, 0, 0, 9, 0, 0, 0]);
    assert_eq!(w.recv(), None);
    let (status, stderr) = w.wait_with_stderr();
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("broke the protocol"), "{stderr}");
}

#[test]
fn garbage_fault_sends_a_frame_that_is_no_message() {
    let mut w = spawn(&["--fault", "garbage:0"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    assert!(matches!(w.try_recv(), Err(ProtocolError::Decode(_))));
}

#[test]
fn oversized_fault_announces_a_frame_beyond_the_limit() {
    let mut w = spawn(&["--fault", "oversized:0"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    assert!(matches!(
        w.try_recv(),
        Err(ProtocolError::FrameTooLarge {
            len: 0xFFFF_FFF0,
            ..
        })
    ));
}

#[test]
fn exit_at_start_exits_1_without_hello() {
    let mut w = spawn(&["--exit-at-start"]);
    assert_eq!(w.wait().code(), Some(1));
    assert_eq!(w.recv(), None);
}

/// Starts the worker with no socket and no fd variable, as someone trying it
/// by hand would.
fn spawn_unsupervised(args: &[&str]) -> Worker {
    let mut command = harness::command(SQUARES_WORKER, args);
    command.env_remove(WORKER_FD_ENV);
    let child = command.spawn().expect("spawn squares-worker");
    Worker::wrap(&command, child, None)
}

#[test]
fn without_a_supervisor_it_says_so() {
    let mut w = spawn_unsupervised(&[]);
    let (status, stderr) = w.wait_with_stderr();
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("not started by a supervisor: SUPERVISOR_WORKER_FD is not set"),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_is_left_to_the_supervisor() {
    let mut w = spawn(&[]);
    w.handshake(Input::Range);
    // SAFETY: kill only sends a signal.
    assert_eq!(unsafe { libc::kill(w.pid_t(), libc::SIGINT) }, 0);
    // The worker has to wake from its read to take this Assign, so the signal
    // is delivered before the answer comes back.
    w.send(&[assign(0, 0, 10, 1), SupervisorMessage::Stop]);
    assert_eq!(w.recv(), Some(done(0, 0, 10)));
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().code(), Some(0));
}

/// Sends SIGTERM to `pid` from a short-lived process of its own, so that the
/// sender is not the worker's parent; returns the sender's pid.
fn sigterm_from_a_stranger(pid: u32) -> u32 {
    let mut kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .spawn()
        .expect("spawn kill");
    let sender = kill.id();
    assert!(kill.wait().expect("wait for kill").success());
    sender
}

fn ignoring_line(sender: u32) -> String {
    format!(
        "squares-worker: ignoring SIGTERM from pid {sender}; the supervisor decides when workers stop"
    )
}

#[test]
fn a_sigterm_from_anyone_but_the_supervisor_is_ignored() {
    let mut w = spawn(&["--slow-ms", "600000", "--stderr-lines", "1"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    w.wait_for_stderr("chunk 0 attempt 1");

    // Mid-chunk, as when systemd signals every process of the service.
    let sender = sigterm_from_a_stranger(w.pid());
    w.wait_for_stderr(&ignoring_line(sender));
    // The chunk is still running: only the supervisor's Cancel ends it.
    w.send(&[cancel(0)]);
    assert_eq!(w.recv(), Some(Reply::Cancelled(0)));

    // And the worker goes on taking work until told to stop.
    let sender = sigterm_from_a_stranger(w.pid());
    w.wait_for_stderr(&ignoring_line(sender));
    w.send(&[assign(1, 10, 20, 1)]);
    w.wait_for_stderr("chunk 1 attempt 1");
    w.send(&[cancel(1), SupervisorMessage::Stop]);
    assert_eq!(w.recv(), Some(Reply::Cancelled(1)));
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn a_sigterm_from_anyone_else_leaves_the_answers_right() {
    let mut w = spawn(&[]);
    w.handshake(Input::Range);
    let sender = sigterm_from_a_stranger(w.pid());
    w.wait_for_stderr(&ignoring_line(sender));
    w.send(&[assign(0, 0, 1000, 1), SupervisorMessage::Stop]);
    assert_eq!(w.recv(), Some(done(0, 0, 1000)));
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn a_sigterm_from_the_supervisor_ends_a_hung_worker_at_once() {
    // This test process is the worker's parent, as the supervisor is.
    let mut w = spawn(&["--fault", "hang:0", "--stderr-lines", "1"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    w.wait_for_stderr("chunk 0 attempt 1");
    // To the whole group, as the supervisor's kill ladder does it.
    // SAFETY: killpg only sends a signal.
    assert_eq!(unsafe { libc::killpg(w.pid_t(), libc::SIGTERM) }, 0);
    assert_eq!(w.recv(), None);
    let (status, stderr) = w.wait_with_stderr();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    assert!(!stderr.contains("ignoring"), "{stderr}");
}

#[test]
fn a_sigterm_from_the_supervisor_ends_a_worker_that_ignored_another() {
    let mut w = spawn(&[]);
    w.handshake(Input::Range);
    let sender = sigterm_from_a_stranger(w.pid());
    w.wait_for_stderr(&ignoring_line(sender));
    // SAFETY: kill only sends a signal.
    assert_eq!(unsafe { libc::kill(w.pid_t(), libc::SIGTERM) }, 0);
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().signal(), Some(libc::SIGTERM));
}

/// The peak resident memory of a live process, from `/proc`.
fn peak_resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    kib * 1024
}

#[test]
fn alloc_mb_makes_the_memory_resident_on_every_chunk_and_still_answers() {
    let mut w = spawn(&["--alloc-mb", "64"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1), assign(1, 10, 20, 1)]);
    assert_eq!(w.recv_n(2), [done(0, 0, 10), done(1, 10, 20)]);
    // Touched pages count, reserved ones would not; the peak stays after
    // the memory is freed, and the worker is alive until Stop.
    let peak = peak_resident_bytes(w.pid());
    assert!(peak >= 64 << 20, "peak resident memory {peak} bytes");
    w.send(&[SupervisorMessage::Stop]);
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().code(), Some(0));
}

/// An address space comfortably above what the worker needs to start, and
/// far below what `--alloc-mb 1024` asks for.
const ADDRESS_SPACE: u64 = 512 << 20;

/// Starts the worker with its address space limited to `limit` bytes
/// (`RLIMIT_AS`), as `memory_limit` does.
fn spawn_with_address_space_limit(args: &[&str], limit: u64) -> Worker {
    let mut command = harness::command(SQUARES_WORKER, args);
    // SAFETY: the closure only calls setrlimit, which is async-signal-safe,
    // and allocates nothing.
    unsafe { command.pre_exec(move || limit_address_space(limit)) };
    Worker::spawn_command(command)
}

fn limit_address_space(bytes: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads the struct it is given and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn alloc_mb_past_the_address_space_limit_aborts_the_worker() {
    let mut w = spawn_with_address_space_limit(&["--alloc-mb", "1024"], ADDRESS_SPACE);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    assert_eq!(w.recv(), None);
    let (status, stderr) = w.wait_with_stderr();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}");
    assert!(
        stderr.contains("memory allocation of 1073741824 bytes failed"),
        "{stderr}"
    );
}

#[test]
fn alloc_mb_within_the_address_space_limit_is_fine() {
    let mut w = spawn_with_address_space_limit(&["--alloc-mb", "16"], ADDRESS_SPACE);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1), SupervisorMessage::Stop]);
    assert_eq!(w.recv(), Some(done(0, 0, 10)));
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn an_unknown_argument_is_a_usage_error() {
    let mut w = spawn_unsupervised(&["--no-such-switch"]);
    assert_eq!(w.wait().code(), Some(2));
    let mut w = spawn_unsupervised(&["--fault", "crash:x"]);
    assert_eq!(w.wait().code(), Some(2));
}
