//! `supervisor merge JOB.toml`: the outputs of a job's N shards combined into
//! the job's own output, failed file and journal, exactly as one run of the
//! whole job would have left them, once the shards' journals prove that
//! every chunk is there exactly once.
//!
//! Which shards: by name beside the job's output and state folder
//! (`find.rs`). What each must prove (`prove.rs`): that it exists, is not
//! running, ran this very job as that shard (its journal's fingerprint), and
//! settled every chunk of its block; refusals name the shard and write
//! nothing. Then, shard after shard in index order (`combine.rs`), a table
//! of where each chunk's record lies in the shard's output (`table.rs`,
//! 32 bytes a chunk, one shard at a time) drives copies in index order
//! (`copy.rs`: in the kernel, contiguous records in one go), and the failed
//! chunks' lines follow (`failed.rs`). Everything is written beside its
//! target and renamed into place, the job's journal last.

mod combine;
mod copy;
mod error;
mod failed;
mod find;
mod prove;
mod table;

pub use combine::{MergeOptions, Merged, merge};
pub use error::MergeError;
