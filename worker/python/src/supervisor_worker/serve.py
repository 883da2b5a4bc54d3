"""The worker's life: take the socket, shake hands, run chunks until Stop.

Two threads besides the SIGTERM waiter: the main thread runs handlers and
writes answers; a reader thread reads every frame after the handshake, queues
Assigns, marks Cancels and Stop, and ends the process when the supervisor goes
away (status 0) or sends something unreadable (status 1).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
import time
from collections import deque

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Callable, Iterator, Optional

from . import protocol, signals
from .protocol import (
    MAX_FAILED_ERROR,
    MAX_FRAME_LEN,
    PROTOCOL_VERSION,
    WORKER_FD_ENV,
    Assign,
    AssignData,
    Cancel,
    FrameDecoder,
    ProtocolError,
    Stop,
    Welcome,
)

__all__ = ["serve", "Chunk", "WorkerError"]

#: Exit status of a worker whose supervisor sent something it cannot read.
PROTOCOL_VIOLATION_EXIT = 1

#: Past this many buffered bytes the answers go out without waiting for the
#: queue to run dry.
FLUSH_AT = 1024 * 1024
#: Past this much work since the last write the answers go out too: the next
#: queued chunk may run for minutes, and answers held back that long would look
#: to the supervisor like slow chunks. Short chunks still share a write.
FLUSH_AFTER_NS = 1_000_000

_U64_MAX = 2**64 - 1
_INPUT_NAMES = {"Range": "range", "File": "file", "Lines": "lines", "Stdin": "stdin"}


class WorkerError(Exception):
    """The worker cannot serve: not started by a supervisor, a failed
    handshake, a version mismatch. The message is meant for stderr."""


# The worker's context and the chunks handed to the handler -------------------


class _Context:
    """What every chunk of this worker shares: the Welcome and the input file."""

    __slots__ = ("worker_id", "params_json", "input", "path", "_params", "_fd", "_lock")

    def __init__(self, welcome: Welcome):
        self.worker_id = welcome.worker_id
        self.params_json = welcome.params
        self.input = _INPUT_NAMES[welcome.input]
        self.path = welcome.input_path
        self._params = None
        self._fd = None
        self._lock = threading.Lock()

    def params(self) -> dict:
        if self._params is None:
            text = self.params_json.strip() or "{}"
            import json  # here: json (and the re it loads) would slow every worker's start

            try:
                self._params = json.loads(text)
            except ValueError as e:
                raise ValueError(f"the job's params are not JSON ({e}): {text!r}") from None
        return self._params

    def read(self, start: int, end: int) -> bytes:
        if self.path is None:
            # A stdin chunk brings its bytes: Chunk.read never gets here.
            raise ValueError(
                "chunk.read(): the job's source is a range, which has no input file; "
                "chunk.start and chunk.end are item numbers"
            )
        fd = self._fd
        if fd is None:
            with self._lock:
                if self._fd is None:
                    # Kept open for every later chunk; never inherited.
                    self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                fd = self._fd
        want = end - start
        data = os.pread(fd, want, start)
        if len(data) < want:
            # A large read may come back short: finish it piece by piece.
            parts = [data]
            got = len(data)
            while got < want:
                part = os.pread(fd, want - got, start + got)
                if not part:
                    raise EOFError(
                        f"{self.path} ends before byte {end} (at {start + got}): "
                        "it changed since the supervisor cut it into chunks"
                    )
                parts.append(part)
                got += len(part)
            data = b"".join(parts)
        return data


class Chunk:
    """One chunk to work on, as the handler receives it.

    ``index``, ``start``, ``end`` (exclusive), ``attempt`` (1 for the first)
    and ``first_item`` come from the Assign; ``worker_id``, ``params``,
    ``input`` and ``path`` from the Welcome. ``cancelled`` becomes True once
    the supervisor has sent Cancel for this chunk. For a ``stdin`` job the
    chunk's bytes came with it: :meth:`read` returns them.
    """

    __slots__ = (
        "index", "start", "end", "attempt", "first_item", "_ctx", "_cancelled", "_data",
    )

    def __init__(self, assign, ctx: _Context):
        self.index = assign.index
        self.start = assign.start
        self.end = assign.end
        self.attempt = assign.attempt
        self.first_item = assign.first_item
        self._ctx = ctx
        self._cancelled = False
        self._data = assign.data if type(assign) is AssignData else None

    @property
    def worker_id(self) -> int:
        """The worker's slot, 0-based; a replacement worker gets the same one."""
        return self._ctx.worker_id

    @property
    def params(self) -> dict:
        """The job's ``[worker] params`` table, parsed from its JSON (``{}`` when empty)."""
        return self._ctx.params()

    @property
    def input(self) -> str:
        """The job's source: ``"range"``, ``"file"``, ``"lines"`` or ``"stdin"``."""
        return self._ctx.input

    @property
    def path(self) -> Optional[str]:
        """The absolute path of the input file of a file or lines job; None for a
        range or stdin."""
        return self._ctx.path

    @property
    def cancelled(self) -> bool:
        """True once the supervisor cancelled this chunk. A long handler should
        look now and then and return early; whatever it returns (or raises)
        is then answered ``Cancelled``."""
        return self._cancelled

    def read(self) -> bytes:
        """The chunk's bytes: ``[start, end)`` of the input file, read with a
        positioned read (the file is opened once per worker), or for a stdin
        job the bytes of the supervisor's standard input that came with the
        chunk. Raises ValueError for a range job, EOFError when the file is
        shorter than ``end``."""
        data = self._data
        if data is not None:
            return data
        return self._ctx.read(self.start, self.end)

    def lines(self) -> Iterator[bytes]:
        """The chunk's lines, as bytes without their ``\\n`` (a ``\\r`` before
        it is kept); the last line may lack its newline at the end of the file."""
        data = self.read()
        if not data:
            return iter(())
        lines = data.split(b"\n")
        if not lines[-1]:
            lines.pop()
        return iter(lines)

    def __repr__(self) -> str:
        return (
            f"Chunk(index={self.index}, start={self.start}, end={self.end}, "
            f"attempt={self.attempt}, first_item={self.first_item})"
        )


_new_chunk = object.__new__

# The hand-off between the reader thread and the main thread ----------------

_RUN = 0
_CANCELLED = 1
_STOP = 2


class _Inbox:
    """Chunks waiting to run (some cancelled before they ran, answered in their
    place), the chunk running now, and whether Stop came."""

    def __init__(self, ctx: _Context):
        self._ctx = ctx
        # Taken directly where nothing waits or is notified: a Condition's
        # own `with` costs a Python-level call per chunk.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # [chunk, cancelled] in the order assigned.
        self._queue = deque()
        self._queued = {}
        self._running = None
        self._stopping = False
        self.closed = False

    def receive(self, decoder: FrameDecoder) -> None:
        """Takes in every complete frame under one lock; raises ProtocolError
        at the first message that breaks the protocol."""
        with self._lock:
            try:
                while True:
                    for fields in decoder.take_assigns():
                        self._assign(fields)
                    payload = decoder.next_payload()
                    if payload is None:
                        return
                    self._apply(protocol.decode_supervisor_message(payload))
            finally:
                self._cond.notify()

    def _assign(self, fields) -> None:
        _, _, index, start, end, attempt, first_item = fields
        if self._stopping:
            raise ProtocolError(f"Assign for chunk {index} after Stop")
        chunk = _new_chunk(Chunk)
        chunk.index = index
        chunk.start = start
        chunk.end = end
        chunk.attempt = attempt
        chunk.first_item = first_item
        chunk._ctx = self._ctx
        chunk._cancelled = False
        chunk._data = None
        entry = [chunk, False]
        self._queue.append(entry)
        self._queued[index] = entry

    def _apply(self, message) -> None:
        kind = type(message)
        if kind is Assign or kind is AssignData:
            if self._stopping:
                raise ProtocolError(f"Assign for chunk {message.index} after Stop")
            entry = [Chunk(message, self._ctx), False]
            self._queue.append(entry)
            self._queued[message.index] = entry
        elif kind is Cancel:
            entry = self._queued.get(message.index)
            if entry is not None:
                entry[1] = True
            elif self._running is not None and self._running.index == message.index:
                self._running._cancelled = True
            # Otherwise it is answered already: nothing to do.
        elif kind is Stop:
            self._stopping = True
        else:
            raise ProtocolError("a second Welcome")

    def _next(self):
        queue = self._queue
        if queue:
            chunk, cancelled = queue.popleft()
            del self._queued[chunk.index]
            if cancelled:
                return _CANCELLED, chunk
            self._running = chunk
            return _RUN, chunk
        if self._stopping:
            return _STOP, None
        return None

    def try_next(self):
        with self._lock:
            return self._next()

    def wait_next(self):
        with self._cond:
            while True:
                nxt = self._next()
                if nxt is not None:
                    return nxt
                self._cond.wait()

    def finish(self) -> None:
        with self._lock:
            self._running = None


# Answers -------------------------------------------------------------------


def _supervisor_gone() -> None:
    """Nobody is left to take an answer, and the supervisor has already counted
    every chunk this worker held as lost."""
    os._exit(0)


def _is_gone(error: OSError) -> bool:
    return error.errno in (errno.EPIPE, errno.ECONNRESET)


class _Answers:
    """Answers encoded back to back into one buffer and sent with one write."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buf = bytearray()
        self._since = time.monotonic_ns()
        # A moving average of how long chunks take here, in ns: what the
        # next one will probably take. None until a chunk has run.
        self._typical = None
        # The buffer holds a Failed or Cancelled: rare answers, which go out
        # before the next chunk starts whatever chunks take.
        self._urgent = False

    def timed(self, started: int, finished: int) -> None:
        """Counts a chunk's time into the average (an eighth of the new)."""
        elapsed = finished - started
        typical = self._typical
        self._typical = elapsed if typical is None else (typical * 7 + elapsed) // 8

    def before_chunk(self) -> None:
        """Answers still held go out before a chunk starts, unless they are
        all Dones and chunks here are short (batching them is what makes
        short chunks cheap): a quick answer (a chunk that failed at once,
        say) must not wait for the whole of a long chunk after it, or the
        supervisor, which times each chunk from the answer before it,
        charges the wait to the wrong chunk."""
        if not self._buf:
            return
        short = self._typical is not None and self._typical < FLUSH_AFTER_NS
        if self._urgent or not short:
            self.flush()

    def ran(self, chunk: Chunk, output: bytes, started: int, finished: int) -> None:
        n = len(output)
        if n > protocol.MAX_DONE_OUTPUT:
            self.failed(
                chunk.index,
                f"output of {n} bytes does not fit in a frame of at most {MAX_FRAME_LEN} bytes",
                finished,
            )
            return
        elapsed = finished - started
        if elapsed > _U64_MAX:
            elapsed = _U64_MAX
        buf = self._buf
        buf += protocol.done_header(chunk.index, elapsed, n)
        buf += output
        self._flush_if_due(finished)

    def failed(self, index: int, error: str, now: int) -> None:
        data = error.encode("utf-8", "replace")
        if len(data) > MAX_FAILED_ERROR:
            data = data[: MAX_FAILED_ERROR].decode("utf-8", "ignore").encode("utf-8")
            error = data.decode("utf-8")
        else:
            error = data.decode("utf-8")
        self._buf += protocol.encode_failed(index, error)
        self._urgent = True
        self._flush_if_due(now)

    def cancelled(self, index: int, now: int) -> None:
        self._buf += protocol.encode_cancelled(index)
        self._urgent = True
        self._flush_if_due(now)

    def _flush_if_due(self, now: int) -> None:
        if len(self._buf) > FLUSH_AT or now - self._since >= FLUSH_AFTER_NS:
            self.flush()

    def start_batch(self) -> None:
        """Work arrived after a wait: the time spent waiting is no reason to flush."""
        self._since = time.monotonic_ns()

    def flush(self) -> None:
        self._since = time.monotonic_ns()
        self._urgent = False
        if not self._buf:
            return
        try:
            self._sock.sendall(self._buf)
        except OSError as e:
            if _is_gone(e):
                _supervisor_gone()
            raise
        self._buf.clear()


# Handler results -----------------------------------------------------------


def _output_bytes(value) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    import json

    return json.dumps(value).encode("utf-8")


def _describe(error: BaseException) -> str:
    """The exception's type and message, then its whole traceback, chained
    exceptions included (without the SDK's own frame): the failed file and the
    launcher's exception show what a Python user would see in a terminal."""
    kind = type(error)
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        name = f"{kind.__module__}.{name}"
    message = str(error)
    head = f"{name}: {message}" if message else name
    tb = error.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next  # the SDK's call of the handler
    import traceback  # only when a chunk fails: it loads tokenize, re and more

    return head + "\n" + "".join(traceback.format_exception(kind, error, tb)).rstrip("\n")


# Serving -------------------------------------------------------------------


def take_socket() -> socket.socket:
    """The socket named by SUPERVISOR_WORKER_FD, made close-on-exec first.
    Raises WorkerError when there is none."""
    value = os.environ.get(WORKER_FD_ENV)
    if value is None:
        raise WorkerError(f"not started by a supervisor: {WORKER_FD_ENV} is not set")
    try:
        fd = int(value.strip())
        if fd < 0:
            raise ValueError
    except ValueError:
        raise WorkerError(f"{WORKER_FD_ENV} is not a descriptor number: {value!r}") from None
    try:
        os.set_inheritable(fd, False)
        mode = os.fstat(fd).st_mode
    except OSError as e:
        raise WorkerError(f"{WORKER_FD_ENV}={fd}: {e.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise WorkerError(f"{WORKER_FD_ENV}={fd}: not a socket")
    # Here, not at the top: a program that only calls map (which imports this
    # package) never serves, and socket with selectors costs it milliseconds.
    import socket

    return socket.socket(fileno=fd)


def _handshake(sock: socket.socket, decoder: FrameDecoder) -> Welcome:
    sock.sendall(protocol.encode_hello(PROTOCOL_VERSION, os.getpid()))
    try:
        payload = protocol.read_frame(sock, decoder)
    except ProtocolError as e:
        raise WorkerError(f"the supervisor broke the protocol: {e}") from None
    if payload is None:
        raise WorkerError(
            "the supervisor closed the connection before its Welcome "
            f"(this worker speaks protocol version {PROTOCOL_VERSION})"
        )
    try:
        message = protocol.decode_supervisor_message(payload)
    except ProtocolError as e:
        raise WorkerError(f"the supervisor broke the protocol: {e}") from None
    if type(message) is not Welcome:
        raise WorkerError(
            f"the supervisor broke the protocol: {type(message).__name__} before Welcome"
        )
    if message.protocol_version != PROTOCOL_VERSION:
        raise WorkerError(
            f"protocol version mismatch: the worker speaks version {PROTOCOL_VERSION}, "
            f"the supervisor version {message.protocol_version}"
        )
    return message


def _read_loop(sock: socket.socket, decoder: FrameDecoder, inbox: _Inbox, name: str) -> None:
    recv = sock.recv
    while True:
        try:
            inbox.receive(decoder)
        except ProtocolError as e:
            if inbox.closed:
                return
            _write_stderr(f"{name}: the supervisor broke the protocol: {e}\n")
            os._exit(PROTOCOL_VIOLATION_EXIT)
        try:
            data = recv(65536)
        except OSError:
            data = b""
        if not data:
            # A clean end, a torn frame or a failed read: the supervisor is gone.
            if inbox.closed:
                return
            _supervisor_gone()
        decoder.feed(data)


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.flush()
    except Exception:
        pass
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


def _program_name() -> str:
    argv0 = sys.argv[0] if sys.argv else ""
    name = os.path.basename(argv0)
    if not name or name in ("-c", "__main__.py"):
        return "supervisor_worker"
    return name


def serve(
    handler: Callable[[Chunk], object],
    *,
    name: Optional[str] = None,
    init: Optional[Callable[[dict], object]] = None,
) -> None:
    """Serves chunks from the supervisor that started this process until it
    sends Stop, calling ``handler(chunk)`` for each, one at a time, in the
    order they were assigned; returns once every chunk assigned before Stop is
    answered.

    The return value is the chunk's output: bytes as they are, str as UTF-8,
    None as empty, anything else as its ``json.dumps``. An exception is
    answered ``Failed`` with its type, message and traceback's last lines; a
    chunk cancelled while it ran is answered ``Cancelled`` whatever the
    handler returned or raised.

    ``init(params)``, when given, is called once with the job's params (a
    dict) after the handshake and before the first chunk: a model or a table
    loads once per worker, not once per chunk. Should it raise, the worker
    writes the traceback to stderr and exits with status 1 before answering
    any chunk. Setup that needs no params can simply run before ``serve``.

    When the supervisor goes away the process exits at once with status 0;
    when it sends something unreadable, with status 1. Startup failures (not
    started by a supervisor, a version mismatch) raise ``SystemExit`` with a
    message, so a script exits non-zero with that message on stderr.

    Call it from the main thread before starting other threads: SIGINT is
    ignored from here on and SIGTERM is blocked in the calling thread (and so
    in every thread it starts), read by a thread of its own that obeys only
    the parent process. Child processes the handler starts inherit the
    blocked SIGTERM; see the README.
    """
    name = name or _program_name()
    try:
        sock = take_socket()
    except WorkerError as e:
        raise SystemExit(f"{name}: {e}") from None
    serve_socket(sock, handler, name=name, init=init)


def serve_socket(sock: socket.socket, handler, *, name: str, init=None) -> None:
    """:func:`serve` on a socket already taken (close-on-exec set)."""
    signals.ignore_interrupt()
    # Before Hello, so a supervisor that has its Hello knows the policy holds.
    signals.obey_only_the_parent(name)
    try:
        decoder = FrameDecoder()
        try:
            welcome = _handshake(sock, decoder)
        except WorkerError as e:
            raise SystemExit(f"{name}: {e}") from None
        except OSError as e:
            raise SystemExit(f"{name}: the supervisor went away before its Welcome ({e})") from None
        ctx = _Context(welcome)
        if init is not None:
            # Before the reader starts: chunks assigned meanwhile wait in the
            # socket, and none is answered should the setup fail.
            _initialize(init, ctx, name)
        inbox = _Inbox(ctx)
        reader = threading.Thread(
            target=_read_loop,
            args=(sock, decoder, inbox, name),
            name="supervisor-reader",
            daemon=True,
        )
        reader.start()
        try:
            _run(handler, inbox, _Answers(sock))
        finally:
            # Shutting the socket down wakes the reader, which sees `closed` and
            # ends quietly instead of exiting the process.
            inbox.closed = True
            import socket  # loaded already: the socket is one

            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            reader.join(timeout=5)
    finally:
        signals.stop_serving()


def _initialize(init, ctx: _Context, name: str) -> None:
    try:
        params = ctx.params()
        init(params)
    except Exception as error:
        raise SystemExit(f"{name}: the setup function failed: {_describe(error)}") from None


def _run(handler, inbox: _Inbox, answers: _Answers) -> None:
    monotonic_ns = time.monotonic_ns
    try_next = inbox.try_next
    finish = inbox.finish
    while True:
        nxt = try_next()
        if nxt is None:
            # Everything received so far is answered: send it before blocking.
            answers.flush()
            nxt = inbox.wait_next()
            answers.start_batch()
        what, chunk = nxt
        if what == _RUN:
            answers.before_chunk()
            started = monotonic_ns()
            try:
                result = handler(chunk)
            except Exception as error:
                finished = monotonic_ns()
                answers.timed(started, finished)
                finish()
                if chunk._cancelled:
                    answers.cancelled(chunk.index, finished)
                else:
                    answers.failed(chunk.index, _describe(error), finished)
                continue
            finished = monotonic_ns()
            answers.timed(started, finished)
            finish()
            if chunk._cancelled:
                answers.cancelled(chunk.index, finished)
                continue
            try:
                output = _output_bytes(result)
            except Exception as error:
                answers.failed(
                    chunk.index,
                    f"cannot turn the handler's {type(result).__name__} result into "
                    f"output: {_describe(error)}",
                    finished,
                )
                continue
            answers.ran(chunk, output, started, finished)
        elif what == _CANCELLED:
            answers.cancelled(chunk.index, monotonic_ns())
        else:
            answers.flush()
            return
