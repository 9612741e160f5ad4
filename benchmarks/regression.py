"""Does a change slow the single-tensor path? Sampler per-step overhead and digits-quickstart training steps,
measured for two installed checkouts of polydiff in one run (interleaved, so a busy machine slows both alike).

    python benchmarks/regression.py compare --base /path/to/old/.venv/bin/python \
        --new /path/to/new/.venv/bin/python [--repeats 5]

``measure`` (run by ``compare`` with each interpreter) prints one JSON line for the polydiff that the
interpreter imports: µs per sampler step with a zero-cost model ((64, 2) batch, 500 steps) and ms per
training step of the digits quickstart's model (U-Net 0.7M, batch 64, EMA, condition dropout) under a
Lightning Trainer (60 steps after 5 warm-up steps). ``compare`` prints a markdown table of the medians and the
new/old ratios, with the CPU flags that matter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

SAMPLERS = ("ddim", "ddpm", "dpmpp_2m", "heun")


def sampler_overhead(name: str, steps: int = 500) -> float:
    import torch

    import polydiff
    from polydiff.samplers import sample

    class Zero(torch.nn.Module):
        def forward(self, x, t, cond=None):
            return torch.zeros_like(x)

    model = polydiff.Denoiser(Zero(), polydiff.VP("linear"), parameterization="eps")
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    sample(model, x_T.clone(), sampler=name, steps=steps, generator=torch.Generator().manual_seed(1))  # warm-up
    t0 = time.perf_counter()
    sample(model, x_T.clone(), sampler=name, steps=steps, generator=torch.Generator().manual_seed(1))
    return (time.perf_counter() - t0) / steps * 1e6


def digits_step(steps: int = 60) -> float:
    import lightning as L

    from polydiff.plugins.image.data import DigitsDataModule
    from polydiff.training import DiffusionModule

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 5:
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            self.t1 = time.perf_counter()

    module = DiffusionModule(
        backbone={"class_path": "UNet", "init_args": {"dims": 2, "in_channels": 1, "base_channels": 32,
                                                      "channel_mults": [1, 2], "num_res_blocks": 1,
                                                      "num_classes": 10}},
        process={"class_path": "VP", "init_args": {"schedule": "cosine"}}, parameterization="v", num_classes=10,
        cond_drop_prob=0.1, ema_decay=0.999, lr=1e-3, warmup_steps=100, val_num_samples=0, final_num_samples=0)
    clock = Clock()
    trainer = L.Trainer(max_steps=steps + 5, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[clock])
    trainer.fit(module, DigitsDataModule(batch_size=64))
    return (clock.t1 - clock.t0) / steps * 1e3


def measure() -> None:
    import logging

    import torch

    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    out = {f"{s} µs/step": sampler_overhead(s) for s in SAMPLERS}
    out["digits train ms/step"] = digits_step()
    print(json.dumps(out))


def cpu_flags() -> str:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}; flags: {', '.join(wanted) or 'none of avx2/avx512/amx'}"


def compare(base: str, new: str, repeats: int) -> None:
    runs: dict[str, list[dict]] = {"base": [], "new": []}
    for _ in range(repeats):
        for key, python in (("base", base), ("new", new)):
            res = subprocess.run([python, __file__, "measure"], capture_output=True, text=True, check=True)
            runs[key].append(json.loads(res.stdout.strip().splitlines()[-1]))
    print("| measure | before, median | after, median | after / before |")
    print("|---|---|---|---|")
    for name in runs["base"][0]:
        b = statistics.median(r[name] for r in runs["base"])
        n = statistics.median(r[name] for r in runs["new"])
        print(f"| {name} | {b:.1f} | {n:.1f} | {n / b:.3f} |")
    print(f"\n{cpu_flags()}; 1 thread; {repeats} interleaved repeats")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("measure")
    c = sub.add_parser("compare")
    c.add_argument("--base", required=True, help="python of the checkout before the change")
    c.add_argument("--new", required=True, help="python of the checkout after the change")
    c.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.cmd == "measure":
        measure()
    else:
        compare(args.base, args.new, args.repeats)


if __name__ == "__main__":
    main()
