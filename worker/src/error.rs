//! The SDK's typed errors.

use protocol::{ProtocolError, WORKER_FD_ENV};
use thiserror::Error;

/// Why [`serve`](crate::serve) or [`Context::params`](crate::Context::params) failed.
#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("not started by a supervisor: {WORKER_FD_ENV} is not set")]
    NotSupervised,
    #[error("{WORKER_FD_ENV} must be a file descriptor number, got {0:?}")]
    BadFdNumber(String),
    #[error("{WORKER_FD_ENV}={fd} is not an open socket: {reason}")]
    BadFd { fd: i32, reason: String },
    #[error("the supervisor socket was already taken by an earlier call to serve")]
    AlreadyServing,
    #[error("the supervisor closed the connection before the handshake finished")]
    Disconnected,
    #[error("cannot set up signal handling: {0}")]
    Signals(#[source] std::io::Error),
    #[error("the worker's init failed: {0}")]
    Init(String),
    #[error("invalid job params: {0}")]
    Params(#[source] serde_json::Error),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}
