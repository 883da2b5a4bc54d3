//! What workers leave behind: the supervisor is the child subreaper of its
//! workers' descendants, so a process a worker started that outlived it
//! (one that left the worker's process group with `setsid`, say) becomes the
//! supervisor's child instead of init's, and is killed and reaped here.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Mutex, PoisonError};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::resources::{children, process_name};

/// Every worker this process has started and not yet reaped: its own
/// children, which a sweep leaves to the tasks that wait for them. (One
/// process may hold several runs, as a test does.)
static WORKERS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// A worker was started: it is no orphan.
pub fn started(pid: u32) {
    WORKERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(pid);
}

/// A worker was reaped.
pub fn reaped(pid: u32) {
    WORKERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&pid);
}

/// Makes this process the subreaper of everything it starts: orphans among
/// its descendants are handed to it rather than to init.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with these arguments only sets a flag of this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Kills every child that is not a worker, with the process group it leads,
/// and reaps those already dead. Returns the pid and name of each it killed.
/// Workers are left alone: their tasks reap them.
pub fn sweep() -> Vec<(u32, String)> {
    let workers = WORKERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut killed = Vec::new();
    for &pid in children().difference(&workers) {
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        let child = Pid::from_raw(raw);
        // Reaped if it has died already (a zombie waits for us); otherwise
        // killed now and reaped at a later sweep.
        if let Ok(WaitStatus::StillAlive) = waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            let name = process_name(pid);
            let _ = killpg(child, Signal::SIGKILL);
            let _ = kill(child, Signal::SIGKILL);
            killed.push((pid, name));
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_listed_from_every_thread() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        assert!(children().contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
