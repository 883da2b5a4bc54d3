//! Shard I of N: parsed from `I/N`, checked, and turned into the block of
//! the job's chunk indices it runs.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use super::Scheduler;

/// Shard `index` of `count` (0-based): it runs the `index`-th of `count`
/// contiguous blocks of the job's chunk indices. `0/1` is the whole job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Shard `index` of `count`; the count is at least 1 and the index below it.
    pub fn new(index: u64, count: u64) -> Result<Self, String> {
        if count == 0 {
            return Err(format!(
                "`{index}/{count}`: the shard count must be at least 1"
            ));
        }
        if index >= count {
            return Err(format!(
                "`{index}/{count}`: shards are numbered from 0, so shard {index} of {count} \
                 does not exist (the last is {})",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }

    /// The chunk indices this shard runs out of a job of `chunks` chunks:
    /// `[floor(I·C/N), floor((I+1)·C/N))`. The blocks of shards 0 to N−1
    /// tile `[0, C)` in order, differ in size by at most one, and are empty
    /// when there are more shards than chunks.
    pub fn block(self, chunks: u64) -> Range<u64> {
        let at = |i: u64| (u128::from(i) * u128::from(chunks) / u128::from(self.count)) as u64;
        at(self.index)..at(self.index + 1)
    }

    /// What goes into the names of the shard's output and state folder:
    /// `.shard-I-of-N`.
    pub fn suffix(self) -> String {
        format!(".shard-{}-of-{}", self.index, self.count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shape =
            || format!("expected I/N, shard I (counted from 0) of N, such as 0/4; got `{text}`");
        let (index, count) = text.split_once('/').ok_or_else(shape)?;
        let number = |part: &str| {
            // u64's parser takes a leading `+`; a shard number is digits only.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(shape());
            }
            part.parse::<u64>().map_err(|_| shape())
        };
        Shard::new(number(index)?, number(count)?)
    }
}

/// The shard a job runs as, and where that came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobShard {
    pub shard: Shard,
    pub from: Scheduler,
    /// What the choice rests on, for the log and `check`: the variables a
    /// scheduler set, or the command line's `--shard`.
    pub evidence: String,
}

impl JobShard {
    /// Which shard, its chunks, and where it came from, in words: `1 of 3,
    /// chunks [33, 66) of 100 (33 chunks), from the command line (--shard 1/3)`.
    pub fn describe(&self, chunks: u64) -> String {
        let block = self.shard.block(chunks);
        let runs = if block.is_empty() {
            format!("no chunks (the job has {chunks}, fewer than its shards)")
        } else {
            let len = block.end - block.start;
            let noun = if len == 1 { "chunk" } else { "chunks" };
            format!(
                "chunks [{}, {}) of {chunks} ({len} {noun})",
                block.start, block.end
            )
        };
        format!(
            "{} of {}, {runs}, from {} ({})",
            self.shard.index,
            self.shard.count,
            self.from.describe(),
            self.evidence
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_i_of_n_and_refuses_the_rest() {
        assert_eq!("0/1".parse(), Ok(Shard { index: 0, count: 1 }));
        assert_eq!("3/8".parse(), Ok(Shard { index: 3, count: 8 }));
        for bad in [
            "3/2", "2/2", "0/0", "half", "1/", "/2", "-1/2", "+1/2", "1/2/3", " 1/2", "",
        ] {
            assert!(bad.parse::<Shard>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            "3/2".parse::<Shard>().unwrap_err(),
            "`3/2`: shards are numbered from 0, so shard 3 of 2 does not exist (the last is 1)"
        );
        assert_eq!(
            "0/0".parse::<Shard>().unwrap_err(),
            "`0/0`: the shard count must be at least 1"
        );
    }

    #[test]
    fn blocks_of_ten_chunks_in_three() {
        let blocks: Vec<_> = (0..3)
            .map(|i| Shard::new(i, 3).unwrap().block(10))
            .collect();
        assert_eq!(blocks, [0..3, 3..6, 6..10]);
        // More shards than chunks: some shards run nothing.
        let blocks: Vec<_> = (0..4).map(|i| Shard::new(i, 4).unwrap().block(2)).collect();
        assert_eq!(blocks, [0..0, 0..1, 1..1, 1..2]);
    }

    #[test]
    fn the_names_suffix() {
        assert_eq!(Shard::new(0, 2).unwrap().suffix(), ".shard-0-of-2");
    }

    proptest! {
        #[test]
        fn blocks_tile_the_chunks_in_order(chunks in 0u64..10_000, count in 1u64..300) {
            let mut next = 0;
            for index in 0..count {
                let block = Shard::new(index, count).unwrap().block(chunks);
                prop_assert_eq!(block.start, next);
                prop_assert!(block.end - block.start <= chunks.div_ceil(count));
                prop_assert!(block.end - block.start >= chunks / count);
                next = block.end;
            }
            prop_assert_eq!(next, chunks);
        }

        #[test]
        fn huge_counts_do_not_overflow(chunks in any::<u64>(), count in 1u64..u64::MAX) {
            let last = Shard::new(count - 1, count).unwrap().block(chunks);
            prop_assert_eq!(last.end, chunks);
        }
    }
}
