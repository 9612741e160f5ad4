"""Variable-size items: dynamic padding, the training size histogram in checkpoints, size sampling (module and
`polydiff sample --sizes`), mixed sizes in one batch, and a toy set task trained through the CLI."""

import textwrap

import pytest
import torch
from scipy import stats

import polydiff
from polydiff import ConfigError, DataError, ShapeError, cli
from polydiff.backbones import DiT
from polydiff.data import draw_sizes, pad_collate, parse_sizes
from polydiff.parameterization import Denoiser
from polydiff.testing_data import PointSetDataModule


def test_pad_collate_pads_to_the_batch_max_and_sets_presence():
    items = [{"x": torch.ones(3, 2)}, {"x": 2 * torch.ones(5, 2), "cond": {"label": torch.tensor(1)}}]
    with pytest.raises(DataError, match="cond"):  # cond on some items only
        items2 = [dict(items[0], cond={"label": torch.tensor(0)}), items[1]]
        pad_collate(items2 + [{"x": torch.ones(2, 2)}])
    items[0]["cond"] = {"label": torch.tensor(0)}
    b = pad_collate(items)
    assert b["x"].shape == (2, 5, 2) and b["presence"].shape == (2, 5, 1)
    assert b["presence"][:, :, 0].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert (b["x"][0, 3:] == 0).all() and (b["x"][1] == 2).all()
    assert b["cond"]["label"].tolist() == [0, 1]
    polydiff.batch.unpack(b)  # follows the batch contract
    parts = pad_collate([{"x": {"pos": torch.ones(2, 3), "t": torch.zeros(2, dtype=torch.long)}},
                         {"x": {"pos": torch.ones(4, 3), "t": torch.ones(4, dtype=torch.long)}}])
    assert parts["x"]["pos"].shape == (2, 4, 3) and parts["x"]["t"].shape == (2, 4)
    assert parts["presence"].tolist() == [[True, True, False, False], [True] * 4]
    with pytest.raises(ShapeError, match="differ beyond the node axis"):
        pad_collate([{"x": torch.ones(3, 2)}, {"x": torch.ones(3, 3)}])


def test_size_requests():
    hist = torch.tensor([0, 0, 0, 5, 0, 10, 10])  # sizes 3, 5, 6
    g = torch.Generator().manual_seed(0)
    assert parse_sizes("9:29") == (9, 29) and parse_sizes(12) == (12, 12) and parse_sizes([3, 4]) == [3, 4]
    assert draw_sizes(4, hist, "12", g).tolist() == [12] * 4
    assert draw_sizes(2, None, [3, 7], g).tolist() == [3, 7]
    s = draw_sizes(4000, hist, None, g)
    counts = torch.bincount(s, minlength=7)
    assert counts[[0, 1, 2, 4]].sum() == 0
    assert stats.chisquare(counts[[3, 5, 6]].numpy(), 4000 * torch.tensor([0.2, 0.4, 0.4]).numpy()).pvalue > 1e-3
    s = draw_sizes(1000, hist, "4:5", g)
    assert (s == 5).all()
    for bad, msg in (("5:3", "LO <= HI"), ("a:b", "expected a node count"), ("7:9", "no training item")):
        with pytest.raises(ConfigError, match=msg):
            draw_sizes(3, hist, bad, g)
    with pytest.raises(ConfigError, match="histogram"):
        draw_sizes(3, None, "3:5", g)


def test_mixed_sizes_in_one_batch_match_each_size_alone():
    """With a presence key mask, padding changes nothing at present nodes: a 3-point set sampled in a batch
    padded to 7 equals the same set sampled alone (same x_T, deterministic sampler)."""
    torch.manual_seed(0)
    net = DiT(in_channels=2, dims=0, pos_embedding="none", hidden_size=32, depth=2, num_heads=4)
    for p in net.parameters():  # adaLN-Zero starts at the identity; give it a non-trivial function
        torch.nn.init.normal_(p, std=0.1)
    model = Denoiser(net, polydiff.VP())
    x_T = torch.randn(2, 7, 2, generator=torch.Generator().manual_seed(1))
    presence = (torch.arange(7)[None] < torch.tensor([[3], [7]])).unsqueeze(-1)
    both = polydiff.sample(model, x_T * presence, sampler="ddim", steps=10, presence=presence)
    alone = polydiff.sample(model, x_T[:1, :3], sampler="ddim", steps=10)
    torch.testing.assert_close(both[0, :3], alone[0], atol=1e-5, rtol=1e-5)
    assert (both[0, 3:] == 0).all() and both[1].abs().sum() > 0


CONFIG = """\
trainer: {max_steps: 500, accelerator: cpu, limit_val_batches: 0, enable_model_summary: false, logger: false,
          enable_progress_bar: false}
model:
  class_path: DiffusionModule
  init_args:
    backbone:
      class_path: DiT
      init_args: {in_channels: 2, dims: 0, pos_embedding: none, hidden_size: 64, depth: 2, num_heads: 4, mlp_ratio: 2}
    process: vp
    lr: 0.002
    ema_decay: 0.99
    sample_steps: 20
    final_num_samples: 0
    val_num_samples: 0
data:
  class_path: polydiff.testing_data.PointSetDataModule
  init_args: {n_train: 1024, n_val: 32, batch_size: 64}
checkpoint: {dirpath: ck}
"""


def _within_and_centres(x, presence):
    pm = presence.to(x.dtype)
    cnt = pm.sum(1)
    centre = (x * pm).sum(1) / cnt
    within = (((x - centre[:, None]) ** 2 * pm).sum((1, 2)) / (cnt[:, 0] - 1) / 2).sqrt()
    return within, centre


@pytest.mark.slow
def test_toy_point_sets_trained_through_the_cli(tmp_path, monkeypatch):
    """2-D point sets of 3–12 points (PointSetDataModule): `polydiff fit` records the training size histogram in
    the checkpoint; generated sizes follow it (χ² contingency test), `--sizes` restricts or fixes them, and the
    sets look right: points cluster around one centre per set (within-set spread ≈ 0.2, centres ≈ N(0, I)),
    which a model treating points independently could not produce (its spread would be ≈ 1)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ps.yaml").write_text(CONFIG)
    assert cli.main(["fit", "--config", "ps.yaml"]) == 0
    ckpt = torch.load("ck/last.ckpt", weights_only=True)
    dm = PointSetDataModule(n_train=1024, n_val=32)
    dm.setup()
    hist = ckpt["polydiff"]["size_histogram"]
    assert torch.equal(hist, dm.size_histogram()) and hist.sum() == 1024 and len(hist) == 13

    from polydiff.training import DiffusionModule

    module = DiffusionModule.from_checkpoint("ck/last.ckpt")  # no data module: histogram from the checkpoint
    assert module.datamodule is None and torch.equal(module.size_histogram, hist)
    out = module.generate(600, seed=0, steps=20)
    sizes = out["presence"].flatten(1).sum(1)
    gen = torch.bincount(sizes, minlength=13)
    assert gen[:3].sum() == 0 and out["x"].shape[1] == int(sizes.max())
    chi = stats.chi2_contingency(torch.stack([hist[3:], gen[3:]]).numpy())
    assert chi.pvalue > 1e-3, (hist, gen)
    assert (out["x"] * ~out["presence"]).abs().max() == 0  # padding stays zero
    within, centre = _within_and_centres(out["x"], out["presence"])
    assert 0.1 < within.median() < 0.3, within.median()
    # centres: N(0, I); after 500 steps the spread of the centres is learnt only roughly (1.2–1.5 measured)
    assert (centre.mean(0).abs() < 0.3).all() and ((centre.std(0) > 0.6) & (centre.std(0) < 1.8)).all(), centre

    argv = ["sample", "--ckpt", "ck/last.ckpt", "--num", "64", "--steps", "5"]
    assert cli.main([*argv, "--sizes", "5:8", "--out", "r"]) == 0
    got = torch.load("r/samples.pt", weights_only=True)["samples"]
    s = got["presence"].flatten(1).sum(1)
    assert s.min() >= 5 and s.max() <= 8 and len(set(s.tolist())) > 1
    assert cli.main([*argv, "--sizes", "12", "--out", "f"]) == 0
    got = torch.load("f/samples.pt", weights_only=True)["samples"]
    assert got["x"].shape == (64, 12, 2) and got["presence"].all()
    assert cli.main([*argv, "--sizes", "13:20", "--out", "e"]) == 2
