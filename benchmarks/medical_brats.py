"""Real-lesion check: the IXI-selected methods on the four BRATS 2013 patients of deepmedic_brats2015.

Data: ``../shared/data/medical/deepmedic_brats2015/{train,validation}/brats_2013_pat000*_1`` (FLAIR, already
z-scored inside the brain by DeepMedic's preprocessing; brain mask; tumour labels ``OTMultiClass``). Each FLAIR
volume is read with the plugin's ``read_nifti`` (RAS), normalised with its ``normalize(..., "anoddpm", mask)``
(AnoDDPM's [μ − σ, μ + 2σ] clip over the brain, mapped to [0, 1]), zeroed outside the brain mask, and cut into
axial slices with ``extract_slices(min_brain_fraction=0.3)``. The slices are cropped to one square box around
the union of the four brain masks (no label used) and area-resized to **64×64**; the diffusion models are those
of benchmarks/medical.py (same U-Net, DDPM, simplex noise, max level) trained here, per training seed, at 64×64.

Patient-disjoint split (the folder split of the data set):
* training: the **tumour-free** slices of pat0005 and pat0006 (``train/``), for the diffusion models and the
  z-score / PCA baselines;
* test: every kept slice of pat0003 and pat0004 (``validation/``); AUPRC and Dice pooled over all their slices
  (brain pixels, any tumour label = positive);
* settings: **not selected here** (four patients leave no selection subjects): each family uses the setting that
  the IXI cross-validation of benchmarks/medical.py chose for the same training seed (read from its results
  JSON; the IXI threshold *percentile* is kept, its value is not: intensities differ);
* threshold: for each test patient, that percentile of the maps of the **other** test patient's tumour-free
  slices (2-fold, so no patient's own slices set its threshold).

Bias, stated plainly: tumour-free slices exist only at the top and bottom of each brain (the tumours span the
middle), so the models and the baselines never see mid-brain anatomy and the thresholds come from top/bottom
slices only. With two test patients the bootstrap resamples *slices* (not patients): slices of one patient are
correlated, so the intervals are too narrow and describe these two patients, not new ones. The image AUROC is
confounded by slice position; the script prints the brain-area-only AUROC.

    python benchmarks/medical_brats.py --stage train --seeds 0 1 2
    python benchmarks/medical_brats.py --stage eval --seeds 0 1 2 --ixi-results ~/.cache/polydiff/bench_medical/results.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import medical as B  # noqa: E402  (benchmarks/medical.py: model, simplex noise, residual maps, baselines)

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "medical" / "deepmedic_brats2015"
CACHE = B.CACHE.parent / "bench_medical_brats"
TRAIN_PATIENTS = ("train/brats_2013_pat0005_1", "train/brats_2013_pat0006_1")
TEST_PATIENTS = ("validation/brats_2013_pat0003_1", "validation/brats_2013_pat0004_1")


def load_patient(folder: Path):
    """→ (slices (N, 1, 240, 240) in [0, 1], brain masks, tumour masks) of the kept axial slices."""
    from polydiff.plugins.medical.io import extract_slices, normalize, read_nifti

    vol = read_nifti(folder / "Flair_subtrMeanDivStd.nii.gz")[0]
    mask = read_nifti(folder / "brainmask.nii.gz")[0][0] > 0.5
    seg = read_nifti(folder / "OTMultiClass.nii.gz")[0][0] > 0
    vol, _ = normalize(vol, "anoddpm", mask, source=str(folder))
    vol = (vol + 1) / 2 * mask
    x, _, s = extract_slices(vol, mask, min_brain_fraction=0.3, seg=seg)
    m = extract_slices(mask[None].float(), mask, min_brain_fraction=0.3)[0] > 0.5
    return x, m, s.bool()


def load(root: Path, size: int = 64):
    from polydiff.plugins.medical.data import resize, resize_mask

    raw = {p: load_patient(root / p) for p in TRAIN_PATIENTS + TEST_PATIENTS}
    union = torch.cat([m for _, m, _ in raw.values()]).any(0)[0]
    ys, xs = torch.nonzero(union, as_tuple=True)
    cy, cx = (int(ys.min()) + int(ys.max())) // 2, (int(xs.min()) + int(xs.max())) // 2
    half = max(int(ys.max()) - int(ys.min()), int(xs.max()) - int(xs.min())) // 2 + 2
    h, w = union.shape
    cy, cx = min(max(cy, half), h - half), min(max(cx, half), w - half)
    crop = lambda t: t[..., cy - half:cy + half, cx - half:cx + half]  # noqa: E731
    out = {}
    for p, (x, m, s) in raw.items():
        # the slice label comes from the full-resolution tumour mask (a tiny tumour can vanish when resized)
        out[p] = (resize(crop(x), size), resize_mask(crop(m), size), resize_mask(crop(s), size), s.flatten(1).any(1))
    return out


def split(pats):
    tr = [pats[p] for p in TRAIN_PATIENTS]
    train = torch.cat([x[~tumour] for x, _, _, tumour in tr])
    test = {}
    for p in TEST_PATIENTS:
        x, m, s, tumour = pats[p]
        test[p] = dict(x=x, brain=m, seg=s, label=tumour.long())
    return train, test


def model_path(seed, steps):
    return CACHE / f"simplex{B.SIZE}_seed{seed}_{steps}.pt"


def train(train_x, seeds, steps, batch_size, max_level, budget_min, log):
    from polydiff.plugins.medical.train import fit_denoiser

    CACHE.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        path = model_path(seed, steps)
        if path.exists():
            log(f"seed {seed}: cached {path}")
            continue
        t0 = time.time()
        ema = fit_denoiser(B.make_denoiser(seed), train_x * 2 - 1, steps=steps, batch_size=batch_size, lr=5e-4,
                           generator=torch.Generator().manual_seed(2000 + seed), space=B.simplex_space(),
                           ema_decay=0.995, augment_flip=True, log=log, log_every=100, max_level=max_level,
                           max_seconds=budget_min * 60)
        B.atomic_torch_save({"step": ema.trained_steps, "state_dict": ema.state_dict()}, path)
        log(f"seed {seed}: trained {ema.trained_steps} of {steps} steps in {time.time() - t0:.0f}s -> {path}")


FALLBACK = {  # used only when no IXI results file is given: the papers' / usual values, not selected
    "THOR (Bercea et al. 2024), simplex": {"family": "thor", "level": 250, "repeats": 1, "median": 3, "fpr": 0.02},
    "AnoDDPM (Wyatt et al. 2022), simplex": {"family": "anoddpm", "level": 250, "repeats": 1, "median": 3,
                                             "fpr": 0.02},
    "per-pixel z-score": {"family": "zscore", "blur": 0.0, "median": 3, "fpr": 0.02},
    "PCA residual": {"family": "pca", "blur": 0.0, "k": 16, "median": 3, "fpr": 0.02},
}


def ixi_settings(path, seeds):
    """{family row: [setting dict per seed]} from benchmarks/medical.py's results JSON (baselines: one)."""
    import json

    if path is None:
        return {name: [st] * len(seeds) for name, st in FALLBACK.items()}, "fallback (papers' values; not selected)"
    res = json.loads(Path(path).read_text())["results"]
    out = {}
    for name, r in res.items():
        sts = r["settings"]
        out[name] = [sts[i] if i < len(sts) else sts[-1] for i in range(len(seeds))]
    return out, f"chosen by the IXI cross-validation ({path})"


def evaluate(test, train_x, settings, args, log):
    """Per family and seed: maps of both test patients, per-patient threshold from the other patient's
    tumour-free slices, then slice-bootstrap intervals of the seed-mean (see the module docstring)."""
    from polydiff.plugins.medical.selection import Setting, SliceSet, TestScores, bootstrap_scores
    from polydiff.plugins.medical.postprocess import postprocess, threshold_at_fpr

    a, b = TEST_PATIENTS
    sl = {p: SliceSet(d["x"] * 2 - 1, d["seg"], d["label"], [f"{p}#{i}" for i in range(len(d["label"]))],
                      d["brain"]) for p, d in test.items()}
    both = SliceSet(torch.cat([sl[a].x, sl[b].x]), torch.cat([sl[a].seg, sl[b].seg]),
                    torch.cat([sl[a].label, sl[b].label]), sl[a].subject + sl[b].subject,
                    torch.cat([sl[a].brain, sl[b].brain]))
    results = {}
    for name, per_seed in settings.items():
        scores = []
        for i, seed in enumerate(args.seeds):
            st = Setting.from_dict(per_seed[i])
            if st.family in ("thor", "anoddpm"):
                path = model_path(seed, args.train_steps)
                if not path.exists():
                    log(f"{name}: no model for seed {seed} (run --stage train)")
                    continue
                den = B.make_denoiser(seed)
                den.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
                den.eval()
            elif i > 0:
                continue  # deterministic baselines: once
            else:
                den = None
            maps_fn = B.maps_for(den, train_x * 2 - 1, args.recon_steps, seed, log)
            maps = {p: postprocess(maps_fn(st.family, dict(st.params), sl[p].x), sl[p].brain, median=st.median)
                    for p in (a, b)}
            thr = {}
            for p, other in ((a, b), (b, a)):
                h = sl[other].label == 0
                thr[p] = threshold_at_fpr(maps[other][h], st.fpr, sl[other].brain[h])
            per_item = torch.cat([torch.full((len(sl[p]),), thr[p]) for p in (a, b)])
            scores.append(TestScores(st, torch.cat([maps[a], maps[b]]), both, per_item))
        if scores:
            results[name] = bootstrap_scores(scores, n_boot=args.n_boot, seed=args.boot_seed)
            log(f"{name}: AUPRC {results[name]['auprc']}, Dice {results[name]['dice']}")
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=["train", "eval", "all"], default="all")
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-steps", type=int, default=3000)
    ap.add_argument("--budget-min", type=float, default=60.0, help="wall-time cap per seed (minutes)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-level", type=int, default=250)
    ap.add_argument("--recon-steps", type=int, default=10)
    ap.add_argument("--ixi-results", type=Path, default=None, help="results JSON of benchmarks/medical.py --stage eval")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--boot-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    pats = load(args.root)
    train_x, test = split(pats)
    log(f"training slices (tumour-free, pat0005+pat0006): {len(train_x)}; test: " + ", ".join(
        f"{p.split('/')[-1]} {int(d['label'].sum())} tumour / {int((d['label'] == 0).sum())} tumour-free"
        for p, d in test.items()))
    if args.stage in ("train", "all"):
        train(train_x, args.seeds, args.train_steps, args.batch_size, args.max_level, args.budget_min, log)
    if args.stage == "train":
        return
    settings, source = ixi_settings(args.ixi_results, args.seeds)
    results = evaluate(test, train_x, settings, args, log)
    print(B.table(results, {s: "see medical.py" for s in args.seeds}).split("\n\nTraining")[0])
    print(f"\nSettings: {source}. Intervals: {args.n_boot} bootstrap resamples of the test *slices* (two patients; "
          "too narrow for new patients, see the docstring).")
    from polydiff.plugins.medical.metrics import image_auroc

    area = torch.cat([d["brain"].flatten(1).sum(1).double() for d in test.values()])
    labels = torch.cat([d["label"] for d in test.values()])
    print(f"\nimage AUROC of the slice's brain area alone (no model): {image_auroc(area / area.max(), labels):.3f}")
    print(f"\n`python benchmarks/medical_brats.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
          f"(train steps {args.train_steps}, batch {args.batch_size}, {args.recon_steps} reconstruction steps, "
          f"torch threads {args.threads})")


if __name__ == "__main__":
    main()
