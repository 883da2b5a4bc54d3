//! The source of a `chunk = "auto"` job: each chunk is cut when it is
//! about to be dispatched, in the size the [`Sizer`] gives from the workers'
//! timings so far. A range is cut on the run loop; a file or lines source
//! on a thread of its own, asked for each size, so that no read blocks the
//! loop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, channel, sync_channel};
use std::thread::JoinHandle;

use tokio::sync::Notify;

use super::layout::{Layout, SizedCutter};
use super::sizer::Sizer;
use super::{ChunkSource, ChunkSpec, Next};

/// Fresh chunks asked of the cutting thread ahead of need: one to hand out
/// while the next is cut.
const LOOKAHEAD: usize = 2;
/// Chunks cut and not yet taken at most (settled ones of an earlier run run
/// ahead without being asked for).
const QUEUE: usize = 256;
/// Chunks whose sizes are remembered until a worker times them: more than
/// are ever outstanding at once in an ordinary run.
const REMEMBERED: usize = 4096;

enum Cut {
    /// A chunk, its units, and the units left after it.
    Chunk {
        chunk: ChunkSpec,
        units: u64,
        remaining: u64,
        asked: bool,
    },
    Failed(String),
}

/// Cuts on a thread: the loop sends sizes, the thread answers chunks.
struct Threaded {
    sizes: Option<Sender<u64>>,
    chunks: Receiver<Cut>,
    /// Sizes sent and not yet answered.
    asked: VecDeque<u64>,
    /// The units left as of the last chunk received.
    remaining: u64,
    waiting: Arc<AtomicBool>,
    ready: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

enum Backend {
    Inline {
        layout: Layout,
        cutter: Box<dyn SizedCutter>,
    },
    Threaded(Threaded),
}

/// A [`ChunkSource`] whose chunks size themselves.
pub struct AutoChunks {
    sizer: Sizer,
    backend: Backend,
    /// `(index, units)` of recent chunks, by index modulo its length.
    sizes: Vec<(u64, u64)>,
    error: Option<String>,
    ended: bool,
}

impl AutoChunks {
    /// Cuts on the caller's thread: for a range, where cutting reads nothing.
    pub fn inline(sizer: Sizer, layout: Layout, cutter: Box<dyn SizedCutter>) -> Self {
        Self::with(sizer, Backend::Inline { layout, cutter })
    }

    /// Cuts on a thread named `chunks`: for a file or lines source.
    pub fn threaded(
        sizer: Sizer,
        layout: Layout,
        cutter: Box<dyn SizedCutter>,
    ) -> std::io::Result<Self> {
        let remaining = cutter.remaining();
        let (sizes_tx, sizes) = channel();
        let (chunks_tx, chunks) = sync_channel(QUEUE);
        let waiting = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(Notify::new());
        let thread = std::thread::Builder::new()
            .name("chunks".to_owned())
            .spawn({
                let (waiting, ready) = (Arc::clone(&waiting), Arc::clone(&ready));
                move || cut(layout, cutter, &sizes, chunks_tx, &waiting, &ready)
            })?;
        Ok(Self::with(
            sizer,
            Backend::Threaded(Threaded {
                sizes: Some(sizes_tx),
                chunks,
                asked: VecDeque::with_capacity(LOOKAHEAD),
                remaining,
                waiting,
                ready,
                thread: Some(thread),
            }),
        ))
    }

    fn with(sizer: Sizer, backend: Backend) -> Self {
        Self {
            sizer,
            backend,
            sizes: vec![(u64::MAX, 0); REMEMBERED],
            error: None,
            ended: false,
        }
    }

    /// Notified when chunks are ready after [`Next::Later`].
    pub fn ready(&self) -> Arc<Notify> {
        match &self.backend {
            Backend::Threaded(threaded) => Arc::clone(&threaded.ready),
            Backend::Inline { .. } => Arc::new(Notify::new()),
        }
    }

    fn remember(&mut self, chunk: &ChunkSpec, units: u64) {
        let slot = (chunk.index % REMEMBERED as u64) as usize;
        self.sizes[slot] = (chunk.index, units);
    }

    fn fail(&mut self, error: String) -> Next {
        self.error = Some(error);
        self.ended = true;
        Next::End
    }
}

impl ChunkSource for AutoChunks {
    fn next_chunk(&mut self) -> Next {
        if self.ended {
            return Next::End;
        }
        let cut = match &mut self.backend {
            Backend::Inline { layout, cutter } => {
                let size = self.sizer.next(cutter.remaining());
                match layout.next(cutter.as_mut(), size) {
                    Ok(Some(cut)) => Some(cut),
                    Ok(None) => None,
                    Err(e) => return self.fail(e.to_string()),
                }
            }
            Backend::Threaded(threaded) => {
                let got = threaded.take(&self.sizer);
                match got {
                    Taken::Chunk(chunk, units) => Some((chunk, units)),
                    Taken::Later => return Next::Later,
                    Taken::End => None,
                    Taken::Failed(error) => return self.fail(error),
                }
            }
        };
        match cut {
            Some((chunk, units)) => {
                self.remember(&chunk, units);
                Next::Chunk(chunk)
            }
            None => {
                self.ended = true;
                Next::End
            }
        }
    }

    fn total(&self) -> Option<u64> {
        None
    }

    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn sizes_itself(&self) -> bool {
        true
    }

    fn measured(&mut self, chunk: &ChunkSpec, seconds: f64) {
        let slot = (chunk.index % REMEMBERED as u64) as usize;
        let (index, units) = self.sizes[slot];
        if index == chunk.index {
            self.sizer.measured(units, seconds);
        }
    }
}

enum Taken {
    Chunk(ChunkSpec, u64),
    Later,
    End,
    Failed(String),
}

impl Threaded {
    /// Asks for sizes up to the lookahead, then takes a chunk if one is cut.
    fn take(&mut self, sizer: &Sizer) -> Taken {
        while self.asked.len() < LOOKAHEAD {
            let left = self.remaining.saturating_sub(self.asked.iter().sum());
            if left == 0 {
                break;
            }
            let size = sizer.next(left);
            let Some(sizes) = &self.sizes else { break };
            if sizes.send(size).is_err() {
                break;
            }
            self.asked.push_back(size);
        }
        let mut received = self.chunks.try_recv();
        if matches!(received, Err(TryRecvError::Empty)) {
            // Say we wait, then look once more: a chunk sent in between
            // would otherwise find nobody waiting and wake nobody.
            self.waiting.store(true, Ordering::SeqCst);
            received = self.chunks.try_recv();
            if !matches!(received, Err(TryRecvError::Empty)) {
                self.waiting.store(false, Ordering::SeqCst);
            }
        }
        match received {
            Ok(Cut::Chunk {
                chunk,
                units,
                remaining,
                asked,
            }) => {
                if asked {
                    self.asked.pop_front();
                }
                self.remaining = remaining;
                Taken::Chunk(chunk, units)
            }
            Ok(Cut::Failed(error)) => Taken::Failed(error),
            Err(TryRecvError::Empty) => Taken::Later,
            Err(TryRecvError::Disconnected) => Taken::End,
        }
    }
}

impl Drop for Threaded {
    fn drop(&mut self) {
        // Closing the sizes channel ends a thread waiting for a size; one
        // blocked on a full queue ends when the queue closes with `self`.
        drop(self.sizes.take());
        let (_, closed) = sync_channel(0);
        drop(std::mem::replace(&mut self.chunks, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: cuts what needs no size at once, and fresh chunks as asked.
fn cut(
    mut layout: Layout,
    mut cutter: Box<dyn SizedCutter>,
    sizes: &Receiver<u64>,
    chunks: SyncSender<Cut>,
    waiting: &AtomicBool,
    ready: &Notify,
) {
    let wake = || {
        if waiting.swap(false, Ordering::SeqCst) {
            ready.notify_one();
        }
    };
    loop {
        let asked = layout.needs_size();
        if asked && cutter.remaining() == 0 {
            break;
        }
        let size = if asked {
            match sizes.recv() {
                Ok(size) => size,
                Err(_) => return,
            }
        } else {
            0
        };
        let cut = match layout.next(cutter.as_mut(), size) {
            Ok(Some((chunk, units))) => Cut::Chunk {
                chunk,
                units,
                remaining: cutter.remaining(),
                asked,
            },
            Ok(None) => break,
            Err(e) => Cut::Failed(e.to_string()),
        };
        let last = matches!(cut, Cut::Failed(_));
        if chunks.send(cut).is_err() {
            return;
        }
        wake();
        if last {
            return;
        }
    }
    // The end of the queue is news too, once it is closed: the loop may be
    // waiting for it.
    drop(chunks);
    wake();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::file::FileCursor;
    use super::super::layout::{RangeCursor, Settled};
    use super::super::lines::{LinesCursor, count_lines};
    use super::super::test_files::temp_file;
    use super::*;

    const PATIENCE: Duration = Duration::from_secs(30);

    /// Every chunk, each timed as `seconds_per_unit` per unit the moment it
    /// is taken.
    fn drain(source: &mut AutoChunks, seconds_per_unit: f64) -> Vec<ChunkSpec> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let ready = source.ready();
        let mut chunks = Vec::new();
        loop {
            match source.next_chunk() {
                Next::Chunk(chunk) => {
                    let units = chunk.end - chunk.start;
                    source.measured(&chunk, units as f64 * seconds_per_unit);
                    chunks.push(chunk);
                }
                Next::End => return chunks,
                Next::Later => runtime.block_on(async {
                    tokio::time::timeout(PATIENCE, ready.notified())
                        .await
                        .expect("the cutter says when it has more");
                }),
            }
        }
    }

    fn sizer(workers: usize) -> Sizer {
        Sizer::new(Duration::from_millis(250), workers, 1, u64::MAX)
    }

    fn assert_tiles(chunks: &[ChunkSpec], end: u64) {
        let mut at = 0;
        for (k, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.index, k as u64);
            assert_eq!(chunk.start, at, "{chunks:?}");
            assert!(chunk.end > chunk.start, "{chunks:?}");
            at = chunk.end;
        }
        assert_eq!(at, end);
    }

    #[test]
    fn a_range_grows_its_chunks_then_shrinks_them_at_the_end() {
        let layout = Layout::new(Vec::new(), false);
        let mut source =
            AutoChunks::inline(sizer(2), layout, Box::new(RangeCursor::new(0, 10_000_000)));
        // Items of 1 µs: a quarter second is 250,000 of them.
        let chunks = drain(&mut source, 1e-6);
        assert_tiles(&chunks, 10_000_000);
        let sizes: Vec<u64> = chunks.iter().map(|c| c.end - c.start).collect();
        assert_eq!(sizes[0], 1);
        assert_eq!(*sizes.iter().max().unwrap(), 250_000);
        assert!(*sizes.last().unwrap() < 10, "{sizes:?}");
        assert_eq!(source.total(), None);
    }

    #[test]
    fn a_file_is_cut_on_its_thread_at_delimiters() {
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("record {i}\n").into_bytes())
            .collect();
        let file = temp_file(&text);
        let cursor = FileCursor::open(file.path(), b"\n".to_vec()).unwrap();
        let layout = Layout::new(Vec::new(), false);
        let mut source = AutoChunks::threaded(sizer(2), layout, Box::new(cursor)).unwrap();
        let chunks = drain(&mut source, 1e-7);
        assert_tiles(&chunks, text.len() as u64);
        for chunk in &chunks {
            assert_eq!(text[chunk.end as usize - 1], b'\n');
        }
        assert_eq!(source.error(), None);
    }

    #[test]
    fn lines_resume_around_settled_chunks_with_their_line_numbers() {
        let text: Vec<u8> = (0..1000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let file = temp_file(&text);
        let count = count_lines(file.path()).unwrap();
        // Chunks 0 (lines 0..10) and 3 (lines 40..50) were settled.
        let offset = |line: usize| {
            text.split_inclusive(|&b| b == b'\n')
                .take(line)
                .map(<[u8]>::len)
                .sum::<usize>() as u64
        };
        let settled = vec![
            Settled {
                index: 0,
                start: 0,
                end: offset(10),
            },
            Settled {
                index: 3,
                start: offset(40),
                end: offset(50),
            },
        ];
        let cursor = LinesCursor::open(file.path(), count).unwrap();
        let layout = Layout::new(settled, false);
        let mut source = AutoChunks::threaded(sizer(1), layout, Box::new(cursor)).unwrap();
        let chunks = drain(&mut source, 1e-3);
        assert_tiles(&chunks, text.len() as u64);
        let firsts: Vec<u64> = chunks.iter().take(5).map(|c| c.first_item).collect();
        assert_eq!(firsts, [0, 10, 25, 40, 50]);
        for chunk in &chunks {
            let first = std::str::from_utf8(&text[chunk.start as usize..])
                .unwrap()
                .lines()
                .next()
                .unwrap();
            assert_eq!(first, chunk.first_item.to_string());
        }
    }

    #[test]
    fn dropping_it_ends_a_thread_waiting_for_a_size() {
        let text = b"a\nb\nc\n".repeat(1000);
        let file = temp_file(&text);
        let cursor = FileCursor::open(file.path(), b"\n".to_vec()).unwrap();
        let source =
            AutoChunks::threaded(sizer(1), Layout::new(Vec::new(), false), Box::new(cursor))
                .unwrap();
        drop(source);
    }
}
