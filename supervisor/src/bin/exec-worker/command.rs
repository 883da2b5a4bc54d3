//! Runs the command for one chunk: spawn it, feed its stdin, collect its
//! stdout, pass its stderr on, and kill it when the chunk is cancelled or its
//! output cannot fit in an answer.
//!
//! The handler's thread reads stdout straight into the output buffer, polling
//! it with a short timeout to look at the cancel flag in between; helper
//! threads take the waits that would otherwise block it (stderr and the exit,
//! stdin) and report through one channel, which it waits on the same way once
//! stdout has ended. So it wakes the moment the command is done, and never
//! blocks where a Cancel could not reach it.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::FileExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread;
use std::time::Duration;

use worker::{Chunk, Context};

use crate::error::{ExecError, InputError};
use crate::placeholders::Template;
use crate::stderr::{self, Tail};

/// What the command reads on stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StdinMode {
    /// The chunk's bytes of the input file, then end of file.
    Chunk,
    /// Nothing: /dev/null.
    None,
}

/// The chunk's index, for a command that wants it without a placeholder.
const CHUNK_INDEX_ENV: &str = "SUPERVISOR_CHUNK_INDEX";
/// The chunk's attempt, from 1.
const CHUNK_ATTEMPT_ENV: &str = "SUPERVISOR_CHUNK_ATTEMPT";

/// The most output a chunk's `Done` can carry.
const MAX_OUTPUT: usize = protocol::codec::MAX_DONE_OUTPUT;

/// How often a running command looks at the cancel flag: well inside the
/// ~50 ms a Cancel may take to be noticed, and rare enough to cost nothing.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// Bytes of the input file read and written to stdin at a time: a few pipe
/// buffers' worth, so a chunk of any size costs this much memory.
const STDIN_PIECE: usize = 256 * 1024;

/// Bytes read from stdout at a time.
const STDOUT_PIECE: usize = 64 * 1024;

/// The program, its argument template and its stdin, the same for every chunk.
pub struct Exec {
    program: OsString,
    /// The program as error messages show it.
    name: String,
    template: Template,
    stdin: StdinMode,
    /// Reused for every read of stdout.
    piece: Vec<u8>,
}

/// What a helper thread reports.
enum Event {
    Stderr(Tail),
    /// The command exited; it is not reaped yet, so its pid still names it.
    Exited,
    Stdin(Result<(), InputError>),
}

/// Why the handler stopped waiting.
enum Stop {
    Finished,
    Cancelled,
    Failed(ExecError),
}

impl Exec {
    pub fn new(program: OsString, template: Template, stdin: StdinMode) -> Self {
        let name = Path::new(&program).display().to_string();
        Self {
            program,
            name,
            template,
            stdin,
            piece: vec![0; STDOUT_PIECE],
        }
    }

    /// Runs the command on `chunk`, leaving its stdout in `out` when it exits
    /// with status 0.
    ///
    /// # Errors
    ///
    /// When the command cannot be started, fails, is killed, writes too much,
    /// or the chunk is cancelled (then the supervisor is told `Cancelled`,
    /// whatever the error says).
    pub fn run(
        &mut self,
        ctx: &Context,
        chunk: &Chunk,
        out: &mut Vec<u8>,
    ) -> Result<(), ExecError> {
        if ctx.is_cancelled() {
            return Err(ExecError::Cancelled);
        }
        let args = self.template.render(chunk, ctx.input_path())?;
        let input = match self.stdin {
            StdinMode::Chunk => Some(open_input(ctx)?),
            StdinMode::None => None,
        };
        let mut child = KillOnDrop(self.spawn(chunk, &args, input.is_some())?);
        let (events, inbox) = mpsc::channel();
        let mut pending = Pending::default();
        let stdout = self
            .start_helpers(&mut child.0, chunk, input, events, &mut pending)
            .map_err(|source| self.watch_error(source))?;

        match self.wait(ctx, &inbox, stdout, out, &mut pending) {
            Stop::Finished => {}
            Stop::Cancelled => return Err(ExecError::Cancelled),
            Stop::Failed(e) => return Err(e),
        }
        let status = child.0.wait().map_err(|e| self.watch_error(e))?;
        let tail = pending.stderr.take().map(|t| t.text()).unwrap_or_default();
        if !status.success() {
            return Err(ExecError::ended(&self.name, status, tail));
        }
        if let Some(Err(e)) = pending.stdin.take() {
            // The command saw less than the chunk: its output is no answer.
            return Err(e.into());
        }
        Ok(())
    }

    fn spawn(
        &self,
        chunk: &Chunk,
        args: &[OsString],
        piped_stdin: bool,
    ) -> Result<Child, ExecError> {
        let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
        let mut command = Command::new(&self.program);
        command
            .args(args)
            // The command may be a worker itself: it must not take this
            // worker's socket (already closed on exec) for its own.
            .env_remove(protocol::WORKER_FD_ENV)
            .env(CHUNK_INDEX_ENV, chunk.index.to_string())
            .env(CHUNK_ATTEMPT_ENV, chunk.attempt.to_string())
            .stdin(if piped_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // No process group of its own: the supervisor kills the worker's
        // group, and that must take the command (and anything it started)
        // along. PR_SET_PDEATHSIG covers a worker that dies on its own; it
        // fires when the thread that forked exits, which is the thread that
        // runs the handler and lives as long as the worker.
        //
        // SAFETY: between fork and exec only async-signal-safe system calls
        // are made: no allocation, no locks. std resets the signal mask and
        // SIGPIPE itself, and exec resets the SDK's SIGINT handler to the default.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                    return Err(io::Error::last_os_error());
                }
                // The worker may have died before the line above took effect.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        command.spawn().map_err(|source| ExecError::Spawn {
            program: self.name.clone(),
            source,
        })
    }

    /// Starts the helper threads, each of which reports on `events`; returns
    /// stdout, which the handler's thread reads itself.
    fn start_helpers(
        &self,
        child: &mut Child,
        chunk: &Chunk,
        input: Option<Input>,
        events: Sender<Event>,
        pending: &mut Pending,
    ) -> io::Result<ChildStdout> {
        let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
        let stdout = child.stdout.take().ok_or_else(|| missing("stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| missing("stderr"))?;
        let stdin = child.stdin.take();

        if let (Some(input), Some(stdin)) = (input, stdin) {
            let (start, end) = (chunk.start, chunk.end);
            let tx = events.clone();
            helper("exec-stdin", move || {
                let _ = tx.send(Event::Stdin(input.feed(start, end, stdin)));
            })?;
        } else {
            pending.stdin = Some(Ok(()));
        }
        // One thread for both: a chunk is not finished before stderr has
        // ended anyway, and a thread less is a good part of a short command's cost.
        helper("exec-stderr", move || {
            let _ = events.send(Event::Stderr(stderr::forward(stderr)));
            // Whatever the outcome: an error means it is gone already.
            let _ = wait_for_exit(pid);
            let _ = events.send(Event::Exited);
        })?;
        Ok(stdout)
    }

    /// Waits until the command has exited and every pipe is done, the chunk is
    /// cancelled, or something goes wrong that makes the rest pointless.
    ///
    /// A process the command left behind that keeps its stdout or stderr open
    /// holds the chunk until it closes them, as in a shell's `$(...)`; a
    /// Cancel, or the supervisor's timeout, still ends the wait.
    fn wait(
        &mut self,
        ctx: &Context,
        inbox: &Receiver<Event>,
        stdout: ChildStdout,
        out: &mut Vec<u8>,
        pending: &mut Pending,
    ) -> Stop {
        let mut stdout = Some(stdout);
        let mut helpers_gone = false;
        loop {
            while !helpers_gone {
                match inbox.try_recv() {
                    Ok(event) => {
                        if let Some(stop) = pending.note(event) {
                            return stop;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => helpers_gone = true,
                }
            }
            if stdout.is_none() && pending.complete() {
                return Stop::Finished;
            }
            if ctx.is_cancelled() {
                return Stop::Cancelled;
            }
            if let Some(pipe) = &mut stdout {
                match self.read_some(pipe, out) {
                    Ok(true) => {}
                    Ok(false) => stdout = None,
                    Err(Captured::TooLarge) => {
                        return Stop::Failed(ExecError::OutputTooLarge { limit: MAX_OUTPUT });
                    }
                    Err(Captured::Failed(source)) => {
                        return Stop::Failed(ExecError::Output {
                            program: self.name.clone(),
                            source,
                        });
                    }
                }
                continue;
            }
            if helpers_gone {
                // Only a helper that panicked leaves without reporting.
                return Stop::Failed(
                    self.watch_error(io::Error::other("a helper thread ended without reporting")),
                );
            }
            match inbox.recv_timeout(CANCEL_POLL) {
                Ok(event) => {
                    if let Some(stop) = pending.note(event) {
                        return stop;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => helpers_gone = true,
            }
        }
    }

    /// Appends what stdout has to `out`, waiting for it up to [`CANCEL_POLL`];
    /// false at its end.
    fn read_some(&mut self, pipe: &mut ChildStdout, out: &mut Vec<u8>) -> Result<bool, Captured> {
        if !readable(pipe, CANCEL_POLL)? {
            return Ok(true);
        }
        // It is readable, so this does not block.
        let n = match pipe.read(&mut self.piece) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(Captured::Failed(e)),
        };
        append_capped(out, &self.piece[..n], MAX_OUTPUT)?;
        Ok(true)
    }

    fn watch_error(&self, source: io::Error) -> ExecError {
        ExecError::Watch {
            program: self.name.clone(),
            source,
        }
    }
}

/// Why stdout was not read to its end.
enum Captured {
    TooLarge,
    Failed(io::Error),
}

impl From<io::Error> for Captured {
    fn from(e: io::Error) -> Self {
        Self::Failed(e)
    }
}

/// What the helpers have reported so far.
#[derive(Default)]
struct Pending {
    stderr: Option<Tail>,
    exited: bool,
    stdin: Option<Result<(), InputError>>,
}

impl Pending {
    fn complete(&self) -> bool {
        self.stderr.is_some() && self.exited && self.stdin.is_some()
    }

    /// Files `event` away; `Some` when it ends the wait.
    fn note(&mut self, event: Event) -> Option<Stop> {
        match event {
            Event::Stderr(tail) => self.stderr = Some(tail),
            Event::Exited => self.exited = true,
            // Failing now spares running the command to its end on part of
            // the chunk. A write error is most likely the command gone: its
            // exit status tells more, so wait for that.
            Event::Stdin(Err(e @ (InputError::Read { .. } | InputError::Short { .. }))) => {
                return Some(Stop::Failed(e.into()));
            }
            Event::Stdin(result) => self.stdin = Some(result),
        }
        None
    }
}

/// Kills and reaps the child when dropped, so no path out of [`Exec::run`]
/// leaves a command running or a zombie behind. Helper threads still blocked
/// on a pipe that something the command started holds open are left to end
/// when it closes it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Both are no-ops once `wait` has returned: std remembers the status
        // and then sends no signal, so a recycled pid is never hit.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn missing(what: &str) -> io::Error {
    io::Error::other(format!("the command's {what} was not captured"))
}

fn helper(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new().name(name.into()).spawn(f).map(drop)
}

/// Waits up to `timeout` for `pipe` to have data or be closed; false when
/// the time ran out (or a signal came) first.
fn readable(pipe: &ChildStdout, timeout: Duration) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one pollfd, alive for the whole call.
    match unsafe { libc::poll(&mut poll, 1, ms) } {
        -1 => {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => Ok(false),
                _ => Err(e),
            }
        }
        0 => Ok(false),
        // POLLIN, or POLLHUP/POLLERR, after which a read returns at once too.
        _ => Ok(true),
    }
}

/// Blocks until the process exits, leaving it a zombie: until it is reaped
/// its pid cannot be recycled, so killing it by pid stays safe meanwhile.
fn wait_for_exit(pid: libc::pid_t) -> io::Result<()> {
    let id = libc::id_t::try_from(pid).map_err(io::Error::other)?;
    loop {
        // SAFETY: siginfo_t is plain data, and waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above; WNOWAIT leaves the child to `Child::wait`.
        let r = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Appends `bytes` to `buf`, or `Captured::TooLarge` if `buf` would pass
/// `limit` bytes.
fn append_capped(buf: &mut Vec<u8>, bytes: &[u8], limit: usize) -> Result<(), Captured> {
    if bytes.len() > limit - buf.len() {
        return Err(Captured::TooLarge);
    }
    if buf.capacity() - buf.len() < bytes.len() {
        // Doubling, but never past the limit: a Vec's own growth would
        // reserve up to twice the limit for an output just below it.
        let more = buf
            .capacity()
            .max(STDOUT_PIECE)
            .max(bytes.len())
            .min(limit - buf.len());
        buf.reserve_exact(more);
    }
    buf.extend_from_slice(bytes);
    Ok(())
}

/// The input file, for feeding a chunk's bytes to stdin.
struct Input {
    /// A descriptor of its own: the helper thread outlives the handler's
    /// borrow of the context.
    file: File,
    path: String,
}

fn open_input(ctx: &Context) -> Result<Input, ExecError> {
    let path = ctx.input_path().ok_or(ExecError::StdinWithoutFile)?;
    let file = ctx
        .input_file()
        .and_then(File::try_clone)
        .map_err(ExecError::OpenInput)?;
    Ok(Input {
        file,
        path: path.display().to_string(),
    })
}

impl Input {
    /// Writes bytes `[start, end)` to `stdin` in pieces, then closes it.
    /// A command that exits without reading them all is no error here: its
    /// exit status says whether it succeeded.
    fn feed(self, start: u64, end: u64, mut stdin: ChildStdin) -> Result<(), InputError> {
        let len = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
        let mut piece = vec![0; len.min(STDIN_PIECE)];
        let mut at = start;
        while at < end {
            let want = usize::try_from(end - at).map_or(piece.len(), |left| left.min(piece.len()));
            let n = match self.file.read_at(&mut piece[..want], at) {
                Ok(0) => {
                    return Err(InputError::Short {
                        path: self.path,
                        at,
                        end,
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(InputError::Read {
                        path: self.path,
                        start,
                        end,
                        source,
                    });
                }
            };
            match stdin.write_all(&piece[..n]) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(InputError::Write(e)),
            }
            at += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_stops_past_the_limit() {
        let mut buf = Vec::new();
        assert!(append_capped(&mut buf, &[7; 600], 1000).is_ok());
        assert!(append_capped(&mut buf, &[7; 400], 1000).is_ok());
        assert_eq!(buf.len(), 1000);
        assert!(matches!(
            append_capped(&mut buf, &[7], 1000),
            Err(Captured::TooLarge)
        ));
    }

    #[test]
    fn the_buffer_never_reserves_past_the_limit() {
        let limit = 3 * STDOUT_PIECE + 17;
        let mut buf = Vec::new();
        for piece in vec![1u8; limit].chunks(1000) {
            assert!(append_capped(&mut buf, piece, limit).is_ok());
        }
        assert_eq!(buf.len(), limit);
        assert!(buf.capacity() <= limit, "{}", buf.capacity());
    }
}
