//! Everything that reports on a run, fed the dispatcher's [`RunEvent`]s and
//! never feeding anything back: log lines (`log`), the progress bar
//! (`progress`), the run report (`report`), Prometheus metrics (`metrics`),
//! systemd's notifications (`notify`), what is sampled about once a second
//! (`heartbeat`), and [`Observers`], which hands each event to all of them
//! (`fanout`).
//!
//! [`RunEvent`]: crate::dispatcher::RunEvent

mod fanout;
mod heartbeat;
mod log;
pub mod metrics;
pub mod notify;
pub mod progress;
pub mod report;

pub use fanout::Observers;
pub use heartbeat::Snapshot;
