"""The example the Python benchmarks use: the ~1.6 KB line of tests/bench/bench_example.hpp."""

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
