"""Time grids for sampling: decreasing float64 times ``t_0 > t_1 > … > t_N`` in [0, 1].

A grid of shape (N+1,) is shared by the whole batch; a grid of shape (batch, N+1) gives every sample
its own times (partial diffusion / SDEdit start times, Meng et al. 2022). Every sampler takes N steps
from ``t_0`` to ``t_N``. Kinds:

* ``uniform``   t uniform on [t_end, t_start] (Song et al. 2021; DDIM "linear" skip, Song et al. 2021b §D.2).
* ``leading``, ``trailing``, ``linspace``  the timestep spacings of Lin et al. 2024 ("Common diffusion noise
  schedules and sample steps are flawed", Table 2) on the T-step grid of a discrete process
  (timestep respacing, Nichol & Dhariwal 2021 §4), followed by t = 0 (diffusers' ``set_alpha_to_one`` /
  final σ = 0). Index k of a 0-based diffusers timestep is t = (k+1)/T.
* ``karras``    uniform in σ̃^{1/ρ} with σ̃ = σ/α the VE-equivalent noise level (Karras et al. 2022, Eq. 5, ρ = 7),
  mapped back with ``process.t_from_sigma_ratio``.
* ``log_snr``   uniform in λ = log(α²/σ²) (Lu et al. 2022, DPM-Solver §3.3 "logSNR" step size schedule).

For ``karras`` and ``log_snr``, when σ(t_end) = 0 (data end of VP, sub-VP, rectified flow) the spacing runs
to the smallest positive noise level of the process (``process.t_min``; σ̃ = 0.002 of EDM if that has
σ = 0 too) and the grid ends with a final step to ``t_end``, as in Karras et al. Alg. 1 (σ_N = 0).

Grids with a scalar ``t_start`` are cached per process (:mod:`.cache`).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, ShapeError
from ..processes import GaussianProcess
from .cache import cached

Tensor = torch.Tensor
F64 = torch.float64
GRIDS = ("uniform", "leading", "trailing", "linspace", "karras", "log_snr")
#: σ̃_min of Karras et al. 2022 (Table 1), the floor of a grid whose process has σ = 0 at t_min.
KARRAS_SIGMA_MIN = 0.002


def _positive_floor(process: GaussianProcess, lam_t_min: float | None = None) -> tuple[float, float]:
    """(time, log-SNR) of the smallest positive noise level a grid should reach before a final step to σ = 0:
    ``process.t_min``, or σ̃ = 0.002 of EDM where σ(t_min) = 0. ``lam_t_min``: the log-SNR at t_min when the caller
    has it."""
    t_min = float(process.t_min)
    if lam_t_min is None:
        lam_t_min = float(process.log_snr(torch.tensor([t_min], dtype=F64))[0])
    if t_min > 0 and lam_t_min < math.inf:
        return t_min, lam_t_min
    t = float(process.t_from_sigma_ratio(torch.tensor([KARRAS_SIGMA_MIN], dtype=F64))[0])
    return t, -2 * math.log(KARRAS_SIGMA_MIN)


def _as_start(t_start, batch) -> tuple[list[float], bool]:
    """The start time(s) as Python floats (a scalar is checked without tensor work) and whether per sample."""
    if isinstance(t_start, (int, float)) and not isinstance(t_start, bool):
        return [float(t_start)], False
    t = torch.as_tensor(t_start, dtype=F64)
    if t.ndim > 1:
        raise ShapeError(f"t_start has shape {tuple(t.shape)}; expected a float or a (batch,) tensor")
    if t.numel() == 0:
        raise ShapeError("t_start is empty; expected a float or a (batch,) tensor")
    if t.ndim == 1 and batch is not None and t.shape[0] != batch:
        raise ShapeError(f"t_start has shape {tuple(t.shape)}; expected ({batch},)")
    return t.reshape(-1).tolist(), t.ndim == 1


def _discrete_timesteps(kind: str, steps: int, last: int, offset: int) -> Tensor:
    """0-based training timesteps of Lin et al. 2024 Table 2 on the range [0, last) (last = T·t_start)."""
    if kind == "leading":
        ratio = last // steps
        if ratio < 1:
            raise ConfigError(f"steps={steps} exceeds the {last} training steps available for a 'leading' grid")
        ts = torch.arange(steps, dtype=F64).flip(0) * ratio + offset
    elif kind == "trailing":
        ts = torch.round(torch.arange(last, 0, -last / steps, dtype=F64))[:steps] - 1
    else:  # linspace
        ts = torch.round(torch.linspace(0, last - 1, steps, dtype=F64)).flip(0)
    return ts


def make_grid(
    process: GaussianProcess,
    steps: int,
    kind: str = "uniform",
    *,
    t_start: float | Tensor = 1.0,
    t_end: float = 0.0,
    rho: float = 7.0,
    offset: int = 0,
    batch: int | None = None,
    sigma_min: float | None = None,
) -> Tensor:
    """A decreasing float64 grid of ``steps + 1`` times from ``t_start`` to ``t_end``.

    Args:
        process: the forward process (its σ/α and, for discrete spacings, ``num_steps``).
        steps: number of sampler steps N ≥ 1.
        kind: one of ``uniform``, ``leading``, ``trailing``, ``linspace``, ``karras``, ``log_snr``.
        t_start: start time, or a (batch,) tensor of per-sample start times (then the grid is (batch, N+1)).
        t_end: end time (0 = data).
        rho: ρ of the Karras grid (Karras et al. 2022, Eq. 5: 7).
        offset: ``steps_offset`` added to ``leading`` timesteps (Stable Diffusion uses 1).
        batch: expected batch size for a per-sample ``t_start`` (checked when given).
        sigma_min: for ``karras``/``log_snr`` ending at σ = 0: the smallest positive VE-equivalent level σ̃ before
            the final jump (default: that of ``process.t_min``; Karras et al. 2022 use σ_min = 0.002).
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    if kind not in GRIDS:
        raise ConfigError(f"unknown grid {kind!r}; expected one of {list(GRIDS)}")
    starts, per_sample = _as_start(t_start, batch)
    if not all(0.0 <= s <= 1.0 for s in starts):  # also false for NaN
        raise ShapeError(f"t_start must lie in [0, 1]; got values in [{min(starts):.4g}, {max(starts):.4g}]")
    t_end = float(t_end)
    if not 0.0 <= t_end < min(starts):
        raise ShapeError(f"t_end={t_end} must lie in [0, t_start) with t_start={min(starts):.4g}")
    if per_sample:
        return torch.stack([_row(process, steps, kind, s, t_end, rho, offset, sigma_min) for s in starts])
    t0 = starts[0]
    key = (kind, steps, t0, t_end, float(rho), int(offset), None if sigma_min is None else float(sigma_min))
    # A second call with the same arguments builds nothing (see .cache); a copy keeps the cached grid intact.
    return cached(process, "grid", key, lambda: _row(process, steps, kind, t0, t_end, rho, offset, sigma_min)).clone()


def _row(process, steps, kind, t0, t_end, rho, offset, sigma_min=None) -> Tensor:
    if kind == "uniform":
        return torch.linspace(t0, t_end, steps + 1, dtype=F64)
    if kind in ("leading", "trailing", "linspace"):
        T = process.num_steps
        if T is None:
            raise ConfigError(f"grid {kind!r} needs a discrete process (num_steps=T); got {process!r}")
        last = int(round(t0 * T))
        ts = _discrete_timesteps(kind, steps, last, offset)
        row = torch.cat([(ts + 1) / T, torch.tensor([t_end], dtype=F64)])
        if not (row[:-1] > row[1:]).all():
            raise ConfigError(f"steps={steps} is too many for a {kind!r} grid over {last} training steps")
        return row
    # karras / log_snr: spacing in a noise coordinate, mapped back through the process. One log-SNR evaluation
    # gives the ends and the floor: σ = 0 ⇔ λ = +inf, σ̃ = σ/α = exp(−λ/2).
    lam = process.log_snr(torch.tensor([t0, t_end, float(process.t_min)], dtype=F64)).tolist()
    tail = lam[1] == math.inf
    if tail and sigma_min is not None:
        if not sigma_min > 0:
            raise ConfigError(f"sigma_min must be > 0, got {sigma_min}")
        t_lo = float(process.t_from_sigma_ratio(torch.tensor([float(sigma_min)], dtype=F64))[0])
        lam_lo = -2 * math.log(sigma_min)
    elif tail:
        t_lo, lam_lo = _positive_floor(process, lam[2])
    else:
        t_lo, lam_lo = t_end, lam[1]
    if tail and not t_lo < t0:
        raise ConfigError(f"t_start={t0} lies below the smallest positive noise level t={t_lo:.4g}")
    n = steps if tail else steps + 1
    if n < 2:
        raise ConfigError(f"grid {kind!r} ending at σ=0 needs steps ≥ 2, got {steps}")
    if not (math.isfinite(lam[0]) and math.isfinite(lam_lo)):
        what = "σ/α" if kind == "karras" else "log-SNR"
        why = " (α = 0 there: zero terminal SNR)" if lam[0] == -math.inf else ""
        raise ConfigError(f"grid {kind!r} needs a finite {what} at t_start={t0} and t={t_lo:.4g}{why}")
    if kind == "karras":
        hi_r, lo_r = math.exp(-lam[0] / (2 * rho)), math.exp(-lam_lo / (2 * rho))
        sigmas = (hi_r + torch.linspace(0, 1, n, dtype=F64) * (lo_r - hi_r)) ** rho
        inner = process.t_from_sigma_ratio(sigmas)
    else:
        inner = process.t_from_log_snr(torch.linspace(lam[0], lam_lo, n, dtype=F64))
    inner = inner.clamp(0.0, 1.0)
    inner[0], inner[-1] = t0, t_lo  # exact end points (no round-off from the inverse map)
    row = torch.cat([inner, torch.tensor([t_end], dtype=F64)]) if tail else inner
    if not (row[:-1] > row[1:]).all():
        raise ConfigError(f"grid {kind!r} with steps={steps} is not strictly decreasing (too many steps?)")
    return row


def check_grid(grid, batch: int | None = None, name: str = "grid") -> Tensor:
    """Validate a time grid: float, finite, in [0, 1], strictly decreasing, shape (N+1,) or (batch, N+1), N ≥ 1.

    Returns it as float64 of shape (1, N+1) (shared) or (batch, N+1) (per sample).
    """
    if not torch.is_tensor(grid):
        grid = torch.as_tensor(grid, dtype=F64)
    if grid.is_complex() or not (grid.is_floating_point()):
        raise ShapeError(f"{name} must be a float tensor of times; got dtype {grid.dtype}")
    grid = grid.to(F64)
    if grid.ndim == 1:
        grid = grid[None]
    elif grid.ndim != 2 or (batch is not None and grid.shape[0] not in (1, batch)):
        raise ShapeError(f"{name} has shape {tuple(grid.shape)}; expected (N+1,) or ({batch if batch else 'batch'}, N+1)")
    if grid.shape[1] < 2:
        raise ShapeError(f"{name} has {grid.shape[1]} time(s); expected at least 2 (N+1 with N ≥ 1 steps)")
    if not torch.isfinite(grid).all():
        raise ShapeError(f"{name} contains non-finite times; expected finite values in [0, 1]")
    if grid.min() < 0 or grid.max() > 1:
        raise ShapeError(f"{name} has times in [{grid.min():.4g}, {grid.max():.4g}]; expected times inside [0, 1]")
    if not (grid[:, :-1] > grid[:, 1:]).all():
        raise ShapeError(f"{name} must be strictly decreasing along its last dimension (from noise to data)")
    return grid


def sigma_floor_time(process: GaussianProcess) -> float:
    """Public alias of the smallest positive-noise time used by grids and adaptive solvers."""
    return _positive_floor(process)[0]


__all__ = ["GRIDS", "make_grid", "check_grid", "sigma_floor_time"]
