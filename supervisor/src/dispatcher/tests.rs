//! The dispatcher driven by hand-made events: no processes, no clock.

use std::time::{Duration, Instant};

use fixedbitset::FixedBitSet;
use protocol::message::{Cancelled, Done, Failed, Hello};
use protocol::{PROTOCOL_VERSION, SupervisorMessage, WorkerMessage};

use super::state::RunPhase;
use super::*;
use crate::chunks::{ChunkSource, Next, RangeChunks};

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Spawn(usize, Generation),
    Send(usize, Generation, SupervisorMessage),
    Kill(usize, Generation),
    Result(u64, u32, String),
    Failure(u64, Vec<AttemptError>),
}

#[derive(Default)]
struct Recorder {
    calls: Vec<Call>,
    /// `(index, seconds)` of every result written.
    seconds: Vec<(u64, f64)>,
    retried: usize,
    fail_writes: bool,
    /// What `is_backlogged` answers.
    backlogged: bool,
}

impl Recorder {
    fn take(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.calls)
    }

    fn results(&self) -> Vec<u64> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Result(index, ..) => Some(*index),
                _ => None,
            })
            .collect()
    }
}

impl Effects for Recorder {
    fn spawn(&mut self, slot: usize, generation: Generation) {
        self.calls.push(Call::Spawn(slot, generation));
    }
    fn send(&mut self, slot: usize, generation: Generation, message: &SupervisorMessage) {
        self.calls
            .push(Call::Send(slot, generation, message.clone()));
    }
    fn kill(&mut self, slot: usize, generation: Generation, _grace: Duration) {
        self.calls.push(Call::Kill(slot, generation));
    }
    fn write_result(&mut self, meta: &ResultMeta, output: &[u8]) -> Result<(), String> {
        if self.fail_writes {
            return Err("disk full".into());
        }
        let output = String::from_utf8(output.to_vec()).unwrap();
        self.seconds.push((meta.index, meta.seconds));
        self.calls
            .push(Call::Result(meta.index, meta.attempt, output));
        Ok(())
    }
    fn write_failure(&mut self, failure: &ChunkFailure<'_>) -> Result<(), String> {
        self.calls
            .push(Call::Failure(failure.chunk.index, failure.errors.to_vec()));
        Ok(())
    }
    fn observe(&mut self, event: &RunEvent<'_>) {
        if matches!(event, RunEvent::ChunkRetried { .. }) {
            self.retried += 1;
        }
    }
    fn is_backlogged(&self) -> bool {
        self.backlogged
    }
}

/// A dispatcher with a hand-driven clock and a recorder.
struct Harness {
    dispatcher: Dispatcher,
    fx: Recorder,
    now: Instant,
    generations: Vec<Generation>,
    /// (generation, index) pairs already answered.
    answered: std::collections::HashSet<(Generation, u64)>,
}

impl Harness {
    fn new(settings: Settings, chunks: u64) -> Self {
        let source = Box::new(RangeChunks::new(0, chunks * 10, 10));
        Self::with_source(settings, source, None)
    }

    fn with_source(
        settings: Settings,
        source: Box<dyn ChunkSource>,
        skip: Option<FixedBitSet>,
    ) -> Self {
        let now = Instant::now();
        let workers = settings.workers;
        let mut harness = Self {
            dispatcher: Dispatcher::new(settings, source, skip, now),
            fx: Recorder::default(),
            now,
            generations: vec![0; workers],
            answered: Default::default(),
        };
        harness.dispatcher.start(now, &mut harness.fx);
        harness.track_spawns();
        harness
    }

    fn track_spawns(&mut self) {
        for call in &self.fx.calls {
            if let Call::Spawn(slot, generation) = call {
                self.generations[*slot] = *generation;
            }
        }
    }

    fn event(&mut self, event: Event<'_>) {
        self.dispatcher.handle(event, self.now, &mut self.fx);
        self.track_spawns();
    }

    fn message(&mut self, slot: usize, message: WorkerMessage<'_>) {
        let generation = self.generations[slot];
        self.event(Event::Message {
            slot,
            generation,
            message,
        });
    }

    fn hello(&mut self, slot: usize) {
        self.message(
            slot,
            WorkerMessage::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                pid: 100 + slot as u32,
            }),
        );
    }

    fn done(&mut self, slot: usize, index: u64) {
        self.done_in(slot, index, 0);
    }

    /// A `Done` whose worker says the chunk took `elapsed_ns`.
    fn done_in(&mut self, slot: usize, index: u64, elapsed_ns: u64) {
        self.answered.insert((self.generations[slot], index));
        let output = format!("out{index}");
        self.message(
            slot,
            WorkerMessage::Done(Done {
                index,
                elapsed_ns,
                output: output.as_bytes(),
            }),
        );
    }

    fn exited(&mut self, slot: usize) {
        let generation = self.generations[slot];
        self.event(Event::Exited {
            slot,
            generation,
            status: "signal 9".into(),
            last_words: String::new(),
        });
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.event(Event::Tick);
    }

    /// Chunks assigned to `slot` by the calls so far, oldest first.
    fn assigned(&self, slot: usize) -> Vec<(u64, u32)> {
        self.fx
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Send(s, _, SupervisorMessage::Assign(a)) if *s == slot => {
                    Some((a.index, a.attempt))
                }
                _ => None,
            })
            .collect()
    }

    /// Answers every chunk assigned to the worker in `slot` until the
    /// dispatcher sends it no more.
    fn serve_all(&mut self, slot: usize) {
        self.serve_all_but(slot, None);
    }

    /// As [`Harness::serve_all`], leaving one chunk unanswered.
    fn serve_all_but(&mut self, slot: usize, held: Option<u64>) {
        loop {
            let generation = self.generations[slot];
            let open: Vec<u64> = self
                .fx
                .calls
                .iter()
                .filter_map(|c| match c {
                    Call::Send(s, g, SupervisorMessage::Assign(a))
                        if *s == slot && *g == generation =>
                    {
                        Some(a.index)
                    }
                    _ => None,
                })
                .filter(|index| !self.answered.contains(&(generation, *index)))
                .filter(|index| Some(*index) != held)
                .collect();
            if open.is_empty() {
                return;
            }
            for index in open {
                self.done(slot, index);
            }
        }
    }

    fn stopped(&self) -> Vec<usize> {
        self.fx
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Send(s, _, SupervisorMessage::Stop) => Some(*s),
                _ => None,
            })
            .collect()
    }
}

fn settings(workers: usize) -> Settings {
    Settings {
        timeout: Some(Duration::from_secs(5)),
        ..Settings::new(workers)
    }
}

#[test]
fn a_clean_run_welcomes_dispatches_writes_in_order_and_stops() {
    let mut h = Harness::new(settings(2), 20);
    assert_eq!(h.fx.take(), [Call::Spawn(0, 1), Call::Spawn(1, 2)]);
    h.hello(0);
    h.hello(1);
    let calls = h.fx.take();
    assert!(
        matches!(&calls[0], Call::Send(0, 1, SupervisorMessage::Welcome(w)) if w.worker_id == 0)
    );
    h.fx.calls = calls;
    // Before any chunk has been timed, one chunk per worker.
    assert_eq!(h.assigned(0), [(0, 1)]);
    assert_eq!(h.assigned(1), [(1, 1)]);
    // Worker 1 answers first: its result waits for chunk 0.
    h.done(1, 1);
    assert!(h.fx.results().is_empty());
    h.done(0, 0);
    assert_eq!(h.fx.results(), [0, 1]);
    // Instant answers mean tiny chunks: the pipeline widens.
    assert!(h.assigned(0).len() + h.assigned(1).len() > 4);
    h.serve_all(0);
    h.serve_all(1);
    assert_eq!(h.fx.results(), (0..20).collect::<Vec<_>>());
    assert_eq!(h.stopped(), [0, 1]);
    assert_eq!(h.dispatcher.outcome(), None, "workers still running");
    h.exited(0);
    h.exited(1);
    assert_eq!(
        h.dispatcher.outcome(),
        Some(Outcome::Finished { failed: 0 })
    );
    assert_eq!(h.dispatcher.counts().done, 20);
}

#[test]
fn a_crash_costs_one_attempt_and_the_worker_is_replaced() {
    let mut h = Harness::new(settings(1), 3);
    h.hello(0);
    h.exited(0);
    let calls = h.fx.take();
    assert!(calls.contains(&Call::Spawn(0, 2)), "{calls:?}");
    h.hello(0);
    assert_eq!(h.assigned(0), [(0, 2)]);
    h.serve_all(0);
    assert_eq!(h.fx.results(), [0, 1, 2]);
    assert!(h.fx.calls.contains(&Call::Result(0, 2, "out0".into())));
    assert_eq!(h.dispatcher.counts().retried, 1);
    assert_eq!(h.dispatcher.counts().crashes, 1);
}

#[test]
fn a_worker_dying_with_several_chunks_blames_none_and_reruns_each_alone() {
    let mut h = Harness::new(settings(1), 100);
    h.hello(0);
    h.done(0, 0);
    let queued = h.assigned(0).len() - 1;
    assert!(queued > 3, "pipeline should have widened: {queued}");
    h.fx.take();
    h.exited(0);
    assert_eq!(h.dispatcher.counts().retried, 0, "nobody is blamed");
    h.hello(0);
    // Suspects go one at a time, with nothing else beside them.
    for index in 1..=queued as u64 {
        assert_eq!(h.assigned(0), [(index, 1)]);
        h.fx.take();
        h.done(0, index);
    }
    assert!(
        h.assigned(0).len() > 1,
        "the pipeline widens again after the suspects"
    );
}

#[test]
fn a_suspect_that_kills_its_worker_alone_is_blamed() {
    let mut h = Harness::new(settings(1), 100);
    h.hello(0);
    h.done(0, 0);
    h.exited(0);
    h.hello(0);
    h.fx.take();
    h.exited(0);
    // A second crash in a row waits out a backoff before the restart.
    h.advance(Duration::from_secs(5));
    h.hello(0);
    assert_eq!(h.assigned(0), [(1, 2)]);
    assert_eq!(h.dispatcher.counts().retried, 1);
}

#[test]
fn a_chunk_out_of_attempts_is_failed_with_every_error_and_the_run_goes_on() {
    let mut h = Harness::new(settings(1), 4);
    h.hello(0);
    for _attempt in 1..=3 {
        h.message(
            0,
            WorkerMessage::Failed(Failed {
                index: 0,
                error: "boom",
            }),
        );
    }
    h.answered.insert((1, 0));
    let failure =
        h.fx.calls
            .iter()
            .find_map(|c| match c {
                Call::Failure(index, errors) => Some((*index, errors.clone())),
                _ => None,
            })
            .expect("a failure");
    assert_eq!(failure.0, 0);
    assert_eq!(
        failure.1.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(failure.1.iter().all(|e| e.error == "boom"));
    h.serve_all(0);
    assert_eq!(h.fx.results(), [1, 2, 3]);
    h.exited(0);
    assert_eq!(
        h.dispatcher.outcome(),
        Some(Outcome::Finished { failed: 1 })
    );
    assert_eq!(h.fx.retried, 2);
}

#[test]
fn a_hung_chunk_is_killed_at_the_timeout_and_retried() {
    let mut h = Harness::new(settings(1), 2);
    h.hello(0);
    assert_eq!(
        h.dispatcher.next_deadline(),
        Some(h.now + Duration::from_secs(5))
    );
    h.advance(Duration::from_secs(4));
    assert!(!h.fx.calls.iter().any(|c| matches!(c, Call::Kill(..))));
    h.advance(Duration::from_secs(1));
    assert!(h.fx.calls.contains(&Call::Kill(0, 1)));
    h.exited(0);
    h.hello(0);
    assert_eq!(h.assigned(0).last(), Some(&(0, 2)));
}

#[test]
fn time_the_supervisor_did_not_run_is_nobody_s_timeout() {
    let mut h = Harness::new(settings(1), 2);
    h.hello(0);
    h.advance(Duration::from_secs(4));
    // Stopped for a minute: the chunk's clock moves on with the pause.
    h.now += Duration::from_secs(60);
    h.dispatcher.postpone_deadlines(Duration::from_secs(60));
    h.event(Event::Tick);
    assert!(!h.fx.calls.iter().any(|c| matches!(c, Call::Kill(..))));
    assert_eq!(
        h.dispatcher.next_deadline(),
        Some(h.now + Duration::from_secs(1))
    );
    h.advance(Duration::from_secs(1));
    assert!(
        h.fx.calls.contains(&Call::Kill(0, 1)),
        "the timeout still holds"
    );
}

#[test]
fn a_worker_that_never_says_hello_is_killed() {
    let mut h = Harness::new(settings(1), 2);
    h.advance(Duration::from_secs(31));
    assert!(h.fx.calls.contains(&Call::Kill(0, 1)));
}

#[test]
fn crashing_faster_than_the_restart_limit_aborts() {
    let mut settings = settings(2);
    settings.restart_max = 3;
    let mut h = Harness::new(settings, 10);
    // One worker started: the other's deaths before hello are crashes, not
    // a program that cannot start.
    h.hello(1);
    for _ in 0..4 {
        h.exited(0);
        // Past any backoff, so the slot is restarted before it crashes again.
        h.advance(Duration::from_secs(5));
    }
    let outcome_reason = match &h.dispatcher.phase {
        RunPhase::Ending(Outcome::Aborted { reason }) => reason.clone(),
        other => panic!("expected an abort, got {other:?}"),
    };
    assert!(outcome_reason.contains("4 times"), "{outcome_reason}");
    assert!(
        outcome_reason.contains("the limit is 3"),
        "{outcome_reason}"
    );
    assert!(h.fx.calls.iter().any(|c| matches!(c, Call::Kill(1, _))));
    h.exited(1);
    assert!(matches!(
        h.dispatcher.outcome(),
        Some(Outcome::Aborted { .. })
    ));
}

#[test]
fn crashes_outside_the_window_are_forgiven() {
    let mut settings = settings(1);
    settings.restart_max = 1;
    let mut h = Harness::new(settings, 10);
    h.hello(0);
    for _ in 0..5 {
        h.exited(0);
        h.advance(Duration::from_secs(61));
    }
    assert_eq!(h.dispatcher.phase, RunPhase::Running);
}

#[test]
fn an_answer_for_a_chunk_it_was_not_given_gets_the_worker_killed() {
    let mut h = Harness::new(settings(1), 3);
    h.hello(0);
    h.done(0, 2);
    assert!(h.fx.calls.contains(&Call::Kill(0, 1)));
    h.exited(0);
    h.hello(0);
    assert_eq!(h.assigned(0).last(), Some(&(0, 2)));
}

#[test]
fn news_from_a_replaced_worker_is_ignored() {
    let mut h = Harness::new(settings(1), 3);
    h.hello(0);
    h.exited(0);
    h.fx.take();
    h.event(Event::Message {
        slot: 0,
        generation: 1,
        message: WorkerMessage::Done(Done {
            index: 0,
            elapsed_ns: 0,
            output: b"stale",
        }),
    });
    h.event(Event::Exited {
        slot: 0,
        generation: 1,
        status: "again".into(),
        last_words: String::new(),
    });
    assert!(h.fx.take().is_empty());
}

#[test]
fn a_protocol_version_mismatch_aborts_naming_both_versions() {
    let mut h = Harness::new(settings(1), 3);
    h.message(
        0,
        WorkerMessage::Hello(Hello {
            protocol_version: 99,
            pid: 1,
        }),
    );
    h.exited(0);
    let Some(Outcome::Aborted { reason }) = h.dispatcher.outcome() else {
        panic!("expected an abort");
    };
    assert!(reason.contains("version 99"), "{reason}");
    assert!(
        reason.contains(&format!("version {PROTOCOL_VERSION}")),
        "{reason}"
    );
}

#[test]
fn a_slow_chunk_holds_ordered_dispatch_within_the_reorder_window() {
    let mut settings = settings(2);
    settings.reorder_capacity = 8;
    let mut h = Harness::new(settings, 100);
    h.hello(0);
    h.hello(1);
    // Worker 0 sits on chunk 0; everything else is answered at once.
    for _ in 0..3 {
        h.serve_all_but(0, Some(0));
        h.serve_all(1);
    }
    let highest = (0..2)
        .flat_map(|slot| h.assigned(slot))
        .map(|(index, _)| index)
        .max()
        .unwrap();
    assert!(highest < 8, "dispatched {highest} past the window");
    assert!(h.fx.results().is_empty());
    h.done(0, 0);
    assert_eq!(h.fx.results(), (0..8).collect::<Vec<_>>());
}

#[test]
fn completion_order_writes_as_results_come() {
    let mut settings = settings(2);
    settings.ordered = false;
    let mut h = Harness::new(settings, 4);
    h.hello(0);
    h.hello(1);
    h.done(1, 1);
    assert_eq!(h.fx.results(), [1]);
}

#[test]
fn a_cancelled_answer_nobody_asked_for_costs_an_attempt_and_the_worker() {
    let mut settings = settings(1);
    settings.retries = 1;
    let mut h = Harness::new(settings, 2);
    h.hello(0);
    h.message(0, WorkerMessage::Cancelled(Cancelled { index: 0 }));
    assert_eq!(h.fx.retried, 1, "the attempt is spent");
    assert!(h.fx.calls.contains(&Call::Kill(0, 1)), "the worker lied");
    h.exited(0);
    // Its successor lies again: out of attempts, the chunk fails for good
    // rather than going round for ever.
    h.hello(0);
    h.message(0, WorkerMessage::Cancelled(Cancelled { index: 0 }));
    let failures: Vec<_> =
        h.fx.calls
            .iter()
            .filter_map(|c| match c {
                Call::Failure(index, errors) => Some((*index, errors.len())),
                _ => None,
            })
            .collect();
    assert_eq!(failures, [(0, 2)]);
}

#[test]
fn a_write_error_aborts_the_run() {
    let mut h = Harness::new(settings(1), 2);
    h.fx.fail_writes = true;
    h.hello(0);
    h.done(0, 0);
    assert!(h.fx.calls.contains(&Call::Kill(0, 1)));
    h.exited(0);
    let Some(Outcome::Aborted { reason }) = h.dispatcher.outcome() else {
        panic!("expected an abort");
    };
    assert!(reason.contains("disk full"), "{reason}");
}

#[test]
fn a_worker_that_ignores_stop_is_killed_after_the_grace() {
    let mut h = Harness::new(settings(1), 1);
    h.hello(0);
    h.done(0, 0);
    assert_eq!(h.stopped(), [0]);
    h.advance(Duration::from_secs(11));
    assert!(h.fx.calls.contains(&Call::Kill(0, 1)));
    h.exited(0);
    assert_eq!(
        h.dispatcher.outcome(),
        Some(Outcome::Finished { failed: 0 })
    );
    assert_eq!(h.dispatcher.counts().crashes, 0);
}

#[test]
fn a_results_seconds_and_the_pipeline_come_from_the_workers_timing() {
    let mut h = Harness::new(settings(1), 100);
    h.hello(0);
    // The supervisor's clock sees 3 s pass; the worker says 1.5 ms of work.
    h.now += Duration::from_secs(3);
    h.done_in(0, 0, 1_500_000);
    assert_eq!(h.fx.seconds, [(0, 0.0015)]);
    // 1.5 ms chunks: one running plus three to cover the 5 ms queue target,
    // where the supervisor's 3 s would have kept one.
    assert_eq!(h.assigned(0).len(), 1 + 4);
    // The timeout still runs on the supervisor's clock, from the answer.
    assert_eq!(
        h.dispatcher.next_deadline(),
        Some(h.now + Duration::from_secs(5))
    );
}

fn sends_of(h: &Harness, pick: impl Fn(&SupervisorMessage) -> bool) -> usize {
    h.fx.calls
        .iter()
        .filter(|c| matches!(c, Call::Send(_, _, m) if pick(m)))
        .count()
}

#[test]
fn a_signal_drains_no_chunk_starts_and_chunks_in_flight_finish() {
    let mut h = Harness::new(settings(2), 100);
    h.hello(0);
    h.hello(1);
    h.event(Event::Signal { number: 15 });
    assert!(h.dispatcher.is_draining());
    let assigned_before = sends_of(&h, |m| matches!(m, SupervisorMessage::Assign(_)));
    h.done(0, 0);
    assert_eq!(
        sends_of(&h, |m| matches!(m, SupervisorMessage::Assign(_))),
        assigned_before,
        "nothing starts after the signal"
    );
    assert!(h.stopped().is_empty(), "chunk 1 is still in flight");
    h.done(1, 1);
    assert_eq!(h.fx.results(), [0, 1]);
    assert_eq!(h.stopped(), [0, 1]);
    h.exited(0);
    h.exited(1);
    assert_eq!(
        h.dispatcher.outcome(),
        Some(Outcome::Drained { signal: 15 })
    );
    assert_eq!(h.dispatcher.counts().crashes, 0);
}

#[test]
fn a_drain_past_its_timeout_cancels_then_kills() {
    let mut s = settings(1);
    s.drain_timeout = Duration::from_secs(3);
    s.timeout = None;
    let mut h = Harness::new(s, 10);
    h.hello(0);
    h.event(Event::Signal { number: 2 });
    h.advance(Duration::from_secs(3));
    assert_eq!(
        sends_of(&h, |m| matches!(m, SupervisorMessage::Cancel(_))),
        1
    );
    assert!(!h.fx.calls.iter().any(|c| matches!(c, Call::Kill(..))));
    h.advance(Duration::from_secs(11));
    assert!(h.fx.calls.contains(&Call::Kill(0, 1)));
    h.exited(0);
    assert_eq!(h.dispatcher.outcome(), Some(Outcome::Drained { signal: 2 }));
    assert_eq!(
        h.dispatcher.counts().retried,
        0,
        "a drained chunk costs no attempt"
    );
}

#[test]
fn a_cancelled_answer_during_a_drain_ends_it() {
    let mut h = Harness::new(settings(1), 10);
    h.hello(0);
    h.event(Event::Signal { number: 15 });
    h.message(0, WorkerMessage::Cancelled(Cancelled { index: 0 }));
    assert_eq!(h.stopped(), [0]);
    assert_eq!(h.dispatcher.counts().cancelled, 1);
    h.exited(0);
    assert_eq!(
        h.dispatcher.outcome(),
        Some(Outcome::Drained { signal: 15 })
    );
}

#[test]
fn a_second_signal_cancels_and_kills_at_once() {
    let mut h = Harness::new(settings(2), 10);
    h.hello(0);
    h.hello(1);
    h.event(Event::Signal { number: 15 });
    h.event(Event::Signal { number: 15 });
    assert_eq!(
        sends_of(&h, |m| matches!(m, SupervisorMessage::Cancel(_))),
        2
    );
    assert!(h.fx.calls.contains(&Call::Kill(0, 1)));
    assert!(h.fx.calls.contains(&Call::Kill(1, 2)));
    h.exited(0);
    h.exited(1);
    assert_eq!(
        h.dispatcher.outcome(),
        Some(Outcome::Drained { signal: 15 })
    );
    assert_eq!(h.dispatcher.counts().cancelled, 2);
    assert!(
        !h.fx
            .calls
            .iter()
            .any(|c| matches!(c, Call::Spawn(_, g) if *g > 2))
    );
}

#[test]
fn a_worker_is_replaced_after_max_chunks_without_counting_a_crash() {
    let mut s = settings(1);
    s.max_chunks = 2;
    let mut h = Harness::new(s, 5);
    h.hello(0);
    h.serve_all(0);
    assert!(h.assigned(0).len() > 1);
    assert_eq!(h.stopped(), [0]);
    h.exited(0);
    assert!(h.fx.calls.contains(&Call::Spawn(0, 2)));
    assert_eq!(h.dispatcher.counts().crashes, 0);
    h.hello(0);
    h.serve_all(0);
    assert_eq!(h.fx.results(), [0, 1, 2, 3]);
}

#[test]
fn repeated_crashes_back_off_before_the_restart() {
    let mut h = Harness::new(settings(1), 5);
    h.hello(0);
    h.exited(0);
    assert!(
        h.fx.calls.contains(&Call::Spawn(0, 2)),
        "the first crash restarts at once"
    );
    h.fx.take();
    h.exited(0);
    assert!(h.fx.take().is_empty(), "the second waits");
    let until = h.dispatcher.next_deadline().unwrap();
    let wait = until - h.now;
    assert!(
        wait >= Duration::from_millis(50) && wait <= Duration::from_millis(150),
        "{wait:?}"
    );
    h.now = until;
    h.event(Event::Tick);
    assert!(h.fx.calls.contains(&Call::Spawn(0, 3)));
}

#[test]
fn chunks_settled_by_an_earlier_run_are_skipped_in_order() {
    let mut skip = FixedBitSet::with_capacity(6);
    skip.insert_range(0..2);
    skip.insert(3);
    let source = Box::new(RangeChunks::new(0, 60, 10));
    let mut h = Harness::with_source(settings(1), source, Some(skip));
    h.hello(0);
    h.serve_all(0);
    assert_eq!(h.fx.results(), [2, 4, 5]);
    assert_eq!(h.dispatcher.counts().skipped, 3);
    assert_eq!(h.stopped(), [0]);
}

/// A source that yields `good` chunks of a range, then fails to read.
struct FailingSource {
    inner: RangeChunks,
    good: u64,
    error: Option<String>,
}

impl ChunkSource for FailingSource {
    fn next_chunk(&mut self) -> Next {
        if self.good == 0 {
            self.error = Some("input.txt: Input/output error".to_owned());
            return Next::End;
        }
        self.good -= 1;
        self.inner.next_chunk()
    }

    fn total(&self) -> Option<u64> {
        self.inner.total()
    }

    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

#[test]
fn an_input_that_cannot_be_read_aborts_the_run_instead_of_finishing_it() {
    let source = Box::new(FailingSource {
        inner: RangeChunks::new(0, 60, 10),
        good: 2,
        error: None,
    });
    let mut h = Harness::with_source(settings(1), source, None);
    h.hello(0);
    h.serve_all(0);
    // The abort comes as soon as the source fails: what was written stays
    // (the journal keeps it for a rerun), what was in flight is abandoned.
    assert!(
        [&[0][..], &[0, 1][..]].contains(&h.fx.results().as_slice()),
        "{:?}",
        h.fx.results()
    );
    assert!(h.fx.calls.contains(&Call::Kill(0, 1)));
    h.exited(0);
    let Some(Outcome::Aborted { reason }) = h.dispatcher.outcome() else {
        panic!("expected an abort, got {:?}", h.dispatcher.outcome());
    };
    assert_eq!(
        reason,
        "cannot read the input: input.txt: Input/output error"
    );
}

/// A range whose chunks are handed out only as the test releases them, as
/// a source reading ahead on a thread would: `Later` until then.
struct Trickle {
    inner: RangeChunks,
    released: std::rc::Rc<std::cell::Cell<u64>>,
    taken: u64,
}

impl ChunkSource for Trickle {
    fn next_chunk(&mut self) -> Next {
        if self.taken == self.released.get() {
            return match self.inner.total() {
                Some(total) if self.taken == total => Next::End,
                _ => Next::Later,
            };
        }
        self.taken += 1;
        self.inner.next_chunk()
    }

    fn total(&self) -> Option<u64> {
        self.inner.total()
    }
}

#[test]
fn a_source_with_nothing_ready_holds_the_end_until_its_chunks_come() {
    let released = std::rc::Rc::new(std::cell::Cell::new(1));
    let source = Box::new(Trickle {
        inner: RangeChunks::new(0, 30, 10),
        released: std::rc::Rc::clone(&released),
        taken: 0,
    });
    let mut h = Harness::with_source(settings(1), source, None);
    h.hello(0);
    h.serve_all(0);
    assert_eq!(h.fx.results(), [0]);
    assert!(h.stopped().is_empty(), "the source is not done, only slow");
    assert_eq!(h.dispatcher.outcome(), None);
    released.set(3);
    h.event(Event::SourceReady);
    h.serve_all(0);
    assert_eq!(h.fx.results(), [0, 1, 2]);
    assert_eq!(h.stopped(), [0]);
}

#[test]
fn a_worker_s_error_is_kept_within_bounds_its_start_and_end_whole() {
    let mut settings = settings(1);
    settings.retries = 0;
    let mut h = Harness::new(settings, 1);
    h.hello(0);
    let error = format!("start{}é{}end", "x".repeat(100_000), "y".repeat(100_000));
    h.message(
        0,
        WorkerMessage::Failed(Failed {
            index: 0,
            error: &error,
        }),
    );
    let kept =
        h.fx.calls
            .iter()
            .find_map(|c| match c {
                Call::Failure(0, errors) => Some(errors[0].error.clone()),
                _ => None,
            })
            .expect("the chunk failed for good");
    assert!(
        kept.len() <= super::types::MAX_ERROR_BYTES + 64,
        "{}",
        kept.len()
    );
    assert!(
        kept.starts_with("start") && kept.ends_with("end"),
        "{kept:.80}"
    );
    assert!(kept.contains("bytes cut)…"), "the cut is said");
}

#[test]
fn past_max_failed_dispatch_stops_what_is_in_flight_finishes_and_the_run_aborts() {
    let mut settings = settings(1);
    settings.retries = 0;
    settings.max_failed = Some(crate::config::MaxFailed::Count(1));
    let mut h = Harness::new(settings, 20);
    h.hello(0);
    // The first failure is within the limit; the worker gets more.
    let fail = |h: &mut Harness, index: u64| {
        h.answered.insert((h.generations[0], index));
        h.message(
            0,
            WorkerMessage::Failed(Failed {
                index,
                error: "boom",
            }),
        )
    };
    fail(&mut h, 0);
    h.done(0, 1);
    assert_eq!(h.dispatcher.outcome(), None);
    let sent_before = h.assigned(0).len();
    fail(&mut h, 2);
    // Past the limit: nothing more is sent, what was in flight still counts.
    assert_eq!(h.assigned(0).len(), sent_before);
    assert!(h.dispatcher.is_draining());
    h.serve_all(0);
    assert_eq!(h.stopped(), [0]);
    h.exited(0);
    let Some(Outcome::Aborted { reason }) = h.dispatcher.outcome() else {
        panic!("{:?}", h.dispatcher.outcome())
    };
    assert!(reason.contains("max_failed"), "{reason}");
    assert!(reason.starts_with("2 chunks failed for good"), "{reason}");
}

#[test]
fn a_share_of_max_failed_is_judged_once_enough_chunks_finished() {
    let mut settings = settings(1);
    settings.retries = 0;
    // 25%: judged from the fourth finished chunk on.
    settings.max_failed = Some(crate::config::MaxFailed::Share {
        per_million: 250_000,
    });
    let mut h = Harness::new(settings, 20);
    h.hello(0);
    h.message(
        0,
        WorkerMessage::Failed(Failed {
            index: 0,
            error: "boom",
        }),
    );
    assert!(!h.dispatcher.is_draining(), "one of one is no sample");
    for index in 1..3 {
        h.done(0, index);
    }
    assert!(!h.dispatcher.is_draining());
    h.message(
        0,
        WorkerMessage::Failed(Failed {
            index: 3,
            error: "boom",
        }),
    );
    // 2 of 4 finished failed: past 25%.
    assert!(h.dispatcher.is_draining());
}

#[test]
fn a_worker_that_dies_before_any_has_said_hello_ends_the_run_at_once_with_its_last_words() {
    let mut h = Harness::new(settings(2), 10);
    let generation = h.generations[0];
    h.event(Event::Exited {
        slot: 0,
        generation,
        status: "exit status 1".into(),
        last_words:
            "Traceback (most recent call last):\nModuleNotFoundError: No module named 'numpyy'"
                .into(),
    });
    let Some(reason) = (match &h.dispatcher.phase {
        RunPhase::Ending(Outcome::Aborted { reason }) => Some(reason.clone()),
        _ => None,
    }) else {
        panic!("no abort: {:?}", h.dispatcher.phase)
    };
    assert!(
        reason.starts_with("worker 0 could not start (exit status 1); its last words on stderr:\n"),
        "{reason}"
    );
    assert!(reason.ends_with("No module named 'numpyy'"), "{reason}");
    assert_eq!(
        h.fx.calls
            .iter()
            .filter(|c| matches!(c, Call::Spawn(..)))
            .count(),
        2,
        "nothing was restarted"
    );
}

#[test]
fn no_chunk_starts_while_settled_ones_wait_for_the_disk() {
    let mut h = Harness::new(Settings::new(1), 10);
    h.hello(0);
    let first = h.assigned(0);
    assert_eq!(first.len(), 1);
    h.fx.backlogged = true;
    h.done(0, first[0].0);
    assert_eq!(h.assigned(0).len(), 1, "a chunk started on a backlog");
    // The run loop's tick once the disk caught up starts dispatch again.
    h.fx.backlogged = false;
    h.advance(Duration::from_millis(20));
    assert!(h.assigned(0).len() > 1);
}
