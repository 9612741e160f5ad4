"""Electricity Transformer Temperature (ETT; Zhou et al. 2021, Informer, §5 "Datasets").

Four CSVs: ETTh1/ETTh2 (hourly) and ETTm1/ETTm2 (15-minute), columns ``date`` plus seven loads
``HUFL, HULL, MUFL, MULL, LUFL, LULL`` and the target ``OT`` (oil temperature). The standard split
(Informer's ``Dataset_ETT_hour``/``Dataset_ETT_minute``) is 12 / 4 / 4 months of 30 days from the
start: train = the first 12·30·24·p rows, validation and test the next 4·30·24·p each (p = 1 hourly,
4 for 15-minute data); validation and test windows may reach ``history`` rows back into the previous
part. Standardisation uses the training rows only (population std, as sklearn's StandardScaler).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polydiff.errors import DataError

from ._core import DatasetInfo, RemoteFile, fetch, register

NAMES = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
_BASE = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/"

INFO = register(DatasetInfo(
    name="ett",
    domain="timeseries",
    description="Electricity Transformer Temperature: ETTh1/ETTh2 (hourly), ETTm1/ETTm2 (15 min), 7 variables",
    files=(
        # sha256 computed here; ETTh1/ETTh2 are byte-identical to the upstream git blobs (checked).
        RemoteFile("ETTh1.csv", _BASE + "ETTh1.csv", "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066"),
        RemoteFile("ETTh2.csv", _BASE + "ETTh2.csv", "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b"),
        RemoteFile("ETTm1.csv", _BASE + "ETTm1.csv", None),  # not available offline to hash
        RemoteFile("ETTm2.csv", _BASE + "ETTm2.csv", None),
    ),
    licence="CC BY-ND 4.0 (use unmodified; slice at run time)",
    citation="H. Zhou et al. Informer: Beyond efficient transformer for long sequence time-series forecasting. AAAI 2021.",
    homepage="https://github.com/zhouhaoyi/ETDataset",
))


def load_csv(name: str, root: str | Path | None = None):
    """One ETT table as a DataFrame indexed by ``date`` with the seven float columns."""
    import pandas as pd

    if name not in NAMES:
        raise DataError(f"unknown ETT table {name!r}; expected one of {NAMES}")
    path = fetch("ett", f"{name}.csv", root=root)
    df = pd.read_csv(path, parse_dates=["date"]).set_index("date")
    if tuple(df.columns) != COLUMNS:
        raise DataError(f"{path}: expected columns date,{','.join(COLUMNS)}; got {list(df.columns)}")
    return df.astype(np.float64)


def borders(name: str, history: int = 0) -> list[tuple[int, int]]:
    """Row ranges [start, end) of train / valid / test (Informer's border1s/border2s)."""
    if name not in NAMES:
        raise DataError(f"unknown ETT table {name!r}; expected one of {NAMES}")
    p = 4 if name.startswith("ETTm") else 1
    month = 30 * 24 * p
    ends = [12 * month, 16 * month, 20 * month]
    starts = [0, ends[0] - history, ends[1] - history]
    return list(zip(starts, ends))


@dataclass
class ETTSplits:
    train: np.ndarray  # (rows, 7) standardised
    valid: np.ndarray
    test: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    columns: tuple[str, ...] = COLUMNS


def splits(name: str, root: str | Path | None = None, history: int = 0) -> ETTSplits:
    """Standardised train/valid/test arrays of the 12/4/4-month split (statistics from train rows)."""
    values = load_csv(name, root).to_numpy()
    (a0, a1), (b0, b1), (c0, c1) = borders(name, history)
    if len(values) < c1:
        raise DataError(f"{name}: has {len(values)} rows, the standard split needs {c1}")
    mean, std = values[a0:a1].mean(0), values[a0:a1].std(0)
    z = (values - mean) / std
    return ETTSplits(z[a0:a1], z[b0:b1], z[c0:c1], mean, std)
