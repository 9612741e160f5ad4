"""Pseudo numerical methods (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds").

The transfer part φ(x, ε, t → s) is the DDIM step α_s x̂_0(ε) + σ_s ε with x̂_0(ε) = (x − σ_t ε)/α_t (their
Eq. 9 written for general α, σ); the gradient part is a classical method on ε: pseudo Runge–Kutta (PRK,
Eq. 13: four evaluations at t, t − δ/2, t − δ/2, t − δ) for the first three steps and pseudo linear
multistep (PLMS, Eq. 12: ε' = (55ε_0 − 59ε_1 + 37ε_2 − 9ε_3)/24) afterwards. ``warmup="plms"`` replaces the
PRK start by Adams–Bashforth of increasing order (1, 2, 3), one evaluation per step, as diffusers'
``skip_prk_steps``. A step that lands on σ = 0 (the final jump to the data) is never a PRK step, because PRK
would evaluate the model at σ = 0, where ε̂ is undefined for x0/v/EDM models; it takes the PLMS step of the
available order instead (a DDIM step when N = 1). PNDM thus costs N + 3·min(3, N − 1) model calls with PRK
warm-up on a grid ending at σ = 0 (N + 9 for N ≥ 4; 1, 5, 9 for N = 1, 2, 3), N + 3·min(3, N) on a grid
ending at σ > 0, and N with PLMS warm-up.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Context

Tensor = torch.Tensor
_AB = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def _coefficients(ctx: Context):
    a, s = ctx.alpha, ctx.sigma
    a0, s0, a1, s1 = a[:, :-1], s[:, :-1], a[:, 1:], s[:, 1:]
    t_mid = 0.5 * (ctx.grid[:, :-1] + ctx.grid[:, 1:])
    am, sm = ctx.process.alpha_sigma(t_mid)
    ok = a0 > 0
    safe_a0 = torch.where(ok, a0, torch.ones_like(a0))

    def transfer(a_to, s_to):
        # φ(x, ε) = (α_s/α_t) x + (σ_s − α_s σ_t/α_t) ε ; at α_t = 0 use α_s x̂0_model + σ_s ε instead.
        cx = torch.where(ok, a_to / safe_a0, torch.zeros_like(a0))
        ce = torch.where(ok, s_to - a_to * s0 / safe_a0, s_to)
        c0 = torch.where(ok, torch.zeros_like(a0), a_to)
        return ctx.col(cx), ctx.col(ce), ctx.col(c0)

    prk_ok = ctx.all_per_step(s1 > 0)  # PRK's last evaluation sits at the step's end: never at σ = 0
    return t_mid, transfer(a1, s1), transfer(am, sm), prk_ok, ctx.col(a), ctx.col(s)


def pndm(model, x_T, grid, generator=None, *, warmup: str = "prk", **common):
    """PNDM sampler (Liu et al. 2022, Alg. 1 / Eq. 12-13). See the module docstring."""
    if warmup not in ("prk", "plms"):
        raise ConfigError(f"warmup must be 'prk' or 'plms'; got {warmup!r}")
    ctx = Context(model, x_T, grid, generator, **common)
    t_mid, to_next, to_mid, prk_ok, a_col, s_col = ctx.cached("pndm", (), lambda: _coefficients(ctx))
    t_mid_cols = ctx.columns(t_mid)

    def phi(coefs, i, x, eps, x0):
        cx, ce, c0 = coefs
        return cx[i] * x + ce[i] * eps + c0[i] * x0

    eps_hist: list[Tensor] = []
    x = ctx.start(x_T)
    for i in range(ctx.steps):
        pred = ctx.at(x, i)
        e1, x0 = pred.eps, pred.x0
        if warmup == "prk" and len(eps_hist) < 3 and prk_ok[i]:
            e2 = ctx.denoise(ctx.project(phi(to_mid, i, x, e1, x0)), t_mid_cols[i]).eps
            e3 = ctx.denoise(ctx.project(phi(to_mid, i, x, e2, x0)), t_mid_cols[i]).eps
            e4 = ctx.at(ctx.project(phi(to_next, i, x, e3, x0)), i + 1).eps
            e_prime = (e1 + 2 * e2 + 2 * e3 + e4) / 6
        else:
            coeffs = _AB[min(len(eps_hist) + 1, 4)]
            e_prime = coeffs[0] * e1
            for k, c in enumerate(coeffs[1:]):
                e_prime = e_prime + c * eps_hist[-1 - k]
        eps_hist.append(e1)
        if len(eps_hist) > 3:
            eps_hist.pop(0)
        x = ctx.after_step(phi(to_next, i, x, e_prime, x0), i + 1, a_col, s_col)
        x = ctx.end_step(x, i, x0)
    return ctx.finish(x)
