"""supervisor_worker.map as a user meets it: the wheel installed in a fresh
venv (`pip install .`), scripts written to a scratch folder and run with that
venv's python as programs of their own, the real supervisor and workers under
them. Run by scripts/test as

    VENV/bin/python -m unittest discover -s worker/python/wheel_tests

Each program carries a tag in its environment, which the supervisor and every
worker inherit; after each run no process may still hold it.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
import uuid

import supervisor_worker as sw

#: A safety net against a hung test, not a timing assertion.
PATIENCE = 120
TAG = "SUPERVISOR_WORKER_TEST_TAG"
SEED_TOTAL = 49259937824

SEED = """
import supervisor_worker as sw

def heavy_chunk(start, end):
    return sum(i * i % 10007 for i in range(start, end))

if __name__ == "__main__":
    total = sum(sw.map(heavy_chunk, range(0, 10_000_000), chunk=100_000, workers=2))
    print(total)
"""


def tagged_processes(tag):
    """Pids of live processes whose environment holds `tag`."""
    needle = f"{TAG}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


class Program:
    """A script in a scratch folder, run with this venv's python."""

    def __init__(self, test, source, files=None):
        self.test = test
        self.dir = tempfile.mkdtemp(prefix="sw-test-")
        test.addCleanup(lambda: subprocess.run(["rm", "-rf", self.dir]))
        self.path = os.path.join(self.dir, "program.py")
        with open(self.path, "w") as f:
            f.write(textwrap.dedent(source))
        for name, text in (files or {}).items():
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(textwrap.dedent(text))
        self.tag = uuid.uuid4().hex
        env = dict(os.environ)
        env.pop("SUPERVISOR_BIN", None)
        env.pop("PYTHONPATH", None)
        env[TAG] = self.tag
        self.env = env

    def start(self, *args):
        return subprocess.Popen(
            [sys.executable, self.path, *args],
            cwd=self.dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def finish(self, proc):
        try:
            out, err = proc.communicate(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            self.test.fail(f"the program hung; stderr:\n{err}")
        self.assert_no_orphans()
        return proc.returncode, out, err

    def run(self, *args):
        return self.finish(self.start(*args))

    def file(self, name):
        return os.path.join(self.dir, name)

    def assert_no_orphans(self):
        deadline = time.monotonic() + 10
        while True:
            left = tagged_processes(self.tag)
            if not left:
                return
            if time.monotonic() > deadline:
                details = []
                for pid in left:
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            cmdline = f.read().replace(b"\0", b" ").decode()
                        details.append(f"{pid}: {cmdline}")
                    except OSError:
                        pass
                self.test.fail("processes outlived the run:\n" + "\n".join(details))
            time.sleep(0.05)


def wait_for(predicate, what):
    deadline = time.monotonic() + PATIENCE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class InstalledTest(unittest.TestCase):
    def test_the_wheel_is_what_is_tested(self):
        here = os.path.dirname(os.path.abspath(sw.__file__))
        self.assertNotIn(os.path.join("worker", "python", "src"), here)
        binary = sw.find_supervisor_bin()
        self.assertEqual(os.path.dirname(binary), os.path.dirname(sys.executable))
        for helper in ("exec-worker", "count-worker"):
            self.assertTrue(os.access(os.path.join(os.path.dirname(binary), helper), os.X_OK), helper)


class MapTest(unittest.TestCase):
    def test_the_seed_program_runs_unchanged(self):
        program = Program(self, SEED)
        code, out, err = program.run()
        self.assertEqual(code, 0, err)
        self.assertEqual(out.strip(), str(SEED_TOTAL))
        self.assertIn("100 of 100 chunks done", err)

    def test_inside_an_array_task_map_still_runs_the_whole_job(self):
        program = Program(self, SEED)
        program.env.update(SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="4",
                           SLURM_ARRAY_TASK_MIN="0", SLURM_ARRAY_TASK_MAX="3",
                           SLURM_ARRAY_TASK_STEP="1")
        code, out, err = program.run()
        self.assertEqual(code, 0, err)
        self.assertEqual(out.strip(), str(SEED_TOTAL))
        self.assertIn("100 of 100 chunks done", err)

    def test_functions_from_main_and_from_a_module_and_the_guard(self):
        program = Program(
            self,
            """
            import os, sys
            import supervisor_worker as sw
            from helpers import triple

            # Runs again in every worker, which imports this script by path.
            with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "imports.log"), "a") as f:
                f.write(__name__ + "\\n")

            def span(start, end):
                return [start, end, os.getcwd()]

            if __name__ == "__main__":
                spans = list(sw.map(span, range(0, 10), chunk=3, workers=2))
                print(spans)
                assert [s[:2] for s in spans] == [[0, 3], [3, 6], [6, 9], [9, 10]], spans
                assert all(s[2] == os.getcwd() for s in spans), spans
                assert list(sw.map(triple, range(5, 9), chunk=2, workers=1)) == [5 * 3 + 6 * 3, 7 * 3 + 8 * 3]
                print("ok")
            """,
            files={"helpers.py": "def triple(start, end):\n    return sum(3 * i for i in range(start, end))\n"},
        )
        code, out, err = program.run()
        self.assertEqual(code, 0, err)
        self.assertTrue(out.endswith("ok\n"), out)
        with open(program.file("imports.log")) as f:
            names = f.read().split()
        # The launcher once as __main__; a worker of the first map as
        # __mp_main__ (one may not have started before the other finished;
        # the second map's function is not in the script).
        self.assertEqual(names.count("__main__"), 1, names)
        self.assertIn(names.count("__mp_main__"), (1, 2), names)
        self.assertEqual(len(names), 1 + names.count("__mp_main__"), names)

    def test_an_initializer_runs_once_per_worker_before_its_chunks(self):
        program = Program(
            self,
            """
            import os
            import supervisor_worker as sw

            table = None

            def load(scale, folder):
                global table
                assert table is None
                table = {"scale": scale}
                with open(os.path.join(folder, "init.log"), "a") as f:
                    f.write(f"{os.getpid()}\\n")

            def scaled(start, end):
                return [table["scale"] * start, os.getpid()]

            if __name__ == "__main__":
                here = os.path.dirname(os.path.abspath(__file__))
                results = list(sw.map(scaled, range(0, 40), chunk=1, workers=2,
                                      initializer=load, initargs=(10, here)))
                assert [r[0] for r in results] == [10 * i for i in range(40)], results
                print(" ".join(sorted({str(r[1]) for r in results})))
            """,
        )
        code, out, err = program.run()
        self.assertEqual(code, 0, err)
        with open(program.file("init.log")) as f:
            inits = f.read().split()
        # Once per worker process, and every process that ran a chunk ran it.
        self.assertEqual(len(inits), len(set(inits)), inits)
        self.assertLessEqual(len(inits), 2, inits)
        self.assertLessEqual(set(out.split()), set(inits), (out, inits))

    def test_an_initializer_that_raises_stops_the_workers_at_start_up(self):
        program = Program(
            self,
            """
            import supervisor_worker as sw

            def broken_setup():
                raise ValueError("the lookup table is missing")

            def work(start, end):
                return start

            if __name__ == "__main__":
                try:
                    list(sw.map(work, range(0, 10), chunk=1, workers=4, initializer=broken_setup))
                except sw.RunAborted as e:
                    print("aborted:", e)
            """,
        )
        code, out, err = program.run()
        self.assertEqual(code, 0, err)
        self.assertIn("aborted: the run was aborted: worker", out)
        self.assertIn("could not start (exit status 1)", out)
        self.assertIn("ValueError: the lookup table is missing", out)
        self.assertIn("in broken_setup", err)

    def test_a_chunk_that_fails_for_good_raises_with_every_failure(self):
        program = Program(
            self,
            """
            import json
            import supervisor_worker as sw

            # Two functions in turn: a traceback does not fold their frames.
            def ping(n, start):
                if n == 0:
                    raise ValueError(f"bad item {start}")
                return pong(n - 1, start)

            def pong(n, start):
                return ping(n - 1, start)

            def outermost_frame(start, end):
                if start in (30, 70):
                    return ping(30, start)
                return start

            if __name__ == "__main__":
                seen = []
                try:
                    for value in sw.map(outermost_frame, range(0, 100), chunk=10, workers=2, retries=1):
                        seen.append(value)
                except sw.ChunkFailed as e:
                    print(json.dumps({
                        "seen": seen, "index": e.index, "start": e.start, "end": e.end,
                        "attempts": len(e.attempts), "error": e.error, "message": str(e),
                        "failures": [[f.index, len(f.attempts)] for f in e.failures],
                        "exit_code": e.exit_code,
                    }))
            """,
        )
        code, out, err = program.run()
        self.assertEqual(code, 0, err)
        got = json.loads(out)
        self.assertEqual(got["seen"], [0, 10, 20])
        self.assertEqual((got["index"], got["start"], got["end"]), (3, 30, 40))
        self.assertEqual(got["attempts"], 2)
        self.assertEqual(got["failures"], [[3, 2], [7, 2]])
        self.assertEqual(got["exit_code"], 1)
        self.assertIn("chunk 3 (items [30, 40)) failed for good after 2 attempts", got["message"])
        self.assertIn("2 chunks failed in all: 3, 7", got["message"])
        # The whole traceback, from the function map called to the raise.
        error = got["error"]
        self.assertIn("in outermost_frame", error)
        self.assertGreaterEqual(error.count("in ping") + error.count("in pong"), 30)
        self.assertIn("ValueError: bad item 30", error)

    def test_a_worker_that_cannot_import_the_function(self):
        program = Program(
            self,
            """
            import supervisor_worker as sw

            if __name__ != "__main__":
                import a_module_only_the_launcher_has

            def work(start, end):
                return start

            if __name__ == "__main__":
                try:
                    list(sw.map(work, range(0, 10), chunk=1, workers=4))
                except sw.RunAborted as e:
                    print("aborted:", e, "| exit", e.exit_code)
            """,
        )
        code, out, err = program.run()
        self.assertEqual(code, 0, err)
        # The first worker that dies before any said hello ends the run at
        # once, and the exception carries what it said on stderr.
        self.assertIn("aborted: the run was aborted: worker", out)
        self.assertIn("could not start (exit status 1)", out)
        self.assertIn("ModuleNotFoundError: No module named 'a_module_only_the_launcher_has'", out)
        self.assertIn("exit 3", out)
        self.assertNotIn("workers crashed", out + err)

    def test_ctrl_c_drains_and_the_same_name_resumes(self):
        program = Program(
            self,
            """
            import os, sys, time
            import supervisor_worker as sw

            here = os.path.dirname(os.path.abspath(__file__))

            def slow(start, end):
                with open(os.path.join(here, "ran.log"), "a") as f:
                    f.write(f"{start}\\n")
                open(os.path.join(here, f"started-{start}"), "w").close()
                if start >= 2:
                    while not os.path.exists(os.path.join(here, "release")):
                        time.sleep(0.01)
                return start * 2

            if __name__ == "__main__":
                # Other params: another job, which the journal refuses to resume.
                changed = {"params": {"changed": True}} if sys.argv[1:] == ["changed"] else {}
                try:
                    for value in sw.map(slow, range(0, 12), chunk=1, workers=2, name="slow", **changed):
                        print(value, flush=True)
                except KeyboardInterrupt:
                    print("interrupted", flush=True)
                    sys.exit(42)
                except sw.JobRefused as e:
                    print("refused:", e, flush=True)
                    sys.exit(43)
                print("finished", flush=True)
            """,
        )
        proc = program.start()

        def release():
            with open(program.file("release"), "w"):
                pass

        def stop_if_running():
            release()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()

        self.addCleanup(stop_if_running)
        # Chunks 0 and 1 are done; chunk 2 runs, held until released (the
        # chunks after it wait, at a worker or in the supervisor).
        wait_for(lambda: os.path.exists(program.file("started-2")), "chunk 2 to start")
        os.killpg(proc.pid, signal.SIGINT)
        # The drain lets the chunks in flight finish.
        release()
        code, out, err = program.finish(proc)
        self.assertEqual(code, 42, err)
        first = out.split()
        self.assertEqual(first[-1], "interrupted", out)
        self.assertEqual(first[:-1], [str(2 * i) for i in range(len(first) - 1)], out)
        self.assertIn("stopped after a drain", err)
        self.assertTrue(os.path.isfile(program.file(".supervisor/slow/state/journal")),
                        os.listdir(program.file(".supervisor/slow")))
        with open(program.file("ran.log")) as f:
            ran_first = f.read().split()

        code, out, err = program.run()
        self.assertEqual(code, 0, err)
        self.assertEqual(out.split(), [str(2 * i) for i in range(12)] + ["finished"])
        self.assertIn("resuming", err)
        with open(program.file("ran.log")) as f:
            ran = f.read().split()
        # Every chunk ran exactly once over the two runs: what the first
        # finished (the drained ones too) the second did not run again.
        self.assertEqual(sorted(ran, key=int), [str(i) for i in range(12)], ran)
        self.assertGreaterEqual(len(ran_first), 3)

        # A changed job is refused, and nothing of the earlier output is
        # yielded as if it were this job's.
        code, out, err = program.run("changed")
        self.assertEqual(code, 43, err)
        self.assertTrue(out.startswith("refused: the supervisor refused the job (exit status 2)"), out)
        self.assertIn("pass fresh=True", out)
        self.assertIn("the job changed", err)

    def test_a_lines_source_and_a_blocks_source(self):
        program = Program(
            self,
            """
            import supervisor_worker as sw

            def summed(lines):
                return [len(lines), sum(int(line.split()[0]) for line in lines), lines[0]]

            def counted(data):
                return data.count(b"\\n")

            if __name__ == "__main__":
                with open("input.txt", "w", encoding="utf-8") as f:
                    for i in range(1000):
                        f.write(f"{i} ünïcode line\\n")
                results = list(sw.map(summed, "input.txt", chunk=100, workers=2))
                assert [r[0] for r in results] == [100] * 10, results
                assert sum(r[1] for r in results) == sum(range(1000))
                assert results[3][2] == "300 ünïcode line", results[3]
                done = list(sw.map(summed, "input.txt", chunk=100, workers=2, order="completion"))
                assert sorted(done) == sorted(results), done
                blocks = list(sw.map(counted, sw.Blocks("input.txt"), chunk=4096, workers=2))
                assert sum(blocks) == 1000 and len(blocks) > 1, blocks
                print("ok")
            """,
        )
        code, out, err = program.run()
        self.assertEqual(code, 0, err)
        self.assertEqual(out, "ok\n")

    def test_huge_outputs(self):
        program = Program(
            self,
            """
            import supervisor_worker as sw

            def big(start, end):
                return {"start": start, "text": chr(ord("a") + start) * (6 << 20)}

            if __name__ == "__main__":
                sizes = [(r["start"], len(r["text"]), r["text"][:1]) for r in sw.map(big, range(0, 6), chunk=1, workers=2)]
                print(sizes)
                assert sizes == [(i, 6 << 20, chr(ord("a") + i)) for i in range(6)], sizes
            """,
        )
        code, out, err = program.run()
        self.assertEqual(code, 0, err)


if __name__ == "__main__":
    unittest.main()
