//! The supervisor as a library: configuration, the dispatcher state machine,
//! and the edges that connect it to processes, sockets and files.
//! ARCHITECTURE.md at the repository's root is the map.

pub mod assess;
pub mod chunks;
pub mod cli;
pub mod config;
pub mod descriptors;
pub mod dispatcher;
pub mod durable;
pub mod edges;
pub mod file_lock;
pub mod generate;
pub mod journal;
pub mod logging;
pub mod merge;
pub mod observers;
pub mod oneliner;
pub mod plan;
pub mod resources;
pub mod run;
pub mod shard;
pub mod signals;
pub mod store;
pub mod tune;
pub mod workers;
