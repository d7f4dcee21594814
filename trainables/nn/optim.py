"""The optimisers of the thesis as climin implements them, and gradient renormalisation.

The thesis trains with rmsprop or Adadelta, both "with Nesterov momentum (Sutskever et al., 2013)"
(Sections 2.5.2, 2.6.3, 3.5.2 and 4.4), using the authors' library climin (BRML/climin). The update
rules below are climin's code, not its docstrings (which differ, see below), transcribed from
`climin/rmsprop.py` and `climin/adadelta.py` on the master branch. Per iteration, with climin's
`wrt` θ_t and previous full step s_{t-1} (s_0 = 0), both optimisers do

    step1   = β s_{t-1}                  # momentum: "first, we make a step according to the
    θ̃_t     = θ_t − step1                #  momentum and then we calculate the gradient"
    g_t     = f'(θ̃_t)                    # the only point where a gradient is evaluated
    step2   = Δ(g_t)                     # the optimiser's own rule, below
    θ_{t+1} = θ̃_t − step2
    s_t     = step1 + step2

rmsprop (`climin/rmsprop.py`, `RmsProp(wrt, fprime, step_rate, decay=0.9, momentum=0, ...)`):

    r_0 = 1                                        # `self.moving_mean_squared = 1`, not 0
    r_t = γ r_{t-1} + (1 − γ) g_t²                 # γ = decay
    Δ   = α g_t / sqrt(r_t + 1e-8)                 # α = step_rate; 1e-8 *inside* the root

The 1e-8 is a literal in climin, not a parameter; here it is `offset` with that default.

Adadelta (`climin/adadelta.py`, `Adadelta(wrt, fprime, step_rate=1, decay=0.9, momentum=0,
offset=1e-4)`):

    gms_0 = 0, sms_0 = 0
    gms_t = γ gms_{t-1} + (1 − γ) g_t²
    Δ     = α sqrt(sms_{t-1} + ε) / sqrt(gms_t + ε) g_t      # ε = offset, inside both roots
    sms_t = γ sms_{t-1} + (1 − γ) s_t²                       # s_t the *full* step, momentum included

Zeiler's (2012) Adadelta is α = 1, β = 0; climin's step rate α scales Δ, not the momentum step.

Reformulation for PyTorch. climin evaluates the gradient itself (`fprime(self.wrt)`) after the
momentum step; a PyTorch loop hands `step()` the gradient at the parameters as they are. So the
parameters here are kept at the look-ahead point φ_t := θ̃_t = θ_t − β s_{t-1}, and one `step()`,
given g_t = f'(φ_t), does

    s_t     = β s_{t-1} + Δ(g_t)
    φ_{t+1} = φ_t − Δ(g_t) − β s_t           ( = θ_{t+1} − β s_t = θ̃_{t+1} )

Since s_0 = 0, φ_0 = θ_0: the sequence of points at which gradients are evaluated is climin's
sequence θ̃_0, θ̃_1, … (equal in exact arithmetic; in float64 the tests find them equal to within
1e-16: climin computes (θ̃_t − Δ) − β s_t as well, but `sub_(s, alpha=β)` may fuse the product
into the subtraction). What differs is where the parameters *rest* between steps: climin's
`wrt` is θ_t = φ_t + β s_{t-1}, the point a climin loop holds after each iteration and would
compute a validation loss at. `climin_point()` moves the parameters there for the duration of a
`with` block and restores them bit for bit afterwards. With β = 0, φ_t = θ_t.

Deliberate differences and ambiguities:

- Parameters whose `.grad` is None are skipped, as in every PyTorch optimiser; climin has one
  flat parameter vector and always applies the momentum step to all of it.
- Until August 2015 (climin issue #29, "potential bug in adadelta") Adadelta's momentum step was
  `step1 = step_m1 * m * self.step_rate`, i.e. β α s_{t-1}; the fix made it β s_{t-1}. The
  Adadelta experiments of Section 4.4 (STORN, 2014) most likely ran the old rule.
  `scale_momentum_by_step_rate=True` reproduces it (equivalently: momentum β α); the default
  follows the current source. With α = 1 the two agree.
- climin's docstrings disagree with its code: rmsprop's Nesterov equations write α / r_t without
  the root, and Adadelta's write s_t from the gradient step Δθ_t alone. The code, transcribed
  above, is what runs.
- rmsprop's step-rate adaptation (`step_adapt`) is not implemented: the thesis does not use it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

import torch

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


def _check_hyperparameters(step_rate: float, decay: float, momentum: float, offset: float) -> None:
    if not step_rate > 0:
        raise ValueError(f"step_rate > 0 must hold, but got step_rate={step_rate}")
    if not 0 <= decay < 1:
        raise ValueError(f"0 <= decay < 1 must hold, but got decay={decay}")
    if not 0 <= momentum < 1:
        raise ValueError(f"0 <= momentum < 1 must hold, but got momentum={momentum}")
    if not offset >= 0:
        raise ValueError(f"offset >= 0 must hold, but got offset={offset}")


class _Flat:
    """One step's worth of a bucket of parameters (same device and dtype) as flat vectors.

    Every state tensor of `names` lives in one flat buffer per name, and `optimizer.state[p][name]`
    is a view into it, so `state_dict()` keeps its per-parameter layout while the update runs
    as a handful of operations on whole vectors.
    """

    def __init__(self, params: list[torch.Tensor], states: list[dict[str, Any]], names: tuple[str, ...]):
        self.params, self.states, self.names = params, states, names
        numels = [p.numel() for p in params]
        self.flat: dict[str, torch.Tensor] = {}
        self.views: dict[str, list[torch.Tensor]] = {}
        for name in names:
            self.flat[name] = torch.cat([state[name].reshape(-1) for state in states])
            self.views[name] = [v.view_as(p) for v, p in zip(self.flat[name].split(numels), params)]
            for state, view in zip(states, self.views[name]):
                state[name] = view
        self.step2 = torch.empty_like(self.flat["last_step"])
        self.step2_views = [v.view_as(p) for v, p in zip(self.step2.split(numels), params)]

    def current(self, params: list[torch.Tensor], states: list[dict[str, Any]]) -> bool:
        """Whether these are still the parameters and state tensors the buffers belong to (a
        `load_state_dict` replaces the state tensors)."""
        return (len(params) == len(self.params) and all(p is q for p, q in zip(params, self.params))
                and all(state[name] is view for name in self.names
                        for state, view in zip(states, self.views[name])))

    def gradient(self) -> torch.Tensor:
        return torch.cat([p.grad.reshape(-1) for p in self.params])


def _undecorated(name: str):
    """`torch.optim.Optimizer.<name>` without its `torch._disable_dynamo` decorator, whose first call
    imports torch._dynamo: 1.6 s of CPU in every fresh trial process, for optimisers nobody compiles."""
    method = getattr(torch.optim.Optimizer, name)
    return getattr(method, "__wrapped__", method)


class _NesterovClimin(torch.optim.Optimizer):
    """Shared Nesterov bookkeeping: parameters at the look-ahead point φ_t, `last_step` = s_{t-1}.

    A step works on all parameters at once: gradient and state as flat vectors (`_Flat`), one
    operation per term of the update rule, and two `torch._foreach_*` calls to move the
    parameters. A toy network's update is a few hundred numbers, so the number of calls, not the
    arithmetic, is what a step costs. The rules are elementwise, so each number is computed by
    the same operations in the same order as by a per-parameter loop.
    """

    _state_names: tuple[str, ...] = ("last_step",)
    add_param_group = _undecorated("add_param_group")
    state_dict = _undecorated("state_dict")
    zero_grad = _undecorated("zero_grad")
    load_state_dict = _undecorated("load_state_dict")

    def _momentum(self, group: dict[str, Any]) -> float:
        return group["momentum"]

    def _init_state(self, p: torch.Tensor, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _gradient_step(self, grad: torch.Tensor, flat: dict[str, torch.Tensor], group: dict[str, Any],
                       out: torch.Tensor) -> None:
        """Δ(g_t), climin's `step2`, into `out`; may update the gradient averages in `flat`."""
        raise NotImplementedError

    def _after_step(self, flat: dict[str, torch.Tensor], group: dict[str, Any]) -> None:
        """Hook run once s_t is in `flat["last_step"]`."""

    def _buckets(self, group: dict[str, Any]) -> list[_Flat]:
        """The group's parameters that have a gradient, by (device, dtype), with flat state."""
        by_kind: dict[tuple, tuple[list, list]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state[p]
            if not state:
                state["last_step"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self._init_state(p, state)
            params, states = by_kind.setdefault((p.device, p.dtype), ([], []))
            params.append(p)
            states.append(state)
        # not an attribute set in __init__: torch.optim.Optimizer pickles and copies only its
        # defaults, state and groups, and the buffers are rebuilt from the state when missing
        cached = self.__dict__.setdefault("_flat_buffers", {})
        buckets = []
        for kind, (params, states) in by_kind.items():
            bucket = cached.get((id(group), kind))
            if bucket is None or not bucket.current(params, states):
                bucket = cached[id(group), kind] = _Flat(params, states, self._state_names)
            buckets.append(bucket)
        return buckets

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._update()
        return loss

    @torch.no_grad()
    def lean_step(self) -> None:
        """`step()` without a closure and without what `torch.optim.Optimizer` wraps every `step`
        in (its hooks and profiler record, a tenth of a toy network's step): what a training loop
        calls once per minibatch. The same update, bit for bit."""
        self._update()

    def _update(self) -> None:
        for group in self.param_groups:
            beta = self._momentum(group)
            for bucket in self._buckets(group):
                self._gradient_step(bucket.gradient(), bucket.flat, group, out=bucket.step2)
                bucket.flat["last_step"].mul_(beta).add_(bucket.step2)  # s_t = β s_{t-1} + Δ
                torch._foreach_sub_(bucket.params, bucket.step2_views)
                torch._foreach_sub_(bucket.params, bucket.views["last_step"], alpha=beta)  # φ_{t+1} = φ_t − Δ − β s_t
                self._after_step(bucket.flat, group)

    @contextlib.contextmanager
    def climin_point(self) -> Iterator[None]:
        """Within the block the parameters are climin's `wrt` θ_t = φ_t + β s_{t-1}.

        Use it to evaluate where climin users evaluated (validation after an update). On exit the
        look-ahead values are copied back, so training continues unchanged.
        """
        moved: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
        with torch.no_grad():
            for group in self.param_groups:
                beta = self._momentum(group)
                pairs = [(p, state["last_step"]) for p in group["params"] if (state := self.state.get(p))]
                if not pairs:
                    continue
                params, steps = map(list, zip(*pairs))
                moved.append((params, [p.detach().clone() for p in params]))
                torch._foreach_add_(params, steps, alpha=beta)
        try:
            yield
        finally:
            with torch.no_grad():
                for params, saved in moved:
                    torch._foreach_copy_(params, saved)


class RmsProp(_NesterovClimin):
    """climin's rmsprop with Nesterov momentum (module docstring): r_0 = 1, α g / sqrt(r + offset).

    `step_rate` α, `decay` γ (weight of the old average), `momentum` β, `offset` 1e-8 (climin's
    hard-coded constant). `torch.optim.RMSprop` differs: its average starts at 0 and its eps is
    added outside the root, so its first steps are up to 1/sqrt(1 − γ) times larger.
    """

    _state_names = ("last_step", "moving_mean_squared")

    def __init__(self, params: Params, step_rate: float, decay: float = 0.9, momentum: float = 0.0,
                 offset: float = 1e-8):
        _check_hyperparameters(step_rate, decay, momentum, offset)
        super().__init__(params, dict(step_rate=step_rate, decay=decay, momentum=momentum, offset=offset))

    def _init_state(self, p, state):
        state["moving_mean_squared"] = torch.ones_like(p, memory_format=torch.preserve_format)

    def _gradient_step(self, grad, flat, group, out):
        r = flat["moving_mean_squared"]
        r.mul_(group["decay"]).addcmul_(grad, grad, value=1 - group["decay"])
        torch.mul(grad, group["step_rate"], out=out).div_(r.add(group["offset"]).sqrt_())


class Adadelta(_NesterovClimin):
    """climin's Adadelta with Nesterov momentum (module docstring).

    Δ = α sqrt(sms + ε) / sqrt(gms + ε) g with `step_rate` α (1 in Zeiler's paper), `decay` γ of
    both averages, `offset` ε, `momentum` β. The step average `sms` is fed the full step s_t,
    momentum included, as climin's code does. `scale_momentum_by_step_rate=True` gives the
    pre-2015 climin momentum step β α s_{t-1} (module docstring).
    """

    _state_names = ("last_step", "gms", "sms")

    def __init__(self, params: Params, step_rate: float = 1.0, decay: float = 0.9, momentum: float = 0.0,
                 offset: float = 1e-4, scale_momentum_by_step_rate: bool = False):
        _check_hyperparameters(step_rate, decay, momentum, offset)
        super().__init__(params, dict(step_rate=step_rate, decay=decay, momentum=momentum, offset=offset,
                                      scale_momentum_by_step_rate=scale_momentum_by_step_rate))

    def _momentum(self, group):
        if group["scale_momentum_by_step_rate"]:
            return group["momentum"] * group["step_rate"]
        return group["momentum"]

    def _init_state(self, p, state):
        state["gms"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["sms"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _gradient_step(self, grad, flat, group, out):
        d, o, gms = group["decay"], group["offset"], flat["gms"]
        gms.mul_(d).addcmul_(grad, grad, value=1 - d)
        torch.add(flat["sms"], o, out=out).sqrt_().div_(gms.add(o).sqrt_()).mul_(grad).mul_(group["step_rate"])

    def _after_step(self, flat, group):
        d, s = group["decay"], flat["last_step"]
        flat["sms"].mul_(d).addcmul_(s, s, value=1 - d)


@torch.no_grad()
def renormalise_gradients(parameters: Iterable[torch.Tensor], threshold: float | None) -> torch.Tensor:
    """Rescale the gradients to global L2 norm `threshold` ν if their norm exceeds it (Section 1.3).

    The norm is the Euclidean norm of all gradient entries together (Pascanu et al., 2013:
    "whenever the length of the gradient ... exceeds a certain threshold τ, the gradient is
    projected to the length of τ"). `threshold=None` leaves the gradients alone. Returns the norm
    before rescaling. Not `torch.nn.utils.clip_grad_norm_`: that scales by ν / (norm + 1e-6), so
    a rescaled gradient has norm slightly below ν.
    """
    if threshold is not None and not threshold > 0:
        raise ValueError(f"threshold > 0 (or None) must hold, but got threshold={threshold}")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    if threshold is not None:
        # clamp instead of `if norm > threshold`: no device sync, and a factor of exactly 1 when
        # the norm is below ν (or zero), which leaves the gradient bit for bit unchanged.
        factor = (threshold / norm).clamp_(max=1.0)
        for g in grads:
            g.mul_(factor.to(g.dtype))
    return norm
