"""One driver per study folder, and one creator of an embedded MLflow store.

A driver owns its study folder while it runs: `<study>/driver.lock` is a `filelock.SoftFileLock`
marker (created exclusively, so it holds on a shared file system such as the EFS that cluster.yaml
mounts; it records the pid, host and process start of its owner) and `<study>/driver.json` says
who that is in words (host, pid, start time, command). A second driver is refused at once. A lock
whose owner died on this host is taken over (filelock proves the owner dead by its pid and process
start); one from another host cannot be checked from here, so it is reported with its age and the
flag `--break-lock` that takes it over.

This module imports neither Ray, MLflow nor torch.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from seqrep import studydir
from seqrep.errors import SeqrepError

log = logging.getLogger(__name__)

BREAK_FLAG = "--break-lock"


def _owner(directory: Path) -> dict[str, Any] | None:
    """The recorded owner of the study folder, when a driver holds (or held) its lock."""
    if not (directory / studydir.LOCK_FILE).exists():
        return None
    try:
        owner = studydir.read_json(directory / studydir.OWNER_FILE)
    except (OSError, ValueError):
        owner = None
    return owner if isinstance(owner, dict) else {}


def _alive_here(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _age(owner: dict[str, Any]) -> str:
    seconds = max(0, int(time.time() - float(owner.get("started_at") or time.time())))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _who(owner: dict[str, Any]) -> str:
    return (f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, started {owner.get('started', '?')}, "
            f"command {owner.get('command', '?')!r}")


def _running(name: str, directory: Path, owner: dict[str, Any]) -> SeqrepError:
    return SeqrepError(f"study {name!r} in {directory} is being run by another driver ({_who(owner)}); "
                       "wait for it to end (should it stop early, continue the study with the same command and --resume)")


def _elsewhere(name: str, directory: Path, owner: dict[str, Any]) -> SeqrepError:
    return SeqrepError(f"study {name!r} in {directory} is locked by a driver on host {owner.get('host', '?')} "
                       f"(pid {owner.get('pid', '?')}, started {owner.get('started', '?')}, {_age(owner)} ago), "
                       f"which this host cannot check; if that driver has ended, pass {BREAK_FLAG} (with --resume "
                       "to continue its study)")


def check_free(directory: Path, name: str, break_lock: bool = False) -> None:
    """Raise if another driver (alive on this host, or on another host) holds the study folder."""
    directory = Path(directory)
    owner = _owner(directory)
    if owner is None or (owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid()):
        return
    if owner.get("host") == socket.gethostname():
        if isinstance(owner.get("pid"), int) and _alive_here(owner["pid"]):
            raise _running(name, directory, owner)
        return  # its driver died: `hold` takes the lock over
    if owner.get("host") and not break_lock:
        raise _elsewhere(name, directory, owner)


@contextlib.contextmanager
def hold(directory: Path, name: str, command: str, break_lock: bool = False) -> Iterator[None]:
    """Own the study folder for this block (created if need be); refuse if another driver owns it."""
    from filelock import SoftFileLock, Timeout

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = SoftFileLock(str(directory / studydir.LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        owner = _owner(directory) or {"pid": lock.pid}
        here = owner.get("host") in (None, socket.gethostname())
        if here or not break_lock:
            raise (_running if here else _elsewhere)(name, directory, owner) from None
        log.warning("study %s: breaking the lock of the driver %s, as %s asks", name, _who(owner), BREAK_FLAG)
        lock.break_lock()
        lock.acquire()
    stale = _owner(directory)  # a driver that ends removes its record before it releases the lock
    if stale:
        log.warning("study %s: took over the lock of a driver that is no longer running (%s)", name, _who(stale))
    now = datetime.datetime.now().astimezone()
    studydir.write_json(directory / studydir.OWNER_FILE, {
        "host": socket.gethostname(), "pid": os.getpid(), "started": now.isoformat(timespec="seconds"),
        "started_at": now.timestamp(), "command": command})
    try:
        yield
    finally:
        (directory / studydir.OWNER_FILE).unlink(missing_ok=True)
        lock.release()


@contextlib.contextmanager
def store_creation(database: Path, timeout_s: float = 300.0) -> Iterator[None]:
    """Serialise creating (migrating) an embedded sqlite store across processes: a lock beside it."""
    from filelock import FileLock, Timeout

    try:
        with FileLock(f"{database}.lock", timeout=timeout_s):
            yield
    except Timeout:
        raise SeqrepError(f"the MLflow store {database} is being created by another process that has not finished "
                          f"in {timeout_s:.0f} s; if none is running, remove {database}.lock") from None
