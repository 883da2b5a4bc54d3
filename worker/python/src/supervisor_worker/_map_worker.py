"""The worker that :func:`supervisor_worker.map` starts: it loads the caller's
function (and initializer) from a pickle, calls it once per chunk, and answers
``INDEX<TAB>JSON<LF>`` so that the launcher can tell which chunk a record is
and find the gaps that failed chunks leave.

Started by the supervisor as::

    python3 -m supervisor_worker._map_worker --source range|lines|blocks \\
        [--encoding ENC] --call call.pickle --sha256 HEX

with ``SUPERVISOR_WORKER_MAP`` holding (a pickle, in hex) the launcher's working
directory, its ``sys.path`` and how to import its main script. The digest of
the pickle is in the arguments so that the job's fingerprint changes with the
function, the initializer or its arguments (a named run then refuses to
resume rather than mix two functions' outputs).
"""

import importlib
import importlib.util
import io
import os
import pickle
import sys

# Not json, argparse, hashlib or traceback: with what they load (re, OpenSSL,
# tokenize) they made up a third of a worker's start, which a short map pays
# before its first chunk; json and traceback are loaded when first needed.
try:
    from _json import encode_basestring_ascii as _encode_str
except ImportError:  # an interpreter without the C accelerator
    from json.encoder import encode_basestring_ascii as _encode_str

from . import _context, signals
from ._context import CONTEXT_ENV
from .serve import Chunk, WorkerError, serve_socket, take_socket

NAME = "supervisor_worker.map"

#: The name the launcher's main script gets here, as under multiprocessing's
#: spawn: its ``if __name__ == "__main__":`` block does not run again.
MAIN_ALIAS = "__mp_main__"

_float_repr = float.__repr__


def _encode(index: int, result) -> bytes:
    # json.dumps costs microseconds even for None (it builds an encoder per
    # call): the common scalars take a shortcut to the same text.
    kind = type(result)
    if result is None:
        return f"{index}\tnull\n".encode()
    if kind is int:
        return f"{index}\t{result}\n".encode()
    if kind is str:
        return f"{index}\t{_encode_str(result)}\n".encode()
    if kind is float and result - result == 0.0:  # finite
        return f"{index}\t{_float_repr(result)}\n".encode()
    import json

    try:
        text = json.dumps(result)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"map's function must return a JSON value (None, bool, int, float, str, "
            f"list, dict); chunk {index} returned {type(result).__name__}: {e}"
        ) from None
    return f"{index}\t{text}\n".encode()


def _handler(fn, source: str, encoding):
    context = _context
    if source == "range":

        def handle(chunk: Chunk) -> bytes:
            context.current = chunk
            return _encode(chunk.index, fn(chunk.start, chunk.end))

    elif source == "lines":

        def handle(chunk: Chunk) -> bytes:
            context.current = chunk
            data = chunk.read()
            text = data.decode(encoding) if encoding else data
            lines = text.split("\n" if encoding else b"\n")
            if lines and not lines[-1]:
                lines.pop()
            return _encode(chunk.index, fn(lines))

    elif source == "blocks":

        def handle(chunk: Chunk) -> bytes:
            context.current = chunk
            return _encode(chunk.index, fn(chunk.read()))

    else:
        raise WorkerError(f"unknown source kind {source!r}")
    return handle


class _Unpickler(pickle.Unpickler):
    """Finds what the launcher's ``__main__`` defined in its script, imported
    here under :data:`MAIN_ALIAS`."""

    def __init__(self, file, main):
        super().__init__(file)
        self._main = main
        self._main_module = None

    def find_class(self, module, name):
        if module == "__main__":
            if self._main_module is None:
                self._main_module = _import_main(self._main)
            module = self._main_module.__name__
        return super().find_class(module, name)


def _import_main(main):
    if not main:
        raise WorkerError(
            "the function comes from __main__, but the launcher ran no script file "
            "(an interactive session?): define it in a module or a script"
        )
    _context.importing_main = True
    try:
        if "module" in main:
            return importlib.import_module(main["module"])
        path = main["path"]
        spec = importlib.util.spec_from_file_location(MAIN_ALIAS, path)
        if spec is None or spec.loader is None:
            raise WorkerError(f"{path}: cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[MAIN_ALIAS] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[MAIN_ALIAS]
            raise
        return module
    finally:
        _context.importing_main = False


def _load_call(path: str, digest: str, main):
    with open(path, "rb") as f:
        data = f.read()
    actual = _context.sha256_hex(data)
    if actual != digest:
        raise WorkerError(
            f"{path} changed since the job was written (sha256 {actual}, expected {digest})"
        )
    return _Unpickler(io.BytesIO(data), main).load()


def _enter_launcher_context() -> dict:
    """The launcher's working directory and import path, so that the function
    sees the files and modules its caller sees."""
    os.environ.pop("NOTIFY_SOCKET", None)
    raw = os.environ.pop(CONTEXT_ENV, None)
    if raw is None:
        raise WorkerError(f"{CONTEXT_ENV} is not set: this worker is started by map()")
    context = pickle.loads(bytes.fromhex(raw))
    os.chdir(context["cwd"])
    missing = [p for p in context["sys_path"] if p not in sys.path]
    sys.path[0:0] = missing
    return context


_USAGE = (
    "usage: python3 -m supervisor_worker._map_worker --source range|lines|blocks [--encoding ENC] "
    "--call PATH --sha256 HEX"
)


def _arguments(argv) -> dict:
    """The launcher's flags, each ``--name value``; None when they are not."""
    if len(argv) % 2:
        return None
    args = {"encoding": None}
    for flag, value in zip(argv[::2], argv[1::2]):
        name = flag[2:]
        if not flag.startswith("--") or name not in ("source", "encoding", "call", "sha256"):
            return None
        args[name] = value
    if args.get("source") not in ("range", "lines", "blocks"):
        return None
    if "call" not in args or "sha256" not in args:
        return None
    return args


def _traceback(e: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()


def main(argv=None) -> int:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    if args is None:
        print(_USAGE, file=sys.stderr)
        return 2
    try:
        sock = take_socket()
    except WorkerError as e:
        print(f"{NAME}: {e}", file=sys.stderr)
        return 1
    signals.ignore_interrupt()
    signals.obey_only_the_parent(NAME)
    # A print in the function shows up in the log as it happens.
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass
    # Everything up to the Hello: a failure here is a worker that cannot
    # start, which the supervisor tells apart from a chunk's failure.
    try:
        # Named relative to the job's folder, where the supervisor starts workers.
        call_path = os.path.abspath(args["call"])
        context = _enter_launcher_context()
        fn, initializer, initargs = _load_call(call_path, args["sha256"], context["main"])
    except WorkerError as e:
        print(f"{NAME}: {e}", file=sys.stderr)
        return 1
    except BaseException as e:
        if isinstance(e, SystemExit):
            print(f"{NAME}: loading the function called exit({e.code!r})", file=sys.stderr)
            return 1
        detail = _traceback(e)
        print(f"{NAME}: cannot load the function:\n{detail}", file=sys.stderr)
        return 1
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            detail = _traceback(e)
            print(f"{NAME}: the initializer failed:\n{detail}", file=sys.stderr)
            return 1
    serve_socket(sock, _handler(fn, args["source"], args["encoding"]), name=NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
