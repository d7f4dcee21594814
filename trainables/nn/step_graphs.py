"""A recurrence's time loop on fixed-address buffers, with runs of its steps replayed as CUDA graphs.

On a GPU a small recurrence is bound by kernel launches: each FD-RNN step is three kernels (two
recurrent products, one fused elementwise kernel) of a few microseconds of work each, and the
host takes ~45 us to launch them. A CUDA graph launches a recorded run of kernels at once, but
records their buffers' addresses: so the loop runs in an `Arena`, buffers allocated once per
(kind, members, batch, hidden) and reused while the sequences fit, which the caller copies its
inputs into and its outputs out of (a few copies per call against thousands of launches).

- `segments(steps, backward)` cuts a loop into runs: full chunks of `CHUNK` steps at fixed
  offsets 1 + k CHUNK (the same chunk of any sequence long enough, whatever its length) that can
  be graphs, and the steps around them that run as they are (step 0 and the last steps). A
  chunk's graph is the same for every call: stacked members run every step (`fused_tanh`).
- `Graphs.run(key, body)` runs `body` (the chunk's steps, on the arena's buffers): the first time
  as it is (which compiles and warms its kernels), the second time recorded as a CUDA graph, from
  then on replayed. The graph runs the same kernels on the same shapes, so it gives the numbers of
  the loop it recorded. Off a GPU, while another graph is being recorded, or with SEQREP_GRAPHS=0,
  every run is the body itself (the CPU tests run the same segments and arenas this way).

`Arena.products` runs a step's two recurrent products (independent of each other: both read the
previous step's outputs). With SEQREP_GRAPH_FORK=1 (an experiment, off by default: not yet
measured on a GPU) a graph records the second on a side stream, forked from and joined back to
the recording stream within the step, so that a replay runs the two at once; the same kernels on
the same buffers, so the same numbers.

`arena(key, steps, ...)` keeps the last `KEEP` arenas, `KEEP_BYTES` at most (least recently used
out first); a sequence longer than its arena holds replaces it (and its graphs) by one with room.
"""

from __future__ import annotations

import collections
import math
import os
import threading
import warnings
from collections.abc import Callable

import torch

Tensor = torch.Tensor
CHUNK = 8  # steps per graph: at most CHUNK - 1 steps of a sequence's tail run outside graphs
KEEP = 16  # arenas kept (shapes: training and evaluation minibatches, forward and backward, solo and stacked)
KEEP_BYTES = 4 << 30  # and at most this much memory in them (the least recently used go first)
ROOM = 64  # an arena holds a multiple of ROOM steps (+1), so that a few sizes serve every length


def segments(steps: int, backward: bool = False) -> list[tuple[int, int, int | None]]:
    """(lo, hi, key) runs covering range(steps) in increasing order: key k for the graph chunk
    [1 + k CHUNK, 1 + (k + 1) CHUNK), None for a run of plain steps. A backward chunk also ends
    before the last step (which starts from zero products and is not one of the chunk's)."""
    limit = steps - 1 if backward else steps
    out: list[tuple[int, int, int | None]] = []
    t = 0
    while t < steps:
        if t >= 1 and (t - 1) % CHUNK == 0 and t + CHUNK <= limit:
            out.append((t, t + CHUNK, (t - 1) // CHUNK))
            t += CHUNK
            continue
        if out and out[-1][2] is None:
            out[-1] = (out[-1][0], t + 1, None)
        else:
            out.append((t, t + 1, None))
        t += 1
    return out


def _graphs_wanted(device: torch.device) -> bool:
    return device.type == "cuda" and os.environ.get("SEQREP_GRAPHS", "1") != "0"


def _fork_wanted() -> bool:
    return os.environ.get("SEQREP_GRAPH_FORK", "0") == "1"


class Graphs:
    """The CUDA graphs of one arena's chunks, by key (module docstring)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.failed = False  # a recording failed: every chunk runs as it is from then on
        self._seen: set = set()
        self._graphs: dict = {}
        self._stream = self._pool = None
        self.side = None  # while a graph records with SEQREP_GRAPH_FORK=1: the stream of the forked products

    def run(self, key: int | None, body: Callable[[], None]) -> None:
        if key is None or self.failed or not _graphs_wanted(self.device) or torch.cuda.is_current_stream_capturing():
            body()
            return
        graph = self._graphs.get(key)
        if graph is None:
            if key not in self._seen:  # first time: as it is (compiles the kernels, warms cuBLAS)
                self._seen.add(key)
                body()
                return
            graph = self._graphs[key] = self._capture(body)
            if graph is None:
                body()
                return
        graph.replay()

    def _capture(self, body: Callable[[], None]):
        if self._stream is None:
            self._stream, self._pool = torch.cuda.Stream(self.device), torch.cuda.graph_pool_handle()
        graph, current = torch.cuda.CUDAGraph(), torch.cuda.current_stream(self.device)
        self._stream.wait_stream(current)
        side = _side_stream(self.device) if _fork_wanted() else None
        try:
            with torch.cuda.stream(self._stream):
                graph.capture_begin(pool=self._pool, capture_error_mode="thread_local")
                self.side = side
                try:
                    body()
                finally:
                    self.side = None
                    graph.capture_end()
        except RuntimeError as err:  # the loop goes on without graphs
            warnings.warn(f"seqrep: recording a CUDA graph of the recurrence failed, running it without ({err})")
            self.failed = True
            return None
        current.wait_stream(self._stream)
        return graph


_SIDE: dict = {}
_WARMED: set = set()


def _side_stream(device: torch.device):
    """The side stream of the forked products (one per device), with this thread's cuBLAS
    workspaces for it made once, before a recording (not in a graph's memory pool)."""
    if device not in _SIDE:
        _SIDE[device] = torch.cuda.Stream(device)
    side = _SIDE[device]
    if (device, threading.get_ident()) not in _WARMED:
        with torch.cuda.stream(side):
            one = torch.ones(1, 1, 1, device=device)
            torch.mm(one[0], one[0])
            torch.bmm(one, one)
        side.synchronize()
        _WARMED.add((device, threading.get_ident()))
    return side


class Arena:
    """Named fixed-address buffers of one loop shape, their per-step views, and their `Graphs`.

    `shapes` maps names to shapes, the per-step ones with `room` steps (or room + 1) on their
    `time` axis; `steps(name)` are the per-step views along it, made once."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], time: int, room: int, like: Tensor):
        self.time, self.room = time, room
        self.t = {name: like.new_zeros(shape) for name, shape in shapes.items()}
        self.bytes = sum(x.numel() * x.element_size() for x in self.t.values())
        self.graphs = Graphs(like.device)
        self._views: dict = {}

    def steps(self, name: str) -> tuple[Tensor, ...]:
        views = self._views.get(name)
        if views is None:
            views = self._views[name] = self.t[name].unbind(self.time)
        return views

    def products(self, product: Callable, first: tuple[Tensor, Tensor, Tensor], second: tuple[Tensor, Tensor, Tensor]
                 ) -> None:
        """A step's two recurrent products, each (x, w, out): product(x, w, out=out); forked while a
        graph records with SEQREP_GRAPH_FORK=1 (module docstring)."""
        side = self.graphs.side
        if side is None:
            product(first[0], first[1], out=first[2])
            product(second[0], second[1], out=second[2])
            return
        main = torch.cuda.current_stream(self.graphs.device)
        side.wait_stream(main)  # the fork: what the previous step wrote is there
        with torch.cuda.stream(side):
            product(second[0], second[1], out=second[2])
        product(first[0], first[1], out=first[2])
        main.wait_stream(side)  # the join, before the step's kernel reads both

    def run(self, steps: int, backward: bool, body: Callable[[int, int], None]) -> None:
        """Run `body(lo, hi)` over every segment of the loop (backward: from the last one down)."""
        parts = segments(steps, backward)
        for lo, hi, key in reversed(parts) if backward else parts:
            self.graphs.run(key, lambda lo=lo, hi=hi: body(lo, hi))


_ARENAS: collections.OrderedDict = collections.OrderedDict()


def room_for(steps: int) -> int:
    """The steps an arena for a `steps`-long loop holds: a multiple of ROOM, with one to spare."""
    return -(-(steps + 1) // ROOM) * ROOM


def arena(key: tuple, steps: int, like: Tensor, shapes: Callable[[int], dict[str, tuple[int, ...]]],
          time: int) -> Arena:
    """The arena of `key` (with `like`'s dtype and device) holding at least `steps` + 1 steps;
    `shapes(room)` gives its buffers' shapes."""
    full = (*key, like.dtype, like.device)
    found = _ARENAS.get(full)
    if found is None or found.room < steps + 1:
        _ARENAS.pop(full, None)
        room = room_for(steps)
        sizes = shapes(room)
        size = like.element_size() * sum(math.prod(shape) for shape in sizes.values())
        while _ARENAS and (len(_ARENAS) >= KEEP or size + sum(a.bytes for a in _ARENAS.values()) > KEEP_BYTES):
            _ARENAS.popitem(last=False)
        found = _ARENAS[full] = Arena(sizes, time, room, like)
    _ARENAS.move_to_end(full)
    return found
