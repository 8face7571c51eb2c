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

MESSAGE = {"record_type": "BloodGlucoseRecord", "user_id": "user-1042", "correlation_id": "c-7f3a-0001",
           "bucket": "health-data", "key": "raw/BloodGlucoseRecord/2025/11/18/user-1042.avro"}
RESULT = {"quality_score": 0.95, "record_count": 450, "processing_time_seconds": 2.3,
          "clinical_insights": {"control_status": "fair", "hypoglycemic_events": 3, "hyperglycemic_events": 45},
          "processing_timestamp": "2025-11-18T10:30:00Z"}


def narrative(who: str, i: int) -> str:
    n = (f"Blood glucose data for {who} example {i} shows 450 readings over a 30-day period with a mean of "
         "142.3 mg/dL (estimated A1c 6.6%). ")
    while len(n) < 950:
        n += "Time in range was 71% with post-dinner peaks averaging 212 mg/dL and three nocturnal lows. "
    return n


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
