"""Internal coordinates of a protein backbone (FoldingDiff's six angles) and NeRF reconstruction.

Wu et al. 2024, "Protein structure generation via folding diffusion" (Nat. Commun.; arXiv 2209.15611),
§2.1 and Fig. 1: a backbone of L residues is the sequence of its dihedrals φ, ψ, ω and bond angles
θ₁ = ∠N-CA-C, θ₂ = ∠CA-C-N₊₁, θ₃ = ∠C-N₊₁-CA₊₁. Row i of the (L, 6) table, in the order of
:data:`ANGLE_NAMES`, holds

* φ_i = dihedral(C_{i-1}, N_i, CA_i, C_i)            (undefined for i = 0)
* ψ_i = dihedral(N_i, CA_i, C_i, N_{i+1})            (undefined for i = L-1)
* ω_i = dihedral(CA_i, C_i, N_{i+1}, CA_{i+1})       (undefined for i = L-1)
* θ₁_i = angle(N_i, CA_i, C_i)                        (defined for every residue)
* θ₂_i = angle(CA_i, C_i, N_{i+1})                    (undefined for i = L-1)
* θ₃_i = angle(C_i, N_{i+1}, CA_{i+1})                (undefined for i = L-1)

which is FoldingDiff's ``EXHAUSTIVE_ANGLES`` (phi, psi, omega, tau, CA:C:1N, C:1N:1CA) with biotite's
dihedral convention. One difference: FoldingDiff stores τ of residue i+1 in row i (its first residue is a
fixed template); here θ₁ stays on its own residue, so the first residue's bond angle is kept too.
Undefined entries are reported by :func:`undefined_mask` (the batch contract's ``missing``), never filled.

NeRF (Parsons et al. 2005, "Practical conversion from torsion space to Cartesian space for in silico
protein synthesis", J. Comput. Chem. 26:1063) places each atom from the three before it with a bond length,
a bond angle and a dihedral. Bond lengths are the standard N–CA 1.46, CA–C 1.52, C–N 1.33 Å (Engh & Huber
1991); FoldingDiff's code uses 1.46/1.54/1.34, which its authors mark as approximate.
"""

from __future__ import annotations

import math

import numpy as np
import torch

ANGLE_NAMES = ("phi", "psi", "omega", "theta1", "theta2", "theta3")
N_CA, CA_C, C_N = 1.46, 1.52, 1.33
C_O = 1.23  # carbonyl bond, for the O atoms DSSP needs


def wrap(x):
    """Wrap angles to [−π, π) (numpy arrays or torch tensors)."""
    if torch.is_tensor(x):
        return torch.remainder(x + math.pi, 2 * math.pi) - math.pi
    return np.remainder(np.asarray(x) + np.pi, 2 * np.pi) - np.pi


def dihedral(p0, p1, p2, p3):
    """Dihedral angle p0-p1-p2-p3 in (−π, π] (IUPAC sign, as Bio.PDB.vectors.calc_dihedral); arrays (..., 3)."""
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b0, b1), np.cross(b1, b2)
    m1 = np.cross(n1, b1 / np.linalg.norm(b1, axis=-1, keepdims=True))
    x = (n1 * n2).sum(-1)
    y = (m1 * n2).sum(-1)
    return np.arctan2(-y, x)


def bond_angle(p0, p1, p2):
    """Angle p0-p1-p2 in [0, π]; arrays (..., 3)."""
    u, v = p0 - p1, p2 - p1
    cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.arccos(np.clip(cos, -1.0, 1.0))


def backbone_angles(coords: np.ndarray) -> np.ndarray:
    """(L, 3, 3) N/CA/C coordinates -> (L, 6) angles (radians, order :data:`ANGLE_NAMES`), NaN where undefined."""
    coords = np.asarray(coords, dtype=np.float64)
    n, ca, c = coords[:, 0], coords[:, 1], coords[:, 2]
    L = coords.shape[0]
    out = np.full((L, 6), np.nan)
    out[:, 3] = bond_angle(n, ca, c)
    if L > 1:
        out[1:, 0] = dihedral(c[:-1], n[1:], ca[1:], c[1:])
        out[:-1, 1] = dihedral(n[:-1], ca[:-1], c[:-1], n[1:])
        out[:-1, 2] = dihedral(ca[:-1], c[:-1], n[1:], ca[1:])
        out[:-1, 4] = bond_angle(ca[:-1], c[:-1], n[1:])
        out[:-1, 5] = bond_angle(c[:-1], n[1:], ca[1:])
    return out


def undefined_mask(length: int, rows: int | None = None) -> np.ndarray:
    """(rows, 6) bool: True at the angles a chain of ``length`` residues does not define (φ of the first
    residue; ψ, ω, θ₂, θ₃ of the last). Rows past ``length`` (padding) are False."""
    rows = length if rows is None else rows
    m = np.zeros((rows, 6), dtype=bool)
    if length > 0:
        m[0, 0] = True
        m[length - 1, [1, 2, 4, 5]] = True
    return m


def _place(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, length: float, angle: torch.Tensor,
           torsion: torch.Tensor) -> torch.Tensor:
    """NeRF step (Parsons et al. 2005, Eq. 2–3): atom d with |cd| = length, ∠bcd = angle, dihedral abcd =
    torsion. a, b, c: (B, 3); angle, torsion: (B,)."""
    bc = c - b
    bc = bc / bc.norm(dim=-1, keepdim=True)
    n = torch.linalg.cross(b - a, bc, dim=-1)
    n = n / n.norm(dim=-1, keepdim=True)
    m = torch.linalg.cross(n, bc, dim=-1)
    d2 = torch.stack([-length * torch.cos(angle),
                      length * torch.sin(angle) * torch.cos(torsion),
                      length * torch.sin(angle) * torch.sin(torsion)], dim=-1)
    return c + d2[..., 0:1] * bc + d2[..., 1:2] * m + d2[..., 2:3] * n


def nerf(angles, lengths=None) -> torch.Tensor:
    """Angles (B, L, 6) or (L, 6) (radians, order :data:`ANGLE_NAMES`) -> N/CA/C coordinates (B, L, 3, 3)
    (or (L, 3, 3)), float64, centred on the CA mean of the first ``lengths[b]`` residues.

    Uses exactly the defined entries (undefined ones — terminal φ, ψ, ω, θ₂, θ₃ — may hold anything). The
    first residue is placed in a fixed frame: N at the origin, CA on +x, C in the xy-plane.
    """
    a = torch.as_tensor(angles, dtype=torch.float64)
    single = a.ndim == 2
    if single:
        a = a[None]
    a = torch.nan_to_num(a)
    B, L, _ = a.shape
    phi, psi, omg, t1, t2, t3 = a.unbind(-1)
    zero = torch.zeros(B, dtype=torch.float64)
    N0 = torch.zeros(B, 3, dtype=torch.float64)
    CA0 = torch.stack([zero + N_CA, zero, zero], -1)
    # C0 at CA + CA_C·(−cos θ₁, sin θ₁, 0): ∠N-CA-C = θ₁
    C0 = CA0 + CA_C * torch.stack([-torch.cos(t1[:, 0]), torch.sin(t1[:, 0]), zero], -1)
    atoms = [N0, CA0, C0]
    for i in range(L - 1):
        n_next = _place(atoms[-3], atoms[-2], atoms[-1], C_N, t2[:, i], psi[:, i])
        ca_next = _place(atoms[-2], atoms[-1], n_next, N_CA, t3[:, i], omg[:, i])
        c_next = _place(atoms[-1], n_next, ca_next, CA_C, t1[:, i + 1], phi[:, i + 1])
        atoms += [n_next, ca_next, c_next]
    xyz = torch.stack(atoms, 1).reshape(B, L, 3, 3)
    if lengths is None:
        lengths = torch.full((B,), L)
    lengths = torch.as_tensor(lengths).reshape(B)
    keep = (torch.arange(L)[None] < lengths[:, None]).to(xyz.dtype)  # (B, L)
    centre = (xyz[:, :, 1] * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1)
    xyz = xyz - centre[:, None, None]
    return xyz[0] if single else xyz


def add_oxygens(coords: np.ndarray) -> np.ndarray:
    """(L, 3, 3) N/CA/C -> (L, 4, 3) N/CA/C/O with each carbonyl O in the peptide plane, on the bisector
    opposite CA_i and N_{i+1} at 1.23 Å (the last residue's O opposite its N-CA-C bisector; sp² geometry),
    as DSSP's hydrogen-bond energy needs the C=O groups."""
    coords = np.asarray(coords, dtype=np.float64)
    n, ca, c = coords[:, 0], coords[:, 1], coords[:, 2]

    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    nxt = np.empty_like(n)
    nxt[:-1] = n[1:]
    nxt[-1] = c[-1] + C_N * unit(unit(c[-1] - ca[-1]) + unit(ca[-1] - n[-1]))
    o = c + C_O * unit(unit(c - ca) + unit(c - nxt))
    return np.concatenate([coords, o[:, None]], 1)


def circular_mean(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """atan2(mean sin, mean cos) over the finite entries (Mardia & Jupp 2000, §2.2.1)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    s = np.where(ok, np.sin(np.where(ok, v, 0)), 0).sum(axis)
    c = np.where(ok, np.cos(np.where(ok, v, 0)), 0).sum(axis)
    return np.arctan2(s, c)


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD of point sets (N, 3) after optimal superposition (Kabsch 1976)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.sqrt(((a @ r - b) ** 2).sum(1).mean()))
