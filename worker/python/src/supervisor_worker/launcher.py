"""``map(fn, source, ...)``: run a job from Python, without a job file.

The launcher writes the job file itself (in a private temporary folder, or in
``.supervisor/NAME`` with ``name=``), runs the ``supervisor`` binary on it,
and reads the output file as the supervisor writes it, yielding each chunk's
result in index order.

Why the output file and not ``output = "-"``: the supervisor never waits for
the reader (a slow loop body cannot stall its run loop, whose timers time the
workers), the file is flushed about every 20 ms while the journal commits, and
it is what a named run resumes from. The price is the outputs' size on disk
until the run ends (the temporary folder is removed then).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import pickle
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping

# Annotations only: typing and dataclasses (with the inspect and ast they
# load) would add milliseconds to the start of every program that calls map.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterator, List, Optional, Union

from . import _context
from .protocol import _Message
from ._find import find_supervisor_bin

__all__ = [
    "map",
    "Lines",
    "Blocks",
    "SupervisorError",
    "ChunkFailed",
    "ChunkFailure",
    "Attempt",
    "RunAborted",
    "RunStopped",
    "JobRefused",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
#: Pickle protocol of the call file: fixed, so that the job's fingerprint does
#: not change with the Python version's default.
_PICKLE_PROTOCOL = 4
_READ_SIZE = 1 << 20
#: Polling the output file: quick while records flow, backing off to this.
_MAX_POLL = 0.02

# Exit statuses of the supervisor (README, "Exit status").
_EXIT_FAILED = 1
_EXIT_REFUSED = 2
_EXIT_ABORTED = 3
_EXIT_SIGNALS = {129: "SIGHUP", 130: "SIGINT", 143: "SIGTERM"}


# Sources ---------------------------------------------------------------------


class Lines:
    """A text file, one item per line: ``fn`` gets each chunk's lines as a
    list of ``str`` (decoded with ``encoding``; ``encoding=None`` gives
    ``bytes``), without their ``\\n``. ``chunk`` counts lines. A plain path
    (``str`` or ``os.PathLike``) given to :func:`map` means ``Lines(path)``."""

    kind = "lines"

    def __init__(self, path: Union[str, "os.PathLike[str]"], encoding: Optional[str] = "utf-8"):
        self.path = os.path.abspath(os.fspath(path))
        self.encoding = encoding

    def __repr__(self) -> str:
        return f"Lines({self.path!r}, encoding={self.encoding!r})"


class Blocks:
    """A file cut into byte ranges of about ``chunk`` bytes (an int, or a size
    such as ``"64MiB"``), each cut just after a ``delimiter``, as GNU
    parallel's ``--pipepart`` does: ``fn`` gets each block's ``bytes``."""

    kind = "blocks"

    def __init__(self, path: Union[str, "os.PathLike[str]"], delimiter: Union[str, bytes] = "\n"):
        self.path = os.path.abspath(os.fspath(path))
        if isinstance(delimiter, bytes):
            delimiter = delimiter.decode("utf-8")
        if not delimiter:
            raise ValueError("Blocks: the delimiter must not be empty")
        self.delimiter = delimiter

    def __repr__(self) -> str:
        return f"Blocks({self.path!r}, delimiter={self.delimiter!r})"


# Errors ----------------------------------------------------------------------


class SupervisorError(Exception):
    """The run did not finish cleanly. ``exit_code`` is the supervisor's exit
    status, ``report`` its run report (a dict, or None when it wrote none),
    ``folder`` the job's folder (kept for a named run)."""

    def __init__(self, message: str, *, exit_code: Optional[int] = None,
                 report: Optional[dict] = None, folder: Optional[str] = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.report = report
        self.folder = folder


class _Record(_Message):
    """A message-like record (equality and repr over ``__slots__``) whose
    fields are set once and that hashes by value, as a frozen dataclass
    would."""

    __slots__ = ()

    def __init__(self, *values):
        for field, value in zip(self.__slots__, values):
            object.__setattr__(self, field, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __hash__(self):
        return hash(tuple(getattr(self, f) for f in self.__slots__))

    def __reduce__(self):
        # Pickled and copied through the constructor: the default would set
        # the slots one by one, which a read-only record refuses.
        return type(self), tuple(getattr(self, f) for f in self.__slots__)


class Attempt(_Record):
    """One failed attempt of a chunk: its number (1 for the first), the worker
    slot it ran on, and the error (a Python chunk's is its whole traceback)."""

    __slots__ = ("attempt", "worker", "error")

    def __init__(self, attempt: int, worker: int, error: str):
        super().__init__(attempt, worker, error)


class ChunkFailure(_Record):
    """A chunk that failed for good: ``[start, end)`` are items of a range or
    byte offsets into the file; ``attempts`` are every attempt's errors."""

    __slots__ = ("index", "start", "end", "attempts")

    def __init__(self, index: int, start: int, end: int, attempts: List[Attempt]):
        super().__init__(index, start, end, attempts)

    @property
    def error(self) -> str:
        """The last attempt's error."""
        return self.attempts[-1].error if self.attempts else "(no error recorded)"


class ChunkFailed(SupervisorError):
    """A chunk failed for good (``retries + 1`` attempts). Raised where the
    iteration reaches it, once the run has finished (the other chunks are not
    given up for one bad one): ``index``, ``start``, ``end``, ``attempts`` and
    ``error`` describe that chunk, ``failures`` every chunk that failed."""

    def __init__(self, failures: List[ChunkFailure], first: ChunkFailure, unit: str, **kw):
        self.failures = failures
        self.index = first.index
        self.start = first.start
        self.end = first.end
        self.attempts = first.attempts
        self.error = first.error
        n = len(first.attempts)
        message = (
            f"chunk {first.index} ({unit} [{first.start}, {first.end})) failed for good "
            f"after {n} attempt{'s' if n != 1 else ''}; the last one's error:\n{first.error}"
        )
        if len(failures) > 1:
            shown = ", ".join(str(f.index) for f in failures[:10])
            more = ", …" if len(failures) > 10 else ""
            message += (
                f"\n({len(failures)} chunks failed in all: {shown}{more}; "
                "each with its attempts in .failures)"
            )
        super().__init__(message, **kw)


class RunAborted(SupervisorError):
    """The supervisor gave up (exit status 3): workers crashed faster than its
    restart limit allows (a function that cannot be imported, an initializer
    that raises), or the output could not be written. The message says why."""


class RunStopped(SupervisorError):
    """The supervisor was stopped by a signal that did not come through this
    process (a SIGTERM from a service manager, say) and drained; with
    ``name=`` calling :func:`map` again resumes."""


class JobRefused(SupervisorError):
    """The supervisor refused to start (exit status 2); its message is on
    stderr. With ``name=``: the job changed since the run it would resume
    (pass ``fresh=True``), or another run of it is going on."""


# The job file ------------------------------------------------------------------


def _toml_string(text: str) -> str:
    # JSON's escapes are TOML's, but for DEL, which TOML wants escaped too.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"{where}: {value} does not fit in a 64-bit integer")
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Mapping):
        items = ", ".join(
            f"{_toml_string(str(k))} = {_toml_value(v, f'{where}.{k}')}" for k, v in value.items()
        )
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    raise TypeError(f"{where}: a {type(value).__name__} cannot go into a job file")


def _duration(value, what: str) -> str:
    if isinstance(value, str):
        return value
    seconds = value.total_seconds() if hasattr(value, "total_seconds") else float(value)
    if not seconds > 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return f"{max(1, round(seconds * 1000))}ms"


def _size(value, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value}B"
    raise TypeError(f"{what} is a number of bytes or a size such as \"2GiB\", got {value!r}")


def _job_name(fn, name: Optional[str]) -> str:
    if name is not None:
        return name
    guess = re.sub(r"[^A-Za-z0-9_.-]", "_", getattr(fn, "__name__", "") or "")
    return guess.strip(".") or "map"


def _main_context():
    """How a worker imports this process's ``__main__``: as a module when it
    was started with ``-m``, else by the script's path; None in a REPL."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return {"module": spec.name}
    path = getattr(main, "__file__", None)
    if path:
        return {"path": os.path.abspath(path)}
    return None


def _pickle_call(fn, initializer, initargs) -> bytes:
    if _context.importing_main:
        raise RuntimeError(
            "map() was called while a worker imports the main script: put the call "
            "under `if __name__ == \"__main__\":` (the script is imported again in every worker)"
        )
    try:
        return pickle.dumps((fn, initializer, tuple(initargs)), protocol=_PICKLE_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        raise TypeError(
            f"map() needs a function that a worker can import: one defined at the top "
            f"level of a module or of the script (not a lambda or a nested function), "
            f"and picklable initargs; {e}"
        ) from None


# Running -----------------------------------------------------------------------


_live_runs: "weakref.WeakSet[_Run]" = weakref.WeakSet()


@atexit.register
def _stop_live_runs() -> None:
    # A generator abandoned by an exception in the loop body may outlive the
    # interpreter's last line: drain its supervisor before exiting.
    for run in list(_live_runs):
        run.stop()


def _preexec(parent: int, prctl) -> Callable[[], None]:
    def setup() -> None:
        # Should this process die, the supervisor drains as under SIGTERM.
        if prctl is not None:
            prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return setup


def _libc_prctl():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError, ImportError):
        return None


class _Run:
    """One supervisor process and its folder."""

    def __init__(self, folder: str, keep: bool, argv: List[str], env: Dict[str, str],
                 notify: Optional["socket.socket"]):
        self.folder = folder
        self.keep = keep
        self.notified = threading.Event()
        self._notify = notify
        self.proc = subprocess.Popen(
            argv,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            # A session of its own: the terminal's Ctrl-C reaches this process
            # alone, which passes on exactly one SIGINT per KeyboardInterrupt.
            start_new_session=True,
            preexec_fn=_preexec(os.getpid(), _libc_prctl()),
        )
        # Readable once the supervisor has exited: waits for more output wake
        # at its exit instead of sleeping on (Linux 5.3, Python 3.9).
        try:
            self._exited = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            self._exited = None
        self.interrupted = False
        _live_runs.add(self)
        if notify is not None:
            threading.Thread(target=self._listen, name="supervisor-notify", daemon=True).start()

    def _listen(self) -> None:
        # Read every notification, so the supervisor's sends never block on
        # a full queue; the first one says its run loop is up.
        sock = self._notify
        while True:
            try:
                sock.recv(4096)
            except OSError:
                return
            self.notified.set()

    def nap(self, seconds: float) -> None:
        """Sleeps up to ``seconds``, less if the supervisor exits meanwhile."""
        if self._exited is None:
            time.sleep(seconds)
        else:
            select.select([self._exited], [], [], seconds)

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.interrupted = True
            try:
                self.proc.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass

    def wait(self) -> int:
        """Waits for the supervisor; each KeyboardInterrupt meanwhile is passed
        on as one more SIGINT (a second one cancels the chunks in flight),
        then raised once the supervisor is gone."""
        interrupt = None
        while True:
            try:
                code = self.proc.wait()
                break
            except KeyboardInterrupt as e:
                interrupt = interrupt or e
                self.interrupt()
        if interrupt is not None:
            raise interrupt
        return code

    def stop(self) -> None:
        """Drains a supervisor still running, waits for it, removes a
        temporary folder. Idempotent."""
        try:
            if self.proc.poll() is None:
                self.interrupt()
                self.wait()
        finally:
            _live_runs.discard(self)
            if self._notify is not None:
                self._notify.close()
                self._notify = None
            if self._exited is not None:
                os.close(self._exited)
                self._exited = None
            if not self.keep:
                shutil.rmtree(self.folder, ignore_errors=True)

    def report(self) -> Optional[dict]:
        try:
            with open(os.path.join(self.folder, "report.json"), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def failures(self) -> List[ChunkFailure]:
        failures = {}
        try:
            with open(os.path.join(self.folder, "state", "failed.jsonl"), "rb") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a crash
                    attempts = [
                        Attempt(a.get("attempt", 0), a.get("worker", 0), a.get("error", ""))
                        for a in record.get("attempts", [])
                    ]
                    index = record["index"]
                    failures[index] = ChunkFailure(index, record["start"], record["end"], attempts)
        except OSError:
            pass
        return [failures[i] for i in sorted(failures)]


# json.loads costs microseconds per call; the scanner under it does not.
_scan = json.JSONDecoder().scan_once


def _decode(text: str):
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        end = -1
    if end != len(text):
        raise SupervisorError(f"a map worker wrote a record that is not JSON: {text[:200]!r}")
    return value


def _records(run: _Run, wait_for_notify: bool, poll: float = 0.001) -> Iterator[tuple]:
    """``(index, value)`` for each record of the output, as the supervisor
    writes it, until it has exited and everything it wrote is read."""
    path = os.path.join(run.folder, "output")
    fd = None
    pending: List[bytes] = []
    delay = poll
    try:
        while True:
            exited = run.proc.poll() is not None
            if wait_for_notify and not run.notified.is_set():
                # Resuming: the supervisor first cuts the output back to what
                # its journal holds; nothing before that is read. One that
                # ended without a word finished (nothing was left to run) or
                # refused to start, leaving an earlier run's output as it was.
                if not exited:
                    run.nap(delay)
                    delay = min(delay * 2, _MAX_POLL)
                    continue
                if run.proc.returncode not in (0, _EXIT_FAILED):
                    return
                wait_for_notify = False
            if fd is None:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    if exited:
                        return
                    run.nap(delay)
                    delay = min(delay * 2, _MAX_POLL)
                    continue
            data = os.read(fd, _READ_SIZE)
            if not data:
                if exited:
                    return
                run.nap(delay)
                delay = min(delay * 2, _MAX_POLL)
                continue
            delay = poll
            end = data.rfind(b"\n")
            if end < 0:
                pending.append(data)  # a long record, read piece by piece
                continue
            if pending:
                pending.append(data[: end + 1])
                block = b"".join(pending)
            else:
                block = data[: end + 1]
            pending = [data[end + 1 :]] if end + 1 < len(data) else []
            for line in block.decode("utf-8").split("\n")[:-1]:
                index, _, text = line.partition("\t")
                yield int(index), _decode(text)
    finally:
        if fd is not None:
            os.close(fd)


def map(
    fn: Callable[..., Any],
    source: Union[range, Lines, Blocks, str, "os.PathLike[str]"],
    *,
    chunk: Union[int, str, None] = None,
    workers: Optional[int] = None,
    retries: Optional[int] = None,
    timeout: Union[float, str, None] = None,
    max_failed: Union[int, str, None] = None,
    env: Optional[Mapping[str, str]] = None,
    params: Optional[Mapping[str, Any]] = None,
    memory_limit: Union[int, str, None] = None,
    max_chunks: Optional[int] = None,
    start_timeout: Union[float, str, None] = None,
    drain_timeout: Union[float, str, None] = None,
    order: str = "index",
    initializer: Optional[Callable[..., Any]] = None,
    initargs: tuple = (),
    name: Optional[str] = None,
    state_dir: Union[str, "os.PathLike[str]", None] = None,
    fresh: bool = False,
    progress: str = "auto",
) -> Iterator[Any]:
    """Runs ``fn`` over ``source`` in chunks on worker processes under the
    ``supervisor`` and yields each chunk's result, decoded from JSON, in index
    order as chunks settle (``order="completion"``: as they finish).

    ``source`` and how ``fn`` is called, once per chunk:

    - ``range(start, end)`` (step 1): ``fn(chunk_start, chunk_end)``;
      ``chunk`` items per chunk.
    - :class:`Lines` (or a plain path): ``fn(lines)``, a list of the chunk's
      lines; ``chunk`` lines per chunk.
    - :class:`Blocks`: ``fn(data)``, the bytes of a block cut just after a
      delimiter; ``chunk`` bytes per block (an int or ``"64MiB"``).

    ``fn`` and ``initializer`` are functions at the top level of a module or
    of the script (a worker imports the script by path, under another name, so
    its ``if __name__ == "__main__":`` block does not run there); ``fn``
    returns a JSON value. ``initializer(*initargs)`` runs once in each worker
    before its first chunk; if it raises, the worker cannot start.

    The other options are the job file's: ``workers`` (default: the CPUs),
    ``retries`` (attempts after the first, default 2), ``timeout`` per
    attempt, ``start_timeout`` (for the initializer, default 30 s),
    ``max_chunks`` (replace a worker after so many; PPE's
    ``max_tasks_per_child``), ``memory_limit`` per worker, ``env``,
    ``params`` (see :func:`current_chunk`), ``drain_timeout``,
    ``max_failed``, ``progress`` (``"auto"``: a bar when stderr is a
    terminal). Durations are seconds or strings such as ``"90s"``.

    ``name``: the job's state lives in ``.supervisor/NAME`` (or ``state_dir``)
    and is kept: calling ``map`` again with the same arguments resumes,
    re-yielding what finished before, and ``fresh=True`` starts over. Without
    it the job runs in a temporary folder, removed at the end.

    A chunk that fails ``retries + 1`` times raises :class:`ChunkFailed` where
    the iteration reaches it, after the run has finished. Ctrl-C (or leaving
    the loop early) drains: the chunks in flight finish, the supervisor
    stops, and KeyboardInterrupt is raised; a second Ctrl-C cancels the
    chunks in flight.
    """
    if order not in ("index", "completion"):
        raise ValueError(f'order is "index" or "completion", got {order!r}')
    if name is not None and not _NAME_RE.match(name):
        raise ValueError(f"name {name!r} may only hold letters, digits, '_', '.' and '-'")
    if isinstance(source, range):
        if source.step != 1:
            raise ValueError(f"map takes a range with step 1, got {source!r}")
        if source.start < 0:
            raise ValueError(f"map takes a range of non-negative integers, got {source!r}")
        if len(source) == 0:
            return iter(())
        source_toml = f"range = {{ start = {source.start}, end = {source.stop} }}"
        kind, encoding, unit = "range", None, "items"
    else:
        if isinstance(source, (str, os.PathLike)):
            source = Lines(source)
        if not isinstance(source, (Lines, Blocks)):
            raise TypeError(
                f"source is a range, Lines(path), Blocks(path) or a path; got {type(source).__name__}"
            )
        if not os.path.isfile(source.path):
            raise FileNotFoundError(f"map's input {source.path} is not a file")
        if isinstance(source, Lines):
            source_toml = f"lines = {{ path = {_toml_string(source.path)} }}"
            encoding = source.encoding
        else:
            source_toml = (
                f"file = {{ path = {_toml_string(source.path)}, "
                f"delimiter = {_toml_string(source.delimiter)} }}"
            )
            encoding = None
        kind, unit = source.kind, "bytes"
    call = _pickle_call(fn, initializer, initargs)
    supervisor = find_supervisor_bin()
    job_name = _job_name(fn, name)
    # The run starts at the first next(): a map never iterated runs nothing.
    return _generate(
        fn=fn, kind=kind, unit=unit, encoding=encoding, source_toml=source_toml, call=call,
        supervisor=supervisor, job_name=job_name, chunk=chunk, workers=workers,
        retries=retries, timeout=timeout, max_failed=max_failed, env=env, params=params,
        memory_limit=memory_limit, max_chunks=max_chunks, start_timeout=start_timeout,
        drain_timeout=drain_timeout, order=order, name=name, state_dir=state_dir,
        fresh=fresh, progress=progress,
    )


def _job_toml(*, job_name, kind, encoding, source_toml, digest, chunk, workers, retries,
              timeout, max_failed, env, params, memory_limit, max_chunks, start_timeout,
              drain_timeout, order) -> str:
    command = [sys.executable, "-m", _context.WORKER_MODULE, "--source", kind]
    if encoding:
        command += ["--encoding", encoding]
    command += ["--call", "call.pickle", "--sha256", digest]
    lines = [
        "# Written by supervisor_worker.map; rewritten on every call.",
        "[job]",
        f"name = {_toml_string(job_name)}",
        "",
        "[source]",
        source_toml,
    ]
    if chunk is not None:
        if isinstance(chunk, bool) or not isinstance(chunk, (int, str)):
            raise TypeError(f"chunk is an int (or a size string for Blocks), got {chunk!r}")
        lines.append(f"chunk = {_toml_value(chunk, 'chunk')}")
    lines += ["", "[worker]", f"command = {_toml_value(command, 'command')}"]
    lines.append(f"env = {_toml_value(env, 'env')}")
    if params is not None:
        lines.append(f"params = {_toml_value(dict(params), 'params')}")
    if timeout is not None:
        lines.append(f"timeout = {_toml_string(_duration(timeout, 'timeout'))}")
    if start_timeout is not None:
        lines.append(f"start_timeout = {_toml_string(_duration(start_timeout, 'start_timeout'))}")
    if retries is not None:
        lines.append(f"retries = {_toml_value(retries, 'retries')}")
    if max_chunks is not None:
        lines.append(f"max_chunks = {_toml_value(max_chunks, 'max_chunks')}")
    if memory_limit is not None:
        lines.append(f"memory_limit = {_toml_string(_size(memory_limit, 'memory_limit'))}")
    lines += ["", "[supervisor]"]
    if workers is not None:
        lines.append(f"workers = {_toml_value(workers, 'workers')}")
    if drain_timeout is not None:
        lines.append(f"drain_timeout = {_toml_string(_duration(drain_timeout, 'drain_timeout'))}")
    if max_failed is not None:
        lines.append(f"max_failed = {_toml_value(max_failed, 'max_failed')}")
    lines += [
        "",
        "[output]",
        'path = "output"',
        # Each record is INDEX<TAB>JSON<LF>, written by the map worker.
        'format = "raw"',
        f"order = {_toml_string(order)}",
        "",
        "[state]",
        'dir = "state"',
        "",
    ]
    return "\n".join(lines)


def _write_atomically(path: str, data: bytes) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as f:
        f.write(data)
    os.replace(temporary, path)


def _generate(*, fn, kind, unit, encoding, source_toml, call, supervisor, job_name, chunk,
              workers, retries, timeout, max_failed, env, params, memory_limit, max_chunks,
              start_timeout, drain_timeout, order, name, state_dir, fresh, progress):
    digest = _context.sha256_hex(call)
    context = {
        "cwd": os.getcwd(),
        "sys_path": [os.path.abspath(p) if p else os.getcwd() for p in sys.path],
        "main": _main_context(),
    }
    worker_env = {str(k): str(v) for k, v in (env or {}).items()}
    worker_env[_context.CONTEXT_ENV] = pickle.dumps(context, protocol=_PICKLE_PROTOCOL).hex()
    toml = _job_toml(
        job_name=job_name, kind=kind, encoding=encoding, source_toml=source_toml,
        digest=digest, chunk=chunk, workers=workers, retries=retries, timeout=timeout,
        max_failed=max_failed, env=worker_env, params=params, memory_limit=memory_limit,
        max_chunks=max_chunks, start_timeout=start_timeout, drain_timeout=drain_timeout,
        order=order,
    )
    if name is None:
        folder = tempfile.mkdtemp(prefix=f"supervisor_worker-{job_name}-")
        keep = False
    else:
        folder = os.path.abspath(os.fspath(state_dir) if state_dir else os.path.join(".supervisor", name))
        os.makedirs(folder, exist_ok=True)
        keep = True
    notify = None
    try:
        _write_atomically(os.path.join(folder, "call.pickle"), call)
        _write_atomically(os.path.join(folder, "job.toml"), toml.encode("utf-8"))
        try:
            os.remove(os.path.join(folder, "report.json"))
        except FileNotFoundError:
            pass
        # The whole job, always: inside a Slurm or Batch array task the
        # supervisor would otherwise take the task's variables for a shard of
        # this job, and map would return a part of the results.
        argv = [supervisor, "--progress", progress, "--report", "report.json", "--shard", "0/1"]
        if fresh:
            argv.append("--fresh")
        argv.append("job.toml")
        resuming = not fresh and os.path.exists(os.path.join(folder, "output"))
        run_env = dict(os.environ)
        if resuming:
            import socket  # only to resume: a fresh run needs no word from the supervisor

            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            address = f"supervisor_worker-{os.getpid()}-{os.urandom(6).hex()}"
            notify.bind("\0" + address)
            run_env["NOTIFY_SOCKET"] = "@" + address
        else:
            run_env.pop("NOTIFY_SOCKET", None)
        run = _Run(folder, keep, argv, run_env, notify)
    except BaseException:
        if notify is not None:
            notify.close()
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    yield from _results(run, order, unit, resuming)


def _results(run: _Run, order: str, unit: str, resuming: bool) -> Iterator[Any]:
    gap = None
    error = None
    try:
        expected = 0
        for index, value in _records(run, wait_for_notify=resuming):
            if order == "index" and index != expected:
                # Chunks before `index` left no output: they failed for good.
                # The rest of the run goes on; the error is raised at its end.
                gap = expected
                break
            expected = index + 1
            yield value
        code = run.wait()
        if code != 0 or gap is not None:
            # Before the folder goes: the report and the failed file are in it.
            error = _error_for(run, code, gap, unit)
    finally:
        run.stop()
    if isinstance(error, KeyboardInterrupt):
        raise KeyboardInterrupt
    if error is not None:
        raise error


def _error_for(run: _Run, code: int, gap: Optional[int], unit: str) -> BaseException:
    report = run.report()
    folder = run.folder if run.keep else None
    kw = {"exit_code": code, "report": report, "folder": folder}
    if code in (0, _EXIT_FAILED):
        failures = run.failures()
        first = None
        if gap is not None:
            first = next((f for f in failures if f.index == gap), None)
            if first is None:
                return SupervisorError(
                    f"chunk {gap} has no output and no record in the failed file", **kw
                )
        elif failures:
            first = failures[0]
        if first is None:
            return SupervisorError(
                f"the supervisor exited with status {code} but the failed file lists no chunk", **kw
            )
        return ChunkFailed(failures, first, unit, **kw)
    reason = (report or {}).get("exit_reason")
    if code in _EXIT_SIGNALS:
        if run.interrupted:
            return KeyboardInterrupt()
        return RunStopped(
            f"the supervisor was stopped by {_EXIT_SIGNALS[code]} and drained"
            + ("; call map again with the same name to resume" if run.keep else ""),
            **kw,
        )
    if code == _EXIT_ABORTED:
        return RunAborted(
            f"the run was aborted: {reason or 'see the supervisor’s message above'}", **kw
        )
    if code == _EXIT_REFUSED:
        hint = (
            "; if the job changed since the run it would resume, pass fresh=True"
            if run.keep
            else ""
        )
        return JobRefused(
            f"the supervisor refused the job (exit status 2): its message is above{hint}", **kw
        )
    if code < 0:
        return SupervisorError(f"the supervisor was killed by {signal.Signals(-code).name}", **kw)
    return SupervisorError(f"the supervisor exited with status {code}", **kw)
