//! When to look at the data pipes again while bytes stream through them.
//!
//! Waiting in `poll` on a pipe wakes the worker at every write the command
//! makes to it (the kernel wakes a reader that has polled a pipe on each
//! write, not only on the first into an empty one) and at every read that
//! makes room in a full one: for `tr`, which moves 8 KiB at a time, that is
//! over a hundred thousand wake-ups per GiB each way, each costing more than
//! moving the bytes. While bytes stream, the worker instead sleeps a little
//! between turns and moves whatever piled up in one go: the nap is tuned so a
//! turn finds the pipes about half way, neither starving the command nor
//! waking for crumbs. When next to nothing moves even at the longest nap (a
//! slow or idle command) it goes back to waiting for the pipes themselves,
//! which then wake it seldom.

use std::time::Duration;

/// The shortest and longest nap.
const MIN_NAP: Duration = Duration::from_micros(20);
const MAX_NAP: Duration = Duration::from_millis(2);
/// The first nap once bytes stream.
const FIRST_NAP: Duration = Duration::from_micros(200);

#[derive(Debug)]
pub struct Pace {
    /// Bytes a data pipe holds.
    capacity: usize,
    nap: Duration,
}

impl Pace {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(4096),
            nap: FIRST_NAP,
        }
    }

    /// After a turn that moved `moved` bytes through the busier pipe: how
    /// long to sleep before the next turn, or `None` to wait on the pipes.
    pub fn after(&mut self, moved: usize) -> Option<Duration> {
        if moved >= self.capacity * 3 / 4 {
            // The pipe was (nearly) full or empty: the command may have waited.
            self.nap = (self.nap / 2).max(MIN_NAP);
        } else if moved < self.capacity / 4 {
            self.nap = (self.nap * 2).min(MAX_NAP);
        }
        if self.nap == MAX_NAP && moved < self.capacity / 256 {
            // Idle or slow: waking at each write costs little now.
            return None;
        }
        Some(self.nap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn an_idle_command_soon_means_waiting_on_the_pipes() {
        let mut pace = Pace::new(MIB);
        let naps: Vec<_> = std::iter::repeat_with(|| pace.after(0)).take(8).collect();
        assert_eq!(naps[0], Some(FIRST_NAP * 2));
        assert!(naps.contains(&None), "{naps:?}");
        assert_eq!(naps.last(), Some(&None));
        // Bytes streaming again bring the naps back.
        assert_eq!(pace.after(MIB / 2), Some(MAX_NAP));
        assert_eq!(pace.after(MIB), Some(MAX_NAP / 2));
    }

    #[test]
    fn full_turns_shorten_the_nap_and_thin_ones_lengthen_it_within_bounds() {
        let mut pace = Pace::new(MIB);
        assert_eq!(pace.after(MIB / 2), Some(FIRST_NAP));
        assert_eq!(pace.after(MIB), Some(FIRST_NAP / 2));
        for _ in 0..20 {
            pace.after(MIB);
        }
        assert_eq!(pace.after(MIB), Some(MIN_NAP));
        for _ in 0..20 {
            pace.after(MIB / 8);
        }
        assert_eq!(pace.after(MIB / 8), Some(MAX_NAP));
    }
}
