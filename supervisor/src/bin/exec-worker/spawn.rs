//! Starting the command: a `clone` that shares the worker's memory until the
//! command's `exec`, as `vfork` and glibc's `posix_spawn` do, with
//! `PR_SET_PDEATHSIG` set in between (which `posix_spawn` has no attribute
//! for, so std's `Command` would fall back to `fork` for it).
//!
//! A `fork` copies the worker's page tables and marks its memory
//! copy-on-write, so every page of the output buffer the worker writes after
//! it faults once more; with chunks of megabytes that costs more than the
//! command's start. Sharing the memory costs nothing, but the child then runs
//! on the worker's memory until it execs: it gets a stack of its own, makes
//! only system calls, and writes nothing but one error number.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};

use libc::{c_char, c_int, c_void};

/// The child's stack: it makes a handful of system calls, nothing deep.
const STACK_LEN: usize = 64 * 1024;

/// Signal numbers are 1 to 64 on Linux.
const LAST_SIGNAL: c_int = 64;

/// Strings for `execve`: owned, with the null-terminated array of pointers
/// to them that the call takes.
#[derive(Debug, Default)]
pub struct CStrings {
    strings: Vec<CString>,
}

impl CStrings {
    /// # Errors
    ///
    /// When `s` holds a NUL byte, which no argument or variable can.
    pub fn push(&mut self, s: &OsStr) -> Result<(), NulError> {
        let s = CString::new(s.as_bytes()).map_err(|_| NulError)?;
        self.strings.push(s);
        Ok(())
    }

    pub fn push_owned(&mut self, s: CString) {
        self.strings.push(s);
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// Their bytes, each string's terminating NUL included, as `execve` counts them.
    pub fn bytes(&self) -> usize {
        self.strings
            .iter()
            .map(|s| s.as_bytes_with_nul().len())
            .sum()
    }

    pub fn clear(&mut self) {
        self.strings.clear();
    }

    /// Pointers to the strings, then a null. They stay valid while `self`
    /// is neither changed nor dropped: each string's bytes live on the heap.
    fn pointers(&self, more: &[&CStrings]) -> Vec<*const c_char> {
        std::iter::once(self)
            .chain(more.iter().copied())
            .flat_map(|s| s.strings.iter().map(|s| s.as_ptr()))
            .chain(std::iter::once(ptr::null()))
            .collect()
    }
}

/// A string held a NUL byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NulError;

/// Starts commands; holds the memory their children start on.
pub struct Spawner {
    stack: Stack,
}

/// The descriptors the command gets as its stdin, stdout and stderr.
pub struct Stdio<'a> {
    pub stdin: BorrowedFd<'a>,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
}

/// What the child needs, prepared by the parent: the child allocates nothing.
struct ChildArgs {
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    stdio: [RawFd; 3],
    parent: libc::pid_t,
    /// Set by the child when it cannot exec: the reason, as an errno.
    errno: AtomicI32,
}

impl Spawner {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            stack: Stack::new(STACK_LEN)?,
        })
    }

    /// Runs `program` with `argv` (its first word included) and the
    /// environment `env` followed by `more_env`, in this process's group and
    /// folder, its signals at their defaults and unblocked, killed by SIGKILL
    /// when the thread that calls this exits.
    ///
    /// # Errors
    ///
    /// When the process cannot be created or the program cannot be executed
    /// (not found, not executable, ...): the error `execve` gave.
    pub fn spawn(
        &mut self,
        program: &CStr,
        argv: &CStrings,
        env: &CStrings,
        more_env: &CStrings,
        stdio: &Stdio<'_>,
    ) -> io::Result<Process> {
        let argv = argv.pointers(&[]);
        let envp = env.pointers(&[more_env]);
        let args = ChildArgs {
            program: program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            stdio: [
                stdio.stdin.as_raw_fd(),
                stdio.stdout.as_raw_fd(),
                stdio.stderr.as_raw_fd(),
            ],
            parent: libc::pid_t::try_from(std::process::id()).unwrap_or(0),
            errno: AtomicI32::new(0),
        };
        let mut pidfd: c_int = -1;

        // No signal handler may run in the child while it shares this
        // process's memory: everything is blocked across the clone, and the
        // child puts the handlers back to their defaults before it unblocks.
        // SAFETY: sigset_t is plain data that sigfillset initialises.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sets are valid for the calls.
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        // SAFETY: the child runs `child_main` on a stack of its own and makes
        // only async-signal-safe system calls on memory prepared above, which
        // stays alive and untouched: CLONE_VFORK suspends this thread until
        // the child has exec'd or exited. It writes only `args.errno`.
        let pid = unsafe {
            libc::clone(
                child_main,
                self.stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                ptr::from_ref(&args).cast_mut().cast::<c_void>(),
                ptr::from_mut(&mut pidfd),
            )
        };
        let clone_error = io::Error::last_os_error();
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut()) };
        if pid == -1 {
            return Err(clone_error);
        }
        // SAFETY: CLONE_PIDFD stored a new descriptor, owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let mut process = Process {
            pid,
            pidfd,
            status: None,
        };
        match args.errno.load(Ordering::Acquire) {
            0 => Ok(process),
            errno => {
                // It has exited already; reap it.
                let _ = process.wait();
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }
}

/// The child's whole life: set up, exec, or report why not and exit.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` the parent keeps alive while it waits.
    let args = unsafe { &*arg.cast::<ChildArgs>() };
    // SAFETY: called once, in the child, with the parent's prepared values.
    let errno = unsafe { exec(args) };
    args.errno.store(errno.max(1), Ordering::Release);
    // SAFETY: _exit ends the child without running anything of the parent's.
    unsafe { libc::_exit(127) }
}

/// Prepares the child and execs the program; returns only on failure, with
/// the error number. Only async-signal-safe system calls: no allocation, no
/// locks, nothing that touches the parent's state beyond `errno`.
unsafe fn exec(args: &ChildArgs) -> c_int {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    };
    // SAFETY (whole function): plain system calls on values the parent
    // prepared; the structs passed are zeroed plain data.
    unsafe {
        // Handlers would run on the parent's memory and mean nothing after
        // exec anyway; SIGPIPE, which the Rust runtime ignores, goes back to
        // its default as std's `Command` does. Other ignored signals stay
        // ignored, as they would through `exec`.
        for signal in 1..=LAST_SIGNAL {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, ptr::null(), &mut old) != 0 {
                continue;
            }
            if signal == libc::SIGPIPE
                || (old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN)
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, ptr::null_mut());
            }
        }
        // Killed with the worker, whatever kills it. It fires when the thread
        // that cloned exits: the handler's, which lives as long as the worker.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
            return errno();
        }
        // The worker may have died before the line above took effect.
        if libc::getppid() != args.parent {
            return libc::ESRCH;
        }
        for (target, &fd) in (0..).zip(args.stdio.iter()) {
            let moved = if fd == target {
                // dup2 onto itself would leave close-on-exec set.
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if moved == -1 {
                return errno();
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, ptr::null_mut());
        libc::execve(args.program, args.argv, args.envp);
        errno()
    }
}

/// A running (or exited, not yet reaped) command. Dropping it kills and
/// reaps it, so no path leaves a command running or a zombie behind.
#[derive(Debug)]
pub struct Process {
    pid: libc::pid_t,
    /// Readable once the process has exited: it sits in `poll` beside the pipes.
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
}

impl Process {
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd as _;
        self.pidfd.as_fd()
    }

    /// The exit status once it has exited, reaping it; `None` while it runs.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.reap(0)? {
                return Ok(status);
            }
        }
    }

    fn reap(&mut self, flags: c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw: c_int = 0;
        loop {
            // SAFETY: waitpid writes the status into `raw` only.
            match unsafe { libc::waitpid(self.pid, &mut raw, flags) } {
                0 => return Ok(None),
                -1 => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                _ => {
                    let status = ExitStatus::from_raw(raw);
                    self.status = Some(status);
                    return Ok(Some(status));
                }
            }
        }
    }

    /// Sends SIGKILL unless it has been reaped: until then its pid cannot be
    /// reused, so the signal reaches no one else.
    pub fn kill(&self) {
        if self.status.is_none() {
            // SAFETY: kill only sends a signal.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        let _ = self.wait();
    }
}

/// Memory for the child's stack, with an inaccessible page below it so that
/// an overflow faults instead of writing over the worker's memory.
struct Stack {
    base: *mut c_void,
    len: usize,
}

const GUARD: usize = 4096;

impl Stack {
    fn new(len: usize) -> io::Result<Self> {
        let total = len + GUARD;
        // SAFETY: a fresh private anonymous mapping, touching nothing else.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self { base, len: total };
        // SAFETY: the first page of the mapping made above.
        if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// Where the stack starts: it grows down from the end of the mapping,
    /// which is page-aligned and so aligned as any ABI asks.
    fn top(&self) -> *mut c_void {
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, used by no child any more: each
        // child is done with it when `clone` returns.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Read as _;
    use std::os::fd::AsFd as _;

    fn strings(words: &[&str]) -> CStrings {
        let mut s = CStrings::default();
        for w in words {
            s.push(OsStr::new(w)).unwrap();
        }
        s
    }

    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both are new and ours.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    #[test]
    fn runs_a_program_with_its_arguments_and_environment() {
        let mut spawner = Spawner::new().unwrap();
        let (mut read, write) = pipe();
        let null = File::open("/dev/null").unwrap();
        let argv = strings(&[
            "sh",
            "-c",
            "printf '%s|%s|%s' \"$1\" \"$A\" \"$B\"",
            "sh",
            "a b",
        ]);
        let env = strings(&["A=1"]);
        let more = strings(&["B=$(x)"]);
        let stdio = Stdio {
            stdin: null.as_fd(),
            stdout: write.as_fd(),
            stderr: null.as_fd(),
        };
        let mut process = spawner
            .spawn(c"/bin/sh", &argv, &env, &more, &stdio)
            .unwrap();
        drop(write);
        let mut out = String::new();
        read.read_to_string(&mut out).unwrap();
        assert_eq!(out, "a b|1|$(x)");
        assert!(process.wait().unwrap().success());
    }

    #[test]
    fn a_program_that_cannot_run_is_the_exec_error() {
        let mut spawner = Spawner::new().unwrap();
        let null = File::open("/dev/null").unwrap();
        let stdio = Stdio {
            stdin: null.as_fd(),
            stdout: null.as_fd(),
            stderr: null.as_fd(),
        };
        let none = CStrings::default();
        let err = spawner
            .spawn(c"/nonexistent/x", &strings(&["x"]), &none, &none, &stdio)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // And the spawner still works afterwards.
        let mut ok = spawner
            .spawn(c"/bin/true", &strings(&["true"]), &none, &none, &stdio)
            .unwrap();
        assert!(ok.wait().unwrap().success());
    }

    #[test]
    fn a_string_with_nul_is_refused() {
        assert_eq!(
            CStrings::default().push(OsStr::from_bytes(b"a\0b")),
            Err(NulError)
        );
    }
}
