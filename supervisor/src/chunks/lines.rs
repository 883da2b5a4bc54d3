//! A `lines` source: `chunk` lines per chunk, as byte ranges, and the line
//! count that fixes how many chunks there are before the run.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use memchr::memchr_iter;

use super::file::read_at;
use super::layout::SizedCutter;
use super::{ChunkSpec, Cutter};

/// Large enough that counting runs at memory speed rather than syscall speed.
const BLOCK_SIZE: usize = 1024 * 1024;

/// What [`count_lines`] found: the chunk count is `ceil(lines / chunk)`, and
/// the chunks are cut from the first `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCount {
    /// Lines, each ending with `\n` except perhaps a non-empty last one.
    pub lines: u64,
    pub size: u64,
}

/// Counts the lines of `path` in one sequential pass.
pub fn count_lines(path: &Path) -> io::Result<LineCount> {
    let mut file = File::open(path)?;
    let mut buf = vec![0; BLOCK_SIZE];
    let mut newlines = 0u64;
    let mut size = 0u64;
    // As if the file began just after a newline, so that an empty file has no
    // lines and only a non-empty unterminated tail adds one.
    let mut last = b'\n';
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        newlines += bytecount::count(&buf[..n], b'\n') as u64;
        size += n as u64;
        last = buf[n - 1];
    }
    Ok(LineCount {
        lines: newlines + u64::from(last != b'\n'),
        size,
    })
}

/// One file cut into chunks of `chunk` lines, walked with a cursor: chunk `k`
/// starts where chunk `k-1` ended, and every chunk but the last ends just
/// after its `chunk`-th newline.
///
/// The last chunk ends at the counted size without being scanned: only a
/// file with fewer lines than counted is noticed (the cursor runs out of
/// lines before the last chunk), since that is the change that makes the
/// chunks impossible to cut.
#[derive(Debug)]
pub struct LinesChunks {
    file: File,
    path: PathBuf,
    chunk: u64,
    lines: u64,
    size: u64,
    total: u64,
    next_index: u64,
    /// Where the next chunk starts; always inside or at the end of the window.
    offset: u64,
    /// The first index given and the one past the last: `0..total`, or a
    /// shard's block.
    first: u64,
    stop: u64,
    /// The cursor is still to be moved past the lines of the chunks before
    /// `first`, on the cutting thread.
    seek: bool,
    /// The window of the file last read, `[base, base + filled)`: chunks of a
    /// few lines are cut from it without another read.
    buf: Vec<u8>,
    base: u64,
    filled: usize,
    error: Option<String>,
}

/// The buffer a file of lines is read through: a small file needs no
/// megabyte of it.
fn block_size(count: &LineCount) -> usize {
    usize::try_from(count.size)
        .unwrap_or(BLOCK_SIZE)
        .clamp(1, BLOCK_SIZE)
}

impl LinesChunks {
    /// Opens `path` to cut it as `count` (from [`count_lines`]) describes.
    ///
    /// Panics if `chunk` is 0: the configuration rules it out.
    pub fn open(path: &Path, count: LineCount, chunk: u64) -> io::Result<Self> {
        assert!(chunk > 0, "chunk size must be positive");
        let file = File::open(path)?;
        let block = block_size(&count);
        Ok(Self {
            file,
            path: path.to_path_buf(),
            chunk,
            lines: count.lines,
            size: count.size,
            total: count.lines.div_ceil(chunk),
            next_index: 0,
            offset: 0,
            first: 0,
            stop: count.lines.div_ceil(chunk),
            seek: false,
            buf: vec![0; block],
            base: 0,
            filled: 0,
            error: None,
        })
    }

    /// Gives only the chunks with indices in `block` (a shard's). The lines
    /// before it are counted off first, on the cutting thread.
    pub fn within(mut self, block: std::ops::Range<u64>) -> Self {
        self.stop = block.end.min(self.total);
        self.first = block.start.min(self.stop);
        self.next_index = self.first;
        self.seek = self.first > 0 && self.first < self.stop;
        self
    }

    /// Reads in blocks of `block_size` bytes instead of up to 1 MiB; tests
    /// use a tiny one so that lines straddle block edges.
    pub fn with_block_size(mut self, block_size: usize) -> Self {
        assert!(block_size > 0, "block size must be positive");
        self.buf = vec![0; block_size];
        // The window is dropped, so it must restart at the cursor.
        self.base = self.offset;
        self.filled = 0;
        self
    }

    /// The offset just after the next `lines` newlines from the cursor, or
    /// `None` if the file (up to the counted size) runs out first.
    fn skip_lines(&mut self, lines: u64) -> io::Result<Option<u64>> {
        let mut need = lines;
        let mut at = (self.offset - self.base) as usize;
        loop {
            let window = &self.buf[at..self.filled];
            // Iterating rather than counting the whole window first: with a
            // chunk of one line, counting would rescan the rest of the window
            // for every chunk.
            for i in memchr_iter(b'\n', window) {
                need -= 1;
                if need == 0 {
                    return Ok(Some(self.base + (at + i + 1) as u64));
                }
            }
            self.base += self.filled as u64;
            self.filled = 0;
            at = 0;
            if self.base >= self.size {
                return Ok(None);
            }
            let room = self.buf.len();
            let want = room.min(usize::try_from(self.size - self.base).unwrap_or(room));
            let n = read_at(&self.file, &mut self.buf[..want], self.base)?;
            if n == 0 {
                return Ok(None);
            }
            self.filled = n;
        }
    }
}

impl LinesChunks {
    fn shrank(&self) -> String {
        format!(
            "{} has fewer than the {} lines counted before the run: it changed",
            self.path.display(),
            self.lines,
        )
    }
}

impl Cutter for LinesChunks {
    fn next_chunk(&mut self) -> Option<ChunkSpec> {
        if self.error.is_some() || self.next_index >= self.stop {
            return None;
        }
        if self.seek {
            self.seek = false;
            match self.skip_lines(self.first * self.chunk) {
                Ok(Some(start)) => self.offset = start,
                Ok(None) => {
                    self.error = Some(self.shrank());
                    return None;
                }
                Err(e) => {
                    self.error = Some(format!("cannot read {}: {e}", self.path.display()));
                    return None;
                }
            }
        }
        let index = self.next_index;
        let start = self.offset;
        let end = if index + 1 == self.total {
            self.size
        } else {
            match self.skip_lines(self.chunk) {
                Ok(Some(end)) => end,
                Ok(None) => {
                    self.error = Some(self.shrank());
                    return None;
                }
                Err(e) => {
                    self.error = Some(format!("cannot read {}: {e}", self.path.display()));
                    return None;
                }
            }
        };
        self.next_index += 1;
        self.offset = end;
        Some(ChunkSpec {
            index,
            start,
            end,
            first_item: index * self.chunk,
        })
    }

    fn total(&self) -> Option<u64> {
        Some(self.stop - self.first)
    }

    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn first(&self) -> u64 {
        self.first
    }
}

/// A lines file cut at a cursor into chunks of as many lines as the run
/// decides (`chunk = "auto"`), counting lines as it goes so that every
/// chunk knows the number of its first line.
#[derive(Debug)]
pub struct LinesCursor {
    file: File,
    path: PathBuf,
    lines: u64,
    size: u64,
    /// The cursor, and the number of the line it is at.
    at: u64,
    line: u64,
    /// The window of the file last read, `[base, base + filled)`.
    buf: Vec<u8>,
    base: u64,
    filled: usize,
}

impl LinesCursor {
    /// Opens `path` to cut it as `count` (from [`count_lines`]) describes.
    pub fn open(path: &Path, count: LineCount) -> io::Result<Self> {
        let file = File::open(path)?;
        let block = block_size(&count);
        Ok(Self {
            file,
            path: path.to_path_buf(),
            lines: count.lines,
            size: count.size,
            at: 0,
            line: 0,
            buf: vec![0; block],
            base: 0,
            filled: 0,
        })
    }

    /// Reads in blocks of `block_size` bytes; tests use a tiny one.
    #[cfg(test)]
    fn with_block_size(mut self, block_size: usize) -> Self {
        self.buf = vec![0; block_size];
        self.base = self.at;
        self.filled = 0;
        self
    }

    /// Walks from the cursor over at most `lines` lines, stopping at the
    /// position `limit`; returns where it stopped and the lines passed. A
    /// last line without a newline counts once the walk reaches its end.
    fn walk(&mut self, lines: u64, limit: u64) -> io::Result<(u64, u64)> {
        let limit = limit.min(self.size);
        let mut passed = 0;
        let mut line_start = self.at;
        let mut at = self.at;
        while passed < lines {
            if at >= limit {
                if limit > line_start {
                    passed += 1;
                }
                return Ok((limit, passed));
            }
            if at < self.base || at >= self.base + self.filled as u64 {
                self.base = at;
                let want = self
                    .buf
                    .len()
                    .min(usize::try_from(self.size - at).unwrap_or(usize::MAX));
                let n = read_at(&self.file, &mut self.buf[..want], at).map_err(|e| {
                    io::Error::other(format!("cannot read {}: {e}", self.path.display()))
                })?;
                if n == 0 {
                    return Err(io::Error::other(format!(
                        "{} has fewer than the {} lines counted before the run: it changed",
                        self.path.display(),
                        self.lines
                    )));
                }
                self.filled = n;
            }
            let from = (at - self.base) as usize;
            let to = self
                .filled
                .min(usize::try_from(limit - self.base).unwrap_or(usize::MAX));
            let window = &self.buf[from..to];
            at = self.base + to as u64;
            for i in memchr_iter(b'\n', window) {
                passed += 1;
                line_start = self.base + (from + i + 1) as u64;
                if passed == lines {
                    at = line_start;
                    break;
                }
            }
        }
        Ok((at, passed))
    }
}

impl SizedCutter for LinesCursor {
    fn cut(&mut self, index: u64, size: u64, limit: u64) -> io::Result<(ChunkSpec, u64)> {
        let start = self.at;
        let first_item = self.line;
        let (end, lines) = self.walk(size, limit)?;
        self.at = end;
        self.line += lines;
        let chunk = ChunkSpec {
            index,
            start,
            end,
            first_item,
        };
        Ok((chunk, lines))
    }

    fn units_to(&mut self, to: u64) -> io::Result<u64> {
        let (at, line) = (self.at, self.line);
        let (_, lines) = self.walk(u64::MAX, to)?;
        self.at = at;
        self.line = line;
        Ok(lines)
    }

    fn position(&self) -> u64 {
        self.at
    }

    fn end(&self) -> u64 {
        self.size
    }

    fn remaining(&self) -> u64 {
        self.lines.saturating_sub(self.line)
    }
}

#[cfg(test)]
mod tests;
