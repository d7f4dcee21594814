"""`seqrep.memory.keep_freed_memory`: a trial process reuses the large blocks it frees.

Six forward + backward steps of an FD-RNN (H = 200, T = 100, B = 32: its moments and their
gradients are 2.4 MiB tensors) after three warm-up steps. With glibc's initial thresholds (128 KiB)
the step's blocks go back to the kernel and fault their pages in again: ~119,000 page faults in six
steps, measured (a 2.4 MiB tensor is 625 pages). After `keep_freed_memory` 0–1,900. Run in fresh
interpreters, since the setting is per process.

The baseline fixes those initial thresholds with `mallopt`: left alone, glibc raises its mmap
threshold to the size of a freed mapped block, so how often the steps fault depends on what the
interpreter happened to free first (~30,000 faults as a rule, once on CI only 1,218).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from seqrep import memory

STEPS = """
import resource, sys
import torch
import torch.nn.functional as F
from seqrep import memory
from trainables.nn.recurrent import FastDropoutRNN
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    assert memory.keep_freed_memory()
else:  # glibc's initial thresholds, held fixed (module docstring)
    assert memory.set_thresholds(128 * 1024, 128 * 1024)
x = (torch.rand(100, 32, 88, generator=torch.Generator().manual_seed(0)) < 0.1).float()
net = FastDropoutRNN(88, 200, 88, "tanh", p_drop_input=0.2, p_drop_hidden=0.3, p_drop_output=0.5)
def step():
    F.binary_cross_entropy_with_logits(net(x), x).backward()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
before = faults()
for _ in range(6):
    step()
print(faults() - before)
"""


def step_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def test_training_steps_stop_faulting_their_memory_back_in():
    if not memory.keep_freed_memory():
        pytest.skip("no glibc mallopt here: keep_freed_memory changes nothing")
    initial, kept = step_faults("initial"), step_faults("keep")
    assert initial > 6 * 625 * 20  # every step faults in at least twenty of its tensors again
    assert kept < initial / 20, (initial, kept)
