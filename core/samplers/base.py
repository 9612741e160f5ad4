"""What every sampler shares: argument checks, float64 coefficients on the grid, the model call (with
x̂₀ clipping/thresholding), projection onto the space, known entries (replacement or condition-only), the
per-step callback and progress bar, and the generator.

A sampler written on :class:`Context` (built-in or registered by a plugin) gets every hook by passing its
``**common`` keyword arguments on and calling :meth:`Context.denoise`/:meth:`Context.at` for the model,
:meth:`Context.start`, :meth:`Context.after_step` + :meth:`Context.end_step` per step and
:meth:`Context.finish`.

Samplers precompute their per-step coefficients once per call in float64 on the (G, N+1) grid
(G = 1 for a shared grid, G = batch for per-sample start times) and cast them once to x's dtype,
shaped (N+1, G, 1, …) so that a step costs only a few fused tensor operations.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Callable, Mapping

import torch

from ..checks import check_finite, check_mask, check_same_shape
from ..errors import ConfigError, ShapeError
from ..parameterization import Prediction
from ..processes import GaussianProcess
from ..spaces import Euclidean, Space
from .cache import cached
from .grids import check_grid

Tensor = torch.Tensor
F64 = torch.float64
KNOWN_MODES = ("replace", "condition")
#: ``progress=None`` shows a bar when a sampler has at least this many steps and stderr is a terminal.
PROGRESS_MIN_STEPS = 100


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
        known_mode: str = "replace",
        clip_x0: float | None = None,
        dynamic_threshold: float | None = None,
        threshold_max: float | None = None,
        x0_fn: Callable[[Tensor], Tensor] | None = None,
        callback: Callable[[dict], Tensor | None] | None = None,
        progress: bool | None = None,
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
        grid = check_grid(grid, batch)  # (G, N+1)
        # Coefficients of a shared grid are cached per (process, grid values, dtype, device, x.ndim).
        self._key = None
        if grid.shape[0] == 1:
            self._key = (grid.cpu().numpy().tobytes(), str(self.device), self.dtype, x_T.ndim)
        self.grid = grid.to(self.device)
        self.steps = self.grid.shape[1] - 1
        self.alpha, self.sigma = self.cached("alpha_sigma", (), self._alpha_sigma)
        # Model times per column, (batch,) float64 each.
        self.t_cols = self.columns(self.grid)
        self.info = info
        self.nfe = 0
        self.last: Prediction | None = None  # the latest model prediction
        if known_mode not in KNOWN_MODES:
            raise ConfigError(f"known_mode must be one of {KNOWN_MODES}; got {known_mode!r}")
        # Condition-only: known entries reach the model through cond["known"/"observed"] but x is never replaced.
        self.replace = self.known is not None and known_mode == "replace"
        self._set_clipping(clip_x0, dynamic_threshold, threshold_max)
        if x0_fn is not None and not callable(x0_fn):
            raise ConfigError(f"x0_fn must be callable as x0_fn(x0) -> Tensor shaped like x0; "
                              f"got {type(x0_fn).__name__}")
        self.x0_fn = x0_fn
        if callback is not None and not callable(callback):
            raise ConfigError(f"callback must be callable as callback(dict) -> Tensor | None; got {type(callback).__name__}")
        self.callback = callback
        if progress is None:
            progress = self.steps >= PROGRESS_MIN_STEPS and sys.stderr.isatty()
        self._bar = _Progress(self.steps) if progress else None
        self._hooks = callback is not None or self._bar is not None

    def _set_clipping(self, clip_x0, dynamic_threshold, threshold_max):
        if clip_x0 is not None and not (isinstance(clip_x0, (int, float)) and clip_x0 > 0):
            raise ConfigError(f"clip_x0 must be a positive number c (x̂₀ clipped to [-c, c]) or None; got {clip_x0!r}")
        if dynamic_threshold is not None and not (isinstance(dynamic_threshold, (int, float))
                                                  and 0 < dynamic_threshold <= 1):
            raise ConfigError(f"dynamic_threshold must be a percentile p in (0, 1] (Imagen: 0.995) or None; "
                              f"got {dynamic_threshold!r}")
        if threshold_max is not None and not (isinstance(threshold_max, (int, float)) and threshold_max >= 1):
            raise ConfigError(f"threshold_max must be a number ≥ 1 or None; got {threshold_max!r}")
        if threshold_max is not None and dynamic_threshold is None:
            raise ConfigError("threshold_max needs dynamic_threshold (it caps the dynamic threshold s)")
        self.clip_x0 = None if clip_x0 is None else float(clip_x0)
        self.dynamic_threshold = None if dynamic_threshold is None else float(dynamic_threshold)
        self.threshold_max = math.inf if threshold_max is None else float(threshold_max)
        self._clips = self.clip_x0 is not None or self.dynamic_threshold is not None

    # -- coefficients -------------------------------------------------------------------------
    def _alpha_sigma(self):
        alpha, sigma = self.process.alpha_sigma(self.grid)
        if not torch.isfinite(alpha + sigma).all():  # a sum is finite only where both terms are
            raise ConfigError("the process gives non-finite α or σ on this grid")
        return alpha, sigma

    def cached(self, tag: str, options, build: Callable):
        """``build()`` — a sampler's per-step coefficient tables — computed once per (process, grid, dtype,
        device, x.ndim, tag, options) for a shared grid; per-sample grids build every time. The returned
        tensors are shared between calls: never modify them in place."""
        if self._key is None:
            return build()
        return cached(self.process, tag, (options, self._key), build)

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
        """One model call at (x, t) with t of shape (batch,), with x̂₀ clipping/thresholding when asked."""
        self.nfe += 1
        x_in = self.space.project(x, self.presence) if self.lifted else x
        pred = self.model(x_in, t, self.cond)
        if not isinstance(pred, Prediction):
            raise ConfigError(f"model(x, t, cond) must return a polydiff Prediction; got {type(pred).__name__}")
        if self.lifted:  # x̂_0 back into the chart of the (unwrapped) state
            pred = dataclasses.replace(pred, x0=pred.x0 + (x - x_in))
        if self._clips or self.x0_fn is not None:
            pred = self.clip_prediction(pred, x, t)
        self.last = pred
        return pred

    def clip_prediction(self, pred: Prediction, x: Tensor, t: Tensor) -> Prediction:
        """Clip x̂₀ and recompute ε̂ = (x − α x̂₀)/σ from it, so that x = α x̂₀ + σ ε̂ still holds (as diffusers'
        ``clip_sample``/``thresholding``). Dynamic thresholding (Saharia et al. 2022, Imagen, §2.3 and App. E):
        s = clamp(percentile_p(|x̂₀|), 1, threshold_max) per sample, x̂₀ ← clip(x̂₀, −s, s)/s; static
        clipping: x̂₀ ← clip(x̂₀, −c, c), applied after thresholding when both are given; then ``x0_fn`` (any map
        of x̂₀ onto the data, e.g. Diffusion-LM's clamping to the nearest word embedding, Li et al. 2022 §4.2).
        ε̂ is kept where σ = 0."""
        x0 = pred.x0
        if self.dynamic_threshold is not None:
            flat = x0.reshape(x0.shape[0], -1).abs()
            q = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
            s = torch.quantile(q, self.dynamic_threshold, dim=1).clamp(1.0, self.threshold_max).to(x0.dtype)
            s = s.reshape(-1, *([1] * (x0.ndim - 1)))
            x0 = torch.maximum(torch.minimum(x0, s), -s) / s
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
        if self.x0_fn is not None:
            mapped = self.x0_fn(x0)
            if not torch.is_tensor(mapped) or mapped.shape != x0.shape:
                raise ShapeError(f"x0_fn returned {getattr(mapped, 'shape', type(mapped))}; expected a tensor of "
                                 f"shape {tuple(x0.shape)} like x̂₀")
            x0 = mapped.to(x0.dtype)
        a, s = self.process.alpha_sigma(torch.as_tensor(t, dtype=F64, device=self.device).expand(x.shape[0]))
        shape = (-1,) + (1,) * (x.ndim - 1)
        pos = (s > 0).reshape(shape)
        a = a.reshape(shape).to(x.dtype)
        s = torch.where(pos, s.reshape(shape), torch.ones_like(s.reshape(shape))).to(x.dtype)
        eps = torch.where(pos, (x - a * x0) / s, pred.eps)
        return Prediction(x0=x0, eps=eps, var_interp=pred.var_interp, raw=pred.raw)

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
        if not self.replace:
            return x
        noisy = alpha * self.x_known + sigma * self.noise()
        return self.space.replace_known(x, noisy, self.known, self.presence)

    def start(self, x_T: Tensor) -> Tensor:
        x = x_T.to(self.dtype)
        if self.replace:
            a, s = self.col(self.alpha[:, :1])[0], self.col(self.sigma[:, :1])[0]
            x = self.replace_known(x, a, s)
        return self.project(x)

    def after_step(self, x: Tensor, i: int, a_col: Tensor | None = None, s_col: Tensor | None = None) -> Tensor:
        """Constraints after arriving at grid column i: inpainting replacement, then projection."""
        if self.replace:
            a = a_col[i] if a_col is not None else self.col(self.alpha[:, i:i + 1])[0]
            s = s_col[i] if s_col is not None else self.col(self.sigma[:, i:i + 1])[0]
            x = self.replace_known(x, a, s)
        return self.project(x)

    def end_step(self, x: Tensor, i: int, denoised: Tensor | None = None, t: Tensor | None = None) -> Tensor:
        """After step ``i`` (0-based) has produced x, already replaced/projected, at grid column i + 1 (or at
        the per-sample times ``t``, (batch,) float64, for the adaptive solvers): advance the progress bar and
        call the callback, whose returned tensor (if any) replaces x. ``denoised`` is the x̂₀ the step used
        (default: that of the latest model call)."""
        if not self._hooks:
            return x
        if self._bar is not None:
            self._bar.advance()
        if self.callback is None:
            return x
        if t is None:
            t = self.t_cols[i + 1]
            a = self.alpha[:, i + 1].expand(self.batch)
            s = self.sigma[:, i + 1].expand(self.batch)
        else:
            a, s = self.process.alpha_sigma(t)
        if denoised is None:
            denoised = self.last.x0 if self.last is not None else None
        out = self.callback({"x": x, "i": i, "t": t, "alpha": a, "sigma": s, "denoised": denoised,
                             "steps": self.steps})
        if out is None:
            return x
        if not torch.is_tensor(out) or out.shape != x.shape:
            raise ShapeError(f"callback returned {getattr(out, 'shape', type(out).__name__)}; expected None or a "
                             f"tensor of shape {tuple(x.shape)} (the replacement x)")
        return out.to(self.dtype)

    def adaptive_progress(self) -> None:
        """For solvers whose step count is not known in advance: the bar counts steps without a total."""
        if self._bar is not None:
            self._bar.unbounded()

    def finish(self, x: Tensor) -> Tensor:
        x = self.space.project(x, self.presence)
        if self.known is not None:
            x = self.space.finish_known(x, self.x_known, self.known, self.presence)
        if self.info is not None:
            self.info["nfe"] = self.nfe
        if self._bar is not None:
            self._bar.close()
        return x


class _Progress:
    """A rich progress bar on stderr, refreshed by hand (no background thread)."""

    def __init__(self, total: int):
        from rich.console import Console
        from rich.progress import Progress

        self._p = Progress(console=Console(stderr=True), auto_refresh=False, transient=True)
        self._task = self._p.add_task("sampling", total=total)
        self._p.start()

    def unbounded(self):
        self._p.update(self._task, total=None)

    def advance(self):
        self._p.advance(self._task)
        self._p.refresh()

    def close(self):
        self._p.stop()
