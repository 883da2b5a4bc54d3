//! The progress bar drawn into a screen of its own: what a terminal shows.

use super::*;
use crate::chunks::ChunkSpec;

/// A terminal that keeps what the bar last drew.
#[derive(Debug, Clone, Default)]
struct Screen(Arc<Mutex<String>>);

impl Screen {
    /// The text since the last clear, escape sequences removed.
    fn line(&self) -> String {
        let all = self.0.lock().unwrap().clone();
        let last = all.rsplit("\r\x1b[2K").next().unwrap_or("");
        last.trim_end().to_owned()
    }
}

impl TermLike for Screen {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.write_str(&format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        self.0.lock().unwrap().push_str(s);
        Ok(())
    }
    fn clear_line(&self) -> io::Result<()> {
        self.write_str("\r\x1b[2K")
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

fn shown(total: Option<u64>, already_done: u64) -> (Progress, Screen) {
    let progress = Progress {
        bar: Some(Bar {
            bar: ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
                .with_finish(ProgressFinish::AndClear),
            counters: Arc::default(),
            on_terminal: false,
        }),
    };
    let screen = Screen::default();
    progress.start_on(
        total,
        already_done,
        ProgressDrawTarget::term_like(Box::new(screen.clone())),
    );
    (progress, screen)
}

/// Draws now, as a log line does.
fn redraw(progress: &Progress) {
    progress.suspend(|| ());
}

const CHUNK: ChunkSpec = ChunkSpec {
    index: 0,
    start: 0,
    end: 1,
    first_item: 0,
};

fn done() -> RunEvent<'static> {
    RunEvent::ChunkDone {
        chunk: CHUNK,
        attempt: 1,
        worker: 0,
        seconds: 0.1,
        waited: 0.0,
    }
}

#[test]
fn counts_start_at_the_earlier_runs_and_grow_with_settled_chunks() {
    let (progress, screen) = shown(Some(30), 10);
    redraw(&progress);
    assert!(
        screen.line().starts_with("10/30 chunks ["),
        "{}",
        screen.line()
    );
    progress.observe(&done());
    progress.observe(&RunEvent::ChunkFailed {
        chunk: CHUNK,
        attempts: 3,
        worker: 0,
        error: "boom",
    });
    redraw(&progress);
    let line = screen.line();
    assert!(line.starts_with("12/30 chunks ["), "{line}");
    assert!(line.ends_with(", 1 failed"), "{line}");
    progress.finish();
}

#[test]
fn retries_restarts_and_the_drain_show() {
    let (progress, screen) = shown(Some(5), 0);
    progress.observe(&RunEvent::ChunkRetried {
        chunk: CHUNK,
        failed_attempt: 1,
        worker: 0,
        error: "crashed",
    });
    for expected in [false, true, false] {
        progress.observe(&RunEvent::WorkerExited {
            slot: 0,
            pid: Some(1),
            status: "killed",
            cause: None,
            expected,
        });
    }
    progress.observe(&RunEvent::DrainStarted {
        signal: 15,
        in_flight: 1,
    });
    redraw(&progress);
    let line = screen.line();
    assert!(
        line.ends_with(", draining, 1 retried, 2 worker restarts"),
        "{line}"
    );
    progress.observe(&RunEvent::Cancelling { in_flight: 1 });
    progress.observe(&RunEvent::DrainStarted {
        signal: 15,
        in_flight: 1,
    });
    redraw(&progress);
    assert!(screen.line().contains(", cancelling,"), "{}", screen.line());
    progress.finish();
}

#[test]
fn the_line_fits_the_width() {
    let (progress, screen) = shown(Some(10_000_000), 0);
    redraw(&progress);
    let line = screen.line();
    assert!(line.ends_with("/s, ETA ?"), "{line}");
    assert!(line.chars().count() <= 100, "{line}");
    progress.finish();
}

#[test]
fn an_unknown_total_shows_a_count() {
    let (progress, screen) = shown(None, 0);
    progress.observe(&done());
    redraw(&progress);
    let line = screen.line();
    assert!(line.contains(" 1 chunks, "), "{line}");
    assert!(!line.contains("ETA"), "{line}");
    progress.finish();
}

#[test]
fn finish_clears_and_nothing_draws_after() {
    let (progress, screen) = shown(Some(3), 0);
    redraw(&progress);
    progress.finish();
    let drawn = screen.0.lock().unwrap().len();
    progress.observe(&done());
    redraw(&progress);
    assert_eq!(screen.0.lock().unwrap().len(), drawn);
    assert_eq!(screen.line(), "");
}

#[test]
fn without_a_bar_everything_is_a_no_op() {
    let progress = Progress::new(ProgressMode::Never);
    progress.start(Some(3), 1);
    progress.observe(&done());
    assert_eq!(progress.suspend(|| 7), 7);
    progress.finish();
}

#[test]
fn long_lines_wrap_short_of_the_width_and_styling_takes_no_room() {
    let stderr = Stderr {
        terminal: false,
        fallback: 12,
        pending: Mutex::default(),
    };
    assert_eq!(stderr.width(), 10);
    stderr.write_str("0123456789abc\x1b[1mdefghij").unwrap();
    stderr.write_str("klm").unwrap();
    stderr.clear_line().unwrap();
    stderr.write_str("xyz").unwrap();
    let pending = stderr.pending();
    assert_eq!(
        String::from_utf8_lossy(&pending.bytes),
        "0123456789\nabc\x1b[1mdefghij\nklm\r\x1b[2Kxyz"
    );
    assert_eq!(pending.column, 3);
}
