//! Why a chunk's command failed, in the words of its `Failed` answer.

use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;

use thiserror::Error;

use crate::placeholders::RenderError;

#[derive(Debug, Error)]
pub enum ExecError {
    #[error(transparent)]
    Placeholder(#[from] RenderError),
    #[error("cannot read the chunk's lines for the arguments: {0}")]
    ReadLines(#[source] io::Error),
    #[error("argument {0} holds a NUL byte, which no program argument can")]
    NulInArgument(usize),
    #[error("--stdin chunk needs an input file, but this job's source is a range")]
    StdinWithoutFile,
    #[error("cannot open the input file: {0}")]
    OpenInput(#[source] io::Error),
    #[error("cannot run `{program}`: {source}")]
    Spawn { program: String, source: io::Error },
    #[error(
        "cannot run `{program}`: its command line ({words} words, {bytes} bytes) is longer \
         than the system takes, or one word passes 128 KiB (E2BIG); use a smaller `chunk`"
    )]
    TooManyArguments {
        program: String,
        words: usize,
        bytes: usize,
    },
    #[error("`{program}` exited with status {code}{stderr}")]
    Exited {
        program: String,
        code: i32,
        stderr: StderrTail,
    },
    #[error("`{program}` was killed by {}{}{stderr}", signal_name(*.signal), if *.core_dumped { " (core dumped)" } else { "" })]
    Killed {
        program: String,
        signal: i32,
        core_dumped: bool,
        stderr: StderrTail,
    },
    #[error(
        "the command's output passed {limit} bytes, more than one chunk's output may be (64 MiB); use smaller chunks"
    )]
    OutputTooLarge { limit: usize },
    #[error("reading `{program}`'s output: {source}")]
    Output { program: String, source: io::Error },
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("cannot watch `{program}`: {source}")]
    Watch { program: String, source: io::Error },
    /// Never seen by the supervisor: a chunk cancelled while it ran is
    /// answered `Cancelled` whatever the handler returns.
    #[error("cancelled")]
    Cancelled,
}

impl ExecError {
    /// The failure for a command that ended with `status`, not a success.
    pub fn ended(program: &str, status: ExitStatus, stderr: String) -> Self {
        let program = program.to_owned();
        let stderr = StderrTail(stderr);
        match (status.code(), status.signal()) {
            (_, Some(signal)) => Self::Killed {
                program,
                signal,
                core_dumped: status.core_dumped(),
                stderr,
            },
            (Some(code), None) => Self::Exited {
                program,
                code,
                stderr,
            },
            // Stopped or continued: `wait` reports neither.
            (None, None) => Self::Exited {
                program,
                code: -1,
                stderr,
            },
        }
    }
}

/// Feeding the chunk's bytes to the command's stdin went wrong.
#[derive(Debug, Error)]
pub enum InputError {
    #[error("cannot read bytes {start}..{end} of {path}: {source}")]
    Read {
        path: String,
        start: u64,
        end: u64,
        source: io::Error,
    },
    #[error(
        "{path} ends at byte {at}, before the chunk's end at {end}: did it change since the job started?"
    )]
    Short { path: String, at: u64, end: u64 },
    #[error("cannot write the chunk to the command's stdin: {0}")]
    Write(#[source] io::Error),
}

/// The end of the command's stderr, quoted after a failure when there was any.
#[derive(Debug, Default)]
pub struct StderrTail(pub String);

impl fmt::Display for StderrTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "; stderr: {}", self.0)
        }
    }
}

/// `SIGSEGV` for 11, as people and `kill -l` name them.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSTKFLT => "SIGSTKFLT",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        other => return format!("signal {other}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_status_names_the_program_and_quotes_stderr() {
        let status = ExitStatus::from_raw(3 << 8);
        assert_eq!(
            ExecError::ended("/bin/sh", status, "boom".into()).to_string(),
            "`/bin/sh` exited with status 3; stderr: boom"
        );
        assert_eq!(
            ExecError::ended("/bin/sh", status, String::new()).to_string(),
            "`/bin/sh` exited with status 3"
        );
    }

    #[test]
    fn a_signal_is_named() {
        let status = ExitStatus::from_raw(libc::SIGSEGV);
        assert_eq!(
            ExecError::ended("/x", status, String::new()).to_string(),
            "`/x` was killed by SIGSEGV"
        );
        let status = ExitStatus::from_raw(libc::SIGABRT | 0x80);
        assert_eq!(
            ExecError::ended("/x", status, "abort".into()).to_string(),
            "`/x` was killed by SIGABRT (core dumped); stderr: abort"
        );
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(40), "signal 40");
    }
}
