//! File descriptors: what a run needs (a few per worker), the soft limit
//! raised to the hard one at start, and a run that would still run out
//! refused before anything starts, instead of every worker's spawn failing
//! as if it had crashed.

use std::io;

/// A worker holds four in the supervisor: its socket, the pipes of its
/// stdout and stderr, and the pidfd it is reaped by.
pub const PER_WORKER: u64 = 4;

/// Everything else, with room to spare: stdio, the runtime's epoll and
/// eventfd, the lock, journal, output, failed file and spill file, the input,
/// the metrics listener and its connections, a report being written, /proc
/// reads, and the descriptors one spawn holds for a moment (the worker's end
/// of its socket and pipes, /dev/null, the exec-error pipe).
pub const BASE: u64 = 64;

/// Descriptors a run with `workers` workers may hold at once.
pub fn needed(workers: usize) -> u64 {
    BASE + PER_WORKER * workers as u64
}

/// A run that cannot get the descriptors it needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{workers} workers need about {needed} open files, but the limit is {soft} \
     (hard limit {hard}); raise it (ulimit -n {needed}, or LimitNOFILE= for a systemd \
     service) or run fewer workers"
)]
pub struct TooFew {
    pub workers: usize,
    pub needed: u64,
    pub soft: u64,
    pub hard: u64,
}

/// The open-file limit before and after [`ensure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub was: u64,
    pub now: u64,
}

/// Raises this process's soft limit on open files to its hard limit (what
/// an unprivileged process may do), and checks that a run with `workers`
/// workers fits under it. Workers inherit the raised limit.
///
/// # Errors
///
/// [`TooFew`] when even the hard limit is below what the run needs.
pub fn ensure(workers: usize) -> Result<Raised, TooFew> {
    let needed = needed(workers);
    let (was, hard) = limit().unwrap_or((u64::MAX, u64::MAX));
    let mut now = was;
    if was < hard && raise_to(hard).is_ok() {
        now = hard;
    } else if was < needed.min(hard) && raise_to(needed.min(hard)).is_ok() {
        // Some kernels refuse a soft limit past their own ceiling
        // (fs.nr_open) although the hard limit says infinity.
        now = needed.min(hard);
    }
    if now < needed {
        return Err(TooFew {
            workers,
            needed,
            soft: now,
            hard,
        });
    }
    Ok(Raised { was, now })
}

/// The soft and hard limits on open files.
fn limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((as_count(limit.rlim_cur), as_count(limit.rlim_max)))
}

#[allow(
    clippy::unnecessary_cast,
    reason = "rlim_t is u64 on 64-bit Linux, but not on every target"
)]
fn as_count(value: libc::rlim_t) -> u64 {
    if value == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        value as u64
    }
}

#[allow(
    clippy::unnecessary_cast,
    reason = "rlim_t is u64 on 64-bit Linux, but not on every target"
)]
fn as_limit(count: u64) -> libc::rlim_t {
    if count == u64::MAX {
        libc::RLIM_INFINITY
    } else {
        count as libc::rlim_t
    }
}

fn raise_to(soft: u64) -> io::Result<()> {
    let (_, hard) = limit()?;
    let limit = libc::rlimit {
        rlim_cur: as_limit(soft),
        rlim_max: as_limit(hard),
    };
    // SAFETY: setrlimit reads the struct it is given and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_needs_a_base_and_a_few_per_worker() {
        assert_eq!(needed(0), BASE);
        assert_eq!(needed(100), BASE + 400);
    }

    #[test]
    fn the_refusal_says_how_many_are_needed() {
        let error = TooFew {
            workers: 100,
            needed: 464,
            soft: 64,
            hard: 64,
        };
        let text = error.to_string();
        assert!(
            text.contains("100 workers need about 464 open files"),
            "{text}"
        );
        assert!(text.contains("ulimit -n 464"), "{text}");
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        // A run of one worker fits under any limit a test runs with.
        let raised = ensure(1).unwrap();
        let (soft, hard) = limit().unwrap();
        assert_eq!(raised.now, soft);
        assert!(
            soft == hard || soft >= needed(1),
            "soft {soft}, hard {hard}"
        );
    }
}
