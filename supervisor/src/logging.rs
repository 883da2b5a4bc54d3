//! The log: tracing events to stderr, as text or one JSON object a line,
//! filtered by `RUST_LOG`, each line written whole with the progress bar out
//! of the way, by a thread of its own. Logging never blocks the run: lines
//! wait in a queue bounded by bytes, and when stderr is not read fast enough
//! (a pipe nobody drains) new lines are dropped and counted rather than
//! stalling the run loop.

use std::collections::VecDeque;
use std::io::{self, IsTerminal as _, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::observers::progress::Progress;

/// Bytes of log lines that may wait for stderr; past this, lines are dropped.
const QUEUE_BYTES: usize = 4 << 20;

/// How log lines look.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: `2024-05-01T12:00:00.123456Z  WARN worker 1 exited unexpectedly …`.
    Text,
    /// For log collectors: one object a line with `timestamp`, `level`,
    /// `fields` (`message` among them) and `target`.
    Json,
}

/// The lines waiting for stderr, shared by every thread that logs and the
/// one that writes.
struct Queue {
    state: Mutex<Waiting>,
    /// A line was queued.
    queued: Condvar,
    /// The queue ran empty.
    emptied: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Waiting {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    /// The writer is writing a line taken off the queue.
    writing: bool,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

/// The format chosen at [`init_with`], for the lines printed outside tracing.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a line, or drops it when the queue is full; never waits.
    fn push(&self, line: Vec<u8>) {
        let mut waiting = self.lock();
        if waiting.bytes + line.len() > QUEUE_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        waiting.bytes += line.len();
        waiting.lines.push_back(line);
        self.queued.notify_one();
    }

    /// The writer thread: one piece at a time, whole. The bar was hidden
    /// around each line when it was queued, so writing needs no lock of the
    /// bar's, and a stderr that blocks holds up this thread alone.
    fn write_forever(&self) {
        let mut waiting = self.lock();
        loop {
            let Some(line) = waiting.lines.pop_front() else {
                waiting.writing = false;
                self.emptied.notify_all();
                waiting = self
                    .queued
                    .wait(waiting)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            waiting.bytes -= line.len();
            waiting.writing = true;
            drop(waiting);
            let mut stderr = io::stderr().lock();
            // Nowhere to report a failure to write the log.
            let _ = stderr.write_all(&line);
            let _ = stderr.flush();
            drop(stderr);
            waiting = self.lock();
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` decides what is logged (by
/// default `info`), `format` how, and every line goes to stderr while
/// `progress` is off the screen. Text has no colours when stderr is not a
/// terminal or `NO_COLOR` is set. Does nothing if it was installed already.
pub fn init(format: LogFormat, progress: &Progress) {
    init_with(format, progress, "info");
}

/// [`init`], with `default` as the filter when `RUST_LOG` is not set:
/// `supervisor tune` runs many short runs and says what it found itself.
pub fn init_with(format: LogFormat, progress: &Progress, default: &str) {
    let _ = FORMAT.set(format);
    let mut fresh = false;
    QUEUE.get_or_init(|| {
        fresh = true;
        Queue {
            state: Mutex::default(),
            queued: Condvar::new(),
            emptied: Condvar::new(),
            dropped: AtomicU64::new(0),
        }
    });
    if !fresh {
        return;
    }
    let started = std::thread::Builder::new()
        .name("log".to_owned())
        .spawn(move || {
            if let Some(queue) = QUEUE.get() {
                queue.write_forever();
            }
        });
    if started.is_err() {
        // No thread, no queue to drain: lines go straight to stderr.
        eprintln!("warning: cannot start the log's writer; log lines may slow the run");
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Lines {
            progress: progress.clone(),
        });
    let _ = match format {
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(colours_wanted())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// Prints a line for people (a summary, an error) the way log lines go:
/// never blocking, after the lines logged before it.
pub fn print(text: &str) {
    let mut line = Vec::with_capacity(text.len() + 1);
    line.extend_from_slice(text.as_bytes());
    line.push(b'\n');
    deliver(line);
}

/// An error for the person who ran the command (a refused job file, a run
/// that could not start): `error: TEXT` as text, or with `--log-format json`
/// a JSON object like every other line, whatever `RUST_LOG` filters, so that
/// a log collector reading stderr never meets a line it cannot parse.
pub fn error(text: &str) {
    tell("ERROR", "error: ", text);
}

/// A line for people that is no error (the end of a merge), shaped like
/// [`error`]'s.
pub fn notice(text: &str) {
    tell("INFO", "", text);
}

fn tell(level: &str, prefix: &str, text: &str) {
    match FORMAT.get() {
        Some(LogFormat::Json) => {
            let event = serde_json::json!({
                "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now())
                    .to_string(),
                "level": level,
                "fields": { "message": text },
                "target": "supervisor",
            });
            print(&event.to_string());
        }
        Some(LogFormat::Text) | None => print(&format!("{prefix}{text}")),
    }
}

/// Bytes for stderr as they are (the progress bar's redraws), queued like
/// log lines.
pub fn write_raw(bytes: Vec<u8>) {
    if !bytes.is_empty() {
        deliver(bytes);
    }
}

/// Log lines dropped so far because stderr was not read fast enough.
pub fn dropped() -> u64 {
    QUEUE
        .get()
        .map_or(0, |queue| queue.dropped.load(Ordering::Relaxed))
}

/// Waits until every queued line is written, for at most `within`: before
/// the process exits, so that the end of the log is not lost, but never
/// for ever on a stderr nobody reads.
pub fn flush(within: Duration) {
    let Some(queue) = QUEUE.get() else {
        return;
    };
    let deadline = Instant::now() + within;
    let mut waiting = queue.lock();
    while !waiting.lines.is_empty() || waiting.writing {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        waiting = queue
            .emptied
            .wait_timeout(waiting, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

fn deliver(line: Vec<u8>) {
    match QUEUE.get() {
        Some(queue) => queue.push(line),
        None => {
            let _ = io::stderr().write_all(&line);
        }
    }
}

/// <https://no-color.org>: any non-empty `NO_COLOR` turns colours off.
fn colours_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    io::stderr().is_terminal() && !no_color
}

/// Makes one [`Line`] per event.
struct Lines {
    progress: Progress,
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            progress: &self.progress,
            bytes: Vec::new(),
        }
    }
}

/// Collects one event's bytes and queues them whole when dropped, with the
/// bar taken off the screen around them.
struct Line<'a> {
    progress: &'a Progress,
    bytes: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            let line = std::mem::take(&mut self.bytes);
            self.progress.suspend(|| deliver(line));
        }
    }
}
