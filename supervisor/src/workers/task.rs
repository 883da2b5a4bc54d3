//! One task per running worker, one `select!` over everything that can
//! happen to it: frames to read, frames to write, its exit, a kill request,
//! and the kill ladder's timers (TERM to the group, grace, KILL). It always
//! reaps the process and reports `Exited` last, after every frame.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;
use protocol::ProtocolError;
use protocol::connection::{FrameBatch, FrameReader, FrameWriter};
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::{Instant, sleep_until};

use super::spawn::{describe_exit, signal_group};
use super::stderr::Tail;
use super::update::{UpdateKind, WorkerUpdate};
use crate::dispatcher::Generation;

/// How long to keep reading after the worker exited: anything that still holds
/// its socket open was in its process group and has just been killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// A worker whose socket closed usually exits a moment later: its exit status
/// explains more than "closed its connection" does, so it gets this long
/// before the disconnection is reported on its own.
const EXIT_AFTER_EOF: Duration = Duration::from_millis(200);

/// How long an exit waits for the last of the worker's stderr, which says
/// why it died; a descendant holding the pipe open cannot delay it more.
const LAST_WORDS: Duration = Duration::from_millis(500);

/// Frames the run loop encoded for one worker, handed to its task.
///
/// The loop appends to its own [`FrameWriter`] and moves it here once per
/// turn ([`Outbox::post`]); the task swaps it out. Both sides keep their
/// buffers, so a steady run allocates nothing to talk to its workers.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: Mutex<FrameWriter>,
    posted: Notify,
}

impl Outbox {
    /// Hands `frames` (emptied) to the task and wakes it.
    pub fn post(&self, frames: &mut FrameWriter) {
        self.lock().take_from(frames);
        self.posted.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FrameWriter> {
        // Only ever held for a swap: a poisoned lock cannot hide a torn state.
        self.frames.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Requests from the run loop to a worker's task.
#[derive(Debug)]
pub enum Control {
    /// TERM to the group now, KILL after `grace`.
    Kill { grace: Duration },
}

/// Batches the run loop has finished with, kept for the tasks to reuse.
pub type SpareBatches = Arc<Mutex<Vec<FrameBatch>>>;

/// Bytes of frames on their way from every task to the run loop at most: a
/// task with more waits before reading its socket again (and its worker
/// before writing), so a loop behind on large answers never holds more.
pub const BYTES_IN_FLIGHT: usize = 16 << 20;

/// Batches kept for reuse at most: enough for every worker to have one in
/// flight and one being filled.
pub const SPARE_BATCHES: usize = 64;

pub struct WorkerTask {
    pub slot: usize,
    pub generation: Generation,
    pub pid: u32,
    pub child: Child,
    pub socket: UnixStream,
    pub outbox: Arc<Outbox>,
    pub control: mpsc::UnboundedReceiver<Control>,
    pub updates: mpsc::Sender<WorkerUpdate>,
    pub spares: SpareBatches,
    /// [`BYTES_IN_FLIGHT`] permits, shared by every task.
    pub in_flight: Arc<Semaphore>,
    /// Its stderr's last lines, filled by the task forwarding them.
    pub tail: Arc<Tail>,
}

impl WorkerTask {
    pub async fn run(mut self) {
        let (mut read_half, mut write_half) = self.socket.split();
        let mut reader = FrameReader::new();
        let mut writing = FrameWriter::new();
        let mut reading = true;
        let mut can_write = true;
        let mut status = None;
        let mut hard_kill_at: Option<Instant> = None;
        let mut stop_reading_at: Option<Instant> = None;
        let mut disconnect_at: Option<Instant> = None;
        let far = || Instant::now() + Duration::from_secs(86400 * 365);
        let report = |kind| {
            let updates = self.updates.clone();
            let in_flight = Arc::clone(&self.in_flight);
            let (slot, generation) = (self.slot, self.generation);
            async move {
                let held = match &kind {
                    UpdateKind::Frames(batch) => {
                        let bytes = batch.payload_bytes().clamp(1, BYTES_IN_FLIGHT);
                        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
                        in_flight.acquire_many_owned(bytes).await.ok()
                    }
                    _ => None,
                };
                let update = WorkerUpdate {
                    slot,
                    generation,
                    kind,
                    held,
                };
                // The run loop only goes away after every worker has exited.
                updates.send(update).await.is_ok()
            }
        };
        while reading || status.is_none() {
            tokio::select! {
                read = reader.fill_from_async(&mut read_half), if reading => {
                    let kind = match read {
                        Ok(true) => {
                            let mut batch = take_spare(&self.spares);
                            let taken = reader.take_frames(&mut batch);
                            if !batch.is_empty() {
                                report(UpdateKind::Frames(batch)).await;
                            }
                            match taken {
                                Ok(()) => None,
                                Err(error) => {
                                    reading = false;
                                    Some(UpdateKind::Broken(error.to_string()))
                                }
                            }
                        }
                        // A worker that dies mid-write leaves a torn frame: that
                        // is a disconnection; its exit status tells the rest.
                        Ok(false) | Err(ProtocolError::TornFrame | ProtocolError::Io(_)) => {
                            reading = false;
                            if status.is_none() {
                                disconnect_at = Some(Instant::now() + EXIT_AFTER_EOF);
                            }
                            None
                        }
                        Err(error) => {
                            reading = false;
                            Some(UpdateKind::Broken(error.to_string()))
                        }
                    };
                    if let Some(kind) = kind {
                        report(kind).await;
                    }
                }
                written = writing.write_to_async(&mut write_half), if can_write && !writing.is_empty() => {
                    // A failed write means the worker is gone; its exit says how.
                    if written.is_err() {
                        can_write = false;
                        writing.clear();
                    }
                }
                () = self.outbox.posted.notified() => {
                    let mut posted = self.outbox.lock();
                    if can_write {
                        writing.take_from(&mut posted);
                    } else {
                        posted.clear();
                    }
                }
                exit = self.child.wait(), if status.is_none() => {
                    // Reap, then take down whatever it left behind in its group.
                    super::orphans::reaped(self.pid);
                    signal_group(self.pid, Signal::SIGKILL);
                    status = Some(match exit {
                        Ok(exit) => describe_exit(exit),
                        Err(error) => format!("could not be waited for: {error}"),
                    });
                    stop_reading_at = Some(Instant::now() + DRAIN_AFTER_EXIT);
                }
                Some(control) = self.control.recv() => match control {
                    Control::Kill { grace } => {
                        if status.is_none() && hard_kill_at.is_none() {
                            signal_group(self.pid, Signal::SIGTERM);
                            hard_kill_at = Some(Instant::now() + grace);
                        }
                    }
                },
                () = sleep_until(hard_kill_at.unwrap_or_else(far)), if hard_kill_at.is_some() && status.is_none() => {
                    signal_group(self.pid, Signal::SIGKILL);
                    hard_kill_at = None;
                }
                () = sleep_until(stop_reading_at.unwrap_or_else(far)), if stop_reading_at.is_some() && reading => {
                    reading = false;
                }
                () = sleep_until(disconnect_at.unwrap_or_else(far)), if disconnect_at.is_some() && status.is_none() => {
                    disconnect_at = None;
                    report(UpdateKind::Disconnected).await;
                }
            }
        }
        // What it said last is read by now, or soon: its group is dead.
        let _ = tokio::time::timeout(LAST_WORDS, self.tail.ended()).await;
        report(UpdateKind::Exited {
            status: status.unwrap_or_default(),
            last_words: self.tail.text(),
        })
        .await;
    }
}

fn take_spare(spares: &SpareBatches) -> FrameBatch {
    spares
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream as StdUnixStream;
    use std::process::Stdio;

    use protocol::SupervisorMessage;
    use protocol::WorkerMessage;
    use protocol::message::Cancelled;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::process::Command;

    use super::*;

    /// A safety net against a stuck test, never a timing assertion.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// A task watching `sh -c script` (in its own process group), whose
    /// socket's other end the test holds in the worker's place.
    struct Watched {
        updates: mpsc::Receiver<WorkerUpdate>,
        outbox: Arc<Outbox>,
        control: mpsc::UnboundedSender<Control>,
        peer: Option<UnixStream>,
        /// What the script prints.
        stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
        pid: u32,
    }

    fn watch(script: &str) -> Watched {
        use tokio::io::AsyncBufReadExt;
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let (ours, theirs) = StdUnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let (updates_tx, updates) = mpsc::channel(16);
        let (control, control_rx) = mpsc::unbounded_channel();
        let outbox = Arc::new(Outbox::default());
        tokio::spawn(
            WorkerTask {
                slot: 3,
                generation: 9,
                pid,
                child,
                socket: UnixStream::from_std(ours).unwrap(),
                outbox: Arc::clone(&outbox),
                control: control_rx,
                updates: updates_tx,
                spares: SpareBatches::default(),
                in_flight: Arc::new(Semaphore::new(BYTES_IN_FLIGHT)),
                tail: Arc::new(Tail::default()),
            }
            .run(),
        );
        Watched {
            updates,
            outbox,
            control,
            peer: Some(UnixStream::from_std(theirs).unwrap()),
            stdout,
            pid,
        }
    }

    impl Watched {
        async fn next(&mut self) -> UpdateKind {
            let update = tokio::time::timeout(PATIENCE, self.updates.recv())
                .await
                .expect("an update comes")
                .expect("the task reports until the worker exits");
            assert_eq!((update.slot, update.generation), (3, 9));
            update.kind
        }

        /// How the worker ended; a disconnection reported before it (the
        /// socket closed a moment before the exit) is passed over.
        async fn exit_status(&mut self) -> String {
            loop {
                match self.next().await {
                    UpdateKind::Exited { status, .. } => return status,
                    UpdateKind::Disconnected => {}
                    other => panic!("{other:?}"),
                }
            }
        }

        fn peer(&mut self) -> &mut UnixStream {
            self.peer.as_mut().expect("the socket is still open")
        }
    }

    fn frames_of(messages: &[WorkerMessage<'_>]) -> Vec<u8> {
        let mut frames = FrameWriter::new();
        for message in messages {
            frames.push(message).unwrap();
        }
        frames.pending().to_vec()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn frames_from_the_worker_arrive_whole_and_the_exit_comes_last() {
        let mut watched = watch("exec sleep 600");
        let bytes = frames_of(&[
            WorkerMessage::Cancelled(Cancelled { index: 1 }),
            WorkerMessage::Cancelled(Cancelled { index: 2 }),
        ]);
        // Split mid-frame: the task hands over only whole frames.
        watched.peer().write_all(&bytes[..5]).await.unwrap();
        watched.peer().write_all(&bytes[5..]).await.unwrap();
        let mut seen = 0;
        while seen < 2 {
            match watched.next().await {
                UpdateKind::Frames(batch) => seen += batch.len(),
                other => panic!("{other:?}"),
            }
        }
        watched.peer = None;
        watched
            .control
            .send(Control::Kill { grace: PATIENCE })
            .unwrap();
        assert_eq!(watched.exit_status().await, "killed by SIGTERM");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn posted_frames_reach_the_worker_in_order() {
        let mut watched = watch("exec sleep 600");
        let mut frames = FrameWriter::new();
        frames.push(&SupervisorMessage::Stop).unwrap();
        let first = frames.pending().to_vec();
        watched.outbox.post(&mut frames);
        assert!(frames.is_empty(), "posting empties the loop's writer");
        frames
            .push(&SupervisorMessage::Cancel(protocol::message::Cancel {
                index: 4,
            }))
            .unwrap();
        let second = frames.pending().to_vec();
        watched.outbox.post(&mut frames);
        let expected = [first, second].concat();
        let mut received = vec![0; expected.len()];
        tokio::time::timeout(PATIENCE, watched.peer().read_exact(&mut received))
            .await
            .expect("the frames arrive")
            .unwrap();
        assert_eq!(received, expected);
        watched
            .control
            .send(Control::Kill { grace: PATIENCE })
            .unwrap();
        watched.exit_status().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_worker_deaf_to_sigterm_is_killed_after_the_grace() {
        let mut watched = watch("trap '' TERM; echo deaf; while :; do sleep 1; done");
        // Once it says so, the trap is set.
        let said = tokio::time::timeout(PATIENCE, watched.stdout.next_line())
            .await
            .expect("the script starts");
        assert_eq!(said.unwrap().as_deref(), Some("deaf"));
        watched
            .control
            .send(Control::Kill {
                grace: Duration::from_millis(100),
            })
            .unwrap();
        assert_eq!(watched.exit_status().await, "killed by SIGKILL");
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(watched.pid as i32), None).is_err(),
            "the worker was reaped"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_closed_socket_is_a_disconnection_while_the_process_lives_on() {
        let mut watched = watch("exec sleep 600");
        watched.peer = None;
        assert!(matches!(watched.next().await, UpdateKind::Disconnected));
        watched
            .control
            .send(Control::Kill { grace: PATIENCE })
            .unwrap();
        watched.exit_status().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_oversized_frame_breaks_the_stream_after_the_frames_before_it() {
        let mut watched = watch("exec sleep 600");
        let mut bytes = frames_of(&[WorkerMessage::Cancelled(Cancelled { index: 1 })]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        watched.peer().write_all(&bytes).await.unwrap();
        match watched.next().await {
            UpdateKind::Frames(batch) => assert_eq!(batch.len(), 1),
            other => panic!("{other:?}"),
        }
        match watched.next().await {
            UpdateKind::Broken(error) => assert!(error.contains("exceeds the limit"), "{error}"),
            other => panic!("{other:?}"),
        }
        watched
            .control
            .send(Control::Kill { grace: PATIENCE })
            .unwrap();
        watched.exit_status().await;
    }
}
