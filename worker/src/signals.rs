//! Signal dispositions: the supervisor, not the terminal, decides when a worker
//! stops, so Ctrl-C must not end a chunk half way.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Makes SIGINT harmless for the rest of the process's life. A handler that
/// only sets a flag, rather than `SIG_IGN`, so programs the handler starts get
/// the default disposition back when they exec.
pub(crate) fn ignore_interrupt() -> io::Result<()> {
    signal_hook::flag::register(
        signal_hook::consts::SIGINT,
        Arc::new(AtomicBool::new(false)),
    )
    .map(drop)
}
