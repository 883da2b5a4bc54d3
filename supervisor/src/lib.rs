//! The supervisor as a library: configuration, the dispatcher state machine,
//! and the runtime that connects it to processes, sockets and files.

pub mod chunks;
pub mod cli;
pub mod config;
pub mod dispatcher;
pub mod edges;
pub mod generate;
pub mod journal;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod plan;
pub mod process;
pub mod progress;
pub mod reorder;
pub mod report;
pub mod resume;
pub mod run;
pub mod slot;
pub mod worker_log;
