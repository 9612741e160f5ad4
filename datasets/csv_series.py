"""A multivariate series a user brings: CSV or Parquet with one time column and feature columns.

Rows are time steps, columns are variables, empty cells / NaN are missing values. The loader
refuses (with :class:`polydiff.errors.DataError` naming the column) what would silently corrupt an
imputation: non-numeric feature columns, columns with no value at all, and duplicate or unsorted
timestamps. :func:`sliding_windows` cuts fixed-length windows and names the setting when the
window is longer than the series.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polydiff.errors import ConfigError, DataError

from ._core import DatasetInfo, register

INFO = register(DatasetInfo(
    name="csv_series",
    domain="timeseries",
    description="any multivariate time series a user brings as CSV or Parquet (time column + feature columns, "
                "NaN = missing)",
    files=(),
    licence="the user's own data",
    citation="",
    notes="no download: pass the path of your file",
))


@dataclass
class SeriesTable:
    """``values`` (T, K) float64 with NaN where missing; ``times`` the time column (T,) as read."""

    path: Path
    time_column: str
    columns: list[str]
    times: np.ndarray
    values: np.ndarray

    @property
    def observed_mask(self) -> np.ndarray:
        return ~np.isnan(self.values)


def read_frame(path: str | Path):
    """Read a CSV (``.csv``, ``.txt``, ``.tsv``) or Parquet (``.parquet``, ``.pq``) file into a DataFrame."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except ImportError as exc:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from exc
    except Exception as exc:  # pandas/pyarrow raise many parser error types
        raise DataError(f"{path}: could not be parsed as {suffix[1:]} ({exc})") from exc
    raise DataError(f"{path}: unsupported suffix {suffix!r}; expected .csv, .tsv, .txt, .parquet or .pq")


def load_table(path: str | Path, time_column: str | None = None, feature_columns: list[str] | None = None,
               allow_empty_columns: bool = False) -> SeriesTable:
    """Load and validate a series table.

    Args:
        path: CSV or Parquet file.
        time_column: name of the time column (default: the first column). Timestamps (parsable
            dates) or numbers; they must be strictly increasing.
        feature_columns: the variables to keep (default: every other column).
        allow_empty_columns: accept a feature column with no observed value (imputation: a trained model
            fills it from the others); training refuses it (default).
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: empty file; expected a header line (time column + feature columns) and rows")
    return table_from_frame(read_frame(path), path, time_column, feature_columns, allow_empty_columns)


def _line(index, row: int) -> str:
    """'line N' of a CSV row (header = line 1) from the frame's index label, else 'row N'."""
    label = index[row]
    return f"line {int(label) + 2}" if isinstance(label, (int, np.integer)) else f"row {row}"


def table_from_frame(df, path: str | Path, time_column: str | None = None, feature_columns: list[str] | None = None,
                     allow_empty_columns: bool = False, what: str | None = None) -> SeriesTable:
    """:func:`load_table` on a DataFrame already read from ``path`` (e.g. one record's rows of a longer file;
    errors name ``path``, ``what`` (e.g. "record 7") and the file's line, from the frame's index)."""
    import pandas as pd

    path = Path(path)
    where = f"{path}" + (f" ({what})" if what else "")
    if df.shape[1] < 2:
        raise DataError(f"{where}: needs a time column and at least one feature column, found columns {list(df.columns)}")
    if len(df) == 0:
        raise DataError(f"{where}: has a header but no rows")
    cols = [str(c) for c in df.columns]
    df = df.set_axis(cols, axis=1)
    time_column = cols[0] if time_column is None else time_column
    if time_column not in cols:
        raise DataError(f"{where}: time column {time_column!r} not found; columns are {cols}")
    features = [c for c in cols if c != time_column] if feature_columns is None else list(feature_columns)
    for c in features:
        if c not in cols or c == time_column:
            raise DataError(f"{where}: feature column {c!r} not found (or is the time column); columns are {cols}")
    if not features:
        raise DataError(f"{where}: no feature columns")
    if len(set(cols)) != len(cols):
        dup = sorted({c for c in cols if cols.count(c) > 1})
        raise DataError(f"{where}: column name(s) {dup} appear more than once")
    times = df[time_column]
    if times.isna().any():
        raise DataError(f"{where}: time column {time_column!r} has an empty value at "
                        f"{_line(df.index, int(times.isna().to_numpy().argmax()))}")
    if not pd.api.types.is_numeric_dtype(times.dtype):
        try:
            times = pd.to_datetime(times)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{where}: time column {time_column!r} holds neither numbers nor dates ({exc})") from exc
    t = times.to_numpy()
    dup = pd.Series(t).duplicated()
    if dup.any():
        i = int(dup.to_numpy().argmax())
        raise DataError(f"{where}: time column {time_column!r} has a duplicate timestamp {t[i]} ({_line(df.index, i)})")
    if len(t) > 1 and not (t[1:] > t[:-1]).all():
        i = int(np.argmin(t[1:] > t[:-1])) + 1
        raise DataError(f"{where}: time column {time_column!r} is not sorted: {_line(df.index, i)} ({t[i]}) comes "
                        f"after {t[i - 1]}")
    values = np.empty((len(df), len(features)), dtype=np.float64)
    for k, c in enumerate(features):
        col = df[c]
        if pd.api.types.is_bool_dtype(col.dtype) or not (pd.api.types.is_numeric_dtype(col.dtype) or col.isna().all()):
            num = pd.to_numeric(col, errors="coerce")
            bad = (num.isna() & col.notna()).to_numpy()
            if bad.any() or pd.api.types.is_bool_dtype(col.dtype):
                i = int(bad.argmax()) if bad.any() else 0
                raise DataError(f"{where}: feature column {c!r} is not numeric (e.g. {col.iloc[i]!r} at "
                                f"{_line(df.index, i)})")
            col = num
        values[:, k] = col.to_numpy(np.float64)
        if not allow_empty_columns and np.isnan(values[:, k]).all():
            raise DataError(f"{where}: feature column {c!r} has no observed value (all NaN); drop it or fill it")
        if np.isinf(values[:, k]).any():
            raise DataError(f"{where}: feature column {c!r} contains inf (at {_line(df.index, int(np.isinf(values[:, k]).argmax()))})")
    return SeriesTable(path, time_column, features, t, values)


def sliding_windows(values: np.ndarray, length: int, stride: int | None = None, name: str = "window") -> np.ndarray:
    """(n, length, K) windows of a (T, K) array; the last window is aligned to the end so every row is
    covered. Raises :class:`ConfigError` naming ``name`` when ``length`` exceeds T."""
    if length < 1:
        raise ConfigError(f"{name} must be a positive integer, got {length}")
    T = values.shape[0]
    if length > T:
        raise ConfigError(f"{name}={length} is longer than the series ({T} time steps); use {name} <= {T}")
    stride = length if stride is None else stride
    if stride < 1:
        raise ConfigError(f"stride must be a positive integer, got {stride}")
    starts = list(range(0, T - length + 1, stride))
    if starts[-1] != T - length:
        starts.append(T - length)
    return np.stack([values[s:s + length] for s in starts])


def window_starts(T: int, length: int, stride: int | None = None) -> list[int]:
    """Start rows used by :func:`sliding_windows` (for writing results back)."""
    stride = length if stride is None else stride
    starts = list(range(0, T - length + 1, stride))
    if starts[-1] != T - length:
        starts.append(T - length)
    return starts


def standardise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, mean, std) using observed entries per column (population std; std 0 → 1)."""
    mean = np.nanmean(values, axis=0)
    std = np.nanstd(values, axis=0)
    std = np.where(std > 0, std, 1.0)
    return (values - mean) / std, mean, std


def time_step(times: np.ndarray) -> tuple[float | None, str]:
    """(seconds, text) of the median spacing of a time column: seconds for timestamps, (None, "N time units")
    for plain numbers, (None, "unknown") for fewer than two rows."""
    t = np.asarray(times)
    if len(t) < 2:
        return None, "unknown"
    if np.issubdtype(t.dtype, np.datetime64):
        sec = float(np.median(np.diff(t).astype("timedelta64[ns]").astype(np.int64)) / 1e9)
        return sec, f"{sec:g} s"
    return None, f"{float(np.median(np.diff(t.astype(np.float64)))):g} time units"
