"""Real-lesion sanity run: AnoDDPM (Wyatt et al. 2022) on the four BRATS 2013 patients of deepmedic_brats2015.

Data: ``../shared/data/medical/deepmedic_brats2015/{train,validation}/brats_2013_pat000*_1`` (FLAIR, already
z-scored inside the brain by DeepMedic's preprocessing; brain mask; tumour labels ``OTMultiClass``). Each FLAIR
volume is read with the plugin's ``read_nifti`` (RAS), normalised with its ``normalize(..., "anoddpm", mask)``
(AnoDDPM's [μ − σ, μ + 2σ] clip over the brain, mapped to [0, 1]), zeroed outside the brain mask, and cut into
axial slices with ``extract_slices(min_brain_fraction=0.3)``. The slices are cropped to one square box around
the union of the four brain masks (no label used) and area-resized to 64×64; the diffusion models run at 32×32
exactly as in benchmarks/medical.py (same U-Net, DDPM, simplex noise, reconstruction, post-processing).

Patient-disjoint split (the folder split of the data set):
* training: the **tumour-free** slices of pat0005 and pat0006 (``train/``);
* test: every kept slice of pat0003 and pat0004 (``validation/``). Pixel AUROC/AUPRC and Dice are computed on
  their tumour slices (brain pixels, any tumour label = positive); image AUROC scores tumour vs tumour-free
  slices by the maximum of the map.
* threshold (2 % FPR): for each test patient, the 98 % quantile of the maps of the **other** test patient's
  tumour-free slices (2-fold, so no patient's own slices set its threshold); Dice is pooled over both.

Bias, stated plainly: tumour-free slices exist only at the top and bottom of each brain (the tumours span the
middle), so the models and the z-score baseline never see mid-brain anatomy; the tumour-free test slices that
set the threshold and serve as image-AUROC negatives also come from the top and bottom only. Four patients,
CPU-scale model (0.3 M parameters, 1200 steps): a sanity check, not a benchmark. The image AUROC is
confounded by slice position (tumour slices are mid-brain); the script prints the brain-area-only AUROC.

    python benchmarks/medical_brats.py --stage all
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


def train(train_x, names, steps, batch_size, log):
    from polydiff.plugins.medical.train import fit_denoiser

    CACHE.mkdir(parents=True, exist_ok=True)
    xm = B.to_model(train_x)
    for name in names:
        path = CACHE / f"{name}_{steps}.pt"
        if path.exists():
            log(f"{name}: cached {path}")
            continue
        g = torch.Generator().manual_seed({"gauss": 1, "simplex": 2}[name])
        t0 = time.time()
        den = B.make_denoiser()
        space = B.simplex_space() if name == "simplex" else None
        ema = fit_denoiser(den, xm, steps=steps, batch_size=batch_size, lr=5e-4, generator=g, space=space,
                           ema_decay=0.995, augment_flip=True, log=log, log_every=100, max_level=250)
        B.atomic_torch_save(ema.state_dict(), path)
        log(f"{name}: trained {steps} steps in {time.time() - t0:.0f}s -> {path}")


def methods(steps, recon_steps, level, ens_level, ens_k):
    from polydiff.plugins.medical.anomaly import AnoDDPM

    out = {}
    for name, label in (("gauss", "Gaussian"), ("simplex", "simplex")):
        path = CACHE / f"{name}_{steps}.pt"
        if not path.exists():
            continue
        den = B.make_denoiser()
        den.load_state_dict(torch.load(path, weights_only=True))
        den.eval()
        space = B.simplex_space() if name == "simplex" else None
        out[f"AnoDDPM, {label} (λ={level})"] = (AnoDDPM(den, level=level, steps=recon_steps, space=space), 1)
        if ens_k > 1:
            out[f"AnoDDPM, {label} (λ={ens_level}), mean of {ens_k} reconstructions"] = (
                AnoDDPM(den, level=ens_level, steps=recon_steps, space=space), ens_k)
    return out


def evaluate(test, fns, fpr, log):
    from polydiff.plugins.medical import metrics as M
    from polydiff.plugins.medical import postprocess as P

    a, b = TEST_PATIENTS
    rows = []
    for name, fn in fns.items():
        t0 = time.time()
        maps = {p: P.postprocess(fn(d["x"]), d["brain"], median=3) for p, d in test.items()}
        # torchmetrics' binary AUROC/AP apply a sigmoid to scores outside [0, 1]; z-scores reach ~1e5 here and
        # would saturate into ties. Dividing every map of the method by one positive constant keeps all ranks
        # (and the Dice, whose threshold is set on the same scaled maps).
        top = max(float(m.max()) for m in maps.values()) or 1.0
        maps = {p: m / top for p, m in maps.items()}
        preds, segs, tum_maps, tum_brain = [], [], [], []
        for p, other in ((a, b), (b, a)):
            o = test[other]
            h = o["label"] == 0
            th = P.threshold_at_fpr(maps[other][h], fpr, o["brain"][h])
            t = test[p]["label"] == 1
            preds.append((maps[p][t] > th) & test[p]["brain"][t])
            segs.append(test[p]["seg"][t])
            tum_maps.append(maps[p][t])
            tum_brain.append(test[p]["brain"][t])
        mt, st, bt = torch.cat(tum_maps), torch.cat(segs), torch.cat(tum_brain)
        all_maps = torch.cat([maps[a], maps[b]])
        all_brain = torch.cat([test[a]["brain"], test[b]["brain"]])
        labels = torch.cat([test[a]["label"], test[b]["label"]])
        pred = torch.cat(preds)
        r = {
            "pixel_auroc": M.pixel_auroc(mt, st, bt),
            "pixel_auprc": M.pixel_auprc(mt, st, bt),
            "dice": M.dice(pred, st),
            "dice_per_slice": float(M.dice_per_case(pred, st).nanmean()),
            "image_auroc": M.image_auroc(M.image_scores(all_maps, all_brain), labels),
            "oracle_dice": P.oracle_threshold(mt, st, bt)[1],
            "seconds": time.time() - t0,
        }
        log(f"{name}: {r}")
        rows.append((name, r))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=["train", "eval", "all", "baselines"], default="all")
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--models", nargs="+", default=["gauss", "simplex"], choices=["gauss", "simplex"])
    ap.add_argument("--train-steps", type=int, default=1200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--recon-steps", type=int, default=10)
    ap.add_argument("--level", type=int, default=250, help="AnoDDPM noise level λ (paper: 250)")
    ap.add_argument("--ensemble-level", type=int, default=100, help="λ of the averaged rows (as in medical.py)")
    ap.add_argument("--ensemble-k", type=int, default=4)
    ap.add_argument("--fpr", type=float, default=0.02)
    ap.add_argument("--threads", type=int, default=2)
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
        train(train_x, args.models, args.train_steps, args.batch_size, log)
    if args.stage == "train":
        return
    fns = {"per-pixel z-score": B.baselines({"train": train_x})["per-pixel z-score"]}
    if args.stage != "baselines":
        for i, (name, (method, k)) in enumerate(
                methods(args.train_steps, args.recon_steps, args.level, args.ensemble_level, args.ensemble_k).items()):
            fns[name] = B.residual_fn(method, seed=100 + i, k=k)
    rows = evaluate(test, fns, args.fpr, log)
    print(B.table(rows, args.fpr).replace("healthy FPR", "tumour-free FPR (other patient)"))
    # slice-position confound of the image AUROC: brain area alone separates mid-brain from top/bottom slices
    from polydiff.plugins.medical.metrics import image_auroc

    area = torch.cat([d["brain"].flatten(1).sum(1).double() for d in test.values()])
    labels = torch.cat([d["label"] for d in test.values()])
    print(f"\nimage AUROC of the slice's brain area alone (no model): {image_auroc(area / area.max(), labels):.3f}")
    print(f"\n`python benchmarks/medical_brats.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
          f"(train steps {args.train_steps}, batch {args.batch_size}, {args.recon_steps} reconstruction steps, "
          f"torch threads {args.threads})")


if __name__ == "__main__":
    main()
