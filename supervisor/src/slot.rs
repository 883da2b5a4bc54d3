//! One task per running worker: it reads the worker's frames, watches for its
//! exit, and carries out the kill ladder (TERM to the group, grace, KILL).
//! It always reaps the process and reports `Exited` last, after every frame.

use std::time::Duration;

use nix::sys::signal::Signal;
use protocol::ProtocolError;
use protocol::connection::FrameBuffer;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::dispatcher::Generation;
use crate::process::{describe_exit, signal_group};

/// How long to keep reading after the worker exited: anything that still holds
/// its socket open was in its process group and has just been killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// A worker whose socket closed usually exits a moment later: its exit status
/// explains more than "closed its connection" does, so it gets this long
/// before the disconnection is reported on its own.
const EXIT_AFTER_EOF: Duration = Duration::from_millis(200);

/// What a worker's task reports to the run loop.
#[derive(Debug)]
pub struct News {
    pub slot: usize,
    pub generation: Generation,
    pub kind: NewsKind,
}

#[derive(Debug)]
pub enum NewsKind {
    /// One or more whole frames, headers included.
    Frames(Vec<u8>),
    ProtocolError(String),
    Disconnected,
    Exited(String),
}

/// Requests from the run loop to a worker's task.
#[derive(Debug)]
pub enum Control {
    Kill { grace: Duration },
}

pub struct Watch {
    pub slot: usize,
    pub generation: Generation,
    pub pid: u32,
    pub child: Child,
    pub reader: OwnedReadHalf,
    pub control: mpsc::UnboundedReceiver<Control>,
    pub news: mpsc::Sender<News>,
}

impl Watch {
    pub async fn run(mut self) {
        let mut frames = FrameBuffer::new();
        let mut reading = true;
        let mut status = None;
        let mut hard_kill_at: Option<Instant> = None;
        let mut stop_reading_at: Option<Instant> = None;
        let mut disconnect_at: Option<Instant> = None;
        let far = || Instant::now() + Duration::from_secs(86400 * 365);
        while reading || status.is_none() {
            tokio::select! {
                read = frames.fill_from_async(&mut self.reader), if reading => {
                    let kind = match read {
                        Ok(true) => match frames.complete_frames() {
                            Ok([]) => None,
                            Ok(batch) => Some(NewsKind::Frames(batch.to_vec())),
                            Err(error) => {
                                reading = false;
                                Some(NewsKind::ProtocolError(error.to_string()))
                            }
                        },
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
                            Some(NewsKind::ProtocolError(error.to_string()))
                        }
                    };
                    if let Some(kind) = kind {
                        self.report(kind).await;
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
                _ = sleep_until(hard_kill_at.unwrap_or_else(far)), if hard_kill_at.is_some() && status.is_none() => {
                    signal_group(self.pid, Signal::SIGKILL);
                    hard_kill_at = None;
                }
                _ = sleep_until(stop_reading_at.unwrap_or_else(far)), if stop_reading_at.is_some() && reading => {
                    reading = false;
                }
                _ = sleep_until(disconnect_at.unwrap_or_else(far)), if disconnect_at.is_some() && status.is_none() => {
                    disconnect_at = None;
                    self.report(NewsKind::Disconnected).await;
                }
            }
        }
        let status = status.unwrap_or_default();
        self.report(NewsKind::Exited(status)).await;
    }

    async fn report(&self, kind: NewsKind) {
        let news = News {
            slot: self.slot,
            generation: self.generation,
            kind,
        };
        // The run loop only goes away after every worker has exited.
        let _ = self.news.send(news).await;
    }
}

/// Writes what the run loop encoded for one worker, batching whatever queued
/// up meanwhile into one write.
pub async fn write_loop(mut writer: OwnedWriteHalf, mut queue: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(mut bytes) = queue.recv().await {
        while let Ok(more) = queue.try_recv() {
            bytes.extend_from_slice(&more);
        }
        // A failed write means the worker is gone; its task reports that.
        if writer.write_all(&bytes).await.is_err() {
            return;
        }
    }
}
