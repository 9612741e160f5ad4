"""Records a user brings to ``polydiff impute``, read and matched to a trained model's variables.

A record is one multivariate series with gaps. Sources:

* a wide table (CSV/Parquet: a time column + one column per variable, empty = missing), one record per file,
  or several in one long file with a record-id column (``--record-column``);
* a PhysioNet 2012 record (``Time,Parameter,Value`` rows, ``Time`` = ``HH:MM`` since admission), parsed exactly
  as CSDI prepares set-a (:func:`polydiff.datasets.physionet2012.parse_record`: 48 hourly rows of its 35
  variables, the last value of an hour wins); parameters outside the 35 (``RecordID``, ``Age``, ``Weight``, ...)
  are listed as ignored;
* a folder of such files (searched recursively; when it holds PhysioNet records, the other files, such as
  ``Outcomes-a.txt``, are skipped and listed), or a PhysioNet set archive (``set-b.tar.gz``).

Columns are matched to the model's variables by name (:func:`align`): any order; a variable the record lacks, or
never observes, is all missing and imputed from the others; a column the model does not know is a
:class:`~polydiff.errors.DataError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polydiff.errors import ConfigError, DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
PHYSIONET_HEADER = "Time,Parameter,Value"


@dataclass
class Record:
    """One series: ``values`` (T, K_in) float64, NaN where missing, columns named ``columns``."""

    name: str
    source: str
    time_column: str
    times: np.ndarray
    columns: list[str]
    values: np.ndarray
    ignored: list[str] = field(default_factory=list)
    long_format: bool = False  # Time,Parameter,Value: its columns are the variables it measures


@dataclass
class Failed:
    """A record that could not be read (batch mode goes on with the others)."""

    name: str
    source: str
    error: str


def _first_line(path: Path) -> str:
    if path.suffix.lower() in (".parquet", ".pq"):
        return ""
    try:
        with open(path, "rb") as f:
            return f.readline(200).decode("utf-8", "replace").strip().lstrip("\ufeff")
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def is_physionet(path: Path) -> bool:
    return _first_line(path) == PHYSIONET_HEADER


def read_physionet(path: Path, name: str | None = None, raw: bytes | None = None) -> Record:
    """A PhysioNet 2012 ``RecordID.txt`` (or its bytes ``raw``, e.g. from an archive) as a 48 × 35 record (see the
    module docstring)."""
    import io

    import pandas as pd

    from polydiff.datasets import physionet2012 as physio

    raw = Path(path).read_bytes() if raw is None else raw
    values = physio.parse_record(raw, name=str(path))
    params = pd.read_csv(io.BytesIO(raw), usecols=["Parameter"])["Parameter"].dropna().astype(str).unique()
    ignored = sorted(set(params) - set(physio.ATTRIBUTES))
    times = np.array([f"{h:02d}:00" for h in range(physio.NUM_HOURS)])
    return Record(name or Path(path).stem, str(path), "Time", times, list(physio.ATTRIBUTES), values, ignored, True)


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith((".tar.gz", ".tgz", ".tar"))


def read_archive(path: Path) -> list[Record | Failed]:
    """Every ``RecordID.txt`` of a PhysioNet set archive (``set-b.tar.gz``), in record-id order."""
    from polydiff.datasets import physionet2012 as physio

    out: list[Record | Failed] = []
    for rid, raw in sorted(physio.iter_record_files(path)):
        where = f"{path}:{rid}.txt"
        try:
            out.append(read_physionet(Path(where), rid, raw))
        except DataError as exc:
            out.append(Failed(rid, where, str(exc)))
    if not out:
        raise DataError(f"{path}: contains no RecordID.txt files (expected names like 132539.txt)")
    return out


def read_table(path: Path, time_column: str | None = None, record_column: str | None = None) -> list[Record]:
    """A wide CSV/Parquet file: one record, or one per value of ``record_column`` (in order of first appearance)."""
    from polydiff.datasets import csv_series

    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: empty file; expected a header line (time column + feature columns) and rows")
    df = csv_series.read_frame(path)
    if record_column is None:
        t = csv_series.table_from_frame(df, path, time_column, allow_empty_columns=True)
        _some_value(t.values, str(path))
        return [Record(path.stem, str(path), t.time_column, t.times, t.columns, t.values)]
    cols = [str(c) for c in df.columns]
    if record_column not in cols:
        raise DataError(f"{path}: record column {record_column!r} not found; columns are {cols}")
    df = df.set_axis(cols, axis=1)
    ids = df[record_column]
    if ids.isna().any():
        raise DataError(f"{path}: record column {record_column!r} is empty at line {int(ids.isna().to_numpy().argmax()) + 2}")
    out = []
    for rid, part in df.groupby(record_column, sort=False):
        t = csv_series.table_from_frame(part.drop(columns=[record_column]), path, time_column,
                                        allow_empty_columns=True, what=f"record {rid}")
        _some_value(t.values, f"{path} (record {rid})")
        out.append(Record(str(rid), f"{path} (record {rid})", t.time_column, t.times, t.columns, t.values))
    return out


def _some_value(values: np.ndarray, where: str) -> None:
    if np.isnan(values).all():
        raise DataError(f"{where}: no observed value in any feature column (all empty or NaN); nothing to impute from")


def read_inputs(path: str | Path, time_column: str | None = None,
                record_column: str | None = None) -> tuple[list[Record | Failed], list[str]]:
    """(records in order, files skipped) from a file or a folder. In a folder, a file that cannot be read becomes
    a :class:`Failed` entry; a single file's error is raised."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        if is_archive(path):
            return read_archive(path), []
        if is_physionet(path):
            return [read_physionet(path)], []
        return list(read_table(path, time_column, record_column)), []
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise DataError(f"{path}: holds no {'/'.join(TABLE_SUFFIXES)} files")
    physio = [p for p in files if is_physionet(p)]
    empty = [p for p in files if p.stat().st_size == 0]  # a record file, emptied: reported, not skipped
    skipped = [str(p.relative_to(path)) for p in files if physio and p not in physio and p not in empty]
    chosen = sorted(physio + empty) if physio else files
    stems = [p.stem for p in chosen]
    out: list[Record | Failed] = []
    for p in chosen:
        name = p.stem if stems.count(p.stem) == 1 else str(p.relative_to(path).with_suffix("")).replace("/", "__")
        try:
            if physio:
                out.append(read_physionet(p, name))
            else:
                recs = read_table(p, time_column, record_column)
                for r in recs:
                    if record_column is None:
                        r.name = name
                out.extend(recs)
        except DataError as exc:
            out.append(Failed(name, str(p), str(exc)))
    return out, skipped


@dataclass
class Aligned:
    """A record on the model's variables: ``values`` (T, K) in the model's order, NaN where missing."""

    record: Record
    values: np.ndarray
    absent: list[str]          # model variables with no column in the record
    never_observed: list[str]  # model variables without one observed value (absent ones included)


def align(record: Record, names: list[str]) -> Aligned:
    """Match the record's columns to the model's variables ``names`` by name (see the module docstring)."""
    cols = list(record.columns)
    has_any = ~np.isnan(record.values).all(axis=0)
    unknown = [c for c, any_ in zip(cols, has_any) if c not in names and (any_ or not record.long_format)]
    if unknown:
        raise DataError(f"{record.source}: column(s) {unknown} are not variables of the model, which knows {names}; "
                        "rename or drop them")
    out = np.full((len(record.values), len(names)), np.nan)
    index = {c: k for k, c in enumerate(cols)}
    for j, n in enumerate(names):
        if n in index:
            out[:, j] = record.values[:, index[n]]
    if np.isnan(out).all():
        raise DataError(f"{record.source}: no observed value of any of the model's {len(names)} variables; there is "
                        "nothing to impute from")
    absent = [n for n in names if n not in index]
    never = [n for j, n in enumerate(names) if np.isnan(out[:, j]).all()]
    return Aligned(record, out, absent, never)


def check_record_column(record_column: str | None, path: Path) -> None:
    if record_column is not None and Path(path).is_dir():
        raise ConfigError("--record-column splits one long file into records; a folder holds one record per file")
