//! Prometheus metrics: an exposition endpoint fed by the run's events.
//!
//! [`Metrics::install`] starts an HTTP listener (`--metrics-addr`) that answers
//! any GET with the text exposition format. Every metric carries a `job` label
//! with the job's name, and a shard's metrics a `shard` label too (`1/4`,
//! shard 1 of 4), so that the shards of one job scraped together stay apart. Metrics are registered with their help text at start,
//! so each one is present from the first scrape, at zero.
//!
//! | metric | type | what |
//! | --- | --- | --- |
//! | `supervisor_chunks_total{outcome}` | counter | chunks settled or retried, by `outcome`: `done`, `failed` (out of attempts), `retried` (an attempt failed and the chunk goes again), `cancelled` (abandoned by a drain) |
//! | `supervisor_chunks_dispatched_total` | counter | chunk attempts handed to a worker |
//! | `supervisor_chunks_in_flight` | gauge | chunks at workers now |
//! | `supervisor_chunks_queued` | gauge | chunks waiting to be dispatched (retries included) |
//! | `supervisor_chunk_seconds` | histogram | a chunk's time as the worker measured it |
//! | `supervisor_chunk_queue_seconds` | histogram | the time a chunk waited at its worker behind others before it could start |
//! | `supervisor_worker_restarts_total{cause}` | counter | workers lost other than by an orderly stop, by `cause` (below) |
//! | `supervisor_workers_alive` | gauge | worker processes running |
//! | `supervisor_rss_bytes{process}` | gauge | resident memory of the `supervisor` and of all `workers` together |
//! | `supervisor_draining` | gauge | 1 once a drain started (a signal), else 0 |
//!
//! The gauges are sampled about once a second; the counters and histograms
//! move with every event.
//!
//! A restart's `cause` is one of: `crash` (it died by itself: a signal, an
//! exit), `timeout` (a chunk ran past `timeout`), `protocol` (garbage, an
//! oversized frame, an unexpected message), `disconnect` (it closed its socket
//! but lived on until the supervisor stopped it), `startup` (no hello within
//! `start_timeout`, or it could not be spawned), `stuck_stop` (asked to stop or
//! to give up its chunks, it did not), `other`. Exits the supervisor asked for
//! (the end of the run, a drain, `max_chunks`) are not counted.
//!
//! The recorder is not installed as the process-wide `metrics` recorder: this
//! module holds the only handles, which keeps the hot path to atomic
//! operations and lets a process (a test) run more than one.

use std::net::SocketAddr;

use anyhow::anyhow;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusRecorder};
use tokio::task::JoinHandle;

use crate::dispatcher::{KillCause, RunEvent};
use crate::shard::JobShard;

/// Upper bounds of the chunk-time buckets, in seconds: 100 µs to an hour, in
/// steps of about ×2–×5, so both tiny and hour-long chunks get a useful shape.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
];

const CHUNKS: &str = "supervisor_chunks_total";
const DISPATCHED: &str = "supervisor_chunks_dispatched_total";
const IN_FLIGHT: &str = "supervisor_chunks_in_flight";
const QUEUED: &str = "supervisor_chunks_queued";
const CHUNK_SECONDS: &str = "supervisor_chunk_seconds";
const QUEUE_SECONDS: &str = "supervisor_chunk_queue_seconds";
const RESTARTS: &str = "supervisor_worker_restarts_total";
const ALIVE: &str = "supervisor_workers_alive";
const RSS: &str = "supervisor_rss_bytes";
const DRAINING: &str = "supervisor_draining";

/// Why a worker was lost, as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartCause {
    /// It exited or was killed by something other than the supervisor.
    Crash,
    /// A chunk ran past the timeout.
    Timeout,
    /// It sent something that is not a valid frame or message.
    Protocol,
    /// It closed its socket while still running, and had to be stopped.
    Disconnect,
    /// It never became ready: no hello in time, or it could not be started.
    Startup,
    /// Asked to stop or to give up its chunks, it did not.
    StuckStop,
    Other,
}

impl RestartCause {
    pub const ALL: [RestartCause; 7] = [
        Self::Crash,
        Self::Timeout,
        Self::Protocol,
        Self::Disconnect,
        Self::Startup,
        Self::StuckStop,
        Self::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Crash => "crash",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
            Self::Disconnect => "disconnect",
            Self::Startup => "startup",
            Self::StuckStop => "stuck_stop",
            Self::Other => "other",
        }
    }

    /// Classifies a worker's end: `cause` is why the supervisor ended it
    /// (none when it died by itself), and `status` how it ended.
    pub fn of(cause: Option<&KillCause>, status: &str) -> Self {
        match cause {
            // A worker that could not even be spawned never ran to crash.
            None if status.starts_with("could not be started") => Self::Startup,
            None => Self::Crash,
            Some(KillCause::TimedOut { .. }) => Self::Timeout,
            Some(KillCause::BrokeProtocol(_)) => Self::Protocol,
            Some(KillCause::SilentStart(_)) => Self::Startup,
            Some(KillCause::IgnoredStop(_) | KillCause::IgnoredCancel) => Self::StuckStop,
            // Only a worker still alive when the supervisor's SIGTERM came
            // merely hung up; one that died by itself is a crash.
            Some(KillCause::Disconnected) if status.starts_with("killed by SIGTERM") => {
                Self::Disconnect
            }
            Some(KillCause::Disconnected) => Self::Crash,
            Some(KillCause::SecondSignal | KillCause::Aborting | KillCause::NotNeeded) => {
                Self::Other
            }
        }
    }
}

/// The run's metrics, registered once; updating them allocates nothing and
/// looks nothing up.
pub struct Metrics {
    done: Counter,
    failed: Counter,
    retried: Counter,
    cancelled: Counter,
    dispatched: Counter,
    in_flight: Gauge,
    queued: Gauge,
    chunk_seconds: Histogram,
    queue_seconds: Histogram,
    /// Indexed like [`RestartCause::ALL`].
    restarts: [Counter; RestartCause::ALL.len()],
    workers_alive: Gauge,
    supervisor_rss: Gauge,
    workers_rss: Gauge,
    draining: Gauge,
    /// The listener; stopped when the metrics are dropped, so the port is
    /// free again once the run is over.
    server: JoinHandle<()>,
    #[cfg(test)]
    handle: metrics_exporter_prometheus::PrometheusHandle,
}

impl Metrics {
    /// Starts the Prometheus exposition HTTP listener on `addr` (e.g.
    /// 127.0.0.1:9464) and registers every metric with its help text. Must be
    /// called inside the tokio runtime; the listener is served by it. Errors
    /// (address in use, …) are returned before anything is served.
    pub fn install(
        addr: SocketAddr,
        job_name: &str,
        shard: Option<&JobShard>,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow!("metrics need a tokio runtime to serve from"))?;
        let _entered = runtime.enter();
        let mut builder = PrometheusBuilder::new()
            .with_http_listener(addr)
            .add_global_label("job", job_name);
        if let Some(shard) = shard {
            builder = builder.add_global_label("shard", shard.shard.to_string());
        }
        let builder = builder
            .set_buckets_for_metric(Matcher::Full(CHUNK_SECONDS.to_owned()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(QUEUE_SECONDS.to_owned()), SECONDS_BUCKETS)
            })
            .map_err(|e| anyhow!("{e}"))?;
        let (recorder, exporter) = builder.build().map_err(|e| match e {
            // The exporter's wording adds nothing to the caller's context
            // but the operating system's reason.
            BuildError::FailedToCreateHTTPListener(reason) => anyhow!(reason),
            other => anyhow!(other),
        })?;
        let server = tokio::spawn(async move {
            if let Err(error) = exporter.await {
                tracing::warn!("the metrics listener stopped: {error:?}");
            }
        });
        Ok(Self::register(&recorder, server))
    }

    fn register(recorder: &PrometheusRecorder, server: JoinHandle<()>) -> Self {
        let metadata = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &metadata)
        };
        let gauge = |name: &'static str, labels: Vec<Label>| {
            recorder.register_gauge(&Key::from_parts(name, labels), &metadata)
        };
        let histogram = |name: &'static str| {
            recorder.register_histogram(&Key::from_static_name(name), &metadata)
        };
        let label = |key: &'static str, value: &'static str| vec![Label::new(key, value)];

        recorder.describe_counter(
            KeyName::from_const_str(CHUNKS),
            Some(Unit::Count),
            "Chunks by outcome: done, failed (out of attempts), retried (an attempt failed, the chunk goes again), cancelled (abandoned by a drain)".into(),
        );
        recorder.describe_counter(
            KeyName::from_const_str(DISPATCHED),
            Some(Unit::Count),
            "Chunk attempts handed to a worker".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(IN_FLIGHT),
            Some(Unit::Count),
            "Chunks at workers now".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(QUEUED),
            Some(Unit::Count),
            "Chunks waiting to be dispatched, retries included".into(),
        );
        recorder.describe_histogram(
            KeyName::from_const_str(CHUNK_SECONDS),
            Some(Unit::Seconds),
            "Time a chunk took, as its worker measured it".into(),
        );
        recorder.describe_histogram(
            KeyName::from_const_str(QUEUE_SECONDS),
            Some(Unit::Seconds),
            "Time a chunk waited at its worker before the worker could start on it".into(),
        );
        recorder.describe_counter(
            KeyName::from_const_str(RESTARTS),
            Some(Unit::Count),
            "Workers lost other than by an orderly stop, by cause: crash, timeout, protocol, disconnect, startup, stuck_stop, other".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(ALIVE),
            Some(Unit::Count),
            "Worker processes running".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(RSS),
            Some(Unit::Bytes),
            "Resident memory of the supervisor, and of all its workers together".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(DRAINING),
            None,
            "1 once a signal started a drain, else 0".into(),
        );

        Self {
            done: counter(CHUNKS, label("outcome", "done")),
            failed: counter(CHUNKS, label("outcome", "failed")),
            retried: counter(CHUNKS, label("outcome", "retried")),
            cancelled: counter(CHUNKS, label("outcome", "cancelled")),
            dispatched: counter(DISPATCHED, Vec::new()),
            in_flight: gauge(IN_FLIGHT, Vec::new()),
            queued: gauge(QUEUED, Vec::new()),
            chunk_seconds: histogram(CHUNK_SECONDS),
            queue_seconds: histogram(QUEUE_SECONDS),
            restarts: RestartCause::ALL
                .map(|cause| counter(RESTARTS, label("cause", cause.label()))),
            workers_alive: gauge(ALIVE, Vec::new()),
            supervisor_rss: gauge(RSS, label("process", "supervisor")),
            workers_rss: gauge(RSS, label("process", "workers")),
            draining: gauge(DRAINING, Vec::new()),
            server,
            #[cfg(test)]
            handle: recorder.handle(),
        }
    }

    /// Counts what happened to chunks and workers.
    pub fn observe(&mut self, event: &RunEvent<'_>) {
        match *event {
            RunEvent::ChunkDispatched { .. } => self.dispatched.increment(1),
            RunEvent::ChunkDone {
                seconds, waited, ..
            } => {
                self.done.increment(1);
                self.chunk_seconds.record(seconds);
                self.queue_seconds.record(waited);
            }
            RunEvent::ChunkFailed { .. } => self.failed.increment(1),
            RunEvent::ChunkRetried { .. } => self.retried.increment(1),
            RunEvent::ChunkCancelled { .. } => self.cancelled.increment(1),
            RunEvent::WorkerExited {
                status,
                cause,
                expected: false,
                ..
            } => self.restarts[RestartCause::of(cause, status) as usize].increment(1),
            RunEvent::DrainStarted { .. }
            | RunEvent::Cancelling { .. }
            | RunEvent::Tripped { .. } => self.draining.set(1.0),
            _ => {}
        }
    }

    /// Samples the state of the run; meant for about once a second.
    pub fn gauges(
        &mut self,
        in_flight: usize,
        queued: u64,
        workers_alive: usize,
        supervisor_rss_bytes: u64,
        workers_rss_bytes: u64,
    ) {
        self.in_flight.set(in_flight as f64);
        self.queued.set(queued as f64);
        self.workers_alive.set(workers_alive as f64);
        self.supervisor_rss.set(supervisor_rss_bytes as f64);
        self.workers_rss.set(workers_rss_bytes as f64);
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_causes_map_to_their_label() {
        use std::time::Duration;
        let minute = Duration::from_secs(60);
        let timed_out = |outstanding| KillCause::TimedOut {
            after: minute,
            chunk: 2,
            outstanding,
        };
        let cases: Vec<(Option<KillCause>, &str, &str)> = vec![
            (None, "killed by SIGKILL", "crash"),
            (None, "exit status 3", "crash"),
            (
                None,
                "could not be started: No such file or directory",
                "startup",
            ),
            (Some(timed_out(1)), "", "timeout"),
            (Some(timed_out(3)), "", "timeout"),
            (
                Some(KillCause::BrokeProtocol("malformed message".into())),
                "",
                "protocol",
            ),
            (
                Some(KillCause::Disconnected),
                "killed by SIGTERM",
                "disconnect",
            ),
            (Some(KillCause::Disconnected), "killed by SIGABRT", "crash"),
            (
                Some(KillCause::Disconnected),
                "killed by SIGKILL, core dumped",
                "crash",
            ),
            (Some(KillCause::Disconnected), "exit status 3", "crash"),
            (Some(KillCause::SilentStart(minute)), "", "startup"),
            (Some(KillCause::IgnoredStop(minute)), "", "stuck_stop"),
            (Some(KillCause::IgnoredCancel), "", "stuck_stop"),
            (Some(KillCause::SecondSignal), "", "other"),
            (Some(KillCause::Aborting), "", "other"),
            (Some(KillCause::NotNeeded), "", "other"),
        ];
        for (cause, status, label) in cases {
            assert_eq!(
                RestartCause::of(cause.as_ref(), status).label(),
                label,
                "{cause:?} {status:?}"
            );
        }
    }

    #[test]
    fn events_show_in_the_exposition_with_the_job_label() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let mut metrics = Metrics::install("127.0.0.1:0".parse().unwrap(), "unit", None).unwrap();
        let chunk = crate::chunks::ChunkSpec {
            index: 0,
            start: 0,
            end: 10,
            first_item: 0,
        };
        for (seconds, waited) in [(0.02, 0.0), (2.0, 0.3)] {
            metrics.observe(&RunEvent::ChunkDispatched {
                chunk,
                attempt: 1,
                worker: 0,
            });
            metrics.observe(&RunEvent::ChunkDone {
                chunk,
                attempt: 1,
                worker: 0,
                seconds,
                waited,
            });
        }
        metrics.observe(&RunEvent::ChunkRetried {
            chunk,
            failed_attempt: 1,
            worker: 0,
            error: "boom",
        });
        let timed_out = KillCause::TimedOut {
            after: std::time::Duration::from_secs(1),
            chunk: 0,
            outstanding: 1,
        };
        let exits = [
            (Some(&timed_out), false),
            (None, false),
            (Some(&KillCause::NotNeeded), true),
        ];
        for (cause, expected) in exits {
            metrics.observe(&RunEvent::WorkerExited {
                slot: 0,
                pid: Some(1),
                status: "killed by SIGKILL",
                cause,
                expected,
            });
        }
        metrics.observe(&RunEvent::DrainStarted {
            signal: 15,
            in_flight: 1,
        });
        metrics.gauges(1, 7, 2, 1000, 3000);

        let text = metrics.handle.render();
        for line in [
            r#"supervisor_chunks_total{job="unit",outcome="done"} 2"#,
            r#"supervisor_chunks_total{job="unit",outcome="retried"} 1"#,
            r#"supervisor_chunks_total{job="unit",outcome="failed"} 0"#,
            r#"supervisor_chunks_total{job="unit",outcome="cancelled"} 0"#,
            r#"supervisor_chunks_dispatched_total{job="unit"} 2"#,
            r#"supervisor_worker_restarts_total{job="unit",cause="timeout"} 1"#,
            r#"supervisor_worker_restarts_total{job="unit",cause="crash"} 1"#,
            r#"supervisor_worker_restarts_total{job="unit",cause="other"} 0"#,
            r#"supervisor_chunks_in_flight{job="unit"} 1"#,
            r#"supervisor_chunks_queued{job="unit"} 7"#,
            r#"supervisor_workers_alive{job="unit"} 2"#,
            r#"supervisor_rss_bytes{job="unit",process="supervisor"} 1000"#,
            r#"supervisor_rss_bytes{job="unit",process="workers"} 3000"#,
            r#"supervisor_draining{job="unit"} 1"#,
            r#"supervisor_chunk_seconds_bucket{job="unit",le="0.05"} 1"#,
            r#"supervisor_chunk_seconds_bucket{job="unit",le="5"} 2"#,
            r#"supervisor_chunk_seconds_count{job="unit"} 2"#,
            r#"supervisor_chunk_queue_seconds_bucket{job="unit",le="0.0001"} 1"#,
            "# TYPE supervisor_chunk_seconds histogram",
            "# TYPE supervisor_chunks_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn every_metric_is_there_from_the_start() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let metrics = Metrics::install("127.0.0.1:0".parse().unwrap(), "fresh", None).unwrap();
        let text = metrics.handle.render();
        for name in [
            "supervisor_chunks_total",
            "supervisor_chunks_dispatched_total",
            "supervisor_chunks_in_flight",
            "supervisor_chunks_queued",
            "supervisor_worker_restarts_total",
            "supervisor_workers_alive",
            "supervisor_rss_bytes",
            "supervisor_draining",
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no {name} in\n{text}"
            );
        }
        assert!(
            text.contains(r#"supervisor_draining{job="fresh"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn a_shards_metrics_carry_its_shard() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let shard = JobShard {
            shard: crate::shard::Shard::new(1, 4).unwrap(),
            from: crate::shard::Scheduler::Slurm,
            evidence: String::new(),
        };
        let metrics =
            Metrics::install("127.0.0.1:0".parse().unwrap(), "part", Some(&shard)).unwrap();
        let text = metrics.handle.render();
        assert!(
            text.contains(r#"supervisor_draining{job="part",shard="1/4"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn a_taken_address_is_an_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let error = Metrics::install(taken.local_addr().unwrap(), "unit", None)
            .err()
            .expect("the address is taken");
        assert!(format!("{error:#}").contains("in use"), "{error:#}");
    }

    #[test]
    fn every_cause_has_its_own_counter() {
        for (n, cause) in RestartCause::ALL.into_iter().enumerate() {
            assert_eq!(cause as usize, n);
        }
    }
}
