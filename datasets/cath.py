"""CATH S40 non-redundant domains (v4.3.0), the training set of FoldingDiff (Wu et al. 2024, §4.1).

One archive of PDB files without suffix, ``dompdb/<domain id>`` (e.g. ``dompdb/1a0rP01``). FoldingDiff's
``data/download_cath.sh`` fetched the then-latest release (4.3.0) and checked it against the md5 in its
``data/cath_checksums.md5`` (``070a96ace6d82b87524cb82c3269e4dc``); CATH publishes no sha256, so the entry
has ``sha256=None`` and :func:`download` checks that md5 instead. The URL is the pinned 4.3.0 copy (the
``latest-release`` folder has moved on to 4.4).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from polydiff.errors import DataError

from ._core import DatasetInfo, RemoteFile, cache_dir, fetch, register, safe_extract

ARCHIVE = "cath-dataset-nonredundant-S40-v4_3_0.pdb.tgz"
MD5 = "070a96ace6d82b87524cb82c3269e4dc"

INFO = register(DatasetInfo(
    name="cath_s40",
    domain="protein",
    description="CATH v4.3.0 S40 non-redundant domains (PDB files), FoldingDiff's training set",
    files=(RemoteFile(ARCHIVE, "ftp://orengoftp.biochem.ucl.ac.uk/cath/releases/all-releases/v4_3_0/"
                      f"non-redundant-data-sets/{ARCHIVE}", None),),
    licence="CC BY 4.0 (CATH)",
    citation="I. Sillitoe et al. CATH: increased structural coverage of functional space. NAR 2021. "
             "K. E. Wu et al. Protein structure generation via folding diffusion. Nat. Commun. 2024.",
    homepage="https://www.cathdb.info/",
    notes=f"no sha256 published; md5 {MD5} from FoldingDiff's data/cath_checksums.md5 is checked",
))


def md5_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def domain_folder(root: str | Path | None = None) -> Path:
    """The extracted ``dompdb`` folder (downloaded, md5-checked and extracted on first use)."""
    folder = Path(root) if root is not None else cache_dir() / INFO.name
    target = folder / "dompdb"
    if target.is_dir() and any(target.iterdir()):
        return target
    archive = fetch(INFO.name, ARCHIVE, root=folder)
    got = md5_of(archive)
    if got != MD5:
        raise DataError(f"{archive}: md5 is {got}, expected {MD5} (FoldingDiff's CATH S40 v4.3.0 archive)")
    safe_extract(archive, folder)
    if not target.is_dir():
        raise DataError(f"{archive}: extracted, but it holds no 'dompdb' folder")
    return target
