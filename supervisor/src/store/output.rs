//! The output file: a jsonl record per chunk, or the chunks' raw bytes back
//! to back, each chunk's place in it told to the journal.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek as _, SeekFrom, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

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
    /// The regular file written, to tell when something else empties,
    /// removes or replaces it during the run; `None` for stdout, a device
    /// or a pipe.
    watched: Option<Watched>,
}

/// A regular output file as the run opened it: its name, and the device and
/// inode behind it then.
struct Watched {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl Watched {
    fn of(file: &File, path: &Path) -> io::Result<Option<Self>> {
        let meta = file.metadata()?;
        Ok(meta.is_file().then(|| Self {
            path: path.to_path_buf(),
            device: meta.dev(),
            inode: meta.ino(),
        }))
    }
}

impl ResultWriter {
    /// Creates (or truncates) the output.
    pub fn create(path: &OutputPath) -> io::Result<Self> {
        let sink = match path {
            OutputPath::Stdout => Sink::Stdout(io::stdout()),
            OutputPath::File(path) => {
                // Locked before it is emptied: a second supervisor writing
                // the same output must not destroy the first one's.
                // Appending: should something else cut the file during the
                // run, records land at its new end rather than past a hole
                // of NUL bytes, and the size tells it (see `check_intact`).
                let file = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .truncate(false)
                    .open(path)?;
                if lock(&file, path)? {
                    file.set_len(0)?;
                }
                Sink::File(file)
            }
        };
        let watched = match (&sink, path) {
            (Sink::File(file), OutputPath::File(path)) => Watched::of(file, path)?,
            _ => None,
        };
        Ok(Self {
            buf: Vec::with_capacity(BUFFER),
            sink,
            format: OutputFormat::Jsonl,
            position: 0,
            watched,
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
            .append(true)
            .create(len == 0)
            .truncate(false)
            .open(path)?;
        let meta = file.metadata()?;
        lock(&file, path)?;
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
        let watched = Watched::of(&file, path)?;
        Ok(Self {
            buf: Vec::with_capacity(BUFFER),
            sink: Sink::File(file),
            format: OutputFormat::Jsonl,
            position: len,
            watched,
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

    /// Appends one record and returns where it landed and what it holds,
    /// `(offset, len, crc32 of its bytes)`:
    /// `{"index":…,"start":…,"end":…,"attempt":…,"worker":…,"seconds":…,"output":…}`
    /// in `jsonl`, the output's bytes as they are in `raw`.
    pub fn write(&mut self, meta: &ResultMeta, output: &[u8]) -> io::Result<(u64, u64, u32)> {
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
        let record = match self.format {
            OutputFormat::Raw => output,
            OutputFormat::Jsonl => &self.buf[before..],
        };
        let (len, checksum) = (record.len() as u64, crate::journal::crc32(record));
        written?;
        self.position += len;
        Ok((offset, len, checksum))
    }

    /// Whether the output is still the file this run writes, holding every
    /// byte handed to it: an error naming the file when something else
    /// emptied or cut it, or removed or replaced it, since the run began.
    /// Called before each group commit and at the end, so that the journal
    /// never records chunks whose records are not where it says; two
    /// `stat`s, nothing read.
    pub fn check_intact(&self) -> io::Result<()> {
        let (Some(watched), Sink::File(file)) = (&self.watched, &self.sink) else {
            return Ok(());
        };
        let path = watched.path.display();
        let handed = self.position - self.buf.len() as u64;
        let len = file.metadata()?.len();
        if len != handed {
            return Err(io::Error::other(format!(
                "the output {path} was changed by something else during the run: it holds \
                 {len} bytes where this run wrote {handed}; its records cannot be trusted, \
                 run with --fresh"
            )));
        }
        let same = std::fs::metadata(&watched.path)
            .is_ok_and(|now| now.dev() == watched.device && now.ino() == watched.inode);
        if !same {
            return Err(io::Error::other(format!(
                "the output {path} was removed or replaced by something else during the run: \
                 the records this run wrote are not under that name; run with --fresh"
            )));
        }
        Ok(())
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

/// Locks a regular output file for this run, so that two supervisors never
/// write one output; `Ok(false)` for a device or a pipe, which many may
/// share (`/dev/null`). A file locked by another is an error of kind
/// `WouldBlock`.
fn lock(file: &File, path: &Path) -> io::Result<bool> {
    if !file.metadata()?.is_file() {
        return Ok(false);
    }
    if crate::file_lock::try_lock(file)? {
        return Ok(true);
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        format!(
            "another supervisor is writing the output {}, for another job",
            path.display()
        ),
    ))
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

/// The worker's bytes as a JSON member of the record, whatever they are, so
/// that every line of the output is valid JSON: one JSON value as it is
/// (compacted onto one line when it spans several, keys and numbers as
/// written), else a string when they are UTF-8, else base64 under
/// `output_base64`. JSON means what a strict reader accepts: a number out of
/// a double's range (`1e400`) or a string holding invalid UTF-8 is not.
fn write_output_value(out: &mut Vec<u8>, output: &[u8]) {
    let trimmed = output.trim_ascii();
    if is_plain_integer(trimmed)
        || (!trimmed.is_empty() && serde_json::from_slice::<Strict>(trimmed).is_ok())
    {
        out.extend_from_slice(br#","output":"#);
        if trimmed.iter().any(|b| b.is_ascii_whitespace()) {
            write_compacted(out, trimmed);
        } else {
            out.extend_from_slice(trimmed);
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

/// Any JSON value a strict reader takes, checked without building it:
/// unlike `IgnoredAny`, which skips numbers by their syntax, every number
/// is read, so one beyond a double's range is refused.
struct Strict;

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Strict, E> {
        if value.is_finite() {
            Ok(Strict)
        } else {
            Err(E::custom("a number beyond a double's range"))
        }
    }

    fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(Strict)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        while map.next_entry::<IgnoredAny, Strict>()?.is_some() {}
        Ok(Strict)
    }
}

/// An integer any JSON reader takes as it is: the common answer (a count, a
/// sum), checked without a parser.
fn is_plain_integer(bytes: &[u8]) -> bool {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    !digits.is_empty()
        && digits.len() <= 18
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || digits.len() == 1)
}

/// Valid JSON without the whitespace between its tokens: strings are copied
/// as they are, escapes and all.
fn write_compacted(out: &mut Vec<u8>, json: &[u8]) {
    let mut in_string = false;
    let mut escaped = false;
    let mut from = 0;
    for (i, &byte) in json.iter().enumerate() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            out.extend_from_slice(&json[from..i]);
            from = i + 1;
        }
    }
    out.extend_from_slice(&json[from..]);
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
    fn any_bytes_become_a_valid_member() {
        let pretty = b"{\n  \"b\": [1,\n 2.5e3],\n  \"a\": \"x y\\\"z\"\n}\n";
        assert_eq!(value(pretty), r#","output":{"b":[1,2.5e3],"a":"x y\"z"}"#);
        // Beyond a double: kept as the text it is.
        assert_eq!(value(b"1e400"), r#","output":"1e400""#);
        assert_eq!(value(b"[1e400]"), r#","output":"[1e400]""#);
        // Invalid UTF-8 inside a JSON string: no JSON, no text.
        assert_eq!(value(b"\"\xff\""), r#","output_base64":"Iv8i""#);
        assert_eq!(value(b"007"), r#","output":"007""#);
        assert_eq!(value(b"-12"), r#","output":-12"#);
        assert_eq!(
            value(b"123456789012345678901234567890"),
            r#","output":123456789012345678901234567890"#
        );
        for output in [&pretty[..], b"1e400", b"\"\xff\"", b"007", b" \t\r\n"] {
            let line = format!("{{\"index\":0{}}}", value(output));
            serde_json::from_str::<serde_json::Value>(&line)
                .unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }

    #[test]
    fn text_becomes_a_string_and_bytes_become_base64() {
        assert_eq!(value(b"hello\nworld"), r#","output":"hello\nworld""#);
        assert_eq!(value(b""), r#","output":"""#);
        assert_eq!(value(&[0xff, 0x00]), r#","output_base64":"/wA=""#);
    }
}
