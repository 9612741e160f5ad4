"""Sampler accuracy and per-step overhead against diffusers and k-diffusion, on a fair field.

Targets (exact oracles of :mod:`polydiff.testing`, both 2-D, under the linear-β DDPM process
``VP("linear", num_steps=1000)`` = diffusers' default betas):

* ``grid9`` — ``GaussianMixture.grid()``: 9 Gaussians on a 3×3 grid of spacing 1, widths 0.03–0.3;
* ``ring8`` — 8 Gaussians on a circle of radius 3 with widths 0.05–0.4 (another scale and geometry).

Every sampler starts from the same ``--n`` (20,000) points x_T at t = 1 and calls the same exact oracle at the
noise level it asks for. Errors:

* scale-normalised trajectory RMSE: E[‖x̂_0 − x_0*‖²]^½ / s, with x_0* the exact probability-flow ODE solution from
  the same x_T (DOP853, rtol = atol = 1e-10, in y = x/α, σ̃ = σ/α down to σ̃ = 0) and s the data standard deviation
  (trace of the mixture covariance / d, square-rooted);
* sliced W2 (256 directions) to ``--n`` exact draws of the mixture, beside its noise floor: the SW2 between two
  independent exact sample sets of the same size.

Anchors, each on every grid it offers, and reported on its best: diffusers DDIM (leading, trailing, linspace
spacing), DPM-Solver++(2M) and UniPC orders 2 and 3 (default linspace, trailing, Karras, exponential sigmas);
k-diffusion Heun, LMS and DPM++(2M) on Karras and exponential sigmas (k-diffusion's own ``get_sigmas_*``; only
``k_diffusion/sampling.py`` is loaded, its package imports torchvision: install it with
``pip install -c constraints.txt --no-deps k-diffusion torchsde torchdiffeq trampoline``). polydiff: DDIM, PLMS,
DPM-Solver++(2M/3M), UniPC-2/3 and Heun on the trailing, Karras and log-SNR grids and on a grid optimised for
the sampler and NFE (:func:`polydiff.samplers.optimize_grid`, ``--refs`` reference trajectories from *other*
starting points, seed 1; the optimiser sees the oracle only as a model to call). The optimised grids are fitted
for the multistep samplers :data:`OPTIMISED` at the ``--opt-nfe`` budgets only: each fit costs minutes on one
core. Heun gets N = (NFE + 1)/2 steps.

Overhead: seconds per step with a zero-cost model, grid construction counted on every side: diffusers
``set_timesteps`` + the loop; k-diffusion ``get_sigmas_karras`` + the sampler; polydiff ``sample()`` cold
(caches cleared before every call: grid and coefficients built) and warm (the second call with the same settings,
served from the cache). Batch 1 and 1000, ``--overhead-steps`` steps, median of ``--repeats`` calls.

Digits (``--digits``): the image quickstart model (``polydiff fit --config image/digits`` unless ``--ckpt`` is
given), its sampler fitted with ``polydiff optimize-schedule --steps 10``, and ``polydiff evaluate`` (evaluation
classifier accuracy, Fréchet distance) at 10 steps on the optimised grid against the default grid at 10, 25 and
50 steps. ``--quick`` trains 30 steps and evaluates 64 samples: a check that it runs, not a result.

Usage: python benchmarks/samplers.py [--n 20000] [--nfe 10 20 50] [--refs 2048] [--opt-nfe 10]
           [--targets grid9 ring8] [--parts accuracy overhead]                   (docs/benchmarks.md tables)
       python benchmarks/samplers.py --quick                                      (a check, ~1-2 minutes)
       python benchmarks/samplers.py --digits [--ckpt last.ckpt] [--num 1000] [--refs 64] [--quick]
       python benchmarks/samplers.py --manifold --n 1000 --nfe 10 20 50            (the manifold table)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import torch

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

from scipy.integrate import solve_ivp  # noqa: E402

from polydiff import VE, VP, Prediction, Torus, ZeroCenterOfMass  # noqa: E402
from polydiff.samplers import SAMPLERS, clear_cache, make_grid, optimize_grid, sample  # noqa: E402
from polydiff.testing import (ExactDenoiser, GaussianMixture, WrappedNormalMixture,  # noqa: E402
                              ZeroCoMGaussianMixture, sliced_wasserstein)

F64 = torch.float64
PROC = VP("linear", num_steps=1000)
LIN = dict(beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def ring(k: int = 8, radius: float = 3.0, widths=(0.05, 0.4)) -> GaussianMixture:
    """k isotropic Gaussians evenly on a circle, standard deviations spread over ``widths`` (alternating)."""
    ang = torch.arange(k, dtype=F64) * (2 * math.pi / k)
    means = radius * torch.stack([ang.cos(), ang.sin()], 1)
    stds = torch.exp(torch.linspace(math.log(widths[0]), math.log(widths[1]), k, dtype=F64))
    stds = torch.cat([stds[0::2], stds[1::2]])  # neighbours differ in width
    return GaussianMixture(means, stds**2)


TARGETS = {"grid9": GaussianMixture.grid(), "ring8": ring()}


def data_std(mix: GaussianMixture) -> float:
    w = mix.weights
    mean = (w[:, None] * mix.means).sum(0)
    second = (w[:, None, None] * (mix.covs + mix.means[:, :, None] * mix.means[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    return math.sqrt(float(torch.diagonal(cov).mean()))


_KD: list = []


def load_k_diffusion():
    """(module, None) or (None, why); loaded once."""
    if not _KD:
        _KD.append(_load_k_diffusion())
    return _KD[0]


def _load_k_diffusion():
    """k_diffusion.sampling without the package __init__ (which needs torchvision/skimage): sampling.py uses only
    ``utils.append_dims`` from k_diffusion.utils, given here with the same definition."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        return None, ("k-diffusion is not installed (pip install -c constraints.txt --no-deps k-diffusion torchsde "
                      "torchdiffeq trampoline)")
    root = os.path.dirname(spec.origin)
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [root]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    pkg.utils = utils
    sys.modules.update({"k_diffusion": pkg, "k_diffusion.utils": utils})
    try:
        sspec = importlib.util.spec_from_file_location("k_diffusion.sampling", os.path.join(root, "sampling.py"))
        mod = importlib.util.module_from_spec(sspec)
        sys.modules["k_diffusion.sampling"] = mod
        sspec.loader.exec_module(mod)
    except Exception as exc:  # pragma: no cover - environment dependent
        return None, f"k_diffusion.sampling could not be imported: {exc!r}"
    return mod, None


def t_of_sigma(sig: torch.Tensor) -> torch.Tensor:
    sig = sig.to(F64)
    t = PROC.t_from_sigma_ratio(sig.clamp_min(1e-300))
    return torch.where(sig > 0, t, torch.zeros_like(t))


def reference(mix, x_T: torch.Tensor, proc=PROC) -> torch.Tensor:
    a1 = proc.alpha(torch.ones(1, dtype=F64))
    s1 = proc.sigma(torch.ones(1, dtype=F64))
    y0 = (x_T.to(F64) / a1).numpy().ravel()
    n = x_T.shape[0]
    ones = torch.ones(n, dtype=F64)

    def rhs(sig, y):
        y = torch.from_numpy(y).reshape(n, 2)
        return (-sig * mix.score(y, ones, torch.full((n,), sig, dtype=F64))).numpy().ravel()

    sol = solve_ivp(rhs, (float(s1 / a1), 0.0), y0, method="DOP853", rtol=1e-10, atol=1e-10)
    return torch.from_numpy(sol.y[:, -1]).reshape(n, 2)


# ---- anchors ----------------------------------------------------------------------------------------
DIFFUSERS = {  # name -> (scheduler class name, fixed options)
    "DDIM": ("DDIMScheduler", dict(clip_sample=False, set_alpha_to_one=True)),
    "DPM++(2M)": ("DPMSolverMultistepScheduler", dict(solver_order=2, algorithm_type="dpmsolver++")),
    "UniPC-2": ("UniPCMultistepScheduler", dict(solver_order=2)),
    "UniPC-3": ("UniPCMultistepScheduler", dict(solver_order=3)),
}
DIFFUSERS_GRIDS = {
    "DDIM": {"leading": dict(timestep_spacing="leading"), "trailing": dict(timestep_spacing="trailing"),
             "linspace": dict(timestep_spacing="linspace")},
    **{k: {"linspace": {}, "trailing": dict(timestep_spacing="trailing"), "karras": dict(use_karras_sigmas=True),
           "exponential": dict(use_exponential_sigmas=True)} for k in ("DPM++(2M)", "UniPC-2", "UniPC-3")},
}


def make_scheduler(name: str, grid: str):
    import diffusers

    cls, opts = DIFFUSERS[name]
    return getattr(diffusers, cls)(**LIN, **opts, **DIFFUSERS_GRIDS[name][grid])


def diffusers_run(sched, steps: int, x_T: torch.Tensor, oracle=None):
    """The scheduler's own loop; ``oracle=None`` is the zero-cost model (ε̂ = input). Returns (x_0, NFE)."""
    sched.set_timesteps(steps)
    sigmas = getattr(sched, "sigmas", None)
    x = x_T.clone()
    nfe = 0
    for i, k in enumerate(sched.timesteps):
        xin = sched.scale_model_input(x, k) if hasattr(sched, "scale_model_input") else x
        if oracle is None:
            eps = xin
        else:
            if sigmas is not None:
                idx = sched.step_index if getattr(sched, "step_index", None) is not None else i
                t = t_of_sigma(sigmas[idx].reshape(1))
            else:
                t = torch.tensor([(float(k) + 1) / 1000], dtype=F64)
            eps = oracle(xin.to(F64), t.expand(x.shape[0])).eps.to(x.dtype)
        nfe += 1
        x = sched.step(eps, k, x).prev_sample
    return x, nfe


KD = ("Heun", "LMS", "DPM++(2M)")


def kd_sigmas(kd, grid: str, steps: int):
    ends = torch.tensor([1.0, 1.0 / PROC.num_steps], dtype=F64)
    hi, lo = (PROC.sigma(ends) / PROC.alpha(ends)).tolist()
    fn = kd.get_sigmas_karras if grid == "karras" else kd.get_sigmas_exponential
    return fn(steps, lo, hi) if grid == "exponential" else fn(steps, lo, hi, rho=7.0)


def kdiff_run(kd, name: str, grid: str, steps: int, x_T: torch.Tensor, oracle=None):
    count = [0]

    def denoiser(y, sigma):
        count[0] += 1
        if oracle is None:
            return y
        t = t_of_sigma(sigma)
        a = PROC.alpha(t)[:, None]
        return oracle((a * y).to(F64), t).x0.to(y.dtype)

    sigmas = kd_sigmas(kd, grid, steps).to(x_T.dtype)
    a_T = PROC.alpha(torch.ones(1, dtype=F64)).item()
    fn = {"Heun": kd.sample_heun, "LMS": kd.sample_lms, "DPM++(2M)": kd.sample_dpmpp_2m}[name]
    return fn(denoiser, x_T / a_T, sigmas, disable=True), count[0]


# ---- polydiff -----------------------------------------------------------------------------------------
POLY = [("ddim", {}), ("pndm", {"warmup": "plms"}), ("dpmpp_2m", {}), ("dpmpp_3m", {}), ("unipc", {}),
        ("unipc", {"order": 3}), ("heun", {})]
POLY_GRIDS = ("trailing", "karras", "log_snr", "optimized")
#: Samplers that get an optimised grid (the multistep solvers, which beat the one-step ones at 10 NFE on every
#: standard grid); the fits are the benchmark's main cost.
OPTIMISED = ("pndm", "dpmpp_2m", "dpmpp_3m", "unipc")


def label(name, kw):
    return name + ("" if not kw else "(" + ",".join(f"{k}={v}" for k, v in kw.items()) + ")")


def steps_for(name, nfe):
    return (nfe + 1) // 2 if name.lower().startswith("heun") else nfe


class Scorer:
    """Scale-normalised RMSE to the exact trajectories and sliced W2 to exact draws, for one target."""

    def __init__(self, mix, x_T, seed=0):
        self.mix, self.x_T = mix, x_T
        t0 = time.time()
        self.ref = reference(mix, x_T)
        self.ref_seconds = time.time() - t0
        self.std = data_std(mix)
        n = x_T.shape[0]
        self.exact = mix.sample(n, torch.Generator().manual_seed(seed + 100))
        self.floor = self.sw2(mix.sample(n, torch.Generator().manual_seed(seed + 200)))
        self.floor_ref = self.sw2(self.ref)  # the exact ODE solution is itself an exact draw

    def sw2(self, x):
        return float(sliced_wasserstein(x.to(F64), self.exact, 256, torch.Generator().manual_seed(7)))

    def __call__(self, x):
        if not torch.isfinite(x).all():
            return math.inf, math.inf
        rmse = (x.to(F64) - self.ref).pow(2).sum(1).mean().sqrt().item() / self.std
        return rmse, self.sw2(x)


def accuracy(target: str, n: int, nfes, refs: int, quick: bool, log, opt_nfes=(10,)):
    mix = TARGETS[target]
    oracle = ExactDenoiser(mix, PROC)
    x_T = PROC.prior_sample((n, 2), torch.Generator().manual_seed(0)).to(F64)
    score = Scorer(mix, x_T)
    log(f"{target}: reference solved in {score.ref_seconds:.1f}s; data std {score.std:.3f}; SW2 floor "
        f"{score.floor:.4f}")
    rows = []  # (tool, method, grid, [(rmse, sw2, nfe_used) per NFE])
    opt_kw = dict(references=refs, fine_steps=30 if quick else 80, refine_sweeps=3 if quick else 20,
                  restarts=2 if quick else 4)
    fit_seconds = []
    for name, kw in POLY:
        for grid_kind in POLY_GRIDS:
            if grid_kind == "optimized" and name not in OPTIMISED:
                continue
            cells = []
            for nfe in nfes:
                steps = steps_for(name, nfe)
                if grid_kind == "optimized" and nfe not in opt_nfes:
                    cells.append((math.nan, math.nan, nfe))
                    continue
                if grid_kind == "optimized":
                    t0 = time.time()
                    grid = optimize_grid(oracle, name, steps, shape=(refs, 2), generator=torch.Generator().manual_seed(1),
                                         **opt_kw, **kw)
                    fit_seconds.append(time.time() - t0)
                else:
                    grid = make_grid(PROC, steps, grid_kind)
                info = {}
                x = SAMPLERS[name](oracle, x_T, grid, **kw, info=info)
                cells.append((*score(x), info["nfe"]))
            rows.append(("polydiff", label(name, kw), grid_kind, cells))
        log(f"{target}: polydiff {label(name, kw)} done")
    for name in DIFFUSERS:
        for grid_kind in DIFFUSERS_GRIDS[name]:
            cells = []
            for nfe in nfes:
                try:
                    x, used = diffusers_run(make_scheduler(name, grid_kind), nfe, x_T.float(), oracle)
                    cells.append((*score(x), used))
                except Exception as exc:  # noqa: BLE001 - a scheduler/grid pair diffusers refuses
                    log(f"diffusers {name} {grid_kind} {nfe}: {type(exc).__name__}: {exc}")
                    cells.append((math.inf, math.inf, nfe))
            rows.append(("diffusers", name, grid_kind, cells))
    kd, why = load_k_diffusion()
    if kd is None:
        log(why)
    else:
        for name in KD:
            for grid_kind in ("karras", "exponential"):
                cells = []
                for nfe in nfes:
                    x, used = kdiff_run(kd, name, grid_kind, steps_for(name, nfe), x_T.float(), oracle)
                    cells.append((*score(x), used))
                rows.append(("k-diffusion", name, grid_kind, cells))
    return score, rows, fit_seconds, kd is not None


def best_grid(rows, tool, method, j):
    cands = [r for r in rows if r[0] == tool and r[1] == method]
    return min(cands, key=lambda r: r[3][j][0])


def print_accuracy(target, score, rows, nfes, fit_seconds):
    print(f"\n### {target}: data std {score.std:.3f}, SW2 noise floor {score.floor:.4f} "
          f"(two independent exact sets of {score.x_T.shape[0]}; the exact ODE end points score {score.floor_ref:.4f})\n")
    print("Cell: RMSE / data std · SW2 (NFE used).\n")
    print("| tool | sampler | grid | " + " | ".join(f"{n} NFE" for n in nfes) + " |")
    print("|---|---|---|" + "---|" * len(nfes))
    for tool, method, grid_kind, cells in rows:
        print(f"| {tool} | {method} | {grid_kind} | "
              + " | ".join("-" if math.isnan(r) else f"{r:.4f} · {s:.4f} ({u})" for r, s, u in cells) + " |")
    if fit_seconds:
        print(f"\nOptimised grids: {len(fit_seconds)} fits, {statistics.median(fit_seconds):.1f} s median each "
              "(not counted in the timings below: a one-off per model, sampler and NFE).")
    print(f"\n{target}: each method on its best grid (by RMSE at that NFE) and the best polydiff row with its "
          "optimised grid:\n")
    print("| NFE | best anchor (grid) | RMSE/std | SW2 | best polydiff, optimised | RMSE/std | SW2 | best polydiff, "
          "standard grid | RMSE/std | RMSE ratio opt/anchor | SW2 − floor: opt vs anchor |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for j, nfe in enumerate(nfes):
        anchors = [r for r in rows if r[0] != "polydiff" and r[3][j][2] <= nfe]
        opt = [r for r in rows if r[0] == "polydiff" and r[2] == "optimized" and r[3][j][2] <= nfe
               and not math.isnan(r[3][j][0])]
        std = [r for r in rows if r[0] == "polydiff" and r[2] != "optimized" and r[3][j][2] <= nfe]
        if not (anchors and opt and std):
            continue
        a = min(anchors, key=lambda r: r[3][j][0])
        o = min(opt, key=lambda r: r[3][j][0])
        s = min(std, key=lambda r: r[3][j][0])
        closer = all(o[3][j][1] < r[3][j][1] for r in anchors)
        print(f"| {nfe} | {a[0]} {a[1]} ({a[2]}) | {a[3][j][0]:.4f} | {a[3][j][1]:.4f} | {o[1]} | {o[3][j][0]:.4f} | "
              f"{o[3][j][1]:.4f} | {s[1]} ({s[2]}) | {s[3][j][0]:.4f} | {o[3][j][0] / a[3][j][0]:.2f} | "
              f"{o[3][j][1] - score.floor:+.4f} vs {a[3][j][1] - score.floor:+.4f}"
              f"{' (closer than every anchor)' if closer else ''} |")


# ---- overhead ---------------------------------------------------------------------------------------------
class ZeroModel(torch.nn.Module):
    process = PROC

    def forward(self, x, t, cond=None):
        return Prediction(x0=x, eps=x)


def timed(fn, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def overhead(steps: int, repeats: int, batches=(1, 1000)):
    kd, _ = load_k_diffusion()
    zero = ZeroModel()
    pairs = [  # (polydiff sampler, options, grid, diffusers (name, grid), k-diffusion (name, grid))
        ("ddim", {}, "trailing", ("DDIM", "trailing"), None),
        ("dpmpp_2m", {}, "karras", ("DPM++(2M)", "karras"), ("DPM++(2M)", "karras")),
        ("unipc", {}, "karras", ("UniPC-2", "karras"), None),
        ("unipc", {"order": 3}, "log_snr", ("UniPC-3", "exponential"), None),
        ("heun", {}, "karras", None, ("Heun", "karras")),
    ]
    rows = []
    for batch in batches:
        x_T = torch.randn(batch, 2, generator=torch.Generator().manual_seed(0))
        for name, kw, grid_kind, dif, kdp in pairs:
            st = steps

            def cold():
                clear_cache()
                sample(zero, x_T, sampler=name, steps=st, grid=grid_kind, **kw)

            def warm():
                sample(zero, x_T, sampler=name, steps=st, grid=grid_kind, **kw)

            warm()
            c, w = timed(cold, repeats) / st, timed(warm, repeats) / st
            d = k = None
            if dif is not None:
                sched = make_scheduler(*dif)
                d = timed(lambda: diffusers_run(sched, st, x_T), repeats) / st
            if kdp is not None and kd is not None:
                k = timed(lambda: kdiff_run(kd, kdp[0], kdp[1], st, x_T), repeats) / st
            rows.append((batch, label(name, kw), grid_kind, c, w, dif, d, kdp, k))
    return rows


def print_overhead(rows, steps, repeats):
    print(f"\nPer-step overhead with a zero-cost model, grid construction counted ({steps} steps, median of "
          f"{repeats} calls; µs per step):\n")
    print("| batch | polydiff sampler (grid) | polydiff cold | polydiff warm | diffusers (grid) | µs | "
          "k-diffusion (grid) | µs | cold / warm ÷ diffusers | cold / warm ÷ k-diffusion |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for batch, name, g, c, w, dif, d, kdp, k in rows:
        dn = f"{dif[0]} ({dif[1]})" if dif else "-"
        kn = f"{kdp[0]} ({kdp[1]})" if kdp else "-"
        print(f"| {batch} | {name} ({g}) | {c * 1e6:.0f} | {w * 1e6:.0f} | {dn} | "
              f"{'-' if d is None else f'{d * 1e6:.0f}'} | {kn} | {'-' if k is None else f'{k * 1e6:.0f}'} | "
              f"{'-' if d is None else f'{c / d:.2f} / {w / d:.2f}'} | "
              f"{'-' if k is None else f'{c / k:.2f} / {w / k:.2f}'} |")


# ---- digits -------------------------------------------------------------------------------------------------
def digits(args, log):
    """The quickstart model: optimise its sampler's 10-step grid, evaluate 10 (optimised), 10/25/50 (default)."""
    from polydiff import cli

    work = Path(tempfile.mkdtemp(prefix="polydiff-digits-"))
    ckpt = Path(args.ckpt) if args.ckpt else None
    if ckpt is None:
        argv = ["fit", "--config", "image/digits", "--trainer.default_root_dir", str(work)]
        if args.quick:
            argv += ["--trainer.max_steps", "30", "--model.init_args.final_num_samples", "10",
                     "--model.init_args.val_num_samples", "10"]
        log(f"training: polydiff {' '.join(argv)}")
        if cli.main(argv) != 0:
            raise SystemExit("training failed")
        found = sorted(work.rglob("last.ckpt"))
        if not found:
            raise SystemExit(f"no last.ckpt under {work}")
        ckpt = found[0]
    fitted = work / "fitted.ckpt"
    sampler = args.digits_sampler
    opt = ["optimize-schedule", "--ckpt", str(ckpt), "--sampler", sampler, "--steps", "10", "--out", str(fitted),
           "--references", str(16 if args.quick else args.refs)]
    if args.quick:
        opt += ["--fine_steps", "20", "--refine_sweeps", "1"]
    t0 = time.time()
    if cli.main(opt) != 0:
        raise SystemExit("optimize-schedule failed")
    fit_s = time.time() - t0
    num = 64 if args.quick else args.num
    runs = [("optimised", 10, None), ("default", 10, "uniform"), ("default", 25, "uniform"), ("default", 50, "uniform")]
    results = []
    for what, steps, grid in runs:
        out = work / f"{what}_{steps}.json"
        argv = ["evaluate", "--ckpt", str(fitted), "--sampler", sampler, "--steps", str(steps), "--num", str(num),
                "--out", str(out)]
        if grid is not None:
            argv += ["--grid", grid]
        if cli.main(argv) != 0:
            raise SystemExit(f"evaluate failed: {argv}")
        rec = json.loads(out.read_text())
        results.append((what, steps, rec["grid_used"], rec["metrics"]))
    keys = sorted({k for *_, m in results for k in m if "accuracy_class" not in k and not k.endswith("num_samples")})
    cmd = "python benchmarks/samplers.py --digits" + (f" --ckpt {args.ckpt}" if args.ckpt else "") + \
        (" --quick" if args.quick else f" --num {args.num} --refs {args.refs}") + \
        f" --digits-sampler {sampler} --threads {args.threads}"
    print(f"Command: `{cmd}` (torch {torch.__version__}; checkpoint {ckpt}; sampler {sampler}; schedule fitted "
          f"in {fit_s:.0f} s)\n")
    print("| grid | steps | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for what, steps, used, m in results:
        print(f"| {what} ({used}) | {steps} | " + " | ".join(f"{m.get(k, float('nan')):.4g}" for k in keys) + " |")


# ---- manifolds ------------------------------------------------------------------------------------------
TORUS_MIX = WrappedNormalMixture([[2.9, 0.0], [-1.5, 2.8], [0.5, -2.0]],
                                 [[0.3**2, 0.5**2], [0.5**2, 0.25**2], [0.2**2, 0.6**2]], [0.4, 0.35, 0.25])
TORUS_PROC = VE(sigma_min=0.01, sigma_max=math.pi)
COM_MIX = ZeroCoMGaussianMixture(torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(0), dtype=F64),
                                 [0.1**2, 0.2**2, 0.3**2], [0.5, 0.3, 0.2])
COM_PROC = VP("linear")
MANIFOLD_POLY = [("ddim", {}), ("euler", {}), ("heun", {}), ("pndm", {"warmup": "plms"}), ("dpmpp_2m", {}),
                 ("dpmpp_3m", {}), ("unipc", {})]


def manifold_reference(mix, proc, x_T, wrap):
    """Exact PF-ODE solution from t = 1 to t = 0 in y = x/α, σ̃ = σ/α (dy/dσ̃ = −σ̃ ∇log p(y; σ̃)), solved in
    the cover for the torus (the score is evaluated at the wrapped point) and wrapped at the end."""
    a = proc.alpha(torch.tensor([1.0, 0.0], dtype=F64))
    s = proc.sigma(torch.tensor([1.0, 0.0], dtype=F64))
    shape = x_T.shape
    n = shape[0]
    ones = torch.ones(n, dtype=F64)

    def rhs(sig, y):
        y = torch.from_numpy(y).reshape(shape)
        y = Torus.wrap(y) if wrap else y
        return (-sig * mix.score(y, ones, torch.full((n,), sig, dtype=F64))).numpy().ravel()

    y0 = (x_T.to(F64) / a[0]).numpy().ravel()
    sol = solve_ivp(rhs, (float(s[0] / a[0]), float(s[1] / a[1])), y0, method="DOP853", rtol=1e-10, atol=1e-10)
    y = torch.from_numpy(sol.y[:, -1]).reshape(shape) * a[1]
    return Torus.wrap(y) if wrap else y


def manifold_accuracy(n, nfes):
    rows = []
    for label_, mix, proc, space, shape, wrap in (
        ("torus T², VE(0.01, π)", TORUS_MIX, TORUS_PROC, Torus(), (n, 2), True),
        ("zero-CoM 4×2, linear VP", COM_MIX, COM_PROC, ZeroCenterOfMass(), (n, 4, 2), False),
    ):
        oracle = ExactDenoiser(mix, proc)
        x_T = space.project(proc.prior_sample(shape, torch.Generator().manual_seed(0), space=space).to(F64))
        t0 = time.time()
        ref = manifold_reference(mix, proc, x_T, wrap)
        print(f"{label_}: reference solved in {time.time() - t0:.1f}s", file=sys.stderr)
        for grid_kind in ("karras", "log_snr"):
            for name, kw in MANIFOLD_POLY:
                cells = []
                for nfe in nfes:
                    info = {}
                    x = SAMPLERS[name](oracle, x_T, make_grid(proc, steps_for(name, nfe), grid_kind), space=space,
                                       info=info, **kw)
                    diff = Torus.wrap(x - ref) if wrap else x - ref
                    cells.append((diff.flatten(1).pow(2).sum(1).mean().sqrt().item(), info["nfe"]))
                rows.append((label_, label(name, kw), grid_kind, cells))
    return rows


def manifold_main(args):
    rows = manifold_accuracy(args.n, args.nfe)
    print(f"Command: `python benchmarks/samplers.py --manifold --n {args.n} --nfe {' '.join(map(str, args.nfe))}` "
          f"(torch {torch.__version__}, {args.threads} CPU thread(s))\n")
    print("Trajectory RMSE against the exact probability-flow ODE solution on manifolds (cell: RMSE (NFE used)); "
          f"{args.n} trajectories from the same x_T, exact oracles of `polydiff.testing`.\n")
    print("| space | sampler | grid | " + " | ".join(f"{n} NFE" for n in args.nfe) + " |")
    print("|---|---|---|" + "---|" * len(args.nfe))
    for space, name, grid_kind, cells in rows:
        print(f"| {space} | {name} | {grid_kind} | " + " | ".join(f"{e:.4f} ({u})" for e, u in cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="shared starting points (trajectories) per target")
    ap.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--refs", type=int, default=None,
                    help="reference trajectories for each optimised grid (default 2048; --digits: 64)")
    ap.add_argument("--opt-nfe", type=int, nargs="+", default=[10], help="NFE budgets that get an optimised grid")
    ap.add_argument("--parts", nargs="+", default=["accuracy", "overhead"], choices=["accuracy", "overhead"],
                    help="run the accuracy tables, the overhead table, or both (run the overhead alone)")
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--overhead-steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--quick", action="store_true", help="a check that everything runs (small n, 10 NFE)")
    ap.add_argument("--manifold", action="store_true", help="the torus and zero-CoM tables instead")
    ap.add_argument("--digits", action="store_true", help="the digits quickstart check instead")
    ap.add_argument("--ckpt", default=None, help="--digits: a trained quickstart checkpoint (default: train one)")
    ap.add_argument("--num", type=int, default=1000, help="--digits: samples per evaluation")
    ap.add_argument("--digits-sampler", default="ddim", help="--digits: the sampler to fit and evaluate")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the tables above use 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.refs is None:
        args.refs = 64 if args.digits else 2048

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.manifold:
        return manifold_main(args)
    if args.digits:
        return digits(args, log)
    if args.quick:
        args.n, args.nfe, args.opt_nfe, args.refs, args.repeats = 500, [10], [10], 64, 3
    import diffusers

    kd_ok = True
    results = []
    for target in args.targets if "accuracy" in args.parts else ():
        score, rows, fit_seconds, kd_ok = accuracy(target, args.n, args.nfe, args.refs, args.quick, log, args.opt_nfe)
        results.append((target, score, rows, fit_seconds))
    cmd = ("python benchmarks/samplers.py --quick" if args.quick else
           f"python benchmarks/samplers.py --n {args.n} --nfe {' '.join(map(str, args.nfe))} --refs {args.refs} "
           f"--opt-nfe {' '.join(map(str, args.opt_nfe))} --targets {' '.join(args.targets)} --parts {' '.join(args.parts)}")
    print(f"Command: `{cmd}` (torch {torch.__version__}, diffusers {diffusers.__version__}, k-diffusion "
          f"{'sampling.py loaded' if kd_ok else 'not installed'}, {args.threads} CPU thread(s))")
    for target, score, rows, fit_seconds in results:
        print_accuracy(target, score, rows, args.nfe, fit_seconds)
    if "overhead" in args.parts:
        over = overhead(args.overhead_steps, args.repeats)
        print_overhead(over, args.overhead_steps, args.repeats)


if __name__ == "__main__":
    main()
