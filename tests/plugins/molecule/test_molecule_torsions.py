"""Torsions of rotatable bonds: which bonds count, extraction and re-application round trip to 1e-6 rad, and the
local structure (bond lengths, bond angles) left untouched."""

import itertools
import math

import numpy as np
import pytest

pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402
from rdkit.Chem import AllChem, rdMolTransforms  # noqa: E402

from polydiff.errors import DataError  # noqa: E402
from polydiff.plugins.molecule.torsions import get_torsions, rotatable_bonds, set_torsions  # noqa: E402

SMILES = ("CCCC", "CC(=O)NC1CCCCC1", "OCC(O)CO", "c1ccccc1CCN", "CC(C)(C)OC(=O)N")


def _embedded(smiles, seed=0):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    return mol


def _local_structure(mol):
    conf = mol.GetConformer()
    lengths = [rdMolTransforms.GetBondLength(conf, b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
    angles = []
    for atom in mol.GetAtoms():
        nbs = [n.GetIdx() for n in atom.GetNeighbors()]
        angles += [rdMolTransforms.GetAngleRad(conf, a, atom.GetIdx(), c) for a, c in itertools.combinations(nbs, 2)]
    return np.array(lengths), np.array(angles)


def test_rotatable_bonds_follow_the_split_rule():
    # butane with hydrogens: C1-C2, C2-C3, C3-C4 all split into parts of > 1 atom (methyl rotors count)
    assert len(rotatable_bonds(Chem.AddHs(Chem.MolFromSmiles("CCCC")))) == 3
    # ethanol: C-C and C-O (OH side is O + H); C-H and O-H bonds are not rotatable
    assert len(rotatable_bonds(Chem.AddHs(Chem.MolFromSmiles("CCO")))) == 2
    # ring bonds never rotate; fluoromethane's only heavy bond ends in a lone F
    assert rotatable_bonds(Chem.AddHs(Chem.MolFromSmiles("C1CCCCC1"))) == []
    assert rotatable_bonds(Chem.AddHs(Chem.MolFromSmiles("CF"))) == []


@pytest.mark.parametrize("smiles", SMILES)
def test_torsion_round_trip_to_1e6_rad_keeps_local_structure(smiles):
    mol = _embedded(smiles)
    bonds = rotatable_bonds(mol)
    assert bonds
    lengths, angles = _local_structure(mol)
    before = get_torsions(mol, bonds)
    # reading then writing the same values changes nothing
    set_torsions(mol, before, bonds)
    np.testing.assert_allclose(get_torsions(mol, bonds), before, atol=1e-6)
    # new values (outside (−π, π] too) are read back exactly, modulo 2π
    target = np.random.default_rng(0).uniform(-3 * math.pi, 3 * math.pi, len(bonds))
    set_torsions(mol, target, bonds)
    diff = np.angle(np.exp(1j * (get_torsions(mol, bonds) - target)))
    assert np.abs(diff).max() < 1e-6
    new_lengths, new_angles = _local_structure(mol)
    np.testing.assert_allclose(new_lengths, lengths, atol=1e-6)
    np.testing.assert_allclose(new_angles, angles, atol=1e-6)


def test_bad_torsion_input_is_a_clear_error():
    mol = _embedded("CCCC")
    with pytest.raises(DataError, match="2 torsion values for 3 rotatable bonds"):
        set_torsions(mol, [0.0, 1.0])
    with pytest.raises(DataError, match="finite"):
        set_torsions(mol, [0.0, float("nan"), 1.0])
    with pytest.raises(DataError, match="no conformer"):
        get_torsions(Chem.AddHs(Chem.MolFromSmiles("CCCC")))


def test_rotate_torsions_on_tensors_matches_rdkit_and_moves_nothing_on_padding():
    import torch

    from polydiff.plugins.molecule.torsions import moving_sides, rotate_torsions

    mols = [_embedded("CC(=O)NC1CCCCC1"), _embedded("OCC(O)CO", seed=3)]
    n_max = max(m.GetNumAtoms() for m in mols)
    t_max = max(len(rotatable_bonds(m)) for m in mols)
    pos = torch.zeros(2, n_max, 3, dtype=torch.float64)
    atoms = torch.zeros(2, t_max, 4, dtype=torch.long)
    sides = torch.zeros(2, t_max, n_max, dtype=torch.bool)
    delta = torch.zeros(2, t_max, dtype=torch.float64)
    rng = np.random.default_rng(1)
    expected = []
    for b, mol in enumerate(mols):
        bonds = rotatable_bonds(mol)
        pos[b, :mol.GetNumAtoms()] = torch.from_numpy(mol.GetConformer().GetPositions())
        atoms[b, :len(bonds)] = torch.tensor(bonds)
        for t, side in enumerate(moving_sides(mol, bonds)):
            sides[b, t, sorted(side)] = True
        d = rng.uniform(-math.pi, math.pi, len(bonds))
        delta[b, :len(bonds)] = torch.from_numpy(d)
        delta[b, len(bonds):] = 1.0  # padding rows: ignored (their side masks are empty)
        expected.append(get_torsions(mol, bonds) + d)
    out = rotate_torsions(pos, atoms, sides, delta)
    for b, mol in enumerate(mols):
        moved = Chem.Mol(mol)
        conf = moved.GetConformer()
        for a in range(mol.GetNumAtoms()):
            conf.SetAtomPosition(a, out[b, a].tolist())
        got = get_torsions(moved, rotatable_bonds(mol))
        assert np.abs(np.angle(np.exp(1j * (got - expected[b])))).max() < 1e-6
        np.testing.assert_allclose(_local_structure(moved)[0], _local_structure(mol)[0], atol=1e-6)
    assert torch.equal(out[1, mols[1].GetNumAtoms():], pos[1, mols[1].GetNumAtoms():])
