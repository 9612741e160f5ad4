"""polydiff protein plugin: FoldingDiff-style backbone generation over internal angles (Wu et al. 2024),
motif infilling, PDB/mmCIF in and out, and the field's structure checks (DSSP, Rg, clashes, TM-score).

Components (``polydiff_register``): data modules ``ProteinAngles`` (any folder of PDB/mmCIF files) and
``CATHAngles`` (FoldingDiff's CATH S40 set); backbone ``FoldingDiffBERT``; task ``protein/foldingdiff``.
Files: ``.pdb``/``.cif`` readers and writers. Command: ``polydiff infill``. Found through the ``polydiff``
entry-point group; Biopython, pydssp, tmtools and matplotlib load only inside the functions that use them.
"""

from __future__ import annotations

from polydiff.hookspecs import FileFormat, hookimpl
from polydiff.plugins_manager import register_task_configs

DOMAIN = "protein"

__all__ = ["DOMAIN", "polydiff_register", "polydiff_file_formats", "polydiff_write_artifacts",
           "polydiff_evaluate", "polydiff_commands"]


@hookimpl
def polydiff_register(registry) -> None:
    from .data import CATHAngles, ProteinAngles
    from .model import FoldingDiffBERT

    registry.add("datamodule", ProteinAngles)
    registry.add("datamodule", CATHAngles)
    registry.add("backbone", FoldingDiffBERT)
    register_task_configs(registry, __name__, "configs", prefix=DOMAIN)


def _read(path):
    """A structure file as a batch of one: ``x`` (1, L, 6) raw angles (NaN where undefined), ``missing``."""
    import torch

    from .geometry import backbone_angles
    from .structure import read_backbone

    angles = torch.as_tensor(backbone_angles(read_backbone(path).coords), dtype=torch.float32)[None]
    return {"x": torch.nan_to_num(angles), "missing": torch.isnan(angles)}


def _write(samples, path):
    """``x`` (L, 6) or (1, L, 6) raw angles -> a PDB/mmCIF file of the NeRF backbone."""
    import torch

    from .geometry import nerf
    from .io import write_structure

    x = samples["x"] if isinstance(samples, dict) else samples
    x = torch.as_tensor(x)
    x = x[0] if x.ndim == 3 else x
    return write_structure(nerf(x).numpy(), path)


@hookimpl
def polydiff_file_formats():
    from .structure import CIF_SUFFIXES, PDB_SUFFIXES

    return [
        FileFormat(name="pdb", suffixes=PDB_SUFFIXES + tuple(s + ".gz" for s in PDB_SUFFIXES), domain=DOMAIN,
                   read=_read, write=_write, description="PDB backbones <-> FoldingDiff angles (Biopython; NeRF)"),
        FileFormat(name="mmcif", suffixes=CIF_SUFFIXES + tuple(s + ".gz" for s in CIF_SUFFIXES), domain=DOMAIN,
                   read=_read, write=_write, description="PDBx/mmCIF backbones <-> FoldingDiff angles"),
    ]


@hookimpl
def polydiff_write_artifacts(domain, samples, out_dir, context):
    if domain != DOMAIN:
        return None
    from .artifacts import write_artifacts

    prefix = context.get("prefix") or (context.get("stage") or "samples")
    return write_artifacts(samples, out_dir, prefix=prefix, datamodule=context.get("datamodule"))


@hookimpl
def polydiff_evaluate(domain, samples, datamodule, context):
    if domain != DOMAIN:
        return None
    from .evaluation import evaluate_samples

    return evaluate_samples(samples, datamodule, context)


@hookimpl
def polydiff_commands():
    from .infill import add_arguments, run

    return {"infill": ("generate the residues around a kept motif of a PDB/mmCIF file (kept angles unchanged)",
                       add_arguments, run)}
