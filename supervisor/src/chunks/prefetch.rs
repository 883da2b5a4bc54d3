//! Cutting chunks ahead of the run loop: a [`Cutter`] that reads its input
//! runs on a thread of its own and hands chunks over through a bounded queue,
//! so finding a boundary never blocks the loop on the disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use tokio::sync::Notify;

use super::{ChunkSource, ChunkSpec, Cutter, Next};

/// Chunks cut ahead of the dispatcher at most: a few thousand chunks' worth
/// of ranges (32 bytes each) hides any read, and back-pressure stops the
/// thread there.
const AHEAD: usize = 4096;

enum Cut {
    Chunk(ChunkSpec),
    Failed(String),
}

/// Tells the run loop that chunks are ready again after it found none.
#[derive(Debug, Default)]
struct Wake {
    /// The consumer found the queue empty and waits for word.
    waiting: AtomicBool,
    ready: Arc<Notify>,
}

/// A [`ChunkSource`] fed by a [`Cutter`] on its own thread.
pub struct Prefetch {
    /// `None` only while dropping: closing it ends the thread.
    chunks: Option<Receiver<Cut>>,
    total: Option<u64>,
    error: Option<String>,
    ended: bool,
    wake: Arc<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl Prefetch {
    /// Starts cutting on a thread named `chunks`.
    pub fn start(cutter: Box<dyn Cutter>) -> std::io::Result<Self> {
        let total = cutter.total();
        let (sender, chunks) = sync_channel(AHEAD);
        let wake = Arc::new(Wake::default());
        let thread = std::thread::Builder::new()
            .name("chunks".to_owned())
            .spawn({
                let wake = Arc::clone(&wake);
                move || cut(cutter, sender, &wake)
            })?;
        Ok(Self {
            chunks: Some(chunks),
            total,
            error: None,
            ended: false,
            wake,
            thread: Some(thread),
        })
    }

    /// A handle the run loop waits on after [`Next::Later`]: notified once
    /// chunks are ready, or the input ended.
    pub fn ready(&self) -> Arc<Notify> {
        Arc::clone(&self.wake.ready)
    }

    fn take(&mut self) -> Option<Result<Cut, TryRecvError>> {
        self.chunks.as_ref().map(Receiver::try_recv)
    }
}

impl ChunkSource for Prefetch {
    fn next_chunk(&mut self) -> Next {
        if self.ended {
            return Next::End;
        }
        let mut received = self.take();
        if matches!(received, Some(Err(TryRecvError::Empty))) {
            // Say we wait, then look once more: a chunk sent in between
            // would otherwise find nobody waiting and wake nobody.
            self.wake.waiting.store(true, Ordering::SeqCst);
            received = self.take();
            if !matches!(received, Some(Err(TryRecvError::Empty))) {
                self.wake.waiting.store(false, Ordering::SeqCst);
            }
        }
        match received {
            Some(Ok(Cut::Chunk(chunk))) => Next::Chunk(chunk),
            Some(Err(TryRecvError::Empty)) => Next::Later,
            Some(Ok(Cut::Failed(error))) => {
                self.error = Some(error);
                self.ended = true;
                Next::End
            }
            Some(Err(TryRecvError::Disconnected)) | None => {
                self.ended = true;
                Next::End
            }
        }
    }

    fn total(&self) -> Option<u64> {
        self.total
    }

    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // A closed queue fails the thread's next send, which ends it.
        drop(self.chunks.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: cuts until the input ends, fails, or nobody listens.
fn cut(mut cutter: Box<dyn Cutter>, sender: SyncSender<Cut>, wake: &Wake) {
    loop {
        let cut = match cutter.next_chunk() {
            Some(chunk) => Cut::Chunk(chunk),
            None => match cutter.error() {
                Some(error) => Cut::Failed(error.to_owned()),
                None => break,
            },
        };
        let last = matches!(cut, Cut::Failed(_));
        if sender.send(cut).is_err() {
            return;
        }
        if wake.waiting.swap(false, Ordering::SeqCst) {
            wake.ready.notify_one();
        }
        if last {
            break;
        }
    }
    // The end of the queue is news too, once the queue is closed: the loop
    // may be waiting for it.
    drop(sender);
    if wake.waiting.swap(false, Ordering::SeqCst) {
        wake.ready.notify_one();
    }
}
