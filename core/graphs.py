"""The torch-geometric path: PyG ``Data``/``Batch`` graphs ↔ the dense padded batch contract.

The engine works on dense padded tensors (batch, nodes, features) with a per-node ``presence`` mask; graph
libraries work on concatenated nodes with a ``batch`` vector and an ``edge_index``. Both conversions use
torch-geometric's own utilities (``Batch.from_data_list``, ``to_dense_batch``, ``to_dense_adj``,
``dense_to_sparse``), so a backbone written with PyG message passing — e.g. an E(n)-equivariant EGNN
(Satorras et al. 2021), as EDM uses for molecules (Hoogeboom et al. 2022) — trains through
:class:`polydiff.DiffusionModule` unchanged behind :class:`PyGBackbone`.

torch-geometric is optional (``pip install "polydiff[graph]"``) and imported only inside these functions.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .components import instantiate
from .errors import ConfigError, ShapeError

__all__ = ["from_pyg", "to_pyg", "pyg_collate", "PyGBackbone"]

Tensor = torch.Tensor


def _pyg():
    try:
        import torch_geometric  # noqa: F401
        from torch_geometric.data import Batch, Data
        from torch_geometric import utils
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(f"the graph path needs torch-geometric: pip install \"polydiff[graph]\" ({exc})") from None
    return Batch, Data, utils


def from_pyg(graphs, parts: Sequence[str] | None = None, adjacency: bool = False) -> dict[str, Any]:
    """A PyG ``Batch`` (or a list of ``Data``) → a dense padded batch.

    Args:
        graphs: ``Batch`` or list of ``Data`` whose node attributes are (num_nodes, ...) tensors.
        parts: node attributes to take as named parts (e.g. ``["pos", "x"]``): ``x`` becomes a mapping part →
            (batch, nodes, ...) and ``presence`` is (batch, nodes); default: the single attribute ``x``, with
            ``presence`` (batch, nodes, 1, …) broadcastable to it.
        adjacency: also return the dense adjacency of the graphs' edges as ``cond["adj"]`` (batch, nodes, nodes).
    """
    Batch, _, utils = _pyg()
    if isinstance(graphs, (list, tuple)):
        graphs = Batch.from_data_list(list(graphs))
    if not isinstance(graphs, Batch):
        raise ShapeError(f"from_pyg expects a torch_geometric Batch or a list of Data; got {type(graphs).__name__}")
    names = list(parts) if parts is not None else ["x"]
    dense, mask = {}, None
    for name in names:
        value = getattr(graphs, name, None)
        if not torch.is_tensor(value) or value.shape[0] != graphs.num_nodes:
            raise ShapeError(f"graph attribute {name!r} must be a node tensor (num_nodes={graphs.num_nodes}, ...); "
                             f"got {type(value).__name__}")
        dense[name], mask = utils.to_dense_batch(value, graphs.batch, batch_size=graphs.num_graphs)
    if parts is None:
        x = dense["x"]
        out: dict[str, Any] = {"x": x, "presence": mask.reshape(*mask.shape, *([1] * (x.ndim - 2)))}
    else:
        out = {"x": dense, "presence": mask}
    if adjacency:
        adj = utils.to_dense_adj(graphs.edge_index, graphs.batch, max_num_nodes=mask.shape[1],
                                 batch_size=graphs.num_graphs)
        out["cond"] = {"adj": adj}
    return out


def pyg_collate(items: list) -> dict[str, Any]:
    """Collate function for a data module whose items are PyG ``Data``: ``from_pyg(items)`` (attribute ``x``)."""
    return from_pyg(items)


def _node_mask(presence: Tensor | None, x: Tensor) -> Tensor:
    """(batch, nodes) bool from a presence mask broadcastable to (batch, nodes, ...), all True if None."""
    if presence is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    p = presence.bool()
    while p.ndim > 2:
        p = p.any(-1)
    return p.expand(x.shape[:2])


def to_pyg(x: Tensor | Mapping[str, Tensor], presence: Tensor | None = None, fully_connected: bool = True):
    """A dense padded state → a PyG ``Batch``: the present nodes of each item in order, the ``batch`` vector and,
    with ``fully_connected``, every ordered pair of distinct nodes of the same graph as ``edge_index`` (built from
    the dense adjacency with ``dense_to_sparse``). ``x`` may be a mapping of parts (each becomes a node attribute
    of that name)."""
    Batch, _, utils = _pyg()
    ref = next(iter(x.values())) if isinstance(x, Mapping) else x
    if not torch.is_tensor(ref) or ref.ndim < 2:
        raise ShapeError(f"to_pyg expects (batch, nodes, ...) tensors; got {getattr(ref, 'shape', type(ref))}")
    mask = _node_mask(presence, ref)
    b, n = mask.shape
    sizes = mask.sum(1)
    attrs = {k: v[mask] for k, v in x.items()} if isinstance(x, Mapping) else {"x": ref[mask]}
    batch_vec = torch.repeat_interleave(torch.arange(b, device=ref.device), sizes)
    ptr = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
    graph = Batch(batch=batch_vec, ptr=ptr, **attrs)
    graph._num_graphs = b
    if fully_connected:
        adj = (mask[:, :, None] & mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=ref.device)).to(ref.dtype)
        graph.edge_index, _ = utils.dense_to_sparse(adj, mask)
    return graph


class PyGBackbone(nn.Module):
    """Runs a torch-geometric network inside the dense engine.

    The engine calls ``backbone(x, t, cond)`` with x (batch, nodes, F) — or, as the inner network of
    :class:`polydiff.structured.StructuredBackbone`, a mapping of parts — and ``cond["presence"]``; this adapter
    builds the PyG ``Batch`` of the present nodes (fully connected within each graph, :func:`to_pyg`), calls
    ``inner(graph, t, cond)`` with ``t`` (num_graphs,) and the other conditions unchanged, and scatters the node
    outputs — a (num_nodes, F) tensor, or a mapping of them for parts — back to the dense padded layout with
    ``to_dense_batch`` (zeros at padding).
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        if not isinstance(inner, nn.Module):
            inner = instantiate(inner, "backbone")
        self.inner = inner

    def forward(self, x, t: Tensor, cond: Mapping[str, Tensor] | None = None):
        _, _, utils = _pyg()
        cond = dict(cond or {})
        presence = cond.pop("presence", None)
        ref = next(iter(x.values())) if isinstance(x, Mapping) else x
        graph = to_pyg(x, presence)
        out = self.inner(graph, t, cond)
        b, n = ref.shape[:2]

        def dense(v):
            d, _ = utils.to_dense_batch(v, graph.batch, max_num_nodes=n, batch_size=b)
            return d

        if isinstance(out, Mapping):
            return {k: dense(v) for k, v in out.items()}
        if not torch.is_tensor(out) or out.shape[0] != graph.num_nodes:
            raise ShapeError(f"the graph network must return node outputs ({graph.num_nodes}, ...); "
                             f"got {getattr(out, 'shape', type(out))}")
        return dense(out)
