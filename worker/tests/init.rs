//! `serve_with_init`: the setup step runs once with the params before the
//! first chunk, and a failing one ends the worker without an answer. The
//! worker is this test binary run again with only `init_worker` selected.

#[path = "common/harness.rs"]
#[allow(
    dead_code,
    reason = "the harness serves every worker's tests; these use a part"
)]
mod harness;

use std::io::Write as _;

use harness::{Reply, Worker, assign};
use protocol::SupervisorMessage;
use protocol::message::Input;

const CHILD_ENV: &str = "WORKER_INIT_TEST_CHILD";

#[derive(serde::Deserialize)]
struct Params {
    scale: u64,
    fail: bool,
}

struct Model {
    scale: u64,
    chunks: u64,
}

/// Not a test of its own: the worker the tests start. Does nothing unless
/// started by them.
#[test]
fn init_worker() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let served = worker::serve_with_init(
        |ctx| {
            let params: Params = ctx.params().map_err(|e| e.to_string())?;
            if params.fail {
                return Err(format!("cannot load the model for scale {}", params.scale));
            }
            Ok(Model {
                scale: params.scale,
                chunks: 0,
            })
        },
        |model, _ctx, chunk, out| {
            model.chunks += 1;
            write!(out, "{} {}", chunk.index * model.scale, model.chunks)
        },
    );
    match served {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("init-worker: {e}");
            std::process::exit(1);
        }
    }
}

fn spawn() -> Worker {
    let exe = std::env::current_exe().expect("the test binary");
    let mut command = harness::command(
        exe.to_str().expect("a UTF-8 path"),
        &["--exact", "init_worker", "--nocapture", "--test-threads=1"],
    );
    command.env(CHILD_ENV, "1");
    Worker::spawn_command(command)
}

#[test]
fn init_runs_once_with_the_params_and_its_value_reaches_every_chunk() {
    let mut w = spawn();
    w.handshake_with(r#"{"scale": 3, "fail": false}"#, Input::Range);
    w.send(&[
        assign(0, 0, 1, 1),
        assign(1, 1, 2, 1),
        assign(2, 2, 3, 1),
        SupervisorMessage::Stop,
    ]);
    assert_eq!(
        w.recv_n(3),
        [
            Reply::done(0, "0 1"),
            Reply::done(1, "3 2"),
            Reply::done(2, "6 3")
        ]
    );
    assert!(w.wait().success());
}

#[test]
fn a_failing_init_ends_the_worker_before_any_answer() {
    let mut w = spawn();
    w.handshake_with(r#"{"scale": 3, "fail": true}"#, Input::Range);
    // The worker may be gone already, its init failed: a chunk sent to it
    // then finds the socket closed, which is no failure of the test.
    let _ = w.try_send(&[assign(0, 0, 1, 1)]);
    assert_eq!(w.recv(), None);
    let (status, stderr) = w.wait_with_stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("init-worker: the worker's init failed: cannot load the model for scale 3"),
        "{stderr}"
    );
}
