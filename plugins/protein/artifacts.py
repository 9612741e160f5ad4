"""Samples as files: one PDB per generated backbone (NeRF of its angles) and a Ramachandran PNG beside the
training set's."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .data import angles_of_samples
from .evaluation import ramachandran_png, rebuild
from .io import write_structure


def write_artifacts(samples: Mapping[str, Any], out_dir: str | Path, prefix: str = "samples", datamodule=None,
                    suffix: str = ".pdb") -> list[Path]:
    out_dir = Path(out_dir)
    angles = angles_of_samples(dict(samples), datamodule)
    known = samples.get("known")
    paths = []
    for b, (a, xyz) in enumerate(zip(angles, rebuild(angles))):
        bfac = None
        if known is not None:  # B-factor 1 for residues whose angles were given (kept motif), 0 if generated
            bfac = known[b, :a.shape[0]].reshape(a.shape[0], -1).any(-1).float().numpy()
        paths.append(write_structure(xyz, out_dir / f"{prefix}_{b:04d}{suffix}", bfactors=bfac))
    reference = datamodule.phi_psi_histogram() if hasattr(datamodule, "phi_psi_histogram") else None
    paths.append(ramachandran_png(angles, reference, out_dir / f"{prefix}_ramachandran.png"))
    return paths
