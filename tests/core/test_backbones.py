"""Generic backbones: shapes, initialisation, conditioning contract, symmetries and errors (tiny widths)."""

import math

import pytest
import torch

from polydiff import VP, ConfigError, Denoiser, EDM, ShapeError
from polydiff.backbones import (
    DiT,
    MLP,
    GaussianFourierEmbedding,
    SinusoidalTimeEmbedding,
    UNet,
    norm_groups,
)


def tiny_unet(dims=2, **kw):
    args = dict(dims=dims, in_channels=2, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                attention_levels=(1,), num_heads=2)
    args.update(kw)
    return UNet(**args)


def tiny_dit(dims=2, **kw):
    args = dict(in_channels=2, dims=dims, patch_size=2, hidden_size=16, depth=2, num_heads=2)
    args.update(kw)
    return DiT(**args)


def tiny_mlp(**kw):
    args = dict(dim=2, hidden=16, depth=2)
    args.update(kw)
    return MLP(**args)


SHAPES = {  # (factory, kwargs, input shape)
    "unet1d": (tiny_unet, dict(dims=1), (3, 2, 16)),
    "unet2d": (tiny_unet, dict(dims=2), (3, 2, 8, 8)),
    "unet3d": (tiny_unet, dict(dims=3), (3, 2, 4, 4, 4)),
    "dit0": (tiny_dit, dict(dims=0), (3, 5, 2)),
    "dit1": (tiny_dit, dict(dims=1), (3, 2, 12)),
    "dit2": (tiny_dit, dict(dims=2), (3, 2, 8, 4)),
    "mlp": (tiny_mlp, dict(), (3, 2)),
}


def build(name, **kw):
    factory, args, shape = SHAPES[name]
    return factory(**{**args, **kw}), shape


def randomize(model, seed=0, std=0.3):
    """Give every parameter non-zero random values, so zero-initialised layers no longer hide anything."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def inputs(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.rand(shape[0], generator=g)


# ---------------------------------------------------------------- embeddings


def test_sinusoidal_reference_values():
    emb = SinusoidalTimeEmbedding(4)(torch.tensor([0.5, 0.0]))
    # half = 2, ω = (1, 10000^(-1/2)); argument s·t = 500
    expect = torch.tensor([math.cos(500), math.cos(5), math.sin(500), math.sin(5)])
    torch.testing.assert_close(emb[0], expect.float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(emb[1], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert SinusoidalTimeEmbedding(5)(torch.tensor([0.3])).shape == (1, 5)


def test_sinusoidal_matches_diffusers_timestep_embedding():
    emb_mod = pytest.importorskip("diffusers.models.embeddings")
    t = torch.tensor([0.0, 0.001, 0.25, 0.9995, 1.0])
    ours = SinusoidalTimeEmbedding(32)(t)
    ref = emb_mod.get_timestep_embedding(1000 * t, 32, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_embeddings_accept_negative_edm_noise_levels():
    c_noise = torch.log(torch.tensor([0.002, 0.5, 80.0])) / 4  # EDM: c_noise = ln(σ)/4, negative for σ < 1
    assert c_noise.min() < 0
    sin = SinusoidalTimeEmbedding(8)
    e_pos, e_neg = sin(c_noise.abs()), sin(-c_noise.abs())
    torch.testing.assert_close(e_neg[:, :4], e_pos[:, :4])  # cos is even
    torch.testing.assert_close(e_neg[:, 4:], -e_pos[:, 4:])  # sin is odd
    four = GaussianFourierEmbedding(8)
    e = four(c_noise)
    assert torch.isfinite(e).all()
    torch.testing.assert_close(e[:, :4] ** 2 + e[:, 4:] ** 2, torch.ones(3, 4))


def test_fourier_features_are_fixed_buffers_with_ncsnpp_scale():
    g = torch.Generator().manual_seed(0)
    emb = GaussianFourierEmbedding(8192, generator=g)
    assert list(emb.parameters()) == [] and "weight" in emb.state_dict()
    assert abs(emb.weight.std().item() - 16.0) < 0.6  # w ~ N(0, 16²), 4096 draws: std error ≈ 0.18
    again = GaussianFourierEmbedding(8192, generator=torch.Generator().manual_seed(0))
    assert torch.equal(emb.weight, again.weight)
    t = torch.tensor([0.25])
    torch.testing.assert_close(emb(t)[0, :3], torch.sin(2 * math.pi * 0.25 * emb.weight[:3]))


@pytest.mark.parametrize("bad", [torch.zeros(2, 1), torch.tensor(0.5)])
def test_embedding_rejects_bad_t_shape(bad):
    with pytest.raises(ShapeError, match=r"t has shape"):
        SinusoidalTimeEmbedding(4)(bad)


def test_norm_groups():
    assert [norm_groups(c) for c in (128, 96, 64, 48, 32, 8, 3, 1)] == [32, 32, 32, 24, 16, 4, 1, 1]


# ---------------------------------------------------------------- shapes and initialisation


@pytest.mark.parametrize("name", list(SHAPES))
def test_output_shape_and_zero_output_at_init(name):
    torch.manual_seed(0)
    model, shape = build(name)
    x, t = inputs(shape)
    out = model(x, t)
    assert out.shape == shape
    assert torch.equal(out, torch.zeros(shape))  # zero output layer (ADM) / adaLN-Zero (DiT)


@pytest.mark.parametrize("name", list(SHAPES))
def test_learned_variance_doubles_channels_and_feeds_denoiser(name):
    model, shape = build(name, learned_variance=True)
    x, t = inputs(shape)
    out = model(x, t)
    expect = list(shape)
    expect[1] *= 2  # the Denoiser's split axis (dim 1), for every layout
    assert tuple(out.shape) == tuple(expect)
    pred = Denoiser(randomize(model), VP("linear"), "eps", learned_variance=True)(x, t.double(), {})
    assert pred.x0.shape == shape and pred.var_interp.shape == shape


def test_out_channels_argument():
    model = tiny_unet(out_channels=5)
    assert model(*inputs((2, 2, 8, 8))).shape == (2, 5, 8, 8)
    assert tiny_dit(out_channels=3, learned_variance=True)(*inputs((2, 2, 4, 4))).shape == (2, 6, 4, 4)


def test_output_layers_are_zero_initialised():
    unet, dit = tiny_unet(), tiny_dit()
    assert all(torch.all(p == 0) for p in unet.out.parameters())
    for block in dit.blocks:
        assert torch.all(block.ada.weight == 0) and torch.all(block.ada.bias == 0)
    assert torch.all(dit.final.weight == 0) and torch.all(dit.final_ada.weight == 0)


def test_small_digits_unet_size():
    """The quickstart-sized U-Net (8×8 digits): base 32, mults (1, 2), one res block, attention at 4×4."""
    model = UNet(dims=2, in_channels=1, base_channels=32, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,))
    assert sum(p.numel() for p in model.parameters()) == 755_009
    out = model(*inputs((4, 1, 8, 8)))
    assert out.shape == (4, 1, 8, 8)


# ---------------------------------------------------------------- gradients and determinism


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("time_embedding", ["sinusoidal", "fourier"])
def test_gradients_reach_every_parameter(name, time_embedding):
    """No unused parameter (DDP would need find_unused_parameters): connected at init, non-zero once random."""
    model, shape = build(name, num_classes=3, cond_dim=4, time_embedding=time_embedding)
    x, t = inputs(shape)
    cond = {"label": torch.tensor([0, 3, 1]), "embedding": torch.randn(3, 4)}
    model(x, t, cond).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    randomize(model)
    w = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    (model(x, t, cond) * w).sum().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


@pytest.mark.parametrize("name", list(SHAPES))
def test_determinism_under_manual_seed(name):
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model, shape = build(name, num_classes=2, time_embedding="fourier")
        state = {k: v.clone() for k, v in model.state_dict().items()}  # the initialisation itself
        randomize(model)
        x, t = inputs(shape)
        outs.append((state, model(x, t, {"label": torch.tensor([0, 1, 2])})))
    (s1, o1), (s2, o2) = outs
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert torch.equal(o1, o2)
    torch.manual_seed(124)
    other, _ = build(name, num_classes=2, time_embedding="fourier")
    assert not torch.equal(other.cond_embed.time.weight, s1["cond_embed.time.weight"])


# ---------------------------------------------------------------- conditioning contract


@pytest.mark.parametrize("name", list(SHAPES))
def test_label_conditioning_after_a_few_steps(name):
    """At init the output is zero for every label; a few optimizer steps on a label-dependent target make the
    output depend on the label, and the null label (index num_classes) has its own embedding. (Zero-initialised
    layers open the path from the label to the output one layer per step: out layer, then the residual
    branch's last layer, then the embeddings — hence three steps.)"""
    torch.manual_seed(0)
    model, shape = build(name, num_classes=2)
    assert model.cond_embed.label.weight.shape[0] == 3  # num_classes + 1 rows: the last is the null label
    x, t = inputs(shape)
    y = torch.tensor([0, 1, 2])
    target = y.float().reshape(-1, *([1] * (len(shape) - 1))).expand(shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        outs = [model(x, t, {"label": torch.full((3,), k)}) for k in range(3)]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])  # zero for every label at init
    for _ in range(3):
        opt.zero_grad()
        ((model(x, t, {"label": y}) - target) ** 2).mean().backward()
        opt.step()
    with torch.no_grad():
        outs = [model(x, t, {"label": torch.full((3,), k)}) for k in range(3)]
    assert (outs[0] - outs[1]).abs().max() > 1e-4
    assert (outs[2] - outs[0]).abs().max() > 1e-4 and (outs[2] - outs[1]).abs().max() > 1e-4


@pytest.mark.parametrize("name", list(SHAPES))
def test_vector_conditioning_and_ignored_keys(name):
    model, shape = build(name, cond_dim=3)
    randomize(model)
    x, t = inputs(shape)
    e = torch.randn(3, 3, generator=torch.Generator().manual_seed(2))
    base = model(x, t, {"embedding": e})
    assert (model(x, t, {"embedding": torch.zeros(3, 3)}) - base).abs().max() > 1e-4  # zeros = null, allowed
    # unknown keys are ignored (plugins add their own); for DiT 'presence' is meaningful, so not here
    torch.testing.assert_close(model(x, t, {"embedding": e, "mel": torch.randn(7), "observed": x}), base)


@pytest.mark.parametrize("name", ["unet2d", "dit2", "mlp"])
def test_time_changes_the_output(name):
    model, shape = build(name)
    randomize(model)
    x, t = inputs(shape)
    assert (model(x, t) - model(x, 1 - t)).abs().max() > 1e-4


def test_mlp_learns_a_class_conditional_map():
    """A residual MLP fits target(x, y) = y·x + 1 (with the null label y = 2 → 0·x − 1) to MSE < 1e-2."""
    torch.manual_seed(0)
    model = tiny_mlp(hidden=32, num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        x, t = torch.randn(64, 2, generator=g), torch.rand(64, generator=g)
        y = torch.randint(0, 3, (64,), generator=g)
        target = torch.where((y == 2)[:, None], -torch.ones_like(x), y[:, None] * x + 1)
        loss = ((model(x, t, {"label": y}) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-2


def test_edm_noise_levels_through_denoiser():
    model = randomize(tiny_unet())
    x = torch.randn(2, 2, 8, 8)
    pred = Denoiser(model, EDM(), "edm")(x, torch.tensor([0.05, 0.9], dtype=torch.float64), {})
    assert torch.isfinite(pred.x0).all()


@pytest.mark.parametrize("name", list(SHAPES))
def test_device_placement_and_float64(name):
    """On the meta device every tensor the forward pass creates must follow x's device (a proxy for CUDA);
    in float64 the whole network computes in float64."""
    model, shape = build(name, num_classes=2, time_embedding="fourier")
    cond = {"label": torch.tensor([0, 2, 1])}
    meta = model.to("meta")(torch.empty(shape, device="meta"), torch.empty(3, device="meta"),
                            {"label": cond["label"].to("meta")})
    assert meta.device.type == "meta" and meta.shape == shape
    model, _ = build(name, num_classes=2, time_embedding="fourier")
    x, t = inputs(shape)
    assert model.double()(x.double(), t.double(), cond).dtype == torch.float64


@pytest.mark.parametrize(
    "name,spec,extra",
    [
        ("unet2d", {"observed": 2, "known": 1}, lambda x: {"observed": x * 0.5, "known": torch.ones(3, 1, 8, 8)}),
        ("dit1", {"observed": 2}, lambda x: {"observed": x.flip(-1)}),
        ("dit0", {"known": 1}, lambda x: {"known": torch.ones(3, 5, 1, dtype=torch.bool)}),
        ("mlp", {"observed": 2}, lambda x: {"observed": x + 1}),
    ],
)
def test_concatenated_conditions(name, spec, extra):
    """concat_cond feeds same-shaped conditions as extra input channels (SR3/Palette, CSDI)."""
    model, shape = build(name, concat_cond=spec)
    randomize(model)
    x, t = inputs(shape)
    cond = extra(x)
    out = model(x, t, cond)
    assert out.shape == shape
    zeroed = {k: torch.zeros_like(v) for k, v in cond.items()}
    assert (model(x, t, zeroed) - out).abs().max() > 1e-4
    key = next(iter(spec))
    with pytest.raises(ConfigError, match=rf"concatenates cond\['{key}'\].*no '{key}'"):
        model(x, t, {k: v for k, v in cond.items() if k != key})
    bad = dict(cond)
    bad[key] = torch.zeros(3, 7)
    with pytest.raises(ShapeError, match=rf"cond\['{key}'\] has shape \(3, 7\)"):
        model(x, t, bad)
    with pytest.raises(ConfigError, match="concat_cond"):
        build(name, concat_cond={key: 0})


# ---------------------------------------------------------------- symmetries


@pytest.mark.parametrize("dims,shape,shift", [(1, (2, 2, 16), 2), (1, (2, 2, 16), 6), (2, (2, 2, 8, 8), 4)])
def test_circular_unet_commutes_with_cyclic_shifts(dims, shape, shift):
    """With circular padding every layer commutes with cyclic shifts by multiples of 2^(levels−1) = 2."""
    model = randomize(tiny_unet(dims=dims, padding_mode="circular"), std=0.2)
    x, t = inputs(shape)
    axes = tuple(range(2, 2 + dims))
    shifted = model(torch.roll(x, (shift,) * dims, axes), t)
    torch.testing.assert_close(shifted, torch.roll(model(x, t), (shift,) * dims, axes), atol=1e-5, rtol=1e-4)
    zero_pad = randomize(tiny_unet(dims=dims), std=0.2)  # zero padding breaks it at the borders
    gap = zero_pad(torch.roll(x, (shift,) * dims, axes), t) - torch.roll(zero_pad(x, t), (shift,) * dims, axes)
    assert gap.abs().max() > 1e-3


def test_dit_token_mode_is_permutation_equivariant_without_positions():
    model = randomize(tiny_dit(dims=0, pos_embedding="none"), std=0.2)
    x, t = inputs((3, 6, 2))
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    torch.testing.assert_close(model(x[:, perm], t), model(x, t)[:, perm], atol=1e-5, rtol=1e-4)
    with_pos = randomize(tiny_dit(dims=0, pos_embedding="sinusoidal"), std=0.2)
    assert (with_pos(x[:, perm], t) - with_pos(x, t)[:, perm]).abs().max() > 1e-3


def test_dit_presence_mask_hides_padding_tokens():
    model = randomize(tiny_dit(dims=0, pos_embedding="none"), std=0.2)
    x, t = inputs((2, 5, 2))
    presence = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)[..., None]  # (batch, N, 1)
    x2 = x.clone()
    x2[0, 3:] = 100.0  # change only the padding of item 0
    out1, out2 = model(x, t, {"presence": presence}), model(x2, t, {"presence": presence})
    torch.testing.assert_close(out1[0, :3], out2[0, :3])
    torch.testing.assert_close(out1[1], out2[1])
    # same as running item 0 alone on its three present tokens
    torch.testing.assert_close(model(x[:1, :3], t[:1])[0], out1[0, :3], atol=1e-5, rtol=1e-4)
    # without the mask the padding leaks into present tokens
    assert (model(x, t)[0, :3] - model(x2, t)[0, :3]).abs().max() > 1e-3


def test_dit_presence_mask_on_patched_signals():
    model = randomize(tiny_dit(dims=1, pos_embedding="none"), std=0.2)
    x, t = inputs((1, 2, 12))
    presence = torch.zeros(1, 1, 12, dtype=torch.bool)
    presence[..., :8] = True  # patches 0-3 present, 4-5 padding
    x2 = x.clone()
    x2[..., 8:] = -50.0
    torch.testing.assert_close(
        model(x, t, {"presence": presence})[..., :8], model(x2, t, {"presence": presence})[..., :8]
    )


def test_dit_unpatchify_inverts_patch_order():
    """Token k of an (H/p)×(W/p) grid holds patch (k // gw, k % gw) flattened as (p, q, c) (DiT's order)."""
    model = tiny_dit(dims=2, out_channels=3)
    y = torch.randn(2, 3, 8, 4)
    p, (gh, gw) = 2, (4, 2)
    tokens = y.reshape(2, 3, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(2, gh * gw, p * p * 3)
    torch.testing.assert_close(model.unpatchify(tokens, torch.empty(2, 2, 8, 4)), y)
    sig = tiny_dit(dims=1, out_channels=3)
    s = torch.randn(2, 3, 12)
    tokens = s.reshape(2, 3, 6, 2).permute(0, 2, 3, 1).reshape(2, 6, 6)
    torch.testing.assert_close(sig.unpatchify(tokens, torch.empty(2, 2, 12)), s)


def test_dit_learned_positions():
    model = tiny_dit(dims=2, pos_embedding="learned", input_size=(8, 4))
    assert model.pos.shape == (1, 8, 16)
    randomize(model)
    assert model(*inputs((2, 2, 8, 4))).shape == (2, 2, 8, 4)
    with pytest.raises(ShapeError, match=r"\(2, 2, 4, 4\).*learned positional embedding"):
        model(*inputs((2, 2, 4, 4)))
    sets = tiny_dit(dims=0, pos_embedding="learned", input_size=6)
    assert sets(*inputs((2, 4, 2))).shape == (2, 4, 2)  # fewer tokens than the maximum is fine
    with pytest.raises(ConfigError, match="input_size"):
        tiny_dit(dims=2, pos_embedding="learned")


# ---------------------------------------------------------------- errors


def test_unet_rejects_sizes_not_divisible():
    model = tiny_unet(channel_mults=(1, 2, 2))
    with pytest.raises(ShapeError, match=r"\(2, 2, 6, 8\).*multiples of 4"):
        model(*inputs((2, 2, 6, 8)))
    with pytest.raises(ShapeError, match=r"\(2, 3, 8, 8\).*expected \(batch, 2, size, size\)"):
        model(*inputs((2, 3, 8, 8)))
    with pytest.raises(ShapeError, match=r"\(2, 2, 8\)"):
        model(*inputs((2, 2, 8)))


def test_dit_and_mlp_reject_bad_shapes():
    with pytest.raises(ShapeError, match=r"\(2, 2, 7, 8\).*patch_size=2"):
        tiny_dit()(*inputs((2, 2, 7, 8)))
    with pytest.raises(ShapeError, match=r"\(2, 5, 3\).*\(batch, tokens, 2\)"):
        tiny_dit(dims=0)(*inputs((2, 5, 3)))
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(batch, 2\)"):
        tiny_mlp()(*inputs((2, 3)))
    with pytest.raises(ShapeError, match=r"cond\['presence'\] has shape \(2, 4, 1\)"):
        tiny_dit(dims=0)(*inputs((2, 5, 2)), {"presence": torch.ones(2, 4, 1, dtype=torch.bool)})


def test_condition_errors_name_the_key():
    model = tiny_mlp(num_classes=3, cond_dim=2)
    x, t = inputs((2, 2))
    e = torch.zeros(2, 2)
    with pytest.raises(ConfigError, match=r"num_classes=3 but cond has no 'label'"):
        model(x, t, {"embedding": e})
    with pytest.raises(ShapeError, match=r"cond\['label'\] has values in \[0, 4\]"):
        model(x, t, {"label": torch.tensor([0, 4]), "embedding": e})
    with pytest.raises(ShapeError, match=r"cond\['label'\].*integer tensor of shape \(2,\)"):
        model(x, t, {"label": torch.tensor([0.0, 1.0]), "embedding": e})
    with pytest.raises(ConfigError, match=r"cond_dim=2 but cond has no 'embedding'"):
        model(x, t, {"label": torch.tensor([0, 3])})
    with pytest.raises(ShapeError, match=r"cond\['embedding'\] has shape \(2, 3\)"):
        model(x, t, {"label": torch.tensor([0, 3]), "embedding": torch.zeros(2, 3)})
    with pytest.raises(ShapeError, match=r"t has shape \(3,\); expected \(2,\)"):
        model(x, torch.rand(3), {"label": torch.tensor([0, 3]), "embedding": e})


@pytest.mark.parametrize(
    "factory,kwargs,match",
    [
        (UNet, dict(dims=4, in_channels=1), "dims=4"),
        (tiny_unet, dict(attention_levels=(2,)), "attention_levels"),
        (tiny_unet, dict(num_heads=3), "num_heads=3"),
        (tiny_unet, dict(padding_mode="reflect"), "padding_mode"),
        (tiny_unet, dict(time_embedding="learned"), "time_embedding"),
        (tiny_dit, dict(pos_embedding="rope"), "pos_embedding"),
        (tiny_dit, dict(num_heads=3), "num_heads=3"),
        (tiny_mlp, dict(num_classes=0), "num_classes=0"),
    ],
)
def test_bad_configuration(factory, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        factory(**kwargs)


def test_conv1x1_equals_conv1d_and_loads_its_state_dict():
    """Conv1x1 is nn.Conv1d(k=1) computed as a matmul: same state-dict keys, same outputs and gradients."""
    from polydiff.backbones import Conv1x1

    torch.manual_seed(0)
    ref = torch.nn.Conv1d(5, 7, 1)
    fast = Conv1x1(5, 7)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, 11, requires_grad=True)
    torch.testing.assert_close(fast(x), ref(x))
    g_fast = torch.autograd.grad(fast(x).square().sum(), (x, fast.weight))
    g_ref = torch.autograd.grad(ref(x).square().sum(), (x, ref.weight))
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b)
    x_last = torch.randn(3, 4, 11, 5)  # channels-last: (..., cin)
    torch.testing.assert_close(fast.channels_last(x_last), ref(x_last.reshape(-1, 11, 5).transpose(1, 2))
                               .transpose(1, 2).reshape(3, 4, 11, 7))
    with pytest.raises(ConfigError, match="kernel size 1"):
        Conv1x1(5, 7, 3)
