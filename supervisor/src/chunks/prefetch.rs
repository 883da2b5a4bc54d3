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
    first: u64,
    error: Option<String>,
    ended: bool,
    wake: Arc<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl Prefetch {
    /// Starts cutting on a thread named `chunks`.
    pub fn start(cutter: Box<dyn Cutter>) -> std::io::Result<Self> {
        let total = cutter.total();
        let first = cutter.first();
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
            first,
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

    fn first(&self) -> u64 {
        self.first
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::super::FileChunks;
    use super::super::test_files::{all, temp_file};
    use super::*;

    /// A safety net against a stuck test, never a timing assertion.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// Takes every chunk, waiting for word whenever none is ready.
    fn drain(prefetch: &mut Prefetch) -> Vec<ChunkSpec> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let ready = prefetch.ready();
        let mut chunks = Vec::new();
        loop {
            match prefetch.next_chunk() {
                Next::Chunk(chunk) => chunks.push(chunk),
                Next::End => return chunks,
                Next::Later => runtime.block_on(async {
                    tokio::time::timeout(PATIENCE, ready.notified())
                        .await
                        .expect("the cutter says when it has more");
                }),
            }
        }
    }

    /// Hands out chunk after chunk, each once the test allows it, then fails
    /// or ends.
    struct Gated {
        allowed: mpsc::Receiver<()>,
        next: u64,
        until: u64,
        fail_at_end: bool,
        error: Option<String>,
    }

    impl Cutter for Gated {
        fn next_chunk(&mut self) -> Option<ChunkSpec> {
            if self.next == self.until {
                if self.fail_at_end {
                    self.error = Some("disk on fire".to_owned());
                }
                return None;
            }
            self.allowed.recv().ok()?;
            let index = self.next;
            self.next += 1;
            Some(ChunkSpec {
                index,
                start: index,
                end: index + 1,
                first_item: index,
            })
        }

        fn total(&self) -> Option<u64> {
            Some(self.until)
        }

        fn error(&self) -> Option<&str> {
            self.error.as_deref()
        }
    }

    fn gated(until: u64, fail_at_end: bool) -> (mpsc::Sender<()>, Prefetch) {
        let (allow, allowed) = mpsc::channel();
        let cutter = Gated {
            allowed,
            next: 0,
            until,
            fail_at_end,
            error: None,
        };
        (allow, Prefetch::start(Box::new(cutter)).unwrap())
    }

    #[test]
    fn a_file_cut_ahead_gives_the_chunks_the_cutter_gives_in_order() {
        let text: Vec<u8> = (0..5000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let file = temp_file(&text);
        let cut = |chunk| FileChunks::open(file.path(), b"\n".to_vec(), chunk).unwrap();
        let expected = all(&mut cut(997));
        let mut prefetch =
            Prefetch::start(Box::new(cut(997).with_total(expected.len() as u64))).unwrap();
        assert_eq!(prefetch.total(), Some(expected.len() as u64));
        assert_eq!(drain(&mut prefetch), expected);
        assert_eq!(prefetch.error(), None);
    }

    #[test]
    fn nothing_ready_is_later_and_the_loop_is_woken_when_a_chunk_comes() {
        let (allow, mut prefetch) = gated(2, false);
        assert_eq!(prefetch.next_chunk(), Next::Later);
        let ready = prefetch.ready();
        allow.send(()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(PATIENCE, ready.notified())
                .await
                .expect("woken once the chunk is cut");
        });
        assert!(matches!(prefetch.next_chunk(), Next::Chunk(c) if c.index == 0));
        allow.send(()).unwrap();
        assert_eq!(drain(&mut prefetch).len(), 1);
    }

    #[test]
    fn a_cutter_that_cannot_read_ends_the_source_with_its_error() {
        let (allow, mut prefetch) = gated(1, true);
        allow.send(()).unwrap();
        assert_eq!(drain(&mut prefetch).len(), 1);
        assert_eq!(prefetch.next_chunk(), Next::End);
        assert_eq!(prefetch.error(), Some("disk on fire"));
    }

    #[test]
    fn dropping_it_ends_a_thread_blocked_on_a_full_queue() {
        let (allow, prefetch) = gated(u64::MAX, false);
        // More chunks allowed than the queue holds: the thread blocks on it.
        for _ in 0..AHEAD + 10 {
            allow.send(()).unwrap();
        }
        // Drop joins the thread; the test ends only if it does.
        drop(prefetch);
    }
}
