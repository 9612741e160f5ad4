"""polydiff medical plugin: unsupervised anomaly detection in brain MRI with diffusion models.

Train a diffusion model on healthy slices (``polydiff fit --config plugins/medical/configs/anoddpm_ixi.yaml``),
turn a scan into its healthy counterfactual and localise what differs (``polydiff detect``):

* AnoDDPM (Wyatt et al. 2022) with Gaussian or simplex noise (noise field ``SimplexNoise``);
* THOR (Bercea et al. 2024): AnoDDPM with implicit guidance by temporal harmonisation (the default);
* Wolleb et al. 2022: DDIM encoding + classifier guidance from a noise-aware classifier
  (``polydiff train-classifier``);
* Sanchez et al. 2022: DDIM encoding + classifier-free guidance of a class-conditional model.

NIfTI in and out (nibabel, MONAI transforms), MONAI's ``DiffusionModelUNet`` as an optional backbone
(``MonaiUNet``), anomaly-map post-processing and the field's metrics (:mod:`.metrics`). Only cheap imports
here: MONAI, nibabel, scipy and matplotlib are imported inside the functions that use them.
"""

from __future__ import annotations

from pathlib import Path

from polydiff.hookspecs import FileFormat, hookimpl
from polydiff.plugins_manager import register_task_configs

DOMAIN = "medical"

__all__ = ["DOMAIN", "polydiff_register", "polydiff_file_formats", "polydiff_write_artifacts",
           "polydiff_evaluate", "polydiff_commands"]


@hookimpl
def polydiff_register(registry) -> None:
    from . import data, metrics
    from .networks import MonaiUNet
    from .simplex import SimplexNoise

    for cls in data.DATAMODULES:
        registry.add("datamodule", cls)
    registry.add("noise", SimplexNoise)
    registry.add("noise", SimplexNoise, name="simplex")
    registry.add("backbone", MonaiUNet)
    registry.add("metric", metrics.evaluate_maps, name="anomaly_map_metrics")
    register_task_configs(registry, __name__, "configs", prefix=DOMAIN)


def _read_nifti(path):
    from .io import read_nifti

    vol, affine, img = read_nifti(path, orientation=None)
    return {"x": vol[None], "affine": affine}


def _write_nifti(samples, path):
    import numpy as np

    from .io import write_nifti

    x = samples["x"]
    affine = samples.get("affine")
    return write_nifti(x[0] if x.ndim == 5 else x, np.eye(4) if affine is None else affine, path)


def _read_png(path):
    from .io import read_png

    return {"x": read_png(path)[None]}


def _write_png(samples, path):
    from .io import write_png

    x = samples["x"]
    return write_png(x[0] if x.ndim == 4 else x, path)


@hookimpl
def polydiff_file_formats():
    return [
        FileFormat(name="nifti", suffixes=(".nii", ".nii.gz"), domain=DOMAIN, read=_read_nifti, write=_write_nifti,
                   description="NIfTI-1 volumes (nibabel); anomaly maps keep the input's affine"),
        FileFormat(name="png-slice", suffixes=(".png",), domain=DOMAIN, read=_read_png, write=_write_png,
                   description="2D MRI slices as greyscale PNG in [0, 1]"),
    ]


@hookimpl
def polydiff_write_artifacts(domain, samples, out_dir, context):
    if domain != DOMAIN:
        return None
    from .artifacts import write_panel, write_sample_grid

    dm = context.get("datamodule")
    x = samples["x"]
    x01 = dm.decode(x) if dm is not None and hasattr(dm, "decode") else ((x + 1) / 2).clamp(0, 1)
    prefix, step = context.get("prefix"), context.get("step")
    name = prefix or ((context.get("stage") or "samples") + (f"_step{int(step):07d}" if step is not None else ""))
    out = [write_sample_grid(x01, Path(out_dir) / f"{name}.png")]
    cf = samples.get("counterfactual")
    if cf is not None:  # detection results: one panel per case
        amap = samples.get("anomaly_map")
        seg = samples.get("seg")
        for i in range(x.shape[0]):
            out.append(write_panel(Path(out_dir) / f"{name}_case{i:03d}.png", x01[i], cf[i], amap[i],
                                   None if seg is None else seg[i]))
    return out


@hookimpl
def polydiff_evaluate(domain, samples, datamodule, context):
    if domain != DOMAIN:
        return None
    from .detect import evaluate_module, sample_metrics

    out = sample_metrics(samples, datamodule)
    module = context.get("module")
    if module is not None and datamodule is not None:
        gen = context.get("generator")
        seed = int(gen.initial_seed()) if gen is not None else 0
        out.update(evaluate_module(module, datamodule, seed=seed, checkpoint=context.get("checkpoint")) or {})
    return out


@hookimpl
def polydiff_commands():
    from . import detect

    return {
        "detect": ("anomaly map + panel of a NIfTI/PNG scan with a medical checkpoint",
                   detect.add_detect_arguments, detect.run_detect),
        "train-classifier": ("train the noise-aware classifier of Wolleb et al. 2022 on a config's labelled slices",
                             detect.add_classifier_arguments, detect.run_train_classifier),
        "select": ("choose the detection method and settings by subject-level cross-validation on labelled "
                   "validation subjects; writes <ckpt>.selection.json, which detect and evaluate then use",
                   detect.add_select_arguments, detect.run_select),
    }
