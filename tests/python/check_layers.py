#!/usr/bin/env python3
"""No dependency runs upward: every #include "..." in include/, lib/ and capi/
is checked against the layers below (README "Layout", docs/design.md). A layer may include
its own headers, those of the layers it lists, and the public headers that
belong to those layers. Installed headers include only installed headers.

    check_layers.py SOURCE_DIR
"""
import pathlib
import re
import sys

# Each layer and what it may use (not transitive: listed in full).
LAYERS = {
    "common": [],
    "log": ["common"],
    "config": ["common", "log"],
    "redact": ["common"],
    "format": ["common", "log", "config", "redact"],
    "dedup": ["common", "log", "config", "format"],
    "sink": ["common", "log", "config"],
    "s3": ["common", "log", "config", "sink"],
    "append": ["common", "log", "config", "sink"],
    "manifest": ["common", "log", "config", "sink", "append", "format"],
    "spool": ["common", "log", "config", "sink", "append"],
    "delivery": ["common", "log", "config", "format", "dedup", "sink", "append", "spool"],
    "writer": ["common", "log", "config", "format", "dedup", "sink", "s3", "append", "manifest", "spool", "delivery"],
    "capi": ["common", "log", "config", "format", "dedup", "sink", "s3", "append", "manifest", "spool", "delivery",
             "writer"],
}
# The installed C++ headers, and the layer each belongs to.
PUBLIC = {
    "error.hpp": "common",
    "log.hpp": "log",
    "config.hpp": "config",
    "example.hpp": "format",
    "sys/s3_sink.hpp": "sink",
    "sys/dedup_store.hpp": "dedup",
    "training_output.hpp": "writer",
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def main():
    root = pathlib.Path(sys.argv[1])
    problems = []
    public_dir = root / "include" / "training_output"
    installed = {str(p.relative_to(public_dir)) for p in public_dir.rglob("*") if p.is_file()}
    if installed != set(PUBLIC):
        problems.append(f"include/training_output/ holds {sorted(installed)}, the public set is {sorted(PUBLIC)}")
    lib_dirs = {p.name for p in (root / "lib").iterdir() if p.is_dir()}
    if lib_dirs - set(LAYERS):
        problems.append(f"lib/ folders without a layer here: {sorted(lib_dirs - set(LAYERS))}")

    def check(path, layer):
        allowed = set(LAYERS[layer]) | {layer}
        for inc in INCLUDE.findall(path.read_text()):
            rel = path.relative_to(root)
            if inc == "training_output.h":
                if layer != "capi":
                    problems.append(f"{rel}: includes the C ABI's header (only capi/ may)")
                continue
            top, _, name = inc.partition("/")  # name: "config.hpp", "sys/s3_sink.hpp"
            if top == "training_output":
                owner = PUBLIC.get(name)
                if owner is None:
                    problems.append(f"{rel}: includes {inc}, which is not a public header")
                elif owner not in allowed:
                    problems.append(f"{rel}: includes {inc} (layer {owner}), above its layer {layer}")
            elif top in LAYERS:
                if top not in allowed:
                    problems.append(f"{rel}: includes {inc}: {layer} must not depend on {top}")
            else:
                problems.append(f"{rel}: includes {inc}, which names no layer")

    for name, layer in PUBLIC.items():
        path = root / "include" / "training_output" / name
        if not path.exists():
            continue
        for inc in INCLUDE.findall(path.read_text()):
            if not inc.startswith("training_output/") or inc.split("/", 1)[1] not in PUBLIC:
                problems.append(f"include/training_output/{name}: includes {inc}, which is not installed")
        check(path, layer)
    for layer in lib_dirs & set(LAYERS):
        for path in sorted((root / "lib" / layer).glob("*.[ch]pp")):
            check(path, layer)
    for path in sorted((root / "capi").glob("*.[ch]pp")):
        check(path, "capi")
    c_header = (root / "include" / "training_output.h").read_text()
    if INCLUDE.findall(c_header):
        problems.append("include/training_output.h includes a project header")

    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"layers respected: {len(PUBLIC)} public headers, {len(lib_dirs)} folders of lib/, capi/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
