//! What an `exec` command starts does not outlive it, even in a session of
//! its own (`setsid`), where killing a process group does not reach: ended
//! with its chunk, and with the run when the supervisor is killed.

use nix::sys::signal::Signal;

use crate::harness::Scenario;

/// Each chunk's command starts a `sleep` in a new session and returns at
/// once; the sleep holds none of its pipes, so nothing waits for it.
const DETACHING_JOB: &str = r#"
[source]
range = { start = 0, end = 6 }
chunk = 1

[worker]
exec = ["sh", "-c", "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo {index}"]

[output]
path = "out.txt"
format = "raw"
"#;

#[test]
fn what_a_command_leaves_in_a_session_of_its_own_is_ended_with_its_chunk() {
    let scenario = Scenario::new();
    let job = scenario.job("detach.toml", DETACHING_JOB);
    let finished = scenario.run(&["--workers", "2", job.to_str().unwrap()]);
    finished.expect_code(0);
    let output = std::fs::read_to_string(scenario.path("out.txt")).unwrap();
    assert_eq!(output, "0\n1\n2\n3\n4\n5\n");
    // Each chunk says what it ended, so a leaky command does not go unseen.
    let said = finished
        .stderr
        .lines()
        .filter(|line| line.contains("the command left 1 process"))
        .count();
    assert_eq!(said, 6, "{}", finished.stderr);
    scenario.assert_no_survivors();
}

#[test]
fn what_a_command_leaves_in_a_session_of_its_own_dies_with_a_killed_supervisor() {
    let scenario = Scenario::new();
    // The command itself runs on, so each worker is busy when the supervisor
    // is killed: a detached sleep and the command's own, two generations down.
    let job = scenario.job(
        "detach.toml",
        r#"
[source]
range = { start = 0, end = 2 }
chunk = 1

[worker]
exec = ["sh", "-c", "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo detached-{index}-started >&2; exec sleep 600"]

[output]
path = "out.txt"
format = "raw"
"#,
    );
    let mut run = scenario.start(&["--workers", "2", job.to_str().unwrap()]);
    for _ in 0..2 {
        run.wait_for_line("saying a chunk's command started", |line| {
            line.contains("-started")
        });
    }
    run.signal(Signal::SIGKILL);
    let finished = run.finish();
    assert_eq!(finished.code, None, "killed by a signal");
    // Workers, commands and the detached sleeps: none is left.
    scenario.assert_no_survivors();
}
