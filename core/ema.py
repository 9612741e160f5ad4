"""Exponential moving average of a model's weights (:class:`EMA`), the copy that validation, sampling and
evaluation use and that checkpoints keep beside the trained weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import ConfigError, ShapeError


class EMA(nn.Module):
    """Exponential moving average of a module's parameters (buffers are copied).

    θ_ema ← d θ_ema + (1 − d) θ with d = min(decay, (1 + n)/(10 + n)) after n updates when ``warmup`` is on
    (the warm-up of TensorFlow's ExponentialMovingAverage with ``num_updates``, which lets short runs use the
    paper decay). Ho et al. 2020 (§4) and Song et al. 2021 (App. D) use decay 0.9999.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).requires_grad_(False).eval()
        self.decay, self.warmup = decay, warmup
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        n = int(self.num_updates)
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = self.current_decay()
        ema_p = [p for p in self.module.parameters()]
        new_p = [p.detach() for p in model.parameters()]
        if len(ema_p) != len(new_p):
            raise ShapeError("EMA and model have different parameter lists")
        torch._foreach_lerp_(ema_p, new_p, 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)

    def train(self, mode: bool = True):  # the averaged copy is always in eval mode
        super().train(mode)
        self.module.eval()
        return self
