"""Detection and evaluation with a trained checkpoint: the ``polydiff detect`` and
``polydiff train-classifier`` commands and the metric table behind ``polydiff evaluate``.

``detect`` reads a NIfTI volume/slice or a PNG slice, normalises it as the model's training data was
(the normalisation name and image size are read from the checkpoint's data config), produces the healthy
counterfactual with the chosen method (:mod:`.anomaly`), and writes the anomaly map (NIfTI with the
input's affine and header, or PNG) and a PNG panel.

Settings (method, noise level, number of averaged reconstructions, median filter, threshold): by default the
ones ``polydiff select`` chose by subject-level cross-validation and wrote beside the checkpoint
(``<ckpt>.selection.json``); without that file, :data:`DEFAULT_SETTING` (THOR at the paper's λ, not selected
on data). ``detect`` records which settings it used, and where they came from, in ``detect.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from polydiff import ConfigError, DataError
from polydiff.io import atomic_write

from .selection import FPRS, LEVELS, MEDIANS, REPEATS

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


def build_method(module, method: str = "thor", level=None, steps: int = 25, guidance: float = 3.0,
                 noise: str = "model", classifier=None, scale: float = 100.0):
    """A counterfactual method object for ``module`` (EMA weights).

    ``noise``: ``model`` uses the space the model was trained with (simplex if it was), ``gaussian`` or
    ``simplex`` override it for AnoDDPM.
    """
    from polydiff import Euclidean

    from .anomaly import THOR, AnoDDPM, CFGCounterfactual, WollebCounterfactual

    model = module.sampling_model()
    model.eval()
    if method in ("anoddpm", "thor"):
        space = module.space
        if noise == "gaussian":
            space = Euclidean()
        elif noise == "simplex":
            from .simplex import SimplexNoise

            space = Euclidean(noise=SimplexNoise())
        elif noise != "model":
            raise ConfigError(f"noise must be model, gaussian or simplex; got {noise!r}")
        cls = THOR if method == "thor" else AnoDDPM
        return cls(model, level=250 if level is None else level, steps=steps, space=space)
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
    raise ConfigError(f"method must be thor, anoddpm, cfg or wolleb; got {method!r}")


#: Used when no ``<ckpt>.selection.json`` exists: THOR (Bercea et al. 2024) on the model's noise, λ = 250 (the
#: AnoDDPM/THOR simplex level), one reconstruction, 3×3 median filter, threshold at a 2 % healthy FPR (needs
#: healthy data, so ``detect`` has no threshold without a selection file). Not chosen on any data.
DEFAULT_SETTING = {"family": "thor", "level": 250, "repeats": 1, "median": 3, "fpr": 0.02, "steps": 25}


def selection_path(ckpt) -> Path:
    """Where ``polydiff select`` writes (and ``detect``/``evaluate`` look for) a checkpoint's chosen settings."""
    return Path(str(ckpt) + ".selection.json")


def read_selection(path) -> dict:
    path = Path(path)
    try:
        blob = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the selection file ({exc})") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("setting"), dict) or "family" not in blob["setting"]:
        raise DataError(f"{path}: not a file written by `polydiff select` (needs a 'setting' with a 'family')")
    st = blob["setting"]
    if st["family"] not in ("thor", "anoddpm"):
        raise DataError(f"{path}: setting family {st['family']!r} is not a diffusion method (thor, anoddpm)")
    for key, typ in (("level", int), ("repeats", int), ("median", int), ("fpr", float), ("steps", int)):
        if not isinstance(st.get(key), (int, float)) or (typ is int and int(st[key]) != st[key]):
            raise DataError(f"{path}: setting {key!r} must be a {typ.__name__}, got {st.get(key)!r}")
    return blob


def resolve_settings(ckpt, selection=None, overrides: dict | None = None) -> tuple[dict, str, float | None]:
    """(settings, source, threshold): the selection file (``selection`` or ``<ckpt>.selection.json``) or
    :data:`DEFAULT_SETTING`, then explicit ``overrides`` (non-None values) on top."""
    path = Path(selection) if selection else selection_path(ckpt)
    if selection and not path.is_file():
        raise ConfigError(f"--selection {path}: file not found")
    if path.is_file():
        blob = read_selection(path)
        settings, source = dict(blob["setting"]), f"selected by cross-validation ({path})"
        threshold = blob.get("threshold")
    else:
        settings, source, threshold = dict(DEFAULT_SETTING), "built-in default (not selected on data; run " \
            "`polydiff select`)", None
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if given:
        changed = any(given.get(k) != settings.get(k) for k in given)
        settings.update(given)
        source += "; overridden on the command line: " + ", ".join(f"{k}={v}" for k, v in given.items())
        if changed:
            threshold = None  # the threshold belongs to the selected maps only
    return settings, source, threshold


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


def data_settings(ev: dict) -> dict:
    """The detection settings of a data module's ``eval_*`` arguments, in the selection format."""
    return {"family": ev["method"], "level": ev["level"], "repeats": int(ev.get("repeats", 1)),
            "median": int(ev.get("median", 3)), "fpr": float(ev["fpr"])}


def evaluate_module(module, datamodule, seed: int = 0, checkpoint=None, log=None) -> dict[str, float] | None:
    """The metric table of the detection settings on the data module's annotated test subjects (None without
    annotations): pooled pixel AUROC, AUPRC and — with healthy slices for the threshold — Dice, AUPRC and Dice
    with 95 % subject-bootstrap intervals, image AUROC, the oracle Dice (labelled as such), and the same for the
    z-score and PCA baselines fitted on the module's healthy training slices.

    Settings: ``<checkpoint>.selection.json`` (``polydiff select``) if it exists, else the data module's
    ``eval_*`` arguments."""
    from . import postprocess as P
    from .baselines import PCAResidual, ZScore
    from .selection import Setting, SliceSet, bootstrap_scores, score_on_test

    data = datamodule.anomaly_eval_data() if hasattr(datamodule, "anomaly_eval_data") else None
    if data is None:
        return None
    ev = datamodule.eval
    n = int(ev["max_items"])
    if checkpoint is not None and selection_path(checkpoint).is_file():
        settings, source, _ = resolve_settings(checkpoint)
    else:
        settings, source = data_settings(ev), "the data config's eval_* settings"
    (log or (lambda m: print(m, file=sys.stderr)))(f"medical evaluate: {settings} ({source})")
    brain = data["brain"] if data["brain"].shape[0] == 1 else data["brain"][:n]
    test = SliceSet(data["x"][:n], data["seg"][:n], data["label"][:n] if data.get("label") is not None
                    else data["seg"][:n].flatten(1).any(1).long(), list(data["subject"])[:n], brain)
    healthy = None
    if data.get("healthy") is not None:
        hx = data["healthy"][:n]
        hb = data.get("healthy_brain")
        hb = brain[:1] if hb is None else (hb if hb.shape[0] == 1 else hb[:n])
        healthy = SliceSet(hx, torch.zeros(hx.shape[0], 1, *hx.shape[-2:], dtype=torch.bool),
                           torch.zeros(hx.shape[0], dtype=torch.long), list(data["healthy_subject"])[:n], hb)
    methods = {}

    def maps_fn(family, params, x):
        if family == "zscore":
            return methods.setdefault("zscore", ZScore(train))(x, blur=float(params.get("blur", 0)))
        if family == "pca":
            return methods.setdefault("pca", PCAResidual(train))(x, k=int(params["k"]), blur=float(params.get("blur", 0)))
        key = (family, params.get("level"), params.get("steps"))
        if key not in methods:
            methods[key] = build_method(module, family, params.get("level"), int(params.get("steps", ev["steps"])),
                                        ev["guidance"])
        return counterfactual_maps(methods[key], x, seed=seed, repeats=int(params.get("repeats", 1)))[1]

    ds = getattr(datamodule, "train_set", None)
    train = getattr(ds, "x", None)
    if train is not None and getattr(ds, "labels", None) is not None:
        train = train[ds.labels == 0]  # the baselines see healthy slices only
    rows = {"": Setting.from_dict(settings)}
    if train is not None and healthy is not None and train.shape[0] >= 2 and train.shape[1:] == test.x.shape[1:]:
        k = min(16, train.shape[0])
        rows["zscore/"] = Setting("zscore", (("blur", 0.0),), settings["median"], settings["fpr"])
        rows["pca/"] = Setting("pca", (("blur", 0.0), ("k", k)), settings["median"], settings["fpr"])
    out = {}
    for prefix, st in rows.items():
        name = f"medical/{prefix}"
        if healthy is not None:
            scores = score_on_test(st, maps_fn, healthy, test)
        else:  # no healthy slices: no threshold, ranking metrics only
            from .selection import TestScores

            maps = P.postprocess(maps_fn(st.family, dict(st.params), test.x), test.brain, median=st.median)
            scores = TestScores(st, maps, test, float("inf"))
        r = bootstrap_scores([scores], n_boot=int(ev.get("n_boot", 1000)), seed=seed)
        if int(test.seg.sum()) > 0:
            out[f"{name}pixel_auroc"] = r["pixel_auroc"]
            a = r["auprc"]
            out[f"{name}pixel_auprc"], out[f"{name}pixel_auprc_ci95_low"], out[f"{name}pixel_auprc_ci95_high"] = a
            if healthy is not None:
                d = r["dice"]
                out[f"{name}dice"], out[f"{name}dice_ci95_low"], out[f"{name}dice_ci95_high"] = d
                out[f"{name}threshold"] = scores.threshold
            if not prefix:
                out["medical/oracle_dice (uses labels)"] = P.oracle_threshold(scores.maps, test.seg,
                                                                               test.brain.expand_as(scores.maps))[1]
        if "image_auroc" in r:
            out[f"{name}image_auroc"] = r["image_auroc"]
    out["medical/num_test_slices"] = float(len(test))
    out["medical/num_test_subjects"] = float(len(set(test.subject)))
    return out


# -- detect command ---------------------------------------------------------------------------------------
def add_detect_arguments(p):
    p.add_argument("--ckpt", required=True, help="checkpoint written by polydiff fit")
    p.add_argument("--input", required=True, nargs="+",
                   help="scan: .nii/.nii.gz (volume or slice) or .png slice; several files = channels in "
                        "training order")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--method", default=None, choices=["thor", "anoddpm", "cfg", "wolleb"],
                   help="default: the selected method (<ckpt>.selection.json from `polydiff select`), else thor")
    p.add_argument("--selection", default=None, help="settings file of `polydiff select` (default: <ckpt>.selection.json)")
    p.add_argument("--level", type=int, default=None, help="noise level t_λ / L as a step of T (default: selected, "
                   "else 250; 500 for cfg/wolleb)")
    p.add_argument("--steps", type=int, default=None, help="reconstruction steps (default: selected, else 25)")
    p.add_argument("--noise", default="model", choices=["model", "gaussian", "simplex"])
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale w (cfg)")
    p.add_argument("--classifier", default=None, help="noise-aware classifier file (wolleb)")
    p.add_argument("--scale", type=float, default=100.0, help="classifier gradient scale s (wolleb)")
    p.add_argument("--seg", default=None, help="optional ground-truth mask (same format) for the panel")
    p.add_argument("--threshold", type=float, default=None, help="threshold of the lesion mask and the panel "
                   "(default: the selected one; none without a selection file)")
    p.add_argument("--repeats", type=int, default=None, help="average the maps of this many reconstructions "
                   "(default: selected, else 1)")
    p.add_argument("--median", type=int, default=None, help="median filter size of the map (default: selected, else 3)")
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
    overrides = {"family": args.method, "level": args.level, "repeats": args.repeats, "median": args.median,
                 "steps": args.steps}
    if args.method in ("cfg", "wolleb"):
        settings = {"family": args.method, "level": args.level, "repeats": args.repeats or 1,
                    "median": args.median or 3, "steps": args.steps or 25}
        source, thr = "command line", None
    else:
        settings, source, thr = resolve_settings(args.ckpt, args.selection, overrides)
    if args.threshold is not None:
        thr = float(args.threshold)
    classifier = load_classifier(args.classifier) if settings["family"] == "wolleb" else None
    method = build_method(module, settings["family"], settings["level"], int(settings["steps"]), args.guidance,
                          args.noise, classifier, args.scale)
    xh, maps = counterfactual_maps(method, small, seed=args.seed, repeats=int(settings["repeats"]))
    up = torch.nn.functional.interpolate(maps, size=(H, W), mode="bilinear", align_corners=False)
    up = median_filter(up, int(settings["median"])) * brain[idx]
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
    if thr is not None:  # the lesion mask at the selected healthy-FPR threshold
        mask = (full > thr).float()
        if nifti:
            mvol = mask[:, 0].permute(1, 2, 0)
            if header is not None and len(header.get_data_shape()) == 2:
                mvol = mvol[..., 0]
            written.append(write_nifti(mvol, affine, out / "lesion_mask.nii.gz", header=header))
        else:
            written.append(write_png(mask[0], out / "lesion_mask.png"))
    fam = settings["family"]
    panel = write_panel(out / "panel.png", slices[z], cf[k], full[z], None if seg is None else seg[z],
                        threshold=thr, title=f"{src.name} ({fam}, slice {z})" if nifti else f"{src.name} ({fam})")
    written.append(panel)
    summary = {"input": [str(p) for p in inputs], "method": fam, "settings": {**settings, "seed": args.seed},
               "settings_source": source, "threshold": thr, "max_score": float(full.max()),
               "slice": z, "files": [str(p) for p in written]}
    (out / "detect.json").write_text(json.dumps(summary, indent=2))
    for p in written:
        print(p)
    return 0


# -- select command ---------------------------------------------------------------------------------------
class MapBank:
    """``maps_fn(family, params, x)`` for :mod:`.selection`: reconstruction maps of ``make(family, level)``
    (a counterfactual method, e.g. :class:`~.anomaly.THOR`) with the K repeats of one (family, level, slices)
    computed once and averaged for every K asked; z-score / PCA maps of healthy ``train`` slices."""

    def __init__(self, make, seed: int = 0, train: Tensor | None = None, batch: int = 32, log=None):
        self.make, self.seed, self.batch, self.log = make, seed, batch, log
        self.train, self._base, self._cache, self._methods = train, {}, {}, {}

    def __call__(self, family, params, x):
        from .baselines import PCAResidual, ZScore

        if family in ("zscore", "pca"):
            if self.train is None:
                raise ConfigError(f"{family} maps need healthy training slices")
            if family not in self._base:
                self._base[family] = (ZScore if family == "zscore" else PCAResidual)(self.train)
            kw = {"k": int(params["k"])} if family == "pca" else {}
            return self._base[family](x, blur=float(params.get("blur", 0)), **kw)
        level, k = int(params["level"]), int(params.get("repeats", 1))
        key = (family, level, tuple(x.shape), float(x.double().sum()), float(x.double().square().sum()))
        have = self._cache.setdefault(key, [])
        if len(have) < k:
            method = self._methods.get((family, level)) or self._methods.setdefault((family, level),
                                                                                     self.make(family, level))
            t0 = time.time()
            for r in range(len(have), k):
                have.append(counterfactual_maps(method, x, batch=self.batch, seed=self.seed + 1000 * r + level)[1])
            if self.log:
                self.log(f"  {family} λ={level}: {k} reconstruction(s) of {x.shape[0]} slices ({time.time() - t0:.0f}s)")
        return torch.stack(have[:k]).mean(0)


def add_select_arguments(p):
    p.add_argument("--ckpt", required=True, help="checkpoint written by polydiff fit")
    p.add_argument("--config", default=None, help="config whose data: section gives the labelled selection "
                   "subjects (default: the checkpoint's data config)")
    p.add_argument("--out", default=None, help="settings file (default: <ckpt>.selection.json)")
    p.add_argument("--methods", nargs="+", default=["thor", "anoddpm"], choices=["thor", "anoddpm"])
    p.add_argument("--levels", type=int, nargs="+", default=list(LEVELS), help="candidate noise levels λ")
    p.add_argument("--repeats", type=int, nargs="+", default=list(REPEATS), help="candidate numbers of averaged "
                   "reconstructions K")
    p.add_argument("--medians", type=int, nargs="+", default=list(MEDIANS), help="candidate median-filter sizes")
    p.add_argument("--fprs", type=float, nargs="+", default=list(FPRS),
                   help="candidate healthy false-positive rates (threshold percentiles)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--criterion", default="mean", choices=["mean", "dice", "auprc"],
                   help="fold score: mean of AUPRC and Dice (default), or one of them")
    p.add_argument("--steps", type=int, default=10, help="reconstruction steps")
    p.add_argument("--max-items", type=int, default=None, help="use at most this many selection slices")
    p.add_argument("--seed", type=int, default=0)


def run_select(args) -> int:
    from polydiff.checkpointing import load_checkpoint as load_raw
    from polydiff.components import datamodule_from_checkpoint, datamodule_from_config

    from .selection import cross_validate, healthy_threshold, settings_grid, write_json

    module, _ = load_checkpoint(args.ckpt)
    dm = datamodule_from_config(args.config) if args.config else datamodule_from_checkpoint(load_raw(args.ckpt),
                                                                                           args.ckpt)
    sel = dm.selection_data() if dm is not None and hasattr(dm, "selection_data") else None
    if sel is None:
        raise ConfigError(f"{args.config or args.ckpt}: the data module has no labelled selection subjects "
                          "(use IXISynthDataModule or SubjectFolderDataModule in --config)")
    if args.max_items:
        sel = sel.take(range(min(args.max_items, len(sel))))

    def make(family, level):
        return build_method(module, family, level, args.steps)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    bank = MapBank(make, seed=args.seed, log=log)
    cands = [st for fam in args.methods for st in settings_grid(fam, {"level": args.levels, "repeats": args.repeats},
                                                               args.medians, args.fprs)]
    best, rows = cross_validate(cands, bank, sel, k=args.folds, seed=args.seed, criterion=args.criterion)
    thr = healthy_threshold(best, bank, sel)
    out = Path(args.out) if args.out else selection_path(args.ckpt)
    record = {"setting": {**best.as_dict(), "steps": args.steps}, "threshold": thr, "criterion": args.criterion,
              "folds": args.folds, "selection_subjects": sorted(set(sel.subject)), "checkpoint": str(args.ckpt),
              "cv": rows}
    write_json(record, out)
    rows = sorted(rows, key=lambda r: -r["cv_criterion"])
    print(f"| rank | setting | CV AUPRC | CV Dice | CV {args.criterion} |\n|---|---|---|---|---|")
    for i, r in enumerate(rows[:5], 1):
        st = ", ".join(f"{k}={r[k]}" for k in r if not k.startswith("cv_"))
        print(f"| {i} | {st} | {r['cv_auprc']:.3f} | {r['cv_dice']:.3f} | {r['cv_criterion']:.3f} |")
    print(f"chosen: {record['setting']} threshold {thr:.4g} ({len(set(sel.subject))} subjects, {args.folds} folds)")
    print(out)
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
