//! The worker processes: spawning them (`spawn`), one task per worker that
//! reads and writes its socket and carries out kills (`task`), the pool the
//! run loop talks to them through (`pool`), what tasks report and how frames
//! become events (`update`), and workers' stderr in the log (`stderr`).

mod pool;
mod spawn;
mod stderr;
mod task;
mod update;

pub use pool::WorkerPool;
pub use stderr::{CONTINUED, MAX_LINE};
pub use update::{UpdateKind, WorkerUpdate, frame_events};
