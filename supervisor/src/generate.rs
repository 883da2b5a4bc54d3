//! Shell completions and the man page, both made from the command line's
//! clap definition so they never drift from what the parser accepts.

use std::io::{self, Write};

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::Cli;

/// Writes the completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    // clap_complete panics on a failed write; into memory it cannot fail,
    // and the real write's error reaches the caller.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    out.write_all(&script)
}

/// Writes the man page (roff) of the top-level command; its subcommands are
/// listed in it.
pub fn man_page(out: &mut dyn Write) -> io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(shell: Shell) -> String {
        let mut out = Vec::new();
        completions(shell, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn completions_know_the_options_and_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = completion(shell);
            // Fish names long options without their dashes, after `-l`.
            let long = |name: &str| match shell {
                Shell::Fish => format!("-l {name}"),
                _ => format!("--{name}"),
            };
            for option in [
                "workers",
                "fresh",
                "retry-failed",
                "range",
                "lines",
                "pipe",
                "chunk",
                "success-exit",
                "print-job",
            ] {
                assert!(script.contains(&long(option)), "{shell}: no --{option}");
            }
            assert!(script.contains("check"), "{shell}: no check");
        }
    }

    #[test]
    fn the_man_page_is_roff_with_the_options() {
        let mut out = Vec::new();
        man_page(&mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        // roff's own preamble (defining the apostrophe string, `.ie`/`.el`)
        // comes before the title.
        let first = page
            .lines()
            .find(|line| !line.starts_with(".ie ") && !line.starts_with(".el "))
            .unwrap();
        assert!(first.starts_with(".TH supervisor 1"), "{first}");
        // roff escapes the dashes of options.
        let plain = page.replace("\\-", "-");
        assert!(plain.contains("--retry-failed"));
        assert!(plain.contains("--workers"));
        assert!(plain.contains("check"));
        for one_liner in ["--range", "--file", "--pipe", "--max-failed", "--print-job"] {
            assert!(plain.contains(one_liner), "no {one_liner}");
        }
        assert!(plain.contains("-- COMMAND [ARG]..."), "no one-liner usage");
    }

    #[test]
    fn a_failed_write_is_an_error() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(completions(Shell::Bash, &mut Full).is_err());
        assert!(man_page(&mut Full).is_err());
    }
}
