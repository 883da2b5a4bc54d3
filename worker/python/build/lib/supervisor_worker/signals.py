"""Signal dispositions: the supervisor, not the terminal or the service manager,
decides when a worker stops (PROTOCOL.md, "Signals").

- SIGINT (Ctrl-C reaches the whole foreground process group) is ignored.
- SIGTERM is blocked in every thread and read by a thread of its own with
  ``sigwaitinfo``, which sees the sender: from the parent process (the
  supervisor's kill ladder) the process ends at once, killed by SIGTERM as the
  default action would; from anyone else (systemd's ``KillMode=control-group``,
  a user's ``kill``) it writes one line on stderr and carries on.
"""

import os
import signal
import sys
import threading

_lock = threading.Lock()
_installed = False
# While False (before and after serving) any SIGTERM ends the process.
_serving = False


def _ignore_interrupt(signum, frame):
    """A handler that does nothing rather than SIG_IGN: programs the handler
    starts get the default disposition back when they exec, as with the Rust SDK."""


def ignore_interrupt() -> None:
    """Makes SIGINT harmless from now on. Only possible on the main thread; on
    another thread this does nothing (Python lets only the main thread set
    handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _ignore_interrupt)


def obey_only_the_parent(name: str) -> None:
    """From now on a SIGTERM from the parent process ends this process at once,
    and one from anyone else is ignored with a line on stderr naming ``name``.

    Blocks SIGTERM in the calling thread, so call it before any other thread
    starts: threads inherit the mask of the thread that starts them, and a
    thread without it would take SIGTERM's default action. Idempotent.
    """
    global _installed, _serving
    with _lock:
        _serving = True
        if _installed:
            return
        if threading.current_thread() is threading.main_thread():
            # Whatever handler was set, the waiting thread decides now; and the
            # default action is what ends the process when it should.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        thread = threading.Thread(
            target=_wait, args=(name,), name="sigterm", daemon=True
        )
        thread.start()
        _installed = True


def stop_serving() -> None:
    """Serving is over: any SIGTERM ends the process again."""
    global _serving
    _serving = False


def _wait(name: str) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        # The parent is read now, not remembered: should the supervisor die,
        # the worker is re-parented, and whoever owns it then may end it.
        if not _serving or info.si_pid == os.getppid():
            _terminate()
        line = (
            f"{name}: ignoring SIGTERM from pid {info.si_pid}; "
            "the supervisor decides when workers stop\n"
        )
        # One write, so the line is not torn by a handler's own output.
        try:
            os.write(sys.stderr.fileno(), line.encode("utf-8", "replace"))
        except (OSError, ValueError, AttributeError):
            pass


def _terminate() -> None:
    """Ends the process killed by SIGTERM, as if nobody had touched it."""
    # This thread alone unblocks it, and the signal goes to this thread: the
    # default action (set in obey_only_the_parent) ends the whole process.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
    # Unreachable unless someone installed a handler for SIGTERM since.
    os._exit(128 + signal.SIGTERM)
