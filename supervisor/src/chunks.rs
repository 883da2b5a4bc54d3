//! The chunks of a job, produced lazily one index after the other: a job of
//! ten million chunks never holds ten million of anything.

mod auto;
mod file;
mod layout;
mod lines;
mod prefetch;
mod sizer;
mod stdin;

pub use auto::AutoChunks;
pub use file::{FileChunks, FileCursor};
pub use layout::{Layout, RangeCursor, Settled, SizedCutter};
pub use lines::{LineCount, LinesChunks, LinesCursor, count_lines};
pub use prefetch::Prefetch;
pub use sizer::Sizer;
pub use stdin::{Cutting, StdinChunks, stdin_descriptor};

/// One chunk: its index and the half-open range `[start, end)` it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpec {
    pub index: u64,
    pub start: u64,
    pub end: u64,
    /// The number of its first item over the whole job: `start` for a range
    /// or a file (whose items are bytes), the first line's number for lines.
    pub first_item: u64,
}

impl ChunkSpec {
    /// A chunk of a source whose items are its offsets (a range, or a file's
    /// or a stream's bytes): its first item is where it starts.
    pub fn at_offsets(index: u64, start: u64, end: u64) -> Self {
        Self {
            index,
            start,
            end,
            first_item: start,
        }
    }
}

/// The bytes a chunk takes to its worker, for a source that cannot be read
/// again (standard input): held from the moment the chunk is cut until it
/// settles, since a retry sends them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carried {
    Bytes(Vec<u8>),
    /// More than one frame can carry (a record with no delimiter for that
    /// long): the bytes were read and dropped, and the chunk fails for good
    /// without a worker.
    TooLarge {
        len: u64,
    },
}

/// What a source has next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Chunk(ChunkSpec),
    /// Nothing ready yet: the source is reading ahead and says when it has
    /// more (see [`Prefetch::ready`]).
    Later,
    /// No more chunks, or the input could not be read ([`ChunkSource::error`]).
    End,
}

/// Where the dispatcher takes chunks from, in index order. It never blocks:
/// a source that must read its input does so on a thread of its own.
pub trait ChunkSource {
    fn next_chunk(&mut self) -> Next;
    /// How many chunks the source gives, when that is known up front: the
    /// whole job's, or a shard's block's.
    fn total(&self) -> Option<u64>;
    /// The index of the first chunk the source gives: 0, or the start of a
    /// shard's block. Indices are always the job's own.
    fn first(&self) -> u64 {
        0
    }
    /// Why the source ended early: it returned [`Next::End`] because the
    /// input could not be read, not because the job has no more chunks.
    fn error(&self) -> Option<&str> {
        None
    }
    /// Whether each chunk carries its bytes (standard input): then every
    /// [`Next::Chunk`] is followed by [`ChunkSource::take_carried`].
    fn carries(&self) -> bool {
        false
    }
    /// The bytes of the chunk [`ChunkSource::next_chunk`] just gave.
    fn take_carried(&mut self) -> Option<Carried> {
        None
    }
    /// No chunk will be taken any more (a drain): a source that reads a
    /// stream stops reading it now.
    fn stop(&mut self) {}
    /// A worker's own time for a chunk of this source: a source whose
    /// chunks size themselves learns from it.
    fn measured(&mut self, _chunk: &ChunkSpec, _seconds: f64) {}
    /// Whether chunks are sized as they are taken: then only a few should
    /// wait at a worker, or a change in the items' cost is learnt too late.
    fn sizes_itself(&self) -> bool {
        false
    }
}

/// Cuts an input into chunks in index order, reading it as it goes. It may
/// block on the disk, so the run loop never calls it: [`Prefetch`] runs it
/// on a thread.
pub trait Cutter: Send {
    /// The next chunk, or `None` when the job has no more.
    fn next_chunk(&mut self) -> Option<ChunkSpec>;
    fn total(&self) -> Option<u64>;
    /// Why `next_chunk` returned `None` early, when the input could not be read.
    fn error(&self) -> Option<&str>;
    /// As [`ChunkSource::first`].
    fn first(&self) -> u64 {
        0
    }
}

/// An integer range cut into chunks of `chunk` items: chunk k covers
/// `[start + k·chunk, min(start + (k+1)·chunk, end))`.
#[derive(Debug, Clone)]
pub struct RangeChunks {
    start: u64,
    end: u64,
    chunk: u64,
    next_index: u64,
    /// The first index given, and the one past the last.
    first: u64,
    stop: u64,
}

impl RangeChunks {
    /// `chunk` must be at least 1; an empty range yields no chunks.
    pub fn new(start: u64, end: u64, chunk: u64) -> Self {
        assert!(chunk > 0, "chunk size must be positive");
        let mut range = Self {
            start,
            end,
            chunk,
            next_index: 0,
            first: 0,
            stop: 0,
        };
        range.stop = range.count();
        range
    }

    /// Gives only the chunks with indices in `block` (a shard's).
    pub fn within(mut self, block: std::ops::Range<u64>) -> Self {
        self.stop = block.end.min(self.count());
        self.first = block.start.min(self.stop);
        self.next_index = self.first;
        self
    }

    /// The job's chunks, all of them.
    pub fn count(&self) -> u64 {
        self.end.saturating_sub(self.start).div_ceil(self.chunk)
    }
}

impl ChunkSource for RangeChunks {
    fn next_chunk(&mut self) -> Next {
        if self.next_index >= self.stop {
            return Next::End;
        }
        let index = self.next_index;
        self.next_index += 1;
        let start = self.start + index * self.chunk;
        Next::Chunk(ChunkSpec::at_offsets(
            index,
            start,
            start.saturating_add(self.chunk).min(self.end),
        ))
    }

    fn total(&self) -> Option<u64> {
        Some(self.stop - self.first)
    }

    fn first(&self) -> u64 {
        self.first
    }
}

/// What the sources' tests share: real files, and every chunk a source gives.
#[cfg(test)]
mod test_files {
    use std::io::Write as _;

    use super::{ChunkSpec, Cutter};

    pub(super) fn temp_file(contents: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents).unwrap();
        file.flush().unwrap();
        file
    }

    pub(super) fn all(source: &mut impl Cutter) -> Vec<ChunkSpec> {
        std::iter::from_fn(|| source.next_chunk()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The next chunk of a source that never says `Later`.
    fn take(source: &mut RangeChunks) -> Option<ChunkSpec> {
        match source.next_chunk() {
            Next::Chunk(chunk) => Some(chunk),
            Next::End => None,
            Next::Later => panic!("a range never waits"),
        }
    }

    #[test]
    fn the_last_chunk_is_cut_at_the_end() {
        let chunks: Vec<_> = std::iter::from_fn({
            let mut source = RangeChunks::new(10, 35, 10);
            move || take(&mut source)
        })
        .collect();
        assert_eq!(
            chunks,
            [
                ChunkSpec {
                    index: 0,
                    start: 10,
                    end: 20,
                    first_item: 10
                },
                ChunkSpec {
                    index: 1,
                    start: 20,
                    end: 30,
                    first_item: 20
                },
                ChunkSpec {
                    index: 2,
                    start: 30,
                    end: 35,
                    first_item: 30
                },
            ]
        );
    }

    #[test]
    fn reaches_the_top_of_u64_without_overflow() {
        let mut source = RangeChunks::new(u64::MAX - 5, u64::MAX, 4);
        assert_eq!(source.total(), Some(2));
        take(&mut source);
        assert_eq!(take(&mut source).unwrap().end, u64::MAX);
        assert_eq!(take(&mut source), None);
    }

    #[test]
    fn a_block_gives_the_same_chunks_as_the_whole() {
        let all: Vec<_> = std::iter::from_fn({
            let mut source = RangeChunks::new(5, 100, 7);
            move || take(&mut source)
        })
        .collect();
        for block in [0..14, 3..9, 13..14, 4..4, 10..99] {
            let mut source = RangeChunks::new(5, 100, 7).within(block.clone());
            let end = block.end.min(14);
            assert_eq!(source.total(), Some(end.saturating_sub(block.start)));
            let part: Vec<_> = std::iter::from_fn(|| take(&mut source)).collect();
            let first = block.start.min(end) as usize;
            assert_eq!(part, all[first..end as usize], "{block:?}");
        }
    }

    proptest! {
        #[test]
        fn chunks_tile_the_range(start in 0u64..1_000_000, len in 0u64..10_000, chunk in 1u64..500) {
            let mut source = RangeChunks::new(start, start + len, chunk);
            let total = source.total().unwrap();
            let mut expected_start = start;
            let mut seen = 0;
            while let Some(c) = take(&mut source) {
                prop_assert_eq!(c.index, seen);
                prop_assert_eq!(c.start, expected_start);
                prop_assert!(c.end > c.start && c.end - c.start <= chunk);
                expected_start = c.end;
                seen += 1;
            }
            prop_assert_eq!(expected_start, start + len);
            prop_assert_eq!(seen, total);
        }
    }
}
