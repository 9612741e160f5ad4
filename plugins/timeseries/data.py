"""Data modules of the time-series domain: PhysioNet 2012, AQI-36, ETT and a user's CSV/Parquet file.

Every item is one window in polydiff's batch contract with x of shape (K features, L steps):

* ``x``        float32, standardised values, 0 where not observed (NaN → 0);
* ``missing``  bool, not observed in the raw data: never conditioned on and never a target, but noised
               and generated like the targets (official CSDI: its ``observed_mask``, whose complement
               enters the noisy input and leaves the loss), so a model trained on gappy windows sees
               the same input when it imputes the real gaps;
* ``known``    bool, the conditioning mask: drawn afresh for every training batch by the mask strategy
               (:mod:`.masks`: CSDI random / historical / mix, SSSD rm / mnr / bm, forecast), fixed for
               validation and test (the dataset's evaluation mask: CSDI's ``gt_mask``).

Training masks are drawn in the collate function from a generator seeded by the data module's seed and
the indices of the batch, so a batch's masks depend only on which items it holds (deterministic and
identical after resuming). ``decode`` maps model values back to data units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from polydiff.data import DiffusionDataModule, ResumableLoader
from polydiff.errors import ConfigError, DataError

from . import masks

Tensor = torch.Tensor
DOMAIN = "timeseries"

#: Units of CSDI's 35 PhysioNet 2012 variables (the challenge's variable list, physionet.org/content/challenge-2012).
PHYSIONET_UNITS = {
    "DiasABP": "mmHg", "HR": "bpm", "Na": "mEq/L", "Lactate": "mmol/L", "NIDiasABP": "mmHg", "PaO2": "mmHg",
    "WBC": "cells/nL", "pH": "", "Albumin": "g/dL", "ALT": "IU/L", "Glucose": "mg/dL", "SaO2": "%", "Temp": "°C",
    "AST": "IU/L", "Bilirubin": "mg/dL", "HCO3": "mmol/L", "BUN": "mg/dL", "RespRate": "bpm", "Mg": "mmol/L",
    "HCT": "%", "SysABP": "mmHg", "FiO2": "fraction (0-1)", "K": "mEq/L", "GCS": "points (3-15)",
    "Cholesterol": "mg/dL", "NISysABP": "mmHg", "TroponinT": "µg/L", "MAP": "mmHg", "TroponinI": "µg/L",
    "PaCO2": "mmHg", "Platelets": "cells/nL", "Urine": "mL", "NIMAP": "mmHg", "Creatinine": "mg/dL", "ALP": "IU/L",
}


def series_metadata(names, mean, std, units, interval_seconds: float | None, interval: str,
                    statistics: str) -> dict[str, Any]:
    """The training facts a time-series checkpoint keeps (``checkpoint["polydiff"]["data"]``): variable names,
    per-variable mean/std of the standardisation, units, the sampling interval and how the statistics were
    computed. ``polydiff impute`` standardises new data with them by default."""
    names = [str(n) for n in names]
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    if not (len(names) == mean.size == std.size == len(units)):
        raise DataError(f"series metadata: {len(names)} names, {mean.size} means, {std.size} stds and {len(units)} "
                        "units; expected one of each per variable")
    return {"feature_names": names, "mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "units": [str(u) for u in units], "interval_seconds": None if interval_seconds is None else float(interval_seconds),
            "interval": interval, "statistics": statistics}


class WindowDataset(Dataset):
    """Windows (N, K, L): values (NaN-free), observed mask, optional fixed known mask and pattern mask."""

    def __init__(self, values: np.ndarray, observed: np.ndarray, known: np.ndarray | None = None,
                 pattern: np.ndarray | None = None):
        self.x = torch.as_tensor(np.where(observed, np.nan_to_num(values), 0.0), dtype=torch.float32)
        self.missing = torch.as_tensor(~np.asarray(observed, dtype=bool))
        self.known = None if known is None else torch.as_tensor(known & observed, dtype=torch.bool)
        self.pattern = None if pattern is None else torch.as_tensor(pattern, dtype=torch.bool)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = {"x": self.x[i], "missing": self.missing[i], "_index": torch.tensor(i)}
        if self.known is not None:
            item["known"] = self.known[i]
        if self.pattern is not None:
            item["_pattern"] = self.pattern[i]
        return item


class MaskCollate:
    """Collate items and draw the training ``known`` mask for the batch (see module docstring)."""

    def __init__(self, strategy: str, seed: int, ratio: float = 0.1, horizon: int = 24):
        if strategy not in masks.STRATEGIES:
            raise ConfigError(f"mask_strategy must be one of {masks.STRATEGIES}, got {strategy!r}")
        self.strategy, self.seed, self.ratio, self.horizon = strategy, seed, ratio, horizon

    def __call__(self, items: list[Mapping[str, Tensor]]) -> dict[str, Any]:
        batch = default_collate(items)
        idx = batch.pop("_index")
        pattern = batch.pop("_pattern", None)
        if "known" not in batch:
            g = torch.Generator().manual_seed(int(self.seed * 1_000_003 + int((idx * 7919 + 1).sum()) + len(idx)))
            batch["known"] = masks.training_mask(self.strategy, ~batch["missing"], generator=g, pattern=pattern,
                                                 ratio=self.ratio, horizon=self.horizon)
        return batch


def _strip(items):
    batch = default_collate(items)
    batch.pop("_index", None)
    batch.pop("_pattern", None)
    return batch


class TimeSeriesDataModule(DiffusionDataModule):
    """Base: subclasses fill ``train_set``/``val_set``/``test_set`` (:class:`WindowDataset`) and
    ``mean``/``std`` (K,) in :meth:`build`.

    Args:
        batch_size, num_workers, seed: see :class:`polydiff.data.DiffusionDataModule` (CSDI: 16).
        mask_strategy: training conditioning masks (``random``, ``historical``, ``mix``, ``rm``, ``mnr``,
            ``bm``, ``forecast``).
        mask_ratio: missing ratio of ``rm``/``mnr``/``bm``; horizon: forecast length for ``forecast``.
    """

    domain = DOMAIN

    def __init__(self, batch_size: int = 16, num_workers: int = 0, seed: int = 0, mask_strategy: str = "random",
                 mask_ratio: float = 0.1, horizon: int = 24):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if mask_strategy not in masks.STRATEGIES:
            raise ConfigError(f"mask_strategy must be one of {masks.STRATEGIES}, got {mask_strategy!r}")
        self.mask_strategy, self.mask_ratio, self.horizon = mask_strategy, mask_ratio, horizon
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.feature_names: list[str] = []

    def build(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.build()

    def _loader(self, ds, shuffle: bool, collate) -> ResumableLoader:
        return ResumableLoader(ds, self.batch_size, shuffle=shuffle, seed=self.seed, num_workers=self.num_workers,
                               collate_fn=collate)

    def train_dataloader(self) -> ResumableLoader:
        collate = MaskCollate(self.mask_strategy, self.seed, self.mask_ratio, self.horizon)
        return self._loader(self.require_set("train_set"), True, collate)

    def val_dataloader(self) -> ResumableLoader:
        return self._loader(self.require_set("val_set"), False, _strip)

    def test_dataloader(self) -> ResumableLoader:
        ds = self.test_set if self.test_set is not None else self.require_set("val_set")
        return self._loader(ds, False, _strip)

    def reference_data(self, n: int | None = None, split: str = "val") -> dict[str, Any]:
        ds = self.require_set("val_set") if split == "val" else (self.test_set or self.require_set("val_set"))
        count = len(ds) if n is None else min(n, len(ds))
        return _strip([ds[i] for i in range(count)])

    def sample_inputs(self, n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Conditional sampling inputs: the first ``n`` validation windows (cycled), their evaluation
        ``known`` mask and observed values."""
        ds = self.require_set("val_set")
        batch = _strip([ds[i % len(ds)] for i in range(n)])
        return {"known": batch["known"], "x_known": batch["x"]}

    #: one line on how ``mean``/``std`` were computed (stored in checkpoints)
    statistics_note = "per-variable mean and std of the observed training values"
    interval_seconds: float | None = None
    interval = "one row"

    def units(self) -> list[str]:
        return [""] * len(self.feature_names)

    def checkpoint_metadata(self) -> dict[str, Any]:
        """Names, statistics, units and sampling interval (:func:`series_metadata`); {} before :meth:`build`."""
        if self.mean is None:
            return {}
        return series_metadata(self.feature_names, self.mean, self.std, self.units(), self.interval_seconds,
                               self.interval, self.statistics_note)

    def decode(self, x: Tensor) -> Tensor:
        if self.mean is None:
            return x
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)[:, None]
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)[:, None]
        return x * std + mean


def _kl(a: np.ndarray) -> np.ndarray:
    """(N, L, K) → (N, K, L)."""
    return np.ascontiguousarray(np.swapaxes(a, 1, 2))


class PhysioNetDataModule(TimeSeriesDataModule):
    """PhysioNet 2012 set-a as CSDI prepares it (:mod:`polydiff.datasets.physionet2012`): 35 × 48 windows,
    evaluation targets = ``missing_ratio`` of the observed entries (seed ``split_seed``), 5-fold split.

    Args:
        root: folder with ``set-a.tar.gz`` or ``set-a/`` (default: download to the cache).
        missing_ratio: 0.1 / 0.5 / 0.9 in the paper; split_seed (1) and nfold (0) as the official code.
        stats: ``train`` (default, no test information) or ``all`` (official, for parity).
        max_records: parse only the first records (quick runs).
    """

    def __init__(self, root: str | None = None, missing_ratio: float = 0.1, split_seed: int = 1, nfold: int = 0,
                 stats: str = "train", max_records: int | None = None, mask_strategy: str = "random", **kw):
        super().__init__(mask_strategy=mask_strategy, **kw)
        self.root, self.missing_ratio, self.split_seed, self.nfold = root, missing_ratio, split_seed, nfold
        self.stats, self.max_records = stats, max_records

    interval_seconds, interval = 3600.0, "1 h"

    def units(self) -> list[str]:
        return [PHYSIONET_UNITS.get(n, "") for n in self.feature_names]

    def build(self) -> None:
        from polydiff.datasets import physionet2012 as physio

        rec = physio.load_set("a", root=self.root, max_records=self.max_records)
        d = physio.prepare_csdi(rec, self.missing_ratio, self.split_seed, self.nfold, self.stats)
        self.prepared = d
        self.mean, self.std = d.mean, d.std
        self.feature_names = list(physio.ATTRIBUTES)
        self.statistics_note = ("mean and population std of observed values over " +
                                ("all patients of set-a (official CSDI)" if self.stats == "all" else
                                 f"the training patients of set-a (split_seed {self.split_seed}, nfold {self.nfold})"))
        data, obs, gt = _kl(d.data), _kl(d.observed_mask), _kl(d.gt_mask)
        self.train_set = WindowDataset(data[d.train], obs[d.train])
        self.val_set = WindowDataset(data[d.valid], obs[d.valid], known=gt[d.valid])
        self.test_set = WindowDataset(data[d.test], obs[d.test], known=gt[d.test])


class AQI36DataModule(TimeSeriesDataModule):
    """Beijing AQI-36 as CSDI prepares it (:mod:`polydiff.datasets.aqi36`): 36 stations × 36 hours,
    month-based splits, evaluation targets from ``pm25_missing``; the historical strategy borrows patterns
    only from eligible months (official default strategy: ``mix``).

    Args: root (folder with pm25_ground.txt and pm25_missing.txt; default: STMVL download), valid_index.
    """

    def __init__(self, root: str | None = None, valid_index: int = 0, mask_strategy: str = "mix", **kw):
        super().__init__(mask_strategy=mask_strategy, **kw)
        self.root, self.valid_index = root, valid_index

    interval_seconds, interval = 3600.0, "1 h"
    statistics_note = "mean and sample std (ddof 1) per station over the non-test months (official pm25_meanstd)"

    def units(self) -> list[str]:
        return ["µg/m³"] * len(self.feature_names)

    def build(self) -> None:
        from polydiff.datasets import aqi36

        ground_path, missing_path = aqi36.locate_files(self.root)
        ground, missing = aqi36.read_table(ground_path), aqi36.read_table(missing_path)
        mean, std = aqi36.csdi_stats(ground)
        self.mean, self.std, self.feature_names = mean, std, [str(c) for c in ground.columns]
        splits = {m: aqi36.csdi_windows(ground, missing, m, self.valid_index, mean=mean, std=std)
                  for m in ("train", "valid", "test")}
        tr, va, te = splits["train"], splits["valid"], splits["test"]
        self.test_windows = te
        self.train_set = WindowDataset(_kl(tr.data), _kl(tr.observed_mask), pattern=_kl(tr.hist_mask))
        self.val_set = WindowDataset(_kl(va.data), _kl(va.observed_mask), known=_kl(va.gt_mask))
        # cut_length steps of the last test window of a month are conditioning only (never evaluated twice)
        te_known = _kl(te.gt_mask) | (~_kl(te.eval_mask) & _kl(te.observed_mask))
        self.test_set = WindowDataset(_kl(te.data), _kl(te.observed_mask), known=te_known)


def _windows(z: np.ndarray, length: int, stride: int, name: str) -> np.ndarray:
    from polydiff.datasets.csv_series import sliding_windows

    return _kl(sliding_windows(z, length, stride, name=name))


class ETTDataModule(TimeSeriesDataModule):
    """ETT (Zhou et al. 2021) windows of ``window`` steps from the standard 12/4/4-month split, standardised
    with training statistics. Validation/test conditioning: the ``mask_strategy`` mask drawn once with a
    fixed seed (``forecast``: the last ``horizon`` steps; SSSD's TF setting).

    Args: name (ETTh1 …), root, window (SSSD: 96 + horizon 24), stride of training windows.
    """

    def __init__(self, name: str = "ETTh1", root: str | None = None, window: int = 120, stride: int = 24,
                 mask_strategy: str = "forecast", mask_ratio: float = 0.1, horizon: int = 24, **kw):
        super().__init__(mask_strategy=mask_strategy, mask_ratio=mask_ratio, horizon=horizon, **kw)
        self.name, self.root, self.window, self.stride = name, root, window, stride

    def build(self) -> None:
        from polydiff.datasets import ett

        s = ett.splits(self.name, self.root, history=0)
        self.mean, self.std, self.feature_names = s.mean, s.std, list(s.columns)
        self.interval_seconds = 900.0 if self.name.startswith("ETTm") else 3600.0
        self.interval = "15 min" if self.name.startswith("ETTm") else "1 h"
        self.statistics_note = "mean and std of the training months (Informer's 12/4/4-month split)"
        tr = _windows(s.train, self.window, self.stride, "window")
        va = _windows(s.valid, self.window, self.window, "window")
        te = _windows(s.test, self.window, self.window, "window")
        self.train_set = WindowDataset(tr, np.ones_like(tr, dtype=bool))
        self.val_set = WindowDataset(va, np.ones_like(va, dtype=bool), known=self._fixed(va, 1))
        self.test_set = WindowDataset(te, np.ones_like(te, dtype=bool), known=self._fixed(te, 2))

    def _fixed(self, w: np.ndarray, offset: int) -> np.ndarray:
        g = torch.Generator().manual_seed(self.seed + 1000 * offset)
        obs = torch.ones(w.shape, dtype=torch.bool)
        return masks.training_mask(self.mask_strategy, obs, g, ratio=self.mask_ratio, horizon=self.horizon).numpy()


class CSVDataModule(TimeSeriesDataModule):
    """A user's CSV/Parquet series (:mod:`polydiff.datasets.csv_series`): windows of ``window`` steps;
    the last ``val_fraction`` of the rows is held out (its observed entries hidden with the same mask
    strategy, drawn once); standardised with the statistics of the training rows.

    Args: path, time_column, feature_columns, window, stride, val_fraction.
    """

    def __init__(self, path: str, time_column: str | None = None, feature_columns: list[str] | None = None,
                 window: int = 48, stride: int | None = None, val_fraction: float = 0.2, **kw):
        super().__init__(**kw)
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.path, self.time_column, self.feature_columns = path, time_column, feature_columns
        self.window, self.stride, self.val_fraction = window, stride, val_fraction

    def build(self) -> None:
        from polydiff.datasets import csv_series

        table = csv_series.load_table(self.path, self.time_column, self.feature_columns)
        T = len(table.values)
        n_val = max(int(round(T * self.val_fraction)), self.window)
        if T - n_val < self.window:
            raise ConfigError(f"window={self.window} is too long for {self.path}: {T} rows leave {T - n_val} "
                              f"training rows after holding out val_fraction={self.val_fraction}")
        train, val = table.values[: T - n_val], table.values[T - n_val:]
        _, mean, std = csv_series.standardise(train)
        self.mean, self.std, self.feature_names = mean, std, table.columns
        self.interval_seconds, self.interval = csv_series.time_step(table.times)
        self.statistics_note = f"mean and population std of the observed values of the first {T - n_val} rows"
        zt, zv = (train - mean) / std, (val - mean) / std
        tr = _windows(zt, self.window, self.stride or max(self.window // 2, 1), "window")
        va = _windows(zv, self.window, self.window, "window")
        obs_tr, obs_va = ~np.isnan(tr), ~np.isnan(va)
        g = torch.Generator().manual_seed(self.seed + 1)
        strat = self.mask_strategy if self.mask_strategy not in ("historical", "mix") else "random"
        known = masks.training_mask(strat, torch.as_tensor(obs_va), g, ratio=self.mask_ratio,
                                    horizon=self.horizon).numpy()
        if not (obs_va & ~known).any():
            raise DataError(f"{self.path}: the held-out rows have no observed value to evaluate on")
        self.train_set = WindowDataset(tr, obs_tr)
        self.val_set = WindowDataset(va, obs_va, known=known)
