//! The exec-worker binary driven over a real socket by a hand-played
//! supervisor, running real commands.

mod files;
#[path = "../../../worker/tests/common/harness.rs"]
mod harness;
mod items;
mod procfs;

use std::os::unix::fs::PermissionsExt as _;

use files::{TempFile, file_input};
use harness::{Reply, Worker, assign, assign_from, cancel};
use procfs::{children, eventually, is_dead, process};
use protocol::SupervisorMessage;
use protocol::message::Input;

const EXEC_WORKER: &str = env!("CARGO_BIN_EXE_exec-worker");

/// Starts exec-worker as the supervisor does.
fn spawn(args: &[&str]) -> Worker {
    Worker::spawn(EXEC_WORKER, args)
}

/// Lowercase text of `len` bytes in lines of varying length, the same every time.
fn text(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            match state % 41 {
                0 => b'\n',
                1..=4 => b' ',
                n => b'a' + (n % 26) as u8,
            }
        })
        .collect()
}

#[test]
fn placeholders_are_filled_in_and_other_braces_are_left_alone() {
    let mut w = spawn(&[
        "--",
        "/bin/echo",
        "{index}",
        "{start}",
        "{end}",
        "{attempt}",
        "x{index}y",
    ]);
    w.handshake(Input::Range);
    w.send(&[assign(7, 700, 800, 1)]);
    assert_eq!(w.recv(), Some(Reply::done(7, "7 700 800 1 x7y\n")));

    let mut w = spawn(&[
        "--",
        "/bin/echo",
        "{print $1}",
        "{}",
        "{{index}}",
        "{first_line}",
        "{ index }",
    ]);
    w.handshake(Input::Range);
    w.send(&[assign_from(2, 20, 30, 3, 20)]);
    assert_eq!(
        w.recv(),
        Some(Reply::done(2, "{print $1} {} {2} 20 { index }\n"))
    );
}

#[test]
fn file_placeholders_name_the_input_and_the_byte_range() {
    let input = TempFile::new(b"one\ntwo\nthree\n");
    let path = input.path().to_str().unwrap();
    let mut w = spawn(&[
        "--",
        "/bin/echo",
        "{path}",
        "{offset}",
        "{length}",
        "{first_line}",
    ]);
    w.handshake(Input::Lines { path: path.into() });
    w.send(&[assign_from(1, 4, 14, 1, 1)]);
    assert_eq!(w.recv(), Some(Reply::done(1, &format!("{path} 4 10 1\n"))));
}

#[test]
fn a_file_placeholder_in_a_range_job_fails_the_chunk() {
    let mut w = spawn(&["--", "/bin/echo", "{path}"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    let error = w.recv().unwrap().failure(0);
    assert!(error.contains("{path} needs an input file"), "{error}");

    let mut w = spawn(&["--stdin", "chunk", "--", "/bin/cat"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1), SupervisorMessage::Stop]);
    let error = w.recv().unwrap().failure(0);
    assert!(
        error.contains("--stdin chunk needs an input file"),
        "{error}"
    );
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn stdin_chunk_feeds_exactly_the_chunk_bytes() {
    let contents = text(100_000);
    let input = TempFile::new(&contents);
    let mut w = spawn(&["--stdin", "chunk", "--", "/usr/bin/tr", "a-z", "A-Z"]);
    w.handshake(file_input(input.path()));
    w.send(&[
        assign(0, 1234, 5678, 1),
        assign(1, 0, 0, 1),
        assign(2, 99_000, 100_000, 1),
    ]);
    for (index, (start, end)) in [(0, (1234, 5678)), (1, (0, 0)), (2, (99_000, 100_000))] {
        let output = w.recv().unwrap().output(index);
        assert_eq!(
            output,
            contents[start..end].to_ascii_uppercase(),
            "chunk {index}"
        );
    }
}

#[test]
fn a_chunk_bigger_than_a_pipe_buffer_goes_through_both_ways() {
    const LEN: usize = 6 << 20;
    let contents = text(LEN + 1000);
    let input = TempFile::new(&contents);
    let mut w = spawn(&["--stdin", "chunk", "--", "/usr/bin/tr", "a-z", "A-Z"]);
    w.handshake(file_input(input.path()));
    w.send(&[assign(0, 500, 500 + LEN as u64, 1)]);
    let output = w.recv().unwrap().output(0);
    assert_eq!(output.len(), LEN);
    assert!(output == contents[500..500 + LEN].to_ascii_uppercase());
}

#[test]
fn wc_counts_the_lines_of_the_chunk() {
    let contents = text(200_000);
    let input = TempFile::new(&contents);
    let newline_after =
        |from: usize| from + contents[from..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let (start, end) = (newline_after(10_000), newline_after(150_000));
    let lines = contents[start..end].iter().filter(|&&b| b == b'\n').count();

    let mut w = spawn(&["--stdin", "chunk", "--", "/usr/bin/wc", "-l"]);
    w.handshake(Input::Lines {
        path: input.path().to_str().unwrap().into(),
    });
    w.send(&[assign(4, start as u64, end as u64, 1)]);
    let output = String::from_utf8(w.recv().unwrap().output(4)).unwrap();
    assert_eq!(output.trim().parse::<usize>().unwrap(), lines);
}

#[test]
fn a_command_that_reads_part_of_its_stdin_is_fine() {
    let contents = text(4 << 20);
    let input = TempFile::new(&contents);
    let len = contents.len() as u64;

    let mut w = spawn(&["--stdin", "chunk", "--", "/usr/bin/head", "-c", "10"]);
    w.handshake(file_input(input.path()));
    w.send(&[assign(0, 0, len, 1)]);
    assert_eq!(w.recv().unwrap().output(0), contents[..10]);

    let mut w = spawn(&["--stdin", "chunk", "--", "/bin/true"]);
    w.handshake(file_input(input.path()));
    w.send(&[assign(0, 0, len, 1)]);
    assert_eq!(w.recv(), Some(Reply::done(0, "")));
}

#[test]
fn a_file_that_ends_before_the_chunk_fails_it() {
    let input = TempFile::new(b"short\n");
    let mut w = spawn(&["--stdin", "chunk", "--", "/bin/cat"]);
    w.handshake(file_input(input.path()));
    w.send(&[assign(0, 0, 100, 1)]);
    let error = w.recv().unwrap().failure(0);
    assert!(
        error.contains("ends at byte 6, before the chunk's end at 100"),
        "{error}"
    );
}

#[test]
fn stdin_none_is_empty() {
    let mut w = spawn(&["--", "/bin/cat"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    assert_eq!(w.recv(), Some(Reply::done(0, "")));
}

#[test]
fn a_failing_chunk_fails_alone_and_the_worker_keeps_serving() {
    let script = r#"if [ "$1" = 3 ]; then echo boom >&2; exit 3; fi; echo ok"#;
    let mut w = spawn(&["--", "/bin/sh", "-c", script, "sh", "{index}"]);
    w.handshake(Input::Range);
    let batch: Vec<_> = (0..6).map(|i| assign(i, i * 10, i * 10 + 10, 1)).collect();
    w.send(&batch);
    for (index, reply) in (0..).zip(w.recv_n(6)) {
        if index == 3 {
            assert_eq!(
                reply.failure(3),
                "`/bin/sh` exited with status 3; stderr: boom"
            );
        } else {
            assert_eq!(reply, Reply::done(index, "ok\n"));
        }
    }
    w.send(&[assign(3, 30, 40, 2), SupervisorMessage::Stop]);
    assert!(w.recv().unwrap().failure(3).contains("boom"));
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn a_failure_without_stderr_says_only_the_status() {
    let mut w = spawn(&["--", "/bin/false"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    assert_eq!(
        w.recv().unwrap().failure(0),
        "`/bin/false` exited with status 1"
    );
}

#[test]
fn a_command_killed_by_a_signal_fails_naming_it() {
    let mut w = spawn(&[
        "--",
        "/bin/sh",
        "-c",
        "echo about to crash >&2; kill -SEGV $$",
    ]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    let error = w.recv().unwrap().failure(0);
    assert!(
        error.starts_with("`/bin/sh` was killed by SIGSEGV"),
        "{error}"
    );
    assert!(error.ends_with("; stderr: about to crash"), "{error}");
}

#[test]
fn a_command_that_cannot_run_fails_with_the_os_error() {
    let mut w = spawn(&["--", "/nonexistent/program", "{index}"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1), assign(1, 10, 20, 1)]);
    for index in 0..2 {
        let error = w.recv().unwrap().failure(index);
        assert!(
            error.starts_with("cannot run `/nonexistent/program`: No such file or directory"),
            "{error}"
        );
    }

    let script = TempFile::new(b"#!/bin/sh\necho hi\n");
    let mut permissions = std::fs::metadata(script.path()).unwrap().permissions();
    permissions.set_mode(0o644);
    std::fs::set_permissions(script.path(), permissions).unwrap();
    let mut w = spawn(&["--", script.path().to_str().unwrap()]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    let error = w.recv().unwrap().failure(0);
    assert!(error.contains("Permission denied"), "{error}");
}

#[test]
fn cancel_kills_a_running_command_and_leaves_no_process() {
    let mut w = spawn(&["--", "/bin/sleep", "60"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    let host = w.pid();
    let sleep = eventually("the worker starts sleep", || {
        children(host).into_iter().find(|p| p.comm == "sleep")
    });
    // In the worker's group, so the supervisor's kill of the group reaches it.
    assert_eq!(sleep.pgrp, host);

    w.send(&[cancel(0)]);
    assert_eq!(w.recv(), Some(Reply::Cancelled(0)));
    // Reaped before the answer went out: gone, not even a zombie.
    assert!(
        process(sleep.pid).is_none_or(|p| p.ppid != host),
        "{sleep:?}"
    );
    assert_eq!(children(host), []);

    // And the worker carries on. (Not with a second Assign in the same
    // write: the SDK would hold chunk 1's answer back while chunk 2 runs.)
    w.send(&[assign(1, 10, 20, 1), cancel(1)]);
    assert_eq!(w.recv(), Some(Reply::Cancelled(1)));
    w.send(&[assign(2, 20, 30, 1)]);
    eventually("the worker starts sleep again", || {
        children(host).into_iter().find(|p| p.comm == "sleep")
    });
    w.send(&[cancel(2), SupervisorMessage::Stop]);
    assert_eq!(w.recv(), Some(Reply::Cancelled(2)));
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn cancel_reaches_a_command_that_closed_its_output() {
    // Nothing left to read: only the exit or the Cancel can end the wait.
    let mut w = spawn(&["--", "/bin/sh", "-c", "exec >&- 2>&-; exec sleep 60"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    let host = w.pid();
    eventually("the worker starts sleep", || {
        children(host).into_iter().find(|p| p.comm == "sleep")
    });
    w.send(&[cancel(0)]);
    assert_eq!(w.recv(), Some(Reply::Cancelled(0)));
    assert_eq!(children(host), []);
}

#[test]
fn the_command_dies_with_the_worker() {
    let mut w = spawn(&["--", "/bin/sleep", "60"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    let host = w.pid();
    let sleep = eventually("the worker starts sleep", || {
        children(host).into_iter().find(|p| p.comm == "sleep")
    });
    // The worker alone, not its group: only PR_SET_PDEATHSIG can end sleep.
    w.kill();
    eventually("sleep dies with the worker", || {
        is_dead(sleep.pid).then_some(())
    });
}

#[test]
fn the_command_dies_when_the_supervisor_goes_away() {
    let mut w = spawn(&["--", "/bin/sleep", "60"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    let host = w.pid();
    let sleep = eventually("the worker starts sleep", || {
        children(host).into_iter().find(|p| p.comm == "sleep")
    });
    w.close();
    assert_eq!(w.wait().code(), Some(0));
    eventually("sleep dies with the worker", || {
        is_dead(sleep.pid).then_some(())
    });
}

#[test]
fn output_past_the_frame_limit_fails_the_chunk() {
    let mut w = spawn(&["--", "/usr/bin/head", "-c", "70000000", "/dev/zero"]);
    w.handshake(Input::Range);
    w.send(&[
        assign(0, 0, 10, 1),
        assign(1, 10, 20, 1),
        SupervisorMessage::Stop,
    ]);
    for index in 0..2 {
        assert_eq!(
            w.recv().unwrap().failure(index),
            "the command's output passed 67108836 bytes, more than one chunk's output may be (64 MiB); use smaller chunks"
        );
    }
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().code(), Some(0));
    assert_eq!(children(w.pid()), []);
}

#[test]
fn output_just_under_the_limit_is_done() {
    const MAX: usize = 67_108_836;
    let mut w = spawn(&["--", "/usr/bin/head", "-c", &MAX.to_string(), "/dev/zero"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    let output = w.recv().unwrap().output(0);
    assert_eq!(output.len(), MAX);
    assert!(output.iter().all(|&b| b == 0));
}

#[test]
fn stderr_lines_are_passed_on_as_they_come() {
    let script = "echo first line >&2; echo out; printf 'second line\\nno newline' >&2";
    let mut w = spawn(&["--", "/bin/sh", "-c", script]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    assert_eq!(w.wait_for_stderr("first"), "first line\n");
    assert_eq!(w.wait_for_stderr("second"), "second line\n");
    assert_eq!(w.wait_for_stderr("no newline"), "no newline\n");
    assert_eq!(w.recv(), Some(Reply::done(0, "out\n")));

    // A line comes through while the command still runs.
    let script = "echo started >&2; sleep 60";
    let mut w = spawn(&["--", "/bin/sh", "-c", script]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    w.wait_for_stderr("started");
    w.send(&[cancel(0)]);
    assert_eq!(w.recv(), Some(Reply::Cancelled(0)));
}

#[test]
fn the_command_gets_the_chunk_in_its_environment_and_not_the_socket() {
    let mut w = spawn(&["--", "/usr/bin/env"]);
    w.handshake(Input::Range);
    w.send(&[assign(7, 700, 800, 2)]);
    let output = String::from_utf8(w.recv().unwrap().output(7)).unwrap();
    let vars: Vec<_> = output.lines().collect();
    assert!(vars.contains(&"SUPERVISOR_CHUNK_INDEX=7"), "{output}");
    assert!(vars.contains(&"SUPERVISOR_CHUNK_ATTEMPT=2"), "{output}");
    assert!(!output.contains("SUPERVISOR_WORKER_FD"), "{output}");
}

/// The signal numbers set in a `SigIgn:`/`SigBlk:` mask of /proc/PID/status.
fn signal_mask(status: &str, field: &str) -> u64 {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

#[test]
fn the_command_starts_with_default_signal_handling_in_the_worker_group() {
    let mut w = spawn(&["--", "/bin/cat", "/proc/self/status", "/proc/self/stat"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    let output = String::from_utf8(w.recv().unwrap().output(0)).unwrap();
    let bit = |signal: i32| 1u64 << (signal - 1);
    // The worker ignores Ctrl-C with a handler, which exec resets; std
    // resets SIGPIPE, which Rust programs ignore, and the signal mask.
    let ignored = signal_mask(&output, "SigIgn:");
    assert_eq!(
        ignored & (bit(libc::SIGINT) | bit(libc::SIGPIPE)),
        0,
        "{ignored:x}"
    );
    assert_eq!(signal_mask(&output, "SigBlk:"), 0);

    let stat = output.lines().last().unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<_> = after_name.split_whitespace().collect();
    let (ppid, pgrp): (u32, u32) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    assert_eq!((ppid, pgrp), (w.pid(), w.pid()));
}

#[test]
fn stop_answers_every_chunk_then_exits_0() {
    let mut w = spawn(&["--", "/bin/echo", "chunk", "{index}"]);
    w.handshake(Input::Range);
    let mut batch: Vec<_> = (0..20).map(|i| assign(i, i, i + 1, 1)).collect();
    batch.push(SupervisorMessage::Stop);
    w.send(&batch);
    for (index, reply) in (0..).zip(w.recv_n(20)) {
        assert_eq!(reply, Reply::done(index, &format!("chunk {index}\n")));
    }
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().code(), Some(0));
    assert_eq!(children(w.pid()), []);
}

#[test]
fn a_missing_command_is_a_usage_error_before_hello() {
    for args in [
        &["/bin/echo"][..],
        &["--"],
        &["--", ""],
        &["--stdin", "all", "--", "/bin/cat"],
        &["--success-exit", "256", "--", "/bin/cat"],
        &["--success-exit", "", "--", "/bin/cat"],
        &["--", "/bin/echo", "{line}"],
    ] {
        let mut w = spawn(args);
        assert_eq!(w.recv(), None, "{args:?}");
        let (status, stderr) = w.wait_with_stderr();
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
}
