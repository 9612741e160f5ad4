"""Noise schedules of the variance-preserving (VP) family, as functions of ᾱ.

A schedule gives ``log ᾱ(t)`` for continuous time ``t ∈ [0, 1]`` and the
per-step ``β_i`` of its discrete (DDPM) version with ``T`` steps. Everything is
computed in float64: schedules are the one place where float32 loses digits
that samplers later need (1 − ᾱ near t = 0, log-SNR near t = 1).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .errors import ConfigError

Tensor = torch.Tensor
F64 = torch.float64


def _f64(t) -> Tensor:
    return torch.as_tensor(t, dtype=F64)


def betas_for_alpha_bar(alpha_bar: Callable[[Tensor], Tensor], num_steps: int, max_beta: float = 0.999) -> Tensor:
    """β_i = min(1 − ᾱ(i/T) / ᾱ((i−1)/T), max_beta) (Nichol & Dhariwal 2021, Eq. 17 and §3.2)."""
    t = torch.arange(num_steps + 1, dtype=F64) / num_steps
    ab = alpha_bar(t)
    return torch.clamp(1.0 - ab[1:] / ab[:-1], max=max_beta)


class VPSchedule:
    """Base class: subclasses define ``log_alpha_bar(t)`` and ``betas(T)``."""

    name = "base"

    def log_alpha_bar(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def betas(self, num_steps: int) -> Tensor:
        return betas_for_alpha_bar(lambda t: torch.exp(self.log_alpha_bar(t)), num_steps)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class LinearSchedule(VPSchedule):
    """Linear β.

    Continuous: β(t) = β_min + t (β_max − β_min), log ᾱ(t) = −β_min t − ½ (β_max − β_min) t²
    (Song et al. 2021, "Score-Based Generative Modeling through SDEs", Eq. 11 and App. B, β_min=0.1, β_max=20).
    Discrete: β_i = linspace(1e-4, 0.02, T) (Ho et al. 2020, §4), which is the same schedule at T=1000
    since T·β_i spans 0.1 … 20.
    """

    name = "linear"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = beta_min, beta_max

    def log_alpha_bar(self, t):
        t = _f64(t)
        return -self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t**2

    def betas(self, num_steps):
        # Ho et al. scale their endpoints with T = 1000; keep T·β fixed for other T.
        return torch.linspace(self.beta_min / num_steps, self.beta_max / num_steps, num_steps, dtype=F64)


class CosineSchedule(VPSchedule):
    """ᾱ(t) = f(t)/f(0), f(t) = cos²((t + s)/(1 + s) · π/2), s = 0.008 (Nichol & Dhariwal 2021, Eq. 17).

    Continuous ᾱ(1) is exactly 0; it is floored at ``min_alpha_bar`` so that log-SNR stays finite
    (the discrete version clips β at 0.999 for the same reason).
    """

    name = "cosine"

    def __init__(self, s: float = 0.008, min_alpha_bar: float = 1e-12):
        self.s, self.min_alpha_bar = s, min_alpha_bar

    def _f(self, t):
        return torch.cos((t + self.s) / (1 + self.s) * math.pi / 2) ** 2

    def log_alpha_bar(self, t):
        t = _f64(t)
        return torch.log(torch.clamp(self._f(t) / self._f(_f64(0.0)), min=self.min_alpha_bar))


class QuadraticSchedule(VPSchedule):
    """β_i = linspace(√β_1, √β_T, T)² (Tashiro et al. 2021, CSDI, App. E: β_1=1e-4, β_T=0.5, T=50).

    Continuous version: β(t) = T (√β_1 + t (√β_T − √β_1))², log ᾱ(t) = −∫_0^t β (Song et al. 2021,
    Eq. 33). It approximates the discrete chain only where β is small (log(1 − β) ≈ −β); with
    β_T = 0.5 use the discrete version (``VP(..., num_steps=50)``), as CSDI does.
    """

    name = "quadratic"

    def __init__(self, beta_start: float = 1e-4, beta_end: float = 0.5, num_steps: int = 50):
        self.beta_start, self.beta_end, self.num_steps = beta_start, beta_end, num_steps

    def log_alpha_bar(self, t):
        t = _f64(t)
        a, b = math.sqrt(self.beta_start), math.sqrt(self.beta_end)
        integral = self.num_steps * (a * a * t + a * (b - a) * t**2 + (b - a) ** 2 * t**3 / 3)
        return -integral

    def betas(self, num_steps):
        return torch.linspace(math.sqrt(self.beta_start), math.sqrt(self.beta_end), num_steps, dtype=F64) ** 2


class SqrtSchedule(VPSchedule):
    """ᾱ(t) = 1 − √(t + s), s = 1e-4 (Li et al. 2022, Diffusion-LM, §4.2 and App. A)."""

    name = "sqrt"

    def __init__(self, s: float = 1e-4, min_alpha_bar: float = 1e-12):
        self.s, self.min_alpha_bar = s, min_alpha_bar

    def log_alpha_bar(self, t):
        t = _f64(t)
        return torch.log(torch.clamp(1 - torch.sqrt(t + self.s), min=self.min_alpha_bar))

    def betas(self, num_steps):
        return betas_for_alpha_bar(lambda t: torch.clamp(1 - torch.sqrt(t + self.s), min=0.0), num_steps)


class SigmoidSchedule(VPSchedule):
    """ᾱ(t) from a shifted sigmoid (Jabri et al. 2022, RIN; Chen 2023, "On the importance of noise
    scheduling", Alg. 1: start=−3, end=3, τ=1)."""

    name = "sigmoid"

    def __init__(self, start: float = -3.0, end: float = 3.0, tau: float = 1.0, min_alpha_bar: float = 1e-9):
        self.start, self.end, self.tau, self.min_alpha_bar = start, end, tau, min_alpha_bar

    def log_alpha_bar(self, t):
        t = _f64(t)
        v_start = torch.sigmoid(_f64(self.start / self.tau))
        v_end = torch.sigmoid(_f64(self.end / self.tau))
        out = (-torch.sigmoid((t * (self.end - self.start) + self.start) / self.tau) + v_end) / (v_end - v_start)
        return torch.log(torch.clamp(out, min=self.min_alpha_bar, max=1.0))


class PolynomialSchedule(VPSchedule):
    """ᾱ(t) = (1 − 2s)(1 − t^p)² + s, p = 2, s = 1e-5 (Hoogeboom et al. 2022, E(3) Equivariant
    Diffusion, App. B; their α_t² is our ᾱ)."""

    name = "polynomial"

    def __init__(self, power: float = 2.0, s: float = 1e-5):
        self.power, self.s = power, s

    def log_alpha_bar(self, t):
        t = _f64(t)
        return torch.log((1 - 2 * self.s) * (1 - t**self.power) ** 2 + self.s)


SCHEDULES: dict[str, type[VPSchedule]] = {
    cls.name: cls
    for cls in (LinearSchedule, CosineSchedule, QuadraticSchedule, SqrtSchedule, SigmoidSchedule, PolynomialSchedule)
}


def get_schedule(schedule: str | VPSchedule, **kwargs) -> VPSchedule:
    """Resolve a schedule by name (``linear``, ``cosine``, ``quadratic``, ``sqrt``, ``sigmoid``, ``polynomial``)."""
    if isinstance(schedule, VPSchedule):
        return schedule
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; expected one of {sorted(SCHEDULES)}")
    return SCHEDULES[schedule](**kwargs)
