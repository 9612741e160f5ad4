"""Conformer-ensemble metrics: coverage and matching (Ganea et al. 2021, GeoMol, §5; Jing et al. 2022, Eq. 12).

For a molecule with generated conformers {C_g} and reference conformers {C_r}, with RMSD the heavy-atom RMSD after
optimal alignment over the molecule's symmetries (RDKit ``GetBestRMS`` on hydrogen-free copies):

    COV-R = |{r : min_g RMSD(g, r) < δ}| / |{r}|     AMR-R = mean_r min_g RMSD(g, r)      (recall: references found)
    COV-P = |{g : min_r RMSD(g, r) < δ}| / |{g}|     AMR-P = mean_g min_r RMSD(g, r)      (precision: samples real)

δ = 0.5 Å on GEOM-QM9 and 0.75 Å on GEOM-DRUGS. Papers report the mean and the median of each over the test
molecules; so does :func:`ensemble_table`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from polydiff.errors import ConfigError

QM9_THRESHOLD, DRUGS_THRESHOLD = 0.5, 0.75


def rmsd_matrix(generated: Sequence, reference: Sequence) -> np.ndarray:
    """(G, R) heavy-atom best RMSDs (Å) between conformers given as RDKit molecules of one compound."""
    from rdkit import Chem
    from rdkit.Chem import rdMolAlign

    gen = [Chem.RemoveHs(m) for m in generated]
    ref = [Chem.RemoveHs(m) for m in reference]
    return np.array([[rdMolAlign.GetBestRMS(g, r) for r in ref] for g in gen], dtype=np.float64).reshape(len(gen), len(ref))


def coverage_matching(rmsd: np.ndarray, threshold: float = QM9_THRESHOLD) -> dict[str, float]:
    """COV-R, AMR-R, COV-P, AMR-P of one molecule from its (G, R) RMSD matrix."""
    rmsd = np.asarray(rmsd, dtype=np.float64)
    if rmsd.ndim != 2 or 0 in rmsd.shape:
        raise ConfigError(f"coverage needs a (generated, reference) RMSD matrix with both sides non-empty; "
                          f"got shape {rmsd.shape}")
    best_r, best_g = rmsd.min(0), rmsd.min(1)
    return {"cov_r": float((best_r < threshold).mean()), "amr_r": float(best_r.mean()),
            "cov_p": float((best_g < threshold).mean()), "amr_p": float(best_g.mean())}


def ensemble_table(per_molecule: Sequence[dict[str, float]], prefix: str = "") -> dict[str, float]:
    """Mean and median over molecules of each metric of :func:`coverage_matching`."""
    out = {}
    for key in ("cov_r", "amr_r", "cov_p", "amr_p"):
        values = np.array([m[key] for m in per_molecule], dtype=np.float64)
        out[f"{prefix}{key}_mean"] = float(values.mean())
        out[f"{prefix}{key}_median"] = float(np.median(values))
    return out


__all__ = ["rmsd_matrix", "coverage_matching", "ensemble_table", "QM9_THRESHOLD", "DRUGS_THRESHOLD"]
