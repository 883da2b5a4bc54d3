"""The pieces map's launcher and its worker share, without a supervisor: the
worker's flags, the digest of the call, the failure records, and what a map
worker loads before its first chunk."""

import copy
import hashlib
import os
import pickle
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, os.pardir, "src"))
sys.path.insert(0, SRC)

from supervisor_worker import _context, _map_worker  # noqa: E402
from supervisor_worker.launcher import Attempt, ChunkFailure  # noqa: E402


class WorkerFlags(unittest.TestCase):
    def test_the_launchers_flags_are_read(self):
        args = _map_worker._arguments(
            ["--source", "lines", "--encoding", "latin-1", "--call", "c.pickle", "--sha256", "ab"]
        )
        self.assertEqual(
            args, {"source": "lines", "encoding": "latin-1", "call": "c.pickle", "sha256": "ab"}
        )
        args = _map_worker._arguments(["--source", "range", "--call", "c", "--sha256", "ab"])
        self.assertIsNone(args["encoding"])

    def test_anything_else_is_refused(self):
        for argv in (
            [],
            ["--source", "range"],
            ["--source", "ranges", "--call", "c", "--sha256", "ab"],
            ["--source", "range", "--call", "c", "--sha256"],
            ["--source", "range", "--call", "c", "--sha256", "ab", "--extra", "x"],
            ["source", "range", "--call", "c", "--sha256", "ab"],
        ):
            self.assertIsNone(_map_worker._arguments(argv), argv)

    def test_a_bad_command_line_prints_the_usage_and_exits_2(self):
        run = subprocess.run(
            [sys.executable, "-m", "supervisor_worker._map_worker", "--source", "range"],
            env={**os.environ, "PYTHONPATH": SRC},
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(run.returncode, 2)
        self.assertIn("usage: python3 -m supervisor_worker._map_worker", run.stderr)


class Digest(unittest.TestCase):
    def test_it_is_hashlibs_sha256(self):
        for data in (b"", b"abc", os.urandom(100_000)):
            self.assertEqual(_context.sha256_hex(data), hashlib.sha256(data).hexdigest())


class FailureRecords(unittest.TestCase):
    def test_they_compare_hash_print_and_pickle_by_value_and_stay_as_made(self):
        attempt = Attempt(1, 0, "Traceback …")
        failure = ChunkFailure(3, 300, 400, [attempt])
        self.assertEqual(attempt, Attempt(1, 0, "Traceback …"))
        self.assertNotEqual(attempt, Attempt(2, 0, "Traceback …"))
        self.assertEqual(hash(attempt), hash(Attempt(1, 0, "Traceback …")))
        self.assertEqual(failure.error, "Traceback …")
        self.assertEqual(ChunkFailure(3, 300, 400, []).error, "(no error recorded)")
        self.assertEqual(
            repr(attempt), "Attempt(attempt=1, worker=0, error='Traceback …')"
        )
        self.assertEqual(pickle.loads(pickle.dumps(failure)), failure)
        self.assertEqual(copy.deepcopy(failure), failure)
        with self.assertRaises(AttributeError):
            attempt.error = "changed"


class WorkerStart(unittest.TestCase):
    def test_a_map_worker_loads_none_of_what_it_need_not(self):
        # Each of these cost a short map milliseconds per worker; a change that
        # brings one back at import should say why.
        # What the interpreter loaded by itself (a site hook may load typing)
        # does not count.
        probe = (
            "import sys; before = set(sys.modules); import supervisor_worker._map_worker; "
            "print(' '.join(m for m in ('json', 'argparse', 'hashlib', 'traceback', "
            "'dataclasses', 'typing') if m in sys.modules and m not in before))"
        )
        run = subprocess.run(
            [sys.executable, "-c", probe],
            env={**os.environ, "PYTHONPATH": SRC},
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout.strip(), "")


if __name__ == "__main__":
    unittest.main()
