"""Discrete processes inside DiffusionModule and the CLI: a D3PM model trained through `polydiff fit` on a
categorical source with known entropy reaches its exact NLL; `polydiff sample`/`evaluate` on its checkpoint;
classifier-free guidance on logits moves class frequencies towards the exact tilted law; known tokens and
per-sample lengths are respected; `check_plugin` accepts an integer-batch plugin."""

import math
import textwrap
import types

import pytest
import torch

from polydiff import cli
from polydiff.discrete import D3PMLoss, DiscreteProcess, LogitGuidance, MDLMLoss, d3pm_vlb
from polydiff.errors import ConfigError, ShapeError
from polydiff.hookspecs import hookimpl
from polydiff.plugins_manager import get_plugin_manager
from polydiff.testing import check_plugin
from polydiff.testing_data import CategoricalDataModule
from polydiff.training import DiffusionModule

K, L = 4, 8


def _backbone(num_labels=None, dim=32):
    args = {"num_classes": K, "seq_len": L, "dim": dim, "depth": 1, "heads": 2, "time_conditioning": False}
    if num_labels is not None:
        args["num_labels"] = num_labels
    return {"class_path": "TokenTransformer", "init_args": args}


def _process(**kw):
    return {"class_path": "DiscreteProcess", "init_args": {"num_classes": K, **kw}}


def _toy_plugin():
    """A plugin that registers the token data module and evaluates its samples with the exact law."""
    plugin = types.ModuleType("toy_tokens_plugin")

    @hookimpl
    def polydiff_register(registry):
        registry.add("datamodule", CategoricalDataModule, "ToyTokens")

    @hookimpl
    def polydiff_evaluate(domain, samples, datamodule, context):
        if domain != "tokens":
            return None
        x = samples["x"]
        label = samples.get("cond", {}).get("label")
        nll = datamodule.nll(x, label, samples.get("presence"))
        return {"nll_per_token": float(nll.mean() / L), "freq_0": float((x == 0).float().mean())}

    plugin.polydiff_register = polydiff_register
    plugin.polydiff_evaluate = polydiff_evaluate
    return plugin


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    pm = get_plugin_manager(reload=True)
    pm.add_plugin(_toy_plugin(), "toy_tokens", version="0.1.0")
    yield pm
    torch.set_num_threads(n)
    get_plugin_manager(reload=True)


def _train(module, dm, steps, seed=0):
    """A plain loop over compute_loss (what training_step runs) with the EMA update."""
    torch.manual_seed(seed)
    dm.setup()
    module.attach_datamodule(dm)
    opt = torch.optim.AdamW(module.denoiser.parameters(), lr=module.hparams.lr)
    g = module.training_generator()
    done = 0
    while done < steps:
        for batch in dm.train_dataloader():
            loss = module.compute_loss(module.prepare_batch(batch, g), g)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            module.ema.update(module.denoiser)
            done += 1
            if done == steps:
                break
    return module.eval()


def test_d3pm_through_polydiff_fit_reaches_the_exact_nll(toy_plugin, tmp_path, capsys):
    (tmp_path / "d3pm.yaml").write_text(textwrap.dedent(f"""\
        trainer: {{max_steps: 240, accelerator: cpu, limit_val_batches: 1, check_val_every_n_epoch: 8,
                   enable_model_summary: false, logger: false, enable_progress_bar: false}}
        model:
          class_path: DiffusionModule
          init_args:
            backbone: {{class_path: TokenTransformer, init_args: {{num_classes: {K}, seq_len: {L}, dim: 32,
                        depth: 1, heads: 2, time_conditioning: false}}}}
            process: {{class_path: DiscreteProcess, init_args: {{num_classes: {K}, transition: absorbing,
                       num_steps: 20}}}}
            loss: {{class_path: polydiff.discrete.D3PMLoss, init_args: {{hybrid_weight: 0.01}}}}
            lr: 0.003
            ema_decay: 0.99
            sample_steps: 20
            val_num_samples: 8
            final_num_samples: 8
        data:
          class_path: ToyTokens
          init_args: {{n_train: 2048, n_val: 256, batch_size: 128}}
        checkpoint: {{dirpath: ck}}
        """))
    assert cli.main(["fit", "--config", "d3pm.yaml"]) == 0
    module = DiffusionModule.from_checkpoint(tmp_path / "ck" / "last.ckpt")
    assert module.is_discrete and isinstance(module.loss_fn, D3PMLoss) and module.loss_fn.process is module.process
    dm = CategoricalDataModule(n_train=2048, n_val=256)
    dm.setup()
    bound = d3pm_vlb(module.sampling_model(), module.process, dm.reference_data(),
                     generator=torch.Generator().manual_seed(0))
    per_token = bound["nll"].mean().item() / L
    exact = dm.entropy()  # 1.208 nats: H(0.5, 0.25, 0.15, 0.1)
    assert per_token >= exact * 0.97  # a bound, up to its Monte Carlo noise
    assert per_token <= exact * 1.05, (per_token, exact)

    capsys.readouterr()
    assert cli.main(["sample", "--ckpt", "ck/last.ckpt", "--num", "512", "--out", "s"]) == 0
    saved = torch.load(tmp_path / "s" / "samples.pt", weights_only=True)
    x = saved["samples"]["x"]
    assert saved["domain"] == "tokens" and x.shape == (512, L) and x.dtype == torch.long
    freq = torch.bincount(x.flatten(), minlength=K).double() / x.numel()
    assert torch.allclose(freq, dm.probs[0], atol=0.04), freq  # 4096 tokens: sd <= 0.008
    assert cli.main(["evaluate", "--ckpt", "ck/last.ckpt", "--num", "256", "--out", "m.json"]) == 0
    assert "nll_per_token" in (tmp_path / "m.json").read_text()


def test_mdlm_guidance_known_tokens_and_lengths():
    """MDLM on a conditional source (label 0: (.5, .25, .15, .1), label 1: reversed), trained with condition
    dropout. Guidance on the logits: w = 1 samples label 0's law, w = 0 the unconditional mixture (.3, .2, .2, .3),
    and w = 3 moves the frequencies beyond label 0's law, away from the mixture (p̃_w ∝ p_c^w p_u^{1−w})."""
    dm = CategoricalDataModule(conditional=True, n_train=2048, batch_size=128, seed=1)
    module = DiffusionModule(backbone=_backbone(num_labels=2), process=_process(num_steps=None),
                             loss={"class_path": "polydiff.discrete.MDLMLoss"}, num_classes=2, cond_drop_prob=0.2,
                             lr=3e-3, ema_decay=0.99, sample_steps=16, final_num_samples=0, val_num_samples=0)
    assert isinstance(module.loss_fn, MDLMLoss) and module.default_sampler == "mdlm"
    _train(module, dm, 200)
    n = 1024
    label = torch.zeros(n, dtype=torch.long)
    freq = {}
    for w in (0.0, 1.0, 3.0):  # 8192 tokens each: sd <= 0.006
        out = module.sample(n, cond={"label": label}, guidance_scale=w, generator=torch.Generator().manual_seed(2))
        freq[w] = torch.bincount(out["x"].flatten(), minlength=K).double() / out["x"].numel()
    assert torch.allclose(freq[1.0], dm.probs[0], atol=0.04), freq[1.0]
    assert torch.allclose(freq[0.0], dm.probs.mean(0), atol=0.04), freq[0.0]
    assert freq[3.0][0] > freq[1.0][0] + 0.05 and freq[3.0][3] < freq[1.0][3] - 0.02, freq[3.0]

    # known tokens (partial diffusion) stay, padding is never generated, the grid of times is honoured
    x_known = torch.randint(0, K, (n, L), generator=torch.Generator().manual_seed(3))
    known = torch.zeros(n, L, dtype=torch.bool)
    known[:, :3] = True
    lengths = torch.randint(4, L + 1, (n,), generator=torch.Generator().manual_seed(4))
    presence = torch.arange(L)[None] < lengths[:, None]
    times = [1.0, 0.8, 0.5, 0.3, 0.1, 0.0]
    out = module.sample(n, cond={"label": label}, known=known, x_known=x_known, presence=presence, times=times,
                        sampler="ancestral", generator=torch.Generator().manual_seed(5))
    x = out["x"]
    assert torch.equal(x[:, :3], x_known[:, :3])
    assert (x[~presence] == 0).all() and ((x[presence] >= 0) & (x[presence] < K)).all()
    assert torch.equal(out["presence"], presence) and torch.equal(out["known"], known)
    with pytest.raises(ConfigError, match="decrease strictly from 1 to 0"):
        module.sample(4, cond={"label": label[:4]}, times=[1.0, 0.5, 0.6, 0.0])
    with pytest.raises(ConfigError, match="samples with one of"):
        module.sample(4, cond={"label": label[:4]}, sampler="ddim")


def test_logit_guidance_is_the_normalised_geometric_tilt():
    proc = DiscreteProcess(K, num_steps=None)

    class Table(torch.nn.Module):
        process = proc

        def forward(self, x, t, cond):
            law = torch.tensor([[0.5, 0.25, 0.15, 0.1], [0.1, 0.15, 0.25, 0.5], [0.3, 0.2, 0.2, 0.3]])
            return torch.log(law[cond["label"]])[:, None, :].expand(*x.shape, K)

    guided = LogitGuidance(Table(), 2.5, null_cond=lambda c: {"label": torch.full_like(c["label"], 2)})
    x = torch.full((2, 3), K)
    p = torch.softmax(guided(x, torch.ones(2), {"label": torch.tensor([0, 1])}), -1)
    c = torch.tensor([[0.5, 0.25, 0.15, 0.1], [0.1, 0.15, 0.25, 0.5]], dtype=torch.float64)
    u = torch.tensor([0.3, 0.2, 0.2, 0.3], dtype=torch.float64)
    want = c**2.5 * u**-1.5
    assert torch.allclose(p[:, 0], want / want.sum(1, keepdim=True), atol=1e-12)


def test_discrete_module_configuration_errors_and_batches():
    with pytest.raises(ConfigError, match="parameterization='v'"):
        DiffusionModule(backbone=_backbone(), process=_process(), parameterization="v")
    with pytest.raises(ConfigError, match="space="):
        DiffusionModule(backbone=_backbone(), process=_process(), space="Torus")
    with pytest.raises(ConfigError, match="D3PMLoss or MDLMLoss"):
        DiffusionModule(backbone=_backbone(), process=_process(), loss={"class_path": "polydiff.losses.DiffusionLoss"})
    with pytest.raises(ConfigError, match="absorbing"):
        DiffusionModule(backbone=_backbone(), process=_process(transition="uniform"),
                        loss={"class_path": "polydiff.discrete.MDLMLoss"})
    with pytest.raises(ConfigError, match="own process"):
        DiffusionModule(backbone=_backbone(), process=_process(), loss=D3PMLoss(DiscreteProcess(K, num_steps=7)))
    module = DiffusionModule(backbone=_backbone(), process=_process(transition="uniform", schedule="cosine",
                                                                    num_steps=50), final_num_samples=0)
    assert isinstance(module.loss_fn, D3PMLoss) and module.default_sampler == "ancestral"
    batch = {"x": torch.randint(0, K, (4, L))}
    terms = module.compute_loss(batch, torch.Generator().manual_seed(0))
    assert set(terms) == {"loss", "vb", "ce"} and torch.isfinite(terms["loss"])
    # MDLM (the default in continuous time): its one component, the masked share, is logged beside the loss
    mdlm = DiffusionModule(backbone=_backbone(), process=_process(num_steps=None), final_num_samples=0)
    terms = mdlm.compute_loss(batch, torch.Generator().manual_seed(0))
    assert set(terms) == {"loss", "masked_fraction"} and 0.0 <= terms["masked_fraction"].item() <= 1.0
    module.check_batch(batch)
    with pytest.raises(ShapeError, match="integer tensor"):
        module.check_batch({"x": torch.rand(4, L)})
    with pytest.raises(ShapeError, match="token ids"):
        module.check_batch({"x": torch.full((4, L), K)})
    gaussian = DiffusionModule(backbone={"class_path": "MLP", "init_args": {"dim": L}}, final_num_samples=0)
    with pytest.raises(ShapeError, match="float tensor"):
        gaussian.check_batch(batch)
    out = module.sample(3, shape=(L,), steps=5)
    assert out["x"].shape == (3, L) and out["x"].dtype == torch.long
    known = torch.zeros(3, L, dtype=torch.bool)
    known[:, -2:] = True
    source = torch.randint(0, K, (3, L))
    pred = module.predict_step({"x": source, "known": known}, 0)  # `polydiff predict`: known tokens from x
    assert torch.equal(pred["x"][:, -2:], source[:, -2:]) and torch.equal(pred["known"], known)


def test_check_plugin_accepts_an_integer_batch_plugin(tmp_path):
    report = check_plugin(_toy_plugin(), name="toy_tokens", out_dir=tmp_path,
                          datamodule_kwargs={"ToyTokens": {"n_train": 64, "n_val": 16, "min_length": 4,
                                                           "known_prefix": 2}})
    assert report["datamodules"] == {"ToyTokens": (L,)}
    assert math.isfinite(report["metrics"]["nll_per_token"])
