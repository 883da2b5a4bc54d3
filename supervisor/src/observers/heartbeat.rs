//! What is done about once a second rather than per event: systemd's
//! status line, watchdog pings and stop-timeout extensions during a drain,
//! and memory samples for the metrics and the report.

use std::time::{Duration, Instant};

use super::metrics::Metrics;
use super::notify::{Notifier, progress_status};
use super::report::ReportCollector;
use crate::dispatcher::Counts;
use crate::resources::rss_bytes;

/// How often systemd hears the progress and memory is sampled.
const EVERY: Duration = Duration::from_secs(1);

/// The run as the heartbeat samples it.
#[derive(Debug)]
pub struct Snapshot<'a> {
    pub counts: Counts,
    pub in_flight: usize,
    pub queued: u64,
    pub draining: bool,
    /// Live workers' pids by slot.
    pub pids: &'a [(usize, u32)],
}

/// Paces what systemd hears: STATUS= about once a second, WATCHDOG=1 at half
/// the watchdog interval, EXTEND_TIMEOUT_USEC while a drain makes progress.
#[derive(Debug)]
pub struct Heartbeat {
    next_beat: Instant,
    watchdog: Option<(Duration, Instant)>,
    /// Chunks settled when the drain was last seen making progress.
    drain_progress: Option<u64>,
}

impl Heartbeat {
    pub fn new(notifier: &Notifier, now: Instant) -> Self {
        Self {
            next_beat: now,
            watchdog: notifier.watchdog_interval().map(|every| (every, now)),
            drain_progress: None,
        }
    }

    /// The next tick beats whatever the time: something systemd should see
    /// at once (a drain) has happened.
    pub fn hurry(&mut self, now: Instant) {
        self.next_beat = self.next_beat.min(now);
    }

    pub fn tick(
        &mut self,
        now: Instant,
        run: &Snapshot<'_>,
        notifier: &mut Notifier,
        report: &mut ReportCollector,
        metrics: Option<&mut Metrics>,
    ) {
        if let Some((every, next)) = &mut self.watchdog
            && now >= *next
        {
            notifier.watchdog();
            *next = now + *every;
        }
        if now < self.next_beat {
            return;
        }
        self.next_beat = now + EVERY;
        let mut workers_rss = 0;
        for &(slot, pid) in run.pids {
            report.sample_rss(slot, pid);
            workers_rss += rss_bytes(pid).unwrap_or(0);
        }
        if let Some(metrics) = metrics {
            let own = rss_bytes(std::process::id()).unwrap_or(0);
            metrics.gauges(run.in_flight, run.queued, run.pids.len(), own, workers_rss);
        }
        if !notifier.is_active() {
            return;
        }
        let text = progress_status(&run.counts, run.in_flight, run.pids.len(), run.draining);
        notifier.status(&text);
        if run.draining {
            let settled = run.counts.settled();
            if self.drain_progress != Some(settled) {
                // systemd's stop timeout waits as long as the drain moves.
                notifier.extend_timeout(EVERY * 10);
                self.drain_progress = Some(settled);
            }
        }
    }
}
