"""``polydiff impute``: fill the gaps of a user's series (and optionally forecast) with a trained model.

The series is standardised with the mean/std of its own observed values per column, cut into windows of
the length the model was trained on (non-overlapping, the last one aligned to the end), and every window
is imputed with ``--samples`` draws in one batched pass (:func:`.imputation.impute`). ``--horizon H``
appends H future rows (time step = the median spacing of the time column) to forecast. Output: the CSV
with each feature's median where it was missing and ``<feature>_q<level>`` bands, and a PNG of one
feature with its observed points, median and 5–95 % band.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from polydiff.errors import ConfigError, ShapeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint written by polydiff fit (CSDI or SSSD model)")
    p.add_argument("--csv", required=True, help="input series: CSV or Parquet, time column + feature columns")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--quantiles", default="0.05,0.5,0.95", help="quantile bands to write (comma-separated)")
    p.add_argument("--samples", type=int, default=100, help="samples per window")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-column", default=None, help="time column (default: the first column)")
    p.add_argument("--horizon", type=int, default=0, help="also forecast this many future steps")
    p.add_argument("--sampler", default=None, help="polydiff sampler instead of the ancestral chain (e.g. ddim)")
    p.add_argument("--steps", type=int, default=None, help="steps for --sampler")
    p.add_argument("--plot", default=None, help="PNG path (default: <out>.png)")
    p.add_argument("--plot-feature", default=None, help="feature to plot (default: the first)")


def _extend(times: np.ndarray, horizon: int) -> np.ndarray:
    if horizon <= 0:
        return times
    if len(times) < 2:
        raise ConfigError("--horizon needs at least two time stamps to infer the time step")
    step = np.median(np.diff(times))
    return np.concatenate([times, times[-1] + step * np.arange(1, horizon + 1)])


def impute_table(module, values: np.ndarray, n_samples: int, seed: int = 0, sampler=None, steps=None,
                 source: str = "--csv", ckpt: str = "--ckpt") -> np.ndarray:
    """(n, T, K) samples in data units for a (T, K) array with NaN gaps."""
    from polydiff.datasets.csv_series import standardise, window_starts

    from .imputation import impute

    shape = getattr(module, "_sample_shape", None)
    if shape is None:
        try:
            shape = module.sample_shape
        except ConfigError as exc:
            raise ConfigError(f"{ckpt}: checkpoint does not record the window shape (features, steps)") from exc
    K, L = shape
    T, K_in = values.shape
    if K_in != K:
        raise ShapeError(f"{ckpt} was trained on {K} features, but {source} has {K_in} feature columns")
    if L > T:
        raise ConfigError(f"the model's window is {L} steps but {source} has only {T} rows; the series must be at "
                          f"least one window long")
    z, mean, std = standardise(values)
    obs = ~np.isnan(z)
    starts = window_starts(T, L)
    x = torch.as_tensor(np.stack([np.nan_to_num(z[s:s + L]).T for s in starts]), dtype=torch.float32)
    known = torch.as_tensor(np.stack([obs[s:s + L].T for s in starts]))
    denoiser = module.sampling_model()
    g = torch.Generator().manual_seed(seed)
    chunk = max(1, 256 // n_samples)
    out = np.empty((n_samples, T, K))
    for i in range(0, len(starts), chunk):
        smp = impute(denoiser, x[i:i + chunk], known[i:i + chunk], n_samples, generator=g, sampler=sampler,
                     steps=steps)
        for j, s in enumerate(starts[i:i + chunk]):
            out[:, s:s + L] = smp[j].permute(0, 2, 1).double().numpy()
    return out * std + mean


def run(args) -> int:
    from polydiff.datasets.csv_series import load_table
    from polydiff.training import DiffusionModule

    from .artifacts import parse_quantiles, plot_series, write_imputed_csv

    quantiles = parse_quantiles(args.quantiles)
    if args.samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {args.samples}")
    if args.horizon < 0:
        raise ConfigError(f"--horizon must be >= 0, got {args.horizon}")
    table = load_table(args.csv, time_column=args.time_column)
    module = DiffusionModule.from_checkpoint(args.ckpt)
    values = table.values
    times = _extend(table.times, args.horizon)
    if args.horizon:
        values = np.concatenate([values, np.full((args.horizon, values.shape[1]), np.nan)])
    samples = impute_table(module, values, args.samples, args.seed, args.sampler, args.steps,
                           source=f"--csv {args.csv}", ckpt=f"--ckpt {args.ckpt}")
    out = write_imputed_csv(args.out, table.time_column, times, table.columns, values, samples, quantiles)
    feature = 0 if args.plot_feature is None else table.columns.index(args.plot_feature) \
        if args.plot_feature in table.columns else None
    if feature is None:
        raise ConfigError(f"--plot-feature {args.plot_feature!r} is not a feature column; columns: {table.columns}")
    png = plot_series(args.plot or Path(args.out).with_suffix(".png"), times, values, samples, feature,
                      f"{table.columns[feature]} ({args.samples} samples)")
    print(f"polydiff impute: wrote {out} and {png}", flush=True)
    return 0
