"""Medical anomaly detection benchmark on ixi_synth_64 with subject-level model selection and intervals.

Data: ``../shared/data/medical/derived/ixi_synth_64.npz`` only (341 healthy training subjects; 59 validation
subjects and 80 test subjects, one 64×64 slice each, half of them with 1–3 synthetic lesions).

Protocol (every method family treated alike):

1. **Training** (diffusion, per training seed): a DDPM (T = 1000, linear betas, ε-prediction, the engine's
   U-Net) on the healthy training slices at the data's full **64×64**, with simplex noise (Wyatt et al. 2022;
   4 octaves from ν = 1/16, persistence 0.8: the paper's 6 octaves from 1/64 at 256² scaled to 64², same top
   octave) on the levels it is queried at (t ≤ max level). The z-score and PCA baselines are fitted on the same
   training slices.
2. **Selection** (per seed and family): subject-level k-fold cross-validation on the *validation* subjects only
   (``polydiff.plugins.medical.selection.cross_validate``): noise level λ and the number K of averaged
   reconstructions (diffusion), Gaussian smoothing of the score map (z-score, PCA) and the number of
   components (PCA), the median-filter size and the threshold percentile (healthy false-positive rate). In each
   fold the threshold is set on the healthy slices of the other folds' subjects; the criterion is the mean of
   the fold's pooled AUPRC and Dice. No test subject is used.
3. **Test**: the chosen setting, its threshold from all healthy validation slices, on the 80 test subjects.
   AUPRC and Dice with 95 % percentile-bootstrap intervals over test subjects (1000 resamples); with several
   training seeds the interval is that of the seed-mean (each resample re-weights every seed's maps with the
   same subject draw), and the per-seed values are printed too.

Families: THOR (Bercea et al. 2024, implicit guidance by temporal harmonisation), AnoDDPM (Wyatt et al. 2022)
on the same model, per-pixel z-score, PCA residual. Runs on the CPU in stages (models are cached):

    python benchmarks/medical.py --stage train --seeds 0 1 2            # 64×64, step-bound, ≤ 60 min per seed
    python benchmarks/medical.py --stage eval --seeds 0 1 2             # CV + test table (markdown) + JSON
    python benchmarks/medical.py --stage all --seeds 0 --train-steps 20 --recon-steps 2 --tiny   # smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from polydiff.checkpointing import atomic_torch_save

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "medical" / "derived" / "ixi_synth_64.npz"
CACHE = Path(os.environ.get("POLYDIFF_BENCH_CACHE", Path.home() / ".cache" / "polydiff" / "bench_medical"))
SIZE = 64


def load(path=DATA):
    """→ dict(train (N, 1, 64, 64) in [−1, 1], selection / test :class:`SliceSet` of the val / test subjects)."""
    from polydiff.plugins.medical.selection import SliceSet

    d = np.load(path)
    img = lambda k: torch.from_numpy(d[k].astype(np.float32))[:, None] * 2 - 1  # noqa: E731
    brain = torch.from_numpy(d["brain"])[None, None].bool()

    def part(p):
        return SliceSet(img(f"{p}_img"), torch.from_numpy(d[f"{p}_seg"])[:, None].bool(),
                        torch.from_numpy(d[f"{p}_label"]).long(), list(d[f"{p}_subject"]), brain)

    return {"train": img("train_img"), "train_subject": list(d["train_subject"]), "selection": part("val"),
            "test": part("test")}


def make_denoiser(seed=0):
    from polydiff import VP, Denoiser
    from polydiff.backbones import UNet

    torch.manual_seed(seed)
    net = UNet(dims=2, in_channels=1, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
               attention_levels=())
    return Denoiser(net, VP("linear", num_steps=1000), parameterization="eps")


def simplex_space():
    from polydiff import Euclidean
    from polydiff.plugins.medical.simplex import SimplexNoise

    return Euclidean(noise=SimplexNoise(octaves=4, persistence=0.8, frequency=1 / 16))


def model_path(seed, steps):
    return CACHE / f"simplex{SIZE}_seed{seed}_{steps}.pt"


def train(data, seeds, steps, batch_size, max_level, budget_min, log):
    from polydiff.plugins.medical.train import fit_denoiser

    CACHE.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        path = model_path(seed, steps)
        if path.exists():
            log(f"seed {seed}: cached {path}")
            continue
        t0 = time.time()
        partial = path.with_suffix(".partial.pt")

        def save(ema, step):  # a cut-short run can still be evaluated
            atomic_torch_save({"step": step, "state_dict": ema.state_dict()}, partial)

        ema = fit_denoiser(make_denoiser(seed), data["train"], steps=steps, batch_size=batch_size, lr=5e-4,
                           generator=torch.Generator().manual_seed(1000 + seed), space=simplex_space(),
                           ema_decay=0.995, augment_flip=True, log=log, log_every=100, max_level=max_level,
                           checkpoint_every=100, checkpoint_fn=save, max_seconds=budget_min * 60)
        atomic_torch_save({"step": ema.trained_steps, "state_dict": ema.state_dict()}, path)
        log(f"seed {seed}: trained {ema.trained_steps} of {steps} steps in {time.time() - t0:.0f}s -> {path}")


def load_model(seed, steps):
    path = model_path(seed, steps)
    if not path.exists():
        path = path.with_suffix(".partial.pt")
        if not path.exists():
            return None, 0
    blob = torch.load(path, weights_only=True)
    den = make_denoiser(seed)
    den.load_state_dict(blob["state_dict"])
    return den.eval(), int(blob["step"])


def maps_for(den, train_x, recon_steps, seed, log):
    """The selection API's maps function for one training seed (plugins/medical/detect.py ``MapBank``)."""
    from polydiff.plugins.medical.anomaly import THOR, AnoDDPM
    from polydiff.plugins.medical.detect import MapBank

    def make(family, level):
        return (THOR if family == "thor" else AnoDDPM)(den, level=level, steps=recon_steps, space=simplex_space())

    return MapBank(make, seed=10_000 * seed, train=train_x, batch=40, log=log)


def candidates(args):
    from polydiff.plugins.medical.selection import settings_grid

    post = dict(medians=args.medians, fprs=args.fprs)
    diff = {"level": args.levels, "repeats": args.repeats}
    return {
        "THOR (Bercea et al. 2024), simplex": settings_grid("thor", diff, **post),
        "AnoDDPM (Wyatt et al. 2022), simplex": settings_grid("anoddpm", diff, **post),
        "per-pixel z-score": settings_grid("zscore", {"blur": args.blurs}, **post),
        "PCA residual": settings_grid("pca", {"k": args.pca_k, "blur": args.blurs}, **post),
    }


def evaluate(data, args, log):
    """Per seed: CV per family on the selection subjects, then the chosen setting on the test subjects."""
    from polydiff.plugins.medical.selection import bootstrap_scores, check_disjoint, cross_validate, score_on_test

    sel, test = data["selection"], data["test"]
    check_disjoint(sel, test)
    if set(data["train_subject"]) & (set(sel.subject) | set(test.subject)):
        raise SystemExit("training subjects overlap the validation/test subjects")
    cands = candidates(args)
    per_family = {name: [] for name in cands}
    cv_rows = {name: [] for name in cands}
    trained = {}
    for seed in args.seeds:
        den, steps = load_model(seed, args.train_steps)
        if den is None:
            log(f"seed {seed}: no model (run --stage train); diffusion rows skip it")
        trained[seed] = steps
        maps = maps_for(den, data["train"], args.recon_steps, seed, log)
        chosen = {}
        for name, settings in cands.items():
            if den is None and settings[0].family in ("thor", "anoddpm"):
                continue
            if settings[0].family in ("zscore", "pca") and seed != args.seeds[0]:
                continue  # deterministic baselines: one "seed" is enough
            t0 = time.time()
            best, rows = cross_validate(settings, maps, sel, k=args.folds, seed=args.cv_seed, criterion=args.criterion)
            chosen[name] = best
            cv_rows[name].append(rows)
            log(f"seed {seed} {name}: CV chose {best.as_dict()} ({time.time() - t0:.0f}s)")
        # only after every family's choice: the test subjects
        for name, best in chosen.items():
            per_family[name].append(score_on_test(best, maps, sel, test))
    results = {name: {**bootstrap_scores(s, n_boot=args.n_boot, seed=args.boot_seed), "cv": cv_rows[name]}
               for name, s in per_family.items() if s}
    return results, paired_differences(per_family, args), trained


def paired_differences(per_family, args):
    """Each diffusion family minus each baseline (:func:`~polydiff.plugins.medical.selection.bootstrap_difference`)."""
    from polydiff.plugins.medical.selection import bootstrap_difference

    diffusion = [n for n, s in per_family.items() if s and s[0].setting.family in ("thor", "anoddpm")]
    baselines = [n for n, s in per_family.items() if s and s[0].setting.family in ("zscore", "pca")]
    return {f"{a} − {b}": bootstrap_difference(per_family[a], per_family[b], args.n_boot, args.boot_seed)
            for a in diffusion for b in baselines}


def difference_table(diffs):
    lines = ["| difference (paired subject bootstrap) | ΔAUPRC [95 % CI] | ΔDice [95 % CI] |", "|---|---|---|"]
    for name, r in diffs.items():
        a, d = r["auprc"], r["dice"]
        lines.append(f"| {name} | {a[0]:+.3f} [{a[1]:+.3f}, {a[2]:+.3f}] | {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] |")
    return "\n".join(lines)


def table(results, trained):
    lines = ["| method | seeds | chosen setting (CV, per seed) | AUPRC [95 % CI] | Dice [95 % CI] | per-seed AUPRC | "
             "per-seed Dice | pixel AUROC | image AUROC |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        st = ", ".join(f"{k}={v}" for k, v in r["setting"].items() if k != "family")
        a, d = r["auprc"], r["dice"]
        ps = lambda v: " / ".join(f"{x:.3f}" for x in v)  # noqa: E731
        lines.append(f"| {name} | {r['num_seeds']} | {st} | {a[0]:.3f} [{a[1]:.3f}, {a[2]:.3f}] | "
                     f"{d[0]:.3f} [{d[1]:.3f}, {d[2]:.3f}] | {ps(r['auprc_per_seed'])} | {ps(r['dice_per_seed'])} | "
                     f"{r.get('pixel_auroc', float('nan')):.3f} | {r.get('image_auroc', float('nan')):.3f} |")
    steps = ", ".join(f"seed {s}: {n}" for s, n in trained.items())
    return "\n".join(lines) + f"\n\nTraining steps taken per seed: {steps}."


def main(argv=None):
    from polydiff.plugins.medical import selection as S

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=["train", "eval", "all"], default="all")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (≥ 3 for the report)")
    ap.add_argument("--train-steps", type=int, default=3000, help="Adam steps per seed (step-bound)")
    ap.add_argument("--budget-min", type=float, default=60.0, help="wall-time cap per seed (minutes)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-level", type=int, default=250, help="train on t ≤ this level (the largest λ queried)")
    ap.add_argument("--recon-steps", type=int, default=10)
    ap.add_argument("--levels", type=int, nargs="+", default=list(S.LEVELS), help="candidate λ (paper: 250)")
    ap.add_argument("--repeats", type=int, nargs="+", default=list(S.REPEATS), help="candidate K")
    ap.add_argument("--medians", type=int, nargs="+", default=list(S.MEDIANS))
    ap.add_argument("--fprs", type=float, nargs="+", default=list(S.FPRS), help="candidate healthy FPRs")
    ap.add_argument("--blurs", type=float, nargs="+", default=[0.0, 1.0, 2.0], help="baselines' map smoothing σ (px)")
    ap.add_argument("--pca-k", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--criterion", default="mean", choices=["mean", "dice", "auprc"])
    ap.add_argument("--cv-seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--boot-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="smoke-test sizes: one λ, K ≤ 2, 100 resamples")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default: CACHE/results.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tiny:
        args.levels, args.repeats, args.n_boot, args.pca_k = args.levels[:1], [1, 2], 100, [8]

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    data = load(args.data)
    if args.stage in ("train", "all"):
        train(data, args.seeds, args.train_steps, args.batch_size, args.max_level, args.budget_min, log)
    if args.stage == "train":
        return
    results, diffs, trained = evaluate(data, args, log)
    from polydiff.plugins.medical.selection import write_json

    out = args.out or CACHE / "results.json"
    write_json({"command": " ".join(sys.argv), "trained_steps": trained, "results": results, "differences": diffs},
               out)
    print(table(results, trained))
    print()
    print(difference_table(diffs))
    print(f"\n`python benchmarks/medical.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
          f"({args.folds}-fold subject CV on {len(data['selection'])} validation subjects, {args.n_boot} subject "
          f"bootstrap resamples of {len(data['test'])} test subjects, {args.recon_steps} reconstruction steps; "
          f"results {out})")


if __name__ == "__main__":
    main()
