"""`fused_tanh.forward_step` and `backward_step` as hand-written Triton kernels (one launch each).

Imported only where Triton is (a CUDA machine; `TRITON_INTERPRET=1` runs them on the CPU, which the
tests use). Every tensor argument is (n, B, H) with a contiguous (B, H) block per member and any
member stride, or (B, H) for a solo net; the per-member rates are a 0-dim tensor (solo) or an
(n, 1, 1) column. The grid is (blocks of B*H, n). The arithmetic is `fused_tanh`'s reference
functions' in float32, operation for operation (square roots and divisions rounded as torch's
are; tanh from CUDA's libdevice, as torch's kernel uses, except under the interpreter).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from trainables.nn.variance import ALPHA, BETA, PROBIT_SCALE

BLOCK = 1024

if os.environ.get("TRITON_INTERPRET") == "1":  # the interpreter (numpy) has no libdevice: tanh(x) = 2 sigma(2x) - 1
    @triton.jit
    def _tanh(x):
        return 2.0 * tl.sigmoid(2.0 * x) - 1.0
else:
    @triton.jit
    def _tanh(x):
        return libdevice.tanh(x)


@triton.jit
def _sign(x):
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, tl.where(x == 0, 0.0, x)))  # NaN stays NaN, as torch.sign


@triton.jit
def _forward_kernel(in_mean, product_mean, in_var, product_var, keep, noise, a_mean, a_var, mean, var, var_in_next,
                    s_in_mean, s_product_mean, s_in_var, s_product_var, s_keep, s_a_mean, s_a_var, s_mean, s_var,
                    s_var_in_next, numel, probit, alpha, beta, BLOCK: tl.constexpr):
    member = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = offs < numel
    k = tl.load(keep + member * s_keep)
    c = tl.load(noise + member * s_keep)
    am = tl.load(in_mean + member * s_in_mean + offs, mask=live) + tl.load(product_mean + member * s_product_mean + offs,
                                                                        mask=live) * k
    av = tl.load(in_var + member * s_in_var + offs, mask=live) + tl.load(product_var + member * s_product_var + offs,
                                                                      mask=live)
    var_b = av * 4.0
    mean_y = _tanh(tl.div_rn(am, tl.sqrt_rn(var_b * probit + 1.0)))
    mean_sigma_b = (mean_y + 1.0) * 0.5
    second = tl.sigmoid(tl.div_rn((am * 2.0 + beta) * alpha, tl.sqrt_rn(var_b * (alpha * alpha) * probit + 1.0)))
    var_y = tl.maximum(second - mean_sigma_b * mean_sigma_b, 0.0) * 4.0 * _sign(av)
    tl.store(a_mean + member * s_a_mean + offs, am, mask=live)
    tl.store(a_var + member * s_a_var + offs, av, mask=live)
    tl.store(mean + member * s_mean + offs, mean_y, mask=live)
    tl.store(var + member * s_var + offs, var_y, mask=live)
    tl.store(var_in_next + member * s_var_in_next + offs, var_y * k + mean_y * mean_y * c, mask=live)


@triton.jit
def _backward_kernel(grad_mean, grad_var, product_mean, product_var, mean_y, a_mean, a_var, keep, noise2, grad_a_mean,
                     grad_a_var, s_grad_mean, s_grad_var, s_product_mean, s_product_var, s_mean_y, s_a_mean, s_a_var,
                     s_keep, s_grad_a_mean, s_grad_a_var, numel, probit, alpha, beta, BLOCK: tl.constexpr):
    member = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = offs < numel
    k = tl.load(keep + member * s_keep)
    c2 = tl.load(noise2 + member * s_keep)
    y = tl.load(mean_y + member * s_mean_y + offs, mask=live)
    pm = tl.load(product_mean + member * s_product_mean + offs, mask=live)
    pv = tl.load(product_var + member * s_product_var + offs, mask=live)
    g_mean = tl.load(grad_mean + member * s_grad_mean + offs, mask=live) + pm * k + pv * c2 * y
    g_var = tl.load(grad_var + member * s_grad_var + offs, mask=live) + pv * k
    m = tl.load(a_mean + member * s_a_mean + offs, mask=live)
    v = tl.load(a_var + member * s_a_var + offs, mask=live)
    inv_s1 = tl.rsqrt(v * (4.0 * probit) + 1.0)
    inv_s2 = tl.rsqrt(v * (4.0 * probit * alpha * alpha) + 1.0)
    z = (m * (2.0 * alpha) + alpha * beta) * inv_s2
    q = tl.sigmoid(z)
    mean_sigma_b = (y + 1.0) * 0.5
    passes = (v > 0) & (q >= mean_sigma_b * mean_sigma_b)
    grad_r = tl.where(passes, g_var, 0.0) * 4.0
    t1 = (g_mean - grad_r * mean_sigma_b) * (1.0 - y * y) * inv_s1
    t2 = grad_r * q * (1.0 - q) * inv_s2
    tl.store(grad_a_mean + member * s_grad_a_mean + offs, t1 + t2 * (2.0 * alpha), mask=live)
    grad_v = (t1 * m * (inv_s1 * inv_s1) + t2 * z * inv_s2 * (alpha * alpha)) * (-2.0 * probit)
    tl.store(grad_a_var + member * s_grad_a_var + offs, grad_v, mask=live)


def _stride(t: torch.Tensor) -> int:
    """The member stride of an (n, B, H) argument, 0 for a solo (B, H) one or a 0-dim rate."""
    return t.stride(0) if t.dim() == 3 else 0


def forward_step(in_mean, product_mean, in_var, product_var, keep, noise, a_mean, a_var, mean, var,
                 var_in_next) -> None:
    numel = in_mean.shape[-1] * in_mean.shape[-2]
    grid = (triton.cdiv(numel, BLOCK), in_mean.shape[0] if in_mean.dim() == 3 else 1)
    args = (in_mean, product_mean, in_var, product_var, keep, noise, a_mean, a_var, mean, var, var_in_next)
    _forward_kernel[grid](*args, *(_stride(t) for t in args[:5]), *(_stride(t) for t in args[6:]), numel,
                          PROBIT_SCALE, ALPHA, BETA, BLOCK=BLOCK)


def backward_step(grad_mean, grad_var, product_mean, product_var, mean_y, a_mean, a_var, keep, noise2, grad_a_mean,
                  grad_a_var) -> None:
    numel = grad_mean.shape[-1] * grad_mean.shape[-2]
    grid = (triton.cdiv(numel, BLOCK), grad_mean.shape[0] if grad_mean.dim() == 3 else 1)
    strides = (_stride(t) for t in (grad_mean, grad_var, product_mean, product_var, mean_y, a_mean, a_var, keep,
                                     grad_a_mean, grad_a_var))
    _backward_kernel[grid](grad_mean, grad_var, product_mean, product_var, mean_y, a_mean, a_var, keep, noise2,
                           grad_a_mean, grad_a_var, *strides, numel, PROBIT_SCALE, ALPHA, BETA, BLOCK=BLOCK)
