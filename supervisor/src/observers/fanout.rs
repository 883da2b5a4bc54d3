//! [`Observers`]: everything that reports on the run, each handed every
//! event the dispatcher reports: the log, the progress bar, the report,
//! the metrics, and systemd.

use std::time::Instant;

use super::heartbeat::{Heartbeat, Snapshot};
use super::log::log;
use super::metrics::Metrics;
use super::notify::Notifier;
use super::progress::Progress;
use super::report::ReportCollector;
use crate::dispatcher::RunEvent;

pub struct Observers {
    pub report: ReportCollector,
    pub progress: Progress,
    pub metrics: Option<Metrics>,
    pub notifier: Notifier,
    /// Slots whose worker has said hello at least once; READY=1 waits for all.
    ready: Vec<bool>,
    heartbeat: Heartbeat,
}

impl Observers {
    pub fn new(
        workers: usize,
        report: ReportCollector,
        progress: Progress,
        metrics: Option<Metrics>,
        notifier: Notifier,
        now: Instant,
    ) -> Self {
        Self {
            heartbeat: Heartbeat::new(&notifier, now),
            report,
            progress,
            metrics,
            notifier,
            ready: vec![false; workers],
        }
    }

    pub fn observe(&mut self, event: &RunEvent<'_>) {
        self.report.observe(event);
        self.progress.observe(event);
        if let Some(metrics) = &mut self.metrics {
            metrics.observe(event);
        }
        log(event);
        match *event {
            RunEvent::WorkerReady { slot } => {
                if let Some(ready) = self.ready.get_mut(slot) {
                    *ready = true;
                }
                if self.ready.iter().all(|&r| r) {
                    self.notifier.ready();
                }
            }
            RunEvent::DrainStarted { .. } => self.notifier.stopping(),
            _ => {}
        }
    }

    /// Called often; does what is due about once a second.
    pub fn tick(&mut self, now: Instant, run: &Snapshot<'_>) {
        self.heartbeat.tick(
            now,
            run,
            &mut self.notifier,
            &mut self.report,
            self.metrics.as_mut(),
        );
    }
}
