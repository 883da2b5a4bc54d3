//! `exec-worker`: a worker that runs a command once per chunk, with the
//! chunk's values in its arguments and, on request, the chunk's bytes on its
//! stdin; the command's stdout is the chunk's output.
//!
//! The supervisor starts it for a job with `[worker] exec = [...]`, as
//! `exec-worker [--stdin chunk|none] -- PROGRAM ARG...`, PROGRAM already an
//! absolute path.

mod command;
mod error;
mod placeholders;
mod stderr;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser};

use crate::command::{Exec, StdinMode};
use crate::placeholders::Template;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Runs a command for each chunk the supervisor assigns; its stdout is the chunk's output",
    override_usage = "exec-worker [--stdin chunk|none] -- PROGRAM [ARG]...",
    after_help = "\
Placeholders in the arguments (not in PROGRAM), anywhere inside a word:
  {index} {start} {end} {attempt}   the chunk's values
  {line}                            the chunk's first item: its first line's number for a lines source
  {path} {offset} {length}          the input file, start, end - start (file and lines sources only)
Other text in braces is left as it is. Each word stays one argument; there is no shell.
The command also gets SUPERVISOR_CHUNK_INDEX and SUPERVISOR_CHUNK_ATTEMPT.
A status other than 0, or a signal, fails the chunk, quoting the end of its stderr."
)]
struct Args {
    /// What the command reads on stdin: the chunk's bytes of the input file,
    /// or nothing (/dev/null).
    #[arg(long, value_enum, value_name = "WHAT", default_value_t = StdinMode::None)]
    stdin: StdinMode,
    /// The program to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some((program, rest)) = args.command.split_first().filter(|(p, _)| !p.is_empty()) else {
        Args::command()
            .error(
                clap::error::ErrorKind::InvalidValue,
                "the program after `--` must not be empty",
            )
            .exit()
    };
    let mut exec = Exec::new(program.clone(), Template::parse(rest), args.stdin);
    match worker::serve(|ctx, chunk, out| exec.run(ctx, chunk, out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("exec-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
