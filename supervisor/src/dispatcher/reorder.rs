//! The bounded reorder buffer behind `order = "index"`: results that finish
//! early wait here until every lower index has been written or has failed.
//!
//! It is a ring of places indexed by `index - next`, each keeping its output
//! buffer between uses, so a steady run allocates nothing per chunk. The
//! dispatcher asks [`Reorder::admits`] before dispatching a fresh chunk: when
//! the ring or its byte budget is full it dispatches nothing further ahead,
//! which bounds memory whatever one slow chunk does.

use fixedbitset::FixedBitSet;

use super::types::ResultMeta;

#[derive(Debug, Default)]
enum Standing {
    #[default]
    Empty,
    Done(ResultMeta),
    /// Failed for good: there is nothing to write, only a gap to pass.
    Skipped,
}

#[derive(Debug, Default)]
struct Place {
    state: Standing,
    output: Vec<u8>,
}

/// Output buffers that grew past this are given back after use.
const KEEP_CAPACITY: usize = 64 * 1024;

#[derive(Debug)]
pub struct Reorder {
    /// The lowest index not yet written.
    next: u64,
    places: Vec<Place>,
    buffered_bytes: usize,
    max_bytes: usize,
    /// Indices written by an earlier run: passed over as if just written.
    settled: Option<FixedBitSet>,
}

impl Reorder {
    pub fn new(capacity: usize, max_bytes: usize, settled: Option<FixedBitSet>) -> Self {
        assert!(capacity > 0);
        let mut reorder = Self {
            next: 0,
            places: (0..capacity).map(|_| Place::default()).collect(),
            buffered_bytes: 0,
            max_bytes,
            settled,
        };
        reorder.pass_settled();
        reorder
    }

    /// Starts at `first` rather than 0: a shard's chunks start at its block.
    pub fn starting_at(mut self, first: u64) -> Self {
        self.next = self.next.max(first);
        self.pass_settled();
        self
    }

    fn pass_settled(&mut self) {
        if let Some(settled) = &self.settled {
            while settled.contains(self.next as usize) {
                self.next += 1;
            }
        }
    }

    /// The lowest index not yet written.
    #[cfg(test)]
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// Whether a chunk with this index may be dispatched now: within the ring
    /// and, unless it is the very next one, within the byte budget.
    pub fn admits(&self, index: u64) -> bool {
        index == self.next
            || (index < self.next + self.places.len() as u64
                && self.buffered_bytes < self.max_bytes)
    }

    fn place(&mut self, index: u64) -> &mut Place {
        debug_assert!(index >= self.next && index < self.next + self.places.len() as u64);
        let len = self.places.len() as u64;
        &mut self.places[(index % len) as usize]
    }

    /// Takes a finished chunk and writes out, through `write`, every result
    /// that is now in order. The output is copied only if it must wait.
    pub fn done<E>(
        &mut self,
        meta: ResultMeta,
        output: &[u8],
        mut write: impl FnMut(&ResultMeta, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if meta.index == self.next {
            write(&meta, output)?;
            self.next += 1;
            self.pass_settled();
            return self.drain(write);
        }
        self.buffered_bytes += output.len();
        let place = self.place(meta.index);
        place.state = Standing::Done(meta);
        place.output.clear();
        place.output.extend_from_slice(output);
        Ok(())
    }

    /// Marks a chunk as failed for good, so later results can pass it.
    pub fn skip<E>(
        &mut self,
        index: u64,
        write: impl FnMut(&ResultMeta, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.place(index).state = Standing::Skipped;
        self.drain(write)
    }

    fn drain<E>(
        &mut self,
        mut write: impl FnMut(&ResultMeta, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        loop {
            let next = self.next;
            let place = self.place(next);
            match std::mem::take(&mut place.state) {
                Standing::Empty => {
                    if self
                        .settled
                        .as_ref()
                        .is_some_and(|s| s.contains(next as usize))
                    {
                        self.next += 1;
                        continue;
                    }
                    return Ok(());
                }
                Standing::Skipped => {}
                Standing::Done(meta) => {
                    let result = write(&meta, &place.output);
                    let len = place.output.len();
                    place.output.clear();
                    if place.output.capacity() > KEEP_CAPACITY {
                        place.output = Vec::new();
                    }
                    self.buffered_bytes -= len;
                    result?;
                }
            }
            self.next += 1;
        }
    }

    /// Results waiting for a lower index.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.places
            .iter()
            .all(|place| matches!(place.state, Standing::Empty))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::convert::Infallible;

    fn meta(index: u64) -> ResultMeta {
        ResultMeta {
            index,
            start: index * 10,
            end: index * 10 + 10,
            attempt: 1,
            worker: 0,
            seconds: 0.0,
        }
    }

    #[test]
    fn a_shard_starts_at_its_block() {
        let mut reorder = Reorder::new(4, 1 << 20, None).starting_at(10);
        assert_eq!(reorder.next_index(), 10);
        assert!(reorder.admits(13) && !reorder.admits(14));
        let mut written = Vec::new();
        for index in [11, 10] {
            reorder
                .done(meta(index), b"x", |m, _| {
                    written.push(m.index);
                    Ok::<_, ()>(())
                })
                .unwrap();
        }
        assert_eq!(written, [10, 11]);
    }

    #[test]
    fn holds_early_results_until_the_gap_closes() {
        let mut reorder = Reorder::new(4, 1 << 20, None);
        let written = std::cell::RefCell::new(Vec::new());
        let write = |m: &ResultMeta, out: &[u8]| {
            written.borrow_mut().push((m.index, out.to_vec()));
            Ok::<_, Infallible>(())
        };
        reorder.done(meta(2), b"two", write).unwrap();
        reorder.done(meta(1), b"one", write).unwrap();
        assert!(written.borrow().is_empty());
        reorder.done(meta(0), b"zero", write).unwrap();
        let written = written.into_inner();
        assert_eq!(
            written,
            [
                (0, b"zero".to_vec()),
                (1, b"one".to_vec()),
                (2, b"two".to_vec())
            ]
        );
        assert_eq!(reorder.next_index(), 3);
        assert!(reorder.is_empty());
    }

    #[test]
    fn a_skipped_chunk_lets_the_rest_through() {
        let mut reorder = Reorder::new(4, 1 << 20, None);
        let mut written = Vec::new();
        let mut write = |m: &ResultMeta, _: &[u8]| {
            written.push(m.index);
            Ok::<_, Infallible>(())
        };
        reorder.done(meta(1), b"", &mut write).unwrap();
        reorder.skip(0, &mut write).unwrap();
        assert_eq!(written, [1]);
        assert_eq!(reorder.next_index(), 2);
    }

    #[test]
    fn admits_nothing_past_the_ring_or_the_byte_budget() {
        let mut reorder = Reorder::new(4, 8, None);
        assert!(reorder.admits(3));
        assert!(!reorder.admits(4));
        reorder
            .done(meta(1), b"123456789", |_, _| Ok::<_, Infallible>(()))
            .unwrap();
        assert!(!reorder.admits(2), "over the byte budget");
        assert!(reorder.admits(0), "the next index is always admitted");
    }

    #[test]
    fn indices_settled_earlier_are_passed_over() {
        let mut settled = FixedBitSet::with_capacity(10);
        settled.insert_range(0..3);
        settled.insert(4);
        settled.insert(6);
        let mut reorder = Reorder::new(4, 1 << 20, Some(settled));
        assert_eq!(reorder.next_index(), 3);
        let mut written = Vec::new();
        let mut write = |m: &ResultMeta, _: &[u8]| {
            written.push(m.index);
            Ok::<_, Infallible>(())
        };
        reorder.done(meta(5), b"", &mut write).unwrap();
        reorder.done(meta(3), b"", &mut write).unwrap();
        assert_eq!(written, [3, 5]);
        assert_eq!(reorder.next_index(), 7);
    }

    proptest! {
        #[test]
        fn writes_every_index_once_in_order(
            order in Just((0u64..64).collect::<Vec<_>>()).prop_shuffle(),
            skipped in proptest::collection::hash_set(0u64..64, 0..8),
        ) {
            // Feed results in a random order but never further ahead than the
            // ring admits, as the dispatcher does.
            let mut reorder = Reorder::new(64, usize::MAX, None);
            let mut written = Vec::new();
            for index in order {
                prop_assert!(reorder.admits(index));
                let mut write = |m: &ResultMeta, out: &[u8]| {
                    assert_eq!(out, m.index.to_string().as_bytes());
                    written.push(m.index);
                    Ok::<_, Infallible>(())
                };
                if skipped.contains(&index) {
                    reorder.skip(index, &mut write).unwrap();
                } else {
                    reorder.done(meta(index), index.to_string().as_bytes(), &mut write).unwrap();
                }
            }
            let expected: Vec<u64> = (0..64).filter(|i| !skipped.contains(i)).collect();
            prop_assert_eq!(written, expected);
            prop_assert!(reorder.is_empty());
        }
    }
}
