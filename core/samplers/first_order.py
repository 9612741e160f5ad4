"""First-order samplers: DDPM ancestral sampling, DDIM(η), and Karras et al.'s Euler/Heun with churn.

All steps go from grid column i (time t, α_t, σ_t) to column i+1 (time s < t) and are written in terms
of the model's (x̂_0, ε̂), which stays valid at α_t = 0 (zero terminal SNR, rectified flow at t = 1)
and at σ_s = 0 (the final jump to the data).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .base import Context

Tensor = torch.Tensor


def _transition(a0, s0, a1, s1):
    """α_{t|s} = α_t/α_s and σ²_{t|s} = σ_t² − α_{t|s}² σ_s² of q(x_t | x_s) (Kingma et al. 2021, VDM Eq. 2-3)."""
    ratio = a0 / a1
    var_ts = (s0**2 - ratio**2 * s1**2).clamp_min(0.0)
    return ratio, var_ts


def posterior_variance(a0, s0, a1, s1):
    """β̃ = σ²_{t|s} σ_s² / σ_t², the variance of q(x_s | x_t, x_0) (Ho et al. 2020, Eq. 7; VDM Eq. 33)."""
    _, var_ts = _transition(a0, s0, a1, s1)
    return var_ts * s1**2 / s0**2


def ddpm(model, x_T, grid, generator=None, *, variance: str = "beta_tilde", **common):
    """Ancestral sampling from q(x_s | x_t, x̂_0) (Ho et al. 2020, Alg. 2; Eq. 6-7 for general α, σ).

    The mean is the posterior mean α_s σ²_{t|s}/σ_t² · x̂_0 + α_{t|s} σ_s²/σ_t² · x_t; the variance is
    ``beta_tilde`` (β̃, the posterior variance), ``beta`` (β = σ²_{t|s}, Ho et al. §3.2) or ``learned``
    (Nichol & Dhariwal 2021, Eq. 15: exp(v log β + (1 − v) log β̃) with v = (var_interp + 1)/2 from the
    model). On any sub-grid of a discrete chain the same formulas are timestep respacing (Nichol &
    Dhariwal 2021, §4: β = 1 − ᾱ_t/ᾱ_s). No noise is added on a step that lands on σ = 0.
    """
    if variance not in ("beta", "beta_tilde", "learned"):
        raise ConfigError(f"variance must be 'beta', 'beta_tilde' or 'learned'; got {variance!r}")
    ctx = Context(model, x_T, grid, generator, **common)
    c_x0, c_x, log_beta, log_bt, std, noisy, last_zero, a_col, s_col = ctx.cached(
        "ddpm", variance, lambda: _ddpm_coefficients(ctx, variance))
    x = ctx.start(x_T)
    for i in range(ctx.steps):
        pred = ctx.at(x, i)
        x = c_x0[i] * pred.x0 + c_x[i] * x
        if noisy[i]:
            if std is None:
                if pred.var_interp is None:
                    raise ConfigError("variance='learned' needs a model whose Prediction has var_interp "
                                      "(Denoiser(..., learned_variance=True))")
                frac = (pred.var_interp + 1) / 2
                sd = torch.exp(0.5 * (frac * log_beta[i] + (1 - frac) * log_bt[i])) * last_zero[i]
            else:
                sd = std[i]
            x = x + sd * ctx.noise()
        x = ctx.after_step(x, i + 1, a_col, s_col)
        x = ctx.end_step(x, i, pred.x0)
    return ctx.finish(x)


def _ddpm_coefficients(ctx: Context, variance: str):
    a, s = ctx.alpha, ctx.sigma
    a0, s0, a1, s1 = a[:, :-1], s[:, :-1], a[:, 1:], s[:, 1:]
    ratio, var_ts = _transition(a0, s0, a1, s1)
    c_x0 = ctx.col(a1 * var_ts / s0**2)
    c_x = ctx.col(ratio * s1**2 / s0**2)
    beta_tilde = var_ts * s1**2 / s0**2
    log_beta = log_bt = std = None
    if variance == "learned":
        log_beta = ctx.col(torch.log(var_ts.clamp_min(1e-300)))
        log_bt = ctx.col(torch.log(beta_tilde.clamp_min(1e-300)))
    else:
        std = ctx.col(torch.sqrt(var_ts if variance == "beta" else beta_tilde))
    noisy = ctx.any_per_step(s1 > 0)
    last_zero = ctx.col((s1 > 0).to(a.dtype))
    return c_x0, c_x, log_beta, log_bt, std, noisy, last_zero, ctx.col(a), ctx.col(s)


def ddim(model, x_T, grid, generator=None, *, eta: float = 0.0, **common):
    """DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", Eq. 12 and 16):
    x_s = α_s x̂_0 + √(σ_s² − σ_η²) ε̂ + σ_η z with σ_η² = η² β̃. η = 0 is the deterministic sampler (a first
    order solver of the probability-flow ODE: Euler in σ/α, Song et al. 2021 §4.3), η = 1 is DDPM with β̃."""
    if eta < 0:
        raise ConfigError(f"eta must be ≥ 0, got {eta}")
    ctx = Context(model, x_T, grid, generator, **common)
    c_x0, c_eps, std, noisy, a_col, s_col = ctx.cached("ddim", float(eta), lambda: _ddim_coefficients(ctx, eta))
    x = ctx.start(x_T)
    for i in range(ctx.steps):
        pred = ctx.at(x, i)
        x = c_x0[i] * pred.x0 + c_eps[i] * pred.eps
        if noisy[i]:
            x = x + std[i] * ctx.noise()
        x = ctx.after_step(x, i + 1, a_col, s_col)
        x = ctx.end_step(x, i, pred.x0)
    return ctx.finish(x)


def _ddim_coefficients(ctx: Context, eta: float):
    a, s = ctx.alpha, ctx.sigma
    a0, s0, a1, s1 = a[:, :-1], s[:, :-1], a[:, 1:], s[:, 1:]
    var = eta**2 * posterior_variance(a0, s0, a1, s1)
    c_x0, c_eps = ctx.col(a1), ctx.col(torch.sqrt((s1**2 - var).clamp_min(0.0)))
    std = ctx.col(torch.sqrt(var))
    noisy = ctx.any_per_step(var > 0) if eta > 0 else [False] * ctx.steps
    return c_x0, c_eps, std, noisy, ctx.col(a), ctx.col(s)


def _churn(ctx: Context, s_churn, s_tmin, s_tmax, s_noise):
    """Times t̂ and VE-equivalent levels σ̂ = σ̃(1 + γ_i) of Karras et al. 2022, Alg. 2 lines 4-6."""
    a0, s0 = ctx.alpha[:, :-1], ctx.sigma[:, :-1]
    sig = s0 / a0
    gamma = torch.zeros_like(sig)
    if s_churn > 0:
        g = min(s_churn / ctx.steps, math.sqrt(2) - 1)
        gamma = torch.where(torch.isfinite(sig) & (sig >= s_tmin) & (sig <= s_tmax), torch.full_like(sig, g), gamma)
    churned = gamma > 0
    if not churned.any():  # the deterministic sampler (Alg. 1): σ̂ = σ̃ on every step
        return churned, ctx.grid[:, :-1], a0, s0, sig, torch.ones_like(sig), torch.zeros_like(sig)
    target = sig * (1 + gamma)
    t_new = ctx.process.t_from_sigma_ratio(torch.where(churned, target, sig)).clamp(0.0, 1.0)
    t_hat = torch.where(churned, t_new, ctx.grid[:, :-1])
    a_hat, s_hat = ctx.process.alpha_sigma(t_hat)
    a_hat = torch.where(churned, a_hat, a0)
    s_hat = torch.where(churned, s_hat, s0)
    sig_hat = s_hat / a_hat
    # x̂ = (â/α) x + â √(σ̂² − σ̃²) S_noise z   (ŷ = y + √(σ̂² − σ̃²) S_noise z in y = x/α)
    add = torch.where(churned, a_hat * torch.sqrt((sig_hat**2 - sig**2).clamp_min(0.0)) * s_noise, torch.zeros_like(sig))
    scale = torch.where(churned, a_hat / a0, torch.ones_like(sig))
    return churned, t_hat, a_hat, s_hat, sig_hat, scale, add


def _karras_coefficients(ctx: Context, second_order, s_churn, s_tmin, s_tmax, s_noise):
    a, s = ctx.alpha, ctx.sigma
    a1, s1 = a[:, 1:], s[:, 1:]
    churned, t_hat, a_hat, s_hat, sig_hat, scale, add = _churn(ctx, s_churn, s_tmin, s_tmax, s_noise)
    use_churn = ctx.any_per_step(churned)
    c_scale, c_add = (ctx.col(scale), ctx.col(add)) if any(use_churn) else (None, None)
    c_x0, c_eps = ctx.col(a1), ctx.col(s1)
    # Heun correction (Alg. 2 lines 9-11) wherever σ_{i+1} > 0 and σ̂ is finite (α̂ > 0).
    finite = torch.isfinite(sig_hat) & (s1 > 0)
    heun_step = ctx.all_per_step(finite) if second_order else [False] * ctx.steps
    c_y = ctx.col(torch.where(finite, a1 / a_hat, torch.zeros_like(a1)))
    c_d = ctx.col(torch.where(finite, a1 * (s1 / a1 - sig_hat), torch.zeros_like(a1)))
    return use_churn, t_hat, c_scale, c_add, c_x0, c_eps, heun_step, c_y, c_d, ctx.col(a), ctx.col(s)


def _karras(model, x_T, grid, generator, second_order, s_churn, s_tmin, s_tmax, s_noise, common):
    if s_churn < 0 or s_noise < 0:
        raise ConfigError(f"s_churn and s_noise must be ≥ 0; got s_churn={s_churn}, s_noise={s_noise}")
    ctx = Context(model, x_T, grid, generator, **common)
    options = (second_order, float(s_churn), float(s_tmin), float(s_tmax), float(s_noise))
    use_churn, t_hat, c_scale, c_add, c_x0, c_eps, heun_step, c_y, c_d, a_col, s_col = ctx.cached(
        "karras", options, lambda: _karras_coefficients(ctx, *options))
    t_hat_cols = ctx.columns(t_hat) if any(use_churn) else None
    x = ctx.start(x_T)
    for i in range(ctx.steps):
        if use_churn[i]:
            x = ctx.project(c_scale[i] * x + c_add[i] * ctx.noise())
            pred = ctx.denoise(x, t_hat_cols[i])
        else:
            pred = ctx.at(x, i)
        x_next = c_x0[i] * pred.x0 + c_eps[i] * pred.eps
        if heun_step[i]:
            pred2 = ctx.at(ctx.project(x_next), i + 1)
            x_next = c_y[i] * x + c_d[i] * (0.5 * (pred.eps + pred2.eps))
        x = ctx.after_step(x_next, i + 1, a_col, s_col)
        x = ctx.end_step(x, i, pred.x0)
    return ctx.finish(x)


def euler(model, x_T, grid, generator=None, *, s_churn: float = 0.0, s_tmin: float = 0.0,
          s_tmax: float = float("inf"), s_noise: float = 1.0, **common):
    """Euler steps of the probability-flow ODE dy/dσ̃ = ε̂ in EDM's variables y = x/α, σ̃ = σ/α (Karras et al.
    2022, Alg. 2 without the 2nd-order correction; their recommended s(t) = 1, σ(t) = t). With
    ``s_churn > 0`` noise is added first: σ̂ = σ̃(1 + γ), γ = min(S_churn/N, √2 − 1) for σ̃ ∈ [S_tmin, S_tmax]
    (Alg. 2 lines 4-6); defaults give the deterministic sampler (identical to DDIM with η = 0)."""
    return _karras(model, x_T, grid, generator, False, s_churn, s_tmin, s_tmax, s_noise, common)


def heun(model, x_T, grid, generator=None, *, s_churn: float = 0.0, s_tmin: float = 0.0,
         s_tmax: float = float("inf"), s_noise: float = 1.0, **common):
    """Heun's 2nd-order method with churn (Karras et al. 2022, Alg. 2; Alg. 1 when ``s_churn = 0``).
    The correction is skipped on a step that lands on σ = 0 (Alg. 1 line 7), so N steps cost 2N − 1
    model calls there and 2N otherwise; a step starting at α = 0 is an Euler step."""
    return _karras(model, x_T, grid, generator, True, s_churn, s_tmin, s_tmax, s_noise, common)
