"""Single-thread throughput of the ctypes wrapper (the ~1.6 KB example of
tests/bench/bench_example.hpp, memory dedup store, local directory).

    TDO_LIBRARY=build/bench/libtraining_output_c.so python3 tests/bench/bench_ctypes.py [CALLS]

Two figures: through TrainingOutput.generate() with dict arguments (the wrapper
serializes them with json.dumps on every call), and with the JSON already
serialized (str arguments), which is what the library itself costs from Python.
"""
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "capi", "python"))

from training_output import Outcome, TrainingOutput  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from bench_example import MESSAGE, RESULT, narrative  # noqa: E402


def run(label: str, calls: int, message, result) -> None:
    texts = [narrative(label, i) for i in range(calls)]
    with tempfile.TemporaryDirectory() as d:
        with TrainingOutput({"output_dir": d, "dedup_store": "memory", "directory_fsync": False}) as w:
            start = time.perf_counter()
            for t in texts:
                if w.generate(t, message, result) != Outcome.WRITTEN:
                    raise SystemExit("not written")
            elapsed = time.perf_counter() - start
    print(f"throughput, ctypes ({label}): {calls} calls in {elapsed:.2f} s: {calls / elapsed:.0f} examples/s")


def main() -> int:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    run("dict arguments", calls, MESSAGE, RESULT)
    run("JSON strings", calls, json.dumps(MESSAGE), json.dumps(RESULT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
