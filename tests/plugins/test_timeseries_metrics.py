"""Metrics (CSDI CRPS, CRPS-sum, MAE, RMSE), baselines and training masks: reference and hand-computed values."""

import numpy as np
import pytest
import torch

from polydiff.errors import ConfigError, ShapeError
from polydiff.plugins.timeseries import baselines as B, masks, metrics as M


def test_crps_matches_official_reference(shared_data):
    g = torch.load(shared_data / "timeseries" / "csdi_parity" / "csdi_official_golden.pt", weights_only=True)
    args = g["crps_target"], g["crps_forecast"], g["crps_eval_points"]
    assert M.crps(*args) == pytest.approx(g["crps_value"].item(), rel=1e-6)
    assert M.crps_sum(*args) == pytest.approx(g["crps_sum_value"].item(), rel=1e-6)


def test_crps_hand_values_and_eval_mask_only():
    # all samples equal c: every quantile is c; 2 |c − x| mean_q |1{x ≤ c} − q| / |x|
    x = torch.tensor([[[1.0]]])
    s = torch.full((1, 7, 1, 1), 2.0)
    m = torch.ones(1, 1, 1)
    assert M.crps(x, s, m) == pytest.approx(2 * 1 * np.mean([1 - q for q in M.QUANTILES]))  # = 1.0
    s_low = torch.full((1, 7, 1, 1), 0.0)
    assert M.crps(x, s_low, m) == pytest.approx(2 * np.mean(M.QUANTILES))  # = 1.0
    # entries outside the evaluation mask never matter
    x2 = torch.tensor([[[1.0, 5.0]]])
    s2 = torch.stack([torch.tensor([[2.0, -100.0]])] * 7)[None]
    m2 = torch.tensor([[[1.0, 0.0]]])
    assert M.crps(x2, s2, m2) == pytest.approx(1.0)
    target = torch.tensor([[[1.0, 2.0, 3.0]]])
    est = torch.tensor([[[2.0, 9.0, 5.0]]])
    mask = torch.tensor([[[1, 0, 1]]]).bool()
    assert M.mae(target, est, mask) == pytest.approx(1.5)
    assert M.rmse(target, est, mask) == pytest.approx(np.sqrt(2.5))
    assert M.mae(target, est, mask, scale=10.0) == pytest.approx(15.0)
    with pytest.raises(ShapeError, match="samples must have shape"):
        M.crps(target, est, mask)


def test_crps_sum_hand_value():
    # two features, one step, sum target 3, all samples sum to 4: CRPS-sum = 2·1·mean(1−q)/3
    x = torch.tensor([[[1.0, 2.0]]])
    s = torch.tensor([[[1.5, 2.5]]]).expand(5, 1, 2)[None]
    m = torch.ones(1, 1, 2)
    assert M.crps_sum(x, s, m) == pytest.approx(2 * np.mean([1 - q for q in M.QUANTILES]) / 3)


def test_baselines_hand_values():
    x = torch.tensor([[[9.0, 1.0, 7.0, 3.0, 8.0], [5.0, 5.0, 5.0, 5.0, 5.0]]])
    known = torch.tensor([[[0, 1, 0, 1, 0], [0, 0, 0, 0, 0]]]).bool()
    assert B.linear_interpolation(x, known).tolist() == [[[1, 1, 2, 3, 3], [0, 0, 0, 0, 0]]]
    assert B.locf(x, known).tolist() == [[[1, 1, 1, 3, 3], [0, 0, 0, 0, 0]]]
    assert B.mean_impute(x, known, per_series=True).tolist() == [[[2, 1, 2, 3, 2], [0, 0, 0, 0, 0]]]
    assert B.mean_impute(x, known, fill=torch.tensor([4.0, 6.0])).tolist() == [[[4, 1, 4, 3, 4], [6] * 5]]


def test_masks_never_expose_unobserved_entries_and_follow_their_rules():
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(64, 5, 40, generator=g) > 0.3
    for name in masks.STRATEGIES:
        k = masks.training_mask(name, obs, generator=g, ratio=0.2, horizon=8)
        assert k.dtype == torch.bool and not (k & ~obs).any(), name
    r = masks.random_mask(obs, torch.Generator().manual_seed(1))
    frac = 1 - r.flatten(1).sum(1) / obs.flatten(1).sum(1)
    assert 0.35 < frac.mean() < 0.65  # hidden ratio ~ U(0, 1)
    h = masks.historical_mask(obs)
    assert torch.equal(h[3], obs[3] & obs[2]) and torch.equal(h[0], obs[0] & obs[-1])
    full = torch.ones(4, 3, 20, dtype=torch.bool)
    assert (~masks.rm_mask(full, 0.25, g)).sum(-1).eq(5).all()
    mnr = ~masks.mnr_mask(full, 0.25, g)
    starts = mnr.float().argmax(-1)
    assert mnr.sum(-1).eq(5).all() and (starts % 5 == 0).all()
    bm = ~masks.bm_mask(full, 0.25, g)
    assert torch.equal(bm, bm[:, :1].expand_as(bm)) and bm.sum(-1).eq(5).all()
    tf = masks.tf_mask(full, 6)
    assert tf[..., :14].all() and not tf[..., 14:].any()
    with pytest.raises(ConfigError, match="horizon"):
        masks.tf_mask(full, 20)
    with pytest.raises(ConfigError, match="unknown mask strategy"):
        masks.training_mask("nope", full)


@pytest.mark.slow
def test_baselines_reproduce_reference_figures(shared_data):
    """MANIFEST reference MAEs on CSDI's exact splits and masks (PhysioNet fold 0 seed 1 with the
    official all-patient statistics; AQI-36 test months in µg/m³)."""
    from polydiff.datasets import aqi36, physionet2012 as physio

    rec = physio.load_records(shared_data / "timeseries" / "physionet2012" / "set-a.tar.gz")
    expected = {0.1: (0.705, 0.431, 0.371), 0.5: (0.707, 0.486, 0.419), 0.9: (0.707, 0.600, 0.553)}
    for ratio, (mean_ref, locf_ref, lin_ref) in expected.items():
        d = physio.prepare_csdi(rec, ratio, seed=1, nfold=0, stats="all")
        x, known, ev = (torch.tensor(a[d.test]).permute(0, 2, 1) for a in (d.data, d.gt_mask, d.eval_mask))
        assert len(d.test) == 799
        assert M.mae(x, B.mean_impute(x, known), ev) == pytest.approx(mean_ref, abs=6e-4)
        assert M.mae(x, B.locf(x, known), ev) == pytest.approx(locf_ref, abs=6e-4)
        assert M.mae(x, B.linear_interpolation(x, known), ev) == pytest.approx(lin_ref, abs=6e-4)
    root = shared_data / "timeseries" / "pm25_aqi36"
    w = aqi36.csdi_windows(aqi36.read_table(root / "pm25_ground.txt"), aqi36.read_table(root / "pm25_missing.txt"), "test")
    x, known, ev = (torch.tensor(a).permute(0, 2, 1) for a in (w.data, w.gt_mask, w.eval_mask))
    scale = torch.tensor(w.std)[:, None]
    assert M.mae(x, B.mean_impute(x, known), ev, scale) == pytest.approx(55.08, abs=0.01)
    assert M.mae(x, B.locf(x, known), ev, scale) == pytest.approx(19.93, abs=0.01)
    assert M.mae(x, B.linear_interpolation(x, known), ev, scale) == pytest.approx(15.39, abs=0.01)
