//! A hand-played supervisor for exec-worker: spawns the real binary on one end
//! of a socket pair, speaks the protocol on the other, and looks at the
//! processes the worker starts through /proc.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use protocol::codec::{decode_worker_message, encode_frame};
use protocol::connection::FrameBuffer;
use protocol::message::{Assign, Cancel, Input, Welcome};
use protocol::{PROTOCOL_VERSION, SupervisorMessage, WORKER_FD_ENV, WorkerMessage};

/// How long a test waits for the worker before calling it stuck. A safety
/// net against hanging the test run, not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A worker's answer, owned; `Hello` is taken by [`Worker::handshake`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done(u64, Vec<u8>),
    Failed(u64, String),
    Cancelled(u64),
}

impl Reply {
    pub fn done(index: u64, output: &str) -> Self {
        Self::Done(index, output.as_bytes().to_vec())
    }

    /// The error of a `Failed` for `index`; panics on anything else.
    pub fn failure(self, index: u64) -> String {
        match self {
            Self::Failed(i, error) if i == index => error,
            other => panic!("expected chunk {index} to fail, got {}", other.show()),
        }
    }

    /// The output of a `Done` for `index`; panics on anything else.
    pub fn output(self, index: u64) -> Vec<u8> {
        match self {
            Self::Done(i, output) if i == index => output,
            other => panic!("expected chunk {index} done, got {}", other.show()),
        }
    }

    /// Short enough for a panic message even when the output is megabytes.
    fn show(&self) -> String {
        match self {
            Self::Done(i, output) if output.len() > 200 => {
                format!("Done({i}, {} bytes)", output.len())
            }
            Self::Done(i, output) => format!("Done({i}, {:?})", String::from_utf8_lossy(output)),
            other => format!("{other:?}"),
        }
    }
}

pub struct Worker {
    child: Child,
    command: String,
    socket: Option<UnixStream>,
    frames: FrameBuffer,
    /// The worker's stderr, line by line, from a thread that reads it so that
    /// waiting for a line can have a deadline.
    stderr: Receiver<String>,
}

impl Worker {
    /// Starts exec-worker as the supervisor does: in a process group of its
    /// own, with its end of a socket pair.
    pub fn spawn(args: &[&str]) -> Self {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_read_timeout(Some(PATIENCE)).unwrap();
        let fd = theirs.as_raw_fd();
        let mut command = Command::new(env!("CARGO_BIN_EXE_exec-worker"));
        command
            .args(args)
            .env(WORKER_FD_ENV, fd.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: the closure only calls fcntl, which is async-signal-safe,
        // and allocates nothing.
        unsafe { command.pre_exec(move || inherit(fd)) };
        let mut child = command.spawn().expect("spawn exec-worker");
        drop(theirs);
        let stderr = read_lines(child.stderr.take().expect("stderr is piped"));
        Self {
            child,
            command: format!("exec-worker {}", args.join(" ")),
            socket: Some(ours),
            frames: FrameBuffer::new(),
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads Hello, answers Welcome naming `input`.
    pub fn handshake(&mut self, input: Input) {
        match self.next_message() {
            Some(Ok(hello)) => assert_eq!(hello, PROTOCOL_VERSION, "{}", self.command),
            other => panic!("{}: expected Hello, got {other:?}", self.command),
        }
        self.send(&[SupervisorMessage::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            worker_id: 0,
            params: "{}".into(),
            input,
        })]);
    }

    /// Sends `messages` in one write.
    pub fn send(&mut self, messages: &[SupervisorMessage]) {
        let mut bytes = Vec::new();
        for m in messages {
            encode_frame(m, &mut bytes).unwrap();
        }
        let socket = self.socket.as_mut().expect("the socket is closed");
        socket.write_all(&bytes).expect("write to the worker");
    }

    /// The next answer, or `None` at a clean end of stream.
    pub fn recv(&mut self) -> Option<Reply> {
        match self.next_message() {
            None => None,
            Some(Err(reply)) => Some(reply),
            Some(Ok(version)) => panic!("{}: a second Hello (version {version})", self.command),
        }
    }

    pub fn recv_n(&mut self, n: usize) -> Vec<Reply> {
        (0..n)
            .map(|i| {
                self.recv()
                    .unwrap_or_else(|| panic!("{}: stream ended after {i} replies", self.command))
            })
            .collect()
    }

    /// `Ok(version)` for a Hello, `Err(reply)` for an answer.
    fn next_message(&mut self) -> Option<Result<u32, Reply>> {
        loop {
            let frame = self
                .frames
                .next_frame()
                .unwrap_or_else(|e| panic!("{}: {e}", self.command));
            if let Some(payload) = frame {
                let message = decode_worker_message(payload)
                    .unwrap_or_else(|e| panic!("{}: {e}", self.command));
                return Some(match message {
                    WorkerMessage::Hello(h) => Ok(h.protocol_version),
                    WorkerMessage::Done(d) => Err(Reply::Done(d.index, d.output.to_vec())),
                    WorkerMessage::Failed(f) => Err(Reply::Failed(f.index, f.error.to_owned())),
                    WorkerMessage::Cancelled(c) => Err(Reply::Cancelled(c.index)),
                });
            }
            let socket = self.socket.as_mut().expect("the socket is closed");
            let more = self
                .frames
                .fill_from(socket)
                .unwrap_or_else(|e| panic!("{}: reading: {e}", self.command));
            if !more {
                return None;
            }
        }
    }

    /// Closes the supervisor's end, as a supervisor that dies would.
    pub fn close(&mut self) {
        self.socket = None;
    }

    /// Reads the worker's stderr until a line contains `needle`, for up to
    /// [`PATIENCE`]; returns that line.
    pub fn wait_for_stderr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "{}: stderr ended before a line with {needle:?}",
                        self.command
                    )
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no line with {needle:?} on stderr within {PATIENCE:?}",
                    self.command
                ),
            }
        }
    }

    /// Waits for the worker to exit, polling up to [`PATIENCE`].
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: did not exit within {PATIENCE:?}",
                self.command
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the worker to exit, then returns everything left on its stderr.
    pub fn wait_with_stderr(&mut self) -> (ExitStatus, String) {
        let status = self.wait();
        let mut text = String::new();
        while let Ok(line) = self.stderr.recv_timeout(PATIENCE) {
            text.push_str(&line);
        }
        (status, text)
    }

    /// Kills the worker alone (not its group), as a crash would end it.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the worker");
        self.child.wait().expect("reap the worker");
    }
}

impl Drop for Worker {
    /// Never leaves a process behind, even when a test fails half way: the
    /// worker's whole group goes, commands included.
    fn drop(&mut self) {
        let running = matches!(self.child.try_wait(), Ok(None));
        if let Ok(pid) = libc::pid_t::try_from(self.child.id())
            && running
        {
            // SAFETY: killpg only sends a signal; the group is the worker's
            // own, and the worker is not reaped yet, so its id is not reused.
            unsafe { libc::killpg(pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
        if thread::panicking() {
            let text: String = self.stderr.try_iter().collect();
            eprintln!("command: {}\nstderr:\n{text}", self.command);
        }
    }
}

fn inherit(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor number; no memory is touched.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Forwards `stderr` line by line until it ends; the thread ends with it.
fn read_lines(stderr: ChildStderr) -> Receiver<String> {
    let (send, receive) = mpsc::channel();
    thread::spawn(move || {
        let mut stderr = BufReader::new(stderr);
        loop {
            let mut line = Vec::new();
            match stderr.read_until(b'\n', &mut line) {
                Ok(n)
                    if n > 0
                        && send
                            .send(String::from_utf8_lossy(&line).into_owned())
                            .is_ok() => {}
                _ => return,
            }
        }
    });
    receive
}

pub fn assign(index: u64, start: u64, end: u64, attempt: u32) -> SupervisorMessage {
    assign_from(index, start, end, attempt, start)
}

pub fn assign_from(
    index: u64,
    start: u64,
    end: u64,
    attempt: u32,
    first_item: u64,
) -> SupervisorMessage {
    SupervisorMessage::Assign(Assign {
        index,
        start,
        end,
        attempt,
        first_item,
    })
}

pub fn cancel(index: u64) -> SupervisorMessage {
    SupervisorMessage::Cancel(Cancel { index })
}

pub fn file_input(path: &Path) -> Input {
    Input::File {
        path: path.to_str().expect("a UTF-8 path").to_owned(),
    }
}

/// A file in the test's scratch folder, removed when dropped.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(contents: &[u8]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "exec-worker-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, contents).expect("write a temp file");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
}

/// `None` once the process is gone.
pub fn process(pid: u32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may itself hold spaces or parentheses.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Process {
        pid,
        comm,
        state,
        ppid,
        pgrp,
    })
}

/// The live children of `parent`.
pub fn children(parent: u32) -> Vec<Process> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(p) = process(pid).filter(|p| p.ppid == parent) {
            found.push(p);
        }
    }
    found
}

/// Polls `what` until it returns `Some`, for up to [`PATIENCE`].
pub fn eventually<T>(description: &str, mut what: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = what() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "not within {PATIENCE:?}: {description}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// True once `pid` is gone or a zombie: dead either way, whoever reaps it.
pub fn is_dead(pid: u32) -> bool {
    process(pid).is_none_or(|p| p.state == 'Z')
}
