"""Writers in multiprocessing workers: the pool example of docs/guide.md.

A worker opens its writer in the pool's initializer and never closes it.
When the pool is closed and joined, each worker exits normally, and the
wrapper closes its writers on the way out (a forked worker leaves with
os._exit, past atexit): every line is delivered, each once, and nothing is
left to drain. A `with Pool()` block ends with terminate(): the workers are
killed with their lines spooled (or while they deliver them), nothing is
lost, and drain() delivers the rest. A plain process that exits without closing its writer delivers too.

Run: TDO_LIBRARY=build/libtraining_output_c.so python3 tests/python/test_multiprocessing.py
"""
import glob
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "capi", "python"))

import training_output as tdo  # noqa: E402

LINES = 400
writer = None  # the worker's, opened by its initializer


def open_writer(config):
    global writer
    writer = tdo.TrainingOutput(config)


def handle(i):
    narrative = "Slept %d minutes; woke twice in batch %d." % (400 + i, i)
    message = {"record_type": "SleepSessionRecord", "user_id": "mp-user-%d" % i, "correlation_id": "mp-%d" % i}
    return writer.generate(narrative, message, {"record_count": 1 + i % 9}).name


def write_and_exit(config, first, count):
    """A process that opens a writer, writes, and returns without closing it."""
    open_writer(config)
    for i in range(first, first + count):
        handle(i)


class PoolTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="tdo-mp-")
        # Nothing is due before the interval: lines are delivered only by a close.
        self.config = {"output_dir": self.dir, "directory_fsync": False, "log_level": "off",
                       "flush_interval_ms": 600000}

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def written(self):
        out = []
        for path in glob.glob(os.path.join(self.dir, "training", "**", "*.jsonl"), recursive=True):
            with open(path, encoding="utf-8") as f:
                out.extend(json.loads(line)["output"] for line in f)
        return out

    def assert_each_once(self, count):
        lines = self.written()
        self.assertEqual(len(lines), count)
        self.assertEqual(len(set(lines)), count)

    def pool_close_join(self, method):
        context = multiprocessing.get_context(method)
        pool = context.Pool(2, initializer=open_writer, initargs=(self.config,))
        outcomes = pool.map(handle, range(LINES))
        pool.close()
        pool.join()
        self.assertEqual(outcomes.count("WRITTEN"), LINES)
        # Every line was delivered by its worker on the way out: none left to drain.
        self.assert_each_once(LINES)
        self.assertEqual(tdo.drain(self.config)["lines_recovered"], 0)

    def test_pool_close_join_delivers_every_line_fork(self):
        self.pool_close_join("fork")

    def test_pool_close_join_delivers_every_line_spawn(self):
        self.pool_close_join("spawn")

    def test_with_pool_terminate_loses_nothing_and_drain_delivers_the_rest(self):
        with multiprocessing.get_context("fork").Pool(2, initializer=open_writer, initargs=(self.config,)) as pool:
            outcomes = pool.map(handle, range(LINES))
        self.assertEqual(outcomes.count("WRITTEN"), LINES)
        delivered = len(self.written())
        report = tdo.drain(self.config)
        # A worker may have been killed while it closed: a batch it appended
        # without recording so is found in the object by the drain, not
        # written again, and counted apart.
        self.assertEqual(report["lines_appended"] - report["lines_found_landed"], LINES - delivered)
        self.assert_each_once(LINES)

    def test_a_process_that_exits_without_closing_delivers(self):
        for method in ("fork", "spawn"):
            with self.subTest(method=method):
                first = 0 if method == "fork" else LINES
                p = multiprocessing.get_context(method).Process(target=write_and_exit,
                                                                args=(self.config, first, LINES))
                p.start()
                p.join()
                self.assertEqual(p.exitcode, 0)
                self.assert_each_once(first + LINES)
        self.assertEqual(tdo.drain(self.config)["lines_recovered"], 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
