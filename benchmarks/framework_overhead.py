"""Per-step cost of the framework: DiffusionModule under a Lightning Trainer (EMA, generator, logging,
resumable loader) against a bare PyTorch loop doing the same loss + AdamW step on the same data.

    python benchmarks/framework_overhead.py [--steps 200] [--repeats 3]

Prints a markdown table (ms per training step, median of the repeats; both variants interleaved so that a
busy machine slows both alike) and the command that made it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import lightning as L
import torch

from polydiff.losses import DiffusionLoss
from polydiff.testing_data import MixtureDataModule
from polydiff.training import DiffusionModule

CASES = {
    "MLP 2-D (hidden 128, batch 256)": dict(
        backbone={"class_path": "MLP", "init_args": {"dim": 2, "hidden": 128, "depth": 3}}, shape=(2,), batch=256),
    "UNet 1×8×8 (32/64 ch, batch 128)": dict(
        backbone={"class_path": "UNet", "init_args": {"dims": 2, "in_channels": 1, "base_channels": 32,
                                                      "channel_mults": [1, 2], "num_res_blocks": 1}},
        shape=(1, 8, 8), batch=128),
}


class _Shaped(MixtureDataModule):
    """Mixture points reshaped to the case's item shape (values are irrelevant for timing)."""

    def __init__(self, shape, **kw):
        super().__init__(**kw)
        self.shape = shape

    def setup(self, stage=None):
        super().setup(stage)
        n = 1
        for s in self.shape:
            n *= s
        for ds in (self.train_set, self.val_set):
            ds.x = ds.x.repeat(1, (n + 1) // 2)[:, :n].reshape(-1, *self.shape).contiguous()


def raw_loop(case, steps):
    torch.manual_seed(0)
    module = DiffusionModule(backbone=case["backbone"], ema_decay=0.0, final_num_samples=0, val_num_samples=0)
    dm = _Shaped(case["shape"], n_train=case["batch"] * 8, n_val=8, batch_size=case["batch"])
    dm.setup("fit")
    loader = torch.utils.data.DataLoader(dm.train_set, batch_size=case["batch"], shuffle=True)
    opt = torch.optim.AdamW(module.denoiser.parameters(), lr=2e-4)
    loss_fn, g = DiffusionLoss("eps"), torch.Generator().manual_seed(0)
    done, t0 = 0, None
    while done < steps + 5:
        for batch in loader:
            if done == 5:
                t0 = time.perf_counter()
            loss = loss_fn(module.denoiser, batch, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps + 5:
                break
    return (time.perf_counter() - t0) / steps * 1e3


class _Clock(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 5:
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.t1 = time.perf_counter()


def framework(case, steps):
    torch.manual_seed(0)
    module = DiffusionModule(backbone=case["backbone"], ema_decay=0.999, final_num_samples=0, val_num_samples=0)
    dm = _Shaped(case["shape"], n_train=case["batch"] * 8, n_val=8, batch_size=case["batch"])
    clock = _Clock()
    trainer = L.Trainer(max_steps=steps + 5, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[clock])
    trainer.fit(module, dm)
    return (clock.t1 - clock.t0) / steps * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows = []
    for name, case in CASES.items():
        raw, fw = [], []
        for _ in range(args.repeats):
            raw.append(raw_loop(case, args.steps))
            fw.append(framework(case, args.steps))
        r, f = statistics.median(raw), statistics.median(fw)
        rows.append(f"| {name} | {r:.2f} | {f:.2f} | {f - r:+.2f} ({100 * (f - r) / r:+.0f} %) |")
    print("| model | bare PyTorch loop, ms/step | DiffusionModule + Trainer (EMA), ms/step | difference |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n`{' '.join(['python', 'benchmarks/framework_overhead.py', *sys.argv[1:]])}` "
          f"(CPU, {args.threads} thread(s), median of {args.repeats})")


if __name__ == "__main__":
    main()
