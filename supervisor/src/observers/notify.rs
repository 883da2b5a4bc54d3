//! systemd readiness, status and watchdog notification (`Type=notify`), and the
//! progress line shown by `systemctl status`.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, warn};

use crate::dispatcher::{Counts, Outcome};

const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// How long one notification may block the run loop. A datagram send only
/// blocks while systemd's receive queue is full; waiting a little rides out a
/// busy manager, waiting long would stall every worker behind one message.
const SEND_TIMEOUT: Duration = Duration::from_millis(200);

/// Talks to the service manager named by `NOTIFY_SOCKET`, if any.
///
/// The socket's address is read once, when the notifier is made, so later
/// changes to the environment do not matter; the environment itself is left
/// alone. Without `NOTIFY_SOCKET` every method does nothing.
#[derive(Debug, Default)]
pub struct Notifier {
    manager: Option<Manager>,
}

#[derive(Debug)]
struct Manager {
    /// The address, or why `NOTIFY_SOCKET` cannot be one. The reason is only
    /// reported on the first send: the notifier may be made before logging
    /// is set up.
    addr: Result<SocketAddr, String>,
    /// What `NOTIFY_SOCKET` said, to name it in a warning.
    name: String,
    watchdog: Option<Duration>,
    ready_sent: bool,
    stopping_sent: bool,
    last_status: Option<String>,
    warned: bool,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, and `WATCHDOG_USEC` / `WATCHDOG_PID` through
    /// [`sd_notify::watchdog_enabled`], without unsetting them.
    pub fn from_env() -> Self {
        let Some(socket) = std::env::var_os(NOTIFY_SOCKET).filter(|s| !s.is_empty()) else {
            return Self::default();
        };
        // Pings are sent from a timer, so a zero interval would spin the loop.
        let watchdog = sd_notify::watchdog_enabled().filter(|usec| !usec.is_zero());
        Self::at(&socket, watchdog)
    }

    /// Talks to the manager listening at `socket` (a path, or `@name` in the
    /// abstract namespace), pinging its watchdog every half `watchdog`.
    pub fn at(socket: &OsStr, watchdog: Option<Duration>) -> Self {
        Self {
            manager: Some(Manager {
                addr: socket_addr(socket),
                name: socket.to_string_lossy().into_owned(),
                watchdog,
                ready_sent: false,
                stopping_sent: false,
                last_status: None,
                warned: false,
            }),
        }
    }

    /// Whether a service manager listens, i.e. `NOTIFY_SOCKET` was set.
    pub fn is_active(&self) -> bool {
        self.manager.is_some()
    }

    /// `READY=1`: the service is up. Sent once; later calls do nothing.
    pub fn ready(&mut self) {
        if let Some(manager) = &mut self.manager
            && !manager.ready_sent
        {
            manager.ready_sent = true;
            manager.send(&NotifyState::Ready);
        }
    }

    /// `STATUS=text`, the line `systemctl status` shows. A text equal to the
    /// last one sent is not sent again, so callers may report on a timer.
    pub fn status(&mut self, text: &str) {
        let Some(manager) = &mut self.manager else {
            return;
        };
        // A newline would end the assignment and start another one.
        let text = text.replace(['\n', '\r'], " ");
        if manager.last_status.as_deref() == Some(text.as_str()) {
            return;
        }
        manager.send(&NotifyState::Status(&text));
        manager.last_status = Some(text);
    }

    /// `STOPPING=1`: the service is shutting down (draining). Sent once.
    pub fn stopping(&mut self) {
        if let Some(manager) = &mut self.manager
            && !manager.stopping_sent
        {
            manager.stopping_sent = true;
            manager.send(&NotifyState::Stopping);
        }
    }

    /// `EXTEND_TIMEOUT_USEC=`: asks systemd for `by` more time, counted from
    /// now, before its start or stop timeout kills the service. `by` is capped
    /// at about 71 minutes (`u32::MAX` microseconds); ask again to go on.
    pub fn extend_timeout(&mut self, by: Duration) {
        if let Some(manager) = &mut self.manager {
            let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
            manager.send(&NotifyState::ExtendTimeoutUsec(usec));
        }
    }

    /// How often to call [`Notifier::watchdog`]: half of `WatchdogSec`, as
    /// `sd_watchdog_enabled(3)` advises, so one late tick is not fatal. `None`
    /// when there is no watchdog or no manager to ping.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.manager.as_ref()?.watchdog.map(|usec| usec / 2)
    }

    /// `WATCHDOG=1`: the run loop is alive. Does nothing without a watchdog.
    pub fn watchdog(&mut self) {
        if let Some(manager) = &mut self.manager
            && manager.watchdog.is_some()
        {
            manager.send(&NotifyState::Watchdog);
        }
    }
}

impl Manager {
    fn send(&mut self, state: &NotifyState<'_>) {
        let message = format!("{state}\n");
        let result = match &self.addr {
            Ok(addr) => send_to(addr, message.as_bytes()),
            Err(reason) => Err(io::Error::new(io::ErrorKind::InvalidInput, reason.clone())),
        };
        let Err(error) = result else {
            return;
        };
        // A manager that cannot be told must never stop the run; one warning
        // says so, the rest would only flood the journal.
        if self.warned {
            debug!(socket = %self.name, %error, "cannot notify systemd");
        } else {
            self.warned = true;
            warn!(
                socket = %self.name,
                %error,
                "cannot notify systemd; the run goes on, further failures are not logged"
            );
        }
    }
}

/// `@name` is a socket in the abstract namespace, as `sd_notify(3)` allows;
/// anything else is a path.
fn socket_addr(socket: &OsStr) -> Result<SocketAddr, String> {
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(socket),
    };
    addr.map_err(|error| format!("{NOTIFY_SOCKET} is not a usable socket address: {error}"))
}

/// A fresh socket per message, as libsystemd does: a connection kept open
/// would go stale when systemd re-executes and recreates its socket.
fn send_to(addr: &SocketAddr, message: &[u8]) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    let sent = socket.send_to_addr(message, addr)?;
    if sent == message.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the notification was cut short",
        ))
    }
}

/// The progress line for `STATUS=`, e.g. `1234/10000 chunks done, 2 failed,
/// 5 retried, 8 in flight, 2 workers`, or while draining `draining: 8 chunks
/// in flight, 1234/10000 done`.
///
/// Chunks an earlier run settled count as done, so that the line says how far
/// the job is rather than this run: a resumed job does not appear to start
/// over. How many of them there were follows in brackets.
pub fn progress_status(
    counts: &Counts,
    in_flight: usize,
    workers_alive: usize,
    draining: bool,
) -> String {
    let settled = counts.done + counts.skipped;
    let done = match counts.total {
        Some(total) => format!("{settled}/{total}"),
        None => settled.to_string(),
    };
    let earlier = if counts.skipped > 0 {
        format!(" ({} before this run)", counts.skipped)
    } else {
        String::new()
    };
    let mut line = String::new();
    if draining {
        let _ = write!(
            line,
            "draining: {in_flight} {} in flight, {done} done{earlier}",
            plural(in_flight as u64, "chunk", "chunks")
        );
        if counts.failed > 0 {
            let _ = write!(line, ", {} failed", counts.failed);
        }
    } else {
        let chunks = plural(counts.total.unwrap_or(settled), "chunk", "chunks");
        let _ = write!(
            line,
            "{done} {chunks} done{earlier}, {} failed, {} retried, {in_flight} in flight, {workers_alive} {}",
            counts.failed,
            counts.retried,
            plural(workers_alive as u64, "worker", "workers"),
        );
    }
    line
}

/// The status a run leaves behind: how it ended, with the same counts as
/// [`progress_status`].
pub fn final_status(outcome: &Outcome, counts: &Counts) -> String {
    let settled = counts.done + counts.skipped;
    let done = match counts.total {
        Some(total) => format!("{settled}/{total}"),
        None => settled.to_string(),
    };
    match outcome {
        Outcome::Finished { .. } => format!(
            "finished: {done} chunks done, {} failed, {} retried",
            counts.failed, counts.retried
        ),
        Outcome::Drained { signal } => format!(
            "stopped by {} after a drain: {done} chunks done, {} cancelled; start again to resume",
            crate::signals::name(*signal),
            counts.cancelled
        ),
        Outcome::Aborted { reason } => format!("aborted: {reason}"),
    }
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}
