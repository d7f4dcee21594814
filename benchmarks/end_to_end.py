"""End to end: whole `seqrep reproduce` runs at an older commit and at this tree, and where their time goes.

For each table, the same command runs first at `--old` (a git worktree of that commit, removed at
the end) and then at this checkout, one after the other on this machine, each with fresh study,
MLflow and output folders in a temporary directory, on the embedded local Ray cluster:

    seqrep reproduce <table> --dataset <dataset> --storage … --tracking-uri sqlite:///… --out …

While a run goes, its process and every descendant (Ray's services, the trial processes) are
sampled from /proc every 0.2 s, so the run's CPU time can be split by who spent it: `driver` (the
`seqrep` process: Ray Tune's loops, MLflow, the report), `trials` (Ray's worker processes:
imports, training, checkpoints), `ray` (Ray's own services: GCS, raylet, agents). `busy` is that
CPU time over wall time times the cores: near 1, the run is bound by CPU, and only less work,
not better overlap, makes it faster. `slot_s` sums the Ray trials' `wall_s` from the study
summaries (a cohort counted once): the time trial slots were taken.

Lines: `run table=… tree=<old|new> commit=… wall_s=… cpu_s=… driver_s=… trials_s=… ray_s=…
busy=… slot_s=…` per run; `same table=… repeat=… trials_equal=<k>/<n>` per pair of runs: the
trials (matched by study and config) whose best epoch and every `valid_*` and `test_*` value the
two trees report are equal, the studies that differ named; then `e2e table=… dataset=… old_s=…
new_s=… ratio=<old/new>` per table (medians over `--repeats`). The speed issue's goal was a ratio
of at least 3 for both tables on 2 cores. Linux only (/proc); git must know `--old`. A table whose data set is not in the data
directory is skipped with the reason.

    python benchmarks/end_to_end.py [--old d84d0b7] [--tables table7:toy,table10:ucr-cbf] [--repeats 1]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD = "d84d0b7"  # the commit before the speed issue (benchmarks/README.md)
TICKS = os.sysconf("SC_CLK_TCK")


class CpuSampler(threading.Thread):
    """CPU seconds (user + system) of process `pid` and of all its descendants, sampled from /proc.

    A process's last sample before it exits is what counts for it, so up to `interval` seconds of
    each exiting process go unseen."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.cpu: dict[int, float] = {}
        self.command: dict[int, str] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def sample(self) -> None:
        table: dict[int, tuple[int, float]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    stat = Path(entry.path, "stat").read_text()
                except OSError:  # gone meanwhile
                    continue
                fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ..., utime, stime
                table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)
        children = collections.defaultdict(list)
        for pid, (ppid, _) in table.items():
            children[ppid].append(pid)
        todo, seen = [self.pid], set()
        while todo:
            pid = todo.pop()
            if pid in table and pid not in seen:
                seen.add(pid)
                todo.extend(children[pid])
        for pid in seen:
            self.cpu[pid] = table[pid][1]
            try:  # read each time: a Ray worker renames itself once it hosts a trial
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if command:  # a process that has exited (a zombie) has none: keep what it had
                self.command[pid] = command

    def split(self) -> dict[str, float]:
        out = {"driver": 0.0, "trials": 0.0, "ray": 0.0}
        for pid, seconds in self.cpu.items():
            command = self.command.get(pid, "")
            kind = "driver" if pid == self.pid else "trials" if command.startswith("ray::") else "ray"
            out[kind] += seconds
        return out


def slot_seconds(storage: Path) -> float:
    """The studies' Ray trials' wall time: `wall_s` summed over the summaries, a cohort once."""
    import pandas as pd

    total = 0.0
    for path in storage.glob("*/trials.parquet"):
        frame = pd.read_parquet(path)
        if "cohort" in frame.columns:
            alone = frame[frame["cohort"].isna()]
            total += alone["wall_s"].sum() + frame.dropna(subset=["cohort"]).groupby("cohort")["wall_s"].first().sum()
        else:
            total += frame["wall_s"].sum()
    return float(total)


def results(storage: Path):
    """Every trial's config, best epoch and final metrics, in an order both trees share."""
    import pandas as pd

    frames = [pd.read_parquet(path) for path in sorted(storage.glob("*/trials.parquet"))]
    frame = pd.concat(frames, ignore_index=True)
    keep = ["study", "best_epoch"] + [c for c in frame.columns if c.startswith(("config.", "valid_", "test_"))]
    frame = frame[keep]
    return frame.sort_values(["study", *sorted(c for c in keep if c.startswith("config."))]).reset_index(drop=True)


def same_results(old: Path, new: Path) -> str:
    """`<equal>/<trials>`: trials whose best epoch and every metric both trees report are equal."""
    a, b = results(old), results(new)
    if len(a) != len(b) or list(a["study"]) != list(b["study"]):
        return f"0/{len(b)} (the trees ran different trials: {len(a)} and {len(b)})"
    columns = [c for c in a.columns if c in b.columns and c not in ("study",)]
    equal = [(a.loc[i, columns].fillna(-1.0) == b.loc[i, columns].fillna(-1.0)).all() for i in range(len(a))]
    differing = sorted({a.loc[i, "study"] for i, same in enumerate(equal) if not same})
    return f"{sum(equal)}/{len(a)}" + (f" (differing: {', '.join(differing)})" if differing else "")


def run(tree: Path, table: str, dataset: str, work: Path) -> dict[str, float]:
    """One `seqrep reproduce` of `table` with the code of `tree`; its wall time, CPU split and slot time."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree / "platform"), str(tree)]))
    # from `work`, as the run: Python puts the current folder first on sys.path, so a run started in
    # a checkout would take that checkout's `trainables` whatever PYTHONPATH says
    found = subprocess.run([sys.executable, "-c", "import seqrep, trainables; print(seqrep.__file__); print(trainables.__file__)"],
                           env=env, cwd=work, capture_output=True, text=True, check=True).stdout.split()
    for path in found:
        if not Path(path).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"end_to_end: PYTHONPATH={env['PYTHONPATH']} imports {path}, which is not in {tree}")
    command = [sys.executable, "-m", "seqrep.cli", "reproduce", table, "--dataset", dataset,
               "--storage", str(work / "studies"), "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}",
               "--out", str(work / "tables")]
    start = time.perf_counter()
    with open(work / "log.txt", "w") as log:
        process = subprocess.Popen(command, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        sampler = CpuSampler(process.pid)
        sampler.start()
        code = process.wait()
        sampler.stop()
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"end_to_end: {' '.join(command)} failed with exit code {code}; its output is in {work / 'log.txt'}")
    cpu = sampler.split()
    return {"wall_s": wall, "cpu_s": sum(cpu.values()), **{f"{k}_s": v for k, v in cpu.items()},
            "busy": sum(cpu.values()) / (wall * len(os.sched_getaffinity(0))), "slot_s": slot_seconds(work / "studies")}


def missing_data(dataset: str) -> str | None:
    from seqrep import data  # this tree's (the path set in `main`)

    if dataset in ("toy", "toy-printed") or not data.missing_files(dataset):
        return None
    return f"{dataset} is not in the data directory {data.resolve_data_dir()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default=OLD, help=f"the commit to compare with (default {OLD})")
    parser.add_argument("--tables", default="table7:toy,table10:ucr-cbf", help="TABLE:DATASET, comma separated")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "platform"))  # `seqrep.data` for the data check, without an install
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="seqrep-e2e-") as scratch:
        old_tree = Path(scratch) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.old],
                       check=True, capture_output=True)
        try:
            for tree in (old_tree, ROOT):  # bytecode compiled before the clock runs, for both trees alike
                subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "platform"), str(tree / "trainables")],
                               check=True, capture_output=True)
            for pair in args.tables.split(","):
                table, dataset = pair.split(":")
                reason = missing_data(dataset)
                if reason:
                    print(f"e2e table={table} dataset={dataset} skipped: {reason}", flush=True)
                    continue
                walls = {"old": [], "new": []}
                for i in range(args.repeats):
                    works = {name: Path(scratch) / f"{table}-{name}-{i}" for name in walls}
                    for name, tree, label in (("old", old_tree, args.old), ("new", ROOT, commit)):
                        works[name].mkdir()
                        r = run(tree, table, dataset, works[name])
                        walls[name].append(r["wall_s"])
                        print(f"run table={table} dataset={dataset} tree={name} commit={label} "
                              + " ".join(f"{k}={v:.2f}" if k == "busy" else f"{k}={v:.1f}" for k, v in r.items()),
                              flush=True)
                    print(f"same table={table} dataset={dataset} repeat={i} trials_equal="
                          f"{same_results(works['old'] / 'studies', works['new'] / 'studies')}", flush=True)
                    for work in works.values():
                        shutil.rmtree(work, ignore_errors=True)
                old_s, new_s = statistics.median(walls["old"]), statistics.median(walls["new"])
                print(f"e2e table={table} dataset={dataset} old_s={old_s:.1f} new_s={new_s:.1f} "
                      f"ratio={old_s / new_s:.2f}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], capture_output=True)


if __name__ == "__main__":
    main()
