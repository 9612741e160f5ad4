"""``polydiff impute``: fill the gaps of a user's records (and optionally forecast) with a trained model.

Input (:mod:`.records`): one CSV/Parquet series, one PhysioNet ``Time,Parameter,Value`` record, a folder of
either, or one long file with a record-id column (``--record-column``). The checkpoint may be one written by
``polydiff fit``/``polydiff convert`` or the official CSDI ``model.pth`` (converted in memory, see
:mod:`.official`).

Every record's columns are matched to the model's variables by name; a variable the record lacks or never
observes is imputed from the others and listed in the report. Values are standardised with the statistics the
model was trained with (stored in its checkpoint; ``--standardise file`` uses each record's own observed mean and
std instead), cut into windows of the model's length (non-overlapping, the last aligned to the end; a shorter
record is padded with missing rows, which are not written), and imputed with ``--samples`` draws per window,
samples folded into the batch (about ``--batch-size`` rows per network call). Each window draws its noise from its
own generator (:func:`.imputation.series_noise`, seeded by ``--seed`` and the record's name), so a record's result
does not depend on the records beside it and equals the Python path (:func:`.imputation.impute` with the same
``noise_fn``).

Output: for one record, ``--out`` is the CSV (each variable's observed value, else the point estimate — the lower
median of the samples, as CSDI — then ``<variable>_q<level>`` bands, order statistics of the samples) and a PNG
of one variable; for several, ``--out`` is a folder with ``<record>.csv`` per record and ``summary.csv``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from polydiff.errors import ConfigError, DataError, ShapeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint: written by polydiff fit or convert, or the official "
                   "CSDI model.pth")
    p.add_argument("--input", "--csv", dest="input", required=True,
                   help="a CSV/Parquet series, a PhysioNet Time,Parameter,Value record, a folder of them, or a "
                   "PhysioNet set archive (set-b.tar.gz)")
    p.add_argument("--out", required=True, help="output CSV (one record) or folder (several records)")
    p.add_argument("--record-column", default=None, help="column holding the record id of a long file "
                   "(one output file per record)")
    p.add_argument("--standardise", choices=("model", "file"), default="model",
                   help="model: the training statistics stored in the checkpoint (default); file: each record's "
                   "own observed mean/std")
    p.add_argument("--quantiles", default="0.05,0.5,0.95", help="quantile bands to write (comma-separated)")
    p.add_argument("--samples", type=int, default=100, help="samples per window")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256, help="series x samples per network call")
    p.add_argument("--time-column", default=None, help="time column of a table (default: the first column)")
    p.add_argument("--horizon", type=int, default=0, help="also forecast this many future steps")
    p.add_argument("--sampler", default=None, help="polydiff sampler instead of the ancestral chain (e.g. ddim)")
    p.add_argument("--steps", type=int, default=None, help="steps for --sampler")
    p.add_argument("--plot", default=None, help="PNG path of a single record (default: <out>.png)")
    p.add_argument("--plot-feature", default=None, help="variable to plot (default: the first)")
    p.add_argument("--strict", action="store_true", help="stop at the first record that cannot be imputed "
                   "(default: report it in summary.csv and go on)")


@dataclass
class ModelSeries:
    """What imputation needs to know about the model: K variables named ``names``, windows of L steps, the
    training statistics (None when the checkpoint holds none)."""

    K: int
    L: int
    names: list[str]
    mean: np.ndarray | None
    std: np.ndarray | None
    interval_seconds: float | None


def model_series(module, ckpt: str = "--ckpt") -> ModelSeries:
    try:
        K, L = module.sample_shape
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"{ckpt}: checkpoint does not record the window shape (features, steps)") from exc
    meta = module.data_metadata
    names = [str(n) for n in meta.get("feature_names") or []]
    if names and len(names) != K:
        raise DataError(f"{ckpt}: records {len(names)} variable names for a model of {K} features")
    mean = np.asarray(meta["mean"], dtype=np.float64) if meta.get("mean") is not None else None
    std = np.asarray(meta["std"], dtype=np.float64) if meta.get("std") is not None else None
    if mean is not None and (mean.shape != (K,) or std is None or std.shape != (K,) or not (std > 0).all()):
        raise DataError(f"{ckpt}: stored statistics do not hold {K} means and {K} positive stds")
    return ModelSeries(K, L, names, mean, std, meta.get("interval_seconds"))


def _extend(times: np.ndarray, horizon: int, source: str) -> np.ndarray:
    if horizon <= 0:
        return times
    if len(times) < 2:
        raise ConfigError(f"--horizon needs at least two time stamps to infer the time step ({source})")
    if times.dtype.kind in "US":
        return np.concatenate([times, np.array([f"+{i}" for i in range(1, horizon + 1)])])
    step = np.median(np.diff(times))
    return np.concatenate([times, times[-1] + step * np.arange(1, horizon + 1)])


@dataclass
class Prepared:
    """A record ready for the model: ``z`` (T', K) standardised with NaN gaps (T' ≥ L after padding)."""

    aligned: object
    times: np.ndarray
    values: np.ndarray          # (T, K) data units, NaN where missing (horizon rows included)
    z: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    padded: int


def prepare(aligned, model: ModelSeries, standardise: str, horizon: int, ckpt: str) -> Prepared:
    """Standardise (model or file statistics), append the forecast horizon and pad to one window."""
    rec = aligned.record
    values = aligned.values
    times = _extend(rec.times, horizon, rec.source)
    if horizon:
        values = np.concatenate([values, np.full((horizon, model.K), np.nan)])
    if standardise == "model":
        if model.mean is None:
            raise ConfigError(f"{ckpt}: the checkpoint stores no training statistics (written before they were kept); "
                              "pass --standardise file to use each record's own")
        mean, std = model.mean, model.std
    else:
        seen = ~np.isnan(values).all(axis=0)
        with np.errstate(invalid="ignore"):
            mean = np.where(seen, np.nanmean(np.where(seen, values, 0.0), axis=0), np.nan)
            std = np.where(seen, np.nanstd(np.where(seen, values, 0.0), axis=0), np.nan)
        std = np.where(std > 0, std, 1.0)
        if not seen.all():  # a variable the record never observes has no statistics of its own
            if model.mean is None:
                never = [n for n, s in zip(model.names or range(model.K), seen) if not s]
                raise DataError(f"{rec.source}: --standardise file cannot scale variables the record never observes "
                                f"({never}) and the checkpoint stores no training statistics")
            mean, std = np.where(seen, mean, model.mean), np.where(seen, std, model.std)
    z = (values - mean) / std
    padded = max(0, model.L - len(z))
    if padded:
        z = np.concatenate([z, np.full((padded, model.K), np.nan)])
    return Prepared(aligned, times, values, z, mean, std, padded)


def impute_prepared(denoiser, items: list[Prepared], L: int, n_samples: int, seed: int, batch_size: int,
                    sampler=None, steps=None, progress=None) -> list[np.ndarray]:
    """(n, T, K) samples in data units for every prepared record. Windows of all records are imputed together,
    ``max(1, batch_size // n_samples)`` windows (× ``n_samples`` rows) per call; every window has its own noise
    (:func:`.imputation.series_noise`), so the grouping does not change the result."""
    from polydiff.datasets.csv_series import window_starts

    from .imputation import impute, series_noise, series_seed

    jobs = [(i, s) for i, it in enumerate(items) for s in window_starts(len(it.z), L)]
    outs = [np.empty((n_samples, len(it.z), it.z.shape[1])) for it in items]
    per_call = max(1, batch_size // n_samples)
    for g in range(0, len(jobs), per_call):
        group = jobs[g:g + per_call]
        z = np.stack([items[i].z[s:s + L].T for i, s in group])
        known = torch.as_tensor(~np.isnan(z))
        x = torch.as_tensor(np.nan_to_num(z), dtype=torch.float32)
        seeds = [series_seed(seed, items[i].aligned.record.name, s) for i, s in group]
        smp = impute(denoiser, x, known, n_samples, noise_fn=series_noise(seeds, n_samples), sampler=sampler,
                     steps=steps)
        for (i, s), sm in zip(group, smp):
            outs[i][:, s:s + L] = sm.permute(0, 2, 1).double().numpy()
        if progress is not None:
            progress(len(group))
    return [o[:, :len(it.values)] * it.std + it.mean for o, it in zip(outs, items)]


def _load_module(ckpt: str):
    from polydiff.training import DiffusionModule

    return DiffusionModule.from_checkpoint(ckpt)


def run(args) -> int:
    from .artifacts import parse_quantiles, plot_series, write_imputed_csv, write_summary
    from .records import Failed, align, check_record_column, is_archive, read_inputs

    quantiles = parse_quantiles(args.quantiles)
    for flag, value, low in (("--samples", args.samples, 1), ("--horizon", args.horizon, 0),
                             ("--batch-size", args.batch_size, 1)):
        if value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
    check_record_column(args.record_column, Path(args.input))
    entries, skipped = read_inputs(args.input, args.time_column, args.record_column)
    batch = Path(args.input).is_dir() or args.record_column is not None or is_archive(Path(args.input))
    module = _load_module(args.ckpt)
    model = model_series(module, f"--ckpt {args.ckpt}")
    names = model.names or None

    rows, items, order = [], [], {}
    for i, e in enumerate(entries):
        order[e.source] = i
        try:
            if isinstance(e, Failed):
                raise DataError(e.error)
            rec = e
            if names is None:  # an old checkpoint without names: columns by position
                if len(rec.columns) != model.K:
                    raise ShapeError(f"--ckpt {args.ckpt} was trained on {model.K} features, but {rec.source} has "
                                     f"{len(rec.columns)} feature columns")
                aligned = align(rec, list(rec.columns))
            else:
                aligned = align(rec, names)
            items.append(prepare(aligned, model, args.standardise, args.horizon, f"--ckpt {args.ckpt}"))
            _warn_interval(rec, model)
        except (DataError, ShapeError, ConfigError) as exc:
            if not batch or args.strict:
                raise
            rows.append({"record": e.name, "source": e.source, "status": f"error: {exc}"})
            print(f"polydiff impute: skipped {e.name}: {exc}", file=sys.stderr)
    if not items:
        raise DataError(f"{args.input}: no record could be imputed (see the errors above)")
    out_names = names or items[0].aligned.record.columns
    samples = _impute_with_progress(module, items, model, args)

    out = Path(args.out)
    if batch:
        out.mkdir(parents=True, exist_ok=True)
    written = []
    for it, smp in zip(items, samples):
        rec, al = it.aligned.record, it.aligned
        path = out / f"{rec.name}.csv" if batch else out
        write_imputed_csv(path, rec.time_column, it.times, out_names, it.values, smp, quantiles)
        written.append(path)
        obs = ~np.isnan(it.values)
        rows.append({"record": rec.name, "source": rec.source, "status": "ok", "output": path.name,
                     "rows": len(it.values), "observed": int(obs.sum()), "imputed": int((~obs).sum()),
                     "never_observed": ";".join(al.never_observed), "absent_columns": ";".join(al.absent),
                     "padded_rows": it.padded, "ignored_parameters": ";".join(rec.ignored)})
        if not batch and al.never_observed:
            print(f"polydiff impute: {len(al.never_observed)} variable(s) with no observation in {rec.source} were "
                  f"imputed from the others: {', '.join(al.never_observed)}")
    if batch:
        rows.sort(key=lambda r: order.get(r["source"], 0))  # the order of the input
        summary = write_summary(out / "summary.csv", rows)
        ok = sum(r["status"] == "ok" for r in rows)
        print(f"polydiff impute: {ok} of {len(rows)} record(s) imputed into {out}/ ({args.samples} samples each); "
              f"summary {summary}" + (f"; skipped non-record files: {', '.join(skipped)}" if skipped else ""))
        return 0
    it, smp = items[0], samples[0]
    names_out = list(out_names)
    if args.plot_feature is not None and args.plot_feature not in names_out:
        raise ConfigError(f"--plot-feature {args.plot_feature!r} is not a variable of the model; variables: {names_out}")
    feature = 0 if args.plot_feature is None else names_out.index(args.plot_feature)
    times = it.times if it.times.dtype.kind not in "US" else np.arange(len(it.times))
    png = plot_series(args.plot or out.with_suffix(".png"), times, it.values, smp, feature,
                      f"{names_out[feature]} ({args.samples} samples)")
    print(f"polydiff impute: wrote {out} and {png}", flush=True)
    return 0


def _warn_interval(rec, model: ModelSeries) -> None:
    """Rows are taken as consecutive steps of the model's sampling interval: say so when a record's timestamps
    are spaced differently."""
    from polydiff.datasets.csv_series import time_step

    if model.interval_seconds is None or rec.long_format:
        return
    sec, _ = time_step(rec.times)
    if sec is not None and abs(sec - model.interval_seconds) > 0.01 * model.interval_seconds:
        print(f"polydiff impute: warning: {rec.source}: rows are {sec:g} s apart, the model was trained on steps of "
              f"{model.interval_seconds:g} s; each row is taken as one model step", file=sys.stderr)


def _impute_with_progress(module, items, model: ModelSeries, args) -> list[np.ndarray]:
    """Impute with a progress bar over the windows (rich, on stderr)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from polydiff.datasets.csv_series import window_starts

    total = sum(len(window_starts(len(it.z), model.L)) for it in items)
    columns = (TextColumn("imputing"), BarColumn(), MofNCompleteColumn(), TextColumn("windows"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("impute", total=total)
        return impute_prepared(module.sampling_model(), items, model.L, args.samples, args.seed, args.batch_size,
                               args.sampler, args.steps, progress=lambda k: bar.advance(task, k))
