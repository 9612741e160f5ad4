"""PhysioNet/CinC Challenge 2012 ("healthcare" data of CSDI, Tashiro et al. 2021, §6.1).

Silva et al. (2012) released 4000 ICU stays per set (a, b, c) as ``RecordID.txt`` files of rows
``Time,Parameter,Value`` (``Time`` = ``HH:MM`` since admission) plus one ``Outcomes-*.txt`` per set.
CSDI (official ``dataset_physio.py``) turns each record of set-a into a 48 × 35 array:

* 35 variables (:data:`ATTRIBUTES`, the official order), 48 hourly steps ``h = int(HH)`` for h < 48
  (rows at ``48:00`` are dropped);
* within an hour the *last* value of a parameter in file order wins (pandas ``to_dict`` semantics);
* evaluation targets: with ``np.random.seed(seed)`` set once, records in sorted id order each hide
  ``int(n_observed · ratio)`` observed entries drawn by ``np.random.choice(..., replace=False)``
  (:func:`csdi_eval_masks`);
* normalisation: per-variable mean and population std (ddof = 0) of observed values, values set to 0
  where not observed (the BRITS normalisation, Cao et al. 2018). The official code takes the
  statistics over *all* patients before splitting (``stats="all"``, parity only); the default here
  uses the training patients only so that no test information leaks into preprocessing;
* records with no observation of the 35 variables make the official loader raise and are skipped
  (:func:`prepare_csdi` drops them too; the random stream is unaffected since they draw nothing);
* split: :func:`csdi_split` (5-fold, ``nfold`` selects the test fifth; 70 % of all records train).

Records are parsed straight from the ``.tar.gz`` (no extraction) or from a folder of ``.txt`` files.
Values are parsed with pandas' C parser like the official code so that floats are bit-identical.
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polydiff.errors import DataError

from ._core import DatasetInfo, RemoteFile, fetch, register

ATTRIBUTES = (
    "DiasABP", "HR", "Na", "Lactate", "NIDiasABP", "PaO2", "WBC", "pH", "Albumin", "ALT", "Glucose", "SaO2",
    "Temp", "AST", "Bilirubin", "HCO3", "BUN", "RespRate", "Mg", "HCT", "SysABP", "FiO2", "K", "GCS",
    "Cholesterol", "NISysABP", "TroponinT", "MAP", "TroponinI", "PaCO2", "Platelets", "Urine", "NIMAP",
    "Creatinine", "ALP",
)
NUM_HOURS = 48
_BASE = "https://physionet.org/files/challenge-2012/1.0.0/"
_ID = re.compile(r"(\d{6})\.txt$")

INFO = register(DatasetInfo(
    name="physionet2012",
    domain="timeseries",
    description="PhysioNet/CinC Challenge 2012 ICU records (sets a/b/c, 4000 stays each) and outcomes; "
                "CSDI's 35 variables x 48 hourly steps",
    files=(
        # sha256 of set-a and Outcomes-a computed here from unchanged copies of the PhysioNet v1.0.0 files;
        # sets b/c were not available offline to hash (verification is skipped for them).
        RemoteFile("set-a.tar.gz", _BASE + "set-a.tar.gz",
                   "abcd119bae0f9f98d5e63b7bce5b2d37c64328e7c1acacab3836d17787d841df"),
        RemoteFile("Outcomes-a.txt", _BASE + "Outcomes-a.txt",
                   "2613ea60ccda29f87571a7d6b09ad130858a8ccd66325bd073365925026883c2"),
        RemoteFile("set-b.tar.gz", _BASE + "set-b.tar.gz", None),
        RemoteFile("Outcomes-b.txt", _BASE + "Outcomes-b.txt", None),
        RemoteFile("set-c.tar.gz", _BASE + "set-c.tar.gz", None),
        RemoteFile("Outcomes-c.txt", _BASE + "Outcomes-c.txt", None),
    ),
    licence="Open Data Commons Attribution License v1.0",
    citation="I. Silva, G. Moody, D. J. Scott, L. A. Celi, R. G. Mark. Predicting in-hospital mortality of ICU "
             "patients: the PhysioNet/Computing in Cardiology Challenge 2012. Computing in Cardiology 39, 2012.",
    homepage="https://physionet.org/content/challenge-2012/1.0.0/",
    notes="CSDI uses set-a only. sha256 of set-b/c and Outcomes-b/c not recorded (not available offline).",
))


@dataclass
class PhysioNetRecords:
    """Parsed records: ``values`` (N, 48, 35) float64 with NaN where not observed, ids sorted as strings."""

    record_ids: list[str]
    values: np.ndarray

    @property
    def observed_mask(self) -> np.ndarray:
        return ~np.isnan(self.values)


def _fill(df, rec: np.ndarray, n: int, name: str, lines: bool = False) -> np.ndarray:
    """Rows (Time, Parameter, Value) of records ``rec`` → (n, 48, 35); the last value of an hour wins.
    ``lines``: ``df`` is one file read with its header, so errors name the file's line (row + 2)."""
    import pandas as pd

    def at(i: int) -> str:
        return f"{name}: line {i + 2}" if lines else name

    time = df["Time"].astype(str)
    ok = time.str.fullmatch(r"\d+:\d{2}").to_numpy()
    if not ok.all():
        i = int(np.argmin(ok))
        raise DataError(f"{at(i)}: column 'Time' must hold HH:MM values, found {df['Time'].iloc[i]!r}")
    hours = time.str.split(":").str[0].astype(np.int64).to_numpy()
    values = pd.to_numeric(df["Value"], errors="coerce").to_numpy(np.float64)
    bad = np.isnan(values) & df["Value"].notna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{at(i)}: column 'Value' must be numeric, found {df['Value'].iloc[i]!r}")
    code = df["Parameter"].map({a: k for k, a in enumerate(ATTRIBUTES)}).fillna(-1).to_numpy(np.int64)
    keep = (code >= 0) & (hours >= 0) & (hours < NUM_HOURS)
    cell = (rec[keep] * NUM_HOURS + hours[keep]) * len(ATTRIBUTES) + code[keep]
    vals = values[keep]
    # file order is preserved: keep the last row of every (record, hour, parameter) cell
    last = len(cell) - 1 - np.unique(cell[::-1], return_index=True)[1]
    out = np.full(n * NUM_HOURS * len(ATTRIBUTES), np.nan)
    out[cell[last]] = vals[last]
    return out.reshape(n, NUM_HOURS, len(ATTRIBUTES))


def _read(raw: bytes, name: str, header: bool):
    import pandas as pd

    try:
        df = pd.read_csv(io.BytesIO(raw), header=0 if header else None,
                         names=None if header else ["Time", "Parameter", "Value"])
    except Exception as exc:  # pandas raises many types for malformed text
        raise DataError(f"{name}: not a readable 'Time,Parameter,Value' CSV ({exc})") from exc
    if list(df.columns) != ["Time", "Parameter", "Value"]:
        raise DataError(f"{name}: expected header 'Time,Parameter,Value', got {list(df.columns)}")
    return df


def parse_record(text: str | bytes, name: str = "<record>") -> np.ndarray:
    """One ``RecordID.txt`` → (48, 35) float64 array, NaN where a variable is not measured that hour."""
    raw = text.encode() if isinstance(text, str) else text
    if not raw.strip():
        raise DataError(f"{name}: empty file; expected a 'Time,Parameter,Value' header and rows")
    df = _read(raw, name, header=True)
    return _fill(df, np.zeros(len(df), dtype=np.int64), 1, name, lines=True)[0]


def iter_record_files(source: str | Path):
    """Yield (record_id, bytes) from a .tar(.gz) archive or a folder of RecordID.txt files (file order)."""
    source = Path(source)
    if source.is_dir():
        for p in source.iterdir():
            m = _ID.search(p.name)
            if m and p.is_file():
                yield m.group(1), p.read_bytes()
        return
    if not source.is_file():
        raise DataError(f"{source}: no such PhysioNet 2012 archive or folder")
    try:
        tf = tarfile.open(source)
    except tarfile.TarError as exc:
        raise DataError(f"{source}: not a readable tar archive ({exc})") from exc
    with tf:
        for member in tf:
            m = _ID.search(member.name)
            if m and member.isfile():
                yield m.group(1), tf.extractfile(member).read()


def load_records(source: str | Path, max_records: int | None = None) -> PhysioNetRecords:
    """Parse every ``RecordID.txt`` of a set (tar.gz or folder), ordered by id like the official code."""
    source = Path(source)
    texts = dict(iter_record_files(source))
    if not texts:
        raise DataError(f"{source}: contains no RecordID.txt files (expected names like 132539.txt)")
    ids = sorted(texts)[:max_records]
    # one pandas parse of all record bodies (same float parser as per-file reading, 30x faster)
    bodies, counts = [], []
    for i in ids:
        head, _, body = texts[i].partition(b"\n")
        if head.strip() != b"Time,Parameter,Value":
            raise DataError(f"{source}:{i}.txt: expected header 'Time,Parameter,Value', got {head[:60]!r}")
        body = body if body.endswith(b"\n") or not body else body + b"\n"
        bodies.append(body)
        counts.append(body.count(b"\n"))
    df = _read(b"".join(bodies), str(source), header=False)
    if len(df) != sum(counts):  # blank lines or quoting: fall back to one parse per record
        values = np.stack([parse_record(texts[i], name=f"{source}:{i}.txt") for i in ids])
    else:
        values = _fill(df, np.repeat(np.arange(len(ids)), counts), len(ids), str(source))
    return PhysioNetRecords(ids, values)


def load_set(set_name: str = "a", root: str | Path | None = None, max_records: int | None = None) -> PhysioNetRecords:
    """Records of set ``a``, ``b`` or ``c``: from ``root`` if it holds ``set-X.tar.gz`` or ``set-X/``,
    else downloaded (sha256-checked where known) into the cache."""
    if set_name not in ("a", "b", "c"):
        raise DataError(f"set_name must be 'a', 'b' or 'c', got {set_name!r}")
    if root is not None and (Path(root) / f"set-{set_name}").is_dir():
        return load_records(Path(root) / f"set-{set_name}", max_records)
    return load_records(fetch("physionet2012", f"set-{set_name}.tar.gz", root=root), max_records)


def load_outcomes(path: str | Path):
    """``Outcomes-X.txt`` as a DataFrame indexed by RecordID (SAPS-I, SOFA, Length_of_stay, Survival,
    In-hospital_death; −1 = not recorded, as in the release)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: outcomes file not found")
    df = pd.read_csv(path)
    need = ["RecordID", "SAPS-I", "SOFA", "Length_of_stay", "Survival", "In-hospital_death"]
    if list(df.columns) != need:
        raise DataError(f"{path}: expected columns {need}, got {list(df.columns)}")
    return df.set_index("RecordID")


def csdi_eval_masks(observed_mask: np.ndarray, missing_ratio: float, seed: int) -> np.ndarray:
    """CSDI's ``gt_masks`` (True = observed and kept as conditioning), shape like ``observed_mask``.

    Reproduces ``Physio_Dataset``: ``np.random.seed(seed)`` once, then per record (in order)
    ``np.random.choice(observed indices, int(n_obs · ratio), replace=False)`` are hidden.
    Evaluation targets are ``observed_mask & ~gt_mask``.
    """
    if not 0.0 <= missing_ratio < 1.0:
        raise DataError(f"missing_ratio must be in [0, 1), got {missing_ratio}")
    rng = np.random.RandomState(seed)
    out = np.empty_like(observed_mask, dtype=bool)
    for n, m in enumerate(observed_mask):
        flat = m.reshape(-1).copy()
        obs = np.where(flat)[0].tolist()
        hide = rng.choice(obs, int(len(obs) * missing_ratio), replace=False)
        flat[np.asarray(hide, dtype=np.int64)] = False
        out[n] = flat.reshape(m.shape)
    return out


def csdi_split(n: int, seed: int = 1, nfold: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, valid, test) indices of the official ``get_dataloader``: shuffle with ``seed``, test =
    fifth number ``nfold``, remaining shuffled again with ``seed``; train = first ``int(0.7 n)``."""
    if not 0 <= nfold <= 4:
        raise DataError(f"nfold must be in 0..4, got {nfold}")
    ind = np.arange(n)
    np.random.RandomState(seed).shuffle(ind)
    start, end = int(nfold * 0.2 * n), int((nfold + 1) * 0.2 * n)
    test = ind[start:end]
    remain = np.delete(ind, np.arange(start, end))
    np.random.RandomState(seed).shuffle(remain)
    num_train = int(n * 0.7)
    return remain[:num_train], remain[num_train:], test


def feature_stats(values: np.ndarray, observed_mask: np.ndarray, index=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-variable mean and population std (ddof 0) of observed values of the records in ``index``
    (all records if None). A variable never observed there gets mean 0, std 1."""
    v = values if index is None else values[index]
    m = observed_mask if index is None else observed_mask[index]
    v, m = v.reshape(-1, v.shape[-1]), m.reshape(-1, m.shape[-1])
    mean, std = np.zeros(v.shape[1]), np.ones(v.shape[1])
    for k in range(v.shape[1]):
        col = v[m[:, k], k]
        if col.size:
            mean[k], std[k] = col.mean(), col.std()
    std[std == 0] = 1.0
    return mean, std


def normalise(values: np.ndarray, observed_mask: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(values − mean)/std on observed entries, 0 elsewhere (official ``Physio_Dataset``)."""
    return np.where(observed_mask, (np.nan_to_num(values) - mean) / std, 0.0)


@dataclass
class CSDIPhysioNet:
    """PhysioNet prepared exactly as CSDI prepares it (see module docstring)."""

    record_ids: list[str]
    data: np.ndarray           # (N, 48, 35) float64, normalised, 0 where not observed
    observed_mask: np.ndarray  # (N, 48, 35) bool: observed in the raw record
    gt_mask: np.ndarray        # (N, 48, 35) bool: observed and not hidden for evaluation
    mean: np.ndarray
    std: np.ndarray
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    @property
    def eval_mask(self) -> np.ndarray:
        return self.observed_mask & ~self.gt_mask


def prepare_csdi(records: PhysioNetRecords, missing_ratio: float = 0.1, seed: int = 1, nfold: int = 0,
                 stats: str = "train") -> CSDIPhysioNet:
    """Build CSDI's arrays, masks and split; ``stats`` = ``train`` (default) or ``all`` (official)."""
    if stats not in ("train", "all"):
        raise DataError(f"stats must be 'train' or 'all', got {stats!r}")
    keep = records.observed_mask.any(axis=(1, 2))
    if not keep.all():  # the official loader fails on these records and skips them (draws no random numbers)
        records = PhysioNetRecords([i for i, k in zip(records.record_ids, keep) if k], records.values[keep])
    obs = records.observed_mask
    gt = csdi_eval_masks(obs, missing_ratio, seed)
    train, valid, test = csdi_split(len(records.record_ids), seed=seed, nfold=nfold)
    mean, std = feature_stats(records.values, obs, None if stats == "all" else train)
    return CSDIPhysioNet(records.record_ids, normalise(records.values, obs, mean, std), obs, gt, mean, std,
                         train, valid, test)
