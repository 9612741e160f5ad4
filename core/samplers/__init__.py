"""Samplers: stateless functions ``sampler(model, x_T, grid, generator=None, **options) -> x_0``.

``model(x, t, cond) -> Prediction`` is a :class:`polydiff.Denoiser` (or anything with its call signature and
a ``process`` attribute, e.g. :class:`polydiff.testing.ExactDenoiser` or a guidance wrapper). ``grid`` is a
decreasing float64 time grid, (N+1,) or (batch, N+1) for per-sample start times (see :mod:`.grids`).
Every sampler also accepts ``process``, ``space``, ``cond``, ``presence``, ``known``, ``x_known``,
``known_mode``, ``info``, ``clip_x0``, ``dynamic_threshold``, ``threshold_max``, ``x0_fn``, ``callback`` and
``progress`` and honours them in the same way through :class:`Context` (public, for samplers registered by plugins). :func:`sample` is the one-call
entry point; :data:`SAMPLERS` maps names to functions; :func:`ddim_invert` encodes data to x_t (DDIM run
forwards), decoded by ``sample(..., sampler="ddim", x_T=x_t, t_start=t)``. Grids and per-step coefficients
are cached per process (:func:`cache_info`, :func:`clear_cache`). :func:`optimize_grid` fits a sampler's time grid
to a model from its own teacher trajectories (GITS, Chen et al. 2024).
"""

from .adaptive import ode_adaptive, sde_adaptive
from .api import DETERMINISTIC, SAMPLERS, get_sampler, sample
from .base import Context
from .cache import cache_info, clear_cache
from .dpm_solver import dpmpp_2m, dpmpp_3m, dpmpp_sde
from .first_order import ddim, ddpm, euler, heun
from .grids import GRIDS, check_grid, make_grid
from .inversion import ddim_invert
from .pndm import pndm
from .schedule import optimize_grid
from .sde import annealed_langevin, euler_maruyama, pc
from .unipc import unipc

__all__ = [
    "sample", "SAMPLERS", "Context", "ddim_invert", "cache_info", "clear_cache", "DETERMINISTIC", "get_sampler", "make_grid", "check_grid", "GRIDS", "optimize_grid",
    "ddpm", "ddim", "pndm", "dpmpp_2m", "dpmpp_3m", "dpmpp_sde", "unipc", "euler", "heun",
    "euler_maruyama", "pc", "annealed_langevin", "ode_adaptive", "sde_adaptive",
]
