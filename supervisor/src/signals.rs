//! Signals: their names in messages, the three the supervisor drains on,
//! and the count that only escalates.

use std::io;

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// A signal's name as people know it (`SIGTERM`), or `signal 42`.
pub fn name(number: i32) -> String {
    Signal::try_from(number).map_or_else(|_| format!("signal {number}"), |s| s.as_str().to_owned())
}

/// Listens for SIGTERM, SIGINT and SIGHUP and passes their numbers on, in
/// the order they came. Call it before any worker exists: from then on no
/// such signal finds its default action, which would kill the supervisor
/// without a drain. Must run inside the runtime.
pub fn listen() -> io::Result<mpsc::UnboundedReceiver<i32>> {
    let (sender, receiver) = mpsc::unbounded_channel();
    for (kind, number) in [
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::hangup(), libc::SIGHUP),
    ] {
        let mut stream = signal(kind)?;
        let sender = sender.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if sender.send(number).is_err() {
                    return;
                }
            }
        });
    }
    Ok(receiver)
}

/// Counts SIGTERM/SIGINT/SIGHUP over a run: the first drains, the second
/// cancels, the third ends the supervisor at once. The count only goes up.
#[derive(Debug, Default)]
pub struct Escalation {
    count: u32,
    /// Decides the exit status: 128 + the signal that started the drain.
    first: Option<i32>,
}

impl Escalation {
    /// Records a signal; true when it is the third.
    pub fn escalate(&mut self, number: i32) -> bool {
        self.count += 1;
        self.first.get_or_insert(number);
        self.count >= 3
    }

    /// The signal that started it all.
    pub fn first(&self) -> Option<i32> {
        self.first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_people_know_them() {
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(libc::SIGKILL), "SIGKILL");
        assert_eq!(name(1000), "signal 1000");
    }

    #[test]
    fn the_third_signal_escalates_and_the_first_is_kept() {
        let mut escalation = Escalation::default();
        assert!(!escalation.escalate(libc::SIGINT));
        assert!(!escalation.escalate(libc::SIGTERM));
        assert!(escalation.escalate(libc::SIGTERM));
        assert_eq!(escalation.first(), Some(libc::SIGINT));
    }
}
