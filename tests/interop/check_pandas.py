"""Every JSONL file given loads in pandas (read_json(lines=True)), alone and all
concatenated (every record type mixed in one file), with the contract's columns."""
import json
import os
import sys
import tempfile

import pandas as pd

COLUMNS = ["instruction", "input", "output", "metadata"]
META = ["record_type", "user_id", "correlation_id", "processing_timestamp", "source_bucket", "source_key",
        "quality_score", "record_count", "processing_duration_seconds", "clinical_insights", "health_domain"]


def check(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        n = sum(1 for _ in f)
    df = pd.read_json(path, lines=True)
    assert list(df.columns) == COLUMNS, (path, list(df.columns))
    assert len(df) == n, (path, len(df), n)
    meta = pd.json_normalize(df["metadata"].tolist(), max_level=0)
    assert list(meta.columns) == META, (path, list(meta.columns))
    assert meta["health_domain"].notna().all()
    assert df["output"].str.len().min() > 0
    return n


def main(paths):
    total = sum(check(p) for p in paths)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as out:
        for p in paths:
            with open(p, encoding="utf-8") as f:
                out.write(f.read())
    try:
        assert check(out.name) == total
        types = set(pd.read_json(out.name, lines=True)["metadata"].map(lambda m: m["record_type"]))
        print(f"pandas: {len(paths)} files, {total} lines, {len(types)} record types: ok")
    finally:
        os.unlink(out.name)


if __name__ == "__main__":
    main(sys.argv[1:])
