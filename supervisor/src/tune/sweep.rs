//! The method `supervisor tune` follows: time a chunk on one worker first
//! (what an item costs, and the serial baseline), then turn one knob at a
//! time, workers first at one chunk size, then the chunk size at the
//! workers found, and read the knee off the curve.

use std::path::Path;
use std::time::Duration;

use super::trial::{Chunking, Measured, Setting, run_trial};
use crate::config::{Job, Source, defaults};

/// A worker count past which a doubling adds less than this share of
/// throughput is past the knee.
const KNEE_GAIN: f64 = 0.10;
/// The chunk recommended is the smallest within this share of the best.
pub(super) const CHUNK_SLACK: f64 = 0.05;
/// Chunk sizes tried around the first, as factors of it.
const CHUNK_FACTORS: [f64; 3] = [0.01, 0.1, 10.0];
/// A trial should see a chunk at least this many times per worker.
const CHUNKS_PER_TRIAL: u32 = 4;

/// What tune was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// All trials together take about this long.
    pub budget: Duration,
    /// The most workers tried.
    pub max_workers: usize,
    /// How long a chunk should take: the job's `target`, else 250 ms.
    pub target: Duration,
}

/// Every trial, and what was read off them.
#[derive(Debug, Clone)]
pub struct Findings {
    pub trials: Vec<Trial>,
    /// The chunk size of the workers sweep.
    pub first_chunk: u64,
    pub knee_workers: usize,
    pub chunk: u64,
    /// What an item (position of the source) costs on a worker, in seconds.
    pub cost: Option<f64>,
    /// `chunk = "auto"` at the knee, against the recommended chunk.
    pub auto_share: Option<f64>,
}

/// A trial and the knob it turned.
#[derive(Debug, Clone)]
pub struct Trial {
    pub knob: Knob,
    pub measured: Measured,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knob {
    /// One worker, `chunk = "auto"`: what an item costs.
    Calibration,
    /// One worker at the first chunk size.
    Serial,
    Workers,
    Chunk,
    Auto,
}

impl Knob {
    pub fn name(self) -> &'static str {
        match self {
            Knob::Calibration => "calibrate",
            Knob::Serial => "serial",
            Knob::Workers => "workers",
            Knob::Chunk => "chunk",
            Knob::Auto => "auto",
        }
    }
}

/// Worker counts tried: 1, then doublings up to `max`, and the CPUs available.
pub fn worker_counts(max: usize, cpus: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = std::iter::successors(Some(1usize), |w| w.checked_mul(2))
        .take_while(|&w| w <= max.max(1))
        .collect();
    if cpus <= max && !counts.contains(&cpus) {
        counts.push(cpus);
    }
    counts.sort_unstable();
    counts
}

/// The knee: the fewest workers after which one more step adds less than
/// [`KNEE_GAIN`]; the most tried when every step adds more.
pub fn knee(curve: &[(usize, f64)]) -> usize {
    for pair in curve.windows(2) {
        let ((workers, rate), (_, next)) = (pair[0], pair[1]);
        if next < rate * (1.0 + KNEE_GAIN) {
            return workers;
        }
    }
    curve.last().map_or(1, |&(workers, _)| workers)
}

/// The smallest chunk within [`CHUNK_SLACK`] of the best throughput: smaller
/// chunks lose less to a crash and finish the tail together.
pub fn best_chunk(curve: &[(u64, f64)]) -> Option<u64> {
    let best = curve.iter().map(|&(_, rate)| rate).fold(0.0, f64::max);
    curve
        .iter()
        .filter(|&&(_, rate)| rate >= best * (1.0 - CHUNK_SLACK))
        .map(|&(chunk, _)| chunk)
        .min()
}

/// Runs the trials in `dir` and reads the knee and the chunk off them.
/// `progress` hears of each trial as it ends.
pub async fn sweep(
    job: &Job,
    options: &Options,
    dir: &Path,
    mut progress: impl FnMut(&Trial),
) -> anyhow::Result<Findings> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let counts = worker_counts(options.max_workers, cpus);
    // Calibration, one trial per worker count, the chunk sizes and auto.
    let planned = 1 + counts.len() + CHUNK_FACTORS.len() + 1;
    let slice = options.budget / planned as u32;
    let mut trials = Vec::with_capacity(planned);
    let mut n = 0;
    let mut trial = async |knob: Knob, setting: Setting, trials: &mut Vec<Trial>| {
        n += 1;
        let measured = run_trial(job, setting, slice, dir, n).await?;
        let trial = Trial { knob, measured };
        progress(&trial);
        trials.push(trial.clone());
        anyhow::Ok(trial.measured)
    };

    // A short chunk target so that several chunks fit in the slice.
    let calibration_target = options.target.min(slice / 8).max(Duration::from_millis(1));
    let calibration = trial(
        Knob::Calibration,
        Setting {
            workers: 1,
            chunking: Chunking::Auto(calibration_target),
            sample: None,
        },
        &mut trials,
    )
    .await?;
    let cost = calibration.cost();
    let serial_rate = calibration.throughput();
    // A range is sampled: as many items as `workers` take in a slice, going
    // by the first trial (the CPUs bound what more workers can do).
    let sample = |workers: usize| match job.source {
        Source::Range { .. } if serial_rate > 0.0 => {
            Some((serial_rate * workers.min(cpus) as f64 * slice.as_secs_f64()).max(1.0) as u64)
        }
        _ => None,
    };
    let most_workers = *counts.last().unwrap_or(&1);
    let first_chunk = match job.auto {
        None => job.chunk,
        Some(_) => chunk_for(
            job,
            options.target.min(slice / CHUNKS_PER_TRIAL),
            cost,
            most_workers,
        ),
    };

    let mut curve = Vec::with_capacity(counts.len());
    for &workers in &counts {
        let knob = if workers == 1 {
            Knob::Serial
        } else {
            Knob::Workers
        };
        let setting = Setting {
            workers,
            chunking: Chunking::Fixed(first_chunk),
            sample: sample(workers),
        };
        let measured = trial(knob, setting, &mut trials).await?;
        curve.push((workers, measured.throughput()));
    }
    let knee_workers = knee(&curve);
    let at_knee = curve
        .iter()
        .find(|(w, _)| *w == knee_workers)
        .map_or(0.0, |(_, rate)| *rate);

    let mut chunks = vec![(first_chunk, at_knee)];
    let longest = slice / CHUNKS_PER_TRIAL;
    for factor in CHUNK_FACTORS {
        let chunk = ((first_chunk as f64 * factor).round() as u64).max(1);
        let seconds = cost.map_or(0.0, |c| c * positions_per_unit(job) * chunk as f64);
        if chunks.iter().any(|&(c, _)| c == chunk) || seconds > longest.as_secs_f64() {
            continue;
        }
        let setting = Setting {
            workers: knee_workers,
            chunking: Chunking::Fixed(chunk),
            sample: sample(knee_workers),
        };
        let measured = trial(Knob::Chunk, setting, &mut trials).await?;
        chunks.push((chunk, measured.throughput()));
    }
    let chunk = best_chunk(&chunks).unwrap_or(first_chunk);
    let best = chunks
        .iter()
        .find(|(c, _)| *c == chunk)
        .map_or(0.0, |(_, rate)| *rate);

    let auto = trial(
        Knob::Auto,
        Setting {
            workers: knee_workers,
            chunking: Chunking::Auto(options.target.min(longest)),
            sample: sample(knee_workers),
        },
        &mut trials,
    )
    .await?;
    Ok(Findings {
        trials,
        first_chunk,
        knee_workers,
        chunk,
        cost,
        auto_share: (best > 0.0).then(|| auto.throughput() / best),
    })
}

/// Positions of the source (what records' `start` and `end` count) per unit
/// of `chunk`: one, but a lines source's chunk counts lines of bytes.
fn positions_per_unit(job: &Job) -> f64 {
    match &job.source {
        Source::Lines { input, lines } if *lines > 0 => input.size as f64 / *lines as f64,
        _ => 1.0,
    }
}

/// The chunk that takes about `target` at `cost` per position, small enough
/// that `workers` workers get several each, within the source's bounds.
fn chunk_for(job: &Job, target: Duration, cost: Option<f64>, workers: usize) -> u64 {
    let units = job.source.units();
    let most = (units / (2 * workers as u64).max(1)).max(1);
    let most = match job.source {
        Source::File { .. } => most.min(defaults::MAX_AUTO_FILE_CHUNK),
        _ => most,
    };
    let per_unit = cost.map_or(0.0, |c| c * positions_per_unit(job));
    let chunk = if per_unit > 0.0 {
        (target.as_secs_f64() / per_unit) as u64
    } else {
        most
    };
    chunk.clamp(1, most)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counts_double_up_to_the_most_and_take_in_the_cpus() {
        assert_eq!(worker_counts(4, 2), [1, 2, 4]);
        assert_eq!(worker_counts(12, 6), [1, 2, 4, 6, 8]);
        assert_eq!(worker_counts(1, 2), [1]);
    }

    #[test]
    fn the_knee_is_where_more_workers_stop_paying() {
        assert_eq!(knee(&[(1, 100.0), (2, 195.0), (4, 200.0)]), 2);
        assert_eq!(knee(&[(1, 100.0), (2, 105.0)]), 1);
        assert_eq!(knee(&[(1, 100.0), (2, 190.0), (4, 370.0)]), 4);
        assert_eq!(knee(&[]), 1);
    }

    #[test]
    fn the_chunk_is_the_smallest_near_the_best() {
        let curve = [
            (1_000, 50.0),
            (10_000, 96.0),
            (100_000, 100.0),
            (1_000_000, 99.0),
        ];
        assert_eq!(best_chunk(&curve), Some(10_000));
        assert_eq!(best_chunk(&[]), None);
    }
}
