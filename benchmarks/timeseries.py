"""Time-series benchmark: CSDI and SSSD^S4 beside mean / LOCF / linear interpolation, the official CSDI
checkpoint through our code, and speed (Lightning overhead, batched vs one-at-a-time imputation).

Each part prints a markdown table and the command that made it; the tables go into the
"## Time series" section of docs/benchmarks.md. Parts:

  checkpoint  official CSDI checkpoint on a seeded subset of the PhysioNet 10 % test split
              (official preprocessing: statistics over all patients, as the checkpoint was trained)
  speed       training steps/s through Lightning vs a plain PyTorch loop; imputation of n samples in one
              batched pass vs one sample at a time (the official loop)
  train       train a model (csdi | sssd) on physionet | aqi36 | etth1 for a wall-clock budget through
              Lightning, save the weights, then evaluate MAE / CRPS (CRPS-sum for forecasting) on a
              seeded test subset
  evaluate    the evaluation of ``train`` again on the saved weights (model options from the checkpoint)
  toy         how fast CSDI and SSSD learn the highest-noise step on i.i.d. Gaussian series
  cli         the official checkpoint through `polydiff impute` (model.pth given directly) on the shared set-a
              fixture patients with 10 % of their observed values hidden, beside the Python path
              (load_official + impute on the same records, same noise): the two MAEs must agree

Usage (from the repository root):
  python benchmarks/timeseries.py checkpoint --patients 6 --samples 16
  python benchmarks/timeseries.py speed
  python benchmarks/timeseries.py train --model csdi --data physionet --minutes 20
  python benchmarks/timeseries.py cli --patients 32 --samples 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
_print = print


def print(*a, **k):  # noqa: A001 - tables appear as soon as they are measured
    _print(*a, **k, flush=True)

from polydiff import Denoiser  # noqa: E402
from polydiff.checkpointing import atomic_torch_save  # noqa: E402
from polydiff.datasets import aqi36, physionet2012 as physio  # noqa: E402
from polydiff.plugins.timeseries import baselines as B, csdi, metrics as M, sssd  # noqa: E402
from polydiff.plugins.timeseries.imputation import impute  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "timeseries"
OUT = Path(os.environ.get("POLYDIFF_BENCH_OUT", "/tmp/polydiff_timeseries_bench"))
PUBLISHED = {  # Tashiro et al. 2021, Tables 2-3 (MAE, CRPS); 10 % PhysioNet and AQI-36
    "physionet": (0.217, 0.238), "aqi36": (9.60, 0.108),
}


def command() -> str:
    return "python " + " ".join(sys.argv)


def physionet_test(stats: str, ratio: float = 0.1):
    rec = physio.load_records(SHARED / "physionet2012" / "set-a.tar.gz")
    d = physio.prepare_csdi(rec, ratio, seed=1, nfold=0, stats=stats)
    kl = lambda a: torch.as_tensor(np.swapaxes(a, 1, 2).copy())  # noqa: E731
    return d, kl(d.data[d.test]).float(), kl(d.gt_mask[d.test]), kl(d.eval_mask[d.test])


def aqi36_test():
    root = SHARED / "pm25_aqi36"
    g, m = aqi36.read_table(root / "pm25_ground.txt"), aqi36.read_table(root / "pm25_missing.txt")
    w = aqi36.csdi_windows(g, m, "test")
    kl = lambda a: torch.as_tensor(np.swapaxes(a, 1, 2).copy())  # noqa: E731
    known = kl(w.gt_mask) | (kl(w.observed_mask) & ~kl(w.eval_mask))
    return w, kl(w.data).float(), known, kl(w.eval_mask)


def subset(n_total: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def score(x, known, ev, samples, scale=1.0, mean=0.0):
    """Metrics in the official (B, L, K) layout: samples (B, n, K, L)."""
    tgt, s, e = x.transpose(1, 2), samples.transpose(2, 3), ev.transpose(1, 2)
    sc = scale if not torch.is_tensor(scale) else scale.reshape(-1)
    mn = mean if not torch.is_tensor(mean) else mean.reshape(-1)
    med = s.median(dim=1).values
    return {"mae": M.mae(tgt, med, e, sc), "rmse": M.rmse(tgt, med, e, sc),
            "crps": M.crps(tgt, s, e, mn, sc), "crps_sum": M.crps_sum(tgt, s, e, mn, sc)}


def baseline_rows(x, known, ev, scale=1.0):
    sc = scale if not torch.is_tensor(scale) else scale.reshape(-1, 1)
    return {name: M.mae(x, fn(x, known), ev, sc) for name, fn in B.BASELINES.items()}


# ------------------------------------------------------------------------------------------------------
def part_checkpoint(args):
    d, x, known, ev = physionet_test(stats="all")
    idx = subset(len(x), args.patients, args.seed)
    x, known, ev = x[idx], known[idx], ev[idx]
    model = csdi.load_official(SHARED / "csdi_pretrained" / "model.pth").eval()
    den = Denoiser(model, csdi.csdi_process(), "eps")
    t0 = time.perf_counter()
    samples = impute(den, x, known, args.samples, generator=torch.Generator().manual_seed(args.seed))
    wall = time.perf_counter() - t0
    r = score(x, known, ev, samples)
    base = baseline_rows(x, known, ev)
    print(f"\n### Official CSDI checkpoint through polydiff, PhysioNet 10 % (test subset of {args.patients} of "
          f"{len(d.test)} patients, seed {args.seed}, {int(ev.sum())} targets, {args.samples} samples)\n")
    print("| method | MAE | RMSE | CRPS |\n|---|---|---|---|")
    print(f"| CSDI official checkpoint (ours, {args.samples} samples) | {r['mae']:.3f} | {r['rmse']:.3f} | {r['crps']:.3f} |")
    for k, v in base.items():
        print(f"| {k} (same subset) | {v:.3f} | | |")
    print(f"| CSDI published (full test split, 100 samples) | {PUBLISHED['physionet'][0]} | | {PUBLISHED['physionet'][1]} |")
    print(f"\nimputation wall time {wall:.0f} s (1 CPU thread, shared machine). Command: `{command()}`")


# ------------------------------------------------------------------------------------------------------
def part_speed(args):
    import lightning as L

    from polydiff.losses import DiffusionLoss
    from polydiff.plugins.timeseries.data import PhysioNetDataModule
    from polydiff.training import DiffusionModule

    root = str(SHARED / "fixtures" / "physionet2012_tiny")

    def make_module():
        torch.manual_seed(0)
        return DiffusionModule(backbone=csdi.CSDIBackbone(35, channels=args.channels, layers=args.layers),
                               process=csdi.csdi_process(), parameterization="eps", ema_decay=0.0, lr=1e-3,
                               val_num_samples=0, final_num_samples=0, seed=0)

    def dm():
        d = PhysioNetDataModule(root=root, batch_size=args.batch, seed=0)
        d.setup("fit")
        return d

    def lightning_run(steps):
        module, data = make_module(), dm()
        trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            num_sanity_val_steps=0)
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=data)
        return time.perf_counter() - t0

    def plain_run(steps):
        module, data = make_module(), dm()
        opt = module.configure_optimizers()
        loss_fn, gen = DiffusionLoss("eps"), torch.Generator().manual_seed(0)
        loader = data.train_dataloader()
        done = 0
        t0 = time.perf_counter()
        while done < steps:
            for batch in loader:
                opt.zero_grad()
                loss = loss_fn(module.denoiser, batch, generator=gen)
                loss.backward()
                opt.step()
                done += 1
                if done >= steps:
                    break
        return time.perf_counter() - t0

    lightning_run(2), plain_run(2)  # warm-up
    lt, pt = [], []
    for _ in range(args.repeats):  # interleaved: the shared machine's load drifts
        lt.append(args.steps / lightning_run(args.steps))
        pt.append(args.steps / plain_run(args.steps))
    lm, pm = statistics.median(lt), statistics.median(pt)
    print(f"\n### Training speed (CSDI {args.layers} layers x {args.channels} channels, batch {args.batch}, "
          f"{args.steps} steps x {args.repeats} interleaved repeats, median)\n")
    print("| loop | steps/s |\n|---|---|")
    print(f"| polydiff fit (Lightning DiffusionModule) | {lm:.3f} |\n| plain PyTorch loop, same model/loss/data | {pm:.3f} |")
    print(f"\nLightning overhead: {100 * (pm / lm - 1):+.1f} % time per step (per-run values: "
          f"Lightning {[round(v, 3) for v in lt]}, plain {[round(v, 3) for v in pt]})")

    torch.manual_seed(0)
    model = csdi.CSDIBackbone(35, channels=args.channels, layers=args.layers).eval()
    torch.nn.init.normal_(model.output_projection2.weight, std=0.02)
    den = Denoiser(model, csdi.csdi_process(), "eps")
    d = dm()
    item = d.val_set[0]
    x, known = item["x"][None], item["known"][None]
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    impute(den, x, known, args.samples, generator=g, chunk_size=args.chunk)
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.samples):
        impute(den, x, known, 1, generator=g)
    looped = time.perf_counter() - t0
    print(f"\n### Imputation of {args.samples} samples of one PhysioNet series (T = 50 steps, same model)\n")
    print("| method | seconds |\n|---|---|")
    how = f"chunks of {args.chunk} rows" if args.chunk else "one pass"
    print(f"| samples folded into the batch, {how} (polydiff) | {batched:.1f} |\n"
          f"| one sample at a time (official loop) | {looped:.1f} |")
    print(f"\nspeed-up {looped / batched:.2f}x. Command: `{command()}`")


# ------------------------------------------------------------------------------------------------------
def _test_batch(dm, n_windows: int, seed: int):
    ds = dm.test_set
    idx = subset(len(ds), n_windows, seed)
    batch = [ds[int(i)] for i in idx]
    x = torch.stack([b["x"] for b in batch])
    known = torch.stack([b["known"] for b in batch])
    ev = ~torch.stack([b["missing"] for b in batch]) & ~known
    return x, known, ev


def _datamodule(args, ratio: float = 0.1):
    from polydiff.plugins.timeseries import data as tsdata

    if args.data == "physionet":
        return tsdata.PhysioNetDataModule(root=str(SHARED / "physionet2012"), batch_size=args.batch, seed=1,
                                          missing_ratio=ratio), 35
    if args.data == "aqi36":
        return tsdata.AQI36DataModule(root=str(SHARED / "pm25_aqi36"), batch_size=args.batch, seed=1), 36
    return tsdata.ETTDataModule("ETTh1", root=str(SHARED / "ett_small"), window=args.window, horizon=args.horizon,
                                mask_strategy="forecast", stride=1, batch_size=args.batch, seed=1), 7


def _step_decay(milestones: list[float], minutes: float, gamma: float = 0.1):
    """The official CSDI schedule (MultiStepLR, lr × 0.1 at 75 % and 90 % of the epochs) on a wall-clock
    budget: lr × ``gamma`` once each fraction of ``minutes`` has passed."""
    import lightning as L

    class StepDecay(L.Callback):
        def on_train_start(self, trainer, module):
            self.start, self.passed = time.perf_counter(), 0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            elapsed = (time.perf_counter() - self.start) / 60 / minutes
            while self.passed < len(milestones) and elapsed >= milestones[self.passed]:
                self.passed += 1
                for opt in trainer.optimizers:
                    for group in opt.param_groups:
                        group["lr"] *= gamma
                print(f"step {trainer.global_step}: lr x {gamma} ({milestones[self.passed - 1]:.0%} of the budget)")

    return StepDecay()


def _module(args, K: int):
    """The DiffusionModule that ``train`` fits and ``evaluate`` reloads (same seed, same architecture)."""
    from polydiff.training import DiffusionModule

    torch.manual_seed(1)
    if args.model == "csdi":
        backbone = csdi.CSDIBackbone(K, channels=args.channels, layers=args.layers, heads=args.heads,
                                     dropout=args.dropout)
        process = csdi.csdi_process()
    else:
        backbone = sssd.SSSDBackbone(K, channels=args.channels, skip_channels=args.channels, layers=args.layers,
                                     state_size=32, dropout=args.dropout)
        process = sssd.sssd_process()
    return DiffusionModule(backbone=backbone, process=process, parameterization="eps", ema_decay=args.ema,
                           lr=args.lr, weight_decay=1e-6, val_num_samples=0, final_num_samples=0, seed=1)


def part_train(args):
    """Train through Lightning for a wall-clock budget, save the weights, evaluate on the test split(s).

    PhysioNet's training windows and random training masks do not depend on the evaluation missing
    ratio (it only chooses which observed entries of the validation/test patients are hidden, as in the
    official code), so one model is evaluated at every ratio in ``--ratios``."""
    import lightning as L

    dm, K = _datamodule(args, args.ratios[0])
    dm.setup("fit")
    module = _module(args, K)
    trainer = L.Trainer(max_time={"minutes": args.minutes}, max_steps=args.max_steps, accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[_step_decay(args.lr_milestones, args.minutes)] if args.lr_milestones else None)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    train_s = time.perf_counter() - t0
    steps = trainer.global_step
    OUT.mkdir(parents=True, exist_ok=True)
    ckpt = OUT / f"{args.model}_{args.data}.pt"
    atomic_torch_save({"state_dict": module.state_dict(), "steps": steps, "seconds": train_s,
                       "args": {k: v for k, v in vars(args).items()}}, ckpt)
    _evaluate(args, module, dm, steps, train_s)


def part_evaluate(args):
    """Re-evaluate the weights ``train`` saved, e.g. with more samples or at more missing ratios, without
    training again. The model options come from the checkpoint: a different ``--heads`` or ``--ema`` would
    load the same tensors into a different model without an error."""
    ckpt = torch.load(OUT / f"{args.model}_{args.data}.pt", map_location="cpu", weights_only=True)
    saved = {k: ckpt["args"][k] for k in ("channels", "layers", "heads", "dropout", "ema", "batch", "lr")}
    args = argparse.Namespace(**{**vars(args), **saved})
    dm, K = _datamodule(args, args.ratios[0])
    dm.setup("fit")
    module = _module(args, K)
    module.load_state_dict(ckpt["state_dict"])
    _evaluate(args, module, dm, ckpt["steps"], ckpt["seconds"])


def _evaluate(args, module, dm, steps: int, train_s: float):
    den = module.sampling_model(use_ema=True).eval()
    for ratio in args.ratios:
        if ratio != args.ratios[0]:
            dm, _ = _datamodule(args, ratio)
            dm.setup("test")
        x, known, ev = _test_batch(dm, args.windows, args.seed)
        scale = torch.as_tensor(dm.std, dtype=torch.float32)[:, None] if args.data == "aqi36" else 1.0
        mean = torch.as_tensor(dm.mean, dtype=torch.float32)[:, None] if args.data == "aqi36" else 0.0
        t0 = time.perf_counter()
        samples = impute(den, x, known, args.samples, generator=torch.Generator().manual_seed(args.seed),
                         chunk_size=args.chunk)
        eval_s = time.perf_counter() - t0
        r = score(x, known, ev, samples, scale, mean)
        base = baseline_rows(x, known, ev, scale)
        if args.data == "etth1":  # the usual forecasting reference for hourly series: repeat the previous day
            H = args.horizon
            naive = torch.cat([x[..., :-H], x[..., -2 * H:-H]], dim=-1)
            base[f"seasonal naive (the previous {H} steps)"] = M.mae(x, naive, ev)
        unit = "µg/m³" if args.data == "aqi36" else "standardised units"
        where = f"{args.data} {int(100 * ratio)} %" if args.data == "physionet" else args.data
        print(f"\n### {args.model.upper()} trained on {args.data}, evaluated on {where} ({args.layers} layers x "
              f"{args.channels} channels, {steps} steps of batch {args.batch} in {train_s / 60:.1f} min; test subset "
              f"of {len(x)} windows, {int(ev.sum())} targets, {args.samples} samples; MAE in {unit})\n")
        print("| method | MAE | RMSE | CRPS | CRPS-sum |\n|---|---|---|---|---|")
        print(f"| {args.model.upper()} (ours, CPU scale) | {r['mae']:.3f} | {r['rmse']:.3f} | {r['crps']:.3f} | "
              f"{r['crps_sum']:.3f} |")
        for k, v in base.items():
            print(f"| {k} (same subset) | {v:.3f} | | | |")
        for k, v in base.items():
            if k == "linear" or k.startswith("seasonal"):
                print(f"\nMAE vs {k}: {100 * (r['mae'] / v - 1):+.1f} %")
        print(f"\nimputation {eval_s:.0f} s. Command: `{command()}`")


def part_toy(args):
    """How fast each backbone learns the highest-noise step on structureless data: x_0 ~ N(0, 1) i.i.d.
    (35 × 48, half the entries known), s fixed at T − 1, where the optimal ε̂ = √(1 − ᾱ_T) x_t is a
    scaled copy of the input and its loss is ᾱ_T."""
    import math

    torch.manual_seed(0)
    K, L, B = 35, 48, 16
    models = {"csdi": (csdi.CSDIBackbone(K, channels=32, layers=2, heads=4, dropout=0.0), csdi.csdi_process()),
              "sssd": (sssd.SSSDBackbone(K, channels=64, skip_channels=64, layers=8, state_size=32),
                       sssd.sssd_process())}
    print("\n| backbone | optimal loss | " + " | ".join(f"step {i}" for i in range(0, args.steps + 1, 50)) + " |")
    print("|---|---|" + "---|" * (args.steps // 50 + 1))
    for name, (backbone, process) in models.items():
        den, T = Denoiser(backbone, process, "eps"), process.num_steps
        ab = float(process.alphas_cumprod[T - 1])
        t = torch.full((B,), 1.0, dtype=torch.float64)
        opt = torch.optim.Adam(backbone.parameters(), args.lr)
        losses = []
        for i in range(args.steps + 1):
            x0, known, eps = torch.randn(B, K, L), torch.rand(B, K, L) < 0.5, torch.randn(B, K, L)
            xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
            loss = ((den(xt, t, {"known": known, "observed": x0}).eps - eps)[~known] ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i % 50 == 0:
                losses.append(f"{loss.item():.3f}")
        print(f"| {name} | {ab:.3f} | " + " | ".join(losses) + " |")
    print(f"\nCommand: `{command()}`")



def part_cli(args):
    """The CLI path against the Python path on the fixture patients (CSDI's 10 % evaluation masks, seed 1)."""
    import tempfile

    import pandas as pd

    from polydiff.cli import main as polydiff_main
    from polydiff.plugins.timeseries import official
    from polydiff.plugins.timeseries.imputation import point_estimate, series_noise, series_seed

    src = SHARED / "fixtures" / "physionet2012_tiny" / "set-a"
    rec = physio.load_records(src)
    keep = [i for i, m in enumerate(rec.observed_mask) if m.any()][: args.patients]
    ids, values = [rec.record_ids[i] for i in keep], rec.values[keep]
    obs = ~np.isnan(values)
    gt = physio.csdi_eval_masks(obs, 0.1, seed=1)
    ev = obs & ~gt
    tmp = Path(tempfile.mkdtemp(prefix="polydiff_cli_bench_"))
    for rid, v, g in zip(ids, values, gt):  # each record as a raw file without its hidden values
        lines = ["Time,Parameter,Value"] + [f"{h:02d}:00,{physio.ATTRIBUTES[k]},{float(v[h, k])!r}" for h, k in zip(*np.nonzero(g))]
        (tmp / "in").mkdir(exist_ok=True)
        (tmp / "in" / f"{rid}.txt").write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    code = polydiff_main(["impute", "--ckpt", str(SHARED / "csdi_pretrained" / "model.pth"), "--input", str(tmp / "in"),
                          "--out", str(tmp / "out"), "--samples", str(args.samples), "--seed", str(args.seed)])
    cli_s = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"polydiff impute failed with exit code {code}")
    mean, std = np.array(official.PHYSIONET_MEAN), np.array(official.PHYSIONET_STD)
    cli = np.stack([pd.read_csv(tmp / "out" / f"{rid}.csv")[list(physio.ATTRIBUTES)].to_numpy() for rid in ids])
    # the Python path: the same raw files parsed by the dataset module, the official loader, the same noise and grouping
    hidden = physio.load_records(tmp / "in")
    assert hidden.record_ids == ids
    z = physio.normalise(hidden.values, hidden.observed_mask, mean, std)
    kl = lambda a: torch.as_tensor(np.swapaxes(a, 1, 2).copy())  # noqa: E731
    x, known = kl(z).float(), kl(hidden.observed_mask)
    den = Denoiser(csdi.load_official(SHARED / "csdi_pretrained" / "model.pth").eval(), csdi.csdi_process(), "eps")
    per_call = max(1, 256 // args.samples)
    t0 = time.perf_counter()
    parts = [impute(den, x[i:i + per_call], known[i:i + per_call], args.samples,
                    noise_fn=series_noise([series_seed(args.seed, r) for r in ids[i:i + per_call]], args.samples))
             for i in range(0, len(ids), per_call)]
    py_s = time.perf_counter() - t0
    samples = torch.cat(parts)
    py = point_estimate(samples).numpy().transpose(0, 2, 1) * std + mean
    truth = (np.nan_to_num(values) - mean) / std
    e = torch.as_tensor(ev)
    mae_cli = float(np.abs((cli - mean) / std - truth)[ev].mean())
    mae_py = float(np.abs((py - mean) / std - truth)[ev].mean())
    diff = float(np.abs((cli - py) / std)[ev].max())
    r = score(kl(truth).float(), known, kl(ev), samples)
    base = baseline_rows(kl(truth).float(), kl(gt), kl(ev))
    print(f"\n### Official CSDI checkpoint through `polydiff impute` vs the Python path ({len(ids)} set-a fixture "
          f"patients, CSDI's 10 % masks with seed 1, {int(e.sum())} targets, {args.samples} samples, seed {args.seed})\n")
    print("| path | MAE | CRPS |\n|---|---|---|")
    print(f"| `polydiff impute --ckpt model.pth --input <folder of raw records>` | {mae_cli:.4f} | |")
    print(f"| Python: `load_official` + `impute` (same records, noise, grouping) | {mae_py:.4f} | {r['crps']:.4f} |")
    for k, v in base.items():
        print(f"| {k} (same targets) | {v:.4f} | |")
    print(f"\nlargest |CLI − Python| on a target: {diff:.2e} standardised units; CLI {cli_s:.0f} s (model loading, "
          f"parsing and writing included), Python {py_s:.0f} s. Command: `{command()}`")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["checkpoint", "speed", "train", "evaluate", "toy", "cli"])
    p.add_argument("--patients", type=int, default=6)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", choices=["csdi", "sssd"], default="csdi")
    p.add_argument("--data", choices=["physionet", "aqi36", "etth1"], default="physionet")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.1], help="PhysioNet evaluation missing ratios")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the sampling weights (0: off, as the papers)")
    p.add_argument("--chunk", type=int, default=None, help="series x samples per network call when imputing")
    p.add_argument("--minutes", type=float, default=20)
    p.add_argument("--max_steps", type=int, default=-1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-milestones", type=float, nargs="*", default=[],
                   help="fractions of the time budget where lr drops x0.1 (official CSDI: 0.75 0.9)")
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--window", type=int, default=120)
    p.add_argument("--horizon", type=int, default=24)
    p.add_argument("--threads", type=int, default=1, help="intra-op CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = {"checkpoint": part_checkpoint, "speed": part_speed, "train": part_train, "evaluate": part_evaluate,
             "toy": part_toy, "cli": part_cli}
    parts[args.part](args)


if __name__ == "__main__":
    main()
