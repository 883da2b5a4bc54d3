//! [`Observers`]: everything that reports on the run, each handed every
//! event the dispatcher reports: the log, the progress bar, the report,
//! the metrics, and systemd.

use std::time::Instant;

use super::heartbeat::{Heartbeat, Snapshot};
use super::log::log;
use super::metrics::Metrics;
use super::notify::{Notifier, final_status};
use super::progress::Progress;
use super::report::ReportCollector;
use crate::dispatcher::{Counts, Outcome, RunEvent};

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
        // Every chunk is dispatched, and only the metrics count it (the
        // report, the bar, the log and systemd wait for how it ends): it
        // stops here, which spares each chunk a round of the observers.
        if let RunEvent::ChunkDispatched { .. } = event {
            if let Some(metrics) = &mut self.metrics {
                metrics.observe(event);
            }
            return;
        }
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
            RunEvent::DrainStarted { .. } | RunEvent::Tripped { .. } => {
                self.notifier.stopping();
                // `systemctl status` says "draining" now, not a second later.
                self.heartbeat.hurry(Instant::now());
            }
            _ => {}
        }
    }

    /// The run is over: systemd keeps the last status after the process
    /// exits, so it says how the run ended rather than how far it had got.
    pub fn finish(&mut self, outcome: &Outcome, counts: &Counts) {
        self.progress.finish();
        self.notifier.status(&final_status(outcome, counts));
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

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    use super::*;
    use crate::chunks::ChunkSpec;
    use crate::observers::progress::ProgressMode;

    /// Observers of a run on `workers` workers that tell a test socket what
    /// they would tell systemd, with a watchdog of 2 s.
    fn observers(workers: usize, now: Instant) -> (tempfile::TempDir, UnixDatagram, Observers) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let manager = UnixDatagram::bind(&path).unwrap();
        manager.set_nonblocking(true).unwrap();
        let notifier = Notifier::at(path.as_os_str(), Some(Duration::from_secs(2)));
        let observers = Observers::new(
            workers,
            ReportCollector::new(workers, now),
            Progress::new(ProgressMode::Never),
            None,
            notifier,
            now,
        );
        (dir, manager, observers)
    }

    /// Every datagram waiting, as text.
    fn told(manager: &UnixDatagram) -> Vec<String> {
        let mut buf = [0; 512];
        std::iter::from_fn(|| {
            let n = manager.recv(&mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .collect()
    }

    fn chunk(index: u64) -> ChunkSpec {
        ChunkSpec {
            index,
            start: index,
            end: index + 1,
            first_item: index,
        }
    }

    #[test]
    fn ready_is_told_once_every_worker_has_said_hello() {
        let (_dir, manager, mut observers) = observers(2, Instant::now());
        observers.observe(&RunEvent::WorkerReady { slot: 0 });
        assert!(told(&manager).is_empty(), "one worker of two is not ready");
        observers.observe(&RunEvent::WorkerReady { slot: 1 });
        assert_eq!(told(&manager), ["READY=1\n"]);
        // A replaced worker saying hello again changes nothing.
        observers.observe(&RunEvent::WorkerReady { slot: 0 });
        assert!(told(&manager).is_empty());
    }

    #[test]
    fn a_drain_tells_systemd_it_is_stopping_and_says_draining_at_once() {
        let start = Instant::now();
        let (_dir, manager, mut observers) = observers(1, start);
        let counts = Counts {
            total: Some(10),
            done: 3,
            ..Counts::default()
        };
        let mut snapshot = Snapshot {
            counts,
            in_flight: 2,
            queued: 5,
            draining: false,
            pids: &[],
        };
        observers.tick(start, &snapshot);
        told(&manager);
        observers.observe(&RunEvent::DrainStarted {
            signal: libc::SIGTERM,
            in_flight: 2,
        });
        assert_eq!(told(&manager), ["STOPPING=1\n"]);
        // Well within the second since the last status.
        snapshot.draining = true;
        observers.tick(start + Duration::from_millis(20), &snapshot);
        assert_eq!(
            told(&manager),
            [
                "STATUS=draining: 2 chunks in flight, 3/10 done\n",
                "EXTEND_TIMEOUT_USEC=10000000\n"
            ]
        );
    }

    #[test]
    fn the_status_left_behind_says_how_the_run_ended() {
        let (_dir, manager, mut observers) = observers(1, Instant::now());
        let counts = Counts {
            total: Some(10),
            done: 2,
            skipped: 6,
            cancelled: 2,
            ..Counts::default()
        };
        observers.finish(
            &crate::dispatcher::Outcome::Drained {
                signal: libc::SIGTERM,
            },
            &counts,
        );
        assert_eq!(
            told(&manager),
            [
                "STATUS=stopped by SIGTERM after a drain: 8/10 chunks done, 2 cancelled; start again to resume\n"
            ]
        );
        observers.finish(
            &crate::dispatcher::Outcome::Aborted {
                reason: "disk full".to_owned(),
            },
            &counts,
        );
        assert_eq!(told(&manager), ["STATUS=aborted: disk full\n"]);
    }

    #[test]
    fn every_event_reaches_the_report() {
        let (_dir, _manager, mut observers) = observers(2, Instant::now());
        for (index, worker) in [(0, 0), (1, 1), (2, 1)] {
            observers.observe(&RunEvent::ChunkDone {
                chunk: chunk(index),
                attempt: 1,
                worker,
                seconds: 0.001,
                waited: 0.0,
            });
        }
        let outcome = crate::dispatcher::Outcome::Finished { failed: 0 };
        let report = observers
            .report
            .build(&crate::observers::report::ReportInput {
                job_name: "job",
                shard: None,
                outcome: &outcome,
                exit_code: 0,
                counts: Counts::default(),
                done_before: 0,
                failed_before: 0,
                elapsed: Duration::from_secs(1),
                output: "out",
                failed_file: None,
                log_lines_dropped: 0,
            });
        let chunks: Vec<u64> = report.workers.iter().map(|w| w.chunks).collect();
        assert_eq!(chunks, [1, 2]);
    }

    #[test]
    fn the_heartbeat_paces_status_and_watchdog_and_extends_a_moving_drain() {
        let start = Instant::now();
        let (_dir, manager, mut observers) = observers(1, start);
        let mut counts = Counts {
            total: Some(10),
            done: 3,
            ..Counts::default()
        };
        let snapshot = |counts: Counts, draining| Snapshot {
            counts,
            in_flight: 1,
            queued: 6,
            draining,
            pids: &[],
        };
        observers.tick(start, &snapshot(counts, false));
        assert_eq!(
            told(&manager),
            [
                "WATCHDOG=1\n",
                "STATUS=3/10 chunks done, 0 failed, 0 retried, 1 in flight, 0 workers\n"
            ]
        );
        // Within the second, and before half the watchdog interval: nothing.
        counts.done = 4;
        observers.tick(start + Duration::from_millis(500), &snapshot(counts, false));
        assert!(told(&manager).is_empty());
        // A second later the drain has moved: status, ping and more time.
        observers.tick(start + Duration::from_secs(1), &snapshot(counts, true));
        assert_eq!(
            told(&manager),
            [
                "WATCHDOG=1\n",
                "STATUS=draining: 1 chunk in flight, 4/10 done\n",
                "EXTEND_TIMEOUT_USEC=10000000\n"
            ]
        );
        // A drain that has not moved asks for no more time.
        observers.tick(start + Duration::from_secs(2), &snapshot(counts, true));
        assert_eq!(told(&manager), ["WATCHDOG=1\n"]);
    }
}
