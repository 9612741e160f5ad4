"""The field's structure checks for sets of backbones, all on (L, 6) angle tables or (L, 3, 3) N/CA/C.

* per-angle KL divergence KL(reference ‖ generated) of 36-bin (10°) histograms on [−π, π), and the φ/ψ
  Jensen–Shannon divergence of 36×36-bin Ramachandran histograms (FoldingDiff, Wu et al. 2024, §4.2 and
  Table 1 compare angle distributions this way). Every bin gets a pseudocount of 1 (Laplace), so an
  empty bin never makes the divergence infinite; values are in nats;
* secondary-structure fractions by DSSP (Kabsch & Sander 1983) as implemented by ``pydssp`` (Minami 2023),
  on N/CA/C plus carbonyl O placed in the peptide plane: mean over chains of the fraction of residues in
  helix (H) and strand (E);
* radius of gyration of the CA atoms divided by L^0.4 (Flory scaling of compact chains, Rg ≈ R₀ L^ν with
  ν ≈ 0.4 for folded proteins; Skolnick et al. 1997; Hong & Lei 2009): ≈ 2.1 Å for real domains, larger for
  extended chains;
* CA–CA clash rate: the fraction of chains with any two CA atoms closer than 3 Å among non-neighbours
  (|i − j| ≥ 2; consecutive CA are 3.8 Å apart);
* novelty: for each chain the maximum TM-score (Zhang & Skolnick 2004/2005, TM-align via ``tmtools``,
  normalised by the chain's own length) against every training chain (FoldingDiff §4.3, "scTM"-free).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .geometry import ANGLE_NAMES, add_oxygens

BINS = 36
EDGES = np.linspace(-np.pi, np.pi, BINS + 1)


def _finite(v):
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    return v[np.isfinite(v)]


def kl_divergence(reference: np.ndarray, generated: np.ndarray, bins: int = BINS) -> float:
    """KL(P_ref ‖ P_gen) of two sets of angles (radians) with Laplace-smoothed histograms, in nats."""
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    p = np.histogram(_finite(reference), edges)[0] + 1.0
    q = np.histogram(_finite(generated), edges)[0] + 1.0
    p, q = p / p.sum(), q / q.sum()
    return float((p * np.log(p / q)).sum())


def jensen_shannon(a_phi, a_psi, b_phi, b_psi, bins: int = BINS) -> float:
    """Jensen–Shannon divergence (nats, ≤ ln 2) of two Ramachandran (φ, ψ) distributions."""
    edges = np.linspace(-np.pi, np.pi, bins + 1)

    def hist(phi, psi):
        phi, psi = np.asarray(phi, float).reshape(-1), np.asarray(psi, float).reshape(-1)
        ok = np.isfinite(phi) & np.isfinite(psi)
        h = np.histogram2d(phi[ok], psi[ok], [edges, edges])[0] + 1.0
        return h / h.sum()

    p, q = hist(a_phi, a_psi), hist(b_phi, b_psi)
    m = 0.5 * (p + q)
    return float(0.5 * (p * np.log(p / m)).sum() + 0.5 * (q * np.log(q / m)).sum())


def dssp_fractions(coords: Sequence[np.ndarray]) -> tuple[float, float]:
    """Mean helix (H) and strand (E) fractions over chains, by pydssp on N/CA/C + placed O."""
    import pydssp

    alpha, beta = [], []
    for xyz in coords:
        ss = np.asarray(pydssp.assign(add_oxygens(xyz).astype(np.float32), out_type="c3"))
        alpha.append(float((ss == "H").mean()))
        beta.append(float((ss == "E").mean()))
    return float(np.mean(alpha)), float(np.mean(beta))


def rg_scaled(ca: np.ndarray) -> float:
    """Radius of gyration of CA atoms (L, 3) divided by L^0.4 (Å)."""
    ca = np.asarray(ca, dtype=np.float64)
    rg = np.sqrt(((ca - ca.mean(0)) ** 2).sum(1).mean())
    return float(rg / len(ca) ** 0.4)


def has_clash(ca: np.ndarray, cutoff: float = 3.0) -> bool:
    """True if two CA atoms with |i − j| ≥ 2 are closer than ``cutoff`` Å."""
    ca = np.asarray(ca, dtype=np.float64)
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    i, j = np.triu_indices(len(ca), k=2)
    return bool((d[i, j] < cutoff).any())


def tm_score(ca_a: np.ndarray, ca_b: np.ndarray) -> float:
    """TM-score of chain a against chain b by TM-align, normalised by the length of a."""
    import tmtools

    a = np.ascontiguousarray(ca_a, dtype=np.float64)
    b = np.ascontiguousarray(ca_b, dtype=np.float64)
    return float(tmtools.tm_align(a, b, "G" * len(a), "G" * len(b)).tm_norm_chain1)


def max_tm(queries: Sequence[np.ndarray], references: Sequence[np.ndarray],
           skip: Sequence[int | None] | None = None) -> np.ndarray:
    """For each query CA trace, the maximum TM-score against the references (``skip[i]``: a reference index
    left out for query i, e.g. the query itself when it is a training chain)."""
    out = np.zeros(len(queries))
    for i, q in enumerate(queries):
        best = 0.0
        for j, r in enumerate(references):
            if skip is not None and skip[i] == j:
                continue
            best = max(best, tm_score(q, r))
        out[i] = best
    return out


def structure_table(angles: Sequence[np.ndarray], coords: Sequence[np.ndarray], reference_angles: np.ndarray,
                    train_ca: Sequence[np.ndarray] | None = None, skip: Sequence[int | None] | None = None
                    ) -> dict[str, float]:
    """All checks for one set of chains.

    Args:
        angles: per chain (L, 6) raw angles (NaN where undefined).
        coords: per chain (L, 3, 3) N/CA/C coordinates (e.g. NeRF of ``angles``).
        reference_angles: (R, 6) angle rows of the reference set (NaN allowed).
        train_ca: training CA traces for the max-TM novelty (omitted if None).
        skip: see :func:`max_tm`.
    """
    rows = np.concatenate([np.asarray(a, dtype=np.float64) for a in angles])
    ref = np.asarray(reference_angles, dtype=np.float64)
    out: dict[str, float] = {}
    for k, name in enumerate(ANGLE_NAMES):
        out[f"kl_{name}"] = kl_divergence(ref[:, k], rows[:, k])
    out["phi_psi_jsd"] = jensen_shannon(ref[:, 0], ref[:, 1], rows[:, 0], rows[:, 1])
    out["alpha"], out["beta"] = dssp_fractions(coords)
    out["rg_l04"] = float(np.mean([rg_scaled(c[:, 1]) for c in coords]))
    out["clash_rate"] = float(np.mean([has_clash(c[:, 1]) for c in coords]))
    if train_ca is not None:
        out["max_tm_train"] = float(max_tm([c[:, 1] for c in coords], train_ca, skip).mean())
    return out
