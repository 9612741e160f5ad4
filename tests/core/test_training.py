"""DiffusionModule: EMA arithmetic, condition dropout, sampling plumbing against the exact mixture denoiser,
checkpoint round trip with weights_only loading, and that training lowers the loss."""

import math
import types

import lightning as L
import pytest
import torch

from polydiff.ema import EMA
from polydiff.errors import ConfigError
from polydiff.guidance import drop_conditions, null_conditions
from polydiff.hookspecs import hookimpl
from polydiff.losses import DiffusionLoss
from polydiff.plugins_manager import get_plugin_manager
from polydiff.testing import ExactDenoiser, sliced_wasserstein
from polydiff.testing_data import MixtureDataModule
from polydiff.training import DiffusionModule



MLP = {"class_path": "MLP", "init_args": {"dim": 2, "hidden": 32, "depth": 2}}


def _trainer(tmp_path, steps, **kw):
    return L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0, **kw)


def test_ema_matches_closed_form():
    lin = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.0)
    ema = EMA(lin, decay=0.9, warmup=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    for _ in range(5):
        ema.update(lin)
    # θ_ema = 1 − 0.9^5 after five updates towards 1 from 0
    assert ema.module.weight.item() == pytest.approx(1 - 0.9**5, abs=1e-7)
    warm = EMA(lin, decay=0.9999, warmup=True)
    assert warm.current_decay() == pytest.approx(1 / 10)  # (1 + 0)/(10 + 0) before the first update
    warm.update(lin)
    assert warm.current_decay() == pytest.approx(2 / 11)
    assert not any(p.requires_grad for p in ema.parameters())
    with pytest.raises(ConfigError, match="ema_decay"):
        EMA(lin, decay=1.0)


def test_condition_dropout_rate_and_null_values():
    n = 20000
    cond = {"label": torch.randint(0, 10, (n,)), "embedding": torch.randn(n, 3) + 5}
    g = torch.Generator().manual_seed(0)
    out = drop_conditions(cond, 0.2, num_classes=10, generator=g)
    dropped = out["label"] == 10
    # binomial(20000, 0.2): sd = 57, so the rate is within 4 sd of 0.2
    assert abs(dropped.float().mean().item() - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)
    assert torch.equal(out["embedding"][dropped], torch.zeros_like(out["embedding"][dropped]))  # joint drop
    assert torch.equal(out["embedding"][~dropped], cond["embedding"][~dropped])
    assert torch.equal(out["label"][~dropped], cond["label"][~dropped])
    again = drop_conditions(cond, 0.2, num_classes=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again["label"], out["label"])  # the generator is the only randomness
    assert torch.equal(null_conditions(cond, 10)["label"], torch.full((n,), 10))
    with pytest.raises(ConfigError, match="num_classes"):
        drop_conditions({"label": cond["label"]}, 0.5, None, g)


def test_sample_plumbing_with_exact_denoiser():
    """With the exact mixture denoiser in place of the EMA network, module.sample must reproduce the data
    distribution: this checks prior scaling, grid, generator and shapes through the module."""
    dm = MixtureDataModule(n_train=64, n_val=2000, seed=0)
    dm.setup("fit")
    module = DiffusionModule(backbone=MLP, process="vp", final_num_samples=0, val_num_samples=0)
    module.attach_datamodule(dm)
    module.ema.module = ExactDenoiser(dm.mixture, module.process)
    out = module.sample(1000, generator=torch.Generator().manual_seed(1), sampler="ddim", steps=50)
    assert out["x"].shape == (1000, 2) and torch.isfinite(out["x"]).all()
    ref = dm.mixture.sample(1000, generator=torch.Generator().manual_seed(2))
    sw = sliced_wasserstein(out["x"].double(), ref, generator=torch.Generator().manual_seed(3)).item()
    noise_floor = sliced_wasserstein(dm.mixture.sample(1000, torch.Generator().manual_seed(4)), ref,
                                     generator=torch.Generator().manual_seed(3)).item()
    assert sw < 2.5 * noise_floor + 0.02, (sw, noise_floor)
    same = module.sample(1000, generator=torch.Generator().manual_seed(1), sampler="ddim", steps=50)
    assert torch.equal(same["x"], out["x"])


def test_training_lowers_loss_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    dm = MixtureDataModule(n_train=512, n_val=256, batch_size=128, conditional=True, seed=0)
    module = DiffusionModule(backbone={"class_path": "MLP", "init_args": {"dim": 2, "hidden": 64, "depth": 2,
                                                                          "num_classes": 9}},
                             num_classes=9, cond_drop_prob=0.1, lr=3e-3, ema_decay=0.99,
                             val_num_samples=0, final_num_samples=0)
    before = _trainer(tmp_path, 0).validate(module, dm, verbose=False)[0]["val/loss"]
    trainer = _trainer(tmp_path, 120, check_val_every_n_epoch=100)
    trainer.fit(module, dm)
    after = trainer.validate(module, dm, verbose=False)[0]["val/loss"]
    # an untrained ε-network has loss ≈ E‖ε‖²/d = 1; after 120 steps it must have learned most of the score
    assert before > 0.8 and after < 0.6 * before, (before, after)

    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)  # plain types only
    assert raw["hyper_parameters"]["backbone"]["class_path"] == "polydiff.backbones.mlp.MLP"
    assert any(k.startswith("ema.module.") for k in raw["state_dict"])
    rebuilt = DiffusionModule.from_checkpoint(path)
    assert rebuilt.sample_shape == (2,) and rebuilt.domain == "mixture2d"
    assert int(rebuilt.ema.num_updates) == 120
    for (k, a), (_, b) in zip(module.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), k
    cond = {"label": torch.arange(8) % 9}
    s1 = module.sample(8, generator=torch.Generator().manual_seed(5), cond=cond, steps=10)
    s2 = rebuilt.sample(8, generator=torch.Generator().manual_seed(5), cond=cond, steps=10)
    assert torch.equal(s1["x"], s2["x"]) and torch.equal(s1["cond"]["label"], cond["label"])


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError, match="parameterization"):
        DiffusionModule(backbone=MLP, parameterization="epsilon")
    with pytest.raises(ConfigError, match="unknown backbone 'NoSuchNet'"):
        DiffusionModule(backbone={"class_path": "NoSuchNet"})
    with pytest.raises(ConfigError, match="unknown process"):
        DiffusionModule(backbone=MLP, process="vpp")
    with pytest.raises(ConfigError, match="cond_drop_prob"):
        DiffusionModule(backbone=MLP, cond_drop_prob=1.0)
    with pytest.raises(ConfigError, match="lr_decay_at"):
        DiffusionModule(backbone=MLP, lr_decay_at=[0.75, 1.5])


def test_step_decay_multiplies_the_lr_at_fractions_of_the_run(tmp_path):
    # CSDI's official schedule: lr x 0.1 at 75 % and 90 % of training; 20 steps -> milestones at 15 and 18
    seen = []

    class Lrs(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    dm = MixtureDataModule(n_train=64, n_val=16, batch_size=16, seed=0)
    module = DiffusionModule(backbone=MLP, lr=1e-3, lr_decay_at=[0.75, 0.9], ema_decay=0.0,
                             val_num_samples=0, final_num_samples=0)
    _trainer(tmp_path, 20, callbacks=[Lrs()], limit_val_batches=0).fit(module, dm)
    assert seen == pytest.approx([1e-3] * 15 + [1e-4] * 3 + [1e-5] * 2)


def test_guidance_scale_zero_and_one_are_the_unconditional_and_conditional_models():
    """Classifier-free guidance ε̃ = ε(∅) + w (ε(c) − ε(∅)) (Ho & Salimans 2022, Eq. 6): w = 1 must give the
    conditional sampler, w = 0 the sampler conditioned on the null label num_classes."""
    torch.manual_seed(0)
    dm = MixtureDataModule(n_train=64, conditional=True)
    dm.setup("fit")
    module = DiffusionModule(backbone={"class_path": "MLP", "init_args": {"dim": 2, "hidden": 16, "depth": 1,
                                                                          "num_classes": 9}},
                             num_classes=9, ema_decay=0.0, final_num_samples=0)
    module.attach_datamodule(dm)
    with torch.no_grad():  # make the label embedding matter
        for p in module.denoiser.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    labels = {"label": torch.arange(6) % 9}
    null = {"label": torch.full((6,), 9)}

    def draw(cond, w):
        return module.sample(6, generator=torch.Generator().manual_seed(0), cond=cond, steps=5, guidance_scale=w)["x"]

    cond_only, null_only = draw(labels, 1.0), draw(null, 1.0)
    assert not torch.allclose(cond_only, null_only, atol=1e-3)
    torch.testing.assert_close(draw(labels, 0.0), null_only, atol=1e-5, rtol=0)
    w3 = draw(labels, 3.0)
    assert not torch.allclose(w3, cond_only, atol=1e-3)


def test_checkpoint_loads_when_states_were_mapped_elsewhere(tmp_path):
    """Generator/RNG states come back as CPU byte tensors whatever map_location did (seen on a GPU: a state
    moved to cuda made Generator.set_state fail), and a generator saved on an absent device is re-seeded."""
    module = DiffusionModule(backbone=MLP, final_num_samples=0)
    module.training_generator()
    ckpt = {"polydiff": {"domain": "d", "sample_shape": [2], "rng_cpu": torch.get_rng_state(),
                         "train_generator": module._train_gen.get_state(), "train_generator_device": "cpu"}}
    module.on_load_checkpoint(ckpt)
    assert torch.equal(module._train_gen.get_state(), ckpt["polydiff"]["train_generator"])
    ckpt["polydiff"]["train_generator_device"] = "no_such_device"
    module.on_load_checkpoint(ckpt)
    assert module._train_gen is None and module.sample_shape == (2,) and module.domain == "d"


def test_plugin_registered_sampler_is_usable_by_name():
    import types

    from polydiff import samplers
    from polydiff.hookspecs import hookimpl
    from polydiff.plugins_manager import get_plugin_manager

    calls = []

    def counting_ddim(model, x_T, grid, generator=None, **options):
        calls.append(tuple(grid.shape))
        return samplers.ddim(model, x_T, grid, generator=generator, **options)

    plugin = types.ModuleType("fake_sampler_plugin")

    @hookimpl
    def polydiff_register(registry):
        registry.add("sampler", counting_ddim, name="counting_ddim")

    plugin.polydiff_register = polydiff_register
    pm = get_plugin_manager(reload=True)
    try:
        pm.add_plugin(plugin, "fake_sampler_plugin")
        module = DiffusionModule(backbone=MLP, final_num_samples=0)
        a = module.sample(4, generator=torch.Generator().manual_seed(0), sampler="counting_ddim", steps=3, shape=(2,))
        b = module.sample(4, generator=torch.Generator().manual_seed(0), sampler="ddim", steps=3, shape=(2,))
        assert torch.equal(a["x"], b["x"]) and calls == [(4,)]
        with pytest.raises(ConfigError, match="unknown sampler 'nope'.*registered by plugins: \\[[^]]*'counting_ddim'"):
            module.sample(4, sampler="nope", shape=(2,))
    finally:
        get_plugin_manager(reload=True)


class ScaledLossModule(DiffusionModule):
    """A plugin-style subclass with an extra argument and its own training step."""

    def __init__(self, *args, loss_scale: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_scale = loss_scale

    def training_step(self, batch, batch_idx):
        return self.loss_scale * super().training_step(batch, batch_idx)


def test_subclass_trains_and_is_rebuilt_as_the_subclass(tmp_path):
    dm = MixtureDataModule(n_train=64, n_val=32, batch_size=32)
    module = ScaledLossModule(backbone=MLP, loss_scale=3.0, final_num_samples=0, val_num_samples=0)
    trainer = _trainer(tmp_path, 2, limit_val_batches=0)
    trainer.fit(module, dm)
    trainer.save_checkpoint(tmp_path / "s.ckpt")
    # a checkpoint may only name registered classes: unregistered, the subclass is refused ...
    with pytest.raises(ConfigError, match="ScaledLossModule' is not a registered component"):
        DiffusionModule.from_checkpoint(tmp_path / "s.ckpt")
    assert type(ScaledLossModule.from_checkpoint(tmp_path / "s.ckpt")) is ScaledLossModule  # ... unless named in code
    plugin = types.SimpleNamespace(polydiff_register=hookimpl(lambda registry: registry.add("module", ScaledLossModule)))
    get_plugin_manager().add_plugin(plugin, "scaled_loss_plugin")
    try:  # registered by a plugin, it is rebuilt as the subclass
        rebuilt = DiffusionModule.from_checkpoint(tmp_path / "s.ckpt")
    finally:
        get_plugin_manager(reload=True)
    assert type(rebuilt) is ScaledLossModule and rebuilt.loss_scale == 3.0
    with pytest.raises(ConfigError, match="not a ScaledLossModule"):
        torch.save({**torch.load(tmp_path / "s.ckpt", weights_only=True),
                    "polydiff": {"module_class": "polydiff.training.DiffusionModule"}}, tmp_path / "b.ckpt")
        ScaledLossModule.from_checkpoint(tmp_path / "b.ckpt")


class ExtraTermModule(DiffusionModule):
    """Overrides only the public loss hook: adds a named term that training and validation log."""

    def compute_loss(self, batch, generator, model=None):
        terms = super().compute_loss(batch, generator, model)
        terms["half"] = 0.5 * terms["loss"].detach()
        return terms


def test_compute_loss_is_the_one_loss_hook(tmp_path):
    dm = MixtureDataModule(n_train=64, n_val=32, batch_size=32)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    module = DiffusionModule(backbone=MLP, final_num_samples=0, val_num_samples=0, ema_decay=0.9)
    a = module.compute_loss(batch, torch.Generator().manual_seed(3))
    b = module.compute_loss(batch, torch.Generator().manual_seed(3))
    assert set(a) == {"loss", "mse"} and a["loss"].ndim == 0 and torch.equal(a["loss"], b["loss"])
    assert torch.equal(a["mse"], a["loss"])  # uniform weighting, no learned variance: the MSE is the objective
    # the module's own loss function on the same draws gives the same number
    ref = module.loss_fn(module.denoiser, batch, generator=torch.Generator().manual_seed(3), space=module.space)
    assert torch.equal(a["loss"], ref)
    # validation evaluates the EMA copy with the batch's seeded generator
    with torch.no_grad():
        for p in module.ema.module.parameters():
            p.add_(1.0)
    g = module.evaluation_generator(0)
    ema_loss = module.compute_loss(batch, g, model=module.sampling_model())["loss"]
    assert not torch.equal(ema_loss, a["loss"])
    assert torch.equal(module.validation_step(batch, 0), ema_loss)
    assert module.training_generator().initial_seed() == module.hparams.seed

    sub = ExtraTermModule(backbone=MLP, final_num_samples=0, val_num_samples=0)
    trainer = _trainer(tmp_path, 2, limit_val_batches=1, val_check_interval=2)
    trainer.fit(sub, dm)
    logged = trainer.callback_metrics
    assert {"train/loss", "train/half", "val/loss", "val/half"} <= set(logged)
    assert logged["val/half"].item() == pytest.approx(0.5 * logged["val/loss"].item(), rel=1e-6)


class _DiagnosticLoss(DiffusionLoss):
    """A loss with components of its own: names chosen freely, none special."""

    def __init__(self, component: str = "weighted_twice"):
        super().__init__("eps")
        self.component = component

    def __call__(self, denoiser, batch, generator=None, space=None, return_components=False):
        loss, parts = super().__call__(denoiser, batch, generator, space, return_components=True)
        parts[self.component] = 2.0 * loss.detach()
        return (loss, parts) if return_components else loss


def test_every_loss_component_is_logged(tmp_path):
    """The contract of polydiff.losses: each component a loss returns is logged as <stage>/<name>, whatever its
    name; the name 'loss' is refused (it would hide the objective)."""
    dm = MixtureDataModule(n_train=64, n_val=32, batch_size=32)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    module = DiffusionModule(backbone=MLP, loss=_DiagnosticLoss(), final_num_samples=0, val_num_samples=0)
    terms = module.compute_loss(batch, torch.Generator().manual_seed(1))
    assert set(terms) == {"loss", "mse", "weighted_twice"}
    assert torch.equal(terms["weighted_twice"], 2.0 * terms["loss"].detach())
    trainer = _trainer(tmp_path, 2, limit_val_batches=1, val_check_interval=2)
    trainer.fit(module, dm)
    logged = trainer.callback_metrics
    assert {"train/loss", "train/mse", "train/weighted_twice", "val/loss", "val/mse", "val/weighted_twice"} <= set(logged)
    assert logged["val/weighted_twice"].item() == pytest.approx(2.0 * logged["val/loss"].item(), rel=1e-6)
    bad = DiffusionModule(backbone=MLP, loss=_DiagnosticLoss("loss"), final_num_samples=0, val_num_samples=0)
    with pytest.raises(ConfigError, match="component named 'loss'"):
        bad.compute_loss(batch, torch.Generator().manual_seed(1))
