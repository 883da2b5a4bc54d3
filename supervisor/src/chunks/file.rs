//! A `file` source: byte ranges of about `chunk` bytes, each boundary just
//! after a delimiter, found lazily with positioned reads.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memchr::memmem::Finder;

use super::layout::SizedCutter;
use super::{ChunkSpec, Cutter};

/// Big enough that one read nearly always finds the delimiter after a
/// nominal position, small enough that a chunk costs microseconds.
const BLOCK_SIZE: usize = 64 * 1024;

/// One file cut into about `chunk` bytes per chunk, like GNU parallel's
/// `--pipepart`.
///
/// The cuts are `boundary(k)` for `k` in `0..=ceil(size / chunk)`, where
/// `boundary(0) = 0`, the last is `size`, and in between `boundary(k)` is the
/// smallest `p >= k·chunk` that is the end of the file or just after a
/// delimiter. Chunks are the non-empty ranges between successive cuts,
/// numbered densely: a record longer than a chunk makes one larger chunk,
/// never an empty one. How many there are takes reading the file around
/// each cut, which [`FileChunks::count`] does once, as the job is loaded.
///
/// A delimiter that can overlap itself (`"\n\n"` inside `"\n\n\n"`) is taken
/// at its nearest occurrence ending at or after the nominal position, which is
/// not always where a left-to-right split into records would put it: the
/// boundary always follows a whole delimiter, but may fall inside what such a
/// split calls the next record's leading bytes.
#[derive(Debug)]
pub struct FileChunks {
    file: File,
    path: PathBuf,
    finder: Finder<'static>,
    delimiter_len: usize,
    chunk: u64,
    /// The length at open: a file that grows afterwards is cut as it was.
    size: u64,
    /// Cuts past the first: `ceil(size / chunk)`.
    cuts: u64,
    /// The chunks there are, when counted (see [`FileChunks::count`]).
    total: Option<u64>,
    /// The first index given and the one past the last: every chunk, or a
    /// shard's block.
    first: u64,
    stop: u64,
    /// The next cut to find.
    next_cut: u64,
    /// The next chunk's index: chunks are numbered densely.
    next_index: u64,
    /// The last cut found, where the next chunk starts.
    next_start: u64,
    /// The window of the file last read, `[base, base + filled)`, reused when
    /// the next search starts inside it: with chunks smaller than a block,
    /// most boundaries cost no read at all. `block_size + delimiter_len - 1`
    /// long, so a block always fits after the carried-over tail.
    buf: Vec<u8>,
    base: u64,
    filled: usize,
    error: Option<String>,
}

impl FileChunks {
    /// Opens `path` and takes its current length as the size to cut.
    ///
    /// Panics if `delimiter` is empty or `chunk` is 0: the configuration
    /// rules both out.
    pub fn open(path: &Path, delimiter: Vec<u8>, chunk: u64) -> io::Result<Self> {
        assert!(!delimiter.is_empty(), "the delimiter must not be empty");
        assert!(chunk > 0, "chunk size must be positive");
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        let delimiter_len = delimiter.len();
        Ok(Self {
            file,
            path: path.to_path_buf(),
            finder: Finder::new(&delimiter).into_owned(),
            delimiter_len,
            chunk,
            size,
            cuts: size.div_ceil(chunk),
            total: None,
            first: 0,
            stop: u64::MAX,
            next_cut: 1,
            next_index: 0,
            next_start: 0,
            buf: vec![0; BLOCK_SIZE + delimiter_len - 1],
            base: 0,
            filled: 0,
            error: None,
        })
    }

    /// Reads in blocks of `block_size` bytes instead of 64 KiB; tests use a
    /// tiny one so that delimiters straddle block edges.
    pub fn with_block_size(mut self, block_size: usize) -> Self {
        assert!(block_size > 0, "block size must be positive");
        self.buf = vec![0; block_size + self.delimiter_len - 1];
        self.filled = 0;
        self
    }

    /// The most chunks a file of `size` bytes can be cut into, known without
    /// reading it: fewer when records are longer than a chunk.
    pub fn most_chunks(size: u64, chunk: u64) -> u64 {
        size.div_ceil(chunk)
    }

    /// The chunks the file is cut into, given as counted at load.
    pub fn with_total(mut self, total: u64) -> Self {
        self.total = Some(total);
        self
    }

    /// Gives only the chunks with indices in `block` (a shard's). Dense
    /// numbering makes a chunk's index depend on the cuts before it, so the
    /// chunks before the block are still cut, and skipped: a short read near
    /// each, as when they were counted.
    pub fn within(mut self, block: std::ops::Range<u64>) -> Self {
        self.stop = block.end;
        self.first = block.start.min(self.stop);
        self
    }

    /// Counts the chunks of `path` by finding every cut: a short read near
    /// each, so the job's chunk count is exact before it runs.
    pub fn count(path: &Path, delimiter: Vec<u8>, chunk: u64) -> io::Result<u64> {
        let mut chunks = Self::open(path, delimiter, chunk)?;
        let mut count = 0;
        while chunks.next_chunk().is_some() {
            count += 1;
        }
        match chunks.error {
            Some(error) => Err(io::Error::other(error)),
            None => Ok(count),
        }
    }

    /// The smallest `p >= nominal` just after a delimiter, or the size.
    fn find_boundary(&mut self, nominal: u64) -> io::Result<u64> {
        let d = self.delimiter_len;
        // A delimiter ending at `nominal` starts `d` bytes before it; any
        // match starting at or after `from` ends at or after `nominal`, so the
        // leftmost match is the answer.
        let from = nominal.saturating_sub(d as u64);
        let mut at = if from >= self.base && from < self.base + self.filled as u64 {
            (from - self.base) as usize
        } else {
            self.base = from;
            self.filled = 0;
            0
        };
        loop {
            if let Some(i) = self.finder.find(&self.buf[at..self.filled]) {
                return Ok(self.base + (at + i + d) as u64);
            }
            // A delimiter may begin in the last d-1 bytes and end in the
            // next block: keep them in front of it.
            let keep = (self.filled - at).min(d - 1);
            self.buf.copy_within(self.filled - keep..self.filled, 0);
            self.base += (self.filled - keep) as u64;
            self.filled = keep;
            at = 0;
            let offset = self.base + keep as u64;
            if offset >= self.size {
                return Ok(self.size);
            }
            let room = self.buf.len() - keep;
            let want = room.min(usize::try_from(self.size - offset).unwrap_or(room));
            let n = read_at(&self.file, &mut self.buf[keep..keep + want], offset)?;
            if n == 0 {
                // The file shrank since it was opened: what is left ends here.
                return Ok(self.size);
            }
            self.filled += n;
        }
    }
}

impl Cutter for FileChunks {
    fn next_chunk(&mut self) -> Option<ChunkSpec> {
        while let Some(chunk) = self.cut_next() {
            if chunk.index >= self.stop {
                break;
            }
            if chunk.index >= self.first {
                return Some(chunk);
            }
        }
        None
    }

    fn total(&self) -> Option<u64> {
        self.total
            .map(|total| self.stop.min(total).saturating_sub(self.first))
    }

    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn first(&self) -> u64 {
        self.first
    }
}

impl FileChunks {
    /// The next chunk of the whole file, whatever the block.
    fn cut_next(&mut self) -> Option<ChunkSpec> {
        while self.error.is_none() && self.next_cut <= self.cuts {
            let cut = self.next_cut;
            let start = self.next_start;
            let end = if cut == self.cuts {
                self.size
            } else {
                let nominal = cut * self.chunk;
                if start >= nominal {
                    // A record longer than a chunk carried the cut past this
                    // nominal position: no delimiter ends between them, so
                    // this cut is the same one.
                    start
                } else {
                    match self.find_boundary(nominal) {
                        Ok(end) => end,
                        Err(e) => {
                            self.error = Some(format!("cannot read {}: {e}", self.path.display()));
                            return None;
                        }
                    }
                }
            };
            self.next_cut += 1;
            if end == start {
                continue;
            }
            self.next_start = end;
            let index = self.next_index;
            self.next_index += 1;
            return Some(ChunkSpec::at_offsets(index, start, end));
        }
        None
    }
}

/// A file cut at a cursor into chunks of sizes the run decides
/// (`chunk = "auto"`), each ending just after a delimiter or at the end.
#[derive(Debug)]
pub struct FileCursor {
    file: FileChunks,
    at: u64,
}

impl FileCursor {
    pub fn open(path: &Path, delimiter: Vec<u8>) -> io::Result<Self> {
        Ok(Self {
            file: FileChunks::open(path, delimiter, 1)?,
            at: 0,
        })
    }

    fn read_error(&self, e: &io::Error) -> io::Error {
        io::Error::other(format!("cannot read {}: {e}", self.file.path.display()))
    }
}

impl SizedCutter for FileCursor {
    fn cut(&mut self, index: u64, size: u64, limit: u64) -> io::Result<(ChunkSpec, u64)> {
        let start = self.at;
        let limit = limit.min(self.file.size);
        let end = match start.checked_add(size) {
            Some(nominal) if nominal < limit => self
                .file
                .find_boundary(nominal)
                .map_err(|e| self.read_error(&e))?
                .min(limit),
            _ => limit,
        }
        .max(start);
        self.at = end;
        Ok((ChunkSpec::at_offsets(index, start, end), end - start))
    }

    fn units_to(&mut self, to: u64) -> io::Result<u64> {
        Ok(to.saturating_sub(self.at))
    }

    fn position(&self) -> u64 {
        self.at
    }

    fn end(&self) -> u64 {
        self.file.size
    }

    fn remaining(&self) -> u64 {
        self.file.size - self.at
    }
}

/// `read_at` that retries when a signal interrupts it, since the supervisor
/// runs with signal handlers installed.
pub(super) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_files::{all, temp_file};
    use super::*;
    use proptest::prelude::*;

    fn ranges(contents: &[u8], delimiter: &[u8], chunk: u64, block: usize) -> Vec<(u64, u64)> {
        let file = temp_file(contents);
        let mut source = FileChunks::open(file.path(), delimiter.to_vec(), chunk)
            .unwrap()
            .with_block_size(block);
        let chunks = all(&mut source);
        assert_eq!(source.error(), None);
        chunks.iter().map(|c| (c.start, c.end)).collect()
    }

    /// The rule itself, by brute force.
    fn expected_boundary(contents: &[u8], delimiter: &[u8], nominal: usize) -> usize {
        let d = delimiter.len();
        (nominal..contents.len())
            .find(|&p| p >= d && &contents[p - d..p] == delimiter)
            .unwrap_or(contents.len())
    }

    /// Whether a delimiter can overlap a shifted copy of itself, like "aa" or "aba".
    fn overlaps_itself(delimiter: &[u8]) -> bool {
        let d = delimiter.len();
        (1..d).any(|j| delimiter[..j] == delimiter[d - j..])
    }

    #[test]
    fn an_empty_file_has_no_chunks() {
        let file = temp_file(b"");
        assert_eq!(
            FileChunks::count(file.path(), b"\n".to_vec(), 10).unwrap(),
            0
        );
        let mut source = FileChunks::open(file.path(), b"\n".to_vec(), 10).unwrap();
        assert_eq!(source.next_chunk(), None);
        assert_eq!(source.error(), None);
    }

    #[test]
    fn the_last_record_needs_no_delimiter() {
        assert_eq!(
            ranges(b"aa\nbb\ncc", b"\n", 4, BLOCK_SIZE),
            [(0, 6), (6, 8)]
        );
    }

    #[test]
    fn a_delimiter_ending_at_the_nominal_position_is_the_boundary() {
        assert_eq!(
            ranges(b"abcd\nefgh\n", b"\n", 5, BLOCK_SIZE),
            [(0, 5), (5, 10)]
        );
        assert_eq!(ranges(b"abc||fg||", b"||", 5, 1), [(0, 5), (5, 9)]);
    }

    #[test]
    fn a_record_longer_than_several_chunks_makes_one_larger_chunk() {
        let mut contents = b"x\n".to_vec();
        contents.extend([b'y'; 50]);
        contents.extend(b"\nz\n");
        // 55 bytes, chunks of 10: the long record runs from 2 to 53.
        for block in [1, 3, 7, BLOCK_SIZE] {
            assert_eq!(
                ranges(&contents, b"\n", 10, block),
                [(0, 53), (53, 55)],
                "block {block}"
            );
        }
    }

    #[test]
    fn a_record_running_to_the_end_leaves_no_empty_chunk_at_the_end() {
        let contents = [b"a\n".as_slice(), &[b'b'; 30]].concat();
        assert_eq!(ranges(&contents, b"\n", 8, 4), [(0, 32)]);
        // The file the issue was found with: 10,290 bytes in chunks of 1 KiB,
        // its last record ending exactly where the last nominal cut would be.
        let contents = [b"x".repeat(10_239), b"\n".to_vec(), b"y".repeat(50)].concat();
        let chunks = ranges(&contents, b"\n", 1024, BLOCK_SIZE);
        assert!(chunks.iter().all(|(start, end)| end > start), "{chunks:?}");
    }

    #[test]
    fn multi_byte_delimiters_straddling_block_edges() {
        let crlf = b"ab\r\ncd\r\nef\r\n\r\ngh\r\nij";
        let pipes = b"ab||cd||ef||||gh||ij";
        // Delimiters end at 4, 8, 12, 14 and 18; nominal positions are
        // multiples of 3, and the one at 12 is itself a boundary.
        let expected = [(0, 4), (4, 8), (8, 12), (12, 18), (18, 20)];
        for block in 1..=crlf.len() + 1 {
            assert_eq!(ranges(crlf, b"\r\n", 3, block), expected, "block {block}");
            assert_eq!(ranges(pipes, b"||", 3, block), expected, "block {block}");
        }
    }

    #[test]
    fn a_self_overlapping_delimiter_is_taken_at_its_nearest_end() {
        // Split left to right, "\n\n" makes the records "a\n\n" and "\nb";
        // with a nominal position of 4 the boundary follows the second and
        // third newlines instead.
        assert_eq!(ranges(b"a\n\n\nb", b"\n\n", 4, 1), [(0, 4), (4, 5)]);
    }

    #[test]
    fn a_chunk_larger_than_the_file_is_the_whole_file() {
        assert_eq!(ranges(b"a\nb\nc\n", b"\n", 1000, BLOCK_SIZE), [(0, 6)]);
    }

    #[test]
    fn the_most_chunks_is_the_ceiling() {
        assert_eq!(FileChunks::most_chunks(0, 5), 0);
        assert_eq!(FileChunks::most_chunks(5, 5), 1);
        assert_eq!(FileChunks::most_chunks(6, 5), 2);
        assert_eq!(FileChunks::most_chunks(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn a_file_that_shrinks_after_open_still_ends() {
        let contents = b"line\n".repeat(100);
        let file = temp_file(&contents);
        let mut source = FileChunks::open(file.path(), b"\n".to_vec(), 7).unwrap();
        file.as_file().set_len(120).unwrap();
        let chunks = all(&mut source);
        assert_eq!(chunks.last().unwrap().end, 500);
        for pair in chunks.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        assert_eq!(source.error(), None);
    }

    #[test]
    fn a_read_error_stops_the_chunks_and_names_the_path() {
        // A directory opens, has a length, and fails every read (EISDIR).
        let dir = tempfile::tempdir().unwrap();
        let size = std::fs::metadata(dir.path()).unwrap().len();
        let mut source = FileChunks::open(dir.path(), b"\n".to_vec(), 1).unwrap();
        if FileChunks::most_chunks(size, 1) < 2 {
            // A file system that gives directories no length: nothing to read.
            return;
        }
        assert_eq!(source.next_chunk(), None);
        let error = source.error().unwrap();
        assert!(error.contains(&dir.path().display().to_string()), "{error}");
        assert!(error.contains("directory"), "{error}");
        assert_eq!(source.next_chunk(), None);
        assert!(source.error().is_some());
    }

    #[test]
    fn a_missing_file_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let error = FileChunks::open(&dir.path().join("missing"), b"\n".to_vec(), 1).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    const ALPHABET: &[u8] = b"ab\n|\r";

    fn contents() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![9 => proptest::sample::select(ALPHABET), 1 => any::<u8>()];
        proptest::collection::vec(byte, 0..3000)
    }

    fn delimiter() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(ALPHABET), 1..=4)
    }

    fn block_size() -> impl Strategy<Value = usize> {
        prop_oneof![Just(BLOCK_SIZE), 1usize..80]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn chunks_tile_the_file_between_its_cuts(
            contents in contents(),
            delimiter in delimiter(),
            chunk in 1u64..500,
            block in block_size(),
        ) {
            let size = contents.len() as u64;
            let d = delimiter.len();
            let file = temp_file(&contents);
            let mut source = FileChunks::open(file.path(), delimiter.clone(), chunk)
                .unwrap()
                .with_block_size(block);
            let chunks = all(&mut source);
            prop_assert_eq!(source.error(), None);
            let count = FileChunks::count(file.path(), delimiter.clone(), chunk).unwrap();
            prop_assert_eq!(chunks.len() as u64, count);
            prop_assert!(count <= FileChunks::most_chunks(size, chunk));

            // The cuts by brute force: every chunk lies between two
            // successive distinct ones, and none is empty.
            let mut cuts = vec![0usize];
            for k in 1..size.div_ceil(chunk) {
                cuts.push(expected_boundary(&contents, &delimiter, (k * chunk) as usize));
            }
            cuts.push(contents.len());
            cuts.dedup();
            let expected: Vec<(u64, u64)> = cuts
                .windows(2)
                .map(|pair| (pair[0] as u64, pair[1] as u64))
                .collect();
            let got: Vec<(u64, u64)> = chunks.iter().map(|c| (c.start, c.end)).collect();
            prop_assert_eq!(got, expected);

            // Without self-overlap, the ends of a left-to-right split into
            // records are exactly the ends of the delimiter's occurrences.
            let record_ends: Vec<u64> = Finder::new(&delimiter)
                .find_iter(&contents)
                .map(|i| (i + d) as u64)
                .collect();
            for (k, c) in chunks.iter().enumerate() {
                prop_assert_eq!(c.index, k as u64);
                prop_assert_eq!(c.first_item, c.start);
                prop_assert!(c.end > c.start);
                let b = c.end as usize;
                if b != contents.len() {
                    prop_assert_eq!(&contents[b - d..b], delimiter.as_slice());
                    if !overlaps_itself(&delimiter) {
                        prop_assert!(record_ends.binary_search(&(b as u64)).is_ok());
                    }
                }
            }
        }

        #[test]
        fn a_block_gives_the_whole_files_chunks(
            contents in contents(),
            delimiter in delimiter(),
            chunk in 1u64..200,
            block in block_size(),
            first in 0u64..40,
            len in 0u64..40,
        ) {
            let file = temp_file(&contents);
            let count = FileChunks::count(file.path(), delimiter.clone(), chunk).unwrap();
            let open = || FileChunks::open(file.path(), delimiter.clone(), chunk)
                .unwrap()
                .with_block_size(block)
                .with_total(count);
            let whole = all(&mut open());
            let mut part = open().within(first..first + len);
            let total = part.total().unwrap();
            let got = all(&mut part);
            prop_assert_eq!(part.error(), None);
            let end = ((first + len) as usize).min(whole.len());
            let start = (first as usize).min(end);
            prop_assert_eq!(total, (end - start) as u64);
            prop_assert_eq!(got.as_slice(), &whole[start..end]);
        }
    }
}
