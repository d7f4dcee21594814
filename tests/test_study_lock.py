"""Many drivers, one machine, one store: the study lock, the serialised creation of an embedded
store, and bad places and files refused with one line (exit 2) before Ray starts."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from seqrep import locks, studydir
from seqrep.cli import main
from seqrep.errors import SeqrepError

HOLD = ("import sys, time\nfrom seqrep import locks\n"
        "with locks.hold(sys.argv[1], 'st', 'seqrep search st'):\n"
        "    print('held', flush=True)\n    time.sleep(120)\n")


@pytest.fixture
def holder(tmp_path):
    """Another driver on this host that owns the study folder `tmp_path/s/st`."""
    study = tmp_path / "s" / "st"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(study)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield study, proc
    proc.kill()
    proc.wait()


def test_a_live_driver_on_this_host_keeps_the_study(holder):
    study, proc = holder
    owner = json.loads((study / studydir.OWNER_FILE).read_text())
    assert owner["pid"] == proc.pid and owner["host"] == socket.gethostname() and owner["command"] == "seqrep search st"
    expected = (f"study 'st' in {study} is being run by another driver (pid {proc.pid} on host {socket.gethostname()}, "
                f"started {owner['started']}, command 'seqrep search st'); wait for it to end (should it stop early, "
                "continue the study with the same command and --resume)")
    with pytest.raises(SeqrepError) as err:
        locks.check_free(study, "st", break_lock=True)  # --break-lock never takes a live driver's study
    assert str(err.value) == expected
    with pytest.raises(SeqrepError) as err, locks.hold(study, "st", "again", break_lock=True):
        pass
    assert str(err.value) == expected


def test_a_lock_left_by_a_dead_driver_on_this_host_is_taken_over_with_a_warning(holder, caplog):
    study, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (study / studydir.LOCK_FILE).exists()  # the killed driver could not release it
    locks.check_free(study, "st")
    with caplog.at_level(logging.WARNING, logger="seqrep.locks"), locks.hold(study, "st", "mine"):
        assert json.loads((study / studydir.OWNER_FILE).read_text())["pid"] == os.getpid()
    assert [r.getMessage() for r in caplog.records] == [
        f"study st: took over the lock of a driver that is no longer running (pid {proc.pid} on host "
        f"{socket.gethostname()}, started {caplog.records[0].getMessage().split('started ')[1].split(',')[0]}, "
        "command 'seqrep search st')"]
    assert sorted(p.name for p in study.iterdir()) == []  # released: nothing of the lock is left


def test_a_lock_from_another_host_is_reported_with_its_age_and_broken_only_on_request(tmp_path, caplog):
    study = tmp_path / "st"
    study.mkdir()
    (study / studydir.LOCK_FILE).write_text("4242\nnode-7\n1\n")  # filelock's marker: pid, host, process start
    started = time.time() - 3 * 3600 - 125
    studydir.write_json(study / studydir.OWNER_FILE, {"host": "node-7", "pid": 4242, "started": "yesterday",
                                                      "started_at": started, "command": "seqrep search x"})
    expected = (f"study 'st' in {study} is locked by a driver on host node-7 (pid 4242, started yesterday, 3h02m "
                "ago), which this host cannot check; if that driver has ended, pass --break-lock (with --resume to "
                "continue its study)")
    for refuse in (lambda: locks.check_free(study, "st"), lambda: locks.hold(study, "st", "c").__enter__()):
        with pytest.raises(SeqrepError) as err:
            refuse()
        assert str(err.value) == expected
    locks.check_free(study, "st", break_lock=True)
    with caplog.at_level(logging.WARNING, logger="seqrep.locks"), locks.hold(study, "st", "c", break_lock=True):
        assert json.loads((study / studydir.OWNER_FILE).read_text())["host"] == socket.gethostname()
    assert "breaking the lock of the driver pid 4242 on host node-7" in caplog.records[0].getMessage()


def test_search_reproduce_and_resume_of_a_running_study_exit_2_at_once(holder, capsys, tmp_path):
    study, proc = holder
    common = ["--dataset", "toy", "--trials", "1", "--storage", str(study.parent),
              "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    for argv in (["search", "table7-nn-toy", "--name", "st", *common],
                 ["search", "table7-nn-toy", "--name", "st", "--resume", *common],
                 ["reproduce", "table7", "--name", "st", *common]):
        if argv[0] == "reproduce":  # reproduce names its studies PREFIX-SPACE-DATASET
            (study.parent / "st-table7-nn-toy-toy").symlink_to(study)
        start = time.monotonic()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("seqrep: error: study ") and err.count("\n") == 1, err
        assert f"is being run by another driver (pid {proc.pid} on host" in err and time.monotonic() - start < 30


def test_drivers_creating_a_new_sqlite_store_at_once_all_succeed(tmp_path):
    """Without the lock beside the database one of them fails (`table runs already exists`, or an
    alembic migration error): both ran MLflow's schema creation at once."""
    uri = f"sqlite:///{tmp_path}/new/m.db"
    code = "import sys, time\nfrom seqrep import tracking\ntime.sleep(float(sys.argv[2]) - time.time())\n" \
           "tracking.prepare_store(sys.argv[1])\n"
    at = time.time() + 8  # past every process's imports: they create the store in the same instant
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, str(at)], stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(errors)[-3000:]
    assert (tmp_path / "new" / "m.db.lock").exists()


BAD_PLACES = [
    (["--storage", "/proc/nope"], "--storage /proc/nope: cannot write in /proc, where it would be created "
     "(No such file or directory); pass --storage with a folder you can write"),
    (["--storage", "{tmp}/file"], "--storage {tmp}/file is not a folder; pass --storage with a folder you can write"),
    (["--storage", "{tmp}/file/s"], "--storage {tmp}/file/s cannot be created: {tmp}/file is a file; "
     "pass --storage with a folder you can write"),
    (["--data-dir", "{tmp}/file"], "--data-dir {tmp}/file is not a folder; pass --data-dir with a folder you can read"),
    (["--tracking-uri", "sqlite:////proc/nope/m.db"], "--tracking-uri sqlite:////proc/nope/m.db: the folder "
     "/proc/nope: cannot write in /proc, where it would be created (No such file or directory); pass --tracking-uri "
     "with a sqlite:/// path in a folder you can write"),
    (["--tracking-uri", "sqlite:///{tmp}/file/m.db"], "--tracking-uri sqlite:///{tmp}/file/m.db: the folder "
     "{tmp}/file is not a folder; pass --tracking-uri with a sqlite:/// path in a folder you can write"),
    (["--tracking-uri", "sqlite:///{tmp}"], "--tracking-uri sqlite:///{tmp}: {tmp} is a folder; name the database "
     "file, e.g. sqlite:///{tmp}/mlflow.db"),
]
BAD_FILES = [
    ("folder.yaml", None, "{path} is a folder, not a search-space file; give the path of a YAML file"),
    ("binary.yaml", b"name: x\x00\x01\x02", "{path}: a binary file (it holds NUL bytes), not YAML text"),
    ("latin1.yaml", "name: caf\u00e9\n".encode("latin-1"),
     "{path}: not a UTF-8 text file (byte 0xe9 at offset 9); a space file is YAML text"),
    ("empty.yaml", b"", "{path}: the file is empty; a space file is a YAML mapping with the fields name, method, "
     "source, datasets, metric, mode, max_epochs, space"),
    ("blank.yaml", b"\n  \n", "{path}: the file is empty; a space file is a YAML mapping with the fields name, "
     "method, source, datasets, metric, mode, max_epochs, space"),
]


def test_bad_places_and_space_files_exit_2_with_one_line_before_ray_starts(tmp_path):
    """In a fresh interpreter, so that 'Ray was never started' means something."""
    (tmp_path / "file").write_text("not a folder")
    cases = []
    for flags, message in BAD_PLACES:
        argv = ["search", "table7-nn-toy", "--dataset", "toy", "--storage", str(tmp_path / "s"), "--tracking-uri",
                f"sqlite:///{tmp_path}/m.db", *[f.format(tmp=tmp_path) for f in flags]]
        cases.append((argv, message.format(tmp=tmp_path)))
    for name, content, message in BAD_FILES:
        path = tmp_path / name
        path.mkdir() if content is None else path.write_bytes(content)
        for argv in (["spaces", str(path)], ["search", str(path), "--dataset", "toy", "--storage", str(tmp_path / "s")]):
            cases.append((argv, message.format(path=path)))
    code = ("import contextlib, io, json, sys\nfrom seqrep.cli import main\nout = []\n"
            "for argv, _ in json.loads(sys.argv[1]):\n    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err):\n        out.append((main(argv), err.getvalue()))\n"
            "ray = sys.modules.get('ray')\nprint(json.dumps([out, ray is not None and ray.is_initialized()]))\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results, ray_started = json.loads(done.stdout.splitlines()[-1])
    assert [r[0] for r in results] == [2] * len(cases)
    assert [r[1] for r in results] == [f"seqrep: error: {message}\n" for _, message in cases]
    assert not ray_started and not (tmp_path / "s").exists()


def test_output_into_a_closed_pipe_ends_quietly():
    read, write = os.pipe()
    os.close(read)  # the reader is gone before seqrep writes (`seqrep spaces NAME --json | head -0`)
    try:
        done = subprocess.run([sys.executable, "-m", "seqrep.cli", "spaces", "table7-nn-toy", "--json"], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")
