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
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until};

use super::spawn::{describe_exit, signal_group};
use super::update::{UpdateKind, WorkerUpdate};
use crate::dispatcher::Generation;

/// How long to keep reading after the worker exited: anything that still holds
/// its socket open was in its process group and has just been killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// A worker whose socket closed usually exits a moment later: its exit status
/// explains more than "closed its connection" does, so it gets this long
/// before the disconnection is reported on its own.
const EXIT_AFTER_EOF: Duration = Duration::from_millis(200);

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
            let update = WorkerUpdate {
                slot: self.slot,
                generation: self.generation,
                kind,
            };
            let updates = self.updates.clone();
            // The run loop only goes away after every worker has exited.
            async move { updates.send(update).await.is_ok() }
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
        report(UpdateKind::Exited(status.unwrap_or_default())).await;
    }
}

fn take_spare(spares: &SpareBatches) -> FrameBatch {
    spares
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop()
        .unwrap_or_default()
}
