"""climin's rmsprop and Adadelta with Nesterov momentum (trainables.nn.optim) against climin's
update equations written out in plain Python floats, on f(w) = 0.5 * sum_i a_i w_i^2 whose
gradient is a_i w_i."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from trainables.nn.optim import Adadelta, RmsProp, renormalise_gradients

A = (2.0, 0.5)  # curvatures a_i of the quadratic
W0 = (1.0, -3.0)
TOL = 1e-12


def climin_rmsprop(w, step_rate, decay, momentum, n_steps):
    """climin/rmsprop.py `_iterate`, one float per parameter. Returns (evaluated points, final wrt)."""
    wrt, step, mms = list(w), [0.0] * len(w), [1.0] * len(w)
    evaluated = []
    for _ in range(n_steps):
        step1 = [s * momentum for s in step]
        wrt = [x - s1 for x, s1 in zip(wrt, step1)]
        evaluated.append(list(wrt))
        gradient = [a * x for a, x in zip(A, wrt)]
        mms = [decay * r + (1 - decay) * g**2 for r, g in zip(mms, gradient)]
        step2 = [step_rate * g / math.sqrt(r + 1e-8) for g, r in zip(gradient, mms)]
        wrt = [x - s2 for x, s2 in zip(wrt, step2)]
        step = [s1 + s2 for s1, s2 in zip(step1, step2)]
    return evaluated, wrt


def climin_adadelta(w, step_rate, decay, momentum, offset, n_steps, old_momentum=False):
    """climin/adadelta.py `_iterate`; `old_momentum` is the pre-issue-#29 `step_m1 * m * step_rate`."""
    wrt, step, gms, sms = list(w), [0.0] * len(w), [0.0] * len(w), [0.0] * len(w)
    evaluated = []
    for _ in range(n_steps):
        step1 = [s * momentum * (step_rate if old_momentum else 1.0) for s in step]
        wrt = [x - s1 for x, s1 in zip(wrt, step1)]
        evaluated.append(list(wrt))
        gradient = [a * x for a, x in zip(A, wrt)]
        gms = [decay * m + (1 - decay) * g**2 for m, g in zip(gms, gradient)]
        step2 = [math.sqrt(s + offset) / math.sqrt(m + offset) * g * step_rate
                 for s, m, g in zip(sms, gms, gradient)]
        wrt = [x - s2 for x, s2 in zip(wrt, step2)]
        step = [s1 + s2 for s1, s2 in zip(step1, step2)]
        sms = [decay * s + (1 - decay) * st**2 for s, st in zip(sms, step)]
    return evaluated, wrt


def make_params():
    """The two coordinates as two float64 parameters, so that param groups can split them."""
    return [torch.nn.Parameter(torch.tensor([w], dtype=torch.float64)) for w in W0]


def run(optimizer, params, n_steps):
    """PyTorch loop: backward at the current parameters, then step. Returns the evaluated points."""
    evaluated = []
    for _ in range(n_steps):
        optimizer.zero_grad(set_to_none=True)
        loss = sum(0.5 * a * (p**2).sum() for a, p in zip(A, params))
        loss.backward()
        evaluated.append([p.item() for p in params])
        optimizer.step()
    return evaluated


def assert_points_close(actual, expected):
    assert len(actual) == len(expected)
    for a_t, e_t in zip(actual, expected):
        assert a_t == pytest.approx(e_t, abs=TOL, rel=0)


def test_climin_reference_first_rmsprop_step_by_hand():
    # w = 1, a = 2: g = 2, r_1 = 0.9 * 1 + 0.1 * 4 = 1.3; momentum has nothing to push yet.
    evaluated, wrt = climin_rmsprop([1.0], step_rate=0.1, decay=0.9, momentum=0.9, n_steps=1)
    assert evaluated == [[1.0]]
    assert wrt[0] == pytest.approx(1.0 - 0.1 * 2.0 / math.sqrt(1.3 + 1e-8), abs=TOL, rel=0)


@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_rmsprop_evaluates_climins_points(momentum):
    expected, wrt = climin_rmsprop(W0, step_rate=0.1, decay=0.9, momentum=momentum, n_steps=3)
    params = make_params()
    optimizer = RmsProp(params, step_rate=0.1, decay=0.9, momentum=momentum)
    assert_points_close(run(optimizer, params, 3), expected)
    # After the last step the parameters rest at the next look-ahead point; climin's wrt is
    # recovered inside climin_point() and the look-ahead values come back exactly on exit.
    lookahead = [p.clone() for p in params]
    with optimizer.climin_point():
        assert [p.item() for p in params] == pytest.approx(wrt, abs=TOL, rel=0)
    assert all(torch.equal(p, q) for p, q in zip(params, lookahead))


def test_rmsprop_without_momentum_is_the_plain_rule():
    # w_{t+1} = w_t - α g_t / sqrt(r_t + 1e-8), r_0 = 1, written out for three steps of w = 1, a = 2.
    alpha, gamma = 0.1, 0.9
    w, r, expected = 1.0, 1.0, []
    for _ in range(3):
        expected.append(w)
        g = 2.0 * w
        r = gamma * r + (1 - gamma) * g * g
        w = w - alpha * g / math.sqrt(r + 1e-8)
    param = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    optimizer = RmsProp([param], step_rate=alpha, decay=gamma, momentum=0.0)
    points = []
    for _ in range(3):
        optimizer.zero_grad()
        (0.5 * 2.0 * (param**2).sum()).backward()
        points.append(param.item())
        optimizer.step()
    assert points == pytest.approx(expected, abs=TOL, rel=0)
    assert param.item() == pytest.approx(w, abs=TOL, rel=0)


def test_rmsprop_first_step_differs_from_torch_rmsprop():
    # climin starts the average at 1 and adds the offset inside the root; torch starts at 0 and
    # adds eps outside. w = 1, a = 2, α = 0.01, γ = 0.9:
    ours = 1.0 - 0.01 * 2.0 / math.sqrt(0.9 * 1.0 + 0.1 * 4.0 + 1e-8)  # 0.98245884...
    torchs = 1.0 - 0.01 * 2.0 / (math.sqrt(0.1 * 4.0) + 1e-8)  # 0.96837722...
    assert ours == pytest.approx(0.9824588397, abs=1e-10)
    assert torchs == pytest.approx(0.9683772239, abs=1e-10)
    for cls, kwargs, expected in ((RmsProp, dict(step_rate=0.01, decay=0.9), ours),
                                  (torch.optim.RMSprop, dict(lr=0.01, alpha=0.9, eps=1e-8), torchs)):
        param = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
        optimizer = cls([param], **kwargs)
        (0.5 * 2.0 * (param**2).sum()).backward()
        optimizer.step()
        assert param.item() == pytest.approx(expected, abs=TOL, rel=0)


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_adadelta_evaluates_climins_points(momentum):
    expected, wrt = climin_adadelta(W0, step_rate=0.5, decay=0.9, momentum=momentum, offset=1e-4, n_steps=3)
    params = make_params()
    optimizer = Adadelta(params, step_rate=0.5, decay=0.9, momentum=momentum, offset=1e-4)
    assert_points_close(run(optimizer, params, 3), expected)
    with optimizer.climin_point():
        assert [p.item() for p in params] == pytest.approx(wrt, abs=TOL, rel=0)


def test_adadelta_first_steps_by_hand():
    # w = 1, a = 2, α = 1, γ = 0.9, ε = 1e-4, β = 0 (Zeiler's Adadelta).
    # t=1: g = 2, gms = 0.4, Δ = sqrt(1e-4) / sqrt(0.4001) * 2; sms = 0.1 Δ².
    d1 = math.sqrt(1e-4) / math.sqrt(0.4001) * 2.0
    w1 = 1.0 - d1
    g2 = 2.0 * w1
    gms2 = 0.9 * 0.4 + 0.1 * g2**2
    w2 = w1 - math.sqrt(0.1 * d1**2 + 1e-4) / math.sqrt(gms2 + 1e-4) * g2
    param = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    optimizer = Adadelta([param])
    points = []
    for _ in range(3):
        optimizer.zero_grad()
        (0.5 * 2.0 * (param**2).sum()).backward()
        points.append(param.item())
        optimizer.step()
    assert points[:3] == pytest.approx([1.0, w1, w2], abs=TOL, rel=0)


def test_adadelta_old_momentum_rule_scales_momentum_by_step_rate():
    expected, _ = climin_adadelta(W0, step_rate=0.5, decay=0.9, momentum=0.9, offset=1e-4, n_steps=3,
                                  old_momentum=True)
    fixed, _ = climin_adadelta(W0, step_rate=0.5, decay=0.9, momentum=0.9, offset=1e-4, n_steps=3)
    assert expected[2] != pytest.approx(fixed[2], abs=1e-6)  # the two rules do differ here
    params = make_params()
    optimizer = Adadelta(params, step_rate=0.5, momentum=0.9, scale_momentum_by_step_rate=True)
    assert_points_close(run(optimizer, params, 3), expected)


def test_param_groups_keep_their_own_hyperparameters():
    params = make_params()
    optimizer = RmsProp([{"params": [params[0]]}, {"params": [params[1]], "step_rate": 0.3, "momentum": 0.5}],
                        step_rate=0.1, decay=0.9, momentum=0.9)
    points = run(optimizer, params, 3)
    first, _ = climin_rmsprop(W0, step_rate=0.1, decay=0.9, momentum=0.9, n_steps=3)
    second, _ = climin_rmsprop(W0, step_rate=0.3, decay=0.9, momentum=0.5, n_steps=3)
    assert [p[0] for p in points] == pytest.approx([p[0] for p in first], abs=TOL, rel=0)
    assert [p[1] for p in points] == pytest.approx([p[1] for p in second], abs=TOL, rel=0)


@pytest.mark.parametrize("cls, kwargs", [(RmsProp, dict(step_rate=0.1, momentum=0.9)),
                                         (Adadelta, dict(step_rate=0.5, momentum=0.9))])
def test_state_dict_round_trip_continues_identically(cls, kwargs):
    params = make_params()
    uninterrupted = run(cls(params, **kwargs), params, 6)

    params = make_params()
    optimizer = cls(params, **kwargs)
    first = run(optimizer, params, 3)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed_params = [torch.nn.Parameter(p.clone()) for p in saved["params"]]
    resumed = cls(resumed_params, **{k: v * 0.5 for k, v in kwargs.items()})  # overwritten by load
    resumed.load_state_dict(copy.deepcopy(saved["optimizer"]))
    second = run(resumed, resumed_params, 3)
    assert first + second == uninterrupted  # bit for bit


@pytest.mark.parametrize("cls, kwargs", [(RmsProp, dict(step_rate=0.1, momentum=0.9)),
                                         (Adadelta, dict(step_rate=0.5, momentum=0.9))])
def test_lean_step_is_step_bit_for_bit(cls, kwargs):
    params = make_params()
    stepped = run(cls(params, **kwargs), params, 8)
    params = make_params()
    optimizer = cls(params, **kwargs)
    optimizer.step = optimizer.lean_step  # what the regression loop calls per minibatch
    assert run(optimizer, params, 8) == stepped
    calls = []
    handle = register_optimizer_step_pre_hook(lambda *a: calls.append(a))
    try:
        optimizer.lean_step()
        assert calls == []  # torch.optim's wrapper (hooks, profiler record) is skipped
        type(optimizer).step(optimizer)
        assert len(calls) == 1
    finally:
        handle.remove()


def test_renormalise_gradients_rescales_only_above_threshold():
    a, b = torch.zeros(2, dtype=torch.float64, requires_grad=True), torch.zeros(1, dtype=torch.float64, requires_grad=True)
    a.grad, b.grad = torch.tensor([6.0, 0.0], dtype=torch.float64), torch.tensor([8.0], dtype=torch.float64)
    norm = renormalise_gradients([a, b], 5.0)
    assert norm.item() == pytest.approx(10.0, abs=TOL)
    assert a.grad.tolist() == pytest.approx([3.0, 0.0], abs=TOL) and b.grad.tolist() == pytest.approx([4.0], abs=TOL)

    a.grad, b.grad = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    assert renormalise_gradients([a, b], 5.0).item() == pytest.approx(3.0, abs=TOL)
    assert a.grad.tolist() == [1.0, 2.0] and b.grad.tolist() == [2.0]

    a.grad = torch.tensor([60.0, 80.0], dtype=torch.float64)
    renormalise_gradients([a], None)
    assert a.grad.tolist() == [60.0, 80.0]


def test_renormalise_gradients_hits_the_threshold_where_clip_grad_norm_does_not():
    # clip_grad_norm_ divides by norm + 1e-6, landing 5e-7 short of ν = 5 for a norm of 10.
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    a.grad = torch.tensor([6.0, 8.0], dtype=torch.float64)
    renormalise_gradients([a], 5.0)
    assert torch.linalg.vector_norm(a.grad).item() == pytest.approx(5.0, abs=TOL)
    a.grad = torch.tensor([6.0, 8.0], dtype=torch.float64)
    torch.nn.utils.clip_grad_norm_([a], 5.0)
    assert torch.linalg.vector_norm(a.grad).item() == pytest.approx(5.0 * 10.0 / (10.0 + 1e-6), abs=TOL)


@pytest.mark.parametrize("kwargs, rule", [(dict(step_rate=0.0), "step_rate > 0"),
                                          (dict(decay=1.0), "0 <= decay < 1"),
                                          (dict(momentum=-0.1), "0 <= momentum < 1"),
                                          (dict(offset=-1e-8), "offset >= 0")])
def test_bad_hyperparameters_are_rejected_with_the_rule(kwargs, rule):
    for cls in (RmsProp, Adadelta):
        with pytest.raises(ValueError, match=rule):
            cls(make_params(), **{"step_rate": 0.1, **kwargs})
    with pytest.raises(ValueError, match="threshold > 0"):
        renormalise_gradients(make_params(), 0.0)


def test_a_parameter_that_gains_its_gradient_later_joins_the_flat_update():
    """The flat buffers are rebuilt when the set of parameters with a gradient changes; each
    parameter then continues from its own state, as a per-parameter loop would."""
    params = make_params()
    optimizer = RmsProp(params, step_rate=0.1, momentum=0.9)
    for n_steps, with_gradient in ((2, 1), (3, 2)):  # first only the first coordinate has a gradient
        for _ in range(n_steps):
            optimizer.zero_grad(set_to_none=True)
            sum(0.5 * a * (p**2).sum() for a, p in zip(A[:with_gradient], params)).backward()
            optimizer.step()
    # the parameters rest at the look-ahead point: the point climin evaluates after n steps
    assert params[0].item() == pytest.approx(climin_rmsprop(W0, 0.1, 0.9, 0.9, 6)[0][-1][0], abs=TOL, rel=0)
    assert params[1].item() == pytest.approx(climin_rmsprop(W0, 0.1, 0.9, 0.9, 4)[0][-1][1], abs=TOL, rel=0)


def test_a_loaded_or_deep_copied_optimizer_continues_identically_and_independently():
    """Neither copy may share the flat buffers of the original (the copy steps first)."""
    params = make_params()
    optimizer = RmsProp(params, step_rate=0.1, momentum=0.9)
    run(optimizer, params, 3)
    loaded_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    loaded = RmsProp(loaded_params, step_rate=0.1, momentum=0.9)
    loaded.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    twin = copy.deepcopy(optimizer)
    from_loaded = run(loaded, loaded_params, 3)
    from_twin = run(twin, twin.param_groups[0]["params"], 3)
    assert from_loaded == from_twin == run(optimizer, params, 3)


def test_the_optimisers_do_not_import_torch_dynamo():
    """torch.optim.Optimizer's add_param_group, state_dict, load_state_dict and zero_grad import
    torch._dynamo on their first call (1.6 s of CPU in every fresh trial process); ours skip that."""
    import subprocess
    import sys

    script = """
import sys, torch
from trainables.nn.optim import Adadelta, RmsProp
for cls in (RmsProp, Adadelta):
    p = torch.nn.Parameter(torch.ones(3))
    optimizer = cls([p], step_rate=0.1, momentum=0.5)
    (p ** 2).sum().backward()
    optimizer.step()
    optimizer.lean_step()
    optimizer.load_state_dict(optimizer.state_dict())
    optimizer.zero_grad()
print("torch._dynamo" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
