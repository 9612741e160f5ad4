"""Text benchmark: MDLM (Sahoo et al. 2024) beside a same-size autoregressive transformer on E2E, on the CPU.

Trains the ``text/mdlm_e2e`` recipe (absorbing process, SUBS, Rao-Blackwellised NELBO with antithetic times,
TokenTransformer without time input; word vocabulary, rows of 64 ids) for --minutes of wall time (or --steps),
then the autoregressive judge of the plugin (:class:`polydiff.plugins.text.ar.CausalTransformer`, same width,
depth and heads) for the same number of steps on the same rows, and prints one table:

* likelihood: the AR model's validation perplexity and exp of MDLM's bound per token on the same validation rows
  (issue 20's target: MDLM within 1.5× of AR at equal parameters and steps);
* for MDLM samples (ancestral with caching, --sample-steps, float64 draws), AR samples (float64 ancestral) and
  as many real validation texts: generative perplexity under the AR model and under SmolLM2-135M (the offline
  general judge, polydiff.plugins.text.judge; --lm-judge), per-sample unigram entropy, distinct-2 and
  self-BLEU — all by the same code (polydiff.plugins.text.evaluation / .metrics).

With ``--qqp-minutes M`` it also trains the ``text/mdlm_qqp`` recipe (source question kept clean, BERT WordPiece)
on 95 % of the shared QQP validation pairs for M minutes and reports BLEU and ROUGE-L of paraphrases of the held-out
questions, with one sample and with MBR over ``--candidates`` samples (DiffuSeq's decoding, Gong et al. 2022 §4.4).

    nice -n 10 .venv/bin/python benchmarks/text.py --minutes 60 --num 200 --qqp-minutes 30   # the reported run
    nice -n 10 .venv/bin/python benchmarks/text.py --steps 20 --num 8 --sample-steps 50 --max-items 512 \
        --qqp-steps 5 --qqp-sources 2 --candidates 2 --qqp-sample-steps 4                     # smoke test
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
    p.add_argument("--qqp-minutes", type=float, default=0.0, help="QQP paraphrase training wall time (0: skip)")
    p.add_argument("--qqp-steps", type=int, default=None, help="QQP training steps instead of --qqp-minutes")
    p.add_argument("--qqp-sources", type=int, default=102, help="held-out questions to paraphrase")
    p.add_argument("--qqp-sample-steps", type=int, default=100)
    p.add_argument("--candidates", type=int, default=5, help="samples per question for MBR")
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
    L.seed_everything(args.seed, verbose=False)
    limits = {"max_steps": args.steps} if args.steps else {"max_time": {"minutes": args.minutes}, "max_steps": -1}
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, **limits)
    t0 = time.time()
    trainer.fit(module, datamodule=dm)
    steps = int(trainer.global_step)
    mdlm_minutes = (time.time() - t0) / 60
    log(f"MDLM: {steps} steps in {mdlm_minutes:.1f} min")
    module.eval()
    module.attach_datamodule(dm)

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
    print(f"\ncommand: {CMD} {' '.join(argv if argv is not None else os.sys.argv[1:])}")
    record = {"steps": steps, "params": params, "ar_val_ppl": ar_ppl, "mdlm_bound_ppl": mdlm_ppl, "rows": rows}
    if args.qqp_minutes > 0 or args.qqp_steps:
        record["qqp"] = qqp(args)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2))
    return 0


def qqp(args) -> dict:
    """MDLM paraphrases of held-out QQP questions: BLEU/ROUGE-L with one sample and with MBR."""
    from polydiff.plugins.text.evaluation import mbr_generate

    dm = TextDataModule(str(SHARED / "text" / "qqp" / "valid.jsonl"), format="jsonl", vocab_size=30522, seq_len=64,
                        tokenizer=str(SHARED / "text" / "tokenizer_bert_uncased"), source=True,
                        batch_size=args.batch, seed=args.seed)
    dm.setup("fit")
    K = dm.vocab_size
    net = TokenTransformer(K, dm.seq_len, dim=args.dim, depth=args.depth, heads=args.heads, time_conditioning=False)
    module = DiffusionModule(net, DiscreteProcess(K, "absorbing", "mutual_info", num_steps=None),
                             loss=MDLMLoss(antithetic=True), ema_decay=0.999, lr=args.lr, warmup_steps=200,
                             sampler="mdlm", sample_steps=args.qqp_sample_steps, val_num_samples=0,
                             final_num_samples=0, seed=args.seed)
    limits = ({"max_steps": args.qqp_steps} if args.qqp_steps
              else {"max_time": {"minutes": args.qqp_minutes}, "max_steps": -1})
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, **limits)
    trainer.fit(module, datamodule=dm)
    module.eval()
    module.attach_datamodule(dm)
    n = min(args.qqp_sources, len(dm.val_records))
    single, refs = mbr_generate(module, dm, n, candidates=1, seed=args.seed)
    mbr, _ = mbr_generate(module, dm, n, candidates=args.candidates, seed=args.seed)
    result = {"steps": int(trainer.global_step), "sources": n, "candidates": args.candidates,
              "bleu_single": M.bleu(single, refs), "rouge_l_single": M.rouge_l(single, refs),
              "bleu_mbr": M.bleu(mbr, refs), "rouge_l_mbr": M.rouge_l(mbr, refs)}
    print()
    print(f"QQP paraphrases of {n} held-out questions after {result['steps']} steps:")
    print("| decoding | BLEU | ROUGE-L |")
    print("|---|---|---|")
    print(f"| one sample | {result['bleu_single']:.2f} | {result['rouge_l_single']:.3f} |")
    print(f"| MBR over {args.candidates} | {result['bleu_mbr']:.2f} | {result['rouge_l_mbr']:.3f} |")
    for src, hyp in zip(dm.val_records[:3], mbr[:3]):
        print(f"  {src.source}  ->  {hyp}")
    return result


if __name__ == "__main__":
    raise SystemExit(main())
