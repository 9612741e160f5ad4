"""Sampler accuracy and per-step overhead against diffusers and k-diffusion.

Target: the 2-D mixture of 9 Gaussians with widths 0.03–0.3 (``GaussianMixture.grid()``) under the linear-β
DDPM process ``VP("linear", num_steps=1000)`` (= diffusers' default betas). Every sampler gets the same
x_T (at t = 1), the same exact oracle (the mixture's ε*/x̂_0 evaluated at the noise level the sampler asks
for) and the same grid; the error is the RMSE of the final samples against the exact probability-flow ODE
solution from the same x_T (DOP853, rtol = atol = 1e-10, in y = x/α, σ̃ = σ/α down to σ̃ = 0).

Grids: ``karras`` — ρ = 7 between σ̃(t = 1) and σ̃(1/T) then 0 (diffusers ``use_karras_sigmas`` and
k-diffusion ``get_sigmas_karras`` give the same values); ``trailing`` — diffusers' trailing timesteps then
t = 0; ``log_snr`` — uniform log-SNR then 0 (polydiff only). Heun costs 2N − 1 evaluations for N steps
and gets N = (NFE + 1)/2; the cell shows the NFE actually used.

Overhead: seconds per step with a zero-cost model (returns its input) on a (64, 2) batch, 500 steps,
as a ratio to the matching diffusers scheduler (DDIM for samplers without a diffusers counterpart).

Manifolds (``--manifold``): the same trajectory error on the torus and in the zero-centre-of-mass subspace,
with the exact oracles of :mod:`polydiff.testing`. Torus: ``WrappedNormalMixture`` on T² (three components,
one across the seam) under ``VE(0.01, π)`` with ``space=Torus()``, error = RMS of the wrapped difference
against the probability-flow ODE dx/dσ = −σ ∇log p_σ(wrap x) solved in the cover ℝ² (DOP853, rtol = atol =
1e-10) from σ = π to 0.01. Zero-CoM: ``ZeroCoMGaussianMixture`` of 3 components on 4 points in 2-D under the
linear VP with ``space=ZeroCenterOfMass()``, reference as above in y = x/α down to σ̃ = 0.

Usage: python benchmarks/samplers.py [--n 1000] [--nfe 10 20 50]
       python benchmarks/samplers.py --manifold --n 1000 --nfe 10 20 50     (the docs/benchmarks.md manifold table)
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
import types
import warnings

import torch

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

from scipy.integrate import solve_ivp  # noqa: E402

from polydiff import VE, VP, Prediction, Torus, ZeroCenterOfMass  # noqa: E402
from polydiff.samplers import SAMPLERS, make_grid  # noqa: E402
from polydiff.testing import (ExactDenoiser, GaussianMixture, WrappedNormalMixture,  # noqa: E402
                              ZeroCoMGaussianMixture)

F64 = torch.float64
PROC = VP("linear", num_steps=1000)
MIX = GaussianMixture.grid()
ORACLE = ExactDenoiser(MIX, PROC)


def load_k_diffusion():
    """k_diffusion.sampling without the package __init__ (which needs torchvision/skimage, unusable here).
    sampling.py uses only ``utils.append_dims`` from k_diffusion.utils, whose module imports torchvision at
    the top; we give sampling.py a utils module with that one function (same definition: x[(...,) + (None,)*k])."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        return None, "k-diffusion is not installed (pip install k-diffusion --no-deps torchsde torchdiffeq)"
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


def reference(x_T: torch.Tensor) -> torch.Tensor:
    a1 = PROC.alpha(torch.ones(1, dtype=F64))
    s1 = PROC.sigma(torch.ones(1, dtype=F64))
    y0 = (x_T.to(F64) / a1).numpy().ravel()
    n = x_T.shape[0]
    ones = torch.ones(n, dtype=F64)

    def rhs(sig, y):
        y = torch.from_numpy(y).reshape(n, 2)
        return (-sig * MIX.score(y, ones, torch.full((n,), sig, dtype=F64))).numpy().ravel()

    sol = solve_ivp(rhs, (float(s1 / a1), 0.0), y0, method="DOP853", rtol=1e-10, atol=1e-10)
    return torch.from_numpy(sol.y[:, -1]).reshape(n, 2)


def rmse(x, ref):
    return (x.to(F64) - ref).pow(2).sum(1).mean().sqrt().item()


# ---- anchors ----------------------------------------------------------------------------------------
def diffusers_run(kind: str, steps: int, x_T: torch.Tensor, zero_model: bool = False):
    from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                           HeunDiscreteScheduler, PNDMScheduler, UniPCMultistepScheduler)
    lin = dict(beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    sched = {
        "DDIM": lambda: DDIMScheduler(clip_sample=False, timestep_spacing="trailing", **lin),
        "DDPM": lambda: DDPMScheduler(clip_sample=False, timestep_spacing="trailing", **lin),
        "DPM++(2M) Karras": lambda: DPMSolverMultistepScheduler(use_karras_sigmas=True, **lin),
        "DPM++(2M)": lambda: DPMSolverMultistepScheduler(timestep_spacing="trailing", **lin),
        "DPM++(3M)": lambda: DPMSolverMultistepScheduler(solver_order=3, timestep_spacing="trailing", **lin),
        "UniPC Karras": lambda: UniPCMultistepScheduler(use_karras_sigmas=True, **lin),
        "UniPC": lambda: UniPCMultistepScheduler(timestep_spacing="trailing", **lin),
        "Euler": lambda: EulerDiscreteScheduler(timestep_spacing="trailing", **lin),
        "Heun": lambda: HeunDiscreteScheduler(timestep_spacing="trailing", **lin),
        "PNDM": lambda: PNDMScheduler(skip_prk_steps=True, timestep_spacing="trailing", **lin),
    }[kind]()
    sched.set_timesteps(steps)
    # DDIM/DDPM/PNDM are indexed by timesteps; the others by their sigma table (Karras sigmas are fractional).
    sigmas = getattr(sched, "sigmas", None)
    ve_state = kind in ("Euler", "Heun")
    a_T = PROC.alpha(torch.ones(1, dtype=F64)).item()
    x = x_T.clone() if not ve_state else (x_T / a_T) * float(sched.init_noise_sigma) / (1 / a_T)
    if ve_state:  # start from the same y_T = x_T/α(1), whatever init_noise_sigma says
        x = x_T / a_T
    nfe = 0
    for i, k in enumerate(sched.timesteps):
        xin = sched.scale_model_input(x, k) if hasattr(sched, "scale_model_input") else x
        if zero_model:
            eps = xin
        else:
            if sigmas is not None and kind not in ("PNDM",):
                idx = sched.step_index if getattr(sched, "step_index", None) is not None else i
                t = t_of_sigma(sigmas[idx].reshape(1))
            else:
                t = torch.tensor([(float(k) + 1) / 1000], dtype=F64)
            eps = ORACLE(xin.to(F64), t.expand(x.shape[0])).eps.to(x.dtype)
        nfe += 1
        x = sched.step(eps, k, x).prev_sample
    return x, nfe


def kdiff_run(kd, name: str, sigmas: torch.Tensor, x_T: torch.Tensor, zero_model: bool = False):
    count = [0]

    def denoiser(y, sigma):
        count[0] += 1
        if zero_model:
            return y
        t = t_of_sigma(sigma)
        a = PROC.alpha(t)[:, None]
        return ORACLE((a * y).to(F64), t).x0.to(y.dtype)

    a_T = PROC.alpha(torch.ones(1, dtype=F64)).item()
    fn = {"Heun": kd.sample_heun, "LMS": kd.sample_lms, "DPM++(2M)": kd.sample_dpmpp_2m}[name]
    out = fn(denoiser, x_T / a_T, sigmas.to(x_T.dtype), disable=True)
    return out, count[0]


# ---- polydiff -----------------------------------------------------------------------------------------
POLY = [
    ("ddim", {}), ("euler", {}), ("heun", {}), ("pndm", {"warmup": "plms"}), ("dpmpp_2m", {}),
    ("dpmpp_3m", {}), ("unipc", {}), ("unipc", {"order": 3}),
]


def label(name, kw):
    return name + ("" if not kw else "(" + ",".join(f"{k}={v}" for k, v in kw.items()) + ")")


def steps_for(name, nfe):
    return (nfe + 1) // 2 if name.lower().startswith("heun") else nfe


def accuracy(n, nfes):
    x_T = PROC.prior_sample((n, 2), torch.Generator().manual_seed(0)).to(F64)
    t0 = time.time()
    ref = reference(x_T)
    print(f"reference solved in {time.time() - t0:.1f}s", file=sys.stderr)
    rows = []
    for grid_kind in ("karras", "log_snr", "trailing"):
        for name, kw in POLY:
            cells = []
            for nfe in nfes:
                grid = make_grid(PROC, steps_for(name, nfe), grid_kind)
                info = {}
                x = SAMPLERS[name](ORACLE, x_T, grid, **kw, info=info)
                cells.append((rmse(x, ref), info["nfe"]))
            rows.append((f"polydiff {label(name, kw)}", grid_kind, cells))
    for tol in (1e-2, 1e-3, 1e-4):
        info = {}
        x = SAMPLERS["ode_adaptive"](ORACLE, x_T, torch.tensor([1.0, 0.0], dtype=F64), rtol=tol, atol=tol, info=info)
        rows.append((f"polydiff ode_adaptive(tol={tol:g})", "adaptive", [(rmse(x, ref), info["nfe"])]))
    for kind, grid_kind in (("DDIM", "trailing"), ("DPM++(2M) Karras", "karras"), ("UniPC Karras", "karras"),
                            ("DPM++(2M)", "trailing"), ("UniPC", "trailing")):
        cells = []
        for nfe in nfes:
            x, used = diffusers_run(kind, nfe, x_T.float())
            cells.append((rmse(x, ref), used))
        rows.append((f"diffusers {kind}", grid_kind, cells))
    kd, why = load_k_diffusion()
    if kd is None:
        rows.append((f"k-diffusion: {why}", "-", []))
    else:
        for name in ("Heun", "LMS", "DPM++(2M)"):
            cells = []
            for nfe in nfes:
                g = make_grid(PROC, steps_for(name, nfe), "karras")
                sig = PROC.sigma(g) / PROC.alpha(g)
                x, used = kdiff_run(kd, name, sig, x_T.float())
                cells.append((rmse(x, ref), used))
            rows.append((f"k-diffusion {name}", "karras", cells))
    return rows


class ZeroModel(torch.nn.Module):
    process = PROC

    def forward(self, x, t, cond=None):
        return Prediction(x0=x, eps=x)


def per_step(fn, steps, repeats=3):
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def overhead(steps=500):
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    zero = ZeroModel()
    grid = make_grid(PROC, steps, "trailing")
    pairs = [("ddim", {}, "DDIM"), ("ddpm", {}, "DDPM"), ("euler", {}, "Euler"), ("heun", {}, "Heun"),
             ("pndm", {"warmup": "plms"}, "PNDM"), ("dpmpp_2m", {}, "DPM++(2M)"), ("dpmpp_3m", {}, "DPM++(3M)"),
             ("dpmpp_sde", {}, "DPM++(2M)"), ("unipc", {}, "UniPC"), ("euler_maruyama", {}, "DDPM"),
             ("pc", {}, "DDPM")]
    anchor = {}
    rows = []
    for name, kw, kind in pairs:
        if kind not in anchor:
            anchor[kind] = per_step(lambda: diffusers_run(kind, steps, x_T, zero_model=True), steps)
        ours = per_step(lambda: SAMPLERS[name](zero, x_T, grid, torch.Generator().manual_seed(0), **kw), steps)
        rows.append((label(name, kw), ours, kind, anchor[kind]))
    return rows


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
          f"(torch {torch.__version__}, 1 CPU thread)\n")
    print("Trajectory RMSE against the exact probability-flow ODE solution on manifolds (cell: RMSE (NFE used)); "
          f"{args.n} trajectories from the same x_T, exact oracles of `polydiff.testing`.\n")
    print("| space | sampler | grid | " + " | ".join(f"{n} NFE" for n in args.nfe) + " |")
    print("|---|---|---|" + "---|" * len(args.nfe))
    for space, name, grid_kind, cells in rows:
        print(f"| {space} | {name} | {grid_kind} | " + " | ".join(f"{e:.4f} ({u})" for e, u in cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="number of samples (trajectories)")
    ap.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--overhead-steps", type=int, default=500)
    ap.add_argument("--manifold", action="store_true", help="the torus and zero-CoM tables instead")
    args = ap.parse_args()
    if args.manifold:
        return manifold_main(args)
    import diffusers

    rows = accuracy(args.n, args.nfe)
    print(f"Command: `python benchmarks/samplers.py --n {args.n} --nfe {' '.join(map(str, args.nfe))}` "
          f"(torch {torch.__version__}, diffusers {diffusers.__version__}, 1 CPU thread)\n")
    print("Trajectory RMSE against the exact probability-flow ODE solution (cell: RMSE (NFE used)); "
          f"{args.n} trajectories from the same x_T, linear-β DDPM (T = 1000), `GaussianMixture.grid()`.\n")
    print("| sampler | grid | " + " | ".join(f"{n} NFE" for n in args.nfe) + " |")
    print("|---|---|" + "---|" * len(args.nfe))
    for name, grid_kind, cells in rows:
        shown = [f"{e:.4f} ({u})" for e, u in cells] + [""] * (len(args.nfe) - len(cells))
        print(f"| {name} | {grid_kind} | " + " | ".join(shown) + " |")
    poly10 = [c[0] for r, _, c in rows if r.startswith("polydiff") and c and c[0][1] <= args.nfe[0]]
    anch10 = [c[0] for r, _, c in rows if not r.startswith("polydiff") and c and c[0][1] <= args.nfe[0]]
    if poly10 and anch10:
        bp, ba = min(poly10), min(anch10)
        print(f"\nAt ≤ {args.nfe[0]} NFE: best polydiff RMSE {bp[0]:.4f} vs best anchor {ba[0]:.4f} "
              f"(ratio {bp[0] / ba[0]:.2f}; target ≤ 0.5).\n")
    over = overhead(args.overhead_steps)
    print(f"Per-step overhead with a zero-cost model ((64, 2) batch, {args.overhead_steps} steps, best of 3):\n")
    print("| polydiff sampler | µs/step | diffusers scheduler | µs/step | ratio |")
    print("|---|---|---|---|---|")
    for name, ours, kind, theirs in over:
        print(f"| {name} | {ours * 1e6:.0f} | {kind} | {theirs * 1e6:.0f} | {ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
