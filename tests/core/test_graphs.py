"""The torch-geometric path (polydiff.graphs): exact dense ↔ PyG round trips with the library's utilities, and
an EGNN-style MessagePassing backbone trained through DiffusionModule on variable-size point sets."""

import pytest
import torch
from torch import nn

pytest.importorskip("torch_geometric")
from torch_geometric.data import Batch, Data  # noqa: E402
from torch_geometric.nn import MessagePassing  # noqa: E402

import polydiff  # noqa: E402
from polydiff.data import DiffusionDataModule  # noqa: E402
from polydiff.graphs import PyGBackbone, from_pyg, pyg_collate, to_pyg  # noqa: E402


def _graphs():
    g = torch.Generator().manual_seed(0)
    out = []
    for n in (3, 5, 2):
        ei = torch.tensor([[i, (i + 1) % n] for i in range(n)]).T
        out.append(Data(x=torch.randn(n, 4, generator=g), pos=torch.randn(n, 3, generator=g), edge_index=ei))
    return out


def test_dense_pyg_round_trip_is_exact():
    graphs = _graphs()
    batch = Batch.from_data_list(graphs)
    dense = from_pyg(batch, adjacency=True)
    assert dense["x"].shape == (3, 5, 4) and dense["presence"].shape == (3, 5, 1)
    assert dense["presence"][:, :, 0].sum(1).tolist() == [3, 5, 2]
    assert dense["cond"]["adj"][0, 0, 1] == 1 and dense["cond"]["adj"][0, 1, 0] == 0
    back = to_pyg(dense["x"], dense["presence"])
    assert torch.equal(back.x, batch.x) and torch.equal(back.batch, batch.batch) and back.num_graphs == 3
    # fully connected within each graph: n(n − 1) ordered pairs, never across graphs
    assert back.edge_index.shape[1] == 3 * 2 + 5 * 4 + 2 * 1
    assert torch.equal(back.batch[back.edge_index[0]], back.batch[back.edge_index[1]])
    assert (back.edge_index[0] != back.edge_index[1]).all()
    parts = from_pyg(graphs, parts=["pos", "x"])
    assert parts["x"]["pos"].shape == (3, 5, 3) and parts["presence"].shape == (3, 5)
    again = to_pyg(parts["x"], parts["presence"])
    assert torch.equal(again.pos, batch.pos) and torch.equal(again.x, batch.x)
    assert torch.equal(pyg_collate(graphs)["x"], dense["x"])
    with pytest.raises(polydiff.ShapeError, match="node tensor"):
        from_pyg(graphs, parts=["nope"])


class EGNNLayer(MessagePassing):
    """E(n)-equivariant layer (Satorras et al. 2021, Eqs. 3–6): m_ij = φ_e(h_i, h_j, ‖x_i − x_j‖²),
    x_i ← x_i + C Σ_j (x_i − x_j) φ_x(m_ij), h_i ← h_i + φ_h(h_i, Σ_j m_ij), C = 1/(n − 1) by mean aggregation."""

    def __init__(self, hidden):
        super().__init__(aggr="mean")
        self.phi_e = nn.Sequential(nn.Linear(2 * hidden + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.phi_x = nn.Linear(hidden, 1)
        self.phi_h = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, h, pos, edge_index):
        m, dx = self.propagate(edge_index, h=h, pos=pos)
        return h + self.phi_h(torch.cat([h, m], -1)), pos + dx

    def message(self, h_i, h_j, pos_i, pos_j):
        d = pos_i - pos_j
        m = self.phi_e(torch.cat([h_i, h_j, (d**2).sum(-1, keepdim=True)], -1))
        return torch.cat([m, d * self.phi_x(m)], -1)

    def propagate(self, edge_index, **kw):
        out = super().propagate(edge_index, **kw)
        return out[:, :-3], out[:, -3:]


class TinyEGNN(nn.Module):
    """Predicts ε for centred 3-D point sets from the PyG graph: node features start as the time embedding."""

    def __init__(self, hidden=16, layers=2):
        super().__init__()
        self.embed = nn.Linear(1, hidden)
        self.layers = nn.ModuleList(EGNNLayer(hidden) for _ in range(layers))

    def forward(self, graph, t, cond):
        h = self.embed(t[graph.batch].unsqueeze(-1).to(graph.x.dtype))
        pos = graph.x
        for layer in self.layers:
            h, pos = layer(h, pos, graph.edge_index)
        return pos - graph.x


class Rings(DiffusionDataModule):
    """Centred regular polygons of 3–6 points in random 3-D orientations, as PyG Data items."""

    domain = "rings"
    variable_size = True

    def setup(self, stage=None):
        if self.train_set is None:
            g = torch.Generator().manual_seed(0)
            items = []
            for _ in range(64):
                n = int(torch.randint(3, 7, (1,), generator=g))
                a = 2 * torch.pi * torch.arange(n) / n
                ring = torch.stack([a.cos(), a.sin(), torch.zeros(n)], -1)
                rot, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
                items.append(Data(x=ring @ rot.T))
            self.train_set = self.val_set = items

    def collate(self, items):
        return pyg_collate(items)


def test_egnn_message_passing_backbone_is_equivariant_and_trains():
    torch.manual_seed(0)
    net = PyGBackbone(TinyEGNN())
    x = polydiff.ZeroCenterOfMass().project(torch.randn(2, 5, 3), torch.tensor([[1] * 5, [1] * 3 + [0] * 2]).bool()[..., None])
    presence = torch.tensor([[1] * 5, [1] * 3 + [0] * 2]).bool()[..., None]
    t = torch.tensor([0.3, 0.7])
    rot, _ = torch.linalg.qr(torch.randn(3, 3))
    out = net(x, t, {"presence": presence})
    torch.testing.assert_close(net(x @ rot.T, t, {"presence": presence}), out @ rot.T, atol=1e-5, rtol=1e-4)
    assert (out[1, 3:] == 0).all()

    import lightning as L
    from polydiff.training import DiffusionModule

    dm = Rings(batch_size=16)
    module = DiffusionModule(net, space=polydiff.ZeroCenterOfMass(), lr=1e-3, val_num_samples=0, final_num_samples=0,
                             sample_steps=3)
    before = [p.detach().clone() for p in module.denoiser.parameters()]
    L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              limit_val_batches=0, enable_checkpointing=False).fit(module, dm)
    assert all(torch.isfinite(p).all() for p in module.denoiser.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, module.denoiser.parameters()))
    out = module.sample(4, sizes=[3, 6, 4, 5])
    assert out["x"].shape == (4, 6, 3) and out["presence"].flatten(1).sum(1).tolist() == [3, 6, 4, 5]
    scale = out["x"].abs().amax((1, 2), keepdim=True).squeeze(1)  # an untrained net: values may be large
    assert (out["x"].sum(1).abs() <= 1e-5 * scale).all()  # centred (to float precision)
