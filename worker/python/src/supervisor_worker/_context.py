"""State shared by the ``map`` launcher and the worker it starts: the chunk a
``map`` function is working on, and whether the launcher's main script is
being imported in a worker (where a ``map`` call means a missing guard)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

#: The launcher's context for its workers, a pickled dict {"cwd", "sys_path",
#: "main"} in hex: a worker reads it with what it loads anyway (pickle), where
#: JSON would cost it json and re, milliseconds of every worker's start.
CONTEXT_ENV = "SUPERVISOR_WORKER_MAP"

#: The module the supervisor runs as a ``map`` worker (``python3 -m``); not
#: imported by the package, so that ``-m`` runs its only copy.
WORKER_MODULE = "supervisor_worker._map_worker"

current = None
importing_main = False


def current_chunk() -> Optional[object]:
    """In a function that :func:`supervisor_worker.map` runs: the
    :class:`~supervisor_worker.Chunk` being worked on (``index``,
    ``attempt``, ``params``, ``cancelled``, …); None anywhere else."""
    return current


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex, from the interpreter's own SHA-256 where
    it has one: ``hashlib`` loads OpenSSL, milliseconds of a worker's start."""
    try:
        from _sha256 import sha256  # CPython up to 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # CPython 3.12 and later
        except ImportError:
            from hashlib import sha256
    return sha256(data).hexdigest()
