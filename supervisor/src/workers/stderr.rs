//! A worker's stderr and stdout, read line by line into the supervisor's
//! log, each line tagged with the worker's slot, its pid and the chunk it is
//! working on (and `stream=stdout` for what it printed to stdout).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::ChildStderr;
use tokio::sync::Notify;

/// The longest piece of a line logged as one event. A worker that writes
/// megabytes without a newline costs this much memory, not the whole line.
pub const MAX_LINE: usize = 64 * 1024;

/// Ends every piece of a cut line that the next event continues.
pub const CONTINUED: &str = "…(continued)";

/// The value of `current` while a worker holds no chunk.
pub const NO_CHUNK: u64 = u64::MAX;

/// Lines of a worker's stderr kept to say why it died.
const TAIL_LINES: usize = 20;
/// Bytes of those lines kept at most.
const TAIL_BYTES: usize = 4 * 1024;

/// The last lines a worker wrote to stderr: what it said before it died is
/// the best account of why (an import error, a traceback, a panic).
#[derive(Debug, Default)]
pub struct Tail {
    lines: Mutex<VecDeque<String>>,
    ended: AtomicBool,
    end: Notify,
}

impl Tail {
    fn push(&self, line: &str) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let mut line = line.to_owned();
        if line.len() > TAIL_BYTES {
            let mut cut = TAIL_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        lines.push_back(line);
        while lines.len() > TAIL_LINES || lines.iter().map(String::len).sum::<usize>() > TAIL_BYTES
        {
            lines.pop_front();
        }
    }

    fn finish(&self) {
        self.ended.store(true, Ordering::Release);
        self.end.notify_waiters();
    }

    /// Waits until the worker's stderr has ended (every line is in).
    pub async fn ended(&self) {
        let notified = self.end.notified();
        if self.ended.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    /// The lines kept, one a line; empty when the worker said nothing.
    pub fn text(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Reads the worker's stderr until it closes, logging each line at INFO with
/// target `worker` and the fields `worker` (the slot), `pid` and `chunk` (the
/// one in `current` when the line is logged, `-` for [`NO_CHUNK`]).
///
/// Each line is one event, so lines from different workers never mix. A line
/// longer than [`MAX_LINE`] is logged in pieces, all but the last ending in
/// [`CONTINUED`]; a cut never splits a UTF-8 character. Bytes that are not
/// UTF-8 are logged lossily, and a line's `\r\n` end counts as its `\n`.
pub async fn forward_stderr(
    slot: usize,
    pid: u32,
    stderr: ChildStderr,
    current: Arc<AtomicU64>,
    tail: Arc<Tail>,
) {
    forward_lines(slot, pid, Stream::Stderr(tail), stderr, current).await;
}

/// Which of a worker's outputs a line came from.
#[derive(Debug, Clone)]
pub enum Stream {
    /// Its lines also go to the tail kept to say why it died.
    Stderr(Arc<Tail>),
    /// Never the job's output, which travels over the socket: a worker's
    /// stdout is only more of its log.
    Stdout,
}

/// As [`forward_stderr`], for either stream; lines from stdout carry
/// `stream=stdout`.
pub async fn forward_lines(
    slot: usize,
    pid: u32,
    stream: Stream,
    reader: impl AsyncRead + Unpin,
    current: Arc<AtomicU64>,
) {
    let mut reader = BufReader::new(reader);
    // Reused for every line; never grows past MAX_LINE.
    let mut line = Vec::new();
    let emit = |bytes: &[u8], continued: bool| {
        let text = String::from_utf8_lossy(bytes);
        let text = if continued {
            Cow::Owned(format!("{text}{CONTINUED}"))
        } else {
            text
        };
        let chunk = Chunk(current.load(Ordering::Relaxed));
        match &stream {
            Stream::Stderr(tail) => {
                tail.push(&text);
                tracing::info!(target: "worker", worker = slot, pid, chunk = %chunk, "{text}")
            }
            Stream::Stdout => {
                tracing::info!(target: "worker", worker = slot, pid, chunk = %chunk, stream = "stdout", "{text}")
            }
        }
    };
    loop {
        // Bytes of a character the last cut left over are already in `line`.
        let limit = (MAX_LINE - line.len()) as u64;
        let read = (&mut reader).take(limit).read_until(b'\n', &mut line).await;
        let n = match read {
            Ok(n) => n,
            Err(error) => {
                // Nothing to retry: the pipe is the worker's, and its exit is
                // reported elsewhere.
                tracing::debug!(target: "worker", worker = slot, pid, "cannot read stderr: {error}");
                0
            }
        };
        if n == 0 {
            if !line.is_empty() {
                emit(&line, false);
            }
            if let Stream::Stderr(tail) = &stream {
                tail.finish();
            }
            return;
        }
        let mut ended = line.last() == Some(&b'\n');
        let mut more = false;
        if !ended && n as u64 == limit {
            // A line exactly MAX_LINE long would otherwise leave its newline
            // behind as an empty continuation.
            match reader.fill_buf().await {
                Ok(next) if next.starts_with(b"\n") => {
                    reader.consume(1);
                    ended = true;
                }
                Ok(next) if next.starts_with(b"\r\n") => {
                    reader.consume(2);
                    line.push(b'\r');
                    ended = true;
                }
                Ok(next) => more = !next.is_empty(),
                Err(_) => {}
            }
        }
        if ended {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            emit(&line, false);
            line.clear();
        } else if more {
            let cut = line.len() - incomplete_tail(&line);
            emit(&line[..cut], true);
            line.drain(..cut);
        } else {
            // The stream ended without a final newline.
            emit(&line, false);
            line.clear();
        }
    }
}

/// How many bytes at the end of `bytes` start a UTF-8 character that is not
/// complete yet: they belong with the next piece.
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0xC0 != 0x80 {
            let needed = match byte {
                0xF0.. => 4,
                0xE0.. => 3,
                0xC0.. => 2,
                _ => 1,
            };
            return if needed > back { back } else { 0 };
        }
    }
    0
}

/// The `chunk` field: a number, or `-` between chunks.
struct Chunk(u64);

impl fmt::Display for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            NO_CHUNK => f.write_str("-"),
            index => write!(f, "{index}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::process::Stdio;
    use std::sync::Mutex;

    use tokio::process::Command;

    use super::*;

    /// Where the test subscriber writes: one buffer shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Runs `script` under `sh` and returns the messages logged from its
    /// stderr, one per event, with the `pid` field blanked out.
    async fn forwarded(script: &str, chunk: u64) -> Vec<String> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::INFO)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let stderr = child.stderr.take().unwrap();
        forward_stderr(
            3,
            pid,
            stderr,
            Arc::new(AtomicU64::new(chunk)),
            Arc::default(),
        )
        .await;
        assert!(child.wait().await.unwrap().success());

        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines()
            // The level is padded to a fixed width.
            .map(|line| line.trim_start().replace(&format!("pid={pid}"), "pid=P"))
            .collect()
    }

    fn longest_run(line: &str, of: char) -> usize {
        line.split(|c| c != of).map(str::len).max().unwrap_or(0)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn lines_written_in_pieces_arrive_whole() {
        let events = forwarded(
            r#"printf 'first ' >&2; sleep 0.05; printf 'line\nsecond' >&2; sleep 0.05; printf ' line\n' >&2"#,
            7,
        )
        .await;
        assert_eq!(
            events,
            [
                "INFO worker: first line worker=3 pid=P chunk=7",
                "INFO worker: second line worker=3 pid=P chunk=7",
            ]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn between_chunks_the_chunk_is_a_dash() {
        let events = forwarded("echo starting >&2", NO_CHUNK).await;
        assert_eq!(events, ["INFO worker: starting worker=3 pid=P chunk=-"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn crlf_and_a_missing_last_newline_are_handled() {
        let events = forwarded(r#"printf 'one\r\n\r\ntwo\rthree\r\nlast' >&2"#, 0).await;
        assert_eq!(
            events,
            [
                "INFO worker: one worker=3 pid=P chunk=0",
                "INFO worker:  worker=3 pid=P chunk=0",
                "INFO worker: two\rthree worker=3 pid=P chunk=0",
                "INFO worker: last worker=3 pid=P chunk=0",
            ]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_long_line_is_cut_into_marked_pieces() {
        let events = forwarded(
            r#"head -c 204800 /dev/zero | tr '\0' x >&2; printf '\nafter\n' >&2"#,
            1,
        )
        .await;
        assert_eq!(
            events.len(),
            5,
            "{:?}",
            events.iter().map(String::len).collect::<Vec<_>>()
        );
        let pieces: Vec<usize> = events[..4].iter().map(|e| longest_run(e, 'x')).collect();
        assert_eq!(
            pieces,
            [MAX_LINE, MAX_LINE, MAX_LINE, 204800 - 3 * MAX_LINE]
        );
        for event in &events[..3] {
            assert!(
                event.contains(&format!("x{CONTINUED} worker=3")),
                "not marked"
            );
        }
        assert!(!events[3].contains(CONTINUED));
        assert_eq!(events[4], "INFO worker: after worker=3 pid=P chunk=1");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_line_of_exactly_the_cap_is_one_event() {
        let events = forwarded(
            &format!(r#"head -c {MAX_LINE} /dev/zero | tr '\0' y >&2; printf '\r\nnext\n' >&2"#),
            1,
        )
        .await;
        assert_eq!(events.len(), 2);
        assert_eq!(longest_run(&events[0], 'y'), MAX_LINE);
        assert!(!events[0].contains(CONTINUED));
        assert!(!events[0].contains('\r'));
        assert_eq!(events[1], "INFO worker: next worker=3 pid=P chunk=1");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cut_does_not_split_a_character() {
        // 'é' is two bytes; the cap falls between them.
        let events = forwarded(
            &format!(
                r#"head -c {} /dev/zero | tr '\0' a >&2; printf '\303\251b\n' >&2"#,
                MAX_LINE - 1
            ),
            1,
        )
        .await;
        assert_eq!(events.len(), 2);
        assert_eq!(longest_run(&events[0], 'a'), MAX_LINE - 1);
        assert!(events[0].contains(&format!("a{CONTINUED} worker")));
        assert_eq!(events[1], "INFO worker: éb worker=3 pid=P chunk=1");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn invalid_utf8_is_logged_lossily() {
        let events = forwarded(r#"printf 'bad \377 byte\n' >&2"#, 1).await;
        assert_eq!(
            events,
            ["INFO worker: bad \u{FFFD} byte worker=3 pid=P chunk=1"]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_last_lines_are_kept_to_say_why_a_worker_died() {
        let mut child = Command::new("sh")
            .args([
                "-c",
                "for i in $(seq 1 30); do echo \"line $i\" >&2; done; echo 'ImportError: no module named x' >&2",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let stderr = child.stderr.take().unwrap();
        let tail = Arc::new(Tail::default());
        forward_stderr(
            0,
            pid,
            stderr,
            Arc::new(AtomicU64::new(NO_CHUNK)),
            Arc::clone(&tail),
        )
        .await;
        tail.ended().await;
        let text = tail.text();
        assert!(
            text.ends_with("line 30\nImportError: no module named x"),
            "{text}"
        );
        assert_eq!(text.lines().count(), TAIL_LINES);
        child.wait().await.unwrap();
    }

    #[test]
    fn incomplete_tails() {
        assert_eq!(incomplete_tail(b"abc"), 0);
        assert_eq!(incomplete_tail("aé".as_bytes()), 0);
        assert_eq!(incomplete_tail(&"aé".as_bytes()[..2]), 1);
        assert_eq!(incomplete_tail(&"a€".as_bytes()[..3]), 2);
        assert_eq!(incomplete_tail(&"a😀".as_bytes()[..4]), 3);
        assert_eq!(incomplete_tail("a😀".as_bytes()), 0);
        // Stray continuation bytes are not a character to wait for.
        assert_eq!(incomplete_tail(&[0x80, 0x80, 0x80, 0x80]), 0);
    }
}
