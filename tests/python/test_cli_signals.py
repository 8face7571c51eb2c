"""The command-line program stopped by a signal in the middle of its input:
it stops reading, delivers what it accepted, prints its summary and exits
with 128 + the signal; a second signal exits at once. A second run on the
same input completes the month with every line once.

Run: test_cli_signals.py CLI WORK_DIR
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

LINES = 200_000


def write_input(path):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(LINES):
            f.write(json.dumps({
                "narrative": f"Walked {1000 + i} steps in session {i} of the programme, pace steady throughout.",
                "message_data": {"record_type": "StepsRecord", "user_id": f"u{i % 97}"},
                "result": {"record_count": 5, "processing_timestamp": "2025-11-18T10:30:00Z"},
            }) + "\n")


def fresh_input(work):
    """An empty WORK_DIR with the 200,000-line input in it; the input's path."""
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    data = os.path.join(work, "input.jsonl")
    write_input(data)
    return data


def lines_written(out, killed=False):
    """The outputs of every line in the month's files. killed: a writer was just
    SIGKILLed, possibly in the middle of an append; the batch it was writing (the
    file's last line has no newline) is rolled back by the next writer to touch
    the file, so it is not counted."""
    outputs = []
    for path in glob.glob(os.path.join(out, "training", "**", "*.jsonl"), recursive=True):
        if "/_" in path[len(out):]:  # manifests and internal objects
            continue
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        torn = lines.pop()  # "" when the file ends with its newline
        assert killed or not torn, f"{path} ends with a partial line"
        outputs += [json.loads(line)["output"] for line in lines if line.strip()]
    return outputs


def start(cli, out, data):
    env = dict(os.environ, ETL_LOG_LEVEL="off")
    return subprocess.Popen([cli, "--output-dir", out, data], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_writing(out, p):
    # The spool exists once the writer is open; give it a moment of input.
    deadline = time.monotonic() + 60
    while not os.path.isdir(os.path.join(out, ".spool")):
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.5)


def complete(cli, out, data):
    r = subprocess.run([cli, "--output-dir", out, data], env=dict(os.environ, ETL_LOG_LEVEL="off"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    outputs = lines_written(out)
    assert len(outputs) == LINES, (len(outputs), LINES)
    assert len(set(outputs)) == LINES, "a line is in the month twice"
    return r


def main():
    cli, work = sys.argv[1:3]
    data = fresh_input(work)

    # One SIGINT: a summary, the accepted lines delivered, status 130, within 5 s.
    out = os.path.join(work, "once")
    p = start(cli, out, data)
    wait_until_writing(out, p)
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    took = time.monotonic() - sent
    assert p.returncode == 130, (p.returncode, stdout, stderr)
    assert took < 5, took
    assert "interrupted (SIGINT)" in stderr, stderr
    total = [line for line in stdout.splitlines() if line.startswith("total")]
    assert total, stdout
    written = int(total[0].split()[1])
    assert 0 < written < LINES, total
    delivered = lines_written(out)
    assert len(delivered) == written, (len(delivered), written)  # all it accepted, nothing else
    print(f"SIGINT: stopped in {took:.2f} s after {written} lines, all delivered")
    r = complete(cli, out, data)
    print("second run:", [line for line in r.stdout.splitlines() if line.startswith("total")][0])

    # SIGTERM: the same, status 143.
    out = os.path.join(work, "term")
    p = start(cli, out, data)
    wait_until_writing(out, p)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 143, (p.returncode, stdout, stderr)
    assert "interrupted (SIGTERM)" in stderr, stderr
    complete(cli, out, data)

    # Reading a pipe that has nothing more to give: the signal interrupts the
    # read (the library's threads block it, so it reaches the reading thread).
    out = os.path.join(work, "pipe")
    p = subprocess.Popen([cli, "--output-dir", out, "-"], env=dict(os.environ, ETL_LOG_LEVEL="off"),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with open(data, encoding="utf-8") as f:
        for _ in range(10):
            p.stdin.write(f.readline())
    p.stdin.flush()
    wait_until_writing(out, p)
    time.sleep(1.5)  # past the claimer's idle exit: every thread the writer starts has started
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    try:
        stdout, stderr = p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == 130, (p.returncode, stdout, stderr)
    assert time.monotonic() - sent < 5
    assert len(lines_written(out)) == 10, len(lines_written(out))
    print("SIGINT while reading a pipe: 10 lines delivered")

    # Two signals: out at once; nothing accepted is lost, the next run completes the month.
    out = os.path.join(work, "twice")
    p = start(cli, out, data)
    wait_until_writing(out, p)
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=60)
    assert p.returncode in (130, -signal.SIGINT), p.returncode
    complete(cli, out, data)
    print("second signal: exited at once; the next run completed the month")


if __name__ == "__main__":
    main()
