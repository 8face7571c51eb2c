"""The Python wrapper installs with pip from the source tree, offline, and works
from outside it: a plain install (the library through TDO_LIBRARY) and an
editable one (the library found in the checkout's build directory).

Run: test_pip_install.py LIBRARY   (LIBRARY: the built libtraining_output_c.so)
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PACKAGE = os.path.join(ROOT, "capi", "python")
# Debian's interpreter: its setuptools and wheel build the package without the network.
PYTHON = "/usr/bin/python3"

PROGRAM = r"""
import json, os, sys, training_output as tdo
out = sys.argv[1]
with tdo.TrainingOutput({"output_dir": out, "dedup_store": "memory", "log_level": "off"}) as w:
    o = w.generate("Installed with pip.", {"record_type": "StepsRecord"}, {"record_count": 1})
print(json.dumps({"file": tdo.__file__, "version": tdo.__version__, "outcome": o.name,
                  "library": tdo.library_version()}))
"""


def run(*args, env=None, cwd=None):
    r = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(args)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def header_version():
    with open(os.path.join(ROOT, "include", "training_output.h"), encoding="utf-8") as f:
        v = dict(re.findall(r"^#define TDO_VERSION_(MAJOR|MINOR|PATCH) (\d+)", f.read(), re.M))
    return f"{v['MAJOR']}.{v['MINOR']}.{v['PATCH']}"


def check(venv, work, env, expect_inside):
    out = os.path.join(work, "out")
    shutil.rmtree(out, ignore_errors=True)
    result = json.loads(run(os.path.join(venv, "bin", "python"), "-c", PROGRAM, out, env=env, cwd=work))
    assert result["outcome"] == "WRITTEN", result
    assert result["version"] == header_version() == result["library"], result
    assert os.path.realpath(result["file"]).startswith(os.path.realpath(expect_inside)), result
    lines = [json.loads(l) for p in glob.glob(os.path.join(out, "**", "*.jsonl"), recursive=True) for l in open(p)]
    assert len(lines) == 1 and lines[0]["input"], lines
    return result


def main():
    library = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="tdo-pip-")
    try:
        venv = os.path.join(work, "venv")
        # --system-site-packages: Debian's setuptools and wheel, no index.
        run(PYTHON, "-m", "venv", "--system-site-packages", venv)
        pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "--disable-pip-version-check", "--no-cache-dir"]
        # pip and venv run without a sanitizer's preloaded runtime; the program
        # that loads the library gets the environment the test was given.
        run_env = {k: v for k, v in os.environ.items() if k not in ("TDO_LIBRARY", "PYTHONPATH")}
        env = {k: v for k, v in run_env.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
        env["PIP_NO_INDEX"] = "1"  # offline: nothing comes from a package index
        # A copy of the package: a build must not write into the source tree.
        src = os.path.join(work, "src")
        shutil.copytree(PACKAGE, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        run(*pip, "install", "--no-index", "--no-build-isolation", src, env=env, cwd=work)
        shown = run(*pip, "show", "training-output", env=env, cwd=work)
        assert f"Version: {header_version()}" in shown, shown
        site = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))[0]
        with_env = dict(run_env, TDO_LIBRARY=library)
        r = check(venv, work, with_env, site)
        print(f"pip install: {r['file']} (version {r['version']}) wrote an example")
        run(*pip, "uninstall", "-y", "training-output", env=env, cwd=work)
        # Editable, from the checkout: the library is found in its build directory
        # when it lies in one of those docs/guide.md names.
        build = os.path.relpath(os.path.dirname(library), ROOT)
        run(*pip, "install", "--no-index", "--no-build-isolation", "-e", PACKAGE, env=env, cwd=work)
        try:
            sanitized = build in ("build/asan", "build/tsan")
            r = check(venv, work, with_env if sanitized or build.startswith("..") else run_env, PACKAGE)
            print(f"pip install -e: {r['file']} with the library of {build}")
        finally:
            run(*pip, "uninstall", "-y", "training-output", env=env, cwd=work)
            for leftover in glob.glob(os.path.join(PACKAGE, "*.egg-info")) + [os.path.join(PACKAGE, "build")]:
                shutil.rmtree(leftover, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
