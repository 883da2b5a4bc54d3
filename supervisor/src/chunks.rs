//! The chunks of a job, produced lazily one index after the other: a job of
//! ten million chunks never holds ten million of anything.

mod auto;
mod file;
mod layout;
mod lines;
mod prefetch;
mod sizer;

pub use auto::AutoChunks;
pub use file::{FileChunks, FileCursor};
pub use layout::{Layout, RangeCursor, Settled, SizedCutter};
pub use lines::{LineCount, LinesChunks, LinesCursor, count_lines};
pub use prefetch::Prefetch;
pub use sizer::Sizer;

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
    /// How many chunks the whole job has, when that is known up front.
    fn total(&self) -> Option<u64>;
    /// Why the source ended early: it returned [`Next::End`] because the
    /// input could not be read, not because the job has no more chunks.
    fn error(&self) -> Option<&str> {
        None
    }
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
}

/// An integer range cut into chunks of `chunk` items: chunk k covers
/// `[start + k·chunk, min(start + (k+1)·chunk, end))`.
#[derive(Debug, Clone)]
pub struct RangeChunks {
    start: u64,
    end: u64,
    chunk: u64,
    next_index: u64,
}

impl RangeChunks {
    /// `chunk` must be at least 1; an empty range yields no chunks.
    pub fn new(start: u64, end: u64, chunk: u64) -> Self {
        assert!(chunk > 0, "chunk size must be positive");
        Self {
            start,
            end,
            chunk,
            next_index: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.end.saturating_sub(self.start).div_ceil(self.chunk)
    }
}

impl ChunkSource for RangeChunks {
    fn next_chunk(&mut self) -> Next {
        if self.next_index >= self.count() {
            return Next::End;
        }
        let index = self.next_index;
        self.next_index += 1;
        let start = self.start + index * self.chunk;
        Next::Chunk(ChunkSpec {
            index,
            start,
            end: start.saturating_add(self.chunk).min(self.end),
            first_item: start,
        })
    }

    fn total(&self) -> Option<u64> {
        Some(self.count())
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
