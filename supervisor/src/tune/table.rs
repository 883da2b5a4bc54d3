//! What `supervisor tune` prints: a line per trial as it ends, then the
//! knee and the recommendation.

use std::fmt::Write as _;

use super::sweep::{Findings, Trial};
use super::trial::Chunking;
use crate::config::{Job, Source};

/// The unit the throughput column counts.
pub fn unit(job: &Job) -> &'static str {
    match job.source {
        Source::Range { .. } => "items",
        Source::File { .. } | Source::Lines { .. } => "bytes",
    }
}

pub fn header(job: &Job) -> String {
    format!(
        "{:<3} {:<10} {:>7} {:>10} {:>7} {:>12} {:>8} {:>9} {:>9} {:>8} {:>10}",
        "#",
        "knob",
        "workers",
        "chunk",
        "chunks",
        format!("{}/s", unit(job)),
        "speedup",
        "p50 chunk",
        "p99 chunk",
        "sup CPU",
        "worker RSS"
    )
}

/// One trial's line; `serial` is the serial baseline's throughput.
pub fn row(n: usize, trial: &Trial, serial: Option<f64>) -> String {
    let m = &trial.measured;
    let chunk = match m.setting.chunking {
        Chunking::Fixed(chunk) => chunk.to_string(),
        Chunking::Auto(_) => "auto".to_owned(),
    };
    let speedup = serial
        .filter(|s| *s > 0.0)
        .map_or_else(|| "-".to_owned(), |s| format!("{:.2}×", m.throughput() / s));
    // The supervisor's CPU as a share of what the workers used.
    let share = if m.workers_cpu > 0.0 {
        format!("{:.1}%", 100.0 * m.supervisor_cpu / m.workers_cpu)
    } else {
        "-".to_owned()
    };
    let rss = m.worker_peak_rss.map_or_else(
        || "-".to_owned(),
        |b| format!("{:.1} MiB", b as f64 / 1048576.0),
    );
    format!(
        "{:<3} {:<10} {:>7} {:>10} {:>7} {:>12} {:>8} {:>9} {:>9} {:>8} {:>10}",
        n,
        trial.knob.name(),
        m.setting.workers,
        chunk,
        m.chunks,
        si(m.throughput()),
        speedup,
        seconds(m.p50),
        seconds(m.p99),
        share,
        rss
    )
}

/// The end: the knee, the chunk, the recommendation.
pub fn conclusion(job: &Job, findings: &Findings) -> String {
    let mut text = String::new();
    let curve: Vec<String> = findings
        .trials
        .iter()
        .filter(|t| {
            matches!(
                t.knob,
                super::sweep::Knob::Serial | super::sweep::Knob::Workers
            )
        })
        .map(|t| {
            format!(
                "{} → {}",
                t.measured.setting.workers,
                si(t.measured.throughput())
            )
        })
        .collect();
    let _ = writeln!(
        text,
        "knee: {} workers (throughput in {}/s by workers at chunk {}: {})",
        findings.knee_workers,
        unit(job),
        findings.first_chunk,
        curve.join(", ")
    );
    if let Some(cost) = findings.cost {
        let _ = writeln!(
            text,
            "an item costs about {} on a worker; chunk {} takes about {}",
            seconds(Some(cost)),
            findings.chunk,
            seconds(Some(cost * findings.chunk as f64 * per_unit(job)))
        );
    }
    if let Some(share) = findings.auto_share {
        let _ = writeln!(
            text,
            "chunk = \"auto\" at {} workers reached {:.0}% of chunk {}",
            findings.knee_workers,
            share * 100.0,
            findings.chunk
        );
    }
    let chunk = if findings
        .auto_share
        .is_some_and(|share| share >= 1.0 - super::sweep::CHUNK_SLACK)
    {
        format!("\"auto\" (or {})", findings.chunk)
    } else {
        findings.chunk.to_string()
    };
    let _ = writeln!(
        text,
        "recommend: workers = {}, chunk = {chunk}",
        findings.knee_workers
    );
    text
}

fn per_unit(job: &Job) -> f64 {
    match &job.source {
        Source::Lines { input, lines } if *lines > 0 => input.size as f64 / *lines as f64,
        _ => 1.0,
    }
}

/// Three significant digits with k, M, G.
pub fn si(x: f64) -> String {
    let (value, suffix) = [(1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(div, _)| x.abs() >= *div)
        .map_or((x, ""), |(div, suffix)| (x / div, suffix));
    match value.abs() {
        v if v >= 100.0 || suffix.is_empty() => format!("{value:.0}{suffix}"),
        v if v >= 10.0 => format!("{value:.1}{suffix}"),
        _ => format!("{value:.2}{suffix}"),
    }
}

fn seconds(s: Option<f64>) -> String {
    match s {
        None => "-".to_owned(),
        Some(s) if s >= 1.0 => format!("{s:.2}s"),
        Some(s) if s >= 1e-3 => format!("{:.1}ms", s * 1e3),
        Some(s) if s >= 1e-6 => format!("{:.1}µs", s * 1e6),
        Some(s) => format!("{:.0}ns", s * 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_at_a_glance() {
        assert_eq!(si(2_345_678.0), "2.35M");
        assert_eq!(si(1_000.0), "1.00k");
        assert_eq!(si(123_456.0), "123k");
        assert_eq!(si(12.0), "12");
        assert_eq!(seconds(Some(0.25)), "250.0ms");
        assert_eq!(seconds(Some(2e-7)), "200ns");
        assert_eq!(seconds(None), "-");
    }
}
