//! Worker SDK: turn a Rust function into a worker process for the supervisor.
//!
//! The supervisor starts the worker with its end of a private Unix socket
//! (named by [`protocol::WORKER_FD_ENV`]); [`serve`] takes it over, shakes
//! hands, and calls the handler once per assigned chunk until the supervisor
//! says stop. Cancellation arrives while a handler runs and is visible through
//! [`Context::is_cancelled`].
//!
//! ```no_run
//! use std::io::Write;
//!
//! #[derive(serde::Deserialize)]
//! struct Params {
//!     scale: u64,
//! }
//!
//! fn main() -> Result<(), worker::WorkerError> {
//!     worker::serve(|ctx, chunk, out| {
//!         let params: Params = ctx.params().map_err(|e| e.to_string())?;
//!         let sum: u64 = (chunk.start..chunk.end).map(|i| i * params.scale).sum();
//!         write!(out, "{sum}").map_err(|e| e.to_string())
//!     })
//! }
//! ```
//!
//! [`serve_with_init`] adds a setup step that reads the params once per
//! worker (a model, a lookup table) and hands its result to every chunk.
//!
//! The `squares-worker` binary in this package is the reference worker; its
//! [`faults`] switches make it crash, hang or misbehave on chosen chunks, and
//! [`hostile`] is the serve loop it lies on the wire with.

mod answers;
mod context;
mod error;
pub mod faults;
pub mod hostile;
mod inbox;
mod reader;
mod serve;
mod setup;
mod signals;
mod socket;

pub use context::{Chunk, Context};
pub use error::WorkerError;
pub use reader::on_supervisor_lost;
pub use serve::serve;
pub use setup::serve_with_init;
