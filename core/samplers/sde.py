"""Samplers of the reverse-time SDE and Langevin dynamics.

* Euler–Maruyama on dx = [f(t) x − g(t)² ∇log p_t(x)] dt + g(t) dw̄ (Song et al. 2021, Eq. 6), with
  ∇log p_t = −ε̂/σ_t and f, g² from the process.
* Predictor–corrector (Song et al. 2021, Alg. 4 (VE) / Alg. 5 (VP), generalised to any α, σ): a reverse
  diffusion predictor (their Eq. 46-47) followed by M Langevin corrector steps with step size
  ε = 2 a (r ‖z‖/‖s‖)², r the signal-to-noise ratio.
* Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) over the grid's noise levels.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Context
from .first_order import _transition

Tensor = torch.Tensor


def _sde_coefficients(ctx: Context, t: Tensor):
    f = ctx.process.drift_coef(t)
    g2 = ctx.process.diffusion_sq(t)
    if not (torch.isfinite(f).all() and torch.isfinite(g2).all()):
        raise ConfigError(
            f"the reverse SDE of {ctx.process!r} is singular at some grid time (f or g² infinite, e.g. at t = 1 "
            "for rectified flow or zero terminal SNR); start the grid below that time"
        )
    return f, g2


def euler_maruyama(model, x_T, grid, generator=None, *, denoise: bool = True, **common):
    """Euler–Maruyama on the reverse SDE (Song et al. 2021, Eq. 6):
    x_s = x − (f x + g² ε̂/σ_t) Δ + g √Δ z with Δ = t − s. ``denoise`` returns the noise-free mean of the last
    step (their ``noise_removal``)."""
    ctx = Context(model, x_T, grid, generator, **common)
    t0 = ctx.grid[:, :-1]
    dt = t0 - ctx.grid[:, 1:]
    f, g2 = _sde_coefficients(ctx, t0)
    c_x = ctx.col(1 - f * dt)
    c_eps = ctx.col(-g2 * dt / ctx.sigma[:, :-1])
    c_z = ctx.col(torch.sqrt(g2 * dt))
    a_col, s_col = ctx.col(ctx.alpha), ctx.col(ctx.sigma)
    x = ctx.start(x_T)
    for i in range(ctx.steps):
        pred = ctx.at(x, i)
        x = c_x[i] * x + c_eps[i] * pred.eps
        if not (denoise and i == ctx.steps - 1):
            x = x + c_z[i] * ctx.noise()
        x = ctx.after_step(x, i + 1, a_col, s_col)
        x = ctx.end_step(x, i, pred.x0)
    return ctx.finish(x)


def _norm(v: Tensor, weights: Tensor | None) -> Tensor:
    """Per-sample L2 norm averaged over the batch, as in Song et al.'s reference implementation (a single
    sample's norm is too noisy an estimate of the score scale in low dimension)."""
    if weights is not None:
        v = v * weights
    return v.flatten(1).norm(dim=1).mean()


def pc(model, x_T, grid, generator=None, *, snr: float = 0.16, corrector_steps: int = 1,
       predictor: str = "reverse_diffusion", denoise: bool = True, **common):
    """Predictor–corrector sampling (Song et al. 2021, Alg. 4/5; r = 0.16 and M = 1 as their reference configs).

    Predictor ``reverse_diffusion``: x_s = (2 − α_{t|s}) x_t + σ²_{t|s} ∇log p_t + σ_{t|s} z (Eq. 46-47 with the
    discretisation q(x_t | x_s) = N(α_{t|s} x_s, σ²_{t|s})), ``euler_maruyama``, or ``none`` (corrector only).
    Corrector at the new level s: ε = 2 a (r ‖z‖/‖∇log p_s‖)², x ← x + ε ∇log p_s + √(2ε) z with a = α_{t|s}²
    (Alg. 5's α_i = 1 − β_i; 1 for VE), norms averaged over the batch as in their code. No corrector at σ = 0; ``denoise`` drops the noise
    of the final update (their ``noise_removal``).
    """
    if predictor not in ("reverse_diffusion", "euler_maruyama", "none"):
        raise ConfigError(f"predictor must be 'reverse_diffusion', 'euler_maruyama' or 'none'; got {predictor!r}")
    if snr <= 0 or corrector_steps < 0:
        raise ConfigError(f"snr must be > 0 and corrector_steps ≥ 0; got snr={snr}, corrector_steps={corrector_steps}")
    ctx = Context(model, x_T, grid, generator, **common)
    a, s = ctx.alpha, ctx.sigma
    a0, s0, a1, s1 = a[:, :-1], s[:, :-1], a[:, 1:], s[:, 1:]
    ratio, var_ts = _transition(a0, s0, a1, s1)
    if predictor == "reverse_diffusion":
        c_x, c_eps, c_z = ctx.col(2 - ratio), ctx.col(-var_ts / s0), ctx.col(torch.sqrt(var_ts))
    elif predictor == "euler_maruyama":
        t0 = ctx.grid[:, :-1]
        dt = t0 - ctx.grid[:, 1:]
        f, g2 = _sde_coefficients(ctx, t0)
        c_x, c_eps, c_z = ctx.col(1 - f * dt), ctx.col(-g2 * dt / s0), ctx.col(torch.sqrt(g2 * dt))
    a_corr = ctx.col(ratio**2)
    inv_s1 = ctx.col(torch.where(s1 > 0, 1 / s1, torch.zeros_like(s1)))
    corr_ok = ctx.all_per_step(s1 > 0)
    weights = None if ctx.presence is None else ctx.presence.to(ctx.dtype)
    a_col, s_col = ctx.col(a), ctx.col(s)
    x = ctx.start(x_T)
    for i in range(ctx.steps):
        last = i == ctx.steps - 1
        if predictor != "none":
            pred = ctx.at(x, i)
            x = c_x[i] * x + c_eps[i] * pred.eps
            if not (denoise and last and not (corr_ok[i] and corrector_steps)):
                x = x + c_z[i] * ctx.noise()
            x = ctx.after_step(x, i + 1, a_col, s_col)
        if corr_ok[i]:
            for j in range(corrector_steps):
                score = -ctx.at(x, i + 1).eps * inv_s1[i]
                z = ctx.noise()
                step = 2 * a_corr[i] * (snr * _norm(z, weights) / _norm(score, weights).clamp_min(1e-30)) ** 2
                x = x + step * score
                if not (denoise and last and j == corrector_steps - 1):
                    x = x + torch.sqrt(2 * step) * z
                x = ctx.after_step(x, i + 1, a_col, s_col)
        x = ctx.end_step(x, i)
    return ctx.finish(x)


def annealed_langevin(model, x_T, grid, generator=None, *, step_lr: float = 2e-5, steps_per_level: int = 100,
                      denoise: bool = True, **common):
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1, with their experimental ε = 2·10⁻⁵ and T = 100).

    The noise levels are the grid points with σ > 0; at level i the step is α_i = ε σ_i²/σ_L² (σ_L the
    last level) and T steps x ← x + α_i/2 ∇log p_i(x) + √α_i z run at each level. When the grid ends at
    σ = 0 the result is denoised once with the model's x̂_0 at the last level (Tweedie's formula; the final
    denoising step of Song & Ermon 2020 and Jolicoeur-Martineau et al. 2021), unless ``denoise=False``.
    """
    if step_lr <= 0 or steps_per_level < 1:
        raise ConfigError(f"step_lr must be > 0 and steps_per_level ≥ 1; got {step_lr}, {steps_per_level}")
    ctx = Context(model, x_T, grid, generator, **common)
    s = ctx.sigma
    levels = [i for i in range(ctx.steps + 1) if bool((s[:, i] > 0).all())]
    if not levels:
        raise ConfigError("annealed_langevin needs at least one grid time with σ > 0")
    last = levels[-1]
    step = step_lr * s**2 / s[:, last : last + 1] ** 2
    c_half, c_sqrt = ctx.col(step / 2), ctx.col(torch.sqrt(step))
    inv_s = ctx.col(torch.where(s > 0, 1 / s, torch.zeros_like(s)))
    a_col, s_col = ctx.col(ctx.alpha), ctx.col(s)
    x = ctx.start(x_T)
    for k, i in enumerate(levels):
        for _ in range(steps_per_level):
            score = -ctx.at(x, i).eps * inv_s[i]
            x = x + c_half[i] * score + c_sqrt[i] * ctx.noise()
            x = ctx.after_step(x, i, a_col, s_col)
        x = ctx.end_step(x, k, t=ctx.t_cols[i])  # the state after level k (grid column i)
    if denoise and last != ctx.steps:
        end = ctx.steps
        x = a_col[end] * ctx.at(x, last).x0
        x = ctx.after_step(x, end, a_col, s_col)
        x = ctx.end_step(x, len(levels), t=ctx.t_cols[end])
    return ctx.finish(x)
