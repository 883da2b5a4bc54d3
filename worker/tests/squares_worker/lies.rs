//! The lies squares-worker tells on the wire with its own serve loop: each
//! one's bytes and their order, as a supervisor receives them.

use protocol::message::Input;
use protocol::{PROTOCOL_VERSION, ProtocolError, SupervisorMessage};

use super::{done, spawn};
use crate::harness::{Reply, assign, cancel};

#[test]
fn twice_answers_the_chunk_twice_and_goes_on() {
    let mut w = spawn(&["--fault", "twice:0"]);
    w.handshake(Input::Range);
    w.send(&[
        assign(0, 0, 10, 1),
        assign(1, 10, 20, 1),
        SupervisorMessage::Stop,
    ]);
    assert_eq!(
        w.recv_n(3),
        [done(0, 0, 10), done(0, 0, 10), done(1, 10, 20)]
    );
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn reorder_sends_the_next_answer_first() {
    let mut w = spawn(&["--fault", "reorder:1"]);
    w.handshake(Input::Range);
    w.send(&[
        assign(0, 0, 10, 1),
        assign(1, 10, 20, 1),
        assign(2, 20, 30, 1),
        SupervisorMessage::Stop,
    ]);
    assert_eq!(
        w.recv_n(3),
        [done(0, 0, 10), done(2, 20, 30), done(1, 10, 20)]
    );
    assert_eq!(w.recv(), None);
}

#[test]
fn a_held_answer_goes_out_before_the_worker_stops() {
    let mut w = spawn(&["--fault", "reorder:0"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1), SupervisorMessage::Stop]);
    assert_eq!(w.recv(), Some(done(0, 0, 10)));
    assert_eq!(w.recv(), None);
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn each_bent_answer_is_a_frame_that_does_not_decode() {
    for kind in ["trailing", "short", "overlong", "badutf8", "empty"] {
        let fault = format!("{kind}:0");
        let mut w = spawn(&["--fault", &fault]);
        w.handshake(Input::Range);
        w.send(&[assign(0, 0, 10, 1)]);
        match w.try_recv() {
            Err(ProtocolError::Decode(_) | ProtocolError::TrailingBytes(_)) => {}
            other => panic!("{kind}: expected a payload that does not decode, got {other:?}"),
        }
    }
}

#[test]
fn bigerror_fails_the_chunk_with_the_largest_error_a_frame_holds() {
    let mut w = spawn(&["--fault", "bigerror:0:2"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1), assign(0, 0, 10, 2)]);
    let Some(Reply::Failed(0, error)) = w.recv() else {
        panic!("expected chunk 0 to fail");
    };
    assert_eq!(error.len(), protocol::frame::MAX_FRAME_LEN as usize - 20);
    assert_eq!(w.recv(), Some(done(0, 0, 10)));
}

#[test]
fn torn_ends_the_stream_inside_a_frame() {
    let mut w = spawn(&["--fault", "torn:0"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    assert!(matches!(w.try_recv(), Err(ProtocolError::TornFrame)));
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn timeless_claims_the_longest_time_there_is() {
    let mut w = spawn(&["--fault", "timeless:0"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1)]);
    assert_eq!(w.recv(), Some(done(0, 0, 10)));
    assert_eq!(w.last_elapsed(), std::time::Duration::from_nanos(u64::MAX));
}

#[test]
fn close_ends_the_stream_but_not_the_process() {
    let mut w = spawn(&["--fault", "close:1"]);
    w.handshake(Input::Range);
    w.send(&[assign(0, 0, 10, 1), assign(1, 10, 20, 1)]);
    assert_eq!(w.recv(), Some(done(0, 0, 10)));
    assert_eq!(w.recv(), None, "the stream ends");
    // The end of the stream came after the shutdown, which the worker makes
    // only to hang on: it is alive, and stays so until killed.
    assert!(w.is_running(), "the worker exited");
}

#[test]
fn the_own_loop_answers_a_queued_chunk_that_was_cancelled_as_cancelled() {
    let mut w = spawn(&["--fault", "twice:9"]);
    w.handshake(Input::Range);
    w.send(&[
        assign(0, 0, 10, 1),
        assign(1, 10, 20, 1),
        cancel(1),
        cancel(0),
        SupervisorMessage::Stop,
    ]);
    // Chunk 0 was queued too when the cancel came: one write brought all.
    assert_eq!(w.recv_n(2), [Reply::Cancelled(0), Reply::Cancelled(1)]);
    assert_eq!(w.recv(), None);
}

#[test]
fn greetings_that_lie() {
    let mut w = spawn(&["--speak-version", "7"]);
    match w.recv() {
        Some(Reply::Hello(hello)) => assert_eq!(hello.protocol_version, 7),
        other => panic!("expected Hello, got {other:?}"),
    }

    let mut w = spawn(&["--answer-before-hello"]);
    assert_eq!(w.recv(), Some(Reply::done(0, "0")));
    match w.recv() {
        Some(Reply::Hello(hello)) => assert_eq!(hello.protocol_version, PROTOCOL_VERSION),
        other => panic!("expected Hello, got {other:?}"),
    }
}
