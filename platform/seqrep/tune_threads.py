"""Ray Tune runs in threads of one driver: what lets `seqrep reproduce` run a table's studies at once.

Ray Tune assumes one run per driver at a time in four places; `enable()` mends the three that
live inside Ray Tune (each a private hook, so it returns False where this Ray lacks one, and the
studies then run one after another), and `seqrep.launch.trainable_name` the fourth:

1. Stopping. Ray Tune installs its graceful-stop handler only in the main thread; a run in another
   thread watches an event nobody sets. Such runs get `seqrep.interrupts.THREAD_STOP`, which
   seqrep's Ctrl+C handler sets.
2. The driver's staging folder, `<Ray session>/artifacts/<timestamp>/<experiment>/`, where Ray
   Tune creates the trial folders before copying them to storage. The timestamp has whole seconds
   and every study's experiment is named `ray` (`seqrep.studydir.RAY_DIR`), so two studies started
   in the same second would share it, and each would copy the other's trials into its own folder.
   Each run's timestamp gets a number of its own.
3. The trainable registry, whose writes iterate a dict that another run's registration changes
   ("dictionary changed size during iteration"): its writes take a lock.
4. The trainable's registered name (per driver): each study registers its own.
"""

from __future__ import annotations

import itertools
import threading

from seqrep.interrupts import THREAD_STOP

_LOCK = threading.Lock()
_ENABLED: list[bool] = []


def enable() -> bool:
    """Apply the hooks (once per process); whether Ray Tune runs may now share this driver."""
    with _LOCK:
        if not _ENABLED:
            _ENABLED.append(_stop_in_threads() and _own_staging_folders() and _registry_locked())
        return _ENABLED[0]


def _stop_in_threads() -> bool:
    from ray.tune import tune as tune_module

    original = getattr(tune_module, "_setup_signal_catching", None)
    if original is None:
        return False

    def setup_signal_catching() -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            return original()
        return THREAD_STOP

    tune_module._setup_signal_catching = setup_signal_catching
    return True


def _own_staging_folders() -> bool:
    from ray.train._internal import storage

    context = getattr(storage, "StorageContext", None)
    if context is None or not hasattr(context, "_get_session_path"):
        return False
    original = context.__init__
    numbers = itertools.count(1)

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if isinstance(getattr(self, "_timestamp", None), str):
            self._timestamp = f"{self._timestamp}_{next(numbers)}"

    context.__init__ = __init__
    return True


def _registry_locked() -> bool:
    from ray.tune import registry

    kind = getattr(registry, "_Registry", None)
    names = ("register", "flush_values", "unregister", "unregister_all")
    if kind is None or not all(hasattr(kind, name) for name in names):
        return False
    lock = threading.RLock()  # register calls flush_values

    def locked(method):
        def call(self, *args, **kwargs):
            with lock:
                return method(self, *args, **kwargs)

        return call

    for name in names:
        setattr(kind, name, locked(getattr(kind, name)))
    return True
