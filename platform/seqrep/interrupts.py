"""Ctrl+C during a study: the first stops it gracefully (resumable), a second aborts at once.

SIGTERM (a scheduler pre-empting the driver, `kill PID`) is taken as a Ctrl+C: the study stops
resumably; `stop_signal()` says which signal stopped it (the CLI exits 128 + its number).

Ray Tune's own SIGINT handler stops gracefully but leaves no trace of it: `fit()` returns as if
the study had finished. So seqrep takes SIGINT itself (TUNE_DISABLE_SIGINT_HANDLER), notes the
interrupt and forwards it as SIGUSR1, on which Ray Tune always runs that same graceful stop.

Studies that run at once (`seqrep reproduce`) run Ray Tune in threads of their own, where Ray Tune
installs no handler and watches a stop event nobody sets; `seqrep.tune_threads` hands those runs
`THREAD_STOP`, which the handler sets, so the same graceful stop reaches every study.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

INTERRUPTED = threading.Event()
THREAD_STOP = threading.Event()  # the stop event of Ray Tune runs in threads other than the main one
_STOPPED_BY = [signal.SIGINT]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_signal() -> int:
    """The signal that last stopped (or aborted) a study: SIGINT or SIGTERM."""
    return int(_STOPPED_BY[0])


@contextlib.contextmanager
def graceful_stop():
    """Within this context a first SIGINT or SIGTERM sets `INTERRUPTED` and asks Ray Tune to stop
    (in a thread other than the main one, where signals do not arrive, it does nothing: the main
    thread's context, around the threads, does it for them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    INTERRUPTED.clear()
    THREAD_STOP.clear()
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def handler(signum, frame):
        _STOPPED_BY[0] = signum
        if INTERRUPTED.is_set() or not hasattr(signal, "SIGUSR1"):
            raise KeyboardInterrupt
        INTERRUPTED.set()
        what = "Ctrl+C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\nseqrep: {what}: stopping the study after the trials' latest checkpoints "
              f"(press Ctrl+C again to abort at once)", file=sys.stderr, flush=True)
        THREAD_STOP.set()
        if signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None):
            os.kill(os.getpid(), signal.SIGUSR1)  # Ray Tune's handler, when it runs in this thread

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
