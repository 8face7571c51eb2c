"""docs/configuration.md, generated from the library's table of keys (tdo_config_describe()).

    python3 tests/python/config_doc.py            # prints it
    python3 tests/python/config_doc.py --write    # writes docs/configuration.md
    python3 tests/python/config_doc.py --check    # exits 1 when docs/configuration.md differs (a test)

The library is found as the Python package finds it (TDO_LIBRARY, or a build directory).
"""
import json
import os
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "capi", "python"))
import training_output  # noqa: E402

DOC = os.path.join(ROOT, "docs", "configuration.md")

INTRO = """\
# Configuration

<!-- Generated from lib/config/keys.cpp by tests/python/config_doc.py --write; a test checks it. -->

A writer's configuration is a JSON object passed to `tdo_writer_open` / `TrainingOutput`, or,
when none is given, the environment: `ETL_` + the key in upper case
(`ETL_ENABLE_TRAINING_OUTPUT=false`; an object's value is its JSON text). An empty variable
counts as unset. An unknown key, a wrong type, a number out of its range or a value that is not
one of those allowed is a `TDO_E_CONFIG` error whose message names the key. S3 credentials and
region that are not given fall back to `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN` and `AWS_REGION`.

The same table is available at run time: `tdo_config_describe()` (C), `Config::describe()` (C++)
and `training_output.describe_config()` (Python) return it as JSON, with each key's type,
default, range or allowed values, environment variable and description.
"""


def default(key):
    if "default_text" in key:
        return key["default_text"]
    value = key["default"]
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float):
        return "`%g`" % value
    if isinstance(value, (int, dict)):
        return "`%s`" % json.dumps(value)
    return "`%s`" % json.dumps(value)


def values(key):
    if "allowed" in key:
        return ", ".join("`%s`" % v for v in key["allowed"])
    if "min" in key:
        return "%d to %d" % (key["min"], key["max"])
    return ""


def render(described):
    out = [INTRO]
    section = None
    for key in described["keys"]:
        if key["section"] != section:
            section = key["section"]
            out.append("\n## %s\n\n| key | type | default | values | meaning |\n|---|---|---|---|---|\n" % section)
        out.append("| `%s` | %s | %s | %s | %s |\n" % (
            key["name"], key["type"], default(key), values(key), key["description"].replace("|", "\\|")))
    return "".join(out)


def main(argv):
    text = render(training_output.describe_config())
    if "--write" in argv:
        with open(DOC, "w", encoding="utf-8") as f:
            f.write(text)
        return 0
    if "--check" in argv:
        with open(DOC, encoding="utf-8") as f:
            current = f.read()
        if current != text:
            print("docs/configuration.md is not what lib/config/keys.cpp says; run: "
                  "python3 tests/python/config_doc.py --write", file=sys.stderr)
            return 1
        print("docs/configuration.md matches the library's table of keys (%d keys)"
              % len(training_output.describe_config()["keys"]))
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
