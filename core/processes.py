"""Gaussian forward processes ``x_t = α(t) x_0 + σ(t) ε`` with continuous time ``t ∈ [0, 1]``.

One object per process family exposes α(t), σ(t), the log signal-to-noise ratio
λ(t) = log(α²/σ²) and its inverse, the SDE ``dx = f(t) x dt + g(t) dW`` of the
marginals (Song et al. 2021, Eq. 5; for these marginals f = d log α/dt and
g² = dσ²/dt − 2 f σ², Kingma et al. 2021, VDM App. A), and the prior at t = 1.
Discrete DDPM is :class:`VP` evaluated on a grid of ``num_steps`` points. All
schedule arithmetic is float64; callers cast the per-sample coefficients to the
data dtype with :func:`polydiff.checks.expand_like`.
"""

from __future__ import annotations

import math

import torch

from .checks import check_finite, check_same_shape, check_time, expand_like
from .errors import ConfigError
from .schedules import VPSchedule, get_schedule
from .spaces import Euclidean, Space

Tensor = torch.Tensor
F64 = torch.float64


def _t64(t) -> Tensor:
    return torch.as_tensor(t).to(F64)


def _ddt(fn, t: Tensor) -> Tensor:
    """Elementwise derivative of a float64 function of t by autograd (exact, not finite differences)."""
    t = _t64(t).detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = fn(t)
        if not y.requires_grad:  # constant in t
            return torch.zeros_like(t).detach()
        (grad,) = torch.autograd.grad(y.sum(), t)
    return grad


def _bisect_decreasing(fn, target: Tensor, low: float, high: float, iters: int = 80) -> Tensor:
    """Solve fn(t) = target for a decreasing fn on [low, high], elementwise, in float64."""
    target = _t64(target)
    lo = torch.full_like(target, low)
    hi = torch.full_like(target, high)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        above = fn(mid) > target
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    return 0.5 * (lo + hi)


class GaussianProcess:
    """Base class. Subclasses implement :meth:`alpha` and :meth:`sigma` (float64, elementwise in t)."""

    #: Smallest time used for training and as the default end of sampling grids.
    t_min: float = 0.0
    #: Standard deviation of the prior N(0, prior_std² I) at t = 1.
    prior_std: float = 1.0
    #: Number of steps when the process is a discrete chain on the grid i / num_steps, else None.
    num_steps: int | None = None

    def alpha(self, t) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sigma(self, t) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def alpha_sigma(self, t) -> tuple[Tensor, Tensor]:
        return self.alpha(t), self.sigma(t)

    def sigma_sq(self, t) -> Tensor:
        """σ(t)²; subclasses override it where σ² is smoother than σ (so that dσ²/dt is finite at σ = 0)."""
        return self.sigma(t) ** 2

    def log_snr(self, t) -> Tensor:
        """λ(t) = log α² − log σ² (Kingma et al. 2021, Eq. 3); +inf where σ = 0."""
        a, s = self.alpha_sigma(t)
        return 2 * (torch.log(a) - torch.log(s))

    def t_from_log_snr(self, lam) -> Tensor:
        """Inverse of :meth:`log_snr` (λ decreases in t); bisection unless a subclass has a closed form."""
        lam = _t64(lam)
        return _bisect_decreasing(self.log_snr, lam, 0.0, 1.0)

    def t_from_sigma_ratio(self, ratio) -> Tensor:
        """Time where σ/α equals ``ratio`` (the "VE-equivalent" noise level of EDM, Karras et al. 2022, Eq. 4)."""
        return self.t_from_log_snr(-2 * torch.log(_t64(ratio)))

    def drift_coef(self, t) -> Tensor:
        """f(t) = d log α / dt of the forward SDE dx = f(t) x dt + g(t) dW."""
        return _ddt(lambda u: torch.log(self.alpha(u)), t)

    def diffusion_sq(self, t) -> Tensor:
        """g(t)² = dσ²/dt − 2 f(t) σ²."""
        return _ddt(self.sigma_sq, t) - 2 * self.drift_coef(t) * self.sigma_sq(t)

    def sample_time(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """Training times: uniform on [t_min, 1] (on the grid {1/T, …, 1} for a discrete chain)."""
        if self.num_steps is not None:
            idx = torch.randint(1, self.num_steps + 1, (n,), generator=generator, device=device)
            return idx.to(F64) / self.num_steps
        u = torch.rand(n, generator=generator, device=device, dtype=F64)
        return self.t_min + (1 - self.t_min) * u

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw x_t = α(t) x0 + σ(t) ε for given noise ε (shape (batch, ...) like x0, t of shape (batch,))."""
        check_same_shape(noise, x0, "noise", "x0")
        t = check_time(t, x0.shape[0])
        check_finite(x0, "x0")
        a, s = self.alpha_sigma(t)
        return expand_like(a, x0) * x0 + expand_like(s, x0) * noise

    def prior_sample(
        self, shape, generator: torch.Generator | None = None, space: Space | None = None, presence=None, **kw
    ) -> Tensor:
        """x_T ~ N(0, prior_std² I) drawn through the space's noise field (so it is centred, wrapped, …)."""
        space = space or Euclidean()
        return self.prior_std * space.noise(shape, generator=generator, presence=presence, **kw)

    def prior_logp(self, x: Tensor, space: Space | None = None, presence=None) -> Tensor:
        """log N(x; 0, prior_std² I) summed per sample over the space's degrees of freedom, shape (batch,)
        (the wrapped normal on a torus: :meth:`polydiff.spaces.Space.gaussian_log_prob`)."""
        return (space or Euclidean()).gaussian_log_prob(x, self.prior_std, presence)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class VP(GaussianProcess):
    """Variance-preserving process: α = √ᾱ(t), σ = √(1 − ᾱ(t)) (Ho et al. 2020; Song et al. 2021, Eq. 11).

    ``num_steps=None`` gives the continuous-time process of the schedule; ``num_steps=T`` gives
    the DDPM chain with the schedule's discrete β_1…β_T, placed at t_i = i/T with ᾱ(0) = 1 and
    log ᾱ interpolated linearly between grid points (Lu et al. 2022, DPM-Solver, App. D.2),
    so that any sampler can run on it; index i−1 of diffusers' ``alphas_cumprod`` is t = i/T.
    Timestep respacing (Nichol & Dhariwal 2021, §4) is sampling on a subset of that grid.
    ``zero_terminal_snr`` rescales √ᾱ to reach 0 at t = 1 (Lin et al. 2024, Alg. 1).
    """

    def __init__(
        self,
        schedule: str | VPSchedule = "linear",
        num_steps: int | None = None,
        zero_terminal_snr: bool = False,
        t_min: float | None = None,
        **schedule_kwargs,
    ):
        self.schedule = get_schedule(schedule, **schedule_kwargs)
        self.zero_terminal_snr = zero_terminal_snr
        if num_steps is not None:
            if int(num_steps) < 1:
                raise ConfigError(f"num_steps must be a positive integer, got {num_steps}")
            self.num_steps = int(num_steps)
            betas = self.schedule.betas(self.num_steps)
            log_ab = torch.cat([torch.zeros(1, dtype=F64), torch.cumsum(torch.log1p(-betas), 0)])
            if zero_terminal_snr:
                sab = self._rescale_zero_snr(torch.exp(0.5 * log_ab[1:]), first=torch.exp(0.5 * log_ab[1]))
                log_ab = torch.cat([torch.zeros(1, dtype=F64), 2 * torch.log(sab)])
            self._grid_log_ab = log_ab
            # A plain chain (log ᾱ finite and strictly decreasing) takes the short paths of the two maps below.
            self._grid_plain = bool(torch.isfinite(log_ab).all() and (log_ab[1:] < log_ab[:-1]).all())
            self.betas = betas if not zero_terminal_snr else 1 - torch.exp(log_ab[1:] - log_ab[:-1])
            self.t_min = 1.0 / self.num_steps if t_min is None else t_min
        else:
            self.t_min = 1e-5 if t_min is None else t_min
            self._sab_end = torch.exp(0.5 * self.schedule.log_alpha_bar(_t64(1.0)))

    @staticmethod
    def _rescale_zero_snr(sab: Tensor, first: Tensor) -> Tensor:
        return (sab - sab[-1]) * first / (first - sab[-1])

    @property
    def alphas_cumprod(self) -> Tensor:
        """ᾱ at t = 1/T … 1 for a discrete chain (diffusers' ``alphas_cumprod``)."""
        if self.num_steps is None:
            raise ConfigError("alphas_cumprod exists only for a discrete VP (pass num_steps)")
        return torch.exp(self._grid_log_ab[1:])

    def log_alpha_bar(self, t) -> Tensor:
        t = _t64(t)
        if self.num_steps is not None:
            pos = torch.clamp(t, 0.0, 1.0) * self.num_steps
            lo = torch.clamp(torch.floor(pos).long(), max=self.num_steps - 1)
            frac = pos - lo
            g = self._grid_log_ab.to(t.device)
            a, b = g[lo], g[lo + 1]
            if self._grid_plain:
                return a + frac * (b - a)
            # Under zero terminal SNR log ᾱ(1) = −inf: interpolate only towards finite grid values.
            b_finite = torch.isfinite(b)
            lin = a + frac * (torch.where(b_finite, b, a) - a)
            return torch.where(b_finite | (frac == 0), lin, torch.full_like(lin, -math.inf))
        log_ab = self.schedule.log_alpha_bar(t)
        if self.zero_terminal_snr:
            sab = (torch.exp(0.5 * log_ab) - self._sab_end) / (1 - self._sab_end)
            return 2 * torch.log(sab)
        return log_ab

    def alpha(self, t):
        return torch.exp(0.5 * self.log_alpha_bar(t))

    def sigma(self, t):
        return torch.sqrt(self.sigma_sq(t))

    def alpha_sigma(self, t):
        lab = self.log_alpha_bar(t)  # once for both (a sampler's set-up calls this on every grid it builds)
        return torch.exp(0.5 * lab), torch.sqrt(-torch.expm1(lab))

    def sigma_sq(self, t):
        return -torch.expm1(self.log_alpha_bar(t))

    def log_snr(self, t):
        lab = self.log_alpha_bar(t)
        return lab - torch.log(-torch.expm1(lab))

    def t_from_log_snr(self, lam):
        # λ = log ᾱ − log(1 − ᾱ)  ⇒  log ᾱ = log σ(λ) = −softplus(−λ)
        target = -torch.nn.functional.softplus(-_t64(lam))
        if self.num_steps is None and type(self.schedule).__name__ == "LinearSchedule" and not self.zero_terminal_snr:
            b0, b1 = self.schedule.beta_min, self.schedule.beta_max
            # −b0 t − ½(b1 − b0) t² = target  ⇒  closed-form root in [0, 1]
            d = b1 - b0
            return (-b0 + torch.sqrt(b0**2 - 2 * d * target)) / d
        if self.num_steps is not None:
            return self._t_from_log_alpha_bar_discrete(target)
        return _bisect_decreasing(self.log_alpha_bar, target, 0.0, 1.0)

    def _t_from_log_alpha_bar_discrete(self, target: Tensor) -> Tensor:
        """Exact inverse of the discrete chain's piecewise-linear log ᾱ(t) (:meth:`log_alpha_bar`): locate the
        interval by binary search on the T + 1 grid values, then invert the linear piece (a bisection of
        ``t`` took 80 evaluations of the whole chain: ~5 ms per grid, the cost of a Karras or log-SNR grid)."""
        g = self._grid_log_ab.to(target.device)  # decreasing from 0, possibly −inf at the end (zero terminal SNR)
        T = self.num_steps
        k = torch.searchsorted(-g, -target.clamp(max=0.0)).clamp(1, T)  # g[k−1] ≥ target ≥ g[k]
        a, b = g[k - 1], g[k]
        if self._grid_plain:  # a > b everywhere; target = 0 (λ = +inf) gives k = 1, frac = 0: t = 0
            return (k - 1 + ((a - target) / (a - b)).clamp(0.0, 1.0)) / T
        finite = torch.isfinite(b) & (a > b)
        frac = torch.where(finite, (a - target) / torch.where(finite, a - b, torch.ones_like(a)), torch.ones_like(a))
        t = (k - 1 + frac.clamp(0.0, 1.0)) / T
        return torch.where(target >= 0, torch.zeros_like(t), t)

    def __repr__(self):
        return f"VP(schedule={self.schedule!r}, num_steps={self.num_steps}, zero_terminal_snr={self.zero_terminal_snr})"


class VE(GaussianProcess):
    """Variance-exploding process: α = 1, σ(t) = σ_min (σ_max/σ_min)^t (Song & Ermon 2019, NCSN;
    Song et al. 2021, Eq. 9 and App. C: σ_min = 0.01, σ_max = 50; choose σ_max as the largest
    pairwise data distance, Song & Ermon 2020, Technique 1)."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(f"VE needs 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.prior_std = sigma_max

    def alpha(self, t):
        return torch.ones_like(_t64(t))

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** _t64(t)

    def t_from_log_snr(self, lam):
        # λ = −2 log σ
        return (-0.5 * _t64(lam) - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)

    def drift_coef(self, t):
        return torch.zeros_like(_t64(t))

    def diffusion_sq(self, t):
        return 2 * self.sigma(t) ** 2 * math.log(self.sigma_max / self.sigma_min)

    def __repr__(self):
        return f"VE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


class SubVP(GaussianProcess):
    """sub-VP process: α = √ᾱ(t) as the linear VP, σ = 1 − ᾱ(t) (Song et al. 2021, Eq. 29 and App. B)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-5):
        self.schedule = get_schedule("linear", beta_min=beta_min, beta_max=beta_max)
        self.t_min = t_min

    def alpha(self, t):
        return torch.exp(0.5 * self.schedule.log_alpha_bar(t))

    def sigma(self, t):
        return -torch.expm1(self.schedule.log_alpha_bar(t))

    def __repr__(self):
        return f"SubVP(beta_min={self.schedule.beta_min}, beta_max={self.schedule.beta_max})"


class EDM(GaussianProcess):
    """EDM noise levels (Karras et al. 2022): α = 1 and σ ∈ [σ_min, σ_max] = [0.002, 80] placed so that a
    uniform grid in t is their ρ = 7 discretisation (Eq. 5): σ(t) = (σ_min^{1/ρ} + t (σ_max^{1/ρ} − σ_min^{1/ρ}))^ρ.

    Training draws ln σ ~ N(P_mean = −1.2, P_std = 1.2²) (Table 1); σ is clipped to [σ_min, σ_max]
    so that t stays in [0, 1] (a departure affecting < 1e-5 of the draws).
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                 p_mean: float = -1.2, p_std: float = 1.2):
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self.p_mean, self.p_std = p_mean, p_std
        self.prior_std = sigma_max

    def alpha(self, t):
        return torch.ones_like(_t64(t))

    def sigma(self, t):
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (lo + _t64(t) * (hi - lo)) ** self.rho

    def t_from_sigma(self, sigma) -> Tensor:
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (_t64(sigma) ** (1 / self.rho) - lo) / (hi - lo)

    def t_from_log_snr(self, lam):
        return self.t_from_sigma(torch.exp(-0.5 * _t64(lam)))

    def sample_time(self, n, generator=None, device=None):
        ln_sigma = self.p_mean + self.p_std * torch.randn(n, generator=generator, device=device, dtype=F64)
        sigma = torch.clamp(torch.exp(ln_sigma), self.sigma_min, self.sigma_max)
        return torch.clamp(self.t_from_sigma(sigma), 0.0, 1.0)

    def __repr__(self):
        return f"EDM(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, rho={self.rho})"


class RectifiedFlow(GaussianProcess):
    """Straight-line interpolation x_t = (1 − t) x_0 + t ε (Liu et al. 2023, Rectified Flow, Eq. 1;
    Lipman et al. 2023, Flow Matching, with σ_min = 0)."""

    def alpha(self, t):
        return 1 - _t64(t)

    def sigma(self, t):
        return _t64(t).clone()

    def t_from_log_snr(self, lam):
        # α/σ = (1 − t)/t = exp(λ/2)  ⇒  t = σ(−λ/2)
        return torch.sigmoid(-0.5 * _t64(lam))

    def drift_coef(self, t):
        return -1 / (1 - _t64(t))

    def __repr__(self):
        return "RectifiedFlow()"


PROCESSES = {"vp": VP, "ddpm": VP, "ve": VE, "subvp": SubVP, "edm": EDM, "rectified_flow": RectifiedFlow}


def get_process(name: str | GaussianProcess, **kwargs) -> GaussianProcess:
    """Resolve a process by name: ``vp`` (``ddpm`` = vp with ``num_steps=1000``), ``ve``, ``subvp``, ``edm``,
    ``rectified_flow``."""
    if isinstance(name, GaussianProcess):
        return name
    key = str(name).lower()
    if key not in PROCESSES:
        raise ConfigError(f"unknown process {name!r}; expected one of {sorted(PROCESSES)}")
    if key == "ddpm":
        kwargs.setdefault("num_steps", 1000)
    return PROCESSES[key](**kwargs)
