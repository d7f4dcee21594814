"""Trial processes keep the memory they free instead of handing it back to the operating system.

glibc's malloc returns a freed block to the kernel at once when the block came from `mmap` (blocks
above its mmap threshold, which adapts between 128 KiB and 32 MiB) or when the free space at the
top of the heap exceeds its trim threshold. A training step frees and allocates the same large
tensors again and again (an FD-RNN's (T, B, H) moments, their gradients), so each allocation then
faults its pages back in, zeroed, one 4 KiB page at a time: about 1 µs a page on the virtual
machines measured here, ~2 ms for every fresh 7.7 MB tensor, against 0.6 ms for the arithmetic
that fills it. `keep_freed_memory` fixes both thresholds high (`mallopt`), so that freed blocks up
to 32 MiB stay in the process for the next step; it changes no number a trial computes, only where
its memory comes from. Measured with `benchmarks/fd_rnn_step.py` (H = 600, B = 32, T = 100, one
thread): FD-RNN forward + backward 0.236–0.244 s → 0.226–0.229 s, nn.RNN unchanged.

Larger blocks are left to `mmap`: without it (`M_MMAP_MAX` 0) a Piano-midi.de batch of 3,857 steps
trained slower (6.4k against 7.6–8.0k frames/s), the heap growing and shrinking around them.
Where there is no glibc (macOS, musl) nothing changes.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts (its adaptive ceiling on 64-bit)
TRIM_THRESHOLD = 2**30


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (module docstring); whether it took."""
    return set_thresholds(MMAP_THRESHOLD, TRIM_THRESHOLD)


def set_thresholds(mmap: int, trim: int) -> bool:
    """Fix glibc's mmap and trim thresholds (bytes) for this process, which also ends glibc's
    adaptation of them; whether it took (False without glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, mmap) == 1 and mallopt(M_TRIM_THRESHOLD, trim) == 1
