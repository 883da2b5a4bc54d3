//! How big the next chunk of a `chunk = "auto"` job is: small at first,
//! grown towards the target as the workers' own timings say what an item
//! costs, and shrunk as the work runs out (factoring: never more than the
//! items left ÷ (2 × workers), so the last chunks finish together).

use std::time::Duration;

/// How much larger than the largest chunk measured so far the next may be:
/// a few round trips take the sizes from one item to the target, and one
/// early timing that flatters the items cannot make a chunk huge.
const GROWTH: u64 = 4;
/// Weight of the newest timing when the items get cheaper; when they get
/// dearer the newest timing is taken whole, since a chunk too large costs
/// the tail and a crash more than one too small costs in dispatch.
const CHEAPER_WEIGHT: f64 = 0.5;

/// The sizing policy; pure, so it is tested and simulated without workers.
#[derive(Debug, Clone)]
pub struct Sizer {
    target_ns: f64,
    workers: u64,
    min: u64,
    max: u64,
    /// Nanoseconds per unit (item, byte, line), once a chunk was timed.
    cost_ns: Option<f64>,
    /// The largest chunk timed so far, in units.
    largest_measured: u64,
}

impl Sizer {
    /// Chunks of `min..=max` units, aiming at `target` each on `workers` workers.
    pub fn new(target: Duration, workers: usize, min: u64, max: u64) -> Self {
        let min = min.max(1);
        Self {
            target_ns: target.as_nanos() as f64,
            workers: (workers as u64).max(1),
            min,
            max: max.max(min),
            cost_ns: None,
            largest_measured: 0,
        }
    }

    /// The size of the next chunk when `remaining` units are left to cut.
    pub fn next(&self, remaining: u64) -> u64 {
        let by_target = match self.cost_ns {
            None => self.min,
            Some(cost) if cost <= 0.0 => u64::MAX,
            Some(cost) => (self.target_ns / cost) as u64,
        };
        let grown = self.largest_measured.max(self.min).saturating_mul(GROWTH);
        let factored = remaining.div_ceil(2 * self.workers);
        by_target
            .min(grown)
            .min(factored)
            .clamp(self.min, self.max)
            .min(remaining.max(1))
    }

    /// A worker's time for a chunk of `units` units.
    pub fn measured(&mut self, units: u64, seconds: f64) {
        if units == 0 {
            return;
        }
        let cost = seconds * 1e9 / units as f64;
        self.cost_ns = Some(match self.cost_ns {
            Some(old) if cost < old => old + (cost - old) * CHEAPER_WEIGHT,
            _ => cost,
        });
        self.largest_measured = self.largest_measured.max(units);
    }

    /// What an item costs as measured so far.
    pub fn cost(&self) -> Option<Duration> {
        self.cost_ns.map(|ns| Duration::from_nanos(ns as u64))
    }

    /// How many chunks `units` units make when items cost `cost_ns` each and
    /// every chunk is timed as soon as it is cut: an estimate for `check`
    /// (with a cost of 0, the fewest chunks the job can have).
    pub fn simulate(&self, units: u64, cost_ns: f64) -> u64 {
        let mut sizer = self.clone();
        let mut left = units;
        let mut chunks = 0;
        while left > 0 {
            let size = sizer.next(left).min(left);
            sizer.measured(size, size as f64 * cost_ns / 1e9);
            left -= size;
            chunks += 1;
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TARGET: Duration = Duration::from_millis(250);

    #[test]
    fn it_starts_small_and_grows_by_steps_towards_the_target() {
        let mut sizer = Sizer::new(TARGET, 2, 1, u64::MAX);
        assert_eq!(sizer.next(1_000_000_000), 1);
        // Items of 1 µs: the target is 250,000 of them.
        let mut size = 1;
        let mut steps = 0;
        while size < 250_000 {
            sizer.measured(size, size as f64 * 1e-6);
            let next = sizer.next(1_000_000_000);
            assert!(next <= size * GROWTH, "{size} → {next}");
            size = next;
            steps += 1;
        }
        assert_eq!(size, 250_000);
        assert!(steps <= 10, "{steps} steps");
    }

    #[test]
    fn the_tail_shrinks_with_the_work_left() {
        let mut sizer = Sizer::new(TARGET, 2, 1, u64::MAX);
        sizer.measured(1_000, 1e-9);
        sizer.measured(4_000_000, 4e-6);
        // Free items: only the work left bounds the chunk.
        assert_eq!(sizer.next(1_000), 250);
        assert_eq!(sizer.next(7), 2);
        assert_eq!(sizer.next(1), 1);
    }

    #[test]
    fn items_that_get_dearer_shrink_the_next_chunk_at_once() {
        let mut sizer = Sizer::new(TARGET, 1, 1, u64::MAX);
        sizer.measured(1_000, 1_000.0 * 1e-6);
        assert_eq!(sizer.next(u64::MAX), 4_000);
        sizer.measured(4_000, 4_000.0 * 1e-6);
        assert_eq!(sizer.next(u64::MAX), 16_000);
        // 100× dearer: the next chunk is sized on the new cost alone.
        sizer.measured(16_000, 16_000.0 * 1e-4);
        assert_eq!(sizer.next(u64::MAX), 2_500);
        // Cheaper again: the estimate comes back half way per chunk.
        sizer.measured(2_500, 2_500.0 * 1e-6);
        assert!(sizer.next(u64::MAX) < 5_000);
    }

    #[test]
    fn an_item_dearer_than_the_target_is_a_chunk_of_its_own() {
        let mut sizer = Sizer::new(TARGET, 4, 1, u64::MAX);
        sizer.measured(1, 2.0);
        assert_eq!(sizer.next(1_000), 1);
    }

    #[test]
    fn bounds_hold() {
        let mut sizer = Sizer::new(TARGET, 2, 10, 100);
        assert_eq!(sizer.next(1_000_000), 10);
        sizer.measured(10, 0.0);
        assert_eq!(sizer.next(1_000_000), 40);
        sizer.measured(1_000, 0.0);
        assert_eq!(sizer.next(1_000_000), 100);
        assert_eq!(sizer.next(5), 5, "never more than what is left");
    }

    #[test]
    fn free_items_still_make_few_chunks() {
        let sizer = Sizer::new(TARGET, 2, 1, u64::MAX);
        let chunks = sizer.simulate(10_000_000, 0.0);
        assert!((20..100).contains(&chunks), "{chunks}");
        // Items of 1 ms: 10,000 s of work in chunks of a quarter second.
        let chunks = sizer.simulate(10_000_000, 1e6);
        assert!((40_000..40_200).contains(&chunks), "{chunks}");
    }

    proptest! {
        #[test]
        fn a_chunk_is_never_empty_nor_more_than_is_left(
            remaining in 1u64..u64::MAX,
            workers in 1usize..64,
            min in 1u64..1000,
            timings in proptest::collection::vec((1u64..1_000_000, 0.0f64..10.0), 0..8),
        ) {
            let mut sizer = Sizer::new(TARGET, workers, min, u64::MAX);
            for (units, seconds) in timings {
                sizer.measured(units, seconds);
            }
            let size = sizer.next(remaining);
            prop_assert!(size >= 1);
            prop_assert!(size <= remaining);
            prop_assert!(size <= remaining.div_ceil(2 * workers as u64).max(min));
        }
    }
}
