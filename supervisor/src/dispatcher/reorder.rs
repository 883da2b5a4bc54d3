//! The bounded reorder buffer behind `order = "index"`: results that finish
//! early wait here until every lower index has been written or has failed.
//!
//! It is a ring of places indexed by `index - next`, each keeping its output
//! buffer between uses, so a steady run allocates nothing per chunk. The
//! dispatcher asks [`Reorder::admits`] before dispatching a fresh chunk: when
//! the ring or its byte budget is full it dispatches nothing further ahead.
//! Chunks already at workers may still bring more than the budget (a slow
//! chunk holding up many with large outputs): those results wait in a
//! [`Spill`] instead, a file, so memory stays within the budget whatever
//! workers return.

use std::io;

use fixedbitset::FixedBitSet;

use super::types::ResultMeta;

/// Where results wait when the memory budget is spent: each written once,
/// read back once, in order. A file in the run's state folder; in memory
/// for tests.
pub trait Spill {
    /// Appends `bytes` and returns where they start.
    fn append(&mut self, bytes: &[u8]) -> io::Result<u64>;
    /// Fills `buf` with the bytes from `at`.
    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Nothing waits in it any more: its space can be used again.
    fn clear(&mut self) -> io::Result<()>;
}

#[derive(Debug, Default)]
enum Standing {
    #[default]
    Empty,
    Done(ResultMeta),
    /// Done, its output in the spill at `at`, `len` bytes long.
    Spilled {
        meta: ResultMeta,
        at: u64,
        len: usize,
    },
    /// Failed for good: there is nothing to write, only a gap to pass.
    Skipped,
}

#[derive(Debug, Default)]
struct Place {
    state: Standing,
    output: Vec<u8>,
}

fn spill_error(error: io::Error) -> String {
    format!("cannot keep a result aside until its turn: {error}")
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
    spill: Option<Box<dyn Spill>>,
    /// Results waiting in the spill.
    spilled: usize,
    /// Where a spilled result is read back into, reused.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for dyn Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spill")
    }
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
            spill: None,
            spilled: 0,
            scratch: Vec::new(),
        };
        reorder.pass_settled();
        reorder
    }

    /// Results past the memory budget go to `spill`; without one they are
    /// kept in memory all the same.
    pub fn spill_to(&mut self, spill: Box<dyn Spill>) {
        self.spill = Some(spill);
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
    /// that is now in order. The output is copied only if it must wait: in
    /// memory within the budget, else into the spill. An error is the
    /// write's, or the spill's.
    pub fn done(
        &mut self,
        meta: ResultMeta,
        output: &[u8],
        mut write: impl FnMut(&ResultMeta, &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        if meta.index == self.next {
            write(&meta, output)?;
            self.next += 1;
            self.pass_settled();
            return self.drain(write);
        }
        let over_budget = self.buffered_bytes + output.len() > self.max_bytes;
        if over_budget && let Some(spill) = &mut self.spill {
            let at = spill.append(output).map_err(spill_error)?;
            self.spilled += 1;
            self.place(meta.index).state = Standing::Spilled {
                meta,
                at,
                len: output.len(),
            };
            return Ok(());
        }
        self.buffered_bytes += output.len();
        let place = self.place(meta.index);
        place.state = Standing::Done(meta);
        place.output.clear();
        place.output.extend_from_slice(output);
        Ok(())
    }

    /// Marks a chunk as failed for good, so later results can pass it.
    pub fn skip(
        &mut self,
        index: u64,
        write: impl FnMut(&ResultMeta, &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        self.place(index).state = Standing::Skipped;
        self.drain(write)
    }

    fn drain(
        &mut self,
        mut write: impl FnMut(&ResultMeta, &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
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
                Standing::Spilled { meta, at, len } => {
                    let spill = self.spill.as_mut().expect("spilled results have a spill");
                    self.scratch.resize(len, 0);
                    spill.read_at(at, &mut self.scratch).map_err(spill_error)?;
                    write(&meta, &self.scratch)?;
                    self.spilled -= 1;
                    if self.scratch.capacity() > KEEP_CAPACITY {
                        self.scratch = Vec::new();
                    }
                    if self.spilled == 0 {
                        spill.clear().map_err(spill_error)?;
                    }
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
                    Ok::<_, String>(())
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
            Ok::<_, String>(())
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
            Ok::<_, String>(())
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
            .done(meta(1), b"123456789", |_, _| Ok::<_, String>(()))
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
            Ok::<_, String>(())
        };
        reorder.done(meta(5), b"", &mut write).unwrap();
        reorder.done(meta(3), b"", &mut write).unwrap();
        assert_eq!(written, [3, 5]);
        assert_eq!(reorder.next_index(), 7);
    }

    /// A spill in memory, that says how much it holds.
    #[derive(Default, Clone)]
    struct Shelf(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

    impl Spill for Shelf {
        fn append(&mut self, bytes: &[u8]) -> io::Result<u64> {
            let mut shelf = self.0.borrow_mut();
            let at = shelf.len() as u64;
            shelf.extend_from_slice(bytes);
            Ok(at)
        }
        fn read_at(&mut self, at: u64, buf: &mut [u8]) -> io::Result<()> {
            let shelf = self.0.borrow();
            buf.copy_from_slice(&shelf[at as usize..at as usize + buf.len()]);
            Ok(())
        }
        fn clear(&mut self) -> io::Result<()> {
            self.0.borrow_mut().clear();
            Ok(())
        }
    }

    #[test]
    fn results_past_the_budget_wait_in_the_spill_and_come_out_in_order() {
        let mut reorder = Reorder::new(16, 25, None);
        let shelf = Shelf::default();
        reorder.spill_to(Box::new(shelf.clone()));
        let mut written = Vec::new();
        let mut write = |m: &ResultMeta, out: &[u8]| {
            written.push((m.index, out.to_vec()));
            Ok::<_, String>(())
        };
        for index in 1..6 {
            let output = vec![b'0' + index as u8; 10];
            reorder.done(meta(index), &output, &mut write).unwrap();
        }
        assert!(
            reorder.buffered_bytes <= 25,
            "memory stays within the budget"
        );
        assert_eq!(shelf.0.borrow().len(), 30, "the rest waits in the spill");
        reorder.done(meta(0), b"zero", &mut write).unwrap();
        let indices: Vec<u64> = written.iter().map(|(i, _)| *i).collect();
        assert_eq!(indices, [0, 1, 2, 3, 4, 5]);
        for (index, output) in &written[1..] {
            assert_eq!(output, &vec![b'0' + *index as u8; 10]);
        }
        assert!(
            shelf.0.borrow().is_empty(),
            "the spill is emptied once read back"
        );
        assert!(reorder.is_empty());
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
                    Ok::<_, String>(())
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
