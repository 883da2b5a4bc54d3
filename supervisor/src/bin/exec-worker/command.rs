//! Runs the command for one chunk: spawn it, feed its stdin, collect its
//! stdout, pass its stderr on, and kill it when the chunk is cancelled or its
//! output cannot fit in an answer.
//!
//! One thread does it all: the handler's, in one `poll` over the command's
//! three pipes and its pidfd (while bytes stream, a short nap between turns
//! instead: see [`crate::pace`]), waking at least every [`CANCEL_POLL`] to
//! look at the cancel flag. No helper threads, and no copies but the ones the
//! kernel makes: the chunk's bytes are spliced from the input file into
//! stdin, and stdout is read straight into the buffer the answer is sent from.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;
use std::{io, mem::MaybeUninit};

use protocol::message::Input;
use worker::{Chunk, Context};

use crate::contain;
use crate::error::{ExecError, InputError};
use crate::feed::{Fed, Feed};
use crate::items::split_lines;
use crate::pace::Pace;
use crate::pipes::{self, Pipe, Read};
use crate::placeholders::{Inputs, Template};
use crate::spawn::{CStrings, Process, Spawner, Stdio};
use crate::stderr::Forward;

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

/// Bytes of stdout read in one turn of the loop before the other pipes get
/// their turn.
const STDOUT_TURN: usize = 4 << 20;

/// Bytes of stderr read at a time.
const STDERR_PIECE: usize = 16 * 1024;

/// The program, its argument template and its stdin, the same for every
/// chunk, and what is reused from one chunk to the next.
pub struct Exec {
    program: CString,
    /// The program as error messages show it.
    name: String,
    template: Template,
    stdin: StdinMode,
    /// Exit statuses that count as success.
    success: Vec<i32>,
    spawner: Spawner,
    /// This process's environment less the worker's own variables.
    env: CStrings,
    /// The chunk's variables, after `env`.
    chunk_env: CStrings,
    /// The program, then the rendered arguments.
    argv: CStrings,
    /// The chunk's bytes, when the arguments hold its lines.
    chunk_bytes: Vec<u8>,
    stderr_piece: Vec<MaybeUninit<u8>>,
    null: File,
}

impl Exec {
    /// # Errors
    ///
    /// When `/dev/null` or the memory for starting commands is unavailable,
    /// or the program's path holds a NUL byte.
    pub fn new(
        program: &OsStr,
        template: Template,
        stdin: StdinMode,
        success: Vec<i32>,
    ) -> io::Result<Self> {
        let name = Path::new(program).display().to_string();
        let program = CString::new(program.as_bytes()).map_err(io::Error::other)?;
        let mut env = CStrings::default();
        for (key, value) in std::env::vars_os() {
            // The command may be a worker itself: it must not take this
            // worker's socket (already closed on exec) for its own.
            if [protocol::WORKER_FD_ENV, CHUNK_INDEX_ENV, CHUNK_ATTEMPT_ENV]
                .iter()
                .any(|own| key == *own)
            {
                continue;
            }
            let mut pair = key;
            pair.push("=");
            pair.push(value);
            // A variable with a NUL byte cannot exist; skip rather than fail.
            let _ = env.push(&pair);
        }
        Ok(Self {
            program,
            name,
            template,
            stdin,
            success,
            spawner: Spawner::new()?,
            env,
            chunk_env: CStrings::default(),
            argv: CStrings::default(),
            chunk_bytes: Vec::new(),
            stderr_piece: vec![MaybeUninit::uninit(); STDERR_PIECE],
            null: File::open("/dev/null")?,
        })
    }

    /// Runs the command on `chunk`, leaving its stdout in `out` when it exits
    /// with a status that counts as success.
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
        self.prepare(ctx, chunk)?;
        let feed = match self.stdin {
            StdinMode::Chunk => {
                let path = ctx.input_path().ok_or(ExecError::StdinWithoutFile)?;
                let file = ctx.input_file().map_err(ExecError::OpenInput)?;
                Some(Feed::new(file, path, chunk.start, chunk.end))
            }
            StdinMode::None => None,
        };
        let watch = |e| self.watch_error(e);
        let stdin = feed
            .is_some()
            .then(pipes::data_pipe)
            .transpose()
            .map_err(watch)?;
        let (stdin_ours, stdin_theirs) = stdin.map(|p| (p.write, p.read)).unzip();
        let Pipe {
            read: stdout_ours,
            write: stdout_theirs,
        } = pipes::data_pipe().map_err(watch)?;
        let Pipe {
            read: stderr_ours,
            write: stderr_theirs,
        } = pipes::pipe().map_err(watch)?;
        let stdio = Stdio {
            stdin: stdin_theirs
                .as_ref()
                .map_or(self.null.as_fd(), OwnedFd::as_fd),
            stdout: stdout_theirs.as_fd(),
            stderr: stderr_theirs.as_fd(),
        };
        let program = self.program.as_c_str();
        let process = self
            .spawner
            .spawn(program, &self.argv, &self.env, &self.chunk_env, &stdio)
            .map_err(|source| self.spawn_error(source))?;
        // The command is now the only holder of its ends, so they close when
        // it exits (or whatever it started that inherited them does).
        drop((stdin_theirs, stdout_theirs, stderr_theirs));
        let ours = Ends {
            stdin: stdin_ours,
            stdout: stdout_ours,
            stderr: stderr_ours,
        };
        for fd in ours.stdin.iter().chain([&ours.stdout, &ours.stderr]) {
            pipes::set_nonblocking(fd.as_fd()).map_err(|e| self.watch_error(e))?;
        }
        let waited = self.wait(ctx, process, feed, ours, out);
        if let Some(ended) = contain::end_leftovers() {
            let _ = writeln!(
                io::stderr(),
                "exec-worker: chunk {}: the command left {ended} running; ended them",
                chunk.index
            );
        }
        let (status, tail, input_error) = waited?;
        if !counts_as_success(status, &self.success) {
            return Err(ExecError::ended(&self.name, status, tail));
        }
        if let Some(e) = input_error {
            // The command saw less than the chunk: its output is no answer.
            return Err(e.into());
        }
        Ok(())
    }

    /// Fills in the arguments and the chunk's variables.
    fn prepare(&mut self, ctx: &Context, chunk: &Chunk) -> Result<(), ExecError> {
        let items = if self.template.needs_items() && matches!(ctx.input(), Input::Lines { .. }) {
            self.chunk_bytes.clear();
            ctx.read_chunk(chunk, &mut self.chunk_bytes)
                .map_err(ExecError::ReadLines)?;
            Some(split_lines(&self.chunk_bytes))
        } else {
            None
        };
        let inputs = Inputs {
            path: ctx.input_path(),
            items: items.as_deref(),
        };
        let args = self.template.render(chunk, inputs)?;
        self.argv.clear();
        self.argv.push_owned(self.program.clone());
        for (n, arg) in (1..).zip(&args) {
            self.argv
                .push(arg)
                .map_err(|_| ExecError::NulInArgument(n))?;
        }
        self.chunk_env.clear();
        for (key, value) in [
            (CHUNK_INDEX_ENV, chunk.index.to_string()),
            (CHUNK_ATTEMPT_ENV, chunk.attempt.to_string()),
        ] {
            let pair = OsString::from(format!("{key}={value}"));
            // Digits and a name: no NUL.
            let _ = self.chunk_env.push(&pair);
        }
        Ok(())
    }

    /// Watches the command until it has exited and its stdout and stderr
    /// are closed, the chunk is cancelled, or something goes wrong that
    /// makes the rest pointless; returns its status, the end of its stderr,
    /// and an error writing its stdin, if there was one.
    ///
    /// A process the command left behind that keeps its stdout or stderr open
    /// holds the chunk until it closes them, as in a shell's `$(...)`; a
    /// Cancel, or the supervisor's timeout, still ends the wait. Dropping
    /// `process` on the way out kills and reaps the command.
    fn wait(
        &mut self,
        ctx: &Context,
        mut process: Process,
        mut feed: Option<Feed<'_>>,
        ends: Ends,
        out: &mut Vec<u8>,
    ) -> Result<(ExitStatus, String, Option<InputError>), ExecError> {
        let Ends {
            mut stdin,
            stdout,
            stderr,
        } = ends;
        let mut pace = Pace::new(pipes::capacity(stdout.as_fd()));
        let mut stdout = Some(stdout);
        let mut stderr = Some(stderr);
        let mut forward = Forward::default();
        let mut input_error = None;
        let mut status = None;
        loop {
            if let Some(status) = status
                && stdout.is_none()
                && stderr.is_none()
            {
                let tail = forward.finish().text();
                return Ok((status, tail, input_error));
            }
            if ctx.is_cancelled() {
                return Err(ExecError::Cancelled);
            }

            // The data pipes, without waiting: as much as they take and hold.
            let mut fed = 0;
            if let (Some(pipe), Some(bytes)) = (&stdin, &mut feed) {
                let before = bytes.fed();
                let pumped = bytes.pump(pipe.as_fd());
                fed = usize::try_from(bytes.fed() - before).unwrap_or(usize::MAX);
                match pumped {
                    Ok(Fed::Blocked) => {}
                    Ok(Fed::Done) => stdin = None,
                    // Failing now spares running the command to its end on
                    // part of the chunk.
                    Err(e @ (InputError::Read { .. } | InputError::Short { .. })) => {
                        return Err(e.into());
                    }
                    // Most likely the command is gone: its exit status tells
                    // more, so wait for that.
                    Err(e) => {
                        input_error = Some(e);
                        stdin = None;
                    }
                }
            }
            let mut read = 0;
            if let Some(pipe) = &stdout {
                let before = out.len();
                let ended = pipes::read_capped(pipe.as_fd(), out, MAX_OUTPUT, STDOUT_TURN);
                read = out.len() - before;
                match ended {
                    Ok(Some(false)) => {}
                    Ok(Some(true)) => stdout = None,
                    Ok(None) => return Err(ExecError::OutputTooLarge { limit: MAX_OUTPUT }),
                    Err(source) => {
                        return Err(ExecError::Output {
                            program: self.name.clone(),
                            source,
                        });
                    }
                }
            }

            if status.is_some() && stdout.is_none() && stderr.is_none() {
                // Finished this turn: nothing left to wait for.
                continue;
            }
            let nap = pace.after(fed.max(read));
            let mut watched = Watched::default();
            if nap.is_none() {
                if let Some(fd) = &stdin {
                    watched.add(Watch::Data, fd.as_fd(), libc::POLLOUT);
                }
                if let Some(fd) = &stdout {
                    watched.add(Watch::Data, fd.as_fd(), libc::POLLIN);
                }
            }
            if let Some(fd) = &stderr {
                watched.add(Watch::Stderr, fd.as_fd(), libc::POLLIN);
            }
            if status.is_none() {
                watched.add(Watch::Exit, process.pidfd(), libc::POLLIN);
            }
            let timeout = nap.unwrap_or(CANCEL_POLL);
            for ready in watched.poll(timeout).map_err(|e| self.watch_error(e))? {
                match ready {
                    // Moved at the top of the next turn.
                    Watch::Data => {}
                    Watch::Stderr => {
                        let Some(pipe) = &stderr else { continue };
                        if self.forward_stderr(pipe.as_fd(), &mut forward) {
                            stderr = None;
                        }
                    }
                    Watch::Exit => {
                        status = process.try_wait().map_err(|e| self.watch_error(e))?;
                    }
                }
            }
        }
    }

    /// Passes on what stderr has now; true at its end (or when it cannot be
    /// read, which ends it as well).
    fn forward_stderr(&mut self, pipe: BorrowedFd<'_>, forward: &mut Forward) -> bool {
        loop {
            match pipes::read(pipe, &mut self.stderr_piece) {
                Ok(Read::Bytes(n)) => {
                    // SAFETY: read initialised the first `n` bytes.
                    let bytes = unsafe {
                        std::slice::from_raw_parts(self.stderr_piece.as_ptr().cast::<u8>(), n)
                    };
                    forward.feed(bytes);
                }
                Ok(Read::Empty) => return false,
                Ok(Read::End) | Err(_) => return true,
            }
        }
    }

    fn spawn_error(&self, source: io::Error) -> ExecError {
        if source.raw_os_error() == Some(libc::E2BIG) {
            return ExecError::TooManyArguments {
                program: self.name.clone(),
                words: self.argv.len(),
                bytes: self.argv.bytes(),
            };
        }
        ExecError::Spawn {
            program: self.name.clone(),
            source,
        }
    }

    fn watch_error(&self, source: io::Error) -> ExecError {
        ExecError::Watch {
            program: self.name.clone(),
            source,
        }
    }
}

/// The worker's ends of the command's pipes.
struct Ends {
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// Stdin has room or stdout has bytes.
    Data,
    Stderr,
    Exit,
}

/// The descriptors of one `poll`, each with what it stands for.
#[derive(Default)]
struct Watched {
    fds: Vec<libc::pollfd>,
    what: Vec<Watch>,
}

impl Watched {
    fn add(&mut self, what: Watch, fd: BorrowedFd<'_>, events: libc::c_short) {
        use std::os::fd::AsRawFd as _;
        self.fds.push(libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        });
        self.what.push(what);
    }

    /// Waits up to `timeout` for any of them; returns the ready ones (any
    /// event: a hang-up or error is seen by the read or write that follows).
    /// None when the time ran out or a signal came. With nothing to watch it
    /// only sleeps.
    fn poll(&mut self, timeout: Duration) -> io::Result<Vec<Watch>> {
        let count = libc::nfds_t::try_from(self.fds.len()).map_err(io::Error::other)?;
        let timeout = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: timeout.subsec_nanos().into(),
        };
        // SAFETY: `fds` holds `count` pollfds, alive for the whole call, and
        // `timeout` is a valid timespec; no signal mask is given.
        let n = unsafe { libc::ppoll(self.fds.as_mut_ptr(), count, &timeout, std::ptr::null()) };
        if n == -1 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        Ok(self
            .fds
            .iter()
            .zip(&self.what)
            .filter(|(fd, _)| fd.revents != 0)
            .map(|(_, what)| *what)
            .collect())
    }
}

/// Whether `status` is one of `success`; a signal never is.
fn counts_as_success(status: ExitStatus, success: &[i32]) -> bool {
    status.code().is_some_and(|code| success.contains(&code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    #[test]
    fn success_is_the_listed_statuses_and_never_a_signal() {
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        assert!(counts_as_success(exited(0), &[0]));
        assert!(!counts_as_success(exited(1), &[0]));
        assert!(counts_as_success(exited(1), &[0, 1]));
        assert!(!counts_as_success(exited(0), &[1]));
        assert!(!counts_as_success(
            ExitStatus::from_raw(libc::SIGKILL),
            &[0, 9, 137]
        ));
    }
}
