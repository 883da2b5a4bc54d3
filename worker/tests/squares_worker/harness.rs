//! A hand-played supervisor: spawns the real squares-worker on one end of a
//! socket pair and speaks the protocol on the other.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use protocol::codec::{decode_worker_message, encode_frame};
use protocol::connection::FrameBuffer;
use protocol::message::{Assign, Cancel, Hello, Welcome};
use protocol::{PROTOCOL_VERSION, ProtocolError, SupervisorMessage, WORKER_FD_ENV, WorkerMessage};

/// How long a test waits for the worker before calling it stuck. A safety
/// net against hanging the test run, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(20);

/// A worker's message, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Hello(Hello),
    Done(u64, String),
    Failed(u64, String),
    Cancelled(u64),
}

pub struct Worker {
    child: Child,
    command: String,
    socket: Option<UnixStream>,
    frames: FrameBuffer,
    /// The worker's stderr, line by line, from a thread that reads it so that
    /// waiting for a line can have a deadline.
    stderr: Option<Receiver<String>>,
    /// The `elapsed_ns` of the last `Done` received.
    last_elapsed_ns: Option<u64>,
}

impl Worker {
    /// Starts the worker as the supervisor does: in a process group of its
    /// own, with its end of a socket pair.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_limited(args, None)
    }

    /// Starts the worker with its address space limited to `limit` bytes
    /// (`RLIMIT_AS`), as `memory_limit` does.
    pub fn spawn_with_address_space_limit(args: &[&str], limit: u64) -> Self {
        Self::spawn_limited(args, Some(limit))
    }

    fn spawn_limited(args: &[&str], limit: Option<u64>) -> Self {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_read_timeout(Some(PATIENCE)).unwrap();
        let fd = theirs.as_raw_fd();
        let mut command = Command::new(env!("CARGO_BIN_EXE_squares-worker"));
        command
            .args(args)
            .env(WORKER_FD_ENV, fd.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: the closure only calls fcntl and setrlimit, which are
        // async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                inherit(fd)?;
                limit.map_or(Ok(()), limit_address_space)
            })
        };
        let child = command.spawn().expect("spawn squares-worker");
        drop(theirs);
        Self::wrap(child, args, Some(ours))
    }

    /// Starts the worker with no socket and no fd variable.
    pub fn spawn_unsupervised(args: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_squares-worker"))
            .args(args)
            .env_remove(WORKER_FD_ENV)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn squares-worker");
        Self::wrap(child, args, None)
    }

    fn wrap(mut child: Child, args: &[&str], socket: Option<UnixStream>) -> Self {
        let stderr = child.stderr.take().map(read_lines);
        Self {
            child,
            command: format!("squares-worker {}", args.join(" ")),
            socket,
            frames: FrameBuffer::new(),
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

    /// Reads Hello, answers Welcome with `params`.
    pub fn handshake(&mut self, params: &str) -> Hello {
        let Some(Reply::Hello(hello)) = self.recv() else {
            panic!("{}: expected Hello", self.command);
        };
        self.send(&[welcome(PROTOCOL_VERSION, params)]);
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
            if !self.frames.fill_from(socket)? {
                return Ok(None);
            }
        }
    }

    /// The `elapsed_ns` the last `Done` received carried.
    pub fn last_elapsed(&self) -> Duration {
        Duration::from_nanos(self.last_elapsed_ns.expect("a Done was received"))
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
    /// [`PATIENCE`].
    pub fn wait_for_stderr(&mut self, needle: &str) {
        let stderr = self.stderr.as_ref().expect("stderr is piped");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
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
        let Some(stderr) = self.stderr.as_ref() else {
            return text;
        };
        let deadline = Instant::now() + PATIENCE;
        while let Ok(line) = stderr.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            text.push_str(&line);
        }
        text
    }

    fn socket(&mut self) -> &mut UnixStream {
        self.socket.as_mut().expect("the socket is closed")
    }
}

impl Drop for Worker {
    /// Never leaves a child behind, even when a test fails half way.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let text = self.rest_of_stderr();
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

fn limit_address_space(bytes: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads the struct it is given and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
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
            let mut line = String::new();
            match stderr.read_line(&mut line) {
                Ok(n) if n > 0 && send.send(line).is_ok() => {}
                _ => return,
            }
        }
    });
    receive
}

fn owned(message: WorkerMessage<'_>) -> Reply {
    match message {
        WorkerMessage::Hello(hello) => Reply::Hello(hello),
        WorkerMessage::Done(d) => Reply::Done(
            d.index,
            String::from_utf8(d.output.to_vec()).expect("UTF-8 output"),
        ),
        WorkerMessage::Failed(f) => Reply::Failed(f.index, f.error.to_owned()),
        WorkerMessage::Cancelled(c) => Reply::Cancelled(c.index),
    }
}

pub fn welcome(protocol_version: u32, params: &str) -> SupervisorMessage {
    SupervisorMessage::Welcome(Welcome {
        protocol_version,
        worker_id: 3,
        params: params.into(),
        input: protocol::message::Input::Range,
    })
}

pub fn assign(index: u64, start: u64, end: u64, attempt: u32) -> SupervisorMessage {
    SupervisorMessage::Assign(Assign {
        index,
        start,
        end,
        attempt,
        first_item: start,
    })
}

pub fn cancel(index: u64) -> SupervisorMessage {
    SupervisorMessage::Cancel(Cancel { index })
}

/// The squares job's answer for `[start, end)`, computed the slow, obvious way.
pub fn expected(start: u64, end: u64, modulus: u64) -> String {
    (start..end)
        .map(|i| u128::from(i) * u128::from(i) % u128::from(modulus))
        .sum::<u128>()
        .to_string()
}
