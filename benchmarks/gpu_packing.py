"""GPU packing: one fixed set of short trials as seqrep studies at 1, 2, 4 and 8 trials per GPU.

The same trials (same space, data set, seed and budget, so the same configs) run four times in
this process as seqrep studies, with `gpus_per_trial` = 1, 0.5, 0.25 and 0.125. For each packing
it prints the study's wall time, its throughput in trials per hour and, when a real GPU is
present, the mean GPU utilisation sampled every 0.5 s during the study (`nvidia-smi`; otherwise
`gpu_util=n/a`), and `peak_running`: the most trials Ray had placed on the GPUs at once (read from
the GPUs it had handed out), which shows that the packing took effect. The Ray cluster and the
MLflow store are started, and Ray Tune imported, before the clock runs, so the first packing does
not pay their one-off costs. `cpus_per_trial` is the
machine's cores / (8 x GPUs) at every packing, so CPUs never limit how many trials Ray places at
once, and every trial gets the same torch threads at every packing.

The ratio is taken against one trial per GPU because that is what a study gets without
`--gpus-per-trial` fractions: each small trial holds a whole GPU that it cannot keep busy. The
ratio says how much more a study gets done on the same GPUs by packing.

Last line: `ratio=<best packed throughput (2, 4 or 8 per GPU) / one-per-GPU throughput>`.

On a GPU machine (real GPUs, their count from torch), with the piano-roll data:

    SEQREP_DATA=/path/to/data python benchmarks/gpu_packing.py --space table1-fd-rnn --dataset jsb \\
        --trials 16 --max-epochs 20

On a CPU-only machine Ray is started with one *logical* GPU: trials run on the CPU, so there is
no device contention, and the figure only shows that the scheduler packs trials (`peak_running`)
and how the CPU copes with more of them at once, not what packing gains on a GPU. On 2 cores the
ratio is below 1: the trials are CPU-bound, and every packed trial is one more Ray worker process
to start (importing torch) on the same two cores, where one-per-GPU reuses a single one.

    python benchmarks/gpu_packing.py [--space table7-nn-toy] [--dataset toy] [--trials 8] [--max-epochs 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from seqrep import cluster, launch, studies, summary, tracking

PACKINGS = (1, 2, 4, 8)  # trials per GPU


class Sampler:
    """Samples, every `interval` s in a thread, how many trials Ray has placed on the GPUs (from the
    GPUs it has handed out) and, with `nvidia_smi`, the mean `utilization.gpu` of the visible GPUs."""

    def __init__(self, gpus: float, gpus_per_trial: float, nvidia_smi: bool, interval: float = 0.5):
        self.gpus, self.gpus_per_trial, self.interval = gpus, gpus_per_trial, interval
        self.running: list[int] = []
        self.util: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._command = None
        if nvidia_smi:
            self._command = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            if visible and all(part.strip().isdigit() for part in visible.split(",")):
                self._command.append(f"--id={visible}")

    def _sample(self) -> None:
        try:
            free = cluster.available_gpus()
            self.running.append(round((self.gpus - free) / self.gpus_per_trial))
        except Exception:  # noqa: BLE001 - a missed sample is no reason to stop the study
            pass
        if self._command is not None:
            try:
                out = subprocess.run(self._command, capture_output=True, text=True, timeout=5)
                values = [float(line) for line in out.stdout.split() if line.strip()]
                if out.returncode == 0 and values:
                    self.util.append(sum(values) / len(values))
            except (OSError, subprocess.SubprocessError, ValueError):
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="packing-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def mean_util(self) -> str:
        return f"{sum(self.util) / len(self.util):.1f}%" if self.util else "n/a"

    def peak_running(self) -> int:
        return max(self.running, default=0)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _packings(args, work: Path, uri: str, gpus: float, cpus_per_trial: float, nvidia_smi: bool):
    """One study per packing; rows (k, wall, trials/h, util, peak, statuses) and the store's start-up."""
    t0 = time.perf_counter()
    tracking.prepare_store(uri)  # a new sqlite store runs MLflow's migrations once
    store_init = time.perf_counter() - t0
    launch.preload()  # so that the first packing does not pay Ray Tune's imports

    rows = []
    for k in PACKINGS:
        options = studies.StudyOptions(trials=args.trials, max_epochs=args.max_epochs, seed=0, name=f"pack{k}",
                                      storage=str(work / "studies"), tracking_uri=uri, gpus_per_trial=1 / k,
                                      cpus_per_trial=cpus_per_trial, command="benchmark")
        plan = studies.plan(args.space, args.dataset, options)
        t0 = time.perf_counter()
        with Sampler(gpus, 1 / k, nvidia_smi) as sampler:
            launch.run_study(plan)
        wall = time.perf_counter() - t0
        statuses = summary.read(plan.directory)["status"].value_counts().to_dict()
        rows.append((k, wall, plan.trials / wall * 3600, sampler.mean_util(), sampler.peak_running(), statuses))
    return rows, store_init


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="table7-nn-toy")
    parser.add_argument("--dataset", default="toy")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=100)
    args = parser.parse_args()

    real_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = real_gpus or 1
    cpus = cores()
    cpus_per_trial = cpus / (max(PACKINGS) * gpus)
    nvidia_smi = real_gpus > 0 and shutil.which("nvidia-smi") is not None

    work = Path(tempfile.mkdtemp(prefix="seqrep-pack-"))
    uri = f"sqlite:///{work}/m.db"
    t0 = time.perf_counter()
    with cluster.local(num_cpus=cpus, num_gpus=gpus):
        ray_start = time.perf_counter() - t0
        rows, store_init = _packings(args, work, uri, gpus, cpus_per_trial, nvidia_smi)

    kind = (f"{real_gpus} real GPU(s)" if real_gpus else
            "1 logical GPU (no GPU here: trials run on the CPU, so this measures scheduling/packing only, "
            "no device contention)")
    print(f"space={args.space} dataset={args.dataset} trials={args.trials} max_epochs={args.max_epochs}")
    print(f"gpus={kind} cpus={cpus} cpus_per_trial={cpus_per_trial:g}")
    print(f"ray_start_s={ray_start:.2f} store_init_s={store_init:.2f} studies={work / 'studies'} tracking={uri}")
    for k, wall, throughput, util, peak, statuses in rows:
        print(f"trials_per_gpu={k} gpus_per_trial={1 / k:g} wall_s={wall:.2f} trials_per_hour={throughput:.0f} "
              f"gpu_util={util} peak_running={peak} statuses={statuses}")
    base = rows[0][2]
    best = max(rows[1:], key=lambda row: row[2])
    print(f"best_packing={best[0]}_per_gpu")
    print(f"ratio={best[2] / base:.3f}")


if __name__ == "__main__":
    main()
