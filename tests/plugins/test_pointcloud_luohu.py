"""Luo & Hu model pieces: flow prior (invertible, exact change of variables), encoder invariance,
objective terms with the official weights, sampling, the text-conditioning hook."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from polydiff.errors import ConfigError, ShapeError
from polydiff.plugins.pointcloud.luohu import (
    LatentFlow, LuoHuDPM, PointNetEncoder, PointwiseNet, gaussian_entropy, latent_terms, truncated_normal,
)

@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI machine is shared; small nets are faster on one thread
    yield
    torch.set_num_threads(n)


SMALL = dict(latent_dim=8, flow_depth=4, flow_hidden=16, hidden=(16, 32, 16))


def test_flow_is_invertible_and_log_prob_is_exact_change_of_variables():
    torch.manual_seed(0)
    flow = LatentFlow(dim=3, hidden=8, depth=4).double()
    z = torch.randn(5, 3, dtype=torch.float64)
    w, logdet = flow(z)
    torch.testing.assert_close(flow.inverse(w), z)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], z[i])
        assert logdet[i].item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-10)
    expected = -0.5 * (w**2).sum(1) - 1.5 * math.log(2 * math.pi) + logdet
    torch.testing.assert_close(flow.log_prob(z), expected)


def test_encoder_is_permutation_invariant_and_entropy_formula():
    torch.manual_seed(0)
    enc = PointNetEncoder(zdim=4).eval()
    x = torch.randn(3, 50, 3)
    mu, logvar = enc(x)
    mu2, _ = enc(x[:, torch.randperm(50)])
    torch.testing.assert_close(mu, mu2)
    assert mu.shape == logvar.shape == (3, 4)
    lv = torch.tensor([[0.0, math.log(4.0)]])
    # H[N(0, diag(1, 4))] = ½ log(2πe)² + ½ log 4
    assert gaussian_entropy(lv).item() == pytest.approx(math.log(2 * math.pi * math.e) + 0.5 * math.log(4.0))


def test_loss_terms_follow_the_official_objective():
    torch.manual_seed(0)
    model = LuoHuDPM(**SMALL)
    x = torch.randn(4, 32, 3)
    terms = model.loss_terms(x, generator=torch.Generator().manual_seed(1))
    assert set(terms) == {"entropy", "prior", "recons", "loss"}
    expect = terms["recons"] + 0.001 * (terms["entropy"] + terms["prior"])
    assert terms["loss"].item() == pytest.approx(expect.item(), rel=1e-6)
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    ae = LuoHuDPM(mode="ae", **SMALL)
    t_ae = ae.loss_terms(x, generator=torch.Generator().manual_seed(1))
    assert set(t_ae) == {"recons", "loss"} and t_ae["loss"] is t_ae["recons"]
    # same generator -> same draws -> same loss (determinism)
    again = model.loss_terms(x, generator=torch.Generator().manual_seed(1))
    assert again["loss"].item() == pytest.approx(terms["loss"].item())


def test_latent_and_its_log_densities_stay_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    encoder, flow = PointNetEncoder(16), LatentFlow(16, 32, 4)
    x = torch.randn(4, 64, 3)
    z32, _ = latent_terms(encoder, flow, x, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, terms = latent_terms(encoder, flow, x, torch.Generator().manual_seed(0))
    assert z.dtype == terms["prior"].dtype == terms["entropy"].dtype == torch.float32
    assert torch.allclose(z, z32, atol=0.1)  # only the encoder's bf16 rounding differs
    # the flow ran with autocast off: its log-density is the fp32 value of the same z (bf16 matmuls in the
    # couplings move it by about 1e-2)
    assert terms["prior"].item() == pytest.approx(-flow.log_prob(z).mean().item(), abs=1e-4)


def test_generation_is_seeded_and_shaped():
    torch.manual_seed(0)
    model = LuoHuDPM(num_steps=10, **SMALL).eval()
    a = model.generate(3, 20, generator=torch.Generator().manual_seed(5))
    b = model.generate(3, 20, generator=torch.Generator().manual_seed(5))
    assert a.shape == (3, 20, 3) and torch.equal(a, b) and torch.isfinite(a).all()
    rec = model.reconstruct(torch.randn(2, 16, 3), generator=torch.Generator().manual_seed(0))
    assert rec.shape == (2, 16, 3)
    with pytest.raises(ConfigError, match="sample_latent needs mode='gen'"):
        LuoHuDPM(mode="ae", **SMALL).sample_latent(2)
    with pytest.raises(ConfigError, match="flexibility"):
        model.decode(torch.zeros(1, 8), 4, flexibility=2.0)


def test_truncated_normal_respects_bound():
    w = truncated_normal((2000,), torch.Generator().manual_seed(0), 2.0)
    assert w.abs().max() < 2.0
    # the truncated N(0,1) at ±2 has variance 1 − 2·2φ(2)/(Φ(2)−Φ(−2)) ≈ 0.7737
    assert w.var().item() == pytest.approx(0.7737, abs=0.05)


def test_text_condition_embedding_changes_the_output_and_is_checked():
    torch.manual_seed(0)
    net = PointwiseNet(context_dim=4, embedding_dim=6, hidden=(16, 16))
    x = torch.randn(2, 10, 3)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    z = torch.randn(2, 4)
    e1, e2 = torch.randn(2, 6), torch.randn(2, 6)
    o1 = net(x, t, {"latent": z, "embedding": e1})
    o2 = net(x, t, {"latent": z, "embedding": e2})
    o0 = net(x, t, {"latent": z})
    assert (o1 - o2).abs().max() > 1e-4
    torch.testing.assert_close(o0, net(x, t, {"latent": z, "embedding": torch.zeros(2, 6)}))  # absent = null vector
    # the condition acts per shape: swapping embeddings between items swaps their outputs
    o_sw = net(x.flip(0), t.flip(0), {"latent": z.flip(0), "embedding": e1.flip(0)})
    torch.testing.assert_close(o_sw, o1.flip(0))
    with pytest.raises(ShapeError, match=r"cond\['embedding'\] has shape \(2, 5\)"):
        net(x, t, {"latent": z, "embedding": torch.zeros(2, 5)})
    with pytest.raises(ShapeError, match="embedding_dim=0"):
        PointwiseNet(context_dim=4)(x, t, {"latent": z, "embedding": e1})
    with pytest.raises(ShapeError, match=r"cond\['latent'\] is missing"):
        net(x, t, {})


def test_text_conditioned_model_learns_to_use_the_condition(one_thread):
    """Two conditions -> two different clouds (a blob at +2 or −2 on x). Training the decoder alone with
    the engine's ε-loss on a tiny conditional PointwiseNet (fixed zero latent) must make generation
    follow the synthetic condition vector."""
    from polydiff.losses import DiffusionLoss

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = LuoHuDPM(mode="ae", num_steps=20, beta_1=1e-3, beta_T=0.3, embedding_dim=2,
                     latent_dim=2, hidden=(32, 32))
    opt = torch.optim.Adam(model.net.parameters(), lr=1e-2)
    loss_fn = DiffusionLoss("eps", "uniform")
    for _ in range(300):
        label = torch.randint(0, 2, (16,), generator=g)
        emb = torch.nn.functional.one_hot(label, 2).float()
        x = 0.1 * torch.randn(16, 32, 3, generator=g)
        x[..., 0] += torch.where(label == 1, 2.0, -2.0)[:, None]
        loss = loss_fn(model.denoiser, {"x": x, "cond": {"latent": torch.zeros(16, 2), "embedding": emb}}, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = model.eval().decode(torch.zeros(2, 2), 64, generator=g, embedding=torch.eye(2))
    means = out[..., 0].mean(1)
    assert means[0].item() == pytest.approx(-2.0, abs=0.4) and means[1].item() == pytest.approx(2.0, abs=0.4)


def test_bad_model_config():
    with pytest.raises(ConfigError, match="mode"):
        LuoHuDPM(mode="vae")
    with pytest.raises(ShapeError, match="expected \\(batch, points, 3\\)"):
        LuoHuDPM(**SMALL).loss_terms(torch.zeros(2, 5))


TINY_MODULE = dict(latent_dim=8, flow_depth=2, flow_hidden=16, hidden=(16, 16), num_steps=10)


def test_module_lr_follows_the_official_linear_decay():
    from polydiff.plugins.pointcloud.module import LuoHuModule

    default = LuoHuModule(**TINY_MODULE)  # train_gen.py: 2e-3 held to 200k iterations, linear to 1e-4 at 400k
    assert [default.lr_factor(s) * 2e-3 for s in (0, 200_000, 300_000, 400_000, 10**6)] == pytest.approx(
        [2e-3, 2e-3, 1.05e-3, 1e-4, 1e-4])
    module = LuoHuModule(**TINY_MODULE, sched_start=2, sched_end=6)
    cfg = module.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    assert cfg["lr_scheduler"]["interval"] == "step"
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    step = (1e-4 - 2e-3) / 4
    assert seen == pytest.approx([2e-3, 2e-3, 2e-3, 2e-3 + step, 2e-3 + 2 * step, 2e-3 + 3 * step, 1e-4, 1e-4])
    with pytest.raises(ConfigError, match="sched_start"):
        LuoHuModule(**TINY_MODULE, sched_start=5, sched_end=4)


def _benchmark_module():
    """benchmarks/pointcloud.py as a module (it sets one torch thread on import; restored here)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "pointcloud.py"
    spec = importlib.util.spec_from_file_location("pointcloud_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    threads = torch.get_num_threads()
    try:
        spec.loader.exec_module(bench)
    finally:
        torch.set_num_threads(threads)
    return bench


def test_benchmark_scores_a_seed_by_the_mean_over_sample_draws():
    """One 64 + 64 1-NNA moves by up to 12 points between sample draws, so a seed's row is the mean of its draws."""
    bench = _benchmark_module()
    draws = [{"n_samples": 64, "n_refs": 64, "1-NNA-CD": 0.641, "MMD-CD": 6.2e-3, "seconds_cd": 20.0,
              "emd_assignments": 10},
             {"n_samples": 64, "n_refs": 64, "1-NNA-CD": 0.758, "MMD-CD": 6.7e-3, "seconds_cd": 22.0,
              "emd_assignments": 12}]
    m = bench.mean_over_draws(draws)
    assert m["1-NNA-CD"] == pytest.approx(0.6995) and m["MMD-CD"] == pytest.approx(6.45e-3)
    assert m["1-NNA-CD draws"] == [0.641, 0.758] and "seconds_cd draws" not in m
    assert (m["draws"], m["n_samples"], m["n_refs"], m["emd_assignments"], m["seconds_cd"]) == (2, 64, 64, 22, 21.0)


def test_step_bound_schedule_equals_the_official_one():
    """luohu_lr is train_gen.py's get_linear_scheduler (lr 2e-3 held to iteration 200k, linear to 1e-4 at 400k,
    stepped per iteration); the benchmark scales the same breakpoints to its --steps, in steps, not minutes."""
    import argparse

    from polydiff.plugins.pointcloud.luohu import luohu_lr

    official = {0: 2e-3, 1: 2e-3, 200_000: 2e-3, 250_000: 1.525e-3, 300_000: 1.05e-3, 400_000: 1e-4, 10**6: 1e-4}
    assert [luohu_lr(s) for s in official] == pytest.approx(list(official.values()), rel=1e-12)
    # the official LambdaLR, stepped as train_gen.py does, at a scaled-down horizon (start 4, end 8)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    ref = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 if e <= 4 else (
        (1 - (e - 4) / 4) + (e - 4) / 4 * 1e-4 / 2e-3 if e <= 8 else 1e-4 / 2e-3))
    for step in range(12):
        assert luohu_lr(step, 2e-3, 1e-4, 4, 8) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        ref.step()
    bench = _benchmark_module()
    args = argparse.Namespace(steps=bench.STEPS, sched_start=None, sched_end=None)
    start, end = bench.schedule(args)
    assert (start, end) == (bench.STEPS // 2, bench.STEPS)  # 200k / 400k of the official run, scaled
    assert luohu_lr(start, 2e-3, 1e-4, start, end) == 2e-3
    assert luohu_lr((start + end) // 2, 2e-3, 1e-4, start, end) == pytest.approx(1.05e-3)
    assert luohu_lr(end, 2e-3, 1e-4, start, end) == 1e-4
    with pytest.raises(ConfigError, match="sched_start"):
        luohu_lr(0, sched_start=5, sched_end=4)


def test_module_trains_on_fresh_random_point_subsets(one_thread):
    from polydiff.plugins.pointcloud.module import LuoHuModule

    torch.manual_seed(0)
    x = torch.randn(3, 40, 3)
    sub = LuoHuModule.random_points(x, 7, torch.Generator().manual_seed(1))
    again = LuoHuModule.random_points(x, 7, torch.Generator().manual_seed(1))
    other = LuoHuModule.random_points(x, 7, torch.Generator().manual_seed(2))
    assert sub.shape == (3, 7, 3) and torch.equal(sub, again) and not torch.equal(sub, other)
    for b in range(3):  # every drawn point is a point of its own cloud, none drawn twice
        rows = (sub[b][:, None] == x[b][None]).all(-1).float().argmax(1)
        assert torch.equal(x[b][rows], sub[b]) and len(set(rows.tolist())) == 7

    module = LuoHuModule(**TINY_MODULE, train_points=12, encoder_points=5)
    seen = {}
    module.encoder.register_forward_pre_hook(lambda m, a: seen.__setitem__("encoder", a[0].shape[1]))
    module.denoiser.register_forward_pre_hook(lambda m, a: seen.__setitem__("decoder", a[0].shape[1]))
    g = torch.Generator().manual_seed(0)
    module.train()
    assert torch.isfinite(module.compute_loss({"x": x}, g)["loss"])
    assert seen == {"encoder": 5, "decoder": 12}
    module.eval()  # validation and evaluation use every point handed over
    module.compute_loss({"x": x}, g)
    assert seen == {"encoder": 40, "decoder": 40}
    module.train()
    with pytest.raises(ConfigError, match="masks"):
        module.compute_loss({"x": x, "known": torch.zeros_like(x, dtype=torch.bool)}, g)
    with pytest.raises(ConfigError, match="41 random points"):
        LuoHuModule.random_points(x, 41, g)
    with pytest.raises(ConfigError, match="train_points"):
        LuoHuModule(**TINY_MODULE, train_points=1)
