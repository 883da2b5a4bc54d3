//! The job file: TOML read into raw structs, then validated into a [`Job`],
//! with every error pointing at a file, line, column and key.

pub mod defaults;
mod error;
mod exec;
mod job;
mod paths;
mod places;
mod raw;
mod size;
mod source;
mod validate;
mod worker;

pub use error::ConfigError;
pub use job::{
    AutoChunk, InputFile, Job, MaxFailed, Order, OutputFormat, OutputPath, OutputSpec,
    RestartPolicy, Source, SupervisorSpec, WorkerSpec,
};
pub use validate::load;
