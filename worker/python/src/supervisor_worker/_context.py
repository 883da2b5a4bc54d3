"""State shared by the ``map`` launcher and the worker it starts: the chunk a
``map`` function is working on, and whether the launcher's main script is
being imported in a worker (where a ``map`` call means a missing guard)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

#: The launcher's context for its workers, as JSON: {"cwd", "sys_path", "main"}.
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
