"""Point-cloud benchmark: Luo & Hu DPM on the procedural chairs (or airplanes), MMD/COV/1-NNA with references.

Phases (run in this order; each prints a markdown table and the command that made it):

  references  oracle (validation split), copies of training shapes, Gaussian blob — against the test split
  cost        seconds for the full CD metric set (MMD/COV/1-NNA) at 2048 points: ours vs the naive
              full-matrix implementation (PointFlow's structure: every pair, (N, M) distance matrix)
  train       trains Luo & Hu (gen mode: encoder + flow prior + diffusion decoder) for exactly --steps
              optimiser steps per seed (--seeds, default three), with Luo & Hu's learning-rate schedule in
              steps; wall time, CPU time and the load average are recorded, never used as the budget
  sample      generates --draws sets (default 3) of as many shapes as the test split holds (2048 points) from
              each seed's checkpoint
  evaluate    MMD/COV/1-NNA-CD at 2048 points and -EMD at 512 points of each set, each seed's metrics = their
              mean over the draws (one 64 + 64 1-NNA moves by up to 12 points between draws), then the report
  report      one row per seed, the mean [min–max] over seeds, the references, and the hardware line (CPU model,
              bf16/AVX flags, threads, precision, steps, wall time, load average)
  outliers    diagnosis: how far stray generated points inflate the shape_bbox normalisation, and the
              CD metrics without that effect (not a result to report as the model's score)

Protocol: models train on per-shape ``shape_unit`` clouds (Luo & Hu); every set is normalised with
``shape_bbox`` before the metrics (Luo & Hu's ``test_gen.py`` evaluation). CD = squared, mean per
direction, summed (PointFlow); EMD = exact, mean Euclidean matching distance. 1-NNA ideal = 50 %.
Precision: fp32 unless the CPU multiplies bf16 natively (``--precision auto``, :mod:`polydiff.hardware`) or
``--precision bf16`` is given.

    PYTHONPATH= nice -n 10 .venv/bin/python benchmarks/pointcloud.py references
    PYTHONPATH= nice -n 10 .venv/bin/python benchmarks/pointcloud.py train      # 3 seeds x --steps
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from polydiff.checkpointing import atomic_torch_save  # noqa: E402
from polydiff.datasets.pointcloud_procedural import load_procedural  # noqa: E402
from polydiff.plugins.pointcloud import metrics as M  # noqa: E402
from polydiff.hardware import PRECISIONS, cpu_summary, use_bf16  # noqa: E402
from polydiff.plugins.pointcloud.luohu import LuoHuDPM, luohu_lr  # noqa: E402
from polydiff.plugins.pointcloud.normalize import Normalizer  # noqa: E402
from polydiff.io import atomic_write_text  # noqa: E402
from polydiff.ema import EMA  # noqa: E402

ROOT = Path(os.environ.get("POLYDIFF_POINTCLOUD_PROCEDURAL", Path(__file__).resolve().parents[2] / "shared/data/pointcloud/procedural"))
OUT = Path(os.environ.get("POLYDIFF_BENCH_OUT", "/tmp/polydiff_pointcloud_bench"))
EVAL_NORM = Normalizer("shape_bbox")
CMD = "nice -n 10 .venv/bin/python benchmarks/pointcloud.py"
STEPS = 40_000  # per seed: ~67 min in bf16 on one thread of the 2-core EPYC VM, ~46 min on both (docs/benchmarks.md)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def subsample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The same seeded random subset of n points for every cloud index (EMD needs equal sizes)."""
    rng = np.random.default_rng(seed)
    return np.stack([c[rng.permutation(c.shape[0])[:n]] for c in x])


def evaluate_set(samples: np.ndarray, refs: np.ndarray, metrics=("cd", "emd"), emd_points: int = 512) -> dict:
    s = EVAL_NORM(torch.as_tensor(samples), "samples").numpy().astype(np.float64)
    r = EVAL_NORM(torch.as_tensor(refs), "refs").numpy().astype(np.float64)
    out = {"n_samples": len(s), "n_refs": len(r)}
    if "cd" in metrics:
        t0 = time.perf_counter()
        out.update(M.generation_metrics(s, r, metrics=("cd",)))
        out["seconds_cd"] = time.perf_counter() - t0
    if "emd" in metrics:
        t0 = time.perf_counter()
        emd, solved = M.emd_set_metrics(subsample(s, emd_points, 1), subsample(r, emd_points, 2))
        out.update(emd)
        out["seconds_emd"] = time.perf_counter() - t0
        out["emd_assignments"] = solved
    return out


def row(name: str, m: dict) -> str:
    def f(key, scale, digits):
        return f"{scale * m[key]:.{digits}f}" if key in m else "not run"

    return (f"| {name} | {m['n_samples']}/{m['n_refs']} | {f('MMD-CD', 1e3, 3)} | {f('COV-CD', 100, 1)} | "
            f"{f('1-NNA-CD', 100, 1)} | {f('MMD-EMD', 1e2, 3)} | {f('COV-EMD', 100, 1)} | {f('1-NNA-EMD', 100, 1)} |")


HEADER = ("| set | gen/ref | MMD-CD ×10³ ↓ | COV-CD % ↑ | 1-NNA-CD % (50 ideal) | MMD-EMD ×10² ↓ | "
          "COV-EMD % ↑ | 1-NNA-EMD % |\n|---|---|---|---|---|---|---|---|")


def save_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def phase_references(args) -> None:
    cat = args.category
    test = load_procedural(cat, "test", ROOT)
    val = load_procedural(cat, "val", ROOT)
    train = load_procedural(cat, "train", ROOT)
    n = len(test)
    rows = {}
    prev = OUT / f"references_{cat}.json"
    if prev.is_file():  # add metrics to an earlier run (e.g. EMD after CD)
        rows = json.loads(prev.read_text())
    ev = lambda name, a, b: rows.__setitem__(name, {**rows.get(name, {}), **evaluate_set(a, b, tuple(args.metrics))})
    log(f"oracle: {len(val)} validation shapes vs the first {len(val)} test shapes")
    ev("oracle: validation split", val, test[: len(val)])
    log("copies of training shapes")
    ev("copies of training shapes", train[:n], test)
    log("gaussian blob")
    g = np.random.default_rng(0)
    ev("Gaussian blob N(0, I)", g.normal(size=(n, test.shape[1], 3)).astype(np.float32), test)
    save_json(OUT / f"references_{cat}.json", rows)
    print(f"\nReferences ({cat}, test split as reference set, shape_bbox normalisation):\n")
    print(HEADER)
    for k, v in rows.items():
        print(row(k, v))
    print(f"\n`{CMD} references --category {cat} --metrics {' '.join(args.metrics)}`")


def phase_cost(args) -> None:
    cat = args.category
    test = load_procedural(cat, "test", ROOT)
    train = load_procedural(cat, "train", ROOT)
    res = {}
    for n in (args.cost_small, len(test)):
        s = EVAL_NORM(torch.as_tensor(train[:n])).double()
        r = EVAL_NORM(torch.as_tensor(test[:n])).double()
        t0 = time.perf_counter()
        fast = M.set_metrics_from_matrices(M.pairwise_chamfer(s), M.pairwise_chamfer(s, r), M.pairwise_chamfer(r), "CD")
        t_fast = time.perf_counter() - t0
        entry = {"fast_s": t_fast, "fast": fast}
        if n == args.cost_small:
            t0 = time.perf_counter()
            naive = M.set_metrics_from_matrices(M.naive_pairwise_chamfer(s, s), M.naive_pairwise_chamfer(s, r),
                                                M.naive_pairwise_chamfer(r, r), "CD")
            entry["naive_s"] = time.perf_counter() - t0
            entry["naive"] = naive
            entry["agree"] = all(abs(naive[k] - fast[k]) < 1e-9 for k in fast)
            per_pair = entry["naive_s"] / (3 * n * n)
        else:
            entry["naive_s_extrapolated"] = per_pair * 3 * n * n
        res[n] = entry
        log(f"n={n}: {entry}")
    save_json(OUT / f"cost_{cat}.json", {str(k): v for k, v in res.items()})
    small, full = res[args.cost_small], res[len(test)]
    print("\nMetric cost, full CD set (MMD/COV/1-NNA: S×R, S×S, R×R matrices), 2048 points, one thread:\n")
    print("| shapes per set | ours (KD-tree, symmetric) s | naive full-matrix s | speed-up | same numbers |")
    print("|---|---|---|---|---|")
    print(f"| {args.cost_small} | {small['fast_s']:.1f} | {small['naive_s']:.1f} (measured) | "
          f"{small['naive_s'] / small['fast_s']:.1f}× | {small['agree']} |")
    print(f"| {len(test)} | {full['fast_s']:.1f} | {full['naive_s_extrapolated']:.0f} (extrapolated per pair) | "
          f"{full['naive_s_extrapolated'] / full['fast_s']:.1f}× | – |")
    print(f"\n`{CMD} cost --category {cat}`")


def run_name(category: str, seed: int) -> str:
    return f"{category}_s{seed}"


def schedule(args) -> tuple[int, int]:
    """(sched_start, sched_end) in steps: Luo & Hu's ratio (lr held to 200k of 400k iterations, then linear
    to end_lr at 400k; ``train_gen.py``) scaled to ``--steps`` unless given."""
    start = args.steps // 2 if args.sched_start is None else args.sched_start
    end = args.steps if args.sched_end is None else args.sched_end
    return start, end


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def phase_train(args) -> None:
    for seed in args.seeds:
        train_one(args, seed)


def train_one(args, seed: int) -> None:
    """Train one seed for exactly ``--steps`` optimiser steps; wall and CPU time are measured, not a budget."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train = torch.as_tensor(load_procedural(args.category, "train", ROOT))
    norm = Normalizer("shape_unit")
    x_all = norm(train, "train")
    model = LuoHuDPM(latent_dim=args.latent_dim, hidden=tuple(args.hidden), flow_depth=args.flow_depth,
                     flow_hidden=args.flow_hidden, kl_weight=0.001)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, fused=True)  # one kernel for all parameters, same update
    # optional weight averaging (not in Luo & Hu's code; docs/benchmarks.md compares it with the raw weights)
    ema = EMA(model, args.ema) if args.ema > 0 else None
    bf16 = use_bf16(args.precision, "cpu")
    sched_start, sched_end = schedule(args)
    ckpt = OUT / f"luohu_{run_name(args.category, seed)}.pt"
    n = len(x_all)
    perm, pos = torch.randperm(n, generator=gen), 0
    step, before, cpu_before = 0, 0.0, 0.0
    if args.resume and ckpt.is_file():  # continue a run: weights, optimiser, data order and generator state
        prev = torch.load(ckpt, weights_only=True)
        model.load_state_dict(prev["state_dict"])
        opt.load_state_dict(prev["optimizer"])
        if ema is not None and "ema" in prev:
            ema.load_state_dict(prev["ema"])
        step, before, cpu_before = prev["step"], prev["seconds"], prev.get("cpu_seconds", 0.0)
        gen.set_state(prev["generator"])
        perm, pos = prev["perm"], prev["pos"]
        log(f"resumed {ckpt.name} at step {step}")
    hw = {**cpu_summary(), "precision": "bf16 autocast" if bf16 else "fp32", "load_start": loadavg()}
    log(f"seed {seed}: {args.steps} steps, {hw}")
    t_start, c_start, t_mark, s_mark, hist = time.time(), time.process_time(), time.time(), step, []
    first = step

    def save():
        state = {"state_dict": model.state_dict(), "optimizer": opt.state_dict(), "normalization": norm.state(),
                 "step": step, "seconds": before + time.time() - t_start,
                 "cpu_seconds": cpu_before + time.process_time() - c_start, "generator": gen.get_state(),
                 "perm": perm, "pos": pos, "seed": seed, "hardware": {**hw, "load_end": loadavg()},
                 "config": {k: v for k, v in vars(args).items() if k != "func"}}
        if ema is not None:
            state["ema"] = ema.state_dict()
        atomic_torch_save(state, ckpt)

    while step < args.steps:
        if pos + args.batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos: pos + args.batch]
        pos += args.batch
        perm_pts = torch.stack([torch.randperm(x_all.shape[1], generator=gen) for _ in idx])
        x = torch.gather(x_all[idx], 1, perm_pts[:, : args.points, None].expand(-1, -1, 3))
        # the encoder (the costly part on a CPU) sees a smaller subset of the same shapes
        x_enc = x[:, : args.encoder_points]
        lr = luohu_lr(step, args.lr, args.end_lr, sched_start, sched_end)
        for gr in opt.param_groups:
            gr["lr"] = lr
        # bf16 autocast: matmuls on the CPU's bf16 units (AMX/AVX512-BF16), loss and optimiser in fp32
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            terms = model.loss_terms(x, generator=gen, x_encoder=x_enc)
        opt.zero_grad()
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if ema is not None:
            ema.update(model)
        step += 1
        hist.append({k: float(v.detach()) for k, v in terms.items()})
        if step % 50 == 0 or step == args.steps:
            mean = {k: np.mean([h[k] for h in hist[-50:]]) for k in hist[-1]}
            rate = (step - s_mark) / max(time.time() - t_mark, 1e-9)
            t_mark, s_mark = time.time(), step
            log(f"step {step} lr {lr:.2e} {rate:.2f} steps/s load {loadavg()[0]} "
                + " ".join(f"{k} {v:.4f}" for k, v in mean.items()))
        if step % 1000 == 0:
            save()
    save()
    wall, cpu = time.time() - t_start, time.process_time() - c_start
    log(f"seed {seed}: {step} steps in {(before + wall) / 60:.1f} min wall ({cpu / max(step - first, 1):.3f} CPU s/step "
        f"this session), {args.precision} -> {'bf16' if bf16 else 'fp32'}, load {loadavg()} -> {ckpt}")


def _load(args, seed: int) -> tuple[LuoHuDPM, dict]:
    ck = torch.load(OUT / f"luohu_{run_name(args.category, seed)}.pt", weights_only=True)
    c = ck["config"]
    model = LuoHuDPM(latent_dim=c["latent_dim"], hidden=tuple(c["hidden"]), flow_depth=c["flow_depth"],
                     flow_hidden=c["flow_hidden"])
    if "ema" in ck and not args.raw_weights:  # sample from the averaged weights
        model.load_state_dict({k[len("module."):]: v for k, v in ck["ema"].items() if k.startswith("module.")})
    else:
        model.load_state_dict(ck["state_dict"])
    return model.eval(), ck


def test_split(args) -> np.ndarray:
    """The reference set: the test split, or its first ``--num-samples`` shapes (1-NNA needs equal sizes)."""
    test = load_procedural(args.category, "test", ROOT)
    return test if args.num_samples is None else test[: args.num_samples]


def phase_sample(args) -> None:
    n = len(test_split(args))
    total = n * args.draws
    for seed in args.seeds:
        model, ck = _load(args, seed)
        gen = torch.Generator().manual_seed(seed + 1)  # one stream: the first draw is the same for any --draws
        t0 = time.perf_counter()
        out = []
        for i in range(0, total, args.sample_batch):
            out.append(model.generate(min(args.sample_batch, total - i), 2048, generator=gen,
                                      truncate_std=args.truncate_std))
            log(f"seed {seed}: generated {i + len(out[-1])}/{total}")
        shapes = torch.cat(out).numpy()
        np.save(OUT / f"samples_{run_name(args.category, seed)}.npy", shapes.reshape(args.draws, n, *shapes.shape[1:]))
        log(f"seed {seed}: sampling took {time.perf_counter() - t0:.0f} s (step {ck['step']} checkpoint)")


def load_draws(args, seed: int) -> np.ndarray:
    """A seed's generated sets, (draws, n, points, 3); a file from before --draws holds one set (n, points, 3)."""
    samples = np.load(OUT / f"samples_{run_name(args.category, seed)}.npy")
    return samples[None] if samples.ndim == 3 else samples


def phase_evaluate(args) -> None:
    test = test_split(args)
    for seed in args.seeds:
        _, ck = _load(args, seed)
        name = run_name(args.category, seed)
        m = mean_over_draws([evaluate_set(d, test, tuple(args.metrics)) for d in load_draws(args, seed)])
        path = OUT / f"model_{name}.json"
        if path.is_file():  # add metrics to an earlier evaluation of the same checkpoint (e.g. EMD after CD)
            prev = json.loads(path.read_text())
            same = [prev["metrics"].get(k) for k in ("n_samples", "draws")] == [m["n_samples"], m["draws"]]
            if prev.get("step") == ck["step"] and same:
                m = {**prev["metrics"], **m}
        save_json(path, {"metrics": m, "step": ck["step"], "seconds": ck["seconds"],
                         "cpu_seconds": ck.get("cpu_seconds"), "seed": seed, "hardware": ck["hardware"],
                         "config": ck["config"]})
        log(f"seed {seed}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, float)))
    phase_report(args)


def mean_over_draws(results: list[dict]) -> dict:
    """One seed's metrics: each metric's mean over the sample draws (its per-draw values kept as ``<key> draws``)."""
    out = {"n_samples": results[0]["n_samples"], "n_refs": results[0]["n_refs"], "draws": len(results)}
    for key in results[0]:
        if key in out:
            continue
        vals = [r[key] for r in results]
        if isinstance(vals[0], float):
            out[key] = float(np.mean(vals))
            if not key.startswith("seconds"):
                out[f"{key} draws"] = vals
        else:  # counts (EMD assignments solved)
            out[key] = sum(vals)
    return out


KEYS = (("MMD-CD", 1e3, 3), ("COV-CD", 100, 1), ("1-NNA-CD", 100, 1), ("MMD-EMD", 1e2, 3), ("COV-EMD", 100, 1),
        ("1-NNA-EMD", 100, 1))


def spread_row(name: str, runs: list[dict]) -> str:
    """Mean [min–max] over seeds of each metric (``not run`` where a seed lacks it)."""
    cells = []
    for key, scale, digits in KEYS:
        vals = [r["metrics"][key] * scale for r in runs if key in r["metrics"]]
        cells.append(f"{np.mean(vals):.{digits}f} [{min(vals):.{digits}f}–{max(vals):.{digits}f}]"
                     if len(vals) == len(runs) else "not run")
    m = runs[0]["metrics"]
    return f"| {name} | {m['n_samples']}/{m['n_refs']} | " + " | ".join(cells) + " |"


def hardware_line(runs: list[dict]) -> str:
    hw = runs[0]["hardware"]
    c = runs[0]["config"]
    walls = ", ".join(f"{r['seconds'] / 60:.1f}" for r in runs)
    loads = ", ".join(f"{r['hardware']['load_start'][0]}→{r['hardware']['load_end'][0]}" for r in runs)
    return (f"Hardware: {hw['cpu']} ({hw['logical_cpus']} logical CPUs; flags {', '.join(hw['flags']) or 'none'}"
            f"{'' if hw['native_bf16'] else '; no native bf16'}), torch {hw['torch']}, {hw['torch_threads']} "
            f"thread(s), {hw['precision']} (--precision {c['precision']}). Steps {runs[0]['step']} per seed "
            f"(lr {c['lr']:g} held to step {schedule(argparse.Namespace(**c))[0]}, linear to {c['end_lr']:g} at "
            f"{schedule(argparse.Namespace(**c))[1]}), batch {c['batch']} × {c['points']} points (encoder "
            f"{c['encoder_points']}); wall time per seed {walls} min; 1-min load average start→end {loads}.")


def phase_report(args) -> None:
    """The model rows (one per seed, then mean [range]) with the hardware line, then the references."""
    cat = args.category
    runs = []
    for seed in args.seeds:
        path = OUT / f"model_{run_name(cat, seed)}.json"
        if path.is_file():
            runs.append(json.loads(path.read_text()))
    draws = runs[0]["metrics"].get("draws", 1) if runs else 1
    print(f"\nLuo & Hu DPM, procedural {cat} (train shape_unit, eval shape_bbox, test split as reference; each seed's"
          f" row is the mean over {draws} sample draw(s)):\n")
    print(HEADER)
    for r in runs:
        print(row(f"seed {r['seed']}, {r['step']} steps, {r['seconds'] / 60:.0f} min", r["metrics"]))
    if runs:
        print(spread_row(f"**mean [min–max] over {len(runs)} seed(s)**", runs))
    refs = OUT / f"references_{cat}.json"
    if refs.is_file():
        for k, v in json.loads(refs.read_text()).items():
            print(row(k, v))
    if runs:
        print("\n" + hardware_line(runs))
        c = runs[0]["config"]
        print(f"\n`{CMD} train --category {cat} --steps {c['steps']} --seeds {' '.join(map(str, args.seeds))}"
              f" --threads {c['threads']} --precision {c['precision']}; {CMD} sample ...; {CMD} evaluate ...`")


def quantile_box(x: np.ndarray, q: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """Per-shape, per-axis [q, 1 − q] quantiles of clouds (batch, N, 3): the box of the central points."""
    return tuple(np.quantile(x, [q, 1 - q], axis=1))


def core_normalize(x: np.ndarray) -> np.ndarray:
    """shape_bbox computed on the quantile box instead of the extreme points."""
    lo, hi = quantile_box(x)
    return (x - ((lo + hi) / 2)[:, None]) / ((hi - lo).max(-1) / 2)[:, None, None]


def drop_stray_points(x: np.ndarray, frac: float = 0.01, k: int = 8) -> np.ndarray:
    """Remove the ``frac`` of each cloud's points with the largest mean distance to their k nearest
    neighbours (the usual statistical outlier filter)."""
    from scipy.spatial import cKDTree

    keep = int(round(x.shape[1] * (1 - frac)))
    out = []
    for c in x:
        d, _ = cKDTree(c).query(c, k=k + 1)
        out.append(c[np.sort(np.argsort(d[:, 1:].mean(1))[:keep])])
    return np.stack(out)


def phase_outliers(args) -> None:
    samples = load_draws(args, args.seeds[0])[0].astype(np.float64)  # the first draw
    test = load_procedural(args.category, "test", ROOT).astype(np.float64)

    def inflation(x):  # bbox extent / extent of the 0.5–99.5 % quantile box, mean over shapes, per axis
        lo, hi = quantile_box(x)
        return ((x.max(1) - x.min(1)) / (hi - lo)).mean(0)

    print("\n| set | bbox / 99 % core extent (x, y, z) |\n|---|---|")
    for name, x in (("generated", samples), ("test", test)):
        print(f"| {name} | {', '.join(f'{v:.3f}' for v in inflation(x))} |")
    rows = [("shape_bbox on all points (the protocol)", evaluate_set(samples, test, ("cd",))),
            ("bbox of the 0.5–99.5 % quantile box, both sets",
             M.generation_metrics(core_normalize(samples), core_normalize(test), metrics=("cd",))),
            ("1 % stray points removed from the generated clouds, shape_bbox",
             evaluate_set(drop_stray_points(samples), test, ("cd",)))]
    print("\n| normalisation | MMD-CD ×10³ | COV-CD % | 1-NNA-CD % |\n|---|---|---|---|")
    for name, m in rows:
        print(f"| {name} | {1e3 * m['MMD-CD']:.3f} | {100 * m['COV-CD']:.1f} | {100 * m['1-NNA-CD']:.1f} |")
    print(f"\n`{CMD} outliers`")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=["references", "cost", "train", "sample", "evaluate", "report",
                                       "outliers"])
    p.add_argument("--category", default="chair", choices=["chair", "airplane"])
    p.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022],
                   help="one training run per seed (train/sample/evaluate loop over them; report: mean and range)")
    p.add_argument("--steps", type=int, default=STEPS, help="optimiser steps per run (the budget; wall time is measured)")
    p.add_argument("--sched-start", type=int, default=None, help="lr held until this step (default steps/2, Luo & Hu's ratio)")
    p.add_argument("--sched-end", type=int, default=None, help="lr reaches --end-lr at this step (default --steps)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--points", type=int, default=256)
    p.add_argument("--encoder-points", type=int, default=64)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 128, 256, 128, 64])
    p.add_argument("--latent-dim", type=int, default=128)
    p.add_argument("--flow-depth", type=int, default=14)
    p.add_argument("--flow-hidden", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--end-lr", type=float, default=1e-4)
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights used for sampling (0: off, as Luo & Hu)")
    p.add_argument("--raw-weights", action="store_true", help="sample from the raw weights, not the EMA")
    p.add_argument("--resume", action="store_true", help="continue each seed's interrupted run (same --steps: same schedule)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="generate this many shapes and score them against the first as many test shapes "
                        "(default: the whole test split; small values only to check the script)")
    p.add_argument("--sample-batch", type=int, default=16)
    p.add_argument("--draws", type=int, default=3, help="sample sets per seed; the metrics are their mean")
    p.add_argument("--truncate-std", type=float, default=None,
                   help="truncate the prior draw w at this many σ (default: none, as Luo & Hu's test_gen.py)")
    p.add_argument("--cost-small", type=int, default=16)
    p.add_argument("--metrics", nargs="+", default=["cd", "emd"], choices=["cd", "emd"])
    p.add_argument("--threads", type=int, default=1, help="intra-op CPU threads (1: robust to a shared machine; see docs)")
    p.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                   help="auto: bf16 autocast only on a CPU with native bf16 (AMX-BF16/AVX512-BF16), else fp32")
    args = p.parse_args(argv)
    if args.draws < 1:
        p.error(f"--draws must be at least 1, got {args.draws}")
    torch.set_num_threads(args.threads)
    {"references": phase_references, "cost": phase_cost, "train": phase_train, "sample": phase_sample,
     "evaluate": phase_evaluate, "report": phase_report, "outliers": phase_outliers}[args.phase](args)


if __name__ == "__main__":
    sys.exit(main())
