"""Completion keeps the given points exactly and generates the rest; the engine's DDPM sampler equals
Luo & Hu's own reverse loop draw for draw."""

import numpy as np
import pytest
import torch

from polydiff import samplers
from polydiff.errors import ConfigError, ShapeError
from polydiff.plugins.pointcloud.completion import complete, complete_luohu, completion_batch
from polydiff.plugins.pointcloud.luohu import LuoHuDPM
from tests.conftest import require_shared

SMALL = dict(latent_dim=8, flow_depth=2, flow_hidden=16, hidden=(16, 16), num_steps=20)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LuoHuDPM(**SMALL).eval()


def test_completion_keeps_known_points_exactly(model):
    fx = np.load(require_shared("pointcloud", "fixture_tiny.npz"))
    partial = torch.from_numpy(fx["chair_partial_1536"][:, :200])  # PVD: 200 partial points
    out = complete_luohu(model, partial, 56, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 256, 3)
    assert torch.equal(out[:, :200], partial)  # bit-for-bit
    assert torch.isfinite(out[:, 200:]).all() and not torch.equal(out[:, 200:], torch.zeros(2, 56, 3))
    # seeded: same generator, same completion; other samplers too
    again = complete_luohu(model, partial, 56, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    ddim = complete_luohu(model, partial, 56, generator=torch.Generator().manual_seed(1), sampler="ddim", steps=5)
    assert torch.equal(ddim[:, :200], partial)


def test_any_point_denoiser_and_layout():
    from polydiff import VP, Denoiser

    class Shift(torch.nn.Module):
        def forward(self, x, t, cond):
            return 0.1 * x

    den = Denoiser(Shift(), VP("linear", num_steps=10, beta_min=0.001, beta_max=2.0), "eps")
    partial = torch.randn(3, 7, 3)
    out = complete(den, partial, 5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 12, 3) and torch.equal(out[:, :7], partial)
    x_known, known = completion_batch(partial, 5)
    assert known.shape == (3, 12, 1) and known[:, :7].all() and not known[:, 7:].any()


def test_completion_bad_input(model):
    with pytest.raises(ShapeError, match="partial has shape"):
        completion_batch(torch.zeros(5, 3), 4)
    with pytest.raises(ShapeError, match="non-finite"):
        completion_batch(torch.full((1, 5, 3), float("nan")), 4)
    with pytest.raises(ConfigError, match="num_missing"):
        completion_batch(torch.zeros(1, 5, 3), 0)


def test_engine_ddpm_equals_luohu_reverse_loop(model):
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(3))
    own = model.decode(z, 30, generator=torch.Generator().manual_seed(4), flexibility=0.0)
    eng = samplers.sample(model.denoiser, shape=(2, 30, 3), sampler="ddpm", steps=20, cond={"latent": z},
                          generator=torch.Generator().manual_seed(4), variance="beta_tilde")
    torch.testing.assert_close(eng, own, rtol=1e-4, atol=1e-4)
