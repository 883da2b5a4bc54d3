"""Run CPU-heavy work on every core under the supervisor, from Python.

Run a function over chunks of a range or a file, without a job file::

    import supervisor_worker as sw

    def heavy_chunk(start, end):
        return sum(i * i % 10007 for i in range(start, end))

    if __name__ == "__main__":
        total = sum(sw.map(heavy_chunk, range(0, 10_000_000), chunk=100_000, workers=2))

or write a worker for a job file: a handler as a worker::

    python3 -m supervisor_worker MODULE:FUNC
    python3 -m supervisor_worker path/to/handlers.py:FUNC

or serve from a script of your own::

    from supervisor_worker import serve

    def handler(chunk):
        return sum(range(chunk.start, chunk.end))

    if __name__ == "__main__":
        serve(handler)

The handler gets a :class:`Chunk` and returns the chunk's output: bytes as they
are, str as UTF-8, None as nothing, anything else as JSON. An exception fails
the chunk (the supervisor retries it); ``chunk.cancelled`` says when the
supervisor wants it abandoned. The wire protocol is in ``protocol/PROTOCOL.md``.
"""

from ._context import current_chunk
from .protocol import PROTOCOL_VERSION
from .serve import Chunk, WorkerError, serve

__version__ = "0.1.0"

# The launcher is imported on first use: a worker imports this package (and
# the user's script imports it again there) but never launches anything, and
# the launcher's imports would add tens of milliseconds to every worker's start.
_LAZY = {
    "map": "launcher",
    "Lines": "launcher",
    "Blocks": "launcher",
    "SupervisorError": "launcher",
    "ChunkFailed": "launcher",
    "ChunkFailure": "launcher",
    "Attempt": "launcher",
    "RunAborted": "launcher",
    "RunStopped": "launcher",
    "JobRefused": "launcher",
    "find_supervisor_bin": "_find",
    "SupervisorNotFound": "_find",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "map",
    "Lines",
    "Blocks",
    "current_chunk",
    "SupervisorError",
    "ChunkFailed",
    "ChunkFailure",
    "Attempt",
    "RunAborted",
    "RunStopped",
    "JobRefused",
    "find_supervisor_bin",
    "SupervisorNotFound",
    "serve",
    "Chunk",
    "WorkerError",
    "PROTOCOL_VERSION",
    "__version__",
]
