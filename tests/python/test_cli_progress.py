"""The command-line program's progress line: on stderr when it is a terminal
(a pseudo-terminal here), never when it is not.

Run: test_cli_progress.py CLI SAMPLE WORK_DIR
"""
import os
import pty
import re
import shutil
import subprocess
import sys


def run(cli, sample, out, tty, log_level="off"):
    env = dict(os.environ, ETL_LOG_LEVEL=log_level)
    if not tty:
        r = subprocess.run([cli, "--output-dir", out, sample], env=env, capture_output=True, text=True, timeout=120)
        return r.returncode, r.stdout, r.stderr
    master, slave = pty.openpty()
    p = subprocess.Popen([cli, "--output-dir", out, sample], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the program closed the terminal
            break
        if not chunk:
            break
        err += chunk
    out_text = p.stdout.read().decode()
    code = p.wait(timeout=120)
    os.close(master)
    return code, out_text, err.decode("utf-8", "replace")


def main():
    cli, sample, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    with open(sample, encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    code, out, err = run(cli, sample, os.path.join(work, "tty"), tty=True)
    assert code == 0, (code, out, err)
    final = re.findall(r"(\d+) lines read, (\d+) written, (\d+) duplicates, (\d+) errors, \d+ lines/s, backlog (\d+) lines", err)
    assert final, err
    read, written, duplicates, errors, backlog = map(int, final[-1])
    total = re.search(r"^total\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out, re.M)
    assert total, out
    assert read == lines, (read, lines)
    assert (written, duplicates, errors) == (int(total.group(1)), int(total.group(2)), int(total.group(4))), (final, out)
    assert backlog == 0, final  # the last line is drawn after the flush
    assert "\r\x1b[K" in err, repr(err)
    print(f"terminal: {final[-1]}")

    # The library's log lines and the errors start on a line of their own, never
    # after a progress line's text.
    code, out_w, err_w = run(cli, sample, os.path.join(work, "tty-logs"), tty=True, log_level="warning")
    assert code == 0, (code, out_w, err_w)
    logs = [m.start() for m in re.finditer(r'\{"ts":', err_w)]
    assert logs, repr(err_w)
    errors = [m.start() for m in re.finditer(r"line \d+: TDO_E_", err_w)]
    assert errors, repr(err_w)
    for at in logs + errors:
        assert at == 0 or err_w[:at].endswith(("\n", "\x1b[K")), repr(err_w[max(0, at - 80):at + 40])
    for chunk in re.split(r"\r\x1b\[K", err_w):
        # Whatever follows a clear is one progress line, or whole lines.
        assert "lines read" not in chunk or chunk.startswith(tuple("0123456789")), repr(chunk)

    code, out2, err2 = run(cli, sample, os.path.join(work, "pipe"), tty=False)
    assert code == 0, (code, out2, err2)
    assert "lines read" not in err2 and "\x1b[" not in err2, repr(err2)
    # Only the malformed lines' errors are there.
    for line in err2.splitlines():
        assert line.startswith("line "), repr(line)
    assert out2 == out, (out2, out)
    print(f"not a terminal: {len(err2.splitlines())} error lines, no progress")


if __name__ == "__main__":
    main()
