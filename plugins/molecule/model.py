"""The EDM denoiser: an E(n)-equivariant graph network written with torch-geometric message passing.

EGNN (Satorras, Hoogeboom & Welling 2021, Eq. 3–6) with the changes of EDM (Hoogeboom et al. 2022, §3.3 and
App. B): every pair of atoms of a molecule is an edge (the graph is fully connected per molecule,
:func:`polydiff.graphs.to_pyg`); the edge model sees both atoms' features, the squared distance now and at the
input; the coordinate update is normalised by the distance, ``(x_i − x_j)/(d_ij + 1)``, and bounded with
``tanh`` times ``coords_range`` (15 Å) for stability; the diffusion time is a node feature. The network maps the
noisy positions and features to ε:

    ε̂_pos = x_L − x_0, projected onto the zero-centre-of-mass subspace of each molecule (EDM Eq. 13);
    ε̂_h   = a linear read-out of the last node embedding (time feature dropped).

Run it inside the dense engine through :class:`polydiff.graphs.PyGBackbone` (which builds the graphs of the
present atoms and pads the outputs back). Invariance of ε̂_h and equivariance of ε̂_pos to rotations,
reflections, translations and atom permutations hold exactly (tested in float64).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from polydiff.errors import ConfigError, ShapeError

Tensor = torch.Tensor


def _mlp(inp: int, hidden: int, out: int, act_last: bool = True) -> nn.Sequential:
    layers = [nn.Linear(inp, hidden), nn.SiLU(), nn.Linear(hidden, out)]
    if act_last:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def _layer_class():
    from torch_geometric.nn import MessagePassing

    class EGNNLayer(MessagePassing):
        """One EGNN layer: messages m_ij = φ_e(h_i, h_j, d_ij², d⁰_ij²) gated by an attention weight σ(φ_a(m_ij))
        (EDM's ``attention=True``), node update h_i ← h_i + φ_h(h_i, Σ_j m_ij) (sum aggregation), and the
        equivariant coordinate update x_i ← x_i + Σ_j (x_i − x_j)/(d_ij + 1) · r tanh(φ_x(m_ij)) (EDM App. B)."""

        def __init__(self, hidden: int, coords_range: float = 15.0, aggregation_norm: float = 1.0):
            super().__init__(aggr="add")
            self.edge = _mlp(2 * hidden + 2, hidden, hidden)
            self.att = nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid())
            self.node = _mlp(2 * hidden, hidden, hidden, act_last=False)
            last = nn.Linear(hidden, 1, bias=False)
            nn.init.xavier_uniform_(last.weight, gain=0.001)  # start near the identity map of the coordinates
            self.coord = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last)
            self.coords_range, self.norm = float(coords_range), float(aggregation_norm)

        def forward(self, h: Tensor, x: Tensor, edge_index: Tensor, d0: Tensor) -> tuple[Tensor, Tensor]:
            out = self.propagate(edge_index, h=h, x=x, d0=d0) / self.norm
            m, dx = out[:, :-3], out[:, -3:]
            return h + self.node(torch.cat([h, m], dim=-1)), x + dx

        def message(self, h_i: Tensor, h_j: Tensor, x_i: Tensor, x_j: Tensor, d0: Tensor) -> Tensor:
            diff = x_i - x_j
            d2 = (diff * diff).sum(-1, keepdim=True)
            m = self.edge(torch.cat([h_i, h_j, d2, d0], dim=-1))
            m = m * self.att(m)
            step = torch.tanh(self.coord(m)) * self.coords_range
            return torch.cat([m, diff / (torch.sqrt(d2 + 1e-8) + 1.0) * step], dim=-1)

    return EGNNLayer


class EGNN(nn.Module):
    """EDM's ε-network for molecules (see the module docstring); called by :class:`polydiff.graphs.PyGBackbone`
    as ``EGNN(graph, t, cond)`` with the parts as node attributes of ``graph``.

    Args:
        features: node-feature parts and their widths, e.g. ``{"types": 5, "charges": 1}`` (all but ``coords``).
        coords: name of the positions part.
        hidden: width of the node embedding (EDM: 256).
        layers: number of EGNN layers (EDM: 9).
        coords_range: bound of each coordinate message, Å (EDM: 15).
        aggregation_norm: sums over neighbours are divided by it (EDM on QM9: 1).
        context_features: width of ``cond["property"]`` (batch, C) appended to every node's input features for
            conditional generation (EDM §3.4: the property as an extra node feature); 0 = unconditional.
    """

    def __init__(self, features: Mapping[str, int] | None = None, coords: str = "pos", hidden: int = 256,
                 layers: int = 9, coords_range: float = 15.0, aggregation_norm: float = 1.0,
                 context_features: int = 0):
        super().__init__()
        self.features = dict(features if features is not None else {"types": 5, "charges": 1})
        if not self.features or any(int(v) < 1 for v in self.features.values()):
            raise ConfigError(f"features must map part names to widths >= 1; got {self.features}")
        if layers < 1 or hidden < 1:
            raise ConfigError(f"layers and hidden must be >= 1; got {layers}, {hidden}")
        self.coords, self.context_features = coords, int(context_features)
        width = sum(self.features.values())
        self.embed = nn.Linear(width + 1 + self.context_features, hidden)
        layer = _layer_class()
        self.layers = nn.ModuleList(layer(hidden, coords_range, aggregation_norm) for _ in range(layers))
        self.out = nn.Linear(hidden, width)

    def forward(self, graph, t: Tensor, cond: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        from torch_geometric.utils import scatter

        cond = dict(cond or {})
        x0 = getattr(graph, self.coords, None)
        if not torch.is_tensor(x0) or x0.ndim != 2 or x0.shape[-1] != 3:
            raise ShapeError(f"EGNN: graph attribute {self.coords!r} must be (num_nodes, 3) positions")
        batch = graph.batch
        feats = []
        for name, width in self.features.items():
            v = getattr(graph, name, None)
            if not torch.is_tensor(v) or tuple(v.shape) != (x0.shape[0], width):
                raise ShapeError(f"EGNN: graph attribute {name!r} must be ({x0.shape[0]}, {width}); "
                                 f"got {tuple(getattr(v, 'shape', ()))}")
            feats.append(v)
        t = torch.as_tensor(t, device=x0.device).to(x0.dtype).reshape(-1)
        t_node = (t.expand(graph.num_graphs) if t.numel() == 1 else t)[batch][:, None]
        parts = [*feats, t_node]
        if self.context_features:
            ctx = cond.get("property")
            if ctx is None or ctx.shape[-1] != self.context_features:
                raise ShapeError(f"EGNN(context_features={self.context_features}) needs cond['property'] of shape "
                                 f"(batch, {self.context_features}); got {getattr(ctx, 'shape', None)}")
            parts.append(ctx.to(x0.dtype).reshape(graph.num_graphs, -1)[batch])
        h = self.embed(torch.cat(parts, dim=-1))
        src, dst = graph.edge_index
        d0 = ((x0[src] - x0[dst]) ** 2).sum(-1, keepdim=True)
        x = x0
        for layer in self.layers:
            h, x = layer(h, x, graph.edge_index, d0)
        vel = x - x0
        vel = vel - scatter(vel, batch, dim=0, dim_size=graph.num_graphs, reduce="mean")[batch]
        out = {self.coords: vel}
        out.update(zip(self.features, self.out(h).split(list(self.features.values()), dim=-1)))
        return out


class EDMBackbone(nn.Module):
    """EDM's denoiser as a dense backbone: :class:`polydiff.graphs.PyGBackbone` around :class:`EGNN` (the one
    line a task YAML would otherwise spell as a nested ``class_path``). Arguments are :class:`EGNN`'s."""

    def __init__(self, features: Mapping[str, int] | None = None, coords: str = "pos", hidden: int = 256,
                 layers: int = 9, coords_range: float = 15.0, aggregation_norm: float = 1.0,
                 context_features: int = 0):
        super().__init__()
        from polydiff.graphs import PyGBackbone

        self.net = PyGBackbone(EGNN(features, coords, hidden, layers, coords_range, aggregation_norm,
                                    context_features))

    def forward(self, parts, t: Tensor, cond: Mapping[str, Tensor] | None = None):
        return self.net(parts, t, cond)
