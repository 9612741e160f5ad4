"""CSDI parity with the official code and checkpoint (reference tensors made on CPU with ermongroup/CSDI)."""

import pytest
import torch

from polydiff import ConfigError, Denoiser, ShapeError
from polydiff.plugins.timeseries import csdi

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def golden():
    from pathlib import Path
    import os

    root = Path(os.environ.get("POLYDIFF_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    path = root / "timeseries" / "csdi_parity" / "csdi_official_golden.pt"
    ckpt = root / "timeseries" / "csdi_pretrained" / "model.pth"
    if not path.exists() or not ckpt.exists():
        if os.environ.get("POLYDIFF_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{path} is absent and POLYDIFF_REQUIRE_SHARED_DATA=1", pytrace=False)
        pytest.skip(f"{path} is absent: these tests need the project's shared data folder (../shared/data)")
    g = torch.load(path, weights_only=True)
    g["model"] = csdi.load_official(ckpt).eval()
    return g


def _cond(g):
    known = g["inp_cond_mask"].bool()
    return known, {"known": known, "observed": g["inp_observed_data"] * g["inp_cond_mask"],
                   "timepoints": g["inp_timepoints"]}


def test_schedule_is_the_polydiff_discrete_vp(golden):
    p = csdi.csdi_process()
    torch.testing.assert_close(p.betas, golden["beta"], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(p.alphas_cumprod, golden["alpha_bar"], rtol=1e-12, atol=1e-15)
    # official step s sits at t = (s + 1)/T
    assert csdi.step_index(torch.tensor([1 / 50, 11 / 50, 1.0]), 50).tolist() == [0, 10, 49]


def test_checkpoint_loads_with_all_parameters(golden):
    m = golden["model"]
    assert sum(p.numel() for p in m.parameters()) == 414065
    assert m.num_features == 35 and len(m.blocks) == 4


def test_side_info_and_denoiser_output(golden):
    m = golden["model"]
    known, cond = _cond(golden)
    side = m.side_info(known, golden["inp_timepoints"])
    torch.testing.assert_close(side, golden["side_info"], rtol=0, atol=0)
    with torch.no_grad():
        out = m.forward_official(golden["diff_input"], golden["side_info"], torch.tensor([10, 40]))
        torch.testing.assert_close(out, golden["eps_pred_t10_t40"], **TOL)
        # through polydiff's call convention: x_t, continuous t = (s+1)/T, cond with observed/known
        t = torch.tensor([11 / 50, 41 / 50], dtype=torch.float64)
        den = Denoiser(m, csdi.csdi_process(), "eps")
        pred = den(golden["xt"], t, cond)
        torch.testing.assert_close(pred.eps, golden["eps_pred_t10_t40"], **TOL)


def test_seeded_validation_loss(golden):
    """Official ``calc_loss(set_t=7)`` after ``torch.manual_seed(0)``: one ``randn_like`` draw."""
    m, p = golden["model"], csdi.csdi_process()
    _, cond = _cond(golden)
    x0 = golden["inp_observed_data"]
    torch.manual_seed(0)
    noise = torch.randn_like(x0)
    t = torch.full((2,), 8 / 50, dtype=torch.float64)
    with torch.no_grad():
        pred = Denoiser(m, p, "eps")(p.q_sample(x0, t, noise), t, cond).eps
    target = golden["inp_observed_mask"] - golden["inp_cond_mask"]
    loss = (((noise - pred) * target) ** 2).sum() / target.sum()
    torch.testing.assert_close(loss, golden["loss_set_t7_seed0"], **TOL)


@pytest.mark.parametrize("chunk_size", [None, 1])
def test_seeded_imputation_matches_official_rng_protocol(golden, chunk_size):
    """The official sampler draws, per sample in turn, x_T and then one noise per step; our batched
    sampler gets the same draws through ``noise_fn`` and must give the same imputations on the targets
    (the official output at conditioning entries is not an imputation and is not compared), whether all
    rows go through the network at once or one chunk after another.
    Series are independent in the network, so only series 1 of the batch is run (CPU time)."""
    m, n, b = golden["model"], 2, slice(1, 2)
    known, _ = _cond(golden)
    torch.manual_seed(0)
    draws = [[torch.randn(2, 35, 48)[b] for _ in range(50)] for _ in range(n)]

    def noise_fn(k, shape):  # samples are folded as row = series * n + sample
        return torch.stack([draws[i][k] for i in range(n)], 1).reshape(shape)

    den = Denoiser(m, csdi.csdi_process(), "eps")
    obs = golden["inp_observed_data"][b]
    out = csdi.impute(den, obs, known[b], n, noise_fn=noise_fn, cond={"timepoints": golden["inp_timepoints"][b]},
                      chunk_size=chunk_size)
    ref = golden["impute_2samples_seed0"][b]
    targets = ~known[b, None].expand_as(ref)
    torch.testing.assert_close(out[targets], ref[targets], **TOL)
    # known entries are returned as observed
    torch.testing.assert_close(out[~targets], obs[:, None].expand_as(ref)[~targets])


def test_wrong_feature_count_is_a_clear_error(golden):
    m = golden["model"]
    with pytest.raises(ShapeError, match="trained for 35 features, but the data have 7"):
        m(torch.zeros(1, 7, 48), torch.tensor([0.5]), {})


def test_chunk_size_must_be_positive(golden):
    den = Denoiser(golden["model"], csdi.csdi_process(), "eps")
    with pytest.raises(ConfigError, match="chunk_size must be >= 1, got 0"):
        csdi.impute(den, torch.zeros(1, 35, 48), torch.ones(1, 35, 48, dtype=torch.bool), 2, chunk_size=0)
