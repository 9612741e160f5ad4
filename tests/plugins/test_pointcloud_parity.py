"""Parity of the Luo & Hu decoder with the official ``PointwiseNet`` (luost26/diffusion-point-cloud):
schedule buffers, forward noising, ε-network output, loss and one reverse step, from the golden file
made with the official code (keys: ``sd.*`` weights, ``sched_*``, x0, ctx, t, noise, xt, eps, loss, z,
x_prev_t93)."""

import numpy as np
import pytest
import torch

from polydiff.plugins.pointcloud.luohu import LuoHuDPM, PointwiseNet, luohu_process
from tests.conftest import require_shared


@pytest.fixture(scope="module")
def golden():
    g = np.load(require_shared("pointcloud", "golden", "luohu_pointwisenet_golden.npz"))
    return {k: torch.from_numpy(g[k]) for k in g.files}


def _state_dict(golden):
    return {k[3:]: v for k, v in golden.items() if k.startswith("sd.")}


def test_schedule_is_the_official_one(golden):
    p = luohu_process(100, 1e-4, 0.02)
    # official buffers are padded with index 0 (β_0 = 0, ᾱ_0 = 1) and computed in float32
    torch.testing.assert_close(p.betas, golden["sched_betas"][1:].double(), rtol=0, atol=2e-9)
    torch.testing.assert_close(p.alphas_cumprod, golden["sched_alpha_bars"][1:].double(), rtol=0, atol=2e-7)
    torch.testing.assert_close(1 - p.betas, golden["sched_alphas"][1:].double(), rtol=0, atol=1e-7)  # float32 ulp near 1 is 6e-8
    ab = torch.cat([torch.ones(1, dtype=torch.float64), p.alphas_cumprod])
    post = torch.sqrt((1 - ab[:-1]) / (1 - ab[1:]) * p.betas)
    torch.testing.assert_close(post, golden["sched_sigmas_inflex"][1:].double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.sqrt(p.betas), golden["sched_sigmas_flex"][1:].double(), rtol=0, atol=1e-7)
    # the official integer step i is polydiff time i/T: α(i/T)² = alpha_bars[i]
    t = golden["t"].double() / 100
    xt = p.q_sample(golden["x0"].double(), t, golden["noise"].double())
    torch.testing.assert_close(xt.float(), golden["xt"], rtol=0, atol=1e-5)


def test_pointwisenet_output_matches_official(golden):
    net = PointwiseNet(point_dim=3, context_dim=golden["ctx"].shape[1], residual=True)
    net.load_state_dict(_state_dict(golden))
    t = golden["t"].double() / 100
    with torch.no_grad():
        eps = net(golden["xt"], t, {"latent": golden["ctx"]})
        eps_beta = net.forward_beta(golden["xt"], golden["sched_betas"][golden["t"]], golden["ctx"])
    torch.testing.assert_close(eps, golden["eps"], rtol=0, atol=1e-5)
    torch.testing.assert_close(eps_beta, golden["eps"], rtol=0, atol=1e-5)
    loss = torch.nn.functional.mse_loss(eps, golden["noise"])
    assert loss.item() == pytest.approx(golden["loss"].item(), abs=1e-5)
    # a wrong residual flag must break parity (the test can fail)
    net.residual = False
    with torch.no_grad():
        assert (net(golden["xt"], t, {"latent": golden["ctx"]}) - golden["eps"]).abs().max() > 0.1


def test_beta_conditioning_is_exact_on_the_grid_and_interpolates_between():
    net = PointwiseNet(context_dim=0)
    t = torch.arange(1, 101, dtype=torch.float64) / 100
    torch.testing.assert_close(net.beta_at(t), torch.linspace(1e-4, 0.02, 100, dtype=torch.float64))
    mid = net.beta_at(torch.tensor([0.555], dtype=torch.float64))
    torch.testing.assert_close(mid, (net.beta_at(torch.tensor([0.55], dtype=torch.float64))
                                     + net.beta_at(torch.tensor([0.56], dtype=torch.float64))) / 2)


def test_reverse_step_matches_official(golden):
    model = LuoHuDPM(latent_dim=golden["ctx"].shape[1])
    model.net.load_state_dict(_state_dict(golden))
    with torch.no_grad():
        x_prev = model.ddpm_step(golden["xt"], 93, {"latent": golden["ctx"]}, golden["z"], flexibility=0.0)
    torch.testing.assert_close(x_prev, golden["x_prev_t93"], rtol=0, atol=1e-5)
    with torch.no_grad():
        flex = model.ddpm_step(golden["xt"], 93, {"latent": golden["ctx"]}, golden["z"], flexibility=1.0)
    assert (flex - golden["x_prev_t93"]).abs().max() > 1e-3  # β_t ≠ β̃_t: the variance choice matters
