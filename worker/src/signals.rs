//! Signal dispositions: the supervisor, not the terminal or the service
//! manager, decides when a worker stops. Ctrl-C and a SIGTERM sent to every
//! process of a service must not end a chunk half way, while the supervisor's
//! own SIGTERM (its kill ladder for a hung or broken worker) ends the worker
//! at once.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;

/// Makes SIGINT harmless for the rest of the process's life. A handler that
/// only sets a flag, rather than `SIG_IGN`, so programs the handler starts get
/// the default disposition back when they exec.
pub(crate) fn ignore_interrupt() -> io::Result<()> {
    signal_hook::flag::register(SIGINT, Arc::new(AtomicBool::new(false))).map(drop)
}

/// True while [`serve`](crate::serve) runs; outside it every SIGTERM acts as
/// if no handler were installed.
static SERVING: AtomicBool = AtomicBool::new(false);

/// Marks the end of serving when dropped.
#[must_use = "serving ends when the guard is dropped"]
pub(crate) struct Serving(());

impl Drop for Serving {
    fn drop(&mut self) {
        SERVING.store(false, Ordering::SeqCst);
    }
}

/// From here until the returned guard is dropped, a SIGTERM from the parent
/// process (the supervisor) ends the process as the default action would
/// (killed by SIGTERM), and one from anyone else is ignored with a line on
/// stderr. After the guard is dropped any SIGTERM ends the process again.
///
/// A thread reads the signals, so the decision is not made in a signal
/// handler. Call once per process: a second call would race the first thread.
pub(crate) fn obey_only_the_parent() -> io::Result<Serving> {
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGTERM])?;
    let name = program_name(std::env::args_os().next());
    SERVING.store(true, Ordering::SeqCst);
    let serving = Serving(());
    thread::Builder::new()
        .name("sigterm".into())
        .spawn(move || {
            for origin in signals.forever() {
                let sender = origin.process.map(|p| p.pid);
                if !SERVING.load(Ordering::SeqCst) || is_parent(sender) {
                    terminate();
                }
                let from = match sender {
                    Some(pid) => format!("pid {pid}"),
                    None => "an unknown sender".to_owned(),
                };
                // One write, so the line is not torn by a handler's own output.
                let line = format!(
                    "{name}: ignoring SIGTERM from {from}; the supervisor decides when workers stop\n"
                );
                let _ = io::stderr().write_all(line.as_bytes());
            }
        })?;
    Ok(serving)
}

/// The parent is read at signal time, not remembered: should the supervisor
/// die, the worker is re-parented, and whoever then owns it may end it.
fn is_parent(sender: Option<libc::pid_t>) -> bool {
    let parent = std::os::unix::process::parent_id();
    sender.is_some_and(|pid| u32::try_from(pid).is_ok_and(|pid| pid == parent))
}

/// Restores the default disposition and raises SIGTERM again, so the process
/// ends killed by SIGTERM exactly as if no handler had been installed
/// (status 143 in a shell's `$?`).
fn terminate() -> ! {
    let _ = signal_hook::low_level::emulate_default_handler(SIGTERM);
    // Unreachable unless another thread put a handler back in between.
    std::process::abort()
}

/// The name messages start with: the file name the process was started as.
fn program_name(argv0: Option<OsString>) -> String {
    argv0
        .as_deref()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_named_after_the_program_file() {
        let name = |s: &str| program_name(Some(s.into()));
        assert_eq!(name("/usr/local/bin/squares-worker"), "squares-worker");
        assert_eq!(name("squares-worker"), "squares-worker");
        assert_eq!(name(""), "worker");
        assert_eq!(program_name(None), "worker");
    }

    #[test]
    fn only_the_parent_is_the_parent() {
        let parent = libc::pid_t::try_from(std::os::unix::process::parent_id()).unwrap();
        assert!(is_parent(Some(parent)));
        let me = libc::pid_t::try_from(std::process::id()).unwrap();
        assert!(!is_parent(Some(me)));
        assert!(!is_parent(None));
    }
}
