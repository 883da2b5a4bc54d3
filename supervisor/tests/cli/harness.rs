//! Runs the real `supervisor` binary on job files in a temporary folder, and
//! checks afterwards that no process it started is still alive.
//!
//! Every process of a scenario carries a mark in its environment (workers
//! inherit the supervisor's), which is how leftovers are found in /proc.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a test waits for anything before calling it stuck. A safety net
/// against hanging the suite, never a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

const MARK_VAR: &str = "SUPERVISOR_TEST_MARK";

pub fn supervisor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_supervisor"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub struct Scenario {
    dir: TempDir,
    mark: String,
}

impl Scenario {
    pub fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let worker = supervisor_bin().with_file_name("squares-worker");
        assert!(
            worker.exists(),
            "{} is missing: run the tests with `cargo test --workspace`, which builds it",
            worker.display()
        );
        let mark = format!(
            "{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        Self {
            dir: tempfile::tempdir().unwrap(),
            mark,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a job file and returns its path.
    pub fn job(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts the supervisor with `args`, in the scenario's folder.
    pub fn start(&self, args: &[&str]) -> Run {
        let mut command = Command::new(supervisor_bin());
        command
            .args(args)
            .current_dir(self.dir())
            .env(MARK_VAR, &self.mark)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let description = format!("supervisor {}", args.join(" "));
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (line_tx, lines) = mpsc::channel();
        let stderr_thread = thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                all.push_str(&line);
                all.push('\n');
                let _ = line_tx.send(line);
            }
            all
        });
        let stdout_thread = thread::spawn(move || {
            let mut all = Vec::new();
            let _ = BufReader::new(stdout).read_to_end(&mut all);
            all
        });
        Run {
            child: Some(child),
            description,
            lines,
            seen: String::new(),
            stderr_thread: Some(stderr_thread),
            stdout_thread: Some(stdout_thread),
        }
    }

    /// Runs the supervisor to its end.
    pub fn run(&self, args: &[&str]) -> Finished {
        self.start(args).finish()
    }

    /// Processes started in this scenario that are still alive.
    pub fn survivors(&self) -> Vec<(u32, String)> {
        let needle = format!("{MARK_VAR}={}", self.mark);
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            let marked = environ
                .split(|&b| b == 0)
                .any(|var| var == needle.as_bytes());
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            if marked && !zombie {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                found.push((pid, cmdline));
            }
        }
        found
    }

    /// Fails the test if any process of the scenario outlives it. A process
    /// killed a moment ago may take a moment to vanish, so this waits for them
    /// (up to a deadline) rather than looking once.
    pub fn assert_no_survivors(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let survivors = self.survivors();
            if survivors.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("processes outlived the run: {survivors:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // Leave nothing behind on the machine even when a test failed.
        for (pid, _) in self.survivors() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A supervisor that is running.
pub struct Run {
    child: Option<Child>,
    description: String,
    lines: mpsc::Receiver<String>,
    seen: String,
    stderr_thread: Option<thread::JoinHandle<String>>,
    stdout_thread: Option<thread::JoinHandle<Vec<u8>>>,
}

impl Run {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for a stderr line that `matches` accepts and returns it.
    pub fn wait_for_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no stderr line {what} within {PATIENCE:?}; stderr so far:\n{}",
                    self.description, self.seen
                ),
            }
        }
    }

    /// Waits for the supervisor to exit (killing it if it takes longer than
    /// the patience allows) and collects what it printed.
    pub fn finish(mut self) -> Finished {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not finish within {PATIENCE:?}", self.description);
            }
            thread::sleep(Duration::from_millis(5));
        };
        let stderr = self.stderr_thread.take().unwrap().join().unwrap();
        let stdout = self.stdout_thread.take().unwrap().join().unwrap();
        Finished {
            description: std::mem::take(&mut self.description),
            code: status.code(),
            stdout,
            stderr,
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A supervisor that has exited.
#[derive(Debug)]
pub struct Finished {
    pub description: String,
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Finished {
    /// Asserts the exit code, showing the command and its stderr otherwise.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "{} exited with {:?}, expected {code}; stderr:\n{}",
            self.description,
            self.code,
            self.stderr
        );
        self
    }
}

/// One line of a jsonl output file.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Record {
    pub index: u64,
    pub start: u64,
    pub end: u64,
    pub attempt: u32,
    pub worker: u32,
    pub seconds: f64,
    pub output: serde_json::Value,
}

pub fn read_records(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_records(&text)
}

pub fn parse_records(text: &str) -> Vec<Record> {
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad record {line:?}: {e}"))
        })
        .collect()
}

/// The job file of a squares run over `[0, end)` in chunks of `chunk`.
pub fn squares_job(end: u64, chunk: u64, worker_args: &[&str], extra: &str) -> String {
    let command = std::iter::once("squares-worker")
        .chain(worker_args.iter().copied())
        .map(|word| format!("{word:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[source]\nrange = {{ start = 0, end = {end} }}\nchunk = {chunk}\n\n\
         [worker]\ncommand = [{command}]\n{extra}\n"
    )
}
