"""polydiff molecule plugin: E(3)-equivariant diffusion for 3D molecules (EDM, Hoogeboom et al. 2022) with
RDKit file formats, ETKDG-embedded SMILES datasets, and the field's checks (stability, validity, uniqueness,
novelty, PoseBusters).

Also conformer generation by torsional diffusion (Jing et al. 2022) over the rotatable-bond torsions.

Components (``polydiff_register``): data modules ``SmilesConformers``, ``QM9Smiles``, ``MoleculeFiles``,
``ConformerEnsembles``; backbones ``EGNN`` (torch-geometric), ``EDMBackbone`` (EGNN behind
:class:`polydiff.graphs.PyGBackbone`) and ``TorsionScoreNet``; tasks ``molecule/edm_qm9``, ``molecule/tiny``,
``molecule/torsional_qm9`` and ``molecule/torsional_tiny``. Command: ``polydiff conformers``. Files:
SDF/MOL2/XYZ/SMILES readers, SDF/XYZ writers. Dataset: ``qm9_smiles`` (pooch + sha256). RDKit, torch-geometric and PoseBusters load only inside the functions that use
them.
"""

from __future__ import annotations

from polydiff.hookspecs import FileFormat, hookimpl
from polydiff.plugins_manager import register_task_configs

DOMAIN = "molecule"

__all__ = ["DOMAIN", "polydiff_register", "polydiff_file_formats", "polydiff_write_artifacts",
           "polydiff_evaluate", "polydiff_datasets", "polydiff_commands"]


@hookimpl
def polydiff_register(registry) -> None:
    from .conformers import ConformerEnsembles
    from .data import MoleculeFiles, QM9Smiles, SmilesConformers
    from .model import EDMBackbone, EGNN
    from .torsion_net import TorsionScoreNet

    for cls in (SmilesConformers, QM9Smiles, MoleculeFiles, ConformerEnsembles):
        registry.add("datamodule", cls)
    for cls in (EGNN, EDMBackbone, TorsionScoreNet):
        registry.add("backbone", cls)
    register_task_configs(registry, __name__, "configs", prefix=DOMAIN)


def _reader(kind):
    def read(path):
        """A molecule file as a batch: ``x`` = {pos, types (one-hot over QM9's H, C, N, O, F), charges} of the first
        record with 3D coordinates and QM9 elements, ``presence``, and ``mols`` = every RDKit molecule read (bad
        records in ``errors``). :class:`DataError` when no record qualifies."""
        import torch

        from polydiff.errors import DataError

        from .chem import QM9_ATOM_TYPES, arrays_to_item, mol_to_arrays
        from .io import read_molecules

        report = read_molecules(path).raise_if_empty()
        for mol in report.mols:
            try:
                item = arrays_to_item(mol_to_arrays(mol, QM9_ATOM_TYPES), len(QM9_ATOM_TYPES))
            except DataError:
                continue
            if not all(bool(torch.isfinite(v).all()) for v in item.values()):
                continue
            return {"x": {k: v[None] for k, v in item.items()},
                    "presence": torch.ones(1, item["pos"].shape[0], dtype=torch.bool),
                    "mols": report.mols, "errors": report.errors}
        raise DataError(f"{path}: no record with finite 3D coordinates and only QM9 elements ({report.summary()})")

    read.__name__ = f"read_{kind}"
    return read


def _write_sdf(samples, path):
    from .artifacts import molecules_of
    from .evaluation import atom_types_of
    from .io import write_sdf

    if isinstance(samples, dict) and "mols" in samples:
        return write_sdf(samples["mols"], path)
    mols, legends = molecules_of(samples, atom_types_of(None, samples))
    return write_sdf(mols, path, names=legends)


@hookimpl
def polydiff_file_formats():
    # XYZ and SMILES files are read by the data modules and polydiff.plugins.molecule.io; they are not registered
    # here: .xyz belongs to the point-cloud plugin's format, and a SMILES list has no coordinates.
    from .io import MOL2_SUFFIXES, SDF_SUFFIXES

    return [
        FileFormat(name="sdf", suffixes=SDF_SUFFIXES, domain=DOMAIN, read=_reader("sdf"), write=_write_sdf,
                   description="MDL SD files <-> 3D molecules (RDKit; bad records reported, rest read)"),
        FileFormat(name="mol2", suffixes=MOL2_SUFFIXES, domain=DOMAIN, read=_reader("mol2"),
                   description="Tripos MOL2 (read, RDKit)"),
    ]


@hookimpl
def polydiff_write_artifacts(domain, samples, out_dir, context):
    if domain != DOMAIN:
        return None
    from .artifacts import write_artifacts

    prefix = context.get("prefix") or (context.get("stage") or "samples")
    if _is_conformer_data(context.get("datamodule")):
        from .conformer_sampling import write_conformers

        return [write_conformers(samples, context["datamodule"], out_dir, prefix)]
    return write_artifacts(samples, out_dir, prefix=prefix, datamodule=context.get("datamodule"))


def _is_conformer_data(datamodule) -> bool:
    from .conformers import ConformerEnsembles

    return isinstance(datamodule, ConformerEnsembles)


@hookimpl
def polydiff_evaluate(domain, samples, datamodule, context):
    if domain != DOMAIN:
        return None
    if _is_conformer_data(datamodule):
        from .conformer_sampling import evaluate_conformers

        return evaluate_conformers(samples, datamodule, context)
    from .evaluation import evaluate_samples

    return evaluate_samples(samples, datamodule, context)


@hookimpl
def polydiff_commands():
    from .conformer_sampling import add_arguments, run

    return {"conformers": ("SMILES -> K conformers each by torsional diffusion (SDF)", add_arguments, run)}


@hookimpl
def polydiff_datasets():
    from .datasets import DATASETS

    return list(DATASETS)
