//! The reader thread: after the handshake, the only code that reads the
//! supervisor's socket. It files messages into the [`Inbox`] and ends the
//! process when the supervisor goes away or breaks the protocol.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Once, OnceLock};
use std::thread::{self, JoinHandle};

use protocol::connection::FrameReader;

use crate::inbox::Inbox;

/// The exit status of a worker whose supervisor sent something it cannot read.
const PROTOCOL_VIOLATION_EXIT: i32 = 1;

/// Starts the reader on `socket`; `frames` may already hold frames that
/// arrived together with the handshake.
pub(crate) fn spawn(
    socket: UnixStream,
    frames: FrameReader,
    inbox: Arc<Inbox>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("supervisor-reader".into())
        .spawn(move || read_loop(socket, frames, &inbox))
}

fn read_loop(mut socket: UnixStream, mut frames: FrameReader, inbox: &Inbox) {
    loop {
        if let Err(error) = inbox.receive(&mut frames) {
            if inbox.is_closed() {
                return;
            }
            eprintln!("worker: the supervisor broke the protocol: {error}");
            run_supervisor_lost();
            std::process::exit(PROTOCOL_VIOLATION_EXIT);
        }
        match frames.fill_from(&mut socket) {
            Ok(true) => {}
            // A torn frame or a failed read means the same as a clean end:
            // the supervisor is gone.
            Ok(false) | Err(_) => {
                if inbox.is_closed() {
                    return;
                }
                supervisor_gone(inbox);
            }
        }
    }
}

/// Ends the process: with the supervisor gone nobody is left to take an
/// answer, and it has already counted every chunk this worker held as lost.
pub(crate) fn supervisor_gone(inbox: &Inbox) -> ! {
    inbox.cancel_all();
    run_supervisor_lost();
    std::process::exit(0)
}

static SUPERVISOR_LOST: OnceLock<fn()> = OnceLock::new();

/// Sets what runs just before the process ends because its supervisor went
/// away or broke the protocol. The process then exits on whichever thread
/// noticed, without unwinding, so a worker that started processes of its own
/// ends them here: nobody else will once the supervisor is gone. Runs at
/// most once, after every chunk was marked cancelled (a handler may still be
/// starting one meanwhile). Only the first call sets it; returns whether
/// this one did.
pub fn on_supervisor_lost(hook: fn()) -> bool {
    SUPERVISOR_LOST.set(hook).is_ok()
}

fn run_supervisor_lost() {
    static RAN: Once = Once::new();
    if let Some(hook) = SUPERVISOR_LOST.get() {
        // A second thread that noticed too waits here for the first's hook.
        RAN.call_once(hook);
    }
}
