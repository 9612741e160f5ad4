"""Spaces keep their invariants; parameterisation conversions are exact; the batch contract is enforced."""

import math

import pytest
import torch
from torch import nn

from polydiff import EDM, VE, VP, ConfigError, Denoiser, RectifiedFlow, ShapeError, SubVP, Torus, ZeroCenterOfMass
from polydiff.batch import backbone_cond, target_mask, unpack
from polydiff.parameterization import target_for

F64 = torch.float64


def test_torus_wraps_into_half_open_interval():
    x = torch.tensor([[-math.pi, math.pi, 3 * math.pi + 0.5, -7.0]], dtype=F64)
    y = Torus().project(x)
    assert torch.all(y >= -math.pi) and torch.all(y < math.pi)
    torch.testing.assert_close(torch.cos(y), torch.cos(x))
    torch.testing.assert_close(torch.sin(y), torch.sin(x))


def test_zero_com_projection_honours_presence():
    space = ZeroCenterOfMass()
    g = torch.Generator().manual_seed(0)
    presence = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)[..., None]
    eps = space.noise((2, 4, 3), generator=g, presence=presence)
    assert torch.all(eps[~presence.expand_as(eps)] == 0)
    centre = eps.sum(1) / presence.sum(1)
    torch.testing.assert_close(centre, torch.zeros(2, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(space.degrees_of_freedom(eps, presence), torch.tensor([6.0, 3.0]))
    # projection is idempotent
    torch.testing.assert_close(space.project(eps, presence), eps)


def test_zero_com_noise_has_unit_variance_in_subspace():
    space = ZeroCenterOfMass()
    eps = space.noise((20000, 5, 3), generator=torch.Generator().manual_seed(0))
    # each coordinate of a centred 5-point set has variance (n − 1)/n
    assert abs(eps.var().item() - 4 / 5) < 0.01


class Oracle(nn.Module):
    """A backbone that returns a fixed tensor (the exact target)."""

    def __init__(self):
        super().__init__()
        self.out = None

    def forward(self, x, t, cond):
        return self.out


PROCS = [VP(), VP("cosine", num_steps=100), SubVP(), VE(), EDM(), RectifiedFlow()]


@pytest.mark.parametrize("process", PROCS, ids=repr)
@pytest.mark.parametrize("kind", ["eps", "x0", "v", "score", "flow"])
def test_conversions_are_exact(process, kind):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, generator=g, dtype=F64)
    eps = torch.randn(6, 3, generator=g, dtype=F64)
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 0.95], dtype=F64)
    xt = process.q_sample(x0, t, eps)
    oracle = Oracle()
    oracle.out = target_for(kind, x0, eps, t, process)
    pred = Denoiser(oracle, process, kind)(xt, t)
    torch.testing.assert_close(pred.x0, x0, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(pred.eps, eps, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("process", [EDM(), VP()], ids=repr)
def test_edm_preconditioning_recovers_exact_x0(process):
    """With F = (x0 − c_skip x̃)/c_out the preconditioned denoiser returns x0 exactly (Karras et al. Eq. 7)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 2, generator=g, dtype=F64)
    eps = torch.randn(4, 2, generator=g, dtype=F64)
    t = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=F64)
    xt = process.q_sample(x0, t, eps)
    a, s = process.alpha_sigma(t)
    sig = (s / a)[:, None]
    c_skip = 0.25 / (sig**2 + 0.25)
    c_out = sig * 0.5 / torch.sqrt(sig**2 + 0.25)
    seen = {}

    class F(nn.Module):
        def forward(self, x, c_noise, cond):
            seen["c_noise"] = c_noise
            return (x0 - c_skip * xt / a[:, None]) / c_out

    pred = Denoiser(F(), process, "edm")(xt, t)
    torch.testing.assert_close(pred.x0, x0)
    torch.testing.assert_close(pred.eps, eps)
    torch.testing.assert_close(seen["c_noise"], torch.log(sig[:, 0]) / 4)


def test_learned_variance_split_and_errors():
    class Twice(nn.Module):
        def forward(self, x, t, cond):
            return torch.cat([torch.zeros_like(x), torch.ones_like(x)], 1)

    pred = Denoiser(Twice(), VP(num_steps=10), "eps", learned_variance=True)(torch.zeros(2, 3, 4), torch.full((2,), 0.5))
    assert pred.var_interp.shape == (2, 3, 4) and torch.all(pred.var_interp == 1)
    with pytest.raises(ShapeError, match="backbone output has shape"):
        Denoiser(Twice(), VP(), "eps")(torch.zeros(2, 3, 4), torch.full((2,), 0.5))
    with pytest.raises(ConfigError, match="unknown parameterization 'epsilon'"):
        Denoiser(Twice(), VP(), "epsilon")


def test_batch_contract():
    x = torch.tensor([[1.0, float("nan"), 3.0]])
    presence = torch.tensor([[True, False, True]])
    known = torch.tensor([[True, False, False]])
    xx, pr, kn, cond = unpack({"x": x, "presence": presence, "known": known, "cond": {"label": torch.tensor([1])}})
    assert torch.equal(target_mask(xx, pr, kn), torch.tensor([[0.0, 0.0, 1.0]]))
    bc = backbone_cond(cond, xx, pr, kn)
    assert torch.equal(bc["observed"], torch.tensor([[1.0, 0.0, 0.0]])) and "label" in bc
    with pytest.raises(ShapeError, match="non-finite"):
        unpack({"x": torch.tensor([[float("nan"), 1.0]])})
    with pytest.raises(ShapeError, match="unknown key"):
        unpack({"x": torch.zeros(2, 2), "mask": torch.ones(2, 2)})
    with pytest.raises(ShapeError, match="reserved"):
        unpack({"x": torch.zeros(2, 2), "cond": {"known": torch.ones(2, 2)}})
    with pytest.raises(ShapeError, match="presence"):
        unpack({"x": torch.zeros(2, 2), "presence": torch.ones(3, 2, dtype=torch.bool)})
