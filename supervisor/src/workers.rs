//! The worker processes: spawning them (`spawn`), one task per worker that
//! reads and writes its socket and carries out kills (`task`), the pool the
//! run loop talks to them through (`pool`), what tasks report and how frames
//! become events (`update`), workers' stderr in the log (`stderr`), and
//! `check --start`'s one worker started and stopped (`trial`), and what
//! workers leave behind, killed and reaped (`orphans`).

mod orphans;
mod pool;
mod spawn;
mod stderr;
mod task;
mod trial;
mod update;

pub use orphans::{become_subreaper, sweep as sweep_orphans};
pub use pool::WorkerPool;
pub use stderr::{CONTINUED, MAX_LINE};
pub use trial::{Trial, try_start};
pub use update::{UpdateKind, WorkerUpdate, frame_events};
