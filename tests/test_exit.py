"""`seqrep.cli.exit_now`: the command's quick exit keeps what Python's exit does before its teardown."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent("""
    import atexit, concurrent.futures, sys, threading, time
    from seqrep.cli import exit_now

    out = sys.argv[1]

    def late_writer():  # a thread that is not a daemon: Python's exit waits for it
        time.sleep(0.3)
        with open(out, "a") as f:
            f.write("thread\\n")

    def handler():
        with open(out, "a") as f:
            f.write("atexit\\n")

    def pooled():
        time.sleep(0.1)
        with open(out, "a") as f:
            f.write("pool\\n")

    atexit.register(handler)
    threading.Thread(target=late_writer).start()
    pool = concurrent.futures.ThreadPoolExecutor(1)  # never shut down: its idle worker must not hold the exit
    pool.submit(pooled)
    print("buffered, no newline flush", end="")
    exit_now(int(sys.argv[2]))
    """)


def test_exit_now_stops_threads_runs_atexit_flushes_and_keeps_the_code(tmp_path):
    out = tmp_path / "order.txt"
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(out), "3"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout == "buffered, no newline flush"
    # the threads first (an executor left open included), then the handlers, as Python orders them
    assert out.read_text() == "pool\nthread\natexit\n"


def test_the_command_exits_with_mains_code():
    ok = subprocess.run([sys.executable, "-m", "seqrep.cli", "spaces"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.splitlines()[0].split() == ["name", "method", "searched", "source"]
    bad = subprocess.run([sys.executable, "-m", "seqrep.cli", "spaces", "no-such-space"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith("seqrep: error: unknown search space 'no-such-space'")
