//! The end of a run told in two lines on stderr.

use super::schema::Report;

/// The end of a run in two lines, each ending in a newline. The first keeps
/// the wording scripts have long matched on.
pub fn summary(report: &Report) -> String {
    let chunks = &report.chunks;
    let total = chunks
        .total
        .map_or_else(|| "?".to_owned(), |t| t.to_string());
    let earlier = if chunks.done_before > 0 {
        format!(" ({} by an earlier run)", chunks.done_before)
    } else {
        String::new()
    };
    let job = match &report.shard {
        Some(shard) => format!("{} shard {}/{}", report.job, shard.index, shard.count),
        None => report.job.clone(),
    };
    let mut text = format!(
        "{job}: {} of {total} chunks done{earlier}, {} failed, {} retried, {} worker crashes, in {:.2}s; output: {}\n",
        chunks.done,
        chunks.failed,
        chunks.retried,
        report.worker_crashes,
        report.wall_seconds,
        report.output,
    );
    let latency = &report.latency_seconds;
    match (latency.p50, latency.p95, latency.p99, latency.max) {
        (Some(p50), Some(p95), Some(p99), Some(max)) => text.push_str(&format!(
            "chunk time p50 {}, p95 {}, p99 {}, max {}; {} chunks/s\n",
            human_seconds(p50),
            human_seconds(p95),
            human_seconds(p99),
            human_seconds(max),
            three_digits(report.throughput_chunks_per_s),
        )),
        _ => text.push_str("no chunk finished in this run\n"),
    }
    text
}

/// Seconds in the unit that reads best: 152µs, 3.4ms, 1.25s.
pub(super) fn human_seconds(seconds: f64) -> String {
    if seconds < 1e-3 {
        format!("{:.0}µs", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{}ms", three_digits(seconds * 1e3))
    } else {
        format!("{}s", three_digits(seconds))
    }
}

/// About three significant digits, without trailing noise.
pub(super) fn three_digits(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}
