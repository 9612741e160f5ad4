"""Adaptive solvers that sample to a tolerance instead of a fixed number of steps.

``ode_adaptive``: the probability-flow ODE solved with the embedded Runge–Kutta pair of Dormand & Prince
(1980, "A family of embedded Runge-Kutta formulae", RK5(4)7M, FSAL) and the standard step-size control of
Hairer, Nørsett & Wanner (Solving ODEs I, §II.4: starting step, safety 0.9, factors in [0.2, 10]). It
integrates in the variables x̄ = x/(α + σ), τ = σ/(α + σ), where every Gaussian process becomes the straight
path x̄ = (1 − τ) x̂_0 + τ ε̂ and the ODE reads dx̄/dτ = ε̂ − x̂_0 (rectified-flow form, Liu et al. 2023; the
same PF-ODE as Song et al. 2021, Eq. 13): τ ∈ [0, 1] is finite even at α = 0 or σ = 0 and the field is smooth.

``sde_adaptive``: Jolicoeur-Martineau et al. 2021 ("Gotta Go Fast When Generating Data with Score-Based
Models"), Alg. 1: Euler–Maruyama proposal and stochastic improved Euler with extrapolation, mixed
absolute/relative error per sample, step h ← min(t − ε, θ h E^{−r}), with each sample keeping its own t
and h. Defaults are those of the authors' code (h_init = 0.01, ε_abs = 0.0078 for data in [−1, 1],
ε_rel = 0.01, θ = 0.9, r = 0.9).

Both stop at a small positive noise level when the grid ends at σ = 0 (t = 1e-3 for the SDE as Song et
al. 2021; the process's smallest positive-noise time for the ODE) and finish with one denoising step
x = α x̂_0 (Tweedie's formula), which adds one model call. ``info`` receives nfe, accepted and rejected steps.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Context
from .grids import sigma_floor_time
from .sde import _sde_coefficients

Tensor = torch.Tensor
F64 = torch.float64

# Dormand–Prince RK5(4)7M tableau.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = _A[6] + (0.0,)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4))


def _end_times(ctx: Context, floor: float) -> tuple[Tensor, bool]:
    """Where the solver stops (G,), and whether a final denoising step to the grid's end follows."""
    t_end = ctx.grid[:, -1]
    to_data = bool((ctx.sigma[:, -1] == 0).any())
    if not to_data:
        return t_end, False
    stop = torch.clamp(t_end, min=floor)
    if not (stop < ctx.grid[:, 0]).all():
        raise ConfigError(f"the grid starts below the stopping time t={floor:.4g} of the adaptive solver")
    return stop, True


def ode_adaptive(model, x_T, grid, generator=None, *, rtol: float = 1e-5, atol: float = 1e-5,
                 max_steps: int = 10_000, t_eps: float | None = None, **common):
    """Probability-flow ODE to a tolerance with Dormand–Prince 5(4) (see module docstring).

    ``rtol``/``atol`` default to 1e-5 as Song et al. 2021 (§4.3, scipy RK45). Only the first and last grid
    times are used. The error norm is the RMS over the whole batch of err/(atol + rtol·max(|x̄|, |x̄_new|)).
    """
    if rtol <= 0 or atol <= 0:
        raise ConfigError(f"rtol and atol must be > 0; got rtol={rtol}, atol={atol}")
    ctx = Context(model, x_T, grid, generator, **common)
    ctx.adaptive_progress()
    proc = ctx.process
    floor = sigma_floor_time(proc) if t_eps is None else float(t_eps)
    t0 = ctx.grid[:, 0]
    t1, denoise = _end_times(ctx, floor)
    a0, s0 = proc.alpha_sigma(t0)
    a1, s1 = proc.alpha_sigma(t1)
    tau0, tau1 = s0 / (a0 + s0), s1 / (a1 + s1)
    span = ctx.per_sample(tau1 - tau0)  # dτ/du, u ∈ [0, 1]

    def time_of(u: float) -> Tensor:
        if u == 0.0:
            return t0.expand(ctx.batch)
        if u == 1.0:
            return t1.expand(ctx.batch)
        tau = tau0 + u * (tau1 - tau0)
        return proc.t_from_sigma_ratio(tau / (1 - tau)).clamp(0.0, 1.0).expand(ctx.batch)

    def scale_of(t: Tensor) -> Tensor:
        a, s = proc.alpha_sigma(t)
        return ctx.per_sample(a + s)

    def field(xbar: Tensor, u: float) -> Tensor:
        t = time_of(u)
        pred = ctx.denoise(ctx.project(scale_of(t) * xbar), t)
        return span * (pred.eps - pred.x0)

    xbar = ctx.start(x_T) / scale_of(t0.expand(ctx.batch))
    k1 = field(xbar, 0.0)
    # Starting step (Hairer et al. §II.4): h = 0.01 d0/d1, refined with a second-order estimate.
    sc = atol + rtol * xbar.abs()
    d0 = torch.sqrt(((xbar / sc) ** 2).mean()).item()
    d1 = torch.sqrt(((k1 / sc) ** 2).mean()).item()
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, 1.0)
    k_try = field(xbar + h0 * k1, h0)
    d2 = torch.sqrt((((k_try - k1) / sc) ** 2).mean()).item() / h0
    h1 = (0.01 / max(d1, d2)) ** (1 / 5) if max(d1, d2) > 1e-15 else max(1e-6, h0 * 1e-3)
    h = min(100 * h0, h1, 1.0)
    u, accepted, rejected = 0.0, 0, 0
    while u < 1.0:
        if accepted + rejected >= max_steps:
            raise ConfigError(f"ode_adaptive exceeded max_steps={max_steps} (tolerance too tight?)")
        h = min(h, 1.0 - u)
        ks = [k1]
        for j in range(1, 7):
            inc = sum(c * k for c, k in zip(_A[j], ks) if c != 0.0)
            uj = u + _C[j] * h
            ks.append(field(xbar + h * inc, 1.0 if uj >= 1.0 - 1e-12 else uj))
        x_new = xbar + h * sum(c * k for c, k in zip(_B5, ks) if c != 0.0)
        err = h * sum(c * k for c, k in zip(_E, ks) if c != 0.0)
        scale = atol + rtol * torch.maximum(xbar.abs(), x_new.abs())
        en = torch.sqrt(((err / scale) ** 2).mean()).item()
        if en <= 1.0:
            u = 1.0 if u + h >= 1.0 - 1e-12 else u + h
            accepted += 1
            xbar, k1 = x_new, ks[6]
            t = time_of(u)
            sc_t = scale_of(t)
            a_t, s_t = proc.alpha_sigma(t)
            x = ctx.project(ctx.replace_known(sc_t * xbar, ctx.per_sample(a_t), ctx.per_sample(s_t)))
            x = ctx.end_step(x, accepted - 1, t=t)
            xbar = x / sc_t
        else:
            rejected += 1
        factor = 10.0 if en == 0 else min(10.0, max(0.2, 0.9 * en ** (-1 / 5)))
        h = h * factor
    t_last = time_of(1.0)
    x = scale_of(t_last) * xbar
    if denoise:
        end = ctx.steps
        a_end = ctx.col(ctx.alpha)[end]
        x = ctx.after_step(a_end * ctx.denoise(ctx.project(x), t_last).x0, end)
        x = ctx.end_step(x, accepted, t=ctx.t_cols[end])
    if ctx.info is not None:
        ctx.info.update(accepted=accepted, rejected=rejected)
    return ctx.finish(x)


def sde_adaptive(model, x_T, grid, generator=None, *, h_init: float = 0.01, abstol: float = 0.0078,
                 reltol: float = 0.01, safety: float = 0.9, exponent: float = 0.9, t_eps: float = 1e-3,
                 max_iters: int = 100_000, **common):
    """Adaptive reverse-SDE solver of Jolicoeur-Martineau et al. 2021, Alg. 1 (see module docstring).

    Per sample: K1 = −h·b(x, t) + g(t)√h z, K2 = −h·b(x + K1, t − h) + g(t − h)√h z (same z), proposal
    x' = x + K1, extrapolated x'' = x + (K1 + K2)/2, E = ‖(K2 − K1)/2 / δ‖₂/√n with δ = max(ε_abs,
    ε_rel·max(|x'|, |x'_prev|)); accept if E ≤ 1, then h ← min(t − ε, θ h E^{−r}). b is the reverse drift
    f x + g² ε̂/σ.

    Caveat (measured here, not in the paper): acceptance depends on the Brownian draw z through
    b(x + K1) − b(x), and in low dimension the per-sample norm does not average that out, so accepted steps
    favour draws that cancel the drift. On a 2-D Gaussian the sample std comes out ≈ 1.6× too large; the
    bias fades with dimension (≈ 1.07× at d = 16, ≈ 1.01× at d = 64). Use it for high-dimensional data.
    """
    for name, v in (("h_init", h_init), ("abstol", abstol), ("reltol", reltol), ("safety", safety),
                    ("exponent", exponent)):
        if v <= 0:
            raise ConfigError(f"{name} must be > 0; got {v}")
    ctx = Context(model, x_T, grid, generator, **common)
    ctx.adaptive_progress()
    proc = ctx.process
    t_start = ctx.grid[:, 0].expand(ctx.batch).clone()
    stop, denoise = _end_times(ctx, t_eps)
    stop = stop.expand(ctx.batch).clone()
    n = x_T[0].numel()

    def coeffs(t):
        f, g2 = _sde_coefficients(ctx, t)
        a, s = proc.alpha_sigma(t)
        return ctx.per_sample(f), ctx.per_sample(g2), ctx.per_sample(s)

    def drift(x, t):
        f, g2, s = coeffs(t)
        eps = ctx.denoise(x, t).eps
        return f * x + g2 * eps / s, torch.sqrt(g2)

    x = ctx.start(x_T)
    x_prev = x.clone()
    t = t_start
    h = torch.minimum(torch.full_like(t, h_init), t - stop)
    accepted, rejected, iters = 0, 0, 0
    while bool((t > stop).any()):
        iters += 1
        if iters > max_iters:
            raise ConfigError(f"sde_adaptive exceeded max_iters={max_iters}")
        active = t > stop
        h = torch.where(active, h, torch.zeros_like(h))
        h_ = ctx.per_sample(h)
        z = ctx.noise()
        b1, g1 = drift(x, t)
        k1 = -h_ * b1 + g1 * torch.sqrt(h_) * z
        t2 = torch.where(active, t - h, t)
        b2, g2 = drift(ctx.project(x + k1), t2)
        k2 = -h_ * b2 + g2 * torch.sqrt(h_) * z
        x_new = x + 0.5 * (k1 + k2)
        x_check = x + k1
        delta = torch.clamp(torch.maximum(x_prev.abs(), x_check.abs()) * reltol, min=abstol)
        err = ((0.5 * (k2 - k1) / delta) ** 2).flatten(1).sum(1).div(n).sqrt()
        accept = (err <= 1.0) & active
        acc_ = ctx.per_sample(accept.to(F64)).bool()
        x = torch.where(acc_, x_new, x)
        x_prev = torch.where(acc_, x_check, x_prev)
        t = torch.where(accept, t2, t)
        accepted += int(accept.sum())
        rejected += int((active & ~accept).sum())
        a_t, s_t = proc.alpha_sigma(t)
        x = torch.where(acc_, ctx.project(ctx.replace_known(x, ctx.per_sample(a_t), ctx.per_sample(s_t))), x)
        x = ctx.end_step(x, iters - 1, t=t)
        h_max = (t - stop).clamp_min(0.0)
        grow = torch.where(err > 0, err.clamp_min(1e-10) ** (-exponent), torch.full_like(err, 10.0))
        h = torch.minimum(h_max, safety * torch.where(active, h, torch.zeros_like(h)) * grow)
    if denoise:
        end = ctx.steps
        a_end = ctx.col(ctx.alpha)[end]
        x = ctx.after_step(a_end * ctx.denoise(x, stop).x0, end)
        x = ctx.end_step(x, iters, t=ctx.t_cols[end])
    if ctx.info is not None:
        ctx.info.update(accepted=accepted, rejected=rejected)
    return ctx.finish(x)
