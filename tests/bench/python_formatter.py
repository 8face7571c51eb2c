"""The reference point of the throughput targets: the original Python module's
formatter, as its summary describes it (../shared/seed): an instruction and
input per record type, the health domain, the metadata, json.dumps of the
line, a SHA-256 content hash. No dedup store, no S3, no spool: what the
original module spent on the CPU per example before its network calls.

    python3 tests/bench/python_formatter.py [CALLS] [ROUNDS]

Prints examples/s (median of the rounds) for the ~1.6 KB example of
tests/bench/bench_example.hpp.
"""
import hashlib
import json
import statistics
import sys
import time
from datetime import datetime, timezone

from bench_example import MESSAGE, RESULT, narrative

DOMAINS = {
    "BloodGlucoseRecord": "metabolic_diabetes",
    "HeartRateRecord": "cardiovascular_fitness",
    "HeartRateVariabilityRmssdRecord": "cardiovascular_fitness",
    "SleepSessionRecord": "sleep_wellness",
    "StepsRecord": "physical_activity",
    "ActiveCaloriesBurnedRecord": "physical_activity",
}
INSTRUCTIONS = {
    "BloodGlucoseRecord": "Analyze this blood glucose data and provide clinical insights.",
    "HeartRateRecord": "Analyze this heart rate data and provide clinical insights.",
    "SleepSessionRecord": "Analyze this sleep data and provide clinical insights.",
    "StepsRecord": "Analyze this step count data and provide clinical insights.",
}
INPUTS = {
    "BloodGlucoseRecord": "Blood glucose data including fasting, post-meal, and overnight readings.",
    "HeartRateRecord": "Heart rate data including resting and active measurements.",
    "SleepSessionRecord": "Sleep session data including duration and stages.",
    "StepsRecord": "Daily step count data.",
}

def format_example(text: str, message: dict, result: dict, prefix: str = "training"):
    record_type = message.get("record_type", "Unknown")
    domain = DOMAINS.get(record_type, "general_health")
    description = INPUTS.get(record_type, f"Health data of type {record_type}.")
    count = result.get("record_count")
    example = {
        "instruction": INSTRUCTIONS.get(record_type, "Analyze this health data and provide clinical insights."),
        "input": f"{description} Total measurements: {count}." if count else description,
        "output": text,
        "metadata": {
            "record_type": record_type,
            "user_id": message.get("user_id"),
            "correlation_id": message.get("correlation_id"),
            "processing_timestamp": result.get("processing_timestamp") or datetime.now(timezone.utc).isoformat(),
            "source_bucket": message.get("bucket"),
            "source_key": message.get("key"),
            "quality_score": result.get("quality_score"),
            "record_count": count,
            "processing_duration_seconds": result.get("processing_time_seconds"),
            "clinical_insights": result.get("clinical_insights", {}),
            "health_domain": domain,
        },
    }
    when = datetime.fromisoformat(example["metadata"]["processing_timestamp"].replace("Z", "+00:00"))
    key = f"{prefix}/{domain}/{when:%Y}/{when:%m}/health_journal_{when:%Y}_{when:%m}.jsonl"
    content = json.dumps({k: example[k] for k in ("instruction", "input", "output")}, sort_keys=True)
    content_hash = hashlib.sha256(content.encode("utf-8")).hexdigest()
    return key, json.dumps(example) + "\n", f"training:{content_hash}"


def main() -> int:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    texts = [narrative("throughput", i) for i in range(calls)]
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for t in texts:
            format_example(t, MESSAGE, RESULT)
        rates.append(calls / (time.perf_counter() - start))
    print("the original module's Python formatter (format, json.dumps, SHA-256; no store, no I/O), "
          f"{calls} examples: {' '.join(f'{r:.0f}' for r in rates)} ex/s; median {statistics.median(rates):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
