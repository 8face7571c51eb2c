"""ctypes wrapper of the training_output C ABI.

Usage::

    from training_output import TrainingOutput
    with TrainingOutput({"output_dir": "./training-data"}) as writer:
        outcome = writer.generate(narrative, {"record_type": "StepsRecord"}, {"record_count": 30})

The shared library (libtraining_output_c.so) is found through, in order: the
TDO_LIBRARY environment variable (a path), the build directories of a source
checkout, the directories of an installation, and the system's library path.
Nothing needs to be installed besides the built library.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import enum
import json
import os
import sys
import threading
import weakref
from typing import Any, Callable, Dict, Mapping, Optional, Union

__all__ = [
    "Outcome",
    "LogLevel",
    "Status",
    "TrainingOutput",
    "TrainingOutputError",
    "set_log_callback",
    "set_span_callback",
    "describe_config",
    "last_skip_reason",
    "library_version",
    "load_library",
]

# The ABI this wrapper was written against: same major, at least this minor.
_ABI_MAJOR = 0
_ABI_MINOR = 4
# The package's version: the C header's (a test checks them against each other).
__version__ = "0.4.0"
# The build directories of a source checkout, as docs/guide.md names them (the
# presets' build/<preset>, and build/ itself); sanitizer builds last, as they
# load only with their runtime preloaded.
BUILD_DIRS = ("build", "build/release", "build/dev", "build/ci", "build/clang", "build/bench", "build/asan", "build/tsan")


class Outcome(enum.IntEnum):
    WRITTEN = 0
    DUPLICATE = 1
    SKIPPED = 2
    DISABLED = 3
    PENDING = 4


class Status(enum.IntEnum):
    """The TDO_E_* error codes of training_output.h (a test checks them against the header)."""
    INVALID_ARGUMENT = -1
    INVALID_JSON = -2
    INVALID_INPUT = -3
    CONFIG = -4
    STORAGE = -5
    DEDUP_STORE = -6
    BACKPRESSURE = -7
    TIMEOUT = -8
    AUTH = -9
    CLOSED = -10
    NOMEM = -11
    FORKED = -12
    INTERNAL = -99


class LogLevel(enum.IntEnum):
    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40
    OFF = 100


class TrainingOutputError(Exception):
    """An error returned by the library: `status` is the TDO_E_* code."""

    def __init__(self, status: int, message: str, status_name: str = ""):
        super().__init__(message)
        self.status = status
        self.status_name = status_name or f"status {status}"


_LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)


class _Delivery(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("object_key", ctypes.c_char_p),
        ("lines", ctypes.c_ulonglong),
        ("bytes", ctypes.c_ulonglong),
        ("object_size", ctypes.c_ulonglong),
        ("manifest_version", ctypes.c_longlong),
    ]


_DELIVERY_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Delivery), ctypes.c_void_p)


class _Span(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("name", ctypes.c_char_p),
        ("start_unix_nanos", ctypes.c_longlong),
        ("end_unix_nanos", ctypes.c_longlong),
        ("traceparent", ctypes.c_char_p),
        ("attributes_json", ctypes.c_char_p),
        ("status", ctypes.c_int),
    ]


_SPAN_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Span), ctypes.c_void_p)


class _OpenOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("on_delivery", _DELIVERY_CALLBACK),
        ("delivery_user_data", ctypes.c_void_p),
    ]


def _check_status(result, func, args):
    if result < 0:
        raise TrainingOutputError(result, _last_error(), _status_name(result))
    return result


# (name, argtypes, restype, errcheck): the whole ABI in one table.
_FUNCTIONS = [
    ("tdo_version_number", [], ctypes.c_int, None),
    ("tdo_version_string", [], ctypes.c_char_p, None),
    ("tdo_writer_open", [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p], ctypes.c_int, _check_status),
    ("tdo_writer_open_ex", [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.POINTER(_OpenOptions)],
     ctypes.c_int, _check_status),
    ("generate_training_output", [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p],
     ctypes.c_int, _check_status),
    ("tdo_writer_flush", [ctypes.c_void_p], ctypes.c_int, _check_status),
    ("tdo_writer_close", [ctypes.c_void_p], ctypes.c_int, _check_status),
    ("tdo_writer_stats", [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)], ctypes.c_int, _check_status),
    ("tdo_config_describe", [ctypes.POINTER(ctypes.c_void_p)], ctypes.c_int, _check_status),
    ("tdo_drain", [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)], ctypes.c_int, _check_status),
    ("tdo_shutdown", [], ctypes.c_int, _check_status),
    ("tdo_last_error", [], ctypes.c_char_p, None),
    ("tdo_status_name", [ctypes.c_int], ctypes.c_char_p, None),
    ("tdo_free", [ctypes.c_void_p], None, None),
    ("tdo_set_log_callback", [_LOG_CALLBACK, ctypes.c_int, ctypes.c_void_p], ctypes.c_int, _check_status),
    ("tdo_last_skip_reason", [], ctypes.c_char_p, None),
    ("tdo_writer_metrics", [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)], ctypes.c_int, _check_status),
    ("tdo_set_span_callback", [_SPAN_CALLBACK, ctypes.c_void_p], ctypes.c_int, _check_status),
    ("tdo_writer_set_delivery_callback", [ctypes.c_void_p, _DELIVERY_CALLBACK, ctypes.c_void_p], ctypes.c_int,
     _check_status),
]

_LIB_NAME = "libtraining_output_c.so"
_lib = None
_lib_lock = threading.Lock()


def _candidates():
    env = os.environ.get("TDO_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", "..", ".."))  # source checkout: capi/python/training_output
    for build in BUILD_DIRS:
        yield os.path.join(root, build, _LIB_NAME)
    prefix = os.path.normpath(os.path.join(here, "..", "..", "..", ".."))  # <prefix>/share/training_output/python
    for libdir in ("lib", "lib64", "lib/x86_64-linux-gnu"):
        yield os.path.join(prefix, libdir, _LIB_NAME)
    found = ctypes.util.find_library("training_output_c")
    if found:
        yield found


def load_library(path: Optional[str] = None):
    """Loads (once) and returns the shared library, checking its version."""
    global _lib
    with _lib_lock:
        if _lib is not None and path is None:
            return _lib
        errors = []
        for candidate in [path] if path else _candidates():
            if os.sep in candidate and not os.path.exists(candidate):
                errors.append(f"{candidate}: not found")
                continue
            try:
                lib = ctypes.CDLL(candidate)
                break
            except OSError as e:
                errors.append(f"{candidate}: {e}")
        else:
            raise OSError("cannot load libtraining_output_c.so (set TDO_LIBRARY to its path): " + "; ".join(errors))
        for name, argtypes, restype, errcheck in _FUNCTIONS:
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = restype
            if errcheck is not None:
                fn.errcheck = errcheck
        version = lib.tdo_version_number()
        major, minor = version // 10000, version // 100 % 100
        if major != _ABI_MAJOR or minor < _ABI_MINOR:
            raise OSError(
                f"libtraining_output_c {lib.tdo_version_string().decode()} is not compatible with this wrapper "
                f"(needs {_ABI_MAJOR}.{_ABI_MINOR} or a later {_ABI_MAJOR}.x)")
        _lib = lib
        return lib


def _last_error() -> str:
    return (_lib.tdo_last_error() or b"").decode("utf-8", "replace")


def _status_name(status: int) -> str:
    return (_lib.tdo_status_name(status) or b"").decode()


def drain(config: Union[Mapping[str, Any], str, None] = None, library: Optional[str] = None) -> Dict[str, int]:
    """Delivers what writers of this configuration left in their spools (they died, or closed
    before they could deliver): adopts every orphaned spool, delivers its lines, and returns
    {"spools_adopted", "lines_recovered", "lines_appended", "lines_voided", "lines_found_landed"}
    (lines_found_landed: of lines_appended, those found in their objects already). Raises
    TrainingOutputError (TIMEOUT, STORAGE) when something is left. Spools of live writers are
    left to them."""
    lib = load_library(library)
    out = ctypes.c_void_p()
    lib.tdo_drain(_json(config, "config"), ctypes.byref(out))
    try:
        return json.loads(ctypes.string_at(out.value).decode())
    finally:
        lib.tdo_free(out)


def describe_config(library: Optional[str] = None) -> Dict[str, Any]:
    """Every configuration key the loaded library understands: {"version", "keys": [{"name",
    "section", "type", "env", "default", "default_text"?, "min"?, "max"?, "allowed"?,
    "description"}, ...]} (docs/configuration.md is generated from it)."""
    lib = load_library(library)
    out = ctypes.c_void_p()
    lib.tdo_config_describe(ctypes.byref(out))
    try:
        return json.loads(ctypes.string_at(out.value).decode())
    finally:
        lib.tdo_free(out)


def last_skip_reason() -> str:
    """Why the last generate() on this thread returned Outcome.SKIPPED ("empty_narrative",
    "low_quality", "no_quality_score", "redaction_failed"); "" after any other outcome."""
    return (load_library().tdo_last_skip_reason() or b"").decode()


def library_version() -> str:
    return load_library().tdo_version_string().decode()


def _text(value: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if "\x00" in value:
        raise TrainingOutputError(-1, f"{what} contains a NUL character", "TDO_E_INVALID_ARGUMENT")
    # surrogatepass: invalid text reaches the library, which rejects it with a clear error.
    return value.encode("utf-8", "surrogatepass")


def _json(value: Union[Mapping[str, Any], str, None], what: str) -> Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, str):
        return _text(value, what)
    return _text(json.dumps(value, ensure_ascii=False, allow_nan=False), what)


_callback_lock = threading.Lock()
_callback_ref = None  # keeps the ctypes callback alive while the library may call it


def set_log_callback(callback: Optional[Callable[[int, str, Dict[str, Any]], None]],
                     min_level: int = LogLevel.WARNING) -> None:
    """Routes the library's log events to `callback(level, event, fields)`.

    The callback may run on the library's background threads. None restores
    the default (JSON lines on stderr)."""
    global _callback_ref
    lib = load_library()
    with _callback_lock:
        if callback is None:
            lib.tdo_set_log_callback(_LOG_CALLBACK(), 0, None)
            _callback_ref = None
            return

        def trampoline(level, event, line, _user):
            try:
                callback(level, event.decode("utf-8", "replace"), json.loads(line.decode("utf-8", "replace")))
            except Exception:  # never let an exception unwind into C; shown as a thread's would be
                import traceback
                traceback.print_exc()

        ref = _LOG_CALLBACK(trampoline)
        lib.tdo_set_log_callback(ref, int(min_level), None)
        _callback_ref = ref


def _delivery_trampoline(callback: Callable[[Dict[str, Any]], None]):
    def trampoline(delivery, _user):
        d = delivery.contents
        try:
            callback({"object_key": d.object_key.decode("utf-8", "replace"), "lines": d.lines, "bytes": d.bytes,
                      "object_size": d.object_size, "manifest_version": d.manifest_version})
        except Exception:  # never let an exception unwind into C; shown as a thread's would be
            import traceback
            traceback.print_exc()

    return _DELIVERY_CALLBACK(trampoline)


_span_ref = None  # keeps the ctypes span callback alive while the library may call it


def set_span_callback(callback: Optional[Callable[[Dict[str, Any]], None]]) -> None:
    """Tracing for the whole process: `callback(span)` receives a dict for each generate() call,
    each batch that lands and each flush: name ("generate", "batch_append", "flush"),
    start_unix_nanos, end_unix_nanos, traceparent (the W3C trace context from message_data's
    "traceparent", or None), attributes (a dict), status (0 or a Status). Bridge them to
    OpenTelemetry; the library links no tracing SDK. None stops the spans. An exception the
    callback raises is printed to stderr."""
    global _span_ref
    lib = load_library()
    with _callback_lock:
        if callback is None:
            lib.tdo_set_span_callback(_SPAN_CALLBACK(), None)
            _span_ref = None
            return

        def trampoline(span, _user):
            s = span.contents
            try:
                callback({"name": s.name.decode(), "start_unix_nanos": s.start_unix_nanos,
                          "end_unix_nanos": s.end_unix_nanos,
                          "traceparent": s.traceparent.decode() if s.traceparent else None,
                          "attributes": json.loads(s.attributes_json.decode("utf-8", "replace")),
                          "status": s.status})
            except Exception:  # never let an exception unwind into C
                import traceback
                traceback.print_exc()

        ref = _SPAN_CALLBACK(trampoline)
        lib.tdo_set_span_callback(ref, None)
        _span_ref = ref


# The writers open in this process, closed when it exits normally: at the interpreter's exit, and
# when a multiprocessing worker ends (a forked worker leaves with os._exit, past atexit, but runs
# multiprocessing's exit finalizers first; multiprocessing.util runs them at atexit otherwise).
_open_writers: "weakref.WeakSet[TrainingOutput]" = weakref.WeakSet()
_open_writers_lock = threading.Lock()
_exit_hook_pid = None


def _close_at_exit() -> None:
    pid = os.getpid()
    with _open_writers_lock:
        writers = [w for w in list(_open_writers) if w._pid == pid]
    for w in writers:
        try:
            w.close()
        except Exception as e:  # nothing to raise to at exit: say what stays spooled
            sys.stderr.write("training_output: closing a writer at exit: %s\n" % e)


def _close_at_exit_of_this_process(writer: "TrainingOutput") -> None:
    global _exit_hook_pid
    with _open_writers_lock:
        _open_writers.add(writer)
        if _exit_hook_pid == writer._pid:
            return
        _exit_hook_pid = writer._pid  # a forked child registers its own (the parent's is ignored in it)
    from multiprocessing import util
    util.Finalize(None, _close_at_exit, exitpriority=10)


class TrainingOutput:
    """A writer. Use as a context manager, or call close(). A writer still open when its process
    exits normally (the interpreter's exit, a multiprocessing worker's end) is closed then: its
    lines are delivered within flush_timeout_ms, and what is left stays spooled (for the next
    writer of the configuration, or drain())."""

    def __init__(self, config: Union[Mapping[str, Any], str, None] = None, library: Optional[str] = None,
                 on_delivery: Optional[Callable[[Dict[str, Any]], None]] = None):
        """Opens a writer. `on_delivery`: as set_delivery_callback(), from the start (so that the
        batches of spools adopted while the writer opens are reported too)."""
        self._lib = load_library(library)
        self._delivery_ref = _delivery_trampoline(on_delivery) if on_delivery else None
        self._handle = ctypes.c_void_p()
        self._pid = os.getpid()
        options = _OpenOptions(ctypes.sizeof(_OpenOptions), self._delivery_ref or _DELIVERY_CALLBACK(), None)
        self._lib.tdo_writer_open_ex(ctypes.byref(self._handle), _json(config, "config"), ctypes.byref(options))
        _close_at_exit_of_this_process(self)

    def generate(self, narrative: str, message_data: Union[Mapping[str, Any], str],
                 result: Union[Mapping[str, Any], str, None] = None) -> Outcome:
        """Writes one example; returns its Outcome or raises TrainingOutputError."""
        handle = self._require_open()
        status = self._lib.generate_training_output(
            handle, _text(narrative, "narrative"), _json(message_data, "message_data"), _json(result, "result"))
        return Outcome(status)

    def set_delivery_callback(self, callback: Optional[Callable[[Dict[str, Any]], None]]) -> None:
        """Calls `callback(delivery)` once for each batch that lands from now on, with a dict:
        object_key, lines, bytes, object_size, manifest_version (-1: none). It runs on the
        library's background thread; an exception it raises is printed to stderr (as an
        exception in a thread is) and does not stop the writer. None stops the calls."""
        handle = self._require_open()
        if callback is None:
            self._lib.tdo_writer_set_delivery_callback(handle, _DELIVERY_CALLBACK(), None)
            self._delivery_ref = None
            return
        ref = _delivery_trampoline(callback)
        self._lib.tdo_writer_set_delivery_callback(handle, ref, None)
        self._delivery_ref = ref  # alive while the library may call it (until close())

    def flush(self) -> None:
        self._lib.tdo_writer_flush(self._require_open())

    def stats(self) -> Dict[str, int]:
        out = ctypes.c_void_p()
        self._lib.tdo_writer_stats(self._require_open(), ctypes.byref(out))
        try:
            return json.loads(ctypes.string_at(out.value).decode())
        finally:
            self._lib.tdo_free(out)

    def metrics_text(self) -> str:
        """The writer's metrics in the Prometheus text exposition format (serve it, or push it)."""
        out = ctypes.c_void_p()
        self._lib.tdo_writer_metrics(self._require_open(), ctypes.byref(out))
        try:
            return ctypes.string_at(out.value).decode("utf-8", "replace")
        finally:
            self._lib.tdo_free(out)

    def metrics(self) -> Dict[str, float]:
        """The samples of metrics_text() as a dict: 'name{label="value",...}' (or 'name') -> value."""
        samples = {}
        for line in self.metrics_text().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def close(self) -> None:
        """Flushes, closes and frees the writer. Raises TrainingOutputError (TIMEOUT, STORAGE,
        AUTH) when lines could not be delivered: they stay in the spool (the message says how
        many and where), and the next writer opened on it delivers them. Idempotent."""
        handle, self._handle = getattr(self, "_handle", None), None
        if handle:
            self._lib.tdo_writer_close(handle)

    @property
    def closed(self) -> bool:
        return not self._handle

    def _require_open(self):
        if not self._handle:
            raise TrainingOutputError(-10, "the writer is closed", "TDO_E_CLOSED")
        return self._handle

    def __enter__(self) -> "TrainingOutput":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.close()
        except TrainingOutputError:
            if exc_type is None:
                raise
            # Never hide the exception that ended the block; still say what stayed undelivered.
            import traceback
            traceback.print_exc()

    def __del__(self):
        # At interpreter shutdown module globals may already be gone; a writer left to the
        # garbage collector cannot report anything but leaves its lines in the spool.
        try:
            self.close()
        except Exception:
            pass
