"""Every JSONL file given loads in pandas (read_json(lines=True)), alone and all
concatenated (every record type mixed in one file), with the contract's columns,
and each metadata field of one type on every line (null only where documented)."""
import os
import sys
import tempfile

import pandas as pd

FORMATS = {"alpaca": ["instruction", "input", "output", "metadata"], "chat": ["messages", "metadata"]}
META = ["schema_version", "record_type", "health_domain", "split", "user_id", "correlation_id",
        "pseudonymization_key_id", "processing_timestamp", "source_bucket", "source_key", "quality_score",
        "record_count", "processing_duration_seconds", "clinical_insights", "instruction_variant", "phi_redacted",
        "redactions", "content_hash", "config_fingerprint"]
NULLABLE = {"user_id", "correlation_id", "source_bucket", "source_key", "quality_score", "record_count",
            "processing_duration_seconds"}
TYPES = {"schema_version": int, "instruction_variant": int, "record_count": int, "quality_score": float,
         "processing_duration_seconds": float, "phi_redacted": bool, "redactions": dict, "clinical_insights": str}


def check(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        n = sum(1 for _ in f)
    df = pd.read_json(path, lines=True, dtype=False)
    assert list(df.columns) in FORMATS.values(), (path, list(df.columns))
    assert len(df) == n, (path, len(df), n)
    meta = pd.json_normalize(df["metadata"].tolist(), max_level=0)
    assert list(meta.columns) == META, (path, list(meta.columns))
    for field in META:
        values = [m[field] for m in df["metadata"]]  # as parsed, before pandas widens a column with nulls
        kinds = {type(v) for v in values if v is not None}
        assert len(kinds) <= 1, (path, field, kinds)
        assert field in NULLABLE or None not in values, (path, field)
        if field in TYPES and kinds:
            assert kinds == {TYPES[field]}, (path, field, kinds)
    assert meta["processing_timestamp"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$").all()
    if "output" in df:
        assert df["output"].str.len().min() > 0
    else:
        assert all([m["role"] for m in msgs] == ["system", "user", "assistant"] for msgs in df["messages"])
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
