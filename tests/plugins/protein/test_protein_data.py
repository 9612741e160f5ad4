"""The data module: FoldingDiff's length filter and crops, reported; circular-mean centring; terminal angles
masked through the batch contract (``missing``) and padding through ``presence``; length sampling."""

import numpy as np
import pytest
import torch

from polydiff import ConfigError, DataError
from polydiff.plugins.protein.data import ProteinAngles, load_chains
from polydiff.plugins.protein.geometry import circular_mean, wrap
from tests.conftest import require_shared


@pytest.fixture(scope="module")
def dm():
    roots = [str(require_shared("protein", "kortemme_pfam_domains")), str(require_shared("protein", "fixtures"))]
    m = ProteinAngles(roots=roots, min_length=40, max_length=128, val_fraction=0.1, batch_size=4, seed=0)
    m.setup("fit")
    return m


def test_filter_and_crop_reported(dm, tmp_path):
    n = len(dm.train_chains) + len(dm.val_chains)
    assert n == 43  # 40 domains + 3 fixtures, all >= 40 residues after cuts
    assert any("3GQS" in r and "filtered" in r and "9 residues" in r for r in dm.report)  # the 9-residue piece
    assert any("chain break" in r for r in dm.report)
    assert dm.report[-1].startswith("43 chain(s) of length >= 40 from 43 file(s); 1 segment(s) filtered")
    long = [i for i, c in enumerate(dm.train_chains) if len(c) > 128]
    assert long  # e.g. the 150-residue PF00179 domain
    i = long[0]
    crops = {tuple(np.nan_to_num(dm.train_set[i]["x"][:3, 3].numpy()).round(5)) for _ in range(8)}
    assert len(crops) > 1  # a fresh random window per draw
    assert dm.val_set.window(0).shape[0] <= 128


def test_items_follow_the_batch_contract(dm):
    chain = min(dm.train_chains, key=len)
    L = len(chain)
    item = dm.encode(chain.angles)
    x, presence, missing = item["x"], item["presence"], item["missing"]
    assert x.shape == (128, 6) and presence.shape == (128, 1) and missing.shape == (128, 6)
    assert presence[:L].all() and not presence[L:].any()
    assert missing[0].tolist() == [True, False, False, False, False, False]
    assert missing[L - 1].tolist() == [False, True, True, False, True, True]
    assert missing.sum() == 5
    assert torch.isnan(x[missing]).all() and torch.isfinite(x[~missing]).all()  # masked, never zero-filled
    assert (x[L:] == 0).all()
    ok = ~missing[:L]
    assert (x[:L][ok] >= -np.pi).all() and (x[:L][ok] < np.pi).all()
    back = dm.decode(x[None])[0, :L].numpy()
    np.testing.assert_allclose(np.cos(back[ok.numpy()] - chain.angles[ok.numpy()]), 1.0, atol=1e-6)


def test_centred_on_training_circular_mean(dm):
    rows = np.concatenate([wrap(c.angles - dm.angle_mean) for c in dm.train_chains])
    np.testing.assert_allclose(circular_mean(rows), 0.0, atol=1e-9)
    # the raw means are the familiar ones: phi ≈ -80°, theta1 ≈ 111°, omega ≈ 180° (wrapped)
    assert -100 < np.degrees(dm.angle_mean[0]) < -60
    assert 105 < np.degrees(dm.angle_mean[3]) < 115
    assert abs(abs(np.degrees(dm.angle_mean[2])) - 180) < 5


def test_length_sampling(dm):
    hist = dm.length_histogram()
    assert hist.sum() == len(dm.train_chains) and hist[:40].sum() == 0
    out = dm.sample_inputs(200, torch.Generator().manual_seed(0))["presence"]
    lengths = out[..., 0].sum(1)
    assert set(lengths.tolist()) <= set(np.nonzero(hist)[0].tolist())
    dm2 = ProteinAngles(roots=dm.roots, sample_lengths=[50, 128])
    dm2.train_set, dm2.train_chains, dm2.angle_mean = dm.train_set, dm.train_chains, dm.angle_mean
    assert dm2.sample_inputs(3)["presence"][..., 0].sum(1).tolist() == [50, 128, 50]
    dm2.sample_lengths = [20]
    with pytest.raises(ConfigError, match=r"sample lengths \[20\] are outside the trained range 40\.\.128"):
        dm2.sample_inputs(1)


def test_user_folder_with_a_bad_file(tmp_path):
    src = require_shared("protein", "fixtures", "1CRN.pdb")
    (tmp_path / "a.pdb").write_text(src.read_text())
    (tmp_path / "bad.pdb").write_text("garbage\n")
    chains, report = load_chains([tmp_path], min_length=40)
    assert [c.name for c in chains] == ["a"]
    assert any(r.startswith("skipped:") and "bad.pdb" in r for r in report)
    with pytest.raises(DataError, match="no chain of >= 50 residues"):
        ProteinAngles(roots=[str(tmp_path)], min_length=50).setup("fit")
    with pytest.raises(DataError, match="holds no PDB/mmCIF files"):
        load_chains([tmp_path / "nothing"]) if (tmp_path / "nothing").mkdir() is None else None
