"""Simplex noise field (Wyatt et al. 2022, §3.2): statistics, spatial correlation, determinism."""

import pytest
import torch

from polydiff import ConfigError, Euclidean, ShapeError
from polydiff.plugins.medical.simplex import SimplexNoise

def lag_corr(x, lag, dim=-1):
    n = x.shape[dim]
    a = x.narrow(dim, 0, n - lag).flatten()
    b = x.narrow(dim, lag, n - lag).flatten()
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def test_standardised_per_field():
    x = SimplexNoise().sample((6, 2, 64, 64), torch.Generator().manual_seed(1))
    assert x.shape == (6, 2, 64, 64) and x.dtype == torch.float32
    per_field = x.flatten(2)
    torch.testing.assert_close(per_field.mean(-1), torch.zeros(6, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_field.std(-1), torch.ones(6, 2), atol=1e-4, rtol=0)


def test_raw_field_bounded_and_not_constant():
    field = SimplexNoise(octaves=1, frequency=1 / 8, normalize=False)
    x = field.sample((8, 1, 64, 64), torch.Generator().manual_seed(0))
    assert x.abs().max() <= 1.0 + 1e-6  # Gustavson's scaling keeps single-octave simplex noise in [-1, 1]
    assert 0.3 < x.std() < 0.6


@pytest.mark.parametrize("freq,lag", [(1 / 8, 1), (1 / 32, 4)])
def test_correlation_length_follows_frequency(freq, lag):
    g = torch.Generator().manual_seed(2)
    x = SimplexNoise(octaves=1, frequency=freq).sample((16, 1, 64, 64), g)
    # lag = 1/(8ν) is an eighth of the period: strongly correlated; 2/ν (two periods) is decorrelated
    assert lag_corr(x, lag) > 0.75
    assert lag_corr(x, lag, dim=-2) > 0.75
    assert abs(lag_corr(x, 16 * lag if 16 * lag < 64 else 48)) < 0.1
    white = torch.randn(16, 1, 64, 64, generator=g)
    assert abs(lag_corr(white, lag)) < 0.03


def test_anoddpm_defaults_are_spatially_correlated():
    x = SimplexNoise().sample((16, 1, 64, 64), torch.Generator().manual_seed(3))
    assert (SimplexNoise().octaves, SimplexNoise().persistence, SimplexNoise().frequency) == (6, 0.8, 1 / 64)
    assert lag_corr(x, 1) > 0.8 and lag_corr(x, 4) > 0.45 and lag_corr(x, 4) < lag_corr(x, 2)


def test_3d_volumes():
    x = SimplexNoise(octaves=1, frequency=1 / 16).sample((2, 1, 24, 24, 24), torch.Generator().manual_seed(4))
    assert x.shape == (2, 1, 24, 24, 24)
    for dim in (-1, -2, -3):
        assert lag_corr(x, 2, dim=dim) > 0.75


def test_determinism_by_seed_and_independence_in_batch():
    n = SimplexNoise()
    a = n.sample((3, 1, 32, 32), torch.Generator().manual_seed(7))
    b = n.sample((3, 1, 32, 32), torch.Generator().manual_seed(7))
    c = n.sample((3, 1, 32, 32), torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert abs(torch.corrcoef(torch.stack([a[0].flatten(), a[1].flatten()]))[0, 1]) < 0.5


def test_engine_space_uses_it():
    space = Euclidean(noise=SimplexNoise())
    eps = space.noise((2, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    assert lag_corr(eps, 1) > 0.8


def test_bad_arguments():
    with pytest.raises(ConfigError, match="octaves"):
        SimplexNoise(octaves=0)
    with pytest.raises(ConfigError, match="frequency"):
        SimplexNoise(frequency=2.0)
    with pytest.raises(ShapeError, match="shape"):
        SimplexNoise().sample((4, 64))
