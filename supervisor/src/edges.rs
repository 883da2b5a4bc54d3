//! The dispatcher's [`Effects`], carried out: spawn, send and kill by the
//! [`WorkerPool`], results and failures by the [`Store`], and what happened
//! by the [`Observers`].

use std::time::{Duration, Instant};

use protocol::SupervisorMessage;
use protocol::message::Assign;

use crate::dispatcher::{ChunkFailure, Dispatcher, Effects, Generation, ResultMeta, RunEvent};
use crate::observers::Observers;
use crate::store::Store;
use crate::workers::WorkerPool;

pub struct Edges {
    pub workers: WorkerPool,
    pub store: Store,
    pub observers: Observers,
}

impl Edges {
    /// Tells the dispatcher what the spawns it asked for did.
    pub fn deliver_spawn_events(&mut self, dispatcher: &mut Dispatcher) {
        while let Some(event) = self.workers.next_spawn_event() {
            dispatcher.handle(event, Instant::now(), self);
        }
    }
}

impl Effects for Edges {
    fn spawn(&mut self, slot: usize, generation: Generation) {
        self.workers.spawn(slot, generation);
    }

    fn send(&mut self, slot: usize, generation: Generation, message: &SupervisorMessage) {
        self.workers.send(slot, generation, message);
    }

    fn send_data(&mut self, slot: usize, generation: Generation, assign: &Assign, data: &[u8]) {
        self.workers.send_data(slot, generation, assign, data);
    }

    fn kill(&mut self, slot: usize, generation: Generation, grace: Duration) {
        self.workers.kill(slot, generation, grace);
    }

    fn write_result(&mut self, meta: &ResultMeta, output: &[u8]) -> Result<(), String> {
        self.store.write_result(meta, output)
    }

    fn write_failure(&mut self, failure: &ChunkFailure<'_>) -> Result<(), String> {
        self.store.write_failure(failure)
    }

    fn is_backlogged(&self) -> bool {
        self.store.is_backlogged()
    }

    fn observe(&mut self, event: &RunEvent<'_>) {
        // Which chunk a worker is on is for the worker pool (it names the
        // chunk its stderr lines belong to); no observer reports it.
        if let RunEvent::WorkerBusy { slot, chunk } = *event {
            self.workers.set_busy(slot, chunk);
            return;
        }
        self.observers.observe(event);
    }
}
