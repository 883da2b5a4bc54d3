//! The wire protocol between the supervisor and its workers.
//!
//! Layers, bottom up: [`frame`] cuts a byte stream into length-prefixed frames
//! (no I/O), [`codec`] turns frame payloads into messages and back (the one
//! place that knows bincode), [`connection`] reads and writes frames on sockets.
//! PROTOCOL.md beside this crate spells the format out for other languages.

pub mod codec;
pub mod connection;
pub mod error;
pub mod frame;
pub mod message;

pub use error::ProtocolError;
pub use message::{PROTOCOL_VERSION, SupervisorMessage, WorkerMessage};

/// The environment variable that tells a worker which inherited file
/// descriptor is its end of the socket to the supervisor.
pub const WORKER_FD_ENV: &str = "SUPERVISOR_WORKER_FD";
