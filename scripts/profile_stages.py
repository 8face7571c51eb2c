#!/usr/bin/env python3
"""Where generate() spends its time, by stage, from a perf profile of the
calling thread (docs/benchmarks.md, "Where a call's time goes").

    perf record --call-graph dwarf,16384 -F 1000 -o perf.data \\
        build/bench/tests/bench/tdo_bench_default DIR throughput 30000 1
    perf report -i perf.data --no-children -s pid -g none | head   # the busiest thread is the caller
    perf script -i perf.data --tid TID -F comm,tid,ip,sym | scripts/profile_stages.py

Each sample goes to the first stage whose function is on its stack, in the
order of STAGES (redaction runs inside formatting, so it is listed first).
"""
import collections
import sys

STAGES = [
    ("parse the JSON arguments", ["parse_json", "GenericReader"]),
    ("redact PHI", ["redact_phi", "Scanner::"]),
    ("hash (SHA-256)", ["content_hash", "Sha256", "SHA256", "sha256"]),
    ("look the content up (memory, SQLite read)",
     ["TrainingDeduplicator::precheck", "KeyMemory", "SqliteDedupStore::lookup"]),
    ("spool the line (record, checksum, copy)", ["Spool::append_line"]),
    ("hand the claim over (claimer, flusher queue)", ["Claimer::add", "Flusher::add"]),
    ("metrics, spans, logs", ["WriterMetrics", "Logger::", "emit_span", "tracing", "emit_generate"]),
    ("format the line (instruction, metadata, escaping)",
     ["TrainingDataFormatter::format", "format_json", "(anonymous namespace)::build"]),
    ("the rest of generate()", ["TrainingOutput::generate", "generate_training_output", "Impl::generate"]),
]
OUTSIDE = [
    ("outside: the benchmark's texts (before the clock)", ["narratives", "bench::narrative"]),
    ("outside: open", ["tdo_writer_open", "Impl::Impl"]),
    ("outside: close", ["tdo_writer_close", "TrainingOutput::close"]),
]


def stage_of(stack: str) -> str:
    for name, patterns in STAGES + OUTSIDE:
        if any(p in stack for p in patterns):
            return name
    return "unattributed (a stack perf could not unwind)"


def main() -> int:
    counts = collections.Counter()
    frames = []
    in_sample = False
    for line in sys.stdin:
        if line.strip() and not line[0].isspace():  # a sample's header
            if in_sample:
                counts[stage_of(" ".join(frames))] += 1
            frames, in_sample = [], True
        elif line.strip():
            frames.append(line.strip().split(" ", 1)[-1])
    if in_sample:
        counts[stage_of(" ".join(frames))] += 1
    total = sum(counts.values())
    in_generate = sum(v for k, v in counts.items() if not k.startswith("outside"))
    if not total:
        print("no samples")
        return 1
    for name, n in counts.most_common():
        share = f", {100 * n / in_generate:.1f} % of generate()" if not name.startswith("outside") else ""
        print(f"{name}: {n} samples, {100 * n / total:.1f} % of the thread{share}")
    print(f"{total} samples, {in_generate} in generate()")
    return 0


if __name__ == "__main__":
    sys.exit(main())
