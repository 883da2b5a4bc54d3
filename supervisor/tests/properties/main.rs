//! Properties of what the supervisor reads from disk, over generated and
//! damaged input: the journal an earlier run left (read back through
//! `journal::inspect`, with and without its output) and the job file
//! (`config::load`). No input, however broken, makes either panic or reserve
//! memory for a length that merely appears in the bytes, and what they make
//! of valid input is exact.
//!
//! The case counts are kept small for CI; `PROPTEST_CASES` raises every one
//! of them (scripts/fuzz runs each property a million times).

mod job_file;
mod journal;
mod peak;

use proptest::test_runner::Config;

/// `cases` unless `PROPTEST_CASES` says otherwise.
pub fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        ..Config::default()
    }
}

/// A folder for a test thread's files: in memory where Linux offers it, as
/// every case rewrites them (a disk makes that a thousand times slower).
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}
