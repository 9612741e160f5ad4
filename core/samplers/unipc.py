"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models"), data-prediction form with B(h) = e^{−h} − 1 ("bh2", their recommended choice and diffusers' default).

Step i: the model output m_i at the predicted x_i corrects x_i with UniC-p (order p+1, Alg. 2 / Eq. 10)
and then predicts x_{i+1} with UniP-p (Alg. 1 / Eq. 8) from the corrected state; the corrector reuses
m_i, so N steps cost N model calls. The coefficients a solve R_p(r) a = φ_p(h)/B(h) (their Eq. 8-10);
for UniP-2 and UniC-1 the solution is replaced by its h → 0 limit a = 1/2, which keeps the order (the choice
of the authors' code and diffusers).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .base import Context
from .dpm_solver import _lambda, _shift, step_orders

Tensor = torch.Tensor


def _b_vector(h: Tensor, p: int, variant: str):
    """hh = −h, φ-terms b_k = k!·g_k/B(h) with g_1 = (e^{hh} − 1)/hh − 1, g_{k+1} = g_k/hh − 1/(k+1)!."""
    hh = -h
    phi1 = torch.expm1(hh)
    B = phi1 if variant == "bh2" else hh
    g = phi1 / hh - 1
    bs = []
    for k in range(1, p + 1):
        bs.append(g * math.factorial(k) / B)
        g = g / hh - 1 / math.factorial(k + 1)
    return phi1, B, bs


def _solve(rks: list[Tensor], bs: list[Tensor], n: int) -> list[Tensor]:
    """Solve Σ_j r_j^{m} a_j = b_{m+1}, m = 0..n−1, for a (n unknowns, elementwise over (G, N))."""
    shape = bs[0].shape
    R = torch.stack([torch.stack([r**m for r in rks[:n]], -1) for m in range(n)], -2)  # (G, N, n, n)
    b = torch.stack(bs[:n], -1)
    ok = torch.isfinite(R).all(-1).all(-1) & torch.isfinite(b).all(-1)
    eye = torch.eye(n, dtype=R.dtype, device=R.device).expand_as(R)
    R = torch.where(ok[..., None, None], R, eye)
    ok = ok & (torch.linalg.det(R).abs() > 1e-300)  # e.g. h = ∞ on a step to σ = 0 (never used there)
    R = torch.where(ok[..., None, None], R, eye)
    b = torch.where(ok[..., None], b, torch.zeros_like(b))
    try:
        sol = torch.linalg.solve(R, b)
    except RuntimeError:  # singular only for coincident times, which check_grid rules out
        raise ConfigError("UniPC coefficient system is singular on this grid")
    return [sol[..., j].reshape(shape) for j in range(n)]


def _predictor(lam, a1, s0, s1, p, variant):
    """UniP-p from column i to i+1: x' = σ_{i+1}/σ_i x − α φ1 m_i − α B Σ_k a_k (m_{i−k} − m_i)/r_k."""
    h = lam[:, 1:] - lam[:, :-1]
    phi1, B, bs = _b_vector(h, p, variant)
    A = s1 / s0
    W = [-a1 * phi1] + [torch.zeros_like(h) for _ in range(p - 1)]
    if p >= 2:
        rks = [(_shift(lam[:, :-1], k) - lam[:, :-1]) / h for k in range(1, p)]
        coeff = [torch.full_like(h, 0.5)] if p == 2 else _solve(rks, bs, p - 1)
        for k in range(1, p):
            w = -a1 * B * coeff[k - 1] / rks[k - 1]
            W[k] = W[k] + w
            W[0] = W[0] - w
    return A, W


def _corrector(lam, a1, s0, s1, p, variant):
    """UniC-p correcting column i+1 from column i: x^c = σ_{i+1}/σ_i x_i − α φ1 m_i
    − α B (Σ_k a_k (m_{i−k} − m_i)/r_k + a_p (m_{i+1} − m_i)). Weights over [m_{i+1}, m_i, m_{i−1}, …]."""
    h = lam[:, 1:] - lam[:, :-1]
    phi1, B, bs = _b_vector(h, p, variant)
    A = s1 / s0
    rks = [(_shift(lam[:, :-1], k) - lam[:, :-1]) / h for k in range(1, p)] + [torch.ones_like(h)]
    coeff = [torch.full_like(h, 0.5)] if p == 1 else _solve(rks, bs, p)
    W = [-a1 * B * coeff[-1], -a1 * phi1 + a1 * B * coeff[-1]] + [torch.zeros_like(h) for _ in range(p - 1)]
    for k in range(1, p):
        w = -a1 * B * coeff[k - 1] / rks[k - 1]
        W[k + 1] = W[k + 1] + w
        W[1] = W[1] - w
    return A, W


def _coefficients(ctx: Context, order: int, variant: str, corrector: bool, lower_order_final: bool):
    n = ctx.steps
    ords = step_orders(ctx, order, False)
    if lower_order_final:
        ords = torch.minimum(ords, (n - torch.arange(n))[None])
    ords = ords.to(ctx.grid.device)
    lam = _lambda(ctx)
    a1, s0, s1 = ctx.alpha[:, 1:], ctx.sigma[:, :-1], ctx.sigma[:, 1:]
    P = order
    A = torch.zeros_like(a1)
    Wp = torch.zeros(*a1.shape, P, dtype=a1.dtype, device=a1.device)
    Wc = torch.zeros(*a1.shape, P + 1, dtype=a1.dtype, device=a1.device)
    for p in range(1, P + 1):
        sel = ords == p
        Ap, W = _predictor(lam, a1, s0, s1, p, variant)
        A = torch.where(sel, Ap, A)
        for k in range(p):
            Wp[..., k] = torch.where(sel, W[k], Wp[..., k])
        _, W = _corrector(lam, a1, s0, s1, p, variant)
        for k in range(p + 1):
            Wc[..., k] = torch.where(sel, W[k], Wc[..., k])
    # The corrector of column i+1 needs the model at i+1 (not evaluated after the last step), a finite h
    # and a start with finite λ.
    finite = ctx.all_per_step(torch.isfinite(lam[:, :-1]))
    use_c = [corrector and i + 1 < n and finite[i] for i in range(n)]
    if not (torch.isfinite(A).all() and torch.isfinite(Wp).all()):
        raise ConfigError("UniPC coefficients are not finite on this grid")
    Wc = torch.nan_to_num(Wc)
    return (ctx.col(A), [ctx.col(Wp[..., k]) for k in range(P)], [ctx.col(Wc[..., k]) for k in range(P + 1)],
            ords.max(0).values.tolist(), use_c, ctx.col(ctx.alpha), ctx.col(ctx.sigma))


def unipc(model, x_T, grid, generator=None, *, order: int = 2, variant: str = "bh2", corrector: bool = True,
          lower_order_final: bool = True, **common):
    """UniPC-p sampler (Zhao et al. 2023). ``order`` is p of UniP-p (default 2, as diffusers); with the
    corrector the global order is p + 1. ``lower_order_final`` lowers the order over the last p − 1 steps
    (diffusers' default), and the last step to σ = 0 is always first order."""
    if order not in (1, 2, 3):
        raise ConfigError(f"order must be 1, 2 or 3; got {order}")
    if variant not in ("bh1", "bh2"):
        raise ConfigError(f"variant must be 'bh1' or 'bh2'; got {variant!r}")
    ctx = Context(model, x_T, grid, generator, **common)
    n, P = ctx.steps, order
    c_A, c_Wp, c_Wc, used, use_c, a_col, s_col = ctx.cached(
        "unipc", (order, variant, bool(corrector), bool(lower_order_final)),
        lambda: _coefficients(ctx, order, variant, corrector, lower_order_final))
    hist: list[Tensor] = []  # model x̂0 at columns …, i−1, i
    x = ctx.start(x_T)
    x_prev = None
    for i in range(n):
        m = ctx.at(x, i).x0
        if i > 0 and use_c[i - 1]:
            j = i - 1  # correct column i using the predictor step j -> i of order used[j]
            xc = c_A[j] * x_prev + c_Wc[0][j] * m
            for k in range(used[j]):
                xc = xc + c_Wc[k + 1][j] * hist[-1 - k]
            x = ctx.after_step(xc, i, a_col, s_col)
        hist.append(m)
        if len(hist) > P:
            hist.pop(0)
        x_prev = x
        x_new = c_A[i] * x
        for k in range(used[i]):
            x_new = x_new + c_Wp[k][i] * hist[-1 - k]
        x = ctx.after_step(x_new, i + 1, a_col, s_col)
        x = ctx.end_step(x, i, m)
    return ctx.finish(x)
