"""Diffusion-LM and DiffuSeq on the engine: rounding recovers tokens from clean embeddings, clamping keeps every
x̂₀ on a word vector, the DiffuSeq source is read clean and comes back unchanged, and the task runs from the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import torch

from polydiff.plugins.text.data import TextDataModule
from polydiff.plugins.text.diffusion_lm import DiffusionLM
from tests.conftest import require_shared
from tests.plugins.text.dlm_train import train_steps


def _e2e(max_items: int = 128) -> TextDataModule:
    dm = TextDataModule(str(require_shared("text", "e2e", "src1_valid.txt")), format="e2e", vocab_size=400,
                        seq_len=32, max_items=max_items, batch_size=32, judge_steps=2)
    dm.setup()
    return dm


def test_rounding_recovers_every_training_word_from_its_clean_embedding():
    """After a short run of L_e2e-simple, argmax softmax(EMB(w) · EMBᵀ) = w for every word of the training rows
    (Li et al. 2022 §4.1: the rounding term makes the embeddings decodable); the clamping map is exact too."""
    dm = _e2e()
    module = DiffusionLM(vocab_size=dm.vocab_size, seq_len=dm.seq_len, dim=32, depth=1, heads=2, dropout=0.0,
                         ema_decay=0)
    module.attach_datamodule(dm)
    e = module.embedder
    rows = dm.train_set.fields
    words = rows["x"][rows["presence"]].unique()
    with torch.no_grad():
        before = (e.logits(e.embed(words)).argmax(-1) == words).float().mean()
    history = train_steps(module, dm, 150)
    with torch.no_grad():
        after = e.logits(e.embed(words)).argmax(-1)
        assert torch.equal(e.nearest(e.embed(words)[None])[0], words)
    assert torch.equal(after, words), f"{int((after != words).sum())} of {len(words)} words round wrongly"
    assert before < 1.0  # random N(0, 1) vectors do not round exactly: the loss did the work
    assert history[-1]["rounding"] < 0.5 * history[0]["rounding"]


def test_clamping_puts_every_prediction_on_a_word_vector():
    dm = _e2e(64)
    module = DiffusionLM(vocab_size=dm.vocab_size, seq_len=dm.seq_len, dim=32, depth=1, heads=2, ema_decay=0)
    module.attach_datamodule(dm)
    table = module.embedder.word_embedding.weight
    seen = []
    inputs = dm.sample_inputs(3, torch.Generator().manual_seed(0))
    out = module.sample(3, steps=5, callback=lambda info: seen.append(info["denoised"]), **inputs)
    assert out["x"].shape == (3, dm.seq_len) and out["x"].dtype == torch.long
    assert torch.equal(out["presence"], inputs["presence"])

    def on_table(x0):  # is every vector exactly one of the vocabulary's?
        return bool((x0.reshape(-1, 1, table.shape[1]) == table).all(-1).any(-1).all())

    assert len(seen) == 5 and all(on_table(x0) for x0 in seen)
    free = []
    module.sample(3, steps=5, clamp=False, callback=lambda info: free.append(info["denoised"]), **inputs)
    assert not on_table(free[-1])


def test_diffuseq_reads_the_clean_source_and_returns_it_unchanged():
    """Partial noising (Gong et al. 2023 §3): the denoiser's output ignores the noisy copy of the source, and
    sampled rows keep the source ids exactly; MBR picks one text per source."""
    from polydiff.plugins.text.evaluation import mbr_generate

    dm = TextDataModule(str(require_shared("text", "diffuseq_cc", "train.jsonl")),
                        val_path=str(require_shared("text", "diffuseq_cc", "valid.jsonl")), tokenizer="word",
                        vocab_size=1024, seq_len=96, source=True, judge_steps=2)
    dm.setup()
    module = DiffusionLM(vocab_size=dm.vocab_size, seq_len=96, dim=32, depth=1, heads=2, dropout=0.0, ema_decay=0)
    module.attach_datamodule(dm)
    e = module.embedder.eval()
    batch = next(iter(dm.val_dataloader()))
    known = batch["known"].unsqueeze(-1)
    clean = e.embed(batch["x"])
    cond = {"known": known, "observed": torch.where(known, clean, torch.zeros_like(clean))}
    t = torch.full((clean.shape[0],), 0.5)
    noisy_a, noisy_b = clean + torch.randn_like(clean), clean + 5 * torch.randn_like(clean)
    same_target = torch.where(known, noisy_a, noisy_b)  # differ only on the source positions
    with torch.no_grad():
        torch.testing.assert_close(e(noisy_b, t, cond), e(same_target, t, cond))
    inputs = dm.sample_inputs(4)
    out = module.sample(4, generator=torch.Generator().manual_seed(0), steps=6, **inputs)
    kn = inputs["known"]
    assert kn.any() and torch.equal(out["x"][kn], inputs["x_known"][kn])
    texts, refs = mbr_generate(module, dm, num_sources=2, candidates=3, steps=4)
    assert len(texts) == 2 and len(refs) == 2


def test_diffusion_lm_task_fits_samples_text_and_evaluates(tmp_path):
    """`polydiff fit/sample/evaluate/control` on text/diffusion_lm_e2e (3 steps of a 1-layer model); the
    checkpoint rebuilds the module, whose samples are the same ids when drawn again with the same seed."""
    path = require_shared("text", "e2e", "src1_valid.txt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    fit = [sys.executable, "-m", "polydiff.cli", "fit", "--config", "text/diffusion_lm_e2e", "--trainer.max_steps",
           "3", "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(run),
           "--trainer.enable_progress_bar", "false", "--model.init_args.final_num_samples", "0",
           "--model.init_args.depth", "1", "--model.init_args.dim", "32", "--data.init_args.path", str(path),
           "--data.init_args.max_items", "256", "--data.init_args.judge_steps", "5",
           "--trainer.check_val_every_n_epoch", "1000"]
    out = subprocess.run(fit, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = next(run.rglob("last.ckpt"))
    samples = tmp_path / "samples"
    cmd = [sys.executable, "-m", "polydiff.cli", "sample", "--ckpt", str(ckpt), "--num", "4", "--steps", "10"]
    out = subprocess.run(cmd + ["--out", str(samples)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = (samples / "samples.txt").read_text().splitlines()
    assert len(lines) == 4 and any(line.strip() for line in lines)
    again = tmp_path / "again"
    subprocess.run(cmd + ["--out", str(again)], env=env, capture_output=True, text=True, timeout=600, check=True)
    assert (again / "samples.txt").read_text().splitlines() == lines
    module = DiffusionLM.from_checkpoint(ckpt)
    assert type(module) is DiffusionLM and module.sample_shape == (64, 16)
    metrics_file = tmp_path / "m.json"
    out = subprocess.run([sys.executable, "-m", "polydiff.cli", "evaluate", "--ckpt", str(ckpt), "--num", "6",
                          "--steps", "10", "--out", str(metrics_file)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    m = json.loads(metrics_file.read_text())["metrics"]
    for key in ("text/distinct_2", "text/entropy", "text/gen_ppl_ar", "text/ar_val_ppl", "text/entropy_real"):
        assert math.isfinite(m[key]), key
    assert m["text/num_samples"] == 6
    control = tmp_path / "control"
    targets = require_shared("text", "e2e", "control_target_attribute.json")
    out = subprocess.run([sys.executable, "-m", "polydiff.cli", "control", "--ckpt", str(ckpt), "--targets",
                          str(targets), "--num-targets", "2", "--per-target", "2", "--steps", "5",
                          "--classifier-steps", "5", "--out", str(control)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((control / "metrics.json").read_text())["summary"]
    assert summary["targets"] == 2 and 0 <= summary["guided_success"] <= 1
    assert len((control / "texts_guided.txt").read_text().splitlines()) == 4
    assert any(run.rglob("last.ckpt.control_classifier.pt"))  # cached beside the checkpoint
