"""Beijing PM2.5 "AQI-36" (Yi et al. 2016, STMVL release; CSDI's air-quality set, Tashiro et al. 2021, §6.1).

36 stations × 8759 hourly readings (2014-05-01 … 2015-04-30). ``pm25_ground.txt`` holds the
readings (NaN = not recorded); ``pm25_missing.txt`` is the same table with additional entries
removed following the real missing patterns of other months — its removed-but-recorded entries are
the evaluation targets (Yi et al. 2016, §6; CSDI App. E.1).

The official ``dataset_pm25.py`` facts reproduced here:

* months 3, 6, 9, 12 are the test set; months [1, 2, 4, 5, 7, 8, 10, 11] train, one of them
  (``valid_index``) held out for validation;
* windows of 36 hours: every start position within a month for train/valid (stride 1); for test,
  non-overlapping windows plus one final window ending at the month's end whose first
  ``cut_length`` steps are excluded from evaluation (so no entry is evaluated twice);
* normalisation with the mean and sample std (pandas ``describe``) of all non-test months
  (:func:`csdi_stats`, equal to the official ``pm25_meanstd.pk``); values are 0 where not recorded;
* historical training masks: training months 1, 4, 7, 10 (which shaped the test patterns) never
  lend their missing patterns; sample i borrows the observed mask of the i-th eligible window in
  cyclic order (``hist_mask``), which CSDI's ``get_hist_mask`` then uses across the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polydiff.errors import DataError

from ._core import DatasetInfo, RemoteFile, register

TEST_MONTHS = (3, 6, 9, 12)
TRAIN_MONTHS = (1, 2, 4, 5, 7, 8, 10, 11)
HIST_FLAGS = (0, 1, 0, 1, 0, 1, 0, 1)  # months 1, 4, 7, 10 excluded from historical patterns
WINDOW = 36

INFO = register(DatasetInfo(
    name="aqi36",
    domain="timeseries",
    description="Beijing PM2.5 AQI-36: 36 stations x 8759 hours, with STMVL's evaluation-missing table",
    files=(
        RemoteFile("STMVL-Release.zip",
                   "https://www.microsoft.com/en-us/research/wp-content/uploads/2016/06/STMVL-Release.zip", None),
    ),
    licence="Microsoft Research release for research use (no open licence)",
    citation="X. Yi, Y. Zheng, J. Zhang, T. Li. ST-MVL: Filling missing values in geo-sensory time series data. "
             "IJCAI 2016.",
    homepage="https://www.microsoft.com/en-us/research/publication/st-mvl-filling-missing-values-in-geo-sensory-"
             "time-series-data/",
    notes="The zip was not available offline to hash; the extracted SampleData files are verified instead "
          "(sha256 computed here from unchanged copies, identical to CSDI's).",
    extra={"extracted_sha256": {
        "pm25_ground.txt": "8f77b738ae4c50621705a308e606e6229564ad7ad20358986bd6031355f0ab5f",
        "pm25_missing.txt": "3f991eab5bbc5e644e61360e6b71ce45179c86cf650b3bb9a53771d8f9953fe3",
        "pm25_latlng.txt": "a7423dafe4ecdec5ba04b4b6b047a53df1b9c04aed0a2957f1c698761715d7c1",
    }},
))


def locate_files(root: str | Path | None = None) -> tuple[Path, Path]:
    """(pm25_ground.txt, pm25_missing.txt) in ``root`` (a SampleData folder), or extracted from the
    downloaded STMVL zip in the cache (sha256-checked)."""
    from ._core import cache_dir, fetch, safe_extract, verify_file

    sha = INFO.extra["extracted_sha256"]
    if root is not None:
        root = Path(root)
        return (verify_file(root / "pm25_ground.txt", None), verify_file(root / "pm25_missing.txt", None))
    folder = cache_dir() / "aqi36"
    sample = folder / "Code" / "STMVL" / "SampleData"
    if not (sample / "pm25_ground.txt").is_file():
        safe_extract(fetch("aqi36", "STMVL-Release.zip"), folder)
    return (verify_file(sample / "pm25_ground.txt", sha["pm25_ground.txt"]),
            verify_file(sample / "pm25_missing.txt", sha["pm25_missing.txt"]))


def read_table(path: str | Path):
    """A STMVL table as a DataFrame indexed by hour (``datetime``), one float column per station."""
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, index_col="datetime", parse_dates=True)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: expected a CSV with a 'datetime' column and one column per station ({exc})") from exc
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError(f"{path}: column 'datetime' could not be parsed as timestamps")
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c].dtype)]
    if bad:
        raise DataError(f"{path}: station column {bad[0]!r} is not numeric")
    return df.astype(np.float64)


def csdi_stats(ground) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof 1, NaN skipped) per station over all non-test months (official
    ``download.py``: the contents of ``pm25_meanstd.pk``)."""
    df = ground[~ground.index.month.isin(TEST_MONTHS)]
    desc = df.describe()
    return desc.loc["mean"].to_numpy(np.float64), desc.loc["std"].to_numpy(np.float64)


@dataclass
class AQI36Windows:
    """Windows of one split; arrays are (n, 36 time, 36 stations)."""

    data: np.ndarray           # normalised, 0 where not recorded
    observed_mask: np.ndarray  # recorded in pm25_ground
    gt_mask: np.ndarray        # recorded in pm25_missing (conditioning at evaluation)
    hist_mask: np.ndarray      # observed mask of the window lending its missing pattern (train only)
    cut_length: np.ndarray     # (n,) leading steps excluded from evaluation
    mean: np.ndarray
    std: np.ndarray

    @property
    def eval_mask(self) -> np.ndarray:
        """Artificially hidden entries (recorded in ground, removed in missing), minus cut steps."""
        m = self.observed_mask & ~self.gt_mask
        steps = np.arange(m.shape[1])[None, :, None]
        return m & (steps >= self.cut_length[:, None, None])


def csdi_windows(ground, missing, mode: str = "train", valid_index: int = 0, window: int = WINDOW,
                 mean: np.ndarray | None = None, std: np.ndarray | None = None) -> AQI36Windows:
    """The windows of ``mode`` (train / valid / test) exactly as ``PM25_Dataset`` builds them."""
    if mode not in ("train", "valid", "test"):
        raise DataError(f"mode must be 'train', 'valid' or 'test', got {mode!r}")
    if not 0 <= valid_index < len(TRAIN_MONTHS):
        raise DataError(f"valid_index must be in 0..{len(TRAIN_MONTHS) - 1}, got {valid_index}")
    if list(ground.columns) != list(missing.columns) or not ground.index.equals(missing.index):
        raise DataError("pm25_ground and pm25_missing must have the same stations and timestamps")
    if mean is None or std is None:
        mean, std = csdi_stats(ground)
    months, flags = list(TRAIN_MONTHS), list(HIST_FLAGS)
    if mode == "train":
        months.pop(valid_index)
        flags.pop(valid_index)
    elif mode == "valid":
        months = months[valid_index:valid_index + 1]
    else:
        months = list(TEST_MONTHS)
    obs_m, gt_m, data_m = [], [], []
    index = []  # (month position, start, cut_length, hist flag)
    for i, month in enumerate(months):
        cur = ground[ground.index.month == month]
        cur_gt = missing[missing.index.month == month]
        n = len(cur)
        if n < window:
            raise DataError(f"month {month} has {n} hours, fewer than the window of {window}")
        o = cur.notna().to_numpy()
        obs_m.append(o)
        gt_m.append(cur_gt.notna().to_numpy())
        data_m.append(np.where(o, (cur.fillna(0).to_numpy() - mean) / std, 0.0))
        if mode == "test":
            starts = list(range(0, window * (n // window), window))
            index += [(i, s, 0, 0) for s in starts]
            if n % window:
                index.append((i, n - window, window - n % window, 0))
        else:
            index += [(i, s, 0, flags[i] if mode == "train" else 0) for s in range(n - window + 1)]
    if mode == "train":  # cyclic assignment of eligible pattern windows (official histmask loop)
        eligible = [k for k, e in enumerate(index) if e[3] == 1]
        if not eligible:
            raise DataError(f"valid_index={valid_index} leaves no month eligible for historical masks")
        donors = [eligible[k % len(eligible)] for k in range(len(index))]
    else:
        donors = list(range(len(index)))

    def take(arrs, entries):
        return np.stack([arrs[m][s:s + window] for m, s, *_ in entries])

    return AQI36Windows(
        data=take(data_m, index), observed_mask=take(obs_m, index), gt_mask=take(gt_m, index),
        hist_mask=take(obs_m, [index[d] for d in donors]), cut_length=np.array([e[2] for e in index]),
        mean=np.asarray(mean), std=np.asarray(std),
    )
