"""Stochastic samplers reproduce the target distribution.

Bound: the sliced Wasserstein distance between a sampler's output and fresh exact samples must stay below
1.5 × the 95th percentile of the SWD between two independent exact-sample sets of the same size (the
two-sample noise floor, 20 repetitions), with the same projection directions throughout.
"""

import math

import pytest
import torch

from polydiff import VE, VP
from polydiff.samplers import sample
from polydiff.testing import ExactDenoiser, GaussianMixture, sliced_wasserstein

F64 = torch.float64
N = 1000
MIX = GaussianMixture.grid(widths=(0.1, 0.3))
FACTOR = 1.5


def swd(a, b, mix=MIX):
    return sliced_wasserstein(a.to(F64), b.to(F64), n_projections=128, generator=torch.Generator().manual_seed(7)).item()


_FLOOR = {}


def floor(mix=MIX, n=N, key="2d"):
    if key not in _FLOOR:
        g = torch.Generator().manual_seed(100)
        vals = torch.tensor([swd(mix.sample(n, g), mix.sample(n, g)) for _ in range(20)])
        _FLOOR[key] = torch.quantile(vals, 0.95).item()
    return _FLOOR[key]


CASES = [
    ("ddpm", "vp", 100, {}),
    ("ddpm", "vp", 100, {"variance": "beta"}),
    ("ddim", "ve", 100, {"eta": 1.0}),
    ("dpmpp_sde", "vp", 50, {}),
    ("dpmpp_sde", "ve", 50, {}),
    ("euler_maruyama", "vp", 200, {}),
    ("euler_maruyama", "ve", 200, {}),
    ("pc", "vp", 100, {}),
    ("pc", "ve", 100, {}),
    ("heun", "ve", 40, {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0}),
    ("euler", "vp", 100, {"s_churn": 40.0}),
    ("annealed_langevin", "ve", 10, {"steps_per_level": 50}),
]


@pytest.mark.parametrize("name,proc,steps,kw", CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_matches_target(name, proc, steps, kw):
    process = VP() if proc == "vp" else VE(sigma_max=10.0)
    model = ExactDenoiser(MIX, process)
    x = sample(model, shape=(N, 2), sampler=name, steps=steps, generator=torch.Generator().manual_seed(1), **kw)
    fresh = MIX.sample(N, torch.Generator().manual_seed(2))
    d, bound = swd(x, fresh), FACTOR * floor()
    assert d < bound, (d, bound)


def test_detects_a_wrong_distribution():
    """The bound has power: too few steps of Euler–Maruyama (a visibly biased sampler) fail it."""
    model = ExactDenoiser(MIX, VP())
    x = sample(model, shape=(N, 2), sampler="euler_maruyama", steps=5, generator=torch.Generator().manual_seed(1))
    assert swd(x, MIX.sample(N, torch.Generator().manual_seed(2))) > FACTOR * floor()


@pytest.mark.slow
def test_sde_adaptive_high_dimensional():
    """Gotta-go-fast in d = 16 (its error control is biased in very low dimension, see its docstring)."""
    d, n = 16, 500
    g = torch.Generator().manual_seed(3)
    means = torch.where(torch.rand(4, d, generator=g) > 0.5, 1.0, -1.0).to(F64)
    mix = GaussianMixture(means, torch.full((4,), 0.3**2, dtype=F64))
    model = ExactDenoiser(mix, VP())
    info = {}
    x = sample(model, shape=(n, d), sampler="sde_adaptive", generator=torch.Generator().manual_seed(1), info=info)
    assert info["nfe"] < 2000
    fl = floor(mix, n, key="16d")
    assert swd(x, mix.sample(n, torch.Generator().manual_seed(2)), mix) < FACTOR * fl
