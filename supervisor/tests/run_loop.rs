//! The run loop in-process: `run` with its signals handed in as numbers, on
//! real worker processes. Drain, cancel and the third signal's escalation,
//! without sending the test process a real signal.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use supervisor::assess::Options;
use supervisor::dispatcher::Outcome;
use supervisor::observers::progress::{Progress, ProgressMode};
use supervisor::run::{Reporting, RunEnd, run};
use tokio::sync::mpsc;
use tracing_subscriber::fmt::MakeWriter;

/// A safety net against a stuck test, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(60);

fn squares_worker() -> PathBuf {
    let worker = Path::new(env!("CARGO_BIN_EXE_supervisor")).with_file_name("squares-worker");
    assert!(
        worker.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        worker.display()
    );
    worker
}

/// A job of `chunks` chunks on two workers, each announcing every chunk it
/// starts on stderr, with extra worker arguments.
fn job(dir: &Path, chunks: u64, worker_args: &[&str]) -> supervisor::config::Job {
    let mut command = vec![
        squares_worker().display().to_string(),
        "--stderr-lines".into(),
        "1".into(),
    ];
    command.extend(worker_args.iter().map(|a| (*a).to_owned()));
    let path = dir.join("job.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\nrange = {{ start = 0, end = {chunks} }}\nchunk = 1\n\n\
             [worker]\ncommand = {}\n\n[supervisor]\nworkers = 2\n",
            serde_json::to_string(&command).unwrap()
        ),
    )
    .unwrap();
    supervisor::config::load(&path, None).unwrap()
}

/// Log lines, one event each, sent to the test as they are written.
#[derive(Clone)]
struct Lines(mpsc::UnboundedSender<String>);

struct Line {
    bytes: Vec<u8>,
    to: mpsc::UnboundedSender<String>,
}

impl io::Write for Line {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let _ = self
            .to
            .send(String::from_utf8_lossy(&self.bytes).into_owned());
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line {
            bytes: Vec::new(),
            to: self.0.clone(),
        }
    }
}

/// The pid of a worker announcing a chunk: `squares-worker[PID]: chunk …`.
fn announced_pid(line: &str) -> Option<u32> {
    let (_, rest) = line.split_once("squares-worker[")?;
    let (pid, rest) = rest.split_once(']')?;
    rest.starts_with(": chunk ").then(|| pid.parse().ok())?
}

/// Waits until both workers announced a chunk; returns their pids.
async fn both_busy(lines: &mut mpsc::UnboundedReceiver<String>) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut pids = Vec::new();
    while pids.len() < 2 {
        let line = tokio::time::timeout_at(deadline, lines.recv())
            .await
            .expect("both workers announce a chunk")
            .expect("the log goes on");
        if let Some(pid) = announced_pid(&line)
            && !pids.contains(&pid)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Whether `pid` is gone (or a zombie nobody will run again).
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Runs `job` in-process: once both workers are busy, `signals` are sent
/// one after the other. Returns how the run ended and the workers' pids.
fn run_with_signals(job: &supervisor::config::Job, signals: &[i32]) -> (RunEnd, Vec<u32>) {
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(Lines(lines_tx))
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (signals_tx, signals_rx) = mpsc::unbounded_channel();
        let reporting = Reporting {
            progress: Progress::new(ProgressMode::Never),
            metrics_addr: None,
        };
        let running = run(job, Options::default(), reporting, signals_rx);
        tokio::pin!(running);
        let pids = tokio::select! {
            pids = both_busy(&mut lines) => pids,
            ended = &mut running => panic!("the run ended before both workers were busy: {}", describe(&ended)),
        };
        for &number in signals {
            signals_tx.send(number).unwrap();
        }
        let ended = tokio::time::timeout(PATIENCE, running)
            .await
            .expect("the run ends");
        match ended {
            Ok(end) => (end, pids),
            Err(error) => panic!("the run was not set up: {error:?}"),
        }
    })
}

fn describe(ended: &Result<RunEnd, supervisor::run::SetupError>) -> String {
    match ended {
        Ok(RunEnd::Ended(summary)) => format!("{:?}", summary.outcome),
        Ok(RunEnd::Killed { signal }) => format!("killed after signal {signal}"),
        Err(error) => format!("{error:?}"),
    }
}

fn records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("job.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn a_first_signal_lets_the_chunks_in_flight_finish_and_starts_no_other() {
    let dir = tempfile::tempdir().unwrap();
    // Chunks long enough that the signal surely finds both workers busy,
    // short enough to finish within the drain timeout.
    let job = job(dir.path(), 40, &["--slow-ms", "300"]);
    let (end, pids) = run_with_signals(&job, &[libc::SIGTERM]);
    let RunEnd::Ended(summary) = end else {
        panic!("the run was killed")
    };
    assert_eq!(
        summary.outcome,
        Outcome::Drained {
            signal: libc::SIGTERM
        }
    );
    let counts = summary.counts;
    assert_eq!(counts.cancelled, 0, "{counts:?}");
    assert!(
        counts.done >= 2,
        "the two chunks in flight finish: {counts:?}"
    );
    assert!(counts.done < 40, "the drain started no more: {counts:?}");
    assert_eq!(records(dir.path()).len() as u64, counts.done);
    assert!(
        pids.iter().all(|&pid| is_gone(pid)),
        "a worker outlived the run"
    );
}

#[test]
fn a_second_signal_cancels_the_chunks_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    // Chunks far longer than the test waits: only a cancel ends them.
    let job = job(dir.path(), 10, &["--slow-ms", "600000"]);
    let (end, pids) = run_with_signals(&job, &[libc::SIGINT, libc::SIGTERM]);
    let RunEnd::Ended(summary) = end else {
        panic!("the run was killed")
    };
    // The first signal decides the exit status.
    assert_eq!(
        summary.outcome,
        Outcome::Drained {
            signal: libc::SIGINT
        }
    );
    assert_eq!(summary.counts.done, 0, "{:?}", summary.counts);
    assert_eq!(summary.counts.cancelled, 2, "{:?}", summary.counts);
    assert!(records(dir.path()).is_empty());
    assert!(
        pids.iter().all(|&pid| is_gone(pid)),
        "a worker outlived the run"
    );
}

#[test]
fn a_third_signal_kills_every_worker_and_ends_the_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Workers that ignore cancellation: only a kill ends them.
    let job = job(dir.path(), 10, &["--fault", "hang:0", "--fault", "hang:1"]);
    let (end, pids) = run_with_signals(&job, &[libc::SIGTERM, libc::SIGTERM, libc::SIGTERM]);
    let RunEnd::Killed { signal } = end else {
        panic!("the run ended by itself")
    };
    assert_eq!(signal, libc::SIGTERM);
    assert!(
        pids.iter().all(|&pid| is_gone(pid)),
        "a worker outlived the run"
    );
}
