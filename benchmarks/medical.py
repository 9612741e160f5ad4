"""Medical anomaly detection benchmark on ixi_synth_64 (../shared/data/medical/derived/ixi_synth_64.npz).

Protocol (Baur et al. 2021; Wyatt et al. 2022): models see healthy training slices only (the
classifier-free model also sees the image-level labels of the *validation* subjects' lesion slices,
which is the weak supervision of Sanchez et al. 2022); anomaly maps are |x − x̂|, 3×3 median filtered,
restricted to the brain mask; the threshold is the 98 % quantile of the maps of the healthy validation
slices (2 % healthy false-positive rate) — no test label is used. Metrics are pooled over the 80 test
slices of held-out subjects (40 with 1–3 synthetic lesions). The per-pixel z-score and PCA(k = 16)
residual baselines are computed here with the same post-processing.

CPU size: models are trained only on the levels they are queried at (t ≤ 250 for AnoDDPM, t ≤ 500
for the counterfactual method; ``max_level`` in plugins/medical/train.py). Diffusion models run at 32×32
(2×2 average pooling of the 64×64 slices), reconstruct in 10 strided steps; their residual maps
are bilinearly upsampled to 64×64 before post-processing, so every method is scored on the same
64×64 masks as the baselines.

    python benchmarks/medical.py --stage all      # train (cached) + evaluate, prints the markdown table
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

torch.set_num_threads(1)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "medical" / "derived" / "ixi_synth_64.npz"
CACHE = Path(os.environ.get("POLYDIFF_BENCH_CACHE", Path.home() / ".cache" / "polydiff" / "bench_medical"))


def load(path):
    d = np.load(path)
    f = lambda k: torch.from_numpy(d[k].astype(np.float32))[:, None]  # noqa: E731
    return dict(
        train=f("train_img"), val=f("val_img"), test=f("test_img"),
        val_label=torch.from_numpy(d["val_label"]).long(), test_label=torch.from_numpy(d["test_label"]).long(),
        test_seg=torch.from_numpy(d["test_seg"])[:, None].bool(), test_subject=list(d["test_subject"]),
        brain=torch.from_numpy(d["brain"])[None, None].bool(),
    )


def to_model(x):  # [0, 1] 64×64 → [−1, 1] 32×32
    return torch.nn.functional.avg_pool2d(x, 2) * 2 - 1


def upsample(m):
    return torch.nn.functional.interpolate(m, scale_factor=2, mode="bilinear", align_corners=False)


def make_denoiser(num_classes=None, seed=0):
    from polydiff import VP, Denoiser
    from polydiff.backbones import UNet

    torch.manual_seed(seed)
    net = UNet(dims=2, in_channels=1, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
               attention_levels=(), num_classes=num_classes)
    return Denoiser(net, VP("linear", num_steps=1000), parameterization="eps")


def simplex_space():
    from polydiff import Euclidean
    from polydiff.plugins.medical.simplex import SimplexNoise

    # Paper: ν = 1/64, 6 octaves at 256² (top octave 1/2 cycle/pixel). Same relative scale at 32²:
    # ν = 1/8, 3 octaves (top octave again 1/2 cycle/pixel), persistence 0.8 as in the paper.
    return Euclidean(noise=SimplexNoise(octaves=3, persistence=0.8, frequency=1 / 8))


MODELS = ("gauss", "simplex", "cfg")


def train(data, names, steps, batch_size, log):
    from polydiff.plugins.medical.train import fit_denoiser

    CACHE.mkdir(parents=True, exist_ok=True)
    x_train = to_model(data["train"])
    for name in names:
        path = CACHE / f"{name}_{steps}.pt"
        if path.exists():
            log(f"{name}: cached {path}")
            continue
        g = torch.Generator().manual_seed({"gauss": 1, "simplex": 2, "cfg": 3}[name])
        t0 = time.time()

        def save(ema, step, name=name):  # partial checkpoints: a cut-short run can still be evaluated
            atomic_torch_save({"step": step, "state_dict": ema.state_dict()}, CACHE / f"{name}_{steps}.partial.pt")

        ckpt = dict(checkpoint_every=100, checkpoint_fn=save)
        if name == "cfg":
            les = data["val_label"] == 1
            x = torch.cat([x_train, to_model(data["val"][les])])
            y = torch.cat([torch.zeros(len(x_train), dtype=torch.long), torch.ones(int(les.sum()), dtype=torch.long)])
            den = make_denoiser(num_classes=2)
            ema = fit_denoiser(den, x, labels=y, null_label=2, p_uncond=0.2, steps=steps, batch_size=batch_size,
                               lr=5e-4, generator=g, ema_decay=0.995, augment_flip=True, log=log, log_every=100,
                               max_level=500, **ckpt)
        else:
            den = make_denoiser()
            space = simplex_space() if name == "simplex" else None
            ema = fit_denoiser(den, x_train, steps=steps, batch_size=batch_size, lr=5e-4, generator=g, space=space,
                               ema_decay=0.995, augment_flip=True, log=log, log_every=100, max_level=250, **ckpt)
        atomic_torch_save(ema.state_dict(), path)
        log(f"{name}: trained {steps} steps in {time.time() - t0:.0f}s -> {path}")


def baselines(data):
    tr = data["train"]
    mu, sd = tr.mean(0, keepdim=True), tr.std(0, keepdim=True)
    _, _, vt = torch.linalg.svd((tr - mu).flatten(1), full_matrices=False)
    v = vt[:16]

    def zscore(x):
        return (x - mu).abs() / (sd + 1e-6)

    def pca(x):
        r = (x - mu).flatten(1)
        return (r - r @ v.T @ v).abs().reshape(x.shape)

    return {"per-pixel z-score": zscore, "PCA(k=16) residual": pca}


def diffusion_methods(data, steps_trained, recon_steps, levels=(250,), ensemble=None):
    """{row name: (method, number of reconstructions averaged)}; ``ensemble`` = (λ, K) adds AnoDDPM rows at
    level λ whose residual maps are averaged over K reconstructions with different noise."""
    from polydiff.plugins.medical.anomaly import AnoDDPM, CFGCounterfactual

    out = {}
    for name in MODELS:
        path = CACHE / f"{name}_{steps_trained}.pt"
        partial = CACHE / f"{name}_{steps_trained}.partial.pt"
        den = make_denoiser(num_classes=2 if name == "cfg" else None)
        if path.exists():
            den.load_state_dict(torch.load(path, weights_only=True))
            suffix = f" [{steps_trained} steps]"
        elif partial.exists():
            blob = torch.load(partial, weights_only=True)
            den.load_state_dict(blob["state_dict"])
            suffix = f" [{blob['step']} of {steps_trained} planned steps]"
        else:
            continue
        den.eval()
        for lam in levels:
            if name == "gauss":
                out[f"AnoDDPM, Gaussian (λ={lam})" + suffix] = (AnoDDPM(den, level=lam, steps=recon_steps), 1)
            elif name == "simplex":
                out[f"AnoDDPM, simplex (λ={lam})" + suffix] = (
                    AnoDDPM(den, level=lam, steps=recon_steps, space=simplex_space()), 1)
        if ensemble is not None and name in ("gauss", "simplex"):
            lam, k = ensemble
            space = simplex_space() if name == "simplex" else None
            label = "simplex" if name == "simplex" else "Gaussian"
            out[f"AnoDDPM, {label} (λ={lam}), mean of {k} reconstructions" + suffix] = (
                AnoDDPM(den, level=lam, steps=recon_steps, space=space), k)
        if name == "cfg":
            out["Classifier-free counterfactual (L=500, w=3)" + suffix] = (CFGCounterfactual(
                den, level=500, steps=recon_steps, guidance_scale=3.0, healthy_label=0, null_label=2), 1)
    return out


def wolleb_method(data, steps_trained, recon_steps, clf_steps, log):
    """Wolleb et al. 2022: the unconditional DDPM is the classifier-free model's null-label branch (trained on
    the same healthy + lesion slices the paper's DDPM sees), the noise-aware classifier is trained here on the
    same labels (healthy training slices vs the validation subjects' lesion slices), L = 500, s = 100."""
    from polydiff.plugins.medical.anomaly import WollebCounterfactual
    from polydiff.plugins.medical.networks import NoisyClassifier
    from polydiff.plugins.medical.train import fit_classifier

    path = CACHE / f"cfg_{steps_trained}.pt"
    if not path.exists():
        return {}
    den = make_denoiser(num_classes=2)
    den.load_state_dict(torch.load(path, weights_only=True))
    den.eval()
    torch.manual_seed(7)
    clf = NoisyClassifier(in_channels=1, num_classes=2, base_channels=16, channel_mults=(1, 2, 2))
    cpath = CACHE / f"classifier_{clf_steps}.pt"
    if cpath.exists():
        clf.load_state_dict(torch.load(cpath, weights_only=True))
    else:
        les = data["val_label"] == 1
        x = torch.cat([to_model(data["train"]), to_model(data["val"][les])])
        y = torch.cat([torch.zeros(len(data["train"]), dtype=torch.long), torch.ones(int(les.sum()), dtype=torch.long)])

        class _Upto500:  # the classifier is queried at t ≤ L only, like the diffusion model
            def __init__(self, p):
                self.p = p

            def sample_time(self, n, generator=None):
                return torch.randint(1, 501, (n,), generator=generator).double() / 1000

            def q_sample(self, *a):
                return self.p.q_sample(*a)

        acc = fit_classifier(clf, _Upto500(den.process), x, y, steps=clf_steps, batch_size=32,
                             generator=torch.Generator().manual_seed(8), log=log, log_every=100)
        log(f"classifier: train accuracy (last 100 steps) {acc:.3f}")
        torch.save(clf.state_dict(), cpath)
    clf.eval()
    return {f"Wolleb et al. (L=500, s=100) [{steps_trained} steps; classifier {clf_steps} steps]":
            (WollebCounterfactual(den, clf, level=500, steps=recon_steps, scale=100.0, null_label=2), 1)}


def residual_fn(method, seed, k=1):
    def fn(x):
        xm = to_model(x)
        maps = []
        for j in range(k):
            g = torch.Generator().manual_seed(seed + 1000 * j)
            parts = []
            for i in range(0, xm.shape[0], 40):
                parts.append(method.counterfactual(xm[i:i + 40], generator=g))
            maps.append((xm - torch.cat(parts)).abs() / 2)  # [0, 1] intensity units
        return upsample(torch.stack(maps).mean(0))
    return fn


def evaluate(data, fns, fpr, log):
    from polydiff.plugins.medical import metrics as M
    from polydiff.plugins.medical import postprocess as P

    brain = data["brain"]
    healthy_val = data["val"][data["val_label"] == 0]
    rows = []
    for name, fn in fns.items():
        t0 = time.time()
        mt = P.postprocess(fn(data["test"]), brain, median=3)
        mh = P.postprocess(fn(healthy_val), brain, median=3)
        th = P.threshold_at_fpr(mh, fpr, brain)
        r = M.evaluate_maps(mt, data["test_seg"], th, brain, data["test_label"], data["test_subject"])
        r["oracle_dice"] = P.oracle_threshold(mt, data["test_seg"], brain)[1]
        r["seconds"] = time.time() - t0
        log(f"{name}: {r}")
        rows.append((name, r))
    return rows


def table(rows, fpr):
    lines = [
        f"| method | pixel AUROC | AUPRC | Dice @ {fpr:.0%} healthy FPR | per-slice Dice | image AUROC "
        "| oracle Dice (uses labels) | eval s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['pixel_auroc']:.3f} | {r['pixel_auprc']:.3f} | {r['dice']:.3f} | "
                     f"{r.get('dice_per_slice', float('nan')):.3f} | {r.get('image_auroc', float('nan')):.3f} | "
                     f"{r['oracle_dice']:.3f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=["train", "eval", "all", "baselines"], default="all")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--train-steps", type=int, default=1200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--recon-steps", type=int, default=10)
    ap.add_argument("--levels", type=int, nargs="+", default=[250], help="AnoDDPM noise levels λ (paper: 250)")
    ap.add_argument("--fpr", type=float, default=0.02)
    ap.add_argument("--ensemble-level", type=int, default=100,
                    help="λ of the averaged-reconstruction rows (chosen on the validation subjects)")
    ap.add_argument("--ensemble-k", type=int, default=4, help="reconstructions averaged (1 = no such rows)")
    ap.add_argument("--wolleb-classifier-steps", type=int, default=0,
                    help="train the noise-aware classifier this long and add the Wolleb et al. row (0 = skip)")
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    data = load(args.data)
    if args.stage in ("train", "all"):
        train(data, args.models, args.train_steps, args.batch_size, log)
    if args.stage == "train":
        return
    fns = dict(baselines(data))
    if args.stage != "baselines":
        ens = (args.ensemble_level, args.ensemble_k) if args.ensemble_k > 1 else None
        methods = diffusion_methods(data, args.train_steps, args.recon_steps, args.levels, ens)
        if args.wolleb_classifier_steps > 0:
            methods.update(wolleb_method(data, args.train_steps, args.recon_steps, args.wolleb_classifier_steps, log))
        for i, (name, (method, k)) in enumerate(methods.items()):
            fns[name] = residual_fn(method, seed=100 + i, k=k)
    rows = evaluate(data, fns, args.fpr, log)
    print(table(rows, args.fpr))
    print(f"\n`python benchmarks/medical.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
          f"(train steps {args.train_steps}, batch {args.batch_size}, {args.recon_steps} reconstruction steps, "
          f"torch threads 1)")


if __name__ == "__main__":
    main()
