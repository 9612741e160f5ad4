"""State spaces: where x_t lives, how its noise is drawn, and how states are kept valid.

Processes, losses and samplers touch the geometry only through ``space.noise``
and ``space.project``, so a domain changes its geometry (angles on a torus,
centred point sets) or its noise (e.g. simplex noise) without touching the
engine. Masks are boolean tensors broadcastable to x; ``presence`` marks real
entries (False = padding).
"""

from __future__ import annotations

import math

import torch

from .checks import check_mask

Tensor = torch.Tensor


class NoiseField:
    """A zero-mean, unit-variance random field. Subclass it to replace Gaussian white noise."""

    def sample(self, shape, generator: torch.Generator | None = None, device=None, dtype=None) -> Tensor:
        raise NotImplementedError  # pragma: no cover - abstract


class GaussianNoise(NoiseField):
    """Independent N(0, 1) entries."""

    def sample(self, shape, generator=None, device=None, dtype=None):
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype or torch.get_default_dtype())

    def __repr__(self):
        return "GaussianNoise()"


class Space:
    """Euclidean base: noise from the noise field, projection = identity, padding kept at zero."""

    def __init__(self, noise: NoiseField | None = None):
        self.noise_field = noise or GaussianNoise()

    def noise(self, shape, generator=None, presence: Tensor | None = None, device=None, dtype=None) -> Tensor:
        eps = self.noise_field.sample(shape, generator=generator, device=device, dtype=dtype)
        return self.project(eps, presence, is_noise=True)

    def project(self, x: Tensor, presence: Tensor | None = None, is_noise: bool = False) -> Tensor:
        """Map a state (or, with ``is_noise``, a noise draw) back onto the space; padding is zeroed."""
        presence = check_mask(presence, x, "presence")
        return x if presence is None else x * presence

    def presence_weights(self, x: Tensor, presence: Tensor | None) -> Tensor:
        presence = check_mask(presence, x, "presence")
        return torch.ones_like(x) if presence is None else presence.expand_as(x).to(x.dtype)

    def degrees_of_freedom(self, x: Tensor, presence: Tensor | None = None) -> Tensor:
        """Number of free real coordinates per sample, shape (batch,) (for densities and bits/dim)."""
        return self.presence_weights(x, presence).flatten(1).sum(1)

    def entry_weights(self, x: Tensor) -> Tensor | None:
        """Loss weights broadcastable to x (a structured state's per-part weights), or None: all equal."""
        return None

    def __repr__(self):
        return f"{type(self).__name__}(noise={self.noise_field!r})"


class Euclidean(Space):
    """R^d with the noise field's noise (Gaussian by default)."""


class Torus(Space):
    """Angles on [−π, π)^d: states are wrapped after every step, so Gaussian noise becomes wrapped-normal
    noise (Wu et al. 2024, FoldingDiff, §3.2; Jing et al. 2022, torsional diffusion, §3)."""

    @staticmethod
    def wrap(x: Tensor) -> Tensor:
        return torch.remainder(x + math.pi, 2 * math.pi) - math.pi

    def project(self, x, presence=None, is_noise=False):
        x = x if is_noise else self.wrap(x)
        return super().project(x, presence)


class ZeroCenterOfMass(Space):
    """Point sets of shape (batch, nodes, dims) whose present nodes have zero mean.

    Noise and states are projected onto the zero-centre-of-mass subspace, which makes the
    distribution translation invariant (Hoogeboom et al. 2022, EDM for molecules, §3.2; Xu et
    al. 2022, GeoDiff). The subspace has (n − 1)·d degrees of freedom per item.
    """

    def __init__(self, noise: NoiseField | None = None, node_dim: int = 1):
        super().__init__(noise)
        self.node_dim = node_dim

    def _node_mask(self, x, presence):
        presence = check_mask(presence, x, "presence")
        if presence is None:
            return torch.ones_like(x)
        return presence.expand_as(x).to(x.dtype)

    def project(self, x, presence=None, is_noise=False):
        w = self._node_mask(x, presence)
        count = w.sum(self.node_dim, keepdim=True).clamp_min(1)
        mean = (x * w).sum(self.node_dim, keepdim=True) / count
        return (x - mean) * w

    def degrees_of_freedom(self, x, presence=None):
        w = self._node_mask(x, presence)
        per_feature = w.sum(self.node_dim)  # (batch, dims…): present nodes per coordinate
        return (per_feature - 1).clamp_min(0).flatten(1).sum(1)


SPACES = {"euclidean": Euclidean, "torus": Torus, "zero_com": ZeroCenterOfMass}
