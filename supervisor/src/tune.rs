//! `supervisor tune JOB.toml`: runs a bounded sample of the job, never
//! touching its output or journal, and finds the knee of its throughput
//! curve: the serial baseline on one worker first, then one knob at a time
//! (workers, then the chunk size), each trial a real run of the job in a
//! private temporary folder.
//!
//! - `trial`: one run with one setting, and what it measured.
//! - `sweep`: the order of the trials, the knee and the chunk read off them.
//! - `table`: what is printed.
//! - `plot`: the curves as an SVG or a PNG.

mod plot;
mod sweep;
mod table;
mod trial;

pub use sweep::{Findings, Knob, Options, Trial, best_chunk, knee, sweep, worker_counts};
pub use trial::{Chunking, Measured, Setting, run_trial};

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::config::Job;

/// Tunes `job`: prints a line per trial to stdout as it ends, then the
/// knee and the recommendation, and draws the curves to `plot` if given.
pub async fn tune(job: &Job, options: &Options, plot: Option<&Path>) -> anyhow::Result<Findings> {
    let dir = tempfile::Builder::new()
        .prefix("supervisor-tune.")
        .tempdir()
        .context("cannot make a folder for the trials")?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "tune {}: trials of the job in {} for about {} in all, {cpus} CPUs; \
         its own output and journal are not touched",
        job.file.display(),
        dir.path().display(),
        humantime::format_duration(options.budget),
    )?;
    writeln!(out, "{}", table::header(job))?;
    drop(out);
    let mut serial = None;
    let mut n = 0;
    let findings = sweep(job, options, dir.path(), |trial| {
        n += 1;
        if trial.knob == Knob::Serial {
            serial = Some(trial.measured.throughput());
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", table::row(n, trial, serial));
        let _ = out.flush();
    })
    .await?;
    print!("{}", table::conclusion(job, &findings));
    if let Some(path) = plot {
        plot::draw(path, &findings, table::unit(job))?;
        println!("plot: {}", path.display());
    }
    Ok(findings)
}
