"""Shared test set-up."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread per test, as `run_in_ray` gives a one-CPU trial. On the tiny matrices of
    these tests a second OpenMP thread only adds synchronisation, which on a busy 2-core machine once
    made a DN test take 96 s instead of 5."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def one_thread_for_the_module():
    """`one_thread` is per test, and a module's own module-scoped fixtures (its data, its solo
    runs) run before it: one thread for them too (a trial's thread count; some tests compare bits
    across fixtures)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _trial_workers(root: int) -> list[int]:
    """The Ray worker processes (under this process's local Ray) that run a trial right now."""
    workers = []
    for pid in _descendants(root):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ImplicitFunc"):
                workers.append(pid)
        except OSError:
            continue
    return workers


@pytest.fixture
def trial_workers():
    """`trial_workers(pid)`: the Ray worker processes under `pid`'s local Ray that run a trial now."""
    return _trial_workers


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session `sid` (what a killed driver left running: its local Ray)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue


@pytest.fixture
def kill_session():
    """`kill_session(sid)`: end what a driver started with `start_new_session=True` left running."""
    return _kill_session


@pytest.fixture
def killed_driver():
    """`killed_driver(cmd, study, after_s)`: run a `seqrep` command line in a session of its own,
    SIGKILL it `after_s` seconds after its study folder holds a trial checkpoint, and end what it
    left running (its local Ray)."""

    def run(cmd: list[str], study: Path, after_s: float) -> None:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while not any(study.glob("ray/*/checkpoint_*")):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.5)
            time.sleep(after_s)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            _kill_session(proc.pid)

    return run
