//! A one-liner and the job file `--print-job` prints for it are one job:
//! loaded, they are equal in every field but where they came from, and
//! their fingerprints are the same, so either resumes the other's run.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use supervisor::cli::Cli;
use supervisor::config;
use supervisor::journal::fingerprint;
use supervisor::oneliner::{ORIGIN, load_one_liner};

/// The exec host is looked for beside the running binary, then on PATH;
/// this test's binary has none beside it.
fn find_the_exec_host() {
    let host = Path::new(env!("CARGO_BIN_EXE_exec-worker"));
    let path = std::env::join_paths(std::iter::once(host.parent().unwrap().to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    // SAFETY: the only test of this binary sets it first, before it starts
    // any thread of its own.
    unsafe { std::env::set_var("PATH", path) };
}

fn folder() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap();
    std::fs::write(path.join("in.txt"), "alpha\nbeta gamma\n'delta'\n").unwrap();
    std::fs::write(path.join("lines.txt"), "alpha\n$(touch marker)\n\"x y\"\n").unwrap();
    (dir, path)
}

#[test]
fn a_one_liner_and_its_printed_job_file_load_into_one_job() {
    find_the_exec_host();
    let (_dir, dir) = folder();
    let cases: [&[&str]; 6] = [
        &[
            "-j", "3", "--range", "0..1000", "--chunk", "70", "--name", "r", "--output", "r.out",
            "--", "printf", "%s-%s\n", "{start}", "{end}",
        ],
        &[
            "--file",
            "in.txt",
            "--chunk",
            "64KiB",
            "--delimiter",
            "\\n",
            "--output",
            "up.txt",
            "--max-failed",
            "5%",
            "--",
            "tr",
            "a-z",
            "A-Z",
        ],
        &[
            "--lines",
            "lines.txt",
            "--success-exit",
            "0,1",
            "--timeout",
            "90s",
            "--retries",
            "0",
            "--format",
            "jsonl",
            "--order",
            "completion",
            "--output",
            "found.jsonl",
            "--",
            "grep",
            "-F",
            "{item}",
            "in.txt",
        ],
        &[
            "--lines",
            "lines.txt",
            "--chunk",
            "2",
            "--stdin",
            "chunk",
            "--",
            "wc",
            "-l",
        ],
        &["--lines", "lines.txt", "--", "echo", "it's", "{item}"],
        &[
            "--file",
            "in.txt",
            "--stdin",
            "none",
            "--delimiter",
            ";",
            "--",
            "head",
            "-c",
            "{length}",
            "{path}",
        ],
    ];
    for words in cases {
        let cli = Cli::try_parse_from(std::iter::once("supervisor").chain(words.iter().copied()))
            .unwrap_or_else(|e| panic!("{words:?}: {e}"));
        let loaded = load_one_liner(&cli.run.job, cli.run.workers, &dir)
            .unwrap_or_else(|e| panic!("{words:?}: {e}"));
        let one_liner = loaded.one_liner.expect("flags make a one-liner");
        assert_eq!(loaded.job.file, Path::new(ORIGIN));
        let file = dir.join("printed.toml");
        std::fs::write(&file, one_liner.printed()).unwrap();
        // No `--workers` here: what `-j` said must be in the file.
        let from_file = config::load(&file, None)
            .unwrap_or_else(|e| panic!("{words:?}: the printed job file: {e}"));
        assert_eq!(
            fingerprint(&loaded.job),
            fingerprint(&from_file),
            "{words:?}"
        );
        let mut from_flags = loaded.job;
        from_flags.file = file;
        assert_eq!(from_flags, from_file, "{words:?}");
    }
}
