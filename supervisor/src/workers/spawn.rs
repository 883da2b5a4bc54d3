//! Starting worker processes and signalling them: each worker runs in its own
//! process group with a private socket, and dies with the supervisor; how a
//! worker ended, in words.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::config::WorkerSpec;

/// A started worker and the supervisor's end of its socket.
pub struct Started {
    pub child: Child,
    pub pid: u32,
    pub socket: UnixStream,
    /// Read line by line into the supervisor's log, as is its stdout.
    pub stderr: ChildStderr,
    pub stdout: ChildStdout,
}

/// Starts one worker for `slot`. Must be called on a thread that lives as long
/// as the supervisor: the kernel's parent-death signal follows the thread that
/// forked, not the process.
pub fn spawn_worker(spec: &WorkerSpec, slot: usize) -> io::Result<Started> {
    // Both ends are close-on-exec, so no other worker inherits this channel;
    // only the child clears the flag on its own end, after the fork.
    let (ours, theirs) = StdUnixStream::pair()?;
    let their_fd = theirs.as_raw_fd();
    let parent = nix::unistd::getpid();
    let memory_limit = spec.memory_limit.map(|bytes| libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    });
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(protocol::WORKER_FD_ENV, their_fd.to_string())
        // systemd talks to the supervisor alone.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env("SUPERVISOR_WORKER_ID", slot.to_string())
        .stdin(Stdio::null())
        // Both into the log, line by line: never into an output on stdout,
        // never a line torn by another worker's, a JSON log stays JSON.
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: a terminal's Ctrl-C reaches the supervisor only, and a
        // kill reaches everything the worker started.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls: no allocation, no locks, no logging.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(their_fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The kernel enforces it: past the limit, allocations fail.
            if let Some(limit) = &memory_limit
                && libc::setrlimit(libc::RLIMIT_AS, limit) == -1
            {
                return Err(io::Error::last_os_error());
            }
            // The supervisor may have died before the line above took effect.
            if libc::getppid() != parent.as_raw() {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    drop(theirs);
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("the worker's stdout was not captured"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| io::Error::other("the worker's stderr was not captured"))?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the worker exited before it could be watched"))?;
    super::orphans::started(pid);
    ours.set_nonblocking(true)?;
    Ok(Started {
        child,
        pid,
        socket: UnixStream::from_std(ours)?,
        stderr,
        stdout,
    })
}

/// Signals the whole process group a worker leads. A group that is already
/// gone is not an error.
pub fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// How a worker process ended, in words.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(number) => {
            let name = crate::signals::name(number);
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            format!("killed by {name}{core}")
        }
        None => format!("{status}"),
    }
}
