"""SSSD^S4: the FFT-convolution S4 kernel equals the step-by-step recurrence of the same discretised SSM."""

import numpy as np
import pytest
import torch

from polydiff import Denoiser, ShapeError
from polydiff.plugins.timeseries import sssd


def _recurrence(kernel: sssd.S4DKernel, u: torch.Tensor, which: int = 0) -> torch.Tensor:
    """x_l = Ā x_{l−1} + B̄ u_l, y_l = 2 Re(C x_l), per channel, in complex128, with output map ``which``."""
    _, dA, dB, C = (a.detach().to(torch.complex128) for a in kernel.discrete())
    Bsz, H, L = u.shape
    x = torch.zeros(Bsz, H, dA.shape[1], dtype=torch.complex128)
    ys = []
    for l in range(L):
        x = dA * x + dB * u[:, :, l, None].to(torch.complex128)
        ys.append(2 * (C[which] * x).sum(-1).real)
    return torch.stack(ys, -1)


def test_hippo_legs_normal_part_and_init():
    A, B, P = sssd.hippo_legs(8)
    assert A[3, 1] == pytest.approx(-np.sqrt(7 * 3)) and A[2, 2] == -3 and A[1, 3] == 0
    Nn = A + np.outer(P, P)
    np.testing.assert_allclose(Nn + Nn.T, -np.eye(8), atol=1e-12)  # normal part = −½ I + skew
    lam, b = sssd.s4d_legs_init(8)
    assert lam.shape == (4,) and torch.allclose(lam.real, torch.full((4,), -0.5, dtype=torch.float64))
    assert (lam.imag > 0).all()


def test_fft_kernel_equals_recurrence():
    g = torch.Generator().manual_seed(0)
    layer = sssd.S4(channels=3, N=16, bidirectional=True, generator=g)
    u = torch.randn(2, 3, 50, generator=g)
    with torch.no_grad():
        fwd = sssd.fft_conv(u, layer.kernel(50)[0])
        torch.testing.assert_close(fwd, _recurrence(layer.kernel, u).float(), rtol=1e-5, atol=1e-5)
        # backward direction: the recurrence run on the reversed sequence, reversed back and shifted so
        # that position l sees only u_{l+1}, u_{l+2}, … (strictly anti-causal, as S4's bidirectional kernel)
        ahead = _recurrence(layer.kernel, u.flip(-1), which=1).flip(-1).float()
        ref_bwd = torch.cat([ahead[..., 1:], torch.zeros_like(ahead[..., :1])], -1)
        ref = fwd + ref_bwd + layer.D[:, None] * u
        torch.testing.assert_close(layer.ssm(u), ref, rtol=1e-5, atol=1e-5)
        # a unit impulse at position 10 reaches earlier positions only through K_bwd, later ones only
        # through K_fwd, and position 10 itself only through K_fwd[0] + D (the backward kernel skips lag 0)
        delta = torch.zeros(1, 3, 50)
        delta[..., 10] = 1
        k = layer.kernel(50)
        y = layer.ssm(delta)[0]
        torch.testing.assert_close(y[:, 10], k[0][:, 0] + layer.D, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(y[:, 9], k[1][:, 0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(y[:, 11], k[0][:, 1], rtol=1e-5, atol=1e-6)


def test_only_c_d_and_the_output_layer_of_s4_learn():
    """SSSD's S4 (``trainable=None``): Λ, B and Δ are fixed buffers, C and D learn."""
    layer = sssd.S4(channels=4, N=8)
    names = {n for n, _ in layer.named_parameters()}
    assert names == {"kernel.C", "D", "output_linear.weight", "output_linear.bias"}
    assert {"kernel.log_dt", "kernel.B", "kernel.im", "kernel.log_neg_re"} <= set(layer.state_dict())


def test_backbone_contract_and_known_entries_enter_clean():
    torch.manual_seed(0)
    net = sssd.SSSDBackbone(num_features=3, channels=8, skip_channels=8, layers=2, state_size=8, num_steps=200)
    torch.nn.init.normal_(net.out_conv.weight)  # zero-initialised: make the output depend on the input
    x = torch.randn(2, 3, 24)
    known = torch.rand(2, 3, 24) > 0.5
    obs = torch.randn(2, 3, 24)
    cond = {"known": known, "observed": torch.where(known, obs, torch.zeros_like(obs))}
    t = torch.tensor([0.5, 1.0], dtype=torch.float64)
    out = net(x, t, cond)
    assert out.shape == x.shape
    # the noisy values at known entries are replaced by the observations: changing them changes nothing
    out2 = net(torch.where(known, torch.randn_like(x), x), t, cond)
    torch.testing.assert_close(out, out2)
    p = sssd.sssd_process()
    assert p.num_steps == 200
    torch.testing.assert_close(p.betas[[0, -1]], torch.tensor([1e-4, 0.02], dtype=torch.float64))
    Denoiser(net, p, "eps")(x, t, cond)
    with pytest.raises(ShapeError, match="built/trained for 3 features"):
        net(torch.zeros(1, 4, 24), t[:1], {})
