"""DPM-Solver++ multistep samplers (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models", Alg. 2 (2M), App. A (3M) and §5/App. B (SDE-DPM-Solver++(2M))).

They integrate the probability-flow ODE (or the reverse SDE) exactly in its linear part with the
half log-SNR λ = log(α/σ) as variable and a data-prediction (x̂_0) polynomial of order 1-3 through the
previous model outputs. Every step is precomputed as x_{i+1} = A_i x_i + Σ_k W_{i,k} x̂_0^{(i−k)} (+ noise).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Context

Tensor = torch.Tensor


def _shift(v: Tensor, k: int) -> Tensor:
    """v[:, i − k] at column i (NaN where i < k)."""
    out = torch.full_like(v, float("nan"))
    if k < v.shape[1]:
        out[:, k:] = v[:, : v.shape[1] - k]
    return out


def step_orders(ctx: Context, order: int, lower_order_final: bool, final_threshold: int = 15) -> Tensor:
    """Order used at each step, (G, N): warm-up min(order, i+1) (Lu et al. 2022, Alg. 2), first order on a step
    to σ = 0 (h = ∞), lower orders over the last steps when N < 15 (``lower_order_final``, their §5), and no
    history reaching back to an α = 0 start (λ = −∞)."""
    n = ctx.steps
    i = torch.arange(n)
    ords = torch.clamp(torch.full((ctx.grid.shape[0], n), order), max=(i + 1)[None].expand(ctx.grid.shape[0], n))
    if lower_order_final and n < final_threshold:
        ords = torch.minimum(ords, (n - i)[None])
    ords = torch.where(ctx.sigma[:, 1:].cpu() == 0, torch.ones_like(ords), ords)
    start_inf = (ctx.alpha[:, 0] == 0).cpu()
    if start_inf.any():
        capped = torch.minimum(ords, torch.clamp(i, min=1)[None])
        ords = torch.where(start_inf[:, None], capped, ords)
    return ords


def _lambda(ctx: Context) -> Tensor:
    return torch.log(ctx.alpha) - torch.log(ctx.sigma)


def multistep_weights(ctx: Context, ords: Tensor, stochastic: bool = False, d2_factor: float = 2.0):
    """A (G, N), W (G, N, 3) and the noise std (G, N) of the DPM-Solver++ step of each order."""
    lam = _lambda(ctx)
    a1, s0, s1 = ctx.alpha[:, 1:], ctx.sigma[:, :-1], ctx.sigma[:, 1:]
    h = lam[:, 1:] - lam[:, :-1]
    ords = ords.to(h.device)
    r0 = _shift(h, 1) / h
    if stochastic:
        # SDE-DPM-Solver++: x = σ_s/σ_t e^{−h} x + α_s (1 − e^{−2h}) D + σ_s √(1 − e^{−2h}) z
        A = (s1 / s0) * torch.exp(-h)
        base = -a1 * torch.expm1(-2 * h)
        std = s1 * torch.sqrt(-torch.expm1(-2 * h))
    else:
        A = s1 / s0
        base = -a1 * torch.expm1(-h)
        std = torch.zeros_like(h)
    # order 1 (DDIM in λ): W0 = −α_s (e^{−h} − 1)
    w0, w1, w2 = base, torch.zeros_like(h), torch.zeros_like(h)
    if bool((ords == 2).any()):
        # order 2 (Alg. 2, D = (1 + 1/(2r)) x̂0_i − 1/(2r) x̂0_{i−1}); SDE variant uses the same D (midpoint form).
        two, c = ords == 2, 0.5 / r0
        w0, w1 = torch.where(two, base * (1 + c), w0), torch.where(two, -base * c, w1)
    if not stochastic and bool((ords == 3).any()):
        three, r1 = ords == 3, _shift(h, 2) / h
        phi = torch.expm1(-h)
        u, v = 1 / r0, 1 / r1
        k, q = r0 / (r0 + r1), d2_factor / (r0 + r1)
        c1 = a1 * (phi / h + 1)
        c2 = -a1 * ((phi + h) / h**2 - 0.5)
        w0 = torch.where(three, base + c1 * u * (1 + k) + c2 * q * u, w0)
        w1 = torch.where(three, -c1 * (u + k * (u + v)) - c2 * q * (u + v), w1)
        w2 = torch.where(three, c1 * k * v + c2 * q * v, w2)
    W = torch.stack([w0, w1, w2], -1)
    if not torch.isfinite(W.sum(-1) + A).all():  # a sum is finite only where every term is
        raise ConfigError("DPM-Solver++ coefficients are not finite on this grid (repeated or degenerate times?)")
    return A, W, std


def _multistep(model, x_T, grid, generator, order, lower_order_final, stochastic, common, d2_factor=2.0):
    ctx = Context(model, x_T, grid, generator, **common)

    def build():
        ords = step_orders(ctx, order, lower_order_final)
        A, W, std = multistep_weights(ctx, ords, stochastic, d2_factor)
        noisy = ctx.any_per_step(std > 0) if stochastic else [False] * ctx.steps
        return (ctx.col(A), [ctx.col(W[..., k]) for k in range(order)], ctx.col(std) if stochastic else None,
                ords.max(0).values.tolist(), noisy, ctx.col(ctx.alpha), ctx.col(ctx.sigma))

    options = (order, bool(lower_order_final), bool(stochastic), float(d2_factor))
    c_A, c_W, c_std, used, noisy, a_col, s_col = ctx.cached("dpm_solver", options, build)
    hist: list[Tensor] = []
    x = ctx.start(x_T)
    for i in range(ctx.steps):
        d0 = ctx.at(x, i).x0
        x = c_A[i] * x + c_W[0][i] * d0
        for k in range(1, used[i]):
            x = x + c_W[k][i] * hist[-k]
        if noisy[i]:
            x = x + c_std[i] * ctx.noise()
        hist.append(d0)
        if len(hist) > 2:
            hist.pop(0)
        x = ctx.after_step(x, i + 1, a_col, s_col)
        x = ctx.end_step(x, i, d0)
    return ctx.finish(x)


def dpmpp_2m(model, x_T, grid, generator=None, *, lower_order_final: bool = True, **common):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): second-order multistep in λ with data prediction.
    ``lower_order_final`` takes a first-order last step when N < 15 (their §5; diffusers' default)."""
    return _multistep(model, x_T, grid, generator, 2, lower_order_final, False, common)


def dpmpp_3m(model, x_T, grid, generator=None, *, lower_order_final: bool = True, reference_d2: bool = False,
             **common):
    """DPM-Solver++(3M) (Lu et al. 2022): x_s = σ_s/σ_t x − α_s φ1 D0 + α_s φ2 D1 − α_s φ3 D2 with
    φ1 = e^{−h} − 1, φ2 = φ1/h + 1, φ3 = φ2/h − 1/2 and divided differences of the last three x̂_0.
    Warm-up with orders 1, 2.

    The exact integral needs D2 ≈ h² D'' (the coefficient of ½ u² D'' is ∫_0^h e^{u−h} u²/2 du ≈ h³/6 and
    −φ3 ≈ h/6). The reference code of Lu et al. (also diffusers and k-diffusion) uses
    D2 = (D1_0 − D1_1)/(r0 + r1) ≈ ½ h² D'', which leaves an O(h³) local error: measured here, its global
    order falls to 2 (local slopes 2.7 → 2.1 for 16 → 256 steps on the test mixture). We use
    D2 = 2 (D1_0 − D1_1)/(r0 + r1), which restores order 3 (slopes 3.0); ``reference_d2=True`` reproduces
    the reference code (and diffusers' ``solver_order=3``) exactly."""
    return _multistep(model, x_T, grid, generator, 3, lower_order_final, False, common,
                      d2_factor=1.0 if reference_d2 else 2.0)


def dpmpp_sde(model, x_T, grid, generator=None, *, lower_order_final: bool = True, **common):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, §5 and App. B, midpoint form): the exact solution of the linear
    part of the reverse SDE with a second-order data-prediction term and Gaussian noise
    σ_s √(1 − e^{−2h}) z; from α = 0 its first step is exact ancestral sampling."""
    return _multistep(model, x_T, grid, generator, 2, lower_order_final, True, common)
