//! The live workers as the run loop sees them: one handle per slot, through
//! which the dispatcher's spawn, send and kill reach a worker's process and
//! task, and what a spawn did, queued as an event for the dispatcher.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;
use protocol::SupervisorMessage;
use protocol::connection::{FrameBatch, FrameWriter};
use tokio::sync::{Semaphore, mpsc};
use tracing::warn;

use super::spawn::{signal_group, spawn_worker};
use super::stderr::{NO_CHUNK, Stream, Tail, forward_lines, forward_stderr};
use super::task::{BYTES_IN_FLIGHT, Control, Outbox, SPARE_BATCHES, SpareBatches, WorkerTask};
use super::update::WorkerUpdate;
use crate::config::WorkerSpec;
use crate::dispatcher::{Event, Generation};

/// A spare batch keeps at most this much: a batch grown for one large
/// answer is not worth keeping.
const SPARE_CAPACITY: usize = 256 << 10;

/// A live worker.
struct WorkerHandle {
    generation: Generation,
    pid: u32,
    /// Frames encoded since the last [`WorkerPool::flush`].
    pending: FrameWriter,
    outbox: Arc<Outbox>,
    control: mpsc::UnboundedSender<Control>,
}

pub struct WorkerPool {
    spec: WorkerSpec,
    handles: Vec<Option<WorkerHandle>>,
    updates: mpsc::Sender<WorkerUpdate>,
    /// What spawns did (`Spawned`, `SpawnFailed`), for the dispatcher to
    /// hear once it is done with the event that asked for them.
    spawn_events: VecDeque<Event<'static>>,
    /// Per slot, the chunk its worker works on now, for its stderr lines.
    busy: Vec<Arc<AtomicU64>>,
    spares: SpareBatches,
    /// Bytes of frames between the tasks and the run loop, bounded.
    in_flight: Arc<Semaphore>,
}

impl WorkerPool {
    /// A pool of `workers` empty slots whose tasks report to `updates`.
    pub fn new(spec: WorkerSpec, workers: usize, updates: mpsc::Sender<WorkerUpdate>) -> Self {
        Self {
            spec,
            handles: (0..workers).map(|_| None).collect(),
            updates,
            spawn_events: VecDeque::new(),
            busy: (0..workers)
                .map(|_| Arc::new(AtomicU64::new(NO_CHUNK)))
                .collect(),
            spares: Arc::new(Mutex::new(Vec::with_capacity(SPARE_BATCHES))),
            in_flight: Arc::new(Semaphore::new(BYTES_IN_FLIGHT)),
        }
    }

    /// Starts a worker in `slot`: its process, the task that watches it, and
    /// the task that logs its stderr. The outcome waits in
    /// [`WorkerPool::next_spawn_event`].
    pub fn spawn(&mut self, slot: usize, generation: Generation) {
        let started = match spawn_worker(&self.spec, slot) {
            Ok(started) => started,
            Err(error) => {
                self.spawn_events.push_back(Event::SpawnFailed {
                    slot,
                    generation,
                    error: error.to_string(),
                });
                return;
            }
        };
        self.busy[slot].store(NO_CHUNK, Ordering::Relaxed);
        let tail = Arc::new(Tail::default());
        tokio::spawn(forward_stderr(
            slot,
            started.pid,
            started.stderr,
            Arc::clone(&self.busy[slot]),
            Arc::clone(&tail),
        ));
        tokio::spawn(forward_lines(
            slot,
            started.pid,
            Stream::Stdout,
            started.stdout,
            Arc::clone(&self.busy[slot]),
        ));
        let outbox = Arc::new(Outbox::default());
        let (control, control_rx) = mpsc::unbounded_channel();
        tokio::spawn(
            WorkerTask {
                slot,
                generation,
                pid: started.pid,
                child: started.child,
                socket: started.socket,
                outbox: Arc::clone(&outbox),
                control: control_rx,
                updates: self.updates.clone(),
                spares: Arc::clone(&self.spares),
                in_flight: Arc::clone(&self.in_flight),
                tail,
            }
            .run(),
        );
        self.handles[slot] = Some(WorkerHandle {
            generation,
            pid: started.pid,
            pending: FrameWriter::new(),
            outbox,
            control,
        });
        self.spawn_events.push_back(Event::Spawned {
            slot,
            generation,
            pid: started.pid,
        });
    }

    /// What a spawn did, oldest first.
    pub fn next_spawn_event(&mut self) -> Option<Event<'static>> {
        self.spawn_events.pop_front()
    }

    /// Encodes a message for the worker; it goes out at the next flush.
    pub fn send(&mut self, slot: usize, generation: Generation, message: &SupervisorMessage) {
        let Some(handle) = self.handle(slot, generation) else {
            return;
        };
        // The message of every chunk skips serde.
        if let SupervisorMessage::Assign(assign) = message {
            return handle.pending.push_assign(assign);
        }
        if let Err(error) = handle.pending.push(message) {
            warn!(worker = slot, %error, "cannot encode a message");
        }
    }

    /// Hands every worker what was encoded for it since the last flush: one
    /// write per worker per turn of the run loop, whatever the turn sent.
    pub fn flush(&mut self) {
        for handle in self.handles.iter_mut().flatten() {
            if !handle.pending.is_empty() {
                handle.outbox.post(&mut handle.pending);
            }
        }
    }

    /// TERM to the worker's group, KILL after `grace`; its task reports the exit.
    pub fn kill(&mut self, slot: usize, generation: Generation, grace: Duration) {
        if let Some(handle) = self.handle(slot, generation) {
            // A closed queue means the task has ended: the worker is gone.
            let _ = handle.control.send(Control::Kill { grace });
        }
    }

    /// The third signal: no drain, no grace. Every worker's group is killed at once.
    pub fn kill_everything(&self) {
        for handle in self.handles.iter().flatten() {
            signal_group(handle.pid, Signal::SIGKILL);
        }
    }

    /// The worker of `generation` has exited: its handle goes, unless a
    /// successor already took the slot.
    pub fn forget(&mut self, slot: usize, generation: Generation) {
        if self.handle(slot, generation).is_some() {
            self.handles[slot] = None;
        }
    }

    /// A batch the run loop has read, kept for a task to fill again.
    /// One that grew for a large answer is let go instead.
    pub fn recycle(&self, batch: FrameBatch) {
        if batch.capacity() > SPARE_CAPACITY {
            return;
        }
        let mut spares = self.spares.lock().unwrap_or_else(PoisonError::into_inner);
        if spares.len() < SPARE_BATCHES {
            spares.push(batch);
        }
    }

    /// The chunk the worker in `slot` works on now, for its stderr lines.
    pub fn set_busy(&self, slot: usize, chunk: Option<u64>) {
        self.busy[slot].store(chunk.unwrap_or(NO_CHUNK), Ordering::Relaxed);
    }

    /// Live workers' pids by slot.
    pub fn pids(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.handles
            .iter()
            .enumerate()
            .filter_map(|(slot, handle)| handle.as_ref().map(|h| (slot, h.pid)))
    }

    /// Workers running now.
    pub fn alive(&self) -> usize {
        self.handles.iter().flatten().count()
    }

    fn handle(&mut self, slot: usize, generation: Generation) -> Option<&mut WorkerHandle> {
        self.handles[slot]
            .as_mut()
            .filter(|handle| handle.generation == generation)
    }
}
