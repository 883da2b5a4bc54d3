//! Nothing a command starts outlives its chunk: this host is the child
//! subreaper of everything its commands start, so a process a command left
//! behind (in a session of its own with `setsid`, say, where a process group
//! kill does not reach) becomes the host's child when the command exits, and
//! is killed and reaped before the next chunk; and when the supervisor is
//! gone, even killed with SIGKILL, the host ends every descendant before it
//! ends itself.

use std::io::{self, Write as _};

use supervisor::resources::{children, process_name};

/// A tree of leftovers is ended one generation per pass (see
/// [`end_descendants`]); past this many passes something forks faster than
/// it is killed, and the host gives up rather than spin.
const MAX_PASSES: usize = 1000;

/// Makes this process the subreaper of its commands' descendants, and sets
/// up the end of them all for when the supervisor goes away.
///
/// The supervisor starts workers with SIGKILL as their parent-death signal,
/// which would end this host before it could end anything. It becomes
/// SIGCONT instead: harmless, but it wakes a stopped host, whose reader then
/// sees the supervisor's socket close and runs the hook set here.
pub fn start() -> io::Result<()> {
    // SAFETY: prctl with these arguments only sets flags of this process.
    unsafe {
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == -1 {
            return Err(io::Error::last_os_error());
        }
        let parent = libc::getppid();
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGCONT as libc::c_ulong) == -1 {
            return Err(io::Error::last_os_error());
        }
        // Until the line above, the supervisor's death would have killed this
        // process; a new parent now means it died in between.
        if libc::getppid() != parent {
            return Err(io::Error::other("the supervisor is gone"));
        }
    }
    worker::on_supervisor_lost(|| {
        let ended = end_descendants();
        if !ended.is_empty() {
            // Nobody may be reading stderr any more: a failed write is no reason
            // to stop (`eprintln!` would panic on it).
            let _ = writeln!(
                io::stderr(),
                "exec-worker: the supervisor is gone; ended {}",
                describe(&ended)
            );
        }
    });
    Ok(())
}

/// Ends whatever the last command left running: call it once the command
/// has been reaped. Returns a description of what was ended, if anything.
pub fn end_leftovers() -> Option<String> {
    let ended = end_descendants();
    (!ended.is_empty()).then(|| describe(&ended))
}

/// Kills and reaps every descendant of this process; returns the pid and
/// name of each.
///
/// Only direct children are signalled: their pids stay theirs until they are
/// reaped here, so no other process can be hit by a pid reused meanwhile.
/// Killing a child hands its own children to this subreaper, which the next
/// pass kills in turn, until none is left.
fn end_descendants() -> Vec<(i32, String)> {
    let mut ended = Vec::new();
    for _ in 0..MAX_PASSES {
        let children: Vec<i32> = children()
            .into_iter()
            .filter_map(|pid| i32::try_from(pid).ok())
            .collect();
        if children.is_empty() {
            return ended;
        }
        for &pid in &children {
            let name = process_name(pid.unsigned_abs());
            // SAFETY: `pid` is an unreaped child of this process: it names
            // that process and no other until the wait below.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            ended.push((pid, name));
        }
        for &pid in &children {
            wait_for(pid);
        }
    }
    let _ = writeln!(
        io::stderr(),
        "exec-worker: processes left by a command kept multiplying; gave up after {MAX_PASSES} \
         rounds of ending them"
    );
    ended
}

/// Reaps the child `pid`, retrying when a signal interrupts the wait.
fn wait_for(pid: i32) {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into `status` only.
        let waited = unsafe { libc::waitpid(pid, &raw mut status, libc::__WALL) };
        if waited != -1 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// "2 processes (pid 41 sleep, pid 42 sh)", the first few named.
fn describe(ended: &[(i32, String)]) -> String {
    const NAMED: usize = 4;
    let mut text = match ended.len() {
        1 => "1 process (".to_owned(),
        n => format!("{n} processes ("),
    };
    for (n, (pid, name)) in ended.iter().take(NAMED).enumerate() {
        if n > 0 {
            text.push_str(", ");
        }
        text.push_str(&format!("pid {pid} {name}"));
    }
    if ended.len() > NAMED {
        text.push_str(", …");
    }
    text.push(')');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_name_the_first_few() {
        assert_eq!(describe(&[(7, "sleep".into())]), "1 process (pid 7 sleep)");
        let many: Vec<_> = (1..=6).map(|pid| (pid, "x".to_owned())).collect();
        assert_eq!(
            describe(&many),
            "6 processes (pid 1 x, pid 2 x, pid 3 x, pid 4 x, …)"
        );
    }
}
