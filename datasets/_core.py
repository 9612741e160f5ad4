"""Dataset registry, verified downloads (pooch + sha256) and safe archive extraction.

A dataset module describes its files once with :class:`RemoteFile` and registers a
:class:`DatasetInfo`; ``polydiff datasets list|download|verify`` and the loaders use the same
description. Nothing is downloaded at import time. Downloads go to the user's cache
(``$POLYDIFF_DATA`` or the platform cache dir) and are checked against their sha256.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from polydiff.errors import DataError

_REGISTRY: dict[str, "DatasetInfo"] = {}


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: where to get it and its sha256 (None only where the source publishes none)."""

    name: str
    url: str
    sha256: str | None


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    domain: str
    description: str
    files: tuple[RemoteFile, ...]
    licence: str
    citation: str
    homepage: str = ""
    notes: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def local_dir(self, root: str | Path | None = None) -> Path:
        """Folder holding the files: ``root`` if given, else ``cache_dir()/<name>``."""
        return Path(root) if root is not None else cache_dir() / self.name

    def fetch(self, filename: str, root: str | Path | None = None) -> Path:
        """:func:`fetch` for this record (registered or not)."""
        return fetch(self, filename, root)

    def verify(self, filename: str, root: str | Path | None = None) -> Path:
        """:func:`verify_file` of one of this dataset's files in :meth:`local_dir`."""
        rf = next((f for f in self.files if f.name == filename), None)
        if rf is None:
            raise DataError(f"dataset {self.name!r} has no file {filename!r}; files: {[f.name for f in self.files]}")
        return verify_file(self.local_dir(root) / rf.name, rf.sha256)


def register(info: DatasetInfo) -> DatasetInfo:
    _REGISTRY[info.name] = info
    return info


def registered() -> dict[str, DatasetInfo]:
    """All registered datasets by name (dataset modules register when imported)."""
    return dict(_REGISTRY)


def get_info(name: str) -> DatasetInfo:
    if name not in _REGISTRY:
        raise DataError(f"unknown dataset {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def cache_dir() -> Path:
    env = os.environ.get("POLYDIFF_DATA")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("polydiff")) / "data"


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: str | Path, sha256: str | None) -> Path:
    """Check a local file exists and matches its sha256; raise :class:`DataError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if sha256 is not None:
        got = sha256_of(path)
        if got != sha256:
            raise DataError(f"{path}: sha256 is {got}, expected {sha256} (corrupt or different version)")
    return path


def fetch(dataset: "str | DatasetInfo", filename: str, root: str | Path | None = None) -> Path:
    """Path of one file of a registered dataset, downloaded with pooch (sha256-checked) if absent.

    If ``root`` is given and already holds the file (e.g. a manual download), it is verified and used
    without network access.
    """
    info = dataset if isinstance(dataset, DatasetInfo) else get_info(dataset)
    match = [f for f in info.files if f.name == filename]
    if not match:
        raise DataError(f"dataset {info.name!r} has no file {filename!r}; files: {[f.name for f in info.files]}")
    rf = match[0]
    folder = info.local_dir(root)
    local = folder / rf.name
    if local.is_file():
        return verify_file(local, rf.sha256)
    import pooch

    known = f"sha256:{rf.sha256}" if rf.sha256 else None
    return Path(pooch.retrieve(rf.url, known_hash=known, fname=rf.name, path=folder, progressbar=True))


def _safe_target(dest: Path, member_name: str, archive: Path) -> Path:
    target = (dest / member_name).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise DataError(f"{archive}: member {member_name!r} would be written outside {dest} (path traversal)")
    return target


def safe_extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract a .tar(.gz/.bz2/.xz) or .zip archive into ``dest``, refusing members that escape it
    (absolute paths, ``..``, links pointing outside) and special files."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                _safe_target(dest, member.filename, archive)
            zf.extractall(dest)
        return dest
    try:
        tf = tarfile.open(archive)
    except tarfile.TarError as exc:
        raise DataError(f"{archive}: not a readable tar or zip archive ({exc})") from exc
    with tf:
        members = tf.getmembers()
        for m in members:
            _safe_target(dest, m.name, archive)
            if m.issym() or m.islnk():
                _safe_target(dest, os.path.join(os.path.dirname(m.name), m.linkname), archive)
            elif not (m.isfile() or m.isdir()):
                raise DataError(f"{archive}: member {m.name!r} is a special file; refusing to extract")
        tf.extractall(dest, members=members, filter="data")
    return dest
