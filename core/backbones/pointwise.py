"""Pointwise (kernel-size-1) 1-D convolution computed as a matrix product.

Many published networks (CSDI, SSSD, PointNet) mix channels with ``nn.Conv1d(cin, cout, 1)``. On CPU,
PyTorch runs such a convolution through its general im2col path, several times slower than the equivalent
``weight @ x``. :class:`Conv1x1` is a drop-in ``nn.Conv1d`` subclass (same parameters, initialisation and
state-dict keys, so official checkpoints load unchanged) whose forward is that matrix product.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


class Conv1x1(nn.Conv1d):
    """``nn.Conv1d(cin, cout, 1)`` on (batch, cin, L) → (batch, cout, L), computed as ``W x + b``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, bias: bool = True):
        if kernel_size != 1:
            raise ConfigError(f"Conv1x1 has kernel size 1, got {kernel_size}")
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(self.weight[:, :, 0], x)
        return y if self.bias is None else y + self.bias[:, None]

    def channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """The same layer on a channels-last tensor (..., cin) → (..., cout), for networks that keep
        their activations channels-last to avoid layout copies."""
        return torch.nn.functional.linear(x, self.weight[:, :, 0], self.bias)
