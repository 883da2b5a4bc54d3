//! Runs the real `supervisor` binary on job files in a temporary folder, and
//! checks afterwards that no process it started is still alive.
//!
//! Every process of a scenario carries a mark in its environment (workers
//! inherit the supervisor's), which is how leftovers are found in /proc.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
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

    /// The variable and value that mark a process as this scenario's, for a
    /// supervisor started some other way than [`Scenario::start`] (inside a
    /// terminal, say), so that [`Scenario::assert_no_survivors`] sees it.
    pub fn mark_env(&self) -> (&'static str, &str) {
        (MARK_VAR, &self.mark)
    }

    /// Starts the supervisor with `args`, in the scenario's folder.
    pub fn start(&self, args: &[&str]) -> Run {
        self.start_with(args, Launch::default())
    }

    /// Starts the supervisor with `args` the way `launch` says.
    pub fn start_with(&self, args: &[&str], mut launch: Launch) -> Run {
        let mut command = if launch.watchdog_pid_is_self {
            // The supervisor's pid is unknown before it is spawned, but a
            // shell that execs it hands over its own, which it knows.
            let mut command = Command::new("/bin/sh");
            command
                .arg("-c")
                .arg("WATCHDOG_PID=$$; export WATCHDOG_PID; exec \"$0\" \"$@\"")
                .arg(supervisor_bin());
            command
        } else {
            Command::new(supervisor_bin())
        };
        if launch.own_process_group {
            command.process_group(0);
        }
        command
            .args(args)
            .current_dir(self.dir())
            .env(MARK_VAR, &self.mark)
            .env("RUST_LOG", "info")
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(launch.stdin.take().unwrap_or_else(Stdio::null))
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

/// How to start a supervisor, beyond its arguments.
#[derive(Debug, Default)]
pub struct Launch {
    env: Vec<(String, String)>,
    /// What the supervisor reads on stdin; nothing (/dev/null) by default.
    stdin: Option<Stdio>,
    own_process_group: bool,
    watchdog_pid_is_self: bool,
}

impl Launch {
    /// An extra variable in the supervisor's environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The supervisor reads `stdin` (a file, another process's stdout).
    pub fn stdin(mut self, stdin: impl Into<Stdio>) -> Self {
        self.stdin = Some(stdin.into());
        self
    }

    /// The supervisor leads a process group of its own, as a shell's
    /// foreground job does, so that [`Run::signal_group`] acts like a
    /// terminal's Ctrl-C.
    pub fn own_process_group(mut self) -> Self {
        self.own_process_group = true;
        self
    }

    /// `WATCHDOG_PID` names the supervisor itself, as systemd sets it.
    pub fn watchdog_pid_is_self(mut self) -> Self {
        self.watchdog_pid_is_self = true;
        self
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

    /// Sends `signal` to the supervisor alone.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal)
            .unwrap_or_else(|e| panic!("{}: cannot send {signal}: {e}", self.description));
    }

    /// Sends `signal` to the supervisor's process group, as a terminal sends
    /// Ctrl-C to its foreground job. Needs [`Launch::own_process_group`].
    pub fn signal_group(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pid() as i32), signal)
            .unwrap_or_else(|e| {
                panic!(
                    "{}: cannot send {signal} to its group: {e}",
                    self.description
                )
            });
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

/// The reference worker with `worker_args`, as the items of a TOML array.
pub fn squares_command(worker_args: &[&str]) -> String {
    std::iter::once("squares-worker")
        .chain(worker_args.iter().copied())
        .map(|word| format!("{word:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The job file of a squares run over `[0, end)` in chunks of `chunk`.
pub fn squares_job(end: u64, chunk: u64, worker_args: &[&str], extra: &str) -> String {
    let command = squares_command(worker_args);
    format!(
        "[source]\nrange = {{ start = 0, end = {end} }}\nchunk = {chunk}\n\n\
         [worker]\ncommand = [{command}]\n{extra}\n"
    )
}

/// A stand-in for systemd's notify socket: a datagram socket the supervisor
/// is pointed at through `NOTIFY_SOCKET`.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    /// Every assignment received so far, one per line, in order.
    seen: Vec<String>,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path)
            .unwrap_or_else(|e| panic!("cannot bind {}: {e}", path.display()));
        Self {
            socket,
            path: path.to_owned(),
            seen: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything received so far, one assignment (`KEY=value`) per entry.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Returns the first assignment that `matches` accepts, among those
    /// received so far or, failing that, those still to come. One datagram
    /// may carry several assignments, one per line.
    pub fn wait_for(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|line| matches(line)) {
            return line.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no notification {what} within {PATIENCE:?}; received:\n{:#?}",
                    self.seen
                );
            }
            self.socket.set_read_timeout(Some(left)).unwrap();
            let len = match self.socket.recv(&mut buffer) {
                Ok(len) => len,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => panic!("cannot read {}: {e}", self.path.display()),
            };
            let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
            let mut found = None;
            for line in text.lines().filter(|line| !line.is_empty()) {
                self.seen.push(line.to_owned());
                if found.is_none() && matches(line) {
                    found = Some(line.to_owned());
                }
            }
            if let Some(line) = found {
                return line;
            }
        }
    }
}

/// A chunk start that a worker announced on stderr as `TAG[PID]: chunk I
/// attempt A`, which arrives as the message of a log line (the supervisor
/// logs its workers' stderr). The reference worker does it with
/// `--stderr-lines 1`; the Python tests' handlers do it by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Announced {
    pub pid: u32,
    pub index: u64,
    pub attempt: u32,
}

/// Reads an announcement by a worker whose lines start with `tag`.
pub fn parse_announcement(tag: &str, line: &str) -> Option<Announced> {
    let (_, rest) = line.split_once(&format!("{tag}["))?;
    let (pid, rest) = rest.split_once("]: chunk ")?;
    let mut words = rest.split(' ');
    let index = words.next()?.parse().ok()?;
    if words.next()? != "attempt" {
        return None;
    }
    let attempt = words.next()?.trim_end().parse().ok()?;
    Some(Announced {
        pid: pid.parse().ok()?,
        index,
        attempt,
    })
}

/// Waits until `workers` different workers tagged `tag` are each busy with a chunk.
pub fn wait_for_busy_workers(run: &mut Run, tag: &str, workers: usize) -> Vec<Announced> {
    let mut busy: Vec<Announced> = Vec::new();
    while busy.len() < workers {
        let line = run.wait_for_line(&format!("a {tag} announcing a chunk"), |line| {
            parse_announcement(tag, line).is_some()
        });
        let announced = parse_announcement(tag, &line).unwrap();
        if busy.iter().all(|a| a.pid != announced.pid) {
            busy.push(announced);
        }
    }
    busy
}

pub fn indices(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.index).collect()
}

pub fn assert_stderr_contains(finished: &Finished, needle: &str) {
    assert!(
        finished.stderr.contains(needle),
        "{}: no {needle:?} in stderr:\n{}",
        finished.description,
        finished.stderr
    );
}
