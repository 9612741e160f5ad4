"""Guidance wrappers. Each wraps a denoiser and is itself Denoiser-like: ``guided(x, t, cond) -> Prediction``
with a ``process`` attribute, so every sampler in :mod:`polydiff.samplers` accepts it unchanged.

* :class:`ClassifierFreeGuidance` (Ho & Salimans 2022) with the optional guidance rescale of Lin et al. 2024.
* :class:`ClassifierGuidance` from any differentiable log p(y | x_t, t) (Dhariwal & Nichol 2021, Alg. 2).

Both keep (x̂_0, ε̂) consistent with x_t = α x̂_0 + σ ε̂, so samplers that use either give the same answer.

Classifier-free guidance needs a model trained with condition dropout: :func:`drop_conditions` is that dropout
(what :class:`~polydiff.training.DiffusionModule` applies with ``cond_drop_prob``) and :func:`null_conditions`
the matching null condition ∅ that guided sampling passes as the unconditional input.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

from .checks import expand_like
from .errors import ConfigError, ShapeError
from .parameterization import Prediction

Tensor = torch.Tensor


def _x0_from_eps(x: Tensor, eps: Tensor, t: Tensor, process, fallback: Tensor) -> Tensor:
    """x̂_0 = (x − σ ε̂)/α, keeping ``fallback`` where α = 0 (no information about x_0 there)."""
    a, s = process.alpha_sigma(torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0]))
    ok = a > 0
    a_safe = torch.where(ok, a, torch.ones_like(a))
    x0 = (x - expand_like(s, x) * eps) / expand_like(a_safe, x)
    return torch.where(expand_like(ok, x).bool(), x0, fallback)


def drop_conditions(cond: Mapping[str, Tensor], p: float, num_classes: int | None,
                    generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Replace each sample's conditions by the null condition with probability ``p`` (Ho & Salimans 2022,
    classifier-free guidance, Alg. 1): integer labels by the null index ``num_classes``, float conditions
    by zeros; all condition keys of a sample are dropped together. Mask keys are never touched."""
    keys = [k for k in cond if k not in ("presence", "known", "observed")]
    if p <= 0 or not keys:
        return dict(cond)
    n = cond[keys[0]].shape[0]
    drop = torch.rand(n, generator=generator, device=generator.device if generator is not None else None) < p
    out = dict(cond)
    for k in keys:
        v = cond[k]
        d = drop.to(v.device).reshape(n, *([1] * (v.ndim - 1)))
        if v.is_floating_point():
            out[k] = torch.where(d, torch.zeros_like(v), v)
        else:
            if num_classes is None:
                raise ConfigError(f"cond_drop_prob > 0 with integer condition {k!r} needs num_classes (the null index)")
            out[k] = torch.where(d, torch.full_like(v, num_classes), v)
    return out


def null_conditions(cond: Mapping[str, Tensor], num_classes: int | None) -> dict[str, Tensor]:
    """The null condition ∅ of classifier-free guidance for every sample (see :func:`drop_conditions`)."""
    out = {}
    for k, v in cond.items():
        if k in ("presence", "known", "observed"):
            out[k] = v
        elif v.is_floating_point():
            out[k] = torch.zeros_like(v)
        elif num_classes is None:
            raise ConfigError(f"guidance with integer condition {k!r} needs num_classes (the null index)")
        else:
            out[k] = torch.full_like(v, num_classes)
    return out


class ClassifierFreeGuidance(nn.Module):
    """Classifier-free guidance (Ho & Salimans 2022, Eq. 6) with scale ``w`` in the convention
    ε̃ = ε_u + w (ε_c − ε_u): w = 1 is the conditional model, w = 0 the unconditional one (Ho & Salimans'
    w_HS corresponds to w = 1 + w_HS; this is the "guidance_scale" of Stable Diffusion / diffusers).

    Args:
        model: the conditional denoiser (trained with condition dropout).
        scale: guidance scale w.
        null_cond: how to make the unconditional ``cond``: a mapping whose entries replace those of ``cond``
            (0-d tensors and Python numbers are broadcast to the batch, e.g. ``{"label": num_classes}``), or a
            callable ``cond -> cond_uncond``.
        rescale: guidance rescale φ ∈ [0, 1] (Lin et al. 2024, "Common diffusion noise schedules and sample steps
            are flawed", Eq. 15-16): ε_r = ε̃ · std(ε_c)/std(ε̃) per sample, then φ ε_r + (1 − φ) ε̃. The paper
            states it for its v-prediction output; as in diffusers' implementation we apply it to ε̂ (0 = off,
            the paper recommends 0.7).
        batched: evaluate conditional and unconditional passes as one batch of 2·batch (when every cond value
            is a tensor with the batch as first dimension); otherwise two calls.
    """

    def __init__(self, model: Callable[..., Prediction], scale: float,
                 null_cond: Mapping | Callable[[Mapping], Mapping], rescale: float = 0.0, batched: bool = True):
        super().__init__()
        if not 0.0 <= rescale <= 1.0:
            raise ConfigError(f"rescale must lie in [0, 1]; got {rescale}")
        if not (callable(null_cond) or isinstance(null_cond, Mapping)):
            raise ConfigError(f"null_cond must be a mapping or a callable; got {type(null_cond).__name__}")
        self.model, self.scale, self.null_cond, self.rescale, self.batched = model, float(scale), null_cond, rescale, batched

    @property
    def process(self):
        return self.model.process

    def _uncond(self, cond: Mapping, batch: int, device) -> dict:
        out = dict(cond)  # entries the null condition does not name (e.g. presence, known) stay as they are
        if callable(self.null_cond) and not isinstance(self.null_cond, Mapping):
            out.update(self.null_cond(dict(cond)))
            return out
        for k, v in self.null_cond.items():
            v = torch.as_tensor(v, device=device)
            out[k] = v.expand(batch).clone() if v.ndim == 0 else v
        return out

    def forward(self, x: Tensor, t: Tensor, cond: Mapping | None = None) -> Prediction:
        cond = dict(cond or {})
        b = x.shape[0]
        ucond = self._uncond(cond, b, x.device)
        stackable = self.batched and set(ucond) == set(cond) and all(
            torch.is_tensor(cond[k]) and torch.is_tensor(ucond[k]) and cond[k].ndim > 0 and cond[k].shape[0] == b
            and ucond[k].shape == cond[k].shape for k in cond
        )
        if stackable:
            both = {k: torch.cat([cond[k], ucond[k]]) for k in cond}
            t2 = torch.as_tensor(t).expand(b)
            p = self.model(torch.cat([x, x]), torch.cat([t2, t2]), both)
            eps_c, eps_u = p.eps[:b], p.eps[b:]
            x0_c, x0_u = p.x0[:b], p.x0[b:]
            var = None if p.var_interp is None else p.var_interp[:b]
        else:
            pc, pu = self.model(x, t, cond), self.model(x, t, ucond)
            eps_c, eps_u, x0_c, x0_u, var = pc.eps, pu.eps, pc.x0, pu.x0, pc.var_interp
        w = self.scale
        eps = eps_u + w * (eps_c - eps_u)
        x0 = x0_u + w * (x0_c - x0_u)  # the same affine combination keeps x = α x̂0 + σ ε̂
        if self.rescale > 0:
            dims = tuple(range(1, x.ndim))
            std_c = eps_c.std(dim=dims, keepdim=True)
            std_g = eps.std(dim=dims, keepdim=True).clamp_min(1e-12)
            eps = self.rescale * eps * (std_c / std_g) + (1 - self.rescale) * eps
            x0 = _x0_from_eps(x, eps, t, self.process, x0)
        return Prediction(x0=x0, eps=eps, var_interp=var)


class ClassifierGuidance(nn.Module):
    """Classifier guidance (Dhariwal & Nichol 2021, Alg. 2 in ε form; Eq. 14):
    ε̃ = ε̂ − s·σ_t ∇_x log p(y | x_t, t), and x̂_0 = (x − σ ε̃)/α accordingly.

    Args:
        model: the denoiser.
        log_prob: differentiable ``log_prob(x, t, cond) -> (batch,)`` (or a scalar sum) tensor, e.g. a noisy
            classifier's log-softmax at the target labels taken from ``cond``.
        scale: gradient scale s (Dhariwal & Nichol use s = 1 … 10).
    """

    def __init__(self, model: Callable[..., Prediction], log_prob: Callable[..., Tensor], scale: float = 1.0):
        super().__init__()
        if not callable(log_prob):
            raise ConfigError(f"log_prob must be callable as log_prob(x, t, cond); got {type(log_prob).__name__}")
        self.model, self.log_prob, self.scale = model, log_prob, float(scale)

    @property
    def process(self):
        return self.model.process

    def forward(self, x: Tensor, t: Tensor, cond: Mapping | None = None) -> Prediction:
        pred = self.model(x, t, cond)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            lp = self.log_prob(xg, t, cond)
            if lp.ndim > 1 or (lp.ndim == 1 and lp.shape[0] != x.shape[0]):
                raise ShapeError(f"log_prob returned shape {tuple(lp.shape)}; expected ({x.shape[0]},) or a scalar")
            (grad,) = torch.autograd.grad(lp.sum(), xg)
        _, s = self.process.alpha_sigma(torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0]))
        eps = pred.eps - self.scale * expand_like(s, x) * grad.to(x.dtype)
        x0 = _x0_from_eps(x, eps, t, self.process, pred.x0)
        return Prediction(x0=x0, eps=eps, var_interp=pred.var_interp)


__all__ = ["ClassifierFreeGuidance", "ClassifierGuidance"]
