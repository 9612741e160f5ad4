"""Model selection across subjects and confidence intervals over subjects.

Why: a detector tuned on one small split does not transfer to new subjects unless its hyper-parameters are
chosen so that the choice itself is validated on subjects it was not chosen on. Here every method family
(diffusion reconstructions and the z-score / PCA baselines alike) gets the same treatment:

* :func:`cross_validate` — subject-level k-fold cross-validation on the *selection* subjects only (healthy +
  validation subjects; never the test subjects): for each candidate :class:`Setting` (map parameters such as
  the noise level and the number of averaged reconstructions, the median-filter size, the threshold
  percentile) and each fold, the threshold is the (1 − fpr) quantile of the healthy slices of the *other*
  folds' subjects and the fold is scored on its own subjects (pooled AUPRC and Dice). The setting with the
  best mean fold score wins (Hastie, Tibshirani & Friedman, "The Elements of Statistical Learning", §7.10;
  grouped folds so no subject is on both sides, Roberts et al. 2017, "Cross-validation strategies for data
  with temporal, spatial, hierarchical, or phylogenetic structure").
* :func:`evaluate_setting` — the chosen setting on the test subjects, its threshold set on all healthy
  selection slices, with percentile-bootstrap 95 % intervals over test subjects (:func:`bootstrap_ci`; Efron &
  Tibshirani 1993, "An Introduction to the Bootstrap", §13.3: resample the independent units — subjects,
  not pixels — with replacement and take the 2.5 / 97.5 % quantiles of the statistic).

Pooled metrics under a resample are computed with per-item weights (the number of times an item's subject was
drawn), so AUPRC and Dice are exact for every resample without copying pixels: :func:`weighted_average_precision`
is scikit-learn's step-wise average precision with sample weights, :func:`weighted_dice` the pooled Dice.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from polydiff import ConfigError, DataError, ShapeError

Tensor = torch.Tensor


# -- data -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SliceSet:
    """Slices of one side of a split: x (N, C, H, W) in the model's representation, lesion masks ``seg``
    (N, 1, H, W) bool, image labels (N,) (1 = lesion), subject ids (N,), brain mask (1 or N, 1, H, W)."""

    x: Tensor
    seg: Tensor
    label: Tensor
    subject: Sequence[str]
    brain: Tensor

    def __post_init__(self):
        n = self.x.shape[0]
        if self.x.ndim != 4 or self.seg.shape != (n, 1, *self.x.shape[-2:]):
            raise ShapeError(f"SliceSet: x {tuple(self.x.shape)} must be (N, C, H, W) and seg (N, 1, H, W); "
                             f"got seg {tuple(self.seg.shape)}")
        if len(self.label) != n or len(self.subject) != n:
            raise ShapeError(f"SliceSet: {n} slices but {len(self.label)} labels and {len(self.subject)} subjects")
        if self.brain.shape[0] not in (1, n) or self.brain.shape[-2:] != self.x.shape[-2:]:
            raise ShapeError(f"SliceSet: brain mask {tuple(self.brain.shape)} does not fit x {tuple(self.x.shape)}")
        self.subject = [str(s) for s in self.subject]
        self.seg, self.brain, self.label = self.seg.bool(), self.brain.bool(), torch.as_tensor(self.label).long()

    def __len__(self):
        return self.x.shape[0]

    def take(self, idx) -> "SliceSet":
        idx = torch.as_tensor(idx, dtype=torch.long)
        brain = self.brain if self.brain.shape[0] == 1 else self.brain[idx]
        return SliceSet(self.x[idx], self.seg[idx], self.label[idx], [self.subject[i] for i in idx.tolist()], brain)


def check_disjoint(selection: SliceSet, test: SliceSet) -> None:
    """Raise :class:`DataError` if a subject is on both sides (selection and test must be subject-disjoint)."""
    both = sorted(set(selection.subject) & set(test.subject))
    if both:
        raise DataError(f"selection and test share {len(both)} subject(s) (e.g. {both[:3]}): the split must be "
                        "subject-disjoint")


def subject_folds(subjects: Sequence[str], k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """k disjoint groups of item indices such that all items of a subject fall in one group (shuffled subjects
    dealt round-robin, so fold sizes differ by at most one subject)."""
    uniq = sorted(set(map(str, subjects)))
    if not 2 <= k <= len(uniq):
        raise ConfigError(f"k-fold needs 2 ≤ k ≤ number of subjects ({len(uniq)}); got k={k}")
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = {uniq[j]: i % k for i, j in enumerate(order)}
    f = np.array([fold_of[str(s)] for s in subjects])
    return [np.nonzero(f == i)[0] for i in range(k)]


# -- weighted pooled metrics ------------------------------------------------------------------------------
def weighted_average_precision(scores: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Step-wise average precision AP = Σ_k (R_k − R_{k−1}) P_k over distinct score thresholds (scikit-learn's
    ``average_precision_score``), with per-item weights (bootstrap counts). NaN without positive weight."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(targets).ravel().astype(bool)
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="mergesort")
    s, y, w = s[order], y[order], w[order]
    tp = np.cumsum(w * y)
    fp = np.cumsum(w * ~y)
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # end of each group of tied scores
    tp, fp = tp[last], fp[last]
    if tp[-1] <= 0:
        return float("nan")
    precision = tp / np.maximum(tp + fp, 1e-300)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def weighted_dice(tp: np.ndarray, pred: np.ndarray, gt: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Pooled Dice 2 Σ w·tp / Σ w·(|P| + |G|) from per-item counts (1.0 if both are empty)."""
    w = np.ones(len(tp)) if weights is None else np.asarray(weights, dtype=np.float64)
    den = float(np.sum(w * (pred + gt)))
    return 1.0 if den == 0 else 2.0 * float(np.sum(w * tp)) / den


def bootstrap_ci(subjects: Sequence[str], statistic: Callable[[np.ndarray], float], n_boot: int = 1000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high): ``statistic(weights)`` on all items (weights 1) and the percentile interval of
    ``n_boot`` subject-level bootstrap resamples (each resample draws the subjects with replacement; an item's
    weight is how often its subject was drawn). Resamples whose statistic is NaN are dropped."""
    if not 0 < level < 1:
        raise ConfigError(f"bootstrap level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ConfigError(f"n_boot must be ≥ 1, got {n_boot}")
    subj = [str(s) for s in subjects]
    uniq = sorted(set(subj))
    index = np.searchsorted(np.array(uniq), np.array(subj))
    est = float(statistic(np.ones(len(subj))))
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq)).astype(np.float64)
        v = float(statistic(counts[index]))
        if not np.isnan(v):
            vals.append(v)
    if not vals:
        return est, float("nan"), float("nan")
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return est, float(lo), float(hi)


# -- settings and maps ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Setting:
    """One candidate: a method ``family`` with its map parameters, the median-filter size and the healthy
    false-positive rate whose quantile is the threshold."""

    family: str
    params: tuple = ()  # sorted (name, value) pairs of the map: e.g. (("level", 100), ("repeats", 4))
    median: int = 3
    fpr: float = 0.02

    @property
    def map_key(self):
        return (self.family, self.params)

    def as_dict(self) -> dict:
        return {"family": self.family, **dict(self.params), "median": self.median, "fpr": self.fpr}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Setting":
        d = dict(d)
        try:
            fam, med, fpr = str(d.pop("family")), int(d.pop("median")), float(d.pop("fpr"))
        except KeyError as exc:
            raise DataError(f"setting {d} misses {exc}") from None
        return cls(fam, tuple(sorted(d.items())), med, fpr)


#: Default candidates (``polydiff select`` and ``benchmarks/medical.py``): noise levels λ, numbers K of averaged
#: reconstructions, median-filter sizes, healthy false-positive rates. Widened from {100, 250}, {1, 2, 4}, {3, 5},
#: {1, 2, 5} % after the cross-validation on those chose an edge value for every training seed.
LEVELS = (50, 100, 250)
REPEATS = (1, 2, 4, 8)
MEDIANS = (3, 5, 7)
FPRS = (0.005, 0.01, 0.02, 0.05)


def settings_grid(family: str, map_params: Mapping[str, Sequence], medians: Sequence[int] = MEDIANS,
                  fprs: Sequence[float] = FPRS) -> list[Setting]:
    """All combinations of the map parameters, median sizes and false-positive rates of one family."""
    import itertools

    names = sorted(map_params)
    out = []
    for combo in itertools.product(*(map_params[n] for n in names)):
        for med in medians:
            for fpr in fprs:
                out.append(Setting(family, tuple(zip(names, combo)), int(med), float(fpr)))
    return out


#: ``maps_fn(family, params: dict, x) -> raw maps (N, 1, H, W)`` (before median filter and brain mask).
MapsFn = Callable[[str, dict, Tensor], Tensor]


def _post(maps: Tensor, brain: Tensor, median: int) -> Tensor:
    from .postprocess import postprocess

    return postprocess(maps, brain, median=median)


def _threshold(maps: Tensor, brain: Tensor, fpr: float) -> float:
    from .postprocess import threshold_at_fpr

    return threshold_at_fpr(maps, fpr, brain if brain.shape[0] == maps.shape[0] or brain.shape[0] == 1 else None)


def _scores(maps: Tensor, data: SliceSet, threshold: float, weights=None) -> dict[str, float]:
    m = data.brain.expand_as(maps)
    s, y = maps[m].numpy(), data.seg[m].numpy()
    pred = (maps > threshold) & m
    tp = (pred & data.seg).flatten(1).sum(1).numpy()
    return {"auprc": weighted_average_precision(s, y), "dice": weighted_dice(tp, pred.flatten(1).sum(1).numpy(),
                                                                             data.seg.flatten(1).sum(1).numpy())}


def criterion_value(scores: Mapping[str, float], criterion: str) -> float:
    if criterion == "dice":
        return scores["dice"]
    if criterion == "auprc":
        return scores["auprc"]
    if criterion == "mean":
        return (scores["dice"] + scores["auprc"]) / 2
    raise ConfigError(f"criterion must be dice, auprc or mean; got {criterion!r}")


def cross_validate(settings: Sequence[Setting], maps_fn: MapsFn, selection: SliceSet, k: int = 5, seed: int = 0,
                   criterion: str = "mean", log=None) -> tuple[Setting, list[dict]]:
    """Subject-level k-fold CV of ``settings`` on the selection subjects (see the module docstring).

    ``maps_fn`` is called once per distinct map (family, params) on ``selection.x`` and on nothing else.
    Returns the best setting (highest mean fold criterion; ties: first in ``settings``) and one row per
    setting with its fold-mean AUPRC, Dice and criterion."""
    if not settings:
        raise ConfigError("cross_validate: no candidate settings")
    folds = subject_folds(selection.subject, k, seed)
    healthy = (selection.label == 0).numpy()
    for i, f in enumerate(folds):
        if not healthy[np.setdiff1d(np.arange(len(selection)), f)].any():
            raise DataError(f"cross-validation fold {i}: the other folds have no healthy slice to set a threshold")
    raw: dict = {}
    rows = []
    for st in settings:
        if st.map_key not in raw:
            raw[st.map_key] = maps_fn(st.family, dict(st.params), selection.x)
            if log:
                log(f"maps {st.family} {dict(st.params)} on {len(selection)} selection slices")
        maps = _post(raw[st.map_key], selection.brain, st.median)
        fold_scores = []
        for f in folds:
            rest = np.setdiff1d(np.arange(len(selection)), f)
            ref = rest[healthy[rest]]
            sub = selection.take(f)
            brain_ref = selection.brain if selection.brain.shape[0] == 1 else selection.brain[ref]
            thr = _threshold(maps[ref], brain_ref, st.fpr)
            if int(sub.seg.sum()) == 0:
                continue  # a fold without lesion pixels has no AUPRC or Dice to add
            fold_scores.append(_scores(maps[f], sub, thr))
        if not fold_scores:
            raise DataError("cross_validate: no fold contains lesion pixels")
        mean = {m: float(np.nanmean([s[m] for s in fold_scores])) for m in ("auprc", "dice")}
        rows.append({**st.as_dict(), **{f"cv_{m}": v for m, v in mean.items()},
                     "cv_criterion": criterion_value(mean, criterion)})
    best = int(np.argmax([r["cv_criterion"] for r in rows]))
    return settings[best], rows


class TestScores:
    """A chosen setting's post-processed maps on the test subjects, ready for re-weighted pooled metrics:
    :meth:`auprc` and :meth:`dice` take per-item weights (bootstrap counts; ones = the plain metric)."""

    def __init__(self, setting: Setting, maps: Tensor, test: SliceSet, threshold):
        """``threshold``: one float, or one per test item ((N,) tensor, e.g. a per-patient threshold)."""
        m = test.brain.expand_as(maps)
        n = len(test)
        s, y = maps[m].numpy(), test.seg[m].numpy()
        item = torch.arange(n).reshape(n, 1, 1, 1).expand_as(maps)[m].numpy()
        order = np.argsort(-s, kind="mergesort")  # sorted once; every resample only re-weights
        self._s, self._y, self._item = s[order], y[order], item[order]
        thr = torch.as_tensor(threshold, dtype=maps.dtype)
        if thr.ndim == 1:
            if thr.shape[0] != n:
                raise ShapeError(f"TestScores: {thr.shape[0]} thresholds for {n} test items")
            thr = thr.reshape(n, *([1] * (maps.ndim - 1)))
        pred = (maps > thr) & m
        self._tp = (pred & test.seg).flatten(1).sum(1).numpy()
        self._npred, self._ngt = pred.flatten(1).sum(1).numpy(), test.seg.flatten(1).sum(1).numpy()
        self.setting, self.threshold, self.subject = setting, threshold, test.subject
        self.maps, self.test = maps, test

    def auprc(self, w: np.ndarray) -> float:
        return weighted_average_precision(self._s, self._y, w[self._item])

    def dice(self, w: np.ndarray) -> float:
        return weighted_dice(self._tp, self._npred, self._ngt, w)

    def point_metrics(self) -> dict[str, float]:
        from . import metrics as M

        t, m = self.test, self.test.brain.expand_as(self.maps)
        out = {}
        if int(t.seg.sum()) > 0:
            out["pixel_auroc"] = M.pixel_auroc(self.maps, t.seg, m)
        if 0 < int(t.label.sum()) < len(t):
            out["image_auroc"] = M.image_auroc(M.image_scores(self.maps, m), t.label)
        return out


def healthy_threshold(setting: Setting, maps_fn: MapsFn, selection: SliceSet) -> float:
    """The setting's threshold: the (1 − fpr) quantile of its post-processed maps over the brain pixels of all
    healthy (label 0) selection slices."""
    healthy = selection.take(torch.nonzero(selection.label == 0).flatten())
    if len(healthy) == 0:
        raise DataError("the selection subjects have no healthy slice to set the threshold on")
    href = _post(maps_fn(setting.family, dict(setting.params), healthy.x), healthy.brain, setting.median)
    return _threshold(href, healthy.brain, setting.fpr)


def score_on_test(setting: Setting, maps_fn: MapsFn, selection: SliceSet, test: SliceSet,
                  test_maps: Tensor | None = None) -> TestScores:
    """The setting on ``test``, its threshold the (1 − fpr) quantile of the post-processed maps of all healthy
    selection slices (no test label is used)."""
    check_disjoint(selection, test)
    thr = healthy_threshold(setting, maps_fn, selection)
    raw = test_maps if test_maps is not None else maps_fn(setting.family, dict(setting.params), test.x)
    return TestScores(setting, _post(raw, test.brain, setting.median), test, thr)


def bootstrap_scores(scores: Sequence[TestScores], n_boot: int = 1000, seed: int = 0) -> dict:
    """AUPRC and Dice with 95 % subject-bootstrap intervals of their mean over ``scores`` (one per training
    seed, all on the same test subjects: every resample re-weights every seed's maps with the same subject
    draw), the per-seed estimates, and the seed-mean pixel / image AUROC."""
    if not scores:
        raise ConfigError("bootstrap_scores: nothing to score")
    subj = scores[0].subject
    if any(list(s.subject) != list(subj) for s in scores):
        raise DataError("bootstrap_scores: every seed must be scored on the same test slices")
    out = {"settings": [s.setting.as_dict() for s in scores],
           "thresholds": [s.threshold.tolist() if torch.is_tensor(s.threshold) else s.threshold for s in scores],
           "num_test_slices": len(subj), "num_test_subjects": len(set(subj)), "num_seeds": len(scores)}
    for name in ("auprc", "dice"):
        out[name] = bootstrap_ci(subj, lambda w, n=name: _seed_mean(scores, n, w), n_boot, seed=seed)
        out[f"{name}_per_seed"] = [getattr(s, name)(np.ones(len(subj))) for s in scores]
    points = [s.point_metrics() for s in scores]
    for k in points[0]:
        out[k] = float(np.mean([p[k] for p in points]))
    out["setting"] = scores[0].setting.as_dict() if len(scores) == 1 else _summarise(out["settings"])
    return out


def bootstrap_difference(a: Sequence[TestScores], b: Sequence[TestScores], n_boot: int = 1000,
                         seed: int = 0) -> dict:
    """AUPRC and Dice of ``a`` minus ``b`` (each the mean over its training seeds) with a 95 % *paired*
    subject-bootstrap interval: both are scored on the same resampled subjects, so the interval is that of the
    difference, narrower than comparing two separate intervals."""
    if not a or not b:
        raise ConfigError("bootstrap_difference: nothing to compare")
    subj = a[0].subject
    if any(list(s.subject) != list(subj) for s in (*a, *b)):
        raise DataError("bootstrap_difference: both sides must be scored on the same test slices")
    return {n: bootstrap_ci(subj, lambda w, n=n: _seed_mean(a, n, w) - _seed_mean(b, n, w), n_boot, seed=seed)
            for n in ("auprc", "dice")}


def _seed_mean(scores: Sequence[TestScores], metric: str, weights: np.ndarray) -> float:
    return float(np.mean([getattr(s, metric)(weights) for s in scores]))


def _summarise(settings: Sequence[dict]) -> dict:
    """Per key the value if all seeds chose it, else the values joined with '/'."""
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return {k: (settings[0].get(k) if len({str(s.get(k)) for s in settings}) == 1
                else "/".join(str(s.get(k)) for s in settings)) for k in keys}


def evaluate_setting(setting: Setting, maps_fn: MapsFn, selection: SliceSet, test: SliceSet, n_boot: int = 1000,
                     seed: int = 0, test_maps: Tensor | None = None) -> dict:
    """One setting on ``test`` (:func:`score_on_test`) with subject-bootstrap 95 % intervals
    (:func:`bootstrap_scores`): ``auprc``/``dice`` = (estimate, low, high)."""
    return bootstrap_scores([score_on_test(setting, maps_fn, selection, test, test_maps)], n_boot, seed)


def select_and_evaluate(candidates: Mapping[str, Sequence[Setting]], maps_fn: MapsFn, selection: SliceSet,
                        test: SliceSet, k: int = 5, n_boot: int = 1000, seed: int = 0, criterion: str = "mean",
                        log=None) -> dict[str, dict]:
    """For each method family name: CV on ``selection`` picks its setting, then it is evaluated on ``test``.
    The test slices reach ``maps_fn`` only after every family's selection is finished."""
    check_disjoint(selection, test)
    chosen = {}
    for name, settings in candidates.items():
        best, rows = cross_validate(settings, maps_fn, selection, k=k, seed=seed, criterion=criterion, log=log)
        chosen[name] = (best, rows)
        if log:
            log(f"{name}: CV chose {best.as_dict()}")
    return {name: {**evaluate_setting(best, maps_fn, selection, test, n_boot=n_boot, seed=seed), "cv": rows}
            for name, (best, rows) in chosen.items()}


def format_table(results: Mapping[str, dict], title: str = "") -> str:
    """Markdown table: method, chosen setting, AUPRC and Dice with 95 % intervals, pixel and image AUROC."""
    lines = ([title, ""] if title else []) + [
        "| method | chosen setting (CV) | AUPRC [95 % CI] | Dice [95 % CI] | pixel AUROC | image AUROC |",
        "|---|---|---|---|---|---|"]
    for name, r in results.items():
        st = ", ".join(f"{k}={v}" for k, v in r["setting"].items() if k != "family")
        a, d = r["auprc"], r["dice"]
        lines.append(f"| {name} | {st} | {a[0]:.3f} [{a[1]:.3f}, {a[2]:.3f}] | {d[0]:.3f} [{d[1]:.3f}, {d[2]:.3f}] | "
                     f"{r.get('pixel_auroc', float('nan')):.3f} | {r.get('image_auroc', float('nan')):.3f} |")
    return "\n".join(lines)


def write_json(obj, path) -> None:
    """Atomic JSON write (results, chosen settings)."""
    from polydiff.io import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, default=float)
