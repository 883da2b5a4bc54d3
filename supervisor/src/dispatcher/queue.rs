//! The work not yet done: fresh chunks from the source, chunks waiting for
//! another attempt, the chunks an earlier run settled, the reorder window
//! that bounds how far dispatch may run ahead, and how many chunks each
//! worker is given at once.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use fixedbitset::FixedBitSet;

use super::reorder::{Reorder, Spill};
use super::settings::Settings;
use super::types::{AttemptError, ResultMeta};
use crate::chunks::{ChunkSource, ChunkSpec, Next};

/// One attempt of a chunk, at a worker or waiting for one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Work {
    pub chunk: ChunkSpec,
    pub attempt: u32,
    /// When it was last sent to a worker.
    pub sent_at: Instant,
    /// It was outstanding on a worker that died with several chunks, so which
    /// one killed it is unknown. A suspect runs alone on a worker: should that
    /// worker die too, the blame is certain.
    pub suspect: bool,
    /// The supervisor asked the worker to give it up: only then may it
    /// answer `Cancelled`.
    pub cancel_sent: bool,
}

/// Chunks outstanding per worker at most when the source sizes its chunks
/// as they are taken: one running and one waiting, so that the next chunk is
/// at hand yet was cut knowing nearly all there is to know.
const SELF_SIZED_WINDOW: usize = 2;

pub(super) struct WorkQueue {
    source: Box<dyn ChunkSource>,
    /// A fresh chunk taken from the source that the reorder window did not yet admit.
    peeked: Option<ChunkSpec>,
    /// The source said [`Next::End`].
    source_done: bool,
    /// Chunks waiting for another attempt, lowest index first so that ordered
    /// output is held up as little as possible.
    retries: BTreeMap<u64, Work>,
    /// Errors of chunks that have failed at least once and are not settled.
    errors: HashMap<u64, Vec<AttemptError>>,
    /// Chunks an earlier run settled: never dispatched, passed over in order.
    skip: Option<FixedBitSet>,
    reorder: Option<Reorder>,
    /// Moving average of chunk durations as the workers time them; sizes the
    /// pipeline to each worker.
    average_seconds: Option<f64>,
    /// Fresh chunks taken from the source and sent.
    fresh_dispatched: u64,
    max_in_flight: usize,
    queue_target_seconds: f64,
    /// A placeholder `sent_at` for work not sent yet.
    created: Instant,
}

impl WorkQueue {
    pub fn new(
        settings: &Settings,
        source: Box<dyn ChunkSource>,
        skip: Option<FixedBitSet>,
        now: Instant,
    ) -> Self {
        let reorder = settings.ordered.then(|| {
            Reorder::new(
                settings.reorder_capacity,
                settings.reorder_max_bytes,
                skip.clone(),
            )
            .starting_at(source.first())
        });
        Self {
            source,
            peeked: None,
            source_done: false,
            retries: BTreeMap::new(),
            errors: HashMap::new(),
            skip,
            reorder,
            average_seconds: None,
            fresh_dispatched: 0,
            max_in_flight: settings.max_in_flight,
            queue_target_seconds: settings.queue_target.as_secs_f64(),
            created: now,
        }
    }

    /// Results past the reorder buffer's memory budget wait in `spill`.
    pub fn spill_to(&mut self, spill: Box<dyn Spill>) {
        if let Some(reorder) = &mut self.reorder {
            reorder.spill_to(spill);
        }
    }

    pub fn total(&self) -> Option<u64> {
        self.source.total()
    }

    /// Chunks an earlier run settled.
    pub fn skipped(&self) -> u64 {
        self.skip.as_ref().map_or(0, |s| s.count_ones(..) as u64)
    }

    /// The next chunk to send; a suspect only to a worker with nothing else
    /// outstanding (`alone`). `sent_at` is for the caller to set.
    pub fn next_work(&mut self, alone: bool) -> Option<Work> {
        if let Some(entry) = self.retries.first_entry() {
            return (alone || !entry.get().suspect).then(|| entry.remove());
        }
        let chunk = match self.peeked.take() {
            Some(chunk) => chunk,
            None => self.next_fresh()?,
        };
        if let Some(reorder) = &self.reorder
            && !reorder.admits(chunk.index)
        {
            self.peeked = Some(chunk);
            return None;
        }
        self.fresh_dispatched += 1;
        Some(Work {
            chunk,
            attempt: 1,
            sent_at: self.created,
            suspect: false,
            cancel_sent: false,
        })
    }

    /// The next chunk from the source that an earlier run did not settle.
    fn next_fresh(&mut self) -> Option<ChunkSpec> {
        if self.source_done {
            return None;
        }
        loop {
            let chunk = match self.source.next_chunk() {
                Next::Chunk(chunk) => chunk,
                Next::Later => return None,
                Next::End => {
                    self.source_done = true;
                    return None;
                }
            };
            let settled = self
                .skip
                .as_ref()
                .is_some_and(|skip| skip.contains(chunk.index as usize));
            if !settled {
                return Some(chunk);
            }
        }
    }

    /// Puts an attempt back to be sent again.
    pub fn retry(&mut self, work: Work) {
        self.retries.insert(work.chunk.index, work);
    }

    /// No retry waits and the source has nothing more; whether chunks are
    /// still at workers is for the caller to know.
    pub fn is_exhausted(&mut self) -> bool {
        if !self.retries.is_empty() {
            return false;
        }
        if self.peeked.is_none() {
            self.peeked = self.next_fresh();
        }
        self.peeked.is_none() && self.source_done
    }

    /// Why the source ended before its last chunk, if it could not read.
    pub fn source_error(&self) -> Option<&str> {
        self.source.error()
    }

    /// Chunks waiting to be sent: retries, and fresh ones not yet taken
    /// from the source.
    pub fn queued(&self) -> u64 {
        let untouched = self.total().map_or(0, |total| {
            total.saturating_sub(self.skipped() + self.fresh_dispatched)
        });
        untouched + self.retries.len() as u64
    }

    /// A worker's time for a chunk, folded into the average that sizes the
    /// pipeline, and told to the source, whose chunks may size themselves.
    pub fn record_time(&mut self, chunk: &ChunkSpec, seconds: f64) {
        self.source.measured(chunk, seconds);
        self.average_seconds = Some(match self.average_seconds {
            None => seconds,
            Some(average) => average + (seconds - average) * 0.1,
        });
    }

    /// Chunks to keep outstanding per worker: one running, plus as many as
    /// cover the queue target at the average chunk duration.
    pub fn window(&self) -> usize {
        let Some(average) = self.average_seconds else {
            return 1;
        };
        let queued = if average > 0.0 {
            (self.queue_target_seconds / average) as usize
        } else {
            usize::MAX
        };
        let most = if self.source.sizes_itself() {
            SELF_SIZED_WINDOW
        } else {
            self.max_in_flight
        };
        queued.saturating_add(1).min(most).max(1)
    }

    /// Notes a failed attempt of a chunk that will be tried again.
    pub fn note_error(&mut self, index: u64, error: AttemptError) {
        self.errors.entry(index).or_default().push(error);
    }

    /// Every failed attempt of a chunk, taken out: it is settled now.
    pub fn take_errors(&mut self, index: u64) -> Vec<AttemptError> {
        self.errors.remove(&index).unwrap_or_default()
    }

    /// A chunk finished: its earlier failures no longer matter.
    pub fn forget_errors(&mut self, index: u64) {
        if !self.errors.is_empty() {
            self.errors.remove(&index);
        }
    }

    /// Hands a finished chunk to `write` in output order: at once without a
    /// reorder window, else once every lower index is written or failed.
    pub fn write_in_order(
        &mut self,
        meta: ResultMeta,
        output: &[u8],
        mut write: impl FnMut(&ResultMeta, &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        match &mut self.reorder {
            Some(reorder) => reorder.done(meta, output, write),
            None => write(&meta, output),
        }
    }

    /// A chunk failed for good: results waiting behind it may go out.
    pub fn pass_failed(
        &mut self,
        index: u64,
        write: impl FnMut(&ResultMeta, &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        match &mut self.reorder {
            Some(reorder) => reorder.skip(index, write),
            None => Ok(()),
        }
    }
}
