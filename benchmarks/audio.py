"""Audio benchmark on the Free Spoken Digit Dataset at 8 kHz (official split: takes 5–49 train, 0–4 test), CPU.

Two parts, each trained for --minutes of wall time from the plugin's task YAML (the task's own settings; the
smoke flags only shrink them) and scored by the plugin's evaluation code:

* ``generation`` — class-conditional digits (``--model mel``: log-mels in the Grad-TTS decoder form, task
  ``audio/fsdd_mel``, inverted by Griffin-Lim; ``--model waveform``: DiffWave on raw waveforms, task
  ``audio/fsdd_digits``); --num samples with balanced labels, scored by the MFCC-statistics classifier fitted
  on the real training clips: accuracy, IS, modified IS and Fréchet distance beside real test clips and white
  noise. Targets (issue 21): sample accuracy >= 0.6 (real test clips ≈ 0.98).
* ``vocoder`` — DiffWave vocoder (task ``audio/fsdd_vocoder``, fast 6-step schedule) on --num held-out clips'
  mels: MR-STFT, LSD, MCD and STOI against the recordings beside Griffin-Lim (32 iterations) from the same mels.
  Target: vocoder LSD and MCD below Griffin-Lim's (reference on log-mels: LSD 6.39 dB, MCD 7.50 dB).

    nice -n 10 .venv/bin/python benchmarks/audio.py --part generation --minutes 60 --num 200   # the reported runs
    nice -n 10 .venv/bin/python benchmarks/audio.py --part vocoder --minutes 60 --num 100
    .venv/bin/python benchmarks/audio.py --part both --minutes 0.3 --num 10 --limit 100 --tiny   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import yaml

SHARED = Path(os.environ.get("POLYDIFF_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CONFIGS = Path(__file__).resolve().parents[1] / "plugins" / "audio" / "configs"
CMD = "nice -n 10 .venv/bin/python benchmarks/audio.py"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _hms(minutes: float) -> str:
    """Lightning's max_time as DD:HH:MM:SS."""
    sec = max(1, int(round(minutes * 60)))
    return f"00:{sec // 3600:02d}:{sec % 3600 // 60:02d}:{sec % 60:02d}"


def fit(task: str, args, work: Path) -> Path:
    """Train a task YAML for --minutes (wall time) in ``work``; returns the last checkpoint."""
    from polydiff.cli import main

    cfg = yaml.safe_load((CONFIGS / f"{task}.yaml").read_text())
    cfg["trainer"].update(max_steps=-1, max_time=_hms(args.minutes), enable_progress_bar=False,
                          check_val_every_n_epoch=10_000)
    init = cfg["model"]["init_args"]
    init.update(final_num_samples=0, sampler_kwargs={})
    data = cfg["data"]["init_args"]
    data["root"] = str(SHARED / "audio" / "fsdd" / "recordings")
    if args.limit:
        data["limit"] = args.limit
    if args.tiny:  # a smoke test of the script, not a measurement
        bb = init["backbone"]["init_args"]
        if init["backbone"]["class_path"] == "DiffWave":
            bb.update(residual_layers=2, residual_channels=8, dilation_cycle=2)
        else:
            bb.update(base_channels=8, channel_mults=[1, 2])
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{task}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cwd = Path.cwd()
    os.chdir(work)
    try:
        if main(["fit", "--config", str(path), "--trainer.default_root_dir", str(work / "runs")]) != 0:
            raise SystemExit(f"training {task} failed")
    finally:
        os.chdir(cwd)
    return max((work / "runs").rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)


def load(ckpt: Path):
    from polydiff.checkpointing import load_checkpoint
    from polydiff.components import datamodule_from_checkpoint
    from polydiff.training import DiffusionModule

    raw = load_checkpoint(ckpt)
    module = DiffusionModule.from_checkpoint(ckpt, checkpoint=raw)
    dm = datamodule_from_checkpoint(raw, str(ckpt))
    dm.setup("fit")
    module.attach_datamodule(dm)
    return module, dm, int(raw.get("global_step", 0))


def generation(args, work: Path) -> dict:
    from polydiff.plugins.audio.evaluation import evaluate_samples

    task = "fsdd_mel" if args.model == "mel" else "fsdd_digits"
    t0 = time.time()
    ckpt = fit(task, args, work)
    module, dm, steps = load(ckpt)
    log(f"{task}: {steps} steps in {(time.time() - t0) / 60:.1f} min; sampling {args.num}")
    t1 = time.time()
    samples = module.generate(args.num, seed=0)
    log(f"sampled in {time.time() - t1:.0f} s; evaluating")
    m = evaluate_samples(samples, dm, {"module": module, "cache_dir": work / "classifier"})
    print(f"\nClass-conditional FSDD digits, `{task}` ({args.model}), {steps} steps / {args.minutes} min, "
          f"{args.num} samples\n")
    print("| | accuracy | IS | modified IS | Fréchet distance |\n|---|---|---|---|---|")
    for name, key in (("samples", ""), ("real test clips", "real/"), ("white noise", "noise/")):
        acc = m.get("audio/accuracy") if key == "" else m.get("audio/real/accuracy") if key == "real/" else None
        acc_s = "–" if acc is None else f"{acc:.3f}"
        print(f"| {name} | {acc_s} | {m[f'audio/{key}inception_score']:.2f} | "
              f"{m[f'audio/{key}modified_inception_score']:.2f} | {m[f'audio/{key}frechet']:.1f} |")
    return {"task": task, "steps": steps, "metrics": m}


def vocoder(args, work: Path) -> dict:
    from polydiff.plugins.audio.evaluation import evaluate_samples

    t0 = time.time()
    ckpt = fit("fsdd_vocoder", args, work)
    module, dm, steps = load(ckpt)
    log(f"vocoder: {steps} steps in {(time.time() - t0) / 60:.1f} min; vocoding {args.num} held-out clips")
    samples = module.generate(args.num, seed=0)
    m = evaluate_samples(samples, dm, {"module": module})
    print(f"\nDiffWave vocoder on FSDD held-out takes, {steps} steps / {args.minutes} min, {args.num} clips, "
          "fast 6-step schedule\n")
    print("| | MR-STFT | LSD (dB) | MCD (dB) | STOI |\n|---|---|---|---|---|")
    for name, key in (("DiffWave", ""), ("Griffin-Lim (32 it.)", "griffin_lim/")):
        print(f"| {name} | {m[f'audio/{key}mr_stft']:.3f} | {m[f'audio/{key}lsd_db']:.2f} | "
              f"{m[f'audio/{key}mcd_db']:.2f} | {m[f'audio/{key}stoi']:.3f} |")
    return {"steps": steps, "metrics": m}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("generation", "vocoder", "both"), default="both")
    p.add_argument("--model", choices=("mel", "waveform"), default="mel", help="generation model")
    p.add_argument("--minutes", type=float, default=60.0, help="training wall time per part")
    p.add_argument("--num", type=int, default=200, help="samples (generation) / held-out clips (vocoder)")
    p.add_argument("--limit", type=int, default=None, help="at most this many clips per split (smoke tests)")
    p.add_argument("--tiny", action="store_true", help="tiny networks (smoke test of the script only)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/benchmark_audio")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    if args.part in ("generation", "both"):
        results["generation"] = generation(args, work / "generation")
    if args.part in ("vocoder", "both"):
        results["vocoder"] = vocoder(args, work / "vocoder")
    flags = f"--part {args.part} --model {args.model} --minutes {args.minutes:g} --num {args.num}" + (
        f" --limit {args.limit}" if args.limit else "") + (" --tiny" if args.tiny else "")
    print(f"\n`{CMD} {flags}`")
    from polydiff.io import atomic_write_text

    atomic_write_text(work / "results.json", json.dumps({"command": f"{CMD} {flags}", **results}, indent=2,
                                                        default=float))


if __name__ == "__main__":
    main()
