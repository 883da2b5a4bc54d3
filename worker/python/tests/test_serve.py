"""The SDK as a process: the test plays the supervisor over a socketpair, handing
the worker its end through SUPERVISOR_WORKER_FD as the supervisor does.

Every wait has a deadline (socket timeouts, ``wait(timeout=)``, ``select``);
nothing sleeps to let time pass. Handlers announce on stdout (not part of the
protocol) when they start a chunk, which is how a test knows one is running.
"""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, os.pardir, "src"))
sys.path.insert(0, SRC)

from supervisor_worker import protocol  # noqa: E402
from supervisor_worker.protocol import (  # noqa: E402
    PROTOCOL_VERSION,
    Assign,
    AssignData,
    Cancel,
    Cancelled,
    Done,
    Failed,
    FrameDecoder,
    Hello,
    Stop,
    Welcome,
)

#: The longest any single wait may take before the test fails.
PATIENCE = 30

HANDLERS = '''
import json, os, sys, time

def announce(chunk):
    print(f"running {chunk.index} attempt {chunk.attempt}", flush=True)

def echo(chunk):
    return {
        "index": chunk.index, "start": chunk.start, "end": chunk.end,
        "attempt": chunk.attempt, "first_item": chunk.first_item,
        "worker_id": chunk.worker_id, "params": chunk.params, "input": chunk.input,
        "path": chunk.path, "cancelled": chunk.cancelled,
    }

def squares(chunk):
    modulus = chunk.params.get("modulus", 10007)
    return sum((i * i) % modulus for i in range(chunk.start, chunk.end))

class Unserializable:
    pass

def kinds(chunk):
    i = chunk.index
    if i == 0:
        return b"\\x00\\xff raw"
    if i == 1:
        return "h\\u00e9llo"
    if i == 2:
        return None
    if i == 3:
        return {"a": [1, 2]}
    if i == 4:
        return 12345
    if i == 5:
        raise ValueError(f"bad chunk {i}")
    if i == 6:
        return Unserializable()
    if i == 7:
        return bytearray(b"ba")
    if i == 8:
        time.sleep(0.02)
        return "slept"
    if i == 9:
        return b"x" * (64 * 1024 * 1024 - 28 + 1)
    return "other"

def until_cancelled(chunk):
    """Chunk 0 runs until it is cancelled (at most a minute); others return at once."""
    announce(chunk)
    if chunk.index != 0:
        return f"ran {chunk.index}"
    deadline = time.monotonic() + 60
    while not chunk.cancelled and time.monotonic() < deadline:
        time.sleep(0.001)
    return "cancelled" if chunk.cancelled else "not cancelled"

def raises_when_cancelled(chunk):
    announce(chunk)
    deadline = time.monotonic() + 60
    while not chunk.cancelled and time.monotonic() < deadline:
        time.sleep(0.001)
    raise RuntimeError("gave up")

def file_bytes(chunk):
    return {
        "data": chunk.read().decode(),
        "lines": [line.decode() for line in chunk.lines()],
        "input": chunk.input,
        "path": chunk.path,
    }

def read_range(chunk):
    return chunk.read()

def fails_then_runs_long(chunk):
    """Chunk 0 fails at once; chunk 1 runs until it is cancelled (a minute at most)."""
    if chunk.index == 0:
        raise RuntimeError("quick failure")
    announce(chunk)
    deadline = time.monotonic() + 60
    while not chunk.cancelled and time.monotonic() < deadline:
        time.sleep(0.001)
    return "done"
'''

SCRIPT = '''
import sys
from supervisor_worker import serve

def double(chunk):
    return str(2 * chunk.index)

if __name__ == "__main__":
    serve(double)
    print("served", file=sys.stderr)
'''


class Worker:
    """One SDK worker process and the supervisor's end of its socket."""

    def __init__(self, folder, argv, env=None, fd=True):
        self.folder = folder
        self.stderr_path = os.path.join(folder, f"stderr-{id(self)}.txt")
        self.decoder = FrameDecoder()
        child_env = dict(os.environ)
        child_env.pop(protocol.WORKER_FD_ENV, None)
        child_env["PYTHONPATH"] = SRC
        child_env.update(env or {})
        pass_fds = ()
        self.sock = None
        theirs = None
        if fd:
            self.sock, theirs = socket.socketpair()
            self.sock.settimeout(PATIENCE)
            child_env[protocol.WORKER_FD_ENV] = str(theirs.fileno())
            pass_fds = (theirs.fileno(),)
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable] + argv,
                cwd=folder,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                pass_fds=pass_fds,
            )
        if theirs is not None:
            theirs.close()

    # The socket -------------------------------------------------------------

    def send(self, *messages):
        """All of `messages` in one write, as the supervisor may pipeline them."""
        self.sock.sendall(b"".join(protocol.encode(m) for m in messages))

    def send_raw(self, data):
        self.sock.sendall(data)

    def receive(self):
        """The next message from the worker; fails the test on a timeout or EOF."""
        try:
            payload = protocol.read_frame(self.sock, self.decoder)
        except socket.timeout:
            raise AssertionError(f"no message within {PATIENCE}s; stderr:\n{self.stderr()}")
        if payload is None:
            raise AssertionError(f"the worker closed its socket; stderr:\n{self.stderr()}")
        return protocol.decode_worker_message(payload)

    def receive_eof(self):
        """Asserts that the worker's end closes with nothing more sent. A worker
        that exits with bytes of ours unread resets the connection instead of
        closing it: that is its end too."""
        try:
            payload = protocol.read_frame(self.sock, self.decoder)
        except ConnectionResetError:
            return
        assert payload is None, protocol.decode_worker_message(payload)

    def handshake(self, params="{}", input="Range", input_path=None, worker_id=0):
        hello = self.receive()
        assert hello == Hello(PROTOCOL_VERSION, self.proc.pid), hello
        self.send(Welcome(PROTOCOL_VERSION, worker_id, params, input, input_path))

    # The process ------------------------------------------------------------

    def wait_line(self, needle):
        """Reads the worker's stdout until a line containing `needle`."""
        stdout = self.proc.stdout
        while True:
            ready, _, _ = select.select([stdout], [], [], PATIENCE)
            if not ready:
                raise AssertionError(f"no line {needle!r} within {PATIENCE}s")
            line = stdout.readline().decode()
            if not line:
                raise AssertionError(f"stdout ended before {needle!r}; stderr:\n{self.stderr()}")
            if needle in line:
                return line

    def stdout_rest(self):
        return self.proc.stdout.read().decode()

    def wait(self):
        try:
            return self.proc.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not exit within {PATIENCE}s")

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=PATIENCE)
        self.proc.stdout.close()
        if self.sock is not None:
            self.sock.close()


class ServeTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.folder = self.tmp.name
        with open(os.path.join(self.folder, "handlers.py"), "w") as f:
            f.write(HANDLERS)
        self.workers = []

    def tearDown(self):
        for worker in self.workers:
            worker.close()
        self.tmp.cleanup()

    def start(self, handler, *, init=None, **kwargs):
        argv = ["-m", "supervisor_worker"] + (["--init", init] if init else []) + [handler]
        worker = Worker(self.folder, argv, **kwargs)
        self.workers.append(worker)
        return worker


class Conversation(ServeTestCase):
    def test_handshake_assigns_answered_in_order_then_stop_exits_0(self):
        worker = self.start("handlers:squares")
        worker.handshake(params='{"modulus":7}', worker_id=3)
        chunks = [Assign(i, i * 100, i * 100 + 100, 1, i * 100) for i in range(20)]
        worker.send(*chunks[:10])
        worker.send(*chunks[10:], Stop())
        for chunk in chunks:
            answer = worker.receive()
            self.assertIs(type(answer), Done, answer)
            self.assertEqual(answer.index, chunk.index)
            expected = sum((i * i) % 7 for i in range(chunk.start, chunk.end))
            self.assertEqual(json.loads(answer.output), expected)
        worker.receive_eof()
        self.assertEqual(worker.wait(), 0, worker.stderr())

    def test_the_chunk_carries_the_assign_and_the_welcome(self):
        worker = self.start("handlers.py:echo")
        worker.handshake(params='{"greeting": "gr\\u00fc\\u00dfe"}', worker_id=2)
        worker.send(Assign(7, 700, 800, 2, 650), Assign(2**64 - 1, 0, 0, 2**32 - 1, 5), Stop())
        first = worker.receive()
        self.assertEqual(
            json.loads(first.output),
            {
                "index": 7, "start": 700, "end": 800, "attempt": 2, "first_item": 650,
                "worker_id": 2, "params": {"greeting": "grüße"}, "input": "range",
                "path": None, "cancelled": False,
            },
        )
        second = worker.receive()
        self.assertEqual(second.index, 2**64 - 1)
        self.assertEqual(json.loads(second.output)["attempt"], 2**32 - 1)
        self.assertEqual(worker.wait(), 0)

    def test_empty_params_read_as_an_empty_object(self):
        worker = self.start("handlers:echo")
        worker.handshake(params="")
        worker.send(Assign(0, 0, 1, 1, 0), Stop())
        self.assertEqual(json.loads(worker.receive().output)["params"], {})
        self.assertEqual(worker.wait(), 0)

    def test_return_values_exceptions_and_elapsed_time(self):
        worker = self.start("handlers:kinds")
        worker.handshake()
        worker.send(*[Assign(i, 0, 1, 1, 0) for i in range(11)], Stop())
        answers = [worker.receive() for _ in range(11)]
        self.assertEqual([a.index for a in answers], list(range(11)))
        self.assertEqual(answers[0].output, b"\x00\xff raw")
        self.assertEqual(answers[1].output, "héllo".encode())
        self.assertEqual(answers[2].output, b"")
        self.assertEqual(json.loads(answers[3].output), {"a": [1, 2]})
        self.assertEqual(answers[4].output, b"12345")
        failed = answers[5]
        self.assertIs(type(failed), Failed, failed)
        self.assertTrue(failed.error.startswith("ValueError: bad chunk 5\n"), failed.error)
        self.assertIn("Traceback", failed.error)
        self.assertIn('raise ValueError(f"bad chunk {i}")', failed.error)
        self.assertNotIn("serve.py", failed.error)
        self.assertIs(type(answers[6]), Failed, answers[6])
        self.assertIn("not JSON serializable", answers[6].error)
        self.assertEqual(answers[7].output, b"ba")
        self.assertGreaterEqual(answers[8].elapsed_ns, 20_000_000)
        too_large = answers[9]
        self.assertIs(type(too_large), Failed)
        self.assertIn(f"output of {64 * 1024 * 1024 - 27} bytes does not fit", too_large.error)
        self.assertEqual(answers[10].output, b"other")
        self.assertEqual(worker.wait(), 0, worker.stderr())

    def test_the_largest_output_that_fits_is_sent(self):
        # kinds' chunk 9 returns one byte too many; this returns exactly the most.
        with open(os.path.join(self.folder, "biggest.py"), "w") as f:
            f.write("def run(chunk):\n    return b'y' * (64 * 1024 * 1024 - 28)\n")
        worker = self.start("biggest:run")
        worker.handshake()
        worker.send(Assign(0, 0, 1, 1, 0), Stop())
        done = worker.receive()
        self.assertIs(type(done), Done)
        self.assertEqual(len(done.output), 64 * 1024 * 1024 - 28)
        self.assertEqual(worker.wait(), 0)


class Batching(ServeTestCase):
    def test_a_quick_failure_is_not_held_back_by_the_long_chunk_after_it(self):
        worker = self.start("handlers:fails_then_runs_long")
        worker.handshake()
        worker.send(Assign(0, 0, 1, 1, 0), Assign(1, 1, 2, 1, 1))
        # Chunk 1 runs until cancelled: the failure must arrive before that.
        failed = worker.receive()
        self.assertIs(type(failed), Failed, failed)
        self.assertEqual(failed.index, 0)
        worker.wait_line("running 1")
        worker.send(Cancel(1), Stop())
        self.assertEqual(worker.receive(), Cancelled(1))
        self.assertEqual(worker.wait(), 0, worker.stderr())


class Cancelling(ServeTestCase):
    def test_a_queued_chunk_is_answered_cancelled_in_its_place_and_the_running_one_gives_up(self):
        worker = self.start("handlers:until_cancelled")
        worker.handshake()
        worker.send(*[Assign(i, i, i + 1, 1, i) for i in range(3)])
        worker.wait_line("running 0")
        # 1 is queued, 0 is running, 99 was never assigned (ignored).
        worker.send(Cancel(1), Cancel(99), Cancel(0))
        self.assertEqual(worker.receive(), Cancelled(0))
        self.assertEqual(worker.receive(), Cancelled(1))
        done = worker.receive()
        self.assertEqual((type(done), done.index, done.output), (Done, 2, b"ran 2"))
        # A Cancel for a chunk already answered is ignored too.
        worker.send(Cancel(2), Stop())
        worker.receive_eof()
        self.assertEqual(worker.wait(), 0, worker.stderr())
        self.assertNotIn("running 1", worker.stdout_rest())

    def test_a_cancelled_chunk_that_raises_is_answered_cancelled(self):
        worker = self.start("handlers:raises_when_cancelled")
        worker.handshake()
        worker.send(Assign(5, 0, 1, 1, 0))
        worker.wait_line("running 5")
        worker.send(Cancel(5), Stop())
        self.assertEqual(worker.receive(), Cancelled(5))
        self.assertEqual(worker.wait(), 0)

    def test_stop_answers_everything_queued_honouring_cancels_that_follow(self):
        worker = self.start("handlers:until_cancelled")
        worker.handshake()
        worker.send(*[Assign(i, i, i + 1, 1, i) for i in range(5)], Stop())
        worker.wait_line("running 0")
        worker.send(Cancel(3), Cancel(0))
        answers = [worker.receive() for _ in range(5)]
        self.assertEqual(
            [(type(a).__name__, a.index) for a in answers],
            [("Cancelled", 0), ("Done", 1), ("Done", 2), ("Cancelled", 3), ("Done", 4)],
        )
        worker.receive_eof()
        self.assertEqual(worker.wait(), 0)


class Endings(ServeTestCase):
    def test_the_end_of_the_stream_ends_the_worker_mid_chunk(self):
        worker = self.start("handlers:until_cancelled")
        worker.handshake()
        worker.send(Assign(0, 0, 1, 1, 0), Assign(1, 1, 2, 1, 1))
        worker.wait_line("running 0")
        worker.sock.close()
        self.assertEqual(worker.wait(), 0, worker.stderr())
        self.assertNotIn("running 1", worker.stdout_rest())

    def test_the_end_of_the_stream_in_the_middle_of_a_frame_ends_an_idle_worker(self):
        worker = self.start("handlers:echo")
        worker.handshake()
        worker.send_raw(protocol.encode(Assign(0, 0, 1, 1, 0))[:10])
        worker.sock.shutdown(socket.SHUT_WR)
        worker.receive_eof()
        self.assertEqual(worker.wait(), 0, worker.stderr())

    def test_a_version_mismatch_names_both_versions_and_exits_non_zero(self):
        worker = self.start("handlers:echo")
        hello = worker.receive()
        self.assertEqual(hello.protocol_version, 3)
        worker.send(Welcome(4, 0, "{}"))
        self.assertNotEqual(worker.wait(), 0)
        self.assertIn(
            "protocol version mismatch: the worker speaks version 3, the supervisor version 4",
            worker.stderr(),
        )

    def test_a_supervisor_that_refuses_the_handshake_ends_the_worker(self):
        worker = self.start("handlers:echo")
        worker.receive()
        worker.sock.close()
        self.assertNotEqual(worker.wait(), 0)
        self.assertIn("closed the connection before its Welcome", worker.stderr())

    def test_unreadable_messages_end_the_worker_with_status_1(self):
        cases = {
            "unknown variant": protocol.encode(Stop())[:4] + b"\x09\x00\x00\x00",
            "trailing": b"\x05\x00\x00\x00" + b"\x03\x00\x00\x00\x00",
            "exceeds the limit": b"\xff\xff\xff\x7f",
            "after Stop": protocol.encode(Stop()) + protocol.encode(Assign(0, 0, 1, 1, 0)),
            "a second Welcome": protocol.encode(Welcome(2, 0, "{}")),
        }
        for needle, data in cases.items():
            with self.subTest(needle):
                worker = self.start("handlers:echo")
                worker.handshake()
                worker.send_raw(data)
                self.assertEqual(worker.wait(), 1, worker.stderr())
                self.assertIn("the supervisor broke the protocol", worker.stderr())
                self.assertIn(needle, worker.stderr())

    def test_without_the_variable_it_says_so_and_exits_non_zero(self):
        worker = self.start("handlers:echo", fd=False)
        self.assertNotEqual(worker.wait(), 0)
        self.assertIn("not started by a supervisor: SUPERVISOR_WORKER_FD is not set", worker.stderr())
        worker = self.start("handlers:echo", fd=False, env={"SUPERVISOR_WORKER_FD": "0"})
        self.assertNotEqual(worker.wait(), 0)
        self.assertIn("not a socket", worker.stderr())

    def test_the_setup_function_runs_once_with_the_params_before_the_first_chunk(self):
        with open(os.path.join(self.folder, "setup.py"), "w") as f:
            f.write(
                "calls = []\n"
                "def setup(params):\n"
                "    calls.append(params)\n"
                "def handler(chunk):\n"
                "    return [calls, chunk.index]\n"
            )
        worker = self.start("setup.py:handler", init="setup.py:setup")
        worker.handshake(params='{"model": "m.bin"}')
        worker.send(Assign(0, 0, 1, 1, 0), Assign(1, 1, 2, 1, 1), Stop())
        outputs = [json.loads(worker.receive().output) for _ in range(2)]
        self.assertEqual(outputs, [[[{"model": "m.bin"}], 0], [[{"model": "m.bin"}], 1]])
        self.assertEqual(worker.wait(), 0, worker.stderr())

    def test_a_setup_function_that_raises_ends_the_worker_before_any_answer(self):
        with open(os.path.join(self.folder, "setup.py"), "w") as f:
            f.write(
                "def setup(params):\n"
                "    raise FileNotFoundError(params['model'])\n"
                "def handler(chunk):\n"
                "    return chunk.index\n"
            )
        worker = self.start("setup.py:handler", init="setup.py:setup")
        worker.handshake(params='{"model": "m.bin"}')
        worker.send(Assign(0, 0, 1, 1, 0))
        self.assertEqual(worker.wait(), 1)
        worker.receive_eof()
        stderr = worker.stderr()
        self.assertIn("the setup function failed: FileNotFoundError: m.bin", stderr)
        self.assertIn("in setup", stderr)

    def test_a_handler_that_cannot_be_loaded_is_reported(self):
        for spec, needle in [
            ("nowhere:run", "No module named 'nowhere'"),
            ("handlers:missing", "has no 'missing'"),
            ("missing.py:run", "no such file"),
            ("handlers", "is not MODULE:FUNC"),
        ]:
            with self.subTest(spec):
                worker = self.start(spec)
                self.assertNotEqual(worker.wait(), 0)
                self.assertIn(needle, worker.stderr())

    def test_the_socket_is_not_inherited_by_programs_the_handler_starts(self):
        with open(os.path.join(self.folder, "inherit.py"), "w") as f:
            f.write(textwrap.dedent(
                """
                import os, subprocess, sys
                def run(chunk):
                    fd = int(os.environ["SUPERVISOR_WORKER_FD"])
                    probe = f"import os; os.fstat({fd})"
                    # close_fds=False: only close-on-exec can keep it out.
                    child = subprocess.run([sys.executable, "-c", probe], close_fds=False)
                    return child.returncode
                """
            ))
        worker = self.start("inherit:run")
        worker.handshake()
        worker.send(Assign(0, 0, 1, 1, 0), Stop())
        self.assertEqual(worker.receive().output, b"1")
        self.assertEqual(worker.wait(), 0)


class Files(ServeTestCase):
    def test_read_and_lines_give_the_chunks_bytes_of_a_file_input(self):
        path = os.path.join(self.folder, "input.txt")
        with open(path, "wb") as f:
            f.write(b"alpha\nbeta\r\ngamma\ndelta")
        worker = self.start("handlers:file_bytes")
        worker.handshake(input="Lines", input_path=path)
        worker.send(Assign(0, 0, 6, 1, 0), Assign(1, 6, 18, 1, 1), Assign(2, 18, 23, 1, 3))
        worker.send(Assign(3, 23, 23, 1, 4), Stop())
        got = [json.loads(worker.receive().output) for _ in range(4)]
        self.assertEqual([g["data"] for g in got], ["alpha\n", "beta\r\ngamma\n", "delta", ""])
        self.assertEqual([g["lines"] for g in got], [["alpha"], ["beta\r", "gamma"], ["delta"], []])
        self.assertEqual({g["input"] for g in got}, {"lines"})
        self.assertEqual({g["path"] for g in got}, {path})
        self.assertEqual(worker.wait(), 0)

    def test_read_fails_the_chunk_clearly_for_a_range_or_a_shrunk_file(self):
        worker = self.start("handlers:read_range")
        worker.handshake()
        worker.send(Assign(0, 0, 10, 1, 0), Stop())
        failed = worker.receive()
        self.assertIs(type(failed), Failed)
        self.assertIn("the job's source is a range", failed.error)
        self.assertEqual(worker.wait(), 0)

        path = os.path.join(self.folder, "short.bin")
        with open(path, "wb") as f:
            f.write(b"0123456789")
        worker = self.start("handlers:read_range")
        worker.handshake(input="File", input_path=path)
        worker.send(Assign(0, 2, 6, 1, 2), Assign(1, 6, 20, 1, 6), Stop())
        self.assertEqual(worker.receive().output, b"2345")
        failed = worker.receive()
        self.assertIs(type(failed), Failed)
        self.assertIn("ends before byte 20", failed.error)
        self.assertEqual(worker.wait(), 0)


    def test_read_and_lines_give_the_bytes_a_stdin_chunk_came_with(self):
        worker = self.start("handlers:file_bytes")
        worker.handshake(input="Stdin")
        worker.send(
            AssignData(0, 0, 11, 1, 0, b"alpha\nbeta\n"),
            AssignData(1, 11, 16, 2, 11, b"gamma"),
            Stop(),
        )
        got = [json.loads(worker.receive().output) for _ in range(2)]
        self.assertEqual([g["data"] for g in got], ["alpha\nbeta\n", "gamma"])
        self.assertEqual([g["lines"] for g in got], [["alpha", "beta"], ["gamma"]])
        self.assertEqual({g["input"] for g in got}, {"stdin"})
        self.assertEqual({g["path"] for g in got}, {None})
        self.assertEqual(worker.wait(), 0)


class Signals(ServeTestCase):
    def test_sigint_and_a_sigterm_from_elsewhere_are_ignored_the_parents_sigterm_is_not(self):
        worker = self.start("handlers:until_cancelled")
        worker.handshake()
        worker.send(Assign(0, 0, 1, 1, 0))
        worker.wait_line("running 0")
        os.kill(worker.proc.pid, signal.SIGINT)
        # A sender that is not the parent: a process of its own.
        subprocess.run(["kill", "-TERM", str(worker.proc.pid)], check=True, timeout=PATIENCE)
        # The chunk runs on and is answered: the worker survived both.
        worker.send(Cancel(0), Assign(1, 1, 2, 1, 1))
        self.assertEqual(worker.receive(), Cancelled(0))
        self.assertEqual(worker.receive().output, b"ran 1")
        self.assertIsNone(worker.proc.poll())
        self.assertRegex(
            worker.stderr(),
            r"supervisor_worker: ignoring SIGTERM from pid \d+; "
            r"the supervisor decides when workers stop",
        )
        # The test is the worker's parent: its SIGTERM ends the worker at once.
        worker.send(Assign(2, 0, 1, 1, 0))
        os.kill(worker.proc.pid, signal.SIGTERM)
        self.assertEqual(worker.wait(), -signal.SIGTERM)


class LibraryApi(ServeTestCase):
    def test_serve_from_a_script_of_ones_own(self):
        with open(os.path.join(self.folder, "script.py"), "w") as f:
            f.write(SCRIPT)
        worker = Worker(self.folder, ["script.py"])
        self.workers.append(worker)
        worker.handshake()
        worker.send(Assign(21, 0, 1, 1, 0), Stop())
        done = worker.receive()
        self.assertEqual((type(done), done.index, done.output), (Done, 21, b"42"))
        worker.receive_eof()
        self.assertEqual(worker.wait(), 0, worker.stderr())
        self.assertIn("served", worker.stderr())

    def test_help_runs_without_a_supervisor(self):
        run = subprocess.run(
            [sys.executable, "-m", "supervisor_worker", "--help"],
            env=dict(os.environ, PYTHONPATH=SRC),
            capture_output=True,
            timeout=PATIENCE,
        )
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn(b"MODULE:FUNC", run.stdout)


if __name__ == "__main__":
    unittest.main()
