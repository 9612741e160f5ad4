"""polydiff.metrics: the Fréchet distance against hand-computed and independent values, and the Inception Score
and modified Inception Score at their known extremes."""

import numpy as np
import pytest

from polydiff.errors import ShapeError
from polydiff.metrics import frechet_distance, frechet_distance_features, inception_score, modified_inception_score


def test_frechet_1d_hand_computed():
    f1 = np.array([[0.0], [1.0], [2.0], [3.0]])   # mean 1.5, unbiased var 5/3
    f2 = np.array([[1.0], [3.0], [5.0], [7.0]])   # mean 4, unbiased var 20/3
    expected = (4 - 1.5) ** 2 + (np.sqrt(5 / 3) - np.sqrt(20 / 3)) ** 2  # = 6.25 + 5/3
    assert frechet_distance_features(f1, f2) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(6.25 + 5 / 3)


def test_frechet_matches_independent_formula():
    # non-commuting covariances; Tr((S1 S2)^1/2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)) computed with eigh only
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    s1, s2 = a @ a.T + 0.1 * np.eye(3), b @ b.T + 0.1 * np.eye(3)
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 0.5])
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(w)) @ v.T
    tr_covmean = np.sqrt(np.linalg.eigvalsh(r1 @ s2 @ r1)).sum()
    expected = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ShapeError):
        frechet_distance(m1, s1, m2[:2], s2[:2, :2])



def test_inception_scores_at_their_extremes():
    k = 5
    confident = np.eye(k)[np.arange(100) % k]  # confident and evenly spread: IS = K
    assert inception_score(confident) == pytest.approx(k, rel=1e-6)
    uniform = np.full((50, k), 1 / k)  # every row the same: IS = mIS = 1
    assert inception_score(uniform) == pytest.approx(1.0, abs=1e-9)
    assert modified_inception_score(uniform) == pytest.approx(1.0, abs=1e-9)
    one_class = np.eye(k)[np.zeros(40, int)]  # all samples confidently the same class: IS = 1
    assert inception_score(one_class) == pytest.approx(1.0, abs=1e-9)
    # mIS by the definition, pair by pair
    p = np.random.default_rng(0).dirichlet(np.ones(k), size=7)
    kl = [[np.sum(a * np.log(a / b)) for b in p] for a in p]
    assert modified_inception_score(p) == pytest.approx(np.exp(np.mean(kl)), rel=1e-9)
    assert modified_inception_score(confident) > 100  # distinct confident rows: huge pairwise KL
    with pytest.raises(ShapeError):
        inception_score(np.ones((3, 2)))
