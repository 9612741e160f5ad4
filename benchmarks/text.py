"""Text benchmark: MDLM (Sahoo et al. 2024) beside a same-size autoregressive transformer on E2E, on the CPU.

Trains the ``text/mdlm_e2e`` recipe (absorbing process, SUBS, Rao-Blackwellised NELBO with antithetic times,
TokenTransformer without time input; word vocabulary, rows of 64 ids) for --minutes of wall time (or --steps),
then the autoregressive judge of the plugin (:class:`polydiff.plugins.text.ar.CausalTransformer`, same width,
depth and heads) for the same number of steps on the same rows, and prints one table:

* likelihood: the AR model's validation perplexity and exp of MDLM's bound per token on the same validation rows
  (issue 20's target: MDLM within 1.5× of AR at equal parameters and steps);
* for MDLM samples (ancestral with caching, --sample-steps, float64 draws), AR samples (float64 ancestral) and
  as many real validation texts: generative perplexity under the AR model, per-sample unigram entropy,
  distinct-2 and self-BLEU — all by the same code (polydiff.plugins.text.evaluation / .metrics).

    nice -n 10 .venv/bin/python benchmarks/text.py --minutes 60 --num 200     # the reported run
    nice -n 10 .venv/bin/python benchmarks/text.py --steps 20 --num 8 --sample-steps 50 --max-items 512   # smoke test
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
from polydiff.training import DiffusionModule

SHARED = Path(os.environ.get("POLYDIFF_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CMD = "nice -n 10 .venv/bin/python benchmarks/text.py"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def text_row(name: str, texts: list[str], gen_ppl: float) -> dict:
    return {"rows": name, "gen_ppl_ar": gen_ppl, "entropy": M.unigram_entropy(texts),
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
    rows = [
        text_row("MDLM samples", mdlm_texts, perplexity(ar, out["x"].clamp_min(0), out["presence"], bos)),
        text_row("AR samples", ar_texts, perplexity(ar, ax, ap, bos)),
        text_row("real (validation)", real_texts, perplexity(ar, val["x"][:n_real], val["presence"][:n_real], bos)),
    ]
    print()
    print(f"E2E, {steps} steps each (MDLM {mdlm_minutes:.1f} min), parameters MDLM {params['mdlm']:,} / "
          f"AR {params['ar']:,}; validation perplexity AR {ar_ppl:.2f}, MDLM bound {mdlm_ppl:.2f} "
          f"(ratio {mdlm_ppl / ar_ppl:.3f})")
    print()
    print("| rows | gen. perplexity (AR judge) | unigram entropy (nats) | distinct-2 | self-BLEU |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rows']} | {r['gen_ppl_ar']:.2f} | {r['entropy']:.3f} | {r['distinct_2']:.3f} | "
              f"{r['self_bleu']:.1f} |")
    print()
    print("MDLM samples:", *mdlm_texts[:3], sep="\n  ")
    print("AR samples:", *ar_texts[:3], sep="\n  ")
    print(f"\ncommand: {CMD} {' '.join(argv if argv is not None else os.sys.argv[1:])}")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": steps, "params": params, "ar_val_ppl": ar_ppl,
                                               "mdlm_bound_ppl": mdlm_ppl, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
