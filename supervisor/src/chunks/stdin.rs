//! A `stdin` source: the supervisor's standard input, read on a thread of
//! its own and cut into blocks of about `chunk` bytes, each ending just after
//! a delimiter. A chunk carries its block to its worker, since the input
//! cannot be read twice. The queue between the thread and the run loop is
//! bounded: reading stops while it is full, which is while the workers are
//! busy and their pipelines full.

use std::io::{self, PipeReader, PipeWriter};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use memchr::memmem::Finder;
use tokio::sync::Notify;
use tracing::info;

use super::prefetch::Wake;
use super::{Carried, ChunkSource, ChunkSpec, Next};

/// Blocks cut ahead of the dispatcher at most, besides the one being read:
/// a worker that finishes a chunk finds the next one waiting.
const AHEAD: usize = 2;
/// The most one read asks for.
const MAX_READ: usize = 1 << 20;
/// The least one read asks for: a block's buffer grows by at least this
/// much when it is full.
const MIN_READ: usize = 64 << 10;

/// How standard input is cut.
#[derive(Debug, Clone)]
pub struct Cutting {
    delimiter: Vec<u8>,
    chunk: usize,
    /// The largest block that can go to a worker: one frame's worth.
    max_block: usize,
}

impl Cutting {
    /// Blocks of at least `chunk` bytes (but the last), each ending just
    /// after `delimiter`.
    ///
    /// Panics if `delimiter` is empty or `chunk` is 0: the configuration
    /// rules both out.
    pub fn new(delimiter: Vec<u8>, chunk: u64) -> Self {
        assert!(!delimiter.is_empty(), "the delimiter must not be empty");
        assert!(chunk > 0, "chunk size must be positive");
        Self {
            delimiter,
            chunk: usize::try_from(chunk).unwrap_or(usize::MAX),
            max_block: protocol::codec::MAX_ASSIGN_DATA,
        }
    }

    /// Blocks past `max_block` bytes are dropped rather than carried; tests
    /// use a small one. It must be at least `chunk`.
    pub fn with_max_block(mut self, max_block: usize) -> Self {
        self.max_block = max_block;
        self
    }
}

/// A descriptor of the supervisor's standard input of its own, so that
/// closing it when the source is done leaves descriptor 0 alone.
///
/// When it is a pipe, its buffer is made [`PIPE_BYTES`] large: with the
/// default 64 KiB the producer and the reader take turns every 64 KiB,
/// which on a busy machine costs more than the copying.
pub fn stdin_descriptor() -> io::Result<OwnedFd> {
    let fd = io::stdin().as_fd().try_clone_to_owned()?;
    // SAFETY: F_SETPIPE_SZ only resizes a pipe's buffer; on anything else,
    // or past the user's limit, it fails and nothing changes, which costs
    // speed only.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
    Ok(fd)
}

/// The buffer asked for a pipe on standard input: the most an unprivileged
/// process may set by default (`/proc/sys/fs/pipe-max-size`).
const PIPE_BYTES: libc::c_int = 1 << 20;

/// Blocks are allocated on the reading thread and freed on the run loop's:
/// glibc's malloc, whose threshold for giving a large allocation its own
/// mapping rises after the first such is freed, would then serve them from
/// per-thread heaps that keep what was freed (512 MiB through 2 workers
/// peaked at 63-72 MiB, 51-56 MiB with this). A fixed threshold keeps every
/// block in a mapping of its own, returned to the system when the block
/// goes.
fn blocks_outside_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; glibc takes its
    // lock. Failing, it changes nothing.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Allocations from this size up get a mapping of their own (glibc's
/// starting value, kept from rising).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 << 10;

/// What the reading thread hands the run loop.
enum Cut {
    Chunk(ChunkSpec, Carried),
    /// The input ended after this many bytes.
    Ended {
        bytes: u64,
    },
    Failed(String),
}

/// Standard input as a [`ChunkSource`], read ahead on a thread named `stdin`.
pub struct StdinChunks {
    /// `None` once stopped: closing it ends the thread's next send.
    blocks: Option<Receiver<Cut>>,
    /// Dropped to wake the thread out of its wait for input.
    stop: Option<PipeWriter>,
    wake: Arc<Wake>,
    thread: Option<JoinHandle<()>>,
    /// The bytes of the chunk just given.
    carried: Option<Carried>,
    given: u64,
    /// Known once the input has ended.
    total: Option<u64>,
    error: Option<String>,
    ended: bool,
}

impl StdinChunks {
    /// Starts reading `input` (the supervisor's standard input, or in tests
    /// any readable descriptor) and cutting it as `cutting` says.
    pub fn start(input: OwnedFd, cutting: Cutting) -> io::Result<Self> {
        blocks_outside_the_heap();
        let (stop_reader, stop) = io::pipe()?;
        let (sender, blocks) = sync_channel(AHEAD);
        let wake = Arc::new(Wake::default());
        let reader = Reader {
            input,
            stop: stop_reader,
            blocks: Blocks::new(cutting),
        };
        let thread = std::thread::Builder::new()
            .name("stdin".to_owned())
            .spawn({
                let wake = Arc::clone(&wake);
                move || reader.run(&sender, &wake)
            })?;
        Ok(Self {
            blocks: Some(blocks),
            stop: Some(stop),
            wake,
            thread: Some(thread),
            carried: None,
            given: 0,
            total: None,
            error: None,
            ended: false,
        })
    }

    /// A handle the run loop waits on after [`Next::Later`]: notified once
    /// a block is ready, or the input ended.
    pub fn ready(&self) -> Arc<Notify> {
        self.wake.ready()
    }
}

impl ChunkSource for StdinChunks {
    fn next_chunk(&mut self) -> Next {
        if self.ended {
            return Next::End;
        }
        match self.wake.take(self.blocks.as_ref()) {
            Some(Ok(Cut::Chunk(chunk, carried))) => {
                self.carried = Some(carried);
                self.given += 1;
                Next::Chunk(chunk)
            }
            Some(Err(TryRecvError::Empty)) => Next::Later,
            Some(Ok(Cut::Ended { bytes })) => {
                info!(
                    "standard input ended after {}: {} chunks",
                    bytesize::ByteSize(bytes).display().iec(),
                    self.given
                );
                self.total = Some(self.given);
                self.ended = true;
                Next::End
            }
            Some(Ok(Cut::Failed(error))) => {
                self.error = Some(error);
                self.ended = true;
                Next::End
            }
            Some(Err(TryRecvError::Disconnected)) => {
                self.error = Some("the thread reading standard input stopped".to_owned());
                self.ended = true;
                Next::End
            }
            // Stopped: no chunk is wanted any more.
            None => {
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

    fn carries(&self) -> bool {
        true
    }

    fn take_carried(&mut self) -> Option<Carried> {
        self.carried.take()
    }

    fn stop(&mut self) {
        // The thread's next send fails, and its wait for input ends.
        drop(self.blocks.take());
        drop(self.stop.take());
    }
}

impl Drop for StdinChunks {
    fn drop(&mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: reads until the input ends, fails, or nobody listens.
struct Reader {
    input: OwnedFd,
    stop: PipeReader,
    blocks: Blocks,
}

impl Reader {
    fn run(mut self, sender: &SyncSender<Cut>, wake: &Wake) {
        let send = |cut: Cut| {
            let sent = sender.send(cut).is_ok();
            wake.announce();
            sent
        };
        let mut bytes = 0u64;
        loop {
            match wait_readable(self.input.as_fd(), self.stop.as_fd()) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    send(Cut::Failed(format!("cannot wait for standard input: {e}")));
                    return;
                }
            }
            match self.blocks.read_from(self.input.as_fd()) {
                Ok(0) => {
                    if self
                        .blocks
                        .finish(&mut |chunk, carried| send(Cut::Chunk(chunk, carried)))
                    {
                        send(Cut::Ended { bytes });
                    }
                    return;
                }
                Ok(n) => {
                    bytes += n as u64;
                    if !self
                        .blocks
                        .cut(&mut |chunk, carried| send(Cut::Chunk(chunk, carried)))
                    {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    send(Cut::Failed(format!(
                        "cannot read standard input (at byte {bytes}): {e}"
                    )));
                    return;
                }
            }
        }
    }
}

/// Waits until `input` can be read (or has ended) or `stop` is closed: true
/// for the input. A blocking read after it returns at once, so no read ever
/// holds the thread when the run wants it to stop.
fn wait_readable(input: BorrowedFd<'_>, stop: BorrowedFd<'_>) -> io::Result<bool> {
    let mut fds = [
        libc::pollfd {
            fd: input.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` holds two valid pollfds for the length given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n >= 0 {
            if fds[1].revents != 0 {
                return Ok(false);
            }
            if fds[0].revents != 0 {
                return Ok(true);
            }
            continue;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The cutting, without I/O: bytes go into the block being read, and every
/// block that is complete goes out with its chunk.
///
/// A block ends at the first delimiter that ends at or after `chunk` bytes
/// into it (or at the end of the input), so it holds whole records: at
/// least `chunk` bytes but the last, one record longer than a chunk making
/// one larger block, never an empty one. A block that grows past
/// `max_block` with no delimiter in sight cannot travel to a worker: its
/// bytes are counted and dropped as they come, only the last few kept to
/// find a delimiter split between two reads, and it goes out as
/// [`Carried::TooLarge`], so memory stays bounded whatever the input.
struct Blocks {
    finder: Finder<'static>,
    delimiter_len: usize,
    chunk: usize,
    max_block: usize,
    /// What a block's buffer is made for: a chunk and one read.
    capacity: usize,
    /// The block being read: `block` after `dropped` bytes already let go.
    block: Vec<u8>,
    dropped: u64,
    /// Where the block starts in the stream.
    start: u64,
    /// Where the search for the block's end goes on: no delimiter ending
    /// at or after `chunk` starts before it.
    scan_from: usize,
    next_index: u64,
}

impl Blocks {
    fn new(cutting: Cutting) -> Self {
        let Cutting {
            delimiter,
            chunk,
            max_block,
        } = cutting;
        // The configuration keeps a chunk well inside a frame.
        assert!(chunk <= max_block, "a chunk must fit in a block");
        let capacity = chunk
            .min(max_block)
            .saturating_add(chunk.clamp(MIN_READ, MAX_READ));
        let mut blocks = Self {
            finder: Finder::new(&delimiter).into_owned(),
            delimiter_len: delimiter.len(),
            chunk,
            max_block,
            capacity,
            block: Vec::new(),
            dropped: 0,
            start: 0,
            scan_from: 0,
            next_index: 0,
        };
        blocks.begin(0);
        blocks
    }

    /// Ends the block being read at `end` and returns it; the bytes read
    /// past it begin the next one.
    fn begin(&mut self, end: usize) -> Vec<u8> {
        let rest = &self.block[end..];
        let mut next = Vec::with_capacity(self.capacity.max(rest.len()));
        next.extend_from_slice(rest);
        self.scan_from = self.chunk.saturating_sub(self.delimiter_len);
        self.dropped = 0;
        let mut block = std::mem::replace(&mut self.block, next);
        block.truncate(end);
        block
    }

    /// One read of `input` into the block: the bytes read, 0 at the end.
    fn read_from(&mut self, input: BorrowedFd<'_>) -> io::Result<usize> {
        if self.block.capacity() - self.block.len() < MIN_READ {
            self.block.reserve(MIN_READ.max(self.block.len() / 2));
        }
        let room = (self.block.capacity() - self.block.len()).min(MAX_READ);
        let len = self.block.len();
        // SAFETY: the pointer is `room` bytes of the block's spare capacity,
        // which read fills; only the bytes it reports are made part of it.
        let n = unsafe {
            libc::read(
                input.as_raw_fd(),
                self.block.as_mut_ptr().add(len).cast(),
                room,
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        // SAFETY: read initialised `n` bytes past `len`, within the capacity.
        unsafe { self.block.set_len(len + n) };
        Ok(n)
    }

    /// Sends out every block the bytes read so far complete. False when
    /// `emit` says nobody takes them any more.
    fn cut(&mut self, emit: &mut impl FnMut(ChunkSpec, Carried) -> bool) -> bool {
        let d = self.delimiter_len;
        loop {
            let oversized = self.dropped > 0;
            let from = self.scan_from;
            let found = (from < self.block.len())
                .then(|| self.finder.find(&self.block[from..]))
                .flatten();
            let Some(at) = found else {
                self.scan_from = from.max(self.block.len().saturating_sub(d - 1));
                if oversized || self.block.len() > self.max_block {
                    self.drop_all_but_the_tail();
                }
                return true;
            };
            let end = from + at + d;
            let dropped = self.dropped;
            let mut block = self.begin(end);
            let len = dropped + end as u64;
            let carried = if oversized || block.len() > self.max_block {
                Carried::TooLarge { len }
            } else {
                if block.capacity() - block.len() > MIN_READ {
                    block.shrink_to_fit();
                }
                Carried::Bytes(block)
            };
            if !emit(self.chunk_of(len), carried) {
                return false;
            }
        }
    }

    /// The input ended: the block being read, if any, goes out as the last.
    fn finish(&mut self, emit: &mut impl FnMut(ChunkSpec, Carried) -> bool) -> bool {
        if self.block.is_empty() && self.dropped == 0 {
            return true;
        }
        let oversized = self.dropped > 0 || self.block.len() > self.max_block;
        let len = self.dropped + self.block.len() as u64;
        let mut block = self.begin(self.block.len());
        let carried = if oversized {
            Carried::TooLarge { len }
        } else {
            block.shrink_to_fit();
            Carried::Bytes(block)
        };
        emit(self.chunk_of(len), carried)
    }

    /// A block that can no longer be carried: its bytes are counted and let
    /// go, all but the last `d - 1`, which may begin a delimiter.
    fn drop_all_but_the_tail(&mut self) {
        let keep = self.delimiter_len - 1;
        let gone = self.block.len() - keep.min(self.block.len());
        if gone == 0 {
            return;
        }
        self.dropped += gone as u64;
        self.block.drain(..gone);
        // Past `chunk` long ago: any delimiter now ends the block.
        self.scan_from = 0;
        if self.block.capacity() > self.capacity {
            self.block.shrink_to(self.capacity);
        }
    }

    /// The next chunk, `len` bytes long, from where the last one ended.
    fn chunk_of(&mut self, len: u64) -> ChunkSpec {
        let index = self.next_index;
        self.next_index += 1;
        let start = self.start;
        self.start += len;
        ChunkSpec::at_offsets(index, start, start + len)
    }
}

#[cfg(test)]
mod tests;
