"""Anomaly-map post-processing and metrics against hand-computed values."""

import math

import pytest
import torch

from polydiff import ConfigError, DataError, ShapeError
from polydiff.plugins.medical import metrics as M
from polydiff.plugins.medical import postprocess as P

def test_auroc_and_average_precision_hand_computed():
    s = torch.tensor([0.1, 0.4, 0.35, 0.8]).reshape(1, 1, 2, 2)
    y = torch.tensor([0, 0, 1, 1]).reshape(1, 1, 2, 2)
    # positive/negative pairs ordered correctly: (0.35>0.1), (0.8>0.1), (0.8>0.4) of 4 → 0.75
    assert M.pixel_auroc(s, y) == pytest.approx(0.75)
    # ranking 0.8(+) 0.4(−) 0.35(+) 0.1(−): AP = ½·1 + ½·(2/3) = 0.8333
    assert M.pixel_auprc(s, y) == pytest.approx(5 / 6, abs=1e-6)
    # masking out the 0.4 negative makes the ranking perfect
    mask = torch.tensor([True, False, True, True]).reshape(1, 1, 2, 2)
    assert M.pixel_auroc(s, y, mask) == pytest.approx(1.0)
    with pytest.raises(ShapeError):
        M.pixel_auroc(s, y[..., :1])


def test_dice_global_per_case_and_per_volume():
    pred = torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool)
    gt = torch.tensor([1, 0, 0, 1, 1], dtype=torch.bool)
    assert M.dice(pred, gt) == pytest.approx(2 * 2 / 6)
    assert M.dice(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == 1.0
    p = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    g = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    p[0, 0, :2, :2] = True
    g[0, 0, :2, :] = True  # dice 2·4/(4+8) = 2/3
    per = M.dice_per_case(p, g)
    assert per[0].item() == pytest.approx(2 / 3) and math.isnan(per[1].item())
    maps = p.float()
    r = M.evaluate_maps(maps, g, threshold=0.5, case_ids=["a", "b"], image_labels=torch.tensor([1, 0]))
    assert r["dice"] == pytest.approx(2 / 3) and r["dice_per_slice"] == pytest.approx(2 / 3)
    assert r["dice_per_volume"] == pytest.approx(2 / 3) and r["image_auroc"] == pytest.approx(1.0)


def test_image_auroc_hand_computed():
    assert M.image_auroc(torch.tensor([0.9, 0.2, 0.7, 0.1]), torch.tensor([1, 0, 0, 1])) == pytest.approx(0.5)
    maps = torch.zeros(2, 1, 3, 3)
    maps[0, 0, 1, 1] = 5
    maps[1, 0, 0, 0] = 7
    mask = torch.ones(1, 1, 3, 3, dtype=torch.bool)
    mask[..., 0, 0] = False
    assert M.image_scores(maps, mask).tolist() == [5.0, 0.0]


def test_threshold_at_healthy_fpr():
    healthy = torch.arange(100, dtype=torch.float32).reshape(1, 1, 10, 10)
    thr = P.threshold_at_fpr(healthy, 0.02)
    assert (healthy > thr).float().mean().item() == pytest.approx(0.02)
    mask = torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    mask[..., :5, :] = True  # values 0…49
    thr = P.threshold_at_fpr(healthy, 0.1, mask)
    assert 44 < thr < 45
    with pytest.raises(ConfigError):
        P.threshold_at_fpr(healthy, 0.0)
    with pytest.raises(DataError):
        P.threshold_at_fpr(healthy, 0.02, torch.zeros_like(mask))


def test_oracle_threshold_finds_the_separating_value():
    scores = torch.tensor([0.1, 0.2, 0.3, 0.6, 0.7, 0.9]).reshape(1, 1, 1, 6)
    gt = torch.tensor([0, 0, 0, 1, 1, 1], dtype=torch.bool).reshape(1, 1, 1, 6)
    thr, d = P.oracle_threshold(scores, gt)
    assert d == pytest.approx(1.0) and 0.3 <= thr < 0.6


def test_anomaly_map_filters_masks_and_components():
    x = torch.zeros(1, 2, 5, 5)
    xh = torch.zeros(1, 2, 5, 5)
    x[0, 0, 2, 2], x[0, 1, 2, 2] = 1.0, 3.0
    assert P.anomaly_map(x, xh, "abs", "mean")[0, 0, 2, 2] == 2.0
    assert P.anomaly_map(x, xh, "squared", "sum")[0, 0, 2, 2] == 10.0
    assert P.anomaly_map(x, xh, "abs", "max")[0, 0, 2, 2] == 3.0
    with pytest.raises(ConfigError):
        P.anomaly_map(x, xh, "l3")
    spike = P.anomaly_map(x, xh)
    assert P.median_filter(spike, 3).abs().max() == 0  # an isolated pixel is speckle
    square = torch.zeros(1, 1, 7, 7, dtype=torch.bool)
    square[..., 1:6, 1:6] = True
    assert P.erode_mask(square, 1).sum() == 9
    assert P.postprocess(torch.ones(1, 1, 7, 7), square, median=1, erosion=1).sum() == 9
    b = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    b[..., 0, 0] = True
    b[..., 3:5, 3:5] = True
    kept = P.remove_small_components(b, min_size=2)
    assert kept.sum() == 4 and not kept[..., 0, 0].any()
    with pytest.raises(DataError, match="scan.png"):
        P.check_mask_not_empty(torch.zeros(2, 1, 3, 3), source="scan.png")


def test_auroc_and_auprc_keep_the_ranking_of_large_scores():
    """Scores far outside [0, 1] (z-scores) must not be squashed into ties by torchmetrics' sigmoid."""
    from polydiff.plugins.medical.metrics import image_auroc, pixel_auprc, pixel_auroc

    scores = torch.tensor([1e5, 2e5, 3e5, 4e5, 5e5, 6e5], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1, 1, 1])
    # hand-computed: positives rank above negatives in 7 of the 8 pairs
    assert image_auroc(scores, labels) == pytest.approx(7 / 8)
    assert pixel_auroc(scores, labels) == pytest.approx(7 / 8)
    assert pixel_auprc(scores, labels) == pytest.approx(pixel_auprc(scores / 6e5, labels))
