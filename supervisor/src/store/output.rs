//! The output file: a jsonl record per chunk, or the chunks' raw bytes back
//! to back, each chunk's place in it told to the journal.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek as _, SeekFrom, Write};
use std::path::Path;

use base64::Engine;
use serde::de::IgnoredAny;

use crate::config::{OutputFormat, OutputPath};
use crate::dispatcher::ResultMeta;

/// Records are gathered in memory and written in pieces of about this size.
const BUFFER: usize = 1 << 20;
/// A jsonl record's bytes besides its output, at most (the keys and numbers).
const RECORD_ROOM: usize = 256;

enum Sink {
    File(File),
    Stdout(io::Stdout),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::File(file) => file.write(buf),
            Sink::Stdout(stdout) => stdout.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::File(file) => file.flush(),
            Sink::Stdout(stdout) => stdout.flush(),
        }
    }
}

/// The output file.
pub struct ResultWriter {
    /// Records not yet handed to the sink: each record is encoded straight
    /// into it, and it goes out whole once it holds [`BUFFER`] bytes.
    buf: Vec<u8>,
    sink: Sink,
    format: OutputFormat,
    /// Where the next record starts: the journal records each chunk's bytes
    /// by offset and length, and a resumed output starts past earlier runs'.
    position: u64,
}

impl ResultWriter {
    /// Creates (or truncates) the output.
    pub fn create(path: &OutputPath) -> io::Result<Self> {
        let sink = match path {
            OutputPath::Stdout => Sink::Stdout(io::stdout()),
            OutputPath::File(path) => Sink::File(File::create(path)?),
        };
        Ok(Self {
            buf: Vec::with_capacity(BUFFER),
            sink,
            format: OutputFormat::Jsonl,
            position: 0,
        })
    }

    /// Continues an earlier run's output: the first `len` bytes are the
    /// chunks its journal recorded, anything after them is cut off (chunks
    /// that finished after the last commit, which run again). A missing file
    /// is created when `len` is 0; a file shorter than `len` is refused, since
    /// chunks the journal counts as done would be missing from it.
    pub fn resume(path: &Path, len: u64) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(len == 0)
            .truncate(false)
            .open(path)?;
        let meta = file.metadata()?;
        // A device or pipe (`/dev/null`, a FIFO) has no length to keep.
        if meta.is_file() {
            if meta.len() < len {
                return Err(io::Error::other(format!(
                    "the output is shorter than the journal says ({} bytes, the journal \
                     counts {len}): run with --fresh",
                    meta.len()
                )));
            }
            file.set_len(len)?;
            // The cut must be on disk before records after it are: otherwise a
            // crash could bring back bytes of chunks that run again.
            file.sync_all()?;
            file.seek(SeekFrom::Start(len))?;
        }
        Ok(Self {
            buf: Vec::with_capacity(BUFFER),
            sink: Sink::File(file),
            format: OutputFormat::Jsonl,
            position: len,
        })
    }

    /// Writes records in `format` (`jsonl` unless told otherwise).
    pub fn in_format(self, format: OutputFormat) -> Self {
        Self { format, ..self }
    }

    /// Bytes written so far, counting those an earlier run left: where the
    /// next record starts.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The output file, for the journal to sync before it records chunks;
    /// `None` for stdout.
    pub fn file(&self) -> Option<&File> {
        match &self.sink {
            Sink::File(file) => Some(file),
            Sink::Stdout(_) => None,
        }
    }

    /// Hands buffered records to the file (no fsync): what the journal is
    /// about to record must be in the file when its committer syncs it.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let written = self.sink.write_all(&self.buf);
            // What did not go out is gone either way: the run aborts on
            // the error, and a resume cuts the output to the journal.
            self.buf.clear();
            if self.buf.capacity() > BUFFER {
                // One large record grew it: give that back.
                self.buf = Vec::with_capacity(BUFFER);
            }
            written?;
        }
        self.sink.flush()
    }

    /// Appends one record and returns where it landed, `(offset, len)`:
    /// `{"index":…,"start":…,"end":…,"attempt":…,"worker":…,"seconds":…,"output":…}`
    /// in `jsonl`, the output's bytes as they are in `raw`.
    pub fn write(&mut self, meta: &ResultMeta, output: &[u8]) -> io::Result<(u64, u64)> {
        let offset = self.position;
        if self.buf.len() + output.len() + RECORD_ROOM > self.buf.capacity() {
            // Out before the buffer would have to grow.
            self.flush()?;
        }
        let before = self.buf.len();
        let written = match self.format {
            OutputFormat::Jsonl => {
                write_record(&mut self.buf, meta, output);
                Ok(())
            }
            OutputFormat::Raw if output.len() >= BUFFER => {
                // A large output goes out as it is, not copied first.
                self.flush().and_then(|()| self.sink.write_all(output))
            }
            OutputFormat::Raw => {
                self.buf.extend_from_slice(output);
                Ok(())
            }
        };
        let len = match self.format {
            OutputFormat::Raw => output.len() as u64,
            OutputFormat::Jsonl => (self.buf.len() - before) as u64,
        };
        written?;
        self.position += len;
        Ok((offset, len))
    }

    /// Flushes everything and makes it durable.
    pub fn finish(mut self) -> io::Result<()> {
        self.flush()?;
        match &self.sink {
            Sink::File(file) => file.sync_all(),
            Sink::Stdout(_) => Ok(()),
        }
    }
}

/// One record, appended to `out`: numbers by `itoa`, the duration in whole
/// microseconds, so that a record costs no float formatting.
fn write_record(out: &mut Vec<u8>, meta: &ResultMeta, output: &[u8]) {
    let mut numbers = itoa::Buffer::new();
    for (key, value) in [
        (&br#"{"index":"#[..], meta.index),
        (br#","start":"#, meta.start),
        (br#","end":"#, meta.end),
        (br#","attempt":"#, u64::from(meta.attempt)),
        (br#","worker":"#, u64::from(meta.worker)),
    ] {
        out.extend_from_slice(key);
        out.extend_from_slice(numbers.format(value).as_bytes());
    }
    out.extend_from_slice(br#","seconds":"#);
    write_seconds(out, meta.seconds);
    write_output_value(out, output);
    out.extend_from_slice(b"}\n");
}

/// Seconds with six decimals, as `{:.6}` writes them, from whole microseconds.
fn write_seconds(out: &mut Vec<u8>, seconds: f64) {
    // Adding a half and truncating rounds a non-negative value without
    // the libm call `round` costs.
    let micros = (seconds.max(0.0) * 1e6 + 0.5) as u64;
    let mut numbers = itoa::Buffer::new();
    out.extend_from_slice(numbers.format(micros / 1_000_000).as_bytes());
    out.push(b'.');
    let fraction = numbers.format(micros % 1_000_000).as_bytes();
    out.extend(std::iter::repeat_n(b'0', 6 - fraction.len()));
    out.extend_from_slice(fraction);
}

/// The worker's bytes as JSON: as they are when they are one JSON value, else
/// as a string when they are UTF-8, else base64 under `output_base64`.
fn write_output_value(out: &mut Vec<u8>, output: &[u8]) {
    let trimmed = output.trim_ascii();
    if is_plain_integer(trimmed) {
        // Most outputs are a number: no parser needed to know it is JSON.
        out.extend_from_slice(br#","output":"#);
        out.extend_from_slice(trimmed);
    } else if !trimmed.is_empty() && serde_json::from_slice::<IgnoredAny>(trimmed).is_ok() {
        out.extend_from_slice(br#","output":"#);
        // Whitespace inside a JSON value may hold a line break, which jsonl
        // cannot: such values are written again on one line.
        let one_line = !trimmed.iter().any(|&b| b == b'\n' || b == b'\r');
        match (!one_line).then(|| serde_json::from_slice::<serde_json::Value>(trimmed)) {
            Some(Ok(value)) => {
                serde_json::to_writer(&mut *out, &value).expect("a Vec takes any JSON");
            }
            _ => out.extend_from_slice(trimmed),
        }
    } else if let Ok(text) = std::str::from_utf8(output) {
        out.extend_from_slice(br#","output":"#);
        serde_json::to_writer(&mut *out, text).expect("a Vec takes any JSON");
    } else {
        out.extend_from_slice(br#","output_base64":""#);
        let encoded = base64::engine::general_purpose::STANDARD.encode(output);
        out.extend_from_slice(encoded.as_bytes());
        out.push(b'"');
    }
}

/// A JSON integer: an optional minus, then `0` or digits not starting with 0.
fn is_plain_integer(bytes: &[u8]) -> bool {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    match digits {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        _ => digits.len() <= 64 && digits.iter().all(u8::is_ascii_digit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(output: &[u8]) -> String {
        let mut out = Vec::new();
        write_output_value(&mut out, output);
        String::from_utf8(out).unwrap()
    }

    fn seconds(seconds: f64) -> String {
        let mut out = Vec::new();
        write_seconds(&mut out, seconds);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn seconds_have_six_decimals_as_before() {
        for s in [
            0.0,
            0.000_000_4,
            0.000_001,
            0.25,
            1.5,
            12.345_678_9,
            3_600.000_000_6,
        ] {
            assert_eq!(seconds(s), format!("{s:.6}"), "{s}");
        }
    }

    #[test]
    fn integers_are_told_from_other_json_without_a_parser() {
        for (text, plain) in [
            (&b"0"[..], true),
            (b"-12", true),
            (b"49259937824", true),
            (b"007", false),
            (b"-", false),
            (b"1.5", false),
            (b"1e3", false),
            (b"", false),
        ] {
            assert_eq!(
                is_plain_integer(text),
                plain,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(value(b"007"), r#","output":"007""#);
        assert_eq!(value(b"1.5"), r#","output":1.5"#);
    }

    #[test]
    fn json_is_kept_as_json_on_one_line() {
        assert_eq!(value(b"49259937824"), r#","output":49259937824"#);
        assert_eq!(value(b" 42\n"), r#","output":42"#);
        assert_eq!(value(b"{\n \"a\": [1,\n 2]\n}"), r#","output":{"a":[1,2]}"#);
    }

    #[test]
    fn text_becomes_a_string_and_bytes_become_base64() {
        assert_eq!(value(b"hello\nworld"), r#","output":"hello\nworld""#);
        assert_eq!(value(b""), r#","output":"""#);
        assert_eq!(value(&[0xff, 0x00]), r#","output_base64":"/wA=""#);
    }
}
