"""Conformer benchmark: torsional diffusion (Jing et al. 2022) on QM9-size molecules, on the CPU.

Trains the ``molecule/torsional_qm9`` recipe (VE wrapped-normal diffusion on the rotatable-bond torsions,
σ ∈ [0.01π, π], TorsionScoreNet, Adam 1e-3, batch 32) for --minutes of wall time on the reference ensembles of
--train QM9 SMILES (ETKDG v3 + MMFF94, 10 seeds each; the GEOM-QM9 test molecules excluded), then, for --test
molecules of the GEOM-QM9 test list (Ganea et al. 2021 split, as torsional diffusion uses), generates 2K
conformers per molecule for K = min(GEOM's conformer count, --max-ref) reference conformers and reports coverage
and matching (COV-R/P at δ = 0.5 Å, AMR-R/P, mean and median over molecules) beside:

* ETKDG — the 2K RDKit conformers the model starts from (the same local structures, their own torsions);
* random torsions — the same local structures with uniformly drawn torsions.

The references are ETKDG + MMFF94 ensembles (another seed), not GEOM's CREST conformers (not shipped), so the
numbers measure how well the model reproduces force-field ensembles, not the paper's Table 1.

    nice -n 10 .venv/bin/python benchmarks/conformers.py --minutes 30 --test 100    # the reported run
    nice -n 10 .venv/bin/python benchmarks/conformers.py --minutes 0.5 --train 50 --test 5   # smoke test
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from polydiff import VE, Torus
from polydiff.io import atomic_write_text
from polydiff.plugins.molecule.conformer_metrics import coverage_matching, ensemble_table, rmsd_matrix
from polydiff.plugins.molecule.conformer_sampling import denoise_torsions, with_torsions
from polydiff.plugins.molecule.conformers import ConformerEnsembles, local_structure
from polydiff.plugins.molecule.data import embed_ensemble
from polydiff.plugins.molecule.torsion_net import TorsionScoreNet
from polydiff.plugins.molecule.torsions import rotatable_bonds
from polydiff.training import DiffusionModule

SHARED = Path(os.environ.get("POLYDIFF_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TEST = SHARED / "molecule" / "geom_test_smiles" / "QM9_test_smiles.csv"
CMD = "nice -n 10 .venv/bin/python benchmarks/conformers.py"
ROWS = (("torsional diffusion", ""), ("ETKDG (its starting structures)", "etkdg/"), ("random torsions", "random/"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train(args, out: Path) -> tuple[DiffusionModule, int, float]:
    import lightning as L

    dm = ConformerEnsembles(path=str(SHARED / "molecule" / "qm9_smiles_selfies.csv"), limit=args.train,
                            conformers=10, exclude=str(TEST), val_fraction=0.01, batch_size=32, seed=args.seed)
    t0 = time.time()
    dm.setup("fit")
    log(f"{len(dm.train_set)} training conformers of {args.train} SMILES ({len(dm.errors)} skipped) "
        f"in {time.time() - t0:.0f} s (cached after the first run)")
    module = DiffusionModule(TorsionScoreNet(hidden=64, layers=4, channels=8),
                             process=VE(sigma_min=0.01 * math.pi, sigma_max=math.pi), space=Torus(target="wrapped_score"),
                             parameterization="eps", lr=1e-3, ema_decay=0.999, sampler="euler_maruyama",
                             sample_steps=args.steps, val_num_samples=0, final_num_samples=0, seed=args.seed)
    L.seed_everything(args.seed, verbose=False)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_time={"minutes": args.minutes}, max_epochs=-1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        gradient_clip_val=1.0, limit_val_batches=0, default_root_dir=str(out))
    t0 = time.time()
    trainer.fit(module, datamodule=dm)
    log(f"trained {trainer.global_step} steps in {(time.time() - t0) / 60:.1f} min")
    return module.eval(), trainer.global_step, time.time() - t0


def test_molecules(n: int) -> list[tuple[str, int]]:
    with open(TEST, newline="") as f:
        return [(r["smiles"], int(r["n_conformers"])) for r in csv.DictReader(f)][:n]


def evaluate(args, module) -> tuple[dict, int]:
    from rdkit import Chem

    from polydiff.plugins.molecule.io import quiet_rdkit

    rows: dict[str, list] = {prefix: [] for _, prefix in ROWS}
    skipped = 0
    g = torch.Generator().manual_seed(args.seed)
    for k, (smi, count) in enumerate(test_molecules(args.test)):
        with quiet_rdkit():
            mol = Chem.AddHs(Chem.MolFromSmiles(smi))
            ref_mol = Chem.Mol(mol)
            ids = embed_ensemble(ref_mol, min(count, args.max_ref), seed=10**7 + 1000 * k, mmff=True)
        if not ids or not rotatable_bonds(mol):
            skipped += 1  # no reference, or no torsion: all three rows would be the ETKDG structures
            continue
        refs = [Chem.Mol(ref_mol, confId=c) for c in ids]
        starts = [local_structure(mol, args.seed + 100_000 * k + 1000 * j) for j in range(2 * len(refs))]
        gen = denoise_torsions(module, starts, seed=args.seed + k, progress=False)
        uniform = (torch.rand(len(starts), len(rotatable_bonds(mol)), 1, generator=g) * 2 - 1) * math.pi
        for prefix, confs in (("", gen), ("etkdg/", starts), ("random/", with_torsions(starts, uniform))):
            rows[prefix].append(coverage_matching(rmsd_matrix(confs, refs), args.threshold))
        if (k + 1) % 10 == 0:
            log(f"evaluated {k + 1} / {args.test} molecules")
    out = {}
    for _, prefix in ROWS:
        out.update(ensemble_table(rows[prefix], prefix))
    return out, skipped


def table(metrics: dict) -> list[str]:
    keys = ("cov_r", "amr_r", "cov_p", "amr_p")
    head = "| method | " + " | ".join(f"{k.upper().replace('_', '-')} mean / median" for k in keys) + " |"
    lines = [head, "|---" * (len(keys) + 1) + "|"]
    for name, prefix in ROWS:
        cells = [f"{metrics[f'{prefix}{k}_mean']:.3f} / {metrics[f'{prefix}{k}_median']:.3f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="training wall time")
    p.add_argument("--train", type=int, default=2000, help="training SMILES (QM9, GDB order)")
    p.add_argument("--test", type=int, default=100, help="GEOM-QM9 test molecules")
    p.add_argument("--max-ref", type=int, default=10, help="reference conformers per test molecule at most")
    p.add_argument("--steps", type=int, default=20, help="reverse-SDE steps (paper: 20)")
    p.add_argument("--threshold", type=float, default=0.5, help="coverage δ, Å (paper, QM9: 0.5)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=os.environ.get("POLYDIFF_BENCH_OUT", "/tmp/polydiff_conformer_bench"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    module, steps, train_s = train(args, out)
    t0 = time.time()
    metrics, skipped = evaluate(args, module)
    log(f"evaluated in {time.time() - t0:.0f} s ({skipped} test molecules without rotatable bonds skipped)")
    print(f"\nCommand: `{CMD} --minutes {args.minutes:g} --train {args.train} --test {args.test}` — {steps} steps in "
          f"{train_s / 60:.1f} min ({args.threads} threads); {args.test - skipped} test molecules, 2K conformers "
          f"each, {args.steps} steps, δ = {args.threshold} Å\n")
    print("\n".join(table(metrics)))
    atomic_write_text(out / "conformer_bench.json", json.dumps(
        {"args": vars(args), "steps": steps, "train_seconds": train_s, "skipped": skipped, "metrics": metrics},
        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
