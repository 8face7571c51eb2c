"""The local directory's rollback journal is removed durably before an append is reported.

An in-place append to a monthly file first writes a journal (the file's size before it),
syncs it and its directory, appends, syncs the file, then removes the journal. Were the
removal not synced, a power loss could bring the journal back, and the next writer would
roll back an append already reported (its lines committed as delivered): lines lost. So
each removal of a journal is followed at once (the same thread's next call) by an fsync
of the journal directory, which this test checks in the system calls of a real run
(strace -y names each descriptor's path).

Run: test_directory_journal.py CLI SAMPLE WORK_DIR
"""
import json
import os
import re
import shutil
import subprocess
import sys


def main():
    cli, sample, work = sys.argv[1:4]
    strace = shutil.which("strace")
    assert strace, "strace is required (Debian package strace; scripts/install-deps.sh test installs it)"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    out = os.path.join(work, "out")
    records = []
    with open(sample, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:
                pass  # the sample's malformed lines
    first, second = os.path.join(work, "first.jsonl"), os.path.join(work, "second.jsonl")
    with open(first, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    # The same records with other narratives: new content for the same monthly files.
    with open(second, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(dict(r, narrative=r["narrative"] + " Reviewed again.")) + "\n" for r in records)
    env = dict(os.environ, ETL_LOG_LEVEL="off", ETL_DIRECTORY_FSYNC="true")
    subprocess.run([cli, "--output-dir", out, first], env=env, check=True, stdout=subprocess.DEVNULL)
    # The second run appends to the monthly files the first one created: in place, under the journal.
    trace = os.path.join(work, "trace")
    # LeakSanitizer cannot run under ptrace (the ASan build): leaks are checked by the other runs.
    asan = os.environ.get("ASAN_OPTIONS", "")
    traced_env = dict(env, ASAN_OPTIONS=(asan + ":" if asan else "") + "detect_leaks=0")
    subprocess.run([strace, "-f", "-y", "-o", trace, "-e", "trace=unlink,unlinkat,fsync,fdatasync",
                    cli, "--output-dir", out, second], env=traced_env, check=True, stdout=subprocess.DEVNULL)
    with open(trace, encoding="utf-8") as f:
        calls = f.read().splitlines()
    journal_dir = os.path.realpath(os.path.join(out, ".sink", "journal"))
    # Per thread: the call right after a journal's removal must be the fsync of its directory.
    removals, unsynced = 0, 0
    pending = set()  # threads that removed a journal and have not synced its directory yet
    for call in calls:
        m = re.match(r"(\d+) +(.*)", call)
        if not m or m.group(2).startswith(("+++", "---", "<...")):
            continue
        tid, text = m.groups()
        removal = re.search(r'unlink\("' + re.escape(journal_dir) + r'/[0-9a-f]+"', text) or \
            re.search(r'unlinkat\(\d+<' + re.escape(journal_dir) + r'>, "[0-9a-f]+"', text) or \
            re.search(r'unlinkat\(AT_FDCWD, "' + re.escape(journal_dir) + r'/[0-9a-f]+"', text)
        if tid in pending:
            pending.discard(tid)
            # "fsync(N<dir>) = 0", or "fsync(N<dir> <unfinished ...>" when another
            # thread's call came in between (strace then prints its end apart).
            if not re.match(r'fsync\(\d+<' + re.escape(journal_dir) + r'>(\)| <unfinished \.\.\.>)', text):
                unsynced += 1
        if removal:
            removals += 1
            pending.add(tid)
    unsynced += len(pending)
    assert removals > 0, "no in-place append happened:\n" + "\n".join(calls[-40:])
    assert unsynced == 0, "%d of %d journal removals were not followed by an fsync of %s" % (
        unsynced, removals, journal_dir)
    print("ok: %d journal removals, each followed by an fsync of the journal directory" % removals)


if __name__ == "__main__":
    main()
