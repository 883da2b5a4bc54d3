"""A worker SDK for the supervisor, in pure Python (standard library only).

Run a handler as a worker::

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

from .protocol import PROTOCOL_VERSION
from .serve import Chunk, WorkerError, serve

__version__ = "0.1.0"

__all__ = ["serve", "Chunk", "WorkerError", "PROTOCOL_VERSION", "__version__"]
