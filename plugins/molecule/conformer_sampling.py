"""Conformers from a torsional-diffusion checkpoint: the ``polydiff conformers`` command and its evaluation.

For each molecule, K ETKDG embeddings give K local structures (Jing et al. 2022, §4.4: "we sample the local
structures with RDKit"); the model's sampler (reverse SDE from torsions drawn from the wrapped prior, 20 steps by
default in ``molecule/torsional_qm9``) generates one set of torsions for each, and the torsions are set on the
embeddings (:func:`polydiff.plugins.molecule.torsions.set_torsions`). A molecule without rotatable bonds is fixed
by its local structure: its K ETKDG conformers are written as they are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from polydiff.errors import ConfigError, DataError

from .conformer_metrics import QM9_THRESHOLD, coverage_matching, ensemble_table, rmsd_matrix
from .conformers import collate_conformers, item_of, local_structure
from .torsions import rotatable_bonds, set_torsions


def with_torsions(mols: Sequence, torsions: torch.Tensor) -> list:
    """Copies of ``mols`` (one conformer each) with their rotatable-bond torsions set to the rows of ``torsions``
    (B, T, 1), each read up to its own number of torsions."""
    from rdkit import Chem

    out = []
    for mol, row in zip(mols, torsions):
        mol = Chem.Mol(mol)
        bonds = rotatable_bonds(mol)
        set_torsions(mol, row[: len(bonds), 0].double().numpy(), bonds)
        out.append(mol)
    return out


@torch.no_grad()
def denoise_torsions(module, starts: Sequence, seed: int = 0, **sample_kw) -> list:
    """One generated conformer per starting structure in ``starts`` (RDKit, one conformer each, the same molecule or
    not): the module samples torsions for their local structures, which are then set on copies of them."""
    batch = collate_conformers([item_of(m) for m in starts])
    g = torch.Generator(device=module.device).manual_seed(seed)
    out = module.sample(len(starts), generator=g, cond=batch["cond"], presence=batch["presence"],
                        shape=tuple(batch["x"].shape[1:]), **sample_kw)
    return with_torsions(starts, out["x"].detach().cpu())


def generate_conformers(module, mol, num: int, seed: int = 0, **sample_kw) -> list:
    """``num`` conformers of ``mol`` (RDKit, hydrogens explicit) as RDKit molecules with one conformer each:
    ``num`` ETKDG local structures (seeds ``seed + 1000 k``) through :func:`denoise_torsions`."""
    starts = [local_structure(mol, seed + 1000 * k) for k in range(num)]
    if not rotatable_bonds(starts[0]):
        return starts
    return denoise_torsions(module, starts, seed, **sample_kw)


def sample_conformers(samples: Mapping[str, Any], datamodule) -> dict[int, tuple[list, list]]:
    """Samples drawn with :meth:`ConformerEnsembles.sample_inputs` → per validation molecule index: (generated
    conformers, their ETKDG starting structures), both as RDKit molecules."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    cond = samples.get("cond") or {}
    if "molecule_index" not in cond:
        raise DataError("conformer samples carry no cond['molecule_index'] (draw them with ConformerEnsembles)")
    molecules = datamodule.validation_molecules()
    groups: dict[int, tuple[list, list]] = {}
    for i, m in enumerate(cond["molecule_index"].tolist()):
        start = Chem.Mol(molecules[m][1][0])
        conf = start.GetConformer()
        for a, p in enumerate(cond["pos"][i, : start.GetNumAtoms()].double().tolist()):
            conf.SetAtomPosition(a, Point3D(*p))
        gen = with_torsions([start], samples["x"][i: i + 1].cpu())[0]
        groups.setdefault(m, ([], []))
        groups[m][0].append(gen)
        groups[m][1].append(start)
    return groups


def write_conformers(samples: Mapping[str, Any], datamodule, out_dir, prefix: str = "samples") -> Path:
    """The generated conformers of :func:`sample_conformers` as ``<prefix>.sdf``, records named ``SMILES_k``."""
    from .io import write_sdf

    smiles = [smi for smi, _ in datamodule.validation_molecules()]
    named = [(f"{smiles[m]}_{k}", g) for m, (gen, _) in sample_conformers(samples, datamodule).items()
             for k, g in enumerate(gen)]
    return write_sdf([g for _, g in named], Path(out_dir) / f"{prefix}.sdf", names=[n for n, _ in named])


def evaluate_conformers(samples: Mapping[str, Any], datamodule, context: Mapping[str, Any] | None = None
                        ) -> dict[str, float]:
    """COV/AMR of the generated conformers against each validation molecule's reference ensemble, beside the
    same numbers for their ETKDG starting structures (``…/etkdg/…``: the RDKit baseline, measured by this code)."""
    threshold = float((context or {}).get("threshold", getattr(datamodule, "threshold", QM9_THRESHOLD)))
    molecules = datamodule.validation_molecules()
    model, etkdg = [], []
    for m, (gen, start) in sample_conformers(samples, datamodule).items():
        ref = molecules[m][1]
        model.append(coverage_matching(rmsd_matrix(gen, ref), threshold))
        etkdg.append(coverage_matching(rmsd_matrix(start, ref), threshold))
    out = {"molecule/conformers/molecules": float(len(model)), "molecule/conformers/threshold": threshold}
    out.update(ensemble_table(model, "molecule/conformers/"))
    out.update(ensemble_table(etkdg, "molecule/conformers/etkdg/"))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="torsional-diffusion checkpoint (e.g. trained on molecule/torsional_qm9)")
    p.add_argument("--smiles", nargs="+", required=True,
                   help="SMILES strings, or one CSV/.smi file of SMILES (its --column)")
    p.add_argument("--column", default="smiles", help="SMILES column of a CSV given to --smiles")
    p.add_argument("--num", type=int, default=10, help="conformers per molecule (K)")
    p.add_argument("--out", required=True, help="output SDF (K records per molecule, named SMILES_k)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0)


def read_inputs(values: Sequence[str], column: str) -> list[tuple[str, str]]:
    """(label, SMILES) pairs from SMILES strings or a single SMILES file."""
    from .io import read_smiles_list

    if len(values) == 1 and Path(values[0]).is_file():
        entries, errors = read_smiles_list(Path(values[0]), column)
        for e in errors:
            print(f"polydiff conformers: skipped {values[0]} {e}", file=sys.stderr)
        return [(f"{values[0]}:{line}", smi) for line, smi in entries]
    return [(smi, smi) for smi in values]


def run(args) -> int:
    from rdkit import Chem
    from rich.progress import track

    from polydiff.training import DiffusionModule

    from .io import quiet_rdkit, write_sdf
    from .torsion_net import TorsionScoreNet

    if args.num < 1:
        raise ConfigError(f"--num must be >= 1; got {args.num}")
    module = DiffusionModule.from_checkpoint(args.ckpt)
    if not any(isinstance(m, TorsionScoreNet) for m in module.modules()):
        raise ConfigError(f"{args.ckpt} is not a torsional-diffusion checkpoint (no TorsionScoreNet backbone; "
                          f"train one with molecule/torsional_qm9)")
    kw = {"progress": False} if args.steps is None else {"progress": False, "steps": args.steps}
    mols, names, failed = [], [], 0
    for label, smi in track(read_inputs(args.smiles, args.column), description="conformers"):
        with quiet_rdkit():
            mol = Chem.MolFromSmiles(smi)
        if mol is None:
            print(f"polydiff conformers: {label}: unparsable SMILES {smi!r}, skipped", file=sys.stderr)
            failed += 1
            continue
        try:
            confs = generate_conformers(module, Chem.AddHs(mol), args.num, args.seed, **kw)
        except DataError as exc:
            print(f"polydiff conformers: {label}: {exc}, skipped", file=sys.stderr)
            failed += 1
            continue
        mols += confs
        names += [f"{smi}_{k}" for k in range(len(confs))]
    if not mols:
        raise DataError(f"no conformers generated ({failed} input(s) failed)")
    print(write_sdf(mols, args.out, names=names))
    return 0
