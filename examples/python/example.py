"""The Python wrapper: load the built library with ctypes, write one example.

Run from the repository root after building:
    TDO_LIBRARY=build/libtraining_output_c.so python3 examples/python/example.py [OUTPUT_DIR]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "capi", "python"))

from training_output import Outcome, TrainingOutput, TrainingOutputError  # noqa: E402


def main() -> int:
    output_dir = sys.argv[1] if len(sys.argv) > 1 else "./training-data"
    try:
        with TrainingOutput({"output_dir": output_dir}) as writer:
            outcome = writer.generate(
                "Daily steps averaged 8,100 over 30 days, meeting the goal on 21 days.",
                {"record_type": "StepsRecord", "user_id": "user-3"},
                {"record_count": 30, "quality_score": 0.97, "clinical_insights": {"avg_daily_steps": 8100}},
            )
            print("outcome:", outcome.name)
            writer.flush()
            print("stats:", writer.stats())
    except TrainingOutputError as e:
        print(f"{e.status_name}: {e}", file=sys.stderr)
        return 1
    return 0 if outcome in (Outcome.WRITTEN, Outcome.DUPLICATE) else 1


if __name__ == "__main__":
    sys.exit(main())
