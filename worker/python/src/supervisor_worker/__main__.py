"""``python3 -m supervisor_worker MODULE:FUNC``: serve a handler function as a worker."""

import argparse
import importlib
import importlib.util
import os
import sys
import traceback

from . import __version__, signals
from .protocol import PROTOCOL_VERSION, WORKER_FD_ENV
from .serve import WorkerError, serve_socket, take_socket

NAME = "supervisor_worker"

DESCRIPTION = f"""\
Serve chunks from the supervisor that started this process (protocol version
{PROTOCOL_VERSION}), calling HANDLER once per chunk until the supervisor says stop.

HANDLER is MODULE:FUNC (an importable module; the working directory is on the
path) or path/to/file.py:FUNC (relative to the working directory). FUNC may be
dotted (obj.method). It is called as FUNC(chunk) and returns the chunk's
output: bytes as they are, str as UTF-8, None as nothing, anything else as
JSON. An exception fails the chunk.

With --init SETUP (same forms as HANDLER), SETUP(params) is called once, with
the job's params as a dict, after the handshake and before the first chunk: load
a model or a table there, once per worker. If it raises, the worker prints the
traceback and exits with status 1 before answering any chunk.

The supervisor starts workers with {WORKER_FD_ENV} set; run by hand, this
exits with status 1.
"""

EXAMPLE = """\
job file:
  [worker]
  command = ["python3", "-m", "supervisor_worker", "--init", "handlers.py:setup", "handlers.py:work"]
"""


def load_handler(spec: str):
    """The callable that ``spec`` (MODULE:FUNC or FILE.py:FUNC) names.
    Raises WorkerError with a message, the import's traceback included."""
    target, sep, attribute = spec.rpartition(":")
    if not sep or not target or not attribute:
        raise WorkerError(f"{spec!r} is not MODULE:FUNC or path/to/file.py:FUNC")
    try:
        if target.endswith(".py") or "/" in target or os.sep in target:
            module = _load_file(target)
        else:
            module = importlib.import_module(target)
    except WorkerError:
        raise
    except BaseException as e:
        if isinstance(e, SystemExit):
            raise WorkerError(f"importing {target} called exit({e.code!r})") from None
        detail = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        raise WorkerError(f"cannot import {target}:\n{detail.rstrip()}") from None
    handler = module
    for part in attribute.split("."):
        try:
            handler = getattr(handler, part)
        except AttributeError:
            raise WorkerError(f"{target} has no {attribute!r}") from None
    if not callable(handler):
        raise WorkerError(f"{spec} is a {type(handler).__name__}, not a function")
    return handler


#: Files loaded so far, by absolute path: a handler and a setup function from
#: the same file share one module.
_loaded_files = {}


def _load_file(path: str):
    full = os.path.abspath(path)
    if full in _loaded_files:
        return _loaded_files[full]
    if not os.path.isfile(full):
        raise WorkerError(f"{path}: no such file (looked for {full})")
    # Like `python3 FILE`: the file's folder is on the path, so it can import
    # its neighbours.
    folder = os.path.dirname(full)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = os.path.splitext(os.path.basename(full))[0]
    if not name.isidentifier() or name in sys.modules:
        name = "_supervisor_worker_handler"
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise WorkerError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _loaded_files[full] = module
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python3 -m {NAME}",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("handler", metavar="HANDLER", help="MODULE:FUNC or path/to/file.py:FUNC")
    parser.add_argument(
        "--init",
        metavar="SETUP",
        help="MODULE:FUNC or path/to/file.py:FUNC, called as FUNC(params) once before the first chunk",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__} (protocol version {PROTOCOL_VERSION})",
    )
    args = parser.parse_args(argv)
    try:
        # First of all, so nothing the handler's import starts inherits the channel.
        sock = take_socket()
    except WorkerError as e:
        print(f"{NAME}: {e}", file=sys.stderr)
        return 1
    # Before importing the handler: threads it starts inherit the blocked SIGTERM.
    signals.ignore_interrupt()
    signals.obey_only_the_parent(NAME)
    try:
        handler = load_handler(args.handler)
        init = load_handler(args.init) if args.init else None
    except WorkerError as e:
        print(f"{NAME}: {e}", file=sys.stderr)
        return 1
    serve_socket(sock, handler, name=NAME, init=init)
    return 0


if __name__ == "__main__":
    sys.exit(main())
