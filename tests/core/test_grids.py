"""Time grids: diffusers' timestep spacings, Karras ρ, log-SNR uniform, per-sample rows, validation."""

import math

import numpy as np
import pytest
import torch

from polydiff import EDM, VE, VP, ConfigError, RectifiedFlow, ShapeError
from polydiff.samplers import check_grid, make_grid

F64 = torch.float64
DDPM = VP("linear", num_steps=1000)


def test_discrete_spacings_match_lin_et_al_table2():
    # leading (DDIM): 0, 100, …, 900 (+offset) -> t = (k+1)/T, then 0
    lead = make_grid(DDPM, 10, "leading")
    assert torch.allclose(lead[:-1] * 1000 - 1, torch.arange(900, -1, -100, dtype=F64))
    assert lead[-1] == 0
    assert torch.allclose(make_grid(DDPM, 10, "leading", offset=1)[:-1] * 1000 - 1, torch.arange(901, 0, -100, dtype=F64))
    trail = make_grid(DDPM, 10, "trailing")
    assert torch.allclose(trail[:-1] * 1000 - 1, torch.arange(999, 0, -100, dtype=F64))
    lin = make_grid(DDPM, 4, "linspace")
    assert torch.allclose(lin[:-1] * 1000 - 1, torch.tensor([999.0, 666.0, 333.0, 0.0], dtype=F64))
    # the same integer timesteps as diffusers' trailing spacing
    expected = np.arange(1000, 0, -1000 / 7).round().astype(np.int64) - 1
    assert (make_grid(DDPM, 7, "trailing")[:-1] * 1000 - 1).round().long().tolist() == expected.tolist()


def test_discrete_spacing_needs_a_discrete_process():
    with pytest.raises(ConfigError, match="discrete process"):
        make_grid(VP(), 10, "trailing")
    with pytest.raises(ConfigError, match="too many|exceeds"):
        make_grid(VP("linear", num_steps=10), 20, "leading")


def test_karras_is_uniform_in_sigma_power():
    proc, rho = VP(), 7.0
    g = make_grid(proc, 12, "karras", rho=rho)
    sig = proc.sigma(g) / proc.alpha(g)
    assert g[-1] == 0 and g[0] == 1
    steps = torch.diff(sig[:-1] ** (1 / rho))
    assert torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-8)
    # last positive level is the process's smallest training time
    assert math.isclose(float(g[-2]), proc.t_min)
    # EDM: t-uniform is already the ρ=7 grid of Karras et al. Eq. 5 (σ_min=0.002 at t=0, no tail)
    edm = EDM()
    assert torch.allclose(make_grid(edm, 9, "karras"), make_grid(edm, 9, "uniform"), atol=1e-10)


def test_log_snr_uniform():
    for proc in (VP(), VP("cosine"), DDPM):
        g = make_grid(proc, 10, "log_snr")
        lam = proc.log_snr(g[:-1])
        d = torch.diff(lam)
        assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-6), proc
    # VE: uniform log-SNR is uniform t (geometric σ)
    assert torch.allclose(make_grid(VE(), 8, "log_snr"), make_grid(VE(), 8, "uniform"), atol=1e-12)


def test_per_sample_rows():
    t0 = torch.tensor([1.0, 0.5, 0.2], dtype=F64)
    for kind in ("uniform", "karras", "log_snr"):
        g = make_grid(VP(), 5, kind, t_start=t0)
        assert g.shape == (3, 6) and torch.equal(g[:, 0], t0) and (g[:, -1] == 0).all()
        assert (g[:, 1:] < g[:, :-1]).all()
    g = make_grid(DDPM, 5, "trailing", t_start=torch.tensor([1.0, 0.5], dtype=F64))
    assert torch.allclose(g[1, :-1] * 1000 - 1, torch.arange(499, 0, -100, dtype=F64))


def test_zero_terminal_snr_and_errors():
    with pytest.raises(ConfigError, match="finite σ/α"):
        make_grid(RectifiedFlow(), 5, "karras")
    g = make_grid(RectifiedFlow(), 5, "karras", t_start=0.99)
    assert g[0] == 0.99
    with pytest.raises(ConfigError, match="steps"):
        make_grid(VP(), 0)
    with pytest.raises(ConfigError, match="unknown grid"):
        make_grid(VP(), 5, "exponential")
    with pytest.raises(ShapeError, match="t_start"):
        make_grid(VP(), 5, t_start=1.5)
    with pytest.raises(ShapeError, match="t_end"):
        make_grid(VP(), 5, t_start=0.5, t_end=0.6)
    with pytest.raises(ShapeError, match="t_start has shape"):
        make_grid(VP(), 5, t_start=torch.ones(3, dtype=F64), batch=4)


def test_check_grid():
    assert check_grid(torch.tensor([1.0, 0.0])).shape == (1, 2)
    assert check_grid(torch.tensor([[1.0, 0.0], [0.5, 0.0]]), batch=2).shape == (2, 2)
    for bad, msg in [([1.0], "at least 2"), ([1.0, 1.0], "strictly decreasing"), ([1.2, 0.0], "inside"),
                     ([1.0, float("nan")], "non-finite"), ([[[1.0, 0.0]]], "shape")]:
        with pytest.raises(ShapeError, match=msg):
            check_grid(torch.tensor(bad, dtype=F64), batch=1)
    with pytest.raises(ShapeError, match="float"):
        check_grid(torch.tensor([2, 1]))
