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
    assert dm.train_set[i]["x"].shape == (128, 6)
    crops = {tuple(np.nan_to_num(dm.train_set[i]["x"][:3, 3].numpy()).round(5)) for _ in range(8)}
    assert len(crops) > 1  # a fresh random window per draw
    assert dm.val_set.window(0).shape[0] <= 128


def test_items_follow_the_batch_contract(dm):
    chain = min(dm.train_chains, key=len)
    L = len(chain)
    item = dm.encode(chain.angles)
    x, missing = item["x"], item["missing"]
    assert x.shape == (L, 6) and missing.shape == (L, 6) and "presence" not in item
    assert missing[0].tolist() == [True, False, False, False, False, False]
    assert missing[L - 1].tolist() == [False, True, True, False, True, True]
    assert missing.sum() == 5
    assert torch.isnan(x[missing]).all() and torch.isfinite(x[~missing]).all()  # masked, never zero-filled
    ok = ~missing
    assert (x[ok] >= -np.pi).all() and (x[ok] < np.pi).all()
    back = dm.decode(x[None])[0].numpy()
    np.testing.assert_allclose(np.cos(back[ok.numpy()] - chain.angles[ok.numpy()]), 1.0, atol=1e-6)
    # a batch is padded to its longest chain, with presence; padding is never missing
    batch = dm.collate([dm.encode(chain.angles), dm.encode(dm.train_chains[0].angles[:100])])
    Lmax = max(L, 100)
    assert batch["x"].shape == (2, Lmax, 6) and batch["presence"].shape == (2, Lmax, 1)
    assert batch["presence"][0, :L].all() and not batch["presence"][0, L:].any()
    assert not batch["missing"][0, L:].any() and batch["missing"][0, :L].equal(missing)


def test_centred_on_training_circular_mean(dm):
    rows = np.concatenate([wrap(c.angles - dm.angle_mean) for c in dm.train_chains])
    np.testing.assert_allclose(circular_mean(rows), 0.0, atol=1e-9)
    # the raw means are the familiar ones: phi ≈ -80°, theta1 ≈ 111°, omega ≈ 180° (wrapped)
    assert -100 < np.degrees(dm.angle_mean[0]) < -60
    assert 105 < np.degrees(dm.angle_mean[3]) < 115
    assert abs(abs(np.degrees(dm.angle_mean[2])) - 180) < 5


def test_length_histogram_and_trained_range(dm):
    from polydiff.plugins.protein.data import angles_of_samples

    hist = dm.size_histogram()
    assert hist.sum() == len(dm.train_chains) and hist[:40].sum() == 0 and len(hist) == 129
    assert dm.sample_shape == (128, 6)
    assert hist[128] == sum(len(c) >= 128 for c in dm.train_chains)  # long chains count as their crop
    presence = torch.arange(30)[None, :, None] < torch.tensor([20, 30])[:, None, None]
    with pytest.raises(ConfigError, match=r"chain length\(s\) \[20, 30\] are outside the trained range 40\.\.128"):
        angles_of_samples({"x": torch.zeros(2, 30, 6), "presence": presence}, dm)


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


def test_sampling_state_round_trip_without_data(dm, tmp_path):
    """state_dict holds what sampling needs; a fresh module restored from it decodes, encodes and sizes like the
    one that read the data, with no data at all; a malformed state is a DataError naming the entry."""
    state = dm.state_dict()
    fresh = ProteinAngles(roots=[str(tmp_path / "nothing_here")], max_length=dm.max_length)
    fresh.load_state_dict(state)
    x = torch.rand(2, 7, 6) * 6 - 3
    assert torch.equal(fresh.decode(x), dm.decode(x))
    raw = dm.train_chains[0].angles[:50]
    assert torch.equal(torch.nan_to_num(fresh.encode(raw)["x"]), torch.nan_to_num(dm.encode(raw)["x"]))
    assert torch.equal(fresh.size_histogram(), dm.size_histogram())
    assert fresh.sample_shape == (dm.max_length, 6)
    assert np.array_equal(fresh.phi_psi_histogram(), dm.phi_psi_histogram())
    with pytest.raises(DataError, match="angle_mean must be a finite tensor of shape \\(6,\\)"):
        fresh.load_state_dict({**state, "angle_mean": torch.zeros(5)})
    with pytest.raises(DataError, match="size_histogram"):
        fresh.load_state_dict({**state, "size_histogram": torch.full((dm.max_length + 1,), float("nan"))})
