//! The run's events as log lines: what a person watching stderr (or the
//! journal) should read, at the level it deserves.

use tracing::{debug, info, warn};

use crate::dispatcher::{LAST_WORDS, RunEvent};
use crate::signals;

/// Logs `event`, if it is worth a line.
pub fn log(event: &RunEvent<'_>) {
    match *event {
        RunEvent::ChunkDispatched { .. }
        | RunEvent::ChunkDone { .. }
        | RunEvent::WorkerBusy { .. } => {}
        RunEvent::ChunkFailed {
            chunk,
            attempts,
            error,
            ..
        } => warn!(
            chunk = chunk.index,
            attempts,
            "chunk failed for good: {}",
            one_line(error)
        ),
        RunEvent::WorkerStarted { slot, pid } => debug!(worker = slot, pid, "worker started"),
        RunEvent::WorkerReady { slot } => debug!(worker = slot, "worker ready"),
        RunEvent::WorkerRetiring { slot } => {
            debug!(
                worker = slot,
                "worker had its share of chunks; replacing it"
            )
        }
        RunEvent::WorkerExited {
            slot,
            pid,
            status,
            cause,
            expected,
        } => {
            if expected {
                debug!(worker = slot, pid, status, "worker stopped");
            } else if let Some(cause) = cause {
                warn!(worker = slot, pid, status, "worker {cause}");
            } else {
                warn!(worker = slot, pid, status, "worker exited unexpectedly");
            }
        }
        RunEvent::ChunkRetried {
            chunk,
            failed_attempt,
            worker,
            error,
        } => info!(
            chunk = chunk.index,
            attempt = failed_attempt,
            worker,
            "chunk failed, will retry: {}",
            one_line(error)
        ),
        RunEvent::Aborting { reason } => warn!("aborting: {reason}"),
        RunEvent::Tripped { reason, in_flight } => warn!(
            "{reason}: no new chunks start, {in_flight} in flight may finish, then the run aborts"
        ),
        RunEvent::DrainStarted { signal, in_flight } => {
            let name = signals::name(signal);
            warn!(
                "{name}: draining; no new chunks start, {in_flight} in flight may finish \
                 (another signal cancels them)"
            );
        }
        RunEvent::Cancelling { in_flight } => {
            warn!("cancelling {in_flight} chunks in flight")
        }
        RunEvent::ChunkCancelled { chunk } => {
            debug!(chunk = chunk.index, "chunk cancelled; a later run does it")
        }
    }
}

/// An error as one log line: the failed file and the report keep it whole.
/// A worker's last words are already in the log, line by line, as it wrote
/// them; of a traceback, the first and the last line say the most.
fn one_line(error: &str) -> std::borrow::Cow<'_, str> {
    let error = error
        .split_once(LAST_WORDS)
        .map_or(error, |(before, _)| before);
    let mut lines = error.lines().filter(|line| !line.trim().is_empty());
    match (lines.next(), lines.next_back()) {
        (Some(first), Some(last)) => format!("{first} … {}", last.trim()).into(),
        (Some(first), None) => first.into(),
        (None, _) => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_told_on_one_line() {
        assert_eq!(one_line("boom"), "boom");
        assert_eq!(
            one_line(
                "Traceback (most recent call last):\n  File \"x.py\", line 3\nValueError: bad\n"
            ),
            "Traceback (most recent call last): … ValueError: bad"
        );
        assert_eq!(
            one_line(
                "worker 1 exited unexpectedly (killed by SIGABRT); its last words on stderr:\npanicked at x"
            ),
            "worker 1 exited unexpectedly (killed by SIGABRT)"
        );
    }
}
