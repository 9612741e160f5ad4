"""Model-specific time grids: the N-step grid on which a given deterministic sampler best follows the model's own
probability-flow trajectories (:func:`optimize_grid`).

Two stages, both driven only by *teacher trajectories of the model itself* (no exact score, any process, any
space):

1. **GITS dynamic programming** (Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion
   Sampling", ICML, §5 "Geometry-inspired time scheduling", Alg. 1). A teacher solves the PF-ODE from a few
   references x_T on a fine grid t̄_0 > … > t̄_M and records x̄_k at every t̄_k. The cost of one coarse step
   between fine nodes i < j is the mean distance between where one step of the sampler, started on the teacher
   trajectory, lands and where the teacher is:

       c(i, j) = E_x_T ‖ Φ(x̄_i; t̄_i → t̄_j) − x̄_j ‖₂ ,

   and the N-step grid is the path 0 = k_0 < k_1 < … < k_N = M minimising Σ_n c(k_{n−1}, k_n), found exactly by
   dynamic programming V_n(j) = min_{i<j} V_{n−1}(i) + c(i, j) in O(N M²). The paper uses one Euler (DDIM) step
   for Φ; here Φ is one step of *the sampler being fitted* (its first step: a DDIM step for the multistep
   solvers, two evaluations for Heun), run through the public sampler with per-sample grids (t̄_i, t̄_j), so
   the costs of all pairs (i, j) come from a few batched calls.
2. **Refinement on the whole run** (ours, not in GITS): multistep solvers (DPM-Solver++, UniPC, PLMS) reuse
   earlier model outputs, which the one-step cost of stage 1 cannot see. Starting from each of the
   ``restarts`` best of the DP grid and the standard grids (uniform, log-SNR, Karras), a cyclic coordinate
   search (Wright 2015, "Coordinate descent algorithms", Math. Program. 151, §1, with a sampled line search in
   place of an exact one) tries each grid time at ``candidates`` points spread across the room to its
   neighbours, in the fine grid's fractional index, and keeps the best when it lowers the root-mean-square
   distance E[‖sampler(x_T; grid) − x̄_M‖²]^½ between the sampler's end points and the teacher's; the searched
   window halves after a sweep without a move. Neighbouring times keep at least :data:`MIN_GAP` fine intervals
   apart. The error surface has many local minima (it is dominated by a few trajectories near the boundaries
   between modes), which is why each line search spans the whole window rather than a small step, and why
   more references generalise better (``benchmarks/samplers.py`` uses 2,048).

The result therefore never does worse on the references than the best standard grid it started from; that it
generalises is checked on held-out starting points (``tests/core/test_schedule.py``, ``benchmarks/samplers.py``).

Fine grid: uniform in log-SNR (Lu et al. 2022, §3.3) from ``t_start`` down to the smallest positive noise level,
then ``t_end`` (σ = 0), as :func:`polydiff.samplers.make_grid` with ``"log_snr"``; uniform in t where the log-SNR
is not finite at ``t_start`` (rectified flow at t = 1). Teacher: UniPC of order 3 (Zhao et al. 2023) with
``teacher_substeps`` steps per fine interval, uniform in log-SNR inside each interval. Interior grid times stay
at or above the smallest positive noise level (no model call at σ = 0), and the last step lands on ``t_end``.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch

from ..errors import ConfigError, ShapeError
from ..processes import GaussianProcess
from ..spaces import Euclidean, Space
from .base import _process_of
from .grids import check_grid, make_grid

Tensor = torch.Tensor
F64 = torch.float64
#: Samplers whose result is a deterministic function of x_T *and* that step on the given grid.
GRID_SAMPLERS = ("ddim", "euler", "heun", "pndm", "dpmpp_2m", "dpmpp_3m", "unipc")
#: Standard grids the refinement may start from (the best on the references wins).
START_GRIDS = ("uniform", "log_snr", "karras")
#: Smallest distance, in fine-grid intervals, between two refined grid times (no near-coincident steps).
MIN_GAP = 0.25


def _fine_grid(process: GaussianProcess, m: int, t_start: float, t_end: float) -> tuple[Tensor, str]:
    try:
        return make_grid(process, m, "log_snr", t_start=t_start, t_end=t_end), "log_snr"
    except ConfigError:
        return make_grid(process, m, "uniform", t_start=t_start, t_end=t_end), "uniform"


def _subdivide(process: GaussianProcess, fine: Tensor, r: int) -> Tensor:
    """Insert r − 1 times inside every fine interval whose ends have finite log-SNR (uniform in λ there, in t
    otherwise); the jump to σ = 0 stays one step."""
    if r == 1:
        return fine
    lam = process.log_snr(fine)
    rows = []
    for k in range(fine.shape[0] - 1):
        a, b = fine[k], fine[k + 1]
        if torch.isfinite(lam[k]) and torch.isfinite(lam[k + 1]):
            inner = process.t_from_log_snr(torch.linspace(float(lam[k]), float(lam[k + 1]), r + 1, dtype=F64))
            inner = inner.clamp(min(float(b), float(a)), max(float(b), float(a)))
            inner[0], inner[-1] = a, b
        elif lam[k + 1] == math.inf and process.sigma(fine[k + 1:k + 2])[0] == 0:
            inner = torch.stack([a, b])
        else:
            inner = torch.linspace(float(a), float(b), r + 1, dtype=F64)
        rows.append(inner[:-1])
    rows.append(fine[-1:])
    out = torch.cat(rows)
    if not (out[:-1] > out[1:]).all():  # round-off of the inverse map on a very fine grid: fall back to t
        return fine if r == 1 else torch.cat([torch.linspace(float(fine[k]), float(fine[k + 1]), r + 1,
                                                             dtype=F64)[:-1] for k in range(fine.shape[0] - 1)]
                                             + [fine[-1:]])
    return out


def _tile(v, k: int):
    """Repeat a (batch, ...) tensor k times along the batch (block order: copy 0 of every sample, then copy 1…)."""
    if v is None or not torch.is_tensor(v) or v.ndim == 0:
        return v
    return v.repeat(k, *([1] * (v.ndim - 1)))


def _tile_cond(cond: Mapping | None, k: int):
    return None if cond is None else {name: _tile(v, k) for name, v in cond.items()}


class _Runner:
    """Runs the sampler (or the teacher) on many (x, grid) pairs in batched, chunked calls."""

    def __init__(self, model, fn, kwargs, process, space, cond, presence, chunk):
        self.model, self.fn, self.kwargs = model, fn, kwargs
        self.process, self.space, self.cond, self.presence, self.chunk = process, space, cond, presence, chunk
        self.nfe = 0

    def __call__(self, x: Tensor, grids: Tensor, copies: int) -> Tensor:
        """x: (n, ...) starts; grids: (copies, N+1) or (copies·n, N+1); returns (copies·n, ...) end points."""
        n = x.shape[0]
        if grids.shape[0] == copies:
            grids = grids.repeat_interleave(n, 0)
        outs = []
        per = max(1, self.chunk // n)
        for c0 in range(0, copies, per):
            k = min(per, copies - c0)
            info: dict = {}
            out = self.fn(self.model, _tile(x, k), grids[c0 * n:(c0 + k) * n], None, process=self.process,
                          space=self.space, cond=_tile_cond(self.cond, k), presence=_tile(self.presence, k),
                          info=info, **self.kwargs)
            self.nfe += info.get("nfe", 0) * k * n
            outs.append(out)
        return torch.cat(outs)


def _distance(space: Space, a: Tensor, b: Tensor) -> Tensor:
    """Per-sample Euclidean length of the space's difference a − b (wrapped on the torus), (batch,) float64."""
    d = space.project(a - b) if not isinstance(space, Euclidean) else a - b
    return d.to(F64).flatten(1).pow(2).sum(1).sqrt()


def teacher_trajectories(model, x_T: Tensor, fine: Tensor, *, teacher: str | Callable = "unipc",
                         teacher_kwargs: Mapping | None = None, substeps: int = 4, process=None, space=None,
                         cond=None, presence=None) -> Tensor:
    """States (M+1, n, ...) of the teacher solver at the times of ``fine`` (row 0 = x_T), solved with
    ``substeps`` teacher steps per fine interval (see the module docstring)."""
    from .api import get_sampler

    proc = _process_of(model, process)
    space = space if space is not None else Euclidean()
    fine = check_grid(fine)[0]
    if not isinstance(substeps, int) or substeps < 1:
        raise ConfigError(f"teacher_substeps must be a positive integer, got {substeps!r}")
    tgrid = _subdivide(proc, fine, substeps)
    where = {}
    j = 0
    for i, t in enumerate(tgrid.tolist()):  # teacher column i that sits on fine node j
        if j < fine.shape[0] and t == float(fine[j]):
            where[i] = j
            j += 1
    states = [None] * fine.shape[0]
    states[0] = x_T

    def record(info):
        k = where.get(info["i"] + 1)
        if k is not None:
            states[k] = info["x"].detach().clone()

    kw = {"order": 3} if teacher == "unipc" and teacher_kwargs is None else dict(teacher_kwargs or {})
    get_sampler(teacher)(model, x_T, tgrid, None, process=proc, space=space, cond=cond, presence=presence,
                         callback=record, **kw)
    if any(s is None for s in states):
        raise ConfigError("the teacher did not pass every fine grid time (a sampler that changes the grid?)")
    return torch.stack(states)


def _index_to_time(fine: Tensor, u: Tensor) -> Tensor:
    """Fractional fine-grid index u (any shape) → time, linear in t inside each fine interval."""
    m = fine.shape[0] - 1
    u = u.clamp(0, m)
    lo = u.floor().clamp(max=m - 1).long()
    frac = u - lo
    return fine[lo] + frac * (fine[lo + 1] - fine[lo])


def _time_to_index(fine: Tensor, t: Tensor) -> Tensor:
    """Inverse of :func:`_index_to_time` for times inside [fine[-1], fine[0]]."""
    rev = fine.flip(0)  # increasing
    pos = torch.searchsorted(rev, t.clamp(float(rev[0]), float(rev[-1])), right=True).clamp(1, rev.shape[0] - 1)
    lo, hi = rev[pos - 1], rev[pos]
    frac = torch.where(hi > lo, (t - lo) / (hi - lo), torch.zeros_like(t))
    idx_rev = (pos - 1).to(F64) + frac
    return (rev.shape[0] - 1) - idx_rev


def _grid_of(fine: Tensor, u: Tensor) -> Tensor:
    """(C, N+1) fractional indices → (C, N+1) grids with exact end points."""
    g = _index_to_time(fine, u)
    g[:, 0], g[:, -1] = fine[0], fine[-1]
    return g


def gits_dp(cost: Tensor, steps: int, coeff: float = 1.0, last_interior: int | None = None) -> list[int]:
    """Fine-node indices 0 = k_0 < … < k_N = M minimising Σ_n coeff^{n−1} c(k_{n−1}, k_n) (GITS, Chen et al.
    2024, Alg. 1; ``coeff`` = 1 is the plain sum). ``cost``: (M+1, M+1) with c[i, j] for i < j; interior
    nodes are restricted to ≤ ``last_interior`` (default M − 1)."""
    m = cost.shape[0] - 1
    last = m - 1 if last_interior is None else last_interior
    if steps > last + 1:
        raise ConfigError(f"cannot place {steps} steps on a fine grid of {m} intervals; raise fine_steps")
    inf = math.inf
    c = cost.to(F64).clone()
    c[torch.tril(torch.ones_like(c, dtype=torch.bool))] = inf  # only forward steps
    c[:, last + 1:m] = inf  # interior nodes stay at σ > 0
    V = torch.full((steps + 1, m + 1), inf, dtype=F64)
    arg = torch.zeros((steps + 1, m + 1), dtype=torch.long)
    V[0, 0] = 0.0
    for n in range(1, steps + 1):
        tot = V[n - 1][:, None] + (coeff ** (n - 1)) * c  # (from i, to j)
        V[n], arg[n] = tot.min(0)
    if not math.isfinite(float(V[steps, m])):
        raise ConfigError("no finite-cost path through the fine grid (the sampler gave non-finite states)")
    path = [m]
    for n in range(steps, 0, -1):
        path.append(int(arg[n, path[-1]]))
    return path[::-1]


def optimize_grid(
    model,
    sampler: str | Callable = "dpmpp_2m",
    steps: int = 10,
    *,
    x_T: Tensor | None = None,
    shape=None,
    references: int = 256,
    generator: torch.Generator | None = None,
    process: GaussianProcess | None = None,
    space: Space | None = None,
    cond: Mapping | None = None,
    presence: Tensor | None = None,
    t_start: float = 1.0,
    t_end: float = 0.0,
    fine_steps: int = 80,
    teacher: str | Callable = "unipc",
    teacher_kwargs: Mapping | None = None,
    teacher_substeps: int = 4,
    coeff: float = 1.0,
    refine_sweeps: int = 12,
    restarts: int = 2,
    candidates: int = 8,
    chunk: int = 65536,
    device=None,
    dtype: torch.dtype | None = None,
    info: dict | None = None,
    **sampler_kwargs,
) -> Tensor:
    """The ``steps``-step time grid on which ``sampler`` best follows ``model``'s own probability-flow
    trajectories (GITS dynamic programming, then a coordinate-search refinement; see the module docstring).

    Args:
        model: a Denoiser-like ``model(x, t, cond) -> Prediction`` with a ``process`` (or pass ``process``).
        sampler: a deterministic grid sampler (a name of :data:`GRID_SAMPLERS`, or a function you know to be
            deterministic); ``**sampler_kwargs`` are its options (e.g. ``order=3`` for ``unipc``).
        steps: the number of sampler steps N of the grid.
        x_T, shape, references, generator: the reference starting points: ``x_T`` as given, else ``references``
            draws of the prior with ``shape[1:]`` (``shape`` = (batch, ...) as in :func:`sample`).
        cond, presence, space: as in :func:`polydiff.samplers.sample`, for the references.
        t_start, t_end: the grid's end points (fixed).
        fine_steps: M, intervals of the fine grid the DP chooses from (GITS searches ~100 teacher steps).
        teacher, teacher_kwargs, teacher_substeps: the solver of the reference trajectories and its steps per
            fine interval (default: UniPC order 3, 4 substeps: 4M model calls per reference).
        coeff: the DP weighs the n-th step's cost by coeff^(n−1) (1 = plain sum; the GITS authors' scripts use
            1.15, which made DDIM's samples worse on the digits model, see docs/benchmarks.md).
        refine_sweeps: coordinate-search sweeps over the interior times in stage 2 (0 = the best start grid as it
            is).
        restarts: how many of the best start grids are refined (the best result is kept).
        candidates: points tried per grid time and sweep (one batched sampler run each).
        chunk: the most trajectories run in one batched sampler call (memory bound).
        info: receives ``errors`` (RMSE to the teacher's end points on the references for the DP grid, every
            start grid and the result), ``fine`` (the fine grid), ``nfe`` (model evaluations per reference
            spent) and ``start`` (the grid the refinement started from).

    Returns: a decreasing float64 grid of shape (steps + 1,), usable as ``sample(..., grid=…)``.
    """
    from .api import get_sampler

    if isinstance(sampler, str) and sampler not in GRID_SAMPLERS:
        raise ConfigError(f"optimize_grid fits deterministic grid samplers {list(GRID_SAMPLERS)}; got {sampler!r} "
                          "(stochastic and adaptive samplers have no trajectory to follow)")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(fine_steps, int) or fine_steps < steps + 1:
        raise ConfigError(f"fine_steps must be an integer > steps={steps}, got {fine_steps!r}")
    if not isinstance(restarts, int) or restarts < 1:
        raise ConfigError(f"restarts must be a positive integer, got {restarts!r}")
    if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 2:
        raise ConfigError(f"candidates must be an integer ≥ 2, got {candidates!r}")
    if not isinstance(refine_sweeps, int) or refine_sweeps < 0:
        raise ConfigError(f"refine_sweeps must be a non-negative integer, got {refine_sweeps!r}")
    fn = get_sampler(sampler)
    proc = _process_of(model, process)
    space = space if space is not None else Euclidean()
    if x_T is None:
        if shape is None:
            raise ShapeError("pass x_T (the reference starting points) or shape (batch, ...) to draw them")
        x_T = proc.prior_sample((int(references), *tuple(shape)[1:]), generator=generator, space=space,
                                presence=presence, device=device, dtype=dtype)
    elif not torch.is_tensor(x_T) or not x_T.is_floating_point() or x_T.ndim < 2:
        raise ShapeError(f"x_T must be a float tensor (batch, ...); got {getattr(x_T, 'shape', x_T)}")
    n = x_T.shape[0]
    if float(t_start) != 1.0 and float(t_start) <= float(t_end):
        raise ConfigError(f"t_start={t_start} must exceed t_end={t_end}")
    fine, fine_kind = _fine_grid(proc, fine_steps, float(t_start), float(t_end))
    m = fine.shape[0] - 1
    last_interior = m - 1  # the last fine node before t_end (σ > 0 there when the grid ends at σ = 0)
    run = _Runner(model, fn, dict(sampler_kwargs), proc, space, cond, presence, chunk)

    with torch.no_grad():
        traj = teacher_trajectories(model, x_T, fine, teacher=teacher, teacher_kwargs=teacher_kwargs,
                                    substeps=teacher_substeps, process=proc, space=space, cond=cond,
                                    presence=presence)
        teacher_nfe = teacher_substeps * m * (2 if teacher == "heun" else 1)
        target = traj[-1]

        # -- stage 1: GITS costs c(i, j) of one sampler step from the teacher at i to fine node j ---------------
        cost = torch.full((m + 1, m + 1), math.inf, dtype=F64)
        for i in range(m):
            js = torch.arange(i + 1, m + 1)
            grids = torch.stack([fine[i].expand(js.shape[0]), fine[js]], 1)
            out = run(traj[i], grids, js.shape[0]).reshape(js.shape[0], n, *x_T.shape[1:])
            err = torch.stack([_distance(space, out[k], traj[j]) for k, j in enumerate(js.tolist())])
            cost[i, i + 1:] = torch.where(torch.isfinite(err).all(1), err.mean(1), torch.full_like(err[:, 0], math.inf))
        path = gits_dp(cost, steps, coeff, last_interior)
        dp_grid = fine[path].clone()

        def rmse(grids: Tensor) -> Tensor:
            """(C, N+1) grids -> (C,) RMSE of the sampler's end points against the teacher's; a grid the sampler
            refuses (e.g. two times at one log-SNR where a schedule saturates) scores inf."""
            try:
                out = run(x_T, grids, grids.shape[0]).reshape(grids.shape[0], n, *x_T.shape[1:])
            except ConfigError:
                if grids.shape[0] == 1:
                    return torch.full((1,), math.inf, dtype=F64)
                return torch.cat([rmse(g[None]) for g in grids])
            d = torch.stack([_distance(space, out[c], target) for c in range(grids.shape[0])])
            e = d.pow(2).mean(1).sqrt()
            return torch.where(torch.isfinite(e), e, torch.full_like(e, math.inf))

        starts = {"gits_dp": dp_grid}
        for kind in START_GRIDS:
            try:
                starts[kind] = make_grid(proc, steps, kind, t_start=float(t_start), t_end=float(t_end))
            except ConfigError:
                continue
        names = list(starts)
        errs = rmse(torch.stack([starts[k] for k in names]))
        errors = {k: float(e) for k, e in zip(names, errs)}
        order = sorted(range(len(names)), key=lambda c: float(errs[c]))
        hi = float(last_interior)

        def refine(u: Tensor, best_err: float) -> tuple[Tensor, float]:
            """Stage 2: cyclic coordinate search on the interior times, in fractional fine index. Each time is
            tried at ``candidates`` points spread over its window (a fraction ``width`` of the room to its
            neighbours, on each side) in one batched run; the best is kept if it lowers the error
            (Gauss–Seidel: the next coordinate sees it). The window halves after a sweep without a move."""
            width = 1.0
            for _ in range(refine_sweeps):
                moved = False
                for k in range(1, steps):
                    left = float(u[k - 1]) + MIN_GAP
                    right = (float(u[k + 1]) - MIN_GAP) if k + 1 < steps else hi
                    cur = float(u[k])
                    lo_, hi_ = cur - width * max(cur - left, 0.0), cur + width * max(right - cur, 0.0)
                    cands = [c for c in torch.linspace(lo_, hi_, candidates, dtype=F64).tolist()
                             if left <= c <= right and abs(c - cur) > 1e-9]
                    if not cands:
                        continue
                    vs = u.repeat(len(cands), 1)
                    vs[:, k] = torch.tensor(cands, dtype=F64)
                    ce = rmse(_grid_of(fine, vs))
                    j = int(ce.argmin())
                    if float(ce[j]) < best_err:
                        u, best_err, moved = vs[j].clone(), float(ce[j]), True
                if not moved:
                    width *= 0.5
                    if width < 1e-3:
                        break
            return u, best_err

        best_name, best_err = names[order[0]], float(errs[order[0]])
        grid = starts[best_name].clone()
        if steps >= 2 and refine_sweeps > 0:
            for c in order[:restarts]:
                u0 = _time_to_index(fine, starts[names[c]])
                u0[0], u0[-1] = 0.0, float(m)
                u, e = refine(u0, float(errs[c]))
                if e < best_err:
                    grid, best_err, best_name = _grid_of(fine, u[None])[0], e, names[c]
    errors["optimized"] = best_err
    if info is not None:
        info.update({"errors": errors, "fine": fine, "fine_kind": fine_kind, "start": best_name,
                     "nfe": teacher_nfe + run.nfe / n})
    return check_grid(grid)[0]


__all__ = ["optimize_grid", "gits_dp", "teacher_trajectories", "GRID_SAMPLERS", "START_GRIDS"]
