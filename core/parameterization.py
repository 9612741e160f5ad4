"""The denoiser: a backbone plus the exact conversions between what it predicts and what samplers need.

For x_t = α x_0 + σ ε, every prediction target determines (x̂_0, ε̂):

* ``eps``   ε-prediction (Ho et al. 2020, Eq. 11): x̂_0 = (x − σ ε̂)/α.
* ``x0``    data prediction: ε̂ = (x − α x̂_0)/σ.
* ``v``     v = α ε − σ x_0 (Salimans & Ho 2022, §4): x̂_0 = (α x − σ v)/(α² + σ²),
            ε̂ = (σ x + α v)/(α² + σ²), exact for any α, σ (not only VP).
* ``score`` s = −ε/σ (Song et al. 2021): ε̂ = −σ s.
* ``flow``  velocity u = α' x_0 + σ' ε = dx_t/dt (Lipman et al. 2023; for rectified flow u = ε − x_0):
            solved as a 2×2 linear system with α', σ' from the process.
* ``edm``   EDM preconditioning (Karras et al. 2022, Eq. 7 and Table 1, σ_data = 0.5) applied to the
            VE-equivalent state x/α at noise σ/α: D = c_skip·x̃ + c_out·F(c_in·x̃; c_noise = ¼ ln σ̃).

The backbone is called as ``backbone(x, t, cond)`` with ``t`` of shape (batch,) — continuous time in
[0, 1], or ``c_noise`` for ``edm`` — and returns a tensor shaped like x (twice the channels, dim 1,
with ``learned_variance``). ``cond`` is a mapping; reserved keys: ``presence``, ``known``,
``observed`` (x_0 on known entries, zero elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from .checks import expand_like
from .errors import ConfigError, ShapeError
from .processes import GaussianProcess, _ddt

Tensor = torch.Tensor
PARAMETERIZATIONS = ("eps", "x0", "v", "score", "flow", "edm")


@dataclass
class Prediction:
    """What a denoiser says about x_0 and ε at (x_t, t). ``var_interp`` ∈ [−1, 1] is the learned-variance
    interpolation between log β and log β̃ (Nichol & Dhariwal 2021, Eq. 15), when the model has one."""

    x0: Tensor
    eps: Tensor
    var_interp: Tensor | None = None
    raw: Tensor | None = field(default=None, repr=False)


def coefficients(process: GaussianProcess, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """α(t), σ(t) reshaped to broadcast against x."""
    a, s = process.alpha_sigma(t)
    return expand_like(a, x), expand_like(s, x)


def to_prediction(kind: str, out: Tensor, x: Tensor, t: Tensor, process: GaussianProcess) -> Prediction:
    """Convert a raw model output of the given ``kind`` at (x, t) into (x̂_0, ε̂)."""
    a, s = coefficients(process, t, x)
    if kind == "eps":
        return Prediction(x0=(x - s * out) / a, eps=out, raw=out)
    if kind == "x0":
        return Prediction(x0=out, eps=(x - a * out) / s, raw=out)
    if kind == "v":
        norm = a * a + s * s
        return Prediction(x0=(a * x - s * out) / norm, eps=(s * x + a * out) / norm, raw=out)
    if kind == "score":
        eps = -s * out
        return Prediction(x0=(x - s * eps) / a, eps=eps, raw=out)
    if kind == "flow":
        da = expand_like(_ddt(process.alpha, t), x)
        ds = expand_like(_ddt(process.sigma, t), x)
        det = a * ds - s * da
        return Prediction(x0=(ds * x - s * out) / det, eps=(a * out - da * x) / det, raw=out)
    raise ConfigError(f"unknown parameterization {kind!r}; expected one of {PARAMETERIZATIONS}")


def target_for(kind: str, x0: Tensor, eps: Tensor, t: Tensor, process: GaussianProcess) -> Tensor:
    """The regression target of a parameterization, for training."""
    a, s = coefficients(process, t, x0)
    if kind == "eps":
        return eps
    if kind in ("x0", "edm"):
        return x0
    if kind == "v":
        return a * eps - s * x0
    if kind == "score":
        return -eps / s
    if kind == "flow":
        da = expand_like(_ddt(process.alpha, t), x0)
        ds = expand_like(_ddt(process.sigma, t), x0)
        return da * x0 + ds * eps
    raise ConfigError(f"unknown parameterization {kind!r}; expected one of {PARAMETERIZATIONS}")


class Denoiser(nn.Module):
    """Wraps a backbone network so that it predicts (x̂_0, ε̂) for any Gaussian process.

    Args:
        backbone: ``nn.Module`` called as ``backbone(x, t, cond)``.
        process: the forward process the model is trained for.
        parameterization: one of ``eps``, ``x0``, ``v``, ``score``, ``flow``, ``edm``.
        sigma_data: σ_data of EDM preconditioning (Karras et al. 2022, Table 1: 0.5).
        learned_variance: the backbone returns twice the channels (dim 1); the second half is the
            variance interpolation of improved DDPM (Nichol & Dhariwal 2021, Eq. 15).
    """

    def __init__(
        self,
        backbone: nn.Module,
        process: GaussianProcess,
        parameterization: str = "eps",
        sigma_data: float = 0.5,
        learned_variance: bool = False,
    ):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ConfigError(f"unknown parameterization {parameterization!r}; expected one of {PARAMETERIZATIONS}")
        self.backbone = backbone
        self.process = process
        self.parameterization = parameterization
        self.sigma_data = sigma_data
        self.learned_variance = learned_variance

    def forward(self, x: Tensor, t: Tensor, cond: Mapping[str, Tensor] | None = None) -> Prediction:
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ShapeError(f"t has shape {tuple(t.shape)}; expected ({x.shape[0]},) to match x")
        if self.parameterization == "edm":
            return self._edm(x, t, cond)
        out = self.backbone(x, t.to(x.dtype), cond)
        out, var_interp = self._split_variance(out, x)
        pred = to_prediction(self.parameterization, out, x, t, self.process)
        pred.var_interp = var_interp
        return pred

    predict = forward

    def _split_variance(self, out: Tensor, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if not self.learned_variance:
            if out.shape != x.shape:
                raise ShapeError(f"backbone output has shape {tuple(out.shape)}; expected {tuple(x.shape)} like x")
            return out, None
        if out.shape[1] != 2 * x.shape[1]:
            raise ShapeError(
                f"backbone output has {out.shape[1]} channels; learned_variance expects {2 * x.shape[1]} (2 × x's)"
            )
        mean, var = out.chunk(2, dim=1)
        return mean, var

    def _edm(self, x, t, cond):
        a, s = coefficients(self.process, t, x)
        x_ve, sig = x / a, s / a  # VE-equivalent state and noise level (Karras et al. 2022, Eq. 4)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sig**2 + sd2)
        c_out = sig * self.sigma_data / torch.sqrt(sig**2 + sd2)
        c_in = 1 / torch.sqrt(sig**2 + sd2)
        c_noise = torch.log(sig.flatten(1)[:, 0]) / 4
        out = self.backbone(c_in * x_ve, c_noise, cond)
        out, var_interp = self._split_variance(out, x)
        x0 = c_skip * x_ve + c_out * out
        return Prediction(x0=x0, eps=(x - a * x0) / s, var_interp=var_interp, raw=out)

    def edm_loss_weight(self, t: Tensor) -> Tensor:
        """λ(σ) = (σ² + σ_data²)/(σ σ_data)² (Karras et al. 2022, Eq. 8 and Table 1), σ the VE-equivalent level."""
        a, s = self.process.alpha_sigma(t)
        sig = s / a
        return (sig**2 + self.sigma_data**2) / (sig * self.sigma_data) ** 2
