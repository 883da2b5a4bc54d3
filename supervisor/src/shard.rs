//! One job run as N shards: which block of chunk indices shard I of N runs
//! (`spec.rs`), where its I/N came from, the command line or the array task
//! a scheduler started (`scheduler.rs`), and where a shard's output and state
//! live, so that `merge` finds them again (`names.rs`).

mod names;
mod scheduler;
mod spec;

pub use names::{FoundShards, ShardFiles, find_shards, for_shard};
pub use scheduler::{Scheduler, choose, detect};
pub use spec::{JobShard, Shard};
