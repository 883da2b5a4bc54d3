//! `exec-worker`: a worker that runs a command once per chunk, with the
//! chunk's values in its arguments and, on request, the chunk's bytes on its
//! stdin; the command's stdout is the chunk's output.
//!
//! The supervisor starts it for a job with `[worker] exec = [...]`, as
//! `exec-worker [--stdin chunk|none] [--success-exit N,...] -- PROGRAM ARG...`,
//! PROGRAM already an absolute path.

mod command;
mod contain;
mod error;
mod feed;
mod items;
mod pace;
mod pipes;
mod placeholders;
mod spawn;
mod stderr;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser};

use crate::command::{Exec, StdinMode};
use crate::placeholders::Template;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Runs a command for each chunk the supervisor assigns; its stdout is the chunk's output",
    override_usage = "exec-worker [--stdin chunk|none] [--success-exit N,...] -- PROGRAM [ARG]...",
    after_help = "\
Placeholders in the arguments (not in PROGRAM), anywhere inside a word:
  {index} {start} {end} {attempt}   the chunk's values
  {first_line}                      the number of the chunk's first line, from 0 (lines source)
  {path} {offset} {length}          the input file, start, end - start (file and lines sources only)
  {item}                            the text of the chunk's one line, without its newline (lines source, 1-line chunks)
  {items}                           the word is repeated for each line of the chunk, with its text here (lines source)
Other text in braces is left as it is. Each word stays one argument ({items} words one per line);
there is no shell. The command also gets SUPERVISOR_CHUNK_INDEX and SUPERVISOR_CHUNK_ATTEMPT.
A status not in --success-exit, or a signal, fails the chunk, quoting the end of its stderr."
)]
struct Args {
    /// What the command reads on stdin: the chunk's bytes of the input file,
    /// or nothing (/dev/null).
    #[arg(long, value_enum, value_name = "WHAT", default_value_t = StdinMode::None)]
    stdin: StdinMode,
    /// Exit statuses that count as success, e.g. 0,1 for grep.
    #[arg(
        long,
        value_name = "N,...",
        value_delimiter = ',',
        default_value = "0",
        value_parser = clap::value_parser!(u8)
    )]
    success_exit: Vec<u8>,
    /// The program to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let usage = |message: String| -> ! {
        Args::command()
            .error(clap::error::ErrorKind::InvalidValue, message)
            .exit()
    };
    let Some((program, rest)) = args.command.split_first().filter(|(p, _)| !p.is_empty()) else {
        usage("the program after `--` must not be empty".to_owned())
    };
    let template = Template::parse(rest).unwrap_or_else(|e| usage(e.to_string()));
    let success = args
        .success_exit
        .iter()
        .map(|&code| i32::from(code))
        .collect();
    ensure_standard_descriptors();
    if let Err(e) = contain::start() {
        eprintln!("exec-worker: cannot keep track of what commands start: {e}");
        return ExitCode::FAILURE;
    }
    let program = on_path(program);
    let mut exec = match Exec::new(program.as_os_str(), template, args.stdin, success) {
        Ok(exec) => exec,
        Err(e) => {
            eprintln!("exec-worker: cannot prepare to run commands: {e}");
            return ExitCode::FAILURE;
        }
    };
    match worker::serve(|ctx, chunk, out| exec.run(ctx, chunk, out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("exec-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A bare program name looked up on PATH, as a shell would; a name with a
/// slash, or one not found (its chunks then fail saying so), as it is.
fn on_path(program: &OsStr) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    if program.as_bytes().contains(&b'/') {
        return PathBuf::from(program);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| {
            path.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| Path::new(program).to_path_buf())
}

/// Opens /dev/null on any of descriptors 0, 1 and 2 that is closed, so the
/// pipes made for commands never get those numbers: moving them into place
/// for a command would then overwrite one another.
fn ensure_standard_descriptors() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only asks about the descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // SAFETY: open with a constant path; the lowest free number,
            // which is `fd`, is taken and deliberately kept for the process's life.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}
