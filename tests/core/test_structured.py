"""Structured states (polydiff.structured): packing, per-part spaces and weights, and the joint law of a
product state sampled with an exact oracle denoiser."""

import math
import textwrap

import pytest
import torch
from scipy import stats
from torch import nn

import polydiff
from polydiff import DiffusionLoss, ShapeError, ConfigError
from polydiff.backbones import DiT
from polydiff.parameterization import Denoiser
from polydiff.structured import Part, ProductSpace, StructuredBackbone

F64 = torch.float64
N_NODES, DIM, K = 3, 2, 2
TYPE_SCALE = 0.25


def mol_space(**types_kw):
    return ProductSpace({"pos": {"features": DIM, "space": "zero_com"},
                         "types": {"features": K, "scale": TYPE_SCALE, **types_kw}})


def test_pack_unpack_round_trip_and_scaling():
    space = mol_space(loss_weight=0.5)
    pos = torch.randn(4, N_NODES, DIM)
    types = torch.nn.functional.one_hot(torch.randint(0, K, (4, N_NODES)), K).float()
    x = space.pack({"pos": pos, "types": types})
    assert x.shape == (4, N_NODES, DIM + K)
    torch.testing.assert_close(x[..., DIM:], TYPE_SCALE * types)
    back = space.unpack(x)
    torch.testing.assert_close(back["pos"], pos)
    torch.testing.assert_close(back["types"], types)
    w = space.entry_weights(x)
    assert w.tolist() == [1.0, 1.0, 0.5, 0.5]
    assert mol_space().entry_weights(x) is None
    with pytest.raises(ShapeError, match="missing part"):
        space.pack({"pos": pos})
    with pytest.raises(ShapeError, match="types"):
        space.pack({"pos": pos, "types": types[..., :1]})
    with pytest.raises(ConfigError, match="sphere"):
        ProductSpace({"pos": {"features": 3, "space": "sphere"}})
    with pytest.raises(ConfigError, match="unknown field"):
        ProductSpace({"pos": {"features": 3, "spcae": "zero_com"}})


def test_project_centres_only_the_positions_slice_over_present_nodes():
    space = mol_space()
    x = torch.randn(5, 4, DIM + K) + 3.0
    presence = torch.tensor([[1, 1, 1, 0]] * 5, dtype=torch.bool).unsqueeze(-1)
    y = space.project(x, presence)
    assert y[:, :3, :DIM].sum(1).abs().max() < 1e-5  # positions centred over the present nodes
    assert (y[:, 3] == 0).all()  # padding zeroed
    torch.testing.assert_close(y[:, :3, DIM:], x[:, :3, DIM:])  # types untouched
    eps = space.noise((5, 4, DIM + K), generator=torch.Generator().manual_seed(0), presence=presence)
    assert eps[:, :3, :DIM].sum(1).abs().max() < 1e-5 and eps[:, :3, DIM:].sum(1).abs().min() > 1e-4
    # (n − 1)·d positional plus n·K type degrees of freedom
    assert space.degrees_of_freedom(x, presence).tolist() == [2 * DIM + 3 * K] * 5


def test_torus_part_wraps_only_its_slice_and_keeps_its_target():
    space = ProductSpace({"angle": {"features": 1, "space": "torus"}, "z": {"features": 1}})
    assert space.lifted
    x = torch.tensor([[[math.pi + 0.1, 7.0]]])
    y = space.project(x)
    torch.testing.assert_close(y[..., 0], torch.tensor([[-math.pi + 0.1]]))
    assert y[..., 1].item() == 7.0
    torch.testing.assert_close(space.project_step(x), x)  # lifted: the torus part stays in its cover
    x0, noise = torch.zeros(1, 1, 2), torch.tensor([[[3.0, 3.0]]])
    a, s = torch.tensor(1.0), torch.tensor(2.0)
    x_t = space.project(a * x0 + s * noise)
    target = space.denoising_target(x_t, x0, noise, a, s)
    assert target[..., 1].item() == 3.0  # Euclidean part: the noise itself
    torus = polydiff.Torus()
    torch.testing.assert_close(target[..., :1], torus.denoising_target(x_t[..., :1], x0[..., :1], noise[..., :1], a, s))
    with pytest.raises(ConfigError, match="scale 1"):
        ProductSpace({"angle": {"features": 1, "space": "torus", "scale": 0.5}})


def test_loss_weight_scales_each_part():
    """The per-part weight multiplies that part's squared errors; the count of target entries is unchanged."""
    space_a, space_b = mol_space(), mol_space(loss_weight=0.0)
    x = mol_space().pack({"pos": torch.randn(8, N_NODES, DIM) * 0, "types": torch.ones(8, N_NODES, K)})
    x[..., :DIM] = space_a.project(torch.randn(8, N_NODES, DIM + K))[..., :DIM]

    class Zero(nn.Module):
        def forward(self, parts, t, cond):
            return {k: torch.zeros_like(v) for k, v in parts.items()}

    process = polydiff.VP()
    den = Denoiser(StructuredBackbone(Zero(), space_a), process, "x0")
    loss = DiffusionLoss("x0")
    la = loss(den, {"x": x}, generator=torch.Generator().manual_seed(0), space=space_a)
    lb = loss(den, {"x": x}, generator=torch.Generator().manual_seed(0), space=space_b)
    # x0-prediction of zero: squared error = Σ x0²; with the types' weight 0 only positions count
    count = x.numel()
    torch.testing.assert_close(la, (x**2).sum() / count)
    torch.testing.assert_close(lb, (x[..., :DIM] ** 2).sum() / count)


# -- the joint law of a product state, with an exact oracle ---------------------------------------------
# Three components, each a type assignment of the three nodes (one-hot, a point mass) and centred positions
# ~ N(μ_c, s² P) in the zero-CoM subspace (P the centring projector). In model units the diffused law of a
# component is N(α m_c, blockdiag((α² s² + σ²) P, σ² I)) on the product space, so the posterior over
# components and E[x_0 | x_t] are closed-form.
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
TYPES = torch.tensor([[0, 0, 1], [1, 1, 1], [0, 1, 1]])
MEANS = torch.tensor([[[-2.0, 0.0], [0.0, 1.0], [2.0, -1.0]],
                      [[1.0, 1.0], [1.0, -1.0], [-2.0, 0.0]],
                      [[0.0, 2.0], [0.0, -2.0], [0.0, 0.0]]], dtype=F64)
POS_STD = 0.3


class ProductOracle(nn.Module):
    """E[x_0 | x_t] of the mixture above, as a dict backbone (x0-parameterisation)."""

    def __init__(self, process):
        super().__init__()
        self.process = process
        self.mu = MEANS - MEANS.mean(1, keepdim=True)
        self.h = TYPE_SCALE * torch.nn.functional.one_hot(TYPES, K).to(F64)

    def forward(self, parts, t, cond):
        a, s = self.process.alpha_sigma(t.to(F64))
        a, s = a.view(-1, 1, 1, 1), s.view(-1, 1, 1, 1)
        xp, xh = parts["pos"].to(F64).unsqueeze(1), parts["types"].to(F64).unsqueeze(1)  # (B, 1, N, ·)
        v = a**2 * POS_STD**2 + s**2
        dp = xp - a * self.mu  # both centred
        logr = (WEIGHTS.log() - (dp**2).sum((2, 3)) / (2 * v[:, :, 0, 0])
                - ((xh - a * self.h) ** 2).sum((2, 3)) / (2 * s[:, :, 0, 0] ** 2))
        r = torch.softmax(logr, dim=1).view(*logr.shape, 1, 1)
        pos = (r * (self.mu + a * POS_STD**2 / v * dp)).sum(1)
        types = (r * self.h).sum(1)
        return {"pos": pos.to(parts["pos"].dtype), "types": types.to(parts["types"].dtype)}


@pytest.mark.parametrize("sampler,steps", [("ddpm", 500), ("dpmpp_2m", 100)])
def test_product_state_joint_law_with_exact_oracle(sampler, steps):
    """Ancestral sampling needs many steps here (at 100 its variance is 16 % low on these narrow components:
    discretisation, not the space); DPM-Solver++(2M) is within 1 % at 100."""
    space = mol_space()
    process = polydiff.VP()
    model = Denoiser(StructuredBackbone(ProductOracle(process), space), process, "x0")
    n = 4000
    x = polydiff.sample(model, shape=(n, N_NODES, DIM + K), sampler=sampler, steps=steps, space=space,
                        generator=torch.Generator().manual_seed(0), dtype=F64)
    parts = space.unpack(x)
    pos, types = parts["pos"], parts["types"]
    # positions are centred exactly; the types are not (their node mean is the type frequency)
    assert pos.mean(1).abs().max() < 1e-9
    assert types.mean(1)[:, 1].mean() > 0.5
    # every sample's types are one of the three assignments (one-hot, data units)
    h = torch.nn.functional.one_hot(TYPES, K).to(F64)
    dist = ((types.unsqueeze(1) - h) ** 2).sum((2, 3))
    comp = dist.argmin(1)
    assert dist.min(1).values.max() < 0.05
    counts = torch.bincount(comp, minlength=3).to(F64)
    chi = stats.chisquare(counts.numpy(), (WEIGHTS * n).numpy())
    assert chi.pvalue > 1e-3, (counts, chi)
    # positions given the types: N(μ_c, s² P): mean within 5 standard errors, variance within 10 %
    mu = MEANS - MEANS.mean(1, keepdim=True)
    for c in range(3):
        pc = pos[comp == c]
        m = int(pc.shape[0])
        se = POS_STD * math.sqrt((1 - 1 / N_NODES) / m)
        assert (pc.mean(0) - mu[c]).abs().max() < 5 * se, (c, pc.mean(0), mu[c])
        var = ((pc - mu[c]) ** 2).sum((1, 2)).mean() / ((N_NODES - 1) * DIM)
        assert abs(var.item() / POS_STD**2 - 1) < 0.1, (c, var)


def test_product_state_control_centring_the_types_breaks_the_law():
    """Control: a space that also centres the types (one ZeroCoM over the whole packed tensor) cannot produce
    the types' law — the same checks fail."""
    process = polydiff.VP()
    wrong = polydiff.ZeroCenterOfMass()
    model = Denoiser(StructuredBackbone(ProductOracle(process), mol_space()), process, "x0")
    x = polydiff.sample(model, shape=(500, N_NODES, DIM + K), sampler="ddpm", steps=100, space=wrong,
                        generator=torch.Generator().manual_seed(0), dtype=F64)
    types = x[..., DIM:] / TYPE_SCALE
    h = torch.nn.functional.one_hot(TYPES, K).to(F64)
    dist = ((types.unsqueeze(1) - h) ** 2).sum((2, 3))
    assert types.mean(1).abs().max() < 1e-9
    assert dist.min(1).values.max() > 0.05


# -- through DiffusionModule ------------------------------------------------------------------------------
PARTS = {"pos": {"features": 3, "space": "zero_com"},
         "types": {"features": 2, "scale": 0.25, "loss_weight": 2.0}}
BACKBONE = {"class_path": "polydiff.structured.ConcatBackbone",
            "init_args": {"net": {"class_path": "DiT", "init_args": {
                "in_channels": 5, "dims": 0, "pos_embedding": "none", "hidden_size": 32, "depth": 1, "num_heads": 2}}}}


def test_module_with_parts_trains_samples_and_checkpoints(tmp_path):
    """A molecule-shaped state (centred positions + scaled one-hot types, 3–6 atoms): DiffusionModule(parts=...)
    trains on batches of parts padded per batch, samples mixed sizes with per-node presence, returns the parts
    in data units, and rebuilds from its checkpoint with the size histogram."""
    import lightning as L

    from polydiff.testing_data import ToyMoleculeDataModule
    from polydiff.training import DiffusionModule

    dm = ToyMoleculeDataModule(n_train=64, n_val=16, batch_size=16)
    module = DiffusionModule(BACKBONE, parts=PARTS, sample_steps=4, val_num_samples=0, final_num_samples=0)
    assert isinstance(module.space, ProductSpace) and module.space.width == 5
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=1, default_root_dir=tmp_path)
    trainer.fit(module, dm)
    assert module.sample_shape == (6, 5)
    out = module.sample(9, sizes=[3, 4, 5, 6, 3, 4, 5, 6, 6])
    assert set(out["x"]) == {"pos", "types"} and out["x"]["pos"].shape == (9, 6, 3)
    assert out["presence"].shape == (9, 6) and out["presence"].sum(1).tolist() == [3, 4, 5, 6, 3, 4, 5, 6, 6]
    pos = out["x"]["pos"]
    assert (pos.sum(1).abs() < 1e-4).all() and (pos[~out["presence"]] == 0).all()
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert torch.equal(ckpt["polydiff"]["size_histogram"], dm.size_histogram())
    again = DiffusionModule.from_checkpoint(path)
    assert again.datamodule is None and again.sample_shape == (6, 5)
    o2 = again.sample(5, sizes="4:5", generator=torch.Generator().manual_seed(0))
    assert set(o2["presence"].sum(1).tolist()) <= {4, 5}
    given = torch.tensor([[1, 1, 1, 0, 0, 0]] * 2, dtype=torch.bool)  # a per-node presence given by the caller
    o3 = again.sample(2, presence=given)
    assert torch.equal(o3["presence"], given) and (o3["x"]["types"][:, 3:] == 0).all()
    with pytest.raises(ConfigError, match="either space"):
        DiffusionModule(BACKBONE, parts=PARTS, space="ZeroCenterOfMass")
    with pytest.raises(ShapeError, match="parts"):
        module.flat_batch({"x": {"pos": torch.zeros(2, 3, 3)}})


# -- a categorical part beside the continuous one ------------------------------------------------------------
class JointOracle(nn.Module):
    """Exact denoiser of the same mixture with the types as categories under the absorbing process: an unmasked
    id rules out every component that disagrees with it, so p(c | x_t, z_t) ∝ w_c N(x_t; α μ_c, v P)·1[consistent];
    it returns E[pos_0 | x_t, z_t] and the logits of p(type_0 | x_t, z_t) per node."""

    def __init__(self, process):
        super().__init__()
        self.process = process
        self.mu = MEANS - MEANS.mean(1, keepdim=True)

    def forward(self, parts, t, cond):
        a, s = self.process.alpha_sigma(t.to(F64))
        a, s = a.view(-1, 1, 1, 1), s.view(-1, 1, 1, 1)
        xp, z = parts["pos"].to(F64).unsqueeze(1), parts["types"]  # z: (B, N) ids, K = [MASK]
        v = a**2 * POS_STD**2 + s**2
        dp = xp - a * self.mu
        agree = ((z.unsqueeze(1) == K) | (z.unsqueeze(1) == TYPES)).all(-1)  # (B, C)
        logr = WEIGHTS.log() - (dp**2).sum((2, 3)) / (2 * v[:, :, 0, 0])
        logr = torch.where(agree, logr, torch.full_like(logr, -torch.inf))
        r = torch.softmax(logr, dim=1)
        pos = (r.view(*r.shape, 1, 1) * (self.mu + a * POS_STD**2 / v * dp)).sum(1)
        probs = torch.einsum("bc,cnk->bnk", r, torch.nn.functional.one_hot(TYPES, K).to(F64))
        return {"pos": pos.to(parts["pos"].dtype), "types": probs.clamp_min(1e-30).log().float()}


CAT_PARTS = {"pos": {"features": DIM, "space": "zero_com"},
             "types": {"kind": "categorical", "num_classes": K, "loss_weight": 0.5}}


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "heun"])
def test_continuous_and_categorical_parts_sampled_jointly(sampler):
    """One DiffusionModule.sample() call: the Gaussian sampler moves the positions and, through its per-step
    callback, the discrete reverse kernel moves the type ids on the same grid. With the exact joint denoiser the
    types' frequencies and the positions' law given the types match the mixture."""
    from polydiff.training import DiffusionModule

    process = polydiff.VP()
    module = DiffusionModule(JointOracle(process), process=process, parts=CAT_PARTS, parameterization="x0",
                             ema_decay=0, sample_steps=100, sampler=sampler)
    module.double()
    seen = []
    n = 3000
    out = module.sample(n, shape=(N_NODES, DIM), generator=torch.Generator().manual_seed(0),
                        callback=lambda info: seen.append(int(info["i"])))
    assert seen[:2] == [0, 1] and seen[-1] == 99  # the user's callback still runs, after the categorical step
    pos, types = out["x"]["pos"], out["x"]["types"]
    assert types.dtype == torch.long and types.shape == (n, N_NODES) and types.max() < K
    match = (types.unsqueeze(1) == TYPES).all(-1)  # (n, C)
    # ids that unmask in the same step are drawn independently given p̃(z_0 | x_t, z_t) (the factorised reverse
    # kernel of masked diffusion), so a few samples may mix assignments: 0.1 % measured at 100 steps
    ok = match.any(1)
    assert ok.float().mean() > 0.99, ok.float().mean()
    pos, match = pos[ok], match[ok]
    n = int(ok.sum())
    comp = match.to(torch.long).argmax(1)
    counts = torch.bincount(comp, minlength=3).to(F64)
    assert stats.chisquare(counts.numpy(), (WEIGHTS * n).numpy()).pvalue > 1e-3, counts
    assert pos.mean(1).abs().max() < 1e-9
    mu = MEANS - MEANS.mean(1, keepdim=True)
    for c in range(3):
        pc = pos[comp == c]
        se = POS_STD * math.sqrt((1 - 1 / N_NODES) / pc.shape[0])
        assert (pc.mean(0) - mu[c]).abs().max() < 5 * se, (c, pc.mean(0), mu[c])
        var = ((pc - mu[c]) ** 2).sum((1, 2)).mean() / ((N_NODES - 1) * DIM)
        assert abs(var.item() / POS_STD**2 - 1) < 0.1, (c, var)


class TinyJointNet(nn.Module):
    """Embeds the type ids (K + 1 with [MASK]), runs a set transformer on [positions, embedding], returns ε for the
    positions and logits for the types."""

    def __init__(self, k=2, hidden=32):
        super().__init__()
        self.k = k
        self.embed = nn.Embedding(k + 1, 4)
        self.net = DiT(in_channels=3 + 4, out_channels=3 + k, dims=0, pos_embedding="none", hidden_size=hidden,
                       depth=1, num_heads=2)

    def forward(self, parts, t, cond):
        h = torch.cat([parts["pos"], self.embed(parts["types"])], -1)
        p = cond.get("presence")
        out = self.net(h, t, {"presence": p.unsqueeze(-1)} if p is not None else {})
        return {"pos": out[..., :3], "types": out[..., 3:]}


def test_module_trains_a_categorical_part_with_a_shared_time(tmp_path):
    import lightning as L

    from polydiff.testing_data import ToyMoleculeDataModule
    from polydiff.training import DiffusionModule

    dm = ToyMoleculeDataModule(n_train=64, n_val=16, batch_size=16, categorical_types=True)
    dm.setup()
    parts = {"pos": {"features": 3, "space": "zero_com"}, "types": {"kind": "categorical", "num_classes": 2}}
    module = DiffusionModule(TinyJointNet(), parts=parts, sample_steps=5, val_num_samples=0, final_num_samples=0)
    batch = dm.collate([dm.train_set[i] for i in range(8)])
    seen = {}
    inner_forward = module.denoiser.backbone.inner.forward

    def spy(p, t, cond):
        seen["t"], seen["z"] = t.clone(), p["types"].clone()
        return inner_forward(p, t, cond)

    module.denoiser.backbone.inner.forward = spy
    g = torch.Generator().manual_seed(0)
    loss, comps = module._loss(module.denoiser, batch, g)
    # the ids were corrupted at the Gaussian part's time: masked fraction tracks 1 − ᾱ(t) = t
    present = batch["presence"]
    masked = ((seen["z"] == 2) & present).sum(1) / present.sum(1)
    assert torch.corrcoef(torch.stack([masked.double(), seen["t"].double()]))[0, 1] > 0.6
    assert comps["types_loss"] > 0 and torch.isfinite(loss)
    loss.backward()
    # the categorical term trains the logits head (DiT's zero-initialised output layer: rows 3: are the logits)
    assert module.denoiser.backbone.inner.net.final.weight.grad[3:].abs().sum() > 0
    module.denoiser.backbone.inner.forward = inner_forward
    L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              limit_val_batches=1, enable_checkpointing=False, default_root_dir=tmp_path).fit(module, dm)
    out = module.sample(6, sizes=[3, 4, 5, 6, 3, 4])
    types = out["x"]["types"]
    assert types.shape == (6, 6) and types.dtype == torch.long
    assert ((types >= 0) & (types < 2)).all() and (types[~out["presence"]] == 0).all()


def test_parts_through_the_cli(tmp_path, monkeypatch):
    """The molecule example of docs/engine.md: `parts` in a YAML config, `polydiff fit`, `polydiff sample --sizes`."""
    from polydiff import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mol.yaml").write_text(textwrap.dedent("""\
        trainer: {max_steps: 2, accelerator: cpu, limit_val_batches: 1, enable_model_summary: false, logger: false,
                  enable_progress_bar: false}
        model:
          class_path: DiffusionModule
          init_args:
            parts:
              pos:   {features: 3, space: zero_com}
              types: {features: 2, scale: 0.25}
            backbone:
              class_path: polydiff.structured.ConcatBackbone
              init_args:
                net: {class_path: DiT, init_args: {in_channels: 5, dims: 0, pos_embedding: none, hidden_size: 16,
                                                   depth: 1, num_heads: 2}}
            sample_steps: 3
            val_num_samples: 0
            final_num_samples: 0
        data:
          class_path: polydiff.testing_data.ToyMoleculeDataModule
          init_args: {min_size: 3, max_size: 6, n_train: 32, n_val: 8, batch_size: 16}
        checkpoint: {dirpath: ck}
        """))
    assert cli.main(["fit", "--config", "mol.yaml"]) == 0
    assert cli.main(["sample", "--ckpt", "ck/last.ckpt", "--num", "5", "--sizes", "4:5", "--out", "s"]) == 0
    got = torch.load(tmp_path / "s" / "samples.pt", weights_only=True)["samples"]
    assert got["x"]["pos"].shape[-1] == 3 and got["x"]["types"].shape[-1] == 2
    assert set(got["presence"].sum(1).tolist()) <= {4, 5}
    assert (got["x"]["pos"].sum(1).abs() < 1e-4).all()


def test_known_nodes_fix_both_parts():
    """Known nodes (a fragment): their positions and type ids are kept; a known id selects the components that
    agree with it (node 0 of type 1 → only assignment [1, 1, 1])."""
    from polydiff.training import DiffusionModule

    process = polydiff.VP()
    module = DiffusionModule(JointOracle(process), process=process, parts=CAT_PARTS, parameterization="x0",
                             ema_decay=0, sample_steps=50, sampler="dpmpp_2m").double()
    n = 200
    mu = MEANS - MEANS.mean(1, keepdim=True)
    known = torch.zeros(n, N_NODES, dtype=torch.bool)
    known[:, 0] = True
    x_known = {"pos": mu[1].expand(n, -1, -1).clone(), "types": TYPES[1].expand(n, -1).clone()}
    out = module.sample(n, shape=(N_NODES, DIM), known=known, x_known=x_known,
                        generator=torch.Generator().manual_seed(0))
    assert (out["x"]["types"][:, 0] == 1).all()
    assert (out["x"]["types"] == TYPES[1]).all(-1).float().mean() > 0.99
    torch.testing.assert_close(out["x"]["pos"][:, 0], x_known["pos"][:, 0])
