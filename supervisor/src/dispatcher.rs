//! The dispatcher: the single owner of a run's state, fed events and
//! answering through effects, tested without processes.
//!
//! - [`types`]: the words it shares with the world: [`Event`] in, [`Effects`]
//!   and [`RunEvent`] out, [`Outcome`] and [`Counts`] at the end.
//! - [`settings`]: the knobs of a run.
//! - `state`: the [`Dispatcher`] itself: `handle` and `advance`.
//! - `queue`: the work not yet done (retries, the skip set, the window).
//! - `slots`: the life of a worker slot (kill, stop, exit, backoff).
//! - `stopping`: drain, cancel, end and abort.
//! - `reorder`: results held back until their turn in index order.

mod queue;
mod reorder;
pub mod settings;
mod slots;
mod state;
mod stopping;
pub mod types;

#[cfg(test)]
mod tests;

pub use reorder::Spill;
pub use settings::Settings;
pub use state::Dispatcher;
pub use types::{
    AttemptError, ChunkFailure, Counts, Effects, Event, Generation, KillCause, LAST_WORDS, Outcome,
    ResultMeta, RunEvent, humanize,
};
