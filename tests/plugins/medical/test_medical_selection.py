"""Subject-level cross-validation, weighted pooled metrics and the subject bootstrap (plugins/medical/selection)."""

import numpy as np
import pytest
import torch

from polydiff import ConfigError, DataError
from polydiff.plugins.medical.selection import (Setting, SliceSet, bootstrap_ci, check_disjoint, cross_validate,
                                                select_and_evaluate, settings_grid, subject_folds,
                                                weighted_average_precision, weighted_dice)


def test_weighted_average_precision_matches_scikit_learn_with_ties_and_weights():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    s = np.round(rng.random(500), 2)  # many ties
    y = rng.random(500) < 0.3
    assert weighted_average_precision(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    w = rng.integers(0, 3, 500).astype(float)  # integer weights = replicated items
    rep = np.repeat(np.arange(500), w.astype(int))
    assert weighted_average_precision(s, y, w) == pytest.approx(average_precision_score(y[rep], s[rep]), abs=1e-12)
    assert np.isnan(weighted_average_precision(s, np.zeros(500, bool)))


def test_weighted_dice():
    assert weighted_dice(np.array([2, 0]), np.array([3, 1]), np.array([2, 0])) == pytest.approx(4 / 6)
    assert weighted_dice(np.array([2, 0]), np.array([3, 1]), np.array([2, 0]), np.array([2.0, 1.0])) == \
        pytest.approx(8 / 11)
    assert weighted_dice(np.zeros(2), np.zeros(2), np.zeros(2)) == 1.0


def test_bootstrap_of_the_mean_of_normals_matches_the_closed_form():
    """Percentile bootstrap of a mean over n iid subjects → x̄ ± z_{0.975} s/√n (s the plug-in sd)."""
    rng = np.random.default_rng(1)
    n = 400
    v = rng.normal(2.0, 3.0, n)
    est, lo, hi = bootstrap_ci([f"s{i}" for i in range(n)], lambda w: float(np.sum(w * v) / np.sum(w)),
                               n_boot=4000, seed=0)
    half = 1.959964 * v.std() / np.sqrt(n)
    assert est == pytest.approx(v.mean())
    assert lo == pytest.approx(v.mean() - half, abs=0.06 * half)
    assert hi == pytest.approx(v.mean() + half, abs=0.06 * half)


def test_bootstrap_resamples_subjects_not_items():
    """Two subjects with values 0 and 1 (each with several slices): the resampled mean is 0, ½ or 1 with
    probabilities ¼, ½, ¼, so the 95 % interval is [0, 1] and the 40 % interval (30–70 % quantiles) [½, ½]."""
    subj = ["a"] * 3 + ["b"] * 5

    def per_subject_mean(w):  # mean over subjects of the subject mean
        return float((w[0] * 0.0 + w[3] * 1.0) / (w[0] + w[3]))

    seen = []
    est, lo, hi = bootstrap_ci(subj, lambda w: seen.append(w.copy()) or per_subject_mean(w), n_boot=2000, seed=0)
    assert est == 0.5 and (lo, hi) == (0.0, 1.0)
    assert all(np.all(w[:3] == w[0]) and np.all(w[3:] == w[3]) and w[0] + w[3] == 2 for w in seen[1:])
    assert bootstrap_ci(subj, per_subject_mean, n_boot=2000, level=0.4)[1:] == (0.5, 0.5)
    with pytest.raises(ConfigError):
        bootstrap_ci(subj, per_subject_mean, level=1.5)


def test_subject_folds_keep_subjects_together():
    subj = [f"s{i // 3}" for i in range(30)]
    folds = subject_folds(subj, k=4, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(30))
    for f in folds:
        assert not {subj[i] for i in f} & {subj[i] for g in folds if g is not f for i in g}
    with pytest.raises(ConfigError):
        subject_folds(subj, k=11)


def _toy_set(n, prefix, lesion_value, seed):
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(n, 1, 8, 8, generator=g)
    seg = torch.zeros(n, 1, 8, 8, dtype=torch.bool)
    label = torch.zeros(n, dtype=torch.long)
    for i in range(0, n, 2):  # every other slice has a 2×2 lesion
        seg[i, :, 2:4, 3:5] = True
        label[i] = 1
    x[seg] = lesion_value
    return SliceSet(x, seg, label, [f"{prefix}{i}" for i in range(n)], torch.ones(1, 1, 8, 8, dtype=torch.bool))


def test_cross_validation_never_touches_the_poisoned_test_subjects():
    """Selection lesions are bright, the poisoned test lesions are dark: a selection that looked at the test set
    would choose the "dark" map. CV must choose "bright", call the map function on selection slices only until
    every choice is made, and the test score must then show the honest failure."""
    sel = _toy_set(24, "val", 1.0, 0)
    test = _toy_set(16, "test", -1.0, 1)
    calls = []

    def maps_fn(family, params, x):
        calls.append("test" if any(torch.equal(x[:1], test.x[i:i + 1]) for i in range(len(test))) else "sel")
        sign = 1.0 if params["polarity"] == "bright" else -1.0
        return (sign * x).clamp_min(0)

    cands = {"toy": settings_grid("toy", {"polarity": ["dark", "bright"]}, medians=(1,), fprs=(0.02,))}
    res = select_and_evaluate(cands, maps_fn, sel, test, k=4, n_boot=200, seed=0)
    assert res["toy"]["setting"]["polarity"] == "bright"
    first_test = calls.index("test")
    assert "test" not in calls[:first_test] and calls[:first_test].count("sel") >= 2  # both maps built on selection
    assert res["toy"]["auprc"][0] < 0.2  # the bright map cannot see dark lesions: the test score is honest
    cv = {r["polarity"]: r["cv_auprc"] for r in res["toy"]["cv"]}
    assert cv["bright"] > 0.9 > 0.2 > cv["dark"]


def test_selection_and_test_must_be_subject_disjoint():
    sel = _toy_set(8, "s", 1.0, 0)
    with pytest.raises(DataError):
        check_disjoint(sel, sel.take([0, 1]))


def test_cross_validate_picks_the_threshold_percentile_on_held_out_subjects():
    sel = _toy_set(20, "v", 0.35, 2)  # lesions barely above the healthy noise (σ 0.1)
    rows = cross_validate(settings_grid("toy", {"polarity": ["bright"]}, medians=(1,), fprs=(0.001, 0.2)),
                          lambda f, p, x: x.clamp_min(0), sel, k=5, criterion="dice")
    best, table = rows
    assert best == Setting("toy", (("polarity", "bright"),), 1, 0.001)  # a 20 % FPR floods the Dice
    assert table[0]["cv_dice"] > table[1]["cv_dice"]


def test_bootstrap_difference_is_paired():
    from polydiff.plugins.medical.selection import TestScores, bootstrap_difference

    test = _toy_set(12, "t", 1.0, 4)
    st = Setting("toy", (), 1, 0.02)
    good = TestScores(st, test.x.clamp_min(0), test, 0.5)
    flat = TestScores(st, torch.rand(test.x.shape, generator=torch.Generator().manual_seed(0)), test, 0.5)
    same = bootstrap_difference([good], [good], n_boot=200)
    assert same["auprc"] == (0.0, 0.0, 0.0) and same["dice"] == (0.0, 0.0, 0.0)  # paired: no spread at all
    diff = bootstrap_difference([good], [flat], n_boot=200)
    ones = np.ones(12)
    assert diff["dice"][0] == pytest.approx(good.dice(ones) - flat.dice(ones))
    assert 0 < diff["dice"][1] <= diff["dice"][0] <= diff["dice"][2]
    with pytest.raises(DataError):
        bootstrap_difference([good], [TestScores(st, test.x[:6], test.take(list(range(6))), 0.5)])


def test_bootstrap_scores_average_seeds_under_one_subject_draw_and_accept_per_item_thresholds():
    from polydiff.plugins.medical.selection import TestScores, bootstrap_scores

    test = _toy_set(12, "t", 1.0, 4)
    st = Setting("toy", (), 1, 0.02)
    good = TestScores(st, test.x.clamp_min(0), test, 0.5)  # finds every lesion
    flat = TestScores(st, torch.rand(test.x.shape, generator=torch.Generator().manual_seed(0)), test, 0.5)
    one = bootstrap_scores([good], n_boot=200)
    two = bootstrap_scores([good, flat], n_boot=200)
    assert one["dice"][0] == pytest.approx(1.0) and one["auprc"][0] == pytest.approx(1.0)
    assert two["auprc"][0] == pytest.approx((good.auprc(np.ones(12)) + flat.auprc(np.ones(12))) / 2)
    assert two["auprc_per_seed"][0] == pytest.approx(1.0) and two["num_seeds"] == 2
    assert two["auprc"][1] <= two["auprc"][0] <= two["auprc"][2]
    # a per-item threshold: above every map value on the first half, so only the second half predicts
    thr = torch.cat([torch.full((6,), 10.0), torch.full((6,), 0.5)])
    half = TestScores(st, test.x.clamp_min(0), test, thr)
    tp = (test.seg[6:]).sum().item()
    assert half.dice(np.ones(12)) == pytest.approx(2 * tp / (tp + test.seg.sum().item()))
