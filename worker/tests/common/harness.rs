//! A hand-played supervisor for any worker binary: starts it on one end of a
//! socket pair, speaks the protocol on the other, and owns the process until
//! the test is over. Each test binary includes this file as its `harness`.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use protocol::codec::{decode_worker_message, encode_frame};
use protocol::connection::FrameReader;
use protocol::message::{Assign, Cancel, Hello, Input, Welcome};
use protocol::{PROTOCOL_VERSION, ProtocolError, SupervisorMessage, WORKER_FD_ENV, WorkerMessage};

/// How long a test waits for the worker before calling it stuck. A safety
/// net against hanging the test run, not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A worker's message, owned.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    Hello(Hello),
    Done(u64, Vec<u8>),
    Failed(u64, String),
    Cancelled(u64),
}

impl Reply {
    pub fn done(index: u64, output: &str) -> Self {
        Self::Done(index, output.as_bytes().to_vec())
    }
}

#[allow(dead_code, reason = "only exec-worker's tests take answers apart")]
impl Reply {
    /// The error of a `Failed` for `index`; panics on anything else.
    pub fn failure(self, index: u64) -> String {
        match self {
            Self::Failed(i, error) if i == index => error,
            other => panic!("expected chunk {index} to fail, got {other:?}"),
        }
    }

    /// The output of a `Done` for `index`; panics on anything else.
    pub fn output(self, index: u64) -> Vec<u8> {
        match self {
            Self::Done(i, output) if i == index => output,
            other => panic!("expected chunk {index} done, got {other:?}"),
        }
    }
}

impl fmt::Debug for Reply {
    /// Output as text, and only its size when it is long, so that a failed
    /// assertion stays readable even when the output is megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hello(hello) => f.debug_tuple("Hello").field(hello).finish(),
            Self::Done(i, output) if output.len() > 200 => {
                write!(f, "Done({i}, {} bytes)", output.len())
            }
            Self::Done(i, output) => write!(f, "Done({i}, {:?})", String::from_utf8_lossy(output)),
            Self::Failed(i, error) => write!(f, "Failed({i}, {error:?})"),
            Self::Cancelled(i) => write!(f, "Cancelled({i})"),
        }
    }
}

/// `program` with `args`, with stderr piped as [`Worker::wrap`] needs it and
/// nothing for the worker to read or write besides.
pub fn command(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

pub struct Worker {
    child: Child,
    /// The command line, to say which worker a failure is about.
    command: String,
    socket: Option<UnixStream>,
    frames: FrameReader,
    /// The worker's stderr, line by line, from a thread that reads it so that
    /// waiting for a line can have a deadline.
    stderr: Receiver<String>,
    /// The `elapsed_ns` of the last `Done` received.
    last_elapsed_ns: Option<u64>,
}

impl Worker {
    /// Starts `program` with `args` as the supervisor does.
    pub fn spawn(program: &str, args: &[&str]) -> Self {
        Self::spawn_command(command(program, args))
    }

    /// Starts `command`, made by [`command`], as the supervisor does: in a
    /// process group of its own, with its end of a socket pair.
    pub fn spawn_command(mut command: Command) -> Self {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_read_timeout(Some(PATIENCE)).unwrap();
        let fd = theirs.as_raw_fd();
        command.env(WORKER_FD_ENV, fd.to_string()).process_group(0);
        // SAFETY: the closure only calls fcntl, which is async-signal-safe,
        // and allocates nothing.
        unsafe { command.pre_exec(move || inherit(fd)) };
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", describe(&command)));
        drop(theirs);
        Self::wrap(&command, child, Some(ours))
    }

    /// Takes charge of `child`, started from `command`; `socket` is the
    /// supervisor's end of its connection, if it has one.
    pub fn wrap(command: &Command, mut child: Child, socket: Option<UnixStream>) -> Self {
        let stderr = read_lines(child.stderr.take().expect("stderr is piped"));
        Self {
            child,
            command: describe(command),
            socket,
            frames: FrameReader::new(),
            stderr,
            last_elapsed_ns: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn pid_t(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.pid()).unwrap()
    }

    /// Reads Hello, answers Welcome naming `input`, with no params.
    pub fn handshake(&mut self, input: Input) -> Hello {
        self.handshake_with("{}", input)
    }

    /// Reads Hello, answers Welcome with `params` and `input`.
    pub fn handshake_with(&mut self, params: &str, input: Input) -> Hello {
        let hello = match self.recv() {
            Some(Reply::Hello(hello)) => hello,
            other => panic!("{}: expected Hello, got {other:?}", self.command),
        };
        assert_eq!(hello.protocol_version, PROTOCOL_VERSION, "{}", self.command);
        self.send(&[welcome(PROTOCOL_VERSION, params, input)]);
        hello
    }

    /// Sends `messages` in one write.
    pub fn send(&mut self, messages: &[SupervisorMessage]) {
        let mut bytes = Vec::new();
        for m in messages {
            encode_frame(m, &mut bytes).unwrap();
        }
        self.send_raw(&bytes);
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.socket().write_all(bytes).expect("write to the worker");
    }

    /// As [`Worker::send`], for a worker that may have exited already.
    #[allow(
        dead_code,
        reason = "only the init tests send to a worker that may be gone"
    )]
    pub fn try_send(&mut self, messages: &[SupervisorMessage]) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for m in messages {
            encode_frame(m, &mut bytes).unwrap();
        }
        self.socket().write_all(&bytes)
    }

    /// The next message, or `None` at a clean end of stream.
    pub fn recv(&mut self) -> Option<Reply> {
        self.try_recv()
            .unwrap_or_else(|e| panic!("{}: reading a reply: {e}", self.command))
    }

    /// The next message, `None` at a clean end of stream, or what was wrong
    /// with the bytes the worker sent.
    pub fn try_recv(&mut self) -> Result<Option<Reply>, ProtocolError> {
        loop {
            if let Some(payload) = self.frames.next_frame()? {
                let message = decode_worker_message(payload)?;
                if let WorkerMessage::Done(done) = &message {
                    self.last_elapsed_ns = Some(done.elapsed_ns);
                }
                return Ok(Some(owned(message)));
            }
            let socket = self.socket.as_mut().expect("the socket is closed");
            match self.frames.fill_from(socket) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                // A worker killed while bytes it had not read were still
                // queued for it resets the connection instead of closing it:
                // either way it is gone, and nothing was half sent.
                Err(ProtocolError::Io(e))
                    if e.kind() == std::io::ErrorKind::ConnectionReset
                        && !self.frames.has_partial_frame() =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
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
        (status, self.rest_of_stderr())
    }

    /// The lines not yet read, up to the end of the stream or [`PATIENCE`].
    fn rest_of_stderr(&mut self) -> String {
        let mut text = String::new();
        let deadline = Instant::now() + PATIENCE;
        while let Ok(line) = self
            .stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            text.push_str(&line);
        }
        text
    }

    fn socket(&mut self) -> &mut UnixStream {
        self.socket.as_mut().expect("the socket is closed")
    }
}

#[allow(dead_code, reason = "each serves the tests of one worker binary")]
impl Worker {
    /// The `elapsed_ns` the last `Done` received carried.
    pub fn last_elapsed(&self) -> Duration {
        Duration::from_nanos(self.last_elapsed_ns.expect("a Done was received"))
    }

    /// True while the worker has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the worker alone (not its group), as a crash would end it.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the worker");
        self.child.wait().expect("reap the worker");
    }
}

impl Drop for Worker {
    /// Never leaves a process behind, even when a test fails half way: the
    /// worker's whole group goes, whatever the worker started included.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: killpg only sends a signal. The worker is not reaped
            // yet, so no one else has its id: a group with that id is the
            // worker's own, and without one the call reaches no one.
            unsafe { libc::killpg(self.pid_t(), libc::SIGKILL) };
        }
        // A worker with no group of its own is reached only this way.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let text = self.rest_of_stderr();
            eprintln!("command: {}\nstderr:\n{text}", self.command);
        }
    }
}

/// The program's file name and the arguments, as a failure message shows them.
fn describe(command: &Command) -> String {
    let program = command.get_program();
    let name = Path::new(program).file_name().unwrap_or(program);
    let mut text = name.to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
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
/// Bytes that are not UTF-8 are replaced rather than ending the stream, as a
/// command's stderr passed on by the worker may hold anything.
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

fn owned(message: WorkerMessage<'_>) -> Reply {
    match message {
        WorkerMessage::Hello(hello) => Reply::Hello(hello),
        WorkerMessage::Done(d) => Reply::Done(d.index, d.output.to_vec()),
        WorkerMessage::Failed(f) => Reply::Failed(f.index, f.error.to_owned()),
        WorkerMessage::Cancelled(c) => Reply::Cancelled(c.index),
    }
}

pub fn welcome(protocol_version: u32, params: &str, input: Input) -> SupervisorMessage {
    SupervisorMessage::Welcome(Welcome {
        protocol_version,
        worker_id: 3,
        params: params.into(),
        input,
    })
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
