//! Where the chunks of a `chunk = "auto"` job fall: the boundaries an
//! earlier run settled are kept as its journal recorded them, the chunks
//! between two settled ones (lost when that run stopped) are cut again
//! from the gap they leave, and past the last settled chunk the source is
//! cut afresh in the sizes the run asks for. Chunks still tile the source
//! in index order.

use std::collections::VecDeque;
use std::io;

use super::ChunkSpec;

/// A chunk an earlier run settled, as its journal recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub index: u64,
    pub start: u64,
    pub end: u64,
}

/// Cuts a source at a cursor, in the units its `chunk` counts (integers,
/// bytes, lines); positions are what a chunk's `start` and `end` say
/// (integers of a range, byte offsets into a file).
pub trait SizedCutter: Send {
    /// The chunk numbered `index` from the cursor: about `size` units (at
    /// least one while any are left), never past the position `limit`, and
    /// exactly to `limit` when `size` is `u64::MAX`. Moves the cursor to its
    /// end and returns it with the units it holds.
    fn cut(&mut self, index: u64, size: u64, limit: u64) -> io::Result<(ChunkSpec, u64)>;
    /// The units between the cursor and the position `to`.
    fn units_to(&mut self, to: u64) -> io::Result<u64>;
    /// Where the cursor is.
    fn position(&self) -> u64;
    /// Where the source ends.
    fn end(&self) -> u64;
    /// The units after the cursor.
    fn remaining(&self) -> u64;
}

/// Chunks lost between settled ones, cut again evenly from their gap.
#[derive(Debug, Clone, Copy)]
struct Gap {
    to: u64,
    parts: u64,
    units: u64,
}

/// The walk over the source: settled chunks, gaps, then fresh chunks.
#[derive(Debug)]
pub struct Layout {
    settled: VecDeque<Settled>,
    gap: Option<Gap>,
    next_index: u64,
    /// `--retry-failed`: nothing is cut past the last settled chunk.
    settled_only: bool,
}

impl Layout {
    /// `settled` in index order; each index once.
    pub fn new(settled: Vec<Settled>, settled_only: bool) -> Self {
        Self {
            settled: settled.into(),
            gap: None,
            next_index: 0,
            settled_only,
        }
    }

    /// Whether the next chunk is cut afresh, and so needs a size.
    pub fn needs_size(&self) -> bool {
        self.gap.is_none() && self.settled.is_empty() && !self.settled_only
    }

    /// The next chunk and its units, `size` units when it is cut afresh;
    /// `None` once the source is tiled.
    pub fn next(
        &mut self,
        cutter: &mut dyn SizedCutter,
        size: u64,
    ) -> io::Result<Option<(ChunkSpec, u64)>> {
        loop {
            if let Some(gap) = &mut self.gap {
                if gap.parts == 0 {
                    self.gap = None;
                    continue;
                }
                let part = if gap.parts == 1 {
                    u64::MAX
                } else {
                    gap.units.div_ceil(gap.parts).max(1)
                };
                let to = gap.to;
                gap.parts -= 1;
                let (chunk, units) = cutter.cut(self.next_index, part, to)?;
                if let Some(gap) = &mut self.gap {
                    gap.units = gap.units.saturating_sub(units);
                }
                self.next_index += 1;
                return Ok(Some((chunk, units)));
            }
            if let Some(&next) = self.settled.front() {
                if next.index > self.next_index {
                    if next.start < cutter.position() || next.end > cutter.end() {
                        return Err(mismatch(&next, cutter.position()));
                    }
                    self.gap = Some(Gap {
                        to: next.start,
                        parts: next.index - self.next_index,
                        units: cutter.units_to(next.start)?,
                    });
                    continue;
                }
                self.settled.pop_front();
                if next.index < self.next_index
                    || next.start != cutter.position()
                    || next.end < next.start
                    || next.end > cutter.end()
                {
                    return Err(mismatch(&next, cutter.position()));
                }
                let cut = cutter.cut(self.next_index, u64::MAX, next.end)?;
                self.next_index += 1;
                return Ok(Some(cut));
            }
            if self.settled_only || cutter.remaining() == 0 {
                return Ok(None);
            }
            let cut = cutter.cut(self.next_index, size.max(1), cutter.end())?;
            self.next_index += 1;
            return Ok(Some(cut));
        }
    }
}

fn mismatch(chunk: &Settled, position: u64) -> io::Error {
    io::Error::other(format!(
        "the journal records chunk {} at [{}, {}), which does not follow the chunks before it \
         (they end at {position}): it does not match the input; run with --fresh",
        chunk.index, chunk.start, chunk.end
    ))
}

/// A range's cursor: chunks of integers.
#[derive(Debug, Clone)]
pub struct RangeCursor {
    at: u64,
    end: u64,
}

impl RangeCursor {
    pub fn new(start: u64, end: u64) -> Self {
        Self { at: start, end }
    }
}

impl SizedCutter for RangeCursor {
    fn cut(&mut self, index: u64, size: u64, limit: u64) -> io::Result<(ChunkSpec, u64)> {
        let start = self.at;
        let end = start
            .saturating_add(size)
            .min(limit)
            .min(self.end)
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
        self.end
    }

    fn remaining(&self) -> u64 {
        self.end - self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn walk(layout: &mut Layout, cursor: &mut RangeCursor, size: u64) -> Vec<ChunkSpec> {
        std::iter::from_fn(|| layout.next(cursor, size).unwrap().map(|(c, _)| c)).collect()
    }

    fn settled(index: u64, start: u64, end: u64) -> Settled {
        Settled { index, start, end }
    }

    #[test]
    fn settled_chunks_keep_their_bounds_and_gaps_are_cut_again_evenly() {
        let mut cursor = RangeCursor::new(0, 100);
        let mut layout = Layout::new(vec![settled(0, 0, 10), settled(4, 40, 45)], false);
        let chunks = walk(&mut layout, &mut cursor, 30);
        let bounds: Vec<(u64, u64, u64)> =
            chunks.iter().map(|c| (c.index, c.start, c.end)).collect();
        assert_eq!(
            bounds,
            [
                (0, 0, 10),
                (1, 10, 20),
                (2, 20, 30),
                (3, 30, 40),
                (4, 40, 45),
                (5, 45, 75),
                (6, 75, 100)
            ]
        );
    }

    #[test]
    fn retrying_failed_chunks_cuts_nothing_past_the_last_settled_one() {
        let mut cursor = RangeCursor::new(0, 100);
        let mut layout = Layout::new(vec![settled(0, 0, 10), settled(1, 10, 30)], true);
        assert_eq!(walk(&mut layout, &mut cursor, 5).len(), 2);
    }

    #[test]
    fn a_settled_chunk_that_does_not_follow_is_an_error() {
        let mut cursor = RangeCursor::new(0, 100);
        let mut layout = Layout::new(vec![settled(0, 0, 10), settled(1, 12, 30)], false);
        layout.next(&mut cursor, 5).unwrap();
        let error = layout.next(&mut cursor, 5).unwrap_err();
        assert!(error.to_string().contains("chunk 1 at [12, 30)"), "{error}");
        let mut cursor = RangeCursor::new(0, 100);
        let mut layout = Layout::new(vec![settled(0, 0, 200)], false);
        assert!(layout.next(&mut cursor, 5).is_err());
    }

    proptest! {
        #[test]
        fn chunks_tile_the_source_around_what_was_settled(
            len in 1u64..2_000,
            sizes in proptest::collection::vec(1u64..50, 1..200),
            keep in proptest::collection::vec(any::<bool>(), 200),
            resize in 1u64..60,
        ) {
            // A first run cuts chunks of varying sizes; some of them settle.
            let mut cursor = RangeCursor::new(7, 7 + len);
            let mut first = Layout::new(Vec::new(), false);
            let mut cut = Vec::new();
            for size in sizes.iter().cycle() {
                match first.next(&mut cursor, *size).unwrap() {
                    Some((chunk, _)) => cut.push(chunk),
                    None => break,
                }
            }
            let kept: Vec<Settled> = cut
                .iter()
                .zip(keep.iter().cycle())
                .filter(|(_, keep)| **keep)
                .map(|(c, _)| settled(c.index, c.start, c.end))
                .collect();
            // The resumed run keeps those, and tiles the rest.
            let mut cursor = RangeCursor::new(7, 7 + len);
            let mut layout = Layout::new(kept.clone(), false);
            let chunks = walk(&mut layout, &mut cursor, resize);
            let mut at = 7;
            for (k, chunk) in chunks.iter().enumerate() {
                prop_assert_eq!(chunk.index, k as u64);
                prop_assert_eq!(chunk.start, at);
                prop_assert!(chunk.end > chunk.start);
                at = chunk.end;
            }
            prop_assert_eq!(at, 7 + len);
            for s in kept {
                let chunk = chunks[s.index as usize];
                prop_assert_eq!((chunk.start, chunk.end), (s.start, s.end));
            }
        }
    }
}
