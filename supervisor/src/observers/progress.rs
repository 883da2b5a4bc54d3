//! The progress bar on stderr: one line of chunks settled, failures, retries,
//! worker restarts, rate, ETA and the run's phase, fed by the run's events.
//!
//! Counting is atomic and drawing is left to indicatif's ticker thread at a
//! bounded rate, so a run of millions of small chunks pays next to nothing
//! per chunk. Log lines go through [`Progress::suspend`] (see `logging`), so
//! the bar never lands in the middle of one, and the bar's redraws go
//! through the log's queue, so neither ever waits for stderr.
//!
//! The bar is drawn two columns short of the terminal's width. A full-width
//! line leaves the cursor waiting to wrap, and the `^C` a terminal echoes on
//! Ctrl-C would then start a new row, leaving the bar behind on screen.

use std::io::{self, IsTerminal as _};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use indicatif::{
    HumanDuration, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressState, ProgressStyle,
    TermLike,
};

use crate::dispatcher::RunEvent;

/// When to show the bar.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// Only when stderr is a terminal.
    Auto,
    /// Even when stderr is a pipe or a file, e.g. a CI log that renders `\r`.
    Always,
    Never,
}

/// Redraws per second at most: smooth to the eye, cheap on a slow terminal.
const REFRESH_HZ: u8 = 10;
/// How often the bar is redrawn when nothing happens, so rate, ETA and the
/// phase stay current while chunks are slow.
const TICK: Duration = Duration::from_millis(100);
/// The width assumed when stderr is not a terminal and `COLUMNS` is unset.
const DEFAULT_WIDTH: u16 = 80;
/// Columns left free at the right: room for the echo of `^C`.
const MARGIN: u16 = 2;

/// The run's phase, as the bar names it.
const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const CANCELLING: u8 = 2;
const ABORTING: u8 = 3;

/// Cheap to clone: every clone drives the same bar, or none.
#[derive(Clone)]
pub struct Progress {
    bar: Option<Bar>,
}

#[derive(Clone)]
struct Bar {
    bar: ProgressBar,
    counters: Arc<Counters>,
    /// Whether stderr is a terminal, whose width can be asked for.
    on_terminal: bool,
}

/// What the bar shows beside indicatif's own position; read by the style's
/// keys at each redraw.
#[derive(Default)]
struct Counters {
    failed: AtomicU64,
    retried: AtomicU64,
    restarts: AtomicU64,
    phase: AtomicU8,
}

impl Progress {
    /// `Auto`: a bar only when stderr is a terminal. `Always`: a bar even
    /// when it is not. `Never`: none. Nothing is drawn before [`start`].
    ///
    /// [`start`]: Progress::start
    pub fn new(mode: ProgressMode) -> Self {
        let terminal = io::stderr().is_terminal() && !is_dumb();
        let wanted = match mode {
            ProgressMode::Auto => terminal,
            ProgressMode::Always => true,
            ProgressMode::Never => false,
        };
        if !wanted {
            return Self { bar: None };
        }
        // Hidden until `start`: log lines before it must not conjure a bar
        // that knows nothing yet.
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
            .with_finish(ProgressFinish::AndClear);
        Self {
            bar: Some(Bar {
                bar,
                counters: Arc::default(),
                on_terminal: terminal,
            }),
        }
    }

    /// Shows the bar. `total` is the job's chunk count when known;
    /// `already_done` counts the chunks an earlier run settled (finished or
    /// failed for good) that this run skips: the bar starts there.
    pub fn start(&self, total: Option<u64>, already_done: u64) {
        let Some(Bar { on_terminal, .. }) = &self.bar else {
            return;
        };
        let stderr = Box::new(Stderr::new(*on_terminal));
        self.start_on(
            total,
            already_done,
            ProgressDrawTarget::term_like_with_hz(stderr, REFRESH_HZ),
        );
    }

    fn start_on(&self, total: Option<u64>, already_done: u64, target: ProgressDrawTarget) {
        let Some(Bar { bar, counters, .. }) = &self.bar else {
            return;
        };
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(already_done);
        // Record the earlier run's chunks, then forget them, so the rate is
        // this run's and not a burst of everything resumed at once.
        bar.tick();
        bar.reset_eta();
        bar.set_style(style(total.is_some(), counters));
        bar.set_draw_target(target);
        bar.enable_steady_tick(TICK);
    }

    /// Counts what `event` changes. Called for every chunk, so it only bumps
    /// counters (indicatif's position is atomic too); drawing is the ticker
    /// thread's, at most [`REFRESH_HZ`] times a second.
    pub fn observe(&self, event: &RunEvent<'_>) {
        let Some(Bar { bar, counters, .. }) = &self.bar else {
            return;
        };
        let bump = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed);
        match event {
            RunEvent::ChunkDone { .. } => bar.inc(1),
            RunEvent::ChunkFailed { .. } => {
                bump(&counters.failed);
                bar.inc(1);
            }
            RunEvent::ChunkRetried { .. } => {
                bump(&counters.retried);
            }
            RunEvent::WorkerExited {
                expected: false, ..
            } => {
                bump(&counters.restarts);
            }
            RunEvent::DrainStarted { .. } => raise(&counters.phase, DRAINING),
            RunEvent::Cancelling { .. } => raise(&counters.phase, CANCELLING),
            RunEvent::Aborting { .. } | RunEvent::Tripped { .. } => {
                raise(&counters.phase, ABORTING)
            }
            _ => {}
        }
    }

    /// Takes the bar off the screen for good; the run's summary follows.
    pub fn finish(&self) {
        if let Some(Bar { bar, .. }) = &self.bar {
            // Stopped first, so no tick can draw between the clearing and
            // the summary.
            bar.disable_steady_tick();
            bar.finish_and_clear();
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
    }

    /// Runs `f` with the bar off the screen and draws it again after, so
    /// what `f` writes to stderr never lands in the middle of the bar.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(Bar { bar, .. }) => bar.suspend(f),
            None => f(),
        }
    }
}

/// The phase only moves forward: a drain may turn into a cancel, never back.
fn raise(phase: &AtomicU8, to: u8) {
    phase.fetch_max(to, Ordering::Relaxed);
}

/// A `TERM=dumb` terminal cannot clear a line: `auto` shows no bar there.
fn is_dumb() -> bool {
    std::env::var_os("TERM").is_some_and(|term| term == "dumb")
}

/// One line, e.g. `12/30 chunks [=====>     ] 14.2/s, ETA 2s, 1 failed`.
/// Only the bar stretches with the terminal, and counters that are zero
/// stay out, so the line fits in 80 columns unless the run goes badly.
fn style(known_total: bool, counters: &Arc<Counters>) -> ProgressStyle {
    let template = if known_total {
        "{chunks} [{wide_bar}] {tail}"
    } else {
        "{spinner} {chunks}, {tail}"
    };
    let counters = Arc::clone(counters);
    ProgressStyle::with_template(template)
        .expect("the template is valid")
        .progress_chars("=> ")
        .with_key(
            "chunks",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = match state.len() {
                    Some(total) => write!(w, "{}/{total} chunks", state.pos()),
                    None => write!(w, "{} chunks", state.pos()),
                };
            },
        )
        .with_key(
            "tail",
            move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write_tail(state, &counters, w);
            },
        )
}

/// Rate, then the ETA or the phase, then the counters that are not zero.
fn write_tail(
    state: &ProgressState,
    counters: &Counters,
    w: &mut dyn std::fmt::Write,
) -> std::fmt::Result {
    let rate = state.per_sec();
    if rate >= 100.0 {
        write!(w, "{rate:.0}/s")?;
    } else if rate >= 10.0 {
        write!(w, "{rate:.1}/s")?;
    } else {
        write!(w, "{rate:.2}/s")?;
    }
    match counters.phase.load(Ordering::Relaxed) {
        RUNNING if state.len().is_some() && rate > 0.0 => {
            write!(w, ", ETA {:#}", HumanDuration(state.eta()))?
        }
        // Until the first chunk lands there is nothing to extrapolate from.
        RUNNING if state.len().is_some() => w.write_str(", ETA ?")?,
        RUNNING => {}
        DRAINING => w.write_str(", draining")?,
        CANCELLING => w.write_str(", cancelling")?,
        _ => w.write_str(", aborting")?,
    }
    let failed = counters.failed.load(Ordering::Relaxed);
    let retried = counters.retried.load(Ordering::Relaxed);
    let restarts = counters.restarts.load(Ordering::Relaxed);
    if failed > 0 {
        write!(w, ", {failed} failed")?;
    }
    if retried > 0 {
        write!(w, ", {retried} retried")?;
    }
    match restarts {
        0 => {}
        1 => w.write_str(", 1 worker restart")?,
        n => write!(w, ", {n} worker restarts")?,
    }
    Ok(())
}

/// Stderr as indicatif's terminal, a terminal or not (`--progress always` on
/// a pipe gets the same escape sequences). It claims [`MARGIN`] columns less
/// than there are and wraps long lines itself at that width, so indicatif's
/// count of the rows it drew, which it clears by, is always right.
#[derive(Debug)]
struct Stderr {
    terminal: bool,
    /// The width when the terminal cannot say, or for a pipe.
    fallback: u16,
    pending: Mutex<Pending>,
}

/// One redraw, written to stderr in one go on `flush`, so it interleaves
/// with other output as little as possible.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Where the cursor is in the row, as far as this text moved it.
    column: usize,
}

impl Stderr {
    fn new(terminal: bool) -> Self {
        let fallback = std::env::var("COLUMNS")
            .ok()
            .and_then(|columns| columns.trim().parse().ok())
            .filter(|&columns: &u16| columns > 0)
            .unwrap_or(DEFAULT_WIDTH);
        Self {
            terminal,
            fallback,
            pending: Mutex::default(),
        }
    }

    fn size(&self) -> Option<libc::winsize> {
        if !self.terminal {
            return None;
        }
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ fills in the `winsize` it is pointed at, which
        // outlives the call; on any error it writes nothing.
        let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
        (ok && size.ws_col > 0 && size.ws_row > 0).then_some(size)
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn escape(&self, sequence: &str) -> io::Result<()> {
        self.pending().bytes.extend_from_slice(sequence.as_bytes());
        Ok(())
    }

    fn cursor(&self, n: usize, direction: char) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.escape(&format!("\x1b[{n}{direction}"))
    }
}

impl TermLike for Stderr {
    fn width(&self) -> u16 {
        let columns = self.size().map_or(self.fallback, |size| size.ws_col);
        columns.saturating_sub(MARGIN).max(1)
    }

    fn height(&self) -> u16 {
        self.size().map_or(u16::MAX, |size| size.ws_row)
    }

    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.cursor(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.cursor(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.pending().column += n;
        self.cursor(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        {
            let mut pending = self.pending();
            pending.column = pending.column.saturating_sub(n);
        }
        self.cursor(n, 'D')
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        self.write_str(s)?;
        self.write_str("\n")
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        let width = usize::from(self.width());
        let mut pending = self.pending();
        let mut chars = s.chars();
        let mut utf8 = [0; 4];
        while let Some(c) = chars.next() {
            match c {
                '\x1b' => {
                    // Styling takes no room: copied up to its final letter.
                    pending.bytes.push(0x1b);
                    for c in chars.by_ref() {
                        pending
                            .bytes
                            .extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                    continue;
                }
                '\r' | '\n' => pending.column = 0,
                _ => {
                    if pending.column >= width {
                        pending.bytes.push(b'\n');
                        pending.column = 0;
                    }
                    pending.column += 1;
                }
            }
            pending
                .bytes
                .extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
        Ok(())
    }

    fn clear_line(&self) -> io::Result<()> {
        self.pending().column = 0;
        self.escape("\r\x1b[2K")
    }

    fn flush(&self) -> io::Result<()> {
        // Through the log's queue, in order with the log lines and without
        // ever waiting for stderr: a paused terminal stalls no run.
        crate::logging::write_raw(std::mem::take(&mut self.pending().bytes));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
