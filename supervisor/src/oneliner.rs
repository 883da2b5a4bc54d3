//! One-liners: a job named by command-line flags instead of a job file, run
//! as exactly the job its job file would be. The flags become that file's
//! TOML (`text.rs`), which loads through the job file's own validation
//! (`config::load_text`); its errors are told in the flags' words
//! (`blame.rs`); `load.rs` gives the command line's job, from a file or
//! flags, and where an unnamed one-liner keeps its state.

mod blame;
mod load;
mod text;

pub use load::{Loaded, OneLiner, TemporaryState, load, load_one_liner};
pub use text::{JobFileText, ORIGIN, job_file};
