"""The Python wrapper, through ctypes, against the built shared library.

Run: TDO_LIBRARY=build/libtraining_output_c.so python3 tests/python/test_ctypes.py
"""
import glob
import json
import os
import shutil
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "capi", "python"))

import training_output as tdo  # noqa: E402

MESSAGE = {"record_type": "SleepSessionRecord", "user_id": "py-user", "correlation_id": "py-1"}
RESULT = {"record_count": 7, "quality_score": 0.9, "processing_timestamp": "2025-11-18T10:30:00Z",
          "clinical_insights": {"stages_pct": {"deep": 14, "rem": 19}, "flags": [], "score": None}}


class WrapperTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="tdo-py-")
        self.config = {"output_dir": self.dir, "directory_fsync": False, "log_level": "off"}

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def lines(self):
        out = []
        for path in sorted(glob.glob(os.path.join(self.dir, "**", "*.jsonl"), recursive=True)):
            with open(path, encoding="utf-8") as f:
                out.extend(json.loads(line) for line in f)
        return out

    def test_version_matches_header(self):
        self.assertRegex(tdo.library_version(), r"^\d+\.\d+\.\d+$")

    def test_describe_config_is_the_table_of_keys(self):
        described = tdo.describe_config()
        self.assertEqual(described["version"], tdo.library_version())
        by_name = {k["name"]: k for k in described["keys"]}
        self.assertEqual(by_name["spool_fsync"]["allowed"], ["interval", "always", "never"])
        self.assertEqual(by_name["max_line_bytes"]["default"], 1048576)
        self.assertEqual(by_name["max_line_bytes"]["env"], "ETL_MAX_LINE_BYTES")
        self.assertIsNone(by_name["s3_endpoint_url"]["default"])
        # Every key it names is one a writer accepts.
        with self.assertRaises(tdo.TrainingOutputError):
            tdo.TrainingOutput({**self.config, "no_such_key": 1})
        tdo.TrainingOutput({**self.config, **{k: v["default"] for k, v in by_name.items()
                                              if v["type"] == "bool"}}).close()

    def test_outcomes(self):
        with tdo.TrainingOutput(self.config) as w:
            self.assertEqual(w.generate("Slept well.", MESSAGE, RESULT), tdo.Outcome.WRITTEN)
            self.assertEqual(w.generate("Slept well.", dict(MESSAGE, user_id="other"), RESULT), tdo.Outcome.DUPLICATE)
            self.assertEqual(w.generate("  \n", MESSAGE, RESULT), tdo.Outcome.SKIPPED)
            self.assertEqual(w.generate("No result.", MESSAGE), tdo.Outcome.WRITTEN)
            w.flush()
            stats = w.stats()
            self.assertEqual(stats["written"], 2)
            self.assertEqual(stats["duplicates"], 1)
        self.assertTrue(w.closed)
        lines = self.lines()
        self.assertEqual(len(lines), 2)
        self.assertEqual(json.loads(lines[0]["metadata"]["clinical_insights"]), RESULT["clinical_insights"])
        self.assertEqual(lines[0]["metadata"]["health_domain"], "sleep_wellness")
        self.assertEqual(list(lines[0].keys()), ["instruction", "input", "output", "metadata"])

    def test_training_data_settings_skip_reasons_and_deliveries(self):
        deliveries = []
        config = dict(self.config, output_format="chat", pseudonymize_ids=True,
                      pseudonymization_key="python-key-0123456789", min_quality_score=0.5,
                      min_quality_score_by_domain={"sleep_wellness": 0.8}, validation_fraction=0.5)
        with tdo.TrainingOutput(config, on_delivery=deliveries.append) as w:
            self.assertEqual(w.generate("Slept 7h 12m; call 555-123-4567.", MESSAGE, RESULT), tdo.Outcome.WRITTEN)
            self.assertEqual(tdo.last_skip_reason(), "")
            self.assertEqual(w.generate("Too low.", MESSAGE, dict(RESULT, quality_score=0.7)), tdo.Outcome.SKIPPED)
            self.assertEqual(tdo.last_skip_reason(), "low_quality")
            self.assertEqual(w.generate("No score.", MESSAGE, {"record_count": 1}), tdo.Outcome.SKIPPED)
            self.assertEqual(tdo.last_skip_reason(), "no_quality_score")
            w.flush()
            self.assertEqual(len(deliveries), 1)
            d = deliveries[0]
            self.assertEqual(d["lines"], 1)
            self.assertEqual(d["manifest_version"], 1)
            self.assertTrue(d["object_key"].endswith("health_journal_2025_11.jsonl"))
            self.assertEqual(d["object_size"], d["bytes"])
            # A callback that raises does not stop the writer.
            w.set_delivery_callback(lambda d: 1 / 0)
            self.assertEqual(w.generate("Slept 8h.", MESSAGE, RESULT), tdo.Outcome.WRITTEN)
            w.flush()
            w.set_delivery_callback(None)
            stats = w.stats()
            self.assertEqual(stats["skipped_low_quality"], 1)
            self.assertEqual(stats["skipped_no_quality_score"], 1)
            self.assertGreaterEqual(stats["redactions"], 1)
        lines = self.lines()
        self.assertEqual(len(lines), 2)
        self.assertEqual(list(lines[0].keys()), ["messages", "metadata"])
        self.assertEqual([m["role"] for m in lines[0]["messages"]], ["system", "user", "assistant"])
        self.assertIn("[PHONE]", lines[0]["messages"][2]["content"])
        md = lines[0]["metadata"]
        self.assertRegex(md["user_id"], r"^[0-9a-f]{32}$")
        self.assertTrue(md["pseudonymization_key_id"].startswith("hmac-"))
        self.assertIn(md["split"], ("train", "validation"))
        with open(os.path.join(self.dir, d["object_key"][:-len(".jsonl")] + ".manifest.json")) as f:
            manifest = json.load(f)
        self.assertEqual(manifest["lines"], 2)
        self.assertEqual(manifest["record_types"], {"SleepSessionRecord": 2})

    def test_instruction_phrasings_from_a_templates_file(self):
        path = os.path.join(self.dir, "templates.json")
        with open(path, "w") as f:
            json.dump({"SleepSessionRecord": {"instruction": ["Phrasing A.", "Phrasing B."]}}, f)
        with tdo.TrainingOutput(dict(self.config, templates_file=path)) as w:
            for i in range(40):
                w.generate(f"Night number {i}.", MESSAGE, RESULT)
        lines = self.lines()
        self.assertEqual(len(lines), 40)
        self.assertEqual({l["instruction"] for l in lines}, {"Phrasing A.", "Phrasing B."})
        for l in lines:
            self.assertEqual(l["instruction"], ["Phrasing A.", "Phrasing B."][l["metadata"]["instruction_variant"]])

    def test_split_objects_without_redaction_or_manifests(self):
        config = dict(self.config, split_objects=True, validation_fraction=1.0, redact_phi=False,
                      write_manifests=False)
        with tdo.TrainingOutput(config) as w:
            self.assertEqual(w.generate("Call 555-123-4567 on 2025-11-18.", MESSAGE, RESULT), tdo.Outcome.WRITTEN)
        paths = glob.glob(os.path.join(self.dir, "**", "*"), recursive=True)
        data = [p for p in paths if p.endswith(".jsonl")]
        self.assertEqual([os.path.relpath(p, self.dir) for p in data],
                         ["training/validation/sleep_wellness/2025/11/health_journal_2025_11.jsonl"])
        self.assertFalse([p for p in paths if p.endswith(".manifest.json")])
        line = self.lines()[0]
        self.assertEqual(line["output"], "Call 555-123-4567 on 2025-11-18.")
        self.assertFalse(line["metadata"]["phi_redacted"])
        self.assertEqual(line["metadata"]["split"], "validation")

    def test_unicode_round_trip(self):
        text = "Schlaf gut \u2014 caf\u00e9 \U0001F634 \u2028 end"
        with tdo.TrainingOutput(self.config) as w:
            self.assertEqual(w.generate(text, MESSAGE, RESULT), tdo.Outcome.WRITTEN)
        self.assertEqual(self.lines()[0]["output"], text)

    def test_errors_carry_the_library_message(self):
        with tdo.TrainingOutput(self.config) as w:
            with self.assertRaises(tdo.TrainingOutputError) as cm:
                w.generate("x", {"user_id": "u"}, RESULT)
            self.assertEqual(cm.exception.status_name, "TDO_E_INVALID_INPUT")
            self.assertIn("record_type is required", str(cm.exception))
            with self.assertRaises(tdo.TrainingOutputError) as cm:
                w.generate("x", "{broken", RESULT)
            self.assertEqual(cm.exception.status, -2)
            with self.assertRaises(tdo.TrainingOutputError) as cm:
                w.generate("lone \ud800 surrogate", MESSAGE, RESULT)
            self.assertIn("UTF-8", str(cm.exception))
            with self.assertRaises(tdo.TrainingOutputError) as cm:
                w.generate("nul \x00 inside", MESSAGE, RESULT)
            self.assertEqual(cm.exception.status_name, "TDO_E_INVALID_ARGUMENT")
            with self.assertRaises(TypeError):
                w.generate(b"bytes", MESSAGE, RESULT)
        self.assertEqual(self.lines(), [])
        with self.assertRaises(tdo.TrainingOutputError) as cm:
            tdo.TrainingOutput({"output_dir": self.dir, "no_such_key": 1})
        self.assertEqual(cm.exception.status_name, "TDO_E_CONFIG")
        self.assertIn("no_such_key", str(cm.exception))

    def test_closed_writer(self):
        w = tdo.TrainingOutput(self.config)
        w.close()
        w.close()
        with self.assertRaises(tdo.TrainingOutputError):
            w.generate("x", MESSAGE, RESULT)

    def test_disabled(self):
        with tdo.TrainingOutput(dict(self.config, enable_training_output=False)) as w:
            self.assertEqual(w.generate("x", MESSAGE, RESULT), tdo.Outcome.DISABLED)

    def test_log_callback(self):
        seen = []
        tdo.set_log_callback(lambda level, event, fields: seen.append((level, event, fields)), tdo.LogLevel.INFO)
        try:
            with tdo.TrainingOutput(self.config) as w:
                w.generate("Logged sleep.", MESSAGE, RESULT)
        finally:
            tdo.set_log_callback(None)
        events = {e for _, e, _ in seen}
        self.assertIn("training_output_generated", events)
        generated = [f for _, e, f in seen if e == "training_output_generated"][0]
        self.assertEqual(generated["record_type"], "SleepSessionRecord")

    def test_an_exception_in_the_log_callback_is_shown_not_lost(self):
        import contextlib
        import io

        def broken(level, event, fields):
            raise ValueError("the host's bug")

        err = io.StringIO()
        tdo.set_log_callback(broken, tdo.LogLevel.INFO)
        try:
            with contextlib.redirect_stderr(err):
                with tdo.TrainingOutput(self.config) as w:
                    self.assertEqual(w.generate("Logged sleep.", MESSAGE, RESULT), tdo.Outcome.WRITTEN)
        finally:
            tdo.set_log_callback(None)
        self.assertIn("ValueError: the host's bug", err.getvalue())
        self.assertEqual(len(self.lines()), 1)  # the writer went on

    def test_close_reports_lines_left_undelivered(self):
        config = dict(self.config, s3_endpoint_url="http://127.0.0.1:9", s3_bucket_name="b", s3_access_key="k",
                      s3_secret_key="s", s3_conditional_writes="true", flush_timeout_ms=200)
        with self.assertRaises(tdo.TrainingOutputError) as caught:
            with tdo.TrainingOutput(config) as w:
                self.assertEqual(w.generate("Undelivered.", MESSAGE, RESULT), tdo.Outcome.WRITTEN)
        self.assertEqual(caught.exception.status, tdo.Status.TIMEOUT)
        self.assertIn("1 lines are not in their objects yet", str(caught.exception))
        self.assertIn(".spool", str(caught.exception))
        self.assertTrue(w.closed)
        w.close()  # idempotent
        # An exception that ends the block is never replaced by the close's.
        with self.assertRaises(KeyError):
            with tdo.TrainingOutput(config) as w2:
                w2.generate("Undelivered too.", MESSAGE, RESULT)
                raise KeyError("the block's own")

    def test_spans(self):
        spans = []
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        tdo.set_span_callback(spans.append)
        try:
            with tdo.TrainingOutput(self.config) as w:
                w.generate("Traced.", dict(MESSAGE, traceparent=tp), RESULT)
                w.flush()
        finally:
            tdo.set_span_callback(None)
        names = [s["name"] for s in spans]
        self.assertEqual(names.count("generate"), 1)
        self.assertIn("batch_append", names)
        self.assertIn("flush", names)
        gen = spans[names.index("generate")]
        self.assertEqual(gen["traceparent"], tp)
        self.assertEqual(gen["attributes"]["outcome"], "written")
        self.assertEqual(gen["attributes"]["record_type"], "SleepSessionRecord")
        self.assertEqual(gen["status"], 0)
        self.assertLessEqual(gen["start_unix_nanos"], gen["end_unix_nanos"])

    def test_metrics(self):
        with tdo.TrainingOutput(self.config) as w:
            self.assertEqual(w.generate("Slept well.", MESSAGE, RESULT), tdo.Outcome.WRITTEN)
            self.assertEqual(w.generate("Slept well.", MESSAGE, RESULT), tdo.Outcome.DUPLICATE)
            w.flush()
            text = w.metrics_text()
            metrics = w.metrics()
        self.assertIn("# TYPE etl_training_output_duration_seconds histogram", text)
        self.assertEqual(metrics['etl_training_examples_generated_total{record_type="SleepSessionRecord",'
                                 'health_domain="sleep_wellness"}'], 1)
        self.assertEqual(metrics['etl_training_deduplication_hits_total{record_type="SleepSessionRecord"}'], 1)
        self.assertEqual(metrics["etl_training_output_duration_seconds_count"], 2)
        self.assertGreater(metrics['etl_training_file_size_bytes{health_domain="sleep_wellness"}'], 0)

    def test_package_version_is_the_headers(self):
        header = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "include", "training_output.h")
        import re
        with open(header, encoding="utf-8") as f:
            v = dict(re.findall(r"^#define TDO_VERSION_(MAJOR|MINOR|PATCH) (\d+)", f.read(), re.M))
        self.assertEqual(tdo.__version__, f"{v['MAJOR']}.{v['MINOR']}.{v['PATCH']}")
        self.assertEqual(tdo.library_version(), tdo.__version__)

    def test_library_found_in_every_build_directory_the_readme_names(self):
        root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
        with open(os.path.join(root, "CMakePresets.json"), encoding="utf-8") as f:
            presets = json.load(f)
        base = {p["name"]: p for p in presets["configurePresets"]}
        dirs = {"build"}
        for p in presets["configurePresets"]:
            if p.get("hidden"):
                continue
            q, binary = p, None
            while binary is None and q is not None:
                binary = q.get("binaryDir")
                q = base.get(q["inherits"]) if isinstance(q.get("inherits"), str) else None
            self.assertIsNotNone(binary, p["name"])
            dirs.add(binary.replace("${sourceDir}/", "").replace("${presetName}", p["name"]))
        # scripts/demo.sh builds in build/release.
        with open(os.path.join(root, "scripts", "demo.sh"), encoding="utf-8") as f:
            import re
            dirs.update(re.findall(r"-B (build[\w/]*)", f.read()))
        self.assertGreaterEqual(len(dirs), 8)
        self.assertEqual(set(tdo.BUILD_DIRS), dirs)
        saved = os.environ.pop("TDO_LIBRARY", None)
        try:
            candidates = list(tdo._candidates())
        finally:
            if saved is not None:
                os.environ["TDO_LIBRARY"] = saved
        for d in dirs:
            self.assertIn(os.path.join(root, d, "libtraining_output_c.so"), candidates)

    def test_codes_outcomes_and_levels_are_the_headers(self):
        header = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "include", "training_output.h")
        import re
        with open(header, encoding="utf-8") as f:
            defines = dict(re.findall(r"^#define TDO_([A-Z_]+) (-?\d+)\b", f.read(), re.M))
        errors = {k[2:]: int(v) for k, v in defines.items() if k.startswith("E_")}
        levels = {k[4:]: int(v) for k, v in defines.items() if k.startswith("LOG_")}
        outcomes = {k: int(v) for k, v in defines.items()
                    if k in ("WRITTEN", "DUPLICATE", "SKIPPED", "DISABLED", "PENDING")}
        self.assertEqual({s.name: s.value for s in tdo.Status}, errors)
        self.assertEqual({s.name: s.value for s in tdo.LogLevel}, levels)
        self.assertEqual({s.name: s.value for s in tdo.Outcome}, outcomes)
        lib = tdo.load_library()
        for name, value in list(errors.items()):
            self.assertEqual(lib.tdo_status_name(value).decode(), "TDO_E_" + name)
        for name, value in outcomes.items():
            self.assertEqual(lib.tdo_status_name(value).decode(), "TDO_" + name)

    def test_threads_share_a_writer(self):
        with tdo.TrainingOutput(self.config) as w:
            outcomes = []
            lock = threading.Lock()

            def work(t):
                for i in range(20):
                    o = w.generate(f"shared {i}" if i % 2 else f"thread {t} item {i}", MESSAGE, RESULT)
                    with lock:
                        outcomes.append(o)

            threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        written = sum(1 for o in outcomes if o == tdo.Outcome.WRITTEN)
        self.assertEqual(written, 10 + 4 * 10)
        outputs = [line["output"] for line in self.lines()]
        self.assertEqual(len(outputs), len(set(outputs)))
        self.assertEqual(len(outputs), 50)

    def test_fork_child_is_refused_and_the_parent_loses_nothing(self):
        # A writer opened before a fork (multiprocessing with the fork start
        # method, pre-fork servers): the child must not touch the parent's
        # spool; it opens a writer of its own.
        import multiprocessing
        ctx = multiprocessing.get_context("fork")
        result_queue = ctx.Queue()

        def child(writer, q):
            refused = 0
            status_names = set()
            for i in range(100):
                try:
                    writer.generate(f"Child example {i}.", MESSAGE, RESULT)
                except tdo.TrainingOutputError as e:
                    refused += 1
                    status_names.add(e.status_name)
            try:
                writer.flush()
            except tdo.TrainingOutputError:
                refused += 1
            writer.close()  # must not touch the parent's spool either
            own_written = 0
            with tdo.TrainingOutput(self.config) as own:
                for i in range(20):
                    if own.generate(f"Child's own writer example {i}.", MESSAGE, RESULT) == tdo.Outcome.WRITTEN:
                        own_written += 1
            q.put((refused, sorted(status_names), own_written))

        w = tdo.TrainingOutput(self.config)
        parent_written = 0
        for i in range(50):
            if w.generate(f"Parent example {i}.", MESSAGE, RESULT) == tdo.Outcome.WRITTEN:
                parent_written += 1
        # Forked at rest (nothing being delivered): under ASan (GCC 12's
        # libasan has no fork handlers) a fork while a thread of the parent
        # allocates leaves the child's allocator locked for good. glibc's
        # malloc, and the library's process-wide state, are reset in a child.
        w.flush()
        p = ctx.Process(target=child, args=(w, result_queue))
        p.start()
        refused, status_names, own_written = result_queue.get(timeout=60)
        p.join(60)
        for i in range(50, 100):
            if w.generate(f"Parent example {i}.", MESSAGE, RESULT) == tdo.Outcome.WRITTEN:
                parent_written += 1
        w.close()
        self.assertEqual(p.exitcode, 0)
        self.assertEqual(refused, 101)
        self.assertEqual(status_names, ["TDO_E_FORKED"])
        self.assertEqual(own_written, 20)
        self.assertEqual(parent_written, 100)
        outputs = [line["output"] for line in self.lines()]
        parent = [o for o in outputs if o.startswith("Parent example")]
        self.assertEqual(sorted(parent), sorted(f"Parent example {i}." for i in range(100)))
        self.assertEqual(len([o for o in outputs if o.startswith("Child's own writer")]), 20)
        self.assertEqual([o for o in outputs if o.startswith("Child example")], [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
