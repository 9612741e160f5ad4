"""Counterfactual methods on exact denoisers of known distributions (polydiff.testing), and the networks."""

import pytest
import torch

from polydiff import VP, ConfigError, Euclidean, Prediction
from polydiff.plugins.medical.anomaly import (AnoDDPM, CFGCounterfactual, WollebCounterfactual, ddim_decode,
                                              ddim_encode, level_to_time, strided_grid)
from polydiff.plugins.medical.simplex import SimplexNoise
from polydiff.testing import ExactDenoiser, GaussianMixture

SHAPE = (1, 4, 4)  # 16-pixel "images"
D = 16
PROC = VP("linear", num_steps=1000)

class ImageExact(torch.nn.Module):
    """Class-conditional exact denoiser on images: label 0 healthy, 1 diseased, 2 (null) = their mixture."""

    def __init__(self, mixtures):
        super().__init__()
        self.process = PROC
        self.exact = {k: ExactDenoiser(m, PROC) for k, m in mixtures.items()}

    def forward(self, x, t, cond=None):
        n = x.shape[0]
        labels = (cond or {}).get("label")
        labels = torch.full((n,), 2, dtype=torch.long) if labels is None else labels
        x0, eps = torch.empty_like(x), torch.empty_like(x)
        for k in labels.unique().tolist():
            sel = labels == k
            p = self.exact[k](x[sel].reshape(-1, D), t[sel])
            x0[sel], eps[sel] = p.x0.reshape(-1, *SHAPE), p.eps.reshape(-1, *SHAPE)
        return Prediction(x0=x0, eps=eps)


M0 = torch.full((1, D), -0.5, dtype=torch.float64)  # healthy
M1 = M0.clone()
M1[0, 5] = 0.6  # the lesion: one bright pixel
VAR = torch.tensor([0.02**2], dtype=torch.float64)
HEALTHY = GaussianMixture(M0, VAR)
DISEASED = GaussianMixture(M1, VAR)
BOTH = GaussianMixture(torch.cat([M0, M1]), torch.cat([VAR, VAR]))


def model():
    return ImageExact({0: HEALTHY, 1: DISEASED, 2: BOTH})


def test_levels_and_strided_grid():
    assert level_to_time(PROC, 250) == 0.25 and level_to_time(PROC, 0.5) == 0.5
    g = strided_grid(PROC, 0.25, 10)
    assert g[0] == 0.25 and g[-1] == 0 and len(g) == 11
    assert torch.allclose(g * 1000, torch.round(g * 1000))  # only levels of the trained chain
    with pytest.raises(ConfigError):
        level_to_time(PROC, 1001)


@pytest.mark.parametrize("noise", ["gaussian", "simplex"])
def test_partial_diffusion_starts_at_the_requested_level(noise):
    space = Euclidean(noise=SimplexNoise(octaves=1, frequency=1 / 8)) if noise == "simplex" else Euclidean()
    method = AnoDDPM(model(), level=250, steps=10, space=space)
    x = torch.full((64, 1, 32, 32), 0.3)
    x_l = method.noise_input(x, torch.Generator().manual_seed(0))
    a, s = PROC.alpha_sigma(torch.tensor([0.25], dtype=torch.float64))
    noise_part = (x_l - a.item() * x) / s.item()
    assert x_l.mean().item() == pytest.approx(a.item() * 0.3, abs=0.01)
    assert x_l.var().item() == pytest.approx(s.item() ** 2, rel=0.03)  # variance 1 − ᾱ_250
    a_, b_ = noise_part[..., :-1].flatten(), noise_part[..., 1:].flatten()
    corr = torch.corrcoef(torch.stack([a_, b_]))[0, 1].item()
    if noise == "simplex":
        assert corr > 0.75  # the corruption is spatially correlated
    else:
        assert abs(corr) < 0.02


def test_anoddpm_reconstructs_the_healthy_mode_and_localises_the_lesion():
    m = model()
    method = AnoDDPM(m, level=250, steps=10)
    x = M1.reshape(1, *SHAPE).float().repeat(4, 1, 1, 1)
    # The unconditional model of the mixture keeps the lesion (it is in-distribution); the healthy model removes it.
    healthy_only = AnoDDPM(ImageExact({0: HEALTHY, 1: HEALTHY, 2: HEALTHY}), level=250, steps=10)
    xh = healthy_only.counterfactual(x, torch.Generator().manual_seed(1))
    assert (xh - M0.reshape(1, *SHAPE).float()).abs().max() < 0.1
    amap = (x - xh).abs().flatten(1)
    assert (amap.argmax(1) == 5).all()
    assert method.counterfactual(x, torch.Generator().manual_seed(1)).shape == x.shape


def test_ddim_encode_decode_round_trip():
    m = model()
    x = DISEASED.sample(3, torch.Generator().manual_seed(2)).float().reshape(3, *SHAPE)
    null = {"label": torch.full((3,), 2)}
    x_l = ddim_encode(m, x, 0.5, 50, cond=null)
    a, s = PROC.alpha_sigma(torch.tensor([0.5], dtype=torch.float64))
    assert (x_l - a.item() * x).std() > 0.3 * s.item()  # really encoded to a noisy level
    back = ddim_decode(m, x_l, 0.5, 50, cond=null, clip=None)
    assert (back - x).abs().max() < 0.05


def test_classifier_free_guidance_moves_to_healthy():
    x = M1.reshape(1, *SHAPE).float().repeat(2, 1, 1, 1)
    out = CFGCounterfactual(model(), level=500, steps=25, guidance_scale=3.0, healthy_label=0,
                            null_label=2).counterfactual(x)
    assert (out[:, 0, 1, 1] - (-0.5)).abs().max() < 0.15  # pixel 5 = (row 1, col 1) lost its lesion
    assert (out - M0.reshape(1, *SHAPE).float()).abs().max() < 0.15
    unguided = CFGCounterfactual(model(), level=500, steps=25, guidance_scale=0.0).counterfactual(x)
    assert (unguided[:, 0, 1, 1] - 0.6).abs().max() < 0.15  # w = 0: the unconditional model keeps it


def test_classifier_guidance_with_the_exact_classifier_moves_to_healthy():
    def classifier(x, t):  # exact p(y | x_t): component likelihoods of the noised marginals
        a, s = PROC.alpha_sigma(t.double())
        flat = x.reshape(x.shape[0], D).double()
        return torch.stack([HEALTHY.log_prob(flat, a, s), DISEASED.log_prob(flat, a, s)], dim=1).float()

    x = M1.reshape(1, *SHAPE).float().repeat(2, 1, 1, 1)
    out = WollebCounterfactual(model(), classifier, level=500, steps=25, scale=1.0).counterfactual(x)
    assert (out - M0.reshape(1, *SHAPE).float()).abs().max() < 0.15


def test_monai_unet_wrapper_maps_time_to_integer_steps():
    from polydiff.plugins.medical.networks import MonaiUNet

    net = MonaiUNet(channels=(8, 16, 16), attention_levels=(False, False, False), num_head_channels=8,
                    norm_num_groups=4, num_classes=2)
    seen = {}
    orig = net.net.forward

    def spy(x, timesteps, **kw):
        seen["t"], seen["labels"] = timesteps, kw.get("class_labels")
        return orig(x, timesteps, **kw)

    net.net.forward = spy
    x = torch.randn(3, 1, 16, 16)
    out = net(x, torch.tensor([0.001, 0.25, 1.0], dtype=torch.float64), {})
    assert out.shape == x.shape
    assert seen["t"].tolist() == [0, 249, 999] and seen["labels"].tolist() == [2, 2, 2]


def test_noisy_classifier_learns_a_separable_task():
    from polydiff.plugins.medical.networks import NoisyClassifier
    from polydiff.plugins.medical.train import fit_classifier

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.full((16, 1, 8, 8), -0.8), torch.full((16, 1, 8, 8), 0.8)])
    x = x + 0.05 * torch.randn(32, 1, 8, 8, generator=g)
    y = torch.cat([torch.zeros(16), torch.ones(16)]).long()
    clf = NoisyClassifier(in_channels=1, num_classes=2, base_channels=8, channel_mults=(1, 2), time_embed_dim=16)
    fit_classifier(clf, PROC, x, y, steps=60, batch_size=16, lr=3e-3, generator=g, log=None)
    t = torch.full((32,), 0.05, dtype=torch.float64)
    x_t = PROC.q_sample(x, t, torch.randn(x.shape, generator=g))
    with torch.no_grad():
        acc = (clf(x_t, t).argmax(1) == y).float().mean().item()
    assert acc > 0.9


def test_max_level_training_draws_only_queried_levels():
    from polydiff import Denoiser
    from polydiff.backbones import UNet
    from polydiff.plugins.medical.train import _MaxLevelLoss
    from polydiff.losses import DiffusionLoss

    den = Denoiser(UNet(dims=2, in_channels=1, base_channels=8, channel_mults=(1,), num_res_blocks=1), PROC)
    seen = []
    inner = DiffusionLoss()

    def spy(denoiser, batch, generator=None, space=None):
        seen.append(denoiser.process.sample_time(1000, generator=generator))
        return inner(denoiser, batch, generator=generator, space=space)

    loss = _MaxLevelLoss(spy, 250)
    loss(den, {"x": torch.zeros(2, 1, 8, 8)}, generator=torch.Generator().manual_seed(0))
    t = seen[0]
    assert t.max() <= 0.25 and t.min() >= 0.001 and t.max() > 0.24
    assert den.process.sample_time(5000).max() > 0.5  # restored afterwards


def test_ancestral_step_is_the_ddpm_posterior():
    """AnoDDPM's step, the engine's DDIM with η = 1, reproduces q(x_{t−1} | x_t, x_0) of Ho et al. 2020,
    Eq. 6–7, on one step and on a strided step."""
    from polydiff import NoiseField
    from polydiff.samplers import sample

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 1, 3, 3, generator=g)
    eps = torch.randn(4, 1, 3, 3, generator=g)
    z = torch.randn(4, 1, 3, 3, generator=g)

    class Given(torch.nn.Module):
        process = PROC

        def forward(self, x, t, cond=None):
            return Prediction(x0=x0, eps=eps)

    class Replay(NoiseField):
        def sample(self, shape, generator=None, device=None, dtype=None):
            return z

    for i_t, i_s in ((250, 249), (250, 225)):
        ab_t = PROC.alpha(torch.tensor([i_t / 1000], dtype=torch.float64)).item() ** 2
        ab_s = PROC.alpha(torch.tensor([i_s / 1000], dtype=torch.float64)).item() ** 2
        x_t = ab_t**0.5 * x0 + (1 - ab_t) ** 0.5 * eps
        beta = 1 - ab_t / ab_s
        mean = (ab_s**0.5 * beta / (1 - ab_t)) * x0 + ((1 - beta) ** 0.5 * (1 - ab_s) / (1 - ab_t)) * x_t
        var = (1 - ab_s) / (1 - ab_t) * beta
        expect = mean + var**0.5 * z
        grid = torch.tensor([i_t / 1000, i_s / 1000], dtype=torch.float64)
        got = sample(Given(), x_t, sampler="ddim", eta=1.0, grid=grid, space=Euclidean(noise=Replay()))
        torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)


def test_counterfactual_maps_average_repeats_with_distinct_noise():
    from polydiff.plugins.medical.detect import counterfactual_maps

    class Noisy:  # counterfactual = x + seeded noise: each repeat must draw different noise
        def counterfactual(self, x, generator=None, cond=None):
            return x + torch.randn(x.shape, generator=generator)

    x = torch.zeros(3, 2, 4, 4)
    _, one = counterfactual_maps(Noisy(), x, seed=5, repeats=1)
    _, again = counterfactual_maps(Noisy(), x, seed=5, repeats=1)
    _, three = counterfactual_maps(Noisy(), x, seed=5, repeats=3)
    assert torch.equal(one, again) and one.shape == (3, 1, 4, 4)
    manual = torch.stack([counterfactual_maps(Noisy(), x, seed=5 + 1000 * r)[1] for r in range(3)]).mean(0)
    torch.testing.assert_close(three, manual)
    with pytest.raises(ConfigError):
        counterfactual_maps(Noisy(), x, repeats=0)
