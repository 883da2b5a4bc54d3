"""Where the ``supervisor`` binary is: the wheel puts it in the scripts folder
of the environment it is installed into, beside its helpers (exec-worker,
count-worker), which the supervisor looks for in its own folder.

Looked for as uv's ``find_uv_bin`` does: the scripts folder of this Python,
that of its base prefix, the ``bin`` folder above the package (``pip install
--prefix``) and beside it (``pip install --target``), the user scheme's
(``pip install --user``); then ``PATH`` (``cargo install --path supervisor``
puts it in ``~/.cargo/bin``). ``SUPERVISOR_BIN`` names a binary to use instead
of all of them (a development build, say).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from fnmatch import fnmatch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional

__all__ = ["SupervisorNotFound", "find_supervisor_bin", "BIN_ENV"]

#: An environment variable naming the supervisor binary to use.
BIN_ENV = "SUPERVISOR_BIN"

_PACKAGE = "supervisor_worker"


class SupervisorNotFound(FileNotFoundError):
    """No ``supervisor`` binary where the wheel or cargo would have put it."""


def find_supervisor_bin() -> str:
    """The path of the ``supervisor`` binary; raises :class:`SupervisorNotFound`
    naming every place it looked."""
    override = os.environ.get(BIN_ENV)
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return os.path.abspath(override)
        raise SupervisorNotFound(f"{BIN_ENV}={override!r} is not an executable file")
    exe = "supervisor" + (sysconfig.get_config_var("EXE") or "")
    seen: List[str] = []
    for folder in _candidates():
        if not folder or folder in seen:
            continue
        seen.append(folder)
        path = os.path.join(folder, exe)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    on_path = shutil.which(exe)
    if on_path:
        return on_path
    places = "\n".join(f" - {folder}" for folder in seen)
    raise SupervisorNotFound(
        f"cannot find the supervisor binary; looked in:\n{places}\n - PATH\n"
        "install it with `pip install .` at the root of the repository (the wheel "
        "holds it), or `cargo install --path supervisor`; or set "
        f"{BIN_ENV} to its path"
    )


def _candidates() -> List[Optional[str]]:
    module = os.path.dirname(os.path.abspath(__file__))
    return [
        sysconfig.get_path("scripts"),
        sysconfig.get_path("scripts", vars={"base": sys.base_prefix}),
        _join(_matching_parents(module, f"lib/python*/site-packages/{_PACKAGE}"), "bin"),
        _join(_matching_parents(module, _PACKAGE), "bin"),
        sysconfig.get_path("scripts", scheme=_user_scheme()),
    ]


def _matching_parents(path: Optional[str], match: str) -> Optional[str]:
    """``path`` with ``match`` (``/``-separated, ``*`` wildcards) cut off its
    end, or None when its end does not match."""
    if not path:
        return None
    parts = path.split(os.sep)
    match_parts = match.split("/")
    if len(parts) < len(match_parts):
        return None
    if not all(fnmatch(p, m) for p, m in zip(reversed(parts), reversed(match_parts))):
        return None
    return os.sep.join(parts[: -len(match_parts)])


def _join(path: Optional[str], *parts: str) -> Optional[str]:
    return os.path.join(path, *parts) if path else None


def _user_scheme() -> str:
    if sys.version_info >= (3, 10):
        return sysconfig.get_preferred_scheme("user")
    if sys.platform == "darwin" and getattr(sys, "_framework", None):
        return "osx_framework_user"
    return "posix_user"
