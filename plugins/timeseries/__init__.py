"""polydiff time-series plugin: CSDI and SSSD^S4 for probabilistic imputation and forecasting.

Components (registered through ``polydiff_register``): data modules ``PhysioNetDataModule``,
``AQI36DataModule``, ``ETTDataModule``, ``CSVDataModule``; backbones ``CSDIBackbone``, ``SSSDBackbone``;
metrics (CSDI CRPS, CRPS-sum, MAE, RMSE); tasks ``timeseries/<config>`` for ``polydiff fit``.
Command: ``polydiff impute --ckpt … --csv in.csv --out out.csv`` (imputed CSV with quantile bands and a
PNG). Found through the ``polydiff`` entry-point group like any third-party plugin; only cheap imports at
top level (pandas/matplotlib load inside the functions that use them).
"""

from __future__ import annotations

from pathlib import Path

from polydiff.hookspecs import FileFormat, hookimpl
from polydiff.plugins_manager import register_task_configs

DOMAIN = "timeseries"
#: shown by ``polydiff plugins``; the numbers are in docs/benchmarks.md ("Time series")
SSSD_NOTE = ("not competitive at CPU scale: trained here (4 layers x 64 channels, minutes on a CPU) it stays behind "
             "linear interpolation, MAE +14 / +18 / +20 % at 10 / 50 / 90 % missing on PhysioNet and +156 % on AQI-36; "
             "the paper's setting (36 layers x 256 channels, T = 200, 150k iterations) needs a GPU. Use CSDI on a CPU.")

__all__ = ["DOMAIN", "polydiff_register", "polydiff_file_formats", "polydiff_write_artifacts",
           "polydiff_evaluate", "polydiff_commands", "polydiff_checkpoint_converters"]


@hookimpl
def polydiff_register(registry) -> None:
    from . import data, metrics
    from .csdi import CSDIBackbone
    from .sssd import SSSDBackbone

    for cls in (data.PhysioNetDataModule, data.AQI36DataModule, data.ETTDataModule, data.CSVDataModule):
        registry.add("datamodule", cls)
    registry.add("backbone", CSDIBackbone)
    registry.add("backbone", SSSDBackbone, note=SSSD_NOTE)
    for fn in (metrics.crps, metrics.crps_sum, metrics.mae, metrics.rmse):
        registry.add("metric", fn, name=f"timeseries_{fn.__name__}")
    register_task_configs(registry, __name__, "configs", prefix=DOMAIN)


def _read_csv(path):
    """A series file as a batch of one: x (1, K, T) with 0 where missing, and the ``missing`` mask."""
    import numpy as np
    import torch

    from polydiff.datasets.csv_series import load_table
    from polydiff.errors import DataError

    table = load_table(path)
    big = np.abs(np.nan_to_num(table.values)).max(initial=0.0)
    if big > np.finfo(np.float32).max:
        raise DataError(f"{path}: holds values up to {big:.4g}, beyond float32's range; rescale the data")
    missing = ~torch.as_tensor(table.observed_mask.T[None], dtype=torch.bool)
    return {"x": torch.as_tensor(np.nan_to_num(table.values).T[None], dtype=torch.float32), "missing": missing}


@hookimpl
def polydiff_file_formats():
    return [FileFormat(name="timeseries_csv", suffixes=(".csv", ".parquet"), domain=DOMAIN, read=_read_csv,
                       write=None, description="multivariate series: time column + feature columns, NaN = missing")]


@hookimpl
def polydiff_write_artifacts(domain, samples, out_dir, context):
    if domain != DOMAIN:
        return None
    from .evaluation import write_sample_plot

    prefix = context.get("prefix") or (context.get("stage") or "samples")
    return [write_sample_plot(samples, Path(out_dir) / f"{prefix}.png", context.get("datamodule"))]


@hookimpl
def polydiff_evaluate(domain, samples, datamodule, context):
    if domain != DOMAIN:
        return None
    from .evaluation import evaluate_samples

    return evaluate_samples(samples, datamodule)


@hookimpl
def polydiff_checkpoint_converters():
    from .official import CONVERTER

    return [CONVERTER]


@hookimpl
def polydiff_commands():
    from . import command

    return {"impute": ("impute (or forecast) the gaps of a CSV/Parquet series with a trained model; writes the "
                       "imputed CSV with quantile bands and a PNG", command.add_arguments, command.run)}
