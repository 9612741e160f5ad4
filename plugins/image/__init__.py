"""polydiff image plugin: digits/MNIST/CIFAR-10/image-folder data modules, PNG sample grids, PNG files,
and evaluation by a classifier trained on the real data (accuracy of class-conditional samples and a
Fréchet distance on its features, Heusel et al. 2017).

Found through the ``polydiff`` entry-point group (``image = "polydiff.plugins.image"``) like any
third-party plugin. Only cheap imports at top level: torch/Lightning come with the submodules at
registration, Pillow, scipy and scikit-learn only inside the functions that use them.
"""

from __future__ import annotations

from polydiff.hookspecs import FileFormat, hookimpl
from polydiff.plugins_manager import register_task_configs

DOMAIN = "image"

__all__ = ["DOMAIN", "polydiff_register", "polydiff_file_formats", "polydiff_write_artifacts", "polydiff_evaluate"]


@hookimpl
def polydiff_register(registry) -> None:
    from . import data, evaluation
    from .classifier import ImageClassifier

    for cls in (data.DigitsDataModule, data.MNISTDataModule, data.CIFAR10DataModule, data.ImageFolderDataModule,
                data.TextDigitsDataModule):
        registry.add("datamodule", cls)
    registry.add("metric", evaluation.evaluate_samples, name="image_classifier_metrics")
    registry.add("metric", ImageClassifier)
    register_task_configs(registry, __name__, "configs", prefix=DOMAIN)


@hookimpl
def polydiff_file_formats():
    from . import artifacts

    return [FileFormat(name="png", suffixes=(".png",), domain=DOMAIN, read=artifacts.read_png,
                       write=artifacts.write_png, description="PNG images (grids for several samples)")]


@hookimpl
def polydiff_write_artifacts(domain, samples, out_dir, context):
    if domain != DOMAIN:
        return None
    from .artifacts import write_sample_grid

    prefix, step = context.get("prefix"), context.get("step")
    if prefix:
        name = f"{prefix}.png"
    else:
        name = (context.get("stage") or "samples") + (f"_step{int(step):07d}" if step is not None else "") + ".png"
    return [write_sample_grid(samples, out_dir, name=name, datamodule=context.get("datamodule"))]


@hookimpl
def polydiff_evaluate(domain, samples, datamodule, context):
    if domain != DOMAIN:
        return None
    from .evaluation import evaluate_samples

    return evaluate_samples(samples, datamodule, context)
