"""Detection and evaluation with a trained checkpoint: the ``polydiff detect`` and
``polydiff train-classifier`` commands and the metric table behind ``polydiff evaluate``.

``detect`` reads a NIfTI volume/slice or a PNG slice, normalises it as the model's training data was
(the normalisation name and image size are read from the checkpoint's data config), produces the healthy
counterfactual with the chosen method (:mod:`.anomaly`), and writes the anomaly map (NIfTI with the
input's affine and header, or PNG) and a PNG panel.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from polydiff import ConfigError, DataError
from polydiff.io import atomic_write

Tensor = torch.Tensor


# -- loading ------------------------------------------------------------------------------------------
def load_checkpoint(path):
    """(DiffusionModule, data hyper-parameters dict) from a ``polydiff fit`` checkpoint."""
    from polydiff.checkpointing import load_checkpoint
    from polydiff.training import DiffusionModule

    raw = load_checkpoint(path)
    module = DiffusionModule.from_checkpoint(path, checkpoint=raw)
    data_hp = raw.get("datamodule_hyper_parameters") or {}
    if not isinstance(data_hp, dict):
        raise DataError(f"{path}: datamodule_hyper_parameters is a {type(data_hp).__name__}, expected a mapping")
    data_hp = dict(data_hp)
    return module, data_hp


def build_method(module, method: str = "anoddpm", level=None, steps: int = 25, guidance: float = 3.0,
                 noise: str = "model", classifier=None, scale: float = 100.0):
    """A counterfactual method object for ``module`` (EMA weights).

    ``noise``: ``model`` uses the space the model was trained with (simplex if it was), ``gaussian`` or
    ``simplex`` override it for AnoDDPM.
    """
    from polydiff import Euclidean

    from .anomaly import AnoDDPM, CFGCounterfactual, WollebCounterfactual

    model = module.sampling_model()
    model.eval()
    if method == "anoddpm":
        space = module.space
        if noise == "gaussian":
            space = Euclidean()
        elif noise == "simplex":
            from .simplex import SimplexNoise

            space = Euclidean(noise=SimplexNoise())
        elif noise != "model":
            raise ConfigError(f"noise must be model, gaussian or simplex; got {noise!r}")
        return AnoDDPM(model, level=250 if level is None else level, steps=steps, space=space)
    if method == "cfg":
        k = module.hparams.get("num_classes")
        if not k:
            raise ConfigError("method 'cfg' needs a class-conditional checkpoint (num_classes set in the model)")
        return CFGCounterfactual(model, level=500 if level is None else level, steps=steps, guidance_scale=guidance,
                                 healthy_label=0, null_label=int(k))
    if method == "wolleb":
        if classifier is None:
            raise ConfigError("method 'wolleb' needs --classifier (a file written by `polydiff train-classifier`)")
        k = module.hparams.get("num_classes")
        return WollebCounterfactual(model, classifier, level=500 if level is None else level, steps=steps,
                                    scale=scale, healthy_label=0, null_label=int(k) if k else None)
    raise ConfigError(f"method must be anoddpm, cfg or wolleb; got {method!r}")


def counterfactual_maps(method, x: Tensor, batch: int = 32, seed: int = 0, repeats: int = 1):
    """Counterfactuals (model representation, of the first repeat) and raw residual maps |x − x̂|/2
    (intensity units [0, 1]), channel-averaged, for x (N, C, H, W) in [−1, 1]. ``repeats`` > 1 averages the
    maps of that many reconstructions with different noise (not part of the papers' protocols; it lowers the
    sampling noise of the map, see docs/benchmarks.md)."""
    from .postprocess import anomaly_map

    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    maps, first = [], None
    for r in range(repeats):
        g = torch.Generator().manual_seed(seed + 1000 * r)
        outs = []
        for i in range(0, x.shape[0], batch):
            outs.append(method.counterfactual(x[i:i + batch], generator=g))
        xh = torch.cat(outs)
        first = xh if first is None else first
        maps.append(anomaly_map(x, xh, "abs", "mean") / 2)
    return first, torch.stack(maps).mean(0)


def load_classifier(path):
    from .networks import NoisyClassifier

    from polydiff.checkpointing import load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"classifier file {path} not found")
    blob = load_checkpoint(path)
    if not isinstance(blob.get("state_dict"), dict) or not isinstance(blob.get("init_args"), dict):
        raise DataError(f"{path}: not a classifier written by `polydiff train-classifier` (keys {sorted(map(str, blob))})")
    try:
        clf = NoisyClassifier(**blob["init_args"])
        clf.load_state_dict(blob["state_dict"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path}: classifier weights or init_args do not fit NoisyClassifier "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return clf.eval()


# -- evaluation (polydiff evaluate) -----------------------------------------------------------------------
def sample_metrics(samples, datamodule) -> dict[str, float]:
    """Generation sanity metric: Wasserstein-1 distance between the pixel-intensity distributions of the
    samples and of the reference (validation) slices, in [0, 1] intensity units (0 = same histogram)."""
    from scipy.stats import wasserstein_distance

    x = samples["x"].detach().float()
    decode = getattr(datamodule, "decode", None) if datamodule is not None else None
    x01 = decode(x) if decode is not None else ((x + 1) / 2).clamp(0, 1)
    out = {"medical/num_samples": float(x.shape[0])}
    if datamodule is not None and hasattr(datamodule, "reference_data"):
        ref = datamodule.reference_data()["x"].float()
        r01 = decode(ref) if decode is not None else ((ref + 1) / 2).clamp(0, 1)
        out["medical/intensity_w1"] = float(wasserstein_distance(x01.flatten().numpy(), r01.flatten().numpy()))
    return out


def evaluate_module(module, datamodule, seed: int = 0) -> dict[str, float] | None:
    """Pixel AUROC/AUPRC, Dice at the healthy-data threshold, image AUROC (+ oracle Dice, labelled) of the
    datamodule's detection settings on its annotated test slices; None if it has no annotations."""
    from . import metrics as M
    from . import postprocess as P

    data = datamodule.anomaly_eval_data() if hasattr(datamodule, "anomaly_eval_data") else None
    if data is None:
        return None
    ev = datamodule.eval
    n = int(ev["max_items"])
    method = build_method(module, ev["method"], ev["level"], ev["steps"], ev["guidance"])
    x, seg, brain = data["x"][:n], data["seg"][:n], data["brain"]
    brain = brain if brain.shape[0] == 1 else brain[:n]
    _, maps = counterfactual_maps(method, x, seed=seed, repeats=int(ev.get("repeats", 1)))
    maps = P.postprocess(maps, brain, median=3)
    out = {}
    if data.get("healthy") is not None:
        _, hmaps = counterfactual_maps(method, data["healthy"][:n], seed=seed + 1, repeats=int(ev.get("repeats", 1)))
        hmaps = P.postprocess(hmaps, brain if brain.shape[0] == 1 else None, median=3)
        thr = P.threshold_at_fpr(hmaps, ev["fpr"], brain if brain.shape[0] == 1 else None)
    else:
        thr = None
    labels = data["label"][:n] if data.get("label") is not None else None
    if int(seg.sum()) > 0:
        out["medical/pixel_auroc"] = M.pixel_auroc(maps, seg, brain.expand_as(maps))
        out["medical/pixel_auprc"] = M.pixel_auprc(maps, seg, brain.expand_as(maps))
        out["medical/oracle_dice (uses labels)"] = P.oracle_threshold(maps, seg, brain)[1]
    if thr is not None:
        pred = (maps > thr) & brain.expand_as(maps)
        out[f"medical/dice@{ev['fpr']:.0%}fpr"] = M.dice(pred, seg)
        out["medical/threshold"] = thr
    if labels is not None and 0 < int(labels.sum()) < len(labels):
        out["medical/image_auroc"] = M.image_auroc(M.image_scores(maps, brain), labels)
    out["medical/num_test_slices"] = float(x.shape[0])
    return out


# -- detect command ---------------------------------------------------------------------------------------
def add_detect_arguments(p):
    p.add_argument("--ckpt", required=True, help="checkpoint written by polydiff fit")
    p.add_argument("--input", required=True, nargs="+",
                   help="scan: .nii/.nii.gz (volume or slice) or .png slice; several files = channels in "
                        "training order")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--method", default="anoddpm", choices=["anoddpm", "cfg", "wolleb"])
    p.add_argument("--level", type=int, default=None, help="noise level t_λ / L as a step of T (default 250 / 500)")
    p.add_argument("--steps", type=int, default=25, help="reconstruction steps (10–25 on a CPU)")
    p.add_argument("--noise", default="model", choices=["model", "gaussian", "simplex"])
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale w (cfg)")
    p.add_argument("--classifier", default=None, help="noise-aware classifier file (wolleb)")
    p.add_argument("--scale", type=float, default=100.0, help="classifier gradient scale s (wolleb)")
    p.add_argument("--seg", default=None, help="optional ground-truth mask (same format) for the panel")
    p.add_argument("--threshold", type=float, default=None, help="threshold drawn on the panel's anomaly map")
    p.add_argument("--repeats", type=int, default=1, help="average the maps of this many reconstructions")
    p.add_argument("--seed", type=int, default=0)


def _prepare(x: Tensor, data_hp: dict, source: str) -> Tensor:
    """Normalise a scan (C, ...) like the training data → values in [0, 1]."""
    from .io import normalize

    method = data_hp.get("normalization", "minmax")
    mask = (x > x.amin()).any(0) if method in ("anoddpm", "percentile") else None
    if mask is not None and int(mask.sum()) == 0:
        raise DataError(f"{source}: brain mask (voxels above the background) is empty")
    y, _ = normalize(x, method, mask, source=source)
    return (y + 1) / 2 if method == "anoddpm" else y


def run_detect(args) -> int:
    from .anomaly import check_channels
    from .artifacts import write_panel
    from .data import resize
    from .io import is_nifti, read_scan, write_nifti, write_png
    from .postprocess import brain_mask_from_image, check_mask_not_empty, median_filter

    module, data_hp = load_checkpoint(args.ckpt)
    channels = int(module.sample_shape[0])
    size = data_hp.get("image_size") or int(module.sample_shape[-1])
    inputs = [args.input] if isinstance(args.input, (str, Path)) else list(args.input)
    src = Path(inputs[0])
    parts = [read_scan(p, orientation=None) for p in inputs]
    for p, part in zip(inputs[1:], parts[1:]):
        if part[0].shape[1:] != parts[0][0].shape[1:]:
            raise DataError(f"{p}: shape {tuple(part[0].shape[1:])} differs from {src} {tuple(parts[0][0].shape[1:])}")
    x = torch.cat([part[0] for part in parts])
    affine, header = parts[0][1], parts[0][2]
    check_channels(x[None], channels, source=", ".join(map(str, inputs)))
    x01 = _prepare(x, data_hp, str(src))
    nifti = is_nifti(src)
    # slices (N, C, H, W): NIfTI (C, X, Y, Z) → axial slices along Z; PNG (C, H, W) → one slice
    slices = x01.permute(3, 0, 1, 2) if nifti else x01[None]
    brain = brain_mask_from_image(slices, threshold=0.0)
    check_mask_not_empty(brain.flatten(0).reshape(1, -1), source=str(src))
    has_brain = brain.flatten(1).any(1)
    idx = torch.nonzero(has_brain).flatten()
    H, W = slices.shape[-2:]
    small = resize(slices[idx], size) * 2 - 1
    classifier = load_classifier(args.classifier) if args.method == "wolleb" else None
    method = build_method(module, args.method, args.level, args.steps, args.guidance, args.noise, classifier,
                          args.scale)
    xh, maps = counterfactual_maps(method, small, seed=args.seed, repeats=getattr(args, "repeats", 1))
    up = torch.nn.functional.interpolate(maps, size=(H, W), mode="bilinear", align_corners=False)
    up = median_filter(up, 3) * brain[idx]
    full = torch.zeros(slices.shape[0], 1, H, W)
    full[idx] = up
    cf = torch.nn.functional.interpolate((xh + 1) / 2, size=(H, W), mode="bilinear", align_corners=False).clamp(0, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    seg = None
    if args.seg:
        s, _, _ = read_scan(args.seg, orientation=None)
        seg = (s[0].permute(2, 0, 1)[:, None] if nifti else s[:1][None]) > 0
    if nifti:
        vol = full[:, 0].permute(1, 2, 0)  # (X, Y, Z)
        if header is not None and len(header.get_data_shape()) == 2:
            vol = vol[..., 0]  # a 2D NIfTI slice stays 2D
        written.append(write_nifti(vol, affine, out / "anomaly_map.nii.gz", header=header))
        k = int(torch.argmax(up.flatten(1).amax(1)))
        z = int(idx[k])
    else:
        peak = float(full.max())
        written.append(write_png(full[0] / peak if peak > 0 else full[0], out / "anomaly_map.png"))
        torch.save(full[0].clone(), out / "anomaly_map.pt")
        written.append(out / "anomaly_map.pt")
        k, z = 0, 0
    panel = write_panel(out / "panel.png", slices[z], cf[k], full[z], None if seg is None else seg[z],
                        threshold=args.threshold, title=f"{src.name} ({args.method}, slice {z})" if nifti else
                        f"{src.name} ({args.method})")
    written.append(panel)
    summary = {"input": [str(p) for p in inputs], "method": args.method, "max_score": float(full.max()), "slice": z,
               "files": [str(p) for p in written]}
    (out / "detect.json").write_text(json.dumps(summary, indent=2))
    for p in written:
        print(p)
    return 0


# -- train-classifier command -----------------------------------------------------------------------------
def add_classifier_arguments(p):
    p.add_argument("--config", required=True, help="YAML config whose data: section has labelled slices")
    p.add_argument("--ckpt", default=None, help="diffusion checkpoint whose process the classifier is trained for")
    p.add_argument("--out", required=True, help="output file (.pt)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)


def run_train_classifier(args) -> int:
    from polydiff import VP
    from polydiff.components import datamodule_from_config

    from .networks import NoisyClassifier
    from .train import fit_classifier

    dm = datamodule_from_config(args.config)
    dm.conditional = True
    dm.setup("fit")
    ds = dm.train_set
    x = torch.stack([ds[i]["x"] for i in range(len(ds))])
    y = torch.stack([ds[i]["cond"]["label"] for i in range(len(ds))])
    process = load_checkpoint(args.ckpt)[0].process if args.ckpt else VP("linear", num_steps=1000)
    init = {"in_channels": int(x.shape[1]), "num_classes": 2}
    clf = NoisyClassifier(**init)
    acc = fit_classifier(clf, process, x, y, steps=args.steps, batch_size=args.batch_size,
                         generator=torch.Generator().manual_seed(args.seed))
    out = Path(args.out)
    with atomic_write(out) as f:
        torch.save({"state_dict": clf.state_dict(), "init_args": init, "train_accuracy": acc}, f)
    print(out)
    return 0
