"""Text benchmark on the CPU: MDLM (Sahoo et al. 2024) and Diffusion-LM (Li et al. 2022) beside a same-size
autoregressive transformer on E2E; E2E control of Diffusion-LM; MDLM and DiffuSeq (Gong et al. 2023) on QQP.

Trains the ``text/mdlm_e2e`` recipe (absorbing process, SUBS, Rao-Blackwellised NELBO with antithetic times,
TokenTransformer without time input; word vocabulary, rows of 64 ids) for --minutes of wall time (or --steps),
then the autoregressive judge of the plugin (:class:`polydiff.plugins.text.ar.CausalTransformer`, same width,
depth and heads) for the same number of steps on the same rows, and, with --dlm-minutes, the
``text/diffusion_lm_e2e`` recipe (16-d learned word vectors, sqrt schedule, x0 + rounding loss, clamped ancestral
sampling) on the same rows, and prints one table:

* likelihood: the AR model's validation perplexity and exp of MDLM's bound per token on the same validation rows
  (issue 20's target: MDLM within 1.5× of AR at equal parameters and steps);
* for MDLM samples (ancestral with caching, --sample-steps, float64 draws), AR samples (float64 ancestral),
  Diffusion-LM samples and as many real validation texts: generative perplexity under the AR model and under
  SmolLM2-135M (the offline general judge, polydiff.plugins.text.judge; --lm-judge), per-sample unigram entropy,
  distinct-2 and self-BLEU — all by the same code (polydiff.plugins.text.evaluation / .metrics).

--control-targets N adds Li et al.'s semantic-content control (polydiff.plugins.text.control): N targets of
``control_target_attribute.json``, --per-target samples each, success and fluency guided and unguided.
--qqp-minutes / --diffuseq-minutes train ``text/mdlm_qqp`` / ``text/diffuseq_qqp`` on 95 % of the shared QQP
validation pairs and report BLEU and ROUGE-L of paraphrases of the held-out questions, with one sample and with
MBR over ``--candidates`` samples (Gong et al. §4.4).

    nice -n 10 .venv/bin/python benchmarks/text.py --minutes 15 --dlm-minutes 15 --num 200 --control-targets 20 \
        --qqp-minutes 8 --diffuseq-minutes 8                                                    # the reported run
    nice -n 10 .venv/bin/python benchmarks/text.py --steps 20 --num 8 --sample-steps 50 --max-items 512 \
        --dlm-steps 20 --dlm-sample-steps 20 --control-targets 2 --per-target 2 --control-classifier-steps 5 \
        --qqp-steps 5 --diffuseq-steps 5 --qqp-sources 2 --candidates 2 --qqp-sample-steps 4     # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from pathlib import Path

import lightning as L
import torch

from polydiff.backbones import TokenTransformer
from polydiff.discrete import DiscreteProcess, MDLMLoss
from polydiff.plugins.text import metrics as M
from polydiff.plugins.text.ar import ARConfig, perplexity, sample_ar, train_ar
from polydiff.plugins.text.data import TextDataModule, decode_rows
from polydiff.plugins.text.diffusion_lm import DiffusionLM
from polydiff.plugins.text.evaluation import masked_nelbo_per_token
from polydiff.plugins.text.judge import judge_from_setting
from polydiff.training import DiffusionModule

SHARED = Path(os.environ.get("POLYDIFF_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CMD = "nice -n 10 .venv/bin/python benchmarks/text.py"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def text_row(name: str, texts: list[str], gen_ppl: float, lm=None) -> dict:
    """One table row; ``lm`` is the general judge (:class:`~polydiff.plugins.text.judge.GGUFJudge`) or None."""
    scores = lm.score(texts) if lm is not None else None
    lm_ppl = scores.perplexity if scores is not None and sum(scores.num_tokens) else float("nan")
    return {"rows": name, "gen_ppl_ar": gen_ppl, "gen_ppl_lm": lm_ppl, "entropy": M.unigram_entropy(texts),
            "distinct_2": M.distinct_n(texts, 2), "self_bleu": M.self_bleu(texts)}


def fit(module, dm, minutes: float, steps: int | None, seed: int) -> tuple[int, float]:
    """Train ``module`` on ``dm`` for ``steps`` or ``minutes`` of wall time; (steps done, minutes taken)."""
    L.seed_everything(seed, verbose=False)
    limits = {"max_steps": steps} if steps else {"max_time": {"minutes": minutes}, "max_steps": -1}
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, **limits)
    t0 = time.time()
    trainer.fit(module, datamodule=dm)
    module.eval()
    module.attach_datamodule(dm)
    return int(trainer.global_step), (time.time() - t0) / 60


def dlm_row(dlm, dm, ar, lm, args) -> dict:
    """The Diffusion-LM row: ``--num`` samples (ancestral, clamped), scored like the others."""
    t0 = time.time()
    out = dlm.generate(args.num, seed=args.seed)
    log(f"Diffusion-LM: {args.num} samples in {time.time() - t0:.0f} s")
    texts = dm.decode_rows(out["x"], out["presence"])
    row = text_row("Diffusion-LM samples", texts, perplexity(ar, out["x"], out["presence"], dm.tokenizer.bos_id), lm)
    return {**row, "examples": texts[:3]}


def control(dlm, dm, ar, args) -> dict:
    """Li et al.'s E2E semantic-content control: success and AR-judge fluency, guided and unguided."""
    from polydiff.plugins.text.control import (AttributeLabels, evaluate_control, load_targets, train_classifier,
                                               usable_targets)

    t0 = time.time()
    clf = train_classifier(dlm, dm, steps=args.control_classifier_steps, seed=args.seed)
    log(f"attribute classifier: {args.control_classifier_steps} steps in {(time.time() - t0) / 60:.1f} min")
    targets = load_targets(SHARED / "text" / "e2e" / "control_target_attribute.json")
    chosen, _ = usable_targets(targets, AttributeLabels.from_records(dm.train_records), args.control_targets)
    t0 = time.time()
    result = evaluate_control(dlm, clf, dm, chosen, per_target=args.per_target, seed=args.seed, judge=ar)
    log(f"control: {len(chosen)} targets × {args.per_target} samples in {(time.time() - t0) / 60:.1f} min")
    s = result["summary"]
    print()
    print(f"E2E semantic-content control, {len(chosen)} targets × {args.per_target} samples:")
    print("| sampling | success | gen. perplexity (AR judge) |")
    print("|---|---|---|")
    for name in ("guided", "unguided"):
        print(f"| {name} | {s[f'{name}_success']:.3f} | {s[f'{name}_ppl_ar']:.2f} |")
    return s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0, help="MDLM training wall time")
    p.add_argument("--steps", type=int, default=None, help="MDLM training steps instead of --minutes")
    p.add_argument("--num", type=int, default=200, help="samples per model")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--sample-steps", type=int, default=1000, help="MDLM ancestral steps (with caching)")
    p.add_argument("--max-items", type=int, default=None, help="use only this many training texts")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the table as JSON here")
    p.add_argument("--lm-judge", default="smollm2",
                   help="general judge: smollm2, a .gguf file, or none (polydiff.plugins.text.judge)")
    p.add_argument("--dlm-minutes", type=float, default=0.0, help="Diffusion-LM training wall time (0: skip)")
    p.add_argument("--dlm-steps", type=int, default=None, help="Diffusion-LM training steps instead of --dlm-minutes")
    p.add_argument("--dlm-lr", type=float, default=1e-3)
    p.add_argument("--dlm-sample-steps", type=int, default=200, help="Diffusion-LM ancestral steps (clamped)")
    p.add_argument("--control-targets", type=int, default=0, help="E2E control targets for Diffusion-LM (0: skip)")
    p.add_argument("--per-target", type=int, default=16, help="controlled samples per target")
    p.add_argument("--control-classifier-steps", type=int, default=2000)
    p.add_argument("--qqp-minutes", type=float, default=0.0, help="QQP paraphrase training wall time (0: skip)")
    p.add_argument("--qqp-steps", type=int, default=None, help="QQP training steps instead of --qqp-minutes")
    p.add_argument("--qqp-sources", type=int, default=102, help="held-out questions to paraphrase")
    p.add_argument("--qqp-sample-steps", type=int, default=100)
    p.add_argument("--candidates", type=int, default=5, help="samples per question for MBR")
    p.add_argument("--diffuseq-minutes", type=float, default=0.0, help="DiffuSeq QQP training wall time (0: skip)")
    p.add_argument("--diffuseq-steps", type=int, default=None)
    p.add_argument("--qqp-vocab", default="bert", help="bert (WordPiece, 30,522 ids, as DiffuSeq) or N: a word "
                   "vocabulary of the N − 4 most frequent QQP words (a CPU-sized softmax)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)

    dm = TextDataModule(str(SHARED / "text" / "e2e" / "src1_valid.txt"), format="e2e", vocab_size=1200, seq_len=64,
                        batch_size=args.batch, max_items=args.max_items, seed=args.seed)
    dm.setup("fit")
    K = dm.vocab_size
    log(f"E2E: {len(dm.train_set)} training rows, {len(dm.val_set)} validation rows, K = {K}")

    proc = DiscreteProcess(K, "absorbing", "mutual_info", num_steps=None)
    net = TokenTransformer(K, dm.seq_len, dim=args.dim, depth=args.depth, heads=args.heads, time_conditioning=False)
    module = DiffusionModule(net, proc, loss=MDLMLoss(antithetic=True), ema_decay=0.999, lr=args.lr,
                             warmup_steps=200, sampler="mdlm", sample_steps=args.sample_steps, val_num_samples=0,
                             final_num_samples=0, seed=args.seed)
    steps, mdlm_minutes = fit(module, dm, args.minutes, args.steps, args.seed)
    log(f"MDLM: {steps} steps in {mdlm_minutes:.1f} min")

    t0 = time.time()
    ar = train_ar(dm.train_set.fields["x"], dm.train_set.fields["presence"], dm.tokenizer.bos_id, K,
                  config=ARConfig(dim=args.dim, depth=args.depth, heads=args.heads, steps=steps,
                                  batch_size=args.batch, lr=args.lr, seed=args.seed))
    log(f"AR: {steps} steps in {(time.time() - t0) / 60:.1f} min")
    params = {"mdlm": sum(p.numel() for p in net.parameters()), "ar": sum(p.numel() for p in ar.parameters())}

    val = dm.val_set.fields
    bos, eos = dm.tokenizer.bos_id, dm.tokenizer.eos_id
    ar_ppl = perplexity(ar, val["x"], val["presence"], bos)
    mdlm_ppl = math.exp(masked_nelbo_per_token(module, dm, repeats=8))
    log(f"validation: AR perplexity {ar_ppl:.2f}, MDLM bound perplexity {mdlm_ppl:.2f} (ratio {mdlm_ppl / ar_ppl:.3f})")

    dlm = None
    if args.dlm_minutes > 0 or args.dlm_steps:
        dlm = DiffusionLM(vocab_size=K, seq_len=dm.seq_len, embed_dim=16, dim=args.dim, depth=args.depth,
                          heads=args.heads, lr=args.dlm_lr, warmup_steps=200, ema_decay=0.999,
                          sample_steps=args.dlm_sample_steps, final_num_samples=0, seed=args.seed)
        dlm_steps, dlm_minutes = fit(dlm, dm, args.dlm_minutes, args.dlm_steps, args.seed)
        log(f"Diffusion-LM: {dlm_steps} steps in {dlm_minutes:.1f} min")
        params["diffusion_lm"] = sum(p.numel() for p in dlm.denoiser.parameters())

    t0 = time.time()
    out = module.generate(args.num, seed=args.seed)
    log(f"MDLM: {args.num} samples in {time.time() - t0:.0f} s")
    mdlm_texts = dm.decode_rows(out["x"], out.get("presence"))
    ax, ap = sample_ar(ar, args.num, bos, eos, torch.Generator().manual_seed(args.seed))
    ar_texts = decode_rows(dm.tokenizer, ax, ap)
    n_real = min(args.num, val["x"].shape[0])
    real_texts = dm.reference_texts("val")[:n_real]
    lm = judge_from_setting(None if args.lm_judge == "none" else args.lm_judge)
    rows = [
        text_row("MDLM samples", mdlm_texts, perplexity(ar, out["x"].clamp_min(0), out["presence"], bos), lm),
        text_row("AR samples", ar_texts, perplexity(ar, ax, ap, bos), lm),
        *([] if dlm is None else [dlm_row(dlm, dm, ar, lm, args)]),
        text_row("real (validation)", real_texts, perplexity(ar, val["x"][:n_real], val["presence"][:n_real], bos),
                 lm),
    ]
    print()
    print(f"E2E, {steps} steps each (MDLM {mdlm_minutes:.1f} min), parameters MDLM {params['mdlm']:,} / "
          f"AR {params['ar']:,}; validation perplexity AR {ar_ppl:.2f}, MDLM bound {mdlm_ppl:.2f} "
          f"(ratio {mdlm_ppl / ar_ppl:.3f})")
    print()
    lm_name = "SmolLM2-135M" if args.lm_judge == "smollm2" else Path(args.lm_judge).name
    print(f"| rows | gen. perplexity (AR judge) | gen. perplexity ({lm_name}) | unigram entropy (nats) | distinct-2 "
          f"| self-BLEU |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rows']} | {r['gen_ppl_ar']:.2f} | {r['gen_ppl_lm']:.2f} | {r['entropy']:.3f} | "
              f"{r['distinct_2']:.3f} | {r['self_bleu']:.1f} |")
    print()
    print("MDLM samples:", *mdlm_texts[:3], sep="\n  ")
    print("AR samples:", *ar_texts[:3], sep="\n  ")
    if dlm is not None:
        print("Diffusion-LM samples:", *rows[2]["examples"], sep="\n  ")
    print(f"\ncommand: {CMD} {' '.join(argv if argv is not None else os.sys.argv[1:])}")
    record = {"steps": steps, "params": params, "ar_val_ppl": ar_ppl, "mdlm_bound_ppl": mdlm_ppl, "rows": rows}
    if dlm is not None:
        record["diffusion_lm_steps"] = dlm_steps
        if args.control_targets > 0:
            record["control"] = control(dlm, dm, ar, args)
    if args.qqp_minutes > 0 or args.qqp_steps or args.diffuseq_minutes > 0 or args.diffuseq_steps:
        record["qqp"] = qqp(args)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2))
    return 0


def qqp(args) -> dict:
    """Paraphrases of held-out QQP questions by MDLM (source kept as known tokens) and DiffuSeq (source read clean
    by the denoiser): BLEU/ROUGE-L with one sample and with MBR."""
    from polydiff.plugins.text.evaluation import mbr_generate

    bert = args.qqp_vocab == "bert"
    dm = TextDataModule(str(SHARED / "text" / "qqp" / "valid.jsonl"), format="jsonl", seq_len=64, source=True,
                        vocab_size=30522 if bert else int(args.qqp_vocab),
                        tokenizer=str(SHARED / "text" / "tokenizer_bert_uncased") if bert else "word",
                        batch_size=args.batch, seed=args.seed)
    dm.setup("fit")
    K = dm.vocab_size
    models = {}
    if args.qqp_minutes > 0 or args.qqp_steps:
        net = TokenTransformer(K, dm.seq_len, dim=args.dim, depth=args.depth, heads=args.heads,
                               time_conditioning=False)
        models["MDLM"] = (DiffusionModule(net, DiscreteProcess(K, "absorbing", "mutual_info", num_steps=None),
                                          loss=MDLMLoss(antithetic=True), ema_decay=0.999, lr=args.lr,
                                          warmup_steps=200, sampler="mdlm", sample_steps=args.qqp_sample_steps,
                                          val_num_samples=0, final_num_samples=0, seed=args.seed),
                          args.qqp_minutes, args.qqp_steps)
    if args.diffuseq_minutes > 0 or args.diffuseq_steps:
        models["DiffuSeq"] = (DiffusionLM(vocab_size=K, seq_len=dm.seq_len, embed_dim=128, dim=args.dim,
                                          depth=args.depth, heads=args.heads, lr=args.dlm_lr, warmup_steps=200,
                                          ema_decay=0.999, sample_steps=args.qqp_sample_steps, final_num_samples=0,
                                          seed=args.seed),
                              args.diffuseq_minutes, args.diffuseq_steps)
    n = min(args.qqp_sources, len(dm.val_records))
    results = {}
    for name, (module, minutes, steps) in models.items():
        done, took = fit(module, dm, minutes, steps, args.seed)
        log(f"QQP {name}: {done} steps in {took:.1f} min")
        t0 = time.time()
        single, refs = mbr_generate(module, dm, n, candidates=1, seed=args.seed)
        mbr, _ = mbr_generate(module, dm, n, candidates=args.candidates, seed=args.seed)
        log(f"QQP {name}: {n} × (1 + {args.candidates}) samples in {(time.time() - t0) / 60:.1f} min")
        results[name] = {"steps": done, "bleu_single": M.bleu(single, refs), "rouge_l_single": M.rouge_l(single, refs),
                         "bleu_mbr": M.bleu(mbr, refs), "rouge_l_mbr": M.rouge_l(mbr, refs), "examples": mbr[:3]}
    print()
    print(f"QQP paraphrases of {n} held-out questions ({len(dm.train_set)} training pairs, "
          f"{'WordPiece' if bert else 'word'} vocabulary of {dm.vocab_size}):")
    print(f"| model | steps | BLEU, one sample | ROUGE-L, one sample | BLEU, MBR over {args.candidates} | "
          f"ROUGE-L, MBR |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['steps']} | {r['bleu_single']:.2f} | {r['rouge_l_single']:.3f} | {r['bleu_mbr']:.2f} | "
              f"{r['rouge_l_mbr']:.3f} |")
    for name, r in results.items():
        print(f"{name}:")
        for src, hyp in zip(dm.val_records[:3], r["examples"]):
            print(f"  {src.source}  ->  {hyp}")
    return {"sources": n, "candidates": args.candidates, **results}


if __name__ == "__main__":
    raise SystemExit(main())
