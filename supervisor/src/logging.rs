//! The log: tracing events to stderr, as text or one JSON object a line,
//! filtered by `RUST_LOG`, each line written whole with the progress bar
//! out of the way.

use std::io::{self, IsTerminal as _, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::observers::progress::Progress;

/// How log lines look.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: `2024-05-01T12:00:00.123456Z  WARN worker 1 exited unexpectedly …`.
    Text,
    /// For log collectors: one object a line with `timestamp`, `level`,
    /// `fields` (`message` among them) and `target`.
    Json,
}

/// Installs the global subscriber: `RUST_LOG` decides what is logged (by
/// default `info`), `format` how, and every line goes to stderr while
/// `progress` is off the screen. Text has no colours when stderr is not a
/// terminal or `NO_COLOR` is set. Does nothing if a subscriber is installed
/// already.
pub fn init(format: LogFormat, progress: &Progress) {
    init_with(format, progress, "info");
}

/// [`init`], with `default` as the filter when `RUST_LOG` is not set:
/// `supervisor tune` runs many short runs and says what it found itself.
pub fn init_with(format: LogFormat, progress: &Progress, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let writer = BarSafeStderr {
        progress: progress.clone(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
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

/// <https://no-color.org>: any non-empty `NO_COLOR` turns colours off.
fn colours_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    io::stderr().is_terminal() && !no_color
}

/// Makes one [`Line`] per event.
struct BarSafeStderr {
    progress: Progress,
}

impl<'a> MakeWriter<'a> for BarSafeStderr {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            progress: &self.progress,
            bytes: Vec::new(),
        }
    }
}

/// Collects one event's bytes and writes them in one go when dropped, with
/// the bar hidden: a line can be neither split by a redraw of the bar nor
/// torn by another thread's line.
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
        if self.bytes.is_empty() {
            return;
        }
        self.progress.suspend(|| {
            let mut stderr = io::stderr().lock();
            // Nowhere to report a failure to write the log.
            let _ = stderr.write_all(&self.bytes);
            let _ = stderr.flush();
        });
    }
}
