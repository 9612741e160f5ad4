"""The torsion score network of torsional diffusion: a torque read-out over an equivariant message-passing network.

Jing et al. (2022, §4.3) predict the score of each torsion as a *pseudoscalar*: it must not change when the whole
molecule is rotated or translated, and must change sign under a reflection (which negates every dihedral). Their
network is an e3nn tensor-product convolution with a "pseudotorque" layer at each rotatable bond. This one keeps
the same symmetry with plainer parts, written with torch-geometric message passing:

1. the conformer is rebuilt at the noisy torsions, ``pos`` turned by ``x_t − torsion_ref``
   (:func:`polydiff.plugins.molecule.torsions.rotate_torsions`);
2. invariant message passing over every atom pair of a molecule (edge features: a radial basis of the distance
   and the bond type; the diffusion time on every node) gives atom embeddings h_a;
3. a last layer gives C equivariant vectors per atom, f_a = Σ_b φ(m_ab) (r_a − r_b)/(d_ab + 1), like an EGNN
   coordinate update (Satorras et al. 2021, Eq. 4);
4. the torque of these "forces" about each rotatable bond j–k, τ_c = Σ_{a moving} u · ((r_a − r_k) × f_a,c) with
   u the unit bond vector, is a pseudoscalar — the rate at which the forces turn the moving side, the quantity a
   torsion score is for an energy (their Eq. 9 motivation) — and the output is Σ_c τ_c g_c with invariant gates
   g from the two bond atoms' embeddings and the time.

Exact invariance to rotations and translations and the sign flip under reflection are tested in float64.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from polydiff.errors import ShapeError

from .conformers import NUM_ATOM_FEATURES, NUM_BOND_TYPES
from .torsions import rotate_torsions

Tensor = torch.Tensor
COND_KEYS = ("atom_features", "pos", "bonds", "torsion_atoms", "torsion_side", "torsion_ref", "atom_mask")


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.SiLU(), nn.Linear(hidden, out))


def _layer_class():
    from torch_geometric.nn import MessagePassing

    class InvariantLayer(MessagePassing):
        """h_a ← h_a + φ_h(h_a, Σ_b φ_e(h_a, h_b, e_ab)), e_ab = [radial basis of d_ab, bond type one-hot]."""

        def __init__(self, hidden: int, edge_dim: int):
            super().__init__(aggr="add")
            self.edge = _mlp(2 * hidden + edge_dim, hidden, hidden)
            self.node = _mlp(2 * hidden, hidden, hidden)
            self.norm = nn.LayerNorm(hidden)

        def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
            m = self.propagate(edge_index, h=h, edge_attr=edge_attr)
            return h + self.node(torch.cat([self.norm(h), m], dim=-1))

        def message(self, h_i: Tensor, h_j: Tensor, edge_attr: Tensor) -> Tensor:
            return self.edge(torch.cat([h_i, h_j, edge_attr], dim=-1))

    return InvariantLayer


class TorsionScoreNet(nn.Module):
    """Torsion scores (B, T, 1) for torsions ``x`` (B, T, 1) of the molecules in ``cond`` (see
    :mod:`polydiff.plugins.molecule.conformers` for the keys); zero on padding torsions.

    Args:
        hidden: width of the atom embeddings.
        layers: invariant message-passing layers.
        channels: equivariant vectors per atom (C above).
        radial: radial basis functions of the distance (Gaussians on [0, ``cutoff``] Å).
        cutoff: range of the radial basis, Å (every pair is an edge; farther pairs see only the tail).
    """

    def __init__(self, hidden: int = 64, layers: int = 4, channels: int = 8, radial: int = 32, cutoff: float = 10.0):
        super().__init__()
        self.time_features = 12
        self.embed = nn.Linear(NUM_ATOM_FEATURES + self.time_features, hidden)
        self.register_buffer("centres", torch.linspace(0.0, float(cutoff), int(radial)), persistent=False)
        self.width = float(cutoff) / max(int(radial) - 1, 1)
        edge_dim = int(radial) + NUM_BOND_TYPES
        layer = _layer_class()
        self.layers = nn.ModuleList(layer(hidden, edge_dim) for _ in range(layers))
        self.vector = _mlp(2 * hidden + edge_dim, hidden, channels)
        self.gate = _mlp(2 * hidden + self.time_features, hidden, channels)

    def _time(self, t: Tensor, b: int, dtype) -> Tensor:
        t = torch.as_tensor(t).to(dtype).reshape(-1)
        t = t.expand(b) if t.numel() == 1 else t
        freqs = math.pi * 2.0 ** torch.arange(self.time_features // 2, dtype=dtype, device=t.device)
        return torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], dim=-1)

    def forward(self, x: Tensor, t: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        from torch_geometric.utils import scatter, to_dense_batch

        from polydiff.graphs import to_pyg

        cond = dict(cond or {})
        missing = [k for k in COND_KEYS if k not in cond]
        if missing:
            raise ShapeError(f"TorsionScoreNet needs cond keys {list(COND_KEYS)} (ConformerEnsembles); missing {missing}")
        if x.ndim != 3 or x.shape[-1] != 1 or x.shape[:2] != cond["torsion_ref"].shape:
            raise ShapeError(f"TorsionScoreNet: x must be (batch, torsions, 1) matching cond['torsion_ref'] "
                             f"{tuple(cond['torsion_ref'].shape)}; got {tuple(x.shape)}")
        atoms, side = cond["torsion_atoms"].long(), cond["torsion_side"].bool()
        b, n = cond["pos"].shape[:2]
        pos = rotate_torsions(cond["pos"].to(x.dtype), atoms, side, x[..., 0] - cond["torsion_ref"].to(x.dtype))
        time = self._time(t, b, x.dtype)
        mask = cond["atom_mask"].bool()
        feats = torch.cat([cond["atom_features"].to(x.dtype), time[:, None].expand(b, n, -1)], dim=-1)
        graph = to_pyg({"pos": pos, "h": feats}, mask)
        src, dst = graph.edge_index
        local = torch.arange(graph.num_nodes, device=x.device) - graph.ptr[graph.batch]
        bond = cond["bonds"].long()[graph.batch[src], local[src], local[dst]]
        diff = graph.pos[dst] - graph.pos[src]  # r_a − r_b for the receiving atom a = dst
        dist = diff.norm(dim=-1, keepdim=True)
        rbf = torch.exp(-((dist - self.centres.to(x.dtype)) / self.width) ** 2)
        edge_attr = torch.cat([rbf, nn.functional.one_hot(bond, NUM_BOND_TYPES).to(x.dtype)], dim=-1)
        h = self.embed(graph.h)
        for layer in self.layers:
            h = layer(h, graph.edge_index, edge_attr)
        weights = self.vector(torch.cat([h[dst], h[src], edge_attr], dim=-1))  # (E, C)
        f = scatter(weights[:, :, None] * (diff / (dist + 1.0))[:, None, :], dst, dim=0, dim_size=graph.num_nodes)
        f, _ = to_dense_batch(f, graph.batch, max_num_nodes=n, batch_size=b)  # (B, N, C, 3)
        hd, _ = to_dense_batch(h, graph.batch, max_num_nodes=n, batch_size=b)  # (B, N, H)
        idx = torch.arange(b, device=x.device)[:, None]
        rj, rk = pos[idx, atoms[..., 1]], pos[idx, atoms[..., 2]]  # (B, T, 3)
        u = (rk - rj) / (rk - rj).norm(dim=-1, keepdim=True).clamp_min(1e-9)
        arm = pos[:, None] - rk[:, :, None]  # (B, T, N, 3)
        lever = torch.cross(u[:, :, None].expand_as(arm), arm, dim=-1) * side[..., None]
        torque = torch.einsum("btnd,bncd->btc", lever, f)  # u · (arm × f) = f · (u × arm)
        gate = self.gate(torch.cat([hd[idx, atoms[..., 1]], hd[idx, atoms[..., 2]],
                                    time[:, None].expand(-1, atoms.shape[1], -1)], dim=-1))
        return (torque * gate).sum(-1, keepdim=True) * side.any(-1, keepdim=True)


__all__ = ["TorsionScoreNet"]
