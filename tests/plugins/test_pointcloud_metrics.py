"""Point-cloud metrics: golden values from the shared fixture, hand-computed tiny cases, PointFlow
definitions of MMD/COV/1-NNA, agreement with the naive full-matrix formulas, and bad input."""


import numpy as np
import pytest
import torch

from polydiff.errors import ShapeError
from polydiff.plugins.pointcloud import metrics as M
from tests.conftest import require_shared


@pytest.fixture(scope="module")
def fixture_tiny():
    return np.load(require_shared("pointcloud", "fixture_tiny.npz"))


def test_golden_values_of_the_shared_fixture(fixture_tiny):
    r = fixture_tiny["real_256"]
    assert M.chamfer_distance(r[0], r[3]).item() == pytest.approx(float(fixture_tiny["cd_real0_real3"]), abs=1e-6)
    assert M.chamfer_distance(r[0], r[3]).item() == pytest.approx(0.183906, abs=1e-6)
    assert M.earth_movers_distance(r[0], r[3]).item() == pytest.approx(float(fixture_tiny["emd_real0_real3"]), abs=1e-6)
    assert M.earth_movers_distance(r[0], r[3]).item() == pytest.approx(0.409308, abs=1e-6)
    assert M.earth_movers_distance(r[4], r[6]).item() == pytest.approx(float(fixture_tiny["emd_real4_real6"]), abs=1e-6)
    assert M.chamfer_distance(r[0], r[0]).item() == float(fixture_tiny["cd_real0_real0"]) == 0.0


def test_hand_computed_chamfer_and_emd():
    a = [[0.0, 0.0, 0.0]]
    b = [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]
    # a->b: 1; b->a: (1 + 4) / 2 = 2.5
    assert M.chamfer_distance(a, b).item() == pytest.approx(3.5)
    assert M.chamfer_distance(b, a).item() == pytest.approx(3.5)
    # optimal bijection pairs each point with the one straight above it (cost 1 each), not the crossing sqrt(10)
    a2 = [[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]
    b2 = [[3.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    assert M.earth_movers_distance(a2, b2).item() == pytest.approx(1.0)
    # EMD is a mean of (not squared) distances: a uniform shift by (0, 0, 2) costs exactly 2
    x = np.random.default_rng(0).normal(size=(40, 3))
    assert M.earth_movers_distance(x, x + [0, 0, 2.0]).item() == pytest.approx(2.0, abs=1e-9)
    assert M.earth_movers_distance(x, x[::-1]).item() == pytest.approx(0.0, abs=1e-12)


def test_batched_pairwise_and_naive_agree(fixture_tiny):
    r = torch.from_numpy(fixture_tiny["real_256"]).double()
    x, y = r[:3], r[3:7]
    fast = M.pairwise_chamfer(x, y)
    naive = M.naive_pairwise_chamfer(x, y)
    assert fast.shape == (3, 4)
    torch.testing.assert_close(fast, naive, rtol=1e-10, atol=1e-12)
    sym = M.pairwise_chamfer(r)
    torch.testing.assert_close(sym, sym.T)
    assert torch.all(sym.diagonal() == 0)
    torch.testing.assert_close(sym[:3, 3:7], fast)
    batched = M.chamfer_distance(x, y[:3])
    torch.testing.assert_close(batched, torch.stack([M.chamfer_distance(x[i], y[i]) for i in range(3)]))
    e = M.pairwise_emd(r[:3, :64])
    assert e[0, 1] == pytest.approx(M.earth_movers_distance(r[0, :64], r[1, :64]).item())
    torch.testing.assert_close(e, e.T)


def test_mmd_cov_hand_computed():
    # rows: generated, columns: references (PointFlow's lgan_mmd_cov on all_dist = M_rs.T)
    d = torch.tensor([[1.0, 5.0], [2.0, 4.0], [3.0, 6.0]])
    mmd, cov = M.mmd_cov(d)
    assert mmd == pytest.approx((1.0 + 4.0) / 2)  # per reference min over samples: 1, 4
    assert cov == pytest.approx(0.5)  # every sample's nearest reference is reference 0
    d[1, 1] = 1.0
    mmd, cov = M.mmd_cov(d)
    assert (mmd, cov) == (pytest.approx(1.0), pytest.approx(1.0))


def test_one_nn_accuracy_extremes_and_hand_case():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(6, 32, 3))
    # copies: every cloud's nearest neighbour is its twin in the other set -> all misclassified
    assert M.generation_metrics(ref.copy(), ref, metrics=("cd",))["1-NNA-CD"] == 0.0
    # far-away blob: perfectly separable
    far = M.generation_metrics(ref + 100.0, ref, metrics=("cd",))
    assert far["1-NNA-CD"] == 1.0 and far["COV-CD"] == pytest.approx(1 / 6)
    # hand case with single-point "clouds" on a line: S = {0, 3}, R = {1, 10}
    # nearest other cloud: s0->r1 (d 1), s3->r1 (d 2), r1->s0 (d 1), r10->s3 (d 7): all four misclassified
    s = torch.tensor([0.0, 3.0])[:, None]
    r = torch.tensor([1.0, 10.0])[:, None]
    dist = lambda a, b: (a - b.T).abs()
    assert M.one_nn_accuracy(dist(s, s), dist(s, r), dist(r, r)) == 0.0
    # S = {0, 0.5}, R = {10, 11}: every cloud's neighbour is in its own set
    s = torch.tensor([0.0, 0.5])[:, None]
    r = torch.tensor([10.0, 11.0])[:, None]
    assert M.one_nn_accuracy(dist(s, s), dist(s, r), dist(r, r)) == 1.0


def test_one_nn_matches_pointflow_definition_on_random_matrices():
    """Brute-force leave-one-out classification of the joint set, label by the nearest other cloud."""
    rng = np.random.default_rng(2)
    pts = rng.normal(size=(9, 2))
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    ns = 4
    labels = np.array([0] * ns + [1] * 5)  # 0 generated, 1 reference
    correct = 0
    for i in range(9):
        j = min((k for k in range(9) if k != i), key=lambda k: d[i, k])
        correct += labels[j] == labels[i]
    ours = M.one_nn_accuracy(torch.tensor(d[:ns, :ns]), torch.tensor(d[:ns, ns:]), torch.tensor(d[ns:, ns:]))
    assert ours == pytest.approx(correct / 9)


def test_generation_metrics_keys_and_ranges(fixture_tiny):
    r = fixture_tiny["real_256"][:, :32]
    out = M.generation_metrics(r[:4], r[4:])
    assert set(out) == {"MMD-CD", "COV-CD", "1-NNA-CD", "MMD-EMD", "COV-EMD", "1-NNA-EMD"}
    assert all(0 <= out[k] <= 1 for k in ("COV-CD", "1-NNA-CD", "COV-EMD", "1-NNA-EMD"))
    d = M.pairwise_chamfer(r[:4], r[4:])
    assert out["MMD-CD"] == pytest.approx(d.min(0).values.mean().item())


def test_completion_metrics_are_paired_means(fixture_tiny):
    full = fixture_tiny["chair_complete_2048"][:, :128]
    out = M.completion_metrics(full, full + np.array([0, 0, 0.5], dtype=np.float32))
    assert out["EMD"] == pytest.approx(0.5, abs=1e-6)
    assert out["CD"] > 0
    assert M.completion_metrics(full, full)["CD"] == 0.0


@pytest.mark.parametrize(
    "fn,args,match",
    [
        (M.chamfer_distance, (np.zeros((0, 3)), np.zeros((4, 3))), "a has 0 point"),
        (M.chamfer_distance, (np.zeros((4, 3)), np.full((4, 3), np.nan)), "b contains 12 non-finite"),
        (M.chamfer_distance, (np.zeros(3), np.zeros((4, 3))), "a has shape"),
        (M.chamfer_distance, (np.zeros((4, 3)), np.zeros((4, 2))), "3-D points but b has 2-D"),
        (M.earth_movers_distance, (np.zeros((4, 3)), np.zeros((5, 3))), "a has 4 points and b has 5"),
        (M.pairwise_emd, (np.zeros((2, 4, 3)), np.zeros((2, 5, 3))), "x has 4 points per cloud and y has 5"),
        (M.pairwise_chamfer, (np.zeros((0, 4, 3)),), "x holds no clouds"),
        (M.generation_metrics, (np.zeros((2, 4, 3)), np.zeros((4, 3))), "refs has shape"),
        (M.completion_metrics, (np.zeros((2, 4, 3)), np.zeros((3, 4, 3))), "pred holds 2 clouds and target 3"),
    ],
)
def test_bad_input_names_the_argument(fn, args, match):
    with pytest.raises(ShapeError, match=match):
        fn(*args)


def test_mmd_cov_rejects_bad_matrix():
    with pytest.raises(ShapeError, match="d_sr"):
        M.mmd_cov(torch.zeros(0, 3))
    with pytest.raises(ShapeError, match="d_ss"):
        M.one_nn_accuracy(torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2, 2))


def test_emd_lower_bounds_hold_and_pruned_set_metrics_equal_full_matrix():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(1, 24, 3))
    refs = base + 0.3 * rng.normal(size=(7, 24, 3))
    samples = base * rng.uniform(0.7, 1.3, size=(6, 1, 3)) + 0.3 * rng.normal(size=(6, 24, 3))
    lb = M.emd_lower_bounds(samples, refs)
    exact = M.pairwise_emd(samples, refs)
    assert torch.all(lb <= exact + 1e-12) and torch.all(lb > 0.3 * exact)
    pruned, solved = M.emd_set_metrics(samples, refs)
    full = M.set_metrics_from_matrices(M.pairwise_emd(samples), exact, M.pairwise_emd(refs), "EMD")
    assert pruned == pytest.approx(full, abs=1e-12)
    assert solved < 13 * 12 // 2  # fewer assignments than the full upper triangle of the joint set
