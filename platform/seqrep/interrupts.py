"""Ctrl+C during a study: the first stops it gracefully (resumable), a second aborts at once.

Ray Tune's own SIGINT handler stops gracefully but leaves no trace of it: `fit()` returns as if
the study had finished. So seqrep takes SIGINT itself (TUNE_DISABLE_SIGINT_HANDLER), notes the
interrupt and forwards it as SIGUSR1, on which Ray Tune always runs that same graceful stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

INTERRUPTED = threading.Event()


@contextlib.contextmanager
def graceful_stop():
    """Within this context a first SIGINT sets `INTERRUPTED` and asks Ray Tune to stop."""
    INTERRUPTED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if INTERRUPTED.is_set() or not hasattr(signal, "SIGUSR1"):
            raise KeyboardInterrupt
        INTERRUPTED.set()
        print("\nseqrep: stopping the study after the trials' latest checkpoints "
              "(press Ctrl+C again to abort at once)", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGUSR1)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
