//! Where each chunk of one shard's block lies in the shard's output, as the
//! shard's journal says: the last record of each chunk wins, as on resume.
//! 32 bytes a chunk of the block, whatever the output's size; merge holds
//! one shard's table at a time, and only for a shard whose journal is not
//! simply one record per chunk in index order (after `--retry-failed`, or
//! with `order = "completion"`).

use std::ops::Range;

use fixedbitset::FixedBitSet;

use super::MergeError;
use super::prove::{Proven, read_entries};
use crate::journal::{Entry, EntryKind};

#[derive(Debug, Clone, Copy, Default)]
struct Place {
    start: u64,
    end: u64,
    offset: u64,
    len: u64,
    checksum: u32,
}

/// One shard's chunks in index order.
pub struct ChunkTable {
    block: Range<u64>,
    places: Vec<Place>,
    failed: FixedBitSet,
}

impl ChunkTable {
    /// Reads `shard`'s journal again (it was proven a moment ago; if it
    /// changed since, someone ran the shard meanwhile, and the merge stops).
    pub fn read(shard: &Proven) -> Result<Self, MergeError> {
        let block = shard.block.clone();
        let width = (block.end - block.start) as usize;
        let mut places = vec![Place::default(); width];
        let mut settled = FixedBitSet::with_capacity(width);
        let mut failed = FixedBitSet::with_capacity(width);
        read_entries(
            &shard.name(),
            &shard.journal(),
            &shard.fingerprint,
            &block,
            |entry| {
                let at = (entry.index - block.start) as usize;
                settled.insert(at);
                failed.set(at, entry.kind == EntryKind::Failed);
                places[at] = Place {
                    start: entry.start,
                    end: entry.end,
                    offset: entry.offset,
                    len: entry.len,
                    checksum: entry.checksum,
                };
            },
        )
        .map_err(MergeError::refused)?;
        if settled.count_ones(..) != width {
            return Err(super::combine::changed(shard));
        }
        Ok(Self {
            block,
            places,
            failed,
        })
    }

    /// The shard's chunks in index order, each as its journal's last record
    /// has it: a done chunk with its record's place in the shard's output,
    /// or a failed one.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.places.iter().enumerate().map(|(at, place)| Entry {
            kind: if self.failed.contains(at) {
                EntryKind::Failed
            } else {
                EntryKind::Done
            },
            index: self.block.start + at as u64,
            start: place.start,
            end: place.end,
            offset: place.offset,
            len: place.len,
            checksum: place.checksum,
        })
    }
}
