//! The protocol's typed errors.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: u64, max: u32 },
    #[error("malformed message: {0}")]
    Decode(String),
    #[error("message has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("cannot encode message: {0}")]
    Encode(String),
    #[error("connection closed in the middle of a frame")]
    TornFrame,
    #[error(
        "protocol version mismatch: the worker speaks version {worker}, the supervisor version {supervisor}"
    )]
    VersionMismatch { worker: u32, supervisor: u32 },
    #[error("unexpected message: {0}")]
    Unexpected(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
