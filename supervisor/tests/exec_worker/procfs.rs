//! The processes exec-worker starts, as /proc shows them, and waiting for
//! them to come and go.

use std::thread;
use std::time::{Duration, Instant};

use crate::harness::PATIENCE;

/// A process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
}

/// `None` once the process is gone.
pub fn process(pid: u32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may itself hold spaces or parentheses.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Process {
        pid,
        comm,
        state,
        ppid,
        pgrp,
    })
}

/// The live children of `parent`.
pub fn children(parent: u32) -> Vec<Process> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(p) = process(pid).filter(|p| p.ppid == parent) {
            found.push(p);
        }
    }
    found
}

/// Polls `what` until it returns `Some`, for up to [`PATIENCE`].
pub fn eventually<T>(description: &str, mut what: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = what() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "not within {PATIENCE:?}: {description}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// True once `pid` is gone or a zombie: dead either way, whoever reaps it.
pub fn is_dead(pid: u32) -> bool {
    process(pid).is_none_or(|p| p.state == 'Z')
}
