"""Likelihoods of Gaussian diffusion models, in nats and bits per dimension.

* :func:`ode_nll` — the exact log-density of the probability-flow ODE model
  dx/dt = f(t) x − ½ g(t)² ∇log p_t(x) (Song et al. 2021, "Score-Based Generative Modeling through
  SDEs", Eq. 13 and App. D.2) by the instantaneous change of variables
  log p_{t_min}(x(t_min)) = log p_1(x(1)) + ∫_{t_min}^1 ∇·v(x(t), t) dt (Chen et al. 2018, Neural ODEs,
  Thm. 1). The divergence is exact (one autograd pass per dimension) or Hutchinson's estimate
  E[zᵀ (∂v/∂x) z] with one probe z per sample held fixed along the path (Grathwohl et al. 2019, FFJORD,
  §3.1; Rademacher or Gaussian, seeded). The ODE is solved either by fixed-step RK4 or by the
  adaptive RK45 of ``scipy.integrate.solve_ivp`` (what Song et al. used, rtol = atol = 1e-5).
* :func:`dequantize` / :func:`dequantized_ode_nll` — uniform dequantisation of b-bin data
  (Theis et al. 2016; Ho et al. 2019, Flow++, §3.1; Song et al. 2021, App. D.2): y = lo + (hi − lo)(k + u)/b,
  u ~ U(0, 1)^D, and log P(k) ≥ E_u[log p(y)] + D log((hi − lo)/b); bits/dim are then those of the
  discrete data (for 256 bins on [−1, 1] this is the "+7 bits" of their code).
* :func:`ddpm_vlb` — the discrete-time variational bound of a DDPM chain (Ho et al. 2020, Eq. 5:
  L = L_T + Σ_{t>1} L_{t−1} + L_0) with fixed (β or β̃) or learned variance (Nichol & Dhariwal 2021,
  Eq. 15) and the discretised Gaussian decoder L_0 (Ho et al. 2020, Eq. 13), in bits/dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .checks import check_finite, expand_like
from .errors import ConfigError, ShapeError
from .processes import VP, GaussianProcess
from .spaces import Euclidean, Space, Torus

__all__ = [
    "NLLResult", "ode_nll", "dequantize", "dequantized_ode_nll", "ddpm_vlb", "ddpm_coefficients", "ddpm_vlb_term",
    "normal_kl", "discretized_gaussian_log_likelihood", "gaussian_log_likelihood", "bits_per_dim", "rng_device",
]

Tensor = torch.Tensor
F64 = torch.float64
LOG2 = math.log(2.0)


@dataclass
class NLLResult:
    """Per-sample negative log-likelihood. ``nll`` in nats (summed over dimensions), ``bpd`` = nll /
    (dims · ln 2), ``dims`` the counted dimensions, ``nfe`` denoiser evaluations. For the ODE also
    ``prior_logp`` (log p_1(x(1))), ``delta_logp`` (∫ ∇·v dt) and ``latent`` x(1)."""

    nll: Tensor
    bpd: Tensor
    dims: Tensor
    nfe: int = 0
    prior_logp: Tensor | None = None
    delta_logp: Tensor | None = None
    terms: Tensor | None = None
    latent: Tensor | None = None


def rng_device(generator: torch.Generator | None, fallback=None):
    """Where random numbers are drawn: on the generator's device (a CUDA generator draws on CUDA), else
    ``fallback``; results are then moved to the data's device."""
    return generator.device if generator is not None else fallback


def bits_per_dim(nll_nats: Tensor, dims) -> Tensor:
    """nats per sample → bits per dimension."""
    return nll_nats / (torch.as_tensor(dims, dtype=nll_nats.dtype) * LOG2)


# ---------------------------------------------------------------------------------------------
# Probability-flow ODE likelihood
# ---------------------------------------------------------------------------------------------


def _probability_flow(denoiser, process, space, presence, cond):
    """v(x, t) = f(t) x − ½ g²(t) ∇log p_t = f x + ½ g² ε̂/σ (Song et al. 2021, Eq. 13), padding zeroed."""

    def v(x: Tensor, t: Tensor) -> Tensor:
        tt = t.to(device=x.device, dtype=F64).expand(x.shape[0])
        f = expand_like(process.drift_coef(tt), x)
        g2 = expand_like(process.diffusion_sq(tt), x)
        s = expand_like(process.sigma(tt), x)
        # the torus is integrated in its cover; the model sees the wrapped state
        eps = denoiser(space.project(x, presence) if isinstance(space, Torus) else x, tt, cond).eps
        out = f * x + 0.5 * g2 * eps / s
        return out if presence is None else out * presence

    return v


def _divergence(v_fn, x: Tensor, t: Tensor, probe: Tensor | None) -> tuple[Tensor, Tensor]:
    """(v, ∇·v) at (x, t): exact by one vector-Jacobian product per dimension, or zᵀ J z for a probe z."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = v_fn(x, t)
        if probe is not None:  # probes: (num_probes, batch, ...)
            div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            for k, z in enumerate(probe):
                (vjp,) = torch.autograd.grad((v * z).sum(), x, retain_graph=k < len(probe) - 1)
                div = div + (vjp * z).flatten(1).sum(1)
            return v.detach(), div.detach() / len(probe)
        flat = v.flatten(1)
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        d = flat.shape[1]
        for j in range(d):
            (g,) = torch.autograd.grad(flat[:, j].sum(), x, retain_graph=j < d - 1)
            div = div + g.flatten(1)[:, j]
    return v.detach(), div.detach()


def _rk4(fn, y0: Tensor, t0: float, t1: float, steps: int) -> Tensor:
    """Classical fixed-step Runge–Kutta 4 from t0 to t1 (float64 times)."""
    h = (t1 - t0) / steps
    y = y0
    for i in range(steps):
        t = t0 + i * h
        k1 = fn(t, y)
        k2 = fn(t + h / 2, y + h / 2 * k1)
        k3 = fn(t + h / 2, y + h / 2 * k2)
        k4 = fn(t + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def _rk45_scipy(fn, y0: Tensor, t0: float, t1: float, rtol: float, atol: float) -> Tensor:
    try:
        from scipy.integrate import solve_ivp  # adaptive Dormand–Prince, as in Song et al. 2021 App. D.2
    except ImportError as err:  # scipy comes with every polydiff extra, not with the bare engine
        raise ConfigError("method='rk45' needs scipy (pip install scipy); or use method='rk4' with steps=N") from err

    shape, dtype, device = y0.shape, y0.dtype, y0.device

    def rhs(t, y):
        yt = torch.from_numpy(y).to(dtype=dtype, device=device).reshape(shape)
        return fn(t, yt).detach().cpu().to(F64).reshape(-1).numpy()

    sol = solve_ivp(rhs, (t0, t1), y0.detach().cpu().to(F64).reshape(-1).numpy(), rtol=rtol, atol=atol, method="RK45")
    if not sol.success:
        raise RuntimeError(f"probability-flow ODE solve failed: {sol.message}")
    return torch.from_numpy(sol.y[:, -1]).to(dtype=dtype, device=device).reshape(shape)


def ode_nll(
    denoiser,
    x: Tensor,
    process: GaussianProcess | None = None,
    space: Space | None = None,
    presence: Tensor | None = None,
    cond: dict | None = None,
    divergence: str = "auto",
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    method: str = "rk45",
    steps: int = 100,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float | None = None,
    exact_max_dims: int = 16,
    num_probes: int = 1,
) -> NLLResult:
    """−log p_{t_min}(x) of the probability-flow ODE model, per sample (see the module docstring).

    Args:
        denoiser: ``denoiser(x, t, cond) -> Prediction`` (its ``eps`` gives the score −ε̂/σ).
        x: (batch, ...) data; float64 recommended for tight tolerances.
        process: defaults to ``denoiser.process``.
        divergence: ``exact``, ``hutchinson`` or ``auto`` (exact when x has ≤ ``exact_max_dims`` dims).
        probe: Hutchinson probe distribution, ``rademacher`` or ``gaussian`` (drawn with ``generator``).
        num_probes: probes per sample, each fixed along the path; their estimates are averaged.
        method: ``rk45`` (adaptive, ``rtol``/``atol``) or ``rk4`` (fixed, ``steps``).
        t_min: start of the integration (default ``process.t_min``); the result is the density of
            x_{t_min}, which approaches the data density as t_min → 0.
    Returns:
        :class:`NLLResult` with nll in nats and bpd (dims = present entries, or the space's
        degrees of freedom).
    """
    process = process or getattr(denoiser, "process", None)
    if not isinstance(process, GaussianProcess):
        raise ConfigError("ode_nll needs a GaussianProcess (pass process= or a denoiser with .process)")
    if not torch.is_tensor(x) or not x.is_floating_point() or x.ndim < 2:
        raise ShapeError(f"x must be a float tensor of shape (batch, ...); got {getattr(x, 'shape', type(x))}")
    check_finite(x, "x")
    space = space or Euclidean()
    if presence is not None:
        presence = presence.to(torch.bool)
    dims = space.degrees_of_freedom(x, presence)
    n_dims = x[0].numel()
    if divergence == "auto":
        divergence = "exact" if n_dims <= exact_max_dims else "hutchinson"
    if divergence not in ("exact", "hutchinson"):
        raise ConfigError(f"unknown divergence {divergence!r}; expected 'exact', 'hutchinson' or 'auto'")
    z = None
    if divergence == "hutchinson":
        if int(num_probes) < 1:
            raise ConfigError(f"num_probes must be >= 1, got {num_probes}")
        shape = (int(num_probes), *x.shape)
        if probe == "rademacher":
            z = torch.randint(0, 2, shape, generator=generator, device=rng_device(generator), dtype=torch.int64)
            z = z.to(x) * 2 - 1
        elif probe == "gaussian":
            z = torch.randn(shape, generator=generator, device=rng_device(generator), dtype=x.dtype)
        else:
            raise ConfigError(f"unknown probe {probe!r}; expected 'rademacher' or 'gaussian'")
        z = z.to(x.device)
        if presence is not None:
            z = z * presence
    t0 = float(process.t_min if t_min is None else t_min)
    v_fn = _probability_flow(denoiser, process, space, presence, cond or {})
    n, numel = x.shape[0], x[0].numel()
    nfe = 0

    def rhs(t: float, y: Tensor) -> Tensor:
        nonlocal nfe
        nfe += 1
        state = y[:, :numel].reshape(x.shape)
        v, div = _divergence(v_fn, state, torch.tensor(t, dtype=F64), z)
        return torch.cat([v.flatten(1), div[:, None]], dim=1)

    y0 = torch.cat([x.detach().flatten(1), torch.zeros(n, 1, dtype=x.dtype, device=x.device)], dim=1)
    if method == "rk4":
        if int(steps) < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        y1 = _rk4(rhs, y0, t0, 1.0, int(steps))
    elif method == "rk45":
        y1 = _rk45_scipy(rhs, y0, t0, 1.0, rtol, atol)
    else:
        raise ConfigError(f"unknown ODE method {method!r}; expected 'rk4' or 'rk45'")
    x1 = y1[:, :numel].reshape(x.shape)
    delta = y1[:, numel]
    prior = process.prior_logp(x1, space, presence).to(x.dtype)
    logp = prior + delta
    return NLLResult(
        nll=-logp, bpd=bits_per_dim(-logp, dims), dims=dims, nfe=nfe, prior_logp=prior, delta_logp=delta, latent=x1
    )


def dequantize(
    values: Tensor, num_bins: int = 256, data_range: tuple[float, float] = (-1.0, 1.0), generator=None,
    dtype=torch.float64,
) -> tuple[Tensor, float]:
    """Uniform dequantisation: integer levels k ∈ {0, …, b−1} → y = lo + (hi − lo)(k + u)/b, u ~ U(0, 1).

    Returns y and the per-dimension log-Jacobian log((hi − lo)/b) that turns the density of y into a
    bound on the probability of k: log P(k) ≥ E_u[log p(y)] + D log((hi − lo)/b) (Theis et al. 2016;
    Ho et al. 2019, Flow++, §3.1)."""
    if values.is_floating_point() and not torch.equal(values, values.round()):
        raise ShapeError("values must hold integer levels 0 … num_bins−1 (e.g. 8-bit pixels), got fractions")
    if values.numel() and (values.min() < 0 or values.max() > num_bins - 1):
        raise ShapeError(f"values must lie in [0, {num_bins - 1}], got [{values.min().item()}, {values.max().item()}]")
    lo, hi = data_range
    u = torch.rand(values.shape, generator=generator, dtype=dtype, device=rng_device(generator)).to(values.device)
    y = lo + (hi - lo) * (values.to(dtype) + u) / num_bins
    return y, math.log((hi - lo) / num_bins)


def dequantized_ode_nll(
    denoiser, values: Tensor, num_bins: int = 256, data_range: tuple[float, float] = (-1.0, 1.0),
    generator: torch.Generator | None = None, **ode_kwargs,
) -> NLLResult:
    """Upper bound on −log P(k) of discrete data through the ODE density of its uniform dequantisation;
    bpd on the scale of the discrete levels (Song et al. 2021, App. D.2; Ho et al. 2019, §3.1)."""
    y, log_jac = dequantize(values, num_bins, data_range, generator)
    res = ode_nll(denoiser, y, generator=generator, **ode_kwargs)
    nll = res.nll - res.dims.to(res.nll) * log_jac
    return NLLResult(nll=nll, bpd=bits_per_dim(nll, res.dims), dims=res.dims, nfe=res.nfe,
                     prior_logp=res.prior_logp, delta_logp=res.delta_logp)


# ---------------------------------------------------------------------------------------------
# Discrete-time DDPM variational bound
# ---------------------------------------------------------------------------------------------


def ddpm_coefficients(process: VP, idx: Tensor) -> dict[str, Tensor]:
    """Per-sample float64 quantities of step i = idx ∈ {1, …, T} of a discrete VP chain (Ho et al. 2020,
    Eqs. 6–7): β_i, ᾱ_i, ᾱ_{i−1}, β̃_i = (1 − ᾱ_{i−1})/(1 − ᾱ_i) β_i, the posterior-mean coefficients of x_0
    and x_i, and log β̃ clipped at step 1 to β̃_2 (β̃_1 = 0; Nichol & Dhariwal's released code)."""
    if not isinstance(process, VP) or process.num_steps is None:
        raise ConfigError("the DDPM bound needs a discrete VP process (VP(..., num_steps=T))")
    T = process.num_steps
    idx = torch.as_tensor(idx).long()
    if idx.numel() and (idx.min() < 1 or idx.max() > T):
        raise ShapeError(f"step index must lie in [1, {T}], got [{idx.min().item()}, {idx.max().item()}]")
    ab = torch.exp(process.log_alpha_bar(idx.to(F64) / T))
    ab_prev = torch.exp(process.log_alpha_bar((idx - 1).to(F64) / T))
    beta = 1 - ab / ab_prev
    beta_tilde = (1 - ab_prev) / (1 - ab) * beta
    # β̃ at step 2 (for the clipped log-variance at step 1)
    i2 = torch.full_like(idx, min(2, T))
    ab2, ab1 = torch.exp(process.log_alpha_bar(i2.to(F64) / T)), torch.exp(process.log_alpha_bar((i2 - 1).to(F64) / T))
    beta_tilde_2 = (1 - ab1) / (1 - ab2) * (1 - ab2 / ab1)
    first = idx == 1
    log_bt_clipped = torch.log(torch.where(first, beta_tilde_2, beta_tilde))
    return {
        "beta": beta,
        "alpha_bar": ab,
        "alpha_bar_prev": ab_prev,
        "beta_tilde": beta_tilde,
        "log_beta_tilde_clipped": log_bt_clipped,
        "log_beta_large": torch.log(torch.where(first, beta_tilde_2, beta)),
        "coef_x0": torch.sqrt(ab_prev) * beta / (1 - ab),
        "coef_xt": torch.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab),
    }


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _log_normal_interval(a: Tensor, b: Tensor) -> Tensor:
    """log(Φ(b) − Φ(a)) for a < b, stable in both tails (uses the side where the mass is not ≈ 1)."""
    # Reflect so that the interval lies mostly on the left, where log Φ is accurate.
    flip = (a + b) > 0
    a2, b2 = torch.where(flip, -b, a), torch.where(flip, -a, b)
    lb, la = torch.special.log_ndtr(b2), torch.special.log_ndtr(a2)
    return lb + torch.log(-torch.expm1(torch.clamp(la - lb, max=-1e-300 if lb.dtype == F64 else -1e-30)))


def discretized_gaussian_log_likelihood(
    x: Tensor, mean: Tensor, log_scale: Tensor, num_bins: int = 256, data_range: tuple[float, float] = (-1.0, 1.0)
) -> Tensor:
    """log P(x) of x on the grid lo + k (hi − lo)/(b − 1) under N(mean, e^{2 log_scale}) integrated over the
    bin of x, the outer bins extended to ±∞ (Ho et al. 2020, Eq. 13), elementwise, in nats."""
    lo, hi = data_range
    half = (hi - lo) / (num_bins - 1) / 2
    inv = torch.exp(-log_scale)
    upper = torch.where(x >= hi - half, torch.full_like(x, math.inf), (x - mean + half) * inv)
    lower = torch.where(x <= lo + half, torch.full_like(x, -math.inf), (x - mean - half) * inv)
    return torch.clamp(_log_normal_interval(lower, upper), min=math.log(1e-12))


def gaussian_log_likelihood(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(x; mean, e^logvar) elementwise, in nats (continuous decoder for data that is not binned)."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 * torch.exp(-logvar))


VARIANCES = ("learned", "beta", "beta_tilde")


def model_log_variance(coef: dict, x: Tensor, variance: str, var_interp: Tensor | None) -> Tensor:
    """log Σ_θ at each step: fixed β ("large"), fixed β̃ ("small") (Ho et al. 2020, §3.2) or learned
    log Σ = v' log β + (1 − v') log β̃ with v' = (v + 1)/2 for the model output v ∈ [−1, 1] (Nichol &
    Dhariwal 2021, Eq. 15 and their code)."""
    if variance == "beta":
        return expand_like(coef["log_beta_large"], x).expand_as(x)
    if variance == "beta_tilde":
        return expand_like(coef["log_beta_tilde_clipped"], x).expand_as(x)
    if variance == "learned":
        if var_interp is None:
            raise ConfigError("variance='learned' needs a denoiser that returns var_interp (learned_variance=True)")
        frac = (var_interp + 1) / 2
        return frac * expand_like(torch.log(coef["beta"]), x) + (1 - frac) * expand_like(
            coef["log_beta_tilde_clipped"], x
        )
    raise ConfigError(f"unknown variance {variance!r}; expected one of {VARIANCES}")


def ddpm_vlb_term(
    coef: dict, x0: Tensor, x_t: Tensor, x0_hat: Tensor, var_interp: Tensor | None, idx: Tensor,
    variance: str = "learned", num_bins: int | None = 256, data_range: tuple[float, float] = (-1.0, 1.0),
) -> Tensor:
    """Elementwise L_{i−1} in nats: KL(q(x_{i−1}|x_i, x_0) ‖ p_θ(x_{i−1}|x_i)) for i > 1, and the decoder
    −log p_θ(x_0|x_1) for i = 1 (discretised with ``num_bins``, or a continuous Gaussian if None).
    The model mean is μ̃(x_i, x̂_0) (Ho et al. 2020, Eq. 7)."""
    cx0, cxt = expand_like(coef["coef_x0"], x0), expand_like(coef["coef_xt"], x0)
    true_mean = cx0 * x0 + cxt * x_t
    model_mean = cx0 * x0_hat + cxt * x_t
    model_logvar = model_log_variance(coef, x0, variance, var_interp)
    true_logvar = expand_like(coef["log_beta_tilde_clipped"], x0)
    kl = normal_kl(true_mean, true_logvar, model_mean, model_logvar)
    if num_bins is None:
        nll0 = -gaussian_log_likelihood(x0, model_mean, model_logvar)
    else:
        nll0 = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar, num_bins, data_range)
    first = expand_like((torch.as_tensor(idx) == 1).to(x0.dtype), x0).bool()
    return torch.where(first, nll0, kl)


@torch.no_grad()
def ddpm_vlb(
    denoiser,
    x0: Tensor,
    process: VP | None = None,
    variance: str | None = None,
    num_bins: int | None = 256,
    data_range: tuple[float, float] = (-1.0, 1.0),
    presence: Tensor | None = None,
    cond: dict | None = None,
    generator: torch.Generator | None = None,
    space: Space | None = None,
) -> NLLResult:
    """The DDPM variational bound −log p(x_0) ≤ L_T + Σ_{i=2}^T L_{i−1} + L_0 (Ho et al. 2020, Eq. 5), one
    fresh x_i ~ q(x_i|x_0) per term, so T denoiser calls per batch.

    ``variance``: ``learned`` (default when the denoiser returns ``var_interp``), ``beta`` or
    ``beta_tilde`` (default otherwise). ``num_bins`` (256 on [−1, 1]) gives the discretised decoder and
    bits/dim of the discrete data; ``None`` a continuous Gaussian decoder (a density bound).
    ``terms`` in the result holds per-sample L_0 … L_{T−1}, L_T (nats, shape (batch, T+1)).
    """
    process = process or getattr(denoiser, "process", None)
    if not isinstance(process, VP) or process.num_steps is None:
        raise ConfigError("ddpm_vlb needs a discrete VP process (VP(..., num_steps=T))")
    if not torch.is_tensor(x0) or not x0.is_floating_point() or x0.ndim < 2:
        raise ShapeError(f"x0 must be a float tensor of shape (batch, ...); got {getattr(x0, 'shape', type(x0))}")
    check_finite(x0 if presence is None else x0 * presence, "x0")
    space = space or Euclidean()
    T, n = process.num_steps, x0.shape[0]
    mask = torch.ones_like(x0) if presence is None else presence.expand_as(x0).to(x0.dtype)
    cond = dict(cond or {})
    if presence is not None:
        cond["presence"] = presence
    terms = torch.zeros(n, T + 1, dtype=F64, device=x0.device)
    chosen = variance
    for i in range(T, 0, -1):
        idx = torch.full((n,), i, dtype=torch.long, device=x0.device)
        t = idx.to(F64) / T
        noise = space.noise(x0.shape, generator=generator, presence=presence, device=x0.device, dtype=x0.dtype)
        x_t = space.project(process.q_sample(x0, t, noise), presence)
        pred = denoiser(x_t, t, cond)
        if chosen is None:
            chosen = "learned" if pred.var_interp is not None else "beta_tilde"
        coef = ddpm_coefficients(process, idx)
        term = ddpm_vlb_term(coef, x0, x_t, pred.x0, pred.var_interp, idx, chosen, num_bins, data_range)
        terms[:, i - 1] = (term * mask).flatten(1).sum(1).to(F64)
    # Prior term L_T = KL(q(x_T|x_0) ‖ N(0, I))
    ab_T = torch.exp(process.log_alpha_bar(torch.ones(n, dtype=F64, device=x0.device)))
    mean_T = expand_like(torch.sqrt(ab_T), x0) * x0
    logvar_T = expand_like(torch.log1p(-ab_T), x0)
    prior = normal_kl(mean_T, logvar_T, torch.zeros_like(x0), torch.zeros_like(x0))
    terms[:, T] = (prior * mask).flatten(1).sum(1).to(F64)
    nll = terms.sum(1)
    dims = mask.flatten(1).sum(1).to(F64)
    return NLLResult(nll=nll, bpd=bits_per_dim(nll, dims), dims=dims, nfe=T, terms=terms)
