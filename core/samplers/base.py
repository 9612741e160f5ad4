"""What every sampler shares: argument checks, float64 coefficients on the grid, the model call,
projection onto the space, replacement inpainting and the generator.

Samplers precompute their per-step coefficients once per call in float64 on the (G, N+1) grid
(G = 1 for a shared grid, G = batch for per-sample start times) and cast them once to x's dtype,
shaped (N+1, G, 1, …) so that a step costs only a few fused tensor operations.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import torch

from ..checks import check_finite, check_mask, check_same_shape
from ..errors import ConfigError, ShapeError
from ..parameterization import Prediction
from ..processes import GaussianProcess
from ..spaces import Euclidean, Space
from .grids import check_grid

Tensor = torch.Tensor
F64 = torch.float64


def _process_of(model, process: GaussianProcess | None) -> GaussianProcess:
    process = process if process is not None else getattr(model, "process", None)
    if not isinstance(process, GaussianProcess):
        raise ConfigError(
            "the sampler needs the forward process: pass process=… or give the model a `process` attribute "
            f"(got {type(process).__name__})"
        )
    return process


class Context:
    """Per-call sampler state. ``i`` indexes grid columns (0 = start, N = end)."""

    def __init__(
        self,
        model: Callable[..., Prediction],
        x_T: Tensor,
        grid,
        generator: torch.Generator | None = None,
        *,
        process: GaussianProcess | None = None,
        space: Space | None = None,
        cond: Mapping | None = None,
        presence: Tensor | None = None,
        known: Tensor | None = None,
        x_known: Tensor | None = None,
        info: dict | None = None,
    ):
        if not callable(model):
            raise ConfigError(f"model must be callable as model(x, t, cond) -> Prediction; got {type(model).__name__}")
        if not torch.is_tensor(x_T) or not x_T.is_floating_point() or x_T.ndim < 2:
            raise ShapeError(f"x_T must be a float tensor of shape (batch, ...); got {getattr(x_T, 'shape', type(x_T))}")
        check_finite(x_T, "x_T")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ConfigError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")
        self.model = model
        self.process = _process_of(model, process)
        self.space = space if space is not None else Euclidean()
        if not isinstance(self.space, Space):
            raise ConfigError(f"space must be a polydiff Space; got {type(self.space).__name__}")
        # A covering space (the torus) is integrated in its cover: states stay unwrapped during the loop so that
        # multistep solvers combine x̂_0 of one chart; the model sees projected states (see Space.lifted).
        self.lifted = bool(getattr(self.space, "lifted", False))
        self.cond = dict(cond or {})
        self.generator = generator
        self.x_shape, self.dtype, self.device = x_T.shape, x_T.dtype, x_T.device
        batch = x_T.shape[0]
        self.batch = batch
        self.presence = check_mask(presence, x_T, "presence")
        self.known = check_mask(known, x_T, "known")
        if (self.known is None) != (x_known is None):
            raise ShapeError("known and x_known must be given together (mask and the values it marks)")
        if x_known is not None:
            check_same_shape(x_known, x_T, "x_known", "x_T")
            check_finite(torch.where(self.known, x_known, torch.zeros_like(x_known)), "x_known (known entries)")
            self.x_known = torch.where(self.known, x_known, torch.zeros_like(x_known)).to(self.dtype)
        else:
            self.x_known = None
        self.grid = check_grid(grid, batch).to(self.device)  # (G, N+1)
        self.steps = self.grid.shape[1] - 1
        self.alpha, self.sigma = self.process.alpha_sigma(self.grid)
        if not (torch.isfinite(self.alpha).all() and torch.isfinite(self.sigma).all()):
            raise ConfigError("the process gives non-finite α or σ on this grid")
        # Model times per column, (batch,) float64 each.
        self.t_cols = self.columns(self.grid)
        self.info = info
        self.nfe = 0

    # -- coefficients -------------------------------------------------------------------------
    def columns(self, t: Tensor) -> Tensor:
        """(G, M) float64 times -> (M, batch) contiguous, so that row i is the model's (batch,) time."""
        return t.T.expand(t.shape[1], self.batch).contiguous()

    @staticmethod
    def any_per_step(mask: Tensor) -> list[bool]:
        """(G, M) bool -> M Python bools (one host sync instead of one per step)."""
        return mask.any(0).tolist()

    @staticmethod
    def all_per_step(mask: Tensor) -> list[bool]:
        return mask.all(0).tolist()

    def col(self, c: Tensor) -> Tensor:
        """A (G, M) float64 coefficient table -> (M, G, 1, …) in x's dtype, indexed by step."""
        c = c.to(self.device)
        return c.T.reshape(c.shape[1], c.shape[0], *([1] * (len(self.x_shape) - 1))).to(self.dtype)

    def per_sample(self, c: Tensor) -> Tensor:
        """A (G,) or (batch,) float64 vector -> (batch or 1, 1, …) in x's dtype."""
        return c.reshape(c.shape[0], *([1] * (len(self.x_shape) - 1))).to(self.device, self.dtype)

    @property
    def final_to_data(self) -> bool:
        """True when the grid ends at σ = 0 for every sample (the last step is a jump to the data)."""
        return bool((self.sigma[:, -1] == 0).all())

    # -- model, noise and constraints ---------------------------------------------------------
    def denoise(self, x: Tensor, t: Tensor) -> Prediction:
        self.nfe += 1
        x_in = self.space.project(x, self.presence) if self.lifted else x
        pred = self.model(x_in, t, self.cond)
        if not isinstance(pred, Prediction):
            raise ConfigError(f"model(x, t, cond) must return a polydiff Prediction; got {type(pred).__name__}")
        if self.lifted:  # x̂_0 back into the chart of the (unwrapped) state
            pred = dataclasses.replace(pred, x0=pred.x0 + (x - x_in))
        return pred

    def at(self, x: Tensor, i: int) -> Prediction:
        return self.denoise(x, self.t_cols[i])

    def noise(self) -> Tensor:
        return self.space.noise(self.x_shape, generator=self.generator, presence=self.presence,
                                device=self.device, dtype=self.dtype)

    def project(self, x: Tensor) -> Tensor:
        return self.space.project_step(x, self.presence) if self.lifted else self.space.project(x, self.presence)

    def replace_known(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """Replacement inpainting: known entries become a fresh draw of q(x_t | x_known) (Song et al. 2021,
        App. I.2; Lugmayr et al. 2022 without resampling). ``alpha``/``sigma`` broadcast against x."""
        if self.known is None:
            return x
        noisy = alpha * self.x_known + sigma * self.noise()
        return self.space.replace_known(x, noisy, self.known, self.presence)

    def start(self, x_T: Tensor) -> Tensor:
        x = x_T.to(self.dtype)
        if self.known is not None:
            a, s = self.col(self.alpha[:, :1])[0], self.col(self.sigma[:, :1])[0]
            x = self.replace_known(x, a, s)
        return self.project(x)

    def after_step(self, x: Tensor, i: int, a_col: Tensor | None = None, s_col: Tensor | None = None) -> Tensor:
        """Constraints after arriving at grid column i: inpainting replacement, then projection."""
        if self.known is not None:
            a = a_col[i] if a_col is not None else self.col(self.alpha[:, i:i + 1])[0]
            s = s_col[i] if s_col is not None else self.col(self.sigma[:, i:i + 1])[0]
            x = self.replace_known(x, a, s)
        return self.project(x)

    def finish(self, x: Tensor) -> Tensor:
        x = self.space.project(x, self.presence)
        if self.known is not None:
            x = self.space.finish_known(x, self.x_known, self.known, self.presence)
        if self.info is not None:
            self.info["nfe"] = self.nfe
        return x
